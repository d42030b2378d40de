//! Approved templates through the client library, over a real relay: the
//! business submits a template, the operator approves it through the admin
//! API, the business sends an instance with `send_template`, the customer's
//! client checks it against the operator-signed approval (pinned operator
//! key) and shows it rendered with its buttons, and the customer's quick
//! reply reaches the business as a checked choice. A tampered instance, a
//! revoked template and an approval under another operator key than the
//! pinned one are flagged by the customer's client and kept as evidence.

use crate::support;

use std::time::Duration;

use comptoir_client::rule_checks::Violation;
use comptoir_client::{Client, ClientError, Event, MessageId};
use comptoir_protocol::proto::content::{
    ButtonReply, Content, Money, TemplateInstance, TemplateParameter, Text, content,
    template_parameter,
};
use comptoir_protocol::proto::wire::{
    self, Category, TemplateStatus, client_frame, server_frame::Body,
};
use comptoir_protocol::session::SessionRecord;
use comptoir_protocol::template::{
    Button, InstanceError, Placeholder, PlaceholderKind, ReplyError, Template, TemplateCategory,
    TemplateError,
};
use comptoir_protocol::{
    AccountId, ConsentCategories, IdentityKey, InMemoryPreKeyStore, OperatorKeyPair,
    VerifiedBundle, labels,
};
use prost::Message;
use support::business::Business;
use support::client::{registered, registered_business, url, wait_for};
use support::*;

const MONTH: Duration = Duration::from_secs(30 * 24 * 60 * 60);

fn boarding_pass(business: AccountId) -> Template {
    let placeholder = |name: &str, kind| Placeholder {
        name: name.into(),
        kind,
    };
    Template {
        business,
        name: "boarding_pass".into(),
        language: "en_GB".into(),
        category: TemplateCategory::Utility,
        header: Some("Flight {{flight}}".into()),
        body: "Gate {{gate}} closes at {{closes}}. Paid: {{fare}}.".into(),
        footer: Some("Acme Air".into()),
        placeholders: vec![
            placeholder("flight", PlaceholderKind::Text),
            placeholder("gate", PlaceholderKind::Number),
            placeholder("closes", PlaceholderKind::DateTime),
            placeholder("fare", PlaceholderKind::Money),
        ],
        buttons: vec![
            Button::QuickReply {
                text: "Change seat".into(),
            },
            Button::QuickReply {
                text: "Cancel".into(),
            },
            Button::Link {
                text: "Check in".into(),
                url: "https://acme.example/checkin".into(),
            },
        ],
    }
}

fn parameter(name: &str, value: template_parameter::Value) -> TemplateParameter {
    TemplateParameter {
        name: name.into(),
        value: Some(value),
    }
}

fn boarding_values(gate: template_parameter::Value) -> Vec<TemplateParameter> {
    use template_parameter::Value;
    vec![
        parameter("flight", Value::Text("AC 123".into())),
        parameter("gate", gate),
        // 2026-12-01T08:40Z
        parameter("closes", Value::DateTimeMs(1_796_114_400_000)),
        parameter(
            "fare",
            Value::Money(Money {
                amount_minor: 12_950,
                currency: "GBP".into(),
            }),
        ),
    ]
}

/// Wait for the next message from `from` that is shown (a checked template
/// or a message); return the violations reported for it before `next` (a
/// later honest text the caller sent to close the check).
async fn violations_of(client: &mut Client, next: &str) -> (Option<Event>, Vec<Violation>) {
    let mut shown = None;
    let mut violations = Vec::new();
    wait_for(client, |e| match e {
        Event::Message { text, .. } if text == next => Some(()),
        Event::Message { .. } | Event::Template { .. } if shown.is_none() => {
            shown = Some(e.clone());
            None
        }
        Event::Violation { violation, .. } => {
            violations.push(violation.clone());
            None
        }
        _ => None,
    })
    .await;
    (shown, violations)
}

#[tokio::test]
async fn a_business_sends_an_approved_template_and_gets_the_quick_reply() {
    let relay = start_relay().await;
    let (customer_dir, business_dir) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let mut customer = registered(&relay, customer_dir.path(), "customer pass").await;
    let mut shop = registered_business(&relay, business_dir.path(), "business pass").await;
    let (customer_id, shop_id) = (customer.account_id(), shop.account_id());
    customer
        .grant_consent(shop_id, ConsentCategories::UTILITY, MONTH)
        .await
        .expect("consent");

    // An invalid template is refused here, before anything is sent.
    let mut broken = boarding_pass(shop_id);
    broken.body = String::new();
    assert!(matches!(
        shop.submit_template(&broken).await,
        Err(ClientError::InvalidTemplate(TemplateError::Empty { .. }))
    ));
    assert!(shop.own_templates().await.expect("list").is_empty());

    let template = boarding_pass(shop_id);
    let (id, status) = shop.submit_template(&template).await.expect("submit");
    assert_eq!(id, template.template_id().expect("id"));
    assert_eq!(status, TemplateStatus::Pending);

    // Not approved yet: nothing is sent or queued.
    let values = boarding_values(template_parameter::Value::Number(12));
    assert!(matches!(
        shop.send_template(customer_id, &id, values.clone()).await,
        Err(ClientError::TemplateNotApproved(_))
    ));
    assert_eq!(shop.outbox_len().expect("outbox"), 0);
    assert!(shop.history(&customer_id).expect("history").is_empty());

    // A second template the operator rejects, with a reason the business
    // reads back.
    let mut other = boarding_pass(shop_id);
    other.name = "boarding_pass_v2".into();
    let (other_id, _) = shop.submit_template(&other).await.expect("submit");
    let admin = relay.admin_client();
    admin
        .reject_template(&other_id.to_hex(), "say which airport")
        .await
        .expect("reject");
    admin.approve_template(&id.to_hex()).await.expect("approve");
    let mut own = shop.own_templates().await.expect("list");
    own.sort_by_key(|t| t.template.name.clone());
    assert_eq!(own.len(), 2);
    assert_eq!(
        (own[0].template_id, own[0].status),
        (id, TemplateStatus::Approved)
    );
    assert_eq!(
        (own[1].status, own[1].reason.as_str()),
        (TemplateStatus::Rejected, "say which airport")
    );
    // Anyone else sees only the approved one.
    let seen = customer.templates_of(shop_id).await.expect("list");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].template, template);

    // Values that do not fit the template: refused here, nothing sent.
    let wrong = boarding_values(template_parameter::Value::Text("12".into()));
    assert!(matches!(
        shop.send_template(customer_id, &id, wrong).await,
        Err(ClientError::InvalidInstance(
            InstanceError::WrongType { .. }
        ))
    ));
    assert!(shop.history(&customer_id).expect("history").is_empty());

    let sent = shop
        .send_template(customer_id, &id, values)
        .await
        .expect("send the template");

    // The customer sees it rendered, with its buttons; nothing is flagged.
    let (message_id, rendered) = wait_for(&mut customer, |e| match e {
        Event::Template {
            from,
            id: message_id,
            template_id,
            rendered,
            ..
        } if *from == shop_id && *template_id == id => Some((*message_id, rendered.clone())),
        Event::Violation { violation, .. } => panic!("flagged: {violation}"),
        _ => None,
    })
    .await;
    assert_eq!(message_id, sent);
    assert_eq!(rendered.header.as_deref(), Some("Flight AC 123"));
    assert_eq!(
        rendered.body,
        "Gate 12 closes at 2026-12-01T08:40Z. Paid: 129.50 GBP."
    );
    assert_eq!(rendered.footer.as_deref(), Some("Acme Air"));
    assert_eq!(rendered.buttons, template.buttons);
    let history = customer.history(&shop_id).expect("history");
    assert_eq!(
        history.last().map(|m| m.body.as_str()),
        Some(
            "Flight AC 123\nGate 12 closes at 2026-12-01T08:40Z. Paid: 129.50 GBP.\nAcme Air\n\
             [Change seat]\n[Cancel]\n[Check in: https://acme.example/checkin]"
        )
    );
    assert_eq!(
        shop.history(&customer_id).expect("history")[0].body,
        history[0].body,
        "the business's history shows what it sent"
    );
    assert!(customer.evidence().expect("evidence").evidence.is_empty());

    // A link is not a quick reply, and only a checked template message
    // can be answered: nothing is sent.
    assert!(matches!(
        customer.reply_button(shop_id, message_id, 2).await,
        Err(ClientError::InvalidReply(ReplyError::NotAQuickReply {
            index: 2
        }))
    ));
    assert!(matches!(
        customer
            .reply_button(shop_id, MessageId::generate(), 0)
            .await,
        Err(ClientError::NotATemplateMessage(_))
    ));
    assert_eq!(customer.history(&shop_id).expect("history").len(), 1);

    let reply = customer
        .reply_button(shop_id, message_id, 1)
        .await
        .expect("quick reply");
    let got = wait_for(&mut shop, |e| match e {
        Event::QuickReply { .. } => Some(e.clone()),
        Event::Violation { violation, .. } => panic!("flagged: {violation}"),
        _ => None,
    })
    .await;
    assert_eq!(
        got,
        Event::QuickReply {
            from: customer_id,
            id: reply,
            reply_to: sent,
            template_id: id,
            button_index: 1,
            text: "Cancel".into(),
        }
    );
    assert_eq!(
        shop.history(&customer_id)
            .expect("history")
            .last()
            .map(|m| m.body.clone()),
        Some("Cancel".into())
    );
    // The quick reply opened the window: the business answers in free form.
    shop.send_text(customer_id, "Cancelled, refund on its way")
        .await
        .expect("service reply");
}

/// A customer speaking raw frames to one business device over a real
/// session: it can send what an honest client never would.
struct RawCustomer {
    account: Account,
    conn: support::Client,
    business: AccountId,
    device: u32,
    session: SessionRecord,
}

impl RawCustomer {
    async fn start(relay: &TestRelay, business: AccountId) -> Self {
        let account = Account::new(1);
        account.register(relay.addr).await;
        let (mut conn, _) = account.login(relay.addr, 1).await;
        let (_, upload) =
            InMemoryPreKeyStore::generate(account.identity(1), 1, 1, 20, &mut rand::rng());
        let reply = conn
            .request(client_frame::Body::UploadPrekeys(upload))
            .await;
        assert!(matches!(reply, Body::Ok(_)), "{reply:?}");
        let fetch = wire::FetchPreKeys {
            account_id: business.to_vec(),
            device_ids: Vec::new(),
        };
        let Body::PrekeyBundles(bundles) =
            conn.request(client_frame::Body::FetchPrekeys(fetch)).await
        else {
            panic!("bundles")
        };
        let list = bundles.device_list.as_ref().expect("device list");
        let bundle = &bundles.bundles[0];
        let listed = list
            .devices
            .iter()
            .find(|d| d.device_id == bundle.device_id)
            .expect("listed");
        let key = IdentityKey::from_bytes(&listed.identity_key).expect("identity key");
        let verified = VerifiedBundle::verify(bundle, Some(&key)).expect("bundle");
        let mut session = SessionRecord::new();
        session
            .initiate(account.identity(1), &verified, &mut rand::rng())
            .expect("x3dh");
        Self {
            account,
            conn,
            business,
            device: bundle.device_id,
            session,
        }
    }

    /// Send `body` as a conversation message, labels bound.
    async fn send(&mut self, body: content::Body) {
        let message_id = MessageId::generate().0;
        let plaintext = Content {
            message_id: message_id.to_vec(),
            sent_at_ms: 1,
            body: Some(body),
            labels: Some(labels::bind(
                &message_id,
                self.account.id.as_bytes(),
                self.business.as_bytes(),
                Category::Conversation,
                "",
                &[],
            )),
            franking_key: Vec::new(),
            padding: Vec::new(),
        }
        .encode_to_vec();
        let send = wire::Send {
            message_id: message_id.to_vec(),
            recipient_account: self.business.to_vec(),
            client_timestamp_ms: 1,
            category: Category::Conversation as i32,
            devices: vec![wire::DeviceCiphertext {
                device_id: self.device,
                ciphertext: self
                    .session
                    .encrypt(&plaintext, &mut rand::rng())
                    .expect("encrypt"),
            }],
            ..Default::default()
        };
        let reply = self.conn.request(client_frame::Body::Send(send)).await;
        assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
    }
}

#[tokio::test]
async fn a_forged_quick_reply_is_flagged_by_the_business() {
    let relay = start_relay().await;
    let business_dir = tempfile::tempdir().expect("temp dir");
    let mut shop = registered_business(&relay, business_dir.path(), "business pass").await;
    let shop_id = shop.account_id();
    let template = boarding_pass(shop_id);
    let (id, _) = shop.submit_template(&template).await.expect("submit");
    relay
        .admin_client()
        .approve_template(&id.to_hex())
        .await
        .expect("approve");
    let mut customer = RawCustomer::start(&relay, shop_id).await;
    let customer_id = customer.account.id;
    // The customer writes (the window opens); the business answers with
    // the template.
    customer
        .send(content::Body::Text(Text {
            body: "my flight?".into(),
        }))
        .await;
    wait_for(&mut shop, |e| {
        matches!(e, Event::Message { .. }).then_some(())
    })
    .await;
    let sent = shop
        .send_template(
            customer_id,
            &id,
            boarding_values(template_parameter::Value::Number(3)),
        )
        .await
        .expect("send");

    let reply = |message_id: MessageId, index, text: &str| {
        content::Body::ButtonReply(ButtonReply {
            message_id: message_id.0.to_vec(),
            template_id: id.to_hex(),
            button_index: index,
            text: text.into(),
        })
    };
    // Another button's text, an index out of range, a link button, and a
    // reply to a message the business never sent.
    customer.send(reply(sent, 1, "Change seat")).await;
    customer.send(reply(sent, 7, "Cancel")).await;
    customer.send(reply(sent, 2, "Check in")).await;
    customer
        .send(reply(MessageId::generate(), 0, "Change seat"))
        .await;
    // And an honest one, then a text to close the check.
    customer.send(reply(sent, 0, "Change seat")).await;
    customer
        .send(content::Body::Text(Text {
            body: "done".into(),
        }))
        .await;
    let mut violations = Vec::new();
    let mut replies = Vec::new();
    wait_for(&mut shop, |e| match e {
        Event::QuickReply {
            button_index, text, ..
        } => {
            replies.push((*button_index, text.clone()));
            None
        }
        Event::Violation { violation, .. } => {
            violations.push(violation.clone());
            None
        }
        Event::Message { text, .. } if text == "done" => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(replies, vec![(0, "Change seat".to_string())]);
    assert_eq!(
        violations,
        vec![
            Violation::QuickReplyInvalid {
                reason: ReplyError::TextMismatch { index: 1 }
            },
            Violation::QuickReplyInvalid {
                reason: ReplyError::NoSuchButton { index: 7 }
            },
            Violation::QuickReplyInvalid {
                reason: ReplyError::NotAQuickReply { index: 2 }
            },
            Violation::QuickReplyToUnknownMessage,
        ]
    );
    assert_eq!(shop.evidence().expect("evidence").evidence.len(), 4);
    let history = shop.history(&customer_id).expect("history");
    assert_eq!(
        history.iter().map(|m| m.body.as_str()).collect::<Vec<_>>()[2..],
        ["Change seat", "done"],
        "no forged reply in the history"
    );
}

#[tokio::test]
async fn a_tampered_instance_or_free_text_as_a_template_is_flagged() {
    let relay = start_relay().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut customer = registered(&relay, dir.path(), "customer pass").await;
    let mut shop = Business::start(&relay, customer.account_id()).await;
    let shop_id = shop.account.id;
    customer
        .grant_consent(shop_id, ConsentCategories::UTILITY, MONTH)
        .await
        .expect("consent");
    // The window is open too, for the service replies that close checks.
    customer.send_text(shop_id, "hello").await.expect("write");
    let utility = support::templates::support_instance(shop_id, Category::Utility, "A1");
    let with = |parameters: Vec<TemplateParameter>| TemplateInstance {
        parameters,
        ..utility.clone()
    };
    let text = |value: &str| parameter("order", template_parameter::Value::Text(value.into()));
    let cases: Vec<(content::Body, Violation)> = vec![
        (
            content::Body::Template(with(vec![parameter(
                "order",
                template_parameter::Value::Number(7),
            )])),
            Violation::TemplateInstanceInvalid {
                template_id: utility.template_id.clone(),
                reason: InstanceError::WrongType {
                    name: "order".into(),
                    expected: PlaceholderKind::Text,
                    got: "number",
                },
            },
        ),
        (
            content::Body::Template(with(vec![text("A1"), text("B2")])),
            Violation::TemplateInstanceInvalid {
                template_id: utility.template_id.clone(),
                reason: InstanceError::DuplicateParameter("order".into()),
            },
        ),
        (
            content::Body::Template(with(vec![
                text("A1"),
                parameter("coupon", template_parameter::Value::Text("FREE".into())),
            ])),
            Violation::TemplateInstanceInvalid {
                template_id: utility.template_id.clone(),
                reason: InstanceError::UnknownParameter("coupon".into()),
            },
        ),
        (
            content::Body::Text(Text {
                body: "Click here for a prize".into(),
            }),
            Violation::NotATemplate {
                category: Category::Utility,
            },
        ),
    ];
    for (n, (body, expected)) in cases.iter().enumerate() {
        let (_, reply) = shop.request_content(body.clone(), Category::Utility).await;
        assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
        let next = format!("check {n}");
        shop.send(&next, Category::Service).await;
        let (shown, violations) = violations_of(&mut customer, &next).await;
        assert!(
            matches!(shown, Some(Event::Message { .. })),
            "shown, marked: {shown:?}"
        );
        assert!(violations.contains(expected), "{n}: {violations:?}");
    }
    // The honest instance checks out.
    shop.send_template("A1", Category::Utility).await;
    shop.send("honest", Category::Service).await;
    let (shown, violations) = violations_of(&mut customer, "honest").await;
    assert!(matches!(shown, Some(Event::Template { .. })), "{shown:?}");
    assert!(violations.is_empty(), "{violations:?}");
    let evidence = customer.evidence().expect("evidence").evidence;
    assert_eq!(evidence.len(), cases.len(), "{evidence:?}");
    assert!(evidence.iter().all(|e| e.from == shop_id));
}

#[tokio::test]
async fn a_revoked_template_is_flagged() {
    let relay = start_relay().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut customer = registered(&relay, dir.path(), "customer pass").await;
    let mut shop = Business::start(&relay, customer.account_id()).await;
    let shop_id = shop.account.id;
    customer
        .grant_consent(shop_id, ConsentCategories::UTILITY, MONTH)
        .await
        .expect("consent");
    // The window is open too, for the service replies that close checks.
    customer.send_text(shop_id, "hello").await.expect("write");
    // Accepted while approved, delivered after the operator revoked it.
    customer.disconnect().await;
    shop.send_template("A1", Category::Utility).await;
    let id = support::templates::id_for(shop_id, Category::Utility);
    relay
        .admin_client()
        .revoke_template(&id)
        .await
        .expect("revoke");
    shop.send("check", Category::Service).await;
    customer.connect(&url(&relay)).await.expect("connect");
    let (shown, violations) = violations_of(&mut customer, "check").await;
    assert!(matches!(shown, Some(Event::Message { .. })), "{shown:?}");
    assert_eq!(
        violations,
        vec![Violation::TemplateRevoked { template_id: id }]
    );
    assert_eq!(customer.evidence().expect("evidence").evidence.len(), 1);
}

#[tokio::test]
async fn an_approval_by_another_operator_key_than_the_pinned_one_is_flagged() {
    let relay = start_relay().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut customer = registered(&relay, dir.path(), "customer pass").await;
    // The customer trusts another operator than this relay's.
    let elsewhere = OperatorKeyPair::generate(&mut rand::rng()).public();
    customer
        .pin_operator_key(&elsewhere)
        .await
        .expect("pin another key");
    let mut shop = Business::start(&relay, customer.account_id()).await;
    let shop_id = shop.account.id;
    customer
        .grant_consent(shop_id, ConsentCategories::UTILITY, MONTH)
        .await
        .expect("consent");
    // The window is open too, for the service replies that close checks.
    customer.send_text(shop_id, "hello").await.expect("write");
    shop.send_template("A1", Category::Utility).await;
    shop.send("check", Category::Service).await;
    let (shown, violations) = violations_of(&mut customer, "check").await;
    assert!(matches!(shown, Some(Event::Message { .. })), "{shown:?}");
    assert_eq!(
        violations,
        vec![Violation::TemplateApprovalInvalid {
            template_id: support::templates::id_for(shop_id, Category::Utility)
        }]
    );
    assert_eq!(customer.evidence().expect("evidence").evidence.len(), 1);
}

/// A business with two devices: the sync copy of a template message
/// carries the template (not only its rendered text), so the customer's
/// quick reply checks out on the device that did not send it too.
#[tokio::test]
async fn a_quick_reply_checks_out_on_the_business_device_that_did_not_send() {
    let relay = start_relay().await;
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let mut customer = registered(&relay, dirs[0].path(), "customer pass").await;
    let mut shop = registered_business(&relay, dirs[1].path(), "business pass").await;
    let mut counter = support::client::linked(&relay, &mut shop, dirs[2].path()).await;
    let (customer_id, shop_id) = (customer.account_id(), shop.account_id());
    customer
        .grant_consent(shop_id, ConsentCategories::UTILITY, MONTH)
        .await
        .expect("consent");
    let template = boarding_pass(shop_id);
    let (id, _) = shop.submit_template(&template).await.expect("submit");
    relay
        .admin_client()
        .approve_template(&id.to_hex())
        .await
        .expect("approve");
    let sent = shop
        .send_template(
            customer_id,
            &id,
            boarding_values(template_parameter::Value::Number(12)),
        )
        .await
        .expect("send the template");
    // The other device gets the copy, shown as what was sent.
    let copy = wait_for(&mut counter, |e| match e {
        Event::SentElsewhere { to, id, text, .. } if *to == customer_id && *id == sent => {
            Some(text.clone())
        }
        _ => None,
    })
    .await;
    assert!(copy.starts_with("Flight AC 123\nGate 12"), "{copy}");
    let message_id = wait_for(&mut customer, |e| match e {
        Event::Template { id, .. } => Some(*id),
        _ => None,
    })
    .await;
    let reply = customer
        .reply_button(shop_id, message_id, 0)
        .await
        .expect("quick reply");
    for device in [&mut shop, &mut counter] {
        let got = wait_for(device, |e| match e {
            Event::QuickReply { .. } => Some(e.clone()),
            Event::Violation { violation, .. } => panic!("flagged: {violation}"),
            _ => None,
        })
        .await;
        assert_eq!(
            got,
            Event::QuickReply {
                from: customer_id,
                id: reply,
                reply_to: sent,
                template_id: id,
                button_index: 0,
                text: "Change seat".into(),
            }
        );
    }
    assert!(counter.evidence().expect("evidence").evidence.is_empty());
}
