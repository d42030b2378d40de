//! The load generator behind `relay-load`: N devices (one account each),
//! each sending M envelopes of S bytes to the next device, with at most W
//! sends awaiting `Accepted` per device; every device acks what it
//! receives. Reports envelopes/s and send→deliver latency percentiles.
//!
//! Latency is measured inside one process: the first 8 bytes of each
//! ciphertext carry the send time (nanoseconds since the run started).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use comptoir_protocol::frame::{decode_server, encode_client};
use comptoir_protocol::proto::wire::{self, client_frame, server_frame::Body};
use comptoir_protocol::{
    AccountId, AccountKeyPair, DeviceList, IdentityKeyPair, auth_payload, register_payload,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a load run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server answered something unexpected.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The run did not finish in time.
    #[error("timed out after {0:?}; is the server overloaded or refusing (rate limits)?")]
    Timeout(Duration),
}

/// One run's shape.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Connected devices (one account each).
    pub devices: usize,
    /// Envelopes each device sends.
    pub messages: usize,
    /// Ciphertext bytes per envelope (at least 8).
    pub size: usize,
    /// Sends per device awaiting `Accepted`, at most.
    pub window: usize,
    /// Give up after this long.
    pub timeout: Duration,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Envelopes delivered.
    pub envelopes: u64,
    /// From the first send to the last delivery.
    pub elapsed: Duration,
    /// Envelopes per second.
    pub throughput: f64,
    /// Median send→deliver latency.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Error frames received (should be 0).
    pub errors: u64,
}

/// A test identity with one device.
#[derive(Debug)]
pub struct LoadAccount {
    /// Account id.
    pub id: AccountId,
    key: AccountKeyPair,
    device: IdentityKeyPair,
}

impl LoadAccount {
    /// A fresh random account.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        Self {
            id: AccountId::generate(&mut rng),
            key: AccountKeyPair::generate(&mut rng),
            device: IdentityKeyPair::generate(&mut rng),
        }
    }
}

async fn next_frame(ws: &mut Ws) -> Result<wire::ServerFrame, LoadError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                return decode_server(&b).map_err(|e| LoadError::Protocol(e.to_string()));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(LoadError::Protocol("connection closed".into())),
        }
    }
}

fn client(request_id: u64, body: client_frame::Body) -> Message {
    Message::Binary(
        encode_client(&wire::ClientFrame {
            request_id,
            body: Some(body),
        })
        .into(),
    )
}

/// Connect, optionally register, and authenticate device 1.
pub async fn connect(
    addr: SocketAddr,
    account: &LoadAccount,
    register: bool,
) -> Result<Ws, LoadError> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await?;
    let nonce = match next_frame(&mut ws).await?.body {
        Some(Body::Challenge(c)) => c.nonce,
        other => return Err(LoadError::Protocol(format!("{other:?}"))),
    };
    if register {
        let list = DeviceList::sign(
            &account.key,
            account.id,
            1,
            vec![(1, *account.device.public())],
        )
        .map_err(|e| LoadError::Protocol(e.to_string()))?;
        ws.send(client(
            1,
            client_frame::Body::Register(wire::Register {
                account_id: account.id.to_vec(),
                account_key: account.key.public().to_bytes().to_vec(),
                device_list: Some(list),
                signature: account
                    .key
                    .sign(&register_payload(&account.id, &nonce))
                    .to_vec(),
            }),
        ))
        .await?;
        match next_frame(&mut ws).await?.body {
            Some(Body::Registered(_)) => {}
            other => return Err(LoadError::Protocol(format!("register: {other:?}"))),
        }
    }
    ws.send(client(
        2,
        client_frame::Body::AuthResponse(wire::AuthResponse {
            account_id: account.id.to_vec(),
            device_id: 1,
            signature: account
                .device
                .sign(&auth_payload(
                    &nonce,
                    &account.id,
                    1,
                    &comptoir_protocol::relay_origin(false, &addr.ip().to_string(), addr.port()),
                ))
                .to_vec(),
        }),
    ))
    .await?;
    loop {
        match next_frame(&mut ws).await?.body {
            Some(Body::AuthOk(_)) => return Ok(ws),
            Some(Body::PrekeysLow(_)) => {}
            other => return Err(LoadError::Protocol(format!("auth: {other:?}"))),
        }
    }
}

/// Run the load against a relay or forwarder listening on `addr`.
pub async fn run(addr: SocketAddr, options: LoadOptions) -> Result<LoadReport, LoadError> {
    let n = options.devices.max(2);
    let accounts: Vec<LoadAccount> = (0..n).map(|_| LoadAccount::generate()).collect();
    let mut sockets = Vec::with_capacity(n);
    for account in &accounts {
        sockets.push(connect(addr, account, true).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, ws) in sockets.into_iter().enumerate() {
        let to = accounts[(i + 1) % n].id;
        tasks.push(tokio::spawn(device(ws, to, i as u32, options, start)));
    }
    let mut latencies = Vec::with_capacity(n * options.messages);
    let mut errors = 0;
    let joined = tokio::time::timeout(options.timeout, async {
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await);
        }
        out
    })
    .await
    .map_err(|_| LoadError::Timeout(options.timeout))?;
    for result in joined {
        let (mut lat, errs) = result.map_err(|e| LoadError::Protocol(e.to_string()))??;
        latencies.append(&mut lat);
        errors += errs;
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
        Duration::from_nanos(latencies.get(i).copied().unwrap_or(0))
    };
    Ok(LoadReport {
        envelopes: latencies.len() as u64,
        elapsed,
        throughput: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.5),
        p99: pct(0.99),
        p999: pct(0.999),
        errors,
    })
}

/// One device: keep `window` sends in flight, ack what arrives.
async fn device(
    mut ws: Ws,
    to: AccountId,
    me: u32,
    options: LoadOptions,
    start: Instant,
) -> Result<(Vec<u64>, u64), LoadError> {
    let total = options.messages;
    let (mut sent, mut accepted, mut received) = (0usize, 0usize, 0usize);
    let errors = 0u64;
    let mut latencies = Vec::with_capacity(total);
    let size = options.size.max(16);
    while accepted < total || received < total {
        let mut wrote = false;
        while sent < total && sent - accepted < options.window {
            let mut ciphertext = vec![0x5a; size];
            ciphertext[..8].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
            let mut message_id = [0u8; 16];
            message_id[..4].copy_from_slice(&me.to_be_bytes());
            message_id[4..12].copy_from_slice(&(sent as u64).to_be_bytes());
            ws.feed(client(
                sent as u64 + 10,
                client_frame::Body::Send(wire::Send {
                    message_id: message_id.to_vec(),
                    recipient_account: to.to_vec(),
                    category: wire::Category::Conversation as i32,
                    devices: vec![wire::DeviceCiphertext {
                        device_id: 1,
                        ciphertext,
                    }],
                    ..Default::default()
                }),
            ))
            .await?;
            sent += 1;
            wrote = true;
        }
        if wrote {
            ws.flush().await?;
        }
        let frame = next_frame(&mut ws).await?;
        match frame.body {
            Some(Body::Accepted(_)) => accepted += 1,
            Some(Body::Deliver(d)) => {
                let envelope = d.envelope.unwrap_or_default();
                let sent_at = envelope
                    .ciphertext
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                latencies.push((start.elapsed().as_nanos() as u64).saturating_sub(sent_at));
                received += 1;
                ws.send(client(
                    0,
                    client_frame::Body::DeliveryAck(wire::DeliveryAck {
                        message_id: envelope.message_id,
                        sender_account: envelope.sender_account,
                    }),
                ))
                .await?;
            }
            Some(Body::Error(e)) => {
                return Err(LoadError::Protocol(format!(
                    "the server refused a send (code {}): {}; raise its limits for load runs",
                    e.code, e.message
                )));
            }
            _ => {}
        }
    }
    Ok((latencies, errors))
}
