//! The business directory role: each business's published profile (signed
//! by its account key) and the operator's newest certificate of it and
//! revocation. The admin API certifies and revokes; `ClaimName` reads the
//! verified names, which reserve every name confusable with them.
//!
//! Embedded backend: sled tree `businesses`, key the 16-byte account id,
//! value a `comptoir.relay.BusinessRecord`; and sled tree `block_reasons`,
//! key business (16) || customer (16), value the reason (i32 BE) and the
//! time (u64 BE) of that customer's block, for the quality rating. Every write is a
//! compare-and-swap on the record it read, durable before it returns.

use std::future::Future;

use comptoir_protocol::AccountId;
use comptoir_protocol::business::{BusinessCertificate, BusinessProfile, CertificateRevocation};
use comptoir_protocol::business_wire::{
    certificate_from_wire, certificate_to_wire, revocation_from_wire, revocation_to_wire,
};
use comptoir_protocol::keys::SIGNATURE_LEN;
use comptoir_protocol::proto::relay::BusinessRecord;
use prost::Message;

use super::sled::SledStore;
use super::{StorageError, StorageResult};

/// Version of the stored `BusinessRecord`.
const RECORD_VERSION: u32 = 1;

/// What the relay keeps about one business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBusiness {
    /// The profile as published.
    pub profile: BusinessProfile,
    /// The account key's signature over its canonical bytes.
    pub profile_signature: [u8; SIGNATURE_LEN],
    /// The operator's newest certificate, with its signature.
    pub certificate: Option<(BusinessCertificate, [u8; SIGNATURE_LEN])>,
    /// Its revocation, with its signature.
    pub revocation: Option<(CertificateRevocation, [u8; SIGNATURE_LEN])>,
}

impl StoredBusiness {
    /// The certified display name, if the certificate is in force at
    /// `now_ms` (present, not revoked, not expired).
    pub fn verified_name(&self, now_ms: u64) -> Option<&str> {
        let (certificate, _) = self.certificate.as_ref()?;
        let revoked = self
            .revocation
            .as_ref()
            .is_some_and(|(r, _)| r.revokes(certificate));
        (!revoked && certificate.issued_at_ms <= now_ms && now_ms < certificate.expires_at_ms)
            .then_some(certificate.display_name.as_str())
    }
}

/// The business directory.
pub trait Businesses: Send + Sync + 'static {
    /// The business's record, if it published a profile.
    fn business(
        &self,
        account: AccountId,
    ) -> impl Future<Output = StorageResult<Option<StoredBusiness>>> + Send;

    /// Every business that published a profile.
    fn businesses(
        &self,
    ) -> impl Future<Output = StorageResult<Vec<(AccountId, StoredBusiness)>>> + Send;

    /// Note that `customer` blocked `business` for `reason` (a wire
    /// `BlockReason` number, 0 for none) at `at_ms`, replacing what the
    /// same customer said before. Durable on return.
    fn note_block_reason(
        &self,
        business: AccountId,
        customer: AccountId,
        reason: i32,
        at_ms: u64,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// How many customers blocked `business`, by reason number.
    fn block_reasons(
        &self,
        business: AccountId,
    ) -> impl Future<Output = StorageResult<std::collections::BTreeMap<i32, u64>>> + Send;

    /// Replace `expected` (`None`: no record yet) by `new`; `false` if the
    /// record changed meanwhile. Durable on return.
    fn replace_business(
        &self,
        account: AccountId,
        expected: Option<&StoredBusiness>,
        new: &StoredBusiness,
    ) -> impl Future<Output = StorageResult<bool>> + Send;
}

fn encode(stored: &StoredBusiness) -> StorageResult<Vec<u8>> {
    let profile_json = serde_json::to_string(&stored.profile)
        .map_err(|e| StorageError::Backend(format!("cannot encode a profile: {e}")))?;
    Ok(BusinessRecord {
        version: RECORD_VERSION,
        profile_json,
        profile_signature: stored.profile_signature.to_vec(),
        certificate: stored
            .certificate
            .as_ref()
            .map(|(c, s)| certificate_to_wire(c, s)),
        revocation: stored
            .revocation
            .as_ref()
            .map(|(r, s)| revocation_to_wire(r, s)),
    }
    .encode_to_vec())
}

fn decode(bytes: &[u8]) -> StorageResult<StoredBusiness> {
    const WHAT: &str = "businesses";
    let corrupt = |_| StorageError::Corrupt(WHAT);
    let record = BusinessRecord::decode(bytes).map_err(corrupt)?;
    Ok(StoredBusiness {
        profile: serde_json::from_str(&record.profile_json)
            .map_err(|_| StorageError::Corrupt(WHAT))?,
        profile_signature: record
            .profile_signature
            .as_slice()
            .try_into()
            .map_err(|_| StorageError::Corrupt(WHAT))?,
        certificate: record
            .certificate
            .as_ref()
            .map(certificate_from_wire)
            .transpose()
            .map_err(|_| StorageError::Corrupt(WHAT))?,
        revocation: record
            .revocation
            .as_ref()
            .map(revocation_from_wire)
            .transpose()
            .map_err(|_| StorageError::Corrupt(WHAT))?,
    })
}

fn backend(e: ::sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl Businesses for SledStore {
    async fn note_block_reason(
        &self,
        business: AccountId,
        customer: AccountId,
        reason: i32,
        at_ms: u64,
    ) -> StorageResult<()> {
        let mut key = business.to_vec();
        key.extend_from_slice(customer.as_bytes());
        let mut value = reason.to_be_bytes().to_vec();
        value.extend_from_slice(&at_ms.to_be_bytes());
        self.block_reasons.insert(key, value).map_err(backend)?;
        self.committer.durable().await
    }

    async fn block_reasons(
        &self,
        business: AccountId,
    ) -> StorageResult<std::collections::BTreeMap<i32, u64>> {
        let mut counts = std::collections::BTreeMap::new();
        for item in self.block_reasons.scan_prefix(business.as_bytes()) {
            let (_, value) = item.map_err(backend)?;
            let reason = value
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(i32::from_be_bytes)
                .ok_or(StorageError::Corrupt("block_reasons"))?;
            *counts.entry(reason).or_insert(0) += 1;
        }
        Ok(counts)
    }

    async fn business(&self, account: AccountId) -> StorageResult<Option<StoredBusiness>> {
        match self.businesses.get(account.as_bytes()).map_err(backend)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn businesses(&self) -> StorageResult<Vec<(AccountId, StoredBusiness)>> {
        self.businesses
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                let account =
                    AccountId::from_bytes(&key).map_err(|_| StorageError::Corrupt("businesses"))?;
                Ok((account, decode(&value)?))
            })
            .collect()
    }

    async fn replace_business(
        &self,
        account: AccountId,
        expected: Option<&StoredBusiness>,
        new: &StoredBusiness,
    ) -> StorageResult<bool> {
        let key = account.as_bytes();
        let current = self.businesses.get(key).map_err(backend)?;
        let still = match (&current, expected) {
            (None, None) => true,
            (Some(bytes), Some(expected)) => decode(bytes)? == *expected,
            _ => false,
        };
        if !still {
            return Ok(false);
        }
        let swapped = self
            .businesses
            .compare_and_swap(key, current, Some(encode(new)?))
            .map_err(backend)?
            .is_ok();
        if swapped {
            self.committer.durable().await?;
        }
        Ok(swapped)
    }
}
