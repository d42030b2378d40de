//! An envelope the client cannot use (here: the relay names a sender that
//! does not exist) is put in quarantine and acknowledged: it is counted and
//! kept for inspection, and the messages behind it still arrive.

use crate::support;

use comptoir_client::{Client, Event};
use support::client::{FAST_KDF, wait_message};
use support::tamper::{FORGED_SENDER, Tamper};
use support::{TIMEOUT, origin_of, start_relay_with};

#[tokio::test]
async fn an_unusable_envelope_is_quarantined_and_does_not_block_the_queue() {
    let (listener, proxy_addr) = Tamper::bind().await;
    let relay = start_relay_with(|c| c.public_origins = vec![origin_of(proxy_addr)]).await;
    let proxy = Tamper::start(listener, relay.addr);
    let root = tempfile::tempdir().expect("dir");
    let dir_b = root.path().join("bob");
    let mut alice =
        Client::create_with_params(&root.path().join("alice"), "pw-long-enough", FAST_KDF)
            .expect("create");
    alice.register(&proxy.url()).await.expect("register");
    let mut bob = Client::create_with_params(&dir_b, "pw-long-enough", FAST_KDF).expect("create");
    bob.register(&proxy.url()).await.expect("register");
    let (a, b) = (alice.account_id(), bob.account_id());

    proxy.forge_sender_of_next(1);
    let first = alice.send_text(b, "one").await.expect("send");
    alice.send_text(b, "two").await.expect("send");
    let mut warned = false;
    let (_, text) = loop {
        match bob
            .next_event(TIMEOUT)
            .await
            .expect("one bad envelope does not break the connection")
            .expect("an event in time")
        {
            Event::Message { from, id, text, .. } if from == a => break (id, text),
            Event::Warning(w) if w.contains("put aside") => warned = true,
            _ => {}
        }
    };
    assert_eq!(text, "two", "the message behind the bad one arrives");
    assert!(warned, "the user is told");
    let kept = bob.quarantined().expect("quarantine");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].envelope.sender_account, FORGED_SENDER.to_vec());
    assert_eq!(kept[0].envelope.message_id, first.0.to_vec());

    // The ack named the forged sender, so the relay still holds the real
    // envelope: once it stops lying, "one" arrives intact after a restart,
    // and the quarantined copy stays aside, counted once.
    bob.close().await.expect("close");
    let mut bob = Client::open(&dir_b, "pw-long-enough").expect("open");
    bob.connect(&proxy.url()).await.expect("connect");
    assert_eq!(wait_message(&mut bob, a).await, (first, "one".to_string()));
    alice.send_text(b, "three").await.expect("send");
    assert_eq!(wait_message(&mut bob, a).await.1, "three");
    assert_eq!(
        bob.quarantine_len().expect("count"),
        1,
        "{:?}",
        bob.quarantined()
    );
}
