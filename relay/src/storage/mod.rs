//! Storage behind a trait, so the relay can later run as a cluster on a
//! distributed engine.
//!
//! Shape of the contract, which a clustered backend must keep:
//! - every method is `async` and every write is **durable when its future
//!   completes** (the relay acks only then), except deletions by
//!   `acknowledge` and `expire`: a lost deletion only means a redelivery,
//!   which clients drop by message id;
//! - each write that touches several records is **atomic** (an envelope's
//!   device copies, its idempotency record and the queue counters all land
//!   or none do; an ack's deletion and the `Delivered` receipt it keeps
//!   for the sending device land together or not at all), and a one-time prekey is handed out at most once even to
//!   concurrent callers on different nodes (compare-and-swap, not a lock in
//!   one process); likewise a business name goes to exactly one of
//!   concurrent claimers, and an account never ends up with two names;
//! - queues are ordered per recipient device by an opaque `u64` cursor;
//! - nothing here needs to know which process a device is connected to:
//!   routing pushes between nodes is the job of the hub, not of storage.
//!
//! [`sled::SledStore`] is the embedded default.

pub(crate) mod dir_lock;
pub mod ledger;
pub mod mail_log;
pub mod report;
pub mod sled;
mod store_id;

use std::future::Future;
use std::sync::Arc;

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::relay::AccountRecord;
use comptoir_protocol::proto::wire::{OneTimePreKey, SignedDeviceList, SignedPreKey};
use futures_util::future::BoxFuture;

pub use self::ledger::{BilledCategory, Ledger, LedgerEntry};
pub use self::sled::SledStore;

/// Result alias for storage calls.
pub type StorageResult<T> = std::result::Result<T, StorageError>;

/// A storage failure: the call's writes did not happen (or are not known
/// to be durable); the caller must not ack.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The backend reported an error.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("corrupt stored record in {0}; restore the data directory from a backup")]
    Corrupt(&'static str),
    /// The store was closed (the relay is stopping).
    #[error("storage is closed")]
    Closed,
    /// The disk is full: new messages are refused until space is freed
    /// (acks and deletions still work, on the space reserve).
    #[error("the relay's disk is full; new messages are refused until space is freed, retry later")]
    Full,
    /// Another relay holds the data directory.
    #[error(
        "the data directory {} is in use by another relay; stop it or choose another data_dir",
        .0.display()
    )]
    InUse(std::path::PathBuf),
}

/// Length of a message id, in bytes.
pub const MESSAGE_ID_LEN: usize = 16;

/// One message accepted for every current device of one account.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// The authenticated sender account.
    pub sender: AccountId,
    /// The authenticated sender device.
    pub sender_device: u32,
    /// The recipient account.
    pub recipient: AccountId,
    /// Sender-chosen id; a second `enqueue` with the same (sender,
    /// recipient, id) stores nothing.
    pub message_id: [u8; MESSAGE_ID_LEN],
    /// The relay's acceptance time.
    pub server_timestamp_ms: u64,
    /// When undelivered copies (and the idempotency record) expire.
    pub expires_at_ms: u64,
    /// One encoded `Envelope` per recipient device.
    pub copies: Vec<(u32, Vec<u8>)>,
    /// What else the accept commits with the copies (conversation state,
    /// quotas, the ledger's part): all of it or none (docs/STORAGE.md).
    pub effects: AcceptEffects,
}

/// What an accepted send changes besides its copies, committed in the same
/// durable step. Nothing of it happens for a duplicate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcceptEffects {
    /// A customer wrote conversation traffic to this business: the
    /// (business, customer) conversation's last customer message is now
    /// (the 24-hour window runs from it).
    pub customer_wrote_to: Option<AccountId>,
    /// A business started a conversation with this customer (a
    /// template): counts among the distinct customers it reached today.
    pub business_reached: Option<AccountId>,
    /// The ledger's part, for a send the ledger may bill (its accept id
    /// is filled in by the store).
    pub billed: Option<Billed>,
}

/// The ledger's part of a billed send, before its accept id is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Billed {
    /// The template's category.
    pub category: BilledCategory,
    /// The template id.
    pub template_id: String,
    /// The franking commitment (may be empty).
    pub franking_tag: Vec<u8>,
}

/// A sender's counters for one UTC day (day number = ms since the epoch
/// divided by 86,400,000).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaCounts {
    /// Sends accepted from the account that day.
    pub accepted: u64,
    /// Distinct customers a business reached with business-initiated
    /// conversations (templates) that day.
    pub customers_reached: u64,
}

/// What `enqueue` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// All copies stored durably.
    Stored {
        /// The id the relay assigned to this send: unique among every
        /// send it ever accepted, never reused.
        accept_id: u64,
    },
    /// Already stored earlier: nothing written. Carries the first
    /// acceptance time and accept id.
    Duplicate {
        /// When the first copy was accepted.
        server_timestamp_ms: u64,
        /// The accept id the first copy was given.
        accept_id: u64,
    },
    /// A recipient device's queue is full: nothing written.
    QueueFull {
        /// The full device.
        device: u32,
    },
}

/// One queued envelope.
#[derive(Clone, Debug)]
pub struct QueuedEnvelope {
    /// Position in the device's queue (increasing).
    pub cursor: u64,
    /// The encoded `Envelope`, as the send stored it (without its accept
    /// id, which is assigned with the write and added when pushed).
    pub envelope: Vec<u8>,
    /// The accept id of the send the envelope belongs to (0 for a copy
    /// kept by a relay too old to assign them and not yet migrated).
    pub accept_id: u64,
}

/// Which queued copy an ack deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOf {
    /// The copy of the send with this accept id.
    Accept(u64),
    /// The copy of the send with this accept id, if it is the message
    /// with this (sender, message id); otherwise nothing (an ack naming
    /// the envelope as the device saw it: a copy whose labels reached the
    /// device altered is not deleted).
    AcceptOf {
        /// The accept id.
        accept_id: u64,
        /// The sending account as the device saw it.
        sender: AccountId,
        /// The message id as the device saw it.
        message_id: [u8; MESSAGE_ID_LEN],
    },
    /// The copy of the message with this (sender, message id) (acks of
    /// clients older than accept ids).
    Message {
        /// The sending account.
        sender: AccountId,
        /// The sender-chosen message id.
        message_id: [u8; MESSAGE_ID_LEN],
    },
}

/// What `acknowledge` did when the envelope was queued.
pub struct Acked {
    /// The account that sent the envelope.
    pub sender: AccountId,
    /// The device that sent the envelope (its receipt's queue).
    pub sender_device: u32,
    /// Resolves once the deletion and the receipt are durable: the receipt
    /// is then visible to [`Storage::pending_receipts`].
    pub receipt_kept: BoxFuture<'static, StorageResult<()>>,
}

impl std::fmt::Debug for Acked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acked")
            .field("sender_device", &self.sender_device)
            .finish_non_exhaustive()
    }
}

/// One `Delivered` receipt kept for a sending device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedReceipt {
    /// Position in the device's receipt queue (increasing).
    pub cursor: u64,
    /// The account whose device acked the envelope.
    pub recipient: AccountId,
    /// That device.
    pub recipient_device: u32,
    /// The envelope's message id.
    pub message_id: [u8; MESSAGE_ID_LEN],
    /// The envelope's accept id (0 for a receipt made before accept ids).
    pub accept_id: u64,
}

/// What `replace_device_list` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListUpdate {
    /// Stored.
    Stored,
    /// Refused: not newer than the stored version.
    Stale {
        /// The stored version.
        have: u64,
    },
    /// No such account.
    UnknownAccount,
}

/// The parts of a prekey bundle for one device, the one-time key removed
/// from the store.
#[derive(Clone, Debug, Default)]
pub struct TakenPreKeys {
    /// The current signed prekey, if one was uploaded.
    pub signed: Option<SignedPreKey>,
    /// A one-time prekey nobody else will get, if any was left.
    pub one_time: Option<OneTimePreKey>,
    /// One-time prekeys left after this one.
    pub remaining: u32,
}

/// What `claim_name` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameClaim {
    /// The name is now the account's (stored durably).
    Claimed,
    /// The account already held this name: nothing written.
    AlreadyYours,
    /// Another account holds the name: nothing written.
    TakenByOther,
    /// The account already holds a different name: nothing written.
    AccountHasOther,
}

/// What `expire_unauthenticated` deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpiredAccounts {
    /// Accounts deleted.
    pub accounts: u64,
    /// Envelopes that were queued for them.
    pub envelopes: u64,
}

/// The relay's persistent state. See the module docs for the contract.
pub trait Storage: Send + Sync + 'static {
    /// Create an account with its first device list and its record, both
    /// or neither (atomically). Returns the existing list, unchanged, if
    /// the account already exists (the record is then left as it was).
    fn create_account(
        &self,
        list: &SignedDeviceList,
        record: &AccountRecord,
    ) -> impl Future<Output = StorageResult<Option<SignedDeviceList>>> + Send;

    /// Note that the account authenticated (durably, the first time): it
    /// no longer expires under `expire_unauthenticated`.
    fn mark_authenticated(
        &self,
        account: AccountId,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// Delete up to `limit` accounts registered (by this relay version or
    /// later) before `registered_before_ms` that never authenticated: their
    /// record, device list, prekeys, phone and name bindings, and the mail
    /// queued for them, durably. Throwaway accounts otherwise stay forever.
    fn expire_unauthenticated(
        &self,
        registered_before_ms: u64,
        limit: usize,
    ) -> impl Future<Output = StorageResult<ExpiredAccounts>> + Send;

    /// The account's record (kind, creation time, phone binding, business
    /// fields), shared: it is read on every send. `None` for an unknown
    /// account, or one registered before records existed (treat it as a
    /// customer created at time 0).
    fn account_record(
        &self,
        account: AccountId,
    ) -> impl Future<Output = StorageResult<Option<Arc<AccountRecord>>>> + Send;

    /// The account's current signed device list (shared: it is read on
    /// every send).
    fn device_list(
        &self,
        account: AccountId,
    ) -> impl Future<Output = StorageResult<Option<Arc<SignedDeviceList>>>> + Send;

    /// Replace the device list if `list.version` is newer (atomically).
    fn replace_device_list(
        &self,
        account: AccountId,
        list: &SignedDeviceList,
    ) -> impl Future<Output = StorageResult<ListUpdate>> + Send;

    /// Store a signed prekey (replacing the previous) and one-time prekeys.
    /// Refuses (returns `Err(stock)`) if the stock would exceed `max`.
    fn store_prekeys(
        &self,
        account: AccountId,
        device: u32,
        signed: Option<SignedPreKey>,
        one_time: Vec<OneTimePreKey>,
        max: u32,
    ) -> impl Future<Output = StorageResult<Result<u32, u32>>> + Send;

    /// Take the signed prekey and one one-time prekey of a device; the
    /// one-time key is removed durably and given to no other caller.
    fn take_prekeys(
        &self,
        account: AccountId,
        device: u32,
    ) -> impl Future<Output = StorageResult<TakenPreKeys>> + Send;

    /// One-time prekeys stored for a device.
    fn one_time_prekey_count(
        &self,
        account: AccountId,
        device: u32,
    ) -> impl Future<Output = StorageResult<u32>> + Send;

    /// Store one message for all its devices, atomically and durably,
    /// unless it is a duplicate or a queue holds `max_queue` already.
    fn enqueue(
        &self,
        message: NewMessage,
        max_queue: u64,
    ) -> impl Future<Output = StorageResult<Enqueued>> + Send;

    /// Up to `limit` unexpired envelopes queued for a device after `after`.
    fn pending(
        &self,
        account: AccountId,
        device: u32,
        after: Option<u64>,
        limit: usize,
        now_ms: u64,
    ) -> impl Future<Output = StorageResult<Vec<QueuedEnvelope>>> + Send;

    /// Envelopes queued for a device.
    fn queued_count(
        &self,
        account: AccountId,
        device: u32,
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Delete the envelope `message_id` from `sender` queued for a device
    /// and keep a `Delivered` receipt for the sending device until that
    /// device acks it or `receipt_expires_at_ms`, atomically (durable soon,
    /// not necessarily on return: see [`Acked::receipt_kept`]).
    /// `None` if the envelope was not queued (already acked, expired, or
    /// never there): nothing is written.
    fn acknowledge(
        &self,
        account: AccountId,
        device: u32,
        of: AckOf,
        receipt_expires_at_ms: u64,
    ) -> impl Future<Output = StorageResult<Option<Acked>>> + Send;

    /// Up to `limit` durable, unexpired receipts kept for a (sending)
    /// device after `after`, oldest first.
    fn pending_receipts(
        &self,
        account: AccountId,
        device: u32,
        after: Option<u64>,
        limit: usize,
        now_ms: u64,
    ) -> impl Future<Output = StorageResult<Vec<QueuedReceipt>>> + Send;

    /// Delete the receipt kept for a device saying that `recipient`'s
    /// `recipient_device` acked `message_id` (durable soon: a lost deletion
    /// means the receipt is pushed again). `false` if there was none.
    fn acknowledge_receipt(
        &self,
        account: AccountId,
        device: u32,
        recipient: AccountId,
        recipient_device: u32,
        message_id: [u8; MESSAGE_ID_LEN],
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Delete envelopes, idempotency records and receipts expired when the
    /// wall clock reads `now_ms`; a backend may go by a guarded clock that
    /// follows a clock stepped forward only at a bounded pace (the embedded
    /// one does: see `mail_log::EXPIRY_CATCH_UP_MS`).
    /// Returns the number of envelopes deleted.
    fn expire(&self, now_ms: u64) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Forget a removed device's queue and prekeys.
    fn remove_device(
        &self,
        account: AccountId,
        device: u32,
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Record (or lift) `blocker`'s block of `blocked`.
    fn set_blocked(
        &self,
        blocker: AccountId,
        blocked: AccountId,
        on: bool,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// Whether `blocker` blocks `blocked`.
    fn is_blocked(
        &self,
        blocker: AccountId,
        blocked: AccountId,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Bind a verified phone number (E.164) to an account, and note it in
    /// the account's record.
    fn bind_phone(
        &self,
        phone: &str,
        account: AccountId,
        discoverable: bool,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// The account a phone number is bound to, and whether it is
    /// discoverable.
    fn lookup_phone(
        &self,
        phone: &str,
    ) -> impl Future<Output = StorageResult<Option<(AccountId, bool)>>> + Send;

    /// Bind a (normalised) business name to an account, first come first
    /// served and one name per account, atomically even against concurrent
    /// claims on other nodes: two claimers of one name never both win.
    fn claim_name(
        &self,
        name: &str,
        account: AccountId,
    ) -> impl Future<Output = StorageResult<NameClaim>> + Send;

    /// The account holding a (normalised) business name.
    fn lookup_name(
        &self,
        name: &str,
    ) -> impl Future<Output = StorageResult<Option<AccountId>>> + Send;

    /// Envelopes queued in total (for the queue-depth gauge at start).
    fn total_queued(&self) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Make every write so far durable.
    fn flush(&self) -> impl Future<Output = StorageResult<()>> + Send;

    /// Flush and release the backend (at shutdown); later calls fail with
    /// [`StorageError::Closed`].
    fn close(&self) -> impl Future<Output = StorageResult<()>> + Send;
}
