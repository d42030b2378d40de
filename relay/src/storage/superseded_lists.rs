//! The superseded device lists role: each signed device list an account
//! replaced, kept as published, so that a bill line acked by a device
//! removed since can still be checked against the list, signed by the
//! customer's account key, that named it (docs/PROTOCOL.md, "Bills").
//!
//! Embedded backend: sled tree `superseded_device_lists`, key the account
//! (16) || the list's version (u64 BE), so an account's lists scan in
//! order of version; value the encoded `SignedDeviceList` as published.
//! A list is kept there by [`Directory::replace_device_list`] before it is
//! replaced (lists replaced before this tree existed are not kept).
//!
//! [`Directory::replace_device_list`]: super::Directory::replace_device_list

use std::future::Future;

use comptoir_protocol::AccountId;

use super::StorageResult;
use super::sled::{SledStore, decode_list};

/// Device lists accounts replaced.
pub trait SupersededLists: Send + Sync + 'static {
    /// The encoded signed list of `account`'s newest replaced list that
    /// names `device` (`None`: no replaced list kept names it).
    fn superseded_list_naming(
        &self,
        account: AccountId,
        device: u32,
    ) -> impl Future<Output = StorageResult<Option<Vec<u8>>>> + Send;
}

/// The key a replaced list is kept under.
pub(super) fn key(account: AccountId, version: u64) -> [u8; 24] {
    let mut key = [0; 24];
    key[..16].copy_from_slice(account.as_bytes());
    key[16..].copy_from_slice(&version.to_be_bytes());
    key
}

impl SupersededLists for SledStore {
    async fn superseded_list_naming(
        &self,
        account: AccountId,
        device: u32,
    ) -> StorageResult<Option<Vec<u8>>> {
        for item in self
            .superseded_device_lists
            .scan_prefix(account.as_bytes())
            .rev()
        {
            let (_, value) = item.map_err(|e| super::StorageError::Backend(e.to_string()))?;
            let stored = decode_list(&value)?;
            if stored.list.device(device).is_some() {
                return Ok(Some(stored.signed));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use std::sync::Arc;

    use comptoir_protocol::{AccountKeyPair, DeviceList, IdentityKeyPair};
    use prost::Message;

    use super::*;
    use crate::metrics::Metrics;
    use crate::storage::{AccountRecord, Directory, Lifecycle, StoredDeviceList};

    fn stored(
        key: &AccountKeyPair,
        account: AccountId,
        version: u64,
        devices: &[u32],
    ) -> StoredDeviceList {
        let devices = devices
            .iter()
            .map(|&d| (d, *IdentityKeyPair::from_seed(&[d as u8; 32]).public()))
            .collect();
        let signed = DeviceList::sign(key, account, version, devices).unwrap();
        StoredDeviceList {
            list: DeviceList::verify(&signed, None).unwrap(),
            signed: signed.encode_to_vec(),
        }
    }

    #[tokio::test]
    async fn a_replaced_list_is_kept_and_found_by_the_devices_it_named() {
        let dir = tempfile::tempdir().unwrap();
        let open = || SledStore::open(dir.path(), 1 << 20, Arc::new(Metrics::default())).unwrap();
        let store = open();
        let key = AccountKeyPair::from_seed(&[1; 32]);
        let account = AccountId::from_bytes(&[9; 16]).unwrap();
        let one = stored(&key, account, 1, &[1]);
        let two = stored(&key, account, 2, &[1, 2]);
        let three = stored(&key, account, 3, &[1, 3]);
        store
            .create_account(&one, &AccountRecord::default())
            .await
            .unwrap();
        assert_eq!(
            store.superseded_list_naming(account, 1).await.unwrap(),
            None
        );
        for list in [&two, &three] {
            store.replace_device_list(account, list).await.unwrap();
        }
        // A stale list replaces nothing and keeps nothing.
        store.replace_device_list(account, &two).await.unwrap();
        store.close().await.unwrap();
        drop(store);
        let store = open();
        assert_eq!(
            store.superseded_list_naming(account, 2).await.unwrap(),
            Some(two.signed.clone())
        );
        assert_eq!(
            store.superseded_list_naming(account, 1).await.unwrap(),
            Some(two.signed),
            "the newest replaced list naming it"
        );
        assert_eq!(
            store.superseded_list_naming(account, 3).await.unwrap(),
            None
        );
        store.close().await.unwrap();
    }
}
