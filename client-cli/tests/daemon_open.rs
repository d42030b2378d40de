//! `comptoir open LINK` without `--yes` through a running daemon behaves
//! as without it (issue 18 follow-up item 5): on a terminal it shows the
//! business and the text and asks, sends on yes and not on no; without a
//! terminal it prints the same and sends nothing (exit 0). Real processes
//! against a real relay on 127.0.0.1:0, the terminal a pseudo-terminal.
//!
//! Here rather than in tests/tests: it runs the `comptoir` binary, which
//! Cargo builds for this package's tests only.

use serde_json::Value;

mod common;

use common::terminal::Terminal;
use common::{Customer, Daemon, start_relay};

const LINK: &str = "comptoir://chat/acme?text=Where%20is%20my%20order";

/// Open the link in a terminal as `alice`, answer `answer`; the screen
/// once `open` ended, and its exit code.
async fn open_answering(alice: &Customer, answer: &str) -> (String, i32) {
    let mut terminal = Terminal::start(alice, &["open", LINK]);
    terminal.wait_for("Send this text to acme? [y/N]").await;
    terminal.type_text(answer);
    let done = if answer.starts_with('y') {
        "the business may now answer you for 24 hours"
    } else {
        "not sent (add --yes to send without asking)"
    };
    let screen = terminal.wait_for(done).await;
    (screen, terminal.exit_code().await)
}

/// How many messages Alice sent Acme.
async fn sent_to_acme(alice: &Customer, acme_id: &str) -> usize {
    alice
        .ok(&["--output", "json", "history", acme_id])
        .await
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a record"))
        .filter(|m| m["direction"] == "out" && m["text"] == "Where is my order")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_asks_on_the_terminal_through_the_daemon_as_without_it() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (acme, acme_id, alice) = common::acme_and_alice(root.path(), &relay).await;

    // Without a daemon: no terminal, nothing sent; on a terminal, asked.
    let without = alice.run(&["open", LINK]).await;
    assert_eq!(without.code, 0, "{without:?}");
    assert!(
        without.stdout.contains("text\tWhere is my order"),
        "{without:?}"
    );
    assert!(
        without
            .stderr
            .contains("not sent (add --yes to send without asking)"),
        "{without:?}"
    );
    assert_eq!(sent_to_acme(&alice, &acme_id).await, 0);
    let (screen, code) = open_answering(&alice, "y\r").await;
    assert_eq!(code, 0, "{screen}");
    assert_eq!(sent_to_acme(&alice, &acme_id).await, 1);

    // Through the daemon: the same output without a terminal, nothing sent.
    let daemon = Daemon::start(&alice, &[]);
    let with = alice.run(&["open", LINK]).await;
    assert_eq!(
        (with.code, &with.stdout, &with.stderr),
        (without.code, &without.stdout, &without.stderr),
        "{with:?}"
    );
    assert_eq!(sent_to_acme(&alice, &acme_id).await, 1);

    // On a terminal: asked; no sends nothing, yes sends the text.
    let (screen, code) = open_answering(&alice, "n\r").await;
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Where is my order"), "{screen}");
    assert_eq!(sent_to_acme(&alice, &acme_id).await, 1);
    let (screen, code) = open_answering(&alice, "y\r").await;
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("sent"), "{screen}");
    assert_eq!(sent_to_acme(&alice, &acme_id).await, 2);
    let heard = acme
        .ok(&["listen", "--count", "2", "--timeout", "20"])
        .await;
    assert_eq!(heard.matches("Where is my order").count(), 2, "{heard}");

    assert_eq!(daemon.terminate(), 0);
}
