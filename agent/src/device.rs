//! The business's device: the client library's [`Client`] owned by one
//! task, which keeps the relay connection up, processes what arrives
//! (records it, queues its webhooks) and runs the API's requests, in
//! between, through a command channel.
//!
//! Why one task: the client's business calls take `&mut self`, and an
//! event is decrypted, stored and acknowledged in one call that must not
//! be cut short; the task waits for events briefly ([`EVENT_POLL`]), woken
//! early when a command arrives, and runs the waiting commands between
//! waits.
//!
//! Text sends do not wait for each other: while connected, the task
//! publishes the client library's [`comptoir_client::Sender`] for the
//! current connection in a [`SendPath`], the API's handlers send through
//! it concurrently (the library encrypts under per-customer locks, shares
//! one store sync between concurrent sends, and matches each relay reply
//! to its request), and only the recording is handed to this task
//! ([`Command::RecordSent`]), which writes every send waiting at the time
//! in one SQLite transaction. See [`send_text`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use comptoir_client::attachments::EncryptedFile;
use comptoir_client::{
    Client, ClientError, Event, KdfParams, MessageId, Sender, Status, TlsOptions,
};
use comptoir_protocol::business::Verification;
use comptoir_protocol::proto::content::{AttachmentPointer, TemplateParameter};
use comptoir_protocol::proto::wire::{AccountKind, ConsentPurpose, TemplateStatus};
use comptoir_protocol::template::{PlaceholderKind, TemplateId};
use comptoir_protocol::{AccountId, ConsentCategories};
use tokio::sync::{Notify, RwLock, mpsc, oneshot, watch};

use crate::clock::SharedClock;
use crate::config::{Away, Config};
use crate::db::{AttachmentRow, Db, DbError, NewEvent, NewMessage};
use crate::status::MessageStatus;
use crate::webhook;

/// How long the device task waits for an event before it looks at its
/// other duties again (the lease, the inbox's sync, consent answers); a
/// command arriving ends the wait at once.
pub const EVENT_POLL: Duration = Duration::from_millis(20);
/// API commands run between two looks at the connection, so a burst of
/// sends does not hold up receiving.
const COMMANDS_PER_TURN: usize = 32;
/// The longest wait between two connection attempts.
const MAX_RECONNECT: Duration = Duration::from_secs(30);
/// The customer's window: 24 hours after its last message.
const WINDOW_MS: u64 = 24 * 3600 * 1000;
/// The away message goes to a customer at most once in this long.
const AWAY_EVERY_MS: u64 = 24 * 3600 * 1000;

/// Why the device could not be set up or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The client library refused.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The database failed.
    #[error("{0}")]
    Db(#[from] DbError),
}

/// Which template to send: by id, or by name and language as the
/// business submitted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateRef {
    /// The template id (hex of its hash).
    Id(TemplateId),
    /// Name and language (`order_update`, `en_GB`).
    Name {
        /// The template's name.
        name: String,
        /// Its language.
        language: String,
    },
}

/// What the API asks the device to do.
#[derive(Debug)]
pub enum Command {
    /// Send free-form text (inside the customer's window).
    SendText {
        /// The customer.
        to: AccountId,
        /// The text.
        text: String,
        /// The outcome.
        reply: oneshot::Sender<Result<Sent, ClientError>>,
    },
    /// Record a text message an API handler sent itself through the
    /// [`SendPath`] (see [`send_text`]): `sent` is what the client
    /// library answered, a message id or a lost connection (the message
    /// then waits in the device store's outbox).
    RecordSent {
        /// The customer.
        to: AccountId,
        /// The library's answer.
        sent: Result<MessageId, ClientError>,
        /// The text.
        text: String,
        /// The outcome.
        reply: oneshot::Sender<Result<Sent, ClientError>>,
    },
    /// Send an approved template.
    SendTemplate {
        /// The customer.
        to: AccountId,
        /// Which template.
        template: TemplateRef,
        /// Its values.
        parameters: Vec<TemplateParameter>,
        /// The outcome.
        reply: oneshot::Sender<Result<Sent, ClientError>>,
    },
    /// Upload an encrypted document to the relay (or finish its upload).
    UploadMedia {
        /// The document, encrypted.
        file: Box<EncryptedFile>,
        /// The outcome: whether the relay holds all of it.
        reply: oneshot::Sender<Result<bool, ClientError>>,
    },
    /// Send an uploaded document (inside the customer's window).
    SendDocument {
        /// The customer.
        to: AccountId,
        /// The document's pointer (blob id, key, digests).
        pointer: Box<AttachmentPointer>,
        /// The outcome.
        reply: oneshot::Sender<Result<Sent, ClientError>>,
    },
    /// Whether the customer's 24-hour window is open (by the daemon's
    /// clock and records; the relay decides).
    WindowOpen {
        /// The customer's account id.
        customer: String,
        /// The answer.
        reply: oneshot::Sender<Result<bool, ClientError>>,
    },
    /// Ask for a consent by phone number.
    RequestConsent {
        /// E.164 number.
        phone: String,
        /// Categories asked.
        categories: ConsentCategories,
        /// Purpose.
        purpose: ConsentPurpose,
        /// The reference the answer will carry.
        reference: [u8; 16],
        /// The outcome.
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// Fetch the business's bill from the relay and check every line
    /// (chain, operator signatures, device signatures, prices), as
    /// `comptoir business bill verify` does.
    Bill {
        /// The bill and its totals, or why it does not check.
        reply: oneshot::Sender<
            Result<(comptoir_client::Bill, comptoir_protocol::BillTotals), ClientError>,
        >,
    },
    /// The business's standing: rating, tier, reach, bill so far.
    Standing {
        /// The relay's answer.
        reply: oneshot::Sender<Result<comptoir_protocol::proto::wire::Standing, ClientError>>,
    },
    /// What the inbox shows of a customer: the safety-number state.
    PeerState {
        /// The customer.
        customer: AccountId,
        /// The outcome.
        reply: oneshot::Sender<Result<PeerState, ClientError>>,
    },
    /// Accept a customer's message request (the inbox's Accept button):
    /// the client library then treats the customer as known.
    AcceptRequest {
        /// The customer.
        customer: AccountId,
        /// The outcome.
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// An agent saw the customer's messages (opened the conversation, or
    /// accepted its request on it): mark them read and tell the customer
    /// (a read receipt, end-to-end encrypted; nothing while the
    /// conversation is still a message request).
    MarkRead {
        /// The customer.
        customer: AccountId,
    },
    /// The business's approved templates (the inbox's template picker).
    ApprovedTemplates {
        /// The outcome.
        reply: oneshot::Sender<Result<Vec<ApprovedTemplate>, ClientError>>,
    },
}

/// A customer as the device knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerState {
    /// An agent confirmed the safety number with the customer.
    pub verified: bool,
    /// The customer's identity changed and awaits acceptance.
    pub identity_changed: bool,
    /// The business's certified name, when the operator's certificate
    /// checks (what customers see with the verified mark); `None` when
    /// not verified or not known.
    pub business_verified_as: Option<String>,
}

/// An approved template the inbox may offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovedTemplate {
    /// Its id (hex).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its language.
    pub language: String,
    /// Its body, with placeholders as written.
    pub body: String,
    /// Its placeholders: name and whether it takes text (others take a
    /// number).
    pub placeholders: Vec<(String, bool)>,
}

/// A message the device sent (or queued).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Its id.
    pub id: MessageId,
    /// `sent` (the relay has it) or `queued` (offline; sent on reconnect).
    pub status: MessageStatus,
}

/// Where the API's handlers find the client library's [`Sender`] of the
/// current relay connection: published by the device task after each
/// connect, withdrawn before it connects again and before it closes the
/// store. A handler holds it (a read lock) for the whole of its send, so
/// a send never overlaps a connect (whose flush of the outbox could
/// otherwise miss a message stored at that moment) and a sender's reply
/// always comes from a connection the store is still open for.
#[derive(Clone, Debug, Default)]
pub struct SendPath(Arc<RwLock<Option<Sender>>>);

impl SendPath {
    /// A path holding `sender` (the device task publishes its own; an
    /// embedding program or a test can make one).
    pub fn with(sender: Sender) -> Self {
        Self(Arc::new(RwLock::new(Some(sender))))
    }

    async fn publish(&self, sender: Option<Sender>) {
        *self.0.write().await = sender;
    }

    /// The sender published now, if the device is connected (a handle
    /// that keeps no lock: for work as long as a download).
    pub async fn current(&self) -> Option<Sender> {
        self.0.read().await.clone()
    }
}

/// Send `text` to `to` as an API call does: through the [`SendPath`]
/// when the device is connected (many calls at once, each awaiting its
/// own `Accepted`), then recorded by the device task like a send it made
/// itself; through the device task alone otherwise (it stores the message
/// in the outbox, sent on reconnect). The outcome is the same either way:
/// `sent` once the relay accepted it, `queued` when it waits in the
/// outbox, or the relay's typed refusal (nothing recorded then). `None`:
/// the daemon is stopping.
///
/// The send and its hand-over for recording run in a task of their own:
/// a caller that stops waiting (an HTTP client hanging up) does not
/// cancel a send the relay may already have accepted before it is
/// recorded.
pub async fn send_text(
    path: &SendPath,
    commands: &mpsc::Sender<Command>,
    to: AccountId,
    text: String,
) -> Option<Result<Sent, ClientError>> {
    let (path, commands) = (path.clone(), commands.clone());
    tokio::spawn(async move { send_and_record(&path, &commands, to, text).await })
        .await
        .ok()
        .flatten()
}

/// [`send_text`], in the task it spawns.
async fn send_and_record(
    path: &SendPath,
    commands: &mpsc::Sender<Command>,
    to: AccountId,
    text: String,
) -> Option<Result<Sent, ClientError>> {
    let (reply, answer) = oneshot::channel();
    let held = path.0.read().await;
    let command = match held.as_ref() {
        Some(sender) => {
            let sent = sender.send_text(to, &text).await;
            drop(held);
            match sent {
                Err(e) if !is_connection_lost(&e) => return Some(Err(e)),
                sent => Command::RecordSent {
                    to,
                    sent,
                    text,
                    reply,
                },
            }
        }
        None => {
            drop(held);
            Command::SendText { to, text, reply }
        }
    };
    commands.send(command).await.ok()?;
    answer.await.ok()
}

/// A send that ended with the connection: the message waits in the
/// device store's outbox.
fn is_connection_lost(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::ConnectionClosed(_) | ClientError::NotConnected | ClientError::Timeout(_)
    )
}

/// Answer a send's caller. The inbox's callers always hear it (one told
/// its send was queued notes a late refusal on the conversation); an API
/// caller that hung up does not: its refusal is logged for the operator
/// instead of going unseen.
fn answer_send(
    reply: oneshot::Sender<Result<Sent, ClientError>>,
    result: Result<Sent, ClientError>,
    what: &str,
) {
    if let Err(Err(e)) = reply.send(result) {
        tracing::warn!(error = %e, what, "a send was refused after its caller stopped waiting");
    }
}

/// A [`Command::RecordSent`], waiting for its batch.
struct ToRecord {
    to: AccountId,
    sent: Result<MessageId, ClientError>,
    text: String,
    reply: oneshot::Sender<Result<Sent, ClientError>>,
}

/// A send as it is about to be recorded.
struct SentRecord {
    /// The answer to the caller.
    sent: Sent,
    message: NewMessage,
    events: Vec<NewEvent>,
    /// A status the message reached before it was recorded.
    later: Option<MessageStatus>,
}

/// Create the business's device in `config`'s data directory and register
/// it on the relay as a new business account.
pub async fn init_new(
    config: &Config,
    passphrase: &str,
    kdf: KdfParams,
) -> Result<AccountId, DeviceError> {
    let mut client = Client::create_with_params(&config.device_dir(), passphrase, kdf)?;
    prepare(&mut client, config).await?;
    client
        .register_as(&config.relay, AccountKind::Business)
        .await?;
    let id = client.account_id();
    client.close().await?;
    Ok(id)
}

/// Create a device that will join an existing business account: returns
/// the link code to approve on the account's first device.
pub fn init_link(config: &Config, passphrase: &str, kdf: KdfParams) -> Result<String, DeviceError> {
    comptoir_client::store::create_private_dir(&config.data_dir)?;
    let client = Client::create_unlinked(&config.device_dir(), passphrase, kdf)?;
    Ok(client.link_code()?)
}

/// Finish linking with the approval the first device gave.
pub async fn finish_link(
    config: &Config,
    passphrase: &str,
    approval: &str,
) -> Result<AccountId, DeviceError> {
    let mut client = Client::open(&config.device_dir(), passphrase)?;
    prepare(&mut client, config).await?;
    client.finish_link(&config.relay, approval.trim()).await?;
    let id = client.account_id();
    client.close().await?;
    Ok(id)
}

async fn prepare(client: &mut Client, config: &Config) -> Result<(), ClientError> {
    let mut tls = TlsOptions::default();
    if let Some(ca) = &config.relay_ca_file {
        tls = tls.with_ca_file(ca)?;
    }
    client.set_tls_options(tls);
    client.set_keepalive(config.keepalive);
    if let Some(key) = &config.operator_key {
        client.pin_operator_key(key).await?;
    }
    Ok(())
}

/// Open the device store (the daemon holds it for its whole run).
pub async fn open(config: &Config, passphrase: &str) -> Result<Client, DeviceError> {
    let dir: &Path = &config.device_dir();
    let mut client = Client::open(dir, passphrase)?;
    prepare(&mut client, config).await?;
    Ok(client)
}

/// The device task's state.
pub struct Device {
    client: Client,
    db: Db,
    clock: SharedClock,
    relay: String,
    away: Option<Away>,
    consent_poll: Duration,
    business: String,
    wake: Arc<Notify>,
    lease: crate::lease::LeaseKeeper,
    send_path: SendPath,
    /// A sender is published in `send_path`.
    published: bool,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("business", &self.business)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// The device task over an opened `client`; `wake` is the webhook
    /// deliverer's; `lease` decides whether this daemon acts (see
    /// [`crate::lease`]); `send_path` is where it publishes the client's
    /// sender while connected (see [`send_text`]).
    pub fn new(
        client: Client,
        db: Db,
        clock: SharedClock,
        config: &Config,
        wake: Arc<Notify>,
        lease: crate::lease::LeaseKeeper,
        send_path: SendPath,
    ) -> Self {
        let business = client.account_id().to_string();
        db.sync.set_origin(client.device_id());
        Self {
            lease,
            client,
            db,
            clock,
            relay: config.relay.clone(),
            away: config.away.clone(),
            consent_poll: config.consent_poll,
            business,
            wake,
            send_path,
            published: false,
        }
    }

    /// Withdraw the published sender: waits for the sends under way.
    async fn withdraw_sender(&mut self) {
        if self.published {
            self.send_path.publish(None).await;
            self.published = false;
        }
    }

    /// Run until `shutdown` turns true, then close the store.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.catch_up();
        if self.lease.check_alone(&self.client) {
            tracing::debug!("the business's only device: it acts without a lease");
        }
        // The whole inbox state once more for the other daemons of the
        // business (crate::sync).
        if let Err(e) = crate::sync::queue_snapshot(&self.db) {
            tracing::error!(error = %e, "queueing the inbox state for the other daemons");
        }
        let mut reconnect_wait = Duration::from_millis(100);
        let mut next_connect = tokio::time::Instant::now();
        let mut next_poll = tokio::time::Instant::now();
        // A command that ended a wait for events, run next.
        let mut arrived: Option<Command> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if !self.client.is_connected() && tokio::time::Instant::now() >= next_connect {
                // No send through the old connection's sender overlaps
                // the connect (see SendPath).
                self.withdraw_sender().await;
                match self.client.connect(&self.relay).await {
                    Ok(_) => {
                        tracing::info!("connected to the relay");
                        reconnect_wait = Duration::from_millis(100);
                        self.settle_queued();
                        self.send_path.publish(Some(self.client.sender())).await;
                        self.published = true;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot connect to the relay; retrying");
                        next_connect = tokio::time::Instant::now() + reconnect_wait;
                        reconnect_wait = (reconnect_wait * 2).min(MAX_RECONNECT);
                    }
                }
            }
            let mut batch: Vec<Command> = arrived.take().into_iter().collect();
            while batch.len() < COMMANDS_PER_TURN {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.handle_all(batch).await;
            if !self.client.is_connected() {
                self.lost_lease();
                tokio::select! {
                    command = commands.recv() => match command {
                        Some(command) => arrived = Some(command),
                        None => break,
                    },
                    () = tokio::time::sleep_until(next_connect) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            if tokio::time::Instant::now() >= next_poll {
                next_poll = tokio::time::Instant::now() + self.consent_poll;
                self.poll_consents().await;
            }
            if let Some(acting) = self.lease.tick(&mut self.client).await {
                self.acting_changed(acting);
            }
            if self.db.sync.take_dirty() {
                self.push_sync().await;
            }
            // Woken by a command: `recv` is cancel-safe, and the client
            // finishes a delivery it is storing before it looks at `wake`.
            let wake = async {
                match commands.recv().await {
                    Some(command) => arrived = Some(command),
                    None => std::future::pending().await,
                }
            };
            match self.client.next_event_unless(EVENT_POLL, wake).await {
                Ok(Some(event)) => self.on_event(event).await,
                Ok(None) => {}
                Err(e) => {
                    self.lost_lease();
                    tracing::warn!(error = %e, "relay connection lost; reconnecting");
                }
            }
        }
        self.withdraw_sender().await;
        if let Err(e) = self.client.close().await {
            tracing::error!(error = %e, "closing the device store");
        }
        tracing::info!("device stopped");
    }

    /// The connection ended: this daemon stops acting at once.
    fn lost_lease(&mut self) {
        if self.lease.disconnected() {
            self.acting_changed(false);
        }
    }

    /// This daemon took the lease (its outbox of webhooks and the waiting
    /// conversations are its now) or lost it.
    fn acting_changed(&self, acting: bool) {
        if acting {
            tracing::info!("this daemon acts for the business now");
        } else {
            tracing::info!("this daemon no longer acts for the business");
        }
        self.wake.notify_one();
        self.db.changed();
    }

    /// Send the inbox changes waiting for the other daemons.
    async fn push_sync(&mut self) {
        loop {
            let batch = match crate::sync::next_batch(&self.db) {
                Ok(Some(batch)) => batch,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "reading the inbox changes to sync");
                    return;
                }
            };
            let (last, data) = batch;
            if let Err(e) = self
                .client
                .sync_to_own_devices(crate::sync::APP, &data)
                .await
            {
                tracing::warn!(error = %e, "the inbox changes for the other daemons wait");
                self.db.sync.mark_dirty();
                return;
            }
            if let Err(e) = crate::sync::sent(&self.db, last) {
                tracing::error!(error = %e, "forgetting synced inbox changes");
                return;
            }
        }
    }

    /// Run `commands`: first the sends API handlers made themselves,
    /// recorded together in one transaction, then the others one at a
    /// time.
    async fn handle_all(&mut self, commands: Vec<Command>) {
        let mut records = Vec::new();
        let mut others = Vec::new();
        for command in commands {
            match command {
                Command::RecordSent {
                    to,
                    sent,
                    text,
                    reply,
                } => records.push(ToRecord {
                    to,
                    sent,
                    text,
                    reply,
                }),
                other => others.push(other),
            }
        }
        self.record_all(records);
        for command in others {
            self.handle(command).await;
        }
    }

    /// Record sends API handlers made themselves, in one transaction.
    fn record_all(&mut self, records: Vec<ToRecord>) {
        if records.is_empty() {
            return;
        }
        let mut taken = Vec::new();
        let mut prepared = Vec::with_capacity(records.len());
        let mut replies = Vec::with_capacity(records.len());
        for ToRecord {
            to,
            sent,
            text,
            reply,
        } in records
        {
            match self.prepare_sent(to, sent, "text", &text, None, Some(&taken)) {
                Ok(record) => {
                    taken.push(record.sent.id);
                    replies.push((reply, Ok(record.sent.clone())));
                    prepared.push(record);
                }
                Err(e) => replies.push((reply, Err(e))),
            }
        }
        self.commit_sent(&prepared);
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::RecordSent {
                to,
                sent,
                text,
                reply,
            } => {
                let result = self.record_sent(to, sent, "text", &text, None);
                answer_send(reply, result, "a text");
            }
            Command::SendText { to, text, reply } => {
                let sent = self.client.send_text(to, &text).await;
                let result = self.record_sent(to, sent, "text", &text, None);
                answer_send(reply, result, "a text");
            }
            Command::SendTemplate {
                to,
                template,
                parameters,
                reply,
            } => {
                let result = match self.resolve(&template).await {
                    Ok(id) => {
                        let sent = self.client.send_template(to, &id, parameters).await;
                        let body = match &sent {
                            Ok(mid) => self
                                .client
                                .message(&to, mid)
                                .ok()
                                .flatten()
                                .map(|m| m.body)
                                .unwrap_or_default(),
                            Err(_) => String::new(),
                        };
                        self.record_sent(to, sent, "template", &body, Some(id.to_hex()))
                    }
                    Err(e) => Err(e),
                };
                answer_send(reply, result, "a template");
            }
            Command::UploadMedia { file, reply } => {
                let result = self.client.upload(&file).await.map(|r| r.complete);
                let _ = reply.send(result);
            }
            Command::SendDocument { to, pointer, reply } => {
                let sent = self.client.send_uploaded_attachment(to, &pointer).await;
                let body = comptoir_client::attachments::summary(&pointer);
                let result = self.record_sent(to, sent, "document", &body, None);
                answer_send(reply, result, "a document");
            }
            Command::WindowOpen { customer, reply } => {
                let now = self.clock.now_ms();
                let open = match self.db.last_inbound_ms(&customer) {
                    Ok(wrote) => wrote.is_some_and(|w| now < w.saturating_add(WINDOW_MS)),
                    Err(e) => {
                        tracing::error!(error = %e, "reading a conversation's window");
                        false
                    }
                };
                let _ = reply.send(Ok(open));
            }
            Command::RequestConsent {
                phone,
                categories,
                purpose,
                reference,
                reply,
            } => {
                let result = self
                    .client
                    .request_consent(&phone, categories, purpose, reference)
                    .await;
                let _ = reply.send(result);
            }
            Command::Bill { reply } => {
                let result = match self.client.fetch_bill().await {
                    Ok(bill) => match self.client.verify_bill(&bill).await {
                        Ok(totals) => Ok((bill, totals)),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Standing { reply } => {
                let _ = reply.send(self.client.standing().await);
            }
            Command::PeerState { customer, reply } => {
                let own = self.client.account_id();
                // The business's own view, as customers check it: read
                // offline when checked before, else asked of the relay.
                let view = match self.client.known_business(&own) {
                    Ok(Some(view)) => Some(view),
                    _ => self.client.business(own).await.ok(),
                };
                let business_verified_as = view.and_then(|v| match v.verification {
                    Verification::Verified { display_name } => Some(display_name),
                    Verification::NotVerified(_) => None,
                });
                let state = self.client.is_verified(&customer).and_then(|verified| {
                    Ok(PeerState {
                        verified,
                        identity_changed: self.client.identity_changed(&customer)?,
                        business_verified_as,
                    })
                });
                let _ = reply.send(state);
            }
            Command::AcceptRequest { customer, reply } => {
                // The inbox hears the outcome even when it told its agent
                // it was queued; a caller gone altogether is logged.
                if let Err(Err(e)) = reply.send(self.client.accept_request(customer).await) {
                    tracing::warn!(error = %e, "accepting a message request failed after its caller stopped waiting");
                }
            }
            Command::MarkRead { customer } => {
                if let Err(e) = self.client.mark_read(customer).await {
                    tracing::warn!(error = %e, "telling a customer its messages were read");
                }
            }
            Command::ApprovedTemplates { reply } => {
                let templates = self.client.own_templates().await.map(|all| {
                    all.into_iter()
                        .filter(|t| t.status == TemplateStatus::Approved)
                        .filter(|t| {
                            t.template.placeholders.iter().all(|p| {
                                matches!(p.kind, PlaceholderKind::Text | PlaceholderKind::Number)
                            })
                        })
                        .map(|t| ApprovedTemplate {
                            id: t.template_id.to_hex(),
                            name: t.template.name,
                            language: t.template.language,
                            body: t.template.body,
                            placeholders: t
                                .template
                                .placeholders
                                .into_iter()
                                .map(|p| (p.name, p.kind == PlaceholderKind::Text))
                                .collect(),
                        })
                        .collect()
                });
                let _ = reply.send(templates);
            }
        }
    }

    /// The approved template `template` names.
    async fn resolve(&mut self, template: &TemplateRef) -> Result<TemplateId, ClientError> {
        match template {
            TemplateRef::Id(id) => Ok(*id),
            TemplateRef::Name { name, language } => self
                .client
                .own_templates()
                .await?
                .into_iter()
                .find(|t| {
                    t.status == TemplateStatus::Approved
                        && t.template.name == *name
                        && t.template.language == *language
                })
                .map(|t| t.template_id)
                .ok_or_else(|| ClientError::TemplateNotApproved(format!("{name} ({language})"))),
        }
    }

    fn record_sent(
        &mut self,
        to: AccountId,
        sent: Result<MessageId, ClientError>,
        kind: &'static str,
        body: &str,
        template_id: Option<String>,
    ) -> Result<Sent, ClientError> {
        let record = self.prepare_sent(to, sent, kind, body, template_id, None)?;
        self.commit_sent(std::slice::from_ref(&record));
        Ok(record.sent)
    }

    /// What to record of a send the client library answered with `sent`.
    /// A text send made beside other sends (`concurrent`: the messages
    /// recorded by the same batch, not in the database yet) that lost its
    /// connection is found in the outbox by its text too.
    fn prepare_sent(
        &self,
        to: AccountId,
        sent: Result<MessageId, ClientError>,
        kind: &'static str,
        body: &str,
        template_id: Option<String>,
        concurrent: Option<&[MessageId]>,
    ) -> Result<SentRecord, ClientError> {
        let id = match sent {
            Ok(id) => id,
            // The connection ended during the send: the message was stored
            // and waits in the outbox, sent on reconnect; report it queued
            // so the backend does not send it twice.
            Err(e) if is_connection_lost(&e) => {
                let text = concurrent.map(|taken| (body, taken));
                self.just_queued(to, text).ok_or(e)?
            }
            Err(e) => return Err(e),
        };
        // What the device store knows now: the relay may have reported
        // the delivery already (a status event this task handled before
        // this record, for a message it did not know yet).
        let stored = match self.client.message(&to, &id) {
            Ok(Some(m)) => m.status,
            _ => Status::Pending,
        };
        let status = if stored >= Status::Accepted {
            MessageStatus::Sent
        } else {
            MessageStatus::Queued
        };
        let later = match stored {
            Status::Delivered => Some(MessageStatus::Delivered),
            Status::Read => Some(MessageStatus::Read),
            _ => None,
        };
        let now = self.clock.now_ms();
        let customer = to.to_string();
        let message = NewMessage {
            id: id.to_string(),
            customer: customer.clone(),
            incoming: false,
            kind,
            body: body.to_owned(),
            template_id,
            reply_to: None,
            status,
            at_ms: now,
        };
        let events = if status == MessageStatus::Sent {
            vec![webhook::status_event(
                &self.business,
                &customer,
                &message.id,
                status,
                now,
                None,
            )]
        } else {
            Vec::new()
        };
        Ok(SentRecord {
            sent: Sent { id, status },
            message,
            events,
            later,
        })
    }

    /// Record sends, in one transaction, then the statuses they reached
    /// meanwhile.
    fn commit_sent(&self, records: &[SentRecord]) {
        if records.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        let rows: Vec<(&NewMessage, &[NewEvent])> = records
            .iter()
            .map(|r| (&r.message, r.events.as_slice()))
            .collect();
        if let Err(e) = self.db.record_messages(&rows, now) {
            // The messages are sent; only their record here failed.
            tracing::error!(error = %e, messages = records.len(), "recording sent messages");
        }
        for record in records {
            if let Some(status) = record.later {
                self.advance(&record.message.id, status, None);
            }
        }
        self.wake.notify_one();
    }

    /// Record what the device store holds and this database does not: the
    /// client library acknowledges a message to the relay once it is in
    /// the device store, before this daemon records it, so a crash in
    /// between would otherwise lose it. Run at start, it reports such
    /// messages (as text) and statuses the device store has further along.
    fn catch_up(&mut self) {
        let peers = match self.client.conversation_peers() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "reading the device's conversations");
                return;
            }
        };
        let now = self.clock.now_ms();
        let mut caught = 0usize;
        for peer in peers {
            let Ok(history) = self.client.history(&peer) else {
                continue;
            };
            let customer = peer.to_string();
            for m in history {
                let id = m.id.to_string();
                match self.db.status_of(&id) {
                    Ok(None) if !m.outgoing => {
                        let phone = self.db.phone_of(&customer).ok().flatten();
                        let event = webhook::message_event(
                            &self.business,
                            &customer,
                            phone.as_deref(),
                            &id,
                            &m.body,
                            now,
                        );
                        self.record_incoming(&customer, &id, "text", &m.body, None, event, now);
                        caught += 1;
                    }
                    Ok(Some(_)) if m.outgoing => {
                        let status = match m.status {
                            Status::Read => MessageStatus::Read,
                            Status::Delivered => MessageStatus::Delivered,
                            Status::Accepted => MessageStatus::Sent,
                            _ => continue,
                        };
                        self.advance(&id, status, None);
                    }
                    _ => {}
                }
            }
        }
        if caught > 0 {
            tracing::info!(
                messages = caught,
                "recorded messages the device received before a restart"
            );
        }
    }

    /// The message to `to` a send just left in the client's outbox: the
    /// newest queued one this daemon has not recorded; with `text`, one
    /// with that body and not among the messages `taken`.
    fn just_queued(&self, to: AccountId, text: Option<(&str, &[MessageId])>) -> Option<MessageId> {
        self.client
            .queued()
            .ok()?
            .into_iter()
            .filter(|m| m.peer == to && m.outgoing)
            .filter(|m| text.is_none_or(|(body, taken)| m.body == body && !taken.contains(&m.id)))
            .filter(|m| matches!(self.db.status_of(&m.id.to_string()), Ok(None)))
            .max_by_key(|m| m.sequence)
            .map(|m| m.id)
    }

    /// After a connect sent the outbox: report what became of the messages
    /// the API queued while offline.
    fn settle_queued(&mut self) {
        let queued = match self.db.queued() {
            Ok(q) => q,
            Err(e) => {
                tracing::error!(error = %e, "reading queued messages");
                return;
            }
        };
        for (customer, id) in queued {
            let (Ok(peer), Some(mid)) = (AccountId::from_hex(&customer), MessageId::from_hex(&id))
            else {
                continue;
            };
            let status = match self.client.message(&peer, &mid) {
                Ok(Some(m)) if m.status == Status::Failed => MessageStatus::Failed,
                Ok(Some(m)) if m.status >= Status::Accepted => MessageStatus::Sent,
                _ => continue,
            };
            let error =
                (status == MessageStatus::Failed).then_some("the relay refused the message");
            self.advance(&id, status, error);
        }
    }

    fn advance(&self, id: &str, status: MessageStatus, error: Option<&str>) {
        self.advance_as(id, status, error, true);
    }

    /// [`Self::advance`]; `first_hand` statuses go to the other daemons
    /// of the business too (crate::sync).
    fn advance_as(&self, id: &str, status: MessageStatus, error: Option<&str>, first_hand: bool) {
        let now = self.clock.now_ms();
        let business = &self.business;
        let events = |customer: &str| {
            vec![webhook::status_event(
                business, customer, id, status, now, error,
            )]
        };
        let moved = if first_hand {
            self.db
                .advance_status_shared(id, status, error, now, events)
        } else {
            self.db.advance_status(id, status, now, events)
        };
        match moved {
            Ok(Some(_)) => {
                if first_hand {
                    crate::fault::hit(&format!("after-status-{}", status.as_str()));
                }
                self.wake.notify_one();
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, message = %id, "recording a status"),
        }
    }

    async fn on_event(&mut self, event: Event) {
        let now = self.clock.now_ms();
        match event {
            Event::Message {
                from,
                id,
                text,
                request,
                ..
            } => {
                let customer = from.to_string();
                if request && let Err(e) = self.db.note_request(&customer, now) {
                    tracing::error!(error = %e, "recording a message request");
                }
                let phone = self.db.phone_of(&customer).ok().flatten();
                let id = id.to_string();
                let event = webhook::message_event(
                    &self.business,
                    &customer,
                    phone.as_deref(),
                    &id,
                    &text,
                    now,
                );
                self.record_incoming(&customer, &id, "text", &text, None, event, now);
                self.away_message(from, &customer, now).await;
            }
            Event::QuickReply {
                from,
                id,
                reply_to,
                button_index,
                text,
                ..
            } => {
                let customer = from.to_string();
                let phone = self.db.phone_of(&customer).ok().flatten();
                let (id, reply_to) = (id.to_string(), reply_to.to_string());
                let event = webhook::button_reply_event(
                    &self.business,
                    &customer,
                    phone.as_deref(),
                    &id,
                    &reply_to,
                    button_index,
                    &text,
                    now,
                );
                self.record_incoming(
                    &customer,
                    &id,
                    "button_reply",
                    &text,
                    Some(reply_to),
                    event,
                    now,
                );
            }
            Event::Attachment {
                from,
                id,
                file_name,
                content_type,
                size,
                request,
                ..
            } => {
                let customer = from.to_string();
                if request && let Err(e) = self.db.note_request(&customer, now) {
                    tracing::error!(error = %e, "recording a message request");
                }
                let id = id.to_string();
                let attachment = AttachmentRow {
                    message_id: id.clone(),
                    customer: customer.clone(),
                    file_name,
                    content_type,
                    size,
                };
                // The same text the client library's history shows.
                let text = format!(
                    "[attachment: {} ({}, {} bytes)]",
                    attachment.file_name, attachment.content_type, attachment.size
                );
                if let Err(e) = self.db.record_attachment(&attachment, now) {
                    tracing::error!(error = %e, message = %id, "recording an attachment");
                }
                let phone = self.db.phone_of(&customer).ok().flatten();
                let event = webhook::document_event(
                    &self.business,
                    &customer,
                    phone.as_deref(),
                    &id,
                    &attachment.file_name,
                    &attachment.content_type,
                    attachment.size,
                    now,
                );
                self.record_incoming(&customer, &id, "attachment", &text, None, event, now);
                self.away_message(from, &customer, now).await;
            }
            Event::Accepted { id, .. } => self.advance(&id.to_string(), MessageStatus::Sent, None),
            Event::Delivered { id, .. } => {
                self.advance(&id.to_string(), MessageStatus::Delivered, None)
            }
            Event::Read { ids, .. } => {
                for id in ids {
                    self.advance(&id.to_string(), MessageStatus::Read, None);
                }
            }
            Event::Violation {
                from,
                id,
                violation,
            } => self.flag(from, id, &violation.to_string(), now),
            Event::Refused { from, id, reason } => self.flag(
                from,
                id,
                &format!("refused and not shown (kept as evidence): {reason}"),
                now,
            ),
            Event::AppSync { app, data, device } if app == crate::sync::APP => {
                match crate::sync::apply(&self.db, &data, now) {
                    Ok(applied) => {
                        tracing::debug!(
                            changes = applied.changed,
                            device,
                            "inbox state from another daemon"
                        );
                        for (id, status, error) in applied.statuses {
                            self.advance_as(&id, status, error.as_deref(), false);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, device, "inbox state from another daemon"),
                }
            }
            Event::SentElsewhere { to, id, text, .. } => {
                // Another daemon of the business sent it: record it as
                // that daemon did, with the same event ids.
                let customer = to.to_string();
                let message = NewMessage {
                    id: id.to_string(),
                    customer: customer.clone(),
                    incoming: false,
                    kind: "text",
                    body: text,
                    template_id: None,
                    reply_to: None,
                    status: MessageStatus::Sent,
                    at_ms: now,
                };
                let events = [webhook::status_event(
                    &self.business,
                    &customer,
                    &message.id,
                    MessageStatus::Sent,
                    now,
                    None,
                )];
                match self.db.record_message(&message, &events, now) {
                    Ok(_) => self.wake.notify_one(),
                    Err(e) => {
                        tracing::error!(error = %e, "recording a message another daemon sent")
                    }
                }
            }
            Event::OperatorKeyChanged { .. } => tracing::warn!(
                "the relay presents another operator key than the pinned one; check it with the operator"
            ),
            Event::Warning(warning) => tracing::warn!(%warning, "client"),
            other => tracing::debug!(event = ?other, "not reported"),
        }
    }

    /// Record a violation mark the client library set on a message.
    fn flag(&self, from: AccountId, id: MessageId, reason: &str, now: u64) {
        tracing::warn!(customer = %from, message = %id, %reason, "a message broke a rule");
        if let Err(e) = self
            .db
            .record_violation(&from.to_string(), &id.to_string(), reason, now)
        {
            tracing::error!(error = %e, "recording a violation mark");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_incoming(
        &self,
        customer: &str,
        id: &str,
        kind: &'static str,
        text: &str,
        reply_to: Option<String>,
        event: crate::db::NewEvent,
        now: u64,
    ) {
        let message = NewMessage {
            id: id.to_owned(),
            customer: customer.to_owned(),
            incoming: true,
            kind,
            body: text.to_owned(),
            template_id: None,
            reply_to,
            status: MessageStatus::Received,
            at_ms: now,
        };
        match self.db.record_message(&message, &[event], now) {
            Ok(_) => self.wake.notify_one(),
            Err(e) => tracing::error!(error = %e, message = %id, "recording a received message"),
        }
    }

    /// Outside opening hours, answer a customer's message with the away
    /// message (at most once a day per customer).
    async fn away_message(&mut self, to: AccountId, customer: &str, now: u64) {
        let Some(Away {
            hours,
            message: Some(text),
        }) = self.away.clone()
        else {
            return;
        };
        // Only the daemon holding the lease answers (crate::lease).
        if hours.is_open(now) || !self.lease.holding() {
            return;
        }
        match self
            .db
            .take_away_slot(customer, now.saturating_sub(AWAY_EVERY_MS), now)
        {
            Ok(true) => {
                // The other daemons learn it first (crate::sync): if this
                // one stops now, the one taking over does not send it again.
                self.push_sync().await;
                let sent = self.client.send_text(to, &text).await;
                if let Err(e) = self.record_sent(to, sent, "text", &text, None) {
                    tracing::warn!(error = %e, "the away message was not sent");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "away message state"),
        }
    }

    /// Read which consent requests customers allowed (the relay does not
    /// push them to a business) and report the new ones.
    async fn poll_consents(&mut self) {
        let answers = match self.client.consent_answers().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "reading consent answers");
                return;
            }
        };
        let now = self.clock.now_ms();
        for answer in answers {
            let reference = hex::encode(answer.reference);
            let customer = answer.customer.to_string();
            let business = &self.business;
            let recorded = self.db.record_consent_answer(
                &reference,
                &customer,
                answer.answered_at_ms,
                |phone| {
                    vec![webhook::consent_event(
                        business,
                        &reference,
                        phone,
                        &customer,
                        answer.answered_at_ms,
                    )]
                },
                now,
            );
            match recorded {
                Ok(true) => self.wake.notify_one(),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "recording a consent answer"),
            }
        }
    }
}
