//! Consent, signed by the customer and enforced by the relay inside the
//! accept: a business's template outside the 24-hour window (and
//! marketing at all) needs the customer's consent for its category; a
//! token is worthless to another business, an older one cannot be
//! replayed after a revocation, a forged one is refused, blocking revokes
//! it, and it outlives a restart. Every refusal is typed and stores
//! nothing (the ledger holds exactly the templates accepted).

use crate::support;

use std::time::Duration;

use comptoir_protocol::proto::wire::{
    self, AccountKind, Category, ErrorCode, client_frame, server_frame::Body,
};
use comptoir_protocol::{AccountId, ConsentCategories, MAX_CONSENT_LIFETIME_MS};
use comptoir_relay::storage::report;
use support::client::registered;
use support::*;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// A business's template of `category` to `to`'s device 1: the reply.
async fn template(b: &mut Client, to: &AccountId, n: u8, category: Category) -> Body {
    template_to(b, to, &[1], n, category).await
}

/// [`template`] to `devices`.
async fn template_to(
    b: &mut Client,
    to: &AccountId,
    devices: &[u32],
    n: u8,
    category: Category,
) -> Body {
    let mut body = send_body_as(to, devices, id(n), b"ciphertext", category);
    if let client_frame::Body::Send(send) = &mut body {
        send.template_id = support::templates::id_for(b.account.expect("logged in"), category);
    }
    b.request(body).await
}

fn accepted(reply: &Body) {
    assert!(matches!(reply, Body::Accepted(_)), "{reply:?}");
}

fn refused(reply: &Body, code: ErrorCode) {
    assert_eq!(error_code(reply), code, "{reply:?}");
}

/// The consents the relay keeps for the connection's account.
async fn kept(c: &mut Client) -> Vec<wire::Consent> {
    match c
        .request(client_frame::Body::GetConsents(wire::GetConsents {}))
        .await
    {
        Body::Consents(list) => list.consents,
        other => panic!("consents: {other:?}"),
    }
}

async fn business(relay: &TestRelay) -> (Account, Client) {
    let account = Account::new(1);
    account.register_as(relay.addr, AccountKind::Business).await;
    let (mut conn, _) = account.login(relay.addr, 1).await;
    relay.approve_support_templates(&mut conn).await;
    (account, conn)
}

#[tokio::test]
async fn a_customer_grants_and_revokes_consent_from_its_client_and_the_relay_holds_the_business_to_it()
 {
    let relay = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let mut customer = registered(&relay, dir.path(), "pw-long-enough").await;
    let (shop, mut b) = business(&relay).await;
    let to = customer.account_id();

    // No consent, no window: refused.
    refused(
        &template(&mut b, &to, 1, Category::Utility).await,
        ErrorCode::NoConsent,
    );
    let granted = customer
        .grant_consent(
            shop.id,
            ConsentCategories::UTILITY,
            Duration::from_millis(30 * DAY_MS),
        )
        .await
        .expect("grant");
    assert_eq!(granted.counter, 1);
    accepted(&template(&mut b, &to, 2, Category::Utility).await);
    // Only what was granted.
    refused(
        &template(&mut b, &to, 3, Category::Marketing).await,
        ErrorCode::NoConsent,
    );
    refused(
        &template(&mut b, &to, 4, Category::Authentication).await,
        ErrorCode::NoConsent,
    );
    let listed = customer.consents().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].business, shop.id);
    assert_eq!(listed[0].categories, ConsentCategories::UTILITY);

    // It expires by the relay's clock.
    relay.clock.shift((30 * DAY_MS + 1) as i64);
    refused(
        &template(&mut b, &to, 5, Category::Utility).await,
        ErrorCode::NoConsent,
    );
    // A new grant (the client takes the next counter) and a revocation.
    let again = customer
        .grant_consent(
            shop.id,
            ConsentCategories::UTILITY.union(ConsentCategories::MARKETING),
            Duration::from_millis(MAX_CONSENT_LIFETIME_MS),
        )
        .await
        .expect("grant again");
    assert_eq!(again.counter, 2);
    accepted(&template(&mut b, &to, 6, Category::Marketing).await);
    let revoked = customer.revoke_consent(shop.id).await.expect("revoke");
    assert_eq!(revoked.counter, 3);
    refused(
        &template(&mut b, &to, 7, Category::Utility).await,
        ErrorCode::NoConsent,
    );
    assert!(
        customer.consents().await.expect("list")[0]
            .categories
            .is_empty()
    );
    // Bad arguments are refused before anything is sent.
    assert!(
        customer
            .grant_consent(shop.id, ConsentCategories::NONE, Duration::from_secs(60))
            .await
            .is_err()
    );
    assert!(
        customer
            .grant_consent(
                shop.id,
                ConsentCategories::UTILITY,
                Duration::from_millis(MAX_CONSENT_LIFETIME_MS + 1)
            )
            .await
            .is_err()
    );
    assert_eq!(customer.consents().await.expect("list")[0].counter, 3);

    let mut relay = relay;
    drop(b);
    customer.close().await.unwrap();
    relay.stop().await;
    let report = report::read(&relay.data_dir).await.expect("accounting");
    assert_eq!(report.ledger.len(), 2, "only the accepted templates");
}

#[tokio::test]
async fn a_token_replayed_forged_or_for_another_business_is_refused_and_changes_nothing() {
    let mut relay = start_relay().await;
    let customer = Account::new(2);
    customer.register(relay.addr).await;
    let (acme, mut a) = business(&relay).await;
    let (rival, mut r) = business(&relay).await;
    let (mut c, _) = customer.login(relay.addr, 1).await;
    let utility = ConsentCategories::UTILITY;
    let year = 365 * DAY_MS;

    let grant = consent_body(&customer, 1, &acme, utility, 1, year);
    assert!(matches!(c.request(grant.clone()).await, Body::Ok(_)));
    accepted(&template_to(&mut a, &customer.id, &[1, 2], 1, Category::Utility).await);
    // Worthless to another business.
    refused(
        &template_to(&mut r, &customer.id, &[1, 2], 2, Category::Utility).await,
        ErrorCode::NoConsent,
    );
    // Replayed: stale.
    refused(&c.request(grant.clone()).await, ErrorCode::StaleConsent);
    // Revoked; the old grant cannot be replayed after it.
    let revoke = consent_body(&customer, 1, &acme, ConsentCategories::NONE, 2, 0);
    assert!(matches!(c.request(revoke).await, Body::Ok(_)));
    refused(&c.request(grant).await, ErrorCode::StaleConsent);
    refused(
        &template_to(&mut a, &customer.id, &[1, 2], 3, Category::Utility).await,
        ErrorCode::NoConsent,
    );

    // Refused tokens, each typed, none kept.
    let forged = [
        (
            "signed by another device's key",
            consent_body(&customer, 2, &acme, utility, 5, year),
            ErrorCode::BadSignature,
        ),
        (
            "categories changed after signing",
            {
                let mut body = consent_body(&customer, 1, &acme, utility, 5, year);
                if let client_frame::Body::SetConsent(s) = &mut body {
                    s.categories = 7;
                }
                body
            },
            ErrorCode::BadSignature,
        ),
        (
            "longer than two years",
            consent_body(&customer, 1, &acme, utility, 5, MAX_CONSENT_LIFETIME_MS + 1),
            ErrorCode::InvalidRequest,
        ),
        (
            "unknown category bits",
            {
                let mut body = consent_body(&customer, 1, &acme, utility, 5, year);
                if let client_frame::Body::SetConsent(s) = &mut body {
                    s.categories = 16;
                }
                body
            },
            ErrorCode::InvalidRequest,
        ),
        (
            "to a customer account",
            consent_body(&customer, 1, &customer, utility, 5, year),
            ErrorCode::AccountKind,
        ),
    ];
    for (what, body, code) in forged {
        let reply = c.request(body).await;
        assert_eq!(error_code(&reply), code, "{what}: {reply:?}");
    }
    // A business does not grant consent.
    let by_business = consent_body(&rival, 1, &acme, utility, 1, year);
    refused(&r.request(by_business).await, ErrorCode::AccountKind);
    let list = kept(&mut c).await;
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].counter, list[0].categories), (2, 0));

    // Blocking revokes it; unblocking does not bring it back; the next
    // grant needs a higher counter.
    let grant = consent_body(&customer, 1, &acme, utility, 3, year);
    assert!(matches!(c.request(grant.clone()).await, Body::Ok(_)));
    accepted(&template_to(&mut a, &customer.id, &[1, 2], 4, Category::Utility).await);
    let block = client_frame::Body::Block(wire::Block {
        account_id: acme.id.to_vec(),
        reason: 0,
    });
    assert!(matches!(c.request(block).await, Body::Ok(_)));
    let unblock = client_frame::Body::Unblock(wire::Unblock {
        account_id: acme.id.to_vec(),
    });
    assert!(matches!(c.request(unblock).await, Body::Ok(_)));
    refused(
        &template_to(&mut a, &customer.id, &[1, 2], 5, Category::Utility).await,
        ErrorCode::NoConsent,
    );
    assert!(kept(&mut c).await[0].revoked_by_block);
    refused(&c.request(grant).await, ErrorCode::StaleConsent);
    let regrant = consent_body(&customer, 1, &acme, utility, 4, year);
    assert!(matches!(c.request(regrant).await, Body::Ok(_)));

    // It outlives a restart.
    drop((a, r, c));
    relay.stop().await;
    let relay = relay.start_again_at_same_address().await;
    let (mut a, _) = acme.login(relay.addr, 1).await;
    accepted(&template_to(&mut a, &customer.id, &[1, 2], 6, Category::Utility).await);
    // Inside the window a utility template needs none, marketing does.
    let (mut r, _) = rival.login(relay.addr, 1).await;
    let (mut c, _) = customer.login(relay.addr, 1).await;
    let hello = c.request(send_body(&rival.id, &[1], id(7), b"hello")).await;
    accepted(&hello);
    accepted(&template_to(&mut r, &customer.id, &[1, 2], 8, Category::Utility).await);
    refused(
        &template_to(&mut r, &customer.id, &[1, 2], 9, Category::Marketing).await,
        ErrorCode::NoConsent,
    );

    let mut relay = relay;
    drop((a, r, c));
    relay.stop().await;
    let report = report::read(&relay.data_dir).await.expect("accounting");
    assert_eq!(report.ledger.len(), 4, "only the accepted templates");
    assert_eq!(report.consents.len(), 1);
    assert_eq!(report.consents[0].counter, 4);
}

#[tokio::test]
async fn blocking_a_business_deletes_what_it_queued_for_the_customer() {
    let relay = start_relay().await;
    let customer = Account::new(2);
    customer.register(relay.addr).await;
    let (acme, mut a) = business(&relay).await;
    let friend = Account::new(1);
    friend.register(relay.addr).await;
    let (mut f, _) = friend.login(relay.addr, 1).await;
    // Device 2 is online; device 1 is offline while the business writes.
    let (mut c2, _) = customer.login(relay.addr, 2).await;
    let grant = consent_body(&customer, 1, &acme, ConsentCategories::UTILITY, 1, DAY_MS);
    // Device 1 signed it: send it from a short connection of device 1.
    {
        let (mut c1, _) = customer.login(relay.addr, 1).await;
        assert!(matches!(c1.request(grant).await, Body::Ok(_)));
    }
    accepted(&template_to(&mut a, &customer.id, &[1, 2], 1, Category::Utility).await);
    let pushed = c2.next_envelope().await;
    assert_eq!(pushed.sender_account, acme.id.to_vec());
    let block = client_frame::Body::Block(wire::Block {
        account_id: acme.id.to_vec(),
        reason: 0,
    });
    assert!(matches!(c2.request(block).await, Body::Ok(_)));
    // A friend's message after the block is the first thing device 1 gets:
    // the business's queued copy is gone.
    let hello = f
        .request(send_body(&customer.id, &[1, 2], id(2), b"hello"))
        .await;
    accepted(&hello);
    let (mut c1, _) = customer.login(relay.addr, 1).await;
    let first = c1.next_envelope().await;
    assert_eq!(first.sender_account, friend.id.to_vec(), "{first:?}");
    // The business got no receipt for the deleted copy.
    assert!(a.backlog_is_empty_of(|f| matches!(f, Body::Delivered(_))));
}
