//! Control messages waiting to be sent, beside the outbox of messages
//! ([`crate::messages::outbox`]): read receipts, and the copies of sent
//! messages and read states for this account's other devices. Each waits
//! here (durably) from the moment it is decided until the relay accepted
//! it, so a lost connection or a restart delays it but never drops it.
//!
//! Keyed by a store sequence number (u64 BE), so they go in the order they
//! were queued. A record holds what to encrypt and, once encrypted, the
//! `Send` to put on the connection as is (a message key is neither used
//! twice nor skipped); it is encrypted again only when the recipient's
//! device list changed.

use std::fmt;

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::Content;
use prost::Message;

use crate::error::{ClientError, Result};
use crate::messages::MessageId;
use crate::store::{Store, Tree};

const CONTROL_RECORD_VERSION: u32 = 1;

/// One control message waiting to be sent.
#[derive(Clone, PartialEq)]
pub struct QueuedControl {
    /// Where it sits in the queue (the store key).
    pub sequence: u64,
    /// Who it goes to: a peer (a receipt) or this account (a copy).
    pub recipient: AccountId,
    /// The id it is sent under.
    pub id: MessageId,
    /// What to encrypt.
    pub content: Content,
    /// The time it carries (ms since the Unix epoch).
    pub at_ms: u64,
    /// The encrypted `Send`, once encrypted (empty before).
    pub frame: Vec<u8>,
}

impl fmt::Debug for QueuedControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedControl")
            .field("sequence", &self.sequence)
            .field("recipient", &self.recipient)
            .field("id", &self.id)
            .field("encrypted", &!self.frame.is_empty())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
struct ControlRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(bytes = "vec", tag = "2")]
    recipient: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    message_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    content: Vec<u8>,
    #[prost(uint64, tag = "5")]
    at_ms: u64,
    #[prost(bytes = "vec", tag = "6")]
    frame: Vec<u8>,
}

impl fmt::Debug for ControlRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControlRecord(..)")
    }
}

/// Queue `content` for `recipient` under `id` (not flushed); returns the
/// queued entry.
pub fn put(
    store: &Store,
    recipient: AccountId,
    id: MessageId,
    content: Content,
    at_ms: u64,
) -> Result<QueuedControl> {
    let queued = QueuedControl {
        sequence: store.next_sequence()?,
        recipient,
        id,
        content,
        at_ms,
        frame: Vec::new(),
    };
    save(store, &queued)?;
    Ok(queued)
}

/// Write `queued` back (its frame changed). Not flushed.
pub fn save(store: &Store, queued: &QueuedControl) -> Result<()> {
    let record = ControlRecord {
        version: CONTROL_RECORD_VERSION,
        recipient: queued.recipient.to_vec(),
        message_id: queued.id.0.to_vec(),
        content: queued.content.encode_to_vec(),
        at_ms: queued.at_ms,
        frame: queued.frame.clone(),
    };
    store.put(
        Tree::ControlOutbox,
        &queued.sequence.to_be_bytes(),
        &record.encode_to_vec(),
    )
}

/// Take a sent (or refused for good) entry out of the queue. Not flushed.
pub fn remove(store: &Store, sequence: u64) -> Result<()> {
    store.remove(Tree::ControlOutbox, &sequence.to_be_bytes())
}

/// Everything waiting, oldest first.
pub fn all(store: &Store) -> Result<Vec<QueuedControl>> {
    let corrupt = || ClientError::CorruptStore("a queued control message".into());
    store
        .scan(Tree::ControlOutbox, &[])?
        .into_iter()
        .map(|(key, bytes)| {
            let sequence = u64::from_be_bytes(key.as_slice().try_into().map_err(|_| corrupt())?);
            let record = ControlRecord::decode(bytes.as_slice()).map_err(|_| corrupt())?;
            Ok(QueuedControl {
                sequence,
                recipient: AccountId::from_bytes(&record.recipient).map_err(|_| corrupt())?,
                id: MessageId::from_bytes(&record.message_id).ok_or_else(corrupt)?,
                content: Content::decode(record.content.as_slice()).map_err(|_| corrupt())?,
                at_ms: record.at_ms,
                frame: record.frame,
            })
        })
        .collect()
}

/// How many control messages wait.
pub fn len(store: &Store) -> Result<usize> {
    Ok(store.scan(Tree::ControlOutbox, &[])?.len())
}
