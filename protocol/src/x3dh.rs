//! X3DH key agreement (Signal specification, revision 1), with the device's
//! Ed25519 identity key used in its X25519 form for DH.
//!
//! DH order as in the specification: `DH1 = DH(IK_A, SPK_B)`,
//! `DH2 = DH(EK_A, IK_B)`, `DH3 = DH(EK_A, SPK_B)`, `DH4 = DH(EK_A, OPK_B)`;
//! `SK = KDF(DH1 || DH2 || DH3 [|| DH4])` (see [`crate::kdf::x3dh_kdf`]);
//! `AD = IK_A || IK_B` (32-byte Ed25519 encodings).

use rand_core::CryptoRng;
use x25519_dalek::PublicKey;
use zeroize::Zeroizing;

use crate::error::Result;
use crate::kdf::x3dh_kdf;
use crate::keys::{IdentityKey, IdentityKeyPair, KEY_LEN, KeyPair};
use crate::prekeys::VerifiedBundle;
use crate::ratchet::AD_LEN;

/// What the initiator keeps from X3DH.
pub(crate) struct InitiatorAgreement {
    pub(crate) shared_secret: Zeroizing<[u8; KEY_LEN]>,
    pub(crate) ephemeral_public: [u8; KEY_LEN],
}

/// The associated data: initiator identity then responder identity.
pub fn associated_data(initiator: &IdentityKey, responder: &IdentityKey) -> [u8; AD_LEN] {
    let mut ad = [0u8; AD_LEN];
    ad[..KEY_LEN].copy_from_slice(initiator.as_bytes());
    ad[KEY_LEN..].copy_from_slice(responder.as_bytes());
    ad
}

/// Alice's side: run X3DH against a verified bundle with a fresh ephemeral key.
pub(crate) fn initiate<R: CryptoRng + ?Sized>(
    identity: &IdentityKeyPair,
    bundle: &VerifiedBundle,
    rng: &mut R,
) -> Result<InitiatorAgreement> {
    let ephemeral = KeyPair::generate(rng);
    initiate_with_ephemeral(identity, bundle, &ephemeral)
}

/// The initiator's shared secret `SK` with a given ephemeral key. Exposed
/// for test vectors and interoperability checks; sessions use it internally.
pub fn initiator_shared_secret(
    identity: &IdentityKeyPair,
    bundle: &VerifiedBundle,
    ephemeral: &KeyPair,
) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    Ok(initiate_with_ephemeral(identity, bundle, ephemeral)?.shared_secret)
}

/// Alice's side with a given ephemeral key (for test vectors).
pub(crate) fn initiate_with_ephemeral(
    identity: &IdentityKeyPair,
    bundle: &VerifiedBundle,
    ephemeral: &KeyPair,
) -> Result<InitiatorAgreement> {
    let dh1 = identity.dh(&bundle.signed_prekey, "signed prekey")?;
    let dh2 = ephemeral.dh(bundle.identity.x25519(), "identity key")?;
    let dh3 = ephemeral.dh(&bundle.signed_prekey, "signed prekey")?;
    let shared_secret = match &bundle.one_time_prekey {
        Some((_, opk)) => {
            let dh4 = ephemeral.dh(opk, "one-time prekey")?;
            x3dh_kdf(&[&dh1, &dh2, &dh3, &dh4])
        }
        None => x3dh_kdf(&[&dh1, &dh2, &dh3]),
    };
    Ok(InitiatorAgreement {
        shared_secret,
        ephemeral_public: ephemeral.public_bytes(),
    })
}

/// Bob's side (`SK`): the same secret from his private keys and Alice's public ones.
pub fn respond(
    identity: &IdentityKeyPair,
    signed_prekey: &KeyPair,
    one_time_prekey: Option<&KeyPair>,
    initiator_identity: &IdentityKey,
    initiator_ephemeral: &PublicKey,
) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let dh1 = signed_prekey.dh(initiator_identity.x25519(), "identity key")?;
    let dh2 = identity.dh(initiator_ephemeral, "base key")?;
    let dh3 = signed_prekey.dh(initiator_ephemeral, "base key")?;
    let shared_secret = match one_time_prekey {
        Some(opk) => {
            let dh4 = opk.dh(initiator_ephemeral, "base key")?;
            x3dh_kdf(&[&dh1, &dh2, &dh3, &dh4])
        }
        None => x3dh_kdf(&[&dh1, &dh2, &dh3]),
    };
    Ok(shared_secret)
}
