//! A business's bill it can verify, over a real relay and the client
//! library: each billed template a customer device acked (signed) is a
//! line of the business's hash chain, priced at accept by the rate card;
//! the business fetches its own lines with the operator-signed head and
//! rate card and checks all of it (`Client::verify_bill`, what `comptoir
//! business bill verify` runs). A fetched bill with a line dropped,
//! reordered, altered or added, a bad device signature or a price off the
//! rate card fails with a typed error naming the line, and so does a
//! chain rewritten under a freshly signed head. Only a business
//! reads a bill, and only its own. The operator's export (JSON and CSV)
//! holds the same lines, with totals that are their sums, and the
//! business's standing says the same. Heads the relay signs each period
//! (moved clock) for grown chains come with the bill and the export and
//! are checked against the chain; a line acked by a device the customer
//! removed since still checks, from the earlier list the customer's
//! account key signed.

use crate::support;

use std::time::Duration;

use comptoir_client::{Client, ClientError, Event};
use comptoir_protocol::proto::wire::{ErrorCode, TemplateStatus};
use comptoir_protocol::template::{Template, TemplateCategory, TemplateId};
use comptoir_protocol::{AccountId, BillCategory, BillError, ConsentCategories};
use support::client::{registered, registered_business, url, wait_for};
use support::*;

const MONTH: Duration = Duration::from_secs(30 * 24 * 60 * 60);

fn template(business: AccountId, name: &str, category: TemplateCategory) -> Template {
    Template {
        business,
        name: name.into(),
        language: "en_GB".into(),
        category,
        header: None,
        body: format!("{name}: nothing to fill in."),
        footer: None,
        placeholders: Vec::new(),
        buttons: Vec::new(),
    }
}

/// Submit `template` and have the operator approve it; its id.
async fn approved(relay: &TestRelay, shop: &mut Client, template: &Template) -> TemplateId {
    let (id, status) = shop.submit_template(template).await.expect("submit");
    assert_eq!(status, TemplateStatus::Pending);
    relay
        .admin_client()
        .approve_template(&id.to_hex())
        .await
        .expect("approve");
    id
}

/// A customer, a business with a utility and a marketing template
/// approved, and three templates sent and acked (signed) by the
/// customer's device: two utility, one marketing, all outside the window.
async fn billed_three(relay: &TestRelay, dirs: &[tempfile::TempDir; 2]) -> (Client, Client) {
    let mut customer = registered(relay, dirs[0].path(), "customer pass").await;
    let mut shop = registered_business(relay, dirs[1].path(), "business pass").await;
    let shop_id = shop.account_id();
    customer
        .grant_consent(
            shop_id,
            ConsentCategories::UTILITY.union(ConsentCategories::MARKETING),
            MONTH,
        )
        .await
        .expect("consent");
    let utility = approved(
        relay,
        &mut shop,
        &template(shop_id, "order_update", TemplateCategory::Utility),
    )
    .await;
    let marketing = approved(
        relay,
        &mut shop,
        &template(shop_id, "winter_sale", TemplateCategory::Marketing),
    )
    .await;
    for id in [utility, marketing, utility] {
        delivered_and_proved(&mut shop, &mut customer, id).await;
    }
    (customer, shop)
}

/// `shop` sends template `id` to `customer`, which receives it unflagged;
/// returns once `shop` holds the signed proof (the line exists then).
async fn delivered_and_proved(shop: &mut Client, customer: &mut Client, id: TemplateId) {
    shop.send_template(customer.account_id(), &id, Vec::new())
        .await
        .expect("send");
    wait_for(customer, |e| match e {
        Event::Template { template_id, .. } if *template_id == id => Some(()),
        Event::Violation { violation, .. } => panic!("flagged: {violation}"),
        _ => None,
    })
    .await;
    wait_for(shop, |e| match e {
        Event::DeliveryProved { .. } => Some(()),
        _ => None,
    })
    .await;
}

fn refused_as(result: Result<comptoir_protocol::BillTotals, ClientError>) -> BillError {
    match result {
        Err(ClientError::Bill(error)) => error,
        other => panic!("expected a bill error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_business_verifies_its_bill_and_every_tampering_is_named() {
    let relay = start_relay().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (mut customer, mut shop) = billed_three(&relay, &dirs).await;

    let bill = shop.fetch_bill().await.expect("fetch the bill");
    assert_eq!(bill.lines.len(), 3);
    assert_eq!(bill.head.count, 3);
    let totals = shop
        .verify_bill(&bill)
        .await
        .expect("a genuine bill checks");
    // Default rate card, outside the window: utility 0.005, marketing 0.09.
    assert_eq!(totals.lines, 3);
    assert_eq!(totals.total_millionths, 5_000 + 90_000 + 5_000);
    assert_eq!(
        totals.per_category,
        [(2, 10_000), (0, 0), (1, 90_000), (0, 0)]
    );
    let prices: Vec<(BillCategory, bool, u64)> = bill
        .lines
        .iter()
        .map(|l| (l.category, l.inside_window, l.price_millionths))
        .collect();
    assert_eq!(
        prices,
        [
            (BillCategory::Utility, false, 5_000),
            (BillCategory::Marketing, false, 90_000),
            (BillCategory::Utility, false, 5_000),
        ]
    );

    let tampered = |change: &dyn Fn(&mut comptoir_client::Bill)| {
        let mut copy = bill.clone();
        change(&mut copy);
        copy
    };
    let cases: Vec<(&str, comptoir_client::Bill, BillError)> = vec![
        (
            "dropped",
            tampered(&|b| {
                b.lines.remove(1);
            }),
            BillError::Dropped { line: 2, got: 3 },
        ),
        (
            "reordered",
            tampered(&|b| b.lines.swap(1, 2)),
            BillError::OutOfOrder {
                line: 3,
                expected: 2,
            },
        ),
        (
            "altered",
            tampered(&|b| b.lines[0].delivered_at_ms -= 1),
            BillError::Altered { line: 1 },
        ),
        (
            "extra",
            tampered(&|b| {
                let mut more = b.lines[2].clone();
                more.index = 4;
                more.previous_hash = b.lines[2].hash();
                b.lines.push(more);
            }),
            BillError::Extra { line: 4, count: 3 },
        ),
        (
            "bad device signature",
            tampered(&|b| b.lines[2].device_signature[5] ^= 1),
            BillError::BadDeviceSignature { line: 3 },
        ),
    ];
    for (what, tampered, expected) in cases {
        assert_eq!(
            refused_as(shop.verify_bill(&tampered).await),
            expected,
            "{what}"
        );
    }
    let off_card = tampered(&|b| b.lines[1].price_millionths = 95_000);
    assert!(
        matches!(
            refused_as(shop.verify_bill(&off_card).await),
            BillError::PriceNotOnRateCard {
                line: 2,
                price: 95_000,
                expected: 90_000,
                ..
            }
        ),
        "price not on the rate card"
    );
    let forged_head = tampered(&|b| b.head.count = 2);
    assert_eq!(
        refused_as(shop.verify_bill(&forged_head).await),
        BillError::BadHeadSignature
    );
    // A relay that rewrites lines the business verified before, even
    // under a head its operator key signs anew, is caught: the chain no
    // longer extends the head verified last time.
    let operator =
        comptoir_relay::operator::load_or_create_operator_key(&relay.data_dir.join("operator.key"))
            .expect("the relay's operator key");
    let mut rewritten = bill.clone();
    rewritten.lines[0].price_millionths = 5_000;
    rewritten.lines[0].delivered_at_ms += 1;
    let (lines, head_hash) = comptoir_protocol::bill::chain(rewritten.lines);
    rewritten.lines = lines;
    rewritten.head = comptoir_protocol::BillHead {
        business: shop.account_id(),
        count: 3,
        head_hash,
        signed_at_ms: 1,
    }
    .sign(&operator);
    assert_eq!(
        refused_as(shop.verify_bill(&rewritten).await),
        BillError::Rewritten { count: 3 }
    );
    shop.verify_bill(&bill)
        .await
        .expect("the genuine bill still checks");

    // The business's standing says the same.
    let standing = shop.standing().await.expect("standing");
    assert_eq!((standing.lines, standing.total_millionths), (3, 100_000));
    assert_eq!(standing.rating, "high");
    assert_eq!(standing.tier, "1 (250 customers a day)");
    assert_eq!(standing.tier_limit, 250);
    assert_eq!(standing.customers_reached_today, 1);
    assert_eq!(standing.currency, "GBP");

    // A customer has no bill; another business reads only its own (empty).
    for refused in [
        customer.fetch_bill().await.err(),
        customer.standing().await.err(),
    ] {
        assert!(
            matches!(
                refused,
                Some(ClientError::Relay {
                    code: ErrorCode::AccountKind,
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = registered_business(&relay, other_dir.path(), "other pass").await;
    let theirs = other.fetch_bill().await.expect("fetch");
    assert!(theirs.lines.is_empty());
    assert_eq!(theirs.head.business_account, other.account_id().to_vec());
    assert_eq!(other.verify_bill(&theirs).await.expect("empty").lines, 0);
    // The shop's bill does not pass for another business's.
    assert_eq!(
        refused_as(other.verify_bill(&bill).await),
        BillError::OtherBusinessHead
    );

    // The operator's export holds the same lines; its totals are their sums.
    let admin = relay.admin_client();
    let shop_hex = shop.account_id().to_string();
    let json = exported_json(&admin, &shop_hex).await;
    let lines = json["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 3);
    let sum: u64 = lines
        .iter()
        .map(|l| l["price_millionths"].as_u64().expect("price"))
        .sum();
    assert_eq!(json["total_millionths"], sum);
    assert_eq!(json["total_millionths"], 100_000);
    assert_eq!(json["total_rounded"], "0.10");
    assert_eq!(json["totals"][0]["category"], "utility");
    assert_eq!(json["totals"][0]["total_millionths"], 10_000);
    assert_eq!(json["totals"][2]["total_millionths"], 90_000);
    for (line, fetched) in lines.iter().zip(&bill.lines) {
        assert_eq!(line["line_hash"], hex::encode(fetched.hash()));
    }
    // The export carries the chain's head, signed by the operator key.
    let hex_field = |v: &serde_json::Value| hex::decode(v.as_str().expect("hex")).expect("hex");
    let exported_head = comptoir_protocol::proto::wire::BillHead {
        business_account: shop.account_id().to_vec(),
        count: json["head"]["count"].as_u64().expect("count"),
        head_hash: hex_field(&json["head"]["head_hash"]),
        signed_at_ms: json["head"]["signed_at_ms"].as_u64().expect("time"),
        signature: hex_field(&json["head"]["signature"]),
    };
    let operator = shop.operator_key().expect("store").expect("pinned");
    let checked = comptoir_protocol::BillHead::verified(&exported_head, &operator).expect("signed");
    assert_eq!(
        (checked.count, checked.head_hash.to_vec()),
        (3, bill.head.head_hash.clone())
    );
    let csv = admin
        .export_bill(&shop_hex, Some(0), Some(u64::MAX), "csv")
        .await
        .expect("export csv");
    assert_eq!(csv.lines().filter(|l| l.contains(",utility,")).count(), 2);
    assert!(csv.contains("\nutility,2,10000,0.010000 GBP\n"), "{csv}");
    assert!(csv.contains("\nmarketing,1,90000,0.090000 GBP\n"), "{csv}");
    assert!(
        csv.contains("\nall,3,100000,0.100000 GBP (due: 0.10 GBP)\n"),
        "{csv}"
    );
    // An empty range exports nothing; a bad format is refused.
    let none: serde_json::Value = serde_json::from_str(
        &admin
            .export_bill(&shop_hex, Some(0), Some(1), "json")
            .await
            .expect("export"),
    )
    .expect("json");
    assert_eq!(none["total_lines"], 0);
    assert!(
        admin
            .export_bill(&shop_hex, None, None, "xml")
            .await
            .is_err()
    );

    // The same check from the command line, and the standing.
    shop.close().await.expect("close");
    let shop_pass = (&dirs[1], "business pass");
    let bill_verify = comptoir(shop_pass, &relay, &["business", "bill", "verify"]).await;
    assert_eq!(bill_verify.0, 0, "{bill_verify:?}");
    assert!(
        bill_verify
            .1
            .starts_with("bill checked: 3 lines, 0.10 GBP (100000 millionths)\n"),
        "{bill_verify:?}"
    );
    assert!(
        bill_verify.1.contains("\nmarketing\t1\t90000\n"),
        "{bill_verify:?}"
    );
    let status = comptoir(
        shop_pass,
        &relay,
        &["--output", "json", "business", "status"],
    )
    .await;
    assert_eq!(status.0, 0, "{status:?}");
    let status: serde_json::Value = serde_json::from_str(status.1.trim()).expect("json");
    assert_eq!(status["type"], "standing");
    assert_eq!(status["total_millionths"], 100_000);
    assert_eq!(status["total"], "0.10");
    assert_eq!(status["rating"], "high");
    assert_eq!(status["tier"], "1 (250 customers a day)");
    assert_eq!(status["tier_limit"], 250);
    // A customer's `business status` is refused.
    customer.close().await.expect("close");
    let refused = comptoir((&dirs[0], "customer pass"), &relay, &["business", "status"]).await;
    assert_ne!(refused.0, 0, "{refused:?}");
}

/// Run `comptoir <args>` on the account in `dir` opened with `passphrase`:
/// (exit code, stdout).
async fn comptoir(
    (dir, passphrase): (&tempfile::TempDir, &str),
    relay: &TestRelay,
    args: &[&str],
) -> (u8, String) {
    support::cli::comptoir_with_passphrase(dir.path(), passphrase, relay, args).await
}

/// A price change: the relay records the new card (in effect from its
/// restart) beside the old one, sends both with the bill, and the
/// business checks each line against the card in effect when it was
/// accepted, so the lines priced before the change still verify. A
/// restart with the same prices records no card; without the earlier
/// card the first lines are named as priced by no card given.
#[tokio::test]
async fn after_a_price_change_earlier_lines_still_verify() {
    let mut relay = start_relay().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (mut customer, mut shop) = billed_three(&relay, &dirs).await;
    let dearer = |config: &mut comptoir_relay::config::Config| {
        config.rates.utility = Some(comptoir_relay::config::PricesConfig {
            inside_window: 0,
            outside_window: 7_000,
        });
    };
    relay.stop().await;
    let mut relay = relay.start_again_with(dearer).await;
    for client in [&mut customer, &mut shop] {
        client.connect(&url(&relay)).await.expect("reconnect");
    }
    let utility = template(shop.account_id(), "order_update", TemplateCategory::Utility)
        .template_id()
        .expect("its id");
    delivered_and_proved(&mut shop, &mut customer, utility).await;

    let bill = shop.fetch_bill().await.expect("fetch the bill");
    assert_eq!(bill.lines.len(), 4);
    assert_eq!(
        bill.earlier_rate_cards.len(),
        1,
        "the card before the change"
    );
    assert_eq!(
        bill.lines
            .iter()
            .map(|l| l.price_millionths)
            .collect::<Vec<_>>(),
        [5_000, 90_000, 5_000, 7_000]
    );
    let totals = shop.verify_bill(&bill).await.expect("every line checks");
    assert_eq!(totals.total_millionths, 5_000 + 90_000 + 5_000 + 7_000);

    let mut without_old = bill.clone();
    without_old.earlier_rate_cards.clear();
    assert!(matches!(
        refused_as(shop.verify_bill(&without_old).await),
        BillError::NoRateCardInEffect { line: 1, .. }
    ));

    // The same prices after another restart: no new card.
    relay.stop().await;
    let relay = relay.start_again_with(dearer).await;
    shop.connect(&url(&relay)).await.expect("reconnect");
    let bill = shop.fetch_bill().await.expect("fetch again");
    assert_eq!(bill.earlier_rate_cards.len(), 1);
    shop.verify_bill(&bill).await.expect("still checks");
}

/// The relay's default period between two passes signing bill heads.
const HEAD_PERIOD_MS: i64 = comptoir_relay::billing::DEFAULT_HEAD_PERIOD_MS as i64;

/// Heads signed on the relay's schedule: as the moved clock passes each
/// period, the relay signs the head of each chain that grew since its last
/// periodic head (and none for a chain that did not, or a business with no
/// bill), the bill carries them and the business checks each against the
/// operator key and its chain; a tampered one, or one the chain does not
/// extend, fails with its typed error. The export carries them, and a
/// restart keeps them.
#[tokio::test]
async fn heads_are_signed_each_period_for_grown_chains_and_kept() {
    let relay = start_relay().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (mut customer, mut shop) = billed_three(&relay, &dirs).await;
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = registered_business(&relay, other_dir.path(), "other pass").await;
    let passes = "comptoir_bill_head_passes_total";
    let signed = "comptoir_bill_heads_signed_total";

    // Before the first period has passed: no periodic head.
    let bill = shop.fetch_bill().await.expect("fetch the bill");
    assert!(bill.periodic_heads.is_empty());
    assert_eq!(relay.metric(passes).await, 0.0);

    relay.clock.shift(HEAD_PERIOD_MS + 1_000);
    relay.wait_metric(passes, 1.0).await;
    assert_eq!(relay.metric(signed).await, 1.0, "the shop's chain only");
    let bill = shop.fetch_bill().await.expect("fetch the bill");
    assert_eq!(bill.periodic_heads.len(), 1);
    let first = bill.periodic_heads[0].clone();
    assert_eq!(first.count, 3);
    assert_eq!(first.head_hash, bill.lines[2].hash().to_vec());
    assert_eq!(first.business_account, shop.account_id().to_vec());
    shop.verify_bill(&bill).await.expect("the bill checks");
    let theirs = other.fetch_bill().await.expect("fetch");
    assert!(theirs.periodic_heads.is_empty(), "no bill, no head");

    // Another period, and the chain did not grow: no new head.
    relay.clock.shift(HEAD_PERIOD_MS);
    relay.wait_metric(passes, 2.0).await;
    assert_eq!(relay.metric(signed).await, 1.0);
    let bill = shop.fetch_bill().await.expect("fetch the bill");
    assert_eq!(bill.periodic_heads, std::slice::from_ref(&first));

    // One more line, another period: a head at 4 lines.
    let utility = template(shop.account_id(), "order_update", TemplateCategory::Utility)
        .template_id()
        .expect("its id");
    delivered_and_proved(&mut shop, &mut customer, utility).await;
    relay.clock.shift(HEAD_PERIOD_MS);
    relay.wait_metric(passes, 3.0).await;
    assert_eq!(relay.metric(signed).await, 2.0);
    let bill = shop.fetch_bill().await.expect("fetch the bill");
    assert_eq!(
        bill.periodic_heads
            .iter()
            .map(|h| h.count)
            .collect::<Vec<_>>(),
        [3, 4]
    );
    assert!(bill.periodic_heads[1].signed_at_ms > first.signed_at_ms);
    assert_eq!(
        bill.periodic_heads[1].head_hash,
        bill.lines[3].hash().to_vec()
    );
    let totals = shop.verify_bill(&bill).await.expect("the bill checks");
    assert_eq!(totals.lines, 4);

    // A tampered periodic head, or one signed by the operator key that
    // this chain does not extend, fails with its typed error.
    let mut tampered = bill.clone();
    tampered.periodic_heads[0].signed_at_ms += 1;
    assert_eq!(
        refused_as(shop.verify_bill(&tampered).await),
        BillError::BadPeriodicHeadSignature { count: 3 }
    );
    let operator =
        comptoir_relay::operator::load_or_create_operator_key(&relay.data_dir.join("operator.key"))
            .expect("the relay's operator key");
    let shop_id = shop.account_id();
    let signed_head = |count: u64, head_hash: Vec<u8>| {
        comptoir_protocol::BillHead {
            business: shop_id,
            count,
            head_hash: head_hash.try_into().expect("32 bytes"),
            signed_at_ms: first.signed_at_ms + 1,
        }
        .sign(&operator)
    };
    let mut contradicted = bill.clone();
    contradicted.periodic_heads[0] = signed_head(3, bill.lines[1].hash().to_vec());
    assert_eq!(
        refused_as(shop.verify_bill(&contradicted).await),
        BillError::PeriodicHeadNotInChain { count: 3 }
    );
    let mut beyond = bill.clone();
    beyond
        .periodic_heads
        .push(signed_head(5, bill.lines[3].hash().to_vec()));
    assert_eq!(
        refused_as(shop.verify_bill(&beyond).await),
        BillError::PeriodicHeadNotInChain { count: 5 }
    );

    // The export carries the periodic heads at its lines' counts.
    let admin = relay.admin_client();
    let shop_hex = shop.account_id().to_string();
    let json = exported_json(&admin, &shop_hex).await;
    let exported = json["periodic_heads"].as_array().expect("periodic heads");
    assert_eq!(exported.len(), 2);
    let hex_field = |v: &serde_json::Value| hex::decode(v.as_str().expect("hex")).expect("hex");
    let pinned = shop.operator_key().expect("store").expect("pinned");
    for (json_head, fetched) in exported.iter().zip(&bill.periodic_heads) {
        let head = comptoir_protocol::proto::wire::BillHead {
            business_account: shop.account_id().to_vec(),
            count: json_head["count"].as_u64().expect("count"),
            head_hash: hex_field(&json_head["head_hash"]),
            signed_at_ms: json_head["signed_at_ms"].as_u64().expect("time"),
            signature: hex_field(&json_head["signature"]),
        };
        comptoir_protocol::BillHead::verified(&head, &pinned).expect("signed");
        assert_eq!(&head, fetched);
    }
    let csv = admin
        .export_bill(&shop_hex, None, None, "csv")
        .await
        .expect("export csv");
    assert_eq!(csv.matches("\nperiodic_head,").count(), 2, "{csv}");
    assert!(
        csv.contains(&format!(
            "\nperiodic_head,3,{},{},",
            hex::encode(&first.head_hash),
            first.signed_at_ms
        )),
        "{csv}"
    );

    // A restart keeps them, and signs nothing new.
    let mut relay = relay;
    relay.stop().await;
    let relay = relay.start_again_at_same_address().await;
    shop.connect(&url(&relay)).await.expect("reconnect");
    let after = shop.fetch_bill().await.expect("fetch again");
    assert_eq!(after.periodic_heads, bill.periodic_heads);
    shop.verify_bill(&after).await.expect("still checks");
    assert_eq!(relay.metric(signed).await, 0.0);
}

/// A customer's device that acked a billed template and was removed from
/// the customer's device list afterwards: its line still verifies, with
/// the key from the signed list under which it was listed (carried by the
/// bill, checked against the customer's account key), and a key the relay
/// made up for it does not.
#[tokio::test]
async fn a_line_acked_by_a_device_removed_since_still_verifies() {
    let relay = start_relay().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut phone = registered(&relay, dirs[0].path(), "customer pass").await;
    let mut shop = registered_business(&relay, dirs[1].path(), "business pass").await;
    let shop_id = shop.account_id();
    phone
        .grant_consent(shop_id, ConsentCategories::UTILITY, MONTH)
        .await
        .expect("consent");
    let utility = approved(
        &relay,
        &mut shop,
        &template(shop_id, "order_update", TemplateCategory::Utility),
    )
    .await;
    let mut laptop = support::client::linked(&relay, &mut phone, dirs[2].path()).await;
    let laptop_device = laptop.device_id();
    // Only the laptop is online: its signed ack makes the line.
    phone.close_connection().await;
    delivered_and_proved(&mut shop, &mut laptop, utility).await;
    phone.connect(&url(&relay)).await.expect("reconnect");
    phone.remove_device(laptop_device).await.expect("remove");

    let bill = shop.fetch_bill().await.expect("fetch the bill");
    assert_eq!(bill.lines.len(), 1);
    assert_eq!(bill.lines[0].customer_device, laptop_device);
    // The bill carries the list, signed by the customer's account key,
    // that named the laptop.
    assert_eq!(bill.device_lists.len(), 1);
    let listed =
        comptoir_protocol::DeviceList::verify(&bill.device_lists[0], None).expect("a signed list");
    assert_eq!(listed.account_id, phone.account_id());
    assert!(listed.device(laptop_device).is_some());

    // A key the relay made up for the laptop, in a list it cannot sign
    // with the customer's account key, or signed by another account key,
    // is not taken: the line's device stays unknown.
    let invented = comptoir_protocol::IdentityKeyPair::generate(&mut rand::rng());
    let mut altered = bill.clone();
    let entry = altered.device_lists[0]
        .devices
        .iter_mut()
        .find(|d| d.device_id == laptop_device)
        .expect("the laptop's entry");
    entry.identity_key = invented.public().to_bytes().to_vec();
    let impostor = comptoir_protocol::AccountKeyPair::generate(&mut rand::rng());
    let mut resigned = bill.clone();
    resigned.device_lists = vec![
        comptoir_protocol::DeviceList::sign(
            &impostor,
            phone.account_id(),
            listed.version,
            listed
                .devices
                .iter()
                .map(|&(id, key)| {
                    if id == laptop_device {
                        (id, *invented.public())
                    } else {
                        (id, key)
                    }
                })
                .collect(),
        )
        .expect("signed"),
    ];
    let mut without = bill.clone();
    without.device_lists.clear();
    for (what, tampered) in [
        ("altered", altered),
        ("another account key", resigned),
        ("none", without),
    ] {
        assert_eq!(
            refused_as(shop.verify_bill(&tampered).await),
            BillError::UnknownDevice {
                line: 1,
                device: laptop_device
            },
            "{what}"
        );
    }

    let totals = shop
        .verify_bill(&bill)
        .await
        .expect("the removed device's line still checks");
    assert_eq!(totals.total_millionths, 5_000);
}

/// The operator's JSON export of `business`'s whole bill.
async fn exported_json(
    admin: &comptoir_relay::admin::client::AdminClient,
    business: &str,
) -> serde_json::Value {
    let export = admin
        .export_bill(business, None, None, "json")
        .await
        .expect("export json");
    serde_json::from_str(&export).expect("json")
}
