//! The client: one account on one device, its encrypted store, and at most
//! one authenticated connection to a relay.
//!
//! Everything runs on the caller's task: a request waits for its reply and
//! queues the pushes (deliveries, receipts) that arrive meanwhile;
//! [`Client::next_event`] processes them. A delivery is acknowledged only
//! after the decrypted message, the session record and the used prekey are
//! durably stored, so a crash at any point loses nothing: the relay sends
//! the envelope again and the history deduplicates it by message id.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comptoir_protocol::proto::content::{
    Content, ReadReceipt, RekeyRequest, SentTranscript, Text, content,
};
use comptoir_protocol::proto::wire::{
    self, AuthResponse, Block, Category, ClientFrame, DeliveryAck, DeviceCiphertext, Envelope,
    ErrorCode, FetchPreKeys, GetDeviceList, Lookup, PublishDeviceList, Register, RequestCode, Send,
    ServerFrame, Unblock, VerifyCode, client_frame, server_frame,
};
use comptoir_protocol::{
    AccountId, AccountKey, DeviceList, Error as ProtocolError, IdentityKey, InMemoryPreKeyStore,
    SafetyNumber, VerifiedBundle, auth_payload, register_payload,
};
use prost::Message;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::account::Account;
use crate::connection::{Connection, RelaySocket};
use crate::contacts::{self, Contact};
use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::messages::{self, MessageId, Status, StoredMessage};
use crate::peers::{self, Observed};
use crate::session_store::{PreKeys, load_session, save_session};
use crate::store::{KdfParams, Store, Tree};

/// How long the relay has to answer one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// One-time prekeys uploaded per batch: enough for this many first
/// contacts before the relay says the stock is low.
pub const PREKEY_BATCH: u32 = 50;
/// Upload a new batch when the relay holds fewer than this.
pub const PREKEY_LOW_WATER: u32 = 10;
/// Longest text message, in bytes (well under the protocol's plaintext cap).
pub const MAX_TEXT_LEN: usize = 8 * 1024;
/// At most one re-key request per remote device in this interval: a
/// session that keeps failing must not make two devices ping-pong.
pub const REKEY_INTERVAL: Duration = Duration::from_secs(60);
/// Plaintexts are padded to a multiple of this, hiding their exact length.
const PADDING_BLOCK: usize = 64;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Map a relay error frame to a typed error.
pub(crate) fn relay_error(error: wire::Error) -> ClientError {
    let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
    match (code, error.device_list) {
        (ErrorCode::DeviceListMismatch, Some(list)) => ClientError::DeviceListMismatch {
            current: Box::new(list),
        },
        _ => ClientError::Relay {
            code,
            message: error.message,
        },
    }
}

/// What the sender's device is to this device.
enum Expected {
    /// Listed in the trusted device list with this identity.
    Key(Box<IdentityKey>),
    /// The account's key changed; the user must accept it first.
    IdentityChanged,
    /// Not in the account's signed device list.
    NotListed,
}

/// One account on this device.
pub struct Client {
    store: Store,
    account: Account,
    prekeys: PreKeys,
    conn: Option<Connection<RelaySocket>>,
    next_request: u64,
    pushes: VecDeque<ServerFrame>,
    events: VecDeque<Event>,
    /// Messages a peer asked to get again over a fresh session.
    resends: VecDeque<(AccountId, MessageId)>,
    /// When this device last asked a remote device for a fresh session.
    rekeyed_at: HashMap<(AccountId, u32), Instant>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            store,
            account,
            prekeys,
            conn,
            next_request: _,
            pushes,
            events,
            resends,
            rekeyed_at: _,
        } = self;
        f.debug_struct("Client")
            .field("store", store)
            .field("account", account)
            .field("prekeys", prekeys)
            .field("connected", &conn.is_some())
            .field("pushes", &pushes.len())
            .field("events", &events.len())
            .field("resends", &resends.len())
            .finish()
    }
}

impl Client {
    /// Create a new account and device in `dir`, with the default KDF costs.
    pub fn create(dir: &Path, passphrase: &str) -> Result<Self> {
        Self::create_with_params(dir, passphrase, KdfParams::DEFAULT)
    }

    /// [`Self::create`] with chosen Argon2id costs.
    pub fn create_with_params(dir: &Path, passphrase: &str, params: KdfParams) -> Result<Self> {
        let store = Store::create(dir, passphrase, params)?;
        let account = Account::generate();
        account.save(&store)?;
        store.flush_blocking()?;
        Ok(Self::with(store, account, PreKeys::default()))
    }

    /// Create a device in `dir` that will join an existing account (see
    /// [`Self::link_code`] and [`Self::finish_link`]).
    pub fn create_unlinked(dir: &Path, passphrase: &str, params: KdfParams) -> Result<Self> {
        let store = Store::create(dir, passphrase, params)?;
        let account = Account::generate_unlinked();
        account.save(&store)?;
        store.flush_blocking()?;
        Ok(Self::with(store, account, PreKeys::default()))
    }

    /// Whether this device waits for a link approval.
    pub fn is_unlinked(&self) -> bool {
        self.account.is_unlinked()
    }

    /// Open the account in `dir`. A wrong passphrase is
    /// [`ClientError::WrongPassphrase`].
    pub fn open(dir: &Path, passphrase: &str) -> Result<Self> {
        let store = Store::open(dir, passphrase)?;
        let account = Account::load(&store)?
            .ok_or_else(|| ClientError::CorruptStore("the store holds no account record".into()))?;
        let prekeys = PreKeys::load(&store)?;
        Ok(Self::with(store, account, prekeys))
    }

    fn with(store: Store, account: Account, prekeys: PreKeys) -> Self {
        Self {
            store,
            account,
            prekeys,
            conn: None,
            next_request: 0,
            pushes: VecDeque::new(),
            events: VecDeque::new(),
            resends: VecDeque::new(),
            rekeyed_at: HashMap::new(),
        }
    }

    /// This account's id.
    pub fn account_id(&self) -> AccountId {
        self.account.id()
    }

    /// This device's id.
    pub fn device_id(&self) -> u32 {
        self.account.device_id()
    }

    /// Whether the account was registered on a relay.
    pub fn is_registered(&self) -> bool {
        self.account.is_registered()
    }

    /// Whether a relay connection is open and authenticated.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    // ----- relay session -----

    /// Create the account on the relay at `url`, then connect to it.
    pub async fn register(&mut self, url: &str) -> Result<()> {
        let list = self.account.signed_device_list()?;
        let (conn, challenge) = Connection::connect(url).await?;
        self.conn = Some(conn);
        let id = self.account.id();
        let key = self
            .account
            .account_key()
            .ok_or(ClientError::NotPrimaryDevice)?;
        let register = Register {
            account_id: id.to_vec(),
            account_key: key.public().to_bytes().to_vec(),
            device_list: Some(list.clone()),
            signature: key.sign(&register_payload(&id, &challenge.nonce)).to_vec(),
        };
        let reply = self
            .request(client_frame::Body::Register(register), "the registration")
            .await;
        self.disconnect().await;
        match reply? {
            server_frame::Body::Registered(_) => {}
            other => return Err(unexpected("Registered", &other)),
        }
        self.account.set_registered();
        self.account.save(&self.store)?;
        peers::observe(&self.store, &id, &list)?;
        self.store.flush().await?;
        self.connect(url).await.map(|_| ())
    }

    /// Connect and authenticate to the relay at `url`, top up prekeys, and
    /// send the outbox. Returns how many envelopes the relay has queued
    /// (they arrive through [`Self::next_event`]).
    pub async fn connect(&mut self, url: &str) -> Result<u64> {
        if self.account.is_unlinked() {
            return Err(ClientError::NotLinked);
        }
        if !self.account.is_registered() {
            return Err(ClientError::NotRegistered);
        }
        self.disconnect().await;
        let (conn, challenge) = Connection::connect(url).await?;
        self.conn = Some(conn);
        let id = self.account.id();
        let device = self.account.device_id();
        let response = AuthResponse {
            account_id: id.to_vec(),
            device_id: device,
            signature: self
                .account
                .identity()
                .sign(&auth_payload(&challenge.nonce, &id, device))
                .to_vec(),
        };
        let reply = self
            .request(client_frame::Body::AuthResponse(response), "authentication")
            .await;
        let ok = match reply {
            Ok(server_frame::Body::AuthOk(ok)) => ok,
            Ok(other) => {
                self.conn = None;
                return Err(unexpected("AuthOk", &other));
            }
            Err(ClientError::Relay {
                code: ErrorCode::UnknownDevice | ErrorCode::UnknownAccount,
                ..
            }) => {
                self.conn = None;
                return Err(ClientError::NotRegistered);
            }
            Err(e) => {
                self.conn = None;
                return Err(e);
            }
        };
        if ok.one_time_prekeys < PREKEY_LOW_WATER || !self.prekeys.has_signed() {
            self.upload_prekeys(PREKEY_BATCH).await?;
        }
        // Learn devices this account gained or lost elsewhere.
        self.refresh_peer(id).await?;
        self.flush_outbox().await?;
        Ok(ok.queued)
    }

    /// [`Self::connect`], retrying with exponential backoff (250 ms
    /// doubling to 30 s) up to `attempts` times while the relay is
    /// unreachable. Errors that retrying cannot fix return at once.
    pub async fn connect_with_backoff(&mut self, url: &str, attempts: u32) -> Result<u64> {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.connect(url).await {
                Ok(queued) => return Ok(queued),
                Err(
                    e @ (ClientError::Connect { .. }
                    | ClientError::ConnectionClosed(_)
                    | ClientError::Timeout(_)),
                ) if attempt < attempts => {
                    tracing::info!(error = %e, ?delay, "relay unreachable, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Close the connection (the store stays open).
    pub async fn disconnect(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close().await;
        }
    }

    async fn upload_prekeys(&mut self, count: u32) -> Result<()> {
        let (signed_id, first_id) = self.account.reserve_prekey_ids(count);
        let (generated, upload) = InMemoryPreKeyStore::generate(
            self.account.identity(),
            signed_id,
            first_id,
            count,
            &mut rand::rng(),
        );
        self.prekeys
            .add_generated(&self.store, &generated, &upload)?;
        self.account.save(&self.store)?;
        self.store.flush().await?;
        match self
            .request(
                client_frame::Body::UploadPrekeys(upload),
                "the prekey upload",
            )
            .await?
        {
            server_frame::Body::Ok(_) => Ok(()),
            other => Err(unexpected("Ok", &other)),
        }
    }

    /// Send one request and wait for its reply; pushes that arrive
    /// meanwhile are queued for [`Self::next_event`].
    async fn request(
        &mut self,
        body: client_frame::Body,
        what: &'static str,
    ) -> Result<server_frame::Body> {
        self.next_request += 1;
        let request_id = self.next_request;
        let conn = self.conn.as_mut().ok_or(ClientError::NotConnected)?;
        let sent = conn
            .send(&ClientFrame {
                request_id,
                body: Some(body),
            })
            .await;
        if let Err(e) = sent {
            self.conn = None;
            return Err(e);
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let conn = self.conn.as_mut().ok_or(ClientError::NotConnected)?;
            let frame = match tokio::time::timeout_at(deadline, conn.recv()).await {
                Err(_) => return Err(ClientError::Timeout(what)),
                Ok(Err(e)) => {
                    self.conn = None;
                    return Err(e);
                }
                Ok(Ok(frame)) => frame,
            };
            if frame.request_id == request_id {
                return match frame.body {
                    Some(server_frame::Body::Error(error)) => Err(relay_error(error)),
                    Some(body) => Ok(body),
                    None => Err(ClientError::UnexpectedFrame("an empty reply".into())),
                };
            }
            if frame.request_id == 0 {
                self.pushes.push_back(frame);
            }
        }
    }

    /// Wait up to `timeout` for the next event. Deliveries are decrypted,
    /// stored and acknowledged before their event is returned. `Ok(None)`
    /// when nothing happened in time.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            if let Some(frame) = self.pushes.pop_front() {
                self.handle_push(frame).await?;
                continue;
            }
            let conn = self.conn.as_mut().ok_or(ClientError::NotConnected)?;
            match tokio::time::timeout_at(deadline, conn.recv()).await {
                Err(_) => return Ok(None),
                Ok(Err(e)) => {
                    self.conn = None;
                    return Err(e);
                }
                Ok(Ok(frame)) if frame.request_id == 0 => self.pushes.push_back(frame),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn handle_push(&mut self, frame: ServerFrame) -> Result<()> {
        match frame.body {
            Some(server_frame::Body::Deliver(deliver)) => match deliver.envelope {
                Some(envelope) => self.handle_deliver(envelope).await,
                None => {
                    self.events
                        .push_back(Event::Warning("the relay pushed an empty delivery".into()));
                    Ok(())
                }
            },
            Some(server_frame::Body::Delivered(delivered)) => {
                if let (Ok(to), Some(id)) = (
                    AccountId::from_bytes(&delivered.recipient_account),
                    MessageId::from_bytes(&delivered.message_id),
                ) && messages::advance(&self.store, &to, &id, Status::Delivered)?.is_some()
                {
                    self.store.flush().await?;
                    self.events.push_back(Event::Delivered { to, id });
                }
                Ok(())
            }
            Some(server_frame::Body::PrekeysLow(_)) => self.upload_prekeys(PREKEY_BATCH).await,
            Some(server_frame::Body::Error(error)) => {
                self.events
                    .push_back(Event::Warning(relay_error(error).to_string()));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn ack(&mut self, envelope: &Envelope) -> Result<()> {
        let conn = self.conn.as_mut().ok_or(ClientError::NotConnected)?;
        let ack = ClientFrame {
            request_id: 0,
            body: Some(client_frame::Body::DeliveryAck(DeliveryAck {
                message_id: envelope.message_id.clone(),
                sender_account: envelope.sender_account.clone(),
            })),
        };
        if let Err(e) = conn.send(&ack).await {
            self.conn = None;
            return Err(e);
        }
        Ok(())
    }

    async fn handle_deliver(&mut self, envelope: Envelope) -> Result<()> {
        let (Ok(from), Some(id)) = (
            AccountId::from_bytes(&envelope.sender_account),
            MessageId::from_bytes(&envelope.message_id),
        ) else {
            self.events.push_back(Event::Warning(
                "dropped an envelope with a malformed sender or id".into(),
            ));
            return self.ack(&envelope).await;
        };
        if messages::contains(&self.store, &from, &id)? {
            return self.ack(&envelope).await;
        }
        let device = envelope.sender_device;
        let expected = match self.expected_identity(from, device).await? {
            Expected::Key(key) => key,
            Expected::IdentityChanged => {
                // Left queued at the relay until the user accepts the change.
                self.events
                    .push_back(Event::IdentityChanged { account: from });
                return Ok(());
            }
            Expected::NotListed => {
                self.events.push_back(Event::Undecryptable {
                    from,
                    id: id.to_string(),
                    reason: format!("device {device} is not in the account's signed device list"),
                });
                return self.ack(&envelope).await;
            }
        };
        let mut record = load_session(&self.store, &from, device)?;
        let decrypted = match record.decrypt(
            self.account.identity(),
            &mut self.prekeys,
            Some(&*expected),
            &envelope.ciphertext,
        ) {
            Ok(decrypted) => decrypted,
            // A copy already decrypted: never a reason to re-key.
            Err(ProtocolError::DuplicateMessage { .. }) => return self.ack(&envelope).await,
            Err(e) => {
                self.events.push_back(Event::Undecryptable {
                    from,
                    id: id.to_string(),
                    reason: e.to_string(),
                });
                if is_wedged(&e) {
                    match self.request_rekey(from, device, id).await {
                        Ok(()) => {}
                        // Not acked: the relay sends it again on reconnect.
                        Err(e @ (ClientError::ConnectionClosed(_) | ClientError::NotConnected)) => {
                            return Err(e);
                        }
                        Err(e) => self.events.push_back(Event::Warning(format!(
                            "could not ask {from} for a fresh session: {e}"
                        ))),
                    }
                }
                return self.ack(&envelope).await;
            }
        };
        let plaintext = Zeroizing::new(decrypted.plaintext);
        // The content's id is the message's identity; the envelope's may
        // differ when the sender re-sent it over a fresh session.
        let event = match Content::decode(plaintext.as_slice()) {
            Ok(content) => match MessageId::from_bytes(&content.message_id) {
                Some(canonical)
                    if canonical != id && messages::contains(&self.store, &from, &canonical)? =>
                {
                    None
                }
                Some(canonical) => self.apply_content(from, canonical, content)?,
                None => Some(Event::Undecryptable {
                    from,
                    id: id.to_string(),
                    reason: "the content carries a malformed message id".into(),
                }),
            },
            Err(e) => Some(Event::Undecryptable {
                from,
                id: id.to_string(),
                reason: format!("undecodable content: {e}"),
            }),
        };
        save_session(&self.store, &from, device, &record)?;
        self.prekeys.commit(&self.store)?;
        self.store.flush().await?;
        self.ack(&envelope).await?;
        self.events.extend(event);
        while let Some((peer, failed)) = self.resends.pop_front() {
            if let Err(e) = self.resend(peer, failed).await {
                self.events.push_back(Event::Warning(format!(
                    "could not send message {failed} to {peer} again: {e}"
                )));
            }
        }
        Ok(())
    }

    /// Store what a decrypted content says; returns the event to report.
    fn apply_content(
        &mut self,
        from: AccountId,
        id: MessageId,
        content: Content,
    ) -> Result<Option<Event>> {
        match content.body {
            Some(content::Body::Text(Text { body })) => {
                let message = StoredMessage {
                    id,
                    peer: from,
                    outgoing: false,
                    body: body.clone(),
                    sent_at_ms: content.sent_at_ms,
                    stored_at_ms: now_ms(),
                    status: Status::Delivered,
                    sequence: self.store.next_sequence()?,
                };
                messages::save(&self.store, &message)?;
                Ok(Some(Event::Message {
                    from,
                    id,
                    text: body,
                    sent_at_ms: content.sent_at_ms,
                }))
            }
            Some(content::Body::SentTranscript(transcript)) if from == self.account.id() => {
                let (Ok(to), Some(inner)) = (
                    AccountId::from_bytes(&transcript.peer_account),
                    transcript.content,
                ) else {
                    return Ok(Some(Event::Warning(
                        "a malformed copy from another device of this account".into(),
                    )));
                };
                let Some(content::Body::Text(Text { body })) = inner.body else {
                    return Ok(None);
                };
                if messages::contains(&self.store, &to, &id)? {
                    return Ok(None);
                }
                let message = StoredMessage {
                    id,
                    peer: to,
                    outgoing: true,
                    body: body.clone(),
                    sent_at_ms: content.sent_at_ms,
                    stored_at_ms: now_ms(),
                    status: Status::Accepted,
                    sequence: self.store.next_sequence()?,
                };
                messages::save(&self.store, &message)?;
                Ok(Some(Event::SentElsewhere { to, id, text: body }))
            }
            Some(content::Body::RekeyRequest(request)) => {
                let failed = MessageId::from_bytes(&request.failed_message_id);
                if let Some(failed) = failed
                    && messages::get(&self.store, &from, &failed)?.is_some_and(|m| m.outgoing)
                {
                    self.resends.push_back((from, failed));
                }
                Ok(None)
            }
            Some(content::Body::ReadReceipt(receipt)) => {
                let mut ids = Vec::new();
                for raw in &receipt.message_ids {
                    if let Some(read) = MessageId::from_bytes(raw)
                        && let Some(m) = messages::advance(&self.store, &from, &read, Status::Read)?
                        && m.outgoing
                    {
                        ids.push(read);
                    }
                }
                Ok((!ids.is_empty()).then_some(Event::Read { by: from, ids }))
            }
            _ => Ok(Some(Event::Warning(format!(
                "{from} sent a kind of message this client does not handle yet"
            )))),
        }
    }

    /// The identity a sender's device must have, from the pinned signed
    /// device list (fetched from the relay if the device is not known).
    async fn expected_identity(&mut self, from: AccountId, device: u32) -> Result<Expected> {
        if let Some(peer) = peers::load(&self.store, &from)?
            && let Some(key) = peer.devices.device(device)
        {
            return Ok(Expected::Key(Box::new(*key)));
        }
        match self.refresh_peer(from).await? {
            Observed::IdentityChanged => Ok(Expected::IdentityChanged),
            Observed::Pinned | Observed::Current => {
                let peer = peers::load(&self.store, &from)?;
                Ok(match peer.as_ref().and_then(|p| p.devices.device(device)) {
                    Some(key) => Expected::Key(Box::new(*key)),
                    None => Expected::NotListed,
                })
            }
        }
    }

    /// Fetch a peer's signed device list from the relay and check it
    /// against the pinned account key.
    pub async fn refresh_peer(&mut self, peer: AccountId) -> Result<Observed> {
        let reply = self
            .request(
                client_frame::Body::GetDeviceList(GetDeviceList {
                    account_id: peer.to_vec(),
                }),
                "the device list",
            )
            .await?;
        let server_frame::Body::DeviceList(list) = reply else {
            return Err(unexpected("DeviceList", &reply));
        };
        self.observe(peer, &list)
    }

    fn observe(&mut self, peer: AccountId, list: &wire::SignedDeviceList) -> Result<Observed> {
        let observed = peers::observe(&self.store, &peer, list)?;
        if observed == Observed::IdentityChanged {
            self.events
                .push_back(Event::IdentityChanged { account: peer });
        }
        Ok(observed)
    }

    // ----- sending -----

    /// Write a text message to `peer`: it is stored (pending) and put in
    /// the outbox first, then sent if connected. Offline, it is sent by the
    /// next [`Self::connect`].
    pub async fn send_text(&mut self, peer: AccountId, text: &str) -> Result<MessageId> {
        if text.is_empty() || text.len() > MAX_TEXT_LEN {
            return Err(ClientError::InvalidArgument(format!(
                "a message is 1 to {MAX_TEXT_LEN} bytes"
            )));
        }
        if peers::load(&self.store, &peer)?.is_some_and(|p| p.identity_changed) {
            return Err(ClientError::IdentityChanged { account: peer });
        }
        let id = MessageId::generate();
        let message = StoredMessage {
            id,
            peer,
            outgoing: true,
            body: text.to_string(),
            sent_at_ms: now_ms(),
            stored_at_ms: now_ms(),
            status: Status::Pending,
            sequence: self.store.next_sequence()?,
        };
        messages::save(&self.store, &message)?;
        messages::outbox_put(&self.store, &peer, &id, &[])?;
        self.store.flush().await?;
        if self.conn.is_some() {
            self.send_from_outbox(peer, id, Vec::new()).await?;
        }
        Ok(id)
    }

    /// Send everything in the outbox (oldest first). A message refused for
    /// good (blocked) is marked failed; a lost connection stops the flush.
    pub async fn flush_outbox(&mut self) -> Result<()> {
        let mut pending = messages::outbox(&self.store)?;
        let mut order = Vec::with_capacity(pending.len());
        for (peer, id, _) in &pending {
            let at = messages::get(&self.store, peer, id)?.map_or(0, |m| m.sequence);
            order.push(at);
        }
        let mut indexed: Vec<_> = order.into_iter().zip(pending.drain(..)).collect();
        indexed.sort_by_key(|(at, _)| *at);
        for (_, (peer, id, frame)) in indexed {
            match self.send_from_outbox(peer, id, frame).await {
                Ok(()) => {}
                Err(
                    e @ (ClientError::ConnectionClosed(_)
                    | ClientError::NotConnected
                    | ClientError::Timeout(_)),
                ) => return Err(e),
                Err(e) => self.events.push_back(Event::Warning(format!(
                    "message {id} to {peer} not sent: {e}"
                ))),
            }
        }
        Ok(())
    }

    async fn send_from_outbox(
        &mut self,
        peer: AccountId,
        id: MessageId,
        cached: Vec<u8>,
    ) -> Result<()> {
        let mut cached = cached;
        for _attempt in 0..2 {
            let send = if cached.is_empty() {
                let Some(message) = messages::get(&self.store, &peer, &id)? else {
                    messages::outbox_remove(&self.store, &peer, &id)?;
                    return Ok(());
                };
                let content = Content {
                    message_id: id.0.to_vec(),
                    sent_at_ms: message.sent_at_ms,
                    body: Some(content::Body::Text(Text { body: message.body })),
                    padding: Vec::new(),
                };
                let send = self
                    .encrypt_for(
                        peer,
                        id,
                        content,
                        Category::Conversation,
                        message.sent_at_ms,
                    )
                    .await?;
                messages::outbox_put(&self.store, &peer, &id, &send.encode_to_vec())?;
                self.store.flush().await?;
                send
            } else {
                Send::decode(cached.as_slice())
                    .map_err(|e| ClientError::CorruptStore(format!("outbox entry: {e}")))?
            };
            match self
                .request(client_frame::Body::Send(send), "the message")
                .await
            {
                Ok(server_frame::Body::Accepted(_)) => {
                    let sent = messages::advance(&self.store, &peer, &id, Status::Accepted)?;
                    messages::outbox_remove(&self.store, &peer, &id)?;
                    self.store.flush().await?;
                    self.events.push_back(Event::Accepted { to: peer, id });
                    if let Some(sent) = sent
                        && let Err(e) = self.sync_sent(&sent).await
                    {
                        self.events.push_back(Event::Warning(format!(
                            "message {id} not copied to this account's other devices: {e}"
                        )));
                    }
                    return Ok(());
                }
                Ok(other) => return Err(unexpected("Accepted", &other)),
                Err(ClientError::Relay {
                    code: ErrorCode::Blocked,
                    ..
                }) => {
                    messages::advance(&self.store, &peer, &id, Status::Failed)?;
                    messages::outbox_remove(&self.store, &peer, &id)?;
                    self.store.flush().await?;
                    return Err(ClientError::Blocked { recipient: peer });
                }
                Err(ClientError::Relay { code, message }) if is_permanent(code) => {
                    messages::advance(&self.store, &peer, &id, Status::Failed)?;
                    messages::outbox_remove(&self.store, &peer, &id)?;
                    self.store.flush().await?;
                    return Err(ClientError::Relay { code, message });
                }
                Err(ClientError::DeviceListMismatch { current }) => {
                    // The peer added or removed a device: adopt the signed
                    // list (if it checks out) and encrypt again.
                    if self.observe(peer, &current)? == Observed::IdentityChanged {
                        return Err(ClientError::IdentityChanged { account: peer });
                    }
                    messages::outbox_put(&self.store, &peer, &id, &[])?;
                    cached = Vec::new();
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::UnexpectedFrame(
            "the relay refused the device list twice".into(),
        ))
    }

    /// A message from `peer`'s `device` could not be decrypted: start a
    /// fresh session with that device and ask it (over the new session) to
    /// send message `failed` again.
    async fn request_rekey(
        &mut self,
        peer: AccountId,
        device: u32,
        failed: MessageId,
    ) -> Result<()> {
        let now = Instant::now();
        if self
            .rekeyed_at
            .get(&(peer, device))
            .is_some_and(|at| now.duration_since(*at) < REKEY_INTERVAL)
        {
            return Ok(());
        }
        self.rekeyed_at.insert((peer, device), now);
        let reply = self
            .request(
                client_frame::Body::FetchPrekeys(FetchPreKeys {
                    account_id: peer.to_vec(),
                }),
                "the prekey bundles",
            )
            .await?;
        let server_frame::Body::PrekeyBundles(bundles) = reply else {
            return Err(unexpected("PreKeyBundles", &reply));
        };
        let list = bundles.device_list.ok_or_else(|| {
            ClientError::UnexpectedFrame("prekey bundles without a signed device list".into())
        })?;
        if self.observe(peer, &list)? == Observed::IdentityChanged {
            return Err(ClientError::IdentityChanged { account: peer });
        }
        let state = peers::load(&self.store, &peer)?.ok_or(ClientError::UnknownPeer(peer))?;
        let expected = state
            .devices
            .device(device)
            .ok_or(ClientError::UnknownPeer(peer))?;
        let bundle = bundles
            .bundles
            .iter()
            .find(|b| b.device_id == device && b.account_id == peer.to_vec())
            .ok_or_else(|| {
                ClientError::UnexpectedFrame(format!("no bundle for device {device}"))
            })?;
        let verified = VerifiedBundle::verify(bundle, Some(expected))?;
        let mut record = load_session(&self.store, &peer, device)?;
        record.initiate(self.account.identity(), &verified, &mut rand::rng())?;
        save_session(&self.store, &peer, device, &record)?;
        let id = MessageId::generate();
        let now_ms = now_ms();
        let content = Content {
            message_id: id.0.to_vec(),
            sent_at_ms: now_ms,
            body: Some(content::Body::RekeyRequest(RekeyRequest {
                failed_message_id: failed.0.to_vec(),
            })),
            padding: Vec::new(),
        };
        let send = self
            .encrypt_for(peer, id, content, Category::Control, now_ms)
            .await?;
        self.store.flush().await?;
        match self
            .request(client_frame::Body::Send(send), "the re-key request")
            .await?
        {
            server_frame::Body::Accepted(_) => {
                self.events.push_back(Event::SessionReset {
                    peer,
                    device,
                    failed,
                });
                Ok(())
            }
            other => Err(unexpected("Accepted", &other)),
        }
    }

    /// Send message `failed` to `peer` again (over the session the peer
    /// just started), from this device's history. The envelope gets a new
    /// id (the relay already holds the old one); the content keeps the
    /// original, so devices that have it recognise the copy.
    async fn resend(&mut self, peer: AccountId, failed: MessageId) -> Result<()> {
        let Some(message) = messages::get(&self.store, &peer, &failed)? else {
            return Ok(());
        };
        let content = Content {
            message_id: failed.0.to_vec(),
            sent_at_ms: message.sent_at_ms,
            body: Some(content::Body::Text(Text {
                body: message.body.clone(),
            })),
            padding: Vec::new(),
        };
        let envelope_id = MessageId::generate();
        let send = self
            .encrypt_for(
                peer,
                envelope_id,
                content,
                Category::Conversation,
                message.sent_at_ms,
            )
            .await?;
        self.store.flush().await?;
        match self
            .request(client_frame::Body::Send(send), "the message")
            .await?
        {
            server_frame::Body::Accepted(_) => {
                messages::advance(&self.store, &peer, &failed, Status::Accepted)?;
                self.store.flush().await?;
                self.events.push_back(Event::Resent {
                    to: peer,
                    id: failed,
                });
                Ok(())
            }
            other => Err(unexpected("Accepted", &other)),
        }
    }

    /// Make sure there is a sending session with every device of `peer`,
    /// fetching prekey bundles (and the signed device list) when needed.
    async fn ensure_sessions(&mut self, peer: AccountId) -> Result<()> {
        if let Some(state) = peers::load(&self.store, &peer)? {
            if state.identity_changed {
                return Err(ClientError::IdentityChanged { account: peer });
            }
            let mut ready = true;
            for device in self.target_devices(peer, &state.devices) {
                if !load_session(&self.store, &peer, device)?.can_send() {
                    ready = false;
                }
            }
            if ready {
                return Ok(());
            }
        }
        let reply = self
            .request(
                client_frame::Body::FetchPrekeys(FetchPreKeys {
                    account_id: peer.to_vec(),
                }),
                "the prekey bundles",
            )
            .await?;
        let server_frame::Body::PrekeyBundles(bundles) = reply else {
            return Err(unexpected("PreKeyBundles", &reply));
        };
        let list = bundles.device_list.ok_or_else(|| {
            ClientError::UnexpectedFrame("prekey bundles without a signed device list".into())
        })?;
        if self.observe(peer, &list)? == Observed::IdentityChanged {
            return Err(ClientError::IdentityChanged { account: peer });
        }
        let state = peers::load(&self.store, &peer)?.ok_or(ClientError::UnknownPeer(peer))?;
        for bundle in &bundles.bundles {
            if bundle.account_id != peer.to_vec() || self.is_self(peer, bundle.device_id) {
                continue;
            }
            let Some(expected) = state.devices.device(bundle.device_id) else {
                continue;
            };
            let mut record = load_session(&self.store, &peer, bundle.device_id)?;
            if record.can_send() {
                continue;
            }
            let verified = VerifiedBundle::verify(bundle, Some(expected))?;
            record.initiate(self.account.identity(), &verified, &mut rand::rng())?;
            save_session(&self.store, &peer, bundle.device_id, &record)?;
        }
        Ok(())
    }

    /// Encrypt `content` once per device of `peer`, saving each session.
    async fn encrypt_for(
        &mut self,
        peer: AccountId,
        id: MessageId,
        mut content: Content,
        category: Category,
        sent_at_ms: u64,
    ) -> Result<Send> {
        self.ensure_sessions(peer).await?;
        let state = peers::load(&self.store, &peer)?.ok_or(ClientError::UnknownPeer(peer))?;
        content.padding = padding(content.encoded_len());
        let plaintext = Zeroizing::new(content.encode_to_vec());
        let targets = self.target_devices(peer, &state.devices);
        let mut devices = Vec::with_capacity(targets.len());
        for device in targets {
            let mut record = load_session(&self.store, &peer, device)?;
            let ciphertext = record.encrypt(&plaintext, &mut rand::rng())?;
            save_session(&self.store, &peer, device, &record)?;
            devices.push(DeviceCiphertext {
                device_id: device,
                ciphertext,
            });
        }
        Ok(Send {
            message_id: id.0.to_vec(),
            recipient_account: peer.to_vec(),
            client_timestamp_ms: sent_at_ms,
            category: category as i32,
            template_id: String::new(),
            franking_tag: Vec::new(),
            devices,
        })
    }

    /// Tell `peer` (end-to-end encrypted) that its messages were read, and
    /// mark them read here. Returns how many were marked.
    pub async fn mark_read(&mut self, peer: AccountId) -> Result<usize> {
        let unread: Vec<MessageId> = messages::history(&self.store, &peer)?
            .into_iter()
            .filter(|m| !m.outgoing && m.status < Status::Read)
            .map(|m| m.id)
            .collect();
        if unread.is_empty() {
            return Ok(0);
        }
        let id = MessageId::generate();
        let now = now_ms();
        let content = Content {
            message_id: id.0.to_vec(),
            sent_at_ms: now,
            body: Some(content::Body::ReadReceipt(ReadReceipt {
                message_ids: unread.iter().map(|m| m.0.to_vec()).collect(),
                read_at_ms: now,
            })),
            padding: Vec::new(),
        };
        let send = self
            .encrypt_for(peer, id, content, Category::Control, now)
            .await?;
        self.store.flush().await?;
        match self
            .request(client_frame::Body::Send(send), "the read receipt")
            .await?
        {
            server_frame::Body::Accepted(_) => {}
            other => return Err(unexpected("Accepted", &other)),
        }
        for read in &unread {
            messages::advance(&self.store, &peer, read, Status::Read)?;
        }
        self.store.flush().await?;
        Ok(unread.len())
    }

    // ----- this account's devices -----

    fn is_self(&self, peer: AccountId, device: u32) -> bool {
        peer == self.account.id() && device == self.account.device_id()
    }

    /// The devices a message to `peer` is encrypted for: all of its
    /// devices, except this one when writing to this account's others.
    fn target_devices(&self, peer: AccountId, list: &DeviceList) -> Vec<u32> {
        list.device_ids()
            .into_iter()
            .filter(|d| !self.is_self(peer, *d))
            .collect()
    }

    /// This account's device list as last verified.
    pub fn own_devices(&self) -> Result<DeviceList> {
        match peers::load(&self.store, &self.account.id())? {
            Some(peer) => Ok(peer.devices),
            None => Ok(DeviceList::verify(
                &self.account.signed_device_list()?,
                None,
            )?),
        }
    }

    /// Copy a sent message to this account's other devices (best effort:
    /// a copy that cannot go now is reported, not retried).
    async fn sync_sent(&mut self, sent: &StoredMessage) -> Result<()> {
        let own = self.account.id();
        for _attempt in 0..2 {
            if self.target_devices(own, &self.own_devices()?).is_empty() {
                return Ok(());
            }
            let content = Content {
                message_id: sent.id.0.to_vec(),
                sent_at_ms: sent.sent_at_ms,
                body: Some(content::Body::SentTranscript(Box::new(SentTranscript {
                    peer_account: sent.peer.to_vec(),
                    content: Some(Box::new(Content {
                        message_id: sent.id.0.to_vec(),
                        sent_at_ms: sent.sent_at_ms,
                        body: Some(content::Body::Text(Text {
                            body: sent.body.clone(),
                        })),
                        padding: Vec::new(),
                    })),
                }))),
                padding: Vec::new(),
            };
            let send = self
                .encrypt_for(own, sent.id, content, Category::Control, sent.sent_at_ms)
                .await?;
            self.store.flush().await?;
            match self
                .request(client_frame::Body::Send(send), "the copy to other devices")
                .await
            {
                Ok(server_frame::Body::Accepted(_)) => return Ok(()),
                Ok(other) => return Err(unexpected("Accepted", &other)),
                Err(ClientError::DeviceListMismatch { current }) => {
                    if self.observe(own, &current)? == Observed::IdentityChanged {
                        return Err(ClientError::IdentityChanged { account: own });
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The code a new device shows so an existing device can add it.
    pub fn link_code(&self) -> Result<String> {
        if !self.account.is_unlinked() {
            return Err(ClientError::InvalidArgument(
                "this device already belongs to an account".into(),
            ));
        }
        Ok(format!(
            "{LINK_CODE_PREFIX}{}",
            hex(&self.account.identity_key().to_bytes())
        ))
    }

    /// On the account's first device: add the device that shows
    /// `link_code` to the signed device list. Returns the approval the new
    /// device finishes linking with.
    pub async fn add_device(&mut self, link_code: &str) -> Result<String> {
        let identity = parse_link_code(link_code)?;
        let own = self.account.id();
        self.refresh_peer(own).await?;
        let current = self.own_devices()?;
        let device_id = match current.devices.iter().find(|(_, key)| *key == identity) {
            Some((id, _)) => *id,
            None => {
                let next = current.devices.iter().map(|(id, _)| *id).max().unwrap_or(0) + 1;
                let mut devices = current.devices.clone();
                devices.push((next, identity));
                self.publish_devices(current.version + 1, devices).await?;
                next
            }
        };
        Ok(format!("{APPROVAL_PREFIX}{own}:{device_id}"))
    }

    /// On the account's first device: remove a device from the signed
    /// list. The relay drops its queue and disconnects it.
    pub async fn remove_device(&mut self, device_id: u32) -> Result<()> {
        if device_id == self.account.device_id() {
            return Err(ClientError::InvalidArgument(
                "a device cannot remove itself".into(),
            ));
        }
        let own = self.account.id();
        self.refresh_peer(own).await?;
        let current = self.own_devices()?;
        if current.device(device_id).is_none() {
            return Err(ClientError::InvalidArgument(format!(
                "device {device_id} is not in this account's list"
            )));
        }
        let devices = current
            .devices
            .iter()
            .copied()
            .filter(|(id, _)| *id != device_id)
            .collect();
        self.publish_devices(current.version + 1, devices).await
    }

    async fn publish_devices(
        &mut self,
        version: u64,
        devices: Vec<(u32, IdentityKey)>,
    ) -> Result<()> {
        let key = self
            .account
            .account_key()
            .ok_or(ClientError::NotPrimaryDevice)?;
        let own = self.account.id();
        let signed = DeviceList::sign(key, own, version, devices)?;
        let body = client_frame::Body::PublishDeviceList(PublishDeviceList {
            device_list: Some(signed.clone()),
        });
        match self.request(body, "the device list").await? {
            server_frame::Body::Ok(_) => {}
            other => return Err(unexpected("Ok", &other)),
        }
        peers::observe(&self.store, &own, &signed)?;
        self.store.flush().await
    }

    /// On a new device: finish linking with the approval the first device
    /// printed, connect, and check the account's signed list names this
    /// device (pinning the account key).
    pub async fn finish_link(&mut self, url: &str, approval: &str) -> Result<()> {
        if !self.account.is_unlinked() {
            return Err(ClientError::InvalidArgument(
                "this device is already linked".into(),
            ));
        }
        let (account, device_id) = parse_approval(approval)?;
        self.account.set_linked(account, device_id);
        if let Err(e) = self.connect(url).await {
            self.conn = None;
            if let Some(saved) = Account::load(&self.store)? {
                self.account = saved;
            }
            return Err(e);
        }
        let own = self.own_devices()?;
        if own.device(device_id) != Some(&self.account.identity_key()) {
            return Err(ClientError::BadLinkCode(
                "the account's signed device list does not name this device".into(),
            ));
        }
        self.account.save(&self.store)?;
        self.store.flush().await
    }

    // ----- phone numbers -----

    /// Ask the relay to send a verification code to `phone` (E.164, such
    /// as `+447700900123`).
    pub async fn request_phone_code(&mut self, phone: &str) -> Result<()> {
        let body = client_frame::Body::RequestCode(RequestCode {
            phone_number: phone.to_string(),
        });
        match self.request(body, "the code request").await? {
            server_frame::Body::Ok(_) => Ok(()),
            other => Err(unexpected("Ok", &other)),
        }
    }

    /// Prove the code sent to `phone` and bind the number to this account;
    /// `discoverable` lets others find the account by the number.
    pub async fn verify_phone(
        &mut self,
        phone: &str,
        code: &str,
        discoverable: bool,
    ) -> Result<()> {
        let body = client_frame::Body::VerifyCode(VerifyCode {
            phone_number: phone.to_string(),
            code: code.to_string(),
            discoverable,
        });
        match self.request(body, "the code check").await? {
            server_frame::Body::Ok(_) => Ok(()),
            other => Err(unexpected("Ok", &other)),
        }
    }

    /// Find the account behind a discoverable phone number.
    /// [`ClientError::UnknownContact`] if none (or not discoverable).
    pub async fn lookup(&mut self, handle: &str) -> Result<AccountId> {
        let body = client_frame::Body::Lookup(Lookup {
            handle: handle.to_string(),
        });
        match self.request(body, "the lookup").await {
            Ok(server_frame::Body::LookupResult(found)) => {
                Ok(AccountId::from_bytes(&found.account_id)?)
            }
            Ok(other) => Err(unexpected("LookupResult", &other)),
            Err(ClientError::Relay {
                code: ErrorCode::UnknownAccount,
                ..
            }) => Err(ClientError::UnknownContact(handle.to_string())),
            Err(e) => Err(e),
        }
    }

    // ----- blocking -----

    /// Ask the relay to refuse every message from `peer` to this account.
    pub async fn block(&mut self, peer: AccountId) -> Result<()> {
        let body = client_frame::Body::Block(Block {
            account_id: peer.to_vec(),
        });
        match self.request(body, "the block").await? {
            server_frame::Body::Ok(_) => {}
            other => return Err(unexpected("Ok", &other)),
        }
        self.store.put(Tree::Blocked, peer.as_bytes(), &[])?;
        self.store.flush().await
    }

    /// Lift a block.
    pub async fn unblock(&mut self, peer: AccountId) -> Result<()> {
        let body = client_frame::Body::Unblock(Unblock {
            account_id: peer.to_vec(),
        });
        match self.request(body, "the unblock").await? {
            server_frame::Body::Ok(_) => {}
            other => return Err(unexpected("Ok", &other)),
        }
        self.store.remove(Tree::Blocked, peer.as_bytes())?;
        self.store.flush().await
    }

    /// Whether this device blocked `peer` (as acknowledged by the relay).
    pub fn is_blocked(&self, peer: &AccountId) -> Result<bool> {
        self.store.contains(Tree::Blocked, peer.as_bytes())
    }

    // ----- local queries -----

    /// The conversation with `peer`, oldest first.
    pub fn history(&self, peer: &AccountId) -> Result<Vec<StoredMessage>> {
        messages::history(&self.store, peer)
    }

    /// One stored message.
    pub fn message(&self, peer: &AccountId, id: &MessageId) -> Result<Option<StoredMessage>> {
        messages::get(&self.store, peer, id)
    }

    /// Every account this device has messages with.
    pub fn conversation_peers(&self) -> Result<Vec<AccountId>> {
        messages::peers(&self.store)
    }

    /// Messages written but not yet accepted by the relay.
    pub fn outbox_len(&self) -> Result<usize> {
        Ok(messages::outbox(&self.store)?.len())
    }

    /// Add (or rename) a contact.
    pub fn add_contact(&self, name: &str, account: AccountId) -> Result<()> {
        contacts::add(&self.store, name, account)?;
        self.store.flush_blocking()
    }

    /// Every contact, by name.
    pub fn contacts(&self) -> Result<Vec<Contact>> {
        contacts::list(&self.store)
    }

    /// Resolve a contact name or a hex account id.
    pub fn resolve(&self, name_or_id: &str) -> Result<AccountId> {
        contacts::resolve(&self.store, name_or_id)
    }

    /// The contact name of an account, if it has one.
    pub fn contact_name(&self, account: &AccountId) -> Result<Option<String>> {
        contacts::name_of(&self.store, account)
    }

    /// The safety number with `peer`, from the two account keys (each
    /// signs its account's device list, so one number covers every device
    /// and stays the same when devices are added). Computed with
    /// [`SafetyNumber`] over the Ed25519 account keys. [`ClientError::UnknownPeer`]
    /// if no key is pinned for `peer` yet.
    pub fn safety_number(&self, peer: &AccountId) -> Result<SafetyNumber> {
        let state = peers::load(&self.store, peer)?.ok_or(ClientError::UnknownPeer(*peer))?;
        let as_identity = |key: &AccountKey| IdentityKey::from_bytes(&key.to_bytes());
        let remote = as_identity(&state.devices.account_key)?;
        let local = as_identity(&self.own_devices()?.account_key)?;
        Ok(SafetyNumber::new(
            (&self.account.id(), &local),
            (peer, &remote),
        ))
    }

    /// Compare the safety number the contact reads out (60 digits, spaces
    /// ignored) with this device's; when equal, remember the contact as
    /// verified. Returns whether they matched.
    pub fn verify_safety_number(&self, peer: &AccountId, theirs: &str) -> Result<bool> {
        let ours = self.safety_number(peer)?;
        let digits: String = theirs.chars().filter(char::is_ascii_digit).collect();
        if theirs
            .chars()
            .any(|c| !c.is_ascii_digit() && !c.is_whitespace())
            || digits.len() != 60
        {
            return Err(ClientError::InvalidArgument(
                "a safety number is 60 digits (spaces allowed)".into(),
            ));
        }
        if digits != ours.digits() || self.identity_changed(peer)? {
            return Ok(false);
        }
        let state = peers::load(&self.store, peer)?.ok_or(ClientError::UnknownPeer(*peer))?;
        peers::mark_verified(&self.store, peer, &state.devices.account_key)?;
        self.store.flush_blocking()?;
        Ok(true)
    }

    /// Whether the user confirmed `peer`'s safety number (for its current
    /// identity).
    pub fn is_verified(&self, peer: &AccountId) -> Result<bool> {
        Ok(peers::load(&self.store, peer)?.is_some_and(|p| p.verified))
    }

    /// Whether `peer`'s identity changed and awaits acceptance.
    pub fn identity_changed(&self, peer: &AccountId) -> Result<bool> {
        Ok(peers::load(&self.store, peer)?.is_some_and(|p| p.identity_changed))
    }

    /// Accept a changed identity of `peer` (after comparing safety
    /// numbers). Returns false if nothing was pending.
    pub fn accept_identity_change(&self, peer: &AccountId) -> Result<bool> {
        let accepted = peers::accept_identity_change(&self.store, peer)?;
        self.store.flush_blocking()?;
        Ok(accepted)
    }

    /// Close the connection and flush the store, keeping the client.
    pub async fn close_connection(&mut self) {
        self.disconnect().await;
        if let Err(e) = self.store.flush().await {
            tracing::warn!(error = %e, "flushing the store failed");
        }
    }

    /// Flush the store and close the connection.
    pub async fn close(mut self) -> Result<()> {
        self.disconnect().await;
        self.store.flush().await
    }
}

/// Random-free padding up to the next multiple of [`PADDING_BLOCK`]: the
/// length is what is hidden, so the bytes can be zero.
fn padding(len: usize) -> Vec<u8> {
    let overhead = 3; // field tag and a short length prefix
    let total = len + overhead;
    vec![0u8; (PADDING_BLOCK - total % PADDING_BLOCK) % PADDING_BLOCK]
}

const LINK_CODE_PREFIX: &str = "comptoir-link:";
const APPROVAL_PREFIX: &str = "comptoir-approve:";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_link_code(code: &str) -> Result<IdentityKey> {
    let bad = || ClientError::BadLinkCode("expected comptoir-link: and 64 hex digits".into());
    let hex_key = code.trim().strip_prefix(LINK_CODE_PREFIX).ok_or_else(bad)?;
    if hex_key.len() != 64 || !hex_key.is_ascii() {
        return Err(bad());
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex_key[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    IdentityKey::from_bytes(&bytes).map_err(|e| ClientError::BadLinkCode(e.to_string()))
}

fn parse_approval(approval: &str) -> Result<(AccountId, u32)> {
    let bad = || {
        ClientError::BadLinkCode(
            "expected comptoir-approve:<account id>:<device id> from `comptoir devices add`".into(),
        )
    };
    let rest = approval
        .trim()
        .strip_prefix(APPROVAL_PREFIX)
        .ok_or_else(bad)?;
    let (account, device) = rest.split_once(':').ok_or_else(bad)?;
    let account = AccountId::from_hex(account).map_err(|_| bad())?;
    let device: u32 = device.parse().map_err(|_| bad())?;
    if device == 0 {
        return Err(bad());
    }
    Ok((account, device))
}

/// Decryption failures that mean the session is out of step (not an attack
/// on the message itself, not a duplicate): a fresh session fixes them.
fn is_wedged(error: &ProtocolError) -> bool {
    matches!(
        error,
        ProtocolError::DecryptionFailed
            | ProtocolError::NoMatchingSession
            | ProtocolError::SessionNotReady
            | ProtocolError::UnknownSignedPreKey(_)
            | ProtocolError::UnknownOneTimePreKey(_)
            | ProtocolError::TooManySkippedMessages { .. }
    )
}

/// Refusals that sending the same message again cannot fix: the message
/// is marked failed instead of staying in the outbox.
fn is_permanent(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::UnknownAccount
            | ErrorCode::MalformedFrame
            | ErrorCode::FrameTooLarge
            | ErrorCode::BadSignature
            | ErrorCode::InvalidRequest
            | ErrorCode::NoConsent
            | ErrorCode::TemplateNotApproved
    )
}

fn unexpected(wanted: &str, got: &server_frame::Body) -> ClientError {
    let name = match got {
        server_frame::Body::Challenge(_) => "AuthChallenge",
        server_frame::Body::AuthOk(_) => "AuthOk",
        server_frame::Body::Accepted(_) => "Accepted",
        server_frame::Body::Deliver(_) => "Deliver",
        server_frame::Body::Delivered(_) => "Delivered",
        server_frame::Body::Error(_) => "Error",
        server_frame::Body::PrekeyBundles(_) => "PreKeyBundles",
        server_frame::Body::DeviceList(_) => "DeviceList",
        server_frame::Body::Registered(_) => "Registered",
        server_frame::Body::LookupResult(_) => "LookupResult",
        server_frame::Body::Ok(_) => "Ok",
        server_frame::Body::PrekeysLow(_) => "PreKeysLow",
    };
    ClientError::UnexpectedFrame(format!("expected {wanted}, got {name}"))
}

#[cfg(test)]
mod tests {
    use comptoir_protocol::{AccountKeyPair, DeviceList, IdentityKeyPair};

    use super::*;

    #[tokio::test]
    async fn a_changed_identity_holds_sending_until_accepted() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let params = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let mut client = Client::create_with_params(dir.path(), "pw", params)?;
        let mut rng = rand::rng();
        let peer = AccountId::generate(&mut rng);
        let device = *IdentityKeyPair::generate(&mut rng).public();
        let original = AccountKeyPair::generate(&mut rng);
        let list = DeviceList::sign(&original, peer, 1, vec![(1, device)])?;
        assert_eq!(client.observe(peer, &list)?, Observed::Pinned);
        let safety_before = client.safety_number(&peer)?;
        assert!(!client.verify_safety_number(&peer, &"1".repeat(60))?);
        assert!(client.verify_safety_number(&peer, &safety_before.display())?);
        assert!(client.is_verified(&peer)?);

        let other = AccountKeyPair::generate(&mut rng);
        let changed = DeviceList::sign(&other, peer, 2, vec![(1, device)])?;
        assert_eq!(client.observe(peer, &changed)?, Observed::IdentityChanged);
        assert_eq!(
            client.events.pop_front(),
            Some(Event::IdentityChanged { account: peer })
        );
        assert!(client.identity_changed(&peer)?);
        assert!(matches!(
            client.send_text(peer, "hi").await,
            Err(ClientError::IdentityChanged { account }) if account == peer
        ));
        assert_eq!(client.outbox_len()?, 0, "nothing queued for the new key");
        assert_eq!(client.safety_number(&peer)?, safety_before);

        assert!(client.accept_identity_change(&peer)?);
        // A new account key is a new identity: verify it again.
        assert!(!client.is_verified(&peer)?);
        assert_ne!(client.safety_number(&peer)?, safety_before);
        // Offline: accepted into the outbox for the next connect.
        client.send_text(peer, "hi").await?;
        assert_eq!(client.outbox_len()?, 1);
        Ok(())
    }
}
