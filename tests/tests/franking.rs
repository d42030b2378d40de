//! Message franking and reports (issue 14 item 4), with a real relay and
//! real clients: every message a client sends is franked; the relay tags
//! each franked copy it delivers; a customer reports a message to the
//! operator, sealed so that the relay's data directory holds no report
//! plaintext; `relay admin reports` verifies each report: a genuine one
//! passes, one with altered text or naming another sender fails. The
//! recipient refuses a message whose commitment does not open; the relay
//! refuses a business message without a commitment. Bad input to the new
//! request gets a typed error and stores nothing.

use crate::support;

use comptoir_client::{Client, ClientError, Event};
use comptoir_protocol::LabelError;
use comptoir_protocol::proto::content::{Content, Text, content};
use comptoir_protocol::proto::wire::{
    self, AccountKind, Category, ErrorCode, client_frame, server_frame::Body,
};
use comptoir_protocol::{AccountId, FrankingError};
use comptoir_relay::admin::reports::ReportBody;
use prost::Message;
use support::business::Business;
use support::client::{registered, registered_business, wait_for, wait_message};
use support::*;

const OFFER: &str = "Claim your prize at prize.example, today only";

/// A business and a customer who wrote to it; the business replied
/// `OFFER` (a franked service message) and the customer received it.
async fn offer_received(
    relay: &TestRelay,
    root: &std::path::Path,
) -> (Client, Client, comptoir_client::MessageId) {
    let mut shop = registered_business(relay, &root.join("shop"), "pw-long-enough").await;
    let mut carol = registered(relay, &root.join("carol"), "pw-long-enough").await;
    carol
        .send_text(shop.account_id(), "hello")
        .await
        .expect("carol writes");
    wait_message(&mut shop, carol.account_id()).await;
    shop.send_text(carol.account_id(), OFFER)
        .await
        .expect("shop replies");
    let (id, text) = wait_message(&mut carol, shop.account_id()).await;
    assert_eq!(text, OFFER);
    (shop, carol, id)
}

async fn reports(relay: &TestRelay) -> Vec<ReportBody> {
    relay
        .admin_client()
        .reports()
        .await
        .expect("reports")
        .reports
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_genuine_report_verifies_and_altered_ones_do_not() {
    let mut relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let (shop, mut carol, id) = offer_received(&relay, root.path()).await;
    let shop_id = shop.account_id();

    // Genuine: valid, and the operator reads the text and who sent it.
    let genuine = carol.report(id, "spam: a prize I never asked for").await;
    let genuine = genuine.expect("report");
    let listed = reports(&relay).await;
    assert_eq!(listed.len(), 1);
    let report = &listed[0];
    assert_eq!(report.id, genuine);
    assert!(report.valid, "{report:?}");
    assert_eq!(report.content, OFFER);
    assert_eq!(report.sender, shop_id.to_string());
    assert_eq!(report.recipient, carol.account_id().to_string());
    assert_eq!(report.reporter, carol.account_id().to_string());
    assert_eq!(report.category, "service");
    assert_eq!(report.reason, "spam: a prize I never asked for");
    assert!(report.accept_id > 0);

    // Altered text: the commitment does not open (the relay's tag still
    // checks: the envelope is the delivered one).
    let honest = carol.report_contents(shop_id, id).expect("contents");
    let mut altered = honest.clone();
    let mut content = Content::decode(altered.content.as_slice()).expect("content");
    content.body = Some(content::Body::Text(Text {
        body: "Claim your prize at prize.example, today only. Call +44 20 7946 0000".into(),
    }));
    altered.content = content.encode_to_vec();
    let altered_id = carol.file_report(&altered).await.expect("filed");

    // Naming another sender: the relay's tag does not check.
    let other = AccountId::from_bytes(&[0x42; 16]).expect("id");
    let mut renamed = honest.clone();
    if let Some(envelope) = renamed.envelope.as_mut() {
        envelope.sender_account = other.to_vec();
    }
    let renamed_id = carol.file_report(&renamed).await.expect("filed");

    // Another tag than the relay's: refused too.
    let mut forged_tag = honest.clone();
    forged_tag.relay_franking_tag[0] ^= 1;
    let forged_id = carol.file_report(&forged_tag).await.expect("filed");

    let admin = relay.admin_client();
    let altered = admin.report(&altered_id.to_string()).await.expect("show");
    assert!(!altered.valid);
    assert!(altered.checks.relay_tag && !altered.checks.commitment_opens);
    let renamed = admin.report(&renamed_id.to_string()).await.expect("show");
    assert!(!renamed.valid);
    assert!(!renamed.checks.relay_tag);
    assert_eq!(renamed.sender, other.to_string());
    let forged = admin.report(&forged_id.to_string()).await.expect("show");
    assert!(!forged.valid && !forged.checks.relay_tag);
    assert_eq!(reports(&relay).await.iter().filter(|r| r.valid).count(), 1);

    // The shop cannot report what it sent: it keeps no franking key of it.
    let mut shop = shop;
    assert!(matches!(
        shop.report(id, "").await,
        Err(ClientError::NotReportable(_))
    ));

    // No report plaintext (text, reason) in the relay's data directory.
    relay.stop().await;
    for file in files(&relay.data_dir) {
        let bytes = std::fs::read(&file).expect("read");
        for needle in [OFFER.as_bytes(), b"prize.example", b"a prize I never"] {
            assert!(
                !contains(&bytes, needle),
                "{} holds report plaintext",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn a_tampered_commitment_is_refused_by_the_recipient() {
    let relay = start_relay().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut customer = registered(&relay, dir.path(), "customer pass").await;
    let mut shop = Business::start(&relay, customer.account_id()).await;
    let shop_id = shop.account.id;
    customer.send_text(shop_id, "hello").await.expect("write");

    // Honest franking by hand: shown.
    let (_, reply) = shop.send_franked("honest", false).await;
    assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
    let (_, text) = wait_message(&mut customer, shop_id).await;
    assert_eq!(text, "honest");

    // The commitment (bound and in the envelope alike) does not open over
    // the content: refused, kept as evidence, never shown.
    let (tampered_id, reply) = shop.send_franked("tampered", true).await;
    assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
    let reason = wait_for(&mut customer, |e| match e {
        Event::Refused { reason, .. } => Some(reason.clone()),
        Event::Message { text, .. } => panic!("shown: {text}"),
        _ => None,
    })
    .await;
    assert_eq!(reason, LabelError::Franking(FrankingError::DoesNotOpen));
    let evidence = customer.evidence().expect("evidence").evidence;
    assert_eq!(evidence.len(), 1);
    assert_eq!(evidence[0].envelope.message_id, tampered_id.to_vec());
    let history = customer.history(&shop_id).expect("history");
    assert!(history.iter().all(|m| m.body != "tampered"));
    // The session is fine: the next honest message is shown.
    shop.send_franked("after", false).await;
    let (_, text) = wait_message(&mut customer, shop_id).await;
    assert_eq!(text, "after");
}

#[tokio::test]
async fn a_business_message_without_a_commitment_is_refused_and_bad_reports_store_nothing() {
    let relay = start_relay().await;
    let customer = Account::new(1);
    customer.register(relay.addr).await;
    let (mut c, _) = customer.login(relay.addr, 1).await;
    let business = Account::new(1);
    business
        .register_as(relay.addr, AccountKind::Business)
        .await;
    let (mut b, _) = business.login(relay.addr, 1).await;
    // The customer opens the window.
    let reply = c
        .request(send_body_as(
            &business.id,
            &[1],
            id(1),
            b"hello",
            Category::Conversation,
        ))
        .await;
    assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
    c.ack(&b.next_envelope().await).await;

    // No commitment, or one of the wrong length: FRANKING_REQUIRED.
    for tag in [Vec::new(), vec![7; 16], vec![7; 33]] {
        let mut body = send_body_as(&customer.id, &[1], id(2), b"reply", Category::Service);
        if let client_frame::Body::Send(send) = &mut body {
            send.franking_tag = tag.clone();
        }
        let reply = b.request(body).await;
        let expected = if tag.len() > 64 {
            ErrorCode::InvalidRequest
        } else {
            ErrorCode::FrankingRequired
        };
        assert_eq!(error_code(&reply), expected, "{tag:?} {reply:?}");
    }
    // Nothing was queued for the customer; a franked one goes through.
    let mut body = send_body_as(&customer.id, &[1], id(2), b"reply", Category::Service);
    if let client_frame::Body::Send(send) = &mut body {
        send.franking_tag = vec![7; 32];
    }
    assert!(matches!(b.request(body).await, Body::Accepted(_)));
    // It comes with the relay's tag (Deliver fields 2 and 3).
    let deliver = c
        .next_matching(|b| match b {
            Body::Deliver(d) => Some(d.clone()),
            _ => None,
        })
        .await;
    let envelope = deliver.envelope.expect("envelope");
    assert_eq!(envelope.message_id, id(2).to_vec());
    assert_eq!(deliver.relay_franking_tag.len(), 32);
    assert_eq!(deliver.relay_franking_key_id, 1);

    // Bad reports: typed refusal, nothing stored.
    for sealed in [
        Vec::new(),
        vec![1; 10],
        vec![2; 100],
        vec![1; 64 * 1024 + 1],
    ] {
        let reply = c
            .request(client_frame::Body::FileReport(wire::FileReport { sealed }))
            .await;
        assert_eq!(error_code(&reply), ErrorCode::ReportRefused, "{reply:?}");
    }
    assert!(reports(&relay).await.is_empty());
    // At most 200 reports from one account; the next is refused and not
    // stored (the relay cannot tell these opaque bytes from real reports).
    let opaque = |n: u8| {
        let mut sealed = vec![1u8];
        sealed.extend_from_slice(&[n; 80]);
        client_frame::Body::FileReport(wire::FileReport { sealed })
    };
    for n in 0..200u32 {
        let reply = c.request(opaque(n as u8)).await;
        assert!(matches!(reply, Body::ReportFiled(_)), "{n}: {reply:?}");
    }
    let reply = c.request(opaque(0)).await;
    assert_eq!(error_code(&reply), ErrorCode::ReportRefused, "{reply:?}");
    let kept = reports(&relay).await;
    assert_eq!(kept.len(), 200);
    assert!(kept.iter().all(|r| !r.valid && !r.checks.opened));
    // Another account still may.
    let reply = b.request(opaque(1)).await;
    assert!(matches!(reply, Body::ReportFiled(_)), "{reply:?}");
    // Unknown or malformed report ids: typed admin refusals.
    let admin = relay.admin_client();
    for id in ["999", "x"] {
        assert!(admin.report(id).await.is_err());
    }
}
