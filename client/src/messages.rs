//! Message history and the outbox, sealed in the [`Store`].
//!
//! Records are keyed by `peer account (16) || message id (16)`, so ids
//! chosen by one peer cannot collide with another's. A message's status
//! only moves forward: pending → accepted → delivered → read, or
//! pending → failed. A status change writes a one-byte record of its own
//! (tree `MessageStatuses`, same key) instead of the whole message again:
//! a message's status is that record's when there is one, else the one
//! stored with the message; [`save`] folds it back in.

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

fn encode_status(status: Status) -> u8 {
    // `to_i32` is 0 to 4.
    status.to_i32() as u8
}

fn decode_status(bytes: &[u8]) -> Result<Status> {
    match bytes {
        [code] => Status::from_i32(i32::from(*code)),
        _ => Err(ClientError::CorruptStore("a message status record".into())),
    }
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

/// Store a message (not flushed), with its status: a status record an
/// earlier [`advance`] left is folded in (removed).
pub fn save(store: &Store, message: &StoredMessage) -> Result<()> {
    let key = key(&message.peer, &message.id);
    store.put(Tree::Messages, &key, &encode(message))?;
    store.remove(Tree::MessageStatuses, &key)
}

/// One message.
pub fn get(store: &Store, peer: &AccountId, id: &MessageId) -> Result<Option<StoredMessage>> {
    let key = key(peer, id);
    let Some(bytes) = store.get(Tree::Messages, &key)? else {
        return Ok(None);
    };
    let mut message = decode(&bytes)?;
    if let Some(status) = store.get(Tree::MessageStatuses, &key)? {
        message.status = decode_status(&status)?;
    }
    Ok(Some(message))
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
    store.put(
        Tree::MessageStatuses,
        &key(peer, id),
        &[encode_status(next)],
    )?;
    Ok(Some(message))
}

/// The conversation with one peer, in the order this device stored it.
pub fn history(store: &Store, peer: &AccountId) -> Result<Vec<StoredMessage>> {
    let mut statuses = store
        .scan(Tree::MessageStatuses, peer.as_bytes())?
        .into_iter()
        .peekable();
    let mut out = Vec::new();
    // Both scans are in key order, and a status record's message is
    // always stored: one pass pairs them.
    for (key, bytes) in store.scan(Tree::Messages, peer.as_bytes())? {
        let mut message = decode(&bytes)?;
        while let Some((status_key, status)) = statuses.next_if(|(k, _)| *k <= key) {
            if status_key == key {
                message.status = decode_status(&status)?;
            }
        }
        out.push(message);
    }
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
    use super::*;
    use crate::store::FAST_TEST_KDF;

    /// A fresh store in a temporary directory (kept while it is open).
    fn new_store() -> Result<(tempfile::TempDir, Store)> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("temp dir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST_TEST_KDF)?;
        Ok((dir, store))
    }

    fn ids() -> (AccountId, MessageId) {
        match AccountId::from_bytes(&[7; 16]) {
            Ok(peer) => (peer, MessageId([9; MESSAGE_ID_LEN])),
            Err(e) => panic!("account id: {e}"),
        }
    }

    fn message(peer: AccountId, id: MessageId, sequence: u64) -> StoredMessage {
        StoredMessage {
            id,
            peer,
            outgoing: true,
            body: "x".repeat(4000),
            sent_at_ms: 1,
            stored_at_ms: 2,
            status: Pending,
            sequence,
        }
    }

    /// The status the message record itself holds (not the overlay).
    fn status_in_message_record(store: &Store, peer: &AccountId, id: &MessageId) -> Status {
        match store.get(Tree::Messages, &key(peer, id)) {
            Ok(Some(bytes)) => decode(&bytes).map_or(Failed, |m| m.status),
            _ => panic!("the message record is gone"),
        }
    }

    #[test]
    fn a_status_change_writes_the_status_not_the_message_again() -> Result<()> {
        let (dir, store) = new_store()?;
        let (peer, id) = ids();
        save(&store, &message(peer, id, 1))?;
        let advanced = advance(&store, &peer, &id, Accepted)?.map(|m| m.status);
        assert_eq!(advanced, Some(Accepted));
        // The 4 KB message record is as it was written; the status is
        // its own record, and every read sees it.
        assert_eq!(status_in_message_record(&store, &peer, &id), Pending);
        assert_eq!(get(&store, &peer, &id)?.map(|m| m.status), Some(Accepted));
        assert_eq!(
            advance(&store, &peer, &id, Delivered)?.map(|m| m.status),
            Some(Delivered)
        );
        // Backwards is refused, as before.
        assert_eq!(advance(&store, &peer, &id, Accepted)?, None);
        assert_eq!(history(&store, &peer)?[0].status, Delivered);
        // Durable across a reopen.
        store.close()?;
        let store = Store::open(dir.path(), "pw-long-enough")?;
        assert_eq!(get(&store, &peer, &id)?.map(|m| m.status), Some(Delivered));
        Ok(())
    }

    #[test]
    fn history_pairs_each_message_with_its_own_status() -> Result<()> {
        let (_dir, store) = new_store()?;
        let (peer, _) = ids();
        let other = AccountId::from_bytes(&[8; 16])?;
        let id = |n: u8| MessageId([n; MESSAGE_ID_LEN]);
        for n in 1..=5 {
            save(&store, &message(peer, id(n), u64::from(n)))?;
            save(&store, &message(other, id(n), u64::from(n)))?;
        }
        advance(&store, &peer, &id(2), Accepted)?;
        advance(&store, &peer, &id(4), Failed)?;
        advance(&store, &other, &id(1), Read)?;
        let statuses: Vec<Status> = history(&store, &peer)?.iter().map(|m| m.status).collect();
        assert_eq!(statuses, [Pending, Accepted, Pending, Failed, Pending]);
        let statuses: Vec<Status> = history(&store, &other)?.iter().map(|m| m.status).collect();
        assert_eq!(statuses, [Read, Pending, Pending, Pending, Pending]);
        Ok(())
    }

    #[test]
    fn saving_a_message_folds_its_status_record_in() -> Result<()> {
        let (_dir, store) = new_store()?;
        let (peer, id) = ids();
        save(&store, &message(peer, id, 1))?;
        advance(&store, &peer, &id, Accepted)?;
        let Some(read_back) = get(&store, &peer, &id)? else {
            panic!("the message is gone")
        };
        save(&store, &read_back)?;
        assert!(!store.contains(Tree::MessageStatuses, &key(&peer, &id))?);
        assert_eq!(status_in_message_record(&store, &peer, &id), Accepted);
        assert_eq!(get(&store, &peer, &id)?.map(|m| m.status), Some(Accepted));
        Ok(())
    }

    #[test]
    fn deleting_a_conversation_deletes_its_statuses() -> Result<()> {
        let (_dir, store) = new_store()?;
        let (peer, id) = ids();
        let other = AccountId::from_bytes(&[8; 16])?;
        for account in [peer, other] {
            save(&store, &message(account, id, 1))?;
            advance(&store, &account, &id, Accepted)?;
        }
        crate::requests::delete(&store, &peer)?;
        assert!(
            store
                .scan(Tree::MessageStatuses, peer.as_bytes())?
                .is_empty()
        );
        assert!(history(&store, &peer)?.is_empty());
        // The other conversation keeps its own.
        assert_eq!(get(&store, &other, &id)?.map(|m| m.status), Some(Accepted));
        Ok(())
    }

    #[test]
    fn a_damaged_status_record_is_a_typed_error() -> Result<()> {
        let (_dir, store) = new_store()?;
        let (peer, id) = ids();
        save(&store, &message(peer, id, 1))?;
        for bad in [&[9u8][..], &[], &[1, 1]] {
            store.put(Tree::MessageStatuses, &key(&peer, &id), bad)?;
            assert!(matches!(
                get(&store, &peer, &id),
                Err(ClientError::CorruptStore(_))
            ));
            assert!(matches!(
                history(&store, &peer),
                Err(ClientError::CorruptStore(_))
            ));
        }
        Ok(())
    }

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
