//! Key derivation: the X3DH KDF, the Double Ratchet root and chain KDFs, and
//! how a message key becomes a ChaCha20-Poly1305 key and nonce.
//!
//! Every constant here is part of the wire protocol and is listed in
//! docs/PROTOCOL.md; changing one breaks the vectors in `protocol/vectors/`.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::keys::KEY_LEN;

/// HKDF info string of the X3DH KDF.
pub const X3DH_INFO: &[u8] = b"Comptoir X3DH v1";
/// HKDF info string of the root KDF (`KDF_RK`).
pub const ROOT_INFO: &[u8] = b"Comptoir ratchet root v1";
/// HKDF info string that turns a message key into AEAD key and nonce.
pub const MESSAGE_KEYS_INFO: &[u8] = b"Comptoir message keys v1";
/// HMAC input that derives a message key from a chain key.
pub const MESSAGE_KEY_SEED: u8 = 0x01;
/// HMAC input that derives the next chain key from a chain key.
pub const CHAIN_KEY_SEED: u8 = 0x02;
/// X3DH's `F`: 32 bytes of 0xFF prepended to the DH outputs (X25519).
pub const X3DH_F: [u8; 32] = [0xFF; 32];

type HmacSha256 = Hmac<Sha256>;

/// X3DH's `KDF(KM)`: HKDF-SHA256 with a zero-filled 32-byte salt over
/// `F || KM`, info [`X3DH_INFO`], 32 bytes of output.
pub fn x3dh_kdf(dh_outputs: &[&[u8; KEY_LEN]]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * (dh_outputs.len() + 1)));
    ikm.extend_from_slice(&X3DH_F);
    for dh in dh_outputs {
        ikm.extend_from_slice(&dh[..]);
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    hkdf_sha256(&[0u8; 32], &ikm, X3DH_INFO, out.as_mut());
    out
}

/// `KDF_RK(rk, dh_out)`: HKDF-SHA256 with salt `rk`, input `dh_out`, info
/// [`ROOT_INFO`]; the 64 output bytes are the next root key then the chain
/// key.
pub fn root_kdf(
    root_key: &[u8; KEY_LEN],
    dh_output: &[u8; KEY_LEN],
) -> (Zeroizing<[u8; KEY_LEN]>, Zeroizing<[u8; KEY_LEN]>) {
    let mut okm = Zeroizing::new([0u8; 64]);
    hkdf_sha256(root_key, dh_output, ROOT_INFO, okm.as_mut());
    let mut root = Zeroizing::new([0u8; KEY_LEN]);
    let mut chain = Zeroizing::new([0u8; KEY_LEN]);
    root.copy_from_slice(&okm[..32]);
    chain.copy_from_slice(&okm[32..]);
    (root, chain)
}

/// `KDF_CK(ck)`: message key = HMAC-SHA256(ck, 0x01), next chain key =
/// HMAC-SHA256(ck, 0x02). Returns (next chain key, message key).
pub fn chain_kdf(
    chain_key: &[u8; KEY_LEN],
) -> (Zeroizing<[u8; KEY_LEN]>, Zeroizing<[u8; KEY_LEN]>) {
    // Any key length is valid for HMAC; this cannot fail.
    let keyed = match <HmacSha256 as KeyInit>::new_from_slice(chain_key) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    };
    let mut message_mac = keyed.clone();
    message_mac.update(&[MESSAGE_KEY_SEED]);
    let mut chain_mac = keyed;
    chain_mac.update(&[CHAIN_KEY_SEED]);
    let mut message = Zeroizing::new([0u8; KEY_LEN]);
    let mut next = Zeroizing::new([0u8; KEY_LEN]);
    message.copy_from_slice(&message_mac.finalize().into_bytes());
    next.copy_from_slice(&chain_mac.finalize().into_bytes());
    (next, message)
}

/// A message key becomes the AEAD key and nonce: HKDF-SHA256 with a
/// zero-filled 32-byte salt, input the message key, info
/// [`MESSAGE_KEYS_INFO`]; 44 output bytes = 32-byte ChaCha20-Poly1305 key
/// then 12-byte nonce.
pub fn message_keys(message_key: &[u8; KEY_LEN]) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
    let mut okm = Zeroizing::new([0u8; 44]);
    hkdf_sha256(&[0u8; 32], message_key, MESSAGE_KEYS_INFO, okm.as_mut());
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    (key, nonce)
}

fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    // Every output length used here is at most 64 bytes, far below
    // HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    if hk.expand(info, out).is_err() {
        unreachable_hmac();
    }
}

#[cold]
#[allow(clippy::panic)] // Reason: only reachable if HMAC/HKDF reject fixed, valid lengths.
fn unreachable_hmac() -> ! {
    panic!("HMAC-SHA256 accepts any key length and HKDF outputs <= 64 bytes")
}

/// A root key (`RK`). Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct RootKey(Box<[u8; KEY_LEN]>);

impl RootKey {
    pub(crate) fn new(bytes: [u8; KEY_LEN]) -> Self {
        Self(Box::new(bytes))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// `KDF_RK`: the next root key and a fresh chain (index 0).
    pub(crate) fn ratchet(&self, dh_output: &[u8; KEY_LEN]) -> (RootKey, ChainKey) {
        let (root, chain) = root_kdf(&self.0, dh_output);
        (RootKey::new(*root), ChainKey::new(*chain, 0))
    }
}

/// A sending or receiving chain key (`CKs`/`CKr`) with its index (`Ns`/`Nr`).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct ChainKey {
    key: Box<[u8; KEY_LEN]>,
    index: u32,
}

impl ChainKey {
    pub(crate) fn new(key: [u8; KEY_LEN], index: u32) -> Self {
        Self {
            key: Box::new(key),
            index,
        }
    }

    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// Advance one step, returning the message key for the current index.
    pub(crate) fn step(&mut self) -> MessageKey {
        let (next, message) = chain_kdf(&self.key);
        let mk = MessageKey::new(*message, self.index);
        *self.key = *next;
        self.index = self.index.wrapping_add(1);
        mk
    }
}

/// One message key (`MK`), used once then dropped (and zeroized). Boxed so
/// that moving it (skipped keys live in growing queues) leaves no copy behind.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct MessageKey {
    key: Box<[u8; KEY_LEN]>,
    index: u32,
}

impl MessageKey {
    pub(crate) fn new(key: [u8; KEY_LEN], index: u32) -> Self {
        Self {
            key: Box::new(key),
            index,
        }
    }

    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_steps_are_distinct_and_counted() {
        let mut chain = ChainKey::new([7; 32], 0);
        let a = chain.step();
        let b = chain.step();
        assert_eq!((a.index(), b.index(), chain.index()), (0, 1, 2));
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_ne!(chain.as_bytes(), a.as_bytes());
    }

    #[test]
    fn root_kdf_splits_64_bytes() {
        let (rk, ck) = root_kdf(&[1; 32], &[2; 32]);
        assert_ne!(*rk, *ck);
        let (rk2, _) = root_kdf(&[1; 32], &[3; 32]);
        assert_ne!(*rk, *rk2);
    }
}
