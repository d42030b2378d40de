//! The mode behind `relay-load mux`: many tasks sending through **one**
//! device connection of the client library (`comptoir_client::connection`,
//! which matches replies to requests by request id), against a real relay.
//! Each task sends its share of `Send` requests one after another, waiting
//! for each `Accepted`; the run reports sends per second, so runs with 1
//! and with 16 tasks show what multiplexing one connection buys.
//!
//! What is timed is the relay round trip (the relay answers `Accepted` once
//! the envelope is durably stored); the ciphertext is filler, as the relay
//! never reads it, so client-side encryption is not part of the figure.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use comptoir_client::connection::{Connection, Requester};
use comptoir_client::{ClientError, TlsOptions};
use comptoir_protocol::AccountId;
use comptoir_protocol::proto::wire::{self, client_frame, server_frame::Body};

use crate::load::LoadAccount;

/// Why a mux run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// The client library's connection failed.
    #[error("connection: {0}")]
    Client(#[from] ClientError),
    /// The relay answered something other than what was asked for.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
    /// A reply did not come in time.
    #[error("no reply within {0:?}; is the relay overloaded or refusing (rate limits)?")]
    Timeout(Duration),
    /// A sending task panicked or was cancelled.
    #[error("a sending task failed: {0}")]
    Task(String),
}

/// One run's shape.
#[derive(Clone, Copy, Debug)]
pub struct MuxOptions {
    /// Tasks sharing the one connection.
    pub tasks: usize,
    /// Sends in the whole run (split evenly between the tasks).
    pub messages: usize,
    /// Ciphertext bytes per send.
    pub size: usize,
    /// Longest wait for one reply.
    pub timeout: Duration,
}

/// What a run measured.
#[derive(Clone, Copy, Debug)]
pub struct MuxReport {
    /// Tasks sharing the connection.
    pub tasks: usize,
    /// Sends accepted.
    pub sends: usize,
    /// From the first send to the last `Accepted`.
    pub elapsed: Duration,
    /// Sends accepted per second.
    pub per_sec: f64,
}

/// Authenticate `sender` (registered already) on one client-library
/// connection to the relay at `addr`, then send `options.messages`
/// envelopes to `recipient` (one device, id 1) from `options.tasks` tasks.
pub async fn run(
    addr: SocketAddr,
    sender: &LoadAccount,
    recipient: AccountId,
    options: MuxOptions,
) -> Result<MuxReport, MuxError> {
    let (mut conn, challenge) =
        Connection::connect(&format!("ws://{addr}/"), &TlsOptions::default()).await?;
    let auth = client_frame::Body::AuthResponse(sender.auth_response(&challenge.nonce, addr));
    match within(options.timeout, conn.request(auth)).await?.body {
        Some(Body::AuthOk(_)) => {}
        other => return Err(MuxError::Unexpected(format!("auth: {other:?}"))),
    }
    let tasks = options.tasks.max(1);
    let start = Instant::now();
    let mut running = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let share = options.messages / tasks + usize::from(task < options.messages % tasks);
        running.push(tokio::spawn(send_many(
            conn.requester(),
            recipient,
            share,
            options,
        )));
    }
    let mut sends = 0;
    for task in running {
        sends += task.await.map_err(|e| MuxError::Task(e.to_string()))??;
    }
    let elapsed = start.elapsed();
    conn.close().await;
    Ok(MuxReport {
        tasks,
        sends,
        elapsed,
        per_sec: sends as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
    })
}

/// One task: `count` sends, each awaiting its `Accepted`.
async fn send_many(
    requester: Requester,
    recipient: AccountId,
    count: usize,
    options: MuxOptions,
) -> Result<usize, MuxError> {
    for _ in 0..count {
        let message_id: [u8; 16] = rand::random();
        let send = client_frame::Body::Send(wire::Send {
            message_id: message_id.to_vec(),
            recipient_account: recipient.to_vec(),
            category: wire::Category::Conversation as i32,
            devices: vec![wire::DeviceCiphertext {
                device_id: 1,
                ciphertext: vec![0xa5; options.size],
            }],
            ..Default::default()
        });
        match within(options.timeout, requester.request(send)).await?.body {
            Some(Body::Accepted(accepted)) if accepted.message_id == message_id => {}
            other => return Err(MuxError::Unexpected(format!("send: {other:?}"))),
        }
    }
    Ok(count)
}

async fn within<T>(
    timeout: Duration,
    reply: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, MuxError> {
    tokio::time::timeout(timeout, reply)
        .await
        .map_err(|_| MuxError::Timeout(timeout))?
        .map_err(MuxError::from)
}
