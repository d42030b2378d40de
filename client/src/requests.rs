//! Message requests: a first message from an account this account never
//! wrote to (a person, or a business it gave no consent to) waits in a
//! requests list until the user accepts it, blocks the sender or deletes
//! it. While it waits no read receipt goes back, so the sender sees only
//! "delivered". Writing to an account, granting it consent, or accepting
//! its request makes it known; deleting a request forgets the
//! conversation (a later message is a request again).
//!
//! Record (sealed in the [`Store`]): tree `Requests` by peer (16): `p` ||
//! first seen (u64 BE, this device's clock) for a pending request, `a` for
//! an accepted peer.

use comptoir_protocol::AccountId;

use crate::error::{ClientError, Result};
use crate::rule_checks;
use crate::store::{Store, Tree};

const PENDING: u8 = b'p';
const ACCEPTED: u8 = b'a';

/// Where a peer stands for this account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// This account wrote to it, consented to it, or accepted it.
    Known,
    /// It wrote first; its messages wait for the user (since this time).
    Pending {
        /// When its first message arrived (this device's clock).
        since_ms: u64,
    },
    /// It never wrote, and this account never wrote to it.
    Stranger,
}

/// Where `peer` stands.
pub fn standing(store: &Store, me: &AccountId, peer: &AccountId) -> Result<Standing> {
    if peer == me
        || rule_checks::last_wrote(store, peer)?.is_some()
        || rule_checks::known_consent(store, peer)?.is_some()
    {
        return Ok(Standing::Known);
    }
    let record = store.get(Tree::Requests, peer.as_bytes())?;
    match record.as_ref().map(|r| r.as_slice()) {
        Some([ACCEPTED]) => Ok(Standing::Known),
        Some([PENDING, since @ ..]) => {
            let since: [u8; 8] = since
                .try_into()
                .map_err(|_| ClientError::CorruptStore("a message request record".into()))?;
            Ok(Standing::Pending {
                since_ms: u64::from_be_bytes(since),
            })
        }
        Some(_) => Err(ClientError::CorruptStore("a message request record".into())),
        None => Ok(Standing::Stranger),
    }
}

/// A message from `peer` arrived: whether it is (part of) a request, and
/// if `peer` was a stranger, it now is.
pub fn note_incoming(store: &Store, me: &AccountId, peer: &AccountId, now_ms: u64) -> Result<bool> {
    let _guard = store.updating();
    match standing(store, me, peer)? {
        Standing::Known => Ok(false),
        Standing::Pending { .. } => Ok(true),
        Standing::Stranger => {
            let mut value = vec![PENDING];
            value.extend_from_slice(&now_ms.to_be_bytes());
            store.put(Tree::Requests, peer.as_bytes(), &value)?;
            Ok(true)
        }
    }
}

/// Make `peer` known (this account writes to it, or the user accepted).
pub fn accept(store: &Store, peer: &AccountId) -> Result<()> {
    // Every send makes its peer known: write only when it is not known
    // already (else a sealed write on every send), under the guard
    // `note_incoming` takes, so neither overwrites the other.
    let _guard = store.updating();
    if store
        .get(Tree::Requests, peer.as_bytes())?
        .is_some_and(|record| record.as_slice() == [ACCEPTED])
    {
        return Ok(());
    }
    store.put(Tree::Requests, peer.as_bytes(), &[ACCEPTED])
}

/// Forget `peer`'s request (deleted or blocked): a later message from it
/// is a request again.
pub fn forget(store: &Store, peer: &AccountId) -> Result<()> {
    store.remove(Tree::Requests, peer.as_bytes())
}

/// Delete everything stored of the conversation with `peer` (its
/// history) and forget its request.
pub fn delete(store: &Store, peer: &AccountId) -> Result<()> {
    for tree in [Tree::Messages, Tree::MessageStatuses] {
        for (key, _) in store.scan(tree, peer.as_bytes())? {
            store.remove(tree, &key)?;
        }
    }
    forget(store, peer)
}

/// The pending requests: each sender and when its first message arrived,
/// oldest first.
pub fn pending(store: &Store) -> Result<Vec<(AccountId, u64)>> {
    let mut out = Vec::new();
    for (key, value) in store.scan(Tree::Requests, &[])? {
        if let (Ok(peer), [PENDING, since @ ..]) = (AccountId::from_bytes(&key), value.as_slice())
            && let Ok(since) = <[u8; 8]>::try_from(since)
        {
            out.push((peer, u64::from_be_bytes(since)));
        }
    }
    out.sort_by_key(|(_, since)| *since);
    Ok(out)
}
