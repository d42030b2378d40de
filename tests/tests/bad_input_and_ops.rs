//! Hostile and malformed input gets typed errors and changes nothing
//! stored; rate limits, phone verification, TLS, /metrics, graceful
//! shutdown, and the no-plaintext-at-rest canary.

use crate::support;

use std::path::Path;

use comptoir_protocol::frame::encode_client;
use comptoir_protocol::proto::wire::{self, ErrorCode, client_frame, server_frame::Body};
use comptoir_protocol::session::{InMemoryPreKeyStore, SessionRecord};
use comptoir_protocol::{MAX_FRAME_SIZE, VerifiedBundle};
use support::*;

#[tokio::test]
async fn malformed_oversized_and_unauthenticated_frames_change_nothing() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    a.request(send_body(&bob.id, &[1], id(1), b"queued")).await;
    drop(a);
    let relay = relay.restart().await;
    let dir = relay.data_dir.clone();
    let mut relay = relay;
    relay.stop().await;
    let before = dump_store(&dir);
    assert!(!before.is_empty());

    let mut relay = start_relay_in(&dir, |_| {}, None).await;
    // Unauthenticated.
    let mut u = Client::connect(relay.addr).await;
    let reply = u.request(send_body(&bob.id, &[1], id(2), b"x")).await;
    assert_eq!(error_code(&reply), ErrorCode::NotAuthenticated);
    let (mut a, _) = alice.login(relay.addr, 1).await;
    // Garbage protobuf, wrong version byte, empty message, text message.
    a.send_raw(vec![1, 0x12, 0xff, 0xff, 0xff, 0xff, 0x0f])
        .await;
    assert_eq!(error_code(&a.next_error().await), ErrorCode::MalformedFrame);
    a.send_raw(vec![2, 0, 0]).await;
    assert_eq!(
        error_code(&a.next_error().await),
        ErrorCode::UnsupportedVersion
    );
    a.send_raw(Vec::new()).await;
    assert_eq!(error_code(&a.next_error().await), ErrorCode::MalformedFrame);
    a.send_text("hello").await;
    assert_eq!(error_code(&a.next_error().await), ErrorCode::MalformedFrame);
    a.send_raw(encode_client(&wire::ClientFrame {
        request_id: 5,
        body: None,
    }))
    .await;
    assert_eq!(error_code(&a.reply(5).await), ErrorCode::MalformedFrame);
    // Structurally invalid sends.
    let mut bad_id = send_body(&bob.id, &[1], id(3), b"x");
    if let client_frame::Body::Send(s) = &mut bad_id {
        s.message_id = vec![1, 2, 3];
    }
    assert_eq!(
        error_code(&a.request(bad_id).await),
        ErrorCode::InvalidRequest
    );
    let empty = send_body(&bob.id, &[1], id(3), b"");
    assert_eq!(
        error_code(&a.request(empty).await),
        ErrorCode::InvalidRequest
    );
    let mut bad_category = send_body(&bob.id, &[1], id(3), b"x");
    if let client_frame::Body::Send(s) = &mut bad_category {
        s.category = 99;
    }
    assert_eq!(
        error_code(&a.request(bad_category).await),
        ErrorCode::InvalidRequest
    );
    let ack = client_frame::Body::DeliveryAck(wire::DeliveryAck {
        message_id: vec![1],
        sender_account: vec![],
        accept_id: 0,
        ..Default::default()
    });
    assert_eq!(error_code(&a.request(ack).await), ErrorCode::InvalidRequest);
    // Still usable afterwards.
    let get = client_frame::Body::GetDeviceList(wire::GetDeviceList {
        account_id: bob.id.to_vec(),
    });
    assert!(matches!(a.request(get).await, Body::DeviceList(_)));
    // Oversized: a typed error, then the connection closes (1009).
    a.send_raw(vec![1u8; MAX_FRAME_SIZE + 1]).await;
    assert_eq!(error_code(&a.next_error().await), ErrorCode::FrameTooLarge);
    assert_eq!(a.closed().await, Some(1009));
    relay.stop().await;

    assert_eq!(
        dump_store(&dir),
        before,
        "refused input changed nothing stored"
    );
}

#[tokio::test]
async fn account_rate_limit_triggers_with_retry_after() {
    let relay = start_relay_with(|c| {
        c.limits.account_rate_per_sec = 1.0;
        c.limits.account_burst = 3.0;
    })
    .await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let mut limited = None;
    for n in 0..6u8 {
        let reply = a.request(send_body(&bob.id, &[1], id(n), b"x")).await;
        if let Body::Error(e) = &reply {
            limited = Some(e.clone());
            break;
        }
    }
    let e = limited.expect("the bucket runs dry");
    assert_eq!(e.code, ErrorCode::RateLimited as i32);
    assert!(e.retry_after_ms > 0);
    assert!(
        relay
            .metric("comptoir_refusals_total{reason=\"ERROR_CODE_RATE_LIMITED\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn address_rate_limit_applies_before_authentication() {
    let relay = start_relay_with(|c| {
        c.limits.address_rate_per_sec = 0.5;
        c.limits.address_burst = 2.0;
    })
    .await;
    // Connection 1 uses a token; its first frame the second; then refused.
    let mut c = Client::connect(relay.addr).await;
    let stranger = Account::new(1);
    let nonce = c.nonce.clone();
    assert_eq!(
        error_code(&c.request(stranger.register_body(&[0; 32])).await),
        ErrorCode::BadSignature
    );
    let reply = c.request(stranger.register_body(&nonce)).await;
    assert_eq!(error_code(&reply), ErrorCode::RateLimited);
}

#[tokio::test]
async fn phone_verification_and_discoverable_lookup() {
    let relay = start_relay_with(|c| c.limits.code_attempts = 3).await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let (mut b, _) = bob.login(relay.addr, 1).await;
    let request = |n: &str| {
        client_frame::Body::RequestCode(wire::RequestCode {
            phone_number: n.into(),
        })
    };
    let verify = |n: &str, code: &str, discoverable| {
        client_frame::Body::VerifyCode(wire::VerifyCode {
            phone_number: n.into(),
            code: code.into(),
            discoverable,
        })
    };
    let lookup = |h: &str| client_frame::Body::Lookup(wire::Lookup { handle: h.into() });

    assert_eq!(
        error_code(&a.request(request("07700 900123")).await),
        ErrorCode::InvalidRequest
    );
    assert!(matches!(
        a.request(request("+447700900123")).await,
        Body::Ok(_)
    ));
    let code = relay.codes.last_for("+447700900123").expect("code sent");
    assert_eq!(code.len(), 6);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(
        error_code(&a.request(verify("+447700900123", wrong, true)).await),
        ErrorCode::WrongCode
    );
    // Another account cannot use Alice's code.
    assert_eq!(
        error_code(&b.request(verify("+447700900123", &code, true)).await),
        ErrorCode::CodeExpired
    );
    assert!(matches!(
        a.request(verify("+447700900123", &code, true)).await,
        Body::Ok(_)
    ));
    assert_eq!(
        error_code(&a.request(verify("+447700900123", &code, true)).await),
        ErrorCode::CodeExpired,
        "used once"
    );

    let Body::LookupResult(found) = b.request(lookup("+447700900123")).await else {
        panic!("found")
    };
    assert_eq!(found.account_id, alice.id.to_vec());

    // Bob binds a number but stays undiscoverable; too many wrong codes.
    b.request(request("+33612345678")).await;
    for _ in 0..2 {
        assert_eq!(
            error_code(&b.request(verify("+33612345678", "x", false)).await),
            ErrorCode::WrongCode
        );
    }
    assert_eq!(
        error_code(&b.request(verify("+33612345678", "x", false)).await),
        ErrorCode::TooManyAttempts
    );
    // The wrong codes count against the number: a new code does not reset
    // them within the window.
    assert_eq!(
        error_code(&b.request(request("+33612345678")).await),
        ErrorCode::TooManyAttempts
    );
    b.request(request("+33612345679")).await;
    let code = relay.codes.last_for("+33612345679").expect("code");
    assert!(matches!(
        b.request(verify("+33612345679", &code, false)).await,
        Body::Ok(_)
    ));
    assert_eq!(
        error_code(&a.request(lookup("+33612345679")).await),
        ErrorCode::UnknownAccount
    );
    assert_eq!(
        error_code(&a.request(lookup("+15550000000")).await),
        ErrorCode::UnknownAccount
    );
}

#[tokio::test]
async fn expired_codes_are_refused() {
    // A zero TTL: the code is already expired when it is checked.
    let relay = start_relay_with(|c| c.limits.code_ttl_ms = 0).await;
    let alice = Account::new(1);
    alice.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    a.request(client_frame::Body::RequestCode(wire::RequestCode {
        phone_number: "+447700900123".into(),
    }))
    .await;
    let code = relay.codes.last_for("+447700900123").expect("code");
    let reply = a
        .request(client_frame::Body::VerifyCode(wire::VerifyCode {
            phone_number: "+447700900123".into(),
            code,
            discoverable: true,
        }))
        .await;
    assert_eq!(error_code(&reply), ErrorCode::CodeExpired);
}

#[tokio::test]
async fn healthz_and_metrics() {
    let relay = start_relay().await;
    let (status, body) = relay.http_get("/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let alice = Account::new(1);
    alice.register(relay.addr).await;
    let (_a, _) = alice.login(relay.addr, 1).await;
    let (status, body) = relay.http_get("/metrics").await;
    assert!(status.contains("200"));
    for name in [
        "comptoir_connections_open",
        "comptoir_authenticated_connections 1",
        "comptoir_envelopes_accepted_total",
        "comptoir_envelopes_delivered_total",
        "comptoir_envelopes_expired_total",
        "comptoir_queue_depth",
        "comptoir_refusals_total",
        "comptoir_flush_seconds_bucket",
    ] {
        assert!(body.contains(name), "missing {name}");
    }
    assert!(relay.http_get("/nope").await.0.contains("404"));
}

#[tokio::test]
async fn graceful_shutdown_closes_with_going_away() {
    let mut relay = start_relay().await;
    let alice = Account::new(1);
    alice.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    relay.stop().await;
    assert_eq!(error_code(&a.next_error().await), ErrorCode::ShuttingDown);
    assert_eq!(a.closed().await, Some(1001));
}

#[tokio::test]
async fn wss_with_rustls() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let cert_der = cert.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let acceptor =
        comptoir_relay::tls::acceptor_from_der(vec![cert_der.clone()], key_der).expect("acceptor");
    let dir = tempfile::tempdir().expect("dir");
    let relay = start_relay_in(dir.path(), |_| {}, Some(acceptor)).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let connect = |addr| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        connector.connect(name, tcp).await.expect("tls handshake")
    };
    let alice = Account::new(1);
    let tls = connect(relay.addr).await;
    let mut c = Client::over(Box::new(tls), "wss://localhost/").await;
    let nonce = c.nonce.clone();
    alice.set_origin(&comptoir_protocol::relay_origin(
        true,
        "localhost",
        relay.addr.port(),
    ));
    assert!(matches!(
        c.request(alice.register_body(&nonce)).await,
        Body::Registered(_)
    ));
    assert!(matches!(
        c.request(alice.auth_body(1, &nonce)).await,
        Body::AuthOk(_)
    ));
    // Plain ws to a wss port fails.
    let plain = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("tcp");
    assert!(
        tokio_tungstenite::client_async(format!("ws://{}/", relay.addr), plain)
            .await
            .is_err()
    );
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in walk(dir) {
        let bytes = std::fs::read(&entry).expect("read file");
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(entry.display().to_string());
        }
    }
    hits
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_plaintext_canary_never_reaches_the_relay_disk() {
    const CANARY: &[u8] = b"CANARY-7f3a9c-the-relay-must-never-see-this";
    let mut relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let mut rng = rand::rng();
    let (mut b, _) = bob.login(relay.addr, 1).await;
    let (mut bob_prekeys, upload) =
        InMemoryPreKeyStore::generate(bob.identity(1), 1, 1, 4, &mut rng);
    assert!(matches!(
        b.request(client_frame::Body::UploadPrekeys(upload)).await,
        Body::Ok(_)
    ));
    drop(b);

    // Alice runs X3DH from the relay's bundle and encrypts with the real
    // Double Ratchet session; Bob is offline so the envelope is stored.
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let fetch = client_frame::Body::FetchPrekeys(wire::FetchPreKeys {
        account_id: bob.id.to_vec(),
        device_ids: Vec::new(),
    });
    let Body::PrekeyBundles(bundles) = a.request(fetch).await else {
        panic!("bundles")
    };
    let bundle = VerifiedBundle::verify(&bundles.bundles[0], Some(bob.identity(1).public()))
        .expect("verify");
    let mut session = SessionRecord::new();
    session
        .initiate(alice.identity(1), &bundle, &mut rng)
        .expect("x3dh");
    let ciphertext = session.encrypt(CANARY, &mut rng).expect("encrypt");
    assert!(matches!(
        a.request(send_body(&bob.id, &[1], id(1), &ciphertext))
            .await,
        Body::Accepted(_)
    ));
    drop(a);
    relay.stop().await;

    let dir = relay.data_dir.clone();
    assert!(!walk(&dir).is_empty());
    assert_eq!(
        files_containing(&dir, CANARY),
        Vec::<String>::new(),
        "plaintext on disk"
    );
    // The scan can see stored bytes: the ciphertext itself is there.
    let tail = &ciphertext[ciphertext.len() - 24..];
    assert!(
        !files_containing(&dir, tail).is_empty(),
        "the ciphertext is stored"
    );

    // And Bob decrypts it after a restart.
    let relay = start_relay_in(&dir, |_| {}, None).await;
    let (mut b, ok) = bob.login(relay.addr, 1).await;
    assert_eq!(ok.queued, 1);
    let env = b.next_envelope().await;
    let mut bob_session = SessionRecord::new();
    let got = bob_session
        .decrypt(
            bob.identity(1),
            &mut bob_prekeys,
            Some(alice.identity(1).public()),
            &env.ciphertext,
        )
        .expect("decrypt");
    assert_eq!(got.plaintext, CANARY);
}
