//! Reconnect with backoff over a real relay: the relay goes away while two
//! customers are connected; a message written during the outage waits in the
//! outbox; the client keeps retrying (first attempts fail for real) and,
//! once the relay is back at the same address, reconnects and delivers it.

use crate::support;

use comptoir_client::{Client, Status};
use comptoir_protocol::AccountId;
use support::client::{registered, url, wait_message};
use support::{TIMEOUT, start_relay};
use tokio::net::TcpListener;

/// Wait for a text message from `from`; its text.
async fn wait_text(client: &mut Client, from: AccountId) -> String {
    wait_message(client, from).await.1
}

/// Drive the client until its connection is seen to be gone.
async fn wait_disconnected(client: &mut Client) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while client.is_connected() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "the client never noticed the relay left");
        if client.next_event(left).await.is_err() {
            break;
        }
    }
}

#[tokio::test]
async fn client_reconnects_with_backoff_and_flushes_its_outbox() {
    let mut relay = start_relay().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = registered(&relay, dir_a.path(), "alice pass").await;
    let mut bob = registered(&relay, dir_b.path(), "bob pass").await;
    let (a, b) = (alice.account_id(), bob.account_id());
    alice.send_text(b, "before the outage").await.expect("send");
    assert_eq!(wait_text(&mut bob, a).await, "before the outage");

    // The relay stops (graceful shutdown closes every connection).
    relay.stop().await;
    wait_disconnected(&mut alice).await;
    wait_disconnected(&mut bob).await;
    alice.disconnect().await;

    // Written during the outage: kept, pending, in the outbox.
    let during = alice
        .send_text(b, "written during the outage")
        .await
        .expect("queued while offline");
    assert_eq!(alice.outbox_len().expect("outbox"), 1);
    let status = |c: &Client, id| c.message(&b, &id).expect("read").map(|m| m.status);
    assert_eq!(status(&alice, during), Some(Status::Pending));

    // While the relay is down, something else holds its port and hangs up on
    // every connection: the client's first attempts fail for real. Once it
    // has refused two attempts, the relay comes back at the same address.
    let impostor = TcpListener::bind(relay.addr).await.expect("hold the port");
    let address = url(&relay);
    let (connected, relay) = tokio::join!(
        tokio::time::timeout(TIMEOUT, alice.connect_with_backoff(&address, 20)),
        async {
            for _ in 0..2 {
                let (socket, _) = impostor.accept().await.expect("an attempt arrives");
                drop(socket);
            }
            drop(impostor);
            relay.start_again_at_same_address().await
        }
    );
    connected
        .expect("reconnected within the test timeout")
        .expect("reconnected after the relay came back");

    // Reconnecting flushed the outbox.
    assert_eq!(alice.outbox_len().expect("outbox"), 0);
    assert_eq!(status(&alice, during), Some(Status::Accepted));
    bob.connect_with_backoff(&url(&relay), 5)
        .await
        .expect("bob reconnects");
    assert_eq!(wait_text(&mut bob, a).await, "written during the outage");
}
