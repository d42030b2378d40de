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
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::error::{ClientError, Result};
use crate::tls::{RelayIo, TlsOptions};

/// How long the relay has to open the WebSocket and send its challenge.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A WebSocket to a relay over TCP (or TLS for `wss://`).
pub type RelaySocket = WebSocketStream<Box<dyn RelayIo>>;

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
    /// Open a WebSocket to `url` (see [`crate::tls`]) and read the
    /// relay's challenge.
    pub async fn connect(url: &str, tls: &TlsOptions) -> Result<(Self, AuthChallenge)> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_SIZE))
            .max_frame_size(Some(MAX_FRAME_SIZE));
        let timed_out = || ClientError::Connect {
            url: url.to_string(),
            reason: "timed out".into(),
        };
        let (target, stream) = tokio::time::timeout(CONNECT_TIMEOUT, tls.open(url))
            .await
            .map_err(|_| timed_out())??;
        let connect = tokio_tungstenite::client_async_with_config(url, stream, Some(config));
        let (socket, _response) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| ClientError::Connect {
                url: url.to_string(),
                reason: if target.tls {
                    e.to_string()
                } else {
                    format!("{e}; if the relay serves TLS on this port, use wss://")
                },
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

#[cfg(test)]
mod tests {
    use comptoir_protocol::frame::{decode_client, encode_server};
    use comptoir_protocol::proto::wire::{FetchPreKeys, Ok as OkFrame, client_frame};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    use super::*;

    /// A client connection and the relay's end of an in-memory WebSocket.
    async fn pair() -> (
        Connection<WebSocketStream<tokio::io::DuplexStream>>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let relay = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        (Connection::new(client), relay)
    }

    #[tokio::test]
    async fn frames_round_trip_and_noise_is_skipped() -> Result<()> {
        let (mut conn, mut relay) = pair().await;
        let request = ClientFrame {
            request_id: 7,
            body: Some(client_frame::Body::FetchPrekeys(FetchPreKeys {
                account_id: vec![1; 16],
                device_ids: Vec::new(),
            })),
        };
        conn.send(&request).await?;
        match relay.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                assert_eq!(decode_client(&bytes).ok(), Some(request));
            }
            other => panic!("expected a binary frame, got {other:?}"),
        }
        let reply = ServerFrame {
            request_id: 7,
            body: Some(server_frame::Body::Ok(OkFrame {})),
        };
        let noise = [
            Message::Ping(vec![1].into()),
            Message::Text("not a frame".into()),
        ];
        for message in noise {
            relay
                .send(message)
                .await
                .map_err(|e| ClientError::ConnectionClosed(e.to_string()))?;
        }
        relay
            .send(Message::Binary(encode_server(&reply).into()))
            .await
            .map_err(|e| ClientError::ConnectionClosed(e.to_string()))?;
        assert_eq!(conn.recv().await?, reply);
        Ok(())
    }

    #[tokio::test]
    async fn garbage_and_close_are_typed_errors() -> Result<()> {
        let (mut conn, mut relay) = pair().await;
        relay_send(&mut relay, Message::Binary(vec![9, 9, 9].into())).await?;
        assert!(matches!(
            conn.recv().await,
            Err(ClientError::UnexpectedFrame(_))
        ));
        relay_send(
            &mut relay,
            Message::Close(Some(CloseFrame {
                code: CloseCode::from(4006),
                reason: "device removed".into(),
            })),
        )
        .await?;
        match conn.recv().await {
            Err(ClientError::ConnectionClosed(reason)) => {
                assert!(
                    reason.contains("4006") && reason.contains("device removed"),
                    "{reason}"
                );
            }
            other => panic!("expected ConnectionClosed, got {other:?}"),
        }
        Ok(())
    }

    async fn relay_send(
        relay: &mut WebSocketStream<tokio::io::DuplexStream>,
        message: Message,
    ) -> Result<()> {
        relay
            .send(message)
            .await
            .map_err(|e| ClientError::ConnectionClosed(e.to_string()))
    }
}
