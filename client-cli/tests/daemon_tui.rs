//! The TUI through a running `comptoir daemon` (issue 18 item 6): its
//! state driven by key events as in src/tui/tests.rs, its actions run by
//! a real daemon process against a real relay on 127.0.0.1:0 — sending,
//! reporting a message, opening a Status post, blocking after the
//! question and opening a click-to-chat link — and their effects seen by
//! the other side and in the store.
//!
//! Here rather than in tests/tests: it runs the `comptoir` binary, which
//! Cargo builds for this package's tests only.

use comptoir_cli::daemon::remote::Remote;
use comptoir_cli::tui::app::{Action, App, Mode};
use comptoir_cli::tui::remote;
use comptoir_client::click_to_chat::ChatLink;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

mod common;

use common::{Daemon, start_relay};

fn press(app: &mut App, code: KeyCode) -> Action {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl(app: &mut App, c: char) -> Action {
    app.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

/// Press `code` and run what it asks for through the daemon.
async fn act(remote: &mut Remote, app: &mut App, code: KeyCode) -> Action {
    let action = press(app, code);
    remote::perform(remote, app, action.clone())
        .await
        .expect("the daemon answers");
    action
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tui_sends_reports_opens_a_status_and_blocks_through_the_daemon() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (alice, bob, _alice_id, bob_id) = common::contacts(root.path(), &relay).await;
    // Alice wrote first: Bob's answer is no message request.
    alice.ok(&["send", "bob", "hello"]).await;
    bob.ok(&[
        "status",
        "post",
        "--text",
        "closed on Monday",
        "--to",
        "alice",
    ])
    .await;
    bob.ok(&["send", "alice", "win a prize"]).await;
    // Both received (`listen` counts the Status) and stored, not read.
    alice
        .ok(&["listen", "--count", "2", "--timeout", "20"])
        .await;
    let daemon = Daemon::start(&alice, &[]);

    let mut remote = Remote::connect_if_running(&alice.dir)
        .await
        .expect("the daemon answers");
    let mut app = remote::load(&mut remote).await.expect("the TUI's state");
    assert_eq!(app.conversations.len(), 1);
    let bob_peer = app.conversations[0].peer;
    assert_eq!(bob_peer.to_string(), bob_id);
    assert_eq!(app.conversations[0].name, "bob");

    // Open Bob's conversation (marked read), type and send.
    assert_eq!(
        app.conversations[0].unread, 1,
        "{:?}",
        app.conversations[0].messages
    );
    assert_eq!(
        act(&mut remote, &mut app, KeyCode::Enter).await,
        Action::MarkRead(bob_peer)
    );
    assert_eq!(app.mode, Mode::Chat);
    assert_eq!(app.conversations[0].unread, 0, "{}", app.status);
    for c in "from the tui".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    let sent = act(&mut remote, &mut app, KeyCode::Enter).await;
    assert_eq!(
        sent,
        Action::Send {
            peer: bob_peer,
            text: "from the tui".into()
        }
    );
    let heard = bob.ok(&["listen", "--count", "2", "--timeout", "20"]).await;
    assert!(heard.contains("alice: from the tui\n"), "{heard}");
    let texts: Vec<&str> = app.conversations[0]
        .messages
        .iter()
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(texts, ["hello", "win a prize", "from the tui"]);

    // Pick Bob's message (↑ twice from the newest) and report it: the
    // daemon runs the TUI's own report.
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Up);
    let reported = act(&mut remote, &mut app, KeyCode::Char('r')).await;
    assert!(matches!(reported, Action::Report { peer, .. } if peer == bob_peer));
    assert!(
        app.status.starts_with("reported to the operator (report "),
        "{}",
        app.status
    );

    // Block after the question naming Bob.
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    assert_eq!(ctrl(&mut app, 'b'), Action::None);
    assert_eq!(app.mode, Mode::ConfirmBlock);
    assert_eq!(
        act(&mut remote, &mut app, KeyCode::Char('y')).await,
        Action::Block(bob_peer)
    );
    assert!(app.status.starts_with("blocked"), "{}", app.status);
    assert!(app.conversations[0].blocked);
    let contacts = alice
        .run_with(&["--output", "json", "contacts", "list"], false, None)
        .await;
    assert!(contacts.stdout.contains("\"blocked\":true"), "{contacts:?}");

    // The Status pane lists Bob's post; Enter opens it through the daemon.
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.mode, Mode::List);
    assert_eq!(app.statuses.len(), 1, "{:?}", app.statuses);
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.mode, Mode::Status);
    let opened = act(&mut remote, &mut app, KeyCode::Enter).await;
    assert!(matches!(opened, Action::OpenStatus(_)), "{opened:?}");
    let post = app.opened_status.as_ref().expect("the post is open");
    assert_eq!(post.body, "closed on Monday");
    assert!(post.heading.starts_with("bob at "), "{post:?}");

    drop(remote);
    assert_eq!(daemon.terminate(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tui_opens_a_chat_link_through_the_daemon() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (acme, acme_id, alice) = common::acme_and_alice(root.path(), &relay).await;
    let daemon = Daemon::start(&alice, &[]);

    let mut remote = Remote::connect_if_running(&alice.dir)
        .await
        .expect("the daemon answers");
    let mut app = remote::load(&mut remote).await.expect("the TUI's state");
    assert!(app.conversations.is_empty());

    // A business that does not exist: said on the status line.
    let unknown = ChatLink::parse("comptoir://chat/nobody").expect("a link");
    remote::open_link(&mut remote, &mut app, &unknown)
        .await
        .expect("the daemon answers");
    assert_eq!(app.mode, Mode::List);
    assert!(
        app.status.starts_with("⚠ the link's business"),
        "{}",
        app.status
    );

    // Acme's link: its conversation opens with the text in the composer,
    // and Enter sends it.
    let link =
        ChatLink::parse("comptoir://chat/acme?text=Where%20is%20my%20order").expect("a link");
    remote::open_link(&mut remote, &mut app, &link)
        .await
        .expect("the daemon answers");
    assert_eq!(app.mode, Mode::Chat, "{}", app.status);
    assert!(app.status.starts_with("chat link: "), "{}", app.status);
    assert_eq!(app.input, "Where is my order");
    let peer = app.current().expect("a conversation").peer;
    assert_eq!(peer.to_string(), acme_id);
    let sent = act(&mut remote, &mut app, KeyCode::Enter).await;
    assert_eq!(
        sent,
        Action::Send {
            peer,
            text: "Where is my order".into()
        }
    );
    let heard = acme
        .ok(&["listen", "--count", "1", "--timeout", "20"])
        .await;
    assert!(heard.contains("Where is my order"), "{heard}");

    drop(remote);
    assert_eq!(daemon.terminate(), 0);
}
