//! The TUI with the relay down, through the same functions `comptoir tui`
//! runs (`tui::open`, `RelayLink::reconnect_if_due`, `tui::perform`) with
//! real clients and a real relay that stops and comes back (issue 18
//! item 9): the UI opens and shows the history while the relay is down,
//! a message written meanwhile waits, and the UI reconnects by itself.

mod support;

use std::time::Duration;

use comptoir_cli::tui::app::Action;
use comptoir_cli::tui::{open, perform};
use comptoir_client::Status;
use support::client::{registered, url, wait_message};
use support::*;

#[tokio::test]
async fn the_tui_opens_with_the_relay_down_and_reconnects_by_itself() {
    let relay = start_relay().await;
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let mut alice = registered(&relay, dirs[0].path(), "alice pass").await;
    let mut bob = registered(&relay, dirs[1].path(), "bob pass").await;
    let (a, b) = (alice.account_id(), bob.account_id());
    alice.send_text(b, "hello bob").await.expect("send");
    assert_eq!(wait_message(&mut bob, a).await.1, "hello bob");
    bob.disconnect().await;
    let address = url(&relay);
    let mut relay = relay;
    relay.stop().await;

    // The relay is down: the UI opens all the same, history shown.
    let (mut app, mut link) = open(&mut bob, &address).await.expect("opens offline");
    assert!(!bob.is_connected());
    assert!(app.status.contains("unreachable"), "{}", app.status);
    let conversation = app
        .conversations
        .iter()
        .find(|c| c.peer == a)
        .expect("alice's conversation");
    assert_eq!(conversation.messages[0].body, "hello bob");
    // Written while offline: it waits in the outbox.
    perform(
        &mut bob,
        &mut app,
        Action::Send {
            peer: a,
            text: "written offline".into(),
        },
    )
    .await
    .expect("perform");
    assert_eq!(bob.queued().expect("outbox").len(), 1);
    // Not due yet: no attempt; still down when due: it says so, waits longer.
    let now = tokio::time::Instant::now();
    let shown = app.status.clone();
    assert!(
        !link
            .reconnect_if_due(&mut bob, &mut app, now)
            .await
            .expect("not due")
    );
    assert_eq!(app.status, shown, "no attempt before it is due");
    assert!(
        !link
            .reconnect_if_due(&mut bob, &mut app, now + Duration::from_secs(60))
            .await
            .expect("retry")
    );
    assert!(app.status.contains("trying again"), "{}", app.status);

    // The relay comes back: the next due attempt reconnects, and what
    // waited is sent.
    let relay = relay.start_again_at_same_address().await;
    assert!(
        link.reconnect_if_due(&mut bob, &mut app, now + Duration::from_secs(600))
            .await
            .expect("reconnect")
    );
    assert_eq!(app.status, "reconnected");
    assert!(bob.is_connected());
    let sent = bob.history(&a).expect("history");
    assert!(
        sent.iter()
            .any(|m| m.body == "written offline" && m.status >= Status::Accepted),
        "sent once reconnected"
    );
    alice.connect(&address).await.expect("alice reconnects");
    assert_eq!(wait_message(&mut alice, b).await.1, "written offline");
    drop(relay);
}
