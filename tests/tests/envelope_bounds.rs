//! Issue 9, item 6: a `Send` of the maximum frame size was stored as an
//! envelope about 29 bytes larger; the client refuses frames over 256 KiB,
//! and the relay pushed that envelope first on every connection, cutting
//! the recipient off from all its mail. The relay now bounds every
//! envelope field so that a stored `Deliver` always fits a frame.

use crate::support;

use comptoir_client::Event;
use comptoir_protocol::MAX_FRAME_SIZE;
use comptoir_protocol::frame::encode_client;
use comptoir_protocol::message::MAX_MESSAGE_LEN;
use comptoir_protocol::proto::wire::{self, ErrorCode, client_frame, server_frame::Body};
use support::client::{registered, wait_for, wait_message};
use support::*;

fn send_of(to: &comptoir_protocol::AccountId, n: u8, ciphertext_len: usize) -> client_frame::Body {
    let mut body = send_body(to, &[1], id(n), &[]);
    if let client_frame::Body::Send(send) = &mut body {
        send.devices[0].ciphertext = vec![0x5a; ciphertext_len];
    }
    body
}

/// The largest ciphertext whose `Send` frame fits `MAX_FRAME_SIZE`.
fn largest_send(to: &comptoir_protocol::AccountId) -> usize {
    let mut len = MAX_FRAME_SIZE;
    while encode_client(&wire::ClientFrame {
        request_id: 1_000,
        body: Some(send_of(to, 1, len)),
    })
    .len()
        > MAX_FRAME_SIZE
    {
        len -= 1;
    }
    len
}

#[tokio::test]
async fn a_maximal_send_never_cuts_the_real_client_off_its_mail() {
    let relay = start_relay().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut bob = registered(&relay, &dir.path().join("bob"), "pw-long-enough").await;
    let carol_dir = tempfile::tempdir().expect("dir");
    let mut carol = registered(&relay, carol_dir.path(), "pw-long-enough").await;
    let mallory = Account::new(1);
    mallory.register(relay.addr).await;
    let (mut m, _) = mallory.login(relay.addr, 1).await;
    let to = bob.account_id();

    // The largest Send the relay reads, and sizes just below it: each is
    // either refused with a typed error, or stored and then delivered to
    // the real client without breaking its connection.
    // The relay's policy also caps a ciphertext at the longest ratchet
    // message, so the largest send it accepts is the smaller of the two.
    let most = largest_send(&to);
    let sizes = (0..8)
        .map(|i| most - i * 16)
        .chain([MAX_MESSAGE_LEN.min(most)]);
    let mut accepted = 0;
    for (n, len) in sizes.enumerate().map(|(i, len)| (i as u8 + 1, len)) {
        match m.request(send_of(&to, n, len)).await {
            Body::Accepted(_) => accepted += 1,
            other => assert_eq!(error_code(&other), ErrorCode::InvalidRequest, "{len}"),
        }
    }
    assert!(accepted > 0, "a ciphertext close to the limit is accepted");
    // The real client gets what was accepted (undecryptable garbage, so
    // reported as such) and stays connected: mail sent afterwards arrives.
    let mut seen = 0;
    while seen < accepted {
        wait_for(&mut bob, |e| {
            matches!(e, Event::Undecryptable { .. } | Event::Warning(_)).then_some(())
        })
        .await;
        seen += 1;
    }
    carol.send_text(to, "still reachable").await.expect("send");
    let (_, text) = wait_message(&mut bob, carol.account_id()).await;
    assert_eq!(text, "still reachable");
    assert!(
        matches!(m.request(send_of(&to, 100, most)).await, Body::Error(_)),
        "the Send of maximum size is refused"
    );
}
