//! The periodic heads role: the heads of businesses' bill chains the
//! relay signed on its schedule ([`crate::billing::sign_periodic_heads`]),
//! kept beside the ledger so every later bill and export carries them,
//! and when the relay last signed them.
//!
//! Embedded backend: sled tree `bill_heads`, key the business account (16)
//! || count (u64 BE), so a business's heads scan in order of count; value
//! signed_at_ms (u64 BE) || head_hash (32) || operator signature (64). The
//! time of the last pass is in the `meta` tree (key
//! `bill_heads_swept_ms`, u64 BE). A pass's heads and its time are written
//! in one step, durable before it returns; a pass repeated after a crash
//! signs nothing again (only chains that grew get a head).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::RangeInclusive;

use comptoir_protocol::keys::SIGNATURE_LEN;
use comptoir_protocol::proto::wire;
use comptoir_protocol::{AccountId, BillHead};

use super::sled::SledStore;
use super::{DeliveredEntry, LedgerEntry, StorageError, StorageResult};

const VALUE_LEN: usize = 8 + 32 + SIGNATURE_LEN;
const WHAT: &str = "a periodic bill head";
/// Key of the last pass's time in the `meta` tree.
pub(super) const SWEPT_KEY: &[u8] = b"bill_heads_swept_ms";

/// A head of a business's chain the relay signed on its schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodicHead {
    /// What the operator key signed.
    pub head: BillHead,
    /// The operator key's signature over [`BillHead::payload`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl PeriodicHead {
    /// As the frame a bill and an export carry.
    pub fn to_wire(&self) -> wire::BillHead {
        wire::BillHead {
            business_account: self.head.business.to_vec(),
            count: self.head.count,
            head_hash: self.head.head_hash.to_vec(),
            signed_at_ms: self.head.signed_at_ms,
            signature: self.signature.to_vec(),
        }
    }
}

/// Periodic heads of bill chains.
pub trait BillHeads: Send + Sync + 'static {
    /// Every business with a bill, and the number of lines in it now.
    fn chain_lengths(&self) -> impl Future<Output = StorageResult<Vec<(AccountId, u64)>>> + Send;

    /// The bills of `businesses` (each as
    /// [`Ledger::bill`](super::Ledger::bill) gives it), read together.
    fn bills_of(
        &self,
        businesses: &HashSet<AccountId>,
    ) -> impl Future<Output = StorageResult<HashMap<AccountId, Vec<(LedgerEntry, DeliveredEntry)>>>> + Send;

    /// The count of `business`'s last periodic head (`None`: none yet).
    fn last_periodic_count(
        &self,
        business: AccountId,
    ) -> impl Future<Output = StorageResult<Option<u64>>> + Send;

    /// `business`'s periodic heads whose count is in `counts`, in order of
    /// count.
    fn periodic_heads(
        &self,
        business: AccountId,
        counts: RangeInclusive<u64>,
    ) -> impl Future<Output = StorageResult<Vec<PeriodicHead>>> + Send;

    /// Keep `heads` and `swept_at_ms` as the time of the pass that signed
    /// them (in one step). Durable on return.
    fn record_periodic_heads(
        &self,
        heads: &[PeriodicHead],
        swept_at_ms: u64,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// When the last pass ran (`None`: never).
    fn heads_swept_at(&self) -> impl Future<Output = StorageResult<Option<u64>>> + Send;
}

fn key(business: AccountId, count: u64) -> [u8; 24] {
    let mut key = [0; 24];
    key[..16].copy_from_slice(business.as_bytes());
    key[16..].copy_from_slice(&count.to_be_bytes());
    key
}

fn encode(head: &PeriodicHead) -> [u8; VALUE_LEN] {
    let mut out = [0; VALUE_LEN];
    out[..8].copy_from_slice(&head.head.signed_at_ms.to_be_bytes());
    out[8..40].copy_from_slice(&head.head.head_hash);
    out[40..].copy_from_slice(&head.signature);
    out
}

fn decode(key: &[u8], value: &[u8]) -> StorageResult<PeriodicHead> {
    let corrupt = || StorageError::Corrupt(WHAT);
    let business = key
        .get(..16)
        .and_then(|b| AccountId::from_bytes(b).ok())
        .ok_or_else(corrupt)?;
    let count = key
        .get(16..24)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(corrupt)?;
    if value.len() != VALUE_LEN {
        return Err(corrupt());
    }
    let signed_at_ms = value[..8]
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt())?;
    Ok(PeriodicHead {
        head: BillHead {
            business,
            count,
            head_hash: value[8..40].try_into().map_err(|_| corrupt())?,
            signed_at_ms,
        },
        signature: value[40..].try_into().map_err(|_| corrupt())?,
    })
}

fn backend(e: ::sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl BillHeads for SledStore {
    async fn chain_lengths(&self) -> StorageResult<Vec<(AccountId, u64)>> {
        Ok(self.mail.bill_lengths())
    }

    async fn bills_of(
        &self,
        businesses: &HashSet<AccountId>,
    ) -> StorageResult<HashMap<AccountId, Vec<(LedgerEntry, DeliveredEntry)>>> {
        Ok(self.mail.bills_of(businesses))
    }

    async fn last_periodic_count(&self, business: AccountId) -> StorageResult<Option<u64>> {
        match self.bill_heads.scan_prefix(business.as_bytes()).next_back() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item.map_err(backend)?;
                Ok(Some(decode(&key, &value)?.head.count))
            }
        }
    }

    async fn periodic_heads(
        &self,
        business: AccountId,
        counts: RangeInclusive<u64>,
    ) -> StorageResult<Vec<PeriodicHead>> {
        if counts.is_empty() {
            return Ok(Vec::new());
        }
        self.bill_heads
            .range(key(business, *counts.start())..=key(business, *counts.end()))
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                decode(&key, &value)
            })
            .collect()
    }

    async fn record_periodic_heads(
        &self,
        heads: &[PeriodicHead],
        swept_at_ms: u64,
    ) -> StorageResult<()> {
        let mut batch = ::sled::Batch::default();
        for head in heads {
            batch.insert(
                &key(head.head.business, head.head.count)[..],
                &encode(head)[..],
            );
        }
        self.bill_heads.apply_batch(batch).map_err(backend)?;
        self.meta_tree()
            .insert(SWEPT_KEY, &swept_at_ms.to_be_bytes()[..])
            .map_err(backend)?;
        self.committer.durable().await
    }

    async fn heads_swept_at(&self) -> StorageResult<Option<u64>> {
        match self.meta_tree().get(SWEPT_KEY).map_err(backend)? {
            None => Ok(None),
            Some(bytes) => {
                let bytes: [u8; 8] = bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("the time heads were last signed"))?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Metrics;
    use crate::storage::Lifecycle;

    fn head(business: AccountId, count: u64) -> PeriodicHead {
        PeriodicHead {
            head: BillHead {
                business,
                count,
                head_hash: [count as u8; 32],
                signed_at_ms: 1_000 + count,
            },
            signature: [count as u8 + 1; SIGNATURE_LEN],
        }
    }

    #[tokio::test]
    async fn heads_are_kept_in_order_of_count_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let open = || SledStore::open(dir.path(), 1 << 20, Arc::new(Metrics::default())).unwrap();
        let store = open();
        let shop = AccountId::from_bytes(&[1; 16]).unwrap();
        let other = AccountId::from_bytes(&[2; 16]).unwrap();
        assert_eq!(store.heads_swept_at().await.unwrap(), None);
        assert_eq!(store.last_periodic_count(shop).await.unwrap(), None);
        store
            .record_periodic_heads(&[head(shop, 3), head(other, 1), head(shop, 300)], 5_000)
            .await
            .unwrap();
        store.record_periodic_heads(&[], 6_000).await.unwrap();
        store.close().await.unwrap();
        drop(store);
        let store = open();
        assert_eq!(store.heads_swept_at().await.unwrap(), Some(6_000));
        assert_eq!(store.last_periodic_count(shop).await.unwrap(), Some(300));
        assert_eq!(store.last_periodic_count(other).await.unwrap(), Some(1));
        assert_eq!(
            store.periodic_heads(shop, 1..=u64::MAX).await.unwrap(),
            [head(shop, 3), head(shop, 300)]
        );
        assert_eq!(
            store.periodic_heads(shop, 4..=300).await.unwrap(),
            [head(shop, 300)]
        );
        assert!(
            store
                .periodic_heads(shop, 4..=299)
                .await
                .unwrap()
                .is_empty()
        );
        store.close().await.unwrap();
    }
}
