//! Two daemons of one business (issue 15, items 2 and 7): two processes
//! serving one business account as two of its devices, against a real
//! relay. A customer's message reaches both inboxes; an agent, a note and
//! an assignment made on one daemon show on the other (synced end to end
//! encrypted); exactly one daemon, the lease holder, posts each webhook;
//! after `kill -9` of the holder the other takes the lease over and the
//! webhook receiver gets every event exactly once, by event id.
//!
//! Each daemon is the real `agent serve` binary, run as a process (see
//! [`support::agent::agent_binary`]) until it is killed with SIGKILL.

use crate::support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use comptoir_agent::config::Config;
use comptoir_agent::db::Db;
use comptoir_agent::inbox::{agents, conversations};
use comptoir_agent::{MessageStatus, device};
use comptoir_client::{Client, ClientError};
use comptoir_protocol::AccountId;
use comptoir_protocol::proto::wire::{AccountKind, ErrorCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use support::agent::{
    PASSPHRASE, Receiver, agent_command, agent_ok, config_toml, customer, init_business,
};
use support::client::{FAST_KDF, linked, registered_as, url, wait_message};
use support::inbox::login;
use support::{TIMEOUT, TestRelay, start_relay};

/// The lease is short, so a take-over after a vanished holder (one that
/// did not close its connection) stays within the tests' waits; after a
/// `kill -9` the relay frees it at once, when the connection ends.
const LEASE: &str = "lease_seconds = 3";
const PASSWORD: &str = "ana-long-password";

/// A daemon process.
struct Daemon {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    config_file: PathBuf,
    database: PathBuf,
    /// The daemon's database, opened beside it (SQLite in WAL mode takes
    /// readers), to watch what it recorded.
    db: Db,
}

impl Daemon {
    /// Start daemon `name`; with `fault`, it aborts at that point
    /// (`comptoir_agent::fault`).
    async fn start(
        name: &'static str,
        config_file: &Path,
        database: &Path,
        fault: Option<&str>,
    ) -> Self {
        let mut command = agent_command(config_file, &["serve"]).await;
        // Its info lines too: the log checked below.
        command.env("RUST_LOG", "info");
        if let Some(point) = fault {
            command.env(comptoir_agent::fault::FAULT_POINT_ENV, point);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agent serve");
        let stderr = child.stderr.take().expect("the daemon's stderr");
        let mut log = BufReader::new(stderr).lines();
        let stdout = child.stdout.take().expect("the daemon's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("read the daemon's output") {
                if let Some((_, addr)) = line.split_once("agent listening on ") {
                    return addr.trim().parse::<SocketAddr>().expect("an address");
                }
            }
            panic!("daemon {name} ended before it listened");
        })
        .await
        .expect("the daemon starts");
        // Its log goes to a pipe here, as to a file or a journal: plain
        // lines, no terminal colour codes. It logged that it serves before
        // it printed where it listens.
        let serving = tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = log.next_line().await.expect("read the daemon's log") {
                eprintln!("{name}: {line}");
                if line.contains("agent serving") {
                    return line;
                }
            }
            panic!("daemon {name} ended before it logged that it serves");
        })
        .await
        .expect("the daemon logs");
        assert!(
            !serving.contains('\u{1b}'),
            "colour codes in a log: {serving:?}"
        );
        // Keep reading what it prints, so it never blocks; its log is
        // passed on to the test's.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        tokio::spawn(async move {
            while let Ok(Some(line)) = log.next_line().await {
                eprintln!("{name}: {line}");
            }
        });
        let db = Db::open(database, Vec::new()).expect("open the daemon's database");
        Self {
            name,
            child,
            addr,
            config_file: config_file.to_owned(),
            database: database.to_owned(),
            db,
        }
    }

    /// `GET /v1/changes`: how much the daemon's state changed, once the
    /// count passes `after` (or a few seconds went by), or at once.
    async fn changes(&self, after: Option<u64>) -> u64 {
        let query = after.map_or(String::new(), |n| format!("?after={n}&wait_ms=5000"));
        let (_, body) = self.get(&format!("/v1/changes{query}")).await;
        body["changes"].as_u64().expect("a count")
    }

    /// `GET path` of the API with the full key: the status and the JSON
    /// body (null if it is not JSON).
    async fn get(&self, path: &str) -> (u16, Value) {
        let url = format!("http://{}{path}", self.addr);
        let reply = comptoir_agent::http_client::request(
            "GET",
            &url,
            &[(
                "authorization",
                format!("Bearer {}", support::agent::FULL_KEY),
            )],
            Vec::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("daemon {} answers: {e}", self.name));
        let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        (reply.status, body)
    }

    /// `GET /v1/health`: whether this daemon holds the lease.
    async fn acting(&self) -> bool {
        let url = format!("http://{}/v1/health", self.addr);
        let reply = comptoir_agent::http_client::request("GET", &url, &[], Vec::new())
            .await
            .expect("health answers");
        let body: Value = serde_json::from_slice(&reply.body).expect("JSON");
        body["acting"].as_bool().expect("acting")
    }

    /// The state of this daemon's outbox row for `event_id`.
    fn outbox_state(&self, event_id: &str) -> Option<String> {
        self.db
            .outbox()
            .expect("outbox")
            .into_iter()
            .find(|r| r.event_id == event_id)
            .map(|r| r.state)
    }

    fn has_message(&self, id: &str) -> bool {
        matches!(self.db.status_of(id), Ok(Some(_)))
    }

    /// `POST /v1/messages`: send `text` to `to` (inside its window); the
    /// message id.
    async fn send_text(&self, to: AccountId, text: &str) -> String {
        let url = format!("http://{}/v1/messages", self.addr);
        let body = serde_json::json!({
            "to": to.to_string(), "type": "text", "text": { "body": text }
        });
        let reply = comptoir_agent::http_client::request(
            "POST",
            &url,
            &[
                ("content-type", "application/json".to_owned()),
                (
                    "authorization",
                    format!("Bearer {}", support::agent::FULL_KEY),
                ),
            ],
            body.to_string().into_bytes(),
        )
        .await
        .expect("API answers");
        let body: Value = serde_json::from_slice(&reply.body).expect("JSON");
        assert_eq!(reply.status, 200, "{body}");
        body["messages"][0]["id"]
            .as_str()
            .expect("an id")
            .to_owned()
    }
}

/// Opening hours closed all of today (UTC): one minute on a day three
/// days away, with `away` as the away message.
fn closed_today(away: &str) -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        / 86_400;
    // 1970-01-01 was a Thursday (Monday = 0).
    let open_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][((days + 3 + 3) % 7) as usize];
    format!(
        "[opening_hours]\nutc_offset = \"+00:00\"\nperiods = [\"{open_day} 00:00-00:01\"]\naway_message = {away:?}\n"
    )
}

/// Wait (bounded) until `check` holds: it looks again each time one of
/// `daemons` (they run in other processes) reports that its state changed,
/// through its API's long poll (`GET /v1/changes`).
async fn until(what: &str, daemons: &[&Daemon], mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        // The counts first, then the check: a change after the check
        // moves a count past what was read, and the poll answers at once.
        let mut seen = Vec::with_capacity(daemons.len());
        for daemon in daemons {
            seen.push(daemon.changes(None).await);
        }
        if check().await {
            return;
        }
        let polls = daemons
            .iter()
            .zip(seen)
            .map(|(daemon, count)| Box::pin(daemon.changes(Some(count))));
        tokio::time::timeout_at(deadline, futures_util::future::select_all(polls))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
    }
}

fn write_config(root: &Path, name: &str, text: &str) -> (Config, PathBuf) {
    let file = root.join(format!("{name}.toml"));
    std::fs::write(&file, text).expect("write the configuration");
    (Config::parse(text, &|_| None).expect("configuration"), file)
}

/// Event ids of the deliveries the receiver accepted, with their counts.
fn accepted(receiver: &Receiver) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for hit in receiver.hits() {
        if hit.answered == 200 {
            *seen.entry(hit.event_id).or_default() += 1;
        }
    }
    seen
}

/// Two daemons of one business (`agent init` on A, `agent init --link`
/// on B approved on A's device store), with the agent Ana added on A and
/// `extra` in both configurations; both started.
struct Pair {
    business: AccountId,
    a: Daemon,
    b: Daemon,
}

async fn pair(
    relay: &TestRelay,
    root: &Path,
    receiver: &Receiver,
    extra: &str,
    fault_a: Option<&str>,
) -> Pair {
    let text = |dir: &str| config_toml(relay, &root.join(dir), receiver, LEASE, extra);
    let (config_a, file_a) = write_config(root, "a", &text("a"));
    let (config_b, file_b) = write_config(root, "b", &text("b"));
    let business = init_business(relay, &config_a).await;
    let code = device::init_link(&config_b, PASSPHRASE, FAST_KDF).expect("link code");
    let mut first = Client::open(&config_a.device_dir(), PASSPHRASE).expect("open A's device");
    first.connect(&url(relay)).await.expect("connect");
    let approval = first.add_device(&code).await.expect("approve B");
    first.close().await.expect("close");
    let joined = device::finish_link(&config_b, PASSPHRASE, &approval)
        .await
        .expect("B joins");
    assert_eq!(joined, business);
    // An agent of the inbox, added on A as `agent agent-add` does.
    {
        comptoir_client::store::create_private_dir(&config_a.data_dir).expect("data dir");
        let db = Db::open(&config_a.database_path(), Vec::new()).expect("A's database");
        agents::add(&db, "ana", PASSWORD, true, 1).expect("add ana");
    }
    let a = Daemon::start("A", &file_a, &config_a.database_path(), fault_a).await;
    let b = Daemon::start("B", &file_b, &config_b.database_path(), None).await;
    Pair { business, a, b }
}

/// A relay, a webhook receiver, and the two daemons of one business
/// (see [`pair`]) on them.
struct Scene {
    relay: TestRelay,
    root: tempfile::TempDir,
    receiver: Receiver,
    pair: Pair,
}

/// [`pair`] with `extra` and `fault_a` on a fresh relay and receiver.
async fn scene(extra: &str, fault_a: Option<&str>) -> Scene {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start().await;
    let pair = pair(&relay, root.path(), &receiver, extra, fault_a).await;
    Scene {
        relay,
        root,
        receiver,
        pair,
    }
}

impl Pair {
    /// (the lease holder, the other), once one holds the lease.
    async fn holder_first(self) -> (Daemon, Daemon) {
        let (a, b) = (self.a, self.b);
        until("one daemon holds the lease", &[&a, &b], async || {
            a.acting().await || b.acting().await
        })
        .await;
        let (holder, other) = if a.acting().await { (a, b) } else { (b, a) };
        assert!(!other.acting().await, "both daemons hold the lease");
        (holder, other)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_one_inbox_and_one_posts_each_webhook_through_a_kill() {
    let Scene {
        relay,
        root,
        receiver,
        pair,
    } = scene("", None).await;
    let business = pair.business;
    // Exactly one of them holds the lease.
    let (holder, other) = pair.holder_first().await;

    // A customer's message reaches both inboxes.
    let mut jo = customer(&relay, root.path(), "jo").await;
    let customer_id = jo.account_id().to_string();
    let first_id = jo
        .send_text(business, "Hello, both of you")
        .await
        .expect("send")
        .to_string();
    until(
        "both daemons record the message",
        &[&holder, &other],
        async || holder.has_message(&first_id) && other.has_message(&first_id),
    )
    .await;
    let (status, body) = other.get("/v1/messages").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["id"], first_id.as_str(), "{body}");

    // Its webhook is posted once, by the holder; the other daemon learns
    // that it was delivered (and so never posts it).
    let first_event = format!("message:{first_id}");
    receiver
        .wait("the first message", |h| {
            h.event_id == first_event && h.answered == 200
        })
        .await;
    until(
        "the other daemon marks it delivered",
        &[&other],
        async || other.outbox_state(&first_event).as_deref() == Some("delivered"),
    )
    .await;
    assert_eq!(
        holder.outbox_state(&first_event).as_deref(),
        Some("delivered")
    );

    // Inbox state made on A shows on B: the agent (who can log in there),
    // a note and an assignment.
    let (on_a, on_b) = if holder.name == "A" {
        (&holder, &other)
    } else {
        (&other, &holder)
    };
    let ana_on_a = agents::list(&on_a.db)
        .expect("agents")
        .into_iter()
        .find(|x| x.name == "ana")
        .expect("ana on A");
    let ana = login(on_a.addr, "ana", PASSWORD).await;
    let note = ana
        .post(
            on_a.addr,
            &format!("/inbox/c/{customer_id}/note"),
            &[("csrf", &ana.csrf), ("body", "VIP: answer first")],
        )
        .await;
    assert_eq!(note.status, 303, "{}", note.text());
    let assign = ana
        .post(
            on_a.addr,
            &format!("/inbox/c/{customer_id}/assign"),
            &[
                ("csrf", &ana.csrf),
                ("agent", &ana_on_a.id.to_string()),
                ("note", ""),
            ],
        )
        .await;
    assert_eq!(assign.status, 303, "{}", assign.text());
    until("B shows A's note and assignment", &[on_b], async || {
        let assigned = conversations::get(&on_b.db, &customer_id)
            .ok()
            .and_then(|c| c.assignee)
            .is_some_and(|(_, name)| name == "ana");
        let noted = conversations::notes(&on_b.db, &customer_id)
            .unwrap_or_default()
            .iter()
            .any(|n| n.body == "VIP: answer first" && n.author == "ana");
        assigned && noted
    })
    .await;
    login(on_b.addr, "ana", PASSWORD).await;

    // The receiver fails for now: the holder keeps the next event pending.
    receiver.answer.store(500, Ordering::SeqCst);
    let second_id = jo
        .send_text(business, "Are you there?")
        .await
        .expect("send")
        .to_string();
    let second_event = format!("message:{second_id}");
    receiver
        .wait("the refused second message", |h| {
            h.event_id == second_event && h.answered == 500
        })
        .await;
    until("the other daemon records it", &[&other], async || {
        other.has_message(&second_id)
    })
    .await;

    // kill -9 the holder. The other takes the lease over and posts what
    // was left, and what arrives after.
    let mut holder = holder;
    // SIGKILL (tokio's Child::kill on Unix).
    holder.child.kill().await.expect("kill -9 the holder");
    receiver.answer.store(200, Ordering::SeqCst);
    let third_id = jo
        .send_text(business, "Hello?")
        .await
        .expect("send")
        .to_string();
    let third_event = format!("message:{third_id}");
    // Only the lease holder posts: these arriving show the take-over.
    for event in [&second_event, &third_event] {
        receiver
            .wait("an event after the take-over", |h| {
                h.event_id == *event && h.answered == 200
            })
            .await;
    }
    assert!(other.acting().await, "the other daemon took the lease");
    until(
        "the other daemon's outbox is empty",
        &[&other],
        async || {
            other
                .db
                .outbox()
                .expect("outbox")
                .iter()
                .all(|r| r.state == "delivered")
        },
    )
    .await;

    // Every event delivered, each exactly once, under the id derived from
    // its message id.
    let expected: BTreeMap<String, usize> = [first_event, second_event, third_event]
        .into_iter()
        .map(|e| (e, 1))
        .collect();
    assert_eq!(accepted(&receiver), expected);
    // Not even a refused delivery went out under another id.
    for hit in receiver.hits() {
        assert!(expected.contains_key(&hit.event_id), "{}", hit.event_id);
    }
    drop(other);
}

/// The away message goes to a customer once a day, whichever daemon holds
/// the lease: the one that sent it tells the other (synced end to end
/// encrypted, before it sends), so after `kill -9` of the holder the new
/// holder does not send it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_take_over_the_away_message_is_not_sent_twice_the_same_day() {
    const AWAY: &str = "We are closed; we answer from 9:00.";
    let Scene {
        relay,
        root,
        receiver,
        pair,
    } = scene(&closed_today(AWAY), None).await;
    let business = pair.business;
    let (mut holder, other) = pair.holder_first().await;

    let mut jo = customer(&relay, root.path(), "jo").await;
    jo.send_text(business, "Are you open?").await.expect("send");
    let (_, text) = wait_message(&mut jo, business).await;
    assert_eq!(text, AWAY);

    // SIGKILL (tokio's Child::kill on Unix).
    holder.child.kill().await.expect("kill -9 the holder");
    until("the other daemon takes the lease", &[&other], async || {
        other.acting().await
    })
    .await;
    let second = jo.send_text(business, "Hello?").await.expect("send");
    receiver
        .wait("the second message, from the new holder", |h| {
            h.event_id == format!("message:{second}") && h.answered == 200
        })
        .await;
    // The new holder handles a message fully (and would send the away
    // message then) before it runs the API's next send: the next thing
    // Jo gets is that send.
    other
        .send_text(jo.account_id(), "On call: how can we help?")
        .await;
    let (_, text) = wait_message(&mut jo, business).await;
    assert_eq!(text, "On call: how can we help?", "a second away message");
}

/// Automatic assignment counts every agent with an inbox page open,
/// whichever daemon's inbox they use, and only while it is open: Ana logs
/// in on the daemon that does not act and keeps a page open there; the
/// acting daemon assigns her the next customer. She closes the page (the
/// browser): the acting daemon hears of it and assigns the next two
/// customers to Bob, who has his page open on it, and none to her (round
/// robin would give her one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acting_daemon_assigns_only_to_agents_with_an_inbox_open_on_either_daemon() {
    let Scene {
        relay,
        root,
        receiver: _receiver,
        pair,
    } = scene("", None).await;
    let business = pair.business;
    let (holder, other) = pair.holder_first().await;
    until(
        "Ana is an agent on the other daemon",
        &[&other],
        async || {
            agents::list(&other.db)
                .unwrap_or_default()
                .iter()
                .any(|a| a.name == "ana" && !a.disabled)
        },
    )
    .await;
    let ana = login(other.addr, "ana", PASSWORD).await;
    let ana_page = ana.open_page(other.addr).await;
    // Bob, an agent of the acting daemon (added as `agent agent-add`
    // does), with his page open there.
    agents::add(&holder.db, "bob", PASSWORD, false, 1).expect("add bob");
    let bob = login(holder.addr, "bob", PASSWORD).await;
    let _bob_page = bob.open_page(holder.addr).await;
    let present = |daemon: &Daemon, name: &str| {
        let now = comptoir_client::client::now_ms();
        agents::list(&daemon.db)
            .unwrap_or_default()
            .iter()
            .any(|a| a.name == name && a.present_until_ms > now)
    };
    until(
        "the acting daemon counts Ana present",
        &[&holder],
        async || present(&holder, "ana"),
    )
    .await;

    let assignee = |daemon: &Daemon, customer: &str| {
        conversations::get(&daemon.db, customer)
            .ok()
            .and_then(|c| c.assignee)
            .map(|(_, name)| name)
    };
    let mut jo = customer(&relay, root.path(), "jo").await;
    let jo_id = jo.account_id().to_string();
    jo.send_text(business, "Hello").await.expect("send");
    until(
        "the acting daemon assigns Jo to Ana",
        &[&holder],
        async || assignee(&holder, &jo_id).as_deref() == Some("ana"),
    )
    .await;
    until("the other daemon shows it", &[&other], async || {
        assignee(&other, &jo_id).as_deref() == Some("ana")
    })
    .await;

    // Ana closes her browser: the acting daemon stops counting her.
    drop(ana_page);
    until(
        "the acting daemon counts Ana gone",
        &[&holder],
        async || !present(&holder, "ana"),
    )
    .await;
    let mut later = Vec::new();
    for name in ["kim", "lu"] {
        let mut c = customer(&relay, root.path(), name).await;
        c.send_text(business, "Hello").await.expect("send");
        later.push(c.account_id().to_string());
    }
    until(
        "the acting daemon assigns Kim and Lu",
        &[&holder],
        async || later.iter().all(|c| assignee(&holder, c).is_some()),
    )
    .await;
    for c in &later {
        assert_eq!(assignee(&holder, c).as_deref(), Some("bob"), "{c}");
    }
}

/// A status the sending daemon learns (the relay reports delivery to
/// the sending device only) reaches the other daemon even when the
/// sender dies right after recording it: what tells the other daemon is
/// written in the same transaction as the status, and sent after a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_recorded_right_before_a_crash_reaches_the_other_daemon_after_a_restart() {
    let Scene {
        relay,
        root,
        receiver: _receiver,
        pair,
    } = scene("", Some("after-status-delivered")).await;
    let business = pair.business;
    let (mut a, b) = (pair.a, pair.b);

    let mut jo = customer(&relay, root.path(), "jo").await;
    let hello = jo
        .send_text(business, "Hello")
        .await
        .expect("send")
        .to_string();
    until("both daemons record Jo's message", &[&a, &b], async || {
        a.has_message(&hello) && b.has_message(&hello)
    })
    .await;
    let sent = a.send_text(jo.account_id(), "Your parcel left").await;
    let (_, text) = wait_message(&mut jo, business).await;
    assert_eq!(text, "Your parcel left");
    // Jo's device took it: the relay tells A it was delivered; A records
    // that and dies at once.
    let exit = tokio::time::timeout(TIMEOUT, a.child.wait())
        .await
        .expect("A stops at the fault point")
        .expect("A's exit");
    assert!(!exit.success());
    assert_eq!(
        a.db.status_of(&sent).expect("status"),
        Some(MessageStatus::Delivered)
    );
    until("B records the message A sent", &[&b], async || {
        b.has_message(&sent)
    })
    .await;
    assert_eq!(
        b.db.status_of(&sent).expect("status"),
        Some(MessageStatus::Sent),
        "B cannot know of the delivery yet"
    );

    // A starts again (no fault): B learns of the delivery.
    let _a = Daemon::start("A", &a.config_file, &a.database, None).await;
    until(
        "B learns that the message was delivered",
        &[&b],
        async || b.db.status_of(&sent).ok().flatten() == Some(MessageStatus::Delivered),
    )
    .await;
}

/// The relay primitive under it: one device of an account holds a lease
/// at a time, until it gives it up or its connection ends; bad requests
/// are refused with a typed error and take nothing.
#[tokio::test]
async fn a_lease_is_held_by_one_device_of_an_account_until_its_connection_ends() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let kind = AccountKind::Business;
    let mut one = registered_as(&relay, &root.path().join("one"), "pw-long-enough", kind).await;
    let mut two = linked(&relay, &mut one, &root.path().join("two")).await;
    let mut stranger =
        registered_as(&relay, &root.path().join("other"), "pw-long-enough", kind).await;
    let (name, lease) = ("agent.acting", Duration::from_secs(60));
    let got = one.acquire_lease(name, lease).await.expect("take");
    assert!(got.mine && got.valid_until.is_some());
    assert_eq!(got.holder, Some(one.device_id()));
    let seen = two.acquire_lease(name, lease).await.expect("ask");
    assert!(!seen.mine && seen.valid_until.is_none());
    assert_eq!(seen.holder, Some(one.device_id()));
    assert!(seen.expires_in <= lease);
    // Another account's lease of the same name is its own.
    assert!(
        stranger
            .acquire_lease(name, lease)
            .await
            .expect("take")
            .mine
    );

    let long = "x".repeat(65);
    for (bad_name, duration) in [
        ("", lease),
        ("no spaces", lease),
        (long.as_str(), lease),
        (name, Duration::from_millis(10)),
        (name, Duration::from_secs(301)),
    ] {
        let refused = two.acquire_lease(bad_name, duration).await;
        assert!(
            matches!(
                refused,
                Err(ClientError::Relay {
                    code: ErrorCode::InvalidRequest,
                    ..
                })
            ),
            "{bad_name:?} for {duration:?}: {refused:?}"
        );
    }
    let seen = two.acquire_lease(name, lease).await.expect("ask");
    assert_eq!(seen.holder, Some(one.device_id()), "refusals took nothing");

    // Given up, then taken by the other device; its connection ends and
    // the lease is free at once.
    let given = one
        .acquire_lease(name, Duration::ZERO)
        .await
        .expect("give up");
    assert!(!given.mine && given.holder.is_none());
    assert!(two.acquire_lease(name, lease).await.expect("take").mine);
    let open = relay.metric("comptoir_authenticated_connections").await;
    two.close().await.expect("close");
    relay
        .wait_metric_at_most("comptoir_authenticated_connections", open - 1.0)
        .await;
    let taken = one.acquire_lease(name, lease).await.expect("take");
    assert!(taken.mine, "{taken:?}");
}

/// `agent init --link` run as the second daemon's binary prints the
/// command to approve it and then the one to finish, with the same
/// `--config`; that command links it (README review item 2).
#[tokio::test]
async fn init_link_hints_repeat_the_config_given() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start().await;
    let text = |dir: &str| config_toml(&relay, &root.path().join(dir), &receiver, "", "");
    let (config_a, _) = write_config(root.path(), "a", &text("a"));
    let (_, file_b) = write_config(root.path(), "b", &text("b"));
    let business = init_business(&relay, &config_a).await;

    let stdout = agent_ok(&file_b, &["init", "--link"]).await;
    let code = stdout
        .lines()
        .find(|l| l.contains("devices add"))
        .and_then(|l| l.split_whitespace().last())
        .expect("the command to approve, with the code");
    let finish = format!("agent --config {} init --approval", file_b.display());
    assert!(stdout.contains(&finish), "{stdout}");

    let mut first = Client::open(&config_a.device_dir(), PASSPHRASE).expect("open A's device");
    first.connect(&url(&relay)).await.expect("connect");
    let approval = first.add_device(code).await.expect("approve B");
    first.close().await.expect("close");
    let linked = agent_ok(&file_b, &["init", "--approval", &approval]).await;
    assert!(
        linked.contains(&business.to_string()),
        "linked to the business"
    );
}
