//! The copies this device signed a delivery proof for, with the proof,
//! remembered (the last [`REMEMBERED`] or a few more), so that one
//! delivered again because its ack was lost is acked with the same proof
//! again, and only it: any other copy of a message this device already
//! holds is not opened again, so not signed (a relay replaying a message
//! under a new accept id or other labels gets no proof for it, nor a
//! second proof of another time for the same copy).
//!
//! Records in the `guards` tree, two per signed copy, so that remembering
//! one writes only its own: [`PROOF_PREFIX`] and the SHA-256 digest of the
//! signed copy's labels → the proof's time (u64 BE) and its signature;
//! [`ORDER_PREFIX`], a store sequence number (u64 BE) and the digest → empty,
//! the order they were signed in, read by key alone when the oldest are
//! dropped. (An older version kept them all in one record,
//! [`LEGACY_KEY`], rewritten whole for every billed ack; it is split into
//! these at the next use.)

use comptoir_protocol::proto::wire::Envelope;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::store::{Store, Tree};

/// Signed copies remembered at least.
pub const REMEMBERED: usize = 512;
/// How far past [`REMEMBERED`] they may grow before the oldest are
/// dropped (so that the order's keys are listed and removed once in so
/// many signings; every signing only counts them).
const SLACK: usize = 64;

const PROOF_PREFIX: &[u8] = b"signed-copy/proof/";
const ORDER_PREFIX: &[u8] = b"signed-copy/order/";
const LEGACY_KEY: &[u8] = b"signed-copies";
const DIGEST_LEN: usize = 32;
const SIGNATURE_LEN: usize = 64;
const LEGACY_ENTRY_LEN: usize = DIGEST_LEN + 8 + SIGNATURE_LEN;

/// What a proof for `envelope` covers, and its category, as one digest.
fn digest(envelope: &Envelope) -> [u8; DIGEST_LEN] {
    let mut hash = Sha256::new();
    hash.update(envelope.accept_id.to_be_bytes());
    hash.update(envelope.category.to_be_bytes());
    for field in [
        &envelope.sender_account,
        &envelope.message_id,
        &envelope.franking_tag,
    ] {
        hash.update((field.len() as u64).to_be_bytes());
        hash.update(field);
    }
    hash.finalize().into()
}

fn proof_key(digest: &[u8]) -> Vec<u8> {
    [PROOF_PREFIX, digest].concat()
}

/// Remember the proof (`signature`, made at `time_ms`) this device signed
/// for `envelope` (written with the next flush).
pub fn remember(store: &Store, envelope: &Envelope, time_ms: u64, signature: &[u8]) -> Result<()> {
    let Ok(signature) = <[u8; SIGNATURE_LEN]>::try_from(signature) else {
        return Ok(());
    };
    split_legacy(store)?;
    keep(store, &digest(envelope), time_ms, &signature)?;
    drop_oldest(store)
}

/// Keep one proof, unless its copy has one already (the first stays).
fn keep(store: &Store, digest: &[u8], time_ms: u64, signature: &[u8]) -> Result<()> {
    let key = proof_key(digest);
    if store.contains(Tree::Guards, &key)? {
        return Ok(());
    }
    store.put(
        Tree::Guards,
        &key,
        &[&time_ms.to_be_bytes()[..], signature].concat(),
    )?;
    let order = [ORDER_PREFIX, &store.next_sequence()?.to_be_bytes(), digest].concat();
    store.put(Tree::Guards, &order, &[])
}

/// Past [`REMEMBERED`] + [`SLACK`], drop the oldest down to [`REMEMBERED`].
fn drop_oldest(store: &Store) -> Result<()> {
    let count = store.count(Tree::Guards, ORDER_PREFIX)?;
    if count <= REMEMBERED + SLACK {
        return Ok(());
    }
    for (order, _) in store
        .sizes(Tree::Guards, ORDER_PREFIX)?
        .into_iter()
        .take(count - REMEMBERED)
    {
        let digest = &order[ORDER_PREFIX.len() + 8..];
        store.remove(Tree::Guards, &proof_key(digest))?;
        store.remove(Tree::Guards, &order)?;
    }
    Ok(())
}

/// An older version's single record, split into one record per copy
/// (oldest first, so their order is kept) and removed.
fn split_legacy(store: &Store) -> Result<()> {
    let Some(kept) = store.get(Tree::Guards, LEGACY_KEY)? else {
        return Ok(());
    };
    for entry in kept.chunks_exact(LEGACY_ENTRY_LEN) {
        let (digest, rest) = entry.split_at(DIGEST_LEN);
        let (time, signature) = rest.split_at(8);
        let mut at = [0u8; 8];
        at.copy_from_slice(time);
        keep(store, digest, u64::from_be_bytes(at), signature)?;
    }
    store.remove(Tree::Guards, LEGACY_KEY)
}

/// The proof (signature, time) this device signed for exactly this copy,
/// if it did.
pub fn proof_of(store: &Store, envelope: &Envelope) -> Result<Option<(Vec<u8>, u64)>> {
    split_legacy(store)?;
    let Some(kept) = store.get(Tree::Guards, &proof_key(&digest(envelope)))? else {
        return Ok(None);
    };
    if kept.len() != 8 + SIGNATURE_LEN {
        return Ok(None);
    }
    let mut time = [0u8; 8];
    time.copy_from_slice(&kept[..8]);
    Ok(Some((kept[8..].to_vec(), u64::from_be_bytes(time))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FAST_TEST_KDF;

    /// The same copy is known with its first proof; another accept id,
    /// category or tag is not; the oldest are forgotten past the bound.
    #[test]
    fn exactly_the_signed_copies_are_known() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| crate::error::ClientError::io("tempdir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST_TEST_KDF)?;
        let copy = |accept_id| Envelope {
            accept_id,
            category: 3,
            sender_account: vec![1; 16],
            message_id: vec![2; 16],
            franking_tag: vec![3; 32],
            ..Envelope::default()
        };
        let signature = [9u8; SIGNATURE_LEN];
        remember(&store, &copy(7), 1_234, &signature)?;
        assert_eq!(
            proof_of(&store, &copy(7))?,
            Some((signature.to_vec(), 1_234))
        );
        // Signed again later: the first proof stays.
        remember(&store, &copy(7), 5_678, &[8u8; SIGNATURE_LEN])?;
        assert_eq!(
            proof_of(&store, &copy(7))?,
            Some((signature.to_vec(), 1_234))
        );
        assert_eq!(proof_of(&store, &copy(8))?, None);
        let other_category = Envelope {
            category: 4,
            ..copy(7)
        };
        assert_eq!(proof_of(&store, &other_category)?, None);
        let other_tag = Envelope {
            franking_tag: vec![],
            ..copy(7)
        };
        assert_eq!(proof_of(&store, &other_tag)?, None);
        for n in 100..100 + (REMEMBERED + SLACK) as u64 {
            remember(&store, &copy(n), n, &signature)?;
        }
        assert_eq!(proof_of(&store, &copy(7))?, None, "the oldest forgotten");
        assert!(proof_of(&store, &copy(100 + SLACK as u64))?.is_some());
        assert_eq!(proof_of(&store, &copy(100 + SLACK as u64 - 1))?, None);
        assert_eq!(store.count(Tree::Guards, ORDER_PREFIX)?, REMEMBERED);
        assert_eq!(store.count(Tree::Guards, PROOF_PREFIX)?, REMEMBERED);
        Ok(())
    }

    /// Remembering a copy writes its own records, not all the others'
    /// again (before, one record of every proof was rewritten each time:
    /// 53 KB for one billed ack once full).
    #[test]
    fn remembering_one_copy_writes_only_its_own() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| crate::error::ClientError::io("tempdir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST_TEST_KDF)?;
        let copy = |accept_id| Envelope {
            accept_id,
            sender_account: vec![1; 16],
            message_id: vec![2; 16],
            ..Envelope::default()
        };
        for n in 0..300 {
            remember(&store, &copy(n), n, &[9u8; SIGNATURE_LEN])?;
        }
        let largest = store
            .sizes(Tree::Guards, b"")?
            .into_iter()
            .map(|(_, size)| size)
            .max()
            .unwrap_or(0);
        assert!(largest < 200, "a record of {largest} bytes");
        Ok(())
    }

    /// Proofs an older version kept in one record are found, and split
    /// into records of their own at the next use.
    #[test]
    fn an_older_versions_proofs_are_kept() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| crate::error::ClientError::io("tempdir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST_TEST_KDF)?;
        let copy = Envelope {
            accept_id: 5,
            sender_account: vec![1; 16],
            message_id: vec![2; 16],
            ..Envelope::default()
        };
        let legacy = [
            &digest(&copy)[..],
            &77u64.to_be_bytes(),
            &[4u8; SIGNATURE_LEN],
        ]
        .concat();
        store.put(Tree::Guards, LEGACY_KEY, &legacy)?;
        assert_eq!(
            proof_of(&store, &copy)?,
            Some((vec![4u8; SIGNATURE_LEN], 77))
        );
        assert!(store.get(Tree::Guards, LEGACY_KEY)?.is_none());
        Ok(())
    }
}
