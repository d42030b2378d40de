//! Security state takes effect at once, under concurrency, against a real
//! relay: once the reply to a device removal or a block has reached its
//! sender, no later request is served on the old state (no cache, in
//! storage or in a connection, may answer with it).

use crate::support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use comptoir_protocol::DeviceList;
use comptoir_protocol::proto::wire::{self, ErrorCode, client_frame, server_frame::Body};
use support::*;

/// Sending connections working at once.
const SENDERS: usize = 4;
/// Sends each sender makes after it saw the change take effect.
const AFTER: usize = 25;

/// A fresh message id (unique within the test).
fn next_id(counter: &AtomicU64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&counter.fetch_add(1, SeqCst).to_be_bytes());
    id[15] = 0x5e;
    id
}

fn is_error(body: &Body, code: ErrorCode) -> bool {
    matches!(body, Body::Error(e) if e.code == code as i32)
}

/// (a) Device 3 of Bob is removed while four accounts keep sending to Bob
/// and device 3 keeps logging in and asking for things. Once the removal's
/// `Ok` is back: no send with a copy for device 3 is accepted, device 3
/// cannot log in, and no connection of device 3 is served a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_device_is_cut_off_at_once_under_concurrent_sends_and_logins() {
    let relay = start_relay().await;
    let bob = Arc::new(Account::new(3));
    bob.register(relay.addr).await;
    let removed = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(AtomicU64::new(1));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(SENDERS);

    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let sender = Account::new(1);
        sender.register(relay.addr).await;
        let (mut c, _) = sender.login(relay.addr, 1).await;
        let (bob_id, removed, ids, ready) =
            (bob.id, removed.clone(), ids.clone(), ready_tx.clone());
        senders.push(tokio::spawn(async move {
            let mut devices = vec![1, 2, 3];
            let (mut sent, mut after) = (0usize, 0usize);
            while after < AFTER {
                let seen = removed.load(SeqCst);
                let reply = c
                    .request(send_body(&bob_id, &devices, next_id(&ids), b"x"))
                    .await;
                match &reply {
                    Body::Accepted(_) => assert!(
                        !(seen && devices.contains(&3)),
                        "a send made after the removal was accepted with a copy for the removed device"
                    ),
                    _ if is_error(&reply, ErrorCode::DeviceListMismatch) => devices = vec![1, 2],
                    other => panic!("unexpected reply {other:?}"),
                }
                sent += 1;
                if sent == 10 {
                    let _ = ready.send(()).await;
                }
                after += usize::from(seen);
            }
        }));
    }
    drop(ready_tx);

    // Device 3 keeps a connection busy with requests, and keeps logging in
    // on new ones.
    let (mut d3, _) = bob.login(relay.addr, 3).await;
    let busy = {
        let (bob_id, removed) = (bob.id, removed.clone());
        tokio::spawn(async move {
            let get = || {
                client_frame::Body::GetDeviceList(wire::GetDeviceList {
                    account_id: bob_id.to_vec(),
                })
            };
            loop {
                let seen = removed.load(SeqCst);
                match d3.try_request(get()).await {
                    None => break,
                    Some(reply) => assert!(
                        !(seen && matches!(reply, Body::DeviceList(_))),
                        "the removed device was served after the removal: {reply:?}"
                    ),
                }
            }
            d3.close.map(|(code, _)| code)
        })
    };
    let logins = {
        let (bob, removed, addr) = (bob.clone(), removed.clone(), relay.addr);
        tokio::spawn(async move {
            let mut refused_after = 0;
            while refused_after < AFTER {
                let seen = removed.load(SeqCst);
                let mut c = Client::connect(addr).await;
                let nonce = c.nonce.clone();
                match c.try_request(bob.auth_body(3, &nonce)).await {
                    Some(Body::AuthOk(_)) => {
                        assert!(!seen, "the removed device logged in after the removal");
                        // Logged in just before: the removal must reach
                        // this connection too.
                        let seen = removed.load(SeqCst);
                        let get = client_frame::Body::FetchPrekeys(wire::FetchPreKeys {
                            account_id: bob.id.to_vec(),
                            device_ids: Vec::new(),
                        });
                        if let Some(reply) = c.try_request(get).await {
                            assert!(
                                !(seen && matches!(reply, Body::PrekeyBundles(_))),
                                "a connection of the removed device fetched after the removal"
                            );
                        }
                    }
                    Some(reply) => {
                        assert!(is_error(&reply, ErrorCode::UnknownDevice), "{reply:?}");
                        refused_after += usize::from(seen);
                    }
                    None => refused_after += usize::from(seen),
                }
            }
        })
    };

    for _ in 0..SENDERS {
        ready_rx.recv().await.expect("a sender is ready");
    }
    let (mut d1, _) = bob.login(relay.addr, 1).await;
    let v2 = DeviceList::sign(
        &bob.key,
        bob.id,
        2,
        vec![
            (1, *bob.identity(1).public()),
            (2, *bob.identity(2).public()),
        ],
    )
    .expect("sign");
    let publish = client_frame::Body::PublishDeviceList(wire::PublishDeviceList {
        device_list: Some(v2),
    });
    let reply = d1.request(publish).await;
    assert!(matches!(reply, Body::Ok(_)), "{reply:?}");
    removed.store(true, SeqCst);

    for sender in senders {
        sender.await.expect("sender");
    }
    logins.await.expect("logins");
    // Closed as removed, or earlier as replaced by one of the logins.
    let code = busy.await.expect("busy");
    assert!(matches!(code, Some(4005 | 4006)), "{code:?}");
}

/// (b) Carol blocks a business while it sends to her from four devices at
/// once. Once the block's `Ok` is back, every later send is refused with
/// `BLOCKED`, and nothing of the business's is left queued for her: the
/// block deleted what was queued, and a send decided before the block but
/// stored after it is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_block_refuses_every_later_send_under_concurrent_senders() {
    let relay = start_relay().await;
    let shop = Arc::new(Account::new(SENDERS as u32));
    shop.register_as(relay.addr, wire::AccountKind::Business)
        .await;
    let carol = Account::new(1);
    carol.register(relay.addr).await;
    // Carol wrote to the shop: its service replies are inside the window.
    {
        let (mut c, _) = carol.login(relay.addr, 1).await;
        let devices: Vec<u32> = (1..=SENDERS as u32).collect();
        let hello = c
            .request(send_body(&shop.id, &devices, [0xCA; 16], b"hi"))
            .await;
        assert!(matches!(hello, Body::Accepted(_)), "{hello:?}");
    }
    let blocked = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(AtomicU64::new(1));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(SENDERS);

    let mut senders = Vec::new();
    for device in 1..=SENDERS as u32 {
        let (mut c, _) = shop.login(relay.addr, device).await;
        let (carol_id, blocked, ids, ready) =
            (carol.id, blocked.clone(), ids.clone(), ready_tx.clone());
        senders.push(tokio::spawn(async move {
            let mut accepted = BTreeSet::new();
            let (mut sent, mut after) = (0usize, 0usize);
            while after < AFTER {
                let seen = blocked.load(SeqCst);
                let id = next_id(&ids);
                let body = send_body_as(&carol_id, &[1], id, b"promo", wire::Category::Service);
                let reply = c.request(body).await;
                match &reply {
                    Body::Accepted(_) => {
                        assert!(!seen, "a send made after the block was accepted");
                        accepted.insert(id.to_vec());
                    }
                    _ if is_error(&reply, ErrorCode::Blocked) => {}
                    other => panic!("unexpected reply {other:?}"),
                }
                sent += 1;
                if sent == 10 {
                    let _ = ready.send(()).await;
                }
                after += usize::from(seen);
            }
            accepted
        }));
    }
    drop(ready_tx);
    for _ in 0..SENDERS {
        ready_rx.recv().await.expect("a sender is ready");
    }
    let (mut c1, _) = carol.login(relay.addr, 1).await;
    let block = client_frame::Body::Block(wire::Block {
        account_id: shop.id.to_vec(),
        reason: 0,
    });
    let reply = c1.request(block).await;
    assert!(matches!(reply, Body::Ok(_)), "{reply:?}");
    blocked.store(true, SeqCst);

    let mut accepted = BTreeSet::new();
    for sender in senders {
        accepted.extend(sender.await.expect("sender"));
    }
    assert!(
        !accepted.is_empty(),
        "some sends were accepted before the block"
    );
    // Nothing of the shop's is left queued for Carol (she acked none).
    drop(c1);
    let (_c1, ok) = carol.login(relay.addr, 1).await;
    assert_eq!(ok.queued, 0, "the block deleted what the shop had queued");
}

/// (c) The operator revokes an approved template while the business's
/// devices keep sending it to a customer (inside the window she opened,
/// so only the approval decides). Once the revocation's answer is back,
/// no send of the template is accepted: the relay's decoding of template
/// records (memoised by their stored bytes) never answers with the
/// approved record. Approved again, it is accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_template_is_refused_at_once_under_concurrent_senders() {
    let relay = start_relay().await;
    let admin = relay.admin_client();
    let shop = Arc::new(Account::new(SENDERS as u32));
    shop.register_as(relay.addr, wire::AccountKind::Business)
        .await;
    let carol = Account::new(1);
    carol.register(relay.addr).await;
    let template = support::templates::support_template(shop.id, wire::Category::Utility);
    let tid = support::templates::id_for(shop.id, wire::Category::Utility);
    {
        let (mut b, _) = shop.login(relay.addr, 1).await;
        let submitted = support::templates::submit(&mut b, &template).await;
        assert!(
            matches!(submitted, Body::TemplateSubmitted(_)),
            "{submitted:?}"
        );
    }
    admin.approve_template(&tid).await.expect("approve");
    // Carol wrote to the shop: its templates need no consent in the window.
    let (mut c1, _) = carol.login(relay.addr, 1).await;
    let hello = c1
        .request(send_body(&shop.id, &[1, 2, 3, 4], [0xCA; 16], b"hi"))
        .await;
    assert!(matches!(hello, Body::Accepted(_)), "{hello:?}");
    let template_send = {
        let tid = tid.clone();
        move |id: [u8; 16], to: &comptoir_protocol::AccountId| {
            let mut body = send_body_as(to, &[1], id, b"order", wire::Category::Utility);
            if let client_frame::Body::Send(send) = &mut body {
                send.template_id = tid.clone();
            }
            body
        }
    };

    let revoked = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(AtomicU64::new(1));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(SENDERS);
    let mut senders = Vec::new();
    for device in 1..=SENDERS as u32 {
        let (mut c, _) = shop.login(relay.addr, device).await;
        let (carol_id, revoked, ids, ready) =
            (carol.id, revoked.clone(), ids.clone(), ready_tx.clone());
        let template_send = template_send.clone();
        senders.push(tokio::spawn(async move {
            let (mut sent, mut after, mut accepted) = (0usize, 0usize, 0usize);
            while after < AFTER {
                let seen = revoked.load(SeqCst);
                let reply = c.request(template_send(next_id(&ids), &carol_id)).await;
                match &reply {
                    Body::Accepted(_) => {
                        assert!(!seen, "a template sent after its revocation was accepted");
                        accepted += 1;
                    }
                    // Before `seen`, the revocation may have landed already.
                    _ if is_error(&reply, ErrorCode::TemplateNotApproved) => {}
                    other => panic!("unexpected reply {other:?}"),
                }
                sent += 1;
                if sent == 10 {
                    let _ = ready.send(()).await;
                }
                after += usize::from(seen);
            }
            (c, accepted)
        }));
    }
    drop(ready_tx);
    for _ in 0..SENDERS {
        ready_rx.recv().await.expect("a sender is ready");
    }
    let answer = admin.revoke_template(&tid).await.expect("revoke");
    assert_eq!(answer.status, "revoked");
    revoked.store(true, SeqCst);

    let mut connections = Vec::new();
    let mut accepted = 0;
    for sender in senders {
        let (c, n) = sender.await.expect("sender");
        connections.push(c);
        accepted += n;
    }
    assert!(
        accepted > 0,
        "some sends were accepted before the revocation"
    );
    // Approved again: accepted again, at once.
    admin.approve_template(&tid).await.expect("approve again");
    let again = connections[0]
        .request(template_send(next_id(&ids), &carol.id))
        .await;
    assert!(matches!(again, Body::Accepted(_)), "{again:?}");
}

/// A list that keeps a device id but gives it another identity key cuts
/// off the connection that proved the old key (it held that key for its
/// whole life), like a removal; the device with the new key logs in.
#[tokio::test]
async fn a_device_id_given_a_new_key_cuts_off_the_old_keys_connection() {
    let relay = start_relay().await;
    let mut alice = Account::new(2);
    alice.register(relay.addr).await;
    let (mut a1, _) = alice.login(relay.addr, 1).await;
    let (mut a2, _) = alice.login(relay.addr, 2).await;
    alice.devices.retain(|(d, _)| *d == 1);
    alice.devices.push((
        2,
        comptoir_protocol::IdentityKeyPair::generate(&mut rand::rng()),
    ));
    alice.version = 2;
    let publish = client_frame::Body::PublishDeviceList(wire::PublishDeviceList {
        device_list: Some(alice.signed_list()),
    });
    assert!(matches!(a1.request(publish).await, Body::Ok(_)));
    let get = client_frame::Body::GetDeviceList(wire::GetDeviceList {
        account_id: alice.id.to_vec(),
    });
    let reply = a2.try_request(get).await;
    assert!(
        reply.is_none(),
        "the old key's connection was served: {reply:?}"
    );
    assert_eq!(a2.close.as_ref().map(|(c, _)| *c), Some(4006));
    let (_, ok) = alice.login(relay.addr, 2).await;
    assert_eq!(ok.queued, 0);
}
