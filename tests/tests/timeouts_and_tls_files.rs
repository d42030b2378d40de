//! Connection lifetime limits (authentication timeout, idle timeout, a
//! device connecting twice) and TLS from PEM files, over a real relay.

use crate::support;

use comptoir_protocol::proto::wire::server_frame::Body;
use support::*;

#[tokio::test]
async fn unauthenticated_connections_time_out() {
    let relay = start_relay_with(|c| c.limits.auth_timeout_ms = 100).await;
    let mut c = Client::connect(relay.addr).await;
    assert_eq!(c.closed().await, Some(4003));
}

#[tokio::test]
async fn idle_authenticated_connections_time_out() {
    let relay = start_relay_with(|c| c.limits.idle_timeout_ms = 150).await;
    let alice = Account::new(1);
    alice.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    assert_eq!(a.closed().await, Some(4004));
}

#[tokio::test]
async fn a_device_connecting_again_replaces_its_older_connection() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut old, _) = bob.login(relay.addr, 1).await;
    let (mut new, _) = bob.login(relay.addr, 1).await;
    assert_eq!(old.closed().await, Some(4005));
    let (mut a, _) = alice.login(relay.addr, 1).await;
    assert!(matches!(
        a.request(send_body(&bob.id, &[1], id(1), b"x")).await,
        Body::Accepted(_)
    ));
    assert_eq!(new.next_envelope().await.message_id, id(1));
}

#[tokio::test]
async fn tls_from_pem_files_and_clear_errors_for_bad_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    assert!(comptoir_relay::tls::acceptor(&cert_path, &key_path).is_ok());

    let missing = dir.path().join("missing.pem");
    let err = comptoir_relay::tls::acceptor(&missing, &key_path)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let err = comptoir_relay::tls::acceptor(&cert_path, &cert_path)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("private key"), "{err}");
}

#[tokio::test]
async fn a_device_that_stops_reading_is_disconnected() {
    let relay = start_relay_with(|c| {
        c.limits.write_timeout_ms = 300;
        c.limits.delivery_window = 10_000;
    })
    .await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    // Bob authenticates, then never reads again.
    let (_bob_not_reading, _) = bob.login(relay.addr, 1).await;
    relay
        .wait_metric("comptoir_authenticated_connections", 2.0)
        .await;
    // The largest ciphertext the relay accepts (a ratchet message's cap).
    let big = vec![0x42u8; comptoir_protocol::message::MAX_MESSAGE_LEN];
    for n in 0..480u16 {
        let mut message_id = id(0);
        message_id[1..3].copy_from_slice(&n.to_be_bytes());
        let reply = a.request(send_body(&bob.id, &[1], message_id, &big)).await;
        assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
    }
    // ~30 MB cannot sit in the socket buffers: the relay's writes to Bob
    // stall, time out, and it drops him; Alice stays connected.
    relay
        .wait_metric_at_most("comptoir_authenticated_connections", 1.0)
        .await;
    let get = comptoir_protocol::proto::wire::client_frame::Body::GetDeviceList(
        comptoir_protocol::proto::wire::GetDeviceList {
            account_id: bob.id.to_vec(),
        },
    );
    assert!(matches!(a.request(get).await, Body::DeviceList(_)));
}
