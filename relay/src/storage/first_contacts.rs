//! The first-contact role: which account has written a conversation
//! message to which (either way round, a pair that has talked is no
//! longer new), and how many new conversations each account started per
//! UTC day. The policy caps new conversations for accounts with no
//! verified phone number (`[limits] new_conversations_per_day_without_phone`).
//!
//! Embedded backend: sled tree `first_contacts`, keys `p` || sender (16)
//! || recipient (16) (value: the accept time, u64 BE) and `c` || sender
//! (16) || UTC day (u64 BE) (value: the count, u64 BE). Durable before a
//! write returns.

use std::future::Future;

use comptoir_protocol::AccountId;

use super::sled::SledStore;
use super::{StorageError, StorageResult};

/// The first-contact store.
pub trait FirstContacts: Send + Sync + 'static {
    /// Whether `a` and `b` have exchanged a conversation message, either
    /// way round.
    fn have_talked(
        &self,
        a: AccountId,
        b: AccountId,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// New conversations `sender` started on UTC `day`.
    fn new_conversations(
        &self,
        sender: AccountId,
        day: u64,
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Note that `sender` wrote to `recipient` at `at_ms`; if the pair had
    /// not talked, count a new conversation for `sender` on `day`.
    /// Returns what was written, for [`Self::forget_contact`].
    fn note_contact(
        &self,
        sender: AccountId,
        recipient: AccountId,
        day: u64,
        at_ms: u64,
    ) -> impl Future<Output = StorageResult<Noted>> + Send;

    /// Take back a note of [`Self::note_contact`] whose send was then not
    /// stored: the pair it marked, the conversation it counted.
    fn forget_contact(
        &self,
        sender: AccountId,
        recipient: AccountId,
        day: u64,
        noted: Noted,
    ) -> impl Future<Output = StorageResult<()>> + Send;
}

/// What one [`FirstContacts::note_contact`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Noted {
    /// The pair (sender to recipient) was marked by this note, with this
    /// time (ms).
    pub pair_at_ms: Option<u64>,
    /// A new conversation was counted for the sender.
    pub counted: bool,
}

fn pair_key(a: &AccountId, b: &AccountId) -> Vec<u8> {
    let mut key = vec![b'p'];
    key.extend_from_slice(a.as_bytes());
    key.extend_from_slice(b.as_bytes());
    key
}

fn count_key(sender: &AccountId, day: u64) -> Vec<u8> {
    let mut key = vec![b'c'];
    key.extend_from_slice(sender.as_bytes());
    key.extend_from_slice(&day.to_be_bytes());
    key
}

fn backend(e: ::sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl FirstContacts for SledStore {
    async fn have_talked(&self, a: AccountId, b: AccountId) -> StorageResult<bool> {
        let tree = &self.first_contacts;
        Ok(tree.contains_key(pair_key(&a, &b)).map_err(backend)?
            || tree.contains_key(pair_key(&b, &a)).map_err(backend)?)
    }

    async fn new_conversations(&self, sender: AccountId, day: u64) -> StorageResult<u64> {
        Ok(self
            .first_contacts
            .get(count_key(&sender, day))
            .map_err(backend)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    async fn note_contact(
        &self,
        sender: AccountId,
        recipient: AccountId,
        day: u64,
        at_ms: u64,
    ) -> StorageResult<Noted> {
        let tree = &self.first_contacts;
        let pair = pair_key(&sender, &recipient);
        let first = tree
            .compare_and_swap(&pair, None::<&[u8]>, Some(&at_ms.to_be_bytes()[..]))
            .map_err(backend)?
            .is_ok();
        let counted = first
            && !tree
                .contains_key(pair_key(&recipient, &sender))
                .map_err(backend)?;
        if counted {
            add_to_count(tree, &count_key(&sender, day), 1)?;
        }
        if first {
            self.committer.durable().await?;
        }
        Ok(Noted {
            pair_at_ms: first.then_some(at_ms),
            counted,
        })
    }

    async fn forget_contact(
        &self,
        sender: AccountId,
        recipient: AccountId,
        day: u64,
        noted: Noted,
    ) -> StorageResult<()> {
        let tree = &self.first_contacts;
        let Some(at_ms) = noted.pair_at_ms else {
            return Ok(());
        };
        // The mark is removed only while it holds this note's time. (A
        // send to the same account accepted meanwhile found it marked and
        // made none of its own: the pair then reads as new again, and its
        // next message is counted once more, never fewer.)
        let _ = tree
            .compare_and_swap(
                pair_key(&sender, &recipient),
                Some(&at_ms.to_be_bytes()[..]),
                None::<&[u8]>,
            )
            .map_err(backend)?;
        if noted.counted {
            add_to_count(tree, &count_key(&sender, day), -1)?;
        }
        self.committer.durable().await
    }
}

/// Add `delta` to the count at `key` (never below 0).
fn add_to_count(tree: &::sled::Tree, key: &[u8], delta: i64) -> StorageResult<()> {
    tree.update_and_fetch(key, |old| {
        let n = old
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_be_bytes);
        Some(n.saturating_add_signed(delta).to_be_bytes().to_vec())
    })
    .map_err(backend)?;
    Ok(())
}
