//! Message history and the outbox, sealed in the [`Store`].
//!
//! Records are keyed by `peer account (16) || message id (16)`, so ids
//! chosen by one peer cannot collide with another's. A message's status
//! only moves forward: pending → accepted → delivered → read, or
//! pending → failed.

use std::fmt;

use comptoir_protocol::AccountId;
use prost::Message;

use crate::client::MAX_TEXT_LEN;
use crate::error::{ClientError, Result};
use crate::store::{Store, Tree};

const MESSAGE_RECORD_VERSION: u32 = 1;
/// Length of a message id.
pub const MESSAGE_ID_LEN: usize = 16;

/// A message id: 16 random bytes chosen by the sender.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; MESSAGE_ID_LEN]);

impl MessageId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let mut id = [0u8; MESSAGE_ID_LEN];
        rand::fill(&mut id);
        Self(id)
    }

    /// Parse 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// Parse the 32 hex digits [`fmt::Display`] prints.
    pub fn from_hex(text: &str) -> Option<Self> {
        hex::decode(text).ok().and_then(|b| Self::from_bytes(&b))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Where a message is in its life. Ordered: a status never goes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Written, not yet stored by the relay (in the outbox).
    Pending,
    /// Stored durably by the relay.
    Accepted,
    /// Stored by a recipient device (for an incoming message: received).
    Delivered,
    /// Read by the recipient (for an incoming message: read here).
    Read,
    /// Refused by the relay (for example: blocked); will not be retried.
    Failed,
}

impl Status {
    fn to_i32(self) -> i32 {
        match self {
            Self::Pending => 0,
            Self::Accepted => 1,
            Self::Delivered => 2,
            Self::Read => 3,
            Self::Failed => 4,
        }
    }

    fn from_i32(value: i32) -> Result<Self> {
        Ok(match value {
            0 => Self::Pending,
            1 => Self::Accepted,
            2 => Self::Delivered,
            3 => Self::Read,
            4 => Self::Failed,
            _ => return Err(ClientError::CorruptStore("unknown message status".into())),
        })
    }

    /// Whether moving from `self` to `next` goes forward.
    pub fn can_become(self, next: Status) -> bool {
        match (self, next) {
            (Self::Failed, _) => false,
            (Self::Pending, Self::Failed) => true,
            (_, Self::Failed) => false,
            (now, next) => next > now,
        }
    }

    /// A short label for display.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }
}

#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
struct MessageRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(bytes = "vec", tag = "2")]
    message_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    peer: Vec<u8>,
    #[prost(bool, tag = "4")]
    outgoing: bool,
    #[prost(string, tag = "5")]
    body: String,
    #[prost(uint64, tag = "6")]
    sent_at_ms: u64,
    #[prost(uint64, tag = "7")]
    stored_at_ms: u64,
    #[prost(int32, tag = "8")]
    status: i32,
    #[prost(uint64, tag = "9")]
    sequence: u64,
}

impl fmt::Debug for MessageRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageRecord(..)")
    }
}

/// One message of the history.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The id shared by all device copies.
    pub id: MessageId,
    /// The other side of the conversation.
    pub peer: AccountId,
    /// Whether this device's account sent it.
    pub outgoing: bool,
    /// The text.
    pub body: String,
    /// The sender's clock, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// When this device stored it, ms since the Unix epoch.
    pub stored_at_ms: u64,
    /// Where it is in its life.
    pub status: Status,
    /// Local order of storage (see [`Store::next_sequence`]).
    pub sequence: u64,
}

impl fmt::Debug for StoredMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredMessage")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("outgoing", &self.outgoing)
            .field("body_len", &self.body.len())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

fn key(peer: &AccountId, id: &MessageId) -> Vec<u8> {
    let mut key = peer.to_vec();
    key.extend_from_slice(&id.0);
    key
}

fn encode(message: &StoredMessage) -> Vec<u8> {
    MessageRecord {
        version: MESSAGE_RECORD_VERSION,
        message_id: message.id.0.to_vec(),
        peer: message.peer.to_vec(),
        outgoing: message.outgoing,
        body: message.body.clone(),
        sent_at_ms: message.sent_at_ms,
        stored_at_ms: message.stored_at_ms,
        status: message.status.to_i32(),
        sequence: message.sequence,
    }
    .encode_to_vec()
}

/// Parse a stored message record (already unsealed).
pub(crate) fn decode(bytes: &[u8]) -> Result<StoredMessage> {
    let record = MessageRecord::decode(bytes)
        .map_err(|e| ClientError::CorruptStore(format!("message record: {e}")))?;
    Ok(StoredMessage {
        id: MessageId::from_bytes(&record.message_id)
            .ok_or_else(|| ClientError::CorruptStore("message id length".into()))?,
        peer: AccountId::from_bytes(&record.peer)?,
        outgoing: record.outgoing,
        body: record.body.clone(),
        sent_at_ms: record.sent_at_ms,
        stored_at_ms: record.stored_at_ms,
        status: Status::from_i32(record.status)?,
        sequence: record.sequence,
    })
}

/// Check a text before it is written as a message: 1 to
/// [`MAX_TEXT_LEN`] bytes. Every way of sending (this library, the CLI's
/// commands, the TUI) refuses a longer one with the same
/// [`ClientError::TextTooLong`], before anything is stored.
pub fn check_text(text: &str) -> Result<()> {
    if text.is_empty() {
        return Err(ClientError::InvalidArgument(
            "a message cannot be empty".into(),
        ));
    }
    if text.len() > MAX_TEXT_LEN {
        return Err(ClientError::TextTooLong {
            len: text.len(),
            max: MAX_TEXT_LEN,
        });
    }
    Ok(())
}

/// Store a message (not flushed).
pub fn save(store: &Store, message: &StoredMessage) -> Result<()> {
    store.put(
        Tree::Messages,
        &key(&message.peer, &message.id),
        &encode(message),
    )
}

/// One message.
pub fn get(store: &Store, peer: &AccountId, id: &MessageId) -> Result<Option<StoredMessage>> {
    store
        .get(Tree::Messages, &key(peer, id))?
        .map(|bytes| decode(&bytes))
        .transpose()
}

/// Whether a message is already stored (deduplication).
pub fn contains(store: &Store, peer: &AccountId, id: &MessageId) -> Result<bool> {
    store.contains(Tree::Messages, &key(peer, id))
}

/// Move a message's status forward. Returns the message if it changed.
pub fn advance(
    store: &Store,
    peer: &AccountId,
    id: &MessageId,
    next: Status,
) -> Result<Option<StoredMessage>> {
    // A sender task and the receipt handler may advance one message at once.
    let _updating = store.updating();
    let Some(mut message) = get(store, peer, id)? else {
        return Ok(None);
    };
    if !message.status.can_become(next) {
        return Ok(None);
    }
    message.status = next;
    save(store, &message)?;
    Ok(Some(message))
}

/// The conversation with one peer, in the order this device stored it.
pub fn history(store: &Store, peer: &AccountId) -> Result<Vec<StoredMessage>> {
    let mut out = store
        .scan(Tree::Messages, peer.as_bytes())?
        .into_iter()
        .map(|(_, bytes)| decode(&bytes))
        .collect::<Result<Vec<_>>>()?;
    out.sort_by_key(|m| m.sequence);
    Ok(out)
}

/// Every account this device has messages with.
pub fn peers(store: &Store) -> Result<Vec<AccountId>> {
    let mut out: Vec<AccountId> = Vec::new();
    for (key, _) in store.scan(Tree::Messages, &[])? {
        let peer = AccountId::from_bytes(key.get(..16).unwrap_or_default())?;
        if out.last() != Some(&peer) {
            out.push(peer);
        }
    }
    Ok(out)
}

/// Queue a message for sending (`frame` is the encrypted `Send`, or empty
/// when it still has to be encrypted). Not flushed.
pub fn outbox_put(store: &Store, peer: &AccountId, id: &MessageId, frame: &[u8]) -> Result<()> {
    store.put(Tree::Outbox, &key(peer, id), frame)
}

/// Remove a message from the outbox.
pub fn outbox_remove(store: &Store, peer: &AccountId, id: &MessageId) -> Result<()> {
    store.remove(Tree::Outbox, &key(peer, id))
}

/// Everything in the outbox: `(peer, id, encrypted Send or empty)`.
pub fn outbox(store: &Store) -> Result<Vec<(AccountId, MessageId, Vec<u8>)>> {
    store
        .scan(Tree::Outbox, &[])?
        .into_iter()
        .map(|(key, frame)| {
            if key.len() != 32 {
                return Err(ClientError::CorruptStore("outbox key length".into()));
            }
            let peer = AccountId::from_bytes(&key[..16])?;
            let id = MessageId::from_bytes(&key[16..])
                .ok_or_else(|| ClientError::CorruptStore("outbox key length".into()))?;
            Ok((peer, id, frame.to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Status::*;

    #[test]
    fn statuses_never_go_backwards() {
        assert!(Pending.can_become(Accepted));
        assert!(Pending.can_become(Delivered));
        assert!(Accepted.can_become(Read));
        assert!(!Delivered.can_become(Accepted));
        assert!(!Read.can_become(Delivered));
        assert!(!Read.can_become(Read));
        assert!(Pending.can_become(Failed));
        assert!(!Accepted.can_become(Failed));
        assert!(!Failed.can_become(Accepted));
    }
}
