//! The mailbox role: one queue of encoded envelopes per recipient device,
//! read after an opaque [`Cursor`], each envelope with its own expiry;
//! and, per sending device, the `Delivered` receipts kept until that
//! device acks them.

use std::future::Future;

use comptoir_protocol::AccountId;

use super::{
    BilledCategory, ConsentRecord, ConsentSeen, ConsentSet, DeliveredEntry, LedgerEntry,
    MESSAGE_ID_LEN, StorageResult,
};

/// A position in one device's queue (of mail or of receipts), as the
/// mailbox handed it out. Callers keep it and give it back to read what
/// follows; they can neither make one nor compute with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(u64);

impl Cursor {
    /// Wrap a backend's position (backends only).
    pub(in crate::storage) fn from_position(position: u64) -> Self {
        Self(position)
    }

    /// The backend's position (backends only).
    pub(in crate::storage) fn position(self) -> u64 {
        self.0
    }
}

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
    /// The consent state the send was decided on (for a business's send
    /// to a customer): if it changed before the accept, nothing is stored
    /// and [`Enqueued::ConsentChanged`] is returned.
    pub consent_seen: Option<ConsentSeen>,
    /// How many times the recipient had blocked the sender when the send
    /// was decided ([`Mailbox::block_epoch`]): if it blocked it since,
    /// nothing is stored and [`Enqueued::BlockedMeanwhile`] is returned.
    pub block_epoch_seen: u64,
    /// A business-initiated conversation (a template outside the
    /// customer's window) held to the business's messaging tier: the
    /// store counts the recipient towards the limit unless it was
    /// counted in the last 24 hours, or refuses with
    /// [`Enqueued::QuotaExceeded`], in the same step as the write.
    pub reach: Option<ReachLimit>,
}

/// The messaging tier limit a business-initiated send is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReachLimit {
    /// Distinct customers the business may reach in 24 hours (`None`:
    /// unlimited; the reach is still counted).
    pub limit: Option<u64>,
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
    /// The price the rate card gives it now (fixed at accept).
    pub priced: super::Priced,
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
    /// The pair's consent changed after the send was decided: nothing
    /// written; decide again.
    ConsentChanged,
    /// The recipient blocked the sender after the send was decided:
    /// nothing written.
    BlockedMeanwhile,
    /// The business reached as many distinct customers in the last 24
    /// hours as its messaging tier allows: nothing written.
    QuotaExceeded {
        /// The limit.
        limit: u64,
        /// When the oldest of those reaches leaves the 24 hours.
        retry_at_ms: u64,
    },
}

/// One queued envelope as the embedded mail log returns it (its position
/// is the log's; the [`Mailbox`] hands out [`QueuedMail`] instead).
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

/// What [`Acked::receipt_kept`] is: a future a connection's state may hold.
pub type ReceiptKeptFuture =
    std::pin::Pin<Box<dyn Future<Output = StorageResult<()>> + Send + Sync + 'static>>;

/// What `acknowledge` did when the envelope was queued.
pub struct Acked {
    /// The account that sent the envelope.
    pub sender: AccountId,
    /// The device that sent the envelope (its receipt's queue).
    pub sender_device: u32,
    /// Resolves once the deletion and the receipt are durable: the receipt
    /// is then visible to [`Mailbox::pending_receipts`]. `Sync`, so that a
    /// connection can hold several while it serves other frames.
    pub receipt_kept: ReceiptKeptFuture,
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
    /// Position in the device's receipt queue.
    pub cursor: Cursor,
    /// The account whose device acked the envelope.
    pub recipient: AccountId,
    /// That device.
    pub recipient_device: u32,
    /// The envelope's message id.
    pub message_id: [u8; MESSAGE_ID_LEN],
    /// The envelope's accept id (0 for a receipt made before accept ids).
    pub accept_id: u64,
}

/// One envelope queued for a device.
#[derive(Clone, Debug)]
pub struct QueuedMail {
    /// Its position in the device's queue: read after it for what follows.
    pub cursor: Cursor,
    /// The encoded `Envelope`, as the send stored it (without its accept
    /// id, which is added when pushed).
    pub envelope: Vec<u8>,
    /// The accept id of the send the envelope belongs to (0 for a copy
    /// kept by a relay too old to assign them and not yet migrated).
    pub accept_id: u64,
}

/// Queues per device, and receipts per sending device. See the
/// [module docs](super) for the contract.
pub trait Mailbox: Send + Sync + 'static {
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
        after: Option<Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> impl Future<Output = StorageResult<Vec<QueuedMail>>> + Send;

    /// Envelopes queued for a device.
    fn queued_count(
        &self,
        account: AccountId,
        device: u32,
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Delete the queued copy `of` names for a device and keep a `Delivered` receipt for the sending device until that
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

    /// The consent (or revocation) kept for (`customer`, `business`).
    fn consent(
        &self,
        customer: AccountId,
        business: AccountId,
    ) -> impl Future<Output = StorageResult<Option<ConsentRecord>>> + Send;

    /// Every consent kept for `customer`, by business.
    fn consents_of(
        &self,
        customer: AccountId,
    ) -> impl Future<Output = StorageResult<Vec<ConsentRecord>>> + Send;

    /// Every consent kept for `business` (from any customer), by customer.
    fn consents_for(
        &self,
        business: AccountId,
    ) -> impl Future<Output = StorageResult<Vec<ConsentRecord>>> + Send;

    /// Keep `record` if its counter is higher than the pair's kept one
    /// (durable on return); else nothing is written.
    fn set_consent(
        &self,
        record: ConsentRecord,
    ) -> impl Future<Output = StorageResult<ConsentSet>> + Send;

    /// The recipient blocked the sender: count the block (so an accept
    /// decided before it is refused) and delete every copy `sender` has
    /// queued for `devices` of `recipient` (its current devices: only
    /// their queues are read), without receipts, together;
    /// durable on return. Returns how many copies were deleted.
    fn remove_queued_from(
        &self,
        recipient: AccountId,
        devices: Vec<u32>,
        sender: AccountId,
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// How many times `blocker` blocked `blocked` (read when deciding a
    /// send of `blocked` to `blocker`).
    fn block_epoch(
        &self,
        blocker: AccountId,
        blocked: AccountId,
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// The customer blocked the business: mark the pair's consent revoked
    /// (durable on return). Nothing to do if none is kept.
    fn revoke_consent_by_block(
        &self,
        customer: AccountId,
        business: AccountId,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// The relay's accept time of `customer`'s last conversation message
    /// to `business` (the 24-hour window runs from it), if it ever wrote.
    fn last_customer_message(
        &self,
        business: AccountId,
        customer: AccountId,
    ) -> impl Future<Output = StorageResult<Option<u64>>> + Send;

    /// The ledger entry of the send whose copy `of` names, if that copy is
    /// queued for the device and the send is billed: its ack must then be
    /// signed (see [`Mailbox::acknowledge_delivered`]).
    fn billed_copy(
        &self,
        account: AccountId,
        device: u32,
        of: AckOf,
    ) -> impl Future<Output = StorageResult<Option<LedgerEntry>>> + Send;

    /// [`Mailbox::acknowledge`] of a billed copy whose signed ack was
    /// checked: the deletion, the receipt and, if no device of the
    /// customer acked this send before, `delivered` are written together
    /// (one per accept id, across restarts). `None` (nothing written) if
    /// the copy queued is not of `delivered.accept_id`.
    fn acknowledge_delivered(
        &self,
        account: AccountId,
        device: u32,
        of: AckOf,
        receipt_expires_at_ms: u64,
        delivered: DeliveredEntry,
    ) -> impl Future<Output = StorageResult<Option<Acked>>> + Send;

    /// The ledger entry and signed first delivery of the billed send
    /// `accept_id`, if one device of the customer acked it (durable once
    /// that device's receipt is pending).
    fn delivered_entry(
        &self,
        accept_id: u64,
    ) -> impl Future<Output = StorageResult<Option<(LedgerEntry, DeliveredEntry)>>> + Send;

    /// Up to `limit` durable, unexpired receipts kept for a (sending)
    /// device after `after`, oldest first.
    fn pending_receipts(
        &self,
        account: AccountId,
        device: u32,
        after: Option<Cursor>,
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

    /// Forget a removed device's queue (durably: it must not come back
    /// after a crash). Returns the envelopes dropped.
    fn remove_queue(
        &self,
        account: AccountId,
        device: u32,
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Envelopes queued in total (for the queue-depth gauge at start).
    fn total_queued(&self) -> impl Future<Output = StorageResult<u64>> + Send;
}
