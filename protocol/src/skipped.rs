//! Message keys kept for messages that have not arrived yet (out-of-order
//! delivery), bounded per chain by [`MAX_SKIP`] and overall by
//! [`MAX_SKIPPED_KEYS`], evicting the oldest first.

use std::collections::VecDeque;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::kdf::finish_message_key;
use crate::keys::KEY_LEN;

/// Most message keys one incoming message may make us skip in one chain.
/// A larger gap is refused with [`crate::Error::TooManySkippedMessages`]
/// rather than spending unbounded work; 1,000 covers a phone that was offline
/// through a long burst of notifications.
pub const MAX_SKIP: u32 = 1000;

/// Most skipped message keys stored per session, over all chains. Beyond it
/// the oldest key is evicted: its message, if it ever arrives, fails with
/// [`crate::Error::MessageKeyEvicted`] and the client asks for a re-send.
/// 2,000 keys cost about 144 KiB in memory (72 bytes each).
pub const MAX_SKIPPED_KEYS: usize = 2000;

/// One skipped message key. Kept in place once stored: using or evicting it
/// wipes its bytes where they lie and marks it gone, so no copy of a key is
/// ever moved around the heap.
///
/// A key derived here by a gap is kept *deferred*, one compression short of
/// the message key (see [`crate::kdf::ChainStepper::step_deferred`]): the
/// outer HMAC state of its chain key and the inner digest, which together
/// give this message key and nothing else. A key read from a record written
/// before deferral (32 bytes) is kept finished.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct SkippedKey {
    /// Deferred: the outer HMAC state. Finished: unused (zero).
    outer: [u32; 8],
    /// Deferred: the inner digest. Finished: the message key.
    key: [u8; KEY_LEN],
    index: u32,
    live: bool,
    deferred: bool,
}

/// Length of a deferred key as stored: the outer state (big-endian words)
/// then the inner digest.
pub(crate) const DEFERRED_KEY_LEN: usize = 2 * KEY_LEN;

impl SkippedKey {
    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    /// The message key (finishing a deferred one: one compression).
    pub(crate) fn message_key(&self) -> Zeroizing<[u8; KEY_LEN]> {
        if self.deferred {
            finish_message_key(&self.outer, &self.key)
        } else {
            Zeroizing::new(self.key)
        }
    }

    /// The key as a record stores it: 32 bytes (a finished message key) or
    /// [`DEFERRED_KEY_LEN`] bytes (a deferred one). The caller wipes it.
    pub(crate) fn stored_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DEFERRED_KEY_LEN);
        if self.deferred {
            for word in &self.outer {
                out.extend_from_slice(&word.to_be_bytes());
            }
        }
        out.extend_from_slice(&self.key);
        out
    }

    fn consume(&mut self) {
        self.outer.zeroize();
        self.key.zeroize();
        self.live = false;
    }
}

/// The skipped keys of one chain from one stored batch, ascending by
/// index, in one allocation made at its exact size and never grown: a
/// 1,000-message gap costs one allocation, not a thousand.
#[derive(Clone)]
pub(crate) struct SkippedRun {
    pub(crate) ratchet_key: [u8; KEY_LEN],
    keys: Vec<SkippedKey>,
    /// Keys before this position are all gone.
    front: usize,
    live: usize,
}

impl SkippedRun {
    /// The keys still held, ascending.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &SkippedKey> {
        self.keys[self.front..].iter().filter(|k| k.live)
    }

    fn covers(&self, index: u32) -> bool {
        match (self.keys.first(), self.keys.last()) {
            (Some(first), Some(last)) => first.index <= index && index <= last.index,
            _ => false,
        }
    }
}

/// A batch of skipped keys being built: filled in place, in ascending
/// order, then handed to [`SkippedKeys::insert`].
pub(crate) struct SkippedBatch {
    keys: Vec<SkippedKey>,
}

impl SkippedBatch {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            keys: Vec::with_capacity(capacity),
        }
    }

    /// Append the key for `index`, written in place by `fill`: deferred (the
    /// outer state and the inner digest) if `deferred`, else a finished
    /// message key in the second argument. Indices must ascend.
    pub(crate) fn push_key(
        &mut self,
        index: u32,
        deferred: bool,
        fill: impl FnOnce(&mut [u32; 8], &mut [u8; KEY_LEN]),
    ) {
        self.keys.push(SkippedKey {
            outer: [0; 8],
            key: [0u8; KEY_LEN],
            index,
            live: true,
            deferred,
        });
        if let Some(slot) = self.keys.last_mut() {
            fill(&mut slot.outer, &mut slot.key);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// How many chains' eviction watermarks are remembered.
const MAX_EVICTED_CHAINS: usize = 64;

/// All skipped keys of one session, oldest batch first.
#[derive(Clone, Default)]
pub(crate) struct SkippedKeys {
    runs: VecDeque<SkippedRun>,
    total: usize,
    /// Per chain, the index below which keys were evicted by the cap.
    evicted: VecDeque<([u8; KEY_LEN], u32)>,
}

/// Where a key sits: (run position, key position).
#[derive(Clone, Copy)]
pub(crate) struct SkippedSlot(usize, usize);

impl SkippedKeys {
    pub(crate) fn len(&self) -> usize {
        self.total
    }

    /// The batches still holding keys, oldest first (for serialization;
    /// consecutive batches may belong to the same chain).
    pub(crate) fn runs(&self) -> impl Iterator<Item = &SkippedRun> {
        self.runs.iter()
    }

    /// Eviction watermarks, oldest chain first (for serialization).
    pub(crate) fn evicted(&self) -> impl Iterator<Item = &([u8; KEY_LEN], u32)> {
        self.evicted.iter()
    }

    /// Restore a watermark (deserialization).
    pub(crate) fn restore_evicted(&mut self, ratchet_key: [u8; KEY_LEN], below: u32) {
        self.note_evicted(ratchet_key, below);
    }

    /// Whether the key for `index` in this chain may have been evicted.
    pub(crate) fn was_evicted(&self, ratchet_key: &[u8; KEY_LEN], index: u32) -> bool {
        self.evicted
            .iter()
            .any(|(key, below)| key == ratchet_key && index < *below)
    }

    fn note_evicted(&mut self, ratchet_key: [u8; KEY_LEN], below: u32) {
        if let Some(entry) = self.evicted.iter_mut().find(|(k, _)| *k == ratchet_key) {
            entry.1 = entry.1.max(below);
            return;
        }
        if self.evicted.len() == MAX_EVICTED_CHAINS {
            self.evicted.pop_front();
        }
        self.evicted.push_back((ratchet_key, below));
    }

    pub(crate) fn find(&self, ratchet_key: &[u8; KEY_LEN], index: u32) -> Option<SkippedSlot> {
        if self.total == 0 {
            return None;
        }
        self.runs
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, run)| run.covers(index) && &run.ratchet_key == ratchet_key)
            .find_map(|(position, run)| {
                let key = run.keys.binary_search_by_key(&index, |k| k.index).ok()?;
                run.keys[key].live.then_some(SkippedSlot(position, key))
            })
    }

    /// The message key in `slot` (finished if it was deferred).
    pub(crate) fn get(&self, slot: SkippedSlot) -> Option<Zeroizing<[u8; KEY_LEN]>> {
        self.runs
            .get(slot.0)?
            .keys
            .get(slot.1)
            .filter(|k| k.live)
            .map(SkippedKey::message_key)
    }

    pub(crate) fn remove(&mut self, slot: SkippedSlot) {
        let Some(run) = self.runs.get_mut(slot.0) else {
            return;
        };
        let Some(key) = run.keys.get_mut(slot.1).filter(|k| k.live) else {
            return;
        };
        key.consume();
        run.live -= 1;
        self.total -= 1;
        if run.live == 0 {
            self.runs.remove(slot.0);
        }
    }

    /// Add one batch of keys of one chain (ascending, all above any stored
    /// for it), then evict the oldest keys beyond [`MAX_SKIPPED_KEYS`].
    pub(crate) fn insert(&mut self, ratchet_key: [u8; KEY_LEN], batch: SkippedBatch) {
        if batch.is_empty() {
            return;
        }
        let live = batch.keys.len();
        self.total += live;
        self.runs.push_back(SkippedRun {
            ratchet_key,
            keys: batch.keys,
            front: 0,
            live,
        });
        while self.total > MAX_SKIPPED_KEYS {
            let Some(oldest) = self.runs.front_mut() else {
                break;
            };
            let ratchet_key = oldest.ratchet_key;
            let mut evicted = None;
            while let Some(key) = oldest.keys.get_mut(oldest.front) {
                oldest.front += 1;
                if key.live {
                    evicted = Some(key.index);
                    key.consume();
                    break;
                }
            }
            oldest.live = oldest.live.saturating_sub(1);
            self.total -= 1;
            if oldest.live == 0 {
                self.runs.pop_front();
            }
            if let Some(index) = evicted {
                self.note_evicted(ratchet_key, index.saturating_add(1));
            }
        }
    }
}
