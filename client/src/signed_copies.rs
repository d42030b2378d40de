//! The copies this device signed a delivery proof for, with the proof,
//! remembered (the last [`REMEMBERED`]), so that one delivered again
//! because its ack was lost is acked with the same proof again, and only
//! it: any other copy of a message this device already holds is not
//! opened again, so not signed (a relay replaying a message under a new
//! accept id or other labels gets no proof for it, nor a second proof of
//! another time for the same copy).
//!
//! One record in the `guards` tree: entries of the SHA-256 digest of the
//! signed copy's labels, the proof's time (u64 BE) and its signature,
//! concatenated, oldest first.

use comptoir_protocol::proto::wire::Envelope;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::store::{Store, Tree};

/// Signed copies remembered.
pub const REMEMBERED: usize = 512;

const KEY: &[u8] = b"signed-copies";
const DIGEST_LEN: usize = 32;
const SIGNATURE_LEN: usize = 64;
const ENTRY_LEN: usize = DIGEST_LEN + 8 + SIGNATURE_LEN;

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

/// Remember the proof (`signature`, made at `time_ms`) this device signed
/// for `envelope` (written with the next flush).
pub fn remember(store: &Store, envelope: &Envelope, time_ms: u64, signature: &[u8]) -> Result<()> {
    let Ok(signature) = <[u8; SIGNATURE_LEN]>::try_from(signature) else {
        return Ok(());
    };
    let digest = digest(envelope);
    let mut kept = store
        .get(Tree::Guards, KEY)?
        .map(|v| v.to_vec())
        .unwrap_or_default();
    if kept
        .chunks_exact(ENTRY_LEN)
        .any(|e| e[..DIGEST_LEN] == digest)
    {
        return Ok(());
    }
    kept.truncate(kept.len() / ENTRY_LEN * ENTRY_LEN);
    kept.extend_from_slice(&digest);
    kept.extend_from_slice(&time_ms.to_be_bytes());
    kept.extend_from_slice(&signature);
    let excess = (kept.len() / ENTRY_LEN).saturating_sub(REMEMBERED);
    kept.drain(..excess * ENTRY_LEN);
    store.put(Tree::Guards, KEY, &kept)
}

/// The proof (signature, time) this device signed for exactly this copy,
/// if it did.
pub fn proof_of(store: &Store, envelope: &Envelope) -> Result<Option<(Vec<u8>, u64)>> {
    let digest = digest(envelope);
    let Some(kept) = store.get(Tree::Guards, KEY)? else {
        return Ok(None);
    };
    Ok(kept
        .chunks_exact(ENTRY_LEN)
        .find(|e| e[..DIGEST_LEN] == digest)
        .map(|e| {
            let mut time = [0u8; 8];
            time.copy_from_slice(&e[DIGEST_LEN..DIGEST_LEN + 8]);
            (e[DIGEST_LEN + 8..].to_vec(), u64::from_be_bytes(time))
        }))
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
        for n in 100..100 + REMEMBERED as u64 {
            remember(&store, &copy(n), n, &signature)?;
        }
        assert_eq!(proof_of(&store, &copy(7))?, None, "the oldest forgotten");
        assert!(proof_of(&store, &copy(100 + REMEMBERED as u64 - 1))?.is_some());
        Ok(())
    }
}
