//! `comptoir daemon` run as a real process against a real relay on
//! 127.0.0.1:0 (issue 18 item 6): other `comptoir` commands go through it
//! while it holds the store (without it they fail with the store locked),
//! a script talks JSON-RPC 2.0 to it on its socket and on standard
//! input/output, incoming messages and receipts arrive as notifications,
//! bad requests get typed errors and change nothing stored, a second
//! daemon on the same data directory is refused, and the socket is the
//! user's only.
//!
//! Here rather than in tests/tests: it runs the `comptoir` binary, which
//! Cargo builds for this package's tests only.

use std::path::Path;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

mod common;

use common::{Customer, Daemon, WAIT, start_relay};

/// A script's JSON-RPC connection: responses by id, notifications kept
/// in order.
struct Rpc<R, W> {
    lines: tokio::io::Lines<tokio::io::BufReader<R>>,
    writer: W,
    next_id: u64,
    notifications: std::collections::VecDeque<Value>,
}

impl<R, W> Rpc<R, W>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    fn new(read: R, writer: W) -> Self {
        Self {
            lines: tokio::io::BufReader::new(read).lines(),
            writer,
            next_id: 1,
            notifications: Default::default(),
        }
    }

    async fn send_line(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write a request");
    }

    async fn read(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("the daemon answers in time")
            .expect("read")
            .expect("the daemon keeps the connection open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// The response to a line sent as it is (which may not be a request).
    async fn raw(&mut self, line: &str) -> Value {
        self.send_line(line).await;
        loop {
            let value = self.read().await;
            if value.get("method").is_some() {
                self.notifications.push_back(value);
                continue;
            }
            return value;
        }
    }

    /// The whole response to `method` with `params`.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = self.raw(&request.to_string()).await;
        assert_eq!(response["jsonrpc"], "2.0", "{response}");
        assert_eq!(response["id"], id, "{response}");
        response
    }

    /// The result of `method`, which must succeed.
    async fn ok(&mut self, method: &str, params: Value) -> Value {
        let response = self.call(method, params).await;
        assert!(response.get("error").is_none(), "{method}: {response}");
        response["result"].clone()
    }

    /// The next notification whose params satisfy `wanted`.
    async fn notification(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let value = match self.notifications.pop_front() {
                Some(value) => value,
                None => self.read().await,
            };
            assert_eq!(value["jsonrpc"], "2.0", "{value}");
            if value.get("method").is_some() {
                assert_eq!(value["method"], "receive", "{value}");
                assert!(value.get("id").is_none(), "{value}");
                if wanted(&value["params"]) {
                    return value["params"].clone();
                }
            }
        }
    }
}

async fn connect(
    path: &Path,
) -> Rpc<tokio::net::unix::OwnedReadHalf, tokio::net::unix::OwnedWriteHalf> {
    let stream = UnixStream::connect(path)
        .await
        .expect("connect to the socket");
    let (read, write) = stream.into_split();
    Rpc::new(read, write)
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_scripts_share_the_account_through_the_daemon() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (alice, bob, alice_id, bob_id) = common::contacts(root.path(), &relay).await;
    alice.ok(&["send", "bob", "before the daemon"]).await;

    let daemon = Daemon::start(&alice, &[]);
    // The socket and its directory are the user's only.
    #[cfg(unix)]
    {
        assert_eq!(mode(&alice.socket()), 0o600);
        assert_eq!(mode(&alice.dir), 0o700);
    }

    // Other commands go through it, without the passphrase (they do not
    // open the store: without the daemon they fail with it locked).
    let whoami = alice.run_with(&["whoami"], false, None).await;
    assert_eq!(
        (whoami.code, whoami.stdout.trim()),
        (0, alice_id.as_str()),
        "{whoami:?}"
    );

    let mut script = connect(&alice.socket()).await;
    let me = script.ok("whoami", json!({})).await;
    assert_eq!(me["account"], alice_id);
    assert_eq!(me["device_id"], 1);
    assert_eq!(
        script.ok("subscribe", json!({})).await,
        json!({"subscribed": true})
    );

    // An incoming message arrives as a notification, as `listen --output
    // json` prints it.
    bob.ok(&["send", "alice", "hello daemon"]).await;
    let message = script
        .notification(|p| p["type"] == "message" && p["text"] == "hello daemon")
        .await;
    assert_eq!(message["direction"], "in");
    assert_eq!(message["peer"], bob_id);
    assert_eq!(message["peer_name"], "bob");
    assert!(
        message["time_ms"].is_u64() && message["time"].is_string(),
        "{message}"
    );

    // `send` from the command line goes through the daemon too.
    let sent = alice
        .run_with(&["send", "bob", "from the command line"], false, None)
        .await;
    assert_eq!(sent.code, 0, "{sent:?}");
    let cli_id = sent.stdout.trim().to_string();
    assert_eq!(cli_id.len(), 32, "{sent:?}");
    let sent = alice
        .run_with(
            &["--output", "json", "send", "bob", "-"],
            false,
            Some("piped in\n"),
        )
        .await;
    assert_eq!(sent.code, 0, "{sent:?}");
    let record: Value = serde_json::from_str(sent.stdout.trim()).expect("one JSON line");
    assert_eq!(
        (&record["type"], &record["status"]),
        (&json!("sent"), &json!("sent"))
    );

    // And a script's send: a receipt follows as a notification once Bob's
    // device stores it.
    let sent = script
        .ok("send", json!({"to": "bob", "text": "from a script"}))
        .await;
    assert_eq!(sent["type"], "sent");
    assert_eq!(sent["peer"], bob_id);
    let id = sent["id"].as_str().expect("id").to_string();
    let heard = bob.ok(&["listen", "--count", "4", "--timeout", "20"]).await;
    for text in ["from the command line", "piped in", "from a script"] {
        assert!(heard.contains(&format!("alice: {text}\n")), "{heard}");
    }
    script
        .notification(|p| {
            p["type"] == "status" && p["id"] == id.as_str() && p["status"] == "delivered"
        })
        .await;

    // `listen` through the daemon: it says when it listens, then prints
    // what arrives as it does without the daemon.
    let mut listen = Daemon::spawn(
        &alice,
        &[
            "--output",
            "json",
            "listen",
            "--count",
            "1",
            "--timeout",
            "20",
        ],
        false,
    );
    listen.wait_for_stderr("listening through the daemon");
    bob.ok(&["send", "alice", "to the listener"]).await;
    assert_eq!(listen.wait(), 0);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut listen.child.stdout.take().expect("stdout"), &mut out)
        .expect("read listen's output");
    let heard: Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(
        (&heard["type"], &heard["text"], &heard["peer"]),
        (&json!("message"), &json!("to the listener"), &json!(bob_id)),
        "{out}"
    );

    // History, contacts, devices, mark_read, block and unblock.
    let history = script.ok("history", json!({"with": "bob"})).await;
    let texts: Vec<&str> = history
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(
        texts,
        [
            "before the daemon",
            "hello daemon",
            "from the command line",
            "piped in",
            "from a script",
            "to the listener"
        ]
    );
    let last = script
        .ok("history", json!({"with": bob_id, "limit": 1}))
        .await;
    assert_eq!(last.as_array().map(Vec::len), Some(1));
    let contacts = script.ok("contacts_list", json!({})).await;
    assert_eq!(
        contacts,
        json!([{"type": "contact", "name": "bob", "account": bob_id, "verified": false, "blocked": false}])
    );
    let devices = script.ok("devices_list", json!({})).await;
    assert_eq!(devices[0]["device_id"], 1);
    assert_eq!(devices[0]["this_device"], true);
    assert_eq!(
        script.ok("mark_read", json!({"with": "bob"})).await,
        json!({"marked": 2})
    );
    let listed = alice.run_with(&["history", "bob"], false, None).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.contains(" bob: hello daemon\n"), "{listed:?}");
    let blocked = script
        .ok("block", json!({"who": "bob", "reason": "spam"}))
        .await;
    assert_eq!(blocked["blocked"], true);
    let contacts = alice
        .run_with(&["--output", "json", "contacts", "list"], false, None)
        .await;
    assert!(contacts.stdout.contains("\"blocked\":true"), "{contacts:?}");
    let unblocked = alice.run_with(&["unblock", "bob"], false, None).await;
    assert_eq!(unblocked.code, 0, "{unblocked:?}");

    // `register` again is a success, as without a daemon (it changes
    // nothing, and leaves the daemon's connection alone); of the other
    // kind it is the relay's refusal, exit 6.
    let register = alice.run(&["register"]).await;
    assert_eq!(register.code, 0, "{register:?}");
    assert!(
        register.stderr.contains("already registered"),
        "{register:?}"
    );
    let whoami = alice.run(&["whoami"]).await;
    assert_eq!(register.stdout, whoami.stdout, "{register:?}");
    let business = alice.run(&["register", "--business"]).await;
    assert_eq!(business.code, 6, "{business:?}");
    assert!(
        business
            .stderr
            .contains("this kind of account cannot do that"),
        "{business:?}"
    );
    let after = script.ok("whoami", json!({})).await;
    assert_eq!(after["connected"], true, "{after}");

    // A command that needs the store to itself says a daemon runs and to
    // stop it.
    let init = alice.run(&["init"]).await;
    assert_eq!(init.code, 1, "{init:?}");
    assert!(
        init.stderr.contains("a comptoir daemon is running")
            && init.stderr.contains("stop the daemon first"),
        "{init:?}"
    );

    // A second daemon on the same data directory is refused.
    let second = alice.run(&["daemon"]).await;
    assert_eq!(second.code, 1, "{second:?}");
    assert!(second.stderr.contains("already serves"), "{second:?}");
    assert!(!second.stderr.contains("Error {"), "{second:?}");

    // Stopped, it removes its socket and lets go of the store.
    drop(script);
    assert_eq!(daemon.terminate(), 0);
    assert!(!alice.socket().exists());
    let whoami = alice.run(&["whoami"]).await;
    assert_eq!(whoami.stdout.trim(), alice_id, "{whoami:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors_and_change_nothing() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    let bob = Customer::new(root.path(), "bob", &relay);
    alice.registered().await;
    let bob_id = bob.registered().await;
    alice.ok(&["contacts", "add", "bob", &bob_id]).await;
    alice.ok(&["send", "bob", "the only message"]).await;

    let daemon = Daemon::start(&alice, &[]);
    let mut script = connect(&alice.socket()).await;
    let before = (
        script.ok("history", json!({"with": "bob"})).await,
        script.ok("contacts_list", json!({})).await,
    );

    let long = "x".repeat(9000);
    let cases: Vec<(String, i64, Option<u8>)> = vec![
        ("{not json".into(), -32700, Some(2)),
        ("[1, 2]".into(), -32600, Some(2)),
        (r#"{"id": 1, "method": "whoami"}"#.into(), -32600, Some(2)),
        (r#"{"jsonrpc": "2.0", "id": 2, "method": "launch"}"#.into(), -32601, Some(2)),
        (r#"{"jsonrpc": "2.0", "id": 3, "method": "send", "params": ["bob", "hi"]}"#.into(), -32602, Some(2)),
        (r#"{"jsonrpc": "2.0", "id": 4, "method": "send", "params": {"to": "bob"}}"#.into(), -32602, Some(2)),
        (r#"{"jsonrpc": "2.0", "id": 5, "method": "send", "params": {"to": "bob", "text": "hi", "colour": "red"}}"#.into(), -32602, Some(2)),
        (r#"{"jsonrpc": "2.0", "id": 6, "method": "send", "params": {"to": "carol", "text": "hi"}}"#.into(), -32001, Some(8)),
        (json!({"jsonrpc": "2.0", "id": 7, "method": "send", "params": {"to": "bob", "text": long}}).to_string(), -32602, Some(1)),
        (r#"{"jsonrpc": "2.0", "id": 8, "method": "send", "params": {"to": "bob", "file": "relative.txt"}}"#.into(), -32602, Some(2)),
        (r#"{"jsonrpc": "2.0", "id": 9, "method": "block", "params": {"who": "bob", "reason": "boredom"}}"#.into(), -32602, Some(2)),
        (r#"{"jsonrpc": "2.0", "id": 10, "method": "history", "params": {"with": "carol"}}"#.into(), -32001, Some(8)),
        (r#"{"jsonrpc": "2.0", "id": 11, "method": "whoami", "params": {"verbose": true}}"#.into(), -32602, Some(2)),
    ];
    for (line, code, exit_code) in &cases {
        let response = script.raw(line).await;
        let error = &response["error"];
        assert_eq!(error["code"], *code, "{line}: {response}");
        if let Some(exit_code) = exit_code {
            assert_eq!(error["data"]["exit_code"], *exit_code, "{line}: {response}");
        }
        let message = error["message"].as_str().expect("a message");
        assert!(!message.is_empty());
        // No paths, no Rust type names.
        for leak in [
            root.path().to_str().expect("utf-8"),
            "::",
            "Error {",
            "struct ",
        ] {
            assert!(!message.contains(leak), "{line}: {message}");
        }
        assert!(response.get("result").is_none(), "{response}");
    }
    // A request without an id is a notification: no response, but the
    // connection goes on.
    script
        .send_line(r#"{"jsonrpc": "2.0", "method": "whoami"}"#)
        .await;
    // (`call` checks the next response is this request's.)
    script.ok("whoami", json!({})).await;

    let after = (
        script.ok("history", json!({"with": "bob"})).await,
        script.ok("contacts_list", json!({})).await,
    );
    assert_eq!(before, after, "nothing stored changed");

    // A line longer than the limit closes that connection only.
    script.send_line(&"y".repeat(300 * 1024)).await;
    let response = script.read().await;
    assert_eq!(response["error"]["code"], -32600, "{response}");
    let mut again = connect(&alice.socket()).await;
    again.ok("whoami", json!({})).await;
    drop(again);
    drop(script);
    assert_eq!(daemon.terminate(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_standard_input_and_output_on_request() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (alice, bob, alice_id, _) = common::contacts(root.path(), &relay).await;

    let mut daemon = Daemon::start(&alice, &["--stdio"]);
    let stdin = daemon.child.stdin.take().expect("stdin");
    let stdout = daemon.child.stdout.take().expect("stdout");
    let mut script = Rpc::new(
        tokio::process::ChildStdout::from_std(stdout).expect("async stdout"),
        tokio::process::ChildStdin::from_std(stdin).expect("async stdin"),
    );
    assert_eq!(script.ok("whoami", json!({})).await["account"], alice_id);
    script.ok("subscribe", json!({})).await;
    bob.ok(&["send", "alice", "over stdio"]).await;
    script
        .notification(|p| p["type"] == "message" && p["text"] == "over stdio")
        .await;
    let response = script.raw("nonsense").await;
    assert_eq!(response["error"]["code"], -32700);

    // `chat` goes through the same daemon (its socket) meanwhile.
    let chat = alice
        .run_with(&["chat", "bob"], false, Some("typed in chat\n"))
        .await;
    assert_eq!(chat.code, 0, "{chat:?}");
    assert!(chat.stdout.contains("bob: over stdio"), "{chat:?}");
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "20"]).await;
    assert!(heard.ends_with("alice: typed in chat\n"), "{heard}");

    // Closing its standard input stops it.
    drop(script);
    assert_eq!(daemon.wait(), 0);
    assert!(!alice.socket().exists());
}

/// The relay away and back under the daemon (issue 18 follow-up item 4):
/// subscribers get a `connection` notification `lost`, then
/// `reconnected` once the daemon is connected again, and `whoami` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_told_when_the_daemon_reconnects() {
    let mut relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    alice.registered().await;
    let mut daemon = Daemon::start(&alice, &[]);
    let mut script = connect(&alice.socket()).await;
    script.ok("subscribe", json!({})).await;
    let is = |state: &'static str| {
        move |record: &Value| record["type"] == "connection" && record["state"] == state
    };
    if script.ok("whoami", json!({})).await["connected"] != true {
        script.notification(is("connected")).await;
    }

    relay.stop().await;
    let lost = script.notification(is("lost")).await;
    assert!(lost["text"].is_string(), "{lost}");
    // Its log, read from a pipe as from a file or a journal: plain lines,
    // no terminal colour codes.
    let logged = daemon.wait_for_stderr("lost the relay");
    assert!(
        !logged.contains('\u{1b}'),
        "colour codes in a log: {logged:?}"
    );
    relay.start_again().await;
    let back = script.notification(is("reconnected")).await;
    assert!(
        back["time_ms"].is_u64() && back["time"].is_string(),
        "{back}"
    );
    assert_eq!(script.ok("whoami", json!({})).await["connected"], true);

    drop(script);
    assert_eq!(daemon.terminate(), 0);
}

/// A slow request holds up no other (issue 18 follow-up item 3): a file
/// send whose file is a named pipe the test holds is in flight until the
/// test opens the pipe; meanwhile another script's `whoami` is answered
/// and Bob's message is notified to it; then the send ends as it does
/// without a daemon (a pipe is refused, nothing sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_holds_up_no_other() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (alice, bob, alice_id, _) = common::contacts(root.path(), &relay).await;
    alice.ok(&["send", "bob", "hello Bob"]).await;
    let daemon = Daemon::start(&alice, &[]);
    let pipe = root.path().join("slow.pdf");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());

    let mut slow = connect(&alice.socket()).await;
    let command = json!({"SendFile": {"to": "bob", "path": pipe, "content_type": null}});
    slow.send_line(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "run", "params": {"command": command}})
            .to_string(),
    )
    .await;

    let mut other = connect(&alice.socket()).await;
    other.ok("subscribe", json!({})).await;
    let whoami = other.ok("whoami", json!({})).await;
    assert_eq!(whoami["account"], alice_id.as_str(), "{whoami}");
    bob.ok(&["send", "alice", "while the file is read"]).await;
    let heard = other
        .notification(|r| r["type"] == "message" && r["text"] == "while the file is read")
        .await;
    assert_eq!(heard["direction"], "in", "{heard}");

    // The file send is still in flight: its answer comes once the pipe
    // is opened (and refused, as without a daemon).
    let opened = std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(&pipe));
    let ran = slow.read().await;
    assert_eq!(ran["id"], 1, "{ran}");
    assert_eq!(ran["result"]["exit_code"], 1, "{ran}");
    assert!(
        ran["result"]["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("only a regular file can be sent")),
        "{ran}"
    );
    drop(opened.join().expect("join").expect("the pipe opened"));

    drop((slow, other));
    assert_eq!(daemon.terminate(), 0);
}

/// A daemon away from its relay still knows its account's kind (kept in
/// the store since registration): `register` of the other kind is refused
/// as the relay refuses it (exit 6), and of the same kind is a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_daemon_refuses_register_of_the_other_kind() {
    let mut relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let alice = Customer::new(root.path(), "alice", &relay);
    alice.registered().await;
    relay.stop().await;
    let daemon = Daemon::start(&alice, &[]);
    let mut script = connect(&alice.socket()).await;
    assert_eq!(script.ok("whoami", json!({})).await["connected"], false);

    let business = alice.run(&["register", "--business"]).await;
    assert_eq!(business.code, 6, "{business:?}");
    assert!(
        business
            .stderr
            .contains("this kind of account cannot do that"),
        "{business:?}"
    );
    let again = alice.run(&["register"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("already registered"), "{again:?}");

    drop(script);
    assert_eq!(daemon.terminate(), 0);
}
