//! Message requests: the first message from an account the customer never
//! wrote to waits as a request. No read receipt goes back while it waits,
//! so the sender sees "delivered" only; accepting it makes the
//! conversation ordinary (receipts flow), deleting it forgets what was
//! sent (a later message is a request again), blocking drops it. Writing
//! first, or consenting to a business, makes an account known.

use crate::support;

use comptoir_client::{Client, Event, Status};
use comptoir_protocol::AccountId;
use support::client::{registered, wait_for};
use support::*;

/// The next message `client` gets from `from`: its text and whether it
/// is a request.
async fn next_message(client: &mut Client, from: AccountId) -> (String, bool) {
    wait_for(client, |e| match e {
        Event::Message {
            from: f,
            text,
            request,
            ..
        } if *f == from => Some((text.clone(), *request)),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn a_stranger_waits_until_accepted_and_learns_nothing_meanwhile() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut mallory = registered(&relay, &root.path().join("mallory"), "pw-long-enough").await;
    let mut carol = registered(&relay, &root.path().join("carol"), "pw-long-enough").await;
    let mut dave = registered(&relay, &root.path().join("dave"), "pw-long-enough").await;
    let (m, c, d) = (mallory.account_id(), carol.account_id(), dave.account_id());

    // A stranger's first message is a request; reading it sends nothing.
    let first = mallory
        .send_text(c, "hello, remember me?")
        .await
        .expect("send");
    assert_eq!(
        next_message(&mut carol, m).await,
        ("hello, remember me?".into(), true)
    );
    let requests = carol.message_requests().expect("requests");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, m);
    assert_eq!(carol.mark_read(m).await.expect("mark read"), 0);
    // Mallory sees "delivered", never "read": the next event it gets for
    // its message after delivery is a later message's acceptance.
    wait_for(&mut mallory, |e| match e {
        Event::Delivered { id, .. } if *id == first => Some(()),
        _ => None,
    })
    .await;
    let probe = mallory.send_text(d, "probe").await.expect("send");
    wait_for(&mut mallory, |e| match e {
        Event::Read { .. } => panic!("a request was reported read: {e:?}"),
        Event::Accepted { id, .. } if *id == probe => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(
        mallory
            .message(&c, &first)
            .expect("stored")
            .expect("kept")
            .status,
        Status::Delivered
    );

    // Accepted: the conversation is ordinary, receipts flow.
    carol.accept_request(m).await.expect("accept");
    assert!(carol.message_requests().expect("requests").is_empty());
    assert_eq!(carol.mark_read(m).await.expect("mark read"), 1);
    wait_for(&mut mallory, |e| match e {
        Event::Read { by, ids } if *by == c && ids.contains(&first) => Some(()),
        _ => None,
    })
    .await;
    mallory.send_text(c, "thanks").await.expect("send");
    assert_eq!(next_message(&mut carol, m).await, ("thanks".into(), false));

    // Writing first makes an account known: Dave's reply is no request.
    let _ = next_message(&mut dave, m).await;
    carol.send_text(d, "hi dave").await.expect("send");
    let _ = next_message(&mut dave, c).await;
    dave.send_text(c, "hi carol").await.expect("send");
    assert_eq!(
        next_message(&mut carol, d).await,
        ("hi carol".into(), false)
    );
}

#[tokio::test]
async fn a_deleted_request_is_forgotten_and_a_blocked_one_dropped() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut spammer = registered(&relay, &root.path().join("spammer"), "pw-long-enough").await;
    let mut other = registered(&relay, &root.path().join("other"), "pw-long-enough").await;
    let mut carol = registered(&relay, &root.path().join("carol"), "pw-long-enough").await;
    let (s, o, c) = (spammer.account_id(), other.account_id(), carol.account_id());

    spammer.send_text(c, "win a prize").await.expect("send");
    assert!(next_message(&mut carol, s).await.1);
    carol.delete_request(s).await.expect("delete");
    assert!(carol.message_requests().expect("requests").is_empty());
    assert!(carol.history(&s).expect("history").is_empty());
    spammer
        .send_text(c, "win a prize, again")
        .await
        .expect("send");
    assert!(next_message(&mut carol, s).await.1, "a request again");

    other.send_text(c, "buy now").await.expect("send");
    assert!(next_message(&mut carol, o).await.1);
    carol.block(o).await.expect("block");
    let left: Vec<AccountId> = carol
        .message_requests()
        .expect("requests")
        .into_iter()
        .map(|(peer, _)| peer)
        .collect();
    assert_eq!(left, vec![s]);
}
