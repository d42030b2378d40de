//! One WebSocket: reads whole frames, writes with a deadline, bounded
//! buffers. Knows nothing about what frames mean.
//!
//! Buffers are tuned for many idle connections: a 2 KiB read buffer
//! (tungstenite's default is 128 KiB, allocated per connection), eager
//! writes (no write buffer), and a cap on the outgoing backlog so a peer
//! that stops reading cannot make the relay hold unbounded data.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use comptoir_protocol::MAX_FRAME_SIZE;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, error::CapacityError};

/// Read buffer per connection. Small, because most connections are idle;
/// a large frame still arrives, in several reads (tungstenite checks the
/// frame size limit on the header, then grows the buffer to the frame).
/// 2 KiB instead of 4 KiB saved 2 KiB per idle connection with no
/// measurable cost in `relay-load bench` (docs/idle-memory-notes.md).
pub const READ_BUFFER_SIZE: usize = 2048;

/// WebSocket close codes the relay uses (the 4000s are wire.proto's
/// `CloseCode`; a test checks they agree).
pub mod close {
    /// The relay is shutting down (standard "going away").
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol (standard "protocol error").
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8 (standard "invalid payload data").
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Refused by policy (rate limit before authentication).
    pub const POLICY: u16 = 1008;
    /// A frame exceeded the size limit (standard "message too big").
    pub const TOO_BIG: u16 = 1009;
    /// Too many failed authentication attempts.
    pub const AUTH_FAILED: u16 = 4001;
    /// The account or device is unknown or was removed.
    pub const UNKNOWN_DEVICE: u16 = 4002;
    /// No successful authentication within the time allowed.
    pub const AUTH_TIMEOUT: u16 = 4003;
    /// Nothing received (not even a ping) for the idle timeout.
    pub const IDLE: u16 = 4004;
    /// The same device connected again; this older connection is closed.
    pub const REPLACED: u16 = 4005;
    /// The account published a device list without this device.
    pub const DEVICE_REMOVED: u16 = 4006;
}

#[cfg(test)]
mod tests {
    use super::close;
    use comptoir_protocol::proto::wire::CloseCode;

    #[test]
    fn close_codes_match_wire_proto() {
        assert_eq!(close::AUTH_FAILED as i32, CloseCode::AuthFailed as i32);
        assert_eq!(
            close::UNKNOWN_DEVICE as i32,
            CloseCode::UnknownDevice as i32
        );
        assert_eq!(close::AUTH_TIMEOUT as i32, CloseCode::AuthTimeout as i32);
        assert_eq!(close::IDLE as i32, CloseCode::Idle as i32);
        assert_eq!(close::REPLACED as i32, CloseCode::Replaced as i32);
        assert_eq!(
            close::DEVICE_REMOVED as i32,
            CloseCode::DeviceRemoved as i32
        );
    }
}

/// The tungstenite configuration of every relay connection.
pub fn websocket_config(max_write_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(0)
        .max_write_buffer_size(max_write_buffer.max(MAX_FRAME_SIZE + 1024))
        .max_message_size(Some(MAX_FRAME_SIZE))
        .max_frame_size(Some(MAX_FRAME_SIZE))
}

/// The socket under a relay WebSocket: plain TCP, or TLS over TCP.
///
/// One type for both, so every connection task has the same (small)
/// future; the TLS state is boxed, so a plain connection does not carry
/// its kilobyte.
#[derive(Debug)]
pub enum Stream {
    /// ws://
    Plain(TcpStream),
    /// wss://
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What the peer sent.
#[derive(Debug)]
pub enum Inbound {
    /// A binary message: one frame to decode.
    Frame(Vec<u8>),
    /// A text message (not part of the protocol).
    Text,
    /// A ping or pong (keeps the connection alive).
    Control,
    /// A message larger than [`MAX_FRAME_SIZE`]; the socket cannot be read
    /// further.
    TooLarge(usize),
    /// The peer sent a Close frame: answer it with
    /// [`Connection::answer_close`], then stop.
    CloseRequested,
    /// The peer broke the WebSocket protocol: close with this code (1002,
    /// or 1007 for a text message that is not UTF-8).
    ProtocolError(u16),
    /// The socket ended or failed.
    Closed,
}

/// A write that failed: the connection is over.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The peer did not take the data within the write timeout.
    #[error("peer did not read within the write timeout")]
    Timeout,
    /// The socket failed or the backlog exceeded its cap.
    #[error("socket write failed: {0}")]
    Socket(#[from] tungstenite::Error),
}

/// A WebSocket plus its write deadline.
#[derive(Debug)]
pub struct Connection<IO> {
    ws: WebSocketStream<IO>,
    write_timeout: Duration,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Connection<IO> {
    /// Wrap an accepted WebSocket.
    pub fn new(ws: WebSocketStream<IO>, write_timeout: Duration) -> Self {
        Self { ws, write_timeout }
    }

    /// Read the next message. Cancel-safe.
    pub async fn read(&mut self) -> Inbound {
        match self.ws.next().await {
            Some(Ok(Message::Binary(bytes))) => Inbound::Frame(bytes.into()),
            Some(Ok(Message::Text(_))) => Inbound::Text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Inbound::Control,
            Some(Ok(Message::Close(_))) => Inbound::CloseRequested,
            None => Inbound::Closed,
            Some(Err(tungstenite::Error::Capacity(CapacityError::MessageTooLong {
                size, ..
            }))) => Inbound::TooLarge(size),
            Some(Err(tungstenite::Error::Protocol(error))) => {
                tracing::debug!(%error, "websocket protocol error");
                Inbound::ProtocolError(close::PROTOCOL_ERROR)
            }
            Some(Err(tungstenite::Error::Utf8(error))) => {
                tracing::debug!(%error, "text message is not UTF-8");
                Inbound::ProtocolError(close::INVALID_PAYLOAD)
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "websocket read ended");
                Inbound::Closed
            }
        }
    }

    /// Queue a frame without flushing (call [`Self::flush`] after a batch).
    pub async fn feed(&mut self, frame: Vec<u8>) -> Result<(), WriteError> {
        tokio::time::timeout(
            self.write_timeout,
            self.ws.feed(Message::Binary(frame.into())),
        )
        .await
        .map_err(|_| WriteError::Timeout)??;
        Ok(())
    }

    /// Flush queued frames.
    pub async fn flush(&mut self) -> Result<(), WriteError> {
        tokio::time::timeout(self.write_timeout, self.ws.flush())
            .await
            .map_err(|_| WriteError::Timeout)??;
        Ok(())
    }

    /// Write one frame now.
    pub async fn send(&mut self, frame: Vec<u8>) -> Result<(), WriteError> {
        self.feed(frame).await?;
        self.flush().await
    }

    /// Send the reply tungstenite queued to the peer's Close frame (best
    /// effort, bounded by the write timeout), completing the closing
    /// handshake.
    pub async fn answer_close(&mut self) {
        let _ = tokio::time::timeout(self.write_timeout, self.ws.flush()).await;
    }

    /// Send a close frame (best effort, bounded by the write timeout).
    pub async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(self.write_timeout, self.ws.close(Some(frame))).await;
    }
}
