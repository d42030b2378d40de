//! A hostile contact drives a real `Client` as its victim (see
//! `support::hostile`): whatever it sends, the victim keeps working and
//! changes only what the message may change.

use crate::support;

use comptoir_client::{Client, Event, MessageId, Status};
use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::{
    ContactsRequest, ContactsSync, Content, ReadReceipt, SyncedContact, Text, content,
};
use support::client::{registered, wait_for};
use support::hostile::Hostile;

fn text(id: [u8; 16], body: &str) -> Content {
    Content {
        message_id: id.to_vec(),
        sent_at_ms: 1,
        body: Some(content::Body::Text(Text {
            body: body.to_owned(),
        })),
        padding: Vec::new(),
        labels: None,
        franking_key: Vec::new(),
    }
}

fn receipt(ids: &[[u8; 16]]) -> Content {
    let mut id = [0u8; 16];
    rand::fill(&mut id);
    Content {
        message_id: id.to_vec(),
        sent_at_ms: 2,
        body: Some(content::Body::ReadReceipt(ReadReceipt {
            message_ids: ids.iter().map(|i| i.to_vec()).collect(),
            read_at_ms: 2,
        })),
        padding: Vec::new(),
        labels: None,
        franking_key: Vec::new(),
    }
}

fn status(victim: &Client, peer: AccountId, id: [u8; 16]) -> Status {
    victim
        .message(&peer, &MessageId(id))
        .expect("read the history")
        .expect("the message is stored")
        .status
}

#[tokio::test]
async fn a_read_receipt_applies_only_to_messages_this_device_sent() {
    let relay = support::start_relay().await;
    let root = tempfile::tempdir().expect("dir");
    let mut victim = registered(&relay, &root.path().join("v"), "pw-long-enough").await;
    let mut mallory = Hostile::register(relay.addr).await;
    let (v, m) = (victim.account_id(), mallory.id());
    mallory.start_session(v, victim.device_id()).await;

    // Mallory writes; the victim stores it unread.
    let mut theirs = [0u8; 16];
    rand::fill(&mut theirs);
    mallory
        .send_content(v, victim.device_id(), &text(theirs, "hello"))
        .await;
    wait_for(&mut victim, |e| match e {
        Event::Message { from, .. } if *from == m => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(status(&victim, m, theirs), Status::Delivered);
    let ours = victim.send_text(m, "hi").await.expect("send");
    mallory.drain_envelopes(1).await;

    // A receipt naming Mallory's own message (and the victim's): only the
    // victim's outgoing message becomes read.
    mallory
        .send_content(v, victim.device_id(), &receipt(&[theirs, ours.0]))
        .await;
    let read = wait_for(&mut victim, |e| match e {
        Event::Read { by, ids } if *by == m => Some(ids.clone()),
        _ => None,
    })
    .await;
    assert_eq!(read, vec![ours]);
    assert_eq!(status(&victim, m, ours.0), Status::Read);
    assert_eq!(
        status(&victim, m, theirs),
        Status::Delivered,
        "a peer cannot mark its own message read on the victim's side"
    );

    // A receipt naming only Mallory's message changes nothing and says nothing.
    mallory
        .send_content(v, victim.device_id(), &receipt(&[theirs]))
        .await;
    let mut marker = [0u8; 16];
    rand::fill(&mut marker);
    mallory
        .send_content(v, victim.device_id(), &text(marker, "marker"))
        .await;
    let mut seen = Vec::new();
    wait_for(&mut victim, |e| {
        seen.push(e.clone());
        matches!(e, Event::Message { text, .. } if text == "marker").then_some(())
    })
    .await;
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Read { .. })),
        "{seen:?}"
    );
    assert_eq!(status(&victim, m, theirs), Status::Delivered);
}

/// Issue 18 item 11: the address-book messages count only between one
/// account's own devices. Another account's `ContactsSync` adds no name and
/// its `ContactsRequest` is not answered; both are reported as ignored.
#[tokio::test]
async fn another_account_can_neither_fill_nor_ask_for_the_address_book() {
    let relay = support::start_relay().await;
    let root = tempfile::tempdir().expect("dir");
    let mut victim = registered(&relay, &root.path().join("v"), "pw-long-enough").await;
    let mut mallory = Hostile::register(relay.addr).await;
    let (v, m) = (victim.account_id(), mallory.id());
    let bob = AccountId::from_bytes(&[7; 16]).expect("id");
    victim.add_contact("bob", bob).expect("add bob");
    mallory.start_session(v, victim.device_id()).await;

    let control = |body| {
        let mut id = [0u8; 16];
        rand::fill(&mut id);
        Content {
            message_id: id.to_vec(),
            sent_at_ms: 3,
            body: Some(body),
            padding: Vec::new(),
            labels: None,
            franking_key: Vec::new(),
        }
    };
    let forged = ContactsSync {
        contacts: vec![
            SyncedContact {
                name: "my bank".into(),
                account: m.to_vec(),
            },
            SyncedContact {
                name: "bob".into(),
                account: m.to_vec(),
            },
        ],
    };
    mallory
        .send_content(
            v,
            victim.device_id(),
            &control(content::Body::ContactsSync(forged)),
        )
        .await;
    mallory
        .send_content(
            v,
            victim.device_id(),
            &control(content::Body::ContactsRequest(ContactsRequest {})),
        )
        .await;
    let mut marker = [0u8; 16];
    rand::fill(&mut marker);
    mallory
        .send_content(v, victim.device_id(), &text(marker, "marker"))
        .await;
    let mut seen = Vec::new();
    wait_for(&mut victim, |e| {
        seen.push(e.clone());
        matches!(e, Event::Message { text, .. } if text == "marker").then_some(())
    })
    .await;
    let ignored = seen
        .iter()
        .filter(|e| matches!(e, Event::Warning(w) if w.contains("ignored")))
        .count();
    assert_eq!(ignored, 2, "{seen:?}");
    assert!(
        !seen.iter().any(|e| matches!(
            e,
            Event::ContactsSynced { .. } | Event::ContactsShared { .. }
        )),
        "{seen:?}"
    );
    let book: Vec<_> = victim
        .contacts()
        .expect("contacts")
        .into_iter()
        .map(|c| (c.name, c.account))
        .collect();
    assert_eq!(book, vec![("bob".to_string(), bob)]);
}
