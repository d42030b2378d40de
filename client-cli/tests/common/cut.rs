//! A WebSocket proxy between `comptoir` and the relay that loses the
//! connection in the middle of a send, on demand: armed, it drops the
//! next `Send` frame a client writes instead of forwarding it, closes both
//! sides, and refuses connections until it is restored (the network away
//! for a while, then back). Everything else is forwarded as it is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use comptoir_protocol::frame::decode_client;
use comptoir_protocol::proto::wire::client_frame;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct State {
    /// Drop the next `Send` and cut its connection.
    armed: AtomicBool,
    /// Refuse new connections (accept and close them at once).
    refusing: AtomicBool,
    /// `Send` frames dropped so far.
    cut: AtomicUsize,
}

/// The proxy; dropping it stops it.
pub struct CutProxy {
    /// The proxy's WebSocket URL, for `--relay`.
    pub url: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CutProxy {
    /// Bind on 127.0.0.1:0 (before the relay starts, so that the relay can
    /// be told the proxy's origin, which devices sign).
    pub async fn bind() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, format!("ws://{addr}"))
    }

    /// Forward each connection `listener` accepts to the relay at `relay`.
    pub fn start(listener: TcpListener, relay: SocketAddr) -> Self {
        let url = format!("ws://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if shared.refusing.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let state = shared.clone();
                tokio::spawn(async move {
                    let Ok(client) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    let Ok((upstream, _)) =
                        tokio_tungstenite::connect_async(format!("ws://{relay}/")).await
                    else {
                        return;
                    };
                    let (mut to_client, mut from_client) = client.split();
                    let (mut to_relay, mut from_relay) = upstream.split();
                    let down = async {
                        while let Some(Ok(msg)) = from_relay.next().await {
                            if to_client.send(msg).await.is_err() {
                                break;
                            }
                        }
                    };
                    let up = async {
                        while let Some(Ok(msg)) = from_client.next().await {
                            if let Message::Binary(bytes) = &msg
                                && let Ok(frame) = decode_client(bytes)
                                && matches!(frame.body, Some(client_frame::Body::Send(_)))
                                && state.armed.swap(false, Ordering::SeqCst)
                            {
                                state.refusing.store(true, Ordering::SeqCst);
                                state.cut.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            if to_relay.send(msg).await.is_err() {
                                break;
                            }
                        }
                    };
                    // Whichever side ends first ends the connection: both
                    // sockets are dropped, without a closing handshake.
                    tokio::select! {
                        () = down => {}
                        () = up => {}
                    }
                });
            }
        });
        Self { url, state, task }
    }

    /// Cut the connection at the next `Send`, and refuse connections
    /// from then on.
    pub fn arm(&self) {
        self.state.armed.store(true, Ordering::SeqCst);
    }

    /// Accept connections again.
    pub fn restore(&self) {
        self.state.refusing.store(false, Ordering::SeqCst);
    }

    /// How many `Send` frames were dropped.
    pub fn cuts(&self) -> usize {
        self.state.cut.load(Ordering::SeqCst)
    }
}
