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
use prost::Message;

use crate::error::{ClientError, Result};
use crate::store::{Store, Tree};

/// How long a signed prekey is kept after the relay confirmed its
/// successor (docs/PROTOCOL.md section 2): a contact may have fetched it
/// just before, and its first message may wait in the relay's queue for the
/// relay's message lifetime (30 days by default); one day more covers
/// clocks and a delayed connect. A prekey message naming a signed prekey
/// pruned after that fails and recovers through a re-key request.
pub const SIGNED_PREKEY_GRACE_MS: u64 = 31 * 24 * 60 * 60 * 1000;
/// A new signed prekey is generated with a one-time prekey upload only if
/// the relay confirmed the current one at least this long ago, so a relay
/// pushing `PreKeysLow` again and again cannot make the device rotate (and
/// keep) signed prekeys without end.
pub const SIGNED_PREKEY_ROTATE_MS: u64 = 2 * 24 * 60 * 60 * 1000;
/// Retired signed prekeys kept at most, grace period or not (oldest
/// pruned first): with [`SIGNED_PREKEY_ROTATE_MS`], ordinary use keeps
/// about 16; this bounds forced rotations.
pub const MAX_RETIRED_SIGNED_PREKEYS: usize = 64;

const SIGNED: u8 = b'S';
const ONE_TIME: u8 = b'O';
/// The record of which signed prekey the relay confirmed, and when the
/// older ones were retired.
const SIGNED_META: u8 = b'M';
const SIGNED_META_VERSION: u32 = 1;

/// Which signed prekey the relay serves, and since when the older ones
/// stopped being served.
#[derive(Clone, PartialEq, prost::Message)]
struct SignedMeta {
    #[prost(uint32, tag = "1")]
    version: u32,
    /// The newest signed prekey id the relay confirmed (0: none yet).
    #[prost(uint32, tag = "2")]
    confirmed_id: u32,
    /// When the relay confirmed it, ms since the Unix epoch.
    #[prost(uint64, tag = "3")]
    confirmed_at_ms: u64,
    /// Older signed prekeys still kept, with when each was retired.
    #[prost(message, repeated, tag = "4")]
    retired: Vec<Retired>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Retired {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(uint64, tag = "2")]
    at_ms: u64,
}

fn session_key(account: &AccountId, device: u32) -> Vec<u8> {
    let mut key = account.to_vec();
    key.extend_from_slice(&device.to_be_bytes());
    key
}

/// The session record with one remote device (empty if none yet).
pub fn load_session(store: &Store, account: &AccountId, device: u32) -> Result<SessionRecord> {
    // Decoding checks both identity keys of every state: cached by the
    // record's sealed bytes, as a session is loaded on every send.
    let decoded = store.get_decoded(Tree::Sessions, &session_key(account, device), |bytes| {
        SessionRecord::from_protobuf(bytes)
            .map_err(|e| ClientError::CorruptStore(format!("session record: {e}")))
    })?;
    Ok(decoded.unwrap_or_default())
}

/// Write the session record with one remote device (not flushed). The
/// record is also kept as the decoded value of what was written, so the
/// next [`load_session`] (the next send) does not decode it again.
pub fn save_session(
    store: &Store,
    account: &AccountId,
    device: u32,
    record: &SessionRecord,
) -> Result<()> {
    store.put_decoded(
        Tree::Sessions,
        &session_key(account, device),
        &record.to_protobuf(),
        record.clone(),
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

/// One-time private keys a device keeps at most: far more than a relay
/// holds for it at a time (the client uploads a batch when the relay's
/// stock is low), so a relay asking for batches again and again cannot
/// grow the store without end. Past it the oldest go: a key handed out
/// and used only after about a thousand newer ones were made (a first
/// message held in its sender's outbox that long, on a busy device) is
/// then gone, and that message goes through the re-key.
pub const MAX_ONE_TIME_KEPT: usize = 1000;

/// This device's private prekeys: loaded from the store, used by X3DH as
/// responder, removals staged until [`Self::commit`].
#[derive(Default)]
pub struct PreKeys {
    signed: BTreeMap<u32, KeyPair>,
    one_time: BTreeMap<u32, KeyPair>,
    removed: Vec<u32>,
    meta: SignedMeta,
}

impl fmt::Debug for PreKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            signed,
            one_time,
            removed,
            meta,
        } = self;
        f.debug_struct("PreKeys")
            .field("signed", &signed.keys().collect::<Vec<_>>())
            .field("one_time", &one_time.len())
            .field("removed", removed)
            .field("confirmed_signed", &meta.confirmed_id)
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
            if kind == SIGNED_META {
                out.meta = SignedMeta::decode(secret.as_slice())
                    .map_err(|e| ClientError::CorruptStore(format!("signed prekey record: {e}")))?;
                continue;
            }
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
            // Nothing is pruned here: the relay has not confirmed this one
            // yet, so it still serves an older one (see `confirm_signed`).
            self.signed.insert(spk.key_id, pair);
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
        // Past the bound the oldest (lowest ids: ids only grow) go.
        while self.one_time.len() > MAX_ONE_TIME_KEPT {
            let Some((oldest, _)) = self.one_time.pop_first() else {
                break;
            };
            store.remove(Tree::PreKeys, &prekey_key(ONE_TIME, oldest))?;
        }
        Ok(())
    }

    /// Whether a signed prekey was ever generated.
    pub fn has_signed(&self) -> bool {
        !self.signed.is_empty()
    }

    /// A signed prekey generated but not confirmed by the relay yet (an
    /// upload whose reply never came): upload it again rather than a new
    /// one, so unconfirmed keys never pile up.
    pub fn pending_signed(&self) -> Option<(u32, KeyPair)> {
        let (&id, pair) = self.signed.last_key_value()?;
        (id > self.meta.confirmed_id).then(|| (id, pair.clone()))
    }

    /// Whether the next upload should carry a new signed prekey: none was
    /// confirmed yet, or the confirmed one is [`SIGNED_PREKEY_ROTATE_MS`]
    /// old.
    pub fn wants_rotation(&self, now_ms: u64) -> bool {
        self.meta.confirmed_id == 0
            || now_ms
                >= self
                    .meta
                    .confirmed_at_ms
                    .saturating_add(SIGNED_PREKEY_ROTATE_MS)
    }

    /// The relay accepted signed prekey `id` at `now_ms`: every older one
    /// is retired now (the relay no longer hands it out) and kept for
    /// [`SIGNED_PREKEY_GRACE_MS`]; then prune what is past its grace.
    /// Not flushed.
    pub fn confirm_signed(&mut self, store: &Store, id: u32, now_ms: u64) -> Result<()> {
        if id <= self.meta.confirmed_id {
            return self.prune_signed(store, now_ms);
        }
        let retired: Vec<u32> = self.meta.retired.iter().map(|r| r.id).collect();
        for &old in self.signed.keys() {
            if old < id && !retired.contains(&old) {
                self.meta.retired.push(Retired {
                    id: old,
                    at_ms: now_ms,
                });
            }
        }
        self.meta.confirmed_id = id;
        self.meta.confirmed_at_ms = now_ms;
        self.prune_signed(store, now_ms)
    }

    /// Delete retired signed prekeys whose grace period is over at
    /// `now_ms`, and the oldest beyond [`MAX_RETIRED_SIGNED_PREKEYS`]; the
    /// confirmed one and any newer one are never pruned. Not flushed.
    pub fn prune_signed(&mut self, store: &Store, now_ms: u64) -> Result<()> {
        self.meta.retired.sort_by_key(|r| (r.at_ms, r.id));
        let excess = self
            .meta
            .retired
            .len()
            .saturating_sub(MAX_RETIRED_SIGNED_PREKEYS);
        let mut kept = Vec::with_capacity(self.meta.retired.len());
        for (index, retired) in self.meta.retired.drain(..).enumerate() {
            let over = now_ms >= retired.at_ms.saturating_add(SIGNED_PREKEY_GRACE_MS);
            if (over || index < excess) && retired.id < self.meta.confirmed_id {
                self.signed.remove(&retired.id);
                store.remove(Tree::PreKeys, &prekey_key(SIGNED, retired.id))?;
            } else {
                kept.push(retired);
            }
        }
        self.meta.retired = kept;
        self.meta.version = SIGNED_META_VERSION;
        store.put(
            Tree::PreKeys,
            &prekey_key(SIGNED_META, 0),
            &self.meta.encode_to_vec(),
        )
    }

    /// The signed prekey ids kept, oldest first.
    pub fn signed_ids(&self) -> Vec<u32> {
        self.signed.keys().copied().collect()
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
    use comptoir_protocol::proto::wire::PreKeyBundle;
    use comptoir_protocol::{IdentityKeyPair, VerifiedBundle};

    use super::*;
    use crate::store::KdfParams;

    #[test]
    fn a_saved_session_loads_as_written_and_as_its_stored_bytes_decode() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let params = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let store = Store::create(dir.path(), "pw-long-enough", params)?;
        let rng = &mut rand::rng();
        let (alice, bob) = (
            IdentityKeyPair::generate(rng),
            IdentityKeyPair::generate(rng),
        );
        let (_, upload) = InMemoryPreKeyStore::generate(&bob, 1, 1, 1, rng);
        let bundle = PreKeyBundle {
            account_id: vec![1; 16],
            device_id: 1,
            identity_key: bob.public().to_bytes().to_vec(),
            signed_prekey: upload.signed_prekey.clone(),
            one_time_prekey: upload.one_time_prekeys.first().cloned(),
        };
        let mut record = SessionRecord::default();
        record.initiate(&alice, &VerifiedBundle::verify(&bundle, None)?, rng)?;
        let peer = AccountId::from_bytes(&[2; 16])?;
        for _ in 0..3 {
            record.encrypt(b"hello", rng)?;
            save_session(&store, &peer, 1, &record)?;
            // Read back from the cache the write filled ...
            let loaded = load_session(&store, &peer, 1)?;
            assert_eq!(*loaded.to_protobuf(), *record.to_protobuf());
            // ... it is what the sealed bytes on disk decode to.
            let stored = store
                .get(Tree::Sessions, &session_key(&peer, 1))?
                .ok_or_else(|| ClientError::CorruptStore("no session".into()))?;
            let decoded = SessionRecord::from_protobuf(&stored)
                .map_err(|e| ClientError::CorruptStore(e.to_string()))?;
            assert_eq!(*decoded.to_protobuf(), *record.to_protobuf());
        }
        Ok(())
    }

    #[test]
    fn prekeys_persist_and_commit_removals_and_signed_ones_wait_for_their_grace() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let params = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let store = Store::create(dir.path(), "pw-long-enough", params)?;
        let identity = IdentityKeyPair::generate(&mut rand::rng());
        let mut prekeys = PreKeys::default();
        let day = 24 * 60 * 60 * 1000;
        // Six rotations, each confirmed by the relay a day apart.
        for round in 0..6u32 {
            let (generated, upload) = InMemoryPreKeyStore::generate(
                &identity,
                round + 1,
                round * 3 + 1,
                3,
                &mut rand::rng(),
            );
            prekeys.add_generated(&store, &generated, &upload)?;
            assert_eq!(prekeys.pending_signed().map(|(id, _)| id), Some(round + 1));
            prekeys.confirm_signed(&store, round + 1, u64::from(round) * day)?;
            assert!(prekeys.pending_signed().is_none());
        }
        let loaded = PreKeys::load(&store)?;
        // Nothing is past its grace yet: every old signed prekey is kept.
        assert_eq!(loaded.signed_ids(), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(loaded.one_time.len(), 18);
        assert!(!loaded.wants_rotation(5 * day + 1));
        assert!(loaded.wants_rotation(5 * day + SIGNED_PREKEY_ROTATE_MS));

        // An unconfirmed signed prekey is never pruned, and is what the
        // next upload carries again.
        let (generated, upload) =
            InMemoryPreKeyStore::generate(&identity, 7, 100, 0, &mut rand::rng());
        prekeys.add_generated(&store, &generated, &upload)?;
        let far = 100 * SIGNED_PREKEY_GRACE_MS;
        prekeys.prune_signed(&store, far)?;
        assert_eq!(prekeys.signed_ids(), vec![6, 7], "past their grace: pruned");
        assert_eq!(prekeys.pending_signed().map(|(id, _)| id), Some(7));

        // Key 6 is retired when key 7 is confirmed: kept until one
        // millisecond before the end of its grace, gone at the end.
        let mut prekeys = PreKeys::load(&store)?;
        assert_eq!(prekeys.signed_ids(), vec![6, 7]);
        prekeys.confirm_signed(&store, 7, far)?;
        assert_eq!(prekeys.signed_ids(), vec![6, 7]);
        prekeys.prune_signed(&store, far + SIGNED_PREKEY_GRACE_MS - 1)?;
        assert_eq!(prekeys.signed_ids(), vec![6, 7]);
        prekeys.prune_signed(&store, far + SIGNED_PREKEY_GRACE_MS)?;
        assert_eq!(PreKeys::load(&store)?.signed_ids(), vec![7]);

        // A removal is staged by the decrypt and lands only on commit.
        prekeys.remove_one_time_prekey(1);
        assert_eq!(PreKeys::load(&store)?.one_time.len(), 18);
        prekeys.commit(&store)?;
        let loaded = PreKeys::load(&store)?;
        assert_eq!(loaded.one_time.len(), 17);
        assert!(loaded.one_time_prekey(1).is_none());
        Ok(())
    }

    /// The one-time private keys kept are bounded: a relay saying "stock
    /// low" again and again (each answered with a new batch, kept before
    /// the upload) cannot grow the store without end; the oldest go first
    /// (before, every batch stayed until a peer used its keys).
    #[test]
    fn one_time_keys_kept_are_bounded_oldest_first() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", crate::store::FAST_TEST_KDF)?;
        let identity = IdentityKeyPair::generate(&mut rand::rng());
        let mut prekeys = PreKeys::default();
        let batches = MAX_ONE_TIME_KEPT as u32 / 50 + 5;
        for batch in 0..batches {
            let (generated, upload) =
                InMemoryPreKeyStore::generate(&identity, 1, batch * 50 + 1, 50, &mut rand::rng());
            prekeys.add_generated(&store, &generated, &upload)?;
        }
        let loaded = PreKeys::load(&store)?;
        assert_eq!(loaded.one_time.len(), MAX_ONE_TIME_KEPT);
        let newest = batches * 50;
        assert!(loaded.one_time_prekey(newest).is_some(), "the newest kept");
        let oldest_kept = newest + 1 - MAX_ONE_TIME_KEPT as u32;
        assert!(loaded.one_time_prekey(oldest_kept).is_some());
        assert!(
            loaded.one_time_prekey(oldest_kept - 1).is_none(),
            "the oldest went"
        );
        Ok(())
    }
}
