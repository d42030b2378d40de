//! What a [`super::Client`] shares with its [`super::Sender`] handles: the
//! event queue, and one lock per peer account that every read-modify-write
//! of that peer's session records goes through.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use comptoir_protocol::AccountId;
use tokio::sync::OwnedMutexGuard;

use crate::event::Event;

/// The events [`super::Client::next_event`] reports, filled by the client
/// and by every sender handle.
#[derive(Clone, Default)]
pub(crate) struct EventQueue(Arc<Mutex<VecDeque<Event>>>);

impl EventQueue {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Event>> {
        // Each operation is one push or pop: a panic elsewhere cannot leave
        // the queue half changed.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Report `event` after those already queued.
    pub(crate) fn push_back(&self, event: Event) {
        self.queue().push_back(event);
    }

    /// The oldest event not reported yet.
    pub(crate) fn pop_front(&self) -> Option<Event> {
        self.queue().pop_front()
    }

    /// Report each of `events`, in order.
    pub(crate) fn extend(&self, events: impl IntoIterator<Item = Event>) {
        self.queue().extend(events);
    }

    /// How many events wait.
    pub(crate) fn len(&self) -> usize {
        self.queue().len()
    }
}

/// One async lock per peer account. Encrypting to a peer (all its devices,
/// starting sessions if needed) and decrypting from it each hold that
/// peer's lock from loading the session records to writing them back, so
/// no two tasks ever advance one ratchet from the same starting state (that
/// would reuse a message key). Different peers never wait for each other.
#[derive(Clone, Default)]
pub(crate) struct PeerLocks(Arc<Mutex<HashMap<AccountId, Arc<tokio::sync::Mutex<()>>>>>);

/// Locks kept for peers nobody holds are dropped once the map is this big.
const PRUNE_AT: usize = 1024;

impl PeerLocks {
    /// Wait for, and take, the lock of `peer`.
    pub(crate) async fn lock(&self, peer: AccountId) -> OwnedMutexGuard<()> {
        let lock = {
            // Each operation is one lookup or insert: nothing to tear.
            let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() >= PRUNE_AT {
                // Only this map holds an unused lock; a held or awaited one
                // has other clones and stays.
                map.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            Arc::clone(map.entry(peer).or_default())
        };
        lock.lock_owned().await
    }
}
