//! The copies this device signed a delivery proof for, remembered (the
//! last [`REMEMBERED`]), so that one delivered again because its ack was
//! lost is acked signed again, and only it: any other copy of a message
//! this device already holds is not opened again, so not signed (a relay
//! replaying a message under a new accept id or other labels gets no
//! proof for it).
//!
//! One record in the `guards` tree: the SHA-256 digests of the signed
//! copies' labels, concatenated, oldest first.

use comptoir_protocol::proto::wire::Envelope;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::store::{Store, Tree};

/// Signed copies remembered.
pub const REMEMBERED: usize = 512;

const KEY: &[u8] = b"signed-copies";
const DIGEST_LEN: usize = 32;

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

/// Remember that this device signed a proof for `envelope` (written with
/// the next flush).
pub fn remember(store: &Store, envelope: &Envelope) -> Result<()> {
    let mut kept = store
        .get(Tree::Guards, KEY)?
        .map(|v| v.to_vec())
        .unwrap_or_default();
    let digest = digest(envelope);
    if kept.chunks_exact(DIGEST_LEN).any(|d| d == digest) {
        return Ok(());
    }
    kept.extend_from_slice(&digest);
    let excess = (kept.len() / DIGEST_LEN).saturating_sub(REMEMBERED);
    kept.drain(..excess * DIGEST_LEN);
    store.put(Tree::Guards, KEY, &kept)
}

/// Whether this device signed a proof for exactly this copy.
pub fn was_signed(store: &Store, envelope: &Envelope) -> Result<bool> {
    let digest = digest(envelope);
    Ok(store
        .get(Tree::Guards, KEY)?
        .is_some_and(|kept| kept.chunks_exact(DIGEST_LEN).any(|d| d == digest)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FAST_TEST_KDF;

    /// The same copy is known; another accept id, category or tag is not;
    /// the oldest are forgotten past the bound.
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
        remember(&store, &copy(7))?;
        assert!(was_signed(&store, &copy(7))?);
        assert!(!was_signed(&store, &copy(8))?);
        assert!(!was_signed(
            &store,
            &Envelope {
                category: 4,
                ..copy(7)
            }
        )?);
        assert!(!was_signed(
            &store,
            &Envelope {
                franking_tag: vec![],
                ..copy(7)
            }
        )?);
        for n in 100..100 + REMEMBERED as u64 {
            remember(&store, &copy(n))?;
        }
        assert!(!was_signed(&store, &copy(7))?, "the oldest forgotten");
        assert!(was_signed(&store, &copy(100 + REMEMBERED as u64 - 1))?);
        Ok(())
    }
}
