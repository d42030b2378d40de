//! Store and forward over a real relay: online push, offline drain in
//! order, Delivered receipts, idempotent retries, device-list coverage,
//! restart, TTL expiry, queue limits, blocking.

use crate::support;

use comptoir_protocol::proto::wire::{self, ErrorCode, client_frame, server_frame::Body};
use support::*;

#[tokio::test]
async fn online_delivery_ack_and_delivered() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let (mut b, ok) = bob.login(relay.addr, 1).await;
    assert_eq!(ok.queued, 0);

    let reply = a
        .request(send_body(&bob.id, &[1], id(1), b"ciphertext-1"))
        .await;
    let Body::Accepted(accepted) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(accepted.message_id, id(1));

    let env = b.next_envelope().await;
    assert_eq!(env.message_id, id(1));
    assert_eq!(
        env.sender_account,
        alice.id.to_vec(),
        "relay fills the sender"
    );
    assert_eq!(env.sender_device, 1);
    assert_eq!(env.recipient_device, 1);
    assert_eq!(env.server_timestamp_ms, accepted.server_timestamp_ms);
    assert_eq!(env.ciphertext, b"ciphertext-1");
    b.ack(&env).await;

    let delivered = a
        .next_matching(|b| match b {
            Body::Delivered(d) => Some(d.clone()),
            _ => None,
        })
        .await;
    assert_eq!(delivered.message_id, id(1));
    assert_eq!(delivered.recipient_account, bob.id.to_vec());
    relay
        .wait_metric("comptoir_envelopes_delivered_total", 1.0)
        .await;
    assert_eq!(relay.metric("comptoir_queue_depth").await, 0.0);
}

#[tokio::test]
async fn offline_queue_drains_in_order_after_reconnect() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    for n in 0..5u8 {
        let reply = a.request(send_body(&bob.id, &[1], id(n), &[n; 40])).await;
        assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
    }
    let (mut b, ok) = bob.login(relay.addr, 1).await;
    assert_eq!(ok.queued, 5);
    for n in 0..5u8 {
        let env = b.next_envelope().await;
        assert_eq!(env.message_id, id(n), "in order");
        b.ack(&env).await;
    }
    // Reconnecting after the acks drains nothing more.
    drop(b);
    relay
        .wait_metric("comptoir_envelopes_delivered_total", 5.0)
        .await;
    let (_, ok) = bob.login(relay.addr, 1).await;
    assert_eq!(ok.queued, 0);
}

#[tokio::test]
async fn unacked_envelopes_are_redelivered_on_reconnect() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let (mut b, _) = bob.login(relay.addr, 1).await;
    a.request(send_body(&bob.id, &[1], id(9), b"x")).await;
    let env = b.next_envelope().await;
    drop(b); // no ack
    let (mut b, ok) = bob.login(relay.addr, 1).await;
    assert_eq!(ok.queued, 1);
    assert_eq!(b.next_envelope().await.message_id, env.message_id);
}

#[tokio::test]
async fn duplicate_send_is_stored_and_delivered_once() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let first = a.request(send_body(&bob.id, &[1], id(1), b"once")).await;
    let again = a.request(send_body(&bob.id, &[1], id(1), b"once")).await;
    let (Body::Accepted(first), Body::Accepted(again)) = (first, again) else {
        panic!("both attempts are accepted")
    };
    assert_eq!(first.server_timestamp_ms, again.server_timestamp_ms);
    a.request(send_body(&bob.id, &[1], id(2), b"next")).await;

    let (mut b, ok) = bob.login(relay.addr, 1).await;
    assert_eq!(ok.queued, 2, "the retry stored nothing");
    assert_eq!(b.next_envelope().await.message_id, id(1));
    assert_eq!(
        b.next_envelope().await.message_id,
        id(2),
        "no duplicate in between"
    );
    assert_eq!(
        relay.metric("comptoir_envelopes_duplicate_total").await,
        1.0
    );

    // A retry after delivery is still recognised.
    let env = wire::Envelope {
        message_id: id(1).to_vec(),
        sender_account: alice.id.to_vec(),
        ..Default::default()
    };
    b.ack(&env).await;
    relay
        .wait_metric("comptoir_envelopes_delivered_total", 1.0)
        .await;
    let late = a.request(send_body(&bob.id, &[1], id(1), b"once")).await;
    assert!(matches!(late, Body::Accepted(_)));
    assert_eq!(
        relay.metric("comptoir_queue_depth").await,
        1.0,
        "only id(2) remains"
    );
}

#[tokio::test]
async fn send_must_cover_exactly_the_current_devices() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(2));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    for devices in [&[1u32][..], &[1, 2, 3], &[2, 3]] {
        let reply = a.request(send_body(&bob.id, devices, id(1), b"x")).await;
        assert_eq!(error_code(&reply), ErrorCode::DeviceListMismatch);
        let Body::Error(e) = reply else {
            unreachable!()
        };
        let list = e
            .device_list
            .expect("the current list comes with the refusal");
        assert_eq!(list, bob.signed_list());
    }
    assert_eq!(
        relay.metric("comptoir_queue_depth").await,
        0.0,
        "never half-delivered"
    );
    let reply = a.request(send_body(&bob.id, &[1, 2], id(1), b"x")).await;
    assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
    let (_, ok1) = bob.login(relay.addr, 1).await;
    let (_, ok2) = bob.login(relay.addr, 2).await;
    assert_eq!((ok1.queued, ok2.queued), (1, 1));
}

#[tokio::test]
async fn own_other_devices_get_a_sync_copy() {
    let relay = start_relay().await;
    let alice = Account::new(2);
    alice.register(relay.addr).await;
    let (mut a1, _) = alice.login(relay.addr, 1).await;
    let (mut a2, _) = alice.login(relay.addr, 2).await;
    let reply = a1.request(send_body(&alice.id, &[1, 2], id(1), b"x")).await;
    assert_eq!(
        error_code(&reply),
        ErrorCode::DeviceListMismatch,
        "not to itself"
    );
    let reply = a1.request(send_body(&alice.id, &[2], id(1), b"sync")).await;
    assert!(matches!(reply, Body::Accepted(_)));
    let env = a2.next_envelope().await;
    assert_eq!(
        (env.sender_device, env.ciphertext.as_slice()),
        (1, &b"sync"[..])
    );
}

#[tokio::test]
async fn queued_envelopes_survive_a_restart() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    for n in 0..3u8 {
        a.request(send_body(&bob.id, &[1], id(n), b"persist")).await;
    }
    drop(a);
    let relay = relay.restart().await;
    let (mut b, ok) = bob.login(relay.addr, 1).await;
    assert_eq!(ok.queued, 3);
    for n in 0..3u8 {
        assert_eq!(b.next_envelope().await.message_id, id(n));
    }
    assert_eq!(
        relay.metric("comptoir_queue_depth").await,
        3.0,
        "gauge restored"
    );
}

#[tokio::test]
async fn undelivered_envelopes_expire_after_the_ttl() {
    let relay = start_relay_with(|c| {
        c.message_ttl_ms = 300;
        c.gc_interval_ms = 50;
    })
    .await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    a.request(send_body(&bob.id, &[1], id(1), b"short-lived"))
        .await;
    relay
        .wait_metric("comptoir_envelopes_expired_total", 1.0)
        .await;
    let (_, ok) = bob.login(relay.addr, 1).await;
    assert_eq!(ok.queued, 0);
    assert_eq!(relay.metric("comptoir_queue_depth").await, 0.0);
}

#[tokio::test]
async fn a_full_device_queue_refuses_with_queue_full() {
    let relay = start_relay_with(|c| c.limits.max_queue_per_device = 2).await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    for n in 0..2u8 {
        assert!(matches!(
            a.request(send_body(&bob.id, &[1], id(n), b"x")).await,
            Body::Accepted(_)
        ));
    }
    let reply = a.request(send_body(&bob.id, &[1], id(3), b"x")).await;
    assert_eq!(error_code(&reply), ErrorCode::QueueFull);
}

#[tokio::test]
async fn block_refuses_across_all_devices_and_unblock_restores() {
    let relay = start_relay().await;
    let (shop, carol) = (Account::new(1), Account::new(2));
    shop.register(relay.addr).await;
    carol.register(relay.addr).await;
    let (mut s, _) = shop.login(relay.addr, 1).await;
    let (mut c1, _) = carol.login(relay.addr, 1).await;
    let (mut c2, _) = carol.login(relay.addr, 2).await;

    let block = client_frame::Body::Block(wire::Block {
        account_id: shop.id.to_vec(),
        reason: 0,
    });
    assert!(matches!(c1.request(block).await, Body::Ok(_)));
    let reply = s
        .request(send_body(&carol.id, &[1, 2], id(1), b"promo"))
        .await;
    assert_eq!(error_code(&reply), ErrorCode::Blocked);
    assert_eq!(
        relay.metric("comptoir_queue_depth").await,
        0.0,
        "nothing stored"
    );
    // Carol can still write to the shop.
    let reply = c2.request(send_body(&shop.id, &[1], id(2), b"hi")).await;
    assert!(matches!(reply, Body::Accepted(_)));

    // Unblock from the other device restores delivery to both.
    let unblock = client_frame::Body::Unblock(wire::Unblock {
        account_id: shop.id.to_vec(),
    });
    assert!(matches!(c2.request(unblock).await, Body::Ok(_)));
    let reply = s
        .request(send_body(&carol.id, &[1, 2], id(3), b"reply"))
        .await;
    assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
    assert_eq!(c1.next_envelope().await.message_id, id(3));
    assert_eq!(c2.next_envelope().await.message_id, id(3));

    let self_block = client_frame::Body::Block(wire::Block {
        account_id: carol.id.to_vec(),
        reason: 0,
    });
    assert_eq!(
        error_code(&c1.request(self_block).await),
        ErrorCode::InvalidRequest
    );
    // Blocking an account that does not exist is refused (it would only
    // grow the relay's state).
    let made_up = client_frame::Body::Block(wire::Block {
        account_id: vec![0x77; 16],
        reason: 0,
    });
    assert_eq!(
        error_code(&c1.request(made_up).await),
        ErrorCode::UnknownAccount
    );
}

#[tokio::test]
async fn block_survives_a_restart() {
    let relay = start_relay().await;
    let (shop, carol) = (Account::new(1), Account::new(1));
    shop.register(relay.addr).await;
    carol.register(relay.addr).await;
    let (mut c, _) = carol.login(relay.addr, 1).await;
    let block = client_frame::Body::Block(wire::Block {
        account_id: shop.id.to_vec(),
        reason: 0,
    });
    assert!(matches!(c.request(block).await, Body::Ok(_)));
    drop(c);
    let relay = relay.restart().await;
    let (mut s, _) = shop.login(relay.addr, 1).await;
    let reply = s.request(send_body(&carol.id, &[1], id(1), b"x")).await;
    assert_eq!(error_code(&reply), ErrorCode::Blocked);
}

#[tokio::test]
async fn send_to_unknown_account_is_refused() {
    let relay = start_relay().await;
    let alice = Account::new(1);
    alice.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let nobody = Account::new(1);
    let reply = a.request(send_body(&nobody.id, &[1], id(1), b"x")).await;
    assert_eq!(error_code(&reply), ErrorCode::UnknownAccount);
}

#[tokio::test]
async fn delivered_receipts_wait_for_an_offline_sender() {
    let relay = start_relay().await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    a.request(send_body(&bob.id, &[1], id(4), b"x")).await;
    drop(a);
    let (mut b, _) = bob.login(relay.addr, 1).await;
    let env = b.next_envelope().await;
    b.ack(&env).await;
    relay
        .wait_metric("comptoir_envelopes_delivered_total", 1.0)
        .await;
    // Alice was offline when Bob acked: she gets the receipt on connect,
    // once.
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let delivered = a
        .next_matching(|f| match f {
            Body::Delivered(d) => Some(d.clone()),
            _ => None,
        })
        .await;
    assert_eq!(delivered.message_id, id(4));
    assert_eq!(delivered.recipient_account, bob.id.to_vec());
    // Acked: the relay forgets it (see receipts.rs for one not acked).
    let ack = client_frame::Body::ReceiptAck(wire::ReceiptAck {
        message_id: delivered.message_id.clone(),
        recipient_account: delivered.recipient_account.clone(),
        recipient_device: delivered.recipient_device,
    });
    assert!(matches!(a.request(ack).await, Body::Ok(_)));
    drop(a);
    let (mut a, _) = alice.login(relay.addr, 1).await;
    // The next push is the reply to a fresh send, not a second receipt.
    let get = client_frame::Body::GetDeviceList(wire::GetDeviceList {
        account_id: bob.id.to_vec(),
    });
    assert!(matches!(a.request(get).await, Body::DeviceList(_)));
    let reply = a.request(send_body(&bob.id, &[1], id(5), b"y")).await;
    assert!(matches!(reply, Body::Accepted(_)));
    let _ = b.next_envelope().await;
    assert!(
        a.backlog_is_empty_of(|f| matches!(f, Body::Delivered(_))),
        "receipt delivered until acked, then no more"
    );
}

#[tokio::test]
async fn a_full_delivery_window_resumes_as_acks_come_in() {
    let relay = start_relay_with(|c| c.limits.delivery_window = 2).await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    let (mut b, _) = bob.login(relay.addr, 1).await;
    for n in 0..5u8 {
        assert!(matches!(
            a.request(send_body(&bob.id, &[1], id(n), b"w")).await,
            Body::Accepted(_)
        ));
    }
    // Two pushed, then each ack lets the next one through, in order.
    let mut unacked = std::collections::VecDeque::new();
    unacked.push_back(b.next_envelope().await);
    unacked.push_back(b.next_envelope().await);
    assert_eq!(unacked[0].message_id, id(0));
    assert_eq!(unacked[1].message_id, id(1));
    for n in 2..5u8 {
        let oldest = unacked.pop_front().expect("unacked");
        b.ack(&oldest).await;
        let next = b.next_envelope().await;
        assert_eq!(next.message_id, id(n));
        unacked.push_back(next);
    }
    for envelope in unacked {
        b.ack(&envelope).await;
    }
    relay
        .wait_metric("comptoir_envelopes_delivered_total", 5.0)
        .await;
}

/// Acks top a full window up in batches while more frames wait to be
/// read, but never leave a device without the rest of its mail: one that
/// keeps all but one of its window unacked (as a client holding envelopes
/// for an identity change does) still gets the next envelope as soon as
/// that one ack frees a place, and then each further one as acks come.
#[tokio::test]
async fn a_device_keeping_most_of_its_window_unacked_still_gets_the_rest() {
    let relay = start_relay_with(|c| c.limits.delivery_window = 8).await;
    let (alice, bob) = (Account::new(1), Account::new(1));
    alice.register(relay.addr).await;
    bob.register(relay.addr).await;
    let (mut a, _) = alice.login(relay.addr, 1).await;
    for n in 0..11u8 {
        assert!(matches!(
            a.request(send_body(&bob.id, &[1], id(n), b"w")).await,
            Body::Accepted(_)
        ));
    }
    let (mut b, _) = bob.login(relay.addr, 1).await;
    let mut window = Vec::new();
    for n in 0..8u8 {
        let envelope = b.next_envelope().await;
        assert_eq!(envelope.message_id, id(n));
        window.push(envelope);
    }
    // One ack frees one place of eight (less than a refill batch): the
    // ninth comes anyway, then the others one ack at a time.
    for n in 8..11u8 {
        let oldest = window.remove(0);
        b.ack(&oldest).await;
        let next = b.next_envelope().await;
        assert_eq!(next.message_id, id(n));
        window.push(next);
    }
    for envelope in window {
        b.ack(&envelope).await;
    }
    relay
        .wait_metric("comptoir_envelopes_delivered_total", 11.0)
        .await;
}
