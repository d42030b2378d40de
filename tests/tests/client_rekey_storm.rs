//! Re-key storms: a relay that flips one bit in every delivered envelope,
//! and a contact that floods re-key requests, get a bounded number of
//! re-keys and re-sends out of a real client, however often it restarts,
//! and change nothing in its store beyond the session and the limits.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use comptoir_client::client::{REKEYS_PER_DEVICE, RESENDS_PER_DEVICE};
use comptoir_client::{Client, Event};
use support::client::{FAST_KDF, wait_message};
use support::hostile::{Hostile, StoreSnapshot, TreeChange, session_key};
use support::tamper::Tamper;
use support::{TIMEOUT, TestRelay, origin_of, start_relay, start_relay_with};

/// Drive every client until the relay holds no queued envelope and no
/// client has anything left to report; returns each client's events.
async fn settle(relay: &TestRelay, clients: &mut [&mut Client]) -> Vec<Vec<Event>> {
    let mut events = vec![Vec::new(); clients.len()];
    let deadline = tokio::time::Instant::now() + 30 * TIMEOUT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clients did not settle"
        );
        let mut quiet = true;
        for (client, log) in clients.iter_mut().zip(events.iter_mut()) {
            while let Some(event) = client
                .next_event(Duration::from_millis(50))
                .await
                .expect("connection stays up")
            {
                quiet = false;
                log.push(event);
            }
        }
        if quiet && relay.metrics.queue_depth.load(Ordering::SeqCst) == 0 {
            return events;
        }
    }
}

/// Close `client`, read every record of its store, open it again and
/// reconnect.
async fn snapshot(client: Client, dir: &Path, relay: &TestRelay) -> (Client, StoreSnapshot) {
    client.close().await.expect("close");
    let snapshot = StoreSnapshot::read(dir, "pw-long-enough");
    let mut client = Client::open(dir, "pw-long-enough").expect("open again");
    client
        .connect(&support::client::url(relay))
        .await
        .expect("reconnect");
    (client, snapshot)
}

fn resets(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::SessionReset { .. }))
        .count()
}

#[tokio::test]
async fn a_thousand_bit_flipped_messages_cause_a_handful_of_rekeys() {
    const MESSAGES: usize = 1000;
    const RESTARTS: usize = 10;
    // The proxy is the relay's public address: devices sign its origin.
    let (listener, proxy_addr) = Tamper::bind().await;
    let relay = start_relay_with(|c| c.public_origins = vec![origin_of(proxy_addr)]).await;
    let proxy = Tamper::start(listener, relay.addr);
    let root = tempfile::tempdir().expect("dir");
    let (dir_a, dir_b) = (root.path().join("alice"), root.path().join("bob"));
    let mut alice = Client::create_with_params(&dir_a, "pw-long-enough", FAST_KDF).expect("create");
    alice.register(&proxy.url()).await.expect("register");
    let mut bob = Client::create_with_params(&dir_b, "pw-long-enough", FAST_KDF).expect("create");
    bob.register(&proxy.url()).await.expect("register");
    let (a, b) = (alice.account_id(), bob.account_id());
    alice.send_text(b, "hello").await.expect("send");
    assert_eq!(wait_message(&mut bob, a).await.1, "hello");
    bob.send_text(a, "hi").await.expect("send");
    assert_eq!(wait_message(&mut alice, b).await.1, "hi");

    proxy.set_flipping(true);
    let taken_a = proxy.one_time_prekeys_of(a.as_bytes());
    let taken_b = proxy.one_time_prekeys_of(b.as_bytes());
    for i in 0..MESSAGES {
        alice.send_text(b, &format!("m{i}")).await.expect("send");
    }

    // Bob reads them in ten runs, a new process each time (each `comptoir`
    // command is one): limits kept in memory only would start afresh.
    bob.close().await.expect("close");
    let mut bob_events = Vec::new();
    for _ in 0..RESTARTS {
        let mut bob = Client::open(&dir_b, "pw-long-enough").expect("open");
        bob.connect(&proxy.url()).await.expect("connect");
        let mut failed = 0;
        while failed < MESSAGES / RESTARTS {
            let event = bob
                .next_event(TIMEOUT)
                .await
                .expect("connection stays up")
                .expect("an event in time");
            if matches!(&event, Event::Undecryptable { from, .. } if *from == a) {
                failed += 1;
            }
            bob_events.push(event);
        }
        bob.close().await.expect("close");
    }
    let mut bob = Client::open(&dir_b, "pw-long-enough").expect("open");
    bob.connect(&proxy.url()).await.expect("connect");
    let mut settled = settle(&relay, &mut [&mut alice, &mut bob]).await;
    let bob_resets = resets(&bob_events) + resets(&settled[1]);
    let alice_resets = resets(&settled[0]);
    let alice_events = std::mem::take(&mut settled[0]);

    assert!(proxy.flipped() >= MESSAGES as u64);
    assert!(bob_resets >= 1, "a failing session is still re-keyed once");
    assert!(
        bob_resets <= REKEYS_PER_DEVICE,
        "Bob re-keyed {bob_resets} times"
    );
    assert!(
        alice_resets <= REKEYS_PER_DEVICE,
        "Alice re-keyed {alice_resets} times: {alice_events:?}"
    );
    let used_a = proxy.one_time_prekeys_of(a.as_bytes()) - taken_a;
    let used_b = proxy.one_time_prekeys_of(b.as_bytes()) - taken_b;
    assert!(
        used_a <= bob_resets as u64,
        "{used_a} of Alice's one-time prekeys used for {bob_resets} re-keys"
    );
    assert!(
        used_b <= alice_resets as u64,
        "{used_b} of Bob's one-time prekeys used for {alice_resets} re-keys"
    );

    // Once the relay stops tampering, the conversation works again.
    proxy.set_flipping(false);
    alice.send_text(b, "after").await.expect("send");
    assert_eq!(wait_message(&mut bob, a).await.1, "after");
}

#[tokio::test]
async fn a_flood_of_rekey_requests_gets_a_bounded_number_of_resends() {
    const FLOOD: usize = 1000;
    const HISTORY: usize = 10;
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("v");
    let mut victim = support::client::registered(&relay, &dir, "pw-long-enough").await;
    let mut mallory = Hostile::register(relay.addr).await;
    let (v, m) = (victim.account_id(), mallory.id());
    let mut sent = Vec::new();
    for i in 0..HISTORY {
        sent.push(victim.send_text(m, &format!("v{i}")).await.expect("send"));
    }
    mallory.drain_envelopes(HISTORY).await;
    // Mallory's acks come back as Delivered receipts, which the victim
    // records in its history: wait for all of them, so the snapshot below
    // does not race them.
    let mut delivered = 0;
    while delivered < HISTORY {
        if let Event::Delivered { to, .. } = victim
            .next_event(TIMEOUT)
            .await
            .expect("connection stays up")
            .expect("an event in time")
            && to == m
        {
            delivered += 1;
        }
    }
    let (mut victim, before) = snapshot(victim, &dir, &relay).await;

    mallory.start_session(v, victim.device_id()).await;
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| Hostile::rekey_request(&sent[i % HISTORY].0))
        .collect();
    mallory.send_contents(v, victim.device_id(), &flood).await;
    // Each request ends in a re-send or a warning saying why not.
    let mut resent = 0;
    let mut refused = 0;
    while resent + refused < FLOOD {
        match victim
            .next_event(TIMEOUT)
            .await
            .expect("connection stays up")
            .expect("an event in time")
        {
            Event::Resent { to, .. } if to == m => resent += 1,
            Event::Warning(w) if w.contains("not sent again") => refused += 1,
            _ => {}
        }
    }
    assert!(resent >= 1, "a genuine request is still answered");
    assert!(
        resent <= RESENDS_PER_DEVICE,
        "{resent} messages re-sent for {FLOOD} requests"
    );
    mallory.drain_envelopes(resent).await;

    // The store: the session with Mallory is the one its flood started
    // (built from one of the victim's one-time prekeys), and the re-send
    // limits were counted. Nothing else: not the history (no re-key request
    // is stored, and a re-sent message keeps its record), not the outbox.
    let (mut victim, after) = snapshot(victim, &dir, &relay).await;
    let mut changes = after.changes_since(&before);
    let prekeys = changes.remove("prekeys").unwrap_or_default();
    assert_eq!(
        (
            prekeys.removed.len(),
            prekeys.added.len(),
            prekeys.modified.len()
        ),
        (1, 0, 0),
        "the flood's session used exactly one one-time prekey"
    );
    let guards = changes.remove("guards").expect("the limits were counted");
    assert!(guards.removed.is_empty());
    assert_eq!(
        changes,
        BTreeMap::from([(
            "sessions",
            TreeChange {
                modified: [session_key(m, 1)].into(),
                ..TreeChange::default()
            }
        )])
    );

    // The victim still works, and nothing else was queued for Mallory
    // before this message (queues are delivered in order).
    let after = victim.send_text(m, "still here").await.expect("send");
    let envelope = mallory.drain_envelopes(1).await.remove(0);
    assert_eq!(envelope.message_id, after.0.to_vec());
}
