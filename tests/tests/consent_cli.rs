//! `comptoir consent grant|list|revoke`, run in-process over a real relay
//! against a business sending templates with raw frames: what the command
//! grants is what the relay lets through, and bad arguments are a command
//! line error (exit 2) that changes nothing.

use crate::support;

use comptoir_protocol::proto::wire::{
    AccountKind, Category, ErrorCode, client_frame, server_frame::Body,
};
use support::cli::comptoir;
use support::*;

/// A utility template from `b` to `to`'s device 1.
async fn utility(b: &mut Client, to: &comptoir_protocol::AccountId, n: u8) -> Body {
    let mut body = send_body_as(to, &[1], id(n), b"ciphertext", Category::Utility);
    if let client_frame::Body::Send(send) = &mut body {
        send.template_id =
            support::templates::id_for(b.account.expect("logged in"), Category::Utility);
    }
    b.request(body).await
}

#[tokio::test]
async fn a_customer_grants_lists_and_revokes_consent_from_the_command_line() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("carol");
    let (code, id_line) = comptoir(&dir, &relay, &["init"]).await;
    assert_eq!(code, 0);
    assert_eq!(comptoir(&dir, &relay, &["register"]).await.0, 0);
    let carol = comptoir_protocol::AccountId::from_hex(id_line.trim()).expect("account id");
    let shop = Account::new(1);
    shop.register_as(relay.addr, AccountKind::Business).await;
    let (mut b, _) = shop.login(relay.addr, 1).await;
    relay.approve_support_templates(&mut b).await;
    let shop_id = shop.id.to_string();
    assert_eq!(
        comptoir(&dir, &relay, &["contacts", "add", "shop", &shop_id])
            .await
            .0,
        0
    );

    assert_eq!(
        error_code(&utility(&mut b, &carol, 1).await),
        ErrorCode::NoConsent
    );
    // Bad arguments: exit 2, nothing granted.
    for bad in [
        &["consent", "grant", "shop", "--categories", "spam"][..],
        &["consent", "grant", "shop"],
        &[
            "consent",
            "grant",
            "shop",
            "--categories",
            "utility",
            "--days",
            "731",
        ],
    ] {
        assert_eq!(comptoir(&dir, &relay, bad).await.0, 2, "{bad:?}");
    }
    assert_eq!(
        comptoir(&dir, &relay, &["consent", "list"]).await,
        (0, String::new())
    );

    let (code, _) = comptoir(
        &dir,
        &relay,
        &[
            "consent",
            "grant",
            "shop",
            "--categories",
            "utility",
            "--days",
            "30",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let (code, listed) = comptoir(&dir, &relay, &["consent", "list"]).await;
    assert_eq!(code, 0);
    assert!(listed.starts_with("shop: utility until "), "{listed:?}");
    assert!(matches!(
        utility(&mut b, &carol, 2).await,
        Body::Accepted(_)
    ));

    assert_eq!(
        comptoir(&dir, &relay, &["consent", "revoke", "shop"])
            .await
            .0,
        0
    );
    assert_eq!(
        comptoir(&dir, &relay, &["consent", "list"]).await,
        (0, "shop: revoked\n".to_string())
    );
    assert_eq!(
        error_code(&utility(&mut b, &carol, 3).await),
        ErrorCode::NoConsent
    );
}
