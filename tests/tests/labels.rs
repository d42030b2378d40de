//! Bound labels end to end: a sender holding real keys (a raw protocol
//! client with a real X3DH + Double Ratchet session) sends a real
//! `Client` envelopes whose labels differ, one label at a time, from what
//! the relay shows it. Each is refused with `LabelMismatch` naming the
//! label, kept as evidence, acknowledged (the sender gets `Delivered`),
//! and causes no re-key; the session goes on working. Visible text
//! labelled control is refused too; a business sending person-to-person
//! conversation is refused by the relay, and a business `Client` replies
//! as service.

use crate::support;

use comptoir_client::{Event, MessageId};
use comptoir_protocol::labels::{self, Label, LabelError};
use comptoir_protocol::proto::content::{Content, Labels, ReadReceipt, Text, content};
use comptoir_protocol::proto::wire::{self, AccountKind, Category, ErrorCode, server_frame::Body};
use comptoir_protocol::session::SessionRecord;
use comptoir_protocol::{AccountId, IdentityKey, VerifiedBundle};
use prost::Message;
use support::client::{registered, registered_business, url, wait_for, wait_message};
use support::mitm::relay_behind_mitm;
use support::*;

/// A raw sender with a real session to one device of a real `Client`.
struct RawSender {
    account: Account,
    conn: Client,
    session: SessionRecord,
    to: AccountId,
}

impl RawSender {
    async fn start(relay: &TestRelay, to: AccountId, kind: AccountKind) -> Self {
        let account = Account::new(1);
        account.register_as(relay.addr, kind).await;
        let (mut conn, _) = account.login(relay.addr, 1).await;
        let fetch = wire::FetchPreKeys {
            account_id: to.to_vec(),
            device_ids: Vec::new(),
        };
        let Body::PrekeyBundles(bundles) = conn
            .request(wire::client_frame::Body::FetchPrekeys(fetch))
            .await
        else {
            panic!("bundles")
        };
        let listed = bundles.device_list.as_ref().expect("device list").devices[0]
            .identity_key
            .clone();
        let expected = IdentityKey::from_bytes(&listed).expect("identity key");
        let bundle = VerifiedBundle::verify(&bundles.bundles[0], Some(&expected)).expect("bundle");
        let mut session = SessionRecord::new();
        session
            .initiate(account.identity(1), &bundle, &mut rand::rng())
            .expect("x3dh");
        Self {
            account,
            conn,
            session,
            to,
        }
    }

    /// Encrypt `content` and send it under the envelope labels given; the
    /// relay must accept it. Returns the envelope's message id.
    async fn send(
        &mut self,
        content: &Content,
        category: Category,
        template_id: &str,
        franking_tag: &[u8],
    ) -> [u8; 16] {
        let message_id = MessageId::generate().0;
        let mut content = content.clone();
        if let Some(labels) = content.labels.as_mut()
            && labels.message_id.is_empty()
        {
            labels.message_id = message_id.to_vec();
        }
        if content.message_id.is_empty() {
            content.message_id = message_id.to_vec();
        }
        let ciphertext = self
            .session
            .encrypt(&content.encode_to_vec(), &mut rand::rng())
            .expect("encrypt");
        let send = wire::Send {
            message_id: message_id.to_vec(),
            recipient_account: self.to.to_vec(),
            client_timestamp_ms: 1,
            category: category as i32,
            template_id: template_id.into(),
            franking_tag: franking_tag.to_vec(),
            devices: vec![wire::DeviceCiphertext {
                device_id: 1,
                ciphertext,
            }],
            ..Default::default()
        };
        let reply = self
            .conn
            .request(wire::client_frame::Body::Send(send))
            .await;
        assert!(matches!(reply, Body::Accepted(_)), "send: {reply:?}");
        message_id
    }

    /// Labels exactly as the envelope will carry them (the message id is
    /// filled in by [`Self::send`]).
    fn labels(&self, category: Category, template_id: &str, franking: &[u8]) -> Labels {
        labels::bind(
            &[],
            self.account.id.as_bytes(),
            self.to.as_bytes(),
            category,
            template_id,
            franking,
        )
    }

    /// Wait for the relay's `Delivered` for `id` (the recipient acked it).
    async fn delivered(&mut self, id: [u8; 16]) {
        self.conn
            .next_matching(|b| match b {
                Body::Delivered(d) if d.message_id == id => Some(()),
                _ => None,
            })
            .await;
    }
}

fn text(body: &str) -> Option<content::Body> {
    Some(content::Body::Text(Text { body: body.into() }))
}

/// Change one label to something else.
fn rewrite(l: &mut Labels, label: Label) {
    match label {
        Label::MessageId => l.message_id = vec![0xaa; 16],
        Label::SenderAccount => l.sender_account = vec![0xbb; 16],
        Label::RecipientAccount => l.recipient_account = vec![0xcc; 16],
        Label::Category => l.category = Category::Marketing as i32,
        Label::TemplateId => l.template_id = "promo-summer".into(),
        Label::FrankingCommitment => l.franking_commitment = vec![0xdd; 32],
        _ => unreachable!("a label this test does not know"),
    }
}

#[tokio::test]
async fn each_relabelled_label_is_refused_kept_as_evidence_acked_and_no_rekey() {
    let relay = start_relay().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bob = registered(&relay, dir.path(), "bob pass").await;
    let mut mallory = RawSender::start(&relay, bob.account_id(), AccountKind::Customer).await;
    let (template, franking) = ("order-update", [7u8; 32]);

    let mut sent = Vec::new();
    for label in Label::ALL {
        let mut bound = mallory.labels(Category::Conversation, template, &franking);
        rewrite(&mut bound, label);
        let content = Content {
            body: text(&format!("relabelled {label}")),
            labels: Some(bound),
            ..Content::default()
        };
        let id = mallory
            .send(&content, Category::Conversation, template, &franking)
            .await;
        sent.push((label, id));
    }
    for &(label, id) in &sent {
        let refused = wait_for(&mut bob, |e| match e {
            Event::Refused {
                id: got, reason, ..
            } if got.0 == id => Some(reason.clone()),
            Event::Message { text, .. } => panic!("a relabelled message was displayed: {text}"),
            Event::SessionReset { .. } => panic!("a relabelled message caused a re-key"),
            _ => None,
        })
        .await;
        assert_eq!(refused, LabelError::LabelMismatch { label });
        mallory.delivered(id).await;
    }

    // Kept aside, one record per message, naming the label, with the
    // envelope as delivered and the plaintext.
    let evidence = bob.evidence().expect("evidence").evidence;
    assert_eq!(evidence.len(), sent.len());
    for (label, id) in &sent {
        let kept = evidence
            .iter()
            .find(|e| e.envelope.message_id == id)
            .expect("kept");
        assert_eq!(kept.label, Some(*label));
        assert_eq!(kept.from, mallory.account.id);
        assert!(kept.refusal.contains(label.name()), "{}", kept.refusal);
        let content = Content::decode(kept.plaintext.as_slice()).expect("content");
        assert_eq!(content.body, text(&format!("relabelled {label}")));
    }
    assert!(
        bob.history(&mallory.account.id)
            .expect("history")
            .is_empty()
    );

    // The session was never treated as broken: a correctly labelled
    // message on the same session is displayed.
    let good = Content {
        body: text("honest"),
        labels: Some(mallory.labels(Category::Conversation, "", &[])),
        ..Content::default()
    };
    let id = mallory.send(&good, Category::Conversation, "", &[]).await;
    let (got, body) = wait_message(&mut bob, mallory.account.id).await;
    assert_eq!((got.0, body.as_str()), (id, "honest"));
    mallory.delivered(id).await;
    // No re-key request (nor anything else) was sent to the sender: its
    // queue is empty (a re-key would be sent before the ack above).
    let (_, ok) = mallory.account.login(relay.addr, 1).await;
    assert_eq!(ok.queued, 0, "the recipient sent the sender something");
}

/// The same attack from the relay's side: two honest clients, and a man
/// in the middle that rewrites one label of each envelope on its way to
/// the recipient. (A rewritten sender account is caught earlier: the
/// session of the account it names cannot decrypt the message.)
#[tokio::test]
async fn a_relay_that_relabels_on_the_way_is_caught_by_the_recipient() {
    // Bob logs in through the proxy, so the relay must accept the proxy's
    // origin in his signed login as well as its own for Alice.
    let (relay, mitm, _data) = relay_behind_mitm().await;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let mut alice = registered(&relay, dir_a.path(), "alice pass").await;
    let mut bob = registered(&relay, dir_b.path(), "bob pass").await;
    bob.connect(&mitm.url())
        .await
        .expect("bob connects through the proxy");
    let (from, to) = (alice.account_id(), bob.account_id());
    let rewritten = [
        Label::MessageId,
        Label::RecipientAccount,
        Label::Category,
        Label::TemplateId,
        Label::FrankingCommitment,
    ];
    for label in rewritten {
        mitm.plan(from.as_bytes(), label);
        let id = alice
            .send_text(to, &format!("rewritten on the way: {label}"))
            .await
            .expect("send");
        let reason = wait_for(&mut bob, |e| match e {
            Event::Refused {
                from: f, reason, ..
            } if *f == from => Some(reason.clone()),
            Event::Message { text, .. } => panic!("a relabelled message was displayed: {text}"),
            Event::SessionReset { .. } => panic!("a relabelled message caused a re-key"),
            _ => None,
        })
        .await;
        assert_eq!(reason, LabelError::LabelMismatch { label });
        // Acknowledged: the relay deleted what it queued and told Alice.
        wait_for(&mut alice, |e| match e {
            Event::Delivered { id: d, .. } if *d == id => Some(()),
            Event::Resent { .. } | Event::SessionReset { .. } => {
                panic!("the sender was asked for a re-key")
            }
            _ => None,
        })
        .await;
        assert!(mitm.relay_saw_ack(&id.0, from.as_bytes()));
    }
    let evidence = bob.evidence().expect("evidence").evidence;
    let mut labels: Vec<_> = evidence.iter().filter_map(|e| e.label).collect();
    labels.sort_by_key(|l| Label::ALL.iter().position(|x| x == l));
    assert_eq!(labels, rewritten);
    assert!(bob.history(&from).expect("history").is_empty());

    // Left alone, the next message is displayed: the session never broke.
    let id = alice.send_text(to, "untouched").await.expect("send");
    let (got, text) = wait_message(&mut bob, from).await;
    assert_eq!((got, text.as_str()), (id, "untouched"));
    // Bob reconnects straight to the relay: nothing is queued for him
    // (every refused envelope was acknowledged).
    assert_eq!(bob.connect(&url(&relay)).await.expect("reconnect"), 0);
}

#[tokio::test]
async fn category_means_what_it_says() {
    let relay = start_relay().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bob = registered(&relay, dir.path(), "bob pass").await;
    let mut mallory = RawSender::start(&relay, bob.account_id(), AccountKind::Customer).await;

    // Visible text labelled control, consistently in the envelope and the
    // content: refused, never displayed.
    let control_text = Content {
        body: text("look at me"),
        labels: Some(mallory.labels(Category::Control, "", &[])),
        ..Content::default()
    };
    let hidden = mallory
        .send(&control_text, Category::Control, "", &[])
        .await;
    // Control traffic without bound labels: refused.
    let unbound = Content {
        body: Some(content::Body::ReadReceipt(ReadReceipt::default())),
        ..Content::default()
    };
    let unlabelled = mallory.send(&unbound, Category::Control, "", &[]).await;
    // Control traffic dressed as conversation: refused.
    let receipt = Content {
        body: Some(content::Body::ReadReceipt(ReadReceipt::default())),
        labels: Some(mallory.labels(Category::Conversation, "", &[])),
        ..Content::default()
    };
    let dressed = mallory
        .send(&receipt, Category::Conversation, "", &[])
        .await;
    // Person-to-person text without labels (an older sender) is fine.
    let legacy = Content {
        body: text("old client"),
        ..Content::default()
    };
    let shown = mallory.send(&legacy, Category::Conversation, "", &[]).await;

    for (id, expected) in [
        (hidden, LabelError::ControlVisible),
        (
            unlabelled,
            LabelError::Unbound {
                category: "control",
            },
        ),
        (
            dressed,
            LabelError::ControlMislabelled {
                category: "conversation",
            },
        ),
    ] {
        let reason = wait_for(&mut bob, |e| match e {
            Event::Refused {
                id: got, reason, ..
            } if got.0 == id => Some(reason.clone()),
            Event::Message { text, .. } => panic!("displayed: {text}"),
            _ => None,
        })
        .await;
        assert_eq!(reason, expected);
        mallory.delivered(id).await;
    }
    let (got, body) = wait_message(&mut bob, mallory.account.id).await;
    assert_eq!((got.0, body.as_str()), (shown, "old client"));
    assert_eq!(bob.evidence().expect("evidence").evidence.len(), 3);
}

#[tokio::test]
async fn a_business_cannot_send_person_to_person_conversation() {
    let relay = start_relay().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut customer = registered(&relay, dir.path(), "customer pass").await;
    let mut shop = RawSender::start(&relay, customer.account_id(), AccountKind::Business).await;

    let content = Content {
        body: text("hello from a business"),
        labels: Some(shop.labels(Category::Conversation, "", &[])),
        ..Content::default()
    };
    let ciphertext = shop
        .session
        .encrypt(&content.encode_to_vec(), &mut rand::rng())
        .expect("encrypt");
    let refusal = shop
        .conn
        .request(send_body(&customer.account_id(), &[1], id(1), &ciphertext))
        .await;
    assert_eq!(error_code(&refusal), ErrorCode::AccountKind);
    let Body::Error(e) = &refusal else {
        unreachable!()
    };
    assert!(e.message.contains("business"), "{}", e.message);
    assert_eq!(
        relay.metric("comptoir_envelopes_accepted_total").await,
        0.0,
        "nothing stored"
    );

    // A business `Client` replies as service, which the customer reads.
    let shop_dir = tempfile::tempdir().expect("temp dir");
    let mut business = registered_business(&relay, shop_dir.path(), "shop passphrase").await;
    // Not before the customer wrote (the 24-hour window): refused, and
    // the message is marked failed rather than retried for ever.
    let early = business
        .send_text(customer.account_id(), "buy now")
        .await
        .expect_err("no window yet");
    assert!(
        matches!(&early, comptoir_client::ClientError::Relay { code, .. } if *code == ErrorCode::WindowClosed),
        "{early:?}"
    );
    let history = business.history(&customer.account_id()).expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, comptoir_client::Status::Failed);
    customer
        .send_text(business.account_id(), "where is my order?")
        .await
        .expect("a customer writes to a business");
    wait_message(&mut business, customer.account_id()).await;
    business
        .send_text(customer.account_id(), "your order shipped")
        .await
        .expect("a business sends service text");
    let (_, shown) = wait_message(&mut customer, business.account_id()).await;
    assert_eq!(shown, "your order shipped");
    // And a customer may not send a business category.
    let mut customer_raw =
        RawSender::start(&relay, business.account_id(), AccountKind::Customer).await;
    let content = Content {
        body: text("pretend service"),
        labels: Some(customer_raw.labels(Category::Service, "", &[])),
        ..Content::default()
    };
    let ciphertext = customer_raw
        .session
        .encrypt(&content.encode_to_vec(), &mut rand::rng())
        .expect("encrypt");
    let mut send = send_body(&business.account_id(), &[1], id(2), &ciphertext);
    if let wire::client_frame::Body::Send(s) = &mut send {
        s.category = Category::Service as i32;
    }
    assert_eq!(
        error_code(&customer_raw.conn.request(send).await),
        ErrorCode::AccountKind
    );
}

#[tokio::test]
async fn an_account_kind_never_changes() {
    let relay = start_relay().await;
    let account = Account::new(1);
    account.register_as(relay.addr, AccountKind::Business).await;
    // The same registration again with another kind is refused...
    let mut c = Client::connect(relay.addr).await;
    let nonce = c.nonce.clone();
    let reply = c
        .request(account.register_body_as(&nonce, AccountKind::Customer))
        .await;
    assert_eq!(error_code(&reply), ErrorCode::AccountKind);
    // ... and the relay tells each device its account's kind.
    let (_, ok) = account.login(relay.addr, 1).await;
    assert_eq!(ok.kind(), AccountKind::Business);
    let customer = Account::new(1);
    customer.register(relay.addr).await;
    let (_, ok) = customer.login(relay.addr, 1).await;
    assert_eq!(ok.kind(), AccountKind::Customer);
}

#[tokio::test]
async fn a_registration_whose_kind_was_changed_after_signing_is_refused_and_creates_nothing() {
    let relay = start_relay().await;
    for (signed, sent) in [
        (AccountKind::Customer, AccountKind::Business),
        (AccountKind::Business, AccountKind::Customer),
    ] {
        let account = Account::new(1);
        let mut c = Client::connect(relay.addr).await;
        let nonce = c.nonce.clone();
        let mut body = account.register_body_as(&nonce, signed);
        let wire::client_frame::Body::Register(register) = &mut body else {
            panic!("a Register body");
        };
        // Someone between the device and the relay flips the kind.
        register.kind = sent as i32;
        let reply = c.request(body).await;
        assert_eq!(
            error_code(&reply),
            ErrorCode::BadSignature,
            "{signed:?} flipped to {sent:?}: {reply:?}"
        );
        // Nothing was created: the device cannot log in...
        let auth = c.request(account.auth_body(1, &nonce)).await;
        assert!(
            matches!(
                error_code(&auth),
                ErrorCode::UnknownDevice | ErrorCode::AuthFailed
            ),
            "{auth:?}"
        );
        // ... and the honest registration that follows gets the kind it
        // signed (a stored account of the flipped kind would refuse it).
        account.register_as(relay.addr, signed).await;
        let (_, ok) = account.login(relay.addr, 1).await;
        assert_eq!(ok.kind(), signed);
    }
}

/// The kind a login tells is kept, so it is known away from the relay: a
/// relay telling no kind (`Unspecified`, as one from before kinds) leaves
/// the kind known here as it was; one telling another kind is warned of,
/// and gone by (the relay enforces it). Before, the last `AuthOk` decided
/// alone, in memory only.
#[tokio::test]
async fn the_kind_a_login_tells_is_kept_and_a_change_is_warned_of() {
    let (relay, mitm, _data) = relay_behind_mitm().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut shop = registered_business(&relay, dir.path(), "shop pass").await;
    assert_eq!(shop.kind(), AccountKind::Business);

    mitm.tell_kind(AccountKind::Unspecified);
    shop.connect(&mitm.url()).await.expect("through the proxy");
    assert_eq!(
        shop.kind(),
        AccountKind::Business,
        "an unknown kind erased it"
    );

    mitm.tell_kind(AccountKind::Customer);
    shop.connect(&mitm.url()).await.expect("through the proxy");
    assert_eq!(shop.kind(), AccountKind::Customer);
    let mut warned = false;
    while let Ok(Some(event)) = shop.next_event(std::time::Duration::ZERO).await {
        warned |= matches!(&event, Event::Warning(w) if w.contains("relay says this account is a customer"));
    }
    assert!(warned, "the change of kind was not warned of");
    shop.close().await.expect("close");

    // Kept in the store: known when opened again, away from any relay.
    let reopened = comptoir_client::Client::open(dir.path(), "shop pass").expect("open");
    assert_eq!(reopened.kind(), AccountKind::Customer);
}

/// A `Sender` handle made before a login that told another kind sends as
/// the account is now, as the client itself does: its free-form text goes
/// in the category of the new kind.
#[tokio::test]
async fn a_sender_made_before_a_change_of_kind_sends_as_the_account_is_now() {
    let (relay, mitm, _data) = relay_behind_mitm().await;
    let (dir, peer_dir) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let peer = registered(&relay, peer_dir.path(), "peer pass").await;
    let peer_id = peer.account_id();
    let mut client = registered(&relay, dir.path(), "client pass").await;
    client
        .connect(&mitm.url())
        .await
        .expect("through the proxy");
    let sender = client.sender();
    sender
        .send_text(peer_id, "as a customer")
        .await
        .expect("a customer's text");

    mitm.tell_kind(AccountKind::Business);
    client
        .connect(&mitm.url())
        .await
        .expect("through the proxy");
    assert_eq!(client.kind(), AccountKind::Business);
    // Whatever the relay makes of them (it knows the account as a
    // customer): what matters is what each sent.
    let _ = client.send_text(peer_id, "from the client").await;
    let _ = sender.send_text(peer_id, "from the handle").await;
    assert_eq!(
        mitm.sent_categories(),
        vec![Category::Conversation, Category::Service, Category::Service],
        "the handle sent as the account was when it was made"
    );
}
