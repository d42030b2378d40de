//! A malicious relay in the middle: a WebSocket proxy in front of the real
//! relay that passes every frame on, except that, while told to, it flips
//! one bit in the ciphertext of every delivered envelope. It also counts
//! the one-time prekeys the relay hands out, per account, as they pass.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use comptoir_protocol::frame::{decode_server, encode_server};
use comptoir_protocol::proto::wire::server_frame;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// What the proxy did and saw.
#[derive(Debug, Default)]
pub struct TamperStats {
    /// Envelopes whose ciphertext got one bit flipped.
    pub flipped: u64,
    /// One-time prekeys handed out, by the account they belong to.
    pub one_time_prekeys: HashMap<Vec<u8>, u64>,
}

/// A running proxy.
pub struct Tamper {
    /// Where clients connect.
    pub addr: SocketAddr,
    flip: Arc<AtomicBool>,
    forge: Arc<AtomicU32>,
    stats: Arc<Mutex<TamperStats>>,
}

/// The sender the proxy writes into forged envelopes: no such account.
pub const FORGED_SENDER: [u8; 16] = [0xab; 16];

impl Tamper {
    /// Bind the proxy's listener (so its address is known before the
    /// relay starts), then forward to `relay` once [`Self::start`] runs.
    pub async fn bind() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        (listener, addr)
    }

    /// Forward every connection accepted on `listener` to `relay`.
    pub fn start(listener: TcpListener, relay: SocketAddr) -> Self {
        let addr = listener.local_addr().expect("proxy addr");
        let flip = Arc::new(AtomicBool::new(false));
        let forge = Arc::new(AtomicU32::new(0));
        let stats = Arc::new(Mutex::new(TamperStats::default()));
        let (f, g, s) = (flip.clone(), forge.clone(), stats.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (f, g, s) = (f.clone(), g.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(client) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    let Ok((server, _)) =
                        tokio_tungstenite::connect_async(format!("ws://{relay}")).await
                    else {
                        return;
                    };
                    let (mut to_client, mut from_client) = client.split();
                    let (mut to_server, mut from_server) = server.split();
                    let up = async {
                        while let Some(Ok(message)) = from_client.next().await {
                            if to_server.send(message).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_server.close().await;
                    };
                    let down = async {
                        while let Some(Ok(message)) = from_server.next().await {
                            let message = match message {
                                Message::Binary(bytes) => {
                                    Message::Binary(tamper(&bytes, &f, &g, &s).into())
                                }
                                other => other,
                            };
                            if to_client.send(message).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_client.close().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Self {
            addr,
            flip,
            forge,
            stats,
        }
    }

    /// The URL clients dial.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Start or stop flipping bits.
    pub fn set_flipping(&self, on: bool) {
        self.flip.store(on, Ordering::SeqCst);
    }

    /// Write [`FORGED_SENDER`] as the sender of the next `count` envelopes.
    pub fn forge_sender_of_next(&self, count: u32) {
        self.forge.store(count, Ordering::SeqCst);
    }

    /// Envelopes tampered with so far.
    pub fn flipped(&self) -> u64 {
        self.stats.lock().expect("stats").flipped
    }

    /// One-time prekeys of `account` handed out so far.
    pub fn one_time_prekeys_of(&self, account: &[u8]) -> u64 {
        self.stats
            .lock()
            .expect("stats")
            .one_time_prekeys
            .get(account)
            .copied()
            .unwrap_or(0)
    }
}

fn tamper(
    bytes: &[u8],
    flip: &AtomicBool,
    forge: &AtomicU32,
    stats: &Mutex<TamperStats>,
) -> Vec<u8> {
    let Ok(mut frame) = decode_server(bytes) else {
        return bytes.to_vec();
    };
    let mut stats = stats.lock().expect("stats");
    match &mut frame.body {
        Some(server_frame::Body::PrekeyBundles(bundles)) => {
            for bundle in &bundles.bundles {
                if bundle.one_time_prekey.is_some() {
                    *stats
                        .one_time_prekeys
                        .entry(bundle.account_id.clone())
                        .or_default() += 1;
                }
            }
            bytes.to_vec()
        }
        Some(server_frame::Body::Deliver(deliver))
            if forge
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok() =>
        {
            match deliver.envelope.as_mut() {
                Some(envelope) => {
                    envelope.sender_account = FORGED_SENDER.to_vec();
                    encode_server(&frame)
                }
                None => bytes.to_vec(),
            }
        }
        Some(server_frame::Body::Deliver(deliver)) if flip.load(Ordering::SeqCst) => {
            match deliver.envelope.as_mut() {
                Some(envelope) if !envelope.ciphertext.is_empty() => {
                    let at = envelope.ciphertext.len() / 2;
                    envelope.ciphertext[at] ^= 0x01;
                    stats.flipped += 1;
                    encode_server(&frame)
                }
                _ => bytes.to_vec(),
            }
        }
        _ => bytes.to_vec(),
    }
}
