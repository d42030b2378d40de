//! Verified businesses: a business publishes its profile signed by its
//! account key; the operator certifies it (`relay admin business
//! verify`); a customer's client shows the verified mark and the
//! certified name only when the certificate checks against the operator
//! key it pinned and names the account key it pinned, and the profile is
//! the certified one. Otherwise the business is shown by its handle. A
//! verified name reserves every name confusable with it. Bad input is
//! typed and changes nothing.

use crate::support;

use comptoir_client::{BusinessView, Client, ClientError};
use comptoir_protocol::business::{BusinessProfile, NotVerified, Verification, Vertical};
use comptoir_protocol::proto::wire::{self, AccountKind, ErrorCode, client_frame};
use comptoir_protocol::{AccountId, OperatorKeyPair};
use comptoir_relay::admin::client::AdminClientError;
use support::client::registered_as;
use support::*;

fn profile(account: AccountId, name: &str) -> BusinessProfile {
    BusinessProfile {
        account,
        display_name: name.into(),
        about: "Flights and boarding passes".into(),
        address: String::new(),
        website: Some("https://acme.example".into()),
        email: None,
        opening_hours: String::new(),
        vertical: Vertical::Travel,
    }
}

fn refusal(error: AdminClientError) -> (u16, String) {
    match error {
        AdminClientError::Refused { status, error, .. } => (status, error),
        other => panic!("expected a refusal, got {other}"),
    }
}

fn not_verified(view: &BusinessView) -> NotVerified {
    match &view.verification {
        Verification::NotVerified(reason) => *reason,
        Verification::Verified { display_name } => panic!("verified as {display_name}"),
    }
}

async fn business(relay: &TestRelay, dir: &std::path::Path, name: &str) -> Client {
    let mut client = support::client::registered_business(relay, dir, "pw-long-enough").await;
    client
        .publish_profile(&profile(client.account_id(), name))
        .await
        .expect("publish");
    client
}

#[tokio::test]
async fn a_customer_sees_the_mark_only_for_a_certificate_it_can_check() {
    let relay = start_relay().await;
    let admin = relay.admin_client();
    let root = tempfile::tempdir().expect("temp dir");
    let mut acme = business(&relay, &root.path().join("acme"), "Acme Air").await;
    let acme_id = acme.account_id();
    let mut carol = registered_as(
        &relay,
        &root.path().join("carol"),
        "pw-long-enough",
        AccountKind::Customer,
    )
    .await;

    // Published, not certified: no mark, shown by its handle.
    let view = carol.business(acme_id).await.expect("view");
    assert_eq!(not_verified(&view), NotVerified::NoCertificate);
    assert_eq!(view.shown_name("acme-air"), "acme-air");
    assert_eq!(view.profile.expect("profile").display_name, "Acme Air");

    // Certified: the mark, and the certified name.
    let verified = admin
        .verify_business(&acme_id.to_string(), Some(30))
        .await
        .expect("verify");
    assert!(verified.verified);
    let view = carol.business(acme_id).await.expect("view");
    assert_eq!(
        view.verification,
        Verification::Verified {
            display_name: "Acme Air".into()
        }
    );
    assert_eq!(view.shown_name("acme-air"), "Acme Air");

    // A client that pinned another operator key sees a forged certificate.
    let operator = carol.operator_key().expect("pin").expect("pinned");
    let other = OperatorKeyPair::generate(&mut rand::rng()).public();
    carol.pin_operator_key(&other).await.expect("pin");
    let view = carol.business(acme_id).await.expect("view");
    assert_eq!(not_verified(&view), NotVerified::BadSignature);
    assert_eq!(view.shown_name("acme-air"), "acme-air");
    carol.pin_operator_key(&operator).await.expect("pin back");
    assert!(
        carol
            .business(acme_id)
            .await
            .expect("view")
            .verification
            .is_verified()
    );

    // The business changes its profile: no mark until certified again.
    acme.publish_profile(&BusinessProfile {
        about: "Now also trains".into(),
        ..profile(acme_id, "Acme Air")
    })
    .await
    .expect("publish");
    let view = carol.business(acme_id).await.expect("view");
    assert_eq!(not_verified(&view), NotVerified::ProfileMismatch);
    admin
        .verify_business(&acme_id.to_string(), None)
        .await
        .expect("verify again");
    assert!(
        carol
            .business(acme_id)
            .await
            .expect("view")
            .verification
            .is_verified()
    );

    // Revoked: no mark.
    let revoked = admin
        .revoke_business(&acme_id.to_string())
        .await
        .expect("revoke");
    assert!(revoked.revoked && !revoked.verified);
    let view = carol.business(acme_id).await.expect("view");
    assert_eq!(not_verified(&view), NotVerified::Revoked);
    assert_eq!(
        refusal(
            admin
                .revoke_business(&acme_id.to_string())
                .await
                .expect_err("twice")
        ),
        (409, "conflict".into())
    );

    // Certified on a relay clock ahead of the client's: not valid yet.
    relay.clock.shift(3 * 24 * 60 * 60 * 1000);
    admin
        .verify_business(&acme_id.to_string(), Some(1))
        .await
        .expect("verify");
    let view = carol.business(acme_id).await.expect("view");
    assert_eq!(not_verified(&view), NotVerified::NotYetValid);
}

#[tokio::test]
async fn a_verified_name_reserves_every_name_confusable_with_it() {
    let relay = start_relay().await;
    let admin = relay.admin_client();
    let root = tempfile::tempdir().expect("temp dir");
    let mut acme = business(&relay, &root.path().join("acme"), "Acme Air").await;
    admin
        .verify_business(&acme.account_id().to_string(), None)
        .await
        .expect("verify");
    // Greek capital alpha for the A.
    let mut impostor = business(&relay, &root.path().join("impostor"), "\u{391}cme Air").await;
    let impostor_id = impostor.account_id().to_string();
    assert_eq!(
        refusal(
            admin
                .verify_business(&impostor_id, None)
                .await
                .expect_err("confusable")
        ),
        (409, "conflict".into())
    );
    assert!(!admin.business(&impostor_id).await.expect("show").verified);
    for name in ["acme-air", "acmeair", "acrne-air"] {
        match impostor.claim_name(name).await {
            Err(ClientError::Relay {
                code: ErrorCode::NameTaken,
                message,
            }) => assert!(message.contains("reserved"), "{message}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    impostor
        .claim_name("zenith-air")
        .await
        .expect("a distinct name");
    acme.claim_name("acme-air").await.expect("its own name");
}

#[tokio::test]
async fn bad_profiles_and_bad_admin_requests_are_refused_and_change_nothing() {
    let relay = start_relay().await;
    let admin = relay.admin_client();
    let root = tempfile::tempdir().expect("temp dir");
    let business_account = Account::new(1);
    business_account
        .register_as(relay.addr, AccountKind::Business)
        .await;
    let (mut b, _) = business_account.login(relay.addr, 1).await;
    let customer = Account::new(1);
    customer.register(relay.addr).await;
    let (mut c, _) = customer.login(relay.addr, 1).await;

    let good = profile(business_account.id, "Acme Air");
    let signed = |p: &BusinessProfile| {
        comptoir_protocol::business::sign_profile(&business_account.key, p).expect("sign")
    };
    let publish = |p: &BusinessProfile, signature: Vec<u8>| {
        client_frame::Body::PublishProfile(wire::PublishProfile {
            profile_json: serde_json::to_string(p).expect("json"),
            signature,
        })
    };
    let code = |reply: &wire::server_frame::Body| error_code(reply);
    // Not signed by the account key.
    let forged = comptoir_protocol::AccountKeyPair::generate(&mut rand::rng());
    let reply = b
        .request(publish(
            &good,
            comptoir_protocol::business::sign_profile(&forged, &good)
                .expect("sign")
                .to_vec(),
        ))
        .await;
    assert_eq!(code(&reply), ErrorCode::BadSignature);
    // Another account's profile, a broken one, garbage.
    let theirs = profile(customer.id, "Acme Air");
    let reply = b.request(publish(&theirs, signed(&theirs).to_vec())).await;
    assert_eq!(code(&reply), ErrorCode::InvalidRequest);
    let reply = b
        .request(client_frame::Body::PublishProfile(wire::PublishProfile {
            profile_json: "{".into(),
            signature: vec![0; 64],
        }))
        .await;
    assert_eq!(code(&reply), ErrorCode::InvalidRequest);
    // A customer account has no profile.
    let mine = profile(customer.id, "Carol");
    let reply = c
        .request(publish(
            &mine,
            comptoir_protocol::business::sign_profile(&customer.key, &mine)
                .expect("sign")
                .to_vec(),
        ))
        .await;
    assert_eq!(code(&reply), ErrorCode::AccountKind);
    // Nothing was kept.
    let id = business_account.id.to_string();
    assert_eq!(
        refusal(admin.business(&id).await.expect_err("nothing kept")),
        (404, "unknown_business".into())
    );
    assert_eq!(
        refusal(
            admin
                .verify_business(&id, None)
                .await
                .expect_err("no profile")
        ),
        (404, "unknown_business".into())
    );

    // Published: the operator's bad requests are typed too.
    let reply = b.request(publish(&good, signed(&good).to_vec())).await;
    assert!(
        matches!(reply, wire::server_frame::Body::Ok(_)),
        "{reply:?}"
    );
    assert_eq!(
        refusal(
            admin
                .verify_business(&id, Some(0))
                .await
                .expect_err("0 days")
        ),
        (400, "bad_request".into())
    );
    assert_eq!(
        refusal(
            admin
                .verify_business(&id, Some(826))
                .await
                .expect_err("too long")
        ),
        (400, "bad_request".into())
    );
    assert_eq!(
        refusal(admin.business("nothex").await.expect_err("bad id")),
        (400, "bad_request".into())
    );
    assert_eq!(
        refusal(
            admin
                .revoke_business(&id)
                .await
                .expect_err("never verified")
        ),
        (409, "conflict".into())
    );
    let shown = admin.business(&id).await.expect("show");
    assert!(!shown.verified && shown.certificate.is_none());
    drop(root);
}

#[tokio::test]
async fn a_customer_blocks_a_business_with_a_reason_that_counts_once_towards_its_rating() {
    use comptoir_protocol::proto::wire::BlockReason;
    let relay = start_relay().await;
    let admin = relay.admin_client();
    let root = tempfile::tempdir().expect("temp dir");
    let acme = business(&relay, &root.path().join("acme"), "Acme Air").await;
    let acme_id = acme.account_id();
    let mut carol = registered_as(
        &relay,
        &root.path().join("carol"),
        "pw-long-enough",
        AccountKind::Customer,
    )
    .await;
    let mut dave = registered_as(
        &relay,
        &root.path().join("dave"),
        "pw-long-enough",
        AccountKind::Customer,
    )
    .await;
    assert!(
        admin
            .business(&acme_id.to_string())
            .await
            .expect("show")
            .blocks
            .is_empty()
    );

    carol
        .block_for(acme_id, BlockReason::Spam)
        .await
        .expect("block");
    dave.block_for(acme_id, BlockReason::DidNotSignUp)
        .await
        .expect("block");
    // Blocking again with another reason replaces Carol's, it does not add.
    carol.unblock(acme_id).await.expect("unblock");
    carol
        .block_for(acme_id, BlockReason::Offensive)
        .await
        .expect("block again");
    // A customer blocking a customer is not counted for anyone.
    carol
        .block_for(dave.account_id(), BlockReason::Spam)
        .await
        .expect("block a person");
    let blocks = admin
        .business(&acme_id.to_string())
        .await
        .expect("show")
        .blocks;
    assert_eq!(
        blocks.into_iter().collect::<Vec<_>>(),
        vec![
            ("did_not_sign_up".to_owned(), 1),
            ("offensive".to_owned(), 1)
        ]
    );

    // An unknown reason is refused and changes nothing.
    let customer = Account::new(1);
    customer.register(relay.addr).await;
    let (mut c, _) = customer.login(relay.addr, 1).await;
    let reply = c
        .request(client_frame::Body::Block(wire::Block {
            account_id: acme_id.to_vec(),
            reason: 99,
        }))
        .await;
    assert_eq!(error_code(&reply), ErrorCode::InvalidRequest);
    assert_eq!(
        admin
            .business(&acme_id.to_string())
            .await
            .expect("show")
            .blocks
            .values()
            .sum::<u64>(),
        2
    );
}
