//! Relay-assigned accept ids: every accepted send gets one, unique and
//! never reused (also across a restart), the same when a retry is
//! answered as a duplicate; it is carried in `Accepted`, in the envelope
//! pushed to each device, and in `Delivered`, and an ack may name the
//! envelope by it alone.

use crate::support;

use comptoir_protocol::proto::wire::{self, client_frame, server_frame::Body};
use support::*;

fn accepted(reply: &Body) -> wire::Accepted {
    match reply {
        Body::Accepted(a) => a.clone(),
        other => panic!("expected Accepted, got {other:?}"),
    }
}

#[tokio::test]
async fn accept_ids_are_unique_never_reused_across_a_restart_and_stable_for_a_retry() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(2));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let first = accepted(&a.request(send_body(&bob.id, &[1, 2], id(1), b"x")).await);
    let second = accepted(&a.request(send_body(&bob.id, &[1, 2], id(2), b"y")).await);
    assert_ne!(first.accept_id, 0);
    assert_ne!(first.accept_id, second.accept_id);
    // A retry of the same send is a duplicate: same accept id.
    let retry = accepted(&a.request(send_body(&bob.id, &[1, 2], id(1), b"x")).await);
    assert_eq!(retry.accept_id, first.accept_id);
    drop(a);
    let relay = relay.restart().await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let retry = accepted(&a.request(send_body(&bob.id, &[1, 2], id(1), b"x")).await);
    assert_eq!(retry.accept_id, first.accept_id, "same id after a restart");
    let third = accepted(&a.request(send_body(&bob.id, &[1, 2], id(3), b"z")).await);
    assert!(
        ![first.accept_id, second.accept_id].contains(&third.accept_id),
        "an accept id is never handed out again after a restart"
    );
}

#[tokio::test]
async fn the_accept_id_in_accepted_is_the_one_in_each_envelope_and_in_delivered() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(2));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let sent = accepted(&a.request(send_body(&bob.id, &[1, 2], id(7), b"x")).await);
    for device in [1, 2] {
        let (mut b, _) = bob.login(relay.addr, device).await;
        let envelope = b.next_envelope().await;
        assert_eq!(envelope.accept_id, sent.accept_id, "device {device}");
        assert_eq!(envelope.message_id, id(7));
        // Named by its accept id and a message id other than the copy's:
        // nothing deleted.
        let wrong = client_frame::Body::DeliveryAck(wire::DeliveryAck {
            message_id: id(8).to_vec(),
            sender_account: alice.id.to_vec(),
            accept_id: envelope.accept_id,
            ..Default::default()
        });
        assert!(matches!(b.request(wrong).await, Body::Ok(_)));
        assert_eq!(
            relay.metric("comptoir_queue_depth").await,
            f64::from(3 - device),
            "a mismatched ack deletes nothing"
        );
        // Named by its accept id alone.
        let ack = client_frame::Body::DeliveryAck(wire::DeliveryAck {
            message_id: Vec::new(),
            sender_account: Vec::new(),
            accept_id: envelope.accept_id,
            ..Default::default()
        });
        assert!(matches!(b.request(ack).await, Body::Ok(_)));
        let delivered = a
            .next_matching(|body| match body {
                Body::Delivered(d) => Some(d.clone()),
                _ => None,
            })
            .await;
        assert_eq!(delivered.accept_id, sent.accept_id);
        assert_eq!(delivered.recipient_device, device);
        assert_eq!(delivered.message_id, id(7));
    }
    relay
        .wait_metric("comptoir_envelopes_delivered_total", 2.0)
        .await;
    assert_eq!(relay.metric("comptoir_queue_depth").await, 0.0);
}
