//! Reconnect with backoff over a real relay: the relay goes away while two
//! customers are connected; a message written during the outage waits in the
//! outbox; the client keeps retrying (first attempts fail for real) and,
//! once the relay is back at the same address, reconnects and delivers it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::support;

use std::time::Duration;

use comptoir_client::{Client, Keepalive, Status};
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

/// A TCP proxy in front of the relay whose open connections can be made
/// to go silent: from then on it swallows their bytes both ways and closes
/// neither end, as when the relay's machine vanished without a word or a
/// NAT on the way forgot the connection. Connections made later are
/// forwarded as usual.
struct SilencingProxy {
    addr: std::net::SocketAddr,
    open: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SilencingProxy {
    /// A relay that accepts logins made through the proxy as well as
    /// directly, and the proxy in front of it. Keep the directory: it
    /// holds the relay's data.
    async fn with_relay() -> (support::TestRelay, Self, tempfile::TempDir) {
        let (relay, proxy_listener, data) = support::relay_for_a_proxy(|_| {}).await;
        let proxy = Self::start_on(proxy_listener, relay.addr);
        (relay, proxy, data)
    }

    /// Forward each connection `listener` accepts to `relay`.
    fn start_on(listener: TcpListener, relay: std::net::SocketAddr) -> Self {
        let addr = listener.local_addr().expect("address");
        let open: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let connections = Arc::clone(&open);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = tokio::net::TcpStream::connect(relay).await else {
                    continue;
                };
                let silent = Arc::new(AtomicBool::new(false));
                connections
                    .lock()
                    .expect("not poisoned")
                    .push(Arc::clone(&silent));
                let (client_read, client_write) = client.into_split();
                let (relay_read, relay_write) = upstream.into_split();
                tokio::spawn(pump(client_read, relay_write, Arc::clone(&silent)));
                tokio::spawn(pump(relay_read, client_write, silent));
            }
        });
        Self { addr, open, task }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// How many connections the proxy has forwarded so far.
    fn forwarded(&self) -> usize {
        self.open.lock().expect("not poisoned").len()
    }

    /// Every connection open now goes silent.
    fn silence_open_connections(&self) {
        for silent in self.open.lock().expect("not poisoned").iter() {
            silent.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for SilencingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copy `from` to `to` until either ends; once `silent`, read and drop.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !silent.load(Ordering::SeqCst) && to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_connection_that_goes_silent_is_noticed_and_replaced() {
    let (relay, proxy, _data) = SilencingProxy::with_relay().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = registered(&relay, dir_a.path(), "alice pass").await;
    let mut bob = registered(&relay, dir_b.path(), "bob pass").await;
    let (a, b) = (alice.account_id(), bob.account_id());
    // Alice reaches the relay through the proxy from now on, and notices a
    // dead link within 4 s rather than the default 30.
    alice.disconnect().await;
    alice.set_keepalive(Keepalive {
        idle: Duration::from_secs(1),
        answer_within: Duration::from_secs(3),
    });
    alice
        .connect(&proxy.url())
        .await
        .expect("connect through the proxy");

    // The link goes dead without a word; Bob writes meanwhile.
    proxy.silence_open_connections();
    bob.send_text(a, "while the link was dead")
        .await
        .expect("bob's send");

    // Alice notices on her own (nothing she sent asked for an answer) and
    // connects again, which brings her what she missed.
    let lost = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Err(e) = alice.next_event(TIMEOUT).await {
                return e;
            }
        }
    })
    .await
    .expect("alice never noticed the dead link");
    assert!(lost.to_string().contains("did not answer"), "{lost}");
    alice
        .connect_with_backoff(&proxy.url(), 5)
        .await
        .expect("alice connects again");
    assert_eq!(wait_text(&mut alice, b).await, "while the link was dead");
}

/// The agent daemon's `keepalive_seconds` is its device's: a link that
/// dies without a word is noticed that soon and replaced, and a customer's
/// message written meanwhile reaches the backend's webhook (with the
/// default, 30 s, it would not within the test's 10 s).
#[tokio::test]
async fn an_agent_daemon_notices_a_silent_link_as_soon_as_its_keepalive_says() {
    use comptoir_agent::clock::ManualClock;
    use support::agent;
    let (relay, proxy, _data) = SilencingProxy::with_relay().await;
    let root = tempfile::tempdir().expect("temp dir");
    let receiver = agent::Receiver::start().await;
    let text = agent::config_toml(
        &relay,
        &agent::data_dir(root.path()),
        &receiver,
        "keepalive_seconds = 1",
        "",
    );
    let mut config = comptoir_agent::config::Config::parse(&text, &|_| None).expect("agent config");
    let business = agent::init_business(&relay, &config).await;
    // The daemon reaches the relay through the proxy.
    config.relay = proxy.url();
    let clock = ManualClock::at(comptoir_client::client::now_ms());
    let daemon = agent::serve(&config, clock).await;
    let mut erin = agent::customer(&relay, root.path(), "erin").await;
    let first = erin
        .send_text(business, "Is my parcel on its way?")
        .await
        .expect("send");
    receiver
        .wait("the first message", |h| {
            h.event_id == format!("message:{first}")
        })
        .await;

    // The daemon's link dies without a word; Erin writes again.
    let before = proxy.forwarded();
    proxy.silence_open_connections();
    let second = erin.send_text(business, "Hello?").await.expect("send");
    receiver
        .wait("the message written while the link was dead", |h| {
            h.event_id == format!("message:{second}")
        })
        .await;
    assert!(
        proxy.forwarded() > before,
        "the message came over a connection made after the silence"
    );
    daemon.stop().await;
}
