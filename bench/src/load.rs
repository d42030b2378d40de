//! The load generator behind `relay-load`: N devices (one account each),
//! each sending M envelopes of S bytes to the next device, with at most W
//! sends awaiting `Accepted` per device; every device acks what it
//! receives. Reports envelopes/s and send→deliver latency percentiles.
//!
//! Latency is measured inside one process: the first 8 bytes of each
//! ciphertext carry the send time (nanoseconds since the run started).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use comptoir_protocol::frame::{decode_server, encode_client};
use comptoir_protocol::proto::wire::{self, client_frame, server_frame::Body};
use comptoir_protocol::{
    AccountId, AccountKeyPair, DeviceList, IdentityKeyPair, auth_payload, register_payload,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
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
    /// The connection could not be opened (e.g. no such source address).
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
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

    /// The signed answer to the relay's challenge `nonce`, as device 1,
    /// for a relay dialled as `ws://addr` (or, after
    /// [`use_old_auth_payload`], for a relay from before origin binding).
    pub fn auth_response(&self, nonce: &[u8], addr: SocketAddr) -> wire::AuthResponse {
        let payload = if OLD_AUTH.load(std::sync::atomic::Ordering::Relaxed) {
            old_auth_payload(nonce, &self.id)
        } else {
            let origin =
                comptoir_protocol::relay_origin(false, &addr.ip().to_string(), addr.port());
            auth_payload(nonce, &self.id, 1, &origin)
        };
        wire::AuthResponse {
            account_id: self.id.to_vec(),
            device_id: 1,
            signature: self.device.sign(&payload).to_vec(),
        }
    }
}

static OLD_AUTH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sign challenges and registrations as a relay from before the
/// origin-bound auth payload and the kind-bound registration expects (main
/// at 515e604, which the benchmarks compare against):
/// `"Comptoir auth v1" || nonce || account || device 1` and
/// `"Comptoir register v1" || account || nonce`.
pub fn use_old_auth_payload() {
    OLD_AUTH.store(true, std::sync::atomic::Ordering::Relaxed);
}

impl LoadAccount {
    /// What the account key signs to register this customer account.
    fn register_signed_bytes(&self, nonce: &[u8]) -> Vec<u8> {
        if OLD_AUTH.load(std::sync::atomic::Ordering::Relaxed) {
            let mut out = b"Comptoir register v1".to_vec();
            out.extend_from_slice(self.id.as_bytes());
            out.extend_from_slice(nonce);
            out
        } else {
            register_payload(&self.id, wire::AccountKind::Customer, nonce)
        }
    }
}

fn old_auth_payload(nonce: &[u8], account: &AccountId) -> Vec<u8> {
    let mut out = b"Comptoir auth v1".to_vec();
    out.extend_from_slice(nonce);
    out.extend_from_slice(account.as_bytes());
    out.extend_from_slice(&1u32.to_be_bytes());
    out
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

/// Connections opened from one loopback source address before the next
/// is used: under the relay's default per-address cap (256), so a load of
/// any size is admitted, and under the ~28,000 ephemeral ports per source.
pub const CONNECTIONS_PER_SOURCE: usize = 200;

/// The source address for the `index`-th connection to `addr`: for an
/// IPv4 loopback target, 127.0.0.2, 127.0.0.3, ... in turns of
/// [`CONNECTIONS_PER_SOURCE`] (all of 127/8 is loopback on Linux);
/// otherwise the system's choice.
pub fn source_for(addr: SocketAddr, index: usize) -> Option<IpAddr> {
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => {
            let n = (index / CONNECTIONS_PER_SOURCE) % (250 * 250);
            let (high, low) = ((n / 250) as u8, (n % 250) as u8);
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, high, 2 + low)))
        }
        _ => None,
    }
}

/// Connect, optionally register, and authenticate device 1; the
/// `index`-th connection of a run (it picks the source address, see
/// [`source_for`]).
pub async fn connect(
    addr: SocketAddr,
    index: usize,
    account: &LoadAccount,
    register: bool,
) -> Result<Ws, LoadError> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source_for(addr, index) {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/"), MaybeTlsStream::Plain(stream))
            .await?;
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
                    .sign(&account.register_signed_bytes(&nonce))
                    .to_vec(),
                kind: wire::AccountKind::Customer as i32,
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
        client_frame::Body::AuthResponse(account.auth_response(&nonce, addr)),
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
    for (index, account) in accounts.iter().enumerate() {
        sockets.push(connect(addr, index, account, true).await?);
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
                        accept_id: envelope.accept_id,
                        ..Default::default()
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

/// What [`run_single`] measured.
#[derive(Clone, Debug)]
pub struct SingleReport {
    /// Sends accepted.
    pub sends: u64,
    /// From the first send to the last `Accepted`.
    pub elapsed: Duration,
    /// Sends per second.
    pub throughput: f64,
    /// Median send→`Accepted` time.
    pub p50: Duration,
}

fn send_frame(request_id: u64, to: AccountId, message_id: [u8; 16], size: usize) -> Message {
    client(
        request_id,
        client_frame::Body::Send(wire::Send {
            message_id: message_id.to_vec(),
            recipient_account: to.to_vec(),
            category: wire::Category::Conversation as i32,
            devices: vec![wire::DeviceCiphertext {
                device_id: 1,
                ciphertext: vec![0x5a; size],
            }],
            ..Default::default()
        }),
    )
}

fn ack_frame(envelope: Option<wire::Envelope>) -> Message {
    let envelope = envelope.unwrap_or_default();
    client(
        0,
        client_frame::Body::DeliveryAck(wire::DeliveryAck {
            message_id: envelope.message_id,
            sender_account: envelope.sender_account,
            accept_id: envelope.accept_id,
            ..Default::default()
        }),
    )
}

/// Receive and ack `count` envelopes.
async fn receive_and_ack(ws: &mut Ws, count: usize) -> Result<(), LoadError> {
    let mut received = 0;
    while received < count {
        if let Some(Body::Deliver(d)) = next_frame(ws).await?.body {
            ws.send(ack_frame(d.envelope)).await?;
            received += 1;
        }
    }
    Ok(())
}

/// One device sends `messages` envelopes to one online device, each
/// awaited until `Accepted` before the next (sequential sends).
pub async fn run_single(
    addr: SocketAddr,
    messages: usize,
    size: usize,
    timeout: Duration,
) -> Result<SingleReport, LoadError> {
    let (alice, bob) = (LoadAccount::generate(), LoadAccount::generate());
    let mut a = connect(addr, 0, &alice, true).await?;
    let mut b = connect(addr, 1, &bob, true).await?;
    let receiver = tokio::spawn(async move { receive_and_ack(&mut b, messages).await });
    let start = Instant::now();
    let mut took = Vec::with_capacity(messages);
    let sends = async {
        for n in 0..messages {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(n as u64).to_be_bytes());
            let sent = Instant::now();
            a.send(send_frame(n as u64 + 10, bob.id, id, size)).await?;
            loop {
                match next_frame(&mut a).await?.body {
                    Some(Body::Accepted(_)) => break,
                    Some(Body::Error(e)) => {
                        return Err(LoadError::Protocol(format!("refused: {}", e.message)));
                    }
                    _ => {}
                }
            }
            took.push(sent.elapsed());
        }
        Ok(())
    };
    tokio::time::timeout(timeout, sends)
        .await
        .map_err(|_| LoadError::Timeout(timeout))??;
    let elapsed = start.elapsed();
    tokio::time::timeout(timeout, receiver)
        .await
        .map_err(|_| LoadError::Timeout(timeout))?
        .map_err(|e| LoadError::Protocol(e.to_string()))??;
    took.sort_unstable();
    Ok(SingleReport {
        sends: messages as u64,
        elapsed,
        throughput: messages as f64 / elapsed.as_secs_f64(),
        p50: took.get(took.len() / 2).copied().unwrap_or_default(),
    })
}

/// What [`run_drain`] measured.
#[derive(Clone, Debug)]
pub struct DrainReport {
    /// Envelopes queued, then drained.
    pub envelopes: u64,
    /// Time to queue them (all accepted).
    pub fill: Duration,
    /// From the recipient's authentication to its last envelope received.
    pub drain: Duration,
    /// Envelopes per second drained.
    pub throughput: f64,
    /// `Delivered` receipts that reached the (online) sender.
    pub receipts: u64,
    /// From the recipient's authentication to the sender's last receipt.
    pub until_last_receipt: Duration,
}

/// A device sends `messages` envelopes to an offline device (at most
/// `window` awaiting `Accepted`); the recipient then connects and acks
/// them all while the sender stays online and counts its `Delivered`
/// receipts (waiting until it has them all, or none came for 5 s), acking
/// each with a `ReceiptAck` if `ack_receipts` (a relay from before
/// `ReceiptAck` refuses it: pass `false` for one).
pub async fn run_drain(
    addr: SocketAddr,
    messages: usize,
    size: usize,
    window: usize,
    ack_receipts: bool,
    timeout: Duration,
) -> Result<DrainReport, LoadError> {
    let (alice, bob) = (LoadAccount::generate(), LoadAccount::generate());
    drop(connect(addr, 1, &bob, true).await?);
    let mut a = connect(addr, 0, &alice, true).await?;
    let fill_start = Instant::now();
    let fill = async {
        let (mut sent, mut accepted) = (0usize, 0usize);
        while accepted < messages {
            while sent < messages && sent - accepted < window.max(1) {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&(sent as u64).to_be_bytes());
                a.feed(send_frame(sent as u64 + 10, bob.id, id, size))
                    .await?;
                sent += 1;
            }
            a.flush().await?;
            match next_frame(&mut a).await?.body {
                Some(Body::Accepted(_)) => accepted += 1,
                Some(Body::Error(e)) => {
                    return Err(LoadError::Protocol(format!("refused: {}", e.message)));
                }
                _ => {}
            }
        }
        Ok::<_, LoadError>(())
    };
    tokio::time::timeout(timeout, fill)
        .await
        .map_err(|_| LoadError::Timeout(timeout))??;
    let fill = fill_start.elapsed();
    let receipts = tokio::spawn(async move {
        let (mut receipts, mut last) = (0u64, Instant::now());
        while receipts < messages as u64 {
            let frame = match tokio::time::timeout(Duration::from_millis(50), next_frame(&mut a))
                .await
            {
                Ok(frame) => frame,
                Err(_) => {
                    // Nothing came for a moment: send the acks held back.
                    if a.flush().await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_secs(5), next_frame(&mut a)).await {
                        Ok(frame) => frame,
                        Err(_) => break,
                    }
                }
            };
            let Ok(frame) = frame else { break };
            if let Some(Body::Delivered(d)) = frame.body {
                receipts += 1;
                last = Instant::now();
                if ack_receipts {
                    let ack = client(
                        0,
                        client_frame::Body::ReceiptAck(wire::ReceiptAck {
                            message_id: d.message_id,
                            recipient_account: d.recipient_account,
                            recipient_device: d.recipient_device,
                        }),
                    );
                    // Flushed in batches (the receipt window is larger).
                    let sent = if receipts % 64 == 0 {
                        a.send(ack).await
                    } else {
                        a.feed(ack).await
                    };
                    if sent.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = a.flush().await;
        (receipts, last)
    });
    let drain_start = Instant::now();
    let mut b = connect(addr, 1, &bob, false).await?;
    tokio::time::timeout(timeout, receive_and_ack(&mut b, messages))
        .await
        .map_err(|_| LoadError::Timeout(timeout))??;
    let drain = drain_start.elapsed();
    let (receipts, last) = receipts
        .await
        .map_err(|e| LoadError::Protocol(e.to_string()))?;
    Ok(DrainReport {
        envelopes: messages as u64,
        fill,
        drain,
        throughput: messages as f64 / drain.as_secs_f64(),
        receipts,
        until_last_receipt: last.saturating_duration_since(drain_start),
    })
}
