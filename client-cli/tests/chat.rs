//! `comptoir chat` in a pseudo-terminal, as a person uses it, standalone
//! and through a running `comptoir daemon` (issue 18 item 9): what is
//! being typed stays whole on its prompt line while messages arrive above
//! it; the relay restarted under a running chat is said (lost, then
//! "reconnected"), and a line written meanwhile is shown waiting, gets its
//! "sent" tick only once it reached the relay, and arrives.
//!
//! Here rather than in tests/tests: it runs the `comptoir` binary, which
//! Cargo builds for this package's tests only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

mod common;

use common::terminal::Terminal;
use common::{Customer, Relay, start_relay};

/// How `chat` runs: on its own connection, or through a daemon.
#[derive(Clone, Copy, Debug)]
enum Path {
    Standalone,
    ThroughDaemon,
}

/// A `comptoir daemon` process, stopped when dropped.
struct Daemon(Child);

impl Daemon {
    /// Start `comptoir daemon` for `customer` and wait until it serves.
    fn start(customer: &Customer) -> Self {
        let mut command = customer.command(&customer.relay, &["daemon"], true, false);
        command.stdin(Stdio::piped());
        let mut child = command.spawn().expect("start the daemon");
        let stderr = child.stderr.take().expect("stderr pipe");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("serves JSON-RPC on") => break,
                Some(Ok(_)) => {}
                _ => panic!("the daemon ended before serving: {:?}", child.wait()),
            }
        }
        // Its further lines are not needed; keep the pipe drained.
        std::thread::spawn(move || lines.for_each(drop));
        Self(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Alice and Bob know each other, and Alice wrote first (so Bob's
/// messages to her are not message requests); Alice's chat with Bob is
/// open in a terminal, on `path`, showing its prompt.
async fn alice_chatting(
    root: &std::path::Path,
    relay: &Relay,
    path: Path,
) -> (Customer, Option<Daemon>, Terminal) {
    let (alice, bob, _, _) = common::contacts(root, relay).await;
    alice.ok(&["send", "bob", "hello Bob"]).await;
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;
    assert!(heard.ends_with(": hello Bob\n"), "{heard:?}");
    let daemon = match path {
        Path::Standalone => None,
        Path::ThroughDaemon => Some(Daemon::start(&alice)),
    };
    let mut chat = Terminal::start(&alice, &["chat", "bob"]);
    chat.wait_for("Chatting with bob").await;
    chat.wait_until("the prompt", |t| t.cursor_row() == ">")
        .await;
    (bob, daemon, chat)
}

/// Type part of a line, have the peer write meanwhile: the message is on
/// a row of its own above the prompt, the typed text intact on the prompt
/// row; the finished line is sent whole, ↑ brings it back, Ctrl-C leaves.
async fn typing_is_not_mixed_with_what_arrives(path: Path) {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (bob, _daemon, mut chat) = alice_chatting(root.path(), &relay, path).await;

    chat.type_text("half a li");
    chat.wait_until("the typed text", |t| t.cursor_row() == "> half a li")
        .await;
    bob.ok(&["send", "alice", "incoming while you type"]).await;
    // The message is written, then the prompt line drawn again below it:
    // wait for both (on a terminal where they mix, never).
    let screen = chat
        .wait_until("the message above the prompt", |t| {
            t.text().contains("incoming while you type") && t.cursor_row() == "> half a li"
        })
        .await;
    let rows: Vec<&str> = screen.lines().collect();
    let message = rows
        .iter()
        .find(|row| row.contains("incoming while you type"))
        .expect("the message's row");
    assert!(
        message.starts_with('[') && message.ends_with("] bob: incoming while you type"),
        "{path:?}: the message is on a row of its own:\n{screen}"
    );
    assert_eq!(
        chat.cursor_row(),
        "> half a li",
        "{path:?}: the typed text is intact on the prompt row:\n{screen}"
    );
    assert_eq!(
        rows.iter().filter(|row| row.contains("half a li")).count(),
        1,
        "{path:?}: the typed text is on the prompt row only:\n{screen}"
    );

    chat.type_text("ne, then sent\r");
    chat.wait_for("✓ sent (waiting at the relay): “half a line, then sent”")
        .await;
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;
    assert!(
        heard.ends_with("] alice: half a line, then sent\n"),
        "{path:?}: {heard:?}"
    );
    // ↑ brings the line back from the history; Ctrl-C leaves.
    chat.type_text("\x1b[A");
    chat.wait_until("the line from the history", |t| {
        t.cursor_row() == "> half a line, then sent"
    })
    .await;
    chat.type_text("\x03");
    assert_eq!(chat.exit_code().await, 0, "{path:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_not_mixed_with_what_arrives_standalone() {
    typing_is_not_mixed_with_what_arrives(Path::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_not_mixed_with_what_arrives_through_the_daemon() {
    typing_is_not_mixed_with_what_arrives(Path::ThroughDaemon).await;
}

/// Restart the relay under a running chat: the chat says it lost the
/// connection, a line written meanwhile is shown waiting (no ✓ yet), then
/// "reconnected", the ✓ once it reached the relay, and the peer gets it.
async fn the_relay_restarts_under_the_chat(path: Path) {
    let mut relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (bob, _daemon, mut chat) = alice_chatting(root.path(), &relay, path).await;

    relay.stop().await;
    chat.wait_for("connection lost").await;
    chat.type_text("written while the relay is away\r");
    let screen = chat
        .wait_for(
            "· waiting (the relay is away; sent when it is back): “written while the relay is \
             away”",
        )
        .await;
    let tick = "✓ sent (waiting at the relay): “written while the relay is away”";
    assert!(!screen.contains(tick), "{path:?}: no tick yet:\n{screen}");
    assert!(!screen.contains("reconnected"), "{path:?}:\n{screen}");

    relay.start_again().await;
    chat.wait_for("reconnected").await;
    let screen = chat.wait_for(tick).await;
    let at = |text: &str| screen.find(text).expect(text);
    assert!(
        at("connection lost") < at("· waiting") && at("· waiting") < at("reconnected"),
        "{path:?}: lost, waiting, then reconnected:\n{screen}"
    );
    assert!(at("reconnected") < at(tick), "{path:?}:\n{screen}");
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;
    assert!(
        heard.ends_with(": written while the relay is away\n"),
        "{path:?}: {heard:?}"
    );
    chat.type_text("\x04");
    assert_eq!(chat.exit_code().await, 0, "{path:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_restarts_under_the_chat_standalone() {
    the_relay_restarts_under_the_chat(Path::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_restarts_under_the_chat_through_the_daemon() {
    the_relay_restarts_under_the_chat(Path::ThroughDaemon).await;
}

/// Open the chat with the relay down (issue 18 follow-up item 2): it
/// opens all the same, shows the history and says it is offline and
/// reconnecting; a line typed meanwhile is shown waiting; when the relay
/// is back the chat says so, the line gets its ✓ and the peer gets it.
async fn the_chat_opens_with_the_relay_down(path: Path) {
    let mut relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (alice, bob, _, _) = common::contacts(root.path(), &relay).await;
    alice.ok(&["send", "bob", "hello Bob"]).await;
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;
    assert!(heard.ends_with(": hello Bob\n"), "{heard:?}");
    relay.stop().await;
    // Started with the relay down, the daemon has no connection either.
    let _daemon = match path {
        Path::Standalone => None,
        Path::ThroughDaemon => Some(Daemon::start(&alice)),
    };

    let mut chat = Terminal::start(&alice, &["chat", "bob"]);
    chat.wait_for("Chatting with bob").await;
    chat.wait_for("] me: hello Bob").await;
    chat.wait_for("offline, reconnecting").await;
    chat.wait_until("the prompt", |t| t.cursor_row() == ">")
        .await;
    chat.type_text("typed while offline\r");
    chat.wait_for("· waiting (the relay is away; sent when it is back): “typed while offline”")
        .await;
    let tick = "✓ sent (waiting at the relay): “typed while offline”";
    assert!(!chat.text().contains(tick), "{path:?}:\n{}", chat.text());

    relay.start_again().await;
    chat.wait_for(match path {
        Path::Standalone => "reconnected",
        Path::ThroughDaemon => "connected to the relay",
    })
    .await;
    chat.wait_for(tick).await;
    let heard = bob.ok(&["listen", "--count", "1", "--timeout", "10"]).await;
    // (Bob never wrote to Alice: to him, it is a message request.)
    assert!(
        heard.ends_with(": typed while offline\n"),
        "{path:?}: {heard:?}"
    );
    chat.type_text("\x04");
    assert_eq!(chat.exit_code().await, 0, "{path:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_opens_with_the_relay_down_standalone() {
    the_chat_opens_with_the_relay_down(Path::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_opens_with_the_relay_down_through_the_daemon() {
    the_chat_opens_with_the_relay_down(Path::ThroughDaemon).await;
}
