//! Interactive messages over a real relay (issue 13 item 9): a business
//! sends reply buttons and a list in service replies inside the window;
//! the customer picks one and the business receives which, structured. The
//! sender's library refuses a message over the limits (4 buttons, 11
//! rows) and the customer's client a pick it does not offer; a hostile
//! sender's message over the limits and a hostile customer's forged
//! choices are flagged as violations and never offered or shown as
//! choices.

use crate::support;

use comptoir_client::rule_checks::Violation;
use comptoir_client::{Client, ClientError, Event, MessageId};
use comptoir_protocol::AccountId;
use comptoir_protocol::interactive::{Choice, ChoiceError, InteractiveError};
use comptoir_protocol::proto::content::{
    Content, Interactive, InteractiveReply, ListMessage, ListRow, ListSection, ReplyButtons, Text,
    content, interactive, interactive_reply,
};
use comptoir_protocol::proto::wire::ErrorCode;
use support::client::{registered, registered_business, wait_for};
use support::hostile::Hostile;
use support::*;

fn buttons(titles: &[&str]) -> Interactive {
    Interactive {
        body: "Your parcel comes tomorrow. Will you be in?".into(),
        kind: Some(interactive::Kind::Buttons(ReplyButtons {
            titles: titles.iter().map(|t| (*t).to_owned()).collect(),
        })),
    }
}

fn row(id: &str, title: &str) -> ListRow {
    ListRow {
        id: id.into(),
        title: title.into(),
        description: String::new(),
    }
}

fn slots(rows: usize) -> Interactive {
    // `rows - 1` morning rows and one evening row.
    let morning: Vec<ListRow> = (0..rows.saturating_sub(1))
        .map(|i| row(&format!("am-{i}"), &format!("{}:00", 8 + i)))
        .collect();
    let evening = vec![ListRow {
        id: "pm".into(),
        title: "Evening slot".into(),
        description: "18:00 to 21:00".into(),
    }];
    Interactive {
        body: "Pick a delivery slot".into(),
        kind: Some(interactive::Kind::List(ListMessage {
            button: "Slots".into(),
            sections: vec![
                ListSection {
                    title: "Morning".into(),
                    rows: morning,
                },
                ListSection {
                    title: "Evening".into(),
                    rows: evening,
                },
            ],
        })),
    }
}

fn content_of(body: content::Body) -> Content {
    Content {
        message_id: MessageId::generate().0.to_vec(),
        sent_at_ms: 1,
        body: Some(body),
        labels: None,
        franking_key: Vec::new(),
        padding: Vec::new(),
    }
}

fn text(body: &str) -> Content {
    content_of(content::Body::Text(Text { body: body.into() }))
}

/// Collect the violations `client` reports until a message `marker`.
async fn violations_until(client: &mut Client, marker: &str) -> (Vec<Violation>, Vec<Event>) {
    let mut violations = Vec::new();
    let mut others = Vec::new();
    wait_for(client, |e| match e {
        Event::Message { text, .. } if text == marker => Some(()),
        Event::Violation { violation, .. } => {
            violations.push(violation.clone());
            None
        }
        other => {
            others.push(other.clone());
            None
        }
    })
    .await;
    (violations, others)
}

#[tokio::test]
async fn buttons_and_a_list_in_service_replies_come_back_as_structured_choices() {
    let relay = start_relay().await;
    let (customer_dir, shop_dir) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let mut customer = registered(&relay, customer_dir.path(), "customer pass").await;
    let mut shop = registered_business(&relay, shop_dir.path(), "business pass").await;
    let (customer_id, shop_id) = (customer.account_id(), shop.account_id());

    // Over the limits: refused by the sender's library, nothing stored.
    assert!(matches!(
        shop.send_interactive(customer_id, buttons(&["Yes", "No", "Later", "Never"]))
            .await,
        Err(ClientError::InvalidInteractive(
            InteractiveError::TooManyButtons { got: 4 }
        ))
    ));
    assert!(matches!(
        shop.send_interactive(customer_id, slots(11)).await,
        Err(ClientError::InvalidInteractive(
            InteractiveError::TooManyRows { got: 11 }
        ))
    ));
    assert!(shop.history(&customer_id).expect("history").is_empty());
    assert_eq!(shop.outbox_len().expect("outbox"), 0);
    // A service reply before the customer wrote: the window is closed.
    match shop
        .send_interactive(customer_id, buttons(&["Yes", "No"]))
        .await
    {
        Err(ClientError::Relay { code, .. }) => assert_eq!(code, ErrorCode::WindowClosed),
        other => panic!("{other:?}"),
    }

    customer
        .send_text(shop_id, "where is my parcel?")
        .await
        .expect("send");
    wait_for(&mut shop, |e| {
        matches!(e, Event::Message { from, .. } if *from == customer_id).then_some(())
    })
    .await;

    // Reply buttons.
    let offer = buttons(&["Yes", "No", "Later"]);
    let sent = shop
        .send_interactive(customer_id, offer.clone())
        .await
        .expect("send buttons");
    let (got_id, got) = wait_for(&mut customer, |e| match e {
        Event::Interactive {
            from, id, message, ..
        } if *from == shop_id => Some((*id, message.clone())),
        Event::Violation { violation, .. } => panic!("flagged: {violation}"),
        _ => None,
    })
    .await;
    assert_eq!((got_id, &got), (sent, &offer));
    assert_eq!(
        customer
            .history(&shop_id)
            .expect("history")
            .last()
            .map(|m| m.body.clone()),
        Some("Your parcel comes tomorrow. Will you be in?\n[Yes]\n[No]\n[Later]".into())
    );
    // Picks it does not offer, and a message that is not interactive:
    // refused, nothing sent.
    let before = customer.history(&shop_id).expect("history").len();
    assert!(matches!(
        customer.choose(shop_id, sent, Choice::Button(3)).await,
        Err(ClientError::InvalidChoice(ChoiceError::NoSuchButton {
            index: 3
        }))
    ));
    assert!(matches!(
        customer
            .choose(shop_id, sent, Choice::Row("pm".into()))
            .await,
        Err(ClientError::InvalidChoice(ChoiceError::NoSuchRow { .. }))
    ));
    let first = customer.history(&shop_id).expect("history")[0].id;
    assert!(matches!(
        customer.choose(shop_id, first, Choice::Button(0)).await,
        Err(ClientError::NotAnInteractiveMessage(_))
    ));
    assert_eq!(customer.history(&shop_id).expect("history").len(), before);
    assert_eq!(customer.outbox_len().expect("outbox"), 0);

    let picked = customer
        .choose(shop_id, sent, Choice::Button(1))
        .await
        .expect("choose");
    let reply = wait_for(&mut shop, |e| match e {
        Event::InteractiveReply { .. } => Some(e.clone()),
        Event::Violation { violation, .. } => panic!("flagged: {violation}"),
        _ => None,
    })
    .await;
    assert_eq!(
        reply,
        Event::InteractiveReply {
            from: customer_id,
            id: picked,
            reply_to: sent,
            choice: Choice::Button(1),
            title: "No".into(),
        }
    );

    // A list in sections.
    let list = slots(4);
    let sent = shop
        .send_interactive(customer_id, list.clone())
        .await
        .expect("send list");
    let got = wait_for(&mut customer, |e| match e {
        Event::Interactive { id, message, .. } if *id == sent => Some(message.clone()),
        Event::Violation { violation, .. } => panic!("flagged: {violation}"),
        _ => None,
    })
    .await;
    assert_eq!(got, list);
    assert_eq!(
        customer
            .interactive_of_message(&shop_id, &sent)
            .expect("kept"),
        Some(list)
    );
    assert!(matches!(
        customer
            .choose(shop_id, sent, Choice::Row("noon".into()))
            .await,
        Err(ClientError::InvalidChoice(ChoiceError::NoSuchRow { .. }))
    ));
    let picked = customer
        .choose(shop_id, sent, Choice::Row("pm".into()))
        .await
        .expect("choose a row");
    let reply = wait_for(&mut shop, |e| match e {
        Event::InteractiveReply { .. } => Some(e.clone()),
        Event::Violation { violation, .. } => panic!("flagged: {violation}"),
        _ => None,
    })
    .await;
    assert_eq!(
        reply,
        Event::InteractiveReply {
            from: customer_id,
            id: picked,
            reply_to: sent,
            choice: Choice::Row("pm".into()),
            title: "Evening slot".into(),
        }
    );
    let shown: Vec<String> = shop
        .history(&customer_id)
        .expect("history")
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(shown[shown.len() - 3..][0], "No");
    assert_eq!(shown.last().map(String::as_str), Some("Evening slot"));
    assert!(shop.evidence().expect("evidence").evidence.is_empty());
    assert!(customer.evidence().expect("evidence").evidence.is_empty());
}

#[tokio::test]
async fn a_message_over_the_limits_offers_no_choice_and_forged_choices_are_flagged() {
    let relay = start_relay().await;
    let (customer_dir, shop_dir) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    // A hostile sender's messages over the limits reach an honest customer.
    let mut customer = registered(&relay, customer_dir.path(), "customer pass").await;
    let mut mallory = Hostile::register(relay.addr).await;
    let (customer_id, mallory_id) = (customer.account_id(), mallory.id());
    let device = customer.device_id();
    mallory.start_session(customer_id, device).await;
    let four = content_of(content::Body::Interactive(buttons(&["1", "2", "3", "4"])));
    let eleven = content_of(content::Body::Interactive(slots(11)));
    let fine = content_of(content::Body::Interactive(slots(3)));
    for content in [&four, &eleven, &fine, &text("end")] {
        mallory.send_content(customer_id, device, content).await;
    }
    let (violations, events) = violations_until(&mut customer, "end").await;
    assert_eq!(
        violations,
        vec![
            Violation::InteractiveInvalid {
                reason: InteractiveError::TooManyButtons { got: 4 }
            },
            Violation::InteractiveInvalid {
                reason: InteractiveError::TooManyRows { got: 11 }
            },
        ]
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Interactive { .. }))
            .count(),
        1
    );
    let id_of = |c: &Content| MessageId::from_bytes(&c.message_id).expect("id");
    for bad in [&four, &eleven] {
        assert!(matches!(
            customer
                .choose(mallory_id, id_of(bad), Choice::Button(0))
                .await,
            Err(ClientError::NotAnInteractiveMessage(_))
        ));
    }
    assert!(matches!(
        customer
            .choose(mallory_id, id_of(&fine), Choice::Row("am-9".into()))
            .await,
        Err(ClientError::InvalidChoice(ChoiceError::NoSuchRow { .. }))
    ));
    assert_eq!(customer.outbox_len().expect("outbox"), 0);
    assert_eq!(customer.evidence().expect("evidence").evidence.len(), 2);

    // A hostile customer forges choices in an honest business's message.
    let mut shop = registered_business(&relay, shop_dir.path(), "business pass").await;
    let shop_id = shop.account_id();
    let mut eve = Hostile::register(relay.addr).await;
    let eve_id: AccountId = eve.id();
    eve.start_session(shop_id, shop.device_id()).await;
    eve.send_content(shop_id, shop.device_id(), &text("hello"))
        .await;
    wait_for(&mut shop, |e| {
        matches!(e, Event::Message { from, .. } if *from == eve_id).then_some(())
    })
    .await;
    let sent = shop
        .send_interactive(eve_id, buttons(&["Yes", "No"]))
        .await
        .expect("send");
    let reply = |message: MessageId, choice, title: &str| {
        content_of(content::Body::InteractiveReply(InteractiveReply {
            message_id: message.0.to_vec(),
            choice,
            title: title.into(),
        }))
    };
    let forged = [
        reply(sent, Some(interactive_reply::Choice::ButtonIndex(0)), "No"),
        reply(sent, Some(interactive_reply::Choice::ButtonIndex(5)), "Yes"),
        reply(
            sent,
            Some(interactive_reply::Choice::RowId("pm".into())),
            "Yes",
        ),
        reply(sent, None, "Yes"),
        reply(
            MessageId::generate(),
            Some(interactive_reply::Choice::ButtonIndex(0)),
            "Yes",
        ),
        reply(sent, Some(interactive_reply::Choice::ButtonIndex(0)), "Yes"),
        text("done"),
    ];
    for content in &forged {
        eve.send_content(shop_id, shop.device_id(), content).await;
    }
    let (violations, events) = violations_until(&mut shop, "done").await;
    assert_eq!(
        violations,
        vec![
            Violation::InteractiveReplyInvalid {
                reason: ChoiceError::TitleMismatch
            },
            Violation::InteractiveReplyInvalid {
                reason: ChoiceError::NoSuchButton { index: 5 }
            },
            Violation::InteractiveReplyInvalid {
                reason: ChoiceError::NoSuchRow { id: "pm".into() }
            },
            Violation::InteractiveReplyInvalid {
                reason: ChoiceError::NoChoice
            },
            Violation::InteractiveReplyToUnknownMessage,
        ]
    );
    let replies: Vec<_> = events
        .into_iter()
        .filter_map(|e| match e {
            Event::InteractiveReply { choice, title, .. } => Some((choice, title)),
            _ => None,
        })
        .collect();
    assert_eq!(replies, vec![(Choice::Button(0), "Yes".to_string())]);
    let history: Vec<String> = shop
        .history(&eve_id)
        .expect("history")
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(history[2..], ["Yes".to_string(), "done".to_string()]);
    assert_eq!(shop.evidence().expect("evidence").evidence.len(), 5);
}

/// A business with two devices: the sync copy of an interactive message
/// carries the message itself, so the customer's choice checks out on the
/// device that did not send it too.
#[tokio::test]
async fn a_choice_checks_out_on_the_business_device_that_did_not_send() {
    let relay = start_relay().await;
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let mut customer = registered(&relay, dirs[0].path(), "customer pass").await;
    let mut shop = registered_business(&relay, dirs[1].path(), "business pass").await;
    let mut counter = support::client::linked(&relay, &mut shop, dirs[2].path()).await;
    let (customer_id, shop_id) = (customer.account_id(), shop.account_id());
    customer.send_text(shop_id, "hello").await.expect("send");
    for device in [&mut shop, &mut counter] {
        wait_for(device, |e| {
            matches!(e, Event::Message { from, .. } if *from == customer_id).then_some(())
        })
        .await;
    }
    let sent = shop
        .send_interactive(customer_id, slots(3))
        .await
        .expect("send");
    let copy = wait_for(&mut counter, |e| match e {
        Event::SentElsewhere { id, text, .. } if *id == sent => Some(text.clone()),
        _ => None,
    })
    .await;
    assert!(
        copy.starts_with("Pick a delivery slot\n[Slots]\nMorning:"),
        "{copy}"
    );
    wait_for(&mut customer, |e| {
        matches!(e, Event::Interactive { id, .. } if *id == sent).then_some(())
    })
    .await;
    let picked = customer
        .choose(shop_id, sent, Choice::Row("am-1".into()))
        .await
        .expect("choose");
    for device in [&mut shop, &mut counter] {
        let got = wait_for(device, |e| match e {
            Event::InteractiveReply { .. } => Some(e.clone()),
            Event::Violation { violation, .. } => panic!("flagged: {violation}"),
            _ => None,
        })
        .await;
        assert_eq!(
            got,
            Event::InteractiveReply {
                from: customer_id,
                id: picked,
                reply_to: sent,
                choice: Choice::Row("am-1".into()),
                title: "9:00".into(),
            }
        );
        assert!(device.evidence().expect("evidence").evidence.is_empty());
    }
}
