//! Quality rating and messaging tiers (issue 14 item 5) on a real relay
//! under a moved clock, with small tier limits from `[tiers]` (3, 6, 9,
//! 12, unlimited) so that a tier fills with a handful of customers:
//! a business reaches its limit of distinct customers by templates outside
//! their window, the next one gets `QUOTA_EXCEEDED` with the time to
//! retry (honest to the second), templates inside a customer's window and
//! to customers already reached go on; once the oldest reach is 24 hours
//! old it sends again; the operator's override holds the tier; after a
//! day with half its limit used and a rating not low it moves up; blocks
//! with reasons bring its rating to low and it moves down; the state
//! outlives a restart; bad admin input is refused, typed, and changes
//! nothing.

use crate::support;

use std::path::Path;

use comptoir_protocol::ConsentCategories;
use comptoir_protocol::proto::wire::{
    self, AccountKind, BlockReason, Category, ErrorCode, client_frame, server_frame::Body,
};
use comptoir_relay::Config;
use comptoir_relay::admin::cli::{self, AdminArgs, AdminCommand, BusinessCommand};
use comptoir_relay::admin::client::AdminClientError;
use comptoir_relay::admin::quality::QualityBody;
use support::*;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn small_tiers(config: &mut Config) {
    config.tiers.limits = vec![3, 6, 9, 12];
    // Ten customers at least as the audience: one block with no reason
    // (weight 1) is 100‰ (medium), one more for spam (3) makes 400‰ (low).
    config.tiers.min_audience = 10;
    config.tiers.medium_permille = 100;
    config.tiers.low_permille = 300;
}

async fn relay_in(dir: &Path) -> TestRelay {
    start_relay_in(dir, small_tiers, None).await
}

/// A customer who consented to the business's utility templates, logged in.
async fn consenting(relay: &TestRelay, business: &Account) -> (Account, Client) {
    let customer = Account::new(1);
    customer.register(relay.addr).await;
    let (mut conn, _) = customer.login(relay.addr, 1).await;
    let grant = consent_body(
        &customer,
        1,
        business,
        ConsentCategories::UTILITY,
        1,
        365 * DAY_MS,
    );
    assert!(matches!(conn.request(grant).await, Body::Ok(_)));
    (customer, conn)
}

/// The business's utility template to `to`: the relay's answer.
async fn template(b: &mut Client, to: &Account, n: u8) -> Body {
    let mut body = send_body_as(&to.id, &[1], id(n), b"ciphertext", Category::Utility);
    if let client_frame::Body::Send(send) = &mut body {
        send.template_id = templates::id_for(b.account.expect("logged in"), Category::Utility);
    }
    b.request(body).await
}

fn accepted(reply: &Body) {
    assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
}

/// A `QUOTA_EXCEEDED` refusal: its `retry_after_ms`.
fn over_limit(reply: &Body) -> u64 {
    match reply {
        Body::Error(e) if e.code == ErrorCode::QuotaExceeded as i32 => {
            assert!(e.message.contains("messaging tier"), "{e:?}");
            e.retry_after_ms
        }
        other => panic!("expected QUOTA_EXCEEDED, got {other:?}"),
    }
}

async fn standing(b: &mut Client) -> wire::Standing {
    match b
        .request(client_frame::Body::GetStanding(wire::GetStanding {}))
        .await
    {
        Body::Standing(s) => s,
        other => panic!("standing: {other:?}"),
    }
}

async fn quality(relay: &TestRelay, business: &Account) -> QualityBody {
    relay
        .admin_client()
        .business_quality(&business.id.to_string())
        .await
        .expect("quality")
}

#[tokio::test]
async fn tiers_fill_refuse_with_a_retry_time_move_up_and_down_and_the_operator_can_fix_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut relay = relay_in(dir.path()).await;
    let shop = Account::new(1);
    shop.register_as(relay.addr, AccountKind::Business).await;
    let (mut b, _) = shop.login(relay.addr, 1).await;
    relay.approve_support_templates(&mut b).await;
    let mut customers = Vec::new();
    for _ in 0..8 {
        customers.push(consenting(&relay, &shop).await);
    }
    let fresh = quality(&relay, &shop).await;
    assert_eq!(
        (fresh.rating.as_str(), fresh.tier, fresh.limit),
        ("high", 1, Some(3))
    );

    // Three customers fill tier 1; the fourth is refused with the time
    // until the first reach is 24 hours old; nothing was stored for it.
    let first_at = relay.clock.now_ms();
    for (n, (c, _)) in customers[..3].iter().enumerate() {
        accepted(&template(&mut b, c, n as u8 + 1).await);
    }
    let before = relay.clock.now_ms();
    let retry = over_limit(&template(&mut b, &customers[3].0, 4).await);
    let after = relay.clock.now_ms();
    assert!(
        retry <= DAY_MS && retry + (after - first_at) >= DAY_MS,
        "retry after {retry} ms"
    );
    // A customer reached already takes more templates; a customer inside
    // its window gets templates and replies whatever the tier says.
    accepted(&template(&mut b, &customers[0].0, 5).await);
    let hello = send_body(&shop.id, &[1], id(1), b"hello");
    accepted(&customers[4].1.request(hello).await);
    accepted(&template(&mut b, &customers[4].0, 6).await);
    let s = standing(&mut b).await;
    assert_eq!(
        (s.rating.as_str(), s.tier.as_str(), s.tier_limit),
        ("high", "1 (3 customers a day)", 3)
    );
    assert_eq!((s.customers_reached_24h, s.customers_reached_7d), (3, 3));
    assert!(s.next_slot_at_ms > relay.clock.now_ms());

    // The operator holds it at tier 1 (as the override says).
    let held = relay
        .admin_client()
        .set_business_tier(&shop.id.to_string(), "1")
        .await
        .expect("override");
    assert!(held.overridden);
    assert_eq!((held.tier, held.limit), (1, Some(3)));

    // Five seconds before the retry time: still refused, with as much to go.
    let to = |target: u64| target as i64 - relay.clock.now_ms() as i64;
    relay.clock.shift(to(before + retry - 5000));
    let left = over_limit(&template(&mut b, &customers[3].0, 7).await);
    assert!(left > 0 && left <= 5000 + (after - before), "{left}");
    // Past it: the three slots are free again, under the same tier (a
    // minute later, the window the customer opened has closed too).
    relay.clock.shift(to(after + retry + 1));
    accepted(&template(&mut b, &customers[3].0, 8).await);
    relay.clock.shift(60_000);
    for (n, (c, _)) in customers[4..6].iter().enumerate() {
        accepted(&template(&mut b, c, 10 + n as u8).await);
    }
    over_limit(&template(&mut b, &customers[6].0, 13).await);
    // Evaluation ran underneath (a day, 3 of 3 used, rating high: up).
    let q = quality(&relay, &shop).await;
    assert_eq!((q.tier, q.evaluated_tier, q.overridden), (1, 2, true));

    // Back to evaluation: tier 2, limit 6, three used.
    let auto = relay
        .admin_client()
        .set_business_tier(&shop.id.to_string(), "auto")
        .await
        .expect("auto");
    assert_eq!(
        (auto.tier, auto.limit, auto.overridden),
        (2, Some(6), false)
    );
    accepted(&template(&mut b, &customers[6].0, 14).await);
    let s = standing(&mut b).await;
    assert_eq!(
        (s.tier.as_str(), s.tier_limit, s.customers_reached_24h),
        ("2 (6 customers a day)", 6, 4)
    );
    // Four new customers at once for the two slots left: the limit is
    // checked with each accept, so exactly two get through.
    let mut pending = Vec::new();
    for (n, i) in [0, 1, 2, 7].into_iter().enumerate() {
        let mut body = send_body_as(
            &customers[i].0.id,
            &[1],
            id(20 + n as u8),
            b"ciphertext",
            Category::Utility,
        );
        if let client_frame::Body::Send(send) = &mut body {
            send.template_id = templates::id_for(shop.id, Category::Utility);
        }
        pending.push(b.send(body).await);
    }
    let mut through = 0;
    for request in pending {
        match b.reply(request).await {
            Body::Accepted(_) => through += 1,
            refused => {
                over_limit(&refused);
            }
        }
    }
    assert_eq!(through, 2);
    assert_eq!(standing(&mut b).await.customers_reached_24h, 6);

    // Blocks with reasons: one for no reason is medium, one for spam low.
    let block = |reason: BlockReason| {
        client_frame::Body::Block(wire::Block {
            account_id: shop.id.to_vec(),
            reason: reason as i32,
        })
    };
    assert!(matches!(
        customers[0]
            .1
            .request(block(BlockReason::Unspecified))
            .await,
        Body::Ok(_)
    ));
    assert_eq!(standing(&mut b).await.rating, "medium");
    assert!(matches!(
        customers[1].1.request(block(BlockReason::Spam)).await,
        Body::Ok(_)
    ));
    let low = standing(&mut b).await;
    assert_eq!((low.rating.as_str(), low.blocks_7d), ("low", 2));
    // Not before a day has passed since the last evaluation...
    assert_eq!(low.tier_limit, 6);
    // ...then down, though it used half its limit.
    relay.clock.shift(DAY_MS as i64);
    let down = standing(&mut b).await;
    assert_eq!(
        (down.rating.as_str(), down.tier.as_str(), down.tier_limit),
        ("low", "1 (3 customers a day)", 3)
    );
    let q = quality(&relay, &shop).await;
    assert_eq!((q.tier, q.rating.as_str()), (1, "low"));
    assert_eq!(q.blocks_7d.get("spam"), Some(&1));
    assert_eq!(q.blocks_7d.get("none"), Some(&1));
    assert_eq!(q.penalty, 4);

    // Bad admin input: typed, and nothing changes.
    let admin = relay.admin_client();
    let business = shop.id.to_string();
    for (account, tier, error) in [
        (business.as_str(), "6", "bad_request"),
        (business.as_str(), "0", "bad_request"),
        (business.as_str(), "high", "bad_request"),
        ("not-an-account", "2", "bad_request"),
        (&customers[7].0.id.to_string(), "2", "not_a_business"),
        (&"0".repeat(32), "2", "not_a_business"),
    ] {
        match admin.set_business_tier(account, tier).await {
            Err(AdminClientError::Refused { error: e, .. }) => {
                assert_eq!(e, error, "{account} {tier}");
            }
            other => panic!("{account} {tier}: {other:?}"),
        }
    }
    let (status, _) = admin
        .raw(
            axum::http::Method::POST,
            &format!("/v1/businesses/{business}/tier"),
            Some(serde_json::json!({ "tier": "2", "extra": true })),
            true,
        )
        .await
        .expect("raw");
    assert_eq!(status.as_u16(), 400);
    assert_eq!(quality(&relay, &shop).await, q, "nothing changed");

    // `relay admin business tier|show` over the same API.
    let cli = |command: BusinessCommand| {
        let args = AdminArgs {
            admin: relay.admin,
            token_file: None,
            data_dir: dir.path().to_owned(),
            command: AdminCommand::Business(command),
        };
        async move {
            let code = tokio::task::spawn_blocking(move || cli::run(args))
                .await
                .expect("relay admin");
            format!("{code:?}")
        }
    };
    let success = format!("{:?}", std::process::ExitCode::SUCCESS);
    let tier = |tier: &str| BusinessCommand::Tier {
        account: business.clone(),
        tier: tier.to_owned(),
    };
    assert_eq!(cli(tier("unlimited")).await, success);
    let fixed = quality(&relay, &shop).await;
    assert_eq!((fixed.tier, fixed.limit, fixed.overridden), (5, None, true));
    assert_ne!(cli(tier("9")).await, success);
    assert_eq!(quality(&relay, &shop).await, fixed, "nothing changed");
    assert_eq!(cli(tier("auto")).await, success);
    assert_eq!(quality(&relay, &shop).await, q);
    let show = BusinessCommand::Show {
        account: business.clone(),
    };
    assert_eq!(
        cli(show).await,
        success,
        "a business with no profile shows its quality"
    );

    // A restart keeps the tier, the evaluation and the customers reached.
    drop(b);
    for (_, c) in customers {
        drop(c);
    }
    relay.stop().await;
    let relay = relay_in(dir.path()).await;
    let after = quality(&relay, &shop).await;
    assert_eq!(
        (
            after.tier,
            after.evaluated_at_ms,
            after.customers_reached_7d
        ),
        (q.tier, q.evaluated_at_ms, q.customers_reached_7d)
    );
}

#[tokio::test]
async fn only_verified_reports_of_the_last_seven_days_count_towards_the_rating() {
    use comptoir_protocol::proto::content::{Content, Text, content};
    use prost::Message;
    use support::client::{registered, registered_as, wait_message};

    let relay = start_relay_with(small_tiers).await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut shop = registered_as(
        &relay,
        &root.path().join("shop"),
        "pw-long-enough",
        AccountKind::Business,
    )
    .await;
    let mut carol = registered(&relay, &root.path().join("carol"), "pw-long-enough").await;
    carol
        .send_text(shop.account_id(), "hello")
        .await
        .expect("carol writes");
    wait_message(&mut shop, carol.account_id()).await;
    shop.send_text(carol.account_id(), "Claim your prize today")
        .await
        .expect("shop replies");
    let (id, _) = wait_message(&mut carol, shop.account_id()).await;

    // A report whose text was altered does not verify: it counts nothing.
    let honest = carol
        .report_contents(shop.account_id(), id)
        .expect("contents");
    let mut altered = honest.clone();
    let mut body = Content::decode(altered.content.as_slice()).expect("content");
    body.body = Some(content::Body::Text(Text {
        body: "Something else entirely".into(),
    }));
    altered.content = body.encode_to_vec();
    carol.file_report(&altered).await.expect("filed");
    let s = shop.standing().await.expect("standing");
    assert_eq!((s.rating.as_str(), s.verified_reports_7d), ("high", 0));

    // The genuine one does: 4 of an audience of 10 is 400‰, low.
    carol.report(id, "spam").await.expect("report");
    let s = shop.standing().await.expect("standing");
    assert_eq!((s.rating.as_str(), s.verified_reports_7d), ("low", 1));

    // Seven days later it no longer counts.
    relay.clock.shift(7 * DAY_MS as i64);
    let s = shop.standing().await.expect("standing");
    assert_eq!((s.rating.as_str(), s.verified_reports_7d), ("high", 0));
}
