//! Envelopes this device could not decode, attribute or decrypt: kept aside
//! (sealed in the store like every record) for inspection, counted, and
//! acknowledged, so that no envelope can stall a device's mail.

use comptoir_protocol::proto::wire::Envelope;
use prost::Message;

use crate::error::{ClientError, Result};
use crate::store::{Store, Tree};

const QUARANTINE_RECORD_VERSION: u32 = 1;

#[derive(Clone, PartialEq, Message)]
struct QuarantineRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(message, optional, tag = "2")]
    envelope: Option<Envelope>,
    #[prost(string, tag = "3")]
    reason: String,
    #[prost(uint64, tag = "4")]
    stored_at_ms: u64,
}

/// One envelope kept aside.
#[derive(Clone, Debug, PartialEq)]
pub struct Quarantined {
    /// The envelope as the relay delivered it.
    pub envelope: Envelope,
    /// Why it could not be used.
    pub reason: String,
    /// When it was put aside, ms since the Unix epoch.
    pub stored_at_ms: u64,
}

/// Keep `envelope` aside with `reason` (the caller flushes, then acks).
pub fn put(store: &Store, envelope: &Envelope, reason: &str, now_ms: u64) -> Result<()> {
    let record = QuarantineRecord {
        version: QUARANTINE_RECORD_VERSION,
        envelope: Some(envelope.clone()),
        reason: reason.to_owned(),
        stored_at_ms: now_ms,
    };
    let key = store.next_sequence()?.to_be_bytes();
    store.put(Tree::Quarantine, &key, &record.encode_to_vec())
}

/// Every envelope kept aside, oldest first.
pub fn list(store: &Store) -> Result<Vec<Quarantined>> {
    store
        .scan(Tree::Quarantine, &[])?
        .into_iter()
        .map(|(_, bytes)| {
            let record = QuarantineRecord::decode(bytes.as_slice())
                .map_err(|e| ClientError::CorruptStore(format!("quarantine record: {e}")))?;
            Ok(Quarantined {
                envelope: record.envelope.unwrap_or_default(),
                reason: record.reason,
                stored_at_ms: record.stored_at_ms,
            })
        })
        .collect()
}

/// How many envelopes are kept aside.
pub fn count(store: &Store) -> Result<usize> {
    Ok(store.scan(Tree::Quarantine, &[])?.len())
}
