//! Storage by role, so that each role can later live in its own backend
//! (a Redis Cluster, say) while the embedded default keeps them together.
//!
//! Roles (one trait, one module each):
//! - [`Directory`] ([`directory`]): accounts and their records (kind,
//!   creation, phone), signed device lists, business names, phone
//!   bindings, blocks, and the expiry of accounts that never
//!   authenticated. Later: certificates, templates.
//! - [`Keys`] ([`keys`]): each device's signed prekey and one-time prekeys.
//! - [`Mailbox`] ([`mailbox`]): per-device queues of encoded envelopes,
//!   read after an opaque [`Cursor`], each with its own expiry; and the
//!   `Delivered` receipts kept for a sending device until it acks them;
//!   and the customers' consents ([`consent`]), which the accept checks
//!   in the same step as it stores the copies.
//! - [`Ledger`] ([`ledger`]): append-only entries for what may be billed,
//!   written by the mailbox's accept in the same durable step as the
//!   copies (docs/STORAGE.md says what must commit together).
//! - [`BillHeads`] ([`ledger_heads`]): the heads of businesses' bill
//!   chains the relay signed on its schedule, beside the ledger.
//! - [`SupersededLists`] ([`superseded_lists`]): the signed device lists
//!   accounts replaced, so a bill line acked by a device removed since
//!   can still be checked.
//! - [`Templates`] ([`templates`]): templates businesses submitted and
//!   the operator's signed decision on each.
//! - [`Businesses`] ([`businesses`]): business profiles and the operator's
//!   certificates and revocations of them.
//! - [`ConsentRequests`] ([`consent_requests`]): verified businesses'
//!   requests for consent, by a keyed hash of the number, each customer's
//!   pending ones and the answers.
//! - [`FirstContacts`] ([`first_contacts`]): which accounts have talked,
//!   and new conversations per account and day.
//! - [`Reports`] ([`reports`]): reports filed by recipients, sealed to
//!   the operator's key.
//! - [`Quality`] ([`quality`]): each business's messaging tier and the
//!   block and reach history its quality rating is computed from.
//! - [`Lifecycle`]: flush and close, for the backend as a whole.
//!
//! [`report`] reads a stopped data directory's accounting (ledger,
//! conversations, quotas) for `relay accounting`.
//!
//! [`Backend`] bundles them for the code that needs them all (the
//! server, a connection); request handlers name only the roles they use.
//!
//! Shape of the contract, which every backend must keep:
//! - every method is `async` and every write is **durable when its future
//!   completes** (the relay acks only then), except deletions by
//!   [`Mailbox::acknowledge`] and [`Mailbox::expire`]: a lost deletion
//!   only means a redelivery, which clients drop by message id;
//! - each write that touches several records is **atomic** (an envelope's
//!   device copies, its idempotency record and the queue counters all land
//!   or none do; an ack's deletion and the `Delivered` receipt it keeps
//!   for the sending device land together or not at all), and a one-time
//!   prekey is handed out at most once even to concurrent callers on
//!   different nodes (compare-and-swap, not a lock in one process);
//!   likewise a business name goes to exactly one of concurrent claimers,
//!   and an account never ends up with two names;
//! - **no read serves a stale answer about security state**: once a write
//!   to a device list, a block or an account record has completed, every
//!   read that starts after it sees it (no in-process cache that a write
//!   elsewhere, or a racing read, could leave behind);
//! - queues are ordered per recipient device by an opaque [`Cursor`];
//! - nothing here needs to know which process a device is connected to:
//!   routing pushes between nodes is the job of the hub, not of storage.
//!
//! [`sled::SledStore`] is the embedded default: sled for the directory and
//! keys, the relay's own [`mail_log`] for the mailbox.

pub mod businesses;
pub mod consent;
pub mod consent_requests;
pub(crate) mod dir_lock;
pub mod directory;
pub mod first_contacts;
pub mod keys;
pub mod ledger;
pub mod ledger_heads;
pub mod mail_log;
pub mod mailbox;
pub mod quality;
pub mod report;
pub mod reports;
pub mod sled;
mod store_id;
pub mod superseded_lists;
pub mod templates;

use std::future::Future;

pub use self::businesses::{Businesses, StoredBusiness};
pub use self::consent::{CONSENT_SIGNATURE_LEN, ConsentRecord, ConsentSeen, ConsentSet};
pub use self::consent_requests::{ConsentRequests, PendingRequest, RequestState, StoredRequest};
pub use self::directory::{
    AccountRecord, Created, Directory, ExpiredAccounts, Kind, ListUpdate, NameClaim,
    StoredDeviceList,
};
pub use self::first_contacts::{FirstContacts, Noted};
pub use self::keys::{
    Keys, MAX_PREKEY_PUBLIC_LEN, OneTimePreKeyRecord, PreKeyLength, PreKeyPublic,
    SignedPreKeyRecord, TakenPreKeys,
};
pub use self::ledger::{
    BilledCategory, DELIVERY_SIGNATURE_LEN, DeliveredEntry, Ledger, LedgerEntry, Priced,
};
pub use self::ledger_heads::{BillHeads, PeriodicHead};
pub use self::mailbox::{
    AcceptEffects, AckOf, Acked, Billed, Cursor, Enqueued, Mailbox, NewMessage, QueuedEnvelope,
    QueuedMail, QueuedReceipt, QuotaCounts, ReachLimit, ReceiptKeptFuture,
};
pub use self::quality::Quality;
pub use self::reports::{Filed, KeptReport, Reports};
pub use self::sled::SledStore;
pub use self::superseded_lists::SupersededLists;
pub use self::templates::{Replaced, SignedApproval, StoredTemplate, Submitted, Templates};

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

/// The backend as a whole: making writes durable and stopping.
pub trait Lifecycle: Send + Sync + 'static {
    /// Make every write so far durable, in every role.
    fn flush(&self) -> impl Future<Output = StorageResult<()>> + Send;

    /// Flush and release the backend (at shutdown); later calls fail with
    /// [`StorageError::Closed`].
    fn close(&self) -> impl Future<Output = StorageResult<()>> + Send;

    /// The highest time the relay's clock showed, as last persisted by
    /// [`Lifecycle::keep_clock_mark`] (0 if never): the clock starts at
    /// least there, so a wall clock stepped back cannot reopen a window.
    fn clock_mark(&self) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Persist `ms` as the clock's mark if it is higher than the one kept
    /// (durable on return).
    fn keep_clock_mark(&self, ms: u64) -> impl Future<Output = StorageResult<()>> + Send;
}

/// Every role: what the server and a connection need. Implemented for
/// any type that implements all four.
pub trait Backend:
    Directory
    + Keys
    + Mailbox
    + Ledger
    + BillHeads
    + SupersededLists
    + Templates
    + Businesses
    + ConsentRequests
    + FirstContacts
    + Reports
    + Quality
    + Lifecycle
{
}

impl<
    T: Directory
        + Keys
        + Mailbox
        + Ledger
        + BillHeads
        + SupersededLists
        + Templates
        + Businesses
        + ConsentRequests
        + FirstContacts
        + Reports
        + Quality
        + Lifecycle,
> Backend for T
{
}
