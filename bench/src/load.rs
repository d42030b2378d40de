//! The load generator behind `relay-load`: N devices (one account each),
//! each sending M envelopes of S bytes to the next device, with at most W
//! sends awaiting `Accepted` per device; every device acks what it
//! receives. Reports envelopes/s and send→deliver latency percentiles.
//!
//! Latency is measured inside one process: the first 8 bytes of each
//! ciphertext carry the send time (nanoseconds since the run started).
//!
//! With a billed share (`billed_percent` > 0) some accounts of the ring
//! register as businesses (spaced so that a business's next device is a
//! customer's): a business sends utility templates (a template id and a
//! 32-byte franking tag) to its customer neighbour for its share of the
//! billed sends (under the consent its customer neighbour grants before the
//! run) and control messages otherwise (no window is open: the customer
//! before it writes to it, not the one it sends to), the customer before it
//! writes to it as conversation, and every customer device signs its ack
//! of a template with its identity key (`sign_delivery`), as the relay
//! requires for what its ledger bills. Those acks ask for a reply, and a
//! run ends only once each was answered `Ok`: a refused ack fails it.
//!
//! With a business share (`business_percent` > 0) instead, that share of
//! the accounts are businesses and every one of their sends is business
//! traffic: every other send an approved utility template under consent,
//! the others service replies inside the 24-hour window, which the
//! customer neighbour opens before the run by writing to the business;
//! the rest of the ring is customer-to-customer conversation.
//!
//! What the sends carry for the relay's franking and ledger is
//! [`Metering`]: by default the businesses frank every send and customers
//! sign their acks of billed templates; `FrankEvery` franks the customers'
//! messages too, and `Off` franks nothing and signs nothing (for a
//! benchmark relay without franking or ledger, see [`crate::metering`]).
//!
//! Either way each business submits its own utility template during
//! setup and the harness approves it through the relay's admin API
//! ([`TemplateApproval`]) before the timed run; a server that checks no
//! template (the storage-free forwarder) gets the same frames and no
//! approval.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use comptoir_protocol::frame::{decode_server, encode_client};
use comptoir_protocol::proto::wire::{self, client_frame, server_frame::Body};
use comptoir_protocol::template::{Placeholder, PlaceholderKind, Template, TemplateCategory};
use comptoir_protocol::{
    AccountId, AccountKeyPair, ConsentCategories, ConsentFields, DeliveryFields, DeviceList,
    IdentityKeyPair, auth_payload, is_billed, register_payload, sign_consent, sign_delivery,
};
use comptoir_relay::admin::client::{AdminClient, AdminClientError};
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
    /// The server refused a request of the load (a send or a signed ack).
    #[error("the server refused a {what} (code {code}): {message}; {hint}")]
    Refused {
        /// What was refused.
        what: &'static str,
        /// What to do about it.
        hint: &'static str,
        /// The error code the server answered.
        code: i32,
        /// Its message.
        message: String,
    },
    /// The options cannot be run.
    #[error("bad load options: {0}")]
    Options(String),
    /// The operator's approval of a load template failed.
    #[error("approving a load template through the admin API: {0}")]
    Approval(#[from] AdminClientError),
}

/// Who approves the templates the load's businesses submit during setup.
#[derive(Clone, Copy, Debug)]
pub enum TemplateApproval<'a> {
    /// The relay's admin API: each template is approved before the run.
    Admin(&'a AdminClient),
    /// A server that checks no template (the storage-free forwarder): the
    /// templates are submitted all the same, and nothing is approved.
    NotChecked,
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
    /// Percent of all sends that are billed business templates with signed
    /// acks (0 to [`MAX_BILLED_PERCENT`]; 0: every account a customer,
    /// every send a conversation message, as before this option).
    pub billed_percent: u32,
    /// Percent of all sends that are business traffic inside the window:
    /// that share of the accounts are businesses sending, in turn,
    /// approved utility templates under consent and service replies (0 to
    /// [`MAX_BILLED_PERCENT`]; not together with `billed_percent`).
    pub business_percent: u32,
    /// In the business mix, percent of a business's sends that are
    /// templates (0 to 100; the others are service replies). 50: every
    /// other send.
    pub template_percent: u32,
    /// Which sends carry a franking commitment and which acks are signed.
    pub metering: Metering,
    /// Give up after this long.
    pub timeout: Duration,
}

/// Which sends of a run carry a franking commitment and which acks the
/// customers sign: what the relay's franking and ledger get to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Metering {
    /// Every business send franked (the relay refuses one without),
    /// customers' sends not; the acks of billed templates signed. The load
    /// of docs/BENCHMARKS.md before issue 14.
    #[default]
    BusinessesFrank,
    /// Every send franked, customers' conversation messages too (as the
    /// client library franks every message); the acks of billed templates
    /// signed, so the relay's ledger records each delivery.
    FrankEvery,
    /// No send franked and no ack signed: for a relay that requires no
    /// franking and keeps no ledger (a benchmark's, built with the relay's
    /// `bench-unmetered` feature); a metered relay refuses a business's
    /// first send.
    Off,
    /// No send franked, the acks of billed templates signed: franking off
    /// with signed delivery kept, for a relay with franking and the ledger
    /// off that still checks signed acks (the same traffic as
    /// [`Metering::FrankEvery`] without franking).
    SignedAcksOnly,
}

/// The largest billed share a ring can carry: a business's next device
/// must be a customer's, so at most every other account is a business.
pub const MAX_BILLED_PERCENT: u32 = 50;

/// The name of the utility template each load business submits.
pub const LOAD_TEMPLATE_NAME: &str = "load_order_update";

/// The utility template `business` submits during setup and sends
/// (filled with an order number) in its template sends.
pub fn load_template(business: AccountId) -> Template {
    Template {
        business,
        name: LOAD_TEMPLATE_NAME.into(),
        language: "en_GB".into(),
        category: TemplateCategory::Utility,
        header: None,
        body: "Your order {{order}} has shipped.".into(),
        footer: None,
        placeholders: vec![Placeholder {
            name: "order".into(),
            kind: PlaceholderKind::Text,
        }],
        buttons: Vec::new(),
    }
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
    /// Business accounts in the ring.
    pub businesses: u64,
    /// Billed template sends made (business to customer).
    pub billed: u64,
    /// Service replies made (business to customer, inside the window).
    pub service: u64,
    /// Signed acks of billed envelopes that the server answered `Ok`.
    pub signed_acks: u64,
}

/// A test identity with one device.
#[derive(Debug)]
pub struct LoadAccount {
    /// Account id.
    pub id: AccountId,
    /// The kind it registers as.
    pub kind: wire::AccountKind,
    key: AccountKeyPair,
    device: IdentityKeyPair,
}

impl LoadAccount {
    /// A fresh random customer account.
    pub fn generate() -> Self {
        Self::generate_as(wire::AccountKind::Customer)
    }

    /// A fresh random account of `kind`.
    pub fn generate_as(kind: wire::AccountKind) -> Self {
        let mut rng = rand::rng();
        Self {
            id: AccountId::generate(&mut rng),
            kind,
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
    /// What the account key signs to register this account.
    fn register_signed_bytes(&self, nonce: &[u8]) -> Vec<u8> {
        if OLD_AUTH.load(std::sync::atomic::Ordering::Relaxed) {
            let mut out = b"Comptoir register v1".to_vec();
            out.extend_from_slice(self.id.as_bytes());
            out.extend_from_slice(nonce);
            out
        } else {
            register_payload(&self.id, self.kind, nonce)
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
                kind: account.kind as i32,
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

/// `customer` lets `business` send it utility templates for a day: a
/// consent token signed by its device, answered `Ok`.
async fn grant_consent(
    ws: &mut Ws,
    customer: &LoadAccount,
    business: &LoadAccount,
) -> Result<(), LoadError> {
    let issued_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let fields = ConsentFields {
        customer: customer.id,
        business: business.id,
        device: 1,
        categories: ConsentCategories::UTILITY,
        issued_at_ms,
        expires_at_ms: issued_at_ms + 24 * 60 * 60 * 1000,
        counter: 1,
    };
    ws.send(client(
        3,
        client_frame::Body::SetConsent(wire::SetConsent {
            business_account: business.id.to_vec(),
            categories: u32::from(ConsentCategories::UTILITY.bits()),
            issued_at_ms,
            expires_at_ms: fields.expires_at_ms,
            counter: 1,
            signature: sign_consent(&customer.device, &fields).to_vec(),
        }),
    ))
    .await?;
    loop {
        let frame = next_frame(ws).await?;
        match frame.body {
            Some(Body::Ok(_)) if frame.request_id == 3 => return Ok(()),
            Some(Body::Error(e)) if frame.request_id == 3 => {
                return Err(LoadError::Refused {
                    what: "consent",
                    hint: "is the relay older than consent tokens?",
                    code: e.code,
                    message: e.message,
                });
            }
            _ => {}
        }
    }
}

/// `business` submits its [`load_template`] over `ws`; its id (hex). A
/// relay must answer `TemplateSubmitted` with that id; a server that checks
/// nothing (`approval` [`TemplateApproval::NotChecked`]) may answer `Ok`.
async fn submit_template(
    ws: &mut Ws,
    business: &LoadAccount,
    approval: TemplateApproval<'_>,
) -> Result<String, LoadError> {
    const REQUEST: u64 = 4;
    let template = load_template(business.id);
    let id = template
        .template_id()
        .map_err(|e| LoadError::Protocol(format!("the load template is invalid: {e}")))?
        .to_hex();
    let template_json = serde_json::to_string(&template)
        .map_err(|e| LoadError::Protocol(format!("the load template as JSON: {e}")))?;
    ws.send(client(
        REQUEST,
        client_frame::Body::SubmitTemplate(wire::SubmitTemplate { template_json }),
    ))
    .await?;
    loop {
        let frame = next_frame(ws).await?;
        if frame.request_id != REQUEST {
            continue;
        }
        return match frame.body {
            Some(Body::TemplateSubmitted(s)) if s.template_id == id => Ok(id),
            Some(Body::Ok(_)) if matches!(approval, TemplateApproval::NotChecked) => Ok(id),
            Some(Body::Error(e)) => Err(LoadError::Refused {
                what: "template submission",
                hint: "is the relay older than approved templates?",
                code: e.code,
                message: e.message,
            }),
            other => Err(LoadError::Protocol(format!(
                "template submission answered {other:?}, not template {id}"
            ))),
        };
    }
}

/// `customer` writes one conversation message to `business` and
/// `business` receives and acks it, before the timed run: it opens the
/// 24-hour window in which the business's service replies are allowed.
async fn open_window(
    customer: (&mut Ws, &LoadAccount),
    business: (&mut Ws, &LoadAccount),
) -> Result<(), LoadError> {
    const REQUEST: u64 = 5;
    let (customer_ws, customer) = customer;
    let (business_ws, business) = business;
    // Message ids of the timed run are (index, send number); this one is
    // all 0xee, sent once per customer.
    let message_id = vec![0xee; 16];
    customer_ws
        .send(client(
            REQUEST,
            client_frame::Body::Send(wire::Send {
                message_id: message_id.clone(),
                recipient_account: business.id.to_vec(),
                category: wire::Category::Conversation as i32,
                devices: vec![wire::DeviceCiphertext {
                    device_id: 1,
                    ciphertext: vec![0x5a; 64],
                }],
                ..Default::default()
            }),
        ))
        .await?;
    loop {
        let frame = next_frame(customer_ws).await?;
        match frame.body {
            Some(Body::Accepted(_)) if frame.request_id == REQUEST => break,
            Some(Body::Error(e)) if frame.request_id == REQUEST => {
                return Err(LoadError::Refused {
                    what: "customer's first message to a business",
                    hint: "raise the server's limits for load runs",
                    code: e.code,
                    message: e.message,
                });
            }
            _ => {}
        }
    }
    loop {
        if let Some(Body::Deliver(d)) = next_frame(business_ws).await?.body {
            let envelope = d.envelope.unwrap_or_default();
            if envelope.message_id != message_id || envelope.sender_account != customer.id.to_vec()
            {
                continue;
            }
            // A conversation message: never a signed ack.
            let (ack, _) = load_ack(business, customer, envelope, Metering::default())?;
            business_ws
                .send(client(0, client_frame::Body::DeliveryAck(ack)))
                .await?;
            return Ok(());
        }
    }
}

/// Who sends what in one run: which accounts of the ring are businesses,
/// how many of each business's sends are billed templates, and what its
/// other sends are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BilledPlan {
    /// Per account of the ring (account i sends to account i + 1).
    pub business: Vec<bool>,
    /// Per account: how many of its sends are billed templates (0 for a
    /// customer).
    pub billed_sends: Vec<usize>,
    /// Each business's customer neighbour writes to it before the run, so
    /// its sends that are not templates are service replies inside the
    /// window; otherwise they are control messages (no window is open).
    pub window_open: bool,
}

impl BilledPlan {
    /// The plan for `devices` accounts sending `messages` each, `percent`
    /// of all sends billed (rounded to a whole send): `ceil(devices ×
    /// percent / 100)` businesses spread evenly over the ring (never two in
    /// a row), the billed sends shared evenly between them.
    pub fn new(devices: usize, messages: usize, percent: u32) -> Result<Self, LoadError> {
        if percent > MAX_BILLED_PERCENT {
            return Err(LoadError::Options(format!(
                "--billed-percent {percent}: at most {MAX_BILLED_PERCENT} (a business's next \
                 device must be a customer's, so at most every other account is a business)"
            )));
        }
        let mut plan = Self {
            business: vec![false; devices],
            billed_sends: vec![0; devices],
            window_open: false,
        };
        let percent = percent as usize;
        let businesses = (devices * percent).div_ceil(100).min(devices / 2);
        if businesses == 0 {
            return Ok(plan);
        }
        let target = (devices * messages * percent + 50) / 100;
        let target = target.min(businesses * messages);
        for j in 0..businesses {
            // Spacing devices / businesses >= 2: the next account is a
            // customer, the last business is at most devices - 2.
            let at = j * devices / businesses;
            plan.business[at] = true;
            plan.billed_sends[at] = target / businesses + usize::from(j < target % businesses);
        }
        Ok(plan)
    }

    /// The business mix for `devices` accounts sending `messages` each:
    /// `round(devices × percent / 100)` businesses (at least one when
    /// `percent` > 0) spread evenly over the ring (never two in a row),
    /// so that about `percent` of all sends are theirs; `template_percent`
    /// of a business's sends (rounded down) are approved utility templates,
    /// spread evenly, the others service replies inside the window its
    /// customer neighbour opens.
    pub fn business_mix(
        devices: usize,
        messages: usize,
        percent: u32,
        template_percent: u32,
    ) -> Result<Self, LoadError> {
        if template_percent > 100 {
            return Err(LoadError::Options(format!(
                "--template-percent {template_percent}: at most 100"
            )));
        }
        if percent > MAX_BILLED_PERCENT {
            return Err(LoadError::Options(format!(
                "--business-percent {percent}: at most {MAX_BILLED_PERCENT} (a business's next \
                 device must be a customer's, so at most every other account is a business)"
            )));
        }
        let mut plan = Self {
            business: vec![false; devices],
            billed_sends: vec![0; devices],
            window_open: percent > 0,
        };
        let percent = percent as usize;
        let businesses = ((devices * percent + 50) / 100)
            .max(usize::from(percent > 0))
            .min(devices / 2);
        for j in 0..businesses {
            let at = j * devices / businesses;
            plan.business[at] = true;
            plan.billed_sends[at] = messages * template_percent as usize / 100;
        }
        Ok(plan)
    }

    /// Billed sends in all.
    pub fn billed(&self) -> usize {
        self.billed_sends.iter().sum()
    }

    /// Business accounts.
    pub fn businesses(&self) -> usize {
        self.business.iter().filter(|&&b| b).count()
    }

    fn kind(&self, index: usize) -> wire::AccountKind {
        if self.business.get(index).copied().unwrap_or(false) {
            wire::AccountKind::Business
        } else {
            wire::AccountKind::Customer
        }
    }
}

/// Run the load against a relay or forwarder listening on `addr`; the
/// businesses' templates are approved by `approval` during setup.
pub async fn run(
    addr: SocketAddr,
    options: LoadOptions,
    approval: TemplateApproval<'_>,
) -> Result<LoadReport, LoadError> {
    let n = options.devices.max(2);
    let plan = match (options.billed_percent, options.business_percent) {
        (billed, 0) => BilledPlan::new(n, options.messages, billed)?,
        (0, business) => {
            BilledPlan::business_mix(n, options.messages, business, options.template_percent)?
        }
        _ => {
            return Err(LoadError::Options(
                "--billed-percent and --business-percent are two different mixes: give one".into(),
            ));
        }
    };
    if plan.businesses() > 0 && OLD_AUTH.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(LoadError::Options(
            "a relay from before account kinds cannot carry business sends: leave out \
             --billed-percent, --business-percent or --old-relay"
                .into(),
        ));
    }
    let accounts: Arc<Vec<LoadAccount>> = Arc::new(
        (0..n)
            .map(|i| LoadAccount::generate_as(plan.kind(i)))
            .collect(),
    );
    let mut sockets = Vec::with_capacity(n);
    for (index, account) in accounts.iter().enumerate() {
        sockets.push(connect(addr, index, account, true).await?);
    }
    // Each business submits its template and the operator approves it; its
    // customer neighbour grants consent (a template outside the window
    // needs it) and, in the business mix, writes to it first (a service
    // reply needs the window open).
    let mut template_ids = vec![String::new(); n];
    for b in (0..n).filter(|&i| plan.business[i]) {
        let id = submit_template(&mut sockets[b], &accounts[b], approval).await?;
        if let TemplateApproval::Admin(admin) = approval {
            admin.approve_template(&id).await?;
        }
        template_ids[b] = id;
        let customer = (b + 1) % n;
        grant_consent(&mut sockets[customer], &accounts[customer], &accounts[b]).await?;
        if plan.window_open {
            let (head, tail) = sockets.split_at_mut(customer.max(b));
            let (business_ws, customer_ws) = if b < customer {
                (&mut head[b], &mut tail[0])
            } else {
                (&mut tail[0], &mut head[customer])
            };
            open_window(
                (customer_ws, &accounts[customer]),
                (business_ws, &accounts[b]),
            )
            .await?;
        }
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let role = Role {
            me: i,
            to: (i + 1) % n,
            from: (i + n - 1) % n,
            billed_sends: plan.billed_sends.get(i).copied().unwrap_or(0),
            window_open: plan.window_open,
            template_id: std::mem::take(&mut template_ids[i]),
            metering: options.metering,
        };
        tasks.spawn(device(ws, accounts.clone(), role, options, start));
    }
    let mut latencies = Vec::with_capacity(n * options.messages);
    let (mut errors, mut signed_acks) = (0, 0);
    // The first device to fail ends the run with its error (the devices
    // after it in the ring would wait for it until the timeout); dropping
    // the set aborts the others.
    tokio::time::timeout(options.timeout, async {
        while let Some(result) = tasks.join_next().await {
            let mut done = result.map_err(|e| LoadError::Protocol(e.to_string()))??;
            latencies.append(&mut done.latencies);
            errors += done.errors;
            signed_acks += done.signed_acks;
        }
        Ok::<_, LoadError>(())
    })
    .await
    .map_err(|_| LoadError::Timeout(options.timeout))??;
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
        businesses: plan.businesses() as u64,
        billed: plan.billed() as u64,
        service: if plan.window_open {
            (plan.businesses() * options.messages - plan.billed()) as u64
        } else {
            0
        },
        signed_acks,
    })
}

/// One device's place in the ring (indices into the run's accounts).
#[derive(Clone, Debug)]
struct Role {
    me: usize,
    to: usize,
    from: usize,
    /// How many of its sends are billed templates.
    billed_sends: usize,
    /// A business's other sends are service replies (else control).
    window_open: bool,
    /// A business's approved template (hex id); empty for a customer.
    template_id: String,
    /// What is franked and signed.
    metering: Metering,
}

/// What one device measured.
struct DeviceDone {
    latencies: Vec<u64>,
    errors: u64,
    signed_acks: u64,
}

/// Request ids of signed acks start here (sends use 10 + their index).
const SIGNED_ACK_REQUEST_BASE: u64 = 1 << 62;

/// Is the `sent`-th of `total` sends one of the first `billed`, spread
/// evenly over the run (Bresenham)?
fn billed_at(sent: usize, billed: usize, total: usize) -> bool {
    total > 0 && (sent + 1) * billed / total > sent * billed / total
}

/// The send of the `sent`-th envelope of device `me` (`role.me`).
fn load_send(
    me: &LoadAccount,
    to: &LoadAccount,
    role: &Role,
    sent: usize,
    billed: bool,
    ciphertext: Vec<u8>,
) -> wire::Send {
    let index = role.me;
    let mut message_id = [0u8; 16];
    message_id[..4].copy_from_slice(&(index as u32).to_be_bytes());
    message_id[4..12].copy_from_slice(&(sent as u64).to_be_bytes());
    // A franking commitment's size (HMAC-SHA256): every business send must
    // carry one; the load never opens it, only signs it back when billed.
    let mut tag = [0x46u8; 32];
    tag[..16].copy_from_slice(&message_id);
    let (category, template_id, mut franking_tag) = if billed {
        (
            wire::Category::Utility,
            role.template_id.clone(),
            tag.to_vec(),
        )
    } else if me.kind == wire::AccountKind::Business && role.window_open {
        // Its customer neighbour wrote to it before the run: a free-form
        // reply inside the window.
        (wire::Category::Service, String::new(), tag.to_vec())
    } else if me.kind == wire::AccountKind::Business {
        // Not a template and not a free-form reply (the customer it sends
        // to never wrote to it: no window): control traffic.
        (wire::Category::Control, String::new(), tag.to_vec())
    } else {
        (wire::Category::Conversation, String::new(), Vec::new())
    };
    match role.metering {
        Metering::BusinessesFrank => {}
        Metering::FrankEvery => franking_tag = tag.to_vec(),
        Metering::Off | Metering::SignedAcksOnly => franking_tag = Vec::new(),
    }
    wire::Send {
        message_id: message_id.to_vec(),
        recipient_account: to.id.to_vec(),
        category: category as i32,
        template_id,
        franking_tag,
        devices: vec![wire::DeviceCiphertext {
            device_id: 1,
            ciphertext,
        }],
        ..Default::default()
    }
}

/// The ack of `envelope` by device 1 of `me`: signed when `me` is the
/// customer of a billed template (`from` sent it), unless `metering` is
/// [`Metering::Off`] (the relay keeps no ledger to sign for).
fn load_ack(
    me: &LoadAccount,
    from: &LoadAccount,
    envelope: wire::Envelope,
    metering: Metering,
) -> Result<(wire::DeliveryAck, bool), LoadError> {
    let category =
        wire::Category::try_from(envelope.category).unwrap_or(wire::Category::Unspecified);
    let mut ack = wire::DeliveryAck {
        message_id: envelope.message_id,
        sender_account: envelope.sender_account,
        accept_id: envelope.accept_id,
        ..Default::default()
    };
    if metering == Metering::Off || !is_billed(from.kind, me.kind, category) {
        return Ok((ack, false));
    }
    let message_id = ack.message_id.as_slice().try_into().map_err(|_| {
        LoadError::Protocol(format!(
            "a billed envelope's message id is {} bytes, not 16",
            ack.message_id.len()
        ))
    })?;
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let fields = DeliveryFields {
        accept_id: ack.accept_id,
        message_id,
        business: from.id,
        customer: me.id,
        customer_device: 1,
        franking_commitment: envelope.franking_tag,
        time_ms,
    };
    ack.delivery_signature = sign_delivery(&me.device, &fields).to_vec();
    ack.signed_at_ms = time_ms;
    Ok((ack, true))
}

/// One device: keep `window` sends in flight, ack what arrives (signing
/// the acks of billed templates, which must be answered `Ok`).
async fn device(
    mut ws: Ws,
    accounts: Arc<Vec<LoadAccount>>,
    role: Role,
    options: LoadOptions,
    start: Instant,
) -> Result<DeviceDone, LoadError> {
    let account = |i: usize| {
        accounts
            .get(i)
            .ok_or_else(|| LoadError::Protocol(format!("no account {i} in the ring")))
    };
    let (me, to, from) = (account(role.me)?, account(role.to)?, account(role.from)?);
    let total = options.messages;
    let (mut sent, mut accepted, mut received) = (0usize, 0usize, 0usize);
    let (mut signed_sent, mut signed_ok) = (0u64, 0u64);
    let errors = 0u64;
    let mut latencies = Vec::with_capacity(total);
    let size = options.size.max(16);
    while accepted < total || received < total || signed_ok < signed_sent {
        let mut wrote = false;
        while sent < total && sent - accepted < options.window {
            let mut ciphertext = vec![0x5a; size];
            ciphertext[..8].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
            let billed = billed_at(sent, role.billed_sends, total);
            let send = load_send(me, to, &role, sent, billed, ciphertext);
            ws.feed(client(sent as u64 + 10, client_frame::Body::Send(send)))
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
                let (ack, signed) = load_ack(me, from, envelope, role.metering)?;
                // A signed ack asks for an answer, so a refusal is seen.
                let request_id = if signed {
                    signed_sent += 1;
                    SIGNED_ACK_REQUEST_BASE + signed_sent
                } else {
                    0
                };
                ws.send(client(request_id, client_frame::Body::DeliveryAck(ack)))
                    .await?;
            }
            Some(Body::Ok(_)) if frame.request_id > SIGNED_ACK_REQUEST_BASE => signed_ok += 1,
            Some(Body::Error(e)) => {
                let (what, hint) = if frame.request_id > SIGNED_ACK_REQUEST_BASE {
                    (
                        "signed ack of a billed template",
                        "the load signed the delivery proof wrong, or the relay checks other fields than docs/PROTOCOL.md says",
                    )
                } else {
                    (
                        "send",
                        "the message says which rule or limit refused it; a load run needs the server's rate limits raised, and its templates approved (--admin, --admin-token)",
                    )
                };
                return Err(LoadError::Refused {
                    what,
                    hint,
                    code: e.code,
                    message: e.message,
                });
            }
            _ => {}
        }
    }
    Ok(DeviceDone {
        latencies,
        errors,
        signed_acks: signed_ok,
    })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use super::*;

    fn check(devices: usize, messages: usize, percent: u32, billed: usize, businesses: usize) {
        let plan = BilledPlan::new(devices, messages, percent).unwrap();
        assert_eq!(
            plan.billed(),
            billed,
            "{devices} x {messages} at {percent}%"
        );
        assert_eq!(plan.businesses(), businesses);
        for i in 0..devices {
            if plan.business[i] {
                assert!(
                    !plan.business[(i + 1) % devices],
                    "business {i} sends to a business"
                );
                assert!(plan.billed_sends[i] <= messages);
            } else {
                assert_eq!(plan.billed_sends[i], 0);
            }
            let spread = (0..messages)
                .filter(|&s| billed_at(s, plan.billed_sends[i], messages))
                .count();
            assert_eq!(spread, plan.billed_sends[i]);
        }
    }

    #[test]
    fn the_billed_share_is_the_requested_fraction_and_businesses_send_to_customers() {
        check(100, 1000, 0, 0, 0);
        check(100, 1000, 10, 10_000, 10);
        check(100, 1000, 15, 15_000, 15);
        check(100, 1000, 50, 50_000, 50);
        check(7, 30, 10, 21, 1);
        check(2, 10, 10, 2, 1);
        check(3, 1, 50, 1, 1);
    }

    #[test]
    fn the_business_mix_gives_the_requested_share_half_templates_half_service() {
        for (devices, percent, businesses) in [(100, 10, 10), (100, 50, 50), (20, 10, 2), (7, 1, 1)]
        {
            let plan = BilledPlan::business_mix(devices, 1000, percent, 50).unwrap();
            assert!(plan.window_open);
            assert_eq!(plan.businesses(), businesses, "{devices} at {percent}%");
            assert_eq!(plan.billed(), businesses * 500);
            for i in 0..devices {
                if plan.business[i] {
                    assert!(!plan.business[(i + 1) % devices]);
                    let templates = (0..1000)
                        .filter(|&s| billed_at(s, plan.billed_sends[i], 1000))
                        .count();
                    assert_eq!(templates, 500);
                    // Alternating: a template never follows a template.
                    assert!(
                        !(0..999).any(|s| billed_at(s, 500, 1000) && billed_at(s + 1, 500, 1000))
                    );
                }
            }
        }
        let none = BilledPlan::business_mix(100, 1000, 0, 50).unwrap();
        assert_eq!((none.businesses(), none.window_open), (0, false));
        let service_only = BilledPlan::business_mix(100, 1000, 10, 0).unwrap();
        assert_eq!((service_only.businesses(), service_only.billed()), (10, 0));
        let templates_only = BilledPlan::business_mix(100, 1000, 10, 100).unwrap();
        assert_eq!(templates_only.billed(), 10_000);
        for bad in [
            BilledPlan::business_mix(100, 10, MAX_BILLED_PERCENT + 1, 50),
            BilledPlan::business_mix(100, 10, 10, 101),
        ] {
            assert!(matches!(bad, Err(LoadError::Options(_))));
        }
    }

    #[test]
    fn more_than_every_other_account_cannot_be_a_business() {
        assert!(matches!(
            BilledPlan::new(100, 10, MAX_BILLED_PERCENT + 1),
            Err(LoadError::Options(_))
        ));
    }
}
