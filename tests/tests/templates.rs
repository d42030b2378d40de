//! Approved templates, enforced by the relay: a business submits a
//! template, which waits as pending until the operator approves it with
//! `relay admin` (an approval signed by the operator key); only then may
//! the business send it, and only under the approved category. Another
//! business cannot use its id; a revoked template is refused again; a
//! rejected one says why to its business. Anyone reads the approved and
//! revoked records and checks them against the operator key; pending and
//! rejected templates are the business's alone. Every refusal is typed
//! and stores nothing.

use crate::support;

use axum::http::{Method, StatusCode};
use comptoir_protocol::OperatorKey;
use comptoir_protocol::proto::wire::{
    self, AccountKind, Category, ErrorCode, TemplateStatus, client_frame, server_frame::Body,
};
use comptoir_protocol::template::{ApprovalStatus, verify_template_approval};
use comptoir_protocol::template_wire::approval_from_wire;
use comptoir_relay::admin::ErrorBody;
use comptoir_relay::admin::client::AdminClientError;
use comptoir_relay::storage::report;
use support::templates::{id_for, submit, support_template};
use support::*;

/// A business's template send of `category` naming `template_id`, to
/// `to`'s device 1.
async fn send_template(
    b: &mut Client,
    to: &Account,
    n: u8,
    category: Category,
    template_id: &str,
) -> Body {
    let mut body = send_body_as(&to.id, &[1], id(n), b"ciphertext", category);
    if let client_frame::Body::Send(send) = &mut body {
        send.template_id = template_id.into();
    }
    b.request(body).await
}

async fn templates_of(c: &mut Client, business: &Account) -> Vec<wire::TemplateEntry> {
    match c
        .request(client_frame::Body::GetTemplates(wire::GetTemplates {
            business_account: business.id.to_vec(),
            template_id: String::new(),
        }))
        .await
    {
        Body::Templates(list) => list.templates,
        other => panic!("templates: {other:?}"),
    }
}

fn refused(reply: &Body, code: ErrorCode) {
    assert_eq!(error_code(reply), code, "{reply:?}");
}

fn accepted(reply: &Body) {
    assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
}

async fn business(relay: &TestRelay) -> (Account, Client) {
    let account = Account::new(1);
    account.register_as(relay.addr, AccountKind::Business).await;
    let (conn, _) = account.login(relay.addr, 1).await;
    (account, conn)
}

fn refusal_of(error: AdminClientError) -> (u16, String) {
    match error {
        AdminClientError::Refused { status, error, .. } => (status, error),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn a_template_is_sent_only_once_approved_only_by_its_business_and_only_under_its_category() {
    let mut relay = start_relay().await;
    let admin = relay.admin_client();
    let operator = OperatorKey::from_bytes(
        &hex::decode(admin.operator_key().await.expect("key").operator_key).expect("hex"),
    )
    .expect("operator key");
    let (shop, mut b) = business(&relay).await;
    let (rival, mut r) = business(&relay).await;
    let customer = Account::new(1);
    customer.register(relay.addr).await;
    let (mut c, _) = customer.login(relay.addr, 1).await;
    // The customer writes: the window is open, so no consent is needed
    // for utility; the template's approval still is.
    accepted(
        &c.request(send_body(&shop.id, &[1], id(100), b"hello"))
            .await,
    );

    let template = support_template(shop.id, Category::Utility);
    let tid = id_for(shop.id, Category::Utility);
    match submit(&mut b, &template).await {
        Body::TemplateSubmitted(s) => {
            assert_eq!(s.template_id, tid);
            assert_eq!(s.status, TemplateStatus::Pending as i32);
        }
        other => panic!("submit: {other:?}"),
    }
    // Submitting it again changes nothing.
    match submit(&mut b, &template).await {
        Body::TemplateSubmitted(s) => assert_eq!(s.status, TemplateStatus::Pending as i32),
        other => panic!("submit again: {other:?}"),
    }

    // Pending: refused, and only its business sees it.
    refused(
        &send_template(&mut b, &customer, 1, Category::Utility, &tid).await,
        ErrorCode::TemplateNotApproved,
    );
    assert!(templates_of(&mut c, &shop).await.is_empty());
    let own = templates_of(&mut b, &shop).await;
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].status, TemplateStatus::Pending as i32);
    assert!(own[0].approval.is_none());

    // The operator sees it pending and approves it.
    let pending = admin.templates(Some("pending")).await.expect("list");
    assert_eq!(pending.templates.len(), 1);
    assert_eq!(pending.templates[0].template_id, tid);
    assert_eq!(pending.templates[0].name, "order_update");
    let approved = admin.approve_template(&tid).await.expect("approve");
    assert_eq!(approved.status, "approved");
    assert_eq!(approved.template, template);
    assert_eq!(
        refusal_of(admin.approve_template(&tid).await.expect_err("twice")),
        (409, "conflict".into())
    );

    // Approved: sent under its category; refused relabelled, or by another
    // business naming its id.
    accepted(&send_template(&mut b, &customer, 2, Category::Utility, &tid).await);
    refused(
        &send_template(&mut b, &customer, 3, Category::Marketing, &tid).await,
        ErrorCode::TemplateNotApproved,
    );
    refused(
        &send_template(&mut b, &customer, 4, Category::Authentication, &tid).await,
        ErrorCode::TemplateNotApproved,
    );
    accepted(
        &c.request(send_body(&rival.id, &[1], id(101), b"hello"))
            .await,
    );
    refused(
        &send_template(&mut r, &customer, 5, Category::Utility, &tid).await,
        ErrorCode::TemplateNotApproved,
    );
    refused(
        &send_template(&mut b, &customer, 6, Category::Utility, "order_update").await,
        ErrorCode::TemplateNotApproved,
    );

    // Anyone reads the approval and checks it with the operator key.
    let seen = templates_of(&mut c, &shop).await;
    assert_eq!(seen.len(), 1);
    let (approval, signature) =
        approval_from_wire(seen[0].approval.as_ref().expect("approval")).expect("record");
    verify_template_approval(&operator, &approval, &signature).expect("signed by the operator");
    assert_eq!(approval.status, ApprovalStatus::Approved);
    approval
        .covers(&serde_json::from_str(&seen[0].template_json).expect("template JSON"))
        .expect("covers the template");

    // Revoked: refused again; the signed revocation supersedes the
    // approval for whoever reads it.
    let revoked = admin.revoke_template(&tid).await.expect("revoke");
    assert_eq!(revoked.status, "revoked");
    refused(
        &send_template(&mut b, &customer, 7, Category::Utility, &tid).await,
        ErrorCode::TemplateNotApproved,
    );
    let seen = templates_of(&mut c, &shop).await;
    let (revocation, signature) =
        approval_from_wire(seen[0].approval.as_ref().expect("revocation")).expect("record");
    verify_template_approval(&operator, &revocation, &signature).expect("signed");
    assert_eq!(revocation.status, ApprovalStatus::Revoked);
    assert!(revocation.supersedes(&approval));
    assert!(approval.covers(&template).is_ok() && revocation.covers(&template).is_err());

    // Approved again (a newer record), it may be sent again.
    admin.approve_template(&tid).await.expect("approve again");
    accepted(&send_template(&mut b, &customer, 8, Category::Utility, &tid).await);

    drop((b, r, c));
    relay.stop().await;
    let report = report::read(&relay.data_dir).await.expect("accounting");
    assert_eq!(
        report.ledger.len(),
        2,
        "only the two accepted templates reached the ledger"
    );
}

#[tokio::test]
async fn a_rejected_template_tells_its_business_why_and_bad_submissions_store_nothing() {
    let relay = start_relay().await;
    let admin = relay.admin_client();
    let (shop, mut b) = business(&relay).await;
    let customer = Account::new(1);
    customer.register(relay.addr).await;
    let (mut c, _) = customer.login(relay.addr, 1).await;

    let template = support_template(shop.id, Category::Marketing);
    let tid = id_for(shop.id, Category::Marketing);
    submit(&mut b, &template).await;
    // The operator's bad requests are typed and change nothing.
    let no_reason = admin
        .raw(
            Method::POST,
            &format!("/v1/templates/{tid}/reject"),
            Some(serde_json::json!({ "reason": " " })),
            true,
        )
        .await
        .expect("answer");
    assert_eq!(no_reason.0, StatusCode::BAD_REQUEST);
    let body: ErrorBody = serde_json::from_slice(&no_reason.1).expect("error body");
    assert_eq!(body.error, "bad_request");
    assert_eq!(
        refusal_of(admin.revoke_template(&tid).await.expect_err("pending")),
        (409, "conflict".into())
    );
    assert_eq!(
        refusal_of(
            admin
                .approve_template(&"ab".repeat(32))
                .await
                .expect_err("unknown")
        ),
        (404, "unknown_template".into())
    );
    assert_eq!(
        refusal_of(admin.template("nothex").await.expect_err("bad id")),
        (400, "bad_request".into())
    );
    assert_eq!(
        refusal_of(
            admin
                .templates(Some("sideways"))
                .await
                .expect_err("bad status")
        ),
        (400, "bad_request".into())
    );
    assert_eq!(admin.template(&tid).await.expect("show").status, "pending");

    let rejected = admin
        .reject_template(&tid, "marketing needs an opt-out line in the footer")
        .await
        .expect("reject");
    assert_eq!(rejected.status, "rejected");
    let own = templates_of(&mut b, &shop).await;
    assert_eq!(own[0].status, TemplateStatus::Rejected as i32);
    assert_eq!(
        own[0].reason,
        "marketing needs an opt-out line in the footer"
    );
    assert!(templates_of(&mut c, &shop).await.is_empty(), "not public");

    // Bad submissions: typed refusals, nothing kept.
    let before = admin.templates(None).await.expect("list").templates.len();
    let not_json = b
        .request(client_frame::Body::SubmitTemplate(wire::SubmitTemplate {
            template_json: "{not json".into(),
        }))
        .await;
    refused(&not_json, ErrorCode::InvalidRequest);
    // Valid JSON of another shape: the reason names no Rust type.
    let not_a_template = b
        .request(client_frame::Body::SubmitTemplate(wire::SubmitTemplate {
            template_json: "[]".into(),
        }))
        .await;
    refused(&not_a_template, ErrorCode::InvalidRequest);
    let Body::Error(said) = &not_a_template else {
        panic!("refused")
    };
    assert!(
        !["struct ", "enum ", "Template"]
            .iter()
            .any(|rust| said.message.contains(rust)),
        "{}",
        said.message
    );
    let mut too_long = support_template(shop.id, Category::Utility);
    too_long.body = "x".repeat(1025);
    refused(&submit(&mut b, &too_long).await, ErrorCode::InvalidRequest);
    let someone_elses = support_template(customer.id, Category::Utility);
    refused(
        &submit(&mut b, &someone_elses).await,
        ErrorCode::InvalidRequest,
    );
    let from_customer = support_template(customer.id, Category::Utility);
    refused(
        &submit(&mut c, &from_customer).await,
        ErrorCode::AccountKind,
    );
    let huge = b
        .request(client_frame::Body::SubmitTemplate(wire::SubmitTemplate {
            template_json: " ".repeat(20_000),
        }))
        .await;
    refused(&huge, ErrorCode::InvalidRequest);
    assert_eq!(
        admin.templates(None).await.expect("list").templates.len(),
        before
    );
}

/// A template of `shop` named `name` (distinct names, distinct ids).
fn named_template(
    shop: comptoir_protocol::AccountId,
    name: &str,
) -> comptoir_protocol::template::Template {
    let mut template = support_template(shop, Category::Utility);
    template.name = name.into();
    template
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_business_keeps_at_most_250_live_templates_even_submitting_at_once() {
    const MOST: usize = 250;
    const DEVICES: u32 = 12;
    let relay = start_relay().await;
    let admin = relay.admin_client();
    let shop = Account::new(DEVICES);
    shop.register_as(relay.addr, AccountKind::Business).await;
    let (mut b, _) = shop.login(relay.addr, 1).await;
    let before = MOST - 5;
    for n in 0..before {
        let reply = submit(&mut b, &named_template(shop.id, &format!("notice_{n}"))).await;
        assert!(matches!(reply, Body::TemplateSubmitted(_)), "{reply:?}");
    }

    // Twelve devices submit a new template each at the same moment: five
    // places are left, and exactly five are taken.
    let mut devices = Vec::new();
    for device in 1..=DEVICES {
        devices.push(shop.login(relay.addr, device).await.0);
    }
    let racing = devices.into_iter().enumerate().map(|(n, mut conn)| {
        let template = named_template(shop.id, &format!("racing_{n}"));
        tokio::spawn(async move { submit(&mut conn, &template).await })
    });
    let mut taken = 0;
    for reply in futures_util::future::join_all(racing).await {
        match reply.expect("submitting task") {
            Body::TemplateSubmitted(_) => taken += 1,
            refusal => {
                refused(&refusal, ErrorCode::InvalidRequest);
                let Body::Error(error) = &refusal else {
                    unreachable!()
                };
                assert!(
                    error.message.contains("ask the operator to revoke"),
                    "{error:?}"
                );
            }
        }
    }
    assert_eq!(taken, MOST - before, "places left, all taken, no more");
    let (mut b, _) = shop.login(relay.addr, 1).await;
    let kept = templates_of(&mut b, &shop).await;
    assert_eq!(kept.len(), MOST);

    // Full: a new one is refused and stores nothing; one already kept is
    // answered as before.
    let late = named_template(shop.id, "one_too_many");
    refused(&submit(&mut b, &late).await, ErrorCode::InvalidRequest);
    assert_eq!(templates_of(&mut b, &shop).await.len(), MOST);
    let again = submit(&mut b, &named_template(shop.id, "notice_0")).await;
    assert!(matches!(again, Body::TemplateSubmitted(_)), "{again:?}");

    // A rejected template stays on record but no longer counts.
    let first = named_template(shop.id, "notice_0")
        .template_id()
        .expect("valid")
        .to_hex();
    admin
        .reject_template(&first, "not needed")
        .await
        .expect("reject");
    match submit(&mut b, &late).await {
        Body::TemplateSubmitted(s) => assert_eq!(s.status, TemplateStatus::Pending as i32),
        other => panic!("after a rejection: {other:?}"),
    }
    assert_eq!(templates_of(&mut b, &shop).await.len(), MOST + 1);
    // Nor can the operator make it live again past the limit.
    let (status, error) = refusal_of(admin.approve_template(&first).await.expect_err("full"));
    assert_eq!((status, error.as_str()), (409, "conflict"));
    let kept = admin.template(&first).await.expect("show");
    assert_eq!(kept.status, "rejected");
}
