//! Signed delivery of what is billed (a business's template to a
//! customer): the customer's device signs its ack with its identity key,
//! the relay checks the signature against the device list, keeps it in the
//! ledger with the deletion of the copy, and passes it on in `Delivered`,
//! where the business checks it against the customer device's key. The
//! first delivery to any device of the customer is kept once, across
//! restarts; an ack of a billed copy with no signature, or one that does
//! not check out, is refused with a typed error and changes nothing.

use crate::support;

use std::time::Duration;

use comptoir_client::Event;
use comptoir_protocol::Label;
use comptoir_protocol::proto::wire::{
    self, AccountKind, Category, ErrorCode, client_frame, server_frame::Body,
};
use comptoir_protocol::{ConsentCategories, DeliveryFields, sign_delivery};
use comptoir_relay::storage::report;
use support::business::{Business, FRANKING};
use support::client::{linked, registered, registered_as, url, wait_for};
use support::mitm::relay_behind_mitm;
use support::*;

/// Wait until `client` stored a checked template message whose body
/// contains `text`; a violation reported meanwhile fails the test.
/// `customer` consents to `shop`'s utility templates for an hour.
async fn consent_to_utility(customer: &mut comptoir_client::Client, shop: &Business) {
    customer
        .grant_consent(
            shop.account.id,
            ConsentCategories::UTILITY,
            Duration::from_secs(3600),
        )
        .await
        .expect("consent");
}

async fn received(client: &mut comptoir_client::Client, text: &str) {
    wait_for(client, |e| match e {
        Event::Template { rendered, .. } if rendered.body.contains(text) => Some(()),
        Event::Violation { violation, .. } => panic!("flagged: {violation}"),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn a_billed_template_carries_a_signed_proof_the_business_checks_kept_once_across_restarts() {
    let relay = start_relay().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut phone = registered_as(
        &relay,
        dir_a.path(),
        "pw-long-enough",
        AccountKind::Customer,
    )
    .await;
    let mut laptop = linked(&relay, &mut phone, dir_b.path()).await;
    laptop.disconnect().await;
    let customer = phone.account_id();
    let mut business = Business::start(&relay, customer).await;
    consent_to_utility(&mut phone, &business).await;
    assert_eq!(business.devices.len(), 2);

    let (message_id, accept_id) = business.send_template("P-1", Category::Utility).await;
    received(&mut phone, "P-1").await;
    let first = business.delivered().await;
    assert_eq!(
        (first.message_id.as_slice(), first.accept_id),
        (message_id.as_slice(), accept_id)
    );
    assert_eq!(first.recipient_device, phone.device_id());
    assert_eq!(first.delivery_signature.len(), 64, "{first:?}");
    assert_eq!(first.franking_commitment, FRANKING);
    business.check_proof(&first);

    // Across a restart, the second device's delivery is reported without
    // a second proof: the first delivery is kept once.
    let mut relay = relay;
    relay.stop().await;
    let relay = relay.start_again_at_same_address().await;
    business.conn = business.account.login(relay.addr, 1).await.0;
    laptop.connect(&url(&relay)).await.expect("reconnect");
    received(&mut laptop, "P-1").await;
    let second = business.delivered().await;
    assert_eq!(second.recipient_device, laptop.device_id());
    assert_eq!(second.accept_id, accept_id);
    assert!(second.delivery_signature.is_empty(), "{second:?}");

    let mut relay = relay;
    phone.close().await.unwrap();
    laptop.close().await.unwrap();
    relay.stop().await;
    let report = report::read(&relay.data_dir).await.expect("accounting");
    assert_eq!(report.ledger.len(), 1, "{:?}", report.ledger);
    assert_eq!(report.delivered.len(), 1, "{:?}", report.delivered);
    let kept = &report.delivered[0];
    assert_eq!(
        (kept.accept_id, kept.customer_device),
        (accept_id, first.recipient_device)
    );
    assert_eq!(
        kept.signature.as_slice(),
        first.delivery_signature.as_slice()
    );
}

/// An ack of `envelope` carrying `signature`, signed at the time the
/// tests' delivery fields name.
fn signed_ack(envelope: &wire::Envelope, signature: Vec<u8>) -> client_frame::Body {
    client_frame::Body::DeliveryAck(wire::DeliveryAck {
        message_id: envelope.message_id.clone(),
        sender_account: envelope.sender_account.clone(),
        accept_id: envelope.accept_id,
        delivery_signature: signature,
        signed_at_ms: 1_700_000_000_000,
        ..Default::default()
    })
}

/// The next `Delivered` receipt `business` gets.
/// A `Send` of `template` to both of `recipient`'s devices (filler
/// ciphertext), with `franking_tag` (empty: not franked).
fn template_send(
    message_id: [u8; 16],
    recipient: &Account,
    category: Category,
    template: &str,
    franking_tag: &[u8],
) -> client_frame::Body {
    client_frame::Body::Send(wire::Send {
        message_id: message_id.to_vec(),
        recipient_account: recipient.id.to_vec(),
        client_timestamp_ms: 1,
        category: category as i32,
        template_id: template.into(),
        franking_tag: franking_tag.to_vec(),
        devices: [1, 2]
            .map(|device_id| wire::DeviceCiphertext {
                device_id,
                ciphertext: vec![0xAB; 48],
            })
            .to_vec(),
        ..Default::default()
    })
}

async fn next_delivered(business: &mut Client) -> wire::Delivered {
    business
        .next_matching(|f| match f {
            Body::Delivered(d) => Some(d.clone()),
            _ => None,
        })
        .await
}

/// A customer (two devices) and a business registered on `relay`, the
/// business's support templates approved, and the customer's consent to
/// its marketing given: both logged in as device 1, and the id of the
/// business's marketing template.
async fn marketing_consented(relay: &mut TestRelay) -> (Account, Account, Client, Client, String) {
    let customer = Account::new(2);
    customer.register(relay.addr).await;
    let business = Account::new(1);
    business
        .register_as(relay.addr, AccountKind::Business)
        .await;
    let (mut b, _) = business.login(relay.addr, 1).await;
    relay.approve_support_templates(&mut b).await;
    let offer = support::templates::id_for(business.id, Category::Marketing);
    let (mut c, _) = customer.login(relay.addr, 1).await;
    let consent = consent_body(
        &customer,
        1,
        &business,
        ConsentCategories::MARKETING,
        1,
        3_600_000,
    );
    assert!(matches!(c.request(consent).await, Body::Ok(_)));
    (customer, business, b, c, offer)
}

#[tokio::test]
async fn an_ack_of_a_billed_copy_without_a_good_signature_is_refused_and_the_copy_stays() {
    let mut relay = start_relay().await;
    let (customer, business, mut b, c, offer) = marketing_consented(&mut relay).await;
    drop(c);
    let send = |message_id: [u8; 16], category: Category, template: &str| {
        template_send(message_id, &customer, category, template, &FRANKING)
    };
    let Body::Accepted(accepted) = b.request(send(id(1), Category::Marketing, &offer)).await else {
        panic!("accepted")
    };

    let (mut c, _) = customer.login(relay.addr, 1).await;
    let envelope = c.next_envelope().await;
    assert_eq!(envelope.accept_id, accepted.accept_id);
    let fields = |device: u32, accept_id: u64| DeliveryFields {
        accept_id,
        message_id: id(1),
        business: business.id,
        customer: customer.id,
        customer_device: device,
        franking_commitment: FRANKING.to_vec(),
        time_ms: 1_700_000_000_000,
    };
    let ack = |signature: Vec<u8>| signed_ack(&envelope, signature);
    let refused = [
        ("no signature", Vec::new()),
        ("a short one", vec![1; 63]),
        (
            "another device's key",
            sign_delivery(customer.identity(2), &fields(1, accepted.accept_id)).to_vec(),
        ),
        (
            "another device named",
            sign_delivery(customer.identity(1), &fields(2, accepted.accept_id)).to_vec(),
        ),
        (
            "another accept id",
            sign_delivery(customer.identity(1), &fields(1, accepted.accept_id + 1)).to_vec(),
        ),
    ];
    for (what, signature) in refused {
        let reply = c.request(ack(signature)).await;
        assert_eq!(
            error_code(&reply),
            ErrorCode::BadDeliverySignature,
            "{what}: {reply:?}"
        );
    }
    // Nothing changed: the copy is delivered again on the next login, and
    // the business got no receipt.
    drop(c);
    let (mut c, _) = customer.login(relay.addr, 1).await;
    let again = c.next_envelope().await;
    assert_eq!(again.accept_id, accepted.accept_id);
    assert!(b.backlog_is_empty_of(|f| matches!(f, Body::Delivered(_))));

    // A service reply (the customer wrote: the window is open) needs no
    // signature.
    let opened = c
        .request(send_body(&business.id, &[1], id(3), b"hello"))
        .await;
    assert!(matches!(opened, Body::Accepted(_)), "{opened:?}");
    let Body::Accepted(service) = b.request(send(id(2), Category::Service, "")).await else {
        panic!("accepted")
    };
    let next = c.next_envelope().await;
    assert_eq!(next.accept_id, service.accept_id);
    let plain = client_frame::Body::DeliveryAck(wire::DeliveryAck {
        message_id: next.message_id.clone(),
        sender_account: next.sender_account.clone(),
        accept_id: next.accept_id,
        ..Default::default()
    });
    assert!(matches!(c.request(plain).await, Body::Ok(_)));
    let d = next_delivered(&mut b).await;
    assert_eq!(d.accept_id, service.accept_id);
    assert!(d.delivery_signature.is_empty());

    // The right signature deletes the copy and reaches the business.
    let good = sign_delivery(customer.identity(1), &fields(1, accepted.accept_id)).to_vec();
    assert!(matches!(c.request(ack(good.clone())).await, Body::Ok(_)));
    let d = next_delivered(&mut b).await;
    assert_eq!(d.accept_id, accepted.accept_id);
    assert_eq!(d.delivery_signature, good);

    // A copy the device could not use is acked `rejected`: deleted with no
    // signature, and no proof is kept or passed on.
    let Body::Accepted(unusable) = b.request(send(id(4), Category::Marketing, &offer)).await else {
        panic!("accepted")
    };
    let envelope = c.next_envelope().await;
    assert_eq!(envelope.accept_id, unusable.accept_id);
    let rejected = client_frame::Body::DeliveryAck(wire::DeliveryAck {
        message_id: envelope.message_id.clone(),
        sender_account: envelope.sender_account.clone(),
        accept_id: envelope.accept_id,
        rejected: true,
        ..Default::default()
    });
    assert!(matches!(c.request(rejected).await, Body::Ok(_)));
    let d = next_delivered(&mut b).await;
    assert_eq!(d.accept_id, unusable.accept_id);
    assert!(d.delivery_signature.is_empty());

    drop((b, c));
    relay.stop().await;
    let report = report::read(&relay.data_dir).await.expect("accounting");
    assert_eq!(report.delivered.len(), 1, "{:?}", report.delivered);
    assert_eq!(report.delivered[0].signature.as_slice(), good.as_slice());
}

/// `relay-load bench --compare-franking-ledger` measures franking and the
/// ledger against a benchmark relay with both off: that relay takes a
/// business's template without a franking commitment and appends nothing
/// to the ledger, but still checks signed delivery (not franking or the
/// ledger) and passes the signature on in `Delivered`.
#[tokio::test]
async fn a_benchmark_relay_with_franking_and_the_ledger_off_still_checks_signed_delivery() {
    let mut relay = start_relay_with(|config| {
        config.bench_metering = comptoir_relay::BenchMetering::FrankingAndLedgerOff;
    })
    .await;
    let (customer, business, mut b, mut c, offer) = marketing_consented(&mut relay).await;
    // Not franked: taken all the same.
    let unfranked = template_send(id(1), &customer, Category::Marketing, &offer, &[]);
    let reply = b.request(unfranked).await;
    let Body::Accepted(accepted) = reply else {
        panic!("accepted: {reply:?}")
    };
    let envelope = c.next_envelope().await;
    assert_eq!(envelope.accept_id, accepted.accept_id);
    assert!(envelope.relay_franking_signature.is_empty(), "no relay tag");
    let ack = |signature: Vec<u8>| signed_ack(&envelope, signature);
    // Signed delivery is still checked: an unsigned ack is refused.
    let reply = c.request(ack(Vec::new())).await;
    assert_eq!(error_code(&reply), ErrorCode::BadDeliverySignature);
    let fields = DeliveryFields {
        accept_id: accepted.accept_id,
        message_id: id(1),
        business: business.id,
        customer: customer.id,
        customer_device: 1,
        franking_commitment: Vec::new(),
        time_ms: 1_700_000_000_000,
    };
    let good = sign_delivery(customer.identity(1), &fields).to_vec();
    assert!(matches!(c.request(ack(good.clone())).await, Body::Ok(_)));
    let d = next_delivered(&mut b).await;
    assert_eq!(d.accept_id, accepted.accept_id);
    assert_eq!(d.delivery_signature, good);
    // Nothing of it was appended to the ledger in the mail log.
    drop((b, c));
    relay.stop().await;
    let report = report::read(&relay.data_dir).await.expect("accounting");
    assert!(report.ledger.is_empty(), "{:?}", report.ledger);
    assert!(report.delivered.is_empty(), "{:?}", report.delivered);
}

/// A customer connected through the label-rewriting proxy who wrote to a
/// business (its window open), the business on the relay directly.
async fn customer_writing_to_a_shop() -> (
    TestRelay,
    support::mitm::Mitm,
    (tempfile::TempDir, tempfile::TempDir),
    comptoir_client::Client,
    Business,
) {
    let (relay, mitm, data) = relay_behind_mitm().await;
    let dir = tempfile::tempdir().unwrap();
    let mut customer = registered(&relay, dir.path(), "customer pass").await;
    customer.connect(&mitm.url()).await.expect("proxy");
    let shop = Business::start(&relay, customer.account_id()).await;
    customer
        .send_text(shop.account.id, "hi")
        .await
        .expect("write");
    (relay, mitm, (data, dir), customer, shop)
}

#[tokio::test]
async fn a_copy_refused_by_its_labels_is_acked_rejected_and_never_signed() {
    let (_relay, mitm, _dirs, mut customer, mut shop) = customer_writing_to_a_shop().await;

    mitm.plan(shop.account.id.as_bytes(), Label::Category);
    let (message_id, accept_id) = shop.send("Thanks, on its way", Category::Service).await;
    wait_for(&mut customer, |e| {
        matches!(e, Event::Refused { .. }).then_some(())
    })
    .await;
    // The ack of the refused copy says rejected and carries no signature,
    // even though the relay shows it as billed (marketing); the relay
    // deleted the copy (it is not pushed again) and keeps no proof.
    let ack = mitm.next_ack(accept_id).await;
    assert!(ack.rejected, "{ack:?}");
    assert!(ack.delivery_signature.is_empty(), "{ack:?}");
    let delivered = shop.delivered().await;
    assert_eq!(
        (delivered.accept_id, delivered.message_id.as_slice()),
        (accept_id, message_id.as_slice())
    );
    assert!(delivered.delivery_signature.is_empty(), "{delivered:?}");
}

/// A lying relay replays a message the customer already took (the shop's
/// service reply) as a billed template under a fresh accept id, to get a
/// proof it can bill: the duplicate is not decrypted, so its ack says
/// rejected and carries no signature (before, a copy whose id was in the
/// history was acked as used and signed as billed without being opened).
#[tokio::test]
async fn a_replayed_copy_of_a_message_already_taken_is_never_signed() {
    let (_relay, mitm, _dirs, mut customer, mut shop) = customer_writing_to_a_shop().await;

    mitm.replay(shop.account.id.as_bytes(), Category::Utility);
    let (_, accept_id) = shop.send("Thanks, on its way", Category::Service).await;
    wait_for(&mut customer, |e| {
        matches!(e, Event::Message { text, .. } if text.contains("on its way")).then_some(())
    })
    .await;
    let replay = mitm
        .nth_ack_of(
            &mut customer,
            accept_id + support::mitm::REPLAY_ACCEPT_OFFSET,
            0,
        )
        .await;
    assert!(replay.delivery_signature.is_empty(), "{replay:?}");
    assert!(replay.rejected, "{replay:?}");
    // The copy the customer opened is acked as used.
    let first = mitm.next_ack(accept_id).await;
    assert!(!first.rejected, "{first:?}");
}

/// A billed template delivered twice unchanged (the first ack lost) is
/// acked signed both times: the very copy this device opened and signed
/// for keeps its proof, so the business is billed for it once the ack
/// arrives; a replay under other labels is still refused (above).
#[tokio::test]
async fn a_billed_copy_delivered_again_after_a_lost_ack_is_signed_again() {
    let (_relay, mitm, _dirs, mut customer, mut shop) = customer_writing_to_a_shop().await;
    consent_to_utility(&mut customer, &shop).await;
    mitm.deliver_twice(shop.account.id.as_bytes());
    let (_, accept_id) = shop.send_template("P-7", Category::Utility).await;
    received(&mut customer, "P-7").await;
    mitm.nth_ack_of(&mut customer, accept_id, 1).await;
    let acks = mitm.acks_of(accept_id);
    for ack in &acks {
        assert!(!ack.rejected, "{ack:?}");
        assert_eq!(ack.delivery_signature.len(), 64, "{ack:?}");
    }
    // The same proof both times: no second one of another time.
    assert_eq!(
        (&acks[0].delivery_signature, acks[0].signed_at_ms),
        (&acks[1].delivery_signature, acks[1].signed_at_ms)
    );
}

/// The proof a device signs is made durable with the copy it acks: a
/// device that crashes just after acking a billed template, the ack lost
/// on the way, signs the copy the relay delivers again with the same
/// proof, so the business is billed for it. Before, the proof was
/// remembered after the sync that kept the message, so the crash image
/// held the message without the proof, and the copy delivered again was
/// acked rejected: delivered, never billed.
#[tokio::test]
async fn a_billed_copy_signed_just_before_a_crash_is_signed_again_after_it() {
    let (_relay, mitm, dirs, mut customer, mut shop) = customer_writing_to_a_shop().await;
    consent_to_utility(&mut customer, &shop).await;
    mitm.lose_acks_from(Some(shop.account.id.as_bytes()));
    let (_, accept_id) = shop.send_template("P-9", Category::Utility).await;
    received(&mut customer, "P-9").await;
    let signed = mitm.next_ack(accept_id).await;
    assert_eq!(signed.delivery_signature.len(), 64, "{signed:?}");

    // The crash: what the files hold now is all that survives.
    let image = tempfile::tempdir().expect("dir");
    copy_dir(dirs.1.path(), image.path());
    drop(customer);
    mitm.lose_acks_from(None);
    let mut again = comptoir_client::Client::open(image.path(), "customer pass").expect("open");
    again.connect(&mitm.url()).await.expect("proxy");
    let again_ack = mitm.nth_ack_of(&mut again, accept_id, 1).await;
    assert!(!again_ack.rejected, "{again_ack:?}");
    assert_eq!(
        (&again_ack.delivery_signature, again_ack.signed_at_ms),
        (&signed.delivery_signature, signed.signed_at_ms),
        "the same proof again"
    );
    let delivered = shop.delivered().await;
    assert_eq!(delivered.accept_id, accept_id);
    assert_eq!(delivered.delivery_signature, signed.delivery_signature);
}
