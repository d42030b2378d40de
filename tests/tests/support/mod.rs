//! Shared end-to-end test support: a real relay on 127.0.0.1:0 (in
//! process, real sockets, real sled files in a temp dir) and a real
//! tokio-tungstenite client speaking the protocol crate's frames.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod agent;
pub mod business;
pub mod cli;
pub mod client;
pub mod hostile;
pub mod http;
pub mod inbox;
pub mod mitm;
pub mod tamper;
pub mod templates;
pub mod webdriver;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use comptoir_protocol::frame::{decode_server, encode_client};
use comptoir_protocol::proto::wire::{self, client_frame, server_frame};
use comptoir_protocol::{
    AccountId, AccountKeyPair, DeviceList, IdentityKeyPair, auth_payload, register_payload,
};
use comptoir_relay::{CodeSender, Config, Metrics, Services};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Every wait in the tests is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Codes "sent" by the relay, captured for the test.
#[derive(Debug, Default)]
pub struct CapturedCodes(pub Mutex<Vec<(String, String)>>);

impl CodeSender for CapturedCodes {
    fn send_code(&self, phone: &str, code: &str) {
        self.0
            .lock()
            .expect("codes lock")
            .push((phone.to_owned(), code.to_owned()));
    }
}

impl CapturedCodes {
    pub fn last_for(&self, phone: &str) -> Option<String> {
        self.0
            .lock()
            .expect("codes lock")
            .iter()
            .rev()
            .find(|(p, _)| p == phone)
            .map(|(_, c)| c.clone())
    }
}

/// A relay running in this process.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub http: SocketAddr,
    /// The admin API's address (its token is in `data_dir/admin.token`).
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub codes: Arc<CapturedCodes>,
    pub metrics: Arc<Metrics>,
    /// The relay's clock (tests shift it: feature `test-clock`).
    pub clock: Arc<comptoir_relay::clock::Clock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), comptoir_relay::ServerError>>>,
    _dir: Option<tempfile::TempDir>,
}

/// The configuration tests start from: generous limits, fast GC.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_owned(),
        cache_capacity_bytes: 16 * 1024 * 1024,
        ..Config::default()
    };
    config.limits.address_rate_per_sec = 10_000.0;
    config.limits.address_burst = 10_000.0;
    config.limits.account_rate_per_sec = 10_000.0;
    config.limits.account_burst = 10_000.0;
    config.limits.registration_rate_per_sec = 0.0;
    config.limits.registration_rate_per_prefix_per_sec = 0.0;
    config
}

/// Start a relay with default test settings in a fresh temp dir.
pub async fn start_relay() -> TestRelay {
    start_relay_with(|_| {}).await
}

/// Copy the directory `from` to `to`, recursively (a backup, or the image
/// a crash would leave: only what was written to the files).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Start a relay in a fresh temp dir, adjusting the test config first.
pub async fn start_relay_with(adjust: impl FnOnce(&mut Config)) -> TestRelay {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut relay = start_relay_in(dir.path(), adjust, None).await;
    relay._dir = Some(dir);
    relay
}

/// Start a relay on an existing data dir (restarts), optionally with TLS.
pub async fn start_relay_in(
    data_dir: &Path,
    adjust: impl FnOnce(&mut Config),
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> TestRelay {
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    start_relay_in_at(data_dir, adjust, tls, any_port).await
}

/// [`start_relay_in`] listening on a given address (a restart that clients
/// must find at the same URL).
pub async fn start_relay_in_at(
    data_dir: &Path,
    adjust: impl FnOnce(&mut Config),
    tls: Option<tokio_rustls::TlsAcceptor>,
    bind: SocketAddr,
) -> TestRelay {
    let listener = TcpListener::bind(bind).await.expect("bind");
    start_relay_on(data_dir, adjust, tls, listener).await
}

/// A relay (its configuration adjusted by `adjust` first) that accepts
/// logins made through a proxy listening on the returned listener as well
/// as directly: its public origins name both. Keep the directory: it holds
/// the relay's data.
pub async fn relay_for_a_proxy(
    adjust: impl FnOnce(&mut Config),
) -> (TestRelay, TcpListener, tempfile::TempDir) {
    let relay_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origins = vec![
        origin_of(relay_listener.local_addr().expect("addr")),
        origin_of(proxy_listener.local_addr().expect("addr")),
    ];
    let data = tempfile::tempdir().expect("temp dir");
    let relay = start_relay_on(
        data.path(),
        |c| {
            c.public_origins = origins;
            adjust(c);
        },
        None,
        relay_listener,
    )
    .await;
    (relay, proxy_listener, data)
}

/// [`start_relay_in`] serving `listener` (bound by the caller, so that its
/// address can go into the configuration, e.g. as a public origin).
pub async fn start_relay_on(
    data_dir: &Path,
    adjust: impl FnOnce(&mut Config),
    tls: Option<tokio_rustls::TlsAcceptor>,
    listener: TcpListener,
) -> TestRelay {
    let mut config = test_config(data_dir);
    adjust(&mut config);
    let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let addr = listener.local_addr().expect("addr");
    let http = http_listener.local_addr().expect("http addr");
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let admin = admin_listener.local_addr().expect("admin addr");
    // The token exists before the relay starts (it loads this one), so a
    // test can call the admin API as soon as this returns.
    std::fs::create_dir_all(data_dir).expect("data dir");
    comptoir_relay::operator::load_or_create_admin_token(&config.admin_token_path())
        .expect("admin token");
    let codes = Arc::new(CapturedCodes::default());
    let metrics = Arc::new(Metrics::default());
    let clock = Arc::new(comptoir_relay::clock::Clock::default());
    let services = Services {
        http_listener: Some(http_listener),
        admin_listener: Some(admin_listener),
        tls,
        code_sender: codes.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(comptoir_relay::run_with(
        listener,
        config,
        services,
        async {
            let _ = stopped.await;
        },
    ));
    TestRelay {
        addr,
        http,
        admin,
        data_dir: data_dir.to_owned(),
        codes,
        metrics,
        clock,
        stop: Some(stop),
        task: Some(task),
        _dir: None,
    }
}

impl TestRelay {
    /// Graceful shutdown; waits until storage is flushed and closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("relay stops in time")
                .expect("relay task")
                .expect("relay ran cleanly");
        }
    }

    /// Stop, then start again on the same data directory (same temp dir).
    pub async fn restart(mut self) -> TestRelay {
        self.stop().await;
        let dir = self._dir.take();
        // sled releases its file lock when the last handle drops; the
        // server task has ended, so this is immediate.
        let mut next = start_relay_in(&self.data_dir, |_| {}, None).await;
        next._dir = dir;
        next
    }

    /// Start again on the same data directory *and the same address*, after
    /// [`Self::stop`] (clients reconnect to the URL they already have).
    pub async fn start_again_at_same_address(self) -> TestRelay {
        self.start_again_with(|_| {}).await
    }

    /// [`Self::start_again_at_same_address`] with the configuration
    /// changed by `adjust` (after [`Self::stop`]).
    pub async fn start_again_with(mut self, adjust: impl FnOnce(&mut Config)) -> TestRelay {
        let dir = self._dir.take();
        let mut next = start_relay_in_at(&self.data_dir, adjust, None, self.addr).await;
        next._dir = dir;
        next
    }

    /// A client of the admin API with the relay's token.
    pub fn admin_client(&self) -> comptoir_relay::admin::client::AdminClient {
        let token = comptoir_relay::operator::read_admin_token(
            &self
                .data_dir
                .join(comptoir_relay::operator::ADMIN_TOKEN_FILE),
        )
        .expect("admin token");
        comptoir_relay::admin::client::AdminClient::new(self.admin, token)
    }

    /// GET a path on the metrics listener; returns (status line, body).
    pub async fn http_get(&self, path: &str) -> (String, String) {
        http_get(self.http, path).await
    }

    /// The value of a metric line (exact name including labels).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .map(|v| v.trim().parse().expect("metric value"))
            .unwrap_or(0.0)
    }

    /// Wait (polling /metrics, bounded) until `name` reaches `at_least`.
    pub async fn wait_metric(&self, name: &str, at_least: f64) {
        tokio::time::timeout(TIMEOUT, self.until_metric(name, |v| v >= at_least))
            .await
            .unwrap_or_else(|_| panic!("metric {name} never reached {at_least}"));
    }
}

impl TestRelay {
    /// Wait (polling /metrics, bounded) until `name` is at most `at_most`.
    pub async fn wait_metric_at_most(&self, name: &str, at_most: f64) {
        tokio::time::timeout(TIMEOUT, self.until_metric(name, |v| v <= at_most))
            .await
            .unwrap_or_else(|_| panic!("metric {name} never fell to {at_most}"));
    }

    /// Return once `holds(value of name)`, woken by the relay's metric
    /// change notifications (armed before each check, so none is missed).
    async fn until_metric(&self, name: &str, holds: impl Fn(f64) -> bool) {
        loop {
            let changed = self.metrics.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if holds(self.metric(name).await) {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect http");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut response = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut response))
        .await
        .expect("http in time")
        .expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Dump every tree of a (closed) sled data directory, for before/after
/// comparisons.
pub fn dump_store(dir: &Path) -> BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>> {
    let db = sled::open(dir).expect("open sled");
    let mut out = BTreeMap::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).expect("tree");
        for entry in tree.iter() {
            let (k, v) = entry.expect("entry");
            // The relay's clock mark moves on its own (every GC pass): it
            // is the relay's time, not state a request changed.
            if &*name == b"meta" && &*k == b"clock_mark_ms" {
                continue;
            }
            out.insert((name.to_vec(), k.to_vec()), v.to_vec());
        }
    }
    out
}

/// An account with its key and devices (all keys held by the test).
pub struct Account {
    pub id: AccountId,
    pub key: AccountKeyPair,
    pub devices: Vec<(u32, IdentityKeyPair)>,
    pub version: u64,
    /// The relay origin `auth_body` signs (set by `register` and `login`).
    pub origin: Mutex<String>,
}

/// The origin of a plain relay at `addr`, as devices sign it.
pub fn origin_of(addr: SocketAddr) -> String {
    comptoir_protocol::relay_origin(false, &addr.ip().to_string(), addr.port())
}

impl Account {
    pub fn new(devices: u32) -> Self {
        let mut rng = rand::rng();
        Self {
            id: AccountId::generate(&mut rng),
            key: AccountKeyPair::generate(&mut rng),
            devices: (1..=devices)
                .map(|d| (d, IdentityKeyPair::generate(&mut rng)))
                .collect(),
            version: 1,
            origin: Mutex::new(String::new()),
        }
    }

    /// Sign authentication responses for this relay origin from now on.
    pub fn set_origin(&self, origin: &str) {
        *self.origin.lock().expect("origin lock") = origin.to_owned();
    }

    pub fn device_ids(&self) -> Vec<u32> {
        self.devices.iter().map(|(d, _)| *d).collect()
    }

    pub fn signed_list(&self) -> wire::SignedDeviceList {
        DeviceList::sign(
            &self.key,
            self.id,
            self.version,
            self.devices
                .iter()
                .map(|(d, k)| (*d, *k.public()))
                .collect(),
        )
        .expect("sign list")
    }

    pub fn identity(&self, device: u32) -> &IdentityKeyPair {
        &self
            .devices
            .iter()
            .find(|(d, _)| *d == device)
            .expect("device")
            .1
    }

    pub fn register_body(&self, nonce: &[u8]) -> client_frame::Body {
        self.register_body_as(nonce, wire::AccountKind::Customer)
    }

    pub fn register_body_as(&self, nonce: &[u8], kind: wire::AccountKind) -> client_frame::Body {
        client_frame::Body::Register(wire::Register {
            account_id: self.id.to_vec(),
            account_key: self.key.public().to_bytes().to_vec(),
            device_list: Some(self.signed_list()),
            signature: self
                .key
                .sign(&register_payload(&self.id, kind, nonce))
                .to_vec(),
            kind: kind as i32,
        })
    }

    pub fn auth_body(&self, device: u32, nonce: &[u8]) -> client_frame::Body {
        client_frame::Body::AuthResponse(wire::AuthResponse {
            account_id: self.id.to_vec(),
            device_id: device,
            signature: self
                .identity(device)
                .sign(&auth_payload(
                    nonce,
                    &self.id,
                    device,
                    &self.origin.lock().expect("origin lock"),
                ))
                .to_vec(),
        })
    }

    /// Register the account on the relay (own connection) as a customer.
    pub async fn register(&self, addr: SocketAddr) {
        self.register_as(addr, wire::AccountKind::Customer).await;
    }

    /// Register the account on the relay (own connection) as `kind`.
    pub async fn register_as(&self, addr: SocketAddr, kind: wire::AccountKind) {
        self.set_origin(&origin_of(addr));
        let mut c = Client::connect(addr).await;
        let nonce = c.nonce.clone();
        let reply = c.request(self.register_body_as(&nonce, kind)).await;
        assert!(
            matches!(reply, server_frame::Body::Registered(_)),
            "register: {reply:?}"
        );
    }

    /// Connect and authenticate one device; returns the client and AuthOk.
    pub async fn login(&self, addr: SocketAddr, device: u32) -> (Client, wire::AuthOk) {
        self.set_origin(&origin_of(addr));
        let mut c = Client::connect(addr).await;
        let nonce = c.nonce.clone();
        match c.request(self.auth_body(device, &nonce)).await {
            server_frame::Body::AuthOk(ok) => {
                c.account = Some(self.id);
                (c, ok)
            }
            other => panic!("auth failed: {other:?}"),
        }
    }
}

/// A `Send` of one message to every listed device of `to`.
pub fn send_body(
    to: &AccountId,
    devices: &[u32],
    message_id: [u8; 16],
    ciphertext: &[u8],
) -> client_frame::Body {
    send_body_as(
        to,
        devices,
        message_id,
        ciphertext,
        wire::Category::Conversation,
    )
}

/// A `Send` of `ciphertext` to `devices` of `to`, labelled `category`.
pub fn send_body_as(
    to: &AccountId,
    devices: &[u32],
    message_id: [u8; 16],
    ciphertext: &[u8],
    category: wire::Category,
) -> client_frame::Body {
    client_frame::Body::Send(wire::Send {
        message_id: message_id.to_vec(),
        recipient_account: to.to_vec(),
        client_timestamp_ms: 1,
        category: category as i32,
        template_id: String::new(),
        // The relay refuses a business's send without a 32-byte franking
        // commitment: the business categories carry one here, the others
        // (a person's conversation, control traffic) none.
        franking_tag: if matches!(
            category,
            wire::Category::Service
                | wire::Category::Utility
                | wire::Category::Authentication
                | wire::Category::Marketing
        ) {
            SUPPORT_FRANKING.to_vec()
        } else {
            Vec::new()
        },
        devices: devices
            .iter()
            .map(|d| wire::DeviceCiphertext {
                device_id: *d,
                ciphertext: ciphertext.to_vec(),
            })
            .collect(),
        ..Default::default()
    })
}

/// The franking commitment [`send_body_as`] puts on a send in a business
/// category (the ciphertexts are not real: nothing opens it).
pub const SUPPORT_FRANKING: [u8; 32] = [0xF7; 32];

pub fn id(n: u8) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[0] = n;
    id[15] = 0xee;
    id
}

/// Either a plain or a TLS socket.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the relay sent, in order; requests wait for their reply and keep
/// other frames for later.
pub struct Client {
    ws: WebSocketStream<Box<dyn Io>>,
    pub nonce: Vec<u8>,
    next_request: u64,
    backlog: VecDeque<wire::ServerFrame>,
    pub close: Option<(u16, String)>,
    /// The account this connection authenticated as (after `login`).
    pub account: Option<AccountId>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::over(Box::new(stream), &format!("ws://{addr}/")).await
    }

    pub async fn over(stream: Box<dyn Io>, url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("websocket handshake");
        let mut c = Self {
            ws,
            nonce: Vec::new(),
            next_request: 1,
            backlog: VecDeque::new(),
            close: None,
            account: None,
        };
        match c.next_push().await {
            server_frame::Body::Challenge(ch) => c.nonce = ch.nonce,
            other => panic!("expected a challenge, got {other:?}"),
        }
        c
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Send a frame; returns its request id.
    pub async fn send(&mut self, body: client_frame::Body) -> u64 {
        let request_id = self.next_request;
        self.next_request += 1;
        self.send_with_id(request_id, body).await;
        request_id
    }

    /// Send frames in one burst (one flush, so the relay reads them
    /// together); returns their request ids.
    pub async fn send_burst(&mut self, bodies: Vec<client_frame::Body>) -> Vec<u64> {
        let mut ids = Vec::with_capacity(bodies.len());
        for body in bodies {
            let request_id = self.next_request;
            self.next_request += 1;
            let bytes = encode_client(&wire::ClientFrame {
                request_id,
                body: Some(body),
            });
            self.ws
                .feed(Message::Binary(bytes.into()))
                .await
                .expect("send");
            ids.push(request_id);
        }
        self.ws.flush().await.expect("send");
        ids
    }

    pub async fn send_with_id(&mut self, request_id: u64, body: client_frame::Body) {
        let bytes = encode_client(&wire::ClientFrame {
            request_id,
            body: Some(body),
        });
        self.send_raw(bytes).await;
    }

    /// Read one frame from the socket (None when closed).
    async fn read_frame(&mut self) -> Option<wire::ServerFrame> {
        loop {
            let msg = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a frame in time");
            match msg {
                Some(Ok(Message::Binary(b))) => {
                    return Some(decode_server(&b).expect("valid server frame"));
                }
                Some(Ok(Message::Close(frame))) => {
                    self.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Wait for the reply to `request_id`.
    pub async fn reply(&mut self, request_id: u64) -> server_frame::Body {
        if let Some(pos) = self.backlog.iter().position(|f| f.request_id == request_id) {
            let frame = self.backlog.remove(pos).expect("frame");
            return frame.body.expect("body");
        }
        loop {
            let frame = self.read_frame().await.expect("connection open");
            if frame.request_id == request_id {
                return frame.body.expect("body");
            }
            self.backlog.push_back(frame);
        }
    }

    /// Send and wait for the reply; `None` if the relay closed the
    /// connection first (or refused the frame by closing).
    pub async fn try_request(&mut self, body: client_frame::Body) -> Option<server_frame::Body> {
        let request_id = self.next_request;
        self.next_request += 1;
        let bytes = encode_client(&wire::ClientFrame {
            request_id,
            body: Some(body),
        });
        if self.ws.send(Message::Binary(bytes.into())).await.is_err() {
            return None;
        }
        if let Some(pos) = self.backlog.iter().position(|f| f.request_id == request_id) {
            return self.backlog.remove(pos).and_then(|f| f.body);
        }
        loop {
            let frame = self.read_frame().await?;
            if frame.request_id == request_id {
                return frame.body;
            }
            self.backlog.push_back(frame);
        }
    }

    /// Send and wait for the reply.
    pub async fn request(&mut self, body: client_frame::Body) -> server_frame::Body {
        let id = self.send(body).await;
        self.reply(id).await
    }

    /// The next frame not answering a request (request_id 0).
    pub async fn next_push(&mut self) -> server_frame::Body {
        self.try_next_push().await.expect("connection open")
    }

    pub async fn try_next_push(&mut self) -> Option<server_frame::Body> {
        if let Some(pos) = self.backlog.iter().position(|f| f.request_id == 0) {
            return self.backlog.remove(pos).and_then(|f| f.body);
        }
        loop {
            let frame = self.read_frame().await?;
            if frame.request_id == 0 {
                return frame.body;
            }
            self.backlog.push_back(frame);
        }
    }

    /// Whether no frame read so far and kept matches `pred`.
    pub fn backlog_is_empty_of(&self, pred: impl Fn(&server_frame::Body) -> bool) -> bool {
        !self
            .backlog
            .iter()
            .any(|f| f.body.as_ref().is_some_and(&pred))
    }

    /// The next pushed error (skipping other pushes).
    pub async fn next_error(&mut self) -> server_frame::Body {
        self.next_matching(|b| matches!(b, server_frame::Body::Error(_)).then(|| b.clone()))
            .await
    }

    /// The next pushed envelope (skipping other pushes, which are kept).
    pub async fn next_envelope(&mut self) -> wire::Envelope {
        let mut others = Vec::new();
        let envelope = loop {
            match self.next_push().await {
                server_frame::Body::Deliver(d) => break d.envelope.expect("envelope"),
                other => others.push(other),
            }
        };
        for body in others.into_iter().rev() {
            self.backlog.push_front(wire::ServerFrame {
                request_id: 0,
                body: Some(body),
            });
        }
        envelope
    }

    /// The next push of a given kind, skipping envelopes and others.
    pub async fn next_matching<T>(
        &mut self,
        mut pick: impl FnMut(&server_frame::Body) -> Option<T>,
    ) -> T {
        loop {
            let body = self.next_push().await;
            if let Some(t) = pick(&body) {
                return t;
            }
        }
    }

    pub async fn ack(&mut self, envelope: &wire::Envelope) {
        self.send_with_id(
            0,
            client_frame::Body::DeliveryAck(wire::DeliveryAck {
                message_id: envelope.message_id.clone(),
                sender_account: envelope.sender_account.clone(),
                accept_id: envelope.accept_id,
                ..Default::default()
            }),
        )
        .await;
    }

    /// Wait for the relay to close the connection; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        while self.read_frame().await.is_some() {}
        self.close.as_ref().map(|(c, _)| *c)
    }
}

/// The error code of a reply, or a panic naming what came instead.
pub fn error_code(body: &server_frame::Body) -> wire::ErrorCode {
    match body {
        server_frame::Body::Error(e) => {
            wire::ErrorCode::try_from(e.code).expect("known error code")
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The wall clock, ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A `SetConsent` from `customer`'s device 1 for `business`, issued now,
/// lasting `lifetime_ms`, signed by the key of `customer`'s device `signer`
/// (1 for an honest token).
pub fn consent_body(
    customer: &Account,
    signer: u32,
    business: &Account,
    categories: comptoir_protocol::ConsentCategories,
    counter: u64,
    lifetime_ms: u64,
) -> client_frame::Body {
    let issued_at_ms = now_ms();
    let fields = comptoir_protocol::ConsentFields {
        customer: customer.id,
        business: business.id,
        device: 1,
        categories,
        issued_at_ms,
        expires_at_ms: issued_at_ms + lifetime_ms,
        counter,
    };
    client_frame::Body::SetConsent(wire::SetConsent {
        business_account: business.id.to_vec(),
        categories: u32::from(categories.bits()),
        issued_at_ms,
        expires_at_ms: fields.expires_at_ms,
        counter,
        signature: comptoir_protocol::sign_consent(customer.identity(signer), &fields).to_vec(),
    })
}
