//! The client library end to end over a real relay on 127.0.0.1:0: two
//! customers chat both ways with receipts, history survives a restart, the
//! outbox drains on reconnect, a wrong passphrase is refused, a block is
//! enforced by the relay until lifted, and a client closed and reopened at
//! once never finds its store still locked.

use crate::support;

use comptoir_client::{Client, ClientError, Event, MessageId, Status};
use comptoir_protocol::AccountId;
use support::client::{registered, url, wait_for, wait_message as wait_text};
use support::{start_relay, start_relay_with};

async fn wait_delivered(client: &mut Client, message: MessageId) {
    wait_for(client, |e| match e {
        Event::Delivered { id, .. } if *id == message => Some(()),
        _ => None,
    })
    .await
}

fn status(client: &Client, peer: &AccountId, id: &MessageId) -> Status {
    client
        .message(peer, id)
        .expect("read history")
        .expect("message stored")
        .status
}

#[tokio::test]
async fn two_customers_chat_both_ways_with_receipts() {
    let relay = start_relay().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = registered(&relay, dir_a.path(), "alice pass").await;
    let mut bob = registered(&relay, dir_b.path(), "bob pass").await;
    let (a, b) = (alice.account_id(), bob.account_id());

    let hello = alice.send_text(b, "hello bob").await.expect("send");
    assert_eq!(status(&alice, &b, &hello), Status::Accepted);
    assert_eq!(wait_text(&mut bob, a).await, (hello, "hello bob".into()));
    wait_delivered(&mut alice, hello).await;
    assert_eq!(status(&alice, &b, &hello), Status::Delivered);
    // Recorded, then acked: the relay deletes the receipt.
    relay
        .wait_metric("comptoir_receipts_acked_total", 1.0)
        .await;

    let reply = bob.send_text(a, "hi alice").await.expect("reply");
    assert_eq!(wait_text(&mut alice, b).await, (reply, "hi alice".into()));
    wait_delivered(&mut bob, reply).await;

    // A second message each way rides the established ratchet.
    let again = alice.send_text(b, "how are you?").await.expect("send");
    assert_eq!(wait_text(&mut bob, a).await.1, "how are you?");

    // Read receipts travel end to end and only move statuses forward.
    assert_eq!(bob.mark_read(a).await.expect("mark read"), 2);
    let read = wait_for(&mut alice, |e| match e {
        Event::Read { by, ids } if *by == b => Some(ids.clone()),
        _ => None,
    })
    .await;
    assert!(read.contains(&hello) && read.contains(&again));
    assert_eq!(status(&alice, &b, &hello), Status::Read);
    assert_eq!(status(&alice, &b, &again), Status::Read);
    // Nothing moves a read message back (its Delivered receipt may still
    // be on its way): poll briefly and check again.
    while alice
        .next_event(std::time::Duration::from_millis(100))
        .await
        .expect("connection stays up")
        .is_some()
    {}
    assert_eq!(status(&alice, &b, &again), Status::Read);

    // Both sides compute the same safety number.
    assert_eq!(
        alice.safety_number(&b).expect("alice's view").digits(),
        bob.safety_number(&a).expect("bob's view").digits()
    );
    let texts: Vec<_> = bob
        .history(&a)
        .expect("history")
        .into_iter()
        .map(|m| (m.outgoing, m.body))
        .collect();
    assert_eq!(
        texts,
        vec![
            (false, "hello bob".to_string()),
            (true, "hi alice".to_string()),
            (false, "how are you?".to_string()),
        ]
    );
}

#[tokio::test]
async fn history_and_sessions_survive_a_restart_and_wrong_passphrase_is_refused() {
    let relay = start_relay().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = registered(&relay, dir_a.path(), "alice pass").await;
    let mut bob = registered(&relay, dir_b.path(), "bob pass").await;
    let (a, b) = (alice.account_id(), bob.account_id());
    let first = alice
        .send_text(b, "before the restart")
        .await
        .expect("send");
    wait_text(&mut bob, a).await;
    wait_delivered(&mut alice, first).await;
    alice.close().await.expect("close");

    match Client::open(dir_a.path(), "not alice's") {
        Err(ClientError::WrongPassphrase) => {}
        other => panic!("expected WrongPassphrase, got {other:?}"),
    }
    let mut alice = Client::open(dir_a.path(), "alice pass").expect("reopen");
    assert_eq!(alice.account_id(), a);
    let history = alice.history(&b).expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].body, "before the restart");
    assert_eq!(history[0].status, Status::Delivered);

    // The reopened sessions and prekeys still work in both directions.
    alice.connect(&url(&relay)).await.expect("reconnect");
    let second = alice.send_text(b, "after the restart").await.expect("send");
    assert_eq!(
        wait_text(&mut bob, a).await,
        (second, "after the restart".into())
    );
    bob.send_text(a, "welcome back").await.expect("reply");
    assert_eq!(wait_text(&mut alice, b).await.1, "welcome back");
    assert_eq!(alice.history(&b).expect("history").len(), 3);
}

#[tokio::test]
async fn outbox_written_offline_is_sent_on_connect_and_drains_to_an_offline_recipient() {
    let relay = start_relay().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = registered(&relay, dir_a.path(), "alice pass").await;
    let mut bob = registered(&relay, dir_b.path(), "bob pass").await;
    let (a, b) = (alice.account_id(), bob.account_id());
    alice.disconnect().await;
    bob.disconnect().await;

    // Written with no connection: stored, pending, in the outbox.
    let one = alice
        .send_text(b, "written offline 1")
        .await
        .expect("queue");
    let two = alice
        .send_text(b, "written offline 2")
        .await
        .expect("queue");
    assert_eq!(status(&alice, &b, &one), Status::Pending);
    assert_eq!(alice.outbox_len().expect("outbox"), 2);

    // Survives closing the client too.
    alice.close().await.expect("close");
    let mut alice = Client::open(dir_a.path(), "alice pass").expect("reopen");
    alice.connect(&url(&relay)).await.expect("connect");
    assert_eq!(alice.outbox_len().expect("outbox"), 0);
    assert_eq!(status(&alice, &b, &one), Status::Accepted);
    assert_eq!(status(&alice, &b, &two), Status::Accepted);

    // Bob was offline: the relay kept both, and they drain in order.
    let queued = bob.connect(&url(&relay)).await.expect("bob connects");
    assert_eq!(queued, 2);
    assert_eq!(
        wait_text(&mut bob, a).await,
        (one, "written offline 1".into())
    );
    assert_eq!(
        wait_text(&mut bob, a).await,
        (two, "written offline 2".into())
    );
    wait_delivered(&mut alice, one).await;
    wait_delivered(&mut alice, two).await;

    // Acked only after storing: a reconnect brings nothing back twice.
    bob.close().await.expect("close");
    let mut bob = Client::open(dir_b.path(), "bob pass").expect("reopen");
    assert_eq!(bob.connect(&url(&relay)).await.expect("reconnect"), 0);
    assert_eq!(bob.history(&a).expect("history").len(), 2);
}

#[tokio::test]
async fn blocked_sender_is_refused_by_the_relay_and_unblock_restores_delivery() {
    let relay = start_relay().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = registered(&relay, dir_a.path(), "alice pass").await;
    let mut bob = registered(&relay, dir_b.path(), "bob pass").await;
    let (a, b) = (alice.account_id(), bob.account_id());
    alice.send_text(b, "first").await.expect("send");
    wait_text(&mut bob, a).await;

    bob.block(a).await.expect("block");
    assert!(bob.is_blocked(&a).expect("block state"));
    match alice.send_text(b, "are you there?").await {
        Err(ClientError::Blocked { recipient }) => assert_eq!(recipient, b),
        other => panic!("expected Blocked, got {other:?}"),
    }
    let refused = alice
        .history(&b)
        .expect("history")
        .into_iter()
        .find(|m| m.body == "are you there?")
        .expect("kept in history");
    assert_eq!(refused.status, Status::Failed);
    assert_eq!(alice.outbox_len().expect("outbox"), 0, "not retried");

    bob.unblock(a).await.expect("unblock");
    assert!(!bob.is_blocked(&a).expect("block state"));
    let after = alice.send_text(b, "after unblock").await.expect("send");
    assert_eq!(
        wait_text(&mut bob, a).await,
        (after, "after unblock".into())
    );
    // Bob never saw the refused message.
    assert!(
        bob.history(&a)
            .expect("history")
            .iter()
            .all(|m| m.body != "are you there?")
    );
}

#[tokio::test]
async fn one_time_prekeys_are_replenished_when_the_relay_runs_low() {
    // Every fetch leaves the stock under the threshold.
    let relay = start_relay_with(|config| {
        config.limits.prekeys_low_threshold = comptoir_client::client::PREKEY_BATCH;
    })
    .await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = registered(&relay, dir_a.path(), "alice pass").await;
    let mut bob = registered(&relay, dir_b.path(), "bob pass").await;
    let (a, b) = (alice.account_id(), bob.account_id());

    alice
        .send_text(b, "uses one of bob's prekeys")
        .await
        .expect("send");
    let (remaining, uploaded) = wait_for(&mut bob, |e| match e {
        Event::PreKeysReplenished {
            remaining,
            uploaded,
        } => Some((*remaining, *uploaded)),
        _ => None,
    })
    .await;
    assert_eq!(remaining, comptoir_client::client::PREKEY_BATCH - 1);
    assert_eq!(uploaded, comptoir_client::client::PREKEY_BATCH);
    assert_eq!(wait_text(&mut bob, a).await.1, "uses one of bob's prekeys");
    // The new keys work: a third account starts a session with Bob.
    let dir_c = tempfile::tempdir().unwrap();
    let mut carol = registered(&relay, dir_c.path(), "carol pass").await;
    carol.send_text(b, "hi from carol").await.expect("send");
    assert_eq!(
        wait_text(&mut bob, carol.account_id()).await.1,
        "hi from carol"
    );
}

#[tokio::test]
async fn a_connected_client_closes_and_reopens_at_once_many_times() {
    let relay = start_relay().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = registered(&relay, dir_a.path(), "alice pass").await;
    let mut bob = registered(&relay, dir_b.path(), "bob pass").await;
    let (a, b) = (alice.account_id(), bob.account_id());

    // Each round writes, sends and receives, then closes and reopens both
    // clients straight away: close returns only once the store is released,
    // so the reopen never finds it locked.
    for round in 0..20 {
        let text = format!("round {round}");
        let sent = alice.send_text(b, &text).await.expect("send");
        assert_eq!(wait_text(&mut bob, a).await, (sent, text.clone()));
        bob.send_text(a, &text).await.expect("reply");
        assert_eq!(wait_text(&mut alice, b).await.1, text);

        alice.close().await.expect("close alice");
        alice = Client::open(dir_a.path(), "alice pass")
            .unwrap_or_else(|e| panic!("reopen alice in round {round}: {e:?}"));
        alice.connect(&url(&relay)).await.expect("alice reconnects");
        bob.close().await.expect("close bob");
        bob = Client::open(dir_b.path(), "bob pass")
            .unwrap_or_else(|e| panic!("reopen bob in round {round}: {e:?}"));
        bob.connect(&url(&relay)).await.expect("bob reconnects");
    }
    assert_eq!(alice.history(&b).expect("history").len(), 40);
    assert_eq!(bob.history(&a).expect("history").len(), 40);
}
