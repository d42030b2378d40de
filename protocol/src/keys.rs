//! Key types: device identity (Ed25519, used in its X25519 form for DH),
//! account keys, and X25519 key pairs for prekeys and ratchet keys.
//!
//! Secret halves zeroize on drop and have a `Debug` that prints no key bytes.
//! Public halves print a short hex prefix so logs can tell keys apart.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{DecodeError, Error, Result};

/// Length of every public key and secret key on the wire.
pub const KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The first 4 bytes in hex: enough to tell keys apart in Debug output.
fn short_hex(bytes: &[u8]) -> String {
    hex::encode(bytes.get(..4).unwrap_or(bytes))
}

/// Read exactly 32 bytes from a field.
pub(crate) fn key_bytes(field: &'static str, bytes: &[u8]) -> Result<[u8; KEY_LEN]> {
    bytes.try_into().map_err(|_| {
        Error::Decode(DecodeError::BadLength {
            field,
            expected: KEY_LEN,
            got: bytes.len(),
        })
    })
}

/// Parse a 64-byte Ed25519 signature.
pub(crate) fn signature_from(what: &'static str, bytes: &[u8]) -> Result<Signature> {
    let bytes: [u8; SIGNATURE_LEN] = bytes.try_into().map_err(|_| {
        Error::Decode(DecodeError::BadLength {
            field: what,
            expected: SIGNATURE_LEN,
            got: bytes.len(),
        })
    })?;
    Ok(Signature::from_bytes(&bytes))
}

/// Diffie-Hellman that refuses a non-contributory (all-zero) result.
pub(crate) fn diffie_hellman(
    ours: &StaticSecret,
    theirs: &PublicKey,
    what: &'static str,
) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let shared = ours.diffie_hellman(theirs);
    if !shared.was_contributory() {
        return Err(Error::InvalidKey { what });
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// The public identity of a device: an Ed25519 key, and its X25519 form
/// (the birational map from Edwards to Montgomery) used for X3DH.
#[derive(Clone, Copy)]
pub struct IdentityKey {
    ed25519: VerifyingKey,
    x25519: PublicKey,
}

impl IdentityKey {
    /// Parse a 32-byte compressed Ed25519 public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bytes = key_bytes("identity_key", bytes)?;
        let ed25519 = canonical_ed25519("identity key", &bytes)?;
        let x25519 = PublicKey::from(ed25519.to_montgomery().to_bytes());
        Ok(Self { ed25519, x25519 })
    }

    /// The 32-byte Ed25519 encoding (what goes on the wire and into the AD).
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.ed25519.to_bytes()
    }

    /// Borrow the Ed25519 encoding.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        self.ed25519.as_bytes()
    }

    /// The X25519 form used in Diffie-Hellman.
    pub(crate) fn x25519(&self) -> &PublicKey {
        &self.x25519
    }

    /// Verify a signature made by this identity (strict verification).
    pub fn verify(&self, what: &'static str, message: &[u8], signature: &[u8]) -> Result<()> {
        let signature = signature_from(what, signature)?;
        self.ed25519
            .verify_strict(message, &signature)
            .map_err(|_| Error::BadSignature { what })
    }
}

impl PartialEq for IdentityKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes().ct_eq(other.as_bytes()).into()
    }
}
impl Eq for IdentityKey {}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({}…)", short_hex(self.as_bytes()))
    }
}

/// A device's identity key pair. The Ed25519 secret signs prekeys; its
/// X25519 form (clamped first half of SHA-512 of the seed, as in RFC 8032
/// key expansion) is the identity DH key in X3DH.
pub struct IdentityKeyPair {
    signing: SigningKey,
    dh_secret: StaticSecret,
    public: IdentityKey,
}

impl IdentityKeyPair {
    /// Generate a fresh identity.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed(&seed)
    }

    /// Rebuild an identity from its 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; KEY_LEN]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let mut scalar = signing.to_scalar_bytes();
        let dh_secret = StaticSecret::from(scalar);
        scalar.zeroize();
        let verifying = signing.verifying_key();
        let public = IdentityKey {
            ed25519: verifying,
            x25519: PublicKey::from(verifying.to_montgomery().to_bytes()),
        };
        Self {
            signing,
            dh_secret,
            public,
        }
    }

    /// The 32-byte seed, for storing the identity (encrypted) at rest.
    pub fn seed(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public identity.
    pub fn public(&self) -> &IdentityKey {
        &self.public
    }

    /// Sign a message with the identity key.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }

    pub(crate) fn dh(&self, theirs: &PublicKey, what: &'static str) -> Result<Zeroizing<[u8; 32]>> {
        diffie_hellman(&self.dh_secret, theirs, what)
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// An Ed25519 signing key with one role (an account, the operator) and
/// its public half: the same code, distinct types, so a key of one role
/// can never be passed where another's is expected.
macro_rules! role_signing_keys {
    (
        $(#[$pair_doc:meta])* $pair:ident,
        $(#[$public_doc:meta])* $public:ident,
        $role:literal, $field:literal
    ) => {
        $(#[$pair_doc])*
        pub struct $pair {
            signing: SigningKey,
        }

        impl $pair {
            #[doc = concat!("Generate a fresh ", $role, " key.")]
            pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
                let mut seed = Zeroizing::new([0u8; KEY_LEN]);
                rng.fill_bytes(seed.as_mut());
                Self::from_seed(&seed)
            }

            /// Rebuild from the 32-byte seed.
            pub fn from_seed(seed: &[u8; KEY_LEN]) -> Self {
                Self {
                    signing: SigningKey::from_bytes(seed),
                }
            }

            /// The 32-byte seed, for storing the key (encrypted or in a
            /// user-only file) at rest.
            pub fn seed(&self) -> Zeroizing<[u8; KEY_LEN]> {
                Zeroizing::new(self.signing.to_bytes())
            }

            #[doc = concat!("The public ", $role, " key (Ed25519).")]
            pub fn public(&self) -> $public {
                $public(self.signing.verifying_key())
            }

            #[doc = concat!("Sign a message with the ", $role, " key.")]
            pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
                self.signing.sign(message).to_bytes()
            }
        }

        impl fmt::Debug for $pair {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($pair))
                    .field("public", &self.public())
                    .finish_non_exhaustive()
            }
        }

        $(#[$public_doc])*
        #[derive(Clone, Copy, PartialEq, Eq)]
        pub struct $public(VerifyingKey);

        impl $public {
            /// Parse a 32-byte Ed25519 public key.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
                let bytes = key_bytes($field, bytes)?;
                Ok(Self(canonical_ed25519(concat!($role, " key"), &bytes)?))
            }

            /// The 32-byte encoding.
            pub fn to_bytes(&self) -> [u8; KEY_LEN] {
                self.0.to_bytes()
            }

            #[doc = concat!("Verify a signature made with the ", $role, " key (strict verification).")]
            pub fn verify(
                &self,
                what: &'static str,
                message: &[u8],
                signature: &[u8],
            ) -> Result<()> {
                let signature = signature_from(what, signature)?;
                self.0
                    .verify_strict(message, &signature)
                    .map_err(|_| Error::BadSignature { what })
            }
        }

        impl fmt::Debug for $public {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!(stringify!($public), "({}…)"),
                    short_hex(self.0.as_bytes())
                )
            }
        }
    };
}

role_signing_keys!(
    /// The key of an account (not of a device): it signs the account's
    /// device list so the relay cannot add a device the account did not
    /// approve.
    AccountKeyPair,
    /// The public key of an account.
    AccountKey,
    "account",
    "account_key"
);

role_signing_keys!(
    /// The operator's signing key: it certifies verified businesses and
    /// signs template approvals. The relay keeps it in a 0600 file;
    /// clients pin its public half ([`OperatorKey`]) on first use.
    OperatorKeyPair,
    /// The public key of the operator, as clients pin it.
    OperatorKey,
    "operator",
    "operator_key"
);

/// The full key as 64 lowercase hex digits (a public key: safe to show).
impl fmt::Display for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.as_bytes()))
    }
}

/// An X25519 key pair: prekeys, X3DH ephemeral keys and ratchet keys. The
/// secret is boxed so moves (session archives, prekey maps) leave no copy.
#[derive(Clone)]
pub struct KeyPair {
    secret: Box<StaticSecret>,
    public: PublicKey,
}

impl KeyPair {
    /// Generate a fresh key pair.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_secret(StaticSecret::random_from_rng(rng))
    }

    /// Rebuild from the 32-byte secret (clamped on use, per RFC 7748).
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        let mut bytes = key_bytes("secret_key", bytes)?;
        let secret = StaticSecret::from(bytes);
        bytes.zeroize();
        Ok(Self::from_secret(secret))
    }

    fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        Self {
            secret: Box::new(secret),
            public,
        }
    }

    /// The 32-byte secret, for storing at rest.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The public half as bytes.
    pub fn public_bytes(&self) -> [u8; KEY_LEN] {
        self.public.to_bytes()
    }

    pub(crate) fn dh(&self, theirs: &PublicKey, what: &'static str) -> Result<Zeroizing<[u8; 32]>> {
        diffie_hellman(&self.secret, theirs, what)
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair(public {}…)", short_hex(self.public.as_bytes()))
    }
}

/// Parse a 32-byte X25519 public key.
pub(crate) fn x25519_public(field: &'static str, bytes: &[u8]) -> Result<PublicKey> {
    Ok(PublicKey::from(canonical_x25519(field, bytes)?))
}

/// Read a 32-byte X25519 public key and refuse non-canonical encodings:
/// bit 255 set, or a u-coordinate at or above p = 2^255 - 19. X25519 ignores
/// those differences, so accepting them would let one key have several byte
/// forms (and let a relay alter a key without changing the DH result).
pub(crate) fn canonical_x25519(field: &'static str, bytes: &[u8]) -> Result<[u8; KEY_LEN]> {
    let key = key_bytes(field, bytes)?;
    let top_bit_set = key[31] & 0x80 != 0;
    // u >= p exactly when u is one of 2^255 - 19 .. 2^255 - 1 (top bit clear):
    // bytes 1..31 all 0xff, byte 31 == 0x7f, byte 0 >= 0xed.
    let at_least_p = key[31] == 0x7f && key[1..31].iter().all(|b| *b == 0xff) && key[0] >= 0xed;
    if top_bit_set || at_least_p {
        return Err(Error::InvalidKey { what: field });
    }
    Ok(key)
}

/// Decode an Ed25519 public key, refusing non-canonical encodings (a
/// y-coordinate at or above p) and small-order (weak) keys.
fn canonical_ed25519(what: &'static str, bytes: &[u8; KEY_LEN]) -> Result<VerifyingKey> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| Error::InvalidKey { what })?;
    if key.is_weak() || key.to_edwards().compress().to_bytes() != *bytes {
        return Err(Error::InvalidKey { what });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_key_shows_as_its_bytes_in_lowercase_hex() {
        let key = OperatorKeyPair::generate(&mut rand::rng()).public();
        let shown = key.to_string();
        assert_eq!(shown.len(), 64);
        assert!(
            shown
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        assert_eq!(hex::decode(&shown).ok(), Some(key.to_bytes().to_vec()));
    }
}
