//! This device's account: the account id and key, the device identity, and
//! counters for prekey ids. Stored as one sealed [`AccountRecord`].

use std::fmt;

use comptoir_protocol::proto::wire::{AccountKind, SignedDeviceList};
use comptoir_protocol::{AccountId, AccountKeyPair, DeviceList, IdentityKey, IdentityKeyPair};
use prost::Message;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{ClientError, Result};
use crate::store::{Store, Tree};

/// Device id of the first device of an account.
pub const FIRST_DEVICE_ID: u32 = 1;
/// Version of [`AccountRecord`] this build writes.
const ACCOUNT_RECORD_VERSION: u32 = 1;
const ACCOUNT_KEY: &[u8] = b"self";
/// The key of the account's kind, a record of its own beside the account
/// record (see [`save_kind`]).
const KIND_KEY: &[u8] = b"kind";

/// The stored form of an [`Account`]. New fields default when absent.
#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
struct AccountRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(bytes = "vec", tag = "2")]
    account_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    account_seed: Vec<u8>,
    #[prost(uint32, tag = "4")]
    device_id: u32,
    #[prost(bytes = "vec", tag = "5")]
    identity_seed: Vec<u8>,
    #[prost(uint64, tag = "6")]
    device_list_version: u64,
    #[prost(bool, tag = "7")]
    registered: bool,
    #[prost(uint32, tag = "8")]
    next_signed_prekey_id: u32,
    #[prost(uint32, tag = "9")]
    next_one_time_prekey_id: u32,
}

impl fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountRecord(..)")
    }
}

impl Drop for AccountRecord {
    fn drop(&mut self) {
        self.account_seed.zeroize();
        self.identity_seed.zeroize();
    }
}

/// The local account and device.
pub struct Account {
    id: AccountId,
    /// `None` on a linked device: only the first device signs device lists.
    account_key: Option<AccountKeyPair>,
    device_id: u32,
    identity: IdentityKeyPair,
    device_list_version: u64,
    registered: bool,
    next_signed_prekey_id: u32,
    next_one_time_prekey_id: u32,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            id,
            account_key,
            device_id,
            identity,
            device_list_version,
            registered,
            next_signed_prekey_id,
            next_one_time_prekey_id,
        } = self;
        f.debug_struct("Account")
            .field("id", id)
            .field(
                "account_key",
                &account_key.as_ref().map(AccountKeyPair::public),
            )
            .field("device_id", device_id)
            .field("identity", identity.public())
            .field("device_list_version", device_list_version)
            .field("registered", registered)
            .field("next_signed_prekey_id", next_signed_prekey_id)
            .field("next_one_time_prekey_id", next_one_time_prekey_id)
            .finish()
    }
}

impl Account {
    /// A new account with its first device (not yet registered).
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        Self {
            id: AccountId::generate(&mut rng),
            account_key: Some(AccountKeyPair::generate(&mut rng)),
            device_id: FIRST_DEVICE_ID,
            identity: IdentityKeyPair::generate(&mut rng),
            device_list_version: 1,
            registered: false,
            next_signed_prekey_id: 1,
            next_one_time_prekey_id: 1,
        }
    }

    /// The account id.
    pub fn id(&self) -> AccountId {
        self.id
    }

    /// This device's id.
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    /// This device's identity key pair.
    pub fn identity(&self) -> &IdentityKeyPair {
        &self.identity
    }

    /// This device's public identity.
    pub fn identity_key(&self) -> IdentityKey {
        *self.identity.public()
    }

    /// The account key pair (signs device lists and registration); `None`
    /// on a linked device.
    pub fn account_key(&self) -> Option<&AccountKeyPair> {
        self.account_key.as_ref()
    }

    /// A device waiting to be linked to an existing account: its identity
    /// only (the account id and device id come with the approval).
    pub fn generate_unlinked() -> Self {
        let mut rng = rand::rng();
        Self {
            id: AccountId::generate(&mut rng),
            account_key: None,
            device_id: 0,
            identity: IdentityKeyPair::generate(&mut rng),
            device_list_version: 0,
            registered: false,
            next_signed_prekey_id: 1,
            next_one_time_prekey_id: 1,
        }
    }

    /// Whether this device waits for a link approval.
    pub fn is_unlinked(&self) -> bool {
        self.account_key.is_none() && !self.registered
    }

    /// Go back to waiting for a link approval (a failed link).
    pub fn set_unlinked(&mut self, placeholder: AccountId) {
        self.id = placeholder;
        self.device_id = 0;
        self.registered = false;
    }

    /// Become device `device_id` of `account` (after an approval).
    pub fn set_linked(&mut self, account: AccountId, device_id: u32) {
        self.id = account;
        self.device_id = device_id;
        self.registered = true;
    }

    /// Whether the relay accepted the registration.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Record that the relay accepted the registration.
    pub fn set_registered(&mut self) {
        self.registered = true;
    }

    /// The account's device list (this device only), signed.
    pub fn signed_device_list(&self) -> Result<SignedDeviceList> {
        let key = self
            .account_key
            .as_ref()
            .ok_or(ClientError::NotPrimaryDevice)?;
        Ok(DeviceList::sign(
            key,
            self.id,
            self.device_list_version,
            vec![(self.device_id, *self.identity.public())],
        )?)
    }

    /// Reserve ids for one signed prekey and `count` one-time prekeys:
    /// returns `(signed_id, first_one_time_id)`.
    pub fn reserve_prekey_ids(&mut self, count: u32) -> (u32, u32) {
        let signed = self.next_signed_prekey_id;
        let first = self.next_one_time_prekey_id;
        self.next_signed_prekey_id = signed.wrapping_add(1).max(1);
        self.next_one_time_prekey_id = first.wrapping_add(count).max(1);
        (signed, first)
    }

    /// Jump the prekey id counters far ahead: after a restore from backup,
    /// ids handed out since the backup must not be reused.
    pub fn skip_prekey_ids(&mut self, gap: u32) {
        self.next_signed_prekey_id = self.next_signed_prekey_id.wrapping_add(gap).max(1);
        self.next_one_time_prekey_id = self.next_one_time_prekey_id.wrapping_add(gap).max(1);
    }

    /// Load the account from the store.
    pub fn load(store: &Store) -> Result<Option<Self>> {
        let Some(bytes) = store.get(Tree::Account, ACCOUNT_KEY)? else {
            return Ok(None);
        };
        Self::decode(&bytes).map(Some)
    }

    /// Parse a stored account record (already unsealed).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let record = AccountRecord::decode(bytes)
            .map_err(|e| ClientError::CorruptStore(format!("account record: {e}")))?;
        let seed = |bytes: &[u8], what: &str| -> Result<Zeroizing<[u8; 32]>> {
            let array: [u8; 32] = bytes
                .try_into()
                .map_err(|_| ClientError::CorruptStore(format!("account record: {what}")))?;
            Ok(Zeroizing::new(array))
        };
        let account_key = if record.account_seed.is_empty() {
            None
        } else {
            let account_seed = seed(&record.account_seed, "account key")?;
            Some(AccountKeyPair::from_seed(&account_seed))
        };
        let identity_seed = seed(&record.identity_seed, "identity key")?;
        Ok(Self {
            id: AccountId::from_bytes(&record.account_id)?,
            account_key,
            device_id: record.device_id,
            identity: IdentityKeyPair::from_seed(&identity_seed),
            device_list_version: record.device_list_version,
            registered: record.registered,
            next_signed_prekey_id: record.next_signed_prekey_id.max(1),
            next_one_time_prekey_id: record.next_one_time_prekey_id.max(1),
        })
    }

    /// Write the account to the store (not flushed).
    pub fn save(&self, store: &Store) -> Result<()> {
        let record = AccountRecord {
            version: ACCOUNT_RECORD_VERSION,
            account_id: self.id.to_vec(),
            account_seed: self
                .account_key
                .as_ref()
                .map(|k| k.seed().to_vec())
                .unwrap_or_default(),
            device_id: self.device_id,
            identity_seed: self.identity.seed().to_vec(),
            device_list_version: self.device_list_version,
            registered: self.registered,
            next_signed_prekey_id: self.next_signed_prekey_id,
            next_one_time_prekey_id: self.next_one_time_prekey_id,
        };
        let bytes = Zeroizing::new(record.encode_to_vec());
        store.put(Tree::Account, ACCOUNT_KEY, &bytes)
    }
}

/// The account's kind as last kept by [`save_kind`]; `Unspecified` if
/// none was (a store from before it was kept, a device not yet linked).
pub fn load_kind(store: &Store) -> Result<AccountKind> {
    let Some(bytes) = store.get(Tree::Account, KIND_KEY)? else {
        return Ok(AccountKind::Unspecified);
    };
    // A record of another shape (a later version's) reads as not known:
    // the next login tells the kind again.
    let [code] = bytes.as_slice() else {
        return Ok(AccountKind::Unspecified);
    };
    let code = i32::from(*code);
    // A kind this version does not know reads as not known.
    Ok(AccountKind::try_from(code).unwrap_or(AccountKind::Unspecified))
}

/// Keep the account's kind (as registered, or as the relay says at a
/// login), so it is known away from the relay too; `Unspecified` forgets
/// it (not flushed). A record of its own, so that keeping it never writes
/// the account record (a link not yet checked must not be).
pub fn save_kind(store: &Store, kind: AccountKind) -> Result<()> {
    match u8::try_from(kind as i32) {
        Ok(code) if kind != AccountKind::Unspecified => store.put(Tree::Account, KIND_KEY, &[code]),
        _ => store.remove(Tree::Account, KIND_KEY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FAST_TEST_KDF;

    /// The kind is kept apart from the account record, survives a reopen,
    /// and `Unspecified` forgets it; a record of another shape reads as
    /// not known.
    #[test]
    fn the_kind_is_kept_apart_and_survives_a_reopen() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("temp dir", e))?;
        let account = Account::generate();
        {
            let store = Store::create(dir.path(), "pw-long-enough", FAST_TEST_KDF)?;
            account.save(&store)?;
            assert_eq!(load_kind(&store)?, AccountKind::Unspecified);
            save_kind(&store, AccountKind::Business)?;
            store.flush_blocking()?;
        }
        let store = Store::open(dir.path(), "pw-long-enough")?;
        assert_eq!(load_kind(&store)?, AccountKind::Business);
        let loaded = Account::load(&store)?.map(|a| a.id());
        assert_eq!(loaded, Some(account.id()));
        save_kind(&store, AccountKind::Unspecified)?;
        assert_eq!(load_kind(&store)?, AccountKind::Unspecified);
        store.put(Tree::Account, KIND_KEY, &[1, 2])?;
        assert_eq!(load_kind(&store)?, AccountKind::Unspecified);
        Ok(())
    }
}
