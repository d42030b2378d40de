//! The TUI with the relay down, through the same functions `comptoir tui`
//! runs (`tui::open`, `RelayLink::reconnect_if_due`, `tui::perform`) with
//! real clients and a real relay that stops and comes back (issue 18
//! item 9): the UI opens and shows the history while the relay is down,
//! a message written meanwhile waits, and the UI reconnects by itself.
//! And what it does with files (issue 17 item 3): it saves a received
//! attachment to the downloads directory under a safe name, and opens a
//! Status post (a text shown, an image saved).

use crate::support;

use std::time::Duration;

use comptoir_cli::tui::app::Action;
use comptoir_cli::tui::{open, perform, reload};
use comptoir_client::{Event, Status, StatusInput};
use support::client::{registered, url, wait_for, wait_message};
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

/// Every file in `dir` (none if it does not exist), sorted.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn the_tui_saves_a_received_file_under_a_safe_name_and_opens_a_status() {
    let relay = start_relay().await;
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let mut alice = registered(&relay, dirs[0].path(), "alice pass").await;
    let mut bob = registered(&relay, dirs[1].path(), "bob pass").await;
    let (a, b) = (alice.account_id(), bob.account_id());
    bob.send_text(a, "hello alice").await.expect("send");
    wait_message(&mut alice, b).await;

    // Alice sends a file whose name tries to climb out of any directory
    // and to recolour the terminal.
    let source = dirs[2].path().join("pass.pdf");
    let pass = b"%PDF-1.7 boarding pass, seat 12A".repeat(100);
    std::fs::write(&source, &pass).expect("write");
    let mut file = alice
        .encrypt_file(&source, "application/pdf")
        .expect("encrypt");
    let hostile = "../../\u{1b}[31mpass.pdf";
    file.file_name = hostile.into();
    alice
        .send_attachment(b, &file)
        .await
        .expect("send the file");
    let id = wait_for(&mut bob, |e| match e {
        Event::Attachment { id, file_name, .. } if file_name == hostile => Some(*id),
        _ => None,
    })
    .await;

    let (mut app, _link) = open(&mut bob, &url(&relay)).await.expect("open");
    perform(&mut bob, &mut app, Action::SaveAttachment { peer: a, id })
        .await
        .expect("perform");
    let downloads = dirs[1].path().join("downloads");
    assert_eq!(files_in(&downloads), ["__31mpass.pdf"], "{}", app.status);
    assert_eq!(
        std::fs::read(downloads.join("__31mpass.pdf")).expect("saved"),
        pass
    );
    // Nothing landed beside the data directory, where `../..` pointed.
    let above = dirs[1].path().parent().expect("parent");
    for name in ["\u{1b}[31mpass.pdf", "__31mpass.pdf"] {
        assert!(!above.join(name).exists() && !dirs[1].path().join(name).exists());
    }
    assert!(app.status.contains("saved"), "{}", app.status);
    assert!(app.status.contains("\\u{1b}[31mpass.pdf"), "{}", app.status);
    assert!(!app.status.contains('\u{1b}'));
    // Saved again: a second file, the first kept.
    perform(&mut bob, &mut app, Action::SaveAttachment { peer: a, id })
        .await
        .expect("perform");
    assert_eq!(files_in(&downloads), ["__31mpass (1).pdf", "__31mpass.pdf"]);
    // A message without a file: said so, nothing saved.
    let (text_id, _) = {
        alice.send_text(b, "no file here").await.expect("send");
        wait_message(&mut bob, a).await
    };
    perform(
        &mut bob,
        &mut app,
        Action::SaveAttachment {
            peer: a,
            id: text_id,
        },
    )
    .await
    .expect("perform");
    assert!(app.status.contains("no file"), "{}", app.status);
    assert_eq!(files_in(&downloads).len(), 2);

    // Status: a text and an image from Alice, opened from the pane.
    let text = "Back at 5\n\u{7}bell";
    let posted_text = alice
        .post_status(StatusInput::Text(text), &[b])
        .await
        .expect("post");
    let image = dirs[2].path().join("sunset.png");
    let pixels = b"\x89PNG\r\n\x1a\nSUNSET PIXELS ".repeat(200);
    std::fs::write(&image, &pixels).expect("image");
    let posted_image = alice
        .post_status(StatusInput::File(&image), &[b])
        .await
        .expect("post");
    for _ in 0..2 {
        wait_for(&mut bob, |e| match e {
            Event::StatusPosted { from, .. } if *from == a => Some(()),
            _ => None,
        })
        .await;
    }
    reload(&mut bob, &mut app).await.expect("reload");
    assert_eq!(app.statuses.len(), 2);
    let text_id = hex::encode(posted_text.post_id);
    perform(&mut bob, &mut app, Action::OpenStatus(text_id.clone()))
        .await
        .expect("perform");
    let opened = app.opened_status.clone().expect("opened");
    assert_eq!(
        (opened.post_id.as_str(), opened.body.as_str()),
        (text_id.as_str(), text)
    );
    // The text was decrypted beside the store and is gone again.
    assert!(
        !files_in(dirs[1].path())
            .iter()
            .any(|n| n.starts_with(".status-view")),
        "{:?}",
        files_in(dirs[1].path())
    );
    let image_id = hex::encode(posted_image.post_id);
    perform(&mut bob, &mut app, Action::OpenStatus(image_id.clone()))
        .await
        .expect("perform");
    let saved = format!("status-{}.png", &image_id[..8]);
    assert_eq!(
        std::fs::read(downloads.join(&saved)).expect("saved"),
        pixels
    );
    let opened = app.opened_status.clone().expect("opened");
    assert!(opened.body.contains(&saved), "{}", opened.body);
    assert!(app.status.contains("saved to"), "{}", app.status);
    // A post that is gone: said so.
    perform(&mut bob, &mut app, Action::OpenStatus("00".repeat(16)))
        .await
        .expect("perform");
    assert!(app.status.contains("gone"), "{}", app.status);
}
