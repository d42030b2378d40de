//! Sending from many tasks at once: the [`Sender`] handle, and the sending
//! logic that the [`Client`] itself uses too.
//!
//! A send writes the message and its outbox entry, then, under the
//! recipient's lock (see [`super::shared::PeerLocks`]), starts sessions
//! where needed, encrypts once per recipient device and writes the session
//! records and the encrypted `Send` back to the outbox. The lock is then
//! released; all these writes are made durable by one sync (a group commit
//! shared with every other task flushing at the time) **before** the
//! ciphertext leaves, so a crash can never lose a session state whose
//! message keys were already used (a send that stops before that sync
//! makes the message durable in the outbox before it returns its error);
//! and only then is the `Send` put on the connection, whose reply
//! (`Accepted`) each task awaits on its own, matched by request id. A send
//! that fails after encrypting keeps its ciphertext in the outbox and is
//! sent as is later: a message key is neither used twice nor skipped.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use comptoir_protocol::proto::content::{
    Content, ReadReceipt, SentTemplate, SentTranscript, Text, content,
};
use comptoir_protocol::proto::wire::{
    self, AccountKind, Category, DeviceCiphertext, ErrorCode, FetchPreKeys, PreKeyBundle, Send,
    client_frame, server_frame,
};
use comptoir_protocol::template::TemplateId;
use comptoir_protocol::{
    AccountId, DeviceList, FrankingKey, IdentityKeyPair, VerifiedBundle, franking, labels,
};
use prost::Message;
use zeroize::{Zeroize, Zeroizing};

use crate::connection::Requester;
use crate::control_outbox::{self, QueuedControl};
use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::messages::{self, MessageId, Status, StoredMessage};
use crate::outgoing_bodies::{self, OutgoingBody};
use crate::peers::{self, Observed};
use crate::rule_checks;
use crate::session_store::{load_session, save_session};
use crate::store::Store;
use crate::template_cache;

use super::shared::{EventQueue, PeerLocks};
use super::{Client, REQUEST_TIMEOUT, now_ms, relay_error, unexpected};

/// Plaintexts are padded to a multiple of this, hiding their exact length.
const PADDING_BLOCK: usize = 64;

/// Random-free padding up to the next multiple of [`PADDING_BLOCK`]: the
/// length is what is hidden, so the bytes can be zero.
fn padding(len: usize) -> Vec<u8> {
    let overhead = 3; // field tag and a short length prefix
    let total = len + overhead;
    vec![0u8; (PADDING_BLOCK - total % PADDING_BLOCK) % PADDING_BLOCK]
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
            | ErrorCode::WindowClosed
            | ErrorCode::TemplateNotApproved
    )
}

/// Errors after which a send waits in its outbox for the next connect.
pub(super) fn is_connection_lost(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::ConnectionClosed(_) | ClientError::NotConnected | ClientError::Timeout(_)
    )
}

/// Who this device is, as sending needs it. Rebuilt by the client whenever
/// one of these changes (linking, authentication).
pub(super) struct Me {
    /// This account.
    pub(super) account: AccountId,
    /// This device.
    pub(super) device: u32,
    /// This device's identity (X3DH initiator key).
    pub(super) identity: IdentityKeyPair,
    /// This account's kind, as the relay told at authentication.
    pub(super) kind: AccountKind,
    /// This account's own list from the account record, for a device whose
    /// list the relay has not confirmed yet (the first device only).
    pub(super) own_list: Option<DeviceList>,
}

/// What [`Live::ensure_sessions`] read of a peer under its lock.
struct Sessions {
    /// The peer's verified state.
    state: peers::Peer,
    /// The sending session of each target device that has one, in the
    /// order of [`Live::target_devices`].
    ready: Vec<(u32, comptoir_protocol::SessionRecord)>,
    /// The target devices without a sending session.
    missing: Vec<u32>,
}

/// The relay connection senders use: replaced by every connect, cleared
/// by a disconnect (then sends wait in the outbox for the next connect);
/// a download cut by a lost connection waits here for the next one.
pub(super) type RequesterSlot = Arc<tokio::sync::watch::Sender<SharedConnection>>;

/// What the handles know of their client's connection.
#[derive(Clone, Default)]
pub(super) struct SharedConnection {
    /// The connection to send on (`None`: not connected).
    pub(super) requester: Option<Requester>,
    /// The client was closed or dropped: no connection will come.
    pub(super) closed: bool,
}

/// The client's hold on its [`RequesterSlot`]: when the client goes
/// (closed or dropped), the handles hear that no connection will come.
pub(super) struct ClientSlot(pub(super) RequesterSlot);

impl ClientSlot {
    pub(super) fn new() -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(
            SharedConnection::default(),
        )))
    }

    /// Give the handles `requester` (or none) to send on.
    pub(super) fn share(&self, requester: Option<Requester>) {
        self.0.send_modify(|shared| shared.requester = requester);
    }

    /// Tell the handles the client is going: no connection will come.
    pub(super) fn close(&self) {
        self.0.send_modify(|shared| {
            shared.requester = None;
            shared.closed = true;
        });
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.close();
    }
}

/// Who this device is, shared by the client and its handles: replaced
/// whenever it changes (linking, a login telling another kind), so a
/// handle made before sends as the device is now.
#[derive(Clone)]
pub(super) struct MeSlot(Arc<Mutex<Arc<Me>>>);

impl MeSlot {
    pub(super) fn new(me: Me) -> Self {
        Self(Arc::new(Mutex::new(Arc::new(me))))
    }

    /// This device as it is now.
    pub(super) fn current(&self) -> Arc<Me> {
        Arc::clone(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replace what every holder sees from its next send on.
    pub(super) fn replace(&self, me: Me) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(me);
    }
}

/// A cheap, cloneable handle that sends text messages through its
/// [`Client`]'s connection from any number of tasks at once (see
/// [`Client::sender`]). Sends to different peers run in parallel; sends to
/// one peer encrypt one after the other under a short lock, then await the
/// relay's `Accepted` concurrently. What one task sends, in order, arrives
/// in that order.
///
/// The handle does not keep the client's store open: once the client is
/// closed, its methods fail with [`ClientError::Closed`]. While the client
/// is disconnected, messages are stored and wait in the outbox until the
/// client's next [`Client::connect`].
#[derive(Clone)]
pub struct Sender {
    store: Weak<Store>,
    me: MeSlot,
    requester: RequesterSlot,
    events: EventQueue,
    locks: PeerLocks,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let me = self.me.current();
        f.debug_struct("Sender")
            .field("account", &me.account)
            .field("device", &me.device)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// This account's id.
    pub fn account_id(&self) -> AccountId {
        self.me.current().account
    }

    /// Write a text message to `peer` and send it (see
    /// [`Client::send_text`]); returns once the relay accepted it, or once
    /// it is safely in the outbox if the client is offline.
    pub async fn send_text(&self, peer: AccountId, text: &str) -> Result<MessageId> {
        self.live()?.send_text(peer, text).await
    }

    pub(super) fn live(&self) -> Result<Live> {
        Ok(Live {
            store: self.store.upgrade().ok_or(ClientError::Closed)?,
            me: self.me.current(),
            requester: self.requester.borrow().requester.clone(),
            events: self.events.clone(),
            locks: self.locks.clone(),
        })
    }

    /// The client's connection once it is another than `lost`:
    /// `Ok(None)` if none comes within [`REQUEST_TIMEOUT`], and
    /// [`ClientError::Closed`] once the client is closed or dropped.
    pub(super) async fn next_connection(
        &self,
        lost: Option<&Requester>,
    ) -> Result<Option<Requester>> {
        let mut slot = self.requester.subscribe();
        let another = slot.wait_for(|shared| {
            shared.closed
                || match (&shared.requester, lost) {
                    (Some(current), Some(lost)) => !current.same_connection(lost),
                    (Some(_), None) => true,
                    (None, _) => false,
                }
        });
        match tokio::time::timeout(REQUEST_TIMEOUT, another).await {
            Ok(Ok(shared)) if shared.closed => Err(ClientError::Closed),
            Ok(Ok(shared)) => Ok(shared.requester.clone()),
            // Every sender gone with the client.
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Ok(None),
        }
    }
}

impl Client {
    /// A handle that sends through this client from other tasks, at the
    /// same time as this client and each other (see [`Sender`]). This
    /// client keeps processing what arrives ([`Self::next_event`]), which
    /// also reports the senders' `Accepted` events.
    pub fn sender(&self) -> Sender {
        Sender {
            store: Arc::downgrade(&self.store),
            me: self.me.clone(),
            requester: Arc::clone(&self.requester.0),
            events: self.events.clone(),
            locks: self.locks.clone(),
        }
    }

    /// The sending logic over this client's state and connection.
    pub(super) fn live(&self) -> Live {
        Live {
            store: Arc::clone(&self.store),
            me: self.me.current(),
            requester: self
                .conn
                .as_ref()
                .map(crate::connection::Connection::requester),
            events: self.events.clone(),
            locks: self.locks.clone(),
        }
    }
}

/// One request on `requester` (`None`: not connected) and its reply; an
/// `Error` reply is a typed error.
pub(super) async fn request_on(
    requester: Option<&Requester>,
    body: client_frame::Body,
    what: &'static str,
) -> Result<server_frame::Body> {
    let requester = requester.ok_or(ClientError::NotConnected)?;
    let frame = tokio::time::timeout(REQUEST_TIMEOUT, requester.request(body))
        .await
        .map_err(|_| ClientError::Timeout(what))??;
    match frame.body {
        Some(server_frame::Body::Error(error)) => Err(relay_error(error)),
        Some(body) => Ok(body),
        None => Err(ClientError::UnexpectedFrame("an empty reply".into())),
    }
}

/// Everything one send needs, taken for its duration.
pub(super) struct Live {
    pub(super) store: Arc<Store>,
    pub(super) me: Arc<Me>,
    pub(super) requester: Option<Requester>,
    pub(super) events: EventQueue,
    pub(super) locks: PeerLocks,
}

impl Live {
    /// One request on the connection and its reply (an `Error` reply is a
    /// typed error).
    pub(super) async fn request(
        &self,
        body: client_frame::Body,
        what: &'static str,
    ) -> Result<server_frame::Body> {
        request_on(self.requester.as_ref(), body, what).await
    }

    /// The category of free-form text from this account: a business
    /// replies as service (the relay refuses it person-to-person
    /// conversation), everyone else converses.
    pub(super) fn text_category(&self) -> Category {
        if self.me.kind == AccountKind::Business {
            Category::Service
        } else {
            Category::Conversation
        }
    }

    pub(super) fn is_self(&self, peer: AccountId, device: u32) -> bool {
        peer == self.me.account && device == self.me.device
    }

    /// The devices a message to `peer` is encrypted for: all of its
    /// devices, except this one when writing to this account's others.
    pub(super) fn target_devices(&self, peer: AccountId, list: &DeviceList) -> Vec<u32> {
        list.device_ids()
            .into_iter()
            .filter(|d| !self.is_self(peer, *d))
            .collect()
    }

    /// This account's device list as last verified.
    pub(super) fn own_devices(&self) -> Result<DeviceList> {
        match peers::load(&self.store, &self.me.account)? {
            Some(peer) => Ok(peer.devices),
            None => self
                .me
                .own_list
                .clone()
                .ok_or(ClientError::NotPrimaryDevice),
        }
    }

    /// Check a device list from the relay against what is pinned (see
    /// [`peers::observe`]); an identity change is reported as an event.
    pub(super) fn observe(
        &self,
        peer: AccountId,
        list: &wire::SignedDeviceList,
    ) -> Result<Observed> {
        let observed = peers::observe(&self.store, &peer, list)?;
        if observed == Observed::IdentityChanged {
            self.events
                .push_back(Event::IdentityChanged { account: peer });
        }
        Ok(observed)
    }

    /// Store a text message to `peer` (pending, in the outbox), durably,
    /// then send it if connected.
    pub(super) async fn send_text(&self, peer: AccountId, text: &str) -> Result<MessageId> {
        messages::check_text(text)?;
        self.send_message(peer, text, None).await
    }

    /// Store a message to `peer` (pending, in the outbox; `body` when it is
    /// not the plain text `text`, which the history shows), durably, then
    /// send it if connected.
    pub(super) async fn send_message(
        &self,
        peer: AccountId,
        text: &str,
        body: Option<OutgoingBody>,
    ) -> Result<MessageId> {
        let (id, sent) = self.store_and_send(peer, text, body).await?;
        sent.map(|()| id)
    }

    /// [`Self::send_message`], which also names the message when its send
    /// failed after it was stored: the outer error means it was refused
    /// before it was stored, or the store failed; the inner result is the
    /// send's (a lost connection leaves the message durably in the outbox
    /// for the next connect).
    pub(super) async fn store_and_send(
        &self,
        peer: AccountId,
        text: &str,
        body: Option<OutgoingBody>,
    ) -> Result<(MessageId, Result<()>)> {
        if peers::load(&self.store, &peer)?.is_some_and(|p| p.identity_changed) {
            return Err(ClientError::IdentityChanged { account: peer });
        }
        // Writing to an account accepts its request, if it made one.
        crate::requests::accept(&self.store, &peer)?;
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
        if let Some(body) = &body {
            outgoing_bodies::put(&self.store, &peer, &id, body)?;
            if let Some(template) = TemplateId::from_hex(&body.template_id) {
                template_cache::record_message(&self.store, &peer, &id, &template)?;
            }
            if let content::Body::Interactive(interactive) = &body.body {
                crate::interactive_messages::record(&self.store, &peer, &id, interactive)?;
            }
        }
        messages::outbox_put(&self.store, &peer, &id, &[])?;
        if self.requester.is_none() {
            self.store.flush().await?;
            return Ok((id, Ok(())));
        }
        // Connected: the message and its outbox entry are made durable by
        // the group commit that also covers the session records and the
        // encrypted frame, before the ciphertext leaves (see
        // `send_from_outbox`), so a send costs one sync fewer. Every way
        // out of `send_from_outbox` that returns early flushes here first,
        // so a message that was not sent is in the outbox, durably, before
        // the caller hears of it.
        let known = Some((message, body));
        match self
            .send_from_outbox_known(peer, id, Vec::new(), known)
            .await
        {
            Ok(()) => Ok((id, Ok(()))),
            Err(e) => {
                self.store.flush().await?;
                Ok((id, Err(e)))
            }
        }
    }

    /// Send one outbox entry: encrypt it unless `cached` holds its
    /// encrypted `Send` already, then send and record the outcome.
    pub(super) async fn send_from_outbox(
        &self,
        peer: AccountId,
        id: MessageId,
        cached: Vec<u8>,
    ) -> Result<()> {
        self.send_from_outbox_known(peer, id, cached, None).await
    }

    /// [`Self::send_from_outbox`] of a message the caller has just stored
    /// (`known`: the message and its non-text body, as written), which is
    /// then not read back from the store for its first encryption.
    async fn send_from_outbox_known(
        &self,
        peer: AccountId,
        id: MessageId,
        cached: Vec<u8>,
        known: Option<(StoredMessage, Option<OutgoingBody>)>,
    ) -> Result<()> {
        let mut cached = cached;
        let mut known = known;
        for _attempt in 0..2 {
            let send = if cached.is_empty() {
                let (message, kept) = match known.take() {
                    Some(known) => known,
                    None => match messages::get(&self.store, &peer, &id)? {
                        Some(message) => (message, outgoing_bodies::get(&self.store, &peer, &id)?),
                        None => {
                            messages::outbox_remove(&self.store, &peer, &id)?;
                            return Ok(());
                        }
                    },
                };
                let (body, category, template_id) = match kept {
                    Some(kept) => (kept.body, kept.category, kept.template_id),
                    None => (
                        content::Body::Text(Text { body: message.body }),
                        self.text_category(),
                        String::new(),
                    ),
                };
                let content = Content {
                    message_id: id.0.to_vec(),
                    sent_at_ms: message.sent_at_ms,
                    body: Some(body),
                    labels: None,
                    franking_key: Vec::new(),
                    padding: Vec::new(),
                };
                // The encrypted frame goes to the outbox with the session
                // records, under the peer's lock: both or neither.
                let encrypted = self
                    .encrypt_for_then(
                        peer,
                        id,
                        content,
                        (category, &template_id),
                        message.sent_at_ms,
                        |send| messages::outbox_put(&self.store, &peer, &id, &send.encode_to_vec()),
                    )
                    .await;
                let send = match encrypted {
                    Ok(send) => send,
                    // No such account (or another refusal for good) while
                    // fetching its keys: retrying cannot help.
                    Err(ClientError::Relay { code, message }) if is_permanent(code) => {
                        return Err(self.fail(peer, id, code, message).await?);
                    }
                    Err(e) => return Err(e),
                };
                self.store.flush().await?;
                send
            } else {
                Send::decode(cached.as_slice())
                    .map_err(|e| ClientError::CorruptStore(format!("outbox entry: {e}")))?
            };
            let conversation = send.category == Category::Conversation as i32;
            match self
                .request(client_frame::Body::Send(send), "the message")
                .await
            {
                Ok(server_frame::Body::Accepted(accepted)) => {
                    if conversation {
                        rule_checks::record_wrote(
                            &self.store,
                            &peer,
                            accepted.server_timestamp_ms,
                        )?;
                    }
                    let sent = messages::advance(&self.store, &peer, &id, Status::Accepted)?;
                    messages::outbox_remove(&self.store, &peer, &id)?;
                    // The copy for this account's other devices is queued
                    // in the same commit: it goes now or at the next connect.
                    let copy = match &sent {
                        Some(sent) => self.queue_sent_copy(sent)?,
                        None => None,
                    };
                    self.store.flush().await?;
                    self.events.push_back(Event::Accepted {
                        to: peer,
                        id,
                        accept_id: accepted.accept_id,
                    });
                    if let Some(copy) = copy
                        && let Err(e) = self.send_control(copy).await
                        && !is_connection_lost(&e)
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
                    outgoing_bodies::remove(&self.store, &peer, &id)?;
                    self.store.flush().await?;
                    return Err(ClientError::Blocked { recipient: peer });
                }
                Err(ClientError::Relay { code, message }) if is_permanent(code) => {
                    return Err(self.fail(peer, id, code, message).await?);
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

    /// Mark a message refused for good as failed and take it out of the
    /// outbox; returns the error to report (an unknown recipient as
    /// [`ClientError::NoSuchAccount`]).
    async fn fail(
        &self,
        peer: AccountId,
        id: MessageId,
        code: ErrorCode,
        message: String,
    ) -> Result<ClientError> {
        messages::advance(&self.store, &peer, &id, Status::Failed)?;
        messages::outbox_remove(&self.store, &peer, &id)?;
        outgoing_bodies::remove(&self.store, &peer, &id)?;
        self.store.flush().await?;
        Ok(match code {
            ErrorCode::UnknownAccount => ClientError::NoSuchAccount(peer),
            code => ClientError::Relay { code, message },
        })
    }

    /// The sessions a message to `peer` is encrypted with, by the last
    /// verified list: the peer's state, the sending session of each target
    /// device that has one (in target order), and the devices without one;
    /// `None` if the peer's list is not known yet.
    fn sessions_for(&self, peer: AccountId) -> Result<Option<Sessions>> {
        let Some(state) = peers::load(&self.store, &peer)? else {
            return Ok(None);
        };
        if state.identity_changed {
            return Err(ClientError::IdentityChanged { account: peer });
        }
        let mut ready = Vec::new();
        let mut missing = Vec::new();
        for device in self.target_devices(peer, &state.devices) {
            let record = load_session(&self.store, &peer, device)?;
            if record.can_send() {
                ready.push((device, record));
            } else {
                missing.push(device);
            }
        }
        Ok(Some(Sessions {
            state,
            ready,
            missing,
        }))
    }

    /// Make sure there is a sending session with every device of `peer`,
    /// fetching prekey bundles (and the signed device list) when needed:
    /// only for the devices without one, so the others keep their one-time
    /// prekeys. A second round covers devices the fetched list revealed.
    /// Returns the peer's state and sessions when every device has one
    /// (the usual case: read once, then encrypted with), `None` after a
    /// fetch. The caller holds `peer`'s lock.
    async fn ensure_sessions(&self, peer: AccountId) -> Result<Option<Sessions>> {
        for _ in 0..2 {
            let wanted = match self.sessions_for(peer)? {
                Some(sessions) if sessions.missing.is_empty() => return Ok(Some(sessions)),
                Some(sessions) => sessions.missing,
                None => Vec::new(),
            };
            self.start_sessions(peer, &wanted).await?;
        }
        Ok(None)
    }

    /// Fetch bundles for `devices` of `peer` (every device if empty) and
    /// start a session with each device that has none. The caller holds
    /// `peer`'s lock.
    async fn start_sessions(&self, peer: AccountId, devices: &[u32]) -> Result<()> {
        let (bundles, state) = self.fetch_bundles(peer, devices).await?;
        for bundle in &bundles {
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
            record.initiate(&self.me.identity, &verified, &mut rand::rng())?;
            save_session(&self.store, &peer, bundle.device_id, &record)?;
        }
        Ok(())
    }

    /// Encrypt `content` once per device of `peer`, saving each session
    /// (not flushed).
    pub(super) async fn encrypt_for(
        &self,
        peer: AccountId,
        id: MessageId,
        content: Content,
        category: Category,
        sent_at_ms: u64,
    ) -> Result<Send> {
        self.encrypt_for_then(peer, id, content, (category, ""), sent_at_ms, |_| Ok(()))
            .await
    }

    /// [`Self::encrypt_for`] under `(category, template id)` labels,
    /// running `also` on the result before `peer`'s lock is released (to
    /// write it beside the session records).
    pub(super) async fn encrypt_for_then(
        &self,
        peer: AccountId,
        id: MessageId,
        mut content: Content,
        (category, template_id): (Category, &str),
        sent_at_ms: u64,
        also: impl FnOnce(&Send) -> Result<()>,
    ) -> Result<Send> {
        let _peer = self.locks.lock(peer).await;
        // Read under the lock, so still current: what `ensure_sessions`
        // found is encrypted with, not read again.
        let (state, mut ready) = match self.ensure_sessions(peer).await? {
            Some(Sessions { state, ready, .. }) => (state, ready.into_iter().peekable()),
            None => (
                peers::load(&self.store, &peer)?.ok_or(ClientError::UnknownPeer(peer))?,
                Vec::new().into_iter().peekable(),
            ),
        };
        // The envelope labels, bound inside the encryption: the receiver
        // refuses the message if the relay shows it under other ones.
        let template_id = template_id.to_owned();
        content.labels = Some(labels::bind(
            &id.0,
            self.me.account.as_bytes(),
            peer.as_bytes(),
            category,
            &template_id,
            &[],
        ));
        // Franked with a fresh key: the commitment is bound with the other
        // labels and travels as the envelope's franking tag, so the
        // recipient can report exactly this content.
        let franking_key = FrankingKey::generate(&mut rand::rng());
        let franking_tag = franking::frank(&mut content, &franking_key).to_vec();
        content.padding = padding(content.encoded_len());
        let plaintext = Zeroizing::new(content.encode_to_vec());
        content.franking_key.zeroize();
        let targets = self.target_devices(peer, &state.devices);
        let mut records = Vec::with_capacity(targets.len());
        let mut devices = Vec::with_capacity(targets.len());
        for device in targets {
            let mut record = match ready.next_if(|(ready, _)| *ready == device) {
                Some((_, record)) => record,
                None => load_session(&self.store, &peer, device)?,
            };
            let ciphertext = record.encrypt(&plaintext, &mut rand::rng())?;
            records.push((device, record));
            devices.push(DeviceCiphertext {
                device_id: device,
                ciphertext,
            });
        }
        // Every device encrypted: only now write the advanced sessions, so
        // a failure half way leaves none of them advanced.
        for (device, record) in &records {
            save_session(&self.store, &peer, *device, record)?;
        }
        let send = Send {
            message_id: id.0.to_vec(),
            recipient_account: peer.to_vec(),
            client_timestamp_ms: sent_at_ms,
            category: category as i32,
            template_id,
            franking_tag,
            devices,
            resend: false,
        };
        also(&send)?;
        Ok(send)
    }

    /// Fetch the prekey bundles of `devices` of `peer` (every device if
    /// empty), check the signed device list that comes with them (pinned
    /// account key, version), and return the bundles with the peer's
    /// updated state. An identity change is an error the user must
    /// acknowledge first.
    pub(super) async fn fetch_bundles(
        &self,
        peer: AccountId,
        devices: &[u32],
    ) -> Result<(Vec<PreKeyBundle>, peers::Peer)> {
        let reply = self
            .request(
                client_frame::Body::FetchPrekeys(FetchPreKeys {
                    account_id: peer.to_vec(),
                    device_ids: devices.to_vec(),
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
        Ok((bundles.bundles, state))
    }

    /// Queue the copy of a sent message for this account's other devices
    /// (not flushed; `None` when there are none): a template message as
    /// its instance with the text shown, an interactive message as itself
    /// (so those devices can check the customer's reply to it), anything
    /// else as the text the history shows. It carries the time the message
    /// was sent.
    pub(super) fn queue_sent_copy(&self, sent: &StoredMessage) -> Result<Option<QueuedControl>> {
        let own = self.me.account;
        if self.target_devices(own, &self.own_devices()?).is_empty() {
            // No other devices: nothing to copy, and no kept body to read.
            return Ok(None);
        }
        let text = || {
            content::Body::Text(Text {
                body: sent.body.clone(),
            })
        };
        let body = match outgoing_bodies::get(&self.store, &sent.peer, &sent.id)? {
            Some(OutgoingBody {
                body: content::Body::Template(instance),
                ..
            }) => content::Body::SentTemplate(SentTemplate {
                instance: Some(instance),
                text: sent.body.clone(),
            }),
            Some(OutgoingBody {
                body: content::Body::Interactive(interactive),
                ..
            }) => content::Body::Interactive(interactive),
            _ => text(),
        };
        self.queue_copy(sent.peer, sent.id, sent.sent_at_ms, body)
    }

    /// Queue, for this account's other devices, the news that this one
    /// read `ids` from `peer`, so they stop counting them as unread (not
    /// flushed; `None` when there are no other devices).
    pub(super) fn queue_read_copy(
        &self,
        peer: AccountId,
        ids: &[MessageId],
        read_at_ms: u64,
    ) -> Result<Option<QueuedControl>> {
        let receipt = content::Body::ReadReceipt(ReadReceipt {
            message_ids: ids.iter().map(|id| id.0.to_vec()).collect(),
            read_at_ms,
        });
        self.queue_copy(peer, MessageId::generate(), read_at_ms, receipt)
    }

    /// Queue `body`, about the conversation with `peer`, for this
    /// account's other devices inside a [`SentTranscript`] (not flushed;
    /// `None` when there are none).
    pub(super) fn queue_copy(
        &self,
        peer: AccountId,
        id: MessageId,
        at_ms: u64,
        body: content::Body,
    ) -> Result<Option<QueuedControl>> {
        let own = self.me.account;
        if self.target_devices(own, &self.own_devices()?).is_empty() {
            return Ok(None);
        }
        let content = Content {
            message_id: id.0.to_vec(),
            sent_at_ms: at_ms,
            body: Some(content::Body::SentTranscript(Box::new(SentTranscript {
                peer_account: peer.to_vec(),
                content: Some(Box::new(Content {
                    message_id: id.0.to_vec(),
                    sent_at_ms: at_ms,
                    body: Some(body),
                    labels: None,
                    franking_key: Vec::new(),
                    padding: Vec::new(),
                })),
            }))),
            labels: None,
            franking_key: Vec::new(),
            padding: Vec::new(),
        };
        control_outbox::put(&self.store, own, id, content, at_ms).map(Some)
    }

    /// Send one queued control message, the way [`Self::send_from_outbox`]
    /// sends a message: encrypted once (the `Send` is written to the queue
    /// with the session records) and sent as is after that, encrypted again
    /// only for a changed device list, taken out of the queue once accepted
    /// or refused for good. A lost connection leaves it queued for the next
    /// [`Client::flush_outbox`].
    pub(super) async fn send_control(&self, mut queued: QueuedControl) -> Result<()> {
        let own = self.me.account;
        for _attempt in 0..2 {
            let send = if queued.frame.is_empty() {
                // A copy for other devices that are gone: nothing to send.
                if queued.recipient == own
                    && self.target_devices(own, &self.own_devices()?).is_empty()
                {
                    control_outbox::remove(&self.store, queued.sequence)?;
                    return self.store.flush().await;
                }
                let encrypted = self
                    .encrypt_for_then(
                        queued.recipient,
                        queued.id,
                        queued.content.clone(),
                        (Category::Control, ""),
                        queued.at_ms,
                        |send| {
                            let mut with_frame = queued.clone();
                            with_frame.frame = send.encode_to_vec();
                            control_outbox::save(&self.store, &with_frame)
                        },
                    )
                    .await;
                let send = match encrypted {
                    Ok(send) => send,
                    Err(e @ ClientError::Relay { code, .. }) if is_permanent(code) => {
                        control_outbox::remove(&self.store, queued.sequence)?;
                        self.store.flush().await?;
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                };
                self.store.flush().await?;
                queued.frame = send.encode_to_vec();
                send
            } else {
                Send::decode(queued.frame.as_slice()).map_err(|e| {
                    ClientError::CorruptStore(format!("queued control message: {e}"))
                })?
            };
            match self
                .request(client_frame::Body::Send(send), "the receipt or copy")
                .await
            {
                Ok(server_frame::Body::Accepted(_)) => {
                    control_outbox::remove(&self.store, queued.sequence)?;
                    return self.store.flush().await;
                }
                Ok(other) => return Err(unexpected("Accepted", &other)),
                Err(
                    e @ ClientError::Relay {
                        code: ErrorCode::Blocked,
                        ..
                    },
                ) => {
                    control_outbox::remove(&self.store, queued.sequence)?;
                    self.store.flush().await?;
                    return Err(e);
                }
                Err(e @ ClientError::Relay { code, .. }) if is_permanent(code) => {
                    control_outbox::remove(&self.store, queued.sequence)?;
                    self.store.flush().await?;
                    return Err(e);
                }
                Err(ClientError::DeviceListMismatch { current }) => {
                    // Devices were added or removed: adopt the signed list
                    // (if it checks out) and encrypt again.
                    if self.observe(queued.recipient, &current)? == Observed::IdentityChanged {
                        return Err(ClientError::IdentityChanged {
                            account: queued.recipient,
                        });
                    }
                    queued.frame.clear();
                    control_outbox::save(&self.store, &queued)?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::UnexpectedFrame(
            "the relay refused the device list twice".into(),
        ))
    }
}
