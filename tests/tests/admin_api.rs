//! The operator's admin API on its own listener: every route asks for the
//! bearer token from the relay's 0600 token file, docs/admin-openapi.json
//! lists exactly the routes served, and the operator key it publishes is
//! the one every `AuthOk` carries. Clients pin that key on first use,
//! keep the pin when a relay presents another, and say so.

use crate::support;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use comptoir_client::Event;
use comptoir_protocol::OperatorKey;
use comptoir_relay::admin::{ErrorBody, ROUTES};
use support::client::{registered, url, wait_for};
use support::*;

/// The (method, path) pairs docs/admin-openapi.json documents.
fn documented_routes() -> BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/admin-openapi.json");
    let text = std::fs::read_to_string(path).expect("read the OpenAPI file");
    let spec: serde_json::Value = serde_json::from_str(&text).expect("the OpenAPI file is JSON");
    let mut routes = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            routes.insert((method.clone(), path.clone()));
        }
    }
    routes
}

/// A concrete request path for a documented route (parameters filled).
fn concrete(path: &str) -> String {
    path.replace("{template_id}", &"0".repeat(64))
        .replace("{account}", &"0".repeat(32))
}

#[tokio::test]
async fn the_openapi_file_lists_exactly_the_routes_served_and_each_needs_the_token() {
    let relay = start_relay().await;
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        documented_routes(),
        served,
        "docs/admin-openapi.json and admin::ROUTES differ"
    );
    let admin = relay.admin_client();
    let wrong = comptoir_relay::admin::client::AdminClient::new(relay.admin, {
        let dir = tempfile::tempdir().expect("temp dir");
        comptoir_relay::operator::load_or_create_admin_token(&dir.path().join("other.token"))
            .expect("another token")
    });
    for (method, path) in ROUTES {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
        let path = concrete(path);
        for (client, with_token) in [(&admin, false), (&wrong, true)] {
            let (status, body) = client
                .raw(method.clone(), &path, None, with_token)
                .await
                .expect("answer");
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            let refusal: ErrorBody = serde_json::from_slice(&body).expect("error body");
            assert_eq!(refusal.error, "unauthorized");
            assert!(
                refusal.message.contains("admin.token"),
                "{}",
                refusal.message
            );
        }
        // With the token, the route answers (tests/tests/templates.rs
        // drives the template routes through every state).
        let (status, _) = admin
            .raw(method.clone(), &path, None, true)
            .await
            .expect("answer");
        if path.contains("/v1/templates/")
            || path.contains("/v1/businesses/")
            || path.contains("/v1/reports/")
        {
            assert!(
                status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
                "{method} {path}: {status}"
            );
        } else {
            assert!(status.is_success(), "{method} {path}: {status}");
        }
    }
    let (status, body) = admin
        .raw(Method::GET, "/v1/nothing-here", None, true)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let refusal: ErrorBody = serde_json::from_slice(&body).expect("error body");
    assert_eq!(refusal.error, "not_found");
    // Without the token even an unknown path says only "unauthorized".
    let (status, _) = admin
        .raw(Method::GET, "/v1/nothing-here", None, false)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn clients_pin_the_operator_key_and_keep_the_pin_when_the_relay_presents_another() {
    let relay = start_relay().await;
    let published = relay.admin_client().operator_key().await.expect("key");
    let published = OperatorKey::from_bytes(&hex::decode(&published.operator_key).expect("hex"))
        .expect("a public key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["operator.key", "admin.token"] {
            let mode = std::fs::metadata(relay.data_dir.join(file))
                .expect("secret file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let mut client = registered(&relay, dir.path(), "pw-long-enough").await;
    assert_eq!(client.operator_key().expect("pin"), Some(published));

    // The key survives a restart: the client sees the same one.
    let mut relay = relay.restart().await;
    client.connect(&url(&relay)).await.expect("connect");
    assert_eq!(
        relay
            .admin_client()
            .operator_key()
            .await
            .expect("key")
            .operator_key,
        hex::encode(published.to_bytes())
    );

    // The operator key is replaced (lost, or a relay impersonated): the
    // client keeps its pin and says so.
    relay.stop().await;
    std::fs::remove_file(relay.data_dir.join("operator.key")).expect("remove the key");
    let relay = relay.start_again_at_same_address().await;
    let replaced = relay.admin_client().operator_key().await.expect("key");
    let replaced = OperatorKey::from_bytes(&hex::decode(&replaced.operator_key).expect("hex"))
        .expect("a public key");
    assert_ne!(replaced, published);
    client.connect(&url(&relay)).await.expect("connect");
    let (pinned, offered) = wait_for(&mut client, |e| match e {
        Event::OperatorKeyChanged { pinned, offered } => Some((**pinned, **offered)),
        _ => None,
    })
    .await;
    assert_eq!((pinned, offered), (published, replaced));
    assert_eq!(client.operator_key().expect("pin"), Some(published));

    // Pinned on purpose, the new key is trusted and no longer reported.
    client.pin_operator_key(&replaced).await.expect("pin");
    client.connect(&url(&relay)).await.expect("connect");
    assert_eq!(client.operator_key().expect("pin"), Some(replaced));
    while let Some(event) = client
        .next_event(std::time::Duration::ZERO)
        .await
        .expect("connected")
    {
        assert!(
            !matches!(event, Event::OperatorKeyChanged { .. }),
            "{event:?}"
        );
    }
}
