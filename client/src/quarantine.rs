//! Envelopes this device could not decode, attribute or decrypt: kept aside
//! (sealed in the store like every record) for inspection, counted, and
//! acknowledged, so that no envelope can stall a device's mail.
//!
//! The quarantine is bounded: at most [`MAX_QUARANTINED`] envelopes and
//! [`MAX_QUARANTINE_BYTES`] of stored records. Putting one more aside
//! drops the oldest until both bounds hold again; every envelope dropped
//! that way is counted ([`dropped`]), so a sender flooding the device with
//! garbage cannot fill its disk, and the user still learns how many went.

use comptoir_protocol::proto::wire::Envelope;
use prost::Message;

use crate::error::{ClientError, Result};
use crate::store::{Store, Tree};

const QUARANTINE_RECORD_VERSION: u32 = 1;

/// Envelopes kept aside at most. Each is at most one maximal envelope
/// (256 KiB), so the byte bound below is the one that bites for big ones.
pub const MAX_QUARANTINED: usize = 1000;
/// Stored bytes of quarantine records at most (sealed sizes): room for a
/// thousand ordinary envelopes, or 64 maximal ones.
pub const MAX_QUARANTINE_BYTES: usize = 16 * 1024 * 1024;

/// Where the quarantine's running totals are kept (in the guards tree, so
/// a scan of the quarantine sees envelopes only).
const STATS_KEY: &[u8] = b"quarantine-stats";

/// Running totals, so a put never rescans the quarantine.
#[derive(Clone, PartialEq, Message)]
struct Stats {
    /// Envelopes kept.
    #[prost(uint64, tag = "1")]
    count: u64,
    /// Their stored (sealed) bytes.
    #[prost(uint64, tag = "2")]
    bytes: u64,
    /// Envelopes dropped to keep the bounds, ever.
    #[prost(uint64, tag = "3")]
    dropped: u64,
}

fn load_stats(store: &Store) -> Result<Stats> {
    match store.get(Tree::Guards, STATS_KEY)? {
        Some(bytes) => Stats::decode(bytes.as_slice())
            .map_err(|e| ClientError::CorruptStore(format!("quarantine totals: {e}"))),
        // A store from before the bound: count what is there once.
        None => {
            let sizes = store.sizes(Tree::Quarantine, &[])?;
            Ok(Stats {
                count: sizes.len() as u64,
                bytes: sizes.iter().map(|(_, len)| *len as u64).sum(),
                dropped: 0,
            })
        }
    }
}

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

/// Keep `envelope` aside with `reason`, dropping the oldest envelopes
/// beyond the bounds (the caller flushes, then acks).
pub fn put(store: &Store, envelope: &Envelope, reason: &str, now_ms: u64) -> Result<()> {
    put_bounded(
        store,
        envelope,
        reason,
        now_ms,
        MAX_QUARANTINED,
        MAX_QUARANTINE_BYTES,
    )
}

fn put_bounded(
    store: &Store,
    envelope: &Envelope,
    reason: &str,
    now_ms: u64,
    max_count: usize,
    max_bytes: usize,
) -> Result<()> {
    let record = QuarantineRecord {
        version: QUARANTINE_RECORD_VERSION,
        envelope: Some(envelope.clone()),
        reason: reason.to_owned(),
        stored_at_ms: now_ms,
    };
    let mut stats = load_stats(store)?;
    // Keys are increasing sequence numbers: the first is the oldest.
    let key = store.next_sequence()?.to_be_bytes();
    store.put(Tree::Quarantine, &key, &record.encode_to_vec())?;
    // Keys are all 8 bytes: this prefix is the new record alone.
    let stored = store.sizes(Tree::Quarantine, &key)?;
    stats.count += 1;
    stats.bytes += stored.iter().map(|(_, len)| *len as u64).sum::<u64>();
    while stats.count > max_count as u64 || stats.bytes > max_bytes as u64 {
        let Some((oldest, len)) = store.first_size(Tree::Quarantine)? else {
            stats.count = 0;
            stats.bytes = 0;
            break;
        };
        store.remove(Tree::Quarantine, &oldest)?;
        stats.count = stats.count.saturating_sub(1);
        stats.bytes = stats.bytes.saturating_sub(len as u64);
        stats.dropped = stats.dropped.saturating_add(1);
    }
    store.put(Tree::Guards, STATS_KEY, &stats.encode_to_vec())
}

/// How many envelopes were dropped from the quarantine to keep it within
/// its bounds, since this store was created.
pub fn dropped(store: &Store) -> Result<u64> {
    Ok(load_stats(store)?.dropped)
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
    store.count(Tree::Quarantine, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FAST_TEST_KDF;

    fn envelope(n: usize, ciphertext: usize) -> Envelope {
        Envelope {
            message_id: (n as u64).to_be_bytes().to_vec(),
            ciphertext: vec![0x5a; ciphertext],
            ..Envelope::default()
        }
    }

    #[test]
    fn the_quarantine_keeps_the_newest_within_its_count_and_bytes() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST_TEST_KDF)?;
        let (max_count, max_bytes) = (20, 64 * 1024);
        for n in 0..max_count + 5 {
            put_bounded(
                &store,
                &envelope(n, 16),
                &format!("reason {n}"),
                1,
                max_count,
                max_bytes,
            )?;
        }
        assert_eq!(count(&store)?, max_count);
        assert_eq!(dropped(&store)?, 5);
        let kept = list(&store)?;
        assert_eq!(kept.first().map(|q| q.reason.as_str()), Some("reason 5"));
        assert_eq!(
            kept.last().map(|q| q.reason.clone()),
            Some(format!("reason {}", max_count + 4))
        );

        // Big envelopes: the byte bound drops the oldest first.
        let big = 10 * 1024;
        let rounds = max_bytes / big + 4;
        for n in 0..rounds {
            put_bounded(&store, &envelope(n, big), "big", 2, max_count, max_bytes)?;
        }
        let stored: usize = store
            .sizes(Tree::Quarantine, &[])?
            .iter()
            .map(|(_, len)| len)
            .sum();
        assert!(stored <= max_bytes, "{stored} bytes kept");
        let kept = list(&store)?;
        assert!(
            kept.iter().all(|q| q.reason == "big"),
            "the small ones went first"
        );
        assert!(kept.len() < rounds);
        assert_eq!(
            dropped(&store)?,
            5 + max_count as u64 + (rounds - kept.len()) as u64
        );
        // The public bounds hold what an ordinary flood needs.
        const { assert!(MAX_QUARANTINED * 1024 <= MAX_QUARANTINE_BYTES) };
        Ok(())
    }
}
