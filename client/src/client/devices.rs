//! This account's own devices: linking a new one (which then asks the
//! others for the address book, see `contacts_sync`), removing one.

use comptoir_protocol::proto::wire::{AccountKind, PublishDeviceList, client_frame, server_frame};
use comptoir_protocol::{AccountId, AccountKey, DeviceList, IdentityKey};

use std::collections::BTreeMap;

use crate::device_notes::{self, DeviceNote};
use crate::error::{ClientError, Result};
use crate::peers;

use super::{Client, unexpected};

const LINK_CODE_PREFIX: &str = "comptoir-link:";

const APPROVAL_PREFIX: &str = "comptoir-approve:";

/// 64 hex digits to 32 bytes.
fn key_from_hex(text: &str) -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

fn parse_link_code(code: &str) -> Result<IdentityKey> {
    let bad = || ClientError::BadLinkCode("expected comptoir-link: and 64 hex digits".into());
    let hex_key = code.trim().strip_prefix(LINK_CODE_PREFIX).ok_or_else(bad)?;
    let bytes = key_from_hex(hex_key).ok_or_else(bad)?;
    IdentityKey::from_bytes(&bytes).map_err(|e| ClientError::BadLinkCode(e.to_string()))
}

/// `comptoir-approve:<account id>:<device id>:<account key>`: the account
/// key travels with the approval (from device to device, not through the
/// relay), so the new device pins the right key even if the relay lies.
fn parse_approval(approval: &str) -> Result<(AccountId, u32, AccountKey)> {
    let bad = || {
        ClientError::BadLinkCode(
            "expected comptoir-approve:<account id>:<device id>:<account key>, as the first device gave it"
                .into(),
        )
    };
    let rest = approval
        .trim()
        .strip_prefix(APPROVAL_PREFIX)
        .ok_or_else(bad)?;
    let mut parts = rest.split(':');
    let (Some(account), Some(device), Some(key), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let account = AccountId::from_hex(account).map_err(|_| bad())?;
    let device: u32 = device.parse().map_err(|_| bad())?;
    if device == 0 {
        return Err(bad());
    }
    let key = key_from_hex(key)
        .and_then(|k| AccountKey::from_bytes(&k).ok())
        .ok_or_else(bad)?;
    Ok((account, device, key))
}

impl Client {
    /// This account's device list as last verified.
    pub fn own_devices(&self) -> Result<DeviceList> {
        self.live().own_devices()
    }

    /// The code a new device shows so an existing device can add it.
    pub fn link_code(&self) -> Result<String> {
        if !self.account.is_unlinked() {
            return Err(ClientError::InvalidArgument(
                "this device already belongs to an account".into(),
            ));
        }
        Ok(format!(
            "{LINK_CODE_PREFIX}{}",
            hex::encode(self.account.identity_key().to_bytes())
        ))
    }

    /// On the account's first device: add the device that shows
    /// `link_code` to the signed device list. Returns the approval the new
    /// device finishes linking with.
    pub async fn add_device(&mut self, link_code: &str) -> Result<String> {
        self.add_device_named(link_code, None).await
    }

    /// [`Self::add_device`], noting here when it was added and, if given,
    /// the name the user calls it (see [`Self::device_notes`]). A bad name
    /// is refused before anything is published.
    pub async fn add_device_named(
        &mut self,
        link_code: &str,
        name: Option<&str>,
    ) -> Result<String> {
        if let Some(name) = name {
            device_notes::check_name(name)?;
        }
        let identity = parse_link_code(link_code)?;
        let own = self.account.id();
        self.refresh_peer(own).await?;
        let current = self.own_devices()?;
        let device_id = match current.devices.iter().find(|(_, key)| *key == identity) {
            Some((id, _)) => *id,
            None => {
                let next = current.devices.iter().map(|(id, _)| *id).max().unwrap_or(0) + 1;
                let mut devices = current.devices.clone();
                devices.push((next, identity));
                self.publish_devices(current.version + 1, devices).await?;
                device_notes::put(
                    &self.store,
                    next,
                    &DeviceNote {
                        name: None,
                        added_at_ms: Some(super::now_ms()),
                    },
                )?;
                next
            }
        };
        if let Some(name) = name {
            self.name_device(device_id, name)?;
        }
        self.store.flush().await?;
        Ok(format!(
            "{APPROVAL_PREFIX}{own}:{device_id}:{}",
            hex::encode(current.account_key.to_bytes())
        ))
    }

    /// What this device noted about its account's devices (names given
    /// here, when they were added), by device id. The signed device list
    /// carries neither, so another device may know other notes.
    pub fn device_notes(&self) -> Result<BTreeMap<u32, DeviceNote>> {
        device_notes::all(&self.store)
    }

    /// Call one of this account's devices `name` (on this device only).
    /// [`ClientError::InvalidArgument`] for a bad name or a device not in
    /// the account's list; nothing changes then.
    pub fn name_device(&self, device_id: u32, name: &str) -> Result<()> {
        device_notes::check_name(name)?;
        if self.own_devices()?.device(device_id).is_none() {
            return Err(ClientError::InvalidArgument(format!(
                "device {device_id} is not in this account's list"
            )));
        }
        let mut note = device_notes::get(&self.store, device_id)?;
        note.name = Some(name.to_string());
        device_notes::put(&self.store, device_id, &note)
    }

    /// On the account's first device: remove a device from the signed
    /// list. The relay drops its queue and disconnects it.
    pub async fn remove_device(&mut self, device_id: u32) -> Result<()> {
        if device_id == self.account.device_id() {
            return Err(ClientError::InvalidArgument(
                "a device cannot remove itself".into(),
            ));
        }
        let own = self.account.id();
        self.refresh_peer(own).await?;
        let current = self.own_devices()?;
        if current.device(device_id).is_none() {
            return Err(ClientError::InvalidArgument(format!(
                "device {device_id} is not in this account's list"
            )));
        }
        let devices = current
            .devices
            .iter()
            .copied()
            .filter(|(id, _)| *id != device_id)
            .collect();
        self.publish_devices(current.version + 1, devices).await
    }

    async fn publish_devices(
        &mut self,
        version: u64,
        devices: Vec<(u32, IdentityKey)>,
    ) -> Result<()> {
        let key = self
            .account
            .account_key()
            .ok_or(ClientError::NotPrimaryDevice)?;
        let own = self.account.id();
        let signed = DeviceList::sign(key, own, version, devices)?;
        let body = client_frame::Body::PublishDeviceList(PublishDeviceList {
            device_list: Some(signed.clone()),
        });
        match self.request(body, "the device list").await? {
            server_frame::Body::Ok(_) => {}
            other => return Err(unexpected("Ok", &other)),
        }
        peers::observe(&self.store, &own, &signed)?;
        self.store.flush().await
    }

    /// On a new device: finish linking with the approval the first device
    /// printed, connect, and check the account's signed list names this
    /// device (pinning the account key).
    pub async fn finish_link(&mut self, url: &str, approval: &str) -> Result<()> {
        if !self.account.is_unlinked() {
            return Err(ClientError::InvalidArgument(
                "this device is already linked".into(),
            ));
        }
        let (account, device_id, account_key) = parse_approval(approval)?;
        let unlinked_id = self.account.id();
        self.account.set_linked(account, device_id);
        self.refresh_me();
        let checked = match self.connect(url).await {
            Ok(_) => {
                let own = self.own_devices()?;
                if own.account_key != account_key {
                    Err(ClientError::BadLinkCode(
                        "the relay presents another account key than the approval names; do not trust this relay"
                            .into(),
                    ))
                } else if own.device(device_id) != Some(&self.account.identity_key()) {
                    Err(ClientError::BadLinkCode(
                        "the account's signed device list does not name this device".into(),
                    ))
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            // Back to waiting for a (good) approval; nothing stays pinned.
            self.disconnect().await;
            peers::forget(&self.store, &account)?;
            // The kind that relay told is forgotten with the link.
            self.set_kind(AccountKind::Unspecified)?;
            self.account.set_unlinked(unlinked_id);
            self.refresh_me();
            self.account.save(&self.store)?;
            self.store.flush().await?;
            return Err(e);
        }
        self.account.save(&self.store)?;
        device_notes::put(
            &self.store,
            device_id,
            &DeviceNote {
                name: None,
                added_at_ms: Some(super::now_ms()),
            },
        )?;
        // Ask the account's other devices for the address book: it
        // arrives end-to-end encrypted once one of them is online.
        let request = self.queue_contacts_request()?;
        self.store.flush().await?;
        if let Some(request) = request
            && let Err(e) = self.live().send_control(request).await
        {
            if super::sender::is_connection_lost(&e) {
                self.note_connection(&Err::<(), _>(e));
            } else {
                self.events.push_back(crate::event::Event::Warning(format!(
                    "the account's other devices could not be asked for the contacts: {e}"
                )));
            }
        }
        Ok(())
    }
}
