//! Signed prekeys and one-time prekeys (X3DH section 2.5), and the bundle an
//! initiator fetches from the relay.

use crate::error::{DecodeError, Error, Result};
use crate::keys::{IdentityKey, IdentityKeyPair, KEY_LEN, KeyPair, x25519_public};
use crate::proto::wire;
use x25519_dalek::PublicKey;

const SIGNED_PREKEY_CONTEXT: &[u8] = b"Comptoir signed prekey v1";

/// The bytes an identity key signs for a signed prekey:
/// `"Comptoir signed prekey v1" || key_id (u32 BE) || public_key (32)`.
pub fn signed_prekey_payload(key_id: u32, public_key: &[u8; KEY_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNED_PREKEY_CONTEXT.len() + 4 + KEY_LEN);
    out.extend_from_slice(SIGNED_PREKEY_CONTEXT);
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(public_key);
    out
}

/// Sign a signed prekey with the device identity, producing the wire form.
pub fn sign_prekey(identity: &IdentityKeyPair, key_id: u32, key: &KeyPair) -> wire::SignedPreKey {
    let public = key.public_bytes();
    wire::SignedPreKey {
        key_id,
        public_key: public.to_vec(),
        signature: identity
            .sign(&signed_prekey_payload(key_id, &public))
            .to_vec(),
    }
}

/// Check a signed prekey's signature against the device identity.
pub fn verify_signed_prekey(identity: &IdentityKey, spk: &wire::SignedPreKey) -> Result<()> {
    let public: [u8; KEY_LEN] = crate::keys::key_bytes("signed_prekey", &spk.public_key)?;
    identity.verify(
        "signed prekey",
        &signed_prekey_payload(spk.key_id, &public),
        &spk.signature,
    )
}

/// A bundle whose signed prekey signature has been verified: the proof
/// that X3DH may proceed (see [`crate::x3dh`]).
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    pub(crate) identity: IdentityKey,
    pub(crate) signed_prekey_id: u32,
    pub(crate) signed_prekey: PublicKey,
    pub(crate) one_time_prekey: Option<(u32, PublicKey)>,
}

impl VerifiedBundle {
    /// Verify a bundle from the relay. `expected_identity`, when known (from
    /// the account's signed device list), must match the bundle's identity.
    pub fn verify(
        bundle: &wire::PreKeyBundle,
        expected_identity: Option<&IdentityKey>,
    ) -> Result<Self> {
        let identity = IdentityKey::from_bytes(&bundle.identity_key)?;
        if expected_identity.is_some_and(|expected| *expected != identity) {
            return Err(Error::IdentityMismatch);
        }
        let spk = bundle
            .signed_prekey
            .as_ref()
            .ok_or(Error::Decode(DecodeError::MissingField("signed_prekey")))?;
        verify_signed_prekey(&identity, spk)?;
        let one_time_prekey = match &bundle.one_time_prekey {
            Some(opk) => Some((
                opk.key_id,
                x25519_public("one_time_prekey", &opk.public_key)?,
            )),
            None => None,
        };
        Ok(Self {
            identity,
            signed_prekey_id: spk.key_id,
            signed_prekey: x25519_public("signed_prekey", &spk.public_key)?,
            one_time_prekey,
        })
    }

    /// The responder's identity.
    pub fn identity(&self) -> &IdentityKey {
        &self.identity
    }

    /// Whether the bundle carried a one-time prekey.
    pub fn has_one_time_prekey(&self) -> bool {
        self.one_time_prekey.is_some()
    }
}
