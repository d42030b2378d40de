//! Message keys kept for messages that have not arrived yet (out-of-order
//! delivery), bounded per chain by [`MAX_SKIP`] and overall by
//! [`MAX_SKIPPED_KEYS`], evicting the oldest first.

use std::collections::VecDeque;

use crate::kdf::MessageKey;
use crate::keys::KEY_LEN;

/// Most message keys one incoming message may make us skip in one chain.
/// A larger gap is refused with [`crate::Error::TooManySkippedMessages`]
/// rather than spending unbounded work; 1,000 covers a phone that was offline
/// through a long burst of notifications.
pub const MAX_SKIP: u32 = 1000;

/// Most skipped message keys stored per session, over all chains. Beyond it
/// the oldest key is evicted: its message, if it ever arrives, fails with
/// [`crate::Error::MessageKeyEvicted`] and the client asks for a re-send.
/// 2,000 keys cost about 72 KiB.
pub const MAX_SKIPPED_KEYS: usize = 2000;

/// Skipped keys of one receiving chain, ascending by index.
#[derive(Clone)]
pub(crate) struct SkippedChain {
    pub(crate) ratchet_key: [u8; KEY_LEN],
    pub(crate) keys: VecDeque<MessageKey>,
}

/// How many chains' eviction watermarks are remembered.
const MAX_EVICTED_CHAINS: usize = 64;

/// All skipped keys of one session, oldest chain first.
#[derive(Clone, Default)]
pub(crate) struct SkippedKeys {
    chains: VecDeque<SkippedChain>,
    total: usize,
    /// Per chain, the index below which keys were evicted by the cap.
    evicted: VecDeque<([u8; KEY_LEN], u32)>,
}

/// Where a key sits: (chain position, key position).
#[derive(Clone, Copy)]
pub(crate) struct SkippedSlot(usize, usize);

impl SkippedKeys {
    pub(crate) fn len(&self) -> usize {
        self.total
    }

    pub(crate) fn chains(&self) -> impl Iterator<Item = &SkippedChain> {
        self.chains.iter()
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
        let chain = self
            .chains
            .iter()
            .rposition(|c| &c.ratchet_key == ratchet_key)?;
        let key = self.chains[chain]
            .keys
            .binary_search_by_key(&index, |k| k.index())
            .ok()?;
        Some(SkippedSlot(chain, key))
    }

    pub(crate) fn get(&self, slot: SkippedSlot) -> Option<&MessageKey> {
        self.chains.get(slot.0)?.keys.get(slot.1)
    }

    pub(crate) fn remove(&mut self, slot: SkippedSlot) {
        if let Some(chain) = self.chains.get_mut(slot.0) {
            if chain.keys.remove(slot.1).is_some() {
                self.total -= 1;
            }
            if chain.keys.is_empty() {
                self.chains.remove(slot.0);
            }
        }
    }

    /// Add keys of one chain (ascending, all above any stored for it).
    pub(crate) fn insert(&mut self, ratchet_key: [u8; KEY_LEN], keys: Vec<MessageKey>) {
        if keys.is_empty() {
            return;
        }
        self.total += keys.len();
        match self.chains.back_mut() {
            Some(last) if last.ratchet_key == ratchet_key => last.keys.extend(keys),
            _ => self.chains.push_back(SkippedChain {
                ratchet_key,
                keys: keys.into(),
            }),
        }
        while self.total > MAX_SKIPPED_KEYS {
            let Some(oldest) = self.chains.front_mut() else {
                break;
            };
            let ratchet_key = oldest.ratchet_key;
            let evicted = oldest.keys.pop_front().map(|k| k.index());
            self.total -= 1;
            if oldest.keys.is_empty() {
                self.chains.pop_front();
            }
            if let Some(index) = evicted {
                self.note_evicted(ratchet_key, index.saturating_add(1));
            }
        }
    }
}
