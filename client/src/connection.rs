//! One WebSocket to the relay, shared by many requests: whole frames in,
//! whole frames out. Knows the framing and the request ids, not what frames
//! mean.
//!
//! A reader task routes each reply to the request that carries its
//! `request_id` (see docs/PROTOCOL.md, "Requests and replies"), so any
//! number of tasks may await their own replies on one device connection
//! through cheap [`Requester`] clones; pushes (`request_id` 0) wait in order
//! for [`Connection::next_push`]. Decrypting, storing and acknowledging
//! stay on the caller's task.
//!
//! The reader task also watches that the relay is still there (see
//! [`Keepalive`]): a link that died without a word ends the connection
//! within half a minute, instead of leaving a device that waits for
//! messages forever.
//!
//! Generic over any `Sink`/`Stream` of WebSocket messages, so tests can
//! drive it with in-memory sockets; [`Connection::connect`] opens a real one.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use comptoir_protocol::MAX_FRAME_SIZE;
use comptoir_protocol::frame::{decode_server, encode_client};
use comptoir_protocol::proto::wire::{
    AuthChallenge, ClientFrame, ServerFrame, client_frame, server_frame,
};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::error::{ClientError, Result};
use crate::tls::{RelayIo, TlsOptions};

/// How long the relay has to open the WebSocket and send its challenge.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A WebSocket to a relay over TCP (or TLS for `wss://`).
pub type RelaySocket = WebSocketStream<Box<dyn RelayIo>>;

/// The writing half of the socket, shared by every requester.
type FrameSink = Pin<Box<dyn Sink<Message, Error = tungstenite::Error> + Send>>;

/// Why the connection ended (kept to answer later callers).
#[derive(Clone, Debug)]
enum Ended {
    /// The relay closed it, the socket failed, or this side dropped it.
    Closed(String),
    /// The relay sent a frame that does not decode: the stream cannot be
    /// trusted any further.
    Garbage(String),
}

impl Ended {
    fn error(&self) -> ClientError {
        match self {
            Self::Closed(reason) => ClientError::ConnectionClosed(reason.clone()),
            Self::Garbage(reason) => ClientError::UnexpectedFrame(reason.clone()),
        }
    }
}

/// How a connection checks that the relay is still there. A link can die
/// without a word (the relay's machine lost power, a NAT on the way forgot
/// the connection): nothing then arrives, nothing fails, and a device that
/// only waits for messages would wait forever. So after [`Self::idle`]
/// with no sign of the relay, the connection sends a WebSocket ping (the
/// relay answers it, and counts it as activity against its own idle
/// timeout); if still no sign [`Self::answer_within`] later,
/// the connection ends as closed, and its owner connects again. Bytes of
/// a large frame still arriving count, as they come off the TCP socket
/// (under TLS), and so do bytes of a large frame leaving, as the socket
/// makes room for them (room a full send buffer gets only as the relay
/// acknowledges bytes; it counts as of when the write began to wait for
/// it): on connections opened by [`Connection::connect`]; over another
/// socket, only whole messages coming in count. Writes a socket takes at
/// once are no sign of the relay (a dead link takes them until its buffer
/// is full) and do not count. So a frame leaving slowly keeps the
/// connection while each wait for room is shorter than about half of
/// `idle`; a frame the socket takes whole and that then needs more than
/// `idle + answer_within` to leave (a send buffer of 256 KiB on an uplink
/// under about 70 kbit/s) still ends it. Periods are taken to be between
/// 100 ms and a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Quiet this long, the connection pings the relay.
    pub idle: Duration,
    /// Still quiet this long after the ping, the connection ends.
    pub answer_within: Duration,
}

impl Default for Keepalive {
    /// A ping after 20 s of quiet, the end 10 s later: a dead link is
    /// noticed within 30 s (a business daemon misses customers for no
    /// longer), at the price of one small frame each 20 s from an idle
    /// device (the relay itself closes a connection quiet for 5 minutes).
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(20),
            answer_within: Duration::from_secs(10),
        }
    }
}

impl Keepalive {
    /// The range of [`Self::idle`], in seconds, that configuration files
    /// (the CLI's, the agent daemon's `keepalive_seconds`) accept.
    pub const CONFIGURABLE_SECONDS: std::ops::RangeInclusive<f64> = 1.0..=3600.0;

    /// A ping after `idle_seconds` of quiet, the end half as long again
    /// later (the default's proportions); `None` unless the number is in
    /// [`Self::CONFIGURABLE_SECONDS`].
    pub fn from_idle_seconds(idle_seconds: f64) -> Option<Self> {
        if !Self::CONFIGURABLE_SECONDS.contains(&idle_seconds) {
            return None;
        }
        let idle = Duration::from_secs_f64(idle_seconds);
        Some(Self {
            idle,
            answer_within: idle / 2,
        })
    }
}

/// The longest a [`Keepalive`] period is taken to be (longer ones are cut
/// to it), so that no deadline computed from one overflows.
const LONGEST_KEEPALIVE: Duration = Duration::from_secs(24 * 60 * 60);

/// The shortest a [`Keepalive`] period is taken to be: a zero would ping
/// without pause, or end every connection at its first quiet moment.
const SHORTEST_KEEPALIVE: Duration = Duration::from_millis(100);

/// When the relay last gave a sign: noted by the socket on each read that
/// brought bytes and each write it took bytes of after waiting for room
/// (see [`NotedIo`]), and by the reader task on each message; read by the
/// keepalive's timer. A large frame arriving or leaving slowly is
/// progress, though no whole message has moved yet.
#[derive(Clone)]
struct Progress {
    since: tokio::time::Instant,
    /// Microseconds after `since`, rounded up (so never before a ping
    /// that went out before the bytes came).
    last_us: Arc<AtomicU64>,
}

impl Progress {
    fn new() -> Self {
        Self {
            since: tokio::time::Instant::now(),
            last_us: Arc::new(AtomicU64::new(0)),
        }
    }

    fn note(&self) {
        self.note_at(tokio::time::Instant::now());
    }

    /// Note a sign that came no earlier than `at` (kept only if later than
    /// the last one noted).
    fn note_at(&self, at: tokio::time::Instant) {
        let us = at
            .saturating_duration_since(self.since)
            .as_nanos()
            .div_ceil(1000);
        self.last_us
            .fetch_max(u64::try_from(us).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        self.since + Duration::from_micros(self.last_us.load(Ordering::Relaxed))
    }
}

/// The socket under the WebSocket, noting in [`Progress`] each read that
/// brought bytes, and each write the socket took bytes of after it had
/// to wait for room: a full send buffer makes room only as the relay
/// acknowledges earlier bytes, so a frame leaving slowly is progress. The
/// room came at some time after the wait began, so the sign is noted as
/// of then (a write given up while waiting, and the next one taken long
/// after, say nothing newer). A write taken at once is no sign (a dead
/// link takes bytes until its buffer is full: the keepalive's own ping
/// among them).
struct NotedIo {
    inner: Box<dyn RelayIo>,
    progress: Progress,
    /// When a write first found no room, since the last one taken.
    waiting_since: Option<tokio::time::Instant>,
}

impl NotedIo {
    fn new(inner: Box<dyn RelayIo>, progress: Progress) -> Self {
        Self {
            inner,
            progress,
            waiting_since: None,
        }
    }

    /// Note a write's outcome (see the type's documentation).
    fn wrote(&mut self, polled: &std::task::Poll<std::io::Result<usize>>) {
        match polled {
            // Pending with the task's budget spent is tokio making the
            // task yield, not a full buffer.
            std::task::Poll::Pending if tokio::task::coop::has_budget_remaining() => {
                self.waiting_since
                    .get_or_insert_with(tokio::time::Instant::now);
            }
            std::task::Poll::Pending => {}
            std::task::Poll::Ready(Ok(taken)) if *taken > 0 => {
                if let Some(since) = self.waiting_since.take() {
                    self.progress.note_at(since);
                }
            }
            std::task::Poll::Ready(_) => {}
        }
    }
}

impl tokio::io::AsyncRead for NotedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.progress.note();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for NotedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Bytes of pushes that arrived and were not taken yet at most: past it
/// the connection ends, so a relay pushing faster than this device
/// handles what it pushes cannot fill the device's memory. Far above what
/// an honest relay has outstanding (its delivery window, 256 envelopes of
/// at most 256 KiB, and as many receipts).
pub const MAX_WAITING_PUSH_BYTES: usize = 128 * 1024 * 1024;

/// Requests awaiting their reply, and whether the connection ended.
#[derive(Default)]
struct Routes {
    waiting: HashMap<u64, oneshot::Sender<Result<ServerFrame>>>,
    ended: Option<Ended>,
}

/// What the reader task and every [`Requester`] share.
struct Shared {
    sink: tokio::sync::Mutex<FrameSink>,
    routes: Mutex<Routes>,
    last_request: AtomicU64,
    /// Bytes of pushes queued and not taken yet (see
    /// [`MAX_WAITING_PUSH_BYTES`]).
    waiting_push_bytes: AtomicUsize,
    /// Turns `true` when the connection ends: a write stuck on a dead link
    /// (its send buffer full) gives up then.
    ended_signal: watch::Sender<bool>,
}

impl Shared {
    /// The routes; a panic elsewhere while holding them leaves a consistent
    /// map (each operation is one insert or remove), so poisoning is ignored.
    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Mark the connection ended and fail every waiting request.
    fn end(&self, ended: Ended) -> Ended {
        let (ended, waiting) = {
            let mut routes = self.routes();
            let ended = routes.ended.get_or_insert(ended).clone();
            (ended, std::mem::take(&mut routes.waiting))
        };
        for (_, reply) in waiting {
            let _ = reply.send(Err(ended.error()));
        }
        self.ended_signal.send_replace(true);
        ended
    }

    async fn write(&self, frame: &ClientFrame) -> Result<()> {
        self.write_message(Message::Binary(encode_client(frame).into()))
            .await
    }

    /// Write `message`, or give up once the connection ended (a write on a
    /// dead link could otherwise wait for the kernel's TCP timeout).
    async fn write_message(&self, message: Message) -> Result<()> {
        let mut ended = self.ended_signal.subscribe();
        if *ended.borrow_and_update() {
            return Err(self.ended_error());
        }
        let write = async {
            self.sink
                .lock()
                .await
                .send(message)
                .await
                .map_err(|e| ClientError::ConnectionClosed(e.to_string()))
        };
        tokio::select! {
            biased;
            written = write => written,
            _ = ended.wait_for(|ended| *ended) => Err(self.ended_error()),
        }
    }

    /// Why the connection ended, for a caller who finds it ended.
    fn ended_error(&self) -> ClientError {
        match &self.routes().ended {
            Some(ended) => ended.error(),
            None => ClientError::ConnectionClosed("the connection ended".into()),
        }
    }
}

/// Sends requests on a shared connection and awaits each one's own reply.
/// Clone it freely: every clone uses the same WebSocket.
#[derive(Clone)]
pub struct Requester {
    shared: Arc<Shared>,
}

impl fmt::Debug for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requester").finish_non_exhaustive()
    }
}

impl Requester {
    /// Whether `other` sends on the same connection as this one.
    pub(crate) fn same_connection(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// Forgets a request's route if its caller stops waiting (timeout).
struct RouteGuard<'a> {
    shared: &'a Shared,
    request_id: u64,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        self.shared.routes().waiting.remove(&self.request_id);
    }
}

impl Requester {
    /// Send `body` under a fresh request id and wait for the frame that
    /// answers it (possibly an `Error` body). Cancel-safe: dropping the
    /// future forgets the request, and a late reply is discarded. Bound it
    /// with a timeout: the relay may never answer.
    pub async fn request(&self, body: client_frame::Body) -> Result<ServerFrame> {
        let request_id = self.shared.last_request.fetch_add(1, Ordering::Relaxed) + 1;
        let (reply, answer) = oneshot::channel();
        {
            let mut routes = self.shared.routes();
            if let Some(ended) = &routes.ended {
                return Err(ended.error());
            }
            routes.waiting.insert(request_id, reply);
        }
        let _guard = RouteGuard {
            shared: &self.shared,
            request_id,
        };
        self.shared
            .write(&ClientFrame {
                request_id,
                body: Some(body),
            })
            .await?;
        match answer.await {
            Ok(reply) => reply,
            // The reader dropped the route without answering: it ended.
            Err(_) => Err(ClientError::ConnectionClosed("the connection ended".into())),
        }
    }

    /// Send a frame that gets no reply (`request_id` 0: delivery acks).
    pub async fn send(&self, frame: &ClientFrame) -> Result<()> {
        self.shared.write(frame).await
    }
}

/// A frame-level connection: requests through [`Requester`]s, pushes in
/// order through [`Self::next_push`].
pub struct Connection {
    requester: Requester,
    pushes: mpsc::UnboundedReceiver<(ServerFrame, usize)>,
    reader: JoinHandle<()>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Open a WebSocket to `url` (see [`crate::tls`]) and read the
    /// relay's challenge.
    pub async fn connect(url: &str, tls: &TlsOptions) -> Result<(Self, AuthChallenge)> {
        Self::connect_with_keepalive(url, tls, Keepalive::default()).await
    }

    /// [`Self::connect`], checking that the relay is still there as
    /// `keepalive` says.
    pub async fn connect_with_keepalive(
        url: &str,
        tls: &TlsOptions,
        keepalive: Keepalive,
    ) -> Result<(Self, AuthChallenge)> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_SIZE))
            .max_frame_size(Some(MAX_FRAME_SIZE));
        let timed_out = || ClientError::Connect {
            url: url.to_string(),
            reason: "timed out".into(),
        };
        // Bytes are noted as they move on the TCP socket, under TLS: a
        // TLS record (up to 16 KiB) arriving or leaving slowly is progress.
        let progress = Progress::new();
        let noted = progress.clone();
        let noting = move |tcp: tokio::net::TcpStream| -> Box<dyn RelayIo> {
            Box::new(NotedIo::new(Box::new(tcp), noted))
        };
        let (target, stream) = tokio::time::timeout(CONNECT_TIMEOUT, tls.open(url, noting))
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
        let mut connection = Self::start(socket, keepalive, progress);
        let first = tokio::time::timeout(CONNECT_TIMEOUT, connection.next_push())
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

    /// Wrap an open WebSocket (or any sink/stream of messages) and start
    /// the reader task on the current Tokio runtime (so, like
    /// `tokio::spawn`, it panics when called outside one).
    pub fn new<S>(socket: S) -> Self
    where
        S: Stream<Item = std::result::Result<Message, tungstenite::Error>>
            + Sink<Message, Error = tungstenite::Error>
            + Send
            + 'static,
    {
        Self::with_keepalive(socket, Keepalive::default())
    }

    /// [`Self::new`], checking that the relay is still there as
    /// `keepalive` says.
    pub fn with_keepalive<S>(socket: S, keepalive: Keepalive) -> Self
    where
        S: Stream<Item = std::result::Result<Message, tungstenite::Error>>
            + Sink<Message, Error = tungstenite::Error>
            + Send
            + 'static,
    {
        Self::start(socket, keepalive, Progress::new())
    }

    /// Start the reader task; `progress` is noted by the socket itself
    /// when it can (see [`NotedIo`]), else only per message.
    fn start<S>(socket: S, keepalive: Keepalive, progress: Progress) -> Self
    where
        S: Stream<Item = std::result::Result<Message, tungstenite::Error>>
            + Sink<Message, Error = tungstenite::Error>
            + Send
            + 'static,
    {
        let (sink, stream) = socket.split();
        let shared = Arc::new(Shared {
            sink: tokio::sync::Mutex::new(Box::pin(sink)),
            routes: Mutex::new(Routes::default()),
            last_request: AtomicU64::new(0),
            waiting_push_bytes: AtomicUsize::new(0),
            ended_signal: watch::Sender::new(false),
        });
        let (push, pushes) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_frames(
            stream,
            Arc::clone(&shared),
            push,
            (keepalive, progress),
        ));
        Self {
            requester: Requester { shared },
            pushes,
            reader,
        }
    }

    /// A handle for sending requests concurrently on this connection.
    pub fn requester(&self) -> Requester {
        self.requester.clone()
    }

    /// [`Requester::request`] on this connection.
    pub async fn request(&self, body: client_frame::Body) -> Result<ServerFrame> {
        self.requester.request(body).await
    }

    /// [`Requester::send`] on this connection.
    pub async fn send(&self, frame: &ClientFrame) -> Result<()> {
        self.requester.send(frame).await
    }

    /// The next push (`request_id` 0), in the relay's order; once they are
    /// all taken, why the connection ended. Cancel-safe.
    pub async fn next_push(&mut self) -> Result<ServerFrame> {
        match self.pushes.recv().await {
            Some(push) => Ok(self.taken(push)),
            None => Err(self.ended()),
        }
    }

    /// The pushes that already arrived, without waiting.
    pub fn arrived_pushes(&mut self) -> Vec<ServerFrame> {
        let mut arrived = Vec::new();
        while let Ok(push) = self.pushes.try_recv() {
            arrived.push(self.taken(push));
        }
        arrived
    }

    /// A push taken from the queue: its bytes no longer wait.
    fn taken(&self, (frame, size): (ServerFrame, usize)) -> ServerFrame {
        self.requester
            .shared
            .waiting_push_bytes
            .fetch_sub(size, Ordering::SeqCst);
        frame
    }

    fn ended(&self) -> ClientError {
        self.requester.shared.ended_error()
    }

    /// Close the WebSocket (best effort).
    pub async fn close(&mut self) {
        let shared = &self.requester.shared;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            shared.sink.lock().await.close().await
        })
        .await;
        shared.end(Ended::Closed("closed by this device".into()));
        self.reader.abort();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.requester
            .shared
            .end(Ended::Closed("closed by this device".into()));
    }
}

/// The reader task: route replies to their requests, queue pushes, ping a
/// quiet relay (see [`Keepalive`]), and on the end of the stream fail
/// whatever still waits.
async fn read_frames<S>(
    mut stream: S,
    shared: Arc<Shared>,
    pushes: mpsc::UnboundedSender<(ServerFrame, usize)>,
    (keepalive, progress): (Keepalive, Progress),
) where
    S: Stream<Item = std::result::Result<Message, tungstenite::Error>> + Unpin,
{
    use tokio::time::Instant;
    // However this task stops (a panic included), the connection ends
    // with it: nothing waits on a reader that is gone.
    let _ends = EndsWhenDropped(Arc::clone(&shared));
    let idle = keepalive.idle.clamp(SHORTEST_KEEPALIVE, LONGEST_KEEPALIVE);
    let answer_within = keepalive
        .answer_within
        .clamp(SHORTEST_KEEPALIVE, LONGEST_KEEPALIVE);
    // When the last ping went out (none since bytes last came): the timer
    // is re-armed only when it fires, not for every frame.
    let mut pinged: Option<Instant> = None;
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let ended = loop {
        let next = tokio::select! {
            // A message that is there wins over the timer: a reader late
            // to run must not take an answer that came for a lost one.
            biased;
            next = stream.next() => next,
            () = &mut timer => {
                let now = Instant::now();
                let heard = progress.last();
                if pinged.is_some_and(|at| heard >= at) {
                    pinged = None;
                }
                if now < heard + idle {
                    // Heard from since the timer was set.
                    timer.as_mut().reset(heard + idle);
                } else if pinged.is_none() {
                    pinged = Some(now);
                    ping(&shared, answer_within);
                    timer.as_mut().reset(now + answer_within);
                } else {
                    break Ended::Closed(format!(
                        "the relay did not answer for {} (the link may be down); \
                         connect again",
                        spoken(idle + answer_within)
                    ));
                }
                continue;
            }
        };
        progress.note();
        match next {
            Some(Ok(Message::Binary(bytes))) => match decode_server(&bytes) {
                Ok(frame) if frame.request_id == 0 => {
                    let size = bytes.len();
                    let waiting = shared.waiting_push_bytes.fetch_add(size, Ordering::SeqCst);
                    if waiting + size > MAX_WAITING_PUSH_BYTES {
                        break Ended::Closed(format!(
                            "the relay pushed more than this device could take \
                             ({} MiB waiting); connect again",
                            MAX_WAITING_PUSH_BYTES / (1024 * 1024)
                        ));
                    }
                    // The receiver may be gone (connection dropped): nothing to do.
                    let _ = pushes.send((frame, size));
                }
                Ok(frame) => {
                    let waiting = shared.routes().waiting.remove(&frame.request_id);
                    // No route: its caller gave up (timeout); drop the reply.
                    if let Some(reply) = waiting {
                        let _ = reply.send(Ok(frame));
                    }
                }
                Err(e) => break Ended::Garbage(format!("undecodable frame: {e}")),
            },
            Some(Ok(Message::Close(frame))) => {
                break Ended::Closed(
                    frame
                        .map(|f| format!("code {}: {}", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "no reason given".into()),
                );
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => break Ended::Closed(e.to_string()),
            None => break Ended::Closed("end of stream".into()),
        }
    };
    shared.end(ended);
}

/// Ends the connection when the reader task stops, however it stops (the
/// first reason given to [`Shared::end`] is kept).
struct EndsWhenDropped(Arc<Shared>);

impl Drop for EndsWhenDropped {
    fn drop(&mut self) {
        self.0
            .end(Ended::Closed("the connection's reader stopped".into()));
    }
}

/// `duration` as a person would say it: whole seconds, else milliseconds.
fn spoken(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

/// Send a ping from a task of its own, so that a write stuck on a dead
/// link (its send buffer full) never holds up the reader; given up after
/// `within`, when the reader ends the connection anyway.
fn ping(shared: &Arc<Shared>, within: Duration) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let ping = shared.write_message(Message::Ping(Vec::new().into()));
        // A failed write ends the connection through the reader.
        let _ = tokio::time::timeout(within, ping).await;
    });
}

#[cfg(test)]
mod tests {
    use comptoir_protocol::frame::{decode_client, encode_server};
    use comptoir_protocol::proto::wire::{self, FetchPreKeys, Ok as OkFrame};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    use super::*;

    type RelayEnd = WebSocketStream<tokio::io::DuplexStream>;

    /// A client connection and the relay's end of an in-memory WebSocket.
    async fn pair() -> (Connection, RelayEnd) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let relay = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        (Connection::new(client), relay)
    }

    fn fetch(account: u8) -> client_frame::Body {
        client_frame::Body::FetchPrekeys(FetchPreKeys {
            account_id: vec![account; 16],
            device_ids: Vec::new(),
        })
    }

    async fn relay_send(relay: &mut RelayEnd, message: Message) -> Result<()> {
        relay
            .send(message)
            .await
            .map_err(|e| ClientError::ConnectionClosed(e.to_string()))
    }

    async fn relay_reply(relay: &mut RelayEnd, frame: &ServerFrame) -> Result<()> {
        relay_send(relay, Message::Binary(encode_server(frame).into())).await
    }

    async fn relay_recv(relay: &mut RelayEnd) -> ClientFrame {
        match relay.next().await {
            Some(Ok(Message::Binary(bytes))) => match decode_client(&bytes) {
                Ok(frame) => frame,
                Err(e) => panic!("undecodable client frame: {e}"),
            },
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    /// A relay pushing faster than the device takes its pushes cannot
    /// fill the device's memory: past [`MAX_WAITING_PUSH_BYTES`] waiting,
    /// the connection ends (before, the queue had no bound).
    #[tokio::test]
    async fn pushes_waiting_past_the_bound_end_the_connection() -> Result<()> {
        let (mut conn, mut relay) = pair().await;
        let big = ServerFrame {
            request_id: 0,
            body: Some(server_frame::Body::Deliver(wire::Deliver {
                envelope: Some(wire::Envelope {
                    ciphertext: vec![7; 200 * 1024],
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        let encoded = encode_server(&big);
        let flood = MAX_WAITING_PUSH_BYTES / encoded.len() + 8;
        let requester = conn.requester();
        let relay_task = tokio::spawn(async move {
            for _ in 0..flood {
                if relay
                    .send(Message::Binary(encoded.clone().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Still open: wait for the device to end it.
            while relay.next().await.is_some() {}
        });
        // Nobody takes the pushes; the connection must end by itself, and
        // with it this request, which the relay never answers.
        let ended =
            tokio::time::timeout(Duration::from_secs(20), requester.request(fetch(1))).await;
        assert!(
            matches!(ended, Ok(Err(ClientError::ConnectionClosed(_)))),
            "the connection took every push: {ended:?}"
        );
        let mut taken = 0;
        let error = loop {
            match conn.next_push().await {
                Ok(_) => taken += 1,
                Err(e) => break e,
            }
        };
        assert!(taken < flood, "{taken} of {flood} pushes were queued");
        assert!(
            matches!(error, ClientError::ConnectionClosed(_)),
            "{error:?}"
        );
        relay_task.abort();
        Ok(())
    }

    /// A short keepalive for the tests below (on paused time).
    const QUICK: Keepalive = Keepalive {
        idle: Duration::from_secs(2),
        answer_within: Duration::from_secs(1),
    };

    /// A connection checked as `keepalive` says, and the relay's end of
    /// it, which the caller keeps and never reads: no answer, no close.
    async fn silent_pair(keepalive: Keepalive) -> (Connection, RelayEnd) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let silent = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        (Connection::with_keepalive(client, keepalive), silent)
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_that_stops_answering_ends_the_connection() {
        let (mut conn, _silent) = silent_pair(QUICK).await;
        let started = tokio::time::Instant::now();
        match conn.next_push().await {
            Err(ClientError::ConnectionClosed(reason)) => {
                assert!(reason.contains("did not answer"), "{reason}");
            }
            other => panic!("expected the connection to end, got {other:?}"),
        }
        // Ended once the ping went unanswered: quiet `idle`, then
        // `answer_within` more.
        assert_eq!(started.elapsed(), QUICK.idle + QUICK.answer_within);
    }

    /// A connection over an in-memory socket of `capacity` bytes each
    /// way whose reads are noted as the real socket's are, and the raw
    /// relay end of it.
    async fn noted_pair(capacity: usize) -> (Connection, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(capacity);
        let progress = Progress::new();
        let noted: Box<dyn RelayIo> = Box::new(NotedIo::new(Box::new(a), progress.clone()));
        let client = WebSocketStream::from_raw_socket(noted, Role::Client, None).await;
        (Connection::start(client, QUICK, progress), b)
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_frame_arriving_slowly_keeps_the_connection() -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let (mut conn, mut relay) = noted_pair(1 << 20).await;
        // A 20 KiB push, as a relay on a slow link sends it: 1 KiB a
        // second, each chunk well within the keepalive, the whole frame
        // far beyond it (and the relay's end never answers the pings).
        let push = ServerFrame {
            request_id: 0,
            body: Some(server_frame::Body::Error(wire::Error {
                message: "x".repeat(20 * 1024),
                ..wire::Error::default()
            })),
        };
        let payload = encode_server(&push);
        let len = u16::try_from(payload.len()).expect("under 64 KiB");
        let mut raw = vec![0x82, 126];
        raw.extend_from_slice(&len.to_be_bytes());
        raw.extend_from_slice(&payload);
        let trickle = async {
            for chunk in raw.chunks(1024) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                relay.write_all(chunk).await.expect("write a chunk");
            }
            relay
        };
        let (arrived, _relay) = tokio::join!(conn.next_push(), trickle);
        assert_eq!(arrived?, push);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_frame_leaving_slowly_keeps_the_connection() -> Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A socket of 1 KiB each way whose relay end takes 1 KiB a second,
        // as a slow uplink does: a 20 KiB frame leaves in about twenty
        // seconds, each piece well within the keepalive, the whole far
        // beyond it; nothing comes back meanwhile (a ping could only go
        // out behind the frame).
        let (conn, mut relay) = noted_pair(1024).await;
        let big = ClientFrame {
            request_id: 0,
            body: Some(client_frame::Body::FetchPrekeys(FetchPreKeys {
                account_id: vec![7; 20 * 1024],
                device_ids: Vec::new(),
            })),
        };
        // The WebSocket frame: 2 header bytes, 2 of length, 4 of mask.
        let frame_len = comptoir_protocol::frame::encode_client(&big).len() + 8;
        let drain = async {
            let mut taken = 0;
            let mut chunk = [0u8; 1024];
            while taken < frame_len {
                tokio::time::sleep(Duration::from_secs(1)).await;
                // Nothing more within a minute: the client stopped writing.
                match tokio::time::timeout(Duration::from_secs(60), relay.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => taken += n,
                    _ => break,
                }
            }
            relay
        };
        let (sent, mut relay) = tokio::join!(conn.send(&big), drain);
        sent?;
        // Still connected: a push the relay sends now arrives.
        let push = ServerFrame {
            request_id: 0,
            body: Some(server_frame::Body::Ok(OkFrame {})),
        };
        let payload = encode_server(&push);
        let len = u8::try_from(payload.len()).expect("a small frame");
        let mut raw = vec![0x82, len];
        raw.extend_from_slice(&payload);
        relay.write_all(&raw).await.expect("write the push");
        let mut conn = conn;
        assert_eq!(conn.next_push().await?, push);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_stuck_on_a_dead_link_ends_with_the_connection() {
        // A socket of 1 KiB each way whose relay end never reads: a large
        // request's write blocks for good, as on a link that died.
        let (a, _relay) = tokio::io::duplex(1024);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let conn = Connection::with_keepalive(client, QUICK);
        let big = client_frame::Body::FetchPrekeys(FetchPreKeys {
            account_id: vec![7; 64 * 1024],
            device_ids: Vec::new(),
        });
        let asked = tokio::time::timeout(Duration::from_secs(600), conn.request(big)).await;
        match asked {
            Ok(Err(ClientError::ConnectionClosed(reason))) => {
                assert!(reason.contains("did not answer"), "{reason}");
            }
            other => panic!("expected the request to end with the connection, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_stuck_on_a_dead_link_ends_the_connection_though_writes_count() {
        use tokio::io::AsyncReadExt;
        // As above, on a socket whose writes count once they waited for
        // room: the relay's end takes 1 KiB at 0.8 s and 1 KiB at 1.6 s,
        // then nothing more. Room is a sign as of when the write began to
        // wait for it: the last one, the wait that began at 0.8 s; the
        // keepalive runs from there.
        let (conn, mut relay) = noted_pair(1024).await;
        let started = tokio::time::Instant::now();
        let big = client_frame::Body::FetchPrekeys(FetchPreKeys {
            account_id: vec![7; 64 * 1024],
            device_ids: Vec::new(),
        });
        let step = Duration::from_millis(800);
        let read_twice = async {
            for _ in 0..2 {
                tokio::time::sleep(step).await;
                let mut piece = [0u8; 1024];
                let taken = relay.read(&mut piece).await.expect("read a piece");
                assert!(taken > 0, "the client wrote nothing");
            }
            relay
        };
        let asked = tokio::time::timeout(Duration::from_secs(600), conn.request(big));
        let (asked, _relay) = tokio::join!(asked, read_twice);
        match asked {
            Ok(Err(ClientError::ConnectionClosed(reason))) => {
                assert!(reason.contains("did not answer"), "{reason}");
            }
            other => panic!("expected the request to end with the connection, got {other:?}"),
        }
        assert_eq!(started.elapsed(), step + QUICK.idle + QUICK.answer_within);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_link_with_room_to_write_still_ends_the_connection() {
        // The socket takes every byte written (room for 1 MiB) but nothing
        // comes back and nothing is ever read at the relay's end, as on a
        // link that died with its send buffer empty: the ping and the
        // pushes' acks written meanwhile are no sign of the relay.
        let (mut conn, _relay) = noted_pair(1 << 20).await;
        let started = tokio::time::Instant::now();
        let pushed = tokio::time::timeout(Duration::from_secs(600), conn.next_push()).await;
        match pushed {
            Ok(Err(ClientError::ConnectionClosed(reason))) => {
                assert!(reason.contains("did not answer"), "{reason}");
            }
            other => panic!("expected the connection to end, got {other:?}"),
        }
        assert_eq!(started.elapsed(), QUICK.idle + QUICK.answer_within);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_given_up_while_waiting_for_room_is_no_later_sign() {
        use tokio::io::AsyncReadExt;
        // A frame of about 1.4 KiB on a socket of 1 KiB: the write waits
        // for room, and its caller gives up half a second in (as a request
        // timeout does); the relay's end makes room once, a second in,
        // then the link is dead. The rest of the frame and the ping then
        // go out at once: no sign of the relay after the room it made
        // (noted no later than the write began waiting), so the keepalive
        // ends the connection from there, not a whole period later.
        let (mut conn, mut relay) = noted_pair(1024).await;
        let started = tokio::time::Instant::now();
        let big = client_frame::Body::FetchPrekeys(FetchPreKeys {
            account_id: vec![7; 1400],
            device_ids: Vec::new(),
        });
        let given_up = tokio::time::timeout(Duration::from_millis(500), conn.request(big)).await;
        assert!(given_up.is_err(), "the write waited for room");
        let room = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut piece = [0u8; 1024];
            let taken = relay.read(&mut piece).await.expect("read a piece");
            assert!(taken > 0, "the client wrote nothing");
            relay
        });
        match conn.next_push().await {
            Err(ClientError::ConnectionClosed(reason)) => {
                assert!(reason.contains("did not answer"), "{reason}");
            }
            other => panic!("expected the connection to end, got {other:?}"),
        }
        assert_eq!(started.elapsed(), QUICK.idle + QUICK.answer_within);
        drop(room);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_written_on_a_connection_that_ended() {
        // The relay's end stays open but never answers: the keepalive
        // ends the connection, and what is sent after that is refused
        // (not written on the socket, still open, as if all were well).
        let (mut conn, _silent) = silent_pair(QUICK).await;
        assert!(conn.next_push().await.is_err(), "the connection ended");
        let ack = ClientFrame {
            request_id: 0,
            body: Some(fetch(1)),
        };
        match conn.send(&ack).await {
            Err(ClientError::ConnectionClosed(reason)) => {
                assert!(reason.contains("did not answer"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_keepalive_of_any_length_ends_a_dead_connection_without_overflow() {
        for keepalive in [
            Keepalive {
                idle: Duration::from_secs(2),
                answer_within: Duration::MAX,
            },
            Keepalive {
                idle: Duration::MAX,
                answer_within: Duration::MAX,
            },
        ] {
            let (mut conn, _silent) = silent_pair(keepalive).await;
            match conn.next_push().await {
                Err(ClientError::ConnectionClosed(reason)) => {
                    assert!(reason.contains("did not answer"), "{keepalive:?}: {reason}");
                }
                other => panic!("{keepalive:?}: expected the connection to end, got {other:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_relay_that_answers_pings_keeps_the_connection() -> Result<()> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let mut relay = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        let conn = Connection::with_keepalive(client, QUICK);
        let requester = conn.requester();
        // The relay reads (answering each ping, as a WebSocket peer does
        // when it reads), counts the pings, and answers the one request.
        let relay_task = tokio::spawn(async move {
            let mut pings = 0;
            loop {
                match relay.next().await {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    Some(Ok(Message::Binary(bytes))) => {
                        let frame = decode_client(&bytes).expect("a client frame");
                        let reply = ServerFrame {
                            request_id: frame.request_id,
                            body: Some(server_frame::Body::Ok(OkFrame {})),
                        };
                        relay_reply(&mut relay, &reply).await.expect("reply");
                        return pings;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("the relay's end ended: {other:?}"),
                }
            }
        });
        // Ten idle periods of nothing but pings and their answers.
        tokio::time::sleep(QUICK.idle * 10).await;
        let answer = requester.request(fetch(1)).await?;
        assert!(matches!(answer.body, Some(server_frame::Body::Ok(_))));
        let pings = relay_task.await.expect("the relay's task");
        assert!(
            (9..=10).contains(&pings),
            "{pings} pings in ten idle periods"
        );
        drop(conn);
        Ok(())
    }

    #[tokio::test]
    async fn frames_round_trip_and_noise_is_skipped() -> Result<()> {
        let (conn, mut relay) = pair().await;
        let requester = conn.requester();
        let request = tokio::spawn(async move { requester.request(fetch(1)).await });
        let sent = relay_recv(&mut relay).await;
        assert_ne!(sent.request_id, 0, "a request never uses id 0");
        assert_eq!(sent.body, Some(fetch(1)));
        let noise = [
            Message::Ping(vec![1].into()),
            Message::Text("not a frame".into()),
        ];
        for message in noise {
            relay_send(&mut relay, message).await?;
        }
        let reply = ServerFrame {
            request_id: sent.request_id,
            body: Some(server_frame::Body::Ok(OkFrame {})),
        };
        relay_reply(&mut relay, &reply).await?;
        match request.await {
            Ok(answer) => assert_eq!(answer?, reply),
            Err(e) => panic!("request task failed: {e}"),
        }
        Ok(())
    }

    /// Many requests in flight on one connection: the relay answers them
    /// in reverse order with a push in between; each caller gets its own
    /// reply and the push waits for `next_push`.
    #[tokio::test]
    async fn concurrent_requests_each_get_their_own_reply() -> Result<()> {
        const N: u8 = 16;
        let (mut conn, mut relay) = pair().await;
        let mut tasks = Vec::new();
        for account in 0..N {
            let requester = conn.requester();
            tasks.push(tokio::spawn(async move {
                (account, requester.request(fetch(account)).await)
            }));
        }
        let mut requests = Vec::new();
        for _ in 0..N {
            requests.push(relay_recv(&mut relay).await);
        }
        let mut ids: Vec<u64> = requests.iter().map(|r| r.request_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), usize::from(N), "request ids are distinct");
        for (i, request) in requests.iter().enumerate().rev() {
            let Some(client_frame::Body::FetchPrekeys(fetch)) = &request.body else {
                panic!("unexpected request {request:?}");
            };
            // The reply names the account asked for, so the test can tell
            // whose reply each caller got.
            let reply = ServerFrame {
                request_id: request.request_id,
                body: Some(server_frame::Body::Error(wire::Error {
                    code: 0,
                    message: hex::encode(&fetch.account_id),
                    ..Default::default()
                })),
            };
            relay_reply(&mut relay, &reply).await?;
            if i == usize::from(N / 2) {
                let push = ServerFrame {
                    request_id: 0,
                    body: Some(server_frame::Body::Ok(OkFrame {})),
                };
                relay_reply(&mut relay, &push).await?;
            }
        }
        for task in tasks {
            let (account, reply) = match task.await {
                Ok(done) => done,
                Err(e) => panic!("request task failed: {e}"),
            };
            match reply?.body {
                Some(server_frame::Body::Error(error)) => {
                    assert_eq!(error.message, hex::encode([account; 16]));
                }
                other => panic!("unexpected reply {other:?}"),
            }
        }
        let push = conn.next_push().await?;
        assert_eq!(push.request_id, 0);
        assert!(conn.arrived_pushes().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_request_given_up_forgets_its_route() -> Result<()> {
        let (conn, mut relay) = pair().await;
        let requester = conn.requester();
        let given_up = tokio::spawn(async move { requester.request(fetch(1)).await });
        let sent = relay_recv(&mut relay).await;
        assert_eq!(conn.requester.shared.routes().waiting.len(), 1);
        given_up.abort();
        assert!(given_up.await.is_err_and(|e| e.is_cancelled()));
        assert!(conn.requester.shared.routes().waiting.is_empty());
        // The late reply is dropped; the next request gets its own.
        let stale = ServerFrame {
            request_id: sent.request_id,
            body: Some(server_frame::Body::Ok(OkFrame {})),
        };
        relay_reply(&mut relay, &stale).await?;
        let requester = conn.requester();
        let next = tokio::spawn(async move { requester.request(fetch(2)).await });
        let sent = relay_recv(&mut relay).await;
        let reply = ServerFrame {
            request_id: sent.request_id,
            body: Some(server_frame::Body::Ok(OkFrame {})),
        };
        relay_reply(&mut relay, &reply).await?;
        match next.await {
            Ok(answer) => assert_eq!(answer?.request_id, sent.request_id),
            Err(e) => panic!("request task failed: {e}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn garbage_fails_waiting_requests_and_pushes() -> Result<()> {
        let (mut conn, mut relay) = pair().await;
        let requester = conn.requester();
        let waiting = tokio::spawn(async move { requester.request(fetch(1)).await });
        relay_recv(&mut relay).await;
        relay_send(&mut relay, Message::Binary(vec![9, 9, 9].into())).await?;
        assert!(matches!(
            conn.next_push().await,
            Err(ClientError::UnexpectedFrame(_))
        ));
        match waiting.await {
            Ok(reply) => assert!(matches!(reply, Err(ClientError::UnexpectedFrame(_)))),
            Err(e) => panic!("request task failed: {e}"),
        }
        assert!(matches!(
            conn.request(fetch(2)).await,
            Err(ClientError::UnexpectedFrame(_))
        ));
        Ok(())
    }

    #[tokio::test]
    async fn close_is_a_typed_error_with_the_code() -> Result<()> {
        let (mut conn, mut relay) = pair().await;
        relay_send(
            &mut relay,
            Message::Close(Some(CloseFrame {
                code: CloseCode::from(4006),
                reason: "device removed".into(),
            })),
        )
        .await?;
        match conn.next_push().await {
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
}
