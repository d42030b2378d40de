//! The 24-hour window, enforced by the relay from metadata alone: a
//! business replies in free form (`SERVICE`) to a customer only within 24
//! hours of the relay's accept time of the customer's last conversation
//! message to it. Only that message opens or extends the window (not
//! control traffic such as receipts and re-keys, nor the business's own
//! sends); a closed window refuses with `WINDOW_CLOSED` and stores
//! nothing; the relay's clock never goes back, so a wall clock stepped
//! back, before or across a restart, does not reopen a closed window. The
//! clock is moved through the test-only `test-clock` feature.

use crate::support;

use comptoir_client::Event;
use comptoir_protocol::proto::content::{RekeyRequest, Text, content};
use support::business::Business;
use support::client::{registered, wait_for};

use comptoir_protocol::proto::wire::{AccountKind, Category, ErrorCode, server_frame::Body};
use comptoir_relay::policy::WINDOW_MS;
use support::*;

/// A business and a customer (one device each), both logged in.
async fn pair(relay: &TestRelay) -> (Account, Client, Account, Client) {
    let business = Account::new(1);
    business
        .register_as(relay.addr, AccountKind::Business)
        .await;
    let customer = Account::new(1);
    customer.register(relay.addr).await;
    let (mut b, _) = business.login(relay.addr, 1).await;
    relay.approve_support_templates(&mut b).await;
    let (c, _) = customer.login(relay.addr, 1).await;
    (business, b, customer, c)
}

/// `from` sends message `n` to `to`'s device 1 as `category` (a template
/// category names the sender's approved support template); the reply.
async fn send(from: &mut Client, to: &Account, n: u8, category: Category) -> Body {
    let mut body = send_body_as(&to.id, &[1], id(n), b"ciphertext", category);
    if let (comptoir_protocol::proto::wire::client_frame::Body::Send(send), Some(sender)) =
        (&mut body, from.account)
        && comptoir_protocol::ConsentCategories::of(category).is_some()
    {
        send.template_id = support::templates::id_for(sender, category);
    }
    from.request(body).await
}

fn accepted(reply: &Body) -> u64 {
    match reply {
        Body::Accepted(a) => a.accept_id,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

/// The accept ids of the next envelopes the device receives, acking each,
/// until (and including) `last`.
async fn received_until(c: &mut Client, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let envelope = c.next_envelope().await;
        c.ack(&envelope).await;
        seen.push(envelope.accept_id);
        if envelope.accept_id == last {
            return seen;
        }
    }
}

#[tokio::test]
async fn only_the_customers_message_opens_the_window_and_it_closes_after_24_hours() {
    let relay = start_relay().await;
    let (business, mut b, customer, mut c) = pair(&relay).await;

    // Never written: closed, and nothing is stored for the customer.
    let refused = send(&mut b, &customer, 1, Category::Service).await;
    assert_eq!(error_code(&refused), ErrorCode::WindowClosed, "{refused:?}");
    // Control traffic from the customer (a receipt, a re-key) does not
    // open it; nor does a template (which, outside it, needs consent).
    accepted(&send(&mut c, &business, 2, Category::Control).await);
    let template = send(&mut b, &customer, 3, Category::Utility).await;
    assert_eq!(error_code(&template), ErrorCode::NoConsent, "{template:?}");
    let refused = send(&mut b, &customer, 4, Category::Service).await;
    assert_eq!(error_code(&refused), ErrorCode::WindowClosed);

    // The customer writes: free-form replies for 24 hours.
    accepted(&send(&mut c, &business, 5, Category::Conversation).await);
    let reply = accepted(&send(&mut b, &customer, 6, Category::Service).await);
    // Inside it, a utility template needs no consent.
    let inside = accepted(&send(&mut b, &customer, 12, Category::Utility).await);
    relay.clock.shift(WINDOW_MS as i64 - 5_000);
    let late = accepted(&send(&mut b, &customer, 7, Category::Service).await);
    assert_eq!(
        received_until(&mut c, late).await,
        vec![reply, inside, late]
    );
    relay.clock.shift(10_000);
    let refused = send(&mut b, &customer, 8, Category::Service).await;
    assert_eq!(error_code(&refused), ErrorCode::WindowClosed, "{refused:?}");
    assert!(
        matches!(&refused, Body::Error(e) if e.message.contains("template")),
        "says what to send instead: {refused:?}"
    );

    // A wall clock stepped back does not reopen it.
    relay.clock.shift(-3_600_000);
    let refused = send(&mut b, &customer, 9, Category::Service).await;
    assert_eq!(error_code(&refused), ErrorCode::WindowClosed);

    // The customer writes again: open again, from the relay's clock.
    accepted(&send(&mut c, &business, 10, Category::Conversation).await);
    let reopened = accepted(&send(&mut b, &customer, 11, Category::Service).await);
    // Only the accepted replies reached the customer.
    assert_eq!(received_until(&mut c, reopened).await, vec![reopened]);
}

#[tokio::test]
async fn a_clock_stepped_back_across_a_restart_does_not_reopen_a_closed_window() {
    let mut relay = start_relay().await;
    let (business, mut b, customer, mut c) = pair(&relay).await;
    accepted(&send(&mut c, &business, 1, Category::Conversation).await);
    accepted(&send(&mut b, &customer, 2, Category::Service).await);
    // A day and a minute later the window is closed; the relay stops.
    relay.clock.shift(WINDOW_MS as i64 + 60_000);
    let refused = send(&mut b, &customer, 3, Category::Service).await;
    assert_eq!(error_code(&refused), ErrorCode::WindowClosed);
    drop((b, c));
    relay.stop().await;

    // It starts again with the wall clock back where it was (a fresh,
    // unshifted clock): the mark it kept holds the window closed.
    let relay = relay.start_again_at_same_address().await;
    let (mut b, _) = business.login(relay.addr, 1).await;
    let refused = send(&mut b, &customer, 4, Category::Service).await;
    assert_eq!(error_code(&refused), ErrorCode::WindowClosed, "{refused:?}");
    // And the window state itself survived: a new message opens it.
    let (mut c, _) = customer.login(relay.addr, 1).await;
    accepted(&send(&mut c, &business, 5, Category::Conversation).await);
    accepted(&send(&mut b, &customer, 6, Category::Service).await);
}

#[tokio::test]
async fn the_window_survives_a_restart() {
    let mut relay = start_relay().await;
    let (business, _b, customer, mut c) = pair(&relay).await;
    accepted(&send(&mut c, &business, 1, Category::Conversation).await);
    drop(c);
    relay.stop().await;
    let relay = relay.start_again_at_same_address().await;
    let (mut b, _) = business.login(relay.addr, 1).await;
    accepted(&send(&mut b, &customer, 2, Category::Service).await);
}

/// A send of `body` from the business to its customer as `category`:
/// the relay's reply.
async fn raw_send(shop: &mut Business, body: content::Body, category: Category) -> Body {
    shop.request_content(body, category).await.1
}

#[tokio::test]
async fn a_message_sent_again_on_a_business_request_does_not_reopen_the_window() {
    let relay = start_relay().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut customer = registered(&relay, dir.path(), "customer pass").await;
    let mut shop = Business::start(&relay, customer.account_id()).await;
    let shop_id = shop.account.id;

    let old = customer.send_text(shop_id, "hello").await.expect("write");
    // Two days later: the window is closed.
    relay.clock.shift(2 * WINDOW_MS as i64);
    let text = |s: &str| content::Body::Text(Text { body: s.into() });
    let refused = raw_send(&mut shop, text("closed?"), Category::Service).await;
    assert_eq!(error_code(&refused), ErrorCode::WindowClosed, "{refused:?}");

    // The business asks for the old message again (control traffic, never
    // held to the window); the client sends it again, marked as such.
    let ask = content::Body::RekeyRequest(RekeyRequest {
        failed_message_id: old.0.to_vec(),
    });
    let reply = raw_send(&mut shop, ask, Category::Control).await;
    assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
    wait_for(&mut customer, |e| {
        matches!(e, Event::Resent { .. }).then_some(())
    })
    .await;

    // The customer wrote nothing new: the window stays closed.
    let reply = raw_send(&mut shop, text("free-form again"), Category::Service).await;
    assert_eq!(error_code(&reply), ErrorCode::WindowClosed, "{reply:?}");
}

/// One clock serves every time rule: envelopes expire by the same clock
/// that stamped their accept time (moved here through `test-clock`), not
/// by the wall clock beside it.
#[tokio::test]
async fn envelopes_expire_by_the_relays_clock() {
    let relay = start_relay_with(|c| {
        c.gc_interval_ms = 20;
        c.message_ttl_ms = 60_000;
    })
    .await;
    let sender = Account::new(1);
    sender.register(relay.addr).await;
    let offline = Account::new(1);
    offline.register(relay.addr).await;
    let (mut s, _) = sender.login(relay.addr, 1).await;
    accepted(&send(&mut s, &offline, 1, Category::Conversation).await);
    relay.wait_metric("comptoir_queue_depth", 1.0).await;
    relay.clock.shift(61_000);
    relay
        .wait_metric("comptoir_envelopes_expired_total", 1.0)
        .await;
    relay.wait_metric_at_most("comptoir_queue_depth", 0.0).await;
}
