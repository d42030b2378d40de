//! Helpers for tests that drive the client library against a test relay.

use std::path::Path;

use comptoir_client::{Client, Event, KdfParams, MessageId};
use comptoir_protocol::AccountId;
use comptoir_protocol::proto::wire::AccountKind;

use super::{TIMEOUT, TestRelay};

/// Cheap Argon2id costs: these tests check behaviour, not KDF strength.
pub const FAST_KDF: KdfParams = KdfParams {
    m_cost: 256,
    t_cost: 1,
    p_cost: 1,
};

/// The relay's WebSocket URL.
pub fn url(relay: &TestRelay) -> String {
    format!("ws://{}", relay.addr)
}

/// A new customer account in `dir`, registered on the relay and connected.
pub async fn registered(relay: &TestRelay, dir: &Path, passphrase: &str) -> Client {
    registered_as(relay, dir, passphrase, AccountKind::Customer).await
}

/// A new business account in `dir`, registered on the relay and connected.
pub async fn registered_business(relay: &TestRelay, dir: &Path, passphrase: &str) -> Client {
    registered_as(relay, dir, passphrase, AccountKind::Business).await
}

/// A new account of `kind` in `dir`, registered on the relay and connected.
pub async fn registered_as(
    relay: &TestRelay,
    dir: &Path,
    passphrase: &str,
    kind: AccountKind,
) -> Client {
    let mut client =
        Client::create_with_params(dir, passphrase, FAST_KDF).expect("create the account");
    client
        .register_as(&url(relay), kind)
        .await
        .expect("register");
    client
}

/// A new device in `dir`, linked to `existing`'s account: its link code is
/// approved by `existing`, then it finishes linking on the relay.
pub async fn linked(relay: &TestRelay, existing: &mut Client, dir: &Path) -> Client {
    let mut device =
        Client::create_unlinked(dir, "pw-long-enough", FAST_KDF).expect("create unlinked");
    let approval = existing
        .add_device(&device.link_code().expect("link code"))
        .await
        .expect("approve");
    device
        .finish_link(&url(relay), &approval)
        .await
        .expect("finish link");
    device
}

/// Wait (bounded) for the first event `pick` accepts; other events pass.
pub async fn wait_for<T>(client: &mut Client, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "timed out waiting for an event");
        match client.next_event(left).await.expect("connection stays up") {
            Some(event) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
            None => panic!("timed out waiting for an event"),
        }
    }
}

/// Wait for a text message from `from`: its id and text.
pub async fn wait_message(client: &mut Client, from: AccountId) -> (MessageId, String) {
    wait_for(client, |e| match e {
        Event::Message {
            from: f, id, text, ..
        } if *f == from => Some((*id, text.clone())),
        _ => None,
    })
    .await
}
