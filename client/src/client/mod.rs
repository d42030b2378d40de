//! The client: one account on one device, its encrypted store, and at most
//! one authenticated connection to a relay.
//!
//! Everything but routing frames runs on the caller's task: a request
//! waits for its own reply (the connection matches replies by request id,
//! see [`crate::connection`]) while the pushes (deliveries, receipts) that
//! arrive meanwhile queue up; [`Client::next_event`] processes them. A delivery is acknowledged only
//! after the decrypted message, the session record and the used prekey are
//! durably stored, so a crash at any point loses nothing: the relay sends
//! the envelope again and the history deduplicates it by message id.
//!
//! One concern per file, each an `impl Client` block:
//! - `relay`: register, connect, requests and replies, pushes, acks, prekeys.
//! - `push_queue`: the pushes taken from the connection and not handled
//!   yet, bounded in bytes.
//! - `receive`: decrypt, store, then acknowledge a delivery.
//! - `labels`: check a decrypted content's bound labels against its
//!   envelope; keep a refused message as evidence.
//! - `send`: outbox, sessions per recipient device, fan-out, read receipts.
//! - `report`: reporting a received message to the operator.
//! - `rekey`: recovering a wedged session and re-sending on request.
//! - `rekey_guard`: the persisted limits on re-keys and re-sends.
//! - `devices`: linking and removing this account's devices, sent copies.
//! - `app_sync`: application state sent to this account's own devices,
//!   and leases they share on the relay (who of them acts).
//! - `contacts_sync`: the address book asked for by a newly linked device
//!   and sent to it by the others.
//! - `directory`: phone numbers, lookups, blocks.
//! - `bill`: a business's bill (fetched and checked) and standing.
//! - `templates`: submitting, listing and sending approved templates,
//!   fetching the ones received, quick replies.
//! - `interactive`: sending interactive messages (reply buttons, lists)
//!   and choosing in one received.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comptoir_protocol::proto::wire::{self, ErrorCode, server_frame};
use comptoir_protocol::{AccountId, AccountKey, IdentityKey, SafetyNumber};

use crate::account::Account;
use crate::connection::{Connection, Keepalive};
use crate::contacts::{self, Contact};
use crate::error::{ClientError, Result};
use crate::messages::{self, MessageId, StoredMessage};
use crate::peers;
use crate::session_store::{self, PreKeys};
use crate::store::{KdfParams, Store, Tree};
use crate::tls::TlsOptions;

mod app_sync;
mod attachments;
mod bill;
mod business;
mod consent;
mod consent_requests;
mod contacts_sync;
mod devices;
mod directory;
mod interactive;
mod labels;
mod push_queue;
mod receive;
mod rekey;
mod rekey_guard;
mod relay;
mod report;
mod requests;
mod send;
mod sender;
mod shared;
mod status;
mod templates;

pub use app_sync::{Lease, MAX_APP_SYNC_LEN};
pub use attachments::{FileInfo, TRANSFER_CHUNK, UploadReport};
pub use bill::Bill;
pub use business::BusinessView;
pub use consent::Consent;
pub use consent_requests::{ConsentAnswer, ConsentRequest, purpose_text};
pub use contacts_sync::CONTACTS_PER_MESSAGE;
pub use sender::Sender;
use sender::{ClientSlot, Me, MeSlot};
use shared::{EventQueue, PeerLocks};
pub use status::{PostedStatus, StatusInput, StatusView};
pub use templates::TemplateInfo;

pub use rekey_guard::{
    GUARD_WINDOW_MS, REKEYS_PER_ACCOUNT, REKEYS_PER_DEVICE, REKEYS_STRANGERS_TOTAL, REKEYS_TOTAL,
    REMEMBERED_IDS, RESENDS_PER_ACCOUNT, RESENDS_PER_DEVICE, RESENDS_TOTAL,
};

/// How long the relay has to answer one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// One-time prekeys uploaded per batch: enough for this many first
/// contacts before the relay says the stock is low.
pub const PREKEY_BATCH: u32 = 50;
/// Upload a new batch when the relay holds fewer than this.
pub const PREKEY_LOW_WATER: u32 = 10;
/// Longest text message, in bytes (well under the protocol's plaintext cap).
pub const MAX_TEXT_LEN: usize = 8 * 1024;

/// How far prekey ids jump after a restore: more than a device uploads
/// between two backups.
const RESTORE_PREKEY_ID_GAP: u32 = 1 << 20;

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let io = |what: &str, path: &Path, e| ClientError::io(format!("{what} {}", path.display()), e);
    crate::store::create_private_dir(to)?;
    for entry in std::fs::read_dir(from).map_err(|e| io("reading", from, e))? {
        let entry = entry.map_err(|e| io("reading", from, e))?;
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| io("reading", &entry.path(), e))?;
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|e| io("copying", &entry.path(), e))?;
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
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

/// One account on this device.
pub struct Client {
    /// Shared with [`Sender`] handles only while they send (they hold a
    /// weak reference), so closing the client closes the store.
    store: Arc<Store>,
    account: Account,
    prekeys: PreKeys,
    conn: Option<Connection>,
    pushes: push_queue::PushQueue,
    /// Filled by this client and by its [`Sender`] handles.
    events: EventQueue,
    /// One lock per peer over its session records (see [`PeerLocks`]).
    locks: PeerLocks,
    /// This device as sending needs it, shared with the handles.
    me: MeSlot,
    /// The authenticated connection's requester, for the handles.
    requester: ClientSlot,
    /// Messages a peer's device asked to get again over a fresh session.
    resends: VecDeque<(AccountId, u32, MessageId)>,
    /// This account's kind, as the relay recorded it at registration (told
    /// in every `AuthOk`); decides the category of free-form text.
    kind: wire::AccountKind,
    /// Trusted CAs for `wss://` and whether plain `ws://` may leave the machine.
    tls: TlsOptions,
    /// How a connection checks that the relay is still there.
    keepalive: Keepalive,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            store,
            account,
            prekeys,
            conn,
            pushes,
            events,
            resends,
            kind,
            tls,
            keepalive,
            locks: _,
            me: _,
            requester: _,
        } = self;
        f.debug_struct("Client")
            .field("store", store)
            .field("account", account)
            .field("prekeys", prekeys)
            .field("connected", &conn.is_some())
            .field("pushes", &pushes.len())
            .field("events", &events.len())
            .field("resends", &resends.len())
            .field("kind", kind)
            .field("tls", tls)
            .field("keepalive", keepalive)
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
        crate::device_notes::put(
            &store,
            account.device_id(),
            &crate::DeviceNote {
                name: None,
                added_at_ms: Some(now_ms()),
            },
        )?;
        store.flush_blocking()?;
        Ok(Self::with(
            store,
            account,
            PreKeys::default(),
            wire::AccountKind::Unspecified,
        ))
    }

    /// Create a device in `dir` that will join an existing account (see
    /// [`Self::link_code`] and [`Self::finish_link`]).
    pub fn create_unlinked(dir: &Path, passphrase: &str, params: KdfParams) -> Result<Self> {
        let store = Store::create(dir, passphrase, params)?;
        let account = Account::generate_unlinked();
        account.save(&store)?;
        store.flush_blocking()?;
        Ok(Self::with(
            store,
            account,
            PreKeys::default(),
            wire::AccountKind::Unspecified,
        ))
    }

    /// Restore a backup of a data directory (a copy of it, taken while no
    /// client had it open) into `dir`, which must not hold a store. Every
    /// session is marked restored: it still decrypts, but the next message
    /// to each peer starts a fresh session, so no message key is ever used
    /// twice; peers whose messages no longer decrypt get a re-key request.
    pub fn restore_from_backup(backup: &Path, dir: &Path, passphrase: &str) -> Result<Self> {
        if Store::exists(dir) {
            return Err(ClientError::AlreadyInitialized {
                dir: dir.to_path_buf(),
            });
        }
        if !Store::exists(backup) {
            return Err(ClientError::NotInitialized {
                dir: backup.to_path_buf(),
            });
        }
        // Check the passphrase on the backup before copying anything.
        drop(Store::open(backup, passphrase)?);
        copy_dir(backup, dir)?;
        let mut client = Self::open(dir, passphrase)?;
        session_store::mark_all_restored(&client.store)?;
        client.account.skip_prekey_ids(RESTORE_PREKEY_ID_GAP);
        client.account.save(&client.store)?;
        client.store.flush_blocking()?;
        Ok(client)
    }

    /// Whether this device waits for a link approval.
    pub fn is_unlinked(&self) -> bool {
        self.account.is_unlinked()
    }

    /// Open the account in `dir`. A wrong passphrase is
    /// [`ClientError::WrongPassphrase`].
    pub fn open(dir: &Path, passphrase: &str) -> Result<Self> {
        let store = Store::open(dir, passphrase)?;
        // An older version kept contact names as keys, which are never
        // sealed; moved into sealed records, their bytes would stay in the
        // file until it is compacted, so it is compacted now. A compaction
        // that fails (it needs room for a copy of the store) does not keep
        // the store from opening: it is tried again at the next open (the
        // file still names the tree then).
        if store.file_named_at_open(Tree::Contacts) {
            contacts::migrate(&store)?;
            if let Err(e) = store.compact() {
                tracing::warn!(
                    error = %e,
                    "old contact names stay in the store's file until it can be rewritten"
                );
                store.flush_blocking()?;
            }
        }
        let account = Account::load(&store)?
            .ok_or_else(|| ClientError::CorruptStore("the store holds no account record".into()))?;
        let prekeys = PreKeys::load(&store)?;
        // A device waiting for a link has no kind yet (one kept by a link
        // that then failed does not count).
        let kind = if account.is_unlinked() {
            wire::AccountKind::Unspecified
        } else {
            crate::account::load_kind(&store)?
        };
        Ok(Self::with(store, account, prekeys, kind))
    }

    fn with(store: Store, account: Account, prekeys: PreKeys, kind: wire::AccountKind) -> Self {
        let me = MeSlot::new(Self::me_of(&account, kind));
        Self {
            store: Arc::new(store),
            account,
            prekeys,
            conn: None,
            pushes: push_queue::PushQueue::default(),
            events: EventQueue::default(),
            resends: VecDeque::new(),
            kind,
            tls: TlsOptions::default(),
            keepalive: Keepalive::default(),
            locks: PeerLocks::default(),
            me,
            requester: ClientSlot::new(),
        }
    }

    fn me_of(account: &Account, kind: wire::AccountKind) -> Me {
        Me {
            account: account.id(),
            device: account.device_id(),
            identity: comptoir_protocol::IdentityKeyPair::from_seed(&account.identity().seed()),
            kind,
            own_list: account
                .signed_device_list()
                .ok()
                .and_then(|list| comptoir_protocol::DeviceList::verify(&list, None).ok()),
        }
    }

    /// Rebuild what the sender handles know of this device (after linking
    /// or authenticating).
    fn refresh_me(&mut self) {
        self.me.replace(Self::me_of(&self.account, self.kind));
    }

    /// Take the connection away from the sender handles (they queue in the
    /// outbox until the next connect).
    fn share_requester_none(&self) {
        self.requester.share(None);
    }

    /// Give the sender handles this connection (or none).
    fn share_requester(&self) {
        self.requester
            .share(self.conn.as_ref().map(Connection::requester));
    }

    /// How to reach relays (CA certificates for `wss://`, `--insecure`);
    /// applies from the next connection.
    pub fn set_tls_options(&mut self, tls: TlsOptions) {
        self.tls = tls;
    }

    /// How soon a dead link to the relay is noticed (see [`Keepalive`]);
    /// applies from the next connection.
    pub fn set_keepalive(&mut self, keepalive: Keepalive) {
        self.keepalive = keepalive;
    }

    /// This account's id.
    pub fn account_id(&self) -> AccountId {
        self.account.id()
    }

    /// The operator key this client trusts (pinned on first use or by
    /// [`Self::pin_operator_key`]); `None` before the first connection to
    /// a relay that publishes one.
    pub fn operator_key(&self) -> Result<Option<comptoir_protocol::OperatorKey>> {
        crate::operator_pin::pinned(&self.store)
    }

    /// Trust `key` as the operator's from now on (from configuration, or
    /// after checking a changed key with the operator out of band).
    pub async fn pin_operator_key(&self, key: &comptoir_protocol::OperatorKey) -> Result<()> {
        crate::operator_pin::pin(&self.store, key)?;
        self.store.flush().await
    }

    /// This device's id.
    pub fn device_id(&self) -> u32 {
        self.account.device_id()
    }

    /// Whether the account was registered on a relay.
    pub fn is_registered(&self) -> bool {
        self.account.is_registered()
    }

    /// Whether this is a business account (see [`Self::kind`]).
    pub fn is_business(&self) -> bool {
        self.kind == wire::AccountKind::Business
    }

    /// This account's kind: as registered from this store, or as the
    /// relay said at the last login (kept in the store, so known offline
    /// too); `Unspecified` before either (a store from before the kind was
    /// kept that has not logged in since, a device waiting for a link, or
    /// only relays that tell no kind).
    pub fn kind(&self) -> wire::AccountKind {
        self.kind
    }

    /// Whether a relay connection is open and authenticated.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

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

    /// Envelopes put aside because they could not be decoded, attributed
    /// or decrypted (each was acknowledged), oldest first.
    pub fn quarantined(&self) -> Result<Vec<crate::Quarantined>> {
        crate::quarantine::list(&self.store)
    }

    /// How many envelopes are in quarantine.
    pub fn quarantine_len(&self) -> Result<usize> {
        crate::quarantine::count(&self.store)
    }

    /// How many envelopes were dropped from the quarantine (oldest first)
    /// to keep it within [`crate::quarantine::MAX_QUARANTINED`] envelopes
    /// and [`crate::quarantine::MAX_QUARANTINE_BYTES`].
    pub fn quarantine_dropped(&self) -> Result<u64> {
        crate::quarantine::dropped(&self.store)
    }

    /// Messages written but not yet accepted by the relay.
    pub fn outbox_len(&self) -> Result<usize> {
        Ok(messages::outbox(&self.store)?.len())
    }

    /// The messages written here that wait in the outbox, oldest first.
    pub fn queued(&self) -> Result<Vec<StoredMessage>> {
        let mut out = Vec::new();
        for (peer, id, _) in messages::outbox(&self.store)? {
            if let Some(message) = messages::get(&self.store, &peer, &id)? {
                out.push(message);
            }
        }
        out.sort_by_key(|m| m.sequence);
        Ok(out)
    }

    /// Take a message out of the outbox before it is sent: it is never
    /// sent and stays in the history as failed. Returns the message;
    /// [`ClientError::NotQueued`] if it no longer waits there.
    pub fn cancel_queued(&self, id: &MessageId) -> Result<StoredMessage> {
        let Some((peer, _, _)) = messages::outbox(&self.store)?
            .into_iter()
            .find(|(_, queued, _)| queued == id)
        else {
            return Err(ClientError::NotQueued(id.to_string()));
        };
        messages::outbox_remove(&self.store, &peer, id)?;
        let message = messages::advance(&self.store, &peer, id, messages::Status::Failed)?;
        self.store.flush_blocking()?;
        match message {
            Some(message) => Ok(message),
            None => messages::get(&self.store, &peer, id)?
                .ok_or_else(|| ClientError::NotQueued(id.to_string())),
        }
    }

    /// Name an account. A name that already names another account is
    /// [`ClientError::ContactExists`] and changes nothing (see
    /// [`Self::replace_contact`]). Check an id typed by the user with
    /// [`Self::check_account`] first.
    pub fn add_contact(&self, name: &str, account: AccountId) -> Result<contacts::Added> {
        let added = contacts::add(&self.store, name, account, false)?;
        self.store.flush_blocking()?;
        Ok(added)
    }

    /// [`Self::add_contact`], re-pointing the name if it named another
    /// account (whose verified mark does not carry over to the new one).
    pub fn replace_contact(&self, name: &str, account: AccountId) -> Result<contacts::Added> {
        let added = contacts::add(&self.store, name, account, true)?;
        self.store.flush_blocking()?;
        Ok(added)
    }

    /// Forget a contact name (the history with the account stays).
    pub fn remove_contact(&self, name: &str) -> Result<AccountId> {
        let account = contacts::remove(&self.store, name)?;
        self.store.flush_blocking()?;
        Ok(account)
    }

    /// Rename a contact; the new name must be free.
    pub fn rename_contact(&self, old: &str, new: &str) -> Result<AccountId> {
        let account = contacts::rename(&self.store, old, new)?;
        self.store.flush_blocking()?;
        Ok(account)
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

    /// While an identity change of `peer` waits for the user: the safety
    /// number with the pinned (old) account key, and with the new one, so
    /// the user can compare the new one before accepting it.
    pub fn pending_safety_numbers(
        &self,
        peer: &AccountId,
    ) -> Result<Option<(SafetyNumber, SafetyNumber)>> {
        let Some(new_key) = peers::pending_account_key(&self.store, peer)? else {
            return Ok(None);
        };
        let as_identity = |key: &AccountKey| IdentityKey::from_bytes(&key.to_bytes());
        let local = as_identity(&self.own_devices()?.account_key)?;
        let new = SafetyNumber::new(
            (&self.account.id(), &local),
            (peer, &as_identity(&new_key)?),
        );
        Ok(Some((self.safety_number(peer)?, new)))
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

    /// Close the connection, flush the store and close it. Returns once
    /// nothing holds the store's files any more, so [`Self::open`] on the
    /// same directory right after succeeds.
    /// [`Sender`] handles still sending at that moment fail (the
    /// connection is gone) and let go of the store; handles kept after that
    /// fail with [`ClientError::Closed`].
    pub async fn close(mut self) -> Result<()> {
        self.disconnect().await;
        // Handles waiting for a connection stop now, not when this ends.
        self.requester.close();
        self.store.flush().await?;
        let mut store = self.store;
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            match Arc::try_unwrap(store) {
                Ok(store) => return store.close(),
                // A handle's send is still finishing (its request already
                // failed with the connection): it lets go in a moment.
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    store = shared;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(_) => return Err(ClientError::InUse),
            }
        }
    }
}

pub(super) fn unexpected(wanted: &str, got: &server_frame::Body) -> ClientError {
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
        server_frame::Body::PhoneNumberReleased(_) => "PhoneNumberReleased",
        server_frame::Body::Consents(_) => "Consents",
        server_frame::Body::TemplateSubmitted(_) => "TemplateSubmitted",
        server_frame::Body::Templates(_) => "Templates",
        server_frame::Body::Profile(_) => "Profile",
        server_frame::Body::ConsentRequests(_) => "ConsentRequests",
        server_frame::Body::ConsentAnswers(_) => "ConsentAnswers",
        server_frame::Body::Bill(_) => "Bill",
        server_frame::Body::Standing(_) => "Standing",
        server_frame::Body::UploadStatus(_) => "UploadStatus",
        server_frame::Body::BlobChunk(_) => "BlobChunk",
        server_frame::Body::ReportFiled(_) => "ReportFiled",
        server_frame::Body::StatusPosted(_) => "StatusPosted",
        server_frame::Body::Subscribers(_) => "Subscribers",
        server_frame::Body::Lease(_) => "Lease",
    };
    ClientError::UnexpectedFrame(format!("expected {wanted}, got {name}"))
}

#[cfg(test)]
mod tests {
    use comptoir_protocol::{AccountKeyPair, DeviceList, IdentityKeyPair};

    use super::*;
    use crate::event::Event;
    use crate::peers::Observed;

    #[tokio::test]
    async fn a_changed_identity_holds_sending_until_accepted() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let params = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let mut client = Client::create_with_params(dir.path(), "pw-long-enough", params)?;
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

    /// Every byte of the files in `dir` (the store's log among them).
    fn every_byte_in(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read the store's directory") {
            let path = entry.expect("directory entry").path();
            if path.is_file() {
                out.extend(std::fs::read(&path).expect("read a store file"));
            }
        }
        out
    }

    /// Contact names an older version kept as (never sealed) keys are
    /// moved into sealed records at the next open, and their bytes are
    /// gone from the store's files then, not at some later compaction; a
    /// store that moved them before (removed records still in its file)
    /// is rewritten at its next open too.
    #[tokio::test]
    async fn contact_names_of_an_older_store_leave_its_files_at_the_next_open() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let params = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        Client::create_with_params(dir.path(), "pw-long-enough", params)?
            .close()
            .await?;
        let name = "Zanzibar Plumbing Ltd";
        let peer = AccountId::generate(&mut rand::rng());
        {
            // As the older version wrote it.
            let store = Store::open(dir.path(), "pw-long-enough")?;
            store.put(Tree::Contacts, name.as_bytes(), peer.as_bytes())?;
            store.close()?;
        }
        let named = |dir: &Path| {
            every_byte_in(dir)
                .windows(name.len())
                .any(|w| w == name.as_bytes())
        };
        assert!(
            named(dir.path()),
            "the test wrote the name where it meant to"
        );

        let client = Client::open(dir.path(), "pw-long-enough")?;
        assert_eq!(client.resolve(name)?, peer, "the contact was kept");
        assert!(!named(dir.path()), "the name is still in the store's files");
        client.close().await?;

        // A store migrated by the version before this one: the name moved,
        // its old record removed, its bytes still in the file.
        {
            let store = Store::open(dir.path(), "pw-long-enough")?;
            store.put(Tree::Contacts, name.as_bytes(), peer.as_bytes())?;
            store.remove(Tree::Contacts, name.as_bytes())?;
            store.close()?;
        }
        assert!(named(dir.path()));
        let client = Client::open(dir.path(), "pw-long-enough")?;
        assert!(!named(dir.path()), "a removed record's name stayed");
        assert_eq!(client.resolve(name)?, peer);
        client.close().await?;
        Ok(())
    }
}
