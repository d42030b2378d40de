//! A device's login is bound to the relay it dialled: a fake relay that
//! passes the challenge on to the real one gets a signature the real one
//! refuses, so it cannot log in as the device (nor delete its mail).

use crate::support;

use comptoir_client::{Client, ClientError};
use comptoir_protocol::proto::wire::ErrorCode;
use support::client::{FAST_KDF, url};
use support::start_relay;
use support::tamper::Tamper;

#[tokio::test]
async fn a_relay_passing_the_challenge_on_cannot_log_in_as_the_device() {
    let relay = start_relay().await;
    let root = tempfile::tempdir().expect("dir");
    let mut alice = Client::create_with_params(&root.path().join("a"), "pw-long-enough", FAST_KDF)
        .expect("create");
    alice.register(&url(&relay)).await.expect("register");
    alice.close_connection().await;

    // The fake relay forwards every frame both ways, unchanged.
    let (listener, _) = Tamper::bind().await;
    let fake = Tamper::start(listener, relay.addr);
    let refused = alice.connect(&fake.url()).await;
    assert!(
        matches!(
            refused,
            Err(ClientError::Relay {
                code: ErrorCode::AuthFailed,
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(!alice.is_connected());

    // The relay's own origins work, by address or as localhost.
    alice.connect(&url(&relay)).await.expect("direct");
    alice
        .connect(&format!("ws://localhost:{}", relay.addr.port()))
        .await
        .expect("as localhost");
}
