//! One WebSocket to the relay: whole frames in, whole frames out. Knows the
//! framing, not what frames mean.
//!
//! Generic over any `Sink`/`Stream` of WebSocket messages, so tests can
//! drive it with channels; [`Connection::connect`] opens a real socket.

use std::fmt;
use std::time::Duration;

use comptoir_protocol::MAX_FRAME_SIZE;
use comptoir_protocol::frame::{decode_server, encode_client};
use comptoir_protocol::proto::wire::{AuthChallenge, ClientFrame, ServerFrame, server_frame};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::{ClientError, Result};

/// How long the relay has to open the WebSocket and send its challenge.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A WebSocket to a relay over TCP (or TLS for `wss://`).
pub type RelaySocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A frame-level connection.
pub struct Connection<S> {
    socket: S,
}

impl<S> fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection<RelaySocket> {
    /// Open a WebSocket to `url` and read the relay's challenge.
    pub async fn connect(url: &str) -> Result<(Self, AuthChallenge)> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_SIZE))
            .max_frame_size(Some(MAX_FRAME_SIZE));
        let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), false);
        let (socket, _response) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ClientError::Connect {
                url: url.to_string(),
                reason: "timed out".into(),
            })?
            .map_err(|e| ClientError::Connect {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let mut connection = Self { socket };
        let first = tokio::time::timeout(CONNECT_TIMEOUT, connection.recv())
            .await
            .map_err(|_| ClientError::Timeout("the authentication challenge"))??;
        match first.body {
            Some(server_frame::Body::Challenge(challenge)) => Ok((connection, challenge)),
            Some(server_frame::Body::Error(error)) => Err(crate::client::relay_error(error)),
            _ => Err(ClientError::UnexpectedFrame(
                "the first frame was not an AuthChallenge".into(),
            )),
        }
    }
}

impl<S> Connection<S>
where
    S: Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Unpin,
{
    /// Wrap an open WebSocket (or any sink/stream of messages).
    pub fn new(socket: S) -> Self {
        Self { socket }
    }

    /// Send one frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<()> {
        self.socket
            .send(Message::Binary(encode_client(frame).into()))
            .await
            .map_err(|e| ClientError::ConnectionClosed(e.to_string()))
    }

    /// Receive the next frame (pings and text are skipped). Cancel-safe.
    pub async fn recv(&mut self) -> Result<ServerFrame> {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    return decode_server(&bytes).map_err(|e| {
                        ClientError::UnexpectedFrame(format!("undecodable frame: {e}"))
                    });
                }
                Some(Ok(Message::Close(frame))) => {
                    let reason = frame
                        .map(|f| format!("code {}: {}", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "no reason given".into());
                    return Err(ClientError::ConnectionClosed(reason));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ClientError::ConnectionClosed(e.to_string())),
                None => return Err(ClientError::ConnectionClosed("end of stream".into())),
            }
        }
    }

    /// Close the WebSocket (best effort).
    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.socket.close()).await;
    }
}
