//! Signed-prekey rotation does not strand a contact's first message
//! (issue 10 item 4): a contact fetches the owner's bundle (with the signed
//! prekey of the moment) and writes while the owner is offline; the owner
//! then rotates its signed prekey several times before reading its mail.
//! The first message still decrypts, because a signed prekey is kept for a
//! grace period after the relay confirmed its successor (the pruning after
//! that period is covered by the unit test in `session_store`).

use crate::support;

use comptoir_client::Event;
use support::client::{registered, url, wait_for};
use support::start_relay;

#[tokio::test]
async fn a_first_message_over_an_old_signed_prekey_decrypts_after_rotations() {
    let relay = start_relay().await;
    let (dir_o, dir_c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut owner = registered(&relay, dir_o.path(), "pw-long-enough").await;
    let mut contact = registered(&relay, dir_c.path(), "pw-long-enough").await;
    let (o, c) = (owner.account_id(), contact.account_id());

    owner.close_connection().await;
    // The contact fetches the bundle (the signed prekey of now) and writes.
    contact.send_text(o, "first contact").await.expect("send");

    owner.connect(&url(&relay)).await.expect("owner back");
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(owner.rotate_signed_prekey().await.expect("rotate"));
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "new ids each time: {ids:?}"
    );

    let text = wait_for(&mut owner, |e| match e {
        Event::Message { from, text, .. } if *from == c => Some(text.clone()),
        Event::Undecryptable { reason, .. } => panic!("undecryptable: {reason}"),
        _ => None,
    })
    .await;
    assert_eq!(text, "first contact");
    assert_eq!(owner.quarantine_len().unwrap(), 0);

    // A new contact meets the newest signed prekey.
    let dir_n = tempfile::tempdir().unwrap();
    let mut newcomer = registered(&relay, dir_n.path(), "pw-long-enough").await;
    let n = newcomer.account_id();
    newcomer.send_text(o, "hello").await.expect("send");
    let text = wait_for(&mut owner, |e| match e {
        Event::Message { from, text, .. } if *from == n => Some(text.clone()),
        Event::Undecryptable { reason, .. } => panic!("undecryptable: {reason}"),
        _ => None,
    })
    .await;
    assert_eq!(text, "hello");
}
