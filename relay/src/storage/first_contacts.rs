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
    fn note_contact(
        &self,
        sender: AccountId,
        recipient: AccountId,
        day: u64,
        at_ms: u64,
    ) -> impl Future<Output = StorageResult<()>> + Send;
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
    ) -> StorageResult<()> {
        let tree = &self.first_contacts;
        let pair = pair_key(&sender, &recipient);
        let first = tree
            .compare_and_swap(&pair, None::<&[u8]>, Some(&at_ms.to_be_bytes()[..]))
            .map_err(backend)?
            .is_ok();
        if first
            && !tree
                .contains_key(pair_key(&recipient, &sender))
                .map_err(backend)?
        {
            tree.update_and_fetch(count_key(&sender, day), |old| {
                let n = old
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, u64::from_be_bytes);
                Some(n.saturating_add(1).to_be_bytes().to_vec())
            })
            .map_err(backend)?;
        }
        if first {
            self.committer.durable().await?;
        }
        Ok(())
    }
}
