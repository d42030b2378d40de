//! What an anonymous or throwaway peer could exhaust (issue 9, items 8 to
//! 14): phone-number takeover, the pending-code table, connections before
//! the handshake, prekey draining, PreKeysLow floods, WebSocket etiquette.

use crate::support;

use std::net::SocketAddr;

use comptoir_protocol::proto::wire::{self, ErrorCode, client_frame, server_frame::Body};
use comptoir_protocol::session::InMemoryPreKeyStore;
use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

fn request_code(number: &str) -> client_frame::Body {
    client_frame::Body::RequestCode(wire::RequestCode {
        phone_number: number.into(),
    })
}

fn verify_code(number: &str, code: &str) -> client_frame::Body {
    client_frame::Body::VerifyCode(wire::VerifyCode {
        phone_number: number.into(),
        code: code.into(),
        discoverable: true,
    })
}

fn other_than(code: &str) -> &'static str {
    if code == "000000" { "111111" } else { "000000" }
}

/// Item 8: a new code used to reset the attempts (unlimited guessing), and
/// any account's request cancelled the owner's pending code.
#[tokio::test]
async fn code_requests_neither_reset_guesses_nor_cancel_another_accounts_code() {
    let relay = start_relay().await;
    let (owner, attacker) = (Account::new(1), Account::new(1));
    owner.register(relay.addr).await;
    attacker.register(relay.addr).await;
    let (mut o, _) = owner.login(relay.addr, 1).await;
    let (mut a, _) = attacker.login(relay.addr, 1).await;

    const NUMBER: &str = "+447700900123";
    assert!(matches!(o.request(request_code(NUMBER)).await, Body::Ok(_)));
    let owner_code = relay.codes.last_for(NUMBER).expect("owner's code");
    assert!(matches!(a.request(request_code(NUMBER)).await, Body::Ok(_)));
    assert!(
        matches!(
            o.request(verify_code(NUMBER, &owner_code)).await,
            Body::Ok(_)
        ),
        "another account's request must not cancel the owner's code"
    );

    // Ask again and again for codes to another number, guessing each time:
    // the wrong guesses are counted per number, not per code.
    const TARGET: &str = "+447700900456";
    let mut wrong_guesses_answered = 0;
    for _ in 0..10 {
        if !matches!(a.request(request_code(TARGET)).await, Body::Ok(_)) {
            break;
        }
        let code = relay.codes.last_for(TARGET).expect("code");
        loop {
            let reply = a.request(verify_code(TARGET, other_than(&code))).await;
            match error_code(&reply) {
                ErrorCode::WrongCode => wrong_guesses_answered += 1,
                ErrorCode::TooManyAttempts => break,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(
        wrong_guesses_answered < 5,
        "{wrong_guesses_answered} guesses against one number"
    );
    let code = relay.codes.last_for(TARGET).expect("code");
    assert_eq!(
        error_code(&a.request(verify_code(TARGET, &code)).await),
        ErrorCode::TooManyAttempts,
        "the number stays locked for the window"
    );
}

/// Item 9: the pending-code table grew without bound.
#[tokio::test]
async fn the_pending_code_table_is_bounded() {
    let relay = start_relay_with(|c| {
        c.limits.max_pending_codes = 5;
        c.limits.code_requests_per_account = 1000;
    })
    .await;
    let mut refused = 0;
    for round in 0..3 {
        let account = Account::new(1);
        account.register(relay.addr).await;
        let (mut c, _) = account.login(relay.addr, 1).await;
        for n in 0..4 {
            let reply = c
                .request(request_code(&format!("+4477009{round}0{n:02}")))
                .await;
            if !matches!(reply, Body::Ok(_)) {
                assert_eq!(error_code(&reply), ErrorCode::RateLimited);
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 12 - 5, "five pending codes at most");
}

/// Item 8: proving a number another account holds moves it, explicitly:
/// the previous account is told.
#[tokio::test]
async fn proving_a_number_another_account_holds_tells_that_account() {
    let relay = start_relay().await;
    let (alice, bob, carol) = (Account::new(1), Account::new(1), Account::new(1));
    for account in [&alice, &bob, &carol] {
        account.register(relay.addr).await;
    }
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let (mut b, _) = bob.login(relay.addr, 1).await;
    let (mut c, _) = carol.login(relay.addr, 1).await;
    const NUMBER: &str = "+33612345678";
    a.request(request_code(NUMBER)).await;
    let code = relay.codes.last_for(NUMBER).expect("code");
    assert!(matches!(
        a.request(verify_code(NUMBER, &code)).await,
        Body::Ok(_)
    ));

    b.request(request_code(NUMBER)).await;
    let code = relay.codes.last_for(NUMBER).expect("code");
    assert!(matches!(
        b.request(verify_code(NUMBER, &code)).await,
        Body::Ok(_)
    ));
    let released = a
        .next_matching(|body| match body {
            Body::PhoneNumberReleased(r) => Some(r.phone_number.clone()),
            _ => None,
        })
        .await;
    assert_eq!(released, NUMBER);
    let lookup = client_frame::Body::Lookup(wire::Lookup {
        handle: NUMBER.into(),
    });
    let Body::LookupResult(found) = c.request(lookup).await else {
        panic!("found")
    };
    assert_eq!(found.account_id, bob.id.to_vec());
}

/// Item 13: one account drained a device's one-time prekeys in a burst,
/// and every fetch pushed PreKeysLow to the owner.
#[tokio::test]
async fn prekey_fetches_are_limited_and_prekeys_low_is_sent_once() {
    let relay = start_relay_with(|c| {
        c.limits.prekey_fetch_burst = 3.0;
        c.limits.prekeys_low_threshold = 100;
    })
    .await;
    let (bob, mallory) = (Account::new(1), Account::new(1));
    bob.register(relay.addr).await;
    mallory.register(relay.addr).await;
    let (mut b, _) = bob.login(relay.addr, 1).await;
    let (_s, upload) = InMemoryPreKeyStore::generate(bob.identity(1), 1, 1, 20, &mut rand::rng());
    assert!(matches!(
        b.request(client_frame::Body::UploadPrekeys(upload)).await,
        Body::Ok(_)
    ));
    let (mut m, _) = mallory.login(relay.addr, 1).await;
    let fetch = || {
        client_frame::Body::FetchPrekeys(wire::FetchPreKeys {
            account_id: bob.id.to_vec(),
            device_ids: Vec::new(),
        })
    };
    let mut handed_out = 0;
    let mut limited = 0;
    for _ in 0..10 {
        match m.request(fetch()).await {
            Body::PrekeyBundles(bundles) => {
                handed_out += bundles
                    .bundles
                    .iter()
                    .filter(|b| b.one_time_prekey.is_some())
                    .count();
            }
            other => {
                assert_eq!(error_code(&other), ErrorCode::RateLimited);
                limited += 1;
            }
        }
    }
    assert_eq!((handed_out, limited), (3, 7));
    assert_eq!(bob.login(relay.addr, 1).await.1.one_time_prekeys, 17);
    // That login replaced `b`; log in again and count the PreKeysLow pushes
    // that more fetches (by other accounts) cause.
    let (mut b, _) = bob.login(relay.addr, 1).await;
    for _ in 0..5 {
        let other = Account::new(1);
        other.register(relay.addr).await;
        let (mut o, _) = other.login(relay.addr, 1).await;
        assert!(matches!(o.request(fetch()).await, Body::PrekeyBundles(_)));
    }
    // Posted pushes go out before the mail of a later wake: an envelope
    // sent now arrives after every PreKeysLow the fetches caused.
    let (mut m, _) = mallory.login(relay.addr, 1).await;
    m.request(send_body(&bob.id, &[1], id(1), b"after the fetches"))
        .await;
    let mut lows = 0;
    loop {
        match b.next_push().await {
            Body::PrekeysLow(_) => lows += 1,
            Body::Deliver(_) => break,
            _ => {}
        }
    }
    // At login (not limited) and at most one from the fetches.
    assert!(lows <= 2, "{lows} PreKeysLow pushes");
}

/// A fetch of several devices that one device's limit refuses takes no
/// prekey of the others (before, the devices before it in the list had a
/// one-time key taken, wasted: the refusal handed out nothing).
#[tokio::test]
async fn a_fetch_refused_for_one_device_takes_nothing_from_the_others() {
    let relay = start_relay_with(|c| c.limits.prekey_fetch_burst = 3.0).await;
    let (bob, mallory) = (Account::new(2), Account::new(1));
    bob.register(relay.addr).await;
    mallory.register(relay.addr).await;
    for device in [1, 2] {
        let (mut b, _) = bob.login(relay.addr, device).await;
        let (_s, upload) =
            InMemoryPreKeyStore::generate(bob.identity(device), device, 1, 20, &mut rand::rng());
        assert!(matches!(
            b.request(client_frame::Body::UploadPrekeys(upload)).await,
            Body::Ok(_)
        ));
    }
    let (mut m, _) = mallory.login(relay.addr, 1).await;
    let fetch = |device_ids: Vec<u32>| {
        client_frame::Body::FetchPrekeys(wire::FetchPreKeys {
            account_id: bob.id.to_vec(),
            device_ids,
        })
    };
    for _ in 0..3 {
        assert!(matches!(
            m.request(fetch(vec![2])).await,
            Body::PrekeyBundles(_)
        ));
    }
    let refused = m.request(fetch(Vec::new())).await;
    assert_eq!(error_code(&refused), ErrorCode::RateLimited);
    assert_eq!(
        bob.login(relay.addr, 1).await.1.one_time_prekeys,
        20,
        "device 1 lost a one-time prekey to a refused fetch"
    );
    assert_eq!(bob.login(relay.addr, 2).await.1.one_time_prekeys, 17);
    // Nor did it spend device 1's fetch budget: all three are left.
    for n in 1..=3 {
        let reply = m.request(fetch(vec![1])).await;
        assert!(
            matches!(reply, Body::PrekeyBundles(_)),
            "fetch {n} of device 1 after the refusal: {reply:?}"
        );
    }
}

/// Item 13: non-canonical keys, key id 0 and duplicate ids are refused.
#[tokio::test]
async fn prekey_uploads_with_bad_keys_or_ids_are_refused() {
    let relay = start_relay().await;
    let bob = Account::new(1);
    bob.register(relay.addr).await;
    let (mut b, _) = bob.login(relay.addr, 1).await;
    let upload = || {
        let (_s, upload) =
            InMemoryPreKeyStore::generate(bob.identity(1), 1, 1, 4, &mut rand::rng());
        upload
    };
    let mut non_canonical = upload();
    non_canonical.one_time_prekeys[2].public_key[31] |= 0x80;
    let mut id_zero = upload();
    id_zero.one_time_prekeys[0].key_id = 0;
    let mut duplicate = upload();
    duplicate.one_time_prekeys[3].key_id = duplicate.one_time_prekeys[1].key_id;
    for bad in [non_canonical, id_zero, duplicate] {
        assert_eq!(
            error_code(&b.request(client_frame::Body::UploadPrekeys(bad)).await),
            ErrorCode::InvalidRequest
        );
    }
    assert_eq!(
        bob.login(relay.addr, 1).await.1.one_time_prekeys,
        0,
        "refused uploads stored nothing"
    );
}

async fn connect_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse().expect("ip"), 0))?;
    socket.connect(addr).await
}

async fn websocket(stream: TcpStream, addr: SocketAddr) -> bool {
    tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::client_async(format!("ws://{addr}/"), stream),
    )
    .await
    .expect("handshake ends in time")
    .is_ok()
}

/// Item 10: one address could hold every file descriptor.
#[tokio::test]
async fn connections_are_capped_per_address_before_the_handshake() {
    let relay = start_relay_with(|c| c.limits.max_connections_per_address = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::connect(relay.addr).await);
    }
    let fourth = TcpStream::connect(relay.addr).await.expect("tcp");
    assert!(
        !websocket(fourth, relay.addr).await,
        "a fourth connection from one address is closed before the upgrade"
    );
    relay
        .wait_metric("comptoir_connections_refused_total", 1.0)
        .await;
    let other = connect_from("127.0.0.2", relay.addr).await.expect("tcp");
    assert!(
        websocket(other, relay.addr).await,
        "another address is admitted"
    );
    drop(held.pop());
    relay
        .wait_metric_at_most("comptoir_connections_open", 3.0)
        .await;
    let again = TcpStream::connect(relay.addr).await.expect("tcp");
    assert!(
        websocket(again, relay.addr).await,
        "a closed connection frees its place"
    );
}

/// Item 10: the handshake has its own (short) deadline.
#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let relay = start_relay_with(|c| {
        c.limits.handshake_timeout_ms = 100;
        c.limits.write_timeout_ms = 600_000;
    })
    .await;
    let mut silent = TcpStream::connect(relay.addr).await.expect("tcp");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(TIMEOUT, silent.read(&mut buf))
        .await
        .expect("closed within the handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)));
}

/// Item 14: a client's Close frame was never answered.
#[tokio::test]
async fn a_clients_close_frame_is_answered() {
    let relay = start_relay().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", relay.addr))
        .await
        .expect("connect");
    let challenge = ws.next().await;
    assert!(matches!(challenge, Some(Ok(Message::Binary(_)))));
    ws.send(Message::Close(None)).await.expect("close");
    let answer = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("in time");
    assert!(
        matches!(answer, Some(Ok(Message::Close(_)))),
        "the relay answers the Close: {answer:?}"
    );
}

async fn close_code_after_raw(relay: SocketAddr, raw: &[u8]) -> Option<u16> {
    let stream = TcpStream::connect(relay).await.expect("tcp");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{relay}/"), stream)
        .await
        .expect("handshake");
    assert!(matches!(ws.next().await, Some(Ok(Message::Binary(_)))));
    ws.get_mut().write_all(raw).await.expect("write");
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Item 14: protocol errors dropped the connection without a close code.
#[tokio::test]
async fn websocket_protocol_errors_close_with_1002_and_1007() {
    let relay = start_relay().await;
    // A binary frame without the mask every client frame must carry.
    assert_eq!(
        close_code_after_raw(relay.addr, &[0x82, 0x01, 0x01]).await,
        Some(1002)
    );
    // A masked text frame (zero mask) whose payload is not UTF-8.
    assert_eq!(
        close_code_after_raw(relay.addr, &[0x81, 0x81, 0, 0, 0, 0, 0xff]).await,
        Some(1007)
    );
}

async fn register_from(source: &str, addr: SocketAddr) -> Body {
    let stream = connect_from(source, addr).await.expect("tcp");
    let mut c = Client::over(Box::new(stream), &format!("ws://{addr}/")).await;
    let nonce = c.nonce.clone();
    c.request(Account::new(1).register_body(&nonce)).await
}

/// Item 11: accounts were free, 3,800 in 2 seconds from 20 addresses.
#[tokio::test]
async fn registrations_are_limited_per_network_and_relay_wide() {
    let relay = start_relay_with(|c| {
        c.limits.registration_rate_per_prefix_per_sec = 0.001;
        c.limits.registration_prefix_burst = 2.0;
        c.limits.registration_rate_per_sec = 0.001;
        c.limits.registration_burst = 3.0;
    })
    .await;
    for source in ["127.0.0.1", "127.0.0.9"] {
        assert!(matches!(
            register_from(source, relay.addr).await,
            Body::Registered(_)
        ));
    }
    // A third from the same /24 is refused; another /24 is not...
    let reply = register_from("127.0.0.10", relay.addr).await;
    assert_eq!(error_code(&reply), ErrorCode::RateLimited);
    assert!(matches!(
        register_from("127.0.1.2", relay.addr).await,
        Body::Registered(_)
    ));
    // ... until the relay-wide budget is spent.
    let reply = register_from("127.0.2.2", relay.addr).await;
    assert_eq!(error_code(&reply), ErrorCode::RateLimited);
}

/// A registration the relay-wide limit refuses spends nothing of its
/// network's budget: once the relay has room again, the network still has
/// all of it (before, each relay-wide refusal had taken one of its
/// network's registrations).
#[tokio::test]
async fn a_registration_refused_relay_wide_spends_nothing_of_its_network() {
    let relay = start_relay_with(|c| {
        c.limits.registration_rate_per_prefix_per_sec = 0.001;
        c.limits.registration_prefix_burst = 2.0;
        c.limits.registration_rate_per_sec = 1.0;
        c.limits.registration_burst = 1.0;
    })
    .await;
    assert!(matches!(
        register_from("127.0.3.1", relay.addr).await,
        Body::Registered(_)
    ));
    // The relay is full for a moment (one registration a second): it
    // refuses relay-wide and says when to retry; retried then, this
    // network's second registration goes through.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut refused_relay_wide = 0;
    loop {
        let retry_after_ms = match register_from("127.0.3.2", relay.addr).await {
            Body::Registered(_) => break,
            Body::Error(e) if e.message.contains("on this relay") => e.retry_after_ms,
            other => panic!(
                "after {refused_relay_wide} relay-wide refusals: {other:?} (the network's \
                 budget was spent by them)"
            ),
        };
        refused_relay_wide += 1;
        assert!(tokio::time::Instant::now() < deadline, "no room ever");
        // The relay's own answer of when it has room: a rate refilling in
        // real time, nothing to synchronise on.
        tokio::time::sleep(std::time::Duration::from_millis(retry_after_ms)).await;
    }
    assert!(refused_relay_wide > 0, "the relay was never full");
}
