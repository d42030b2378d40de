//! What this device trusts about other accounts: the account key pinned on
//! first use, and the newest signed device list seen.
//!
//! A device list signed by another account key is an identity change: it
//! is recorded (not adopted) and sending to that account is refused until
//! the user accepts the new key with [`accept_identity_change`].

use comptoir_protocol::proto::wire::SignedDeviceList;
use comptoir_protocol::{AccountId, AccountKey, DeviceList, Error as ProtocolError};
use prost::Message;

use crate::error::{ClientError, Result};
use crate::store::{Store, Tree};

const PEER_RECORD_VERSION: u32 = 1;

#[derive(Clone, PartialEq, Message)]
struct PeerRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    /// The trusted (pinned) device list.
    #[prost(message, optional, tag = "2")]
    device_list: Option<SignedDeviceList>,
    /// A list signed by a different account key, waiting for the user.
    #[prost(message, optional, tag = "3")]
    changed_list: Option<SignedDeviceList>,
    /// The account key whose safety number the user compared and confirmed.
    #[prost(bytes = "vec", tag = "4")]
    verified_identity: Vec<u8>,
}

/// What this device knows about a peer account.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The trusted device list (its account key is the pinned one).
    pub devices: DeviceList,
    /// The raw signed list (kept to re-verify).
    pub signed: SignedDeviceList,
    /// Whether a list signed by another account key was seen since.
    pub identity_changed: bool,
    /// Whether the user confirmed the safety number of the current account
    /// key (cleared by any change of that key).
    pub verified: bool,
}

fn load_record(store: &Store, account: &AccountId) -> Result<Option<PeerRecord>> {
    match store.get(Tree::Peers, account.as_bytes())? {
        Some(bytes) => {
            Ok(Some(PeerRecord::decode(bytes.as_slice()).map_err(|e| {
                ClientError::CorruptStore(format!("peer record: {e}"))
            })?))
        }
        None => Ok(None),
    }
}

fn save_record(store: &Store, account: &AccountId, record: &PeerRecord) -> Result<()> {
    store.put(Tree::Peers, account.as_bytes(), &record.encode_to_vec())
}

/// The trusted state of a peer, if any.
pub fn load(store: &Store, account: &AccountId) -> Result<Option<Peer>> {
    // Checking the list's signature and keys is costly and the record is
    // read on every send: cached by the record's sealed bytes.
    Ok(store
        .get_decoded(Tree::Peers, account.as_bytes(), decode)?
        .flatten())
}

/// Parse a stored peer record (already unsealed).
pub(crate) fn decode(bytes: &[u8]) -> Result<Option<Peer>> {
    let record = PeerRecord::decode(bytes)
        .map_err(|e| ClientError::CorruptStore(format!("peer record: {e}")))?;
    from_record(record)
}

fn from_record(record: PeerRecord) -> Result<Option<Peer>> {
    let Some(signed) = record.device_list else {
        return Ok(None);
    };
    let devices = DeviceList::verify(&signed, None)
        .map_err(|e| ClientError::CorruptStore(format!("pinned device list: {e}")))?;
    let verified = record.verified_identity == devices.account_key.to_bytes();
    Ok(Some(Peer {
        devices,
        signed,
        identity_changed: record.changed_list.is_some(),
        verified,
    }))
}

/// What [`observe`] concluded about a device list from the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// First list seen for this account: its key is now pinned.
    Pinned,
    /// Same key, same or newer version: adopted.
    Current,
    /// Signed by another account key: recorded, not adopted.
    IdentityChanged,
}

/// Check a device list from the relay against what is pinned, and adopt it
/// when it is signed by the pinned key and not older.
pub fn observe(store: &Store, account: &AccountId, signed: &SignedDeviceList) -> Result<Observed> {
    let unchecked = DeviceList::verify(signed, None)?;
    if unchecked.account_id != *account {
        return Err(ClientError::UnexpectedFrame(format!(
            "device list for {} when {account} was asked for",
            unchecked.account_id
        )));
    }
    // Sender tasks and the receive path may observe one account at once.
    let _updating = store.updating();
    let mut record = load_record(store, account)?.unwrap_or_default();
    record.version = PEER_RECORD_VERSION;
    let pinned = match &record.device_list {
        Some(list) => Some(
            DeviceList::verify(list, None)
                .map_err(|e| ClientError::CorruptStore(format!("pinned device list: {e}")))?,
        ),
        None => None,
    };
    let Some(pinned) = pinned else {
        record.device_list = Some(signed.clone());
        save_record(store, account, &record)?;
        return Ok(Observed::Pinned);
    };
    match DeviceList::verify(signed, Some(&pinned.account_key)) {
        Ok(list) => {
            if !list.is_same_or_newer(pinned.version) {
                return Err(ProtocolError::StaleDeviceList {
                    have: pinned.version,
                    got: list.version,
                }
                .into());
            }
            if list.version > pinned.version {
                record.device_list = Some(signed.clone());
                save_record(store, account, &record)?;
            }
            Ok(Observed::Current)
        }
        Err(ProtocolError::IdentityMismatch) => {
            record.changed_list = Some(signed.clone());
            save_record(store, account, &record)?;
            Ok(Observed::IdentityChanged)
        }
        Err(e) => Err(e.into()),
    }
}

/// The user compared the safety number computed from `key` and found it
/// equal: remember that for this account key.
pub fn mark_verified(store: &Store, account: &AccountId, key: &AccountKey) -> Result<()> {
    let mut record = load_record(store, account)?.ok_or(ClientError::UnknownPeer(*account))?;
    record.verified_identity = key.to_bytes().to_vec();
    save_record(store, account, &record)
}

/// Forget everything pinned for an account.
pub fn forget(store: &Store, account: &AccountId) -> Result<()> {
    store.remove(Tree::Peers, account.as_bytes())
}

/// The account key of a changed identity waiting for the user, if any.
pub fn pending_account_key(store: &Store, account: &AccountId) -> Result<Option<AccountKey>> {
    let Some(changed) = load_record(store, account)?.and_then(|r| r.changed_list) else {
        return Ok(None);
    };
    let list = DeviceList::verify(&changed, None)
        .map_err(|e| ClientError::CorruptStore(format!("changed device list: {e}")))?;
    Ok(Some(list.account_key))
}

/// The user accepted a changed identity: pin the new list.
pub fn accept_identity_change(store: &Store, account: &AccountId) -> Result<bool> {
    let Some(mut record) = load_record(store, account)? else {
        return Ok(false);
    };
    let Some(changed) = record.changed_list.take() else {
        return Ok(false);
    };
    record.device_list = Some(changed);
    save_record(store, account, &record)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use comptoir_protocol::{AccountKeyPair, IdentityKeyPair};

    use super::*;
    use crate::store::FAST_TEST_KDF as FAST;

    #[test]
    fn pins_on_first_use_refuses_stale_and_flags_a_changed_key() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST)?;
        let mut rng = rand::rng();
        let account = AccountId::generate(&mut rng);
        let key = AccountKeyPair::generate(&mut rng);
        let device = *IdentityKeyPair::generate(&mut rng).public();
        let v2 = DeviceList::sign(&key, account, 2, vec![(1, device)])?;
        let v1 = DeviceList::sign(&key, account, 1, vec![(1, device)])?;

        assert_eq!(observe(&store, &account, &v2)?, Observed::Pinned);
        assert_eq!(observe(&store, &account, &v2)?, Observed::Current);
        assert!(matches!(
            observe(&store, &account, &v1),
            Err(ClientError::Protocol(ProtocolError::StaleDeviceList { .. }))
        ));

        // Another account key: recorded, not adopted, flagged.
        let impostor = AccountKeyPair::generate(&mut rng);
        let forged = DeviceList::sign(&impostor, account, 9, vec![(1, device)])?;
        assert_eq!(
            observe(&store, &account, &forged)?,
            Observed::IdentityChanged
        );
        let peer = load(&store, &account)?.ok_or(ClientError::UnknownPeer(account))?;
        assert!(peer.identity_changed);
        assert_eq!(peer.devices.account_key, key.public());

        // The user accepts it: the new key is pinned, the flag cleared.
        assert!(accept_identity_change(&store, &account)?);
        let peer = load(&store, &account)?.ok_or(ClientError::UnknownPeer(account))?;
        assert!(!peer.identity_changed);
        assert_eq!(peer.devices.account_key, impostor.public());
        assert!(!accept_identity_change(&store, &account)?);
        Ok(())
    }
}
