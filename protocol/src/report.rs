//! Reports sealed to the operator (docs/PROTOCOL.md, "Reports"): a
//! recipient reveals a message it received (its committed content, the
//! franking key, the relay's tag and the envelope) to the operator only.
//! The relay stores the sealed bytes and cannot read them.
//!
//! Sealed-box style, to the X25519 form of the operator's Ed25519 key (the
//! birational map, as device identities use for X3DH): a fresh ephemeral
//! X25519 key, HKDF-SHA256 of the Diffie-Hellman result into a
//! ChaCha20-Poly1305 key and nonce. Pure functions: randomness is a
//! parameter.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Tag};
use ed25519_dalek::{SigningKey, VerifyingKey};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{OperatorKey, OperatorKeyPair};

/// Version byte opening a sealed report.
pub const REPORT_FORMAT: u8 = 1;
/// HKDF info string, and the associated data's prefix.
pub const REPORT_INFO: &[u8] = b"Comptoir report v1";
/// Bytes a sealed report adds to its plaintext: version (1), ephemeral
/// key (32), Poly1305 tag (16).
pub const REPORT_OVERHEAD: usize = 1 + 32 + 16;

/// Why a sealed report does not open.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportSealError {
    /// Shorter than a sealed report can be, or of another version.
    #[error("not a sealed report (too short, or an unknown version)")]
    Malformed,
    /// The ephemeral key is a low-order point.
    #[error("the sealed report's ephemeral key is invalid")]
    InvalidKey,
    /// The AEAD check failed: altered, or sealed to another operator key.
    #[error("the report does not open with this operator key (altered, or sealed to another key)")]
    DoesNotOpen,
}

fn operator_x25519(operator: &OperatorKey) -> Option<PublicKey> {
    let verifying = VerifyingKey::from_bytes(&operator.to_bytes()).ok()?;
    Some(PublicKey::from(verifying.to_montgomery().to_bytes()))
}

/// ChaCha20-Poly1305 key (32) and nonce (12) =
/// HKDF-SHA256(salt = ephemeral public (32) || operator X25519 public (32),
/// ikm = X25519(ephemeral, operator), info = "Comptoir report v1"), 44 bytes.
fn key_and_nonce(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    operator: &[u8; 32],
) -> Zeroizing<[u8; 44]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(operator);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut okm = Zeroizing::new([0u8; 44]);
    // 44 bytes is far below HKDF-SHA256's limit: expand cannot fail.
    let _ = hk.expand(REPORT_INFO, okm.as_mut());
    okm
}

/// The associated data: "Comptoir report v1" || version || ephemeral public.
fn associated_data(ephemeral: &[u8; 32]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(REPORT_INFO.len() + 1 + 32);
    ad.extend_from_slice(REPORT_INFO);
    ad.push(REPORT_FORMAT);
    ad.extend_from_slice(ephemeral);
    ad
}

/// Seal `plaintext` (an encoded `wire.ReportContents`) to `operator`:
/// `version (1) || ephemeral X25519 public (32) || ciphertext || tag (16)`.
/// `None` only if the operator key has no X25519 form (never for a key
/// that parsed).
pub fn seal<R: CryptoRng + ?Sized>(
    operator: &OperatorKey,
    plaintext: &[u8],
    rng: &mut R,
) -> Option<Vec<u8>> {
    let mut secret = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(secret.as_mut());
    seal_with_ephemeral(operator, plaintext, &secret)
}

/// [`seal`] with a given ephemeral secret (test vectors only: never reuse
/// one).
#[doc(hidden)]
pub fn seal_with_ephemeral(
    operator: &OperatorKey,
    plaintext: &[u8],
    ephemeral_secret: &[u8; 32],
) -> Option<Vec<u8>> {
    let operator = operator_x25519(operator)?;
    let secret = StaticSecret::from(*ephemeral_secret);
    let ephemeral = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&operator);
    if !shared.was_contributory() {
        return None;
    }
    let okm = key_and_nonce(shared.as_bytes(), &ephemeral, operator.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    let cipher = ChaCha20Poly1305::new(&key.into());
    key.zeroize();
    let mut out = Vec::with_capacity(plaintext.len() + REPORT_OVERHEAD);
    out.push(REPORT_FORMAT);
    out.extend_from_slice(&ephemeral);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_inout_detached(
            &nonce.into(),
            &associated_data(&ephemeral),
            (&mut out[1 + 32..]).into(),
        )
        .ok()?;
    out.extend_from_slice(&tag);
    Some(out)
}

/// Open a sealed report with the operator's key pair.
pub fn open(
    operator: &OperatorKeyPair,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ReportSealError> {
    if sealed.len() < REPORT_OVERHEAD || sealed[0] != REPORT_FORMAT {
        return Err(ReportSealError::Malformed);
    }
    let mut ephemeral = [0u8; 32];
    ephemeral.copy_from_slice(&sealed[1..33]);
    let seed = operator.seed();
    let mut scalar = SigningKey::from_bytes(&seed).to_scalar_bytes();
    let secret = StaticSecret::from(scalar);
    scalar.zeroize();
    let ours = PublicKey::from(&secret);
    let shared = secret.diffie_hellman(&PublicKey::from(ephemeral));
    if !shared.was_contributory() {
        return Err(ReportSealError::InvalidKey);
    }
    let okm = key_and_nonce(shared.as_bytes(), &ephemeral, ours.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    let cipher = ChaCha20Poly1305::new(&key.into());
    key.zeroize();
    let (body, tag) = sealed[33..].split_at(sealed.len() - 33 - 16);
    let tag = Tag::try_from(tag).map_err(|_| ReportSealError::Malformed)?;
    let mut plaintext = Zeroizing::new(body.to_vec());
    cipher
        .decrypt_inout_detached(
            &nonce.into(),
            &associated_data(&ephemeral),
            plaintext.as_mut_slice().into(),
            &tag,
        )
        .map_err(|_| ReportSealError::DoesNotOpen)?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_report_opens_only_with_its_operator_key() {
        let operator = OperatorKeyPair::from_seed(&[1; 32]);
        let other = OperatorKeyPair::from_seed(&[2; 32]);
        let sealed =
            seal_with_ephemeral(&operator.public(), b"report", &[3; 32]).unwrap_or_default();
        assert_eq!(sealed.len(), 6 + REPORT_OVERHEAD);
        assert_eq!(
            open(&operator, &sealed).map(|p| p.to_vec()),
            Ok(b"report".to_vec())
        );
        assert_eq!(open(&other, &sealed), Err(ReportSealError::DoesNotOpen));
        for i in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 1;
            assert!(open(&operator, &altered).is_err(), "byte {i}");
        }
        assert_eq!(
            open(&operator, &sealed[..40]),
            Err(ReportSealError::Malformed)
        );
    }
}
