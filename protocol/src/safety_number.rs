//! Safety numbers: a stable fingerprint of two identities that both users
//! can compare by eye (60 digits) or by scanning a QR payload.
//!
//! Per identity: `h = SHA-512(0x00 0x00 || identity_key (32) || account_id
//! (16))`, then 5,199 more rounds of `h = SHA-512(h || identity_key)`; the
//! fingerprint is the first 30 bytes, shown as six 5-digit groups (each 5
//! bytes read big-endian, modulo 100,000). The safety number is the two
//! 30-digit strings, smaller first, so both sides see the same 60 digits.

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::account::AccountId;
use crate::error::{DecodeError, Error, Result};
use crate::keys::IdentityKey;

/// Hash rounds per fingerprint (as Signal's: slows brute-force collisions).
pub const FINGERPRINT_ITERATIONS: usize = 5200;
/// Version byte of the QR payload.
pub const SAFETY_QR_VERSION: u8 = 1;
const FINGERPRINT_LEN: usize = 30;
/// Length of the QR payload: version || two 30-byte fingerprints.
pub const SAFETY_QR_LEN: usize = 1 + 2 * FINGERPRINT_LEN;

fn fingerprint(identity: &IdentityKey, account: &AccountId) -> [u8; FINGERPRINT_LEN] {
    let mut hasher = Sha512::new();
    hasher.update([0u8, 0u8]);
    hasher.update(identity.as_bytes());
    hasher.update(account.as_bytes());
    let mut hash = hasher.finalize();
    for _ in 1..FINGERPRINT_ITERATIONS {
        let mut hasher = Sha512::new();
        hasher.update(hash);
        hasher.update(identity.as_bytes());
        hash = hasher.finalize();
    }
    let mut out = [0u8; FINGERPRINT_LEN];
    out.copy_from_slice(&hash[..FINGERPRINT_LEN]);
    out
}

fn digits(fingerprint: &[u8; FINGERPRINT_LEN]) -> String {
    let mut out = String::with_capacity(30);
    for chunk in fingerprint.chunks(5) {
        let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        out.push_str(&format!("{:05}", value % 100_000));
    }
    out
}

/// The safety number of a conversation between two devices.
#[derive(Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    first: [u8; FINGERPRINT_LEN],
    second: [u8; FINGERPRINT_LEN],
}

impl SafetyNumber {
    /// Compute from both identities; the result is the same on both sides.
    pub fn new(local: (&AccountId, &IdentityKey), remote: (&AccountId, &IdentityKey)) -> Self {
        let a = fingerprint(local.1, local.0);
        let b = fingerprint(remote.1, remote.0);
        let (first, second) = if digits(&a) <= digits(&b) {
            (a, b)
        } else {
            (b, a)
        };
        Self { first, second }
    }

    /// The 60 digits, no spaces.
    pub fn digits(&self) -> String {
        let mut out = digits(&self.first);
        out.push_str(&digits(&self.second));
        out
    }

    /// The 60 digits in 12 groups of 5 separated by spaces, for display.
    pub fn display(&self) -> String {
        let digits = self.digits();
        digits
            .as_bytes()
            .chunks(5)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The QR payload: `version || first fingerprint || second fingerprint`.
    pub fn qr_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SAFETY_QR_LEN);
        out.push(SAFETY_QR_VERSION);
        out.extend_from_slice(&self.first);
        out.extend_from_slice(&self.second);
        out
    }

    /// Compare with a payload scanned from the other device's screen.
    /// `Ok(true)` when they match, `Ok(false)` when they differ (someone is
    /// in the middle or an identity changed), an error for a bad payload.
    pub fn matches_scanned(&self, scanned: &[u8]) -> Result<bool> {
        if scanned.len() != SAFETY_QR_LEN {
            return Err(Error::Decode(DecodeError::BadLength {
                field: "safety number QR payload",
                expected: SAFETY_QR_LEN,
                got: scanned.len(),
            }));
        }
        if scanned[0] != SAFETY_QR_VERSION {
            return Err(Error::Decode(DecodeError::UnsupportedVersion {
                expected: SAFETY_QR_VERSION,
                got: scanned[0],
            }));
        }
        Ok(self.qr_payload().ct_eq(scanned).into())
    }
}

impl std::fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SafetyNumber({})", self.display())
    }
}
