//! Connection lifetime limits (authentication timeout, idle timeout, a
//! device connecting twice) and TLS from PEM files, over a real relay.

mod support;

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
