//! Key derivation: the X3DH KDF, the Double Ratchet root and chain KDFs, and
//! how a message key becomes a ChaCha20-Poly1305 key and nonce.
//!
//! Every constant here is part of the wire protocol and is listed in
//! docs/PROTOCOL.md; changing one breaks the vectors in `protocol/vectors/`.

use std::sync::OnceLock;

use hkdf::Hkdf;
use sha2::Sha256;
use sha2::block_api::compress256;
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
    let prk = HmacKey::new(root_key).prk(dh_output);
    prk.expand64(ROOT_INFO, &mut okm);
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
    let mut next = Zeroizing::new(*chain_key);
    let mut message = Zeroizing::new([0u8; KEY_LEN]);
    ChainStepper::default().step(&mut next, &mut message);
    (next, message)
}

/// A message key becomes the AEAD key and nonce: HKDF-SHA256 with a
/// zero-filled 32-byte salt, input the message key, info
/// [`MESSAGE_KEYS_INFO`]; 44 output bytes = 32-byte ChaCha20-Poly1305 key
/// then 12-byte nonce.
pub fn message_keys(message_key: &[u8; KEY_LEN]) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
    let mut okm = Zeroizing::new([0u8; 64]);
    let prk = zero_salt().prk(message_key);
    prk.expand64(MESSAGE_KEYS_INFO, &mut okm);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..44]);
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

// ---------------------------------------------------------------------------
// HMAC-SHA256 over SHA-256's compression function
// ---------------------------------------------------------------------------
//
// The ratchet's KDFs are HMAC-SHA256 with 32-byte keys and short inputs, so
// almost all of their time is SHA-256 compressions: 6 per chain step, 9 per
// message-key expansion. The `hmac`/`hkdf` crates compute exactly the same
// bytes (the tests below check it against them, and the vectors pin them),
// but around each compression they copy and re-pad their block buffers, and
// they cannot keep a key's padded states across calls. Measured reason for
// the hand-written path (docs/BENCHMARKS.md, issues 10 and 11): it removes
// that overhead, reuses the zero salt's key states (2 compressions fewer
// per message key) and lets a gap of skipped keys run with one scratch
// area, wiped once. Only `sha2`'s compression function is used; no SHA-256
// is written here.

/// SHA-256's initial hash value (FIPS 180-4, section 5.3.3).
const SHA256_H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];
const IPAD: u8 = 0x36;
const OPAD: u8 = 0x5c;
/// SHA-256's block size.
const BLOCK: usize = 64;

/// The last (and only) inner block of `HMAC(k, [seed])` for a one-byte
/// seed: the byte, the 0x80 terminator, zeros, and the bit length of
/// key block + 1 byte (520). No secret in it.
const fn one_byte_block(seed: u8) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    block[0] = seed;
    block[1] = 0x80;
    let bits = ((BLOCK as u64) + 1) * 8;
    let len = bits.to_be_bytes();
    let mut i = 0;
    while i < 8 {
        block[56 + i] = len[i];
        i += 1;
    }
    block
}
const MESSAGE_KEY_BLOCK: [u8; BLOCK] = one_byte_block(MESSAGE_KEY_SEED);
const CHAIN_KEY_BLOCK: [u8; BLOCK] = one_byte_block(CHAIN_KEY_SEED);

/// Write a SHA-256 state out as its big-endian digest.
fn digest_into(state: &[u32; 8], out: &mut [u8]) {
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
}

/// An HMAC-SHA256 key of 32 bytes, as the states after its inner and
/// outer padded key blocks (what every HMAC under this key starts from).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct HmacKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl HmacKey {
    fn new(key: &[u8; KEY_LEN]) -> Self {
        let mut block = Zeroizing::new([0u8; BLOCK]);
        let mut this = Self {
            inner: SHA256_H0,
            outer: SHA256_H0,
        };
        this.rekey(key, &mut block);
        this
    }

    /// Replace the key, using `block` as scratch (left holding key bytes:
    /// the caller wipes it).
    fn rekey(&mut self, key: &[u8; KEY_LEN], block: &mut [u8; BLOCK]) {
        block.fill(IPAD);
        for (b, k) in block.iter_mut().zip(key) {
            *b ^= k;
        }
        self.inner = SHA256_H0;
        compress256(&mut self.inner, std::slice::from_ref(block));
        for b in block.iter_mut() {
            *b ^= IPAD ^ OPAD;
        }
        self.outer = SHA256_H0;
        compress256(&mut self.outer, std::slice::from_ref(block));
    }

    /// `HMAC(key, parts[0] || parts[1] || ...)` into `out`.
    fn mac(&self, parts: &[&[u8]], out: &mut [u8; 32]) {
        let mut state = Zeroizing::new(self.inner);
        let mut block = Zeroizing::new([0u8; BLOCK]);
        finish(&mut state, &mut block, parts);
        digest_into(&state, out);
        *state = self.outer;
        finish(&mut state, &mut block, &[&out[..]]);
        digest_into(&state, out);
    }

    /// HKDF-Extract with this key as the salt: the pseudorandom key.
    fn prk(&self, ikm: &[u8; KEY_LEN]) -> HmacKey {
        let mut prk = Zeroizing::new([0u8; 32]);
        self.mac(&[ikm], &mut prk);
        HmacKey::new(&prk)
    }

    /// HKDF-Expand of 64 bytes (two blocks) with this key as the PRK. A
    /// caller wanting fewer bytes takes a prefix: HKDF's output is the
    /// prefix of a longer expansion.
    fn expand64(&self, info: &[u8], okm: &mut [u8; 64]) {
        let mut t1 = Zeroizing::new([0u8; 32]);
        let mut t2 = Zeroizing::new([0u8; 32]);
        self.mac(&[info, &[1]], &mut t1);
        self.mac(&[&t1[..], info, &[2]], &mut t2);
        okm[..32].copy_from_slice(&t1[..]);
        okm[32..].copy_from_slice(&t2[..]);
    }
}

/// Go on hashing from `state`, which has taken exactly one block (a padded
/// key), over `parts`, and pad: `state` ends as the digest's words.
fn finish(state: &mut [u32; 8], block: &mut [u8; BLOCK], parts: &[&[u8]]) {
    let mut filled = 0usize;
    let mut total = BLOCK as u64;
    for part in parts {
        let mut part = *part;
        total += part.len() as u64;
        while !part.is_empty() {
            let take = (BLOCK - filled).min(part.len());
            block[filled..filled + take].copy_from_slice(&part[..take]);
            filled += take;
            part = &part[take..];
            if filled == BLOCK {
                compress256(state, std::slice::from_ref(block));
                filled = 0;
            }
        }
    }
    block[filled] = 0x80;
    block[filled + 1..].fill(0);
    if filled + 1 > BLOCK - 8 {
        compress256(state, std::slice::from_ref(block));
        block.fill(0);
    }
    block[BLOCK - 8..].copy_from_slice(&(total * 8).to_be_bytes());
    compress256(state, std::slice::from_ref(block));
}

/// HKDF's zero salt as an HMAC key, computed once (it is a constant).
fn zero_salt() -> &'static HmacKey {
    static ZERO_SALT: OnceLock<HmacKey> = OnceLock::new();
    ZERO_SALT.get_or_init(|| HmacKey::new(&[0u8; 32]))
}

/// Chain steps (`KDF_CK`) with one scratch area for any number of steps,
/// wiped when dropped: a gap of 1,000 skipped keys runs without a copy of a
/// key left anywhere but in its destination.
///
/// The four blocks a step compresses besides the constant seed blocks have
/// a constant second half (the pad bytes of the two key blocks; the
/// padding and length of the two outer blocks), written once here: a step
/// only writes the 32 bytes that change in each.
pub(crate) struct ChainStepper {
    /// `ck ^ ipad`, then `ipad` bytes.
    inner_key_block: [u8; BLOCK],
    /// `ck ^ opad`, then `opad` bytes.
    outer_key_block: [u8; BLOCK],
    /// The message key's inner digest, then padding (outer block).
    message_block: [u8; BLOCK],
    /// The next chain key's inner digest, then padding (outer block).
    chain_block: [u8; BLOCK],
    inner: [u32; 8],
    outer: [u32; 8],
    message: [u32; 8],
    chain: [u32; 8],
}

/// An outer HMAC-SHA256 block with its digest half still zero: 0x80, zeros,
/// and the bit length of key block + digest (768).
const fn outer_block() -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    block[32] = 0x80;
    let len = (((BLOCK + 32) as u64) * 8).to_be_bytes();
    let mut i = 0;
    while i < 8 {
        block[BLOCK - 8 + i] = len[i];
        i += 1;
    }
    block
}

impl Default for ChainStepper {
    fn default() -> Self {
        Self {
            inner_key_block: [IPAD; BLOCK],
            outer_key_block: [OPAD; BLOCK],
            message_block: outer_block(),
            chain_block: outer_block(),
            inner: SHA256_H0,
            outer: SHA256_H0,
            message: SHA256_H0,
            chain: SHA256_H0,
        }
    }
}

impl Drop for ChainStepper {
    fn drop(&mut self) {
        // Only the first halves of the blocks ever held secrets; wiping
        // everything is as cheap and leaves nothing to reason about.
        self.inner_key_block.zeroize();
        self.outer_key_block.zeroize();
        self.message_block.zeroize();
        self.chain_block.zeroize();
        self.inner.zeroize();
        self.outer.zeroize();
        self.message.zeroize();
        self.chain.zeroize();
    }
}

impl ChainStepper {
    /// Write `chain_key ^ ipad` and `chain_key ^ opad` into the key blocks
    /// (a copy, then an in-place XOR with a constant: both vectorize).
    fn load_key(&mut self, chain_key: &[u8; KEY_LEN]) {
        self.inner_key_block[..KEY_LEN].copy_from_slice(chain_key);
        self.outer_key_block[..KEY_LEN].copy_from_slice(chain_key);
        for b in &mut self.inner_key_block[..KEY_LEN] {
            *b ^= IPAD;
        }
        for b in &mut self.outer_key_block[..KEY_LEN] {
            *b ^= OPAD;
        }
    }

    /// One `KDF_CK` step: the message key for `chain_key` goes to `message`,
    /// and `chain_key` becomes the next chain key. Six compressions: the two
    /// key blocks (shared by both HMACs), then an inner and an outer block
    /// per HMAC. They are issued in independent pairs (key blocks, inner
    /// blocks, outer blocks) so the processor can overlap each pair.
    pub(crate) fn step(&mut self, chain_key: &mut [u8; KEY_LEN], message: &mut [u8; KEY_LEN]) {
        self.load_key(chain_key);
        self.inner = SHA256_H0;
        self.outer = SHA256_H0;
        compress256(&mut self.inner, std::slice::from_ref(&self.inner_key_block));
        compress256(&mut self.outer, std::slice::from_ref(&self.outer_key_block));
        self.message = self.inner;
        self.chain = self.inner;
        compress256(&mut self.message, std::slice::from_ref(&MESSAGE_KEY_BLOCK));
        compress256(&mut self.chain, std::slice::from_ref(&CHAIN_KEY_BLOCK));
        digest_into(&self.message, &mut self.message_block[..KEY_LEN]);
        digest_into(&self.chain, &mut self.chain_block[..KEY_LEN]);
        self.message = self.outer;
        self.chain = self.outer;
        compress256(&mut self.message, std::slice::from_ref(&self.message_block));
        compress256(&mut self.chain, std::slice::from_ref(&self.chain_block));
        digest_into(&self.message, message);
        digest_into(&self.chain, chain_key);
    }
}

impl ChainStepper {
    /// One `KDF_CK` step that leaves the message key one compression short:
    /// `outer` gets the outer HMAC state of `chain_key` (after its padded
    /// `opad` key block) and `inner` the inner digest `H((ck ^ ipad) ||
    /// 0x01)`; [`finish_message_key`] turns the pair into the message key.
    /// `chain_key` becomes the next chain key, as with [`Self::step`]. Five
    /// compressions instead of six, for keys stored for later (most skipped
    /// keys are never used, and a used one pays the sixth then).
    ///
    /// The pair reveals the message key and nothing else of the chain: the
    /// next chain key is `HMAC` under the same key of `0x02`, whose inner
    /// digest needs the inner key state, which is not kept (HMAC's own
    /// security argument treats the inner and outer key states as
    /// independent keys).
    pub(crate) fn step_deferred(
        &mut self,
        chain_key: &mut [u8; KEY_LEN],
        outer: &mut [u32; 8],
        inner: &mut [u8; KEY_LEN],
    ) {
        self.load_key(chain_key);
        self.inner = SHA256_H0;
        *outer = SHA256_H0;
        compress256(&mut self.inner, std::slice::from_ref(&self.inner_key_block));
        compress256(outer, std::slice::from_ref(&self.outer_key_block));
        self.chain = self.inner;
        self.message = self.inner;
        compress256(&mut self.chain, std::slice::from_ref(&CHAIN_KEY_BLOCK));
        compress256(&mut self.message, std::slice::from_ref(&MESSAGE_KEY_BLOCK));
        digest_into(&self.chain, &mut self.chain_block[..KEY_LEN]);
        digest_into(&self.message, inner);
        self.chain = *outer;
        compress256(&mut self.chain, std::slice::from_ref(&self.chain_block));
        digest_into(&self.chain, chain_key);
    }
}

/// The message key from what [`ChainStepper::step_deferred`] kept: the
/// outer HMAC compression over the inner digest.
pub(crate) fn finish_message_key(
    outer: &[u32; 8],
    inner: &[u8; KEY_LEN],
) -> Zeroizing<[u8; KEY_LEN]> {
    let mut block = Zeroizing::new(outer_block());
    block[..KEY_LEN].copy_from_slice(inner);
    let mut state = Zeroizing::new(*outer);
    compress256(&mut state, std::slice::from_ref(&*block));
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    digest_into(&state, &mut key[..]);
    key
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
        self.step_with(&mut ChainStepper::default())
    }

    /// [`Self::step`] with a caller's scratch area (many steps in a row).
    pub(crate) fn step_with(&mut self, stepper: &mut ChainStepper) -> MessageKey {
        let mut mk = MessageKey::new([0u8; KEY_LEN], self.index);
        self.step_into(stepper, &mut mk.key);
        mk
    }

    /// Advance one step, writing the message key for the current index,
    /// deferred (see [`ChainStepper::step_deferred`]), into `outer` and
    /// `inner` (where it is to be kept).
    pub(crate) fn step_deferred_into(
        &mut self,
        stepper: &mut ChainStepper,
        outer: &mut [u32; 8],
        inner: &mut [u8; KEY_LEN],
    ) {
        stepper.step_deferred(&mut self.key, outer, inner);
        self.index = self.index.wrapping_add(1);
    }

    /// Advance one step, writing the message key for the current index
    /// into `message` (where it is to be kept).
    pub(crate) fn step_into(&mut self, stepper: &mut ChainStepper, message: &mut [u8; KEY_LEN]) {
        stepper.step(&mut self.key, message);
        self.index = self.index.wrapping_add(1);
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

    /// The hand-written HMAC path gives the `hmac` and `hkdf` crates' bytes.
    #[test]
    fn kdfs_agree_with_the_hmac_and_hkdf_crates() {
        use hmac::{Hmac, KeyInit, Mac};
        type HmacSha256 = Hmac<Sha256>;
        let hmac = |key: &[u8], data: &[&[u8]]| -> [u8; 32] {
            let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| {
                unreachable_hmac();
            });
            for d in data {
                mac.update(d);
            }
            mac.finalize().into_bytes().into()
        };
        for seed in 0u8..40 {
            let key: [u8; 32] =
                std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8));
            let ikm: [u8; 32] = std::array::from_fn(|i| seed ^ (i as u8).wrapping_mul(7));
            // KDF_CK.
            let (next, mk) = chain_kdf(&key);
            assert_eq!(*mk, hmac(&key, &[&[MESSAGE_KEY_SEED]]));
            assert_eq!(*next, hmac(&key, &[&[CHAIN_KEY_SEED]]));
            // HMAC of every input length across the padding boundaries.
            let data: Vec<u8> = (0..200u32).map(|i| (i as u8) ^ seed).collect();
            for len in [0usize, 1, 31, 55, 56, 57, 63, 64, 65, 119, 120, 128, 200] {
                let mut out = [0u8; 32];
                HmacKey::new(&key).mac(&[&data[..len / 2], &data[len / 2..len]], &mut out);
                assert_eq!(out, hmac(&key, &[&data[..len]]), "length {len}");
            }
            // KDF_RK and the message keys against the hkdf crate.
            let (root, chain) = root_kdf(&key, &ikm);
            let mut okm = [0u8; 64];
            hkdf_sha256(&key, &ikm, ROOT_INFO, &mut okm);
            assert_eq!((&root[..], &chain[..]), (&okm[..32], &okm[32..]));
            let (aead_key, nonce) = message_keys(&ikm);
            let mut okm = [0u8; 44];
            hkdf_sha256(&[0u8; 32], &ikm, MESSAGE_KEYS_INFO, &mut okm);
            assert_eq!((&aead_key[..], &nonce[..]), (&okm[..32], &okm[32..]));
        }
    }

    /// A deferred step gives the same next chain key, and its pair
    /// finishes to the same message key, as a full step.
    #[test]
    fn deferred_steps_finish_to_the_message_keys() {
        let mut full = [3u8; 32];
        let mut deferred = full;
        let mut stepper = ChainStepper::default();
        for _ in 0..5 {
            let mut message = [0u8; 32];
            stepper.step(&mut full, &mut message);
            let (mut outer, mut inner) = ([0u32; 8], [0u8; 32]);
            stepper.step_deferred(&mut deferred, &mut outer, &mut inner);
            assert_eq!(deferred, full);
            assert_eq!(*finish_message_key(&outer, &inner), message);
        }
    }

    #[test]
    fn root_kdf_splits_64_bytes() {
        let (rk, ck) = root_kdf(&[1; 32], &[2; 32]);
        assert_ne!(*rk, *ck);
        let (rk2, _) = root_kdf(&[1; 32], &[3; 32]);
        assert_ne!(*rk, *rk2);
    }
}
