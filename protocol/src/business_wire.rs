//! Business certificates and their revocations on the wire: conversions
//! between the signed [`BusinessCertificate`] / [`CertificateRevocation`]
//! and their frames, shared by the relay (which signs and stores them)
//! and the clients (which check them with [`crate::business::verified_name`]).

use crate::account::AccountId;
use crate::business::{BusinessCertificate, CertificateRevocation};
use crate::error::{DecodeError, Error, Result};
use crate::keys::{AccountKey, SIGNATURE_LEN};
use crate::proto::wire::{BusinessCertificateRecord, CertificateRevocationRecord};

fn bad(what: &'static str) -> Error {
    Error::Decode(DecodeError::Protobuf(what.into()))
}

fn digest(bytes: &[u8], what: &'static str) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| bad(what))
}

fn signature(bytes: &[u8], what: &'static str) -> Result<[u8; SIGNATURE_LEN]> {
    bytes.try_into().map_err(|_| bad(what))
}

/// A signed certificate as a frame.
pub fn certificate_to_wire(
    certificate: &BusinessCertificate,
    signature: &[u8; SIGNATURE_LEN],
) -> BusinessCertificateRecord {
    BusinessCertificateRecord {
        account: certificate.account.to_vec(),
        account_key: certificate.account_key.to_bytes().to_vec(),
        display_name: certificate.display_name.clone(),
        profile_digest: certificate.profile_digest.to_vec(),
        issued_at_ms: certificate.issued_at_ms,
        expires_at_ms: certificate.expires_at_ms,
        signature: signature.to_vec(),
    }
}

/// A frame back to a certificate and its signature (not yet verified).
pub fn certificate_from_wire(
    record: &BusinessCertificateRecord,
) -> Result<(BusinessCertificate, [u8; SIGNATURE_LEN])> {
    Ok((
        BusinessCertificate {
            account: AccountId::from_bytes(&record.account)?,
            account_key: AccountKey::from_bytes(&record.account_key)?,
            display_name: record.display_name.clone(),
            profile_digest: digest(
                &record.profile_digest,
                "certificate: profile_digest is not 32 bytes",
            )?,
            issued_at_ms: record.issued_at_ms,
            expires_at_ms: record.expires_at_ms,
        },
        signature(&record.signature, "certificate: signature is not 64 bytes")?,
    ))
}

/// A signed revocation as a frame.
pub fn revocation_to_wire(
    revocation: &CertificateRevocation,
    signature: &[u8; SIGNATURE_LEN],
) -> CertificateRevocationRecord {
    CertificateRevocationRecord {
        account: revocation.account.to_vec(),
        certificate_digest: revocation.certificate_digest.to_vec(),
        revoked_at_ms: revocation.revoked_at_ms,
        signature: signature.to_vec(),
    }
}

/// A frame back to a revocation and its signature (not yet verified).
pub fn revocation_from_wire(
    record: &CertificateRevocationRecord,
) -> Result<(CertificateRevocation, [u8; SIGNATURE_LEN])> {
    Ok((
        CertificateRevocation {
            account: AccountId::from_bytes(&record.account)?,
            certificate_digest: digest(
                &record.certificate_digest,
                "revocation: certificate_digest is not 32 bytes",
            )?,
            revoked_at_ms: record.revoked_at_ms,
        },
        signature(&record.signature, "revocation: signature is not 64 bytes")?,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use super::*;
    use crate::keys::AccountKeyPair;

    #[test]
    fn round_trips_and_bad_lengths() {
        let key = AccountKeyPair::from_seed(&[3; 32]).public();
        let certificate = BusinessCertificate {
            account: AccountId::from_bytes(&[1; 16]).unwrap(),
            account_key: key,
            display_name: "Acme Air".into(),
            profile_digest: [5; 32],
            issued_at_ms: 10,
            expires_at_ms: 20,
        };
        let wire = certificate_to_wire(&certificate, &[9; SIGNATURE_LEN]);
        assert_eq!(
            certificate_from_wire(&wire).unwrap(),
            (certificate.clone(), [9; 64])
        );
        let mut broken = wire.clone();
        broken.profile_digest.pop();
        assert!(certificate_from_wire(&broken).is_err());
        let mut broken = wire;
        broken.account_key = vec![0; 31];
        assert!(certificate_from_wire(&broken).is_err());

        let revocation = CertificateRevocation::of(&certificate, 15);
        let wire = revocation_to_wire(&revocation, &[8; SIGNATURE_LEN]);
        assert_eq!(revocation_from_wire(&wire).unwrap(), (revocation, [8; 64]));
        let mut broken = wire;
        broken.signature.pop();
        assert!(revocation_from_wire(&broken).is_err());
    }
}
