//! Consent requests: a verified business that was given a customer's
//! number asks, through the relay, to send templates of named categories
//! for a purpose from a fixed list. The business gets the same answer for
//! a known and an unknown number, for a number already asked and over its
//! daily cap; it learns the customer's account only when the customer
//! allows (which grants the consent). A refusal stays with the relay and
//! keeps the business from asking again for 30 days. Bad input is typed.

use crate::support;

use std::time::Duration;

use comptoir_client::{Client, ClientError, Event};
use comptoir_protocol::ConsentCategories;
use comptoir_protocol::business::{BusinessProfile, Vertical};
use comptoir_protocol::proto::wire::{AccountKind, ConsentPurpose, ErrorCode};
use support::client::{registered_as, wait_for};
use support::*;

const CAROL: &str = "+447700900123";
const NOBODY: &str = "+447700900999";
const HANDLED: &str = "comptoir_consent_requests_handled_total";
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

async fn verified_business(relay: &TestRelay, dir: &std::path::Path, name: &str) -> Client {
    let mut client = support::client::registered_business(relay, dir, "pw-long-enough").await;
    client
        .publish_profile(&BusinessProfile {
            account: client.account_id(),
            display_name: name.into(),
            about: String::new(),
            address: String::new(),
            website: None,
            email: None,
            opening_hours: String::new(),
            vertical: Vertical::Travel,
        })
        .await
        .expect("publish");
    relay
        .admin_client()
        .verify_business(&client.account_id().to_string(), None)
        .await
        .expect("verify");
    client
}

async fn customer_with_number(relay: &TestRelay, dir: &std::path::Path) -> Client {
    let mut client = registered_as(relay, dir, "pw-long-enough", AccountKind::Customer).await;
    client.request_phone_code(CAROL).await.expect("code");
    let code = relay.codes.last_for(CAROL).expect("code sent");
    client
        .verify_phone(CAROL, &code, false)
        .await
        .expect("verify");
    client
}

fn invalid(result: Result<(), ClientError>) {
    match result {
        Err(ClientError::Relay {
            code: ErrorCode::InvalidRequest,
            ..
        }) => {}
        other => panic!("expected INVALID_REQUEST, got {other:?}"),
    }
}

#[tokio::test]
async fn a_customer_allows_or_refuses_and_the_business_learns_only_an_allowance() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut acme = verified_business(&relay, &root.path().join("acme"), "Acme Air").await;
    let mut bravo = verified_business(&relay, &root.path().join("bravo"), "Bravo Rail").await;
    let mut carol = customer_with_number(&relay, &root.path().join("carol")).await;
    let utility = ConsentCategories::UTILITY;
    let boarding = ConsentPurpose::BoardingPassAndFlightUpdates;

    // A known and an unknown number: the same answer.
    acme.request_consent(CAROL, utility, boarding, [1; 16])
        .await
        .expect("asked");
    acme.request_consent(NOBODY, utility, boarding, [2; 16])
        .await
        .expect("asked the same way");
    let asked = wait_for(&mut carol, |e| match e {
        Event::ConsentRequested(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(asked.business, acme.account_id());
    assert_eq!(asked.categories, utility);
    assert_eq!(asked.purpose, boarding);
    relay.wait_metric(HANDLED, 2.0).await;
    // Asking again changes nothing; nothing is told before an answer.
    acme.request_consent(CAROL, utility, boarding, [3; 16])
        .await
        .expect("asked again");
    relay.wait_metric(HANDLED, 3.0).await;
    assert_eq!(
        carol.consent_requests().await.expect("list"),
        vec![asked.clone()]
    );
    assert!(acme.consent_answers().await.expect("answers").is_empty());

    // Allowed: the consent is granted and the business learns the account.
    carol
        .answer_consent_request(&asked, true, YEAR)
        .await
        .expect("allow");
    let consents = carol.consents().await.expect("consents");
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0].business, acme.account_id());
    assert_eq!(consents[0].categories, utility);
    let answers = acme.consent_answers().await.expect("answers");
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].reference, [1; 16]);
    assert_eq!(answers[0].customer, carol.account_id());
    assert!(carol.consent_requests().await.expect("list").is_empty());
    // An answered request cannot be answered again.
    invalid(carol.answer_consent_request(&asked, false, YEAR).await);

    // Refused: the business is not told, and cannot ask for 30 days.
    bravo
        .request_consent(CAROL, utility, ConsentPurpose::DeliveryUpdates, [4; 16])
        .await
        .expect("asked");
    let asked = wait_for(&mut carol, |e| match e {
        Event::ConsentRequested(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(asked.business, bravo.account_id());
    carol
        .answer_consent_request(&asked, false, YEAR)
        .await
        .expect("refuse");
    assert!(bravo.consent_answers().await.expect("answers").is_empty());
    assert_eq!(carol.consents().await.expect("consents").len(), 1);
    bravo
        .request_consent(CAROL, utility, ConsentPurpose::DeliveryUpdates, [5; 16])
        .await
        .expect("asked again");
    relay.wait_metric(HANDLED, 5.0).await;
    assert!(carol.consent_requests().await.expect("list").is_empty());
    relay.clock.shift(31 * 24 * 60 * 60 * 1000);
    bravo
        .request_consent(CAROL, utility, ConsentPurpose::DeliveryUpdates, [6; 16])
        .await
        .expect("asked after 30 days");
    relay.wait_metric(HANDLED, 6.0).await;
    let pending = carol.consent_requests().await.expect("list");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].business, bravo.account_id());
}

#[tokio::test]
async fn only_verified_businesses_ask_within_a_daily_cap_and_bad_requests_are_typed() {
    let relay = start_relay_with(|c| c.limits.consent_requests_per_business_per_day = 1).await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut acme = verified_business(&relay, &root.path().join("acme"), "Acme Air").await;
    let mut carol = customer_with_number(&relay, &root.path().join("carol")).await;
    let mut shady = registered_as(
        &relay,
        &root.path().join("shady"),
        "pw-long-enough",
        AccountKind::Business,
    )
    .await;
    let utility = ConsentCategories::UTILITY;
    let orders = ConsentPurpose::OrderUpdates;

    // Not verified: refused, typed.
    invalid(shady.request_consent(CAROL, utility, orders, [1; 16]).await);
    // A customer cannot ask.
    match carol.request_consent(CAROL, utility, orders, [1; 16]).await {
        Err(ClientError::Relay {
            code: ErrorCode::AccountKind,
            ..
        }) => {}
        other => panic!("expected ACCOUNT_KIND, got {other:?}"),
    }
    // Malformed: refused before anything is counted.
    invalid(
        acme.request_consent("07700 900123", utility, orders, [1; 16])
            .await,
    );
    assert!(matches!(
        acme.request_consent(CAROL, ConsentCategories::NONE, orders, [1; 16])
            .await,
        Err(ClientError::InvalidArgument(_))
    ));
    assert_eq!(relay.metric(HANDLED).await, 0.0);

    // Over the cap (1 a day): the same answer, nothing forwarded.
    acme.request_consent(NOBODY, utility, orders, [1; 16])
        .await
        .expect("asked");
    acme.request_consent(CAROL, utility, orders, [2; 16])
        .await
        .expect("asked, over the cap");
    relay.wait_metric(HANDLED, 2.0).await;
    assert!(carol.consent_requests().await.expect("list").is_empty());
    // The next day, it goes through.
    relay.clock.shift(24 * 60 * 60 * 1000);
    acme.request_consent(CAROL, utility, orders, [3; 16])
        .await
        .expect("asked");
    relay.wait_metric(HANDLED, 3.0).await;
    assert_eq!(carol.consent_requests().await.expect("list").len(), 1);
}
