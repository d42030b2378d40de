//! The mode behind `relay-load client-mux`: many tasks sending **encrypted**
//! text messages through one `comptoir_client::Client` (its [`Sender`]
//! handles) against a real relay, so the figure includes everything a send
//! costs the device: the store writes and their syncs (shared by a group
//! commit), the Double Ratchet encryption under the recipient's lock, and
//! the relay round trip to `Accepted`. Each task sends its share one
//! message after another; runs with 1 and with 16 tasks show what sending
//! concurrently through one device buys.
//!
//! Sessions with the recipients are started before the clock starts (one
//! message to each), so the timed part is steady-state sending. Recipients
//! are offline: the relay queues their mail.
//!
//! [`Sender`]: comptoir_client::Sender

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use comptoir_client::Sender;
use comptoir_client::{Client, KdfParams};
use comptoir_protocol::AccountId;

use crate::mux::{MuxError, MuxReport};

/// Cheap Argon2id costs: the store key is derived once per run, outside
/// the timed part.
const BENCH_KDF: KdfParams = KdfParams {
    m_cost: 256,
    t_cost: 1,
    p_cost: 1,
};
const PASSPHRASE: &str = "bench passphrase";

/// One run's shape.
#[derive(Clone, Copy, Debug)]
pub struct ClientMuxOptions {
    /// Tasks sending through the one client.
    pub tasks: usize,
    /// Messages in the whole run (split evenly between the tasks).
    pub messages: usize,
    /// Text bytes per message.
    pub size: usize,
    /// Recipient accounts (task i writes to recipient i mod peers).
    pub peers: usize,
    /// Longest wait for one send.
    pub timeout: Duration,
}

/// Register a sender and `options.peers` recipients on the relay at
/// `addr` (fresh stores in temp dirs), start a session with each
/// recipient, then time `options.messages` sends from `options.tasks`
/// tasks through the sender's one connection.
pub async fn run(addr: SocketAddr, options: ClientMuxOptions) -> Result<MuxReport, MuxError> {
    let url = format!("ws://{addr}");
    let dirs = (0..=options.peers.max(1))
        .map(|_| tempfile::tempdir())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MuxError::Unexpected(format!("temp dir: {e}")))?;
    let mut recipients = Vec::new();
    for dir in &dirs[1..] {
        let mut client = Client::create_with_params(dir.path(), PASSPHRASE, BENCH_KDF)?;
        client.register(&url).await?;
        recipients.push(client.account_id());
        client.close().await?;
    }
    let mut client = Client::create_with_params(dirs[0].path(), PASSPHRASE, BENCH_KDF)?;
    client.register(&url).await?;
    for &peer in &recipients {
        client.send_text(peer, "session start").await?;
    }
    let text = "x".repeat(options.size.max(1));
    let tasks = options.tasks.max(1);
    let sender = client.sender();
    let start = Instant::now();
    let mut running = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let share = options.messages / tasks + usize::from(task < options.messages % tasks);
        let peer = recipients[task % recipients.len()];
        running.push(tokio::spawn(send_many(
            sender.clone(),
            peer,
            text.clone(),
            share,
            options.timeout,
        )));
    }
    drop(sender);
    let mut sends = 0;
    for task in running {
        sends += task.await.map_err(|e| MuxError::Task(e.to_string()))??;
    }
    let elapsed = start.elapsed();
    client.close().await?;
    Ok(MuxReport {
        tasks,
        sends,
        elapsed,
        per_sec: sends as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
    })
}

/// One task: `count` encrypted sends to `peer`, each awaited until the
/// relay accepted it.
async fn send_many(
    sender: Sender,
    peer: AccountId,
    text: String,
    count: usize,
    timeout: Duration,
) -> Result<usize, MuxError> {
    for _ in 0..count {
        tokio::time::timeout(timeout, sender.send_text(peer, &text))
            .await
            .map_err(|_| MuxError::Timeout(timeout))??;
    }
    Ok(count)
}
