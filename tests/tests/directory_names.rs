//! Business names over a real relay: claim, lookup by another account
//! (any case), first come first served with typed NAME_TAKEN, malformed
//! names refused with nothing stored, concurrent claims with exactly one
//! winner, and the client library end to end (claim, resolve, message).

use crate::support;

use comptoir_client::ClientError;
use comptoir_protocol::AccountId;
use comptoir_protocol::proto::wire::AccountKind::Business;
use comptoir_protocol::proto::wire::{self, ErrorCode, client_frame, server_frame::Body};
use support::client::{registered, registered_as, wait_message};
use support::*;

fn claim(name: &str) -> client_frame::Body {
    client_frame::Body::ClaimName(wire::ClaimName { name: name.into() })
}

fn lookup(handle: &str) -> client_frame::Body {
    client_frame::Body::Lookup(wire::Lookup {
        handle: handle.into(),
    })
}

/// The account a lookup resolved to (panics on a refusal).
async fn resolve(client: &mut Client, handle: &str) -> AccountId {
    match client.request(lookup(handle)).await {
        Body::LookupResult(found) => AccountId::from_bytes(&found.account_id).expect("16 bytes"),
        other => panic!("lookup {handle:?}: {other:?}"),
    }
}

/// The `names` tree of a stopped relay's data directory.
fn stored_names(relay: &TestRelay) -> Vec<(Vec<u8>, Vec<u8>)> {
    dump_store(&relay.data_dir)
        .into_iter()
        .filter(|((tree, _), _)| tree.as_slice() == b"names")
        .map(|((_, key), value)| (key, value))
        .collect()
}

#[tokio::test]
async fn names_are_claimed_first_come_first_served_and_resolve_in_any_case() {
    let mut relay = start_relay().await;
    let (acme, rival, customer) = (Account::new(1), Account::new(1), Account::new(1));
    for account in [&acme, &rival] {
        account
            .register_as(relay.addr, wire::AccountKind::Business)
            .await;
    }
    customer.register(relay.addr).await;
    let (mut a, _) = acme.login(relay.addr, 1).await;
    let (mut r, _) = rival.login(relay.addr, 1).await;
    let (mut c, _) = customer.login(relay.addr, 1).await;

    // Unknown before the claim.
    assert_eq!(
        error_code(&c.request(lookup("acme-deliveries")).await),
        ErrorCode::UnknownAccount
    );
    // Only a business account may claim a business name.
    let refusal = c.request(claim("acme-deliveries")).await;
    assert_eq!(error_code(&refusal), ErrorCode::AccountKind);
    assert_eq!(
        error_code(&c.request(lookup("acme-deliveries")).await),
        ErrorCode::UnknownAccount,
        "the customer's claim stored nothing"
    );
    // Claimed in mixed case, stored lowercased; re-claiming is idempotent.
    assert!(matches!(
        a.request(claim("Acme-Deliveries")).await,
        Body::Ok(_)
    ));
    assert!(matches!(
        a.request(claim("acme-deliveries")).await,
        Body::Ok(_)
    ));
    assert_eq!(resolve(&mut c, "acme-deliveries").await, acme.id);
    assert_eq!(resolve(&mut c, "ACME-deliveries").await, acme.id);

    // Another account cannot take it, in any case; one name per account.
    for taken in ["acme-deliveries", "ACME-DELIVERIES"] {
        let refusal = r.request(claim(taken)).await;
        assert_eq!(error_code(&refusal), ErrorCode::NameTaken);
        let Body::Error(e) = refusal else {
            unreachable!()
        };
        assert!(e.message.contains("another account"), "{}", e.message);
    }
    assert_eq!(
        error_code(&a.request(claim("acme-two")).await),
        ErrorCode::NameTaken
    );
    assert_eq!(resolve(&mut c, "acme-deliveries").await, acme.id);
    assert_eq!(
        error_code(&c.request(lookup("acme-two")).await),
        ErrorCode::UnknownAccount
    );

    // Malformed names: a typed INVALID_REQUEST saying what is allowed.
    for bad in [
        "ab",
        &"x".repeat(33),
        "-acme",
        "acme-",
        "acme deliveries",
        "acme_deliveries",
        "café",
        "+447700900123",
        "0123456789abcdef0123456789abcdef",
        "",
    ] {
        let refusal = r.request(claim(bad)).await;
        assert_eq!(error_code(&refusal), ErrorCode::InvalidRequest, "{bad:?}");
        let Body::Error(e) = refusal else {
            unreachable!()
        };
        assert!(e.message.contains("3 to 32 characters"), "{}", e.message);
    }
    // A lookup of something that is neither a number nor a name says so.
    assert_eq!(
        error_code(&c.request(lookup("no spaces")).await),
        ErrorCode::InvalidRequest
    );
    // Phone lookups are unaffected.
    assert_eq!(
        error_code(&c.request(lookup("+15550000000")).await),
        ErrorCode::UnknownAccount
    );

    // On disk: exactly Acme's two records, nothing from the refusals.
    drop((a, r, c));
    relay.stop().await;
    let mut expected = vec![
        (b"nacme-deliveries".to_vec(), acme.id.to_vec()),
        (
            [b"a".as_slice(), acme.id.as_bytes()].concat(),
            b"acme-deliveries".to_vec(),
        ),
    ];
    expected.sort();
    assert_eq!(stored_names(&relay), expected);
}

#[tokio::test]
async fn concurrent_claims_of_one_name_have_exactly_one_winner() {
    let relay = start_relay().await;
    for round in 0..5 {
        let (first, second) = (Account::new(1), Account::new(1));
        first
            .register_as(relay.addr, wire::AccountKind::Business)
            .await;
        second
            .register_as(relay.addr, wire::AccountKind::Business)
            .await;
        let (mut x, _) = first.login(relay.addr, 1).await;
        let (mut y, _) = second.login(relay.addr, 1).await;
        let name = format!("contested-{round}");
        // Both claims are on the wire before either reply is read.
        let (ix, iy) = tokio::join!(x.send(claim(&name)), y.send(claim(&name)));
        let (rx, ry) = tokio::join!(x.reply(ix), y.reply(iy));
        let winner = match (&rx, &ry) {
            (Body::Ok(_), e) if error_code(e) == ErrorCode::NameTaken => first.id,
            (e, Body::Ok(_)) if error_code(e) == ErrorCode::NameTaken => second.id,
            other => panic!("exactly one claim must win: {other:?}"),
        };
        assert_eq!(resolve(&mut x, &name).await, winner);
        assert_eq!(resolve(&mut y, &name).await, winner);
    }
}

#[tokio::test]
async fn an_unauthenticated_claim_is_refused() {
    let relay = start_relay().await;
    let mut anonymous = Client::connect(relay.addr).await;
    assert_eq!(
        error_code(&anonymous.request(claim("acme-deliveries")).await),
        ErrorCode::NotAuthenticated
    );
    let someone = Account::new(1);
    someone.register(relay.addr).await;
    let (mut s, _) = someone.login(relay.addr, 1).await;
    assert_eq!(
        error_code(&s.request(lookup("acme-deliveries")).await),
        ErrorCode::UnknownAccount,
        "nothing was claimed"
    );
}

#[tokio::test]
async fn a_customer_finds_a_business_by_name_and_writes_to_it() {
    let relay = start_relay().await;
    let (dir_b, dir_c, dir_r) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let mut business = registered_as(&relay, dir_b.path(), "business pass", Business).await;
    let mut customer = registered(&relay, dir_c.path(), "customer pass").await;
    let mut rival = registered_as(&relay, dir_r.path(), "rival pass", Business).await;
    assert!(
        matches!(
            customer.claim_name("acme-deliveries").await,
            Err(ClientError::Relay {
                code: ErrorCode::AccountKind,
                ..
            })
        ),
        "a customer cannot claim a business name"
    );

    business
        .claim_name("acme-deliveries")
        .await
        .expect("claim the name");
    business
        .claim_name("Acme-Deliveries")
        .await
        .expect("re-claiming one's own name is fine");
    assert!(matches!(
        rival.claim_name("acme-deliveries").await,
        Err(ClientError::Relay {
            code: ErrorCode::NameTaken,
            ..
        })
    ));
    assert!(matches!(
        rival.claim_name("not a name").await,
        Err(ClientError::InvalidArgument(_))
    ));

    let found = customer
        .lookup("ACME-Deliveries")
        .await
        .expect("resolve the name");
    assert_eq!(found, business.account_id());
    assert!(matches!(
        customer.lookup("nobody-here").await,
        Err(ClientError::NotFound(_))
    ));

    customer.add_contact("acme", found).expect("add contact");
    let to = customer.resolve("acme").expect("resolve contact");
    customer
        .send_text(to, "where is my parcel?")
        .await
        .expect("send");
    let (_, text) = wait_message(&mut business, customer.account_id()).await;
    assert_eq!(text, "where is my parcel?");
}

/// Issue 9, item 11: with `require_phone_for_business`, a customer
/// `Client` without a verified phone number is refused with
/// PHONE_REQUIRED (saying what to do) when it writes to a business, and
/// nothing is stored; once it verifies a number the same send goes through
/// and the business reads it. Customers still write to customers.
#[tokio::test]
async fn a_relay_requiring_a_phone_refuses_writing_to_a_business_until_one_is_verified() {
    let relay = start_relay_with(|c| c.limits.require_phone_for_business = true).await;
    let (shop_dir, customer_dir, friend_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut shop = registered_as(&relay, shop_dir.path(), "shop passphrase", Business).await;
    let mut customer = registered(&relay, customer_dir.path(), "customer pass").await;
    let mut friend = registered(&relay, friend_dir.path(), "friend passphrase").await;

    match customer.send_text(shop.account_id(), "hello shop").await {
        Err(ClientError::Relay { code, message }) => {
            assert_eq!(code, ErrorCode::PhoneRequired);
            assert!(message.contains("verify"), "{message}");
            assert!(!message.contains("::"), "{message}");
        }
        other => panic!("a customer without a phone writes to a business: {other:?}"),
    }
    assert_eq!(
        relay.metric("comptoir_envelopes_accepted_total").await,
        0.0,
        "nothing stored"
    );
    customer
        .send_text(friend.account_id(), "hello friend")
        .await
        .expect("customers still write to customers");
    let (_, shown) = wait_message(&mut friend, customer.account_id()).await;
    assert_eq!(shown, "hello friend");

    let phone = "+447700900123";
    customer
        .request_phone_code(phone)
        .await
        .expect("code request");
    let code = relay.codes.last_for(phone).expect("a code was sent");
    customer
        .verify_phone(phone, &code, false)
        .await
        .expect("verified");
    customer
        .send_text(shop.account_id(), "hello shop")
        .await
        .expect("accepted once the phone is verified");
    let (_, shown) = wait_message(&mut shop, customer.account_id()).await;
    assert_eq!(shown, "hello shop");
}

/// A number proved by another account leaves its earlier holder: with
/// `require_phone_for_business`, the earlier holder is again an account
/// without a verified number (before, its record kept the number, so one
/// SIM could verify any number of accounts for good).
#[tokio::test]
async fn an_account_whose_number_moved_away_no_longer_counts_as_verified() {
    let relay = start_relay_with(|c| c.limits.require_phone_for_business = true).await;
    let (shop_dir, alice_dir, bob_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut shop = registered_as(&relay, shop_dir.path(), "shop passphrase", Business).await;
    let mut alice = registered(&relay, alice_dir.path(), "alice passphrase").await;
    let mut bob = registered(&relay, bob_dir.path(), "bob passphrase").await;
    let phone = "+447700900123";
    for client in [&mut alice, &mut bob] {
        client
            .request_phone_code(phone)
            .await
            .expect("code request");
        let code = relay.codes.last_for(phone).expect("a code was sent");
        client
            .verify_phone(phone, &code, false)
            .await
            .expect("verified");
        client
            .send_text(shop.account_id(), "hello shop")
            .await
            .expect("a verified account writes to a business");
        let (_, shown) = wait_message(&mut shop, client.account_id()).await;
        assert_eq!(shown, "hello shop");
    }
    match alice.send_text(shop.account_id(), "still me").await {
        Err(ClientError::Relay { code, .. }) => assert_eq!(code, ErrorCode::PhoneRequired),
        other => panic!("the number's earlier holder still counts as verified: {other:?}"),
    }
    bob.send_text(shop.account_id(), "and me")
        .await
        .expect("the number's new holder is verified");
}

#[tokio::test]
async fn a_number_its_account_moved_off_no_longer_finds_it() {
    let relay = start_relay().await;
    let (alice_dir, carol_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut alice = registered(&relay, alice_dir.path(), "alice passphrase").await;
    let mut carol = registered(&relay, carol_dir.path(), "carol passphrase").await;
    let (first, second) = ("+447700900123", "+447700900456");
    for phone in [first, second] {
        alice.request_phone_code(phone).await.expect("code request");
        let code = relay.codes.last_for(phone).expect("a code was sent");
        alice
            .verify_phone(phone, &code, true)
            .await
            .expect("verified");
    }
    assert_eq!(
        carol
            .lookup(second)
            .await
            .expect("the new number finds her"),
        alice.account_id()
    );
    match carol.lookup(first).await {
        Err(ClientError::NotFound(handle)) => assert_eq!(handle, first),
        other => panic!("the number alice moved off still finds her: {other:?}"),
    }
}
