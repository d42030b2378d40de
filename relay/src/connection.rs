//! One WebSocket: reads whole frames, writes with a deadline, bounded
//! buffers. Knows nothing about what frames mean.
//!
//! Buffers are tuned for many idle connections: a 2 KiB read buffer
//! (tungstenite's default is 128 KiB, allocated per connection), no write
//! buffer kept between writes, and a cap on the outgoing backlog so a peer
//! that stops reading cannot make the relay hold unbounded data. Frames fed
//! as a batch (a window of queued mail, receipts, replies) are gathered by
//! [`Corked`] and written with one system call when the batch is flushed,
//! not one per frame; the gathering buffer is freed after each flush.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
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
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use super::{CORK_LIMIT, Corked, close};
    use comptoir_protocol::proto::wire::CloseCode;
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncWrite, AsyncWriteExt};

    /// A socket that keeps what is written and counts the writes.
    #[derive(Default)]
    struct Recorded {
        bytes: Vec<u8>,
        writes: usize,
    }

    impl AsyncWrite for Recorded {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes += 1;
            this.bytes.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_corked_batch_is_written_with_one_write_at_the_flush_in_order() {
        let mut socket = Corked::new(Recorded::default());
        // Uncorked: written through (the handshake relies on it).
        socket.write_all(b"hello ").await.unwrap();
        assert_eq!(socket.io.writes, 1);
        socket.cork();
        for word in [b"one ", b"two ", b"six "] {
            socket.write_all(word).await.unwrap();
        }
        assert_eq!(socket.io.writes, 1, "nothing written before the flush");
        assert_eq!(socket.gathered(), 12);
        socket.flush().await.unwrap();
        assert_eq!(socket.io.writes, 2, "the batch in one write");
        assert_eq!(socket.gathered(), 0);
        assert_eq!(socket.buf.capacity(), 0, "the buffer is freed");
        // Uncorked again by the flush.
        socket.write_all(b"end").await.unwrap();
        assert_eq!(socket.io.writes, 3);
        assert_eq!(socket.io.bytes, b"hello one two six end");
    }

    #[tokio::test]
    async fn a_corked_batch_past_the_limit_is_written_before_the_flush() {
        let mut socket = Corked::new(Recorded::default());
        socket.cork();
        let frame = vec![7u8; 1024];
        let frames = CORK_LIMIT / frame.len() + 2;
        for _ in 0..frames {
            socket.write_all(&frame).await.unwrap();
        }
        assert_eq!(socket.io.writes, 1, "written once the limit was reached");
        assert!(socket.gathered() <= CORK_LIMIT);
        socket.shutdown().await.unwrap();
        assert_eq!(socket.io.writes, 2);
        assert_eq!(socket.io.bytes.len(), frames * frame.len());
    }

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

/// Bytes [`Corked`] gathers before it writes them out even though the
/// batch is not flushed yet: large enough that a window of 1 KiB envelopes
/// goes out in a few writes, small enough not to matter per connection (and
/// freed after each flush).
pub const CORK_LIMIT: usize = 64 << 10;

/// A socket that, while corked, gathers what is written and writes it out
/// with one system call when flushed (or once [`CORK_LIMIT`] is reached).
/// Uncorked (the default, and after every flush) it writes through, so the
/// WebSocket handshake and any write nobody flushes go out at once.
#[derive(Debug)]
pub struct Corked<IO> {
    io: IO,
    /// Gathered bytes; `buf[sent..]` is still to be written.
    buf: Vec<u8>,
    sent: usize,
    corked: bool,
}

impl<IO> Corked<IO> {
    /// Wrap a socket (uncorked).
    pub fn new(io: IO) -> Self {
        Self {
            io,
            buf: Vec::new(),
            sent: 0,
            corked: false,
        }
    }

    /// Gather writes until the next flush.
    fn cork(&mut self) {
        self.corked = true;
    }

    /// Bytes gathered and not yet written (tests).
    #[cfg(test)]
    fn gathered(&self) -> usize {
        self.buf.len() - self.sent
    }
}

impl<IO: AsyncWrite + Unpin> Corked<IO> {
    /// Write out everything gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        // Freed: an idle connection keeps no gathering buffer.
        self.sent = 0;
        self.buf = Vec::new();
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Corked<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Corked<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.corked {
            if this.buf.len() >= CORK_LIMIT {
                ready!(this.poll_drain(cx))?;
            }
            this.buf.extend_from_slice(data);
            return Poll::Ready(Ok(data.len()));
        }
        // Whatever was gathered goes first, in order.
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.corked = false;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.corked = false;
        Pin::new(&mut this.io).poll_shutdown(cx)
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
    ws: WebSocketStream<Corked<IO>>,
    write_timeout: Duration,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Connection<IO> {
    /// Wrap an accepted WebSocket (its socket wrapped in [`Corked`] before
    /// the handshake).
    pub fn new(ws: WebSocketStream<Corked<IO>>, write_timeout: Duration) -> Self {
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

    /// Queue a frame without flushing (call [`Self::flush`] after a batch):
    /// the batch is gathered and written out at the flush.
    pub async fn feed(&mut self, frame: Vec<u8>) -> Result<(), WriteError> {
        self.ws.get_mut().cork();
        self.write(frame).await
    }

    /// Hand a frame to the WebSocket (gathered if corked, else written).
    async fn write(&mut self, frame: Vec<u8>) -> Result<(), WriteError> {
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

    /// Write one frame now (after anything fed before it).
    pub async fn send(&mut self, frame: Vec<u8>) -> Result<(), WriteError> {
        self.write(frame).await?;
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
