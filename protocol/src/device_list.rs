//! Account device lists, signed by the account key with a version counter.
//!
//! The signature covers a canonical encoding (not the protobuf bytes, which
//! are not canonical): see [`DeviceList::signed_bytes`] and docs/PROTOCOL.md.
//! Clients refuse unsigned lists and lists older than one already seen.

use crate::account::AccountId;
use crate::error::{DecodeError, Error, Result};
use crate::keys::{AccountKey, AccountKeyPair, IdentityKey};
use crate::proto::wire::{DeviceEntry, SignedDeviceList};

/// Most devices one account may have. Each device costs every sender one
/// encryption per message, so the list is kept short.
pub const MAX_DEVICES: usize = 16;

const DEVICE_LIST_CONTEXT: &[u8] = b"Comptoir device list v1";

/// A device list whose account signature has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    /// The account.
    pub account_id: AccountId,
    /// The account key that signed the list.
    pub account_key: AccountKey,
    /// Monotonic version: every change increases it.
    pub version: u64,
    /// Devices sorted by id, ids unique.
    pub devices: Vec<(u32, IdentityKey)>,
}

impl DeviceList {
    /// Build and sign a list (devices are sorted; duplicate ids refused).
    pub fn sign(
        account_key: &AccountKeyPair,
        account_id: AccountId,
        version: u64,
        mut devices: Vec<(u32, IdentityKey)>,
    ) -> Result<SignedDeviceList> {
        devices.sort_by_key(|(id, _)| *id);
        check_devices(&devices)?;
        let list = DeviceList {
            account_id,
            account_key: account_key.public(),
            version,
            devices,
        };
        let signature = account_key.sign(&list.signed_bytes());
        Ok(list.to_proto(signature.to_vec()))
    }

    /// Check the signature and structure of a list from the wire. When
    /// `trusted_account_key` is given, the list must be signed by it.
    pub fn verify(
        signed: &SignedDeviceList,
        trusted_account_key: Option<&AccountKey>,
    ) -> Result<Self> {
        let account_id = AccountId::from_bytes(&signed.account_id)?;
        let account_key = AccountKey::from_bytes(&signed.account_key)?;
        if trusted_account_key.is_some_and(|trusted| *trusted != account_key) {
            return Err(Error::IdentityMismatch);
        }
        let mut devices = Vec::with_capacity(signed.devices.len().min(MAX_DEVICES));
        if signed.devices.len() > MAX_DEVICES {
            return Err(Error::Decode(DecodeError::TooLarge {
                limit: MAX_DEVICES,
                got: signed.devices.len(),
            }));
        }
        for entry in &signed.devices {
            devices.push((
                entry.device_id,
                IdentityKey::from_bytes(&entry.identity_key)?,
            ));
        }
        if devices.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(Error::Decode(DecodeError::Protobuf(
                "device list must be sorted by id without duplicates".into(),
            )));
        }
        check_devices(&devices)?;
        let list = DeviceList {
            account_id,
            account_key,
            version: signed.version,
            devices,
        };
        account_key.verify("device list", &list.signed_bytes(), &signed.signature)?;
        Ok(list)
    }

    /// Refuse a list that is not newer than the version already trusted.
    /// An identical version is accepted only by [`Self::is_same_or_newer`].
    pub fn check_newer_than(&self, have: u64) -> Result<()> {
        if self.version <= have {
            return Err(Error::StaleDeviceList {
                have,
                got: self.version,
            });
        }
        Ok(())
    }

    /// Whether the list is at least as new as `have`.
    pub fn is_same_or_newer(&self, have: u64) -> bool {
        self.version >= have
    }

    /// The identity of one device, if listed.
    pub fn device(&self, device_id: u32) -> Option<&IdentityKey> {
        self.devices
            .iter()
            .find(|(id, _)| *id == device_id)
            .map(|(_, key)| key)
    }

    /// The device ids, ascending.
    pub fn device_ids(&self) -> Vec<u32> {
        self.devices.iter().map(|(id, _)| *id).collect()
    }

    /// The canonical bytes the account key signs:
    /// `"Comptoir device list v1" || account_id (16) || account_key (32) ||
    /// version (u64 BE) || count (u32 BE) || (device_id (u32 BE) ||
    /// identity_key (32))*` with devices in ascending id order.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(DEVICE_LIST_CONTEXT.len() + 16 + 32 + 12 + self.devices.len() * 36);
        out.extend_from_slice(DEVICE_LIST_CONTEXT);
        out.extend_from_slice(self.account_id.as_bytes());
        out.extend_from_slice(&self.account_key.to_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&(self.devices.len() as u32).to_be_bytes());
        for (id, key) in &self.devices {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(key.as_bytes());
        }
        out
    }

    fn to_proto(&self, signature: Vec<u8>) -> SignedDeviceList {
        SignedDeviceList {
            account_id: self.account_id.to_vec(),
            version: self.version,
            devices: self
                .devices
                .iter()
                .map(|(id, key)| DeviceEntry {
                    device_id: *id,
                    identity_key: key.to_bytes().to_vec(),
                })
                .collect(),
            account_key: self.account_key.to_bytes().to_vec(),
            signature,
        }
    }
}

fn check_devices(devices: &[(u32, IdentityKey)]) -> Result<()> {
    if devices.is_empty() {
        return Err(Error::Decode(DecodeError::MissingField("devices")));
    }
    if devices.len() > MAX_DEVICES {
        return Err(Error::Decode(DecodeError::TooLarge {
            limit: MAX_DEVICES,
            got: devices.len(),
        }));
    }
    if devices.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(Error::Decode(DecodeError::Protobuf(
            "duplicate device id in device list".into(),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IdentityKeyPair;

    fn setup() -> (AccountKeyPair, AccountId, IdentityKeyPair, IdentityKeyPair) {
        let mut rng = rand::rng();
        (
            AccountKeyPair::generate(&mut rng),
            AccountId::generate(&mut rng),
            IdentityKeyPair::generate(&mut rng),
            IdentityKeyPair::generate(&mut rng),
        )
    }

    #[test]
    fn signed_list_verifies_and_sorts() -> Result<()> {
        let (account, id, d1, d2) = setup();
        let signed = DeviceList::sign(&account, id, 3, vec![(2, *d2.public()), (1, *d1.public())])?;
        let list = DeviceList::verify(&signed, Some(&account.public()))?;
        assert_eq!(list.device_ids(), vec![1, 2]);
        assert_eq!(list.version, 3);
        assert!(list.check_newer_than(2).is_ok());
        assert!(matches!(
            list.check_newer_than(3),
            Err(Error::StaleDeviceList { have: 3, got: 3 })
        ));
        Ok(())
    }

    #[test]
    fn tampered_list_is_refused() -> Result<()> {
        let (account, id, d1, d2) = setup();
        let mut signed = DeviceList::sign(&account, id, 1, vec![(1, *d1.public())])?;
        // The relay tries to slip in a device.
        signed.devices.push(DeviceEntry {
            device_id: 9,
            identity_key: d2.public().to_bytes().to_vec(),
        });
        assert!(matches!(
            DeviceList::verify(&signed, None),
            Err(Error::BadSignature { .. })
        ));
        // Or to roll back the version.
        let mut signed = DeviceList::sign(&account, id, 5, vec![(1, *d1.public())])?;
        signed.version = 4;
        assert!(DeviceList::verify(&signed, None).is_err());
        // Or to re-sign with its own account key.
        let other = AccountKeyPair::generate(&mut rand::rng());
        let forged = DeviceList::sign(&other, id, 6, vec![(1, *d2.public())])?;
        assert_eq!(
            DeviceList::verify(&forged, Some(&account.public())),
            Err(Error::IdentityMismatch)
        );
        Ok(())
    }
}
