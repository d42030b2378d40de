//! `Delivered` receipts are kept by the relay until the sending device
//! acks them with `ReceiptAck`, like envelopes: one in flight when the
//! sender's connection dies comes again on its next connection, one never
//! acked comes again on every connection, an online sender that reads
//! slowly gets every receipt of thousands of acks, and a bad `ReceiptAck`
//! gets a typed error and deletes nothing.

use crate::support;

use comptoir_protocol::proto::wire::{self, ErrorCode, client_frame, server_frame::Body};
use support::*;

/// A message id for numbers beyond `id`'s 256.
fn big_id(n: u32) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id[15] = 0xdd;
    id
}

fn receipt_ack(d: &wire::Delivered) -> client_frame::Body {
    client_frame::Body::ReceiptAck(wire::ReceiptAck {
        message_id: d.message_id.clone(),
        recipient_account: d.recipient_account.clone(),
        recipient_device: d.recipient_device,
    })
}

/// Whether the relay pushed a `Delivered` receipt right after this login:
/// receipts kept for a device are pushed before the connection reads its
/// next request, so they come before the reply to this one.
async fn receipts_pushed_at_login(c: &mut Client, probe: &Account) -> Vec<wire::Delivered> {
    let get = client_frame::Body::GetDeviceList(wire::GetDeviceList {
        account_id: probe.id.to_vec(),
    });
    assert!(matches!(c.request(get).await, Body::DeviceList(_)));
    let mut receipts = Vec::new();
    while !c.backlog_is_empty_of(|f| matches!(f, Body::Delivered(_))) {
        if let Body::Delivered(d) = c.next_push().await {
            receipts.push(d);
        }
    }
    receipts
}

/// Alice sends `id(n)` to Bob, Bob (online) acks it; returns once the
/// relay counted the delivery.
async fn deliver_one(relay: &TestRelay, alice: &Account, bob: &Account, n: u8) {
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let reply = a.request(send_body(&bob.id, &[1], id(n), b"x")).await;
    assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
    drop(a);
    let (mut b, _) = bob.login(relay.addr, 1).await;
    let env = b.next_envelope().await;
    b.ack(&env).await;
    relay
        .wait_metric("comptoir_envelopes_delivered_total", 1.0)
        .await;
}

#[tokio::test]
async fn a_receipt_in_flight_when_the_senders_connection_dies_comes_again_until_acked() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    // Alice online: the receipt is pushed to her at once.
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let reply = a.request(send_body(&bob.id, &[1], id(7), b"x")).await;
    assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
    let (mut b, _) = bob.login(relay.addr, 1).await;
    let env = b.next_envelope().await;
    b.ack(&env).await;
    let first = a
        .next_matching(|f| match f {
            Body::Delivered(d) => Some(d.clone()),
            _ => None,
        })
        .await;
    assert_eq!(first.message_id, id(7));
    // Read off the socket, but the connection dies before Alice acks it.
    drop(a);
    for _ in 0..2 {
        let (mut a, _) = alice.login(relay.addr, 1).await;
        let again = receipts_pushed_at_login(&mut a, &bob).await;
        assert_eq!(again, vec![first.clone()], "pushed again, once");
    }
    // Acked (with a reply): deleted, never pushed again.
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let again = receipts_pushed_at_login(&mut a, &bob).await;
    assert_eq!(again, vec![first.clone()]);
    assert!(matches!(a.request(receipt_ack(&first)).await, Body::Ok(_)));
    assert_eq!(relay.metric("comptoir_receipts_acked_total").await, 1.0);
    // A second ack of it is answered Ok and changes nothing.
    assert!(matches!(a.request(receipt_ack(&first)).await, Body::Ok(_)));
    drop(a);
    let (mut a, _) = alice.login(relay.addr, 1).await;
    assert!(receipts_pushed_at_login(&mut a, &bob).await.is_empty());
    assert_eq!(relay.metric("comptoir_receipts_acked_total").await, 1.0);
}

#[tokio::test]
async fn a_receipt_kept_for_an_offline_sender_survives_a_restart_until_acked() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    deliver_one(&relay, &alice, &bob, 3).await;
    let relay = relay.restart().await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let got = receipts_pushed_at_login(&mut a, &bob).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id, id(3));
    assert_eq!(got[0].recipient_account, bob.id.to_vec());
    assert_eq!(got[0].recipient_device, 1);
    assert!(matches!(a.request(receipt_ack(&got[0])).await, Body::Ok(_)));
    drop(a);
    let relay = relay.restart().await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    assert!(receipts_pushed_at_login(&mut a, &bob).await.is_empty());
}

#[tokio::test]
async fn a_bad_receipt_ack_gets_a_typed_error_and_deletes_nothing() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    deliver_one(&relay, &alice, &bob, 4).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    // Pushed at login, or once durable if that is later.
    let good = a
        .next_matching(|f| match f {
            Body::Delivered(d) => Some(d.clone()),
            _ => None,
        })
        .await;
    let bad = [
        wire::ReceiptAck {
            message_id: vec![4; 3],
            recipient_account: good.recipient_account.clone(),
            recipient_device: good.recipient_device,
        },
        wire::ReceiptAck {
            message_id: good.message_id.clone(),
            recipient_account: vec![1; 17],
            recipient_device: good.recipient_device,
        },
        wire::ReceiptAck::default(),
    ];
    for ack in bad {
        let reply = a.request(client_frame::Body::ReceiptAck(ack)).await;
        assert_eq!(error_code(&reply), ErrorCode::InvalidRequest);
    }
    // Well formed but naming no receipt kept for Alice's device (another
    // recipient device, another message): Ok, and nothing deleted.
    for ack in [
        wire::ReceiptAck {
            recipient_device: 2,
            ..receipt_ack_of(&good)
        },
        wire::ReceiptAck {
            message_id: id(5).to_vec(),
            ..receipt_ack_of(&good)
        },
    ] {
        let reply = a.request(client_frame::Body::ReceiptAck(ack)).await;
        assert!(matches!(reply, Body::Ok(_)), "{reply:?}");
    }
    // Bob cannot delete Alice's receipt by acking it on his own device.
    let (mut b, _) = bob.login(relay.addr, 1).await;
    assert!(matches!(b.request(receipt_ack(&good)).await, Body::Ok(_)));
    assert_eq!(relay.metric("comptoir_receipts_acked_total").await, 0.0);
    drop(a);
    let (mut a, _) = alice.login(relay.addr, 1).await;
    assert_eq!(
        receipts_pushed_at_login(&mut a, &bob).await,
        vec![good],
        "still kept"
    );
    // Before authentication: refused.
    let mut anonymous = Client::connect(relay.addr).await;
    let reply = anonymous
        .request(client_frame::Body::ReceiptAck(wire::ReceiptAck::default()))
        .await;
    assert_eq!(error_code(&reply), ErrorCode::NotAuthenticated);
}

fn receipt_ack_of(d: &wire::Delivered) -> wire::ReceiptAck {
    wire::ReceiptAck {
        message_id: d.message_id.clone(),
        recipient_account: d.recipient_account.clone(),
        recipient_device: d.recipient_device,
    }
}

/// Thousands of Alice's envelopes are acked while her own connection is
/// stalled (she reads nothing, and large envelopes for her fill the
/// socket): the relay used to post each receipt to her connection and drop
/// the oldest beyond 256; now every one reaches her.
#[tokio::test]
async fn an_online_sender_reading_slowly_gets_every_receipt_of_thousands_of_acks() {
    const SMALL: u32 = 3000;
    const LARGE: u32 = 120;
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    // Alice queues SMALL envelopes for the offline Bob.
    for chunk in (0..SMALL).collect::<Vec<_>>().chunks(200) {
        let mut ids = Vec::new();
        for &n in chunk {
            ids.push(a.send(send_body(&bob.id, &[1], big_id(n), b"s")).await);
        }
        for request in ids {
            let reply = a.reply(request).await;
            assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
        }
    }
    // Bob fills Alice's connection with large envelopes she does not read.
    let (mut b, ok) = bob.login(relay.addr, 1).await;
    assert_eq!(ok.queued, u64::from(SMALL));
    let large = vec![0x5a; 60_000];
    for n in 0..LARGE {
        let request = b
            .send(send_body(&alice.id, &[1], big_id(1_000_000 + n), &large))
            .await;
        let reply = b.reply(request).await;
        assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
    }
    // Bob drains and acks all of Alice's envelopes.
    for _ in 0..SMALL {
        let env = b.next_envelope().await;
        b.ack(&env).await;
    }
    relay
        .wait_metric("comptoir_envelopes_delivered_total", f64::from(SMALL))
        .await;
    // Alice reads at last, acking what she gets.
    let mut receipts = std::collections::BTreeSet::new();
    let (mut large_seen, mut pushed) = (0, 0);
    while receipts.len() < SMALL as usize || large_seen < LARGE {
        match a.next_push().await {
            Body::Delivered(d) => {
                a.send_with_id(0, receipt_ack(&d)).await;
                receipts.insert(d.message_id);
                pushed += 1;
            }
            Body::Deliver(d) => {
                let env = d.envelope.expect("envelope");
                a.ack(&env).await;
                large_seen += 1;
            }
            _ => {}
        }
    }
    let expected: std::collections::BTreeSet<Vec<u8>> =
        (0..SMALL).map(|n| big_id(n).to_vec()).collect();
    assert_eq!(receipts, expected, "every receipt");
    assert_eq!(pushed, SMALL, "each once");
    relay
        .wait_metric("comptoir_receipts_acked_total", f64::from(SMALL))
        .await;
}
