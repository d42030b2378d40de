//! `comptoir send` when the relay connection drops in the middle of the
//! send (a proxy in front of a real relay on 127.0.0.1:0 drops the `Send`
//! frame and cuts the connection): the message is already in the outbox,
//! so the command reports it queued — its id, exit code 5, a `sent` record
//! with status `pending` — as a send with the relay down does, standalone
//! and through a running daemon (the method `send` answers it pending),
//! and it reaches the peer once the relay is back, exactly once.
//!
//! Here rather than in tests/tests: it runs the `comptoir` binary, which
//! Cargo builds for this package's tests only.

use serde_json::{Value, json};

mod common;

use common::cut::CutProxy;
use common::{Customer, Daemon, Relay, Run, start_relay_with_origins};
use comptoir_cli::daemon::remote::Remote;

/// A relay with the proxy in front; Alice and Bob know each other and
/// Alice wrote to Bob once (so the next send is one `Send` frame). Alice
/// is returned using the relay through the proxy.
async fn alice_behind_the_proxy(root: &std::path::Path) -> (Relay, CutProxy, Customer, Customer) {
    let (listener, url) = CutProxy::bind().await;
    let relay = start_relay_with_origins(vec![url]).await;
    let proxy = CutProxy::start(listener, relay.addr());
    let (alice, bob, _, _) = common::contacts(root, &relay).await;
    alice.ok(&["send", "bob", "hello Bob"]).await;
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "20"]).await;
    assert!(heard.ends_with(": hello Bob\n"), "{heard:?}");
    let alice = Customer {
        dir: alice.dir.clone(),
        relay: proxy.url.clone(),
    };
    (relay, proxy, alice, bob)
}

/// The `sent` record a `--output json` send printed, and its id.
fn sent_record(run: &Run) -> (Value, String) {
    let record: Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: one JSON record expected: {run:?}"));
    assert_eq!(record["type"], "sent", "{run:?}");
    let id = record["id"].as_str().expect("an id").to_owned();
    (record, id)
}

/// A queued send as the relay down reports it: exit code 5, the note
/// naming the message and how to see or cancel it.
fn assert_queued(run: &Run, id: &str) {
    assert_eq!(run.code, 5, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "message {id} waits in the outbox and is sent on the next connect"
        )),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(&format!("outbox cancel {id}")),
        "{run:?}"
    );
}

/// Alice sends "cut on the way" with the proxy armed: the send is cut,
/// reported pending and queued; its id.
async fn send_cut_on_the_way(proxy: &CutProxy, alice: &Customer) -> String {
    proxy.arm();
    let cut = alice
        .run(&["--output", "json", "send", "bob", "cut on the way"])
        .await;
    assert_eq!(proxy.cuts(), 1, "the send was cut: {cut:?}");
    let (record, id) = sent_record(&cut);
    assert_eq!(record["status"], "pending", "{cut:?}");
    assert_queued(&cut, &id);
    id
}

/// Bob's history with Alice: how many messages carry `text`.
async fn times_bob_has(bob: &Customer, text: &str) -> usize {
    let history = bob.ok(&["--output", "json", "history", "alice"]).await;
    history
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a record"))
        .filter(|m| m["text"] == text)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_on_the_way_is_reported_queued_and_goes_once_standalone() {
    let root = tempfile::tempdir().expect("temp dir");
    let (_relay, proxy, alice, bob) = alice_behind_the_proxy(root.path()).await;

    let id = send_cut_on_the_way(&proxy, &alice).await;

    // The proxy now refuses connections: the relay is down from the start
    // of the next send, which reports the same way.
    let away = alice.run(&["send", "bob", "written while away"]).await;
    let away_id = away
        .stderr
        .split_whitespace()
        .nth(1)
        .expect("the note's id")
        .to_owned();
    assert_queued(&away, &away_id);
    let outbox = alice.ok(&["outbox", "list"]).await;
    assert!(
        outbox.contains(&id) && outbox.contains(&away_id),
        "{outbox}"
    );

    // Back: the next connect sends what waits, oldest first, once.
    proxy.restore();
    alice.ok(&["send", "bob", "after the cut"]).await;
    let heard = bob.ok(&["listen", "--count", "3", "--timeout", "20"]).await;
    let at = |text: &str| {
        heard
            .find(text)
            .unwrap_or_else(|| panic!("{text}: {heard}"))
    };
    assert!(
        at("cut on the way") < at("written while away")
            && at("written while away") < at("after the cut"),
        "{heard}"
    );
    assert_eq!(times_bob_has(&bob, "cut on the way").await, 1);
    assert_eq!(alice.ok(&["outbox", "list"]).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_on_the_way_is_reported_queued_and_goes_once_through_the_daemon() {
    let root = tempfile::tempdir().expect("temp dir");
    let (_relay, proxy, alice, bob) = alice_behind_the_proxy(root.path()).await;
    let daemon = Daemon::start(&alice, &[]);
    let mut script = Remote::connect_if_running(&alice.dir)
        .await
        .expect("the daemon answers");
    script
        .call("subscribe", json!({}))
        .await
        .expect("subscribed");
    let connected = |record: &Value| {
        record["type"] == "connection"
            && (record["state"] == "connected" || record["state"] == "reconnected")
    };
    let whoami = script.call("whoami", json!({})).await.expect("whoami");
    if whoami["connected"] != true {
        wait_for(&mut script, connected).await;
    }

    // `comptoir send` through the daemon.
    let id = send_cut_on_the_way(&proxy, &alice).await;
    let outbox = alice.ok(&["outbox", "list"]).await;
    assert!(outbox.contains(&id), "{outbox}");
    proxy.restore();
    wait_for(&mut script, connected).await;
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "20"]).await;
    assert!(heard.ends_with(": cut on the way\n"), "{heard}");

    // The method `send`, as a script calls it: pending, not an error.
    proxy.arm();
    let sent = script
        .call("send", json!({"to": "bob", "text": "cut again"}))
        .await
        .expect("a queued send is not an error");
    assert_eq!(proxy.cuts(), 2);
    assert_eq!(sent["status"], "pending", "{sent}");
    proxy.restore();
    wait_for(&mut script, connected).await;
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "20"]).await;
    assert!(heard.ends_with(": cut again\n"), "{heard}");

    assert_eq!(times_bob_has(&bob, "cut on the way").await, 1);
    assert_eq!(times_bob_has(&bob, "cut again").await, 1);
    drop(script);
    assert_eq!(daemon.terminate(), 0);
}

/// The next notification satisfying `wanted` (the daemon's waits are
/// bounded by the relay's; a test that hangs is cut by the harness).
async fn wait_for(script: &mut Remote, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let record = tokio::time::timeout(common::WAIT, script.next_notification())
            .await
            .expect("a notification in time")
            .expect("the daemon is there");
        if wanted(&record) {
            return record;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_cut_on_the_way_names_the_queued_message_and_it_goes_once() {
    const LINK: &str = "comptoir://chat/acme?text=Where%20is%20my%20order";
    let root = tempfile::tempdir().expect("temp dir");
    let (listener, url) = CutProxy::bind().await;
    let relay = start_relay_with_origins(vec![url]).await;
    let proxy = CutProxy::start(listener, relay.addr());
    let (acme, _, alice) = common::acme_and_alice(root.path(), &relay).await;
    let alice = Customer {
        dir: alice.dir.clone(),
        relay: proxy.url.clone(),
    };

    proxy.arm();
    let cut = alice.run(&["open", LINK, "--yes"]).await;
    assert_eq!(proxy.cuts(), 1, "the send was cut: {cut:?}");
    let id = cut
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("queued\t"))
        .unwrap_or_else(|| panic!("the queued message's id: {cut:?}"))
        .to_owned();
    assert!(!cut.stdout.contains("\nsent\t"), "{cut:?}");
    assert_queued(&cut, &id);
    assert!(alice.ok(&["outbox", "list"]).await.contains(&id));

    // Back: the next connect sends it, once.
    proxy.restore();
    alice.ok(&["contacts", "add", "acme", "acme"]).await;
    alice.ok(&["send", "acme", "after the cut"]).await;
    let heard = acme
        .ok(&["listen", "--count", "2", "--timeout", "20"])
        .await;
    let at = |text: &str| {
        heard
            .find(text)
            .unwrap_or_else(|| panic!("{text}: {heard}"))
    };
    assert!(at("Where is my order") < at("after the cut"), "{heard}");
    assert_eq!(heard.matches("Where is my order").count(), 1, "{heard}");
    assert_eq!(alice.ok(&["outbox", "list"]).await, "");
}
