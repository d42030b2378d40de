//! State at rest: session and identity records as versioned protobuf,
//! sealed with a caller-supplied 32-byte key.
//!
//! Sealed layout: `RECORD_FORMAT (u8) || kind (u8) || nonce (24) ||
//! XChaCha20-Poly1305(key, nonce, aad = "Comptoir record v1" || format ||
//! kind, protobuf)`. The protobuf records carry their own `version` field;
//! fields added later default when absent, so older records keep loading.

use std::collections::VecDeque;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305};
use prost::Message;
use rand_core::CryptoRng;
use x25519_dalek::PublicKey;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{DecodeError, Error, Result};
use crate::kdf::{ChainKey, RootKey};
use crate::keys::{IdentityKey, KEY_LEN, KeyPair, key_bytes};
use crate::proto::storage as pb;
use crate::ratchet::RatchetState;
use crate::session::{MAX_ARCHIVED_STATES, PendingPreKey, SessionRecord, SessionState};
use crate::skipped::{DEFERRED_KEY_LEN, MAX_SKIPPED_KEYS, SkippedBatch, SkippedKeys};

/// Version of the sealed container.
pub const RECORD_FORMAT: u8 = 1;
/// Version written into `SessionRecord.version` / `SessionStateRecord.version`.
/// Version 2 may store a skipped key deferred (64 bytes, see
/// docs/PROTOCOL.md §8); version 1 records still load.
pub const SESSION_RECORD_VERSION: u32 = 2;
const RECORD_AAD_CONTEXT: &[u8] = b"Comptoir record v1";
const NONCE_LEN: usize = 24;
const SEALED_OVERHEAD: usize = 2 + NONCE_LEN + 16;

/// What a sealed record holds (bound into the AEAD so one kind cannot be
/// swapped for another).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A [`SessionRecord`].
    Session = 1,
    /// An identity (`IdentityRecord`).
    Identity = 2,
    /// Prekeys.
    PreKey = 3,
    /// Client data (messages, contacts) stored by the client crate.
    ClientData = 4,
}

/// The key that seals records at rest (derived by the client from a
/// passphrase). Zeroized on drop; never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct StorageKey(Box<[u8; KEY_LEN]>);

impl StorageKey {
    /// Wrap 32 key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Box::new(bytes))
    }
}

impl std::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageKey(..)")
    }
}

fn record_aad(kind: RecordKind) -> [u8; 20] {
    let mut aad = [0u8; 20];
    aad[..18].copy_from_slice(RECORD_AAD_CONTEXT);
    aad[18] = RECORD_FORMAT;
    aad[19] = kind as u8;
    aad
}

/// Seal `plaintext` (zeroized by the caller) for storage.
pub fn seal_record<R: CryptoRng + ?Sized>(
    key: &StorageKey,
    kind: RecordKind,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    seal_record_with_nonce(key, kind, plaintext, &nonce)
}

/// [`seal_record`] with a given nonce (test vectors only: never reuse one).
#[doc(hidden)]
pub fn seal_record_with_nonce(
    key: &StorageKey,
    kind: RecordKind,
    plaintext: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new(&(*key.0).into());
    let mut out = Vec::with_capacity(plaintext.len() + SEALED_OVERHEAD);
    out.push(RECORD_FORMAT);
    out.push(kind as u8);
    out.extend_from_slice(nonce);
    out.extend_from_slice(plaintext);
    let start = 2 + NONCE_LEN;
    let tag = cipher
        .encrypt_inout_detached(
            &(*nonce).into(),
            &record_aad(kind),
            (&mut out[start..]).into(),
        )
        .map_err(|_| Error::RecordDecryptionFailed)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Open a sealed record of the given kind.
pub fn open_record(
    key: &StorageKey,
    kind: RecordKind,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() < SEALED_OVERHEAD {
        return Err(DecodeError::TooShort {
            expected: SEALED_OVERHEAD,
            got: sealed.len(),
        }
        .into());
    }
    if sealed[0] != RECORD_FORMAT {
        return Err(DecodeError::UnsupportedVersion {
            expected: RECORD_FORMAT,
            got: sealed[0],
        }
        .into());
    }
    if sealed[1] != kind as u8 {
        return Err(DecodeError::UnknownType(sealed[1]).into());
    }
    let cipher = XChaCha20Poly1305::new(&(*key.0).into());
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[2..2 + NONCE_LEN]);
    let (body, tag) = sealed[2 + NONCE_LEN..].split_at(sealed.len() - SEALED_OVERHEAD);
    let tag = Tag::try_from(tag).map_err(|_| Error::RecordDecryptionFailed)?;
    let mut plaintext = Zeroizing::new(body.to_vec());
    cipher
        .decrypt_inout_detached(
            &nonce.into(),
            &record_aad(kind),
            plaintext.as_mut_slice().into(),
            &tag,
        )
        .map_err(|_| Error::RecordDecryptionFailed)?;
    Ok(plaintext)
}

impl SessionRecord {
    /// Serialize to protobuf (the plaintext of a sealed record).
    pub fn to_protobuf(&self) -> Zeroizing<Vec<u8>> {
        let record = pb::SessionRecord {
            version: SESSION_RECORD_VERSION,
            current: self.current.as_ref().map(state_to_proto),
            previous: self.previous.iter().map(state_to_proto).collect(),
        };
        let mut bytes = Zeroizing::new(Vec::with_capacity(record.encoded_len()));
        record.encode_raw(&mut *bytes);
        let mut record = record;
        zeroize_record(&mut record);
        bytes
    }

    /// Parse from protobuf.
    pub fn from_protobuf(bytes: &[u8]) -> Result<Self> {
        let mut record = pb::SessionRecord::decode(bytes)?;
        let result = (|| {
            let current = record.current.as_ref().map(state_from_proto).transpose()?;
            let previous = record
                .previous
                .iter()
                .take(MAX_ARCHIVED_STATES)
                .map(state_from_proto)
                .collect::<Result<VecDeque<_>>>()?;
            Ok(SessionRecord { current, previous })
        })();
        zeroize_record(&mut record);
        result
    }

    /// Serialize and seal with `key`.
    pub fn seal<R: CryptoRng + ?Sized>(&self, key: &StorageKey, rng: &mut R) -> Result<Vec<u8>> {
        seal_record(key, RecordKind::Session, &self.to_protobuf(), rng)
    }

    /// Open and parse a sealed record.
    pub fn open(key: &StorageKey, sealed: &[u8]) -> Result<Self> {
        Self::from_protobuf(&open_record(key, RecordKind::Session, sealed)?)
    }
}

fn zeroize_record(record: &mut pb::SessionRecord) {
    for state in record.current.iter_mut().chain(record.previous.iter_mut()) {
        state.root_key.zeroize();
        state.sending_ratchet_secret.zeroize();
        if let Some(c) = state.sending_chain.as_mut() {
            c.chain_key.zeroize();
        }
        if let Some(c) = state.receiving_chain.as_mut() {
            c.chain_key.zeroize();
        }
        for k in &mut state.skipped_keys {
            k.message_key.zeroize();
        }
    }
}

fn state_to_proto(state: &SessionState) -> pb::SessionStateRecord {
    let r = &state.ratchet;
    let mut skipped_keys = Vec::with_capacity(r.skipped.len());
    for run in r.skipped.runs() {
        for key in run.keys() {
            skipped_keys.push(pb::SkippedKeyRecord {
                ratchet_key: run.ratchet_key.to_vec(),
                index: key.index(),
                message_key: key.stored_bytes(),
            });
        }
    }
    pb::SessionStateRecord {
        version: SESSION_RECORD_VERSION,
        local_identity: state.local_identity.to_bytes().to_vec(),
        remote_identity: state.remote_identity.to_bytes().to_vec(),
        root_key: r.root_key.as_bytes().to_vec(),
        sending_ratchet_secret: r.sending_key.secret_bytes().to_vec(),
        receiving_ratchet_key: r
            .remote_ratchet_key
            .map(|k| k.to_bytes().to_vec())
            .unwrap_or_default(),
        sending_chain: r.sending_chain.as_ref().map(chain_to_proto),
        receiving_chain: r.receiving_chain.as_ref().map(chain_to_proto),
        previous_counter: r.previous_counter,
        skipped_keys,
        pending_prekey: state
            .pending_prekey
            .map(|p| pending_to_proto(p, &state.base_key)),
        base_key: state.base_key.to_vec(),
        previous_receiving_keys: r
            .previous_receiving_keys
            .iter()
            .map(|k| k.to_vec())
            .collect(),
        sending_ratchet_pending: r.sending_chain.is_none(),
        initiator: state.initiator,
        built_from: state
            .built_from
            .map(|p| pending_to_proto(p, &state.base_key)),
        receive_only: state.receive_only,
        evicted: r
            .skipped
            .evicted()
            .map(|(key, below)| pb::EvictedRecord {
                ratchet_key: key.to_vec(),
                below: *below,
            })
            .collect(),
    }
}

fn pending_to_proto(pending: PendingPreKey, base_key: &[u8; KEY_LEN]) -> pb::PendingPreKeyRecord {
    pb::PendingPreKeyRecord {
        signed_prekey_id: pending.signed_prekey_id,
        has_one_time_prekey: pending.one_time_prekey_id.is_some(),
        one_time_prekey_id: pending.one_time_prekey_id.unwrap_or(0),
        base_key: base_key.to_vec(),
    }
}

fn pending_from_proto(p: &pb::PendingPreKeyRecord) -> PendingPreKey {
    PendingPreKey {
        signed_prekey_id: p.signed_prekey_id,
        one_time_prekey_id: p.has_one_time_prekey.then_some(p.one_time_prekey_id),
    }
}

fn chain_to_proto(chain: &ChainKey) -> pb::ChainRecord {
    pb::ChainRecord {
        chain_key: chain.as_bytes().to_vec(),
        index: chain.index(),
    }
}

fn chain_from_proto(chain: &pb::ChainRecord) -> Result<ChainKey> {
    Ok(ChainKey::new(
        key_bytes("chain_key", &chain.chain_key)?,
        chain.index,
    ))
}

fn state_from_proto(record: &pb::SessionStateRecord) -> Result<SessionState> {
    if record.version > SESSION_RECORD_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            expected: SESSION_RECORD_VERSION as u8,
            got: record.version.min(255) as u8,
        }
        .into());
    }
    let mut skipped = SkippedKeys::default();
    // Consecutive records of one chain become one batch, allocated once.
    let records = &record.skipped_keys[..record.skipped_keys.len().min(MAX_SKIPPED_KEYS)];
    let mut start = 0;
    while start < records.len() {
        let ratchet_key = key_bytes("skipped ratchet_key", &records[start].ratchet_key)?;
        let len = records[start..]
            .iter()
            .take_while(|k| k.ratchet_key.as_slice() == ratchet_key.as_slice())
            .count();
        let mut batch = SkippedBatch::with_capacity(len);
        let mut previous = None;
        for key in &records[start..start + len] {
            // 32 bytes: a message key; 64: a deferred one (outer HMAC state
            // as big-endian words, then the inner digest).
            let bytes = key.message_key.as_slice();
            let deferred = match bytes.len() {
                KEY_LEN => false,
                DEFERRED_KEY_LEN => true,
                got => {
                    return Err(Error::Decode(DecodeError::BadLength {
                        field: "message_key",
                        expected: KEY_LEN,
                        got,
                    }));
                }
            };
            if previous.is_some_and(|p| p >= key.index) {
                return Err(
                    DecodeError::Protobuf("skipped keys of one chain must ascend".into()).into(),
                );
            }
            previous = Some(key.index);
            batch.push_key(key.index, deferred, |outer, inner| {
                let (words, digest) = bytes.split_at(bytes.len() - KEY_LEN);
                for (word, chunk) in outer.iter_mut().zip(words.chunks_exact(4)) {
                    let mut be = [0u8; 4];
                    be.copy_from_slice(chunk);
                    *word = u32::from_be_bytes(be);
                }
                inner.copy_from_slice(digest);
            });
        }
        skipped.insert(ratchet_key, batch);
        start += len;
    }
    for evicted in record.evicted.iter().take(64) {
        skipped.restore_evicted(
            key_bytes("evicted ratchet_key", &evicted.ratchet_key)?,
            evicted.below,
        );
    }
    let remote_ratchet_key = if record.receiving_ratchet_key.is_empty() {
        None
    } else {
        Some(PublicKey::from(key_bytes(
            "receiving_ratchet_key",
            &record.receiving_ratchet_key,
        )?))
    };
    let ratchet = RatchetState {
        root_key: RootKey::new(key_bytes("root_key", &record.root_key)?),
        sending_key: KeyPair::from_secret_bytes(&record.sending_ratchet_secret)?,
        remote_ratchet_key,
        sending_chain: record
            .sending_chain
            .as_ref()
            .map(chain_from_proto)
            .transpose()?,
        receiving_chain: record
            .receiving_chain
            .as_ref()
            .map(chain_from_proto)
            .transpose()?,
        previous_counter: record.previous_counter,
        skipped,
        previous_receiving_keys: record
            .previous_receiving_keys
            .iter()
            .map(|k| key_bytes("previous_receiving_key", k))
            .collect::<Result<_>>()?,
    };
    Ok(SessionState {
        ratchet,
        local_identity: IdentityKey::from_bytes(&record.local_identity)?,
        remote_identity: IdentityKey::from_bytes(&record.remote_identity)?,
        initiator: record.initiator,
        base_key: key_bytes("base_key", &record.base_key)?,
        pending_prekey: record.pending_prekey.as_ref().map(pending_from_proto),
        built_from: record.built_from.as_ref().map(pending_from_proto),
        receive_only: record.receive_only,
    })
}

/// Seal a device identity (seed, account, device id) for storage.
pub fn seal_identity<R: CryptoRng + ?Sized>(
    identity: &crate::keys::IdentityKeyPair,
    account: &crate::account::AccountId,
    device_id: u32,
    key: &StorageKey,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let mut record = pb::IdentityRecord {
        version: 1,
        identity_seed: identity.seed().to_vec(),
        account_id: account.to_vec(),
        device_id,
    };
    let plaintext = Zeroizing::new(record.encode_to_vec());
    record.identity_seed.zeroize();
    seal_record(key, RecordKind::Identity, &plaintext, rng)
}

/// Open a sealed identity: the key pair, its account and device id.
pub fn open_identity(
    key: &StorageKey,
    sealed: &[u8],
) -> Result<(crate::keys::IdentityKeyPair, crate::account::AccountId, u32)> {
    let plaintext = open_record(key, RecordKind::Identity, sealed)?;
    let mut record = pb::IdentityRecord::decode(plaintext.as_slice())?;
    let seed = Zeroizing::new(key_bytes("identity_seed", &record.identity_seed)?);
    record.identity_seed.zeroize();
    let account = crate::account::AccountId::from_bytes(&record.account_id)?;
    Ok((
        crate::keys::IdentityKeyPair::from_seed(&seed),
        account,
        record.device_id,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::AccountId;
    use crate::keys::IdentityKeyPair;

    #[test]
    fn identity_round_trips_and_wrong_key_is_refused() -> Result<()> {
        let mut rng = rand::rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let account = AccountId::generate(&mut rng);
        let key = StorageKey::from_bytes([4; 32]);
        let sealed = seal_identity(&identity, &account, 3, &key, &mut rng)?;
        let (back, back_account, device) = open_identity(&key, &sealed)?;
        assert_eq!(back.public(), identity.public());
        assert_eq!((back_account, device), (account, 3));
        let wrong = StorageKey::from_bytes([5; 32]);
        assert_eq!(
            open_identity(&wrong, &sealed).err(),
            Some(Error::RecordDecryptionFailed)
        );
        Ok(())
    }
}
