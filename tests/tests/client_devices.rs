//! A second device linked to an account over a real relay: it sees both
//! sides of the conversation, and once removed it stops receiving.

use crate::support;

use std::sync::Arc;

use comptoir_client::client::PREKEY_BATCH;
use comptoir_client::{Client, ClientError, Event};
use comptoir_protocol::AccountId;
use comptoir_relay::{Keys, Lifecycle, Metrics, SledStore};
use support::client::{FAST_KDF, linked, registered, url, wait_for, wait_message};
use support::{TIMEOUT, start_relay};

/// Wait for a text message from `from`; its text.
async fn wait_text(client: &mut Client, from: AccountId) -> String {
    wait_message(client, from).await.1
}

async fn wait_copy(client: &mut Client, to: AccountId) -> String {
    wait_for(client, |e| match e {
        Event::SentElsewhere { to: t, text, .. } if *t == to => Some(text.clone()),
        _ => None,
    })
    .await
}

fn conversation(client: &Client, peer: &AccountId) -> Vec<(bool, String)> {
    client
        .history(peer)
        .expect("history")
        .into_iter()
        .map(|m| (m.outgoing, m.body))
        .collect()
}

#[tokio::test]
async fn a_linked_device_sees_both_sides_and_a_removed_one_stops_receiving() {
    let relay = start_relay().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut phone = registered(&relay, dirs[0].path(), "pw-long-enough").await;
    let mut bob = registered(&relay, dirs[1].path(), "pw-long-enough").await;
    let (alice, b) = (phone.account_id(), bob.account_id());

    // Bob and Alice talk before the second device exists.
    phone.send_text(b, "before the laptop").await.expect("send");
    assert_eq!(wait_text(&mut bob, alice).await, "before the laptop");

    // Link: the laptop shows a code, the phone approves, the laptop finishes.
    let mut laptop =
        Client::create_unlinked(dirs[2].path(), "pw-long-enough", FAST_KDF).expect("create laptop");
    assert!(matches!(
        laptop.connect(&url(&relay)).await,
        Err(ClientError::NotLinked)
    ));
    let code = laptop.link_code().expect("link code");
    assert!(matches!(
        phone.add_device("comptoir-link:nonsense").await,
        Err(ClientError::BadLinkCode(_))
    ));
    let approval = phone.add_device(&code).await.expect("approve");
    // The approval names the account key: one that does not match what the
    // relay presents is refused, and the laptop stays unlinked.
    let (prefix, _key) = approval.rsplit_once(':').expect("approval format");
    let other_key = comptoir_protocol::AccountKeyPair::generate(&mut rand::rng()).public();
    let forged = hex::encode(other_key.to_bytes());
    assert!(matches!(
        laptop
            .finish_link(&url(&relay), &format!("{prefix}:{forged}"))
            .await,
        Err(ClientError::BadLinkCode(_))
    ));
    assert!(laptop.is_unlinked());
    laptop
        .finish_link(&url(&relay), &approval)
        .await
        .expect("finish link");
    assert_eq!(laptop.account_id(), alice);
    assert_eq!(laptop.device_id(), 2);
    assert_eq!(phone.own_devices().expect("list").device_ids(), vec![1, 2]);

    // Bob's client learns the new device from the relay's refusal of its
    // stale list and encrypts for both.
    bob.send_text(alice, "hello both").await.expect("send");
    assert_eq!(wait_text(&mut phone, b).await, "hello both");
    assert_eq!(wait_text(&mut laptop, b).await, "hello both");

    // What one device reads, the other stops counting as unread.
    assert_eq!(phone.mark_read(b).await.expect("mark read"), 1);
    let synced = wait_for(&mut laptop, |e| match e {
        Event::ReadElsewhere { peer, count } if *peer == b => Some(*count),
        _ => None,
    })
    .await;
    assert_eq!(synced, 1);
    assert!(
        laptop
            .history(&b)
            .expect("history")
            .iter()
            .all(|m| m.status == comptoir_client::Status::Read)
    );

    // What one device sends, the other sees as sent.
    phone.send_text(b, "from the phone").await.expect("send");
    assert_eq!(wait_text(&mut bob, alice).await, "from the phone");
    assert_eq!(wait_copy(&mut laptop, b).await, "from the phone");
    laptop.send_text(b, "from the laptop").await.expect("send");
    assert_eq!(wait_text(&mut bob, alice).await, "from the laptop");
    assert_eq!(wait_copy(&mut phone, b).await, "from the laptop");

    let expected = vec![
        (false, "hello both".to_string()),
        (true, "from the phone".to_string()),
        (true, "from the laptop".to_string()),
    ];
    assert_eq!(conversation(&laptop, &b), expected);
    assert_eq!(conversation(&phone, &b)[1..], expected[..]);
    // One safety number per pair of accounts, whichever device shows it.
    assert_eq!(
        laptop.safety_number(&b).expect("laptop"),
        phone.safety_number(&b).expect("phone")
    );
    assert_eq!(
        bob.safety_number(&alice).expect("bob"),
        phone.safety_number(&b).expect("phone")
    );

    // Only the first device holds the account key.
    assert!(matches!(
        laptop.remove_device(1).await,
        Err(ClientError::NotPrimaryDevice)
    ));

    // Remove the laptop: the relay disconnects it and Bob's next message
    // reaches the phone only.
    phone.remove_device(2).await.expect("remove");
    let closed = loop {
        match laptop.next_event(TIMEOUT).await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(closed, Err(ClientError::ConnectionClosed(_))),
        "{closed:?}"
    );
    bob.send_text(alice, "phone only").await.expect("send");
    assert_eq!(wait_text(&mut phone, b).await, "phone only");
    assert!(matches!(
        laptop.connect(&url(&relay)).await,
        Err(ClientError::DeviceRemoved { device: 2 })
    ));
    assert!(
        conversation(&laptop, &b)
            .iter()
            .all(|(_, text)| text != "phone only")
    );
}

#[tokio::test]
async fn a_new_device_costs_the_other_devices_no_one_time_prekeys() {
    let mut relay = start_relay().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut alice = registered(&relay, dirs[0].path(), "pw-long-enough").await;
    let mut phone = registered(&relay, dirs[1].path(), "pw-long-enough").await;
    let (a, b) = (alice.account_id(), phone.account_id());

    // Alice's first message fetches the phone's bundle: one key used.
    alice.send_text(b, "one").await.expect("send");
    assert_eq!(wait_text(&mut phone, a).await, "one");

    let mut laptop = linked(&relay, &mut phone, dirs[2].path()).await;

    // Her next message learns of the laptop and needs a session with it
    // only: the phone's session is kept, and so are its other keys.
    alice.send_text(b, "two").await.expect("send");
    assert_eq!(wait_text(&mut phone, a).await, "two");
    assert_eq!(wait_text(&mut laptop, a).await, "two");

    for client in [alice, phone, laptop] {
        client.close().await.expect("close");
    }
    relay.stop().await;
    let store = SledStore::open(&relay.data_dir, 1 << 20, Arc::new(Metrics::default()))
        .expect("open relay storage");
    assert_eq!(
        store.one_time_prekey_count(b, 1).await.expect("count"),
        PREKEY_BATCH - 2,
        "the phone gave one key for Alice's first session and one for the laptop's own \
         session with it (the laptop asks its account's devices for the address book); \
         Alice's second message took none"
    );
    assert_eq!(
        store.one_time_prekey_count(b, 2).await.expect("count"),
        PREKEY_BATCH - 1,
        "the laptop gave one key, for Alice's session with it"
    );
    store.close().await.expect("close");
}

/// Issue 18 item 3: after a contact removes a device, this device's read
/// receipt is refused for covering the old device list; it adopts the
/// list the refusal carries and sends it again, so the contact still
/// learns its messages were read.
#[tokio::test]
async fn read_receipts_still_arrive_after_a_contact_removes_a_device() {
    let relay = start_relay().await;
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let mut alice = registered(&relay, dirs[0].path(), "alice pass").await;
    let mut bob = registered(&relay, dirs[1].path(), "bob pass").await;
    let mut laptop = linked(&relay, &mut bob, dirs[2].path()).await;
    let (a, b) = (alice.account_id(), bob.account_id());
    // Alice writes to both of Bob's devices; Bob answers; Alice learns both.
    alice.send_text(b, "hello").await.expect("send");
    assert_eq!(wait_text(&mut bob, a).await, "hello");
    let _ = wait_text(&mut laptop, a).await;
    bob.send_text(a, "hi alice").await.expect("reply");
    assert_eq!(wait_text(&mut alice, b).await, "hi alice");
    // Bob removes the laptop; Alice still has the two-device list.
    bob.remove_device(laptop.device_id()).await.expect("remove");
    drop(laptop);
    // Alice reads Bob's message: the receipt goes through regardless.
    assert_eq!(alice.mark_read(b).await.expect("mark read"), 1);
    let read = wait_for(&mut bob, |e| match e {
        Event::Read { by, ids } if *by == a => Some(ids.clone()),
        _ => None,
    })
    .await;
    assert_eq!(read.len(), 1);
}

/// Issue 18 item 3: a read receipt and its copy to this account's other
/// devices go through the outbox like messages. Read while offline, both
/// wait there (across a restart) and go at the next connect: the contact
/// learns its message was read and the other device stops counting it.
#[tokio::test]
async fn read_receipts_and_their_copies_wait_in_the_outbox_while_offline() {
    let relay = start_relay().await;
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let mut alice = registered(&relay, dirs[0].path(), "alice pass").await;
    let mut bob = registered(&relay, dirs[1].path(), "bob pass").await;
    let mut laptop = linked(&relay, &mut bob, dirs[2].path()).await;
    let (a, b) = (alice.account_id(), bob.account_id());
    let sent = alice.send_text(b, "hello").await.expect("send");
    assert_eq!(wait_text(&mut bob, a).await, "hello");
    assert_eq!(wait_text(&mut laptop, a).await, "hello");
    // Bob answers, so Alice is no message request to him.
    bob.send_text(a, "hi alice").await.expect("reply");
    assert_eq!(wait_text(&mut alice, b).await, "hi alice");

    // Bob reads it with the relay out of reach: marked read here, queued.
    bob.disconnect().await;
    assert_eq!(bob.mark_read(a).await.expect("read offline"), 1);
    let status = |c: &Client| {
        c.message(&a, &sent)
            .expect("history")
            .map(|m| m.status)
            .expect("stored")
    };
    assert_eq!(status(&bob), comptoir_client::Status::Read);
    bob.close().await.expect("close");

    // Next start: the receipt and the copy go out.
    let mut bob = Client::open(dirs[1].path(), "bob pass").expect("reopen");
    bob.connect(&url(&relay)).await.expect("connect");
    let read = wait_for(&mut alice, |e| match e {
        Event::Read { by, ids } if *by == b => Some(ids.clone()),
        _ => None,
    })
    .await;
    assert_eq!(read, vec![sent]);
    let count = wait_for(&mut laptop, |e| match e {
        Event::ReadElsewhere { peer, count } if *peer == a => Some(*count),
        _ => None,
    })
    .await;
    assert_eq!(count, 1);
    assert_eq!(status(&laptop), comptoir_client::Status::Read);
    // Sent once: nothing waits any more, and a further connect sends nothing.
    assert_eq!(bob.mark_read(a).await.expect("nothing new"), 0);
}

/// Issue 18 item 11: a linked device starts with the account's contacts,
/// sent end-to-end encrypted by the first device when it hears the new
/// device ask; and a copy of a message sent from another device carries
/// the time it was sent, not the time it arrived.
#[tokio::test]
async fn a_linked_device_starts_with_the_contacts_and_copies_carry_their_send_time() {
    let relay = start_relay().await;
    let dirs: Vec<_> = (0..4)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let mut phone = registered(&relay, dirs[0].path(), "phone pass").await;
    let bob = registered(&relay, dirs[1].path(), "bob pass").await;
    let carol = registered(&relay, dirs[2].path(), "carol pass").await;
    let (b, c) = (bob.account_id(), carol.account_id());
    phone.add_contact("bob", b).expect("add bob");
    phone
        .add_contact("carol the plumber", c)
        .expect("add carol");

    let mut laptop = linked(&relay, &mut phone, dirs[3].path()).await;
    assert!(laptop.contacts().expect("contacts").is_empty());
    // The phone hears the laptop's request and answers it.
    let shared = wait_for(&mut phone, |e| match e {
        Event::ContactsShared { count } => Some(*count),
        _ => None,
    })
    .await;
    assert_eq!(shared, 2);
    let added = wait_for(&mut laptop, |e| match e {
        Event::ContactsSynced { added, .. } => Some(*added),
        _ => None,
    })
    .await;
    assert_eq!(added, 2);
    let mut names: Vec<_> = laptop
        .contacts()
        .expect("contacts")
        .into_iter()
        .map(|contact| (contact.name, contact.account))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![("bob".to_string(), b), ("carol the plumber".to_string(), c)]
    );
    assert_eq!(laptop.resolve("bob").expect("resolve"), b);

    // A message sent while the laptop is away: its copy shows the time it
    // was sent.
    laptop.disconnect().await;
    let id = phone.send_text(b, "sent while away").await.expect("send");
    let sent_at = phone
        .message(&b, &id)
        .expect("history")
        .expect("stored")
        .sent_at_ms;
    laptop.connect(&url(&relay)).await.expect("reconnect");
    let copied_at = wait_for(&mut laptop, |e| match e {
        Event::SentElsewhere {
            id: copied,
            sent_at_ms,
            ..
        } if *copied == id => Some(*sent_at_ms),
        _ => None,
    })
    .await;
    assert_eq!(copied_at, sent_at);
    drop((bob, carol));
}
