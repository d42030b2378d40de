//! Session records per remote device and this device's private prekeys,
//! both sealed in the [`Store`].
//!
//! Decryption is transactional in the protocol crate; this module keeps it
//! so on disk: a [`PreKeys`] removal is only staged by the decrypt and
//! written by [`PreKeys::commit`] together with the session record and the
//! stored message, before the delivery is acknowledged.

use std::collections::BTreeMap;
use std::fmt;

use comptoir_protocol::proto::wire::UploadPreKeys;
use comptoir_protocol::{AccountId, InMemoryPreKeyStore, KeyPair, PreKeyStore, SessionRecord};

use crate::error::{ClientError, Result};
use crate::store::{Store, Tree};

/// Signed prekeys kept after rotation. A prekey message names the signed
/// prekey it used; one that arrives after several rotations (weeks
/// offline) fails and recovers through a re-key request instead.
pub const MAX_SIGNED_PREKEYS: usize = 4;

const SIGNED: u8 = b'S';
const ONE_TIME: u8 = b'O';

fn session_key(account: &AccountId, device: u32) -> Vec<u8> {
    let mut key = account.to_vec();
    key.extend_from_slice(&device.to_be_bytes());
    key
}

/// The session record with one remote device (empty if none yet).
pub fn load_session(store: &Store, account: &AccountId, device: u32) -> Result<SessionRecord> {
    match store.get(Tree::Sessions, &session_key(account, device))? {
        Some(bytes) => SessionRecord::from_protobuf(&bytes)
            .map_err(|e| ClientError::CorruptStore(format!("session record: {e}"))),
        None => Ok(SessionRecord::new()),
    }
}

/// Write the session record with one remote device (not flushed).
pub fn save_session(
    store: &Store,
    account: &AccountId,
    device: u32,
    record: &SessionRecord,
) -> Result<()> {
    store.put(
        Tree::Sessions,
        &session_key(account, device),
        &record.to_protobuf(),
    )
}

/// Mark every stored session as restored from a backup: each may still
/// decrypt, but never encrypt again (its sending chain may have been used
/// after the backup; reusing it would reuse message keys). Returns how
/// many records were marked. Not flushed.
pub fn mark_all_restored(store: &Store) -> Result<usize> {
    let mut marked = 0;
    for (key, bytes) in store.scan(Tree::Sessions, &[])? {
        let mut record = SessionRecord::from_protobuf(&bytes)
            .map_err(|e| ClientError::CorruptStore(format!("session record: {e}")))?;
        record.mark_restored();
        store.put(Tree::Sessions, &key, &record.to_protobuf())?;
        marked += 1;
    }
    Ok(marked)
}

fn prekey_key(kind: u8, id: u32) -> [u8; 5] {
    let mut key = [kind; 5];
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

/// This device's private prekeys: loaded from the store, used by X3DH as
/// responder, removals staged until [`Self::commit`].
#[derive(Default)]
pub struct PreKeys {
    signed: BTreeMap<u32, KeyPair>,
    one_time: BTreeMap<u32, KeyPair>,
    removed: Vec<u32>,
}

impl fmt::Debug for PreKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            signed,
            one_time,
            removed,
        } = self;
        f.debug_struct("PreKeys")
            .field("signed", &signed.keys().collect::<Vec<_>>())
            .field("one_time", &one_time.len())
            .field("removed", removed)
            .finish()
    }
}

impl PreKeys {
    /// Load every stored prekey.
    pub fn load(store: &Store) -> Result<Self> {
        let mut out = Self::default();
        for (key, secret) in store.scan(Tree::PreKeys, &[])? {
            let (&kind, id) = key
                .split_first()
                .ok_or_else(|| ClientError::CorruptStore("empty prekey key".into()))?;
            let id: [u8; 4] = id
                .try_into()
                .map_err(|_| ClientError::CorruptStore("prekey key length".into()))?;
            let id = u32::from_be_bytes(id);
            let pair = KeyPair::from_secret_bytes(&secret)
                .map_err(|e| ClientError::CorruptStore(format!("prekey: {e}")))?;
            match kind {
                SIGNED => out.signed.insert(id, pair),
                ONE_TIME => out.one_time.insert(id, pair),
                _ => return Err(ClientError::CorruptStore("unknown prekey kind".into())),
            };
        }
        Ok(out)
    }

    /// Keep (in memory and in the store) the private halves of a freshly
    /// generated batch, before its public halves are uploaded.
    pub fn add_generated(
        &mut self,
        store: &Store,
        generated: &InMemoryPreKeyStore,
        upload: &UploadPreKeys,
    ) -> Result<()> {
        if let Some(spk) = &upload.signed_prekey
            && let Some(pair) = generated.signed_prekey(spk.key_id)
        {
            store.put(
                Tree::PreKeys,
                &prekey_key(SIGNED, spk.key_id),
                pair.secret_bytes().as_slice(),
            )?;
            self.signed.insert(spk.key_id, pair);
            // Ids increase with each rotation: the lowest are the oldest.
            while self.signed.len() > MAX_SIGNED_PREKEYS {
                if let Some((old, _)) = self.signed.pop_first() {
                    store.remove(Tree::PreKeys, &prekey_key(SIGNED, old))?;
                }
            }
        }
        for opk in &upload.one_time_prekeys {
            if let Some(pair) = generated.one_time_prekey(opk.key_id) {
                store.put(
                    Tree::PreKeys,
                    &prekey_key(ONE_TIME, opk.key_id),
                    pair.secret_bytes().as_slice(),
                )?;
                self.one_time.insert(opk.key_id, pair);
            }
        }
        Ok(())
    }

    /// Whether a signed prekey was ever generated.
    pub fn has_signed(&self) -> bool {
        !self.signed.is_empty()
    }

    /// Delete the one-time prekeys used since the last commit (not flushed).
    pub fn commit(&mut self, store: &Store) -> Result<()> {
        for id in self.removed.drain(..) {
            store.remove(Tree::PreKeys, &prekey_key(ONE_TIME, id))?;
        }
        Ok(())
    }
}

impl PreKeyStore for PreKeys {
    fn signed_prekey(&self, id: u32) -> Option<KeyPair> {
        self.signed.get(&id).cloned()
    }

    fn one_time_prekey(&self, id: u32) -> Option<KeyPair> {
        self.one_time.get(&id).cloned()
    }

    fn remove_one_time_prekey(&mut self, id: u32) {
        if self.one_time.remove(&id).is_some() {
            self.removed.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use comptoir_protocol::IdentityKeyPair;

    use super::*;
    use crate::store::KdfParams;

    #[test]
    fn prekeys_persist_rotate_and_commit_removals() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let params = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let store = Store::create(dir.path(), "pw-long-enough", params)?;
        let identity = IdentityKeyPair::generate(&mut rand::rng());
        let mut prekeys = PreKeys::default();
        for round in 0..6u32 {
            let (generated, upload) = InMemoryPreKeyStore::generate(
                &identity,
                round + 1,
                round * 3 + 1,
                3,
                &mut rand::rng(),
            );
            prekeys.add_generated(&store, &generated, &upload)?;
        }
        let loaded = PreKeys::load(&store)?;
        assert_eq!(
            loaded.signed.keys().copied().collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
        assert_eq!(loaded.one_time.len(), 18);

        // A removal is staged by the decrypt and lands only on commit.
        prekeys.remove_one_time_prekey(1);
        assert_eq!(PreKeys::load(&store)?.one_time.len(), 18);
        prekeys.commit(&store)?;
        let loaded = PreKeys::load(&store)?;
        assert_eq!(loaded.one_time.len(), 17);
        assert!(loaded.one_time_prekey(1).is_none());
        Ok(())
    }
}
