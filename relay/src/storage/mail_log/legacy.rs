//! Accept ids for what a log of format 3 or older holds (written before
//! the relay assigned accept ids), assigned at open.
//!
//! A copy's accept id is the lowest seq among the copies of its send that
//! the old records name (the seq of its first copy when its `Message`
//! record is still there): deterministic from the old segments, so every
//! open before the first checkpoint assigns the same ids, and the
//! checkpoint, which is requested at once, writes them out explicitly. It
//! keeps the property acks by accept id rely on (each copy's seq is at or
//! after its send's accept id, and no other send's copy lies between).
//! An idempotency entry whose copies are all gone gets a fresh id from the
//! sequence; every migrated idempotency entry is written again in format 4
//! at open, before the relay serves anyone, so a retried send is answered
//! with the same accept id from then on. Receipts made before accept ids
//! keep none (their `Delivered` carries 0).

use std::collections::HashMap;

use comptoir_protocol::AccountId;

use super::index::{Index, SentEntry, SentKey};
use super::record::{LEGACY_ACCEPT_ID, Origin};

/// What replay saw of sends without accept ids.
#[derive(Debug, Default)]
pub(super) struct Legacy {
    /// Lowest copy seq seen per send.
    lowest: HashMap<SentKey, u64>,
    /// Whether any record without an accept id was replayed.
    seen: bool,
}

impl Legacy {
    /// Note the copies of a replayed `Message` or `Queued` record (only
    /// records without an accept id count).
    pub(super) fn note(
        &mut self,
        origin: &Origin,
        recipient: AccountId,
        seqs: impl IntoIterator<Item = u64>,
    ) {
        if origin.accept_id != LEGACY_ACCEPT_ID {
            return;
        }
        self.seen = true;
        let key = (origin.sender, recipient, origin.message_id);
        for seq in seqs {
            let lowest = self.lowest.entry(key).or_insert(seq);
            *lowest = (*lowest).min(seq);
        }
    }

    /// Note an idempotency entry replayed without an accept id.
    pub(super) fn note_sent(&mut self, accept_id: u64) {
        if accept_id == LEGACY_ACCEPT_ID {
            self.seen = true;
        }
    }

    /// Whether the log held records without accept ids.
    pub(super) fn seen(&self) -> bool {
        self.seen
    }

    /// Give every copy and idempotency entry of the index that has no
    /// accept id one (fresh ones from `next_seq`). Returns the idempotency
    /// entries so assigned, to be written again.
    pub(super) fn assign(self, index: &mut Index, next_seq: &mut u64) -> Vec<(SentKey, SentEntry)> {
        for (&(account, _), queue) in index.devices.iter_mut() {
            for (&seq, entry) in queue.by_seq.iter_mut() {
                if entry.origin.accept_id == LEGACY_ACCEPT_ID {
                    let key = (entry.origin.sender, account, entry.origin.message_id);
                    entry.origin.accept_id = self.lowest.get(&key).copied().unwrap_or(seq);
                }
            }
        }
        let mut assigned = Vec::new();
        for (key, entry) in index.sent.entries_mut() {
            if entry.accept_id != LEGACY_ACCEPT_ID {
                continue;
            }
            entry.accept_id = match self.lowest.get(key) {
                Some(&lowest) => lowest,
                None => {
                    let fresh = *next_seq;
                    *next_seq += 1;
                    fresh
                }
            };
            assigned.push((*key, *entry));
        }
        assigned
    }
}
