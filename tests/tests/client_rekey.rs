//! A wedged session recovers by itself over a real relay: one side's store
//! is restored from an old backup, the next message fails to decrypt, the
//! client asks for a fresh session, and both the failed message and the
//! next one arrive, once each.

use crate::support;

use comptoir_client::{Client, Event};
use support::client::{FAST_KDF, linked, url, wait_for, wait_message as wait_text};
use support::{copy_dir, start_relay};

/// Alice sends, Bob receives; then Bob sends, Alice receives.
async fn exchange(alice: &mut Client, bob: &mut Client, to_bob: &str, to_alice: &str) {
    let (a, b) = (alice.account_id(), bob.account_id());
    alice.send_text(b, to_bob).await.expect("send");
    assert_eq!(wait_text(bob, a).await.1, to_bob);
    bob.send_text(a, to_alice).await.expect("send");
    assert_eq!(wait_text(alice, b).await.1, to_alice);
}

#[tokio::test]
async fn a_session_restored_from_an_old_backup_recovers_by_itself() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("dir");
    let (dir_a, dir_b, backup) = (
        root.path().join("alice"),
        root.path().join("bob"),
        root.path().join("bob-backup"),
    );
    let mut alice = Client::create_with_params(&dir_a, "pw-long-enough", FAST_KDF).expect("create");
    alice.register(&url(&relay)).await.expect("register");
    let mut bob = Client::create_with_params(&dir_b, "pw-long-enough", FAST_KDF).expect("create");
    bob.register(&url(&relay)).await.expect("register");
    let (a, b) = (alice.account_id(), bob.account_id());
    exchange(&mut alice, &mut bob, "one", "two").await;

    // Bob backs his store up, then the ratchet turns twice more.
    bob.close().await.expect("close");
    copy_dir(&dir_b, &backup);
    let mut bob = Client::open(&dir_b, "pw-long-enough").expect("reopen");
    bob.connect(&url(&relay)).await.expect("connect");
    exchange(&mut alice, &mut bob, "three", "four").await;
    exchange(&mut alice, &mut bob, "five", "six").await;

    // Bob restores the old backup: his session is out of step.
    bob.close().await.expect("close");
    std::fs::remove_dir_all(&dir_b).expect("remove");
    let mut bob = Client::restore_from_backup(&backup, &dir_b, "pw-long-enough").expect("restore");
    bob.connect(&url(&relay)).await.expect("connect");

    let lost = alice.send_text(b, "seven").await.expect("send");
    let failed = wait_for(&mut bob, |e| match e {
        Event::SessionReset { peer, failed, .. } if *peer == a => Some(*failed),
        _ => None,
    })
    .await;
    assert_eq!(failed, lost, "the re-key request names the failed message");
    let resent = wait_for(&mut alice, |e| match e {
        Event::Resent { to, id } if *to == b => Some(*id),
        _ => None,
    })
    .await;
    assert_eq!(resent, lost);
    assert_eq!(wait_text(&mut bob, a).await, (lost, "seven".to_string()));

    // The fresh session carries the next messages both ways.
    let next = alice.send_text(b, "eight").await.expect("send");
    assert_eq!(wait_text(&mut bob, a).await, (next, "eight".to_string()));
    bob.send_text(a, "nine").await.expect("send");
    assert_eq!(wait_text(&mut alice, b).await.1, "nine");

    let texts: Vec<_> = bob
        .history(&a)
        .expect("history")
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(texts, ["one", "two", "seven", "eight", "nine"]);
}

#[tokio::test]
async fn a_resent_copy_is_a_duplicate_on_the_device_that_already_had_it() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("dir");
    let dir = |name: &str| root.path().join(name);
    let mut alice =
        Client::create_with_params(&dir("alice"), "pw-long-enough", FAST_KDF).expect("create");
    alice.register(&url(&relay)).await.expect("register");
    let mut phone =
        Client::create_with_params(&dir("phone"), "pw-long-enough", FAST_KDF).expect("create");
    phone.register(&url(&relay)).await.expect("register");
    let mut laptop = linked(&relay, &mut phone, &dir("laptop")).await;
    let (a, b) = (alice.account_id(), phone.account_id());

    alice.send_text(b, "one").await.expect("send");
    assert_eq!(wait_text(&mut phone, a).await.1, "one");
    assert_eq!(wait_text(&mut laptop, a).await.1, "one");

    // The laptop backs up, then its session with Alice turns twice.
    laptop.close().await.expect("close");
    copy_dir(&dir("laptop"), &dir("laptop-backup"));
    let mut laptop = Client::open(&dir("laptop"), "pw-long-enough").expect("reopen");
    laptop.connect(&url(&relay)).await.expect("connect");
    for (to_bob, to_alice) in [("a", "b"), ("c", "d")] {
        alice.send_text(b, to_bob).await.expect("send");
        assert_eq!(wait_text(&mut phone, a).await.1, to_bob);
        assert_eq!(wait_text(&mut laptop, a).await.1, to_bob);
        laptop.send_text(a, to_alice).await.expect("send");
        assert_eq!(wait_text(&mut alice, b).await.1, to_alice);
    }

    // Restored from the backup, the laptop cannot read Alice's next message
    // and asks for it again; the phone could, and gets the re-sent copy too.
    laptop.close().await.expect("close");
    std::fs::remove_dir_all(dir("laptop")).expect("remove");
    let mut laptop =
        Client::restore_from_backup(&dir("laptop-backup"), &dir("laptop"), "pw-long-enough")
            .expect("restore");
    laptop.connect(&url(&relay)).await.expect("connect");

    let e = alice.send_text(b, "e").await.expect("send");
    assert_eq!(wait_text(&mut phone, a).await, (e, "e".to_string()));
    wait_for(&mut laptop, |ev| match ev {
        Event::SessionReset { failed, .. } if *failed == e => Some(()),
        _ => None,
    })
    .await;
    wait_for(&mut alice, |ev| match ev {
        Event::Resent { id, .. } if *id == e => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(wait_text(&mut laptop, a).await, (e, "e".to_string()));

    // The phone's next message from Alice is "f": the re-sent "e" in
    // between was recognised as a duplicate (no event, no re-key).
    let f = alice.send_text(b, "f").await.expect("send");
    let mut phone_events = Vec::new();
    let next = wait_for(&mut phone, |ev| {
        phone_events.push(ev.clone());
        match ev {
            Event::Message { id, .. } => Some(*id),
            _ => None,
        }
    })
    .await;
    assert_eq!(next, f);
    assert!(
        !phone_events
            .iter()
            .any(|ev| matches!(ev, Event::SessionReset { .. } | Event::Undecryptable { .. })),
        "{phone_events:?}"
    );
    let count_e = |client: &Client| {
        client
            .history(&a)
            .expect("history")
            .iter()
            .filter(|m| m.body == "e")
            .count()
    };
    assert_eq!(count_e(&phone), 1);
    assert_eq!(count_e(&laptop), 1);
}

#[tokio::test]
async fn a_restored_device_never_reuses_a_sending_chain() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("dir");
    let dir = |name: &str| root.path().join(name);
    let mut alice =
        Client::create_with_params(&dir("alice"), "pw-long-enough", FAST_KDF).expect("create");
    alice.register(&url(&relay)).await.expect("register");
    let mut bob =
        Client::create_with_params(&dir("bob"), "pw-long-enough", FAST_KDF).expect("create");
    bob.register(&url(&relay)).await.expect("register");
    let (a, b) = (alice.account_id(), bob.account_id());
    exchange(&mut alice, &mut bob, "one", "two").await;

    bob.close().await.expect("close");
    copy_dir(&dir("bob"), &dir("bob-backup"));
    let mut bob = Client::open(&dir("bob"), "pw-long-enough").expect("reopen");
    bob.connect(&url(&relay)).await.expect("connect");
    // Bob's sending chain moves on after the backup.
    bob.send_text(a, "three").await.expect("send");
    assert_eq!(wait_text(&mut alice, b).await.1, "three");
    bob.close().await.expect("close");

    // A wrong passphrase or an occupied target is refused before copying.
    assert!(matches!(
        Client::restore_from_backup(&dir("bob-backup"), &dir("bob-2"), "nope"),
        Err(comptoir_client::ClientError::WrongPassphrase)
    ));
    assert!(matches!(
        Client::restore_from_backup(&dir("bob-backup"), &dir("bob"), "pw-long-enough"),
        Err(comptoir_client::ClientError::AlreadyInitialized { .. })
    ));
    std::fs::remove_dir_all(dir("bob")).expect("remove");
    let mut bob = Client::restore_from_backup(&dir("bob-backup"), &dir("bob"), "pw-long-enough")
        .expect("restore");
    bob.connect(&url(&relay)).await.expect("connect");

    // Restored, Bob writes first: a fresh session, not the used chain
    // (which Alice would refuse as a replay or fail to decrypt).
    bob.send_text(a, "four, from the restored copy")
        .await
        .expect("send");
    assert_eq!(
        wait_text(&mut alice, b).await.1,
        "four, from the restored copy"
    );
    alice.send_text(b, "five").await.expect("send");
    assert_eq!(wait_text(&mut bob, a).await.1, "five");
}
