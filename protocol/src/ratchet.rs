//! The Double Ratchet (Signal specification, revision 4) over X25519,
//! HKDF-SHA256, HMAC-SHA256 and ChaCha20-Poly1305.
//!
//! Decryption is transactional: every new chain key, root key and skipped
//! key is computed on the side and committed only after the AEAD tag
//! verifies, so a bad message leaves the state exactly as it was.
//!
//! The DH ratchet's sending half is derived lazily on the next encrypt
//! instead of on receipt. The bytes on the wire are the same as the
//! specification's; the new ratchet key pair is simply drawn later.

use std::collections::VecDeque;
use std::fmt;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Tag};
use rand_core::CryptoRng;
use x25519_dalek::PublicKey;

use crate::error::{Error, Result};
use crate::kdf::{ChainKey, ChainStepper, MessageKey, RootKey, message_keys};
use crate::keys::{KEY_LEN, KeyPair};
use crate::message::{HEADER_LEN, Header, MAX_PLAINTEXT_LEN, RatchetMessage, TAG_LEN};
use crate::skipped::{MAX_SKIP, SkippedBatch, SkippedKeys};

/// Length of the X3DH associated data: both Ed25519 identity keys.
pub const AD_LEN: usize = 2 * KEY_LEN;

/// How many earlier remote ratchet keys we remember, to tell a replay from
/// an old chain (a typed duplicate) from garbage.
const MAX_PREVIOUS_RECEIVING_KEYS: usize = 32;

/// The state of one Double Ratchet.
#[derive(Clone)]
pub(crate) struct RatchetState {
    pub(crate) root_key: RootKey,
    /// `DHs`: our current ratchet key pair.
    pub(crate) sending_key: KeyPair,
    /// `DHr`: their current ratchet public key.
    pub(crate) remote_ratchet_key: Option<PublicKey>,
    /// `CKs` and `Ns`; `None` when the sending half of a DH step is due.
    pub(crate) sending_chain: Option<ChainKey>,
    /// `CKr` and `Nr`.
    pub(crate) receiving_chain: Option<ChainKey>,
    /// `PN`.
    pub(crate) previous_counter: u32,
    /// `MKSKIPPED`.
    pub(crate) skipped: SkippedKeys,
    pub(crate) previous_receiving_keys: VecDeque<[u8; KEY_LEN]>,
}

impl RatchetState {
    /// `RatchetInitAlice`: the initiator's first sending chain from the
    /// shared secret and the responder's signed prekey.
    pub(crate) fn initiator<R: CryptoRng + ?Sized>(
        shared_secret: &[u8; KEY_LEN],
        remote_signed_prekey: PublicKey,
        rng: &mut R,
    ) -> Result<Self> {
        let sending_key = KeyPair::generate(rng);
        let dh = sending_key.dh(&remote_signed_prekey, "signed prekey")?;
        let (root_key, sending_chain) = RootKey::new(*shared_secret).ratchet(&dh);
        Ok(Self {
            root_key,
            sending_key,
            remote_ratchet_key: Some(remote_signed_prekey),
            sending_chain: Some(sending_chain),
            receiving_chain: None,
            previous_counter: 0,
            skipped: SkippedKeys::default(),
            previous_receiving_keys: VecDeque::new(),
        })
    }

    /// `RatchetInitBob`: the shared secret is the root key, the signed
    /// prekey the first ratchet key.
    pub(crate) fn responder(shared_secret: &[u8; KEY_LEN], signed_prekey: KeyPair) -> Self {
        Self {
            root_key: RootKey::new(*shared_secret),
            sending_key: signed_prekey,
            remote_ratchet_key: None,
            sending_chain: None,
            receiving_chain: None,
            previous_counter: 0,
            skipped: SkippedKeys::default(),
            previous_receiving_keys: VecDeque::new(),
        }
    }

    /// `RatchetEncrypt`.
    pub(crate) fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        plaintext: &[u8],
        ad: &[u8; AD_LEN],
        rng: &mut R,
    ) -> Result<Vec<u8>> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::Decode(crate::error::DecodeError::TooLarge {
                limit: MAX_PLAINTEXT_LEN,
                got: plaintext.len(),
            }));
        }
        let chain = match &mut self.sending_chain {
            Some(chain) => chain,
            None => {
                let remote = self.remote_ratchet_key.ok_or(Error::SessionNotReady)?;
                let sending_key = KeyPair::generate(rng);
                let dh = sending_key.dh(&remote, "ratchet key")?;
                let (root_key, chain) = self.root_key.ratchet(&dh);
                self.root_key = root_key;
                self.sending_key = sending_key;
                self.sending_chain.insert(chain)
            }
        };
        let message_key = chain.step();
        let header = Header {
            ratchet_key: self.sending_key.public_bytes(),
            previous_counter: self.previous_counter,
            counter: message_key.index(),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(plaintext);
        seal(&message_key, ad, &mut out)?;
        Ok(out)
    }

    /// `RatchetDecrypt`, transactional.
    pub(crate) fn decrypt(
        &mut self,
        message: &RatchetMessage<'_>,
        ad: &[u8; AD_LEN],
    ) -> Result<Vec<u8>> {
        let header = &message.header;

        // TrySkippedMessageKeys.
        if let Some(slot) = self.skipped.find(&header.ratchet_key, header.counter) {
            let key = self.skipped.get(slot).ok_or(Error::DecryptionFailed)?;
            let plaintext = open(&key, ad, message)?;
            self.skipped.remove(slot);
            return Ok(plaintext);
        }

        let current_remote = self.remote_ratchet_key.map(|k| k.to_bytes());
        if current_remote == Some(header.ratchet_key) {
            let Some(chain) = &self.receiving_chain else {
                // We sent to this key (it is their prekey) but never received
                // on it: nothing legitimate carries it.
                return Err(Error::DecryptionFailed);
            };
            if header.counter < chain.index() {
                return Err(self.stale_key_error(header));
            }
            let mut chain = chain.clone();
            let skipped = skip_until(&mut chain, header.counter)?;
            let message_key = chain.step();
            let plaintext = open(message_key.as_bytes(), ad, message)?;
            self.receiving_chain = Some(chain);
            self.skipped.insert(header.ratchet_key, skipped);
            return Ok(plaintext);
        }

        if self.previous_receiving_keys.contains(&header.ratchet_key) {
            return Err(self.stale_key_error(header));
        }

        // DHRatchet, computed on the side.
        let mut old_chain_skipped = SkippedBatch::with_capacity(0);
        if let Some(chain) = &self.receiving_chain {
            let mut chain = chain.clone();
            old_chain_skipped = skip_until(&mut chain, header.previous_counter)?;
        }
        let remote = PublicKey::from(header.ratchet_key);
        let dh = self.sending_key.dh(&remote, "ratchet key")?;
        let (root_key, mut chain) = self.root_key.ratchet(&dh);
        let new_chain_skipped = skip_until(&mut chain, header.counter)?;
        let message_key = chain.step();
        let plaintext = open(message_key.as_bytes(), ad, message)?;

        // Commit.
        if let (Some(old), true) = (current_remote, self.receiving_chain.is_some()) {
            self.skipped.insert(old, old_chain_skipped);
            if self.previous_receiving_keys.len() == MAX_PREVIOUS_RECEIVING_KEYS {
                self.previous_receiving_keys.pop_front();
            }
            self.previous_receiving_keys.push_back(old);
        }
        self.skipped.insert(header.ratchet_key, new_chain_skipped);
        self.remote_ratchet_key = Some(remote);
        self.root_key = root_key;
        self.receiving_chain = Some(chain);
        self.previous_counter = self.sending_chain.as_ref().map_or(0, ChainKey::index);
        self.sending_chain = None;
        Ok(plaintext)
    }
}

impl RatchetState {
    /// A message whose key is gone: a duplicate, unless the key may have
    /// been evicted by the cap before the message ever arrived.
    fn stale_key_error(&self, header: &Header) -> Error {
        if self
            .skipped
            .was_evicted(&header.ratchet_key, header.counter)
        {
            Error::MessageKeyEvicted {
                counter: header.counter,
            }
        } else {
            Error::DuplicateMessage {
                counter: header.counter,
            }
        }
    }
}

impl fmt::Debug for RatchetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            root_key: _,
            sending_key,
            remote_ratchet_key,
            sending_chain,
            receiving_chain,
            previous_counter,
            skipped,
            previous_receiving_keys,
        } = self;
        f.debug_struct("RatchetState")
            .field("sending_key", sending_key)
            .field(
                "remote_ratchet_key",
                &remote_ratchet_key.map(|k| format!("{}…", hex::encode(&k.as_bytes()[..2]))),
            )
            .field(
                "sending_index",
                &sending_chain.as_ref().map(ChainKey::index),
            )
            .field(
                "receiving_index",
                &receiving_chain.as_ref().map(ChainKey::index),
            )
            .field("previous_counter", previous_counter)
            .field("skipped_keys", &skipped.len())
            .field("previous_receiving_keys", &previous_receiving_keys.len())
            .finish()
    }
}

/// Advance `chain` to index `until`, returning the skipped message keys.
fn skip_until(chain: &mut ChainKey, until: u32) -> Result<SkippedBatch> {
    if until <= chain.index() {
        return Ok(SkippedBatch::with_capacity(0));
    }
    let gap = until - chain.index();
    if gap > MAX_SKIP {
        return Err(Error::TooManySkippedMessages {
            requested: u64::from(gap),
            limit: MAX_SKIP,
        });
    }
    // Skipped keys are stored deferred (five compressions each instead of
    // six; the sixth is paid only by a key that is used).
    let mut stepper = ChainStepper::default();
    let mut batch = SkippedBatch::with_capacity(gap as usize);
    for _ in 0..gap {
        batch.push_key(chain.index(), true, |outer, inner| {
            chain.step_deferred_into(&mut stepper, outer, inner);
        });
    }
    Ok(batch)
}

/// The AEAD's associated data: `AD || header` (64 + 42 bytes).
fn associated_data(ad: &[u8; AD_LEN], header: &[u8]) -> [u8; AD_LEN + HEADER_LEN] {
    let mut out = [0u8; AD_LEN + HEADER_LEN];
    out[..AD_LEN].copy_from_slice(ad);
    out[AD_LEN..].copy_from_slice(&header[..HEADER_LEN]);
    out
}

/// Encrypt `buffer[HEADER_LEN..]` in place and append the tag.
fn seal(message_key: &MessageKey, ad: &[u8; AD_LEN], buffer: &mut Vec<u8>) -> Result<()> {
    let (key, nonce) = message_keys(message_key.as_bytes());
    let cipher = ChaCha20Poly1305::new(&(*key).into());
    let aad = associated_data(ad, &buffer[..HEADER_LEN]);
    let tag = cipher
        .encrypt_inout_detached(&nonce.into(), &aad, (&mut buffer[HEADER_LEN..]).into())
        .map_err(|_| Error::DecryptionFailed)?;
    buffer.extend_from_slice(&tag);
    Ok(())
}

/// Check the tag and decrypt; the input is not modified.
fn open(
    message_key: &[u8; KEY_LEN],
    ad: &[u8; AD_LEN],
    message: &RatchetMessage<'_>,
) -> Result<Vec<u8>> {
    let (key, nonce) = message_keys(message_key);
    let cipher = ChaCha20Poly1305::new(&(*key).into());
    let aad = associated_data(ad, message.header_bytes);
    let split = message
        .ciphertext
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(Error::DecryptionFailed)?;
    let (body, tag) = message.ciphertext.split_at(split);
    let tag = Tag::try_from(tag).map_err(|_| Error::DecryptionFailed)?;
    let mut plaintext = body.to_vec();
    cipher
        .decrypt_inout_detached(&nonce.into(), &aad, plaintext.as_mut_slice().into(), &tag)
        .map_err(|_| Error::DecryptionFailed)?;
    Ok(plaintext)
}
