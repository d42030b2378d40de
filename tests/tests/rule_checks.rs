//! What the customer's client checks by itself: a relay that lets a
//! business break the window or consent rules is caught by the client
//! from what it knows first hand (the consents it granted, when it last
//! wrote). The lying relay here is a proxy in front of an honest one that
//! reports a later accept time than the real one: a reply the relay took
//! inside the window reaches the client as if accepted a day later. Each
//! such message is still shown, reported as a violation and kept as
//! evidence; honest ones are not flagged.

use crate::support;

use std::time::Duration;

use comptoir_client::rule_checks::Violation;
use comptoir_client::{Client, Event};
use comptoir_protocol::ConsentCategories;
use comptoir_protocol::proto::wire::Category;
use support::business::Business;
use support::client::{registered, wait_for};
use support::mitm::relay_behind_mitm;
use support::*;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Wait for the message `text` (a service reply, or a checked template
/// whose body contains it); return the violation reported right after it,
/// if any (a violation is reported after its message, before the next
/// one: `next` is a later honest message the caller sent to close the
/// check).
async fn flagged(client: &mut Client, text: &str, next: &str) -> Option<Violation> {
    let mut seen = false;
    let mut violation = None;
    wait_for(client, |e| match e {
        Event::Message { text: t, .. } if t == text => {
            seen = true;
            None
        }
        Event::Template { rendered, .. } if rendered.body.contains(text) => {
            seen = true;
            None
        }
        Event::Violation { violation: v, .. } if seen => {
            violation = Some(v.clone());
            None
        }
        Event::Message { text: t, .. } if t == next => Some(()),
        _ => None,
    })
    .await;
    assert!(seen, "{text} arrived");
    violation
}

#[tokio::test]
async fn the_client_flags_what_a_lying_relay_let_a_business_send() {
    let (relay, mitm, _data) = relay_behind_mitm().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut customer = registered(&relay, dir.path(), "customer pass").await;
    customer
        .connect(&mitm.url())
        .await
        .expect("through the proxy");
    let mut shop = Business::start(&relay, customer.account_id()).await;
    let shop_id = shop.account.id;

    // The customer consents to utility for 30 days and writes: the window
    // is open.
    customer
        .grant_consent(
            shop_id,
            ConsentCategories::UTILITY,
            Duration::from_millis(30 * DAY_MS),
        )
        .await
        .expect("consent");
    customer
        .send_text(shop_id, "where is my parcel?")
        .await
        .expect("write");

    // Honest: a service reply and an authentication code inside the
    // window, a utility template under consent.
    let mut checks = 0;
    // Templates go as instances of the approved support templates, with
    // `text` as their value; service replies as text.
    let mut sent = async |shop: &mut Business, customer: &mut Client, text: &str, category| {
        if category == Category::Service {
            shop.send(text, category).await;
        } else {
            shop.send_template(text, category).await;
        }
        checks += 1;
        let check = format!("check {checks}");
        shop.send(&check, Category::Service).await;
        flagged(customer, text, &check).await
    };
    for (text, category) in [
        ("It left this morning", Category::Service),
        ("123456", Category::Authentication),
        ("A-1 (out for delivery)", Category::Utility),
    ] {
        assert_eq!(sent(&mut shop, &mut customer, text, category).await, None);
    }

    // The relay says it accepted these a day later: outside the window.
    let late = DAY_MS + 60_000;
    mitm.delay(shop_id.as_bytes(), late);
    assert!(matches!(
        sent(
            &mut shop,
            &mut customer,
            "Anything else?",
            Category::Service
        )
        .await,
        Some(Violation::ServiceOutsideWindow { .. })
    ));
    mitm.delay(shop_id.as_bytes(), late);
    assert_eq!(
        sent(&mut shop, &mut customer, "654321", Category::Authentication).await,
        Some(Violation::TemplateWithoutConsent {
            category: Category::Authentication
        })
    );
    // A utility template a day later is still under consent.
    mitm.delay(shop_id.as_bytes(), late);
    assert_eq!(
        sent(
            &mut shop,
            &mut customer,
            "A-1 (delivered)",
            Category::Utility
        )
        .await,
        None
    );

    // Both flagged messages are kept as evidence, saying why.
    let evidence = customer.evidence().expect("evidence").evidence;
    assert_eq!(evidence.len(), 2, "{evidence:?}");
    assert!(
        evidence
            .iter()
            .all(|e| e.from == shop_id && e.label.is_none())
    );
    assert!(
        evidence
            .iter()
            .any(|e| e.refusal.contains("did not consent")),
        "{evidence:?}"
    );
}

#[tokio::test]
async fn a_consent_granted_on_another_device_is_known_after_login_and_not_flagged() {
    let relay = start_relay().await;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let mut phone = registered(&relay, dir_a.path(), "customer pass").await;
    let mut laptop = support::client::linked(&relay, &mut phone, dir_b.path()).await;
    let mut shop = Business::start(&relay, phone.account_id()).await;
    assert_eq!(shop.devices.len(), 2);
    // The phone grants; the laptop learns it when it next logs in.
    phone
        .grant_consent(
            shop.account.id,
            ConsentCategories::UTILITY,
            Duration::from_millis(30 * DAY_MS),
        )
        .await
        .expect("consent");
    laptop.disconnect().await;
    laptop
        .connect(&support::client::url(&relay))
        .await
        .expect("login");
    // A utility template outside the window, under that consent.
    shop.send_template("A-1", Category::Utility).await;
    shop.send_template("check", Category::Utility).await;
    let mut shown = 0;
    let mut violations = Vec::new();
    wait_for(&mut laptop, |e| match e {
        Event::Template { .. } => {
            shown += 1;
            (shown == 2).then_some(())
        }
        Event::Violation { violation, .. } => {
            violations.push(violation.clone());
            None
        }
        _ => None,
    })
    .await;
    assert!(violations.is_empty(), "{violations:?}");
    assert!(laptop.evidence().expect("evidence").evidence.is_empty());
}
