//! `UploadPreKeys` and `FetchPreKeys`. A fetch hands each one-time prekey
//! to exactly one caller (storage compare-and-swap) and warns the owner
//! device with `PreKeysLow` when its stock runs low.

use comptoir_protocol::proto::wire::{self, server_frame::Body};
use comptoir_protocol::verify_signed_prekey;

use super::{account_field, device, protocol_refusal, wire_list};
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::hub::Posted;
use crate::session::{Reply, Session};
use crate::storage::{
    Directory, Keys, OneTimePreKeyRecord, PreKeyPublic, SignedPreKeyRecord, TakenPreKeys,
};

/// Length of an X25519 public key.
const KEY_LEN: usize = 32;

/// Refuse a key the relay would hand out but no peer should use: a wrong
/// length, key id 0 (reserved: "no key"), or a non-canonical X25519 key
/// (bit 255 set: a second encoding of another key).
fn check_key(what: &str, key_id: u32, public_key: &[u8]) -> Result<(), RelayError> {
    if public_key.len() != KEY_LEN {
        return Err(invalid(format!(
            "{what} {key_id} must be {KEY_LEN} bytes, got {}",
            public_key.len()
        )));
    }
    if key_id == 0 {
        return Err(invalid(format!(
            "{what} id 0 is reserved; number keys from 1"
        )));
    }
    if public_key[KEY_LEN - 1] & 0x80 != 0 {
        return Err(invalid(format!(
            "{what} {key_id} is not a canonical X25519 key (bit 255 set); clear the top bit"
        )));
    }
    Ok(())
}

pub(crate) async fn upload<S: Keys>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::UploadPreKeys,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let me = device(session)?;
    let max = relay.config.limits.max_one_time_prekeys;
    if let Some(spk) = &request.signed_prekey {
        verify_signed_prekey(&me.identity, spk)
            .map_err(|e| protocol_refusal("signed prekey", e))?;
    }
    if request.one_time_prekeys.len() > max as usize {
        return Err(invalid(format!(
            "at most {max} one-time prekeys per device; got {}",
            request.one_time_prekeys.len()
        )));
    }
    if let Some(spk) = &request.signed_prekey {
        check_key("signed prekey", spk.key_id, &spk.public_key)?;
    }
    let mut ids = std::collections::HashSet::with_capacity(request.one_time_prekeys.len());
    for key in &request.one_time_prekeys {
        check_key("one-time prekey", key.key_id, &key.public_key)?;
        if !ids.insert(key.key_id) {
            return Err(invalid(format!(
                "one-time prekey id {} appears twice; give every key its own id",
                key.key_id
            )));
        }
    }
    let public = |key: Vec<u8>| PreKeyPublic::new(key).map_err(|e| invalid(e.to_string()));
    let signed = match request.signed_prekey {
        Some(spk) => Some(SignedPreKeyRecord {
            key_id: spk.key_id,
            public: public(spk.public_key)?,
            signature: spk.signature,
        }),
        None => None,
    };
    let one_time = request
        .one_time_prekeys
        .into_iter()
        .map(|key| {
            Ok(OneTimePreKeyRecord {
                key_id: key.key_id,
                public: public(key.public_key)?,
            })
        })
        .collect::<Result<Vec<_>, RelayError>>()?;
    let stored = relay
        .store
        .store_prekeys(me.account, me.device, signed, one_time, max)
        .await?;
    match stored {
        Ok(_) => Ok(Reply::Frame(frame::ok(request_id))),
        Err(have) => Err(invalid(format!(
            "too many one-time prekeys: {have} stored, at most {max}; upload fewer"
        ))),
    }
}

pub(crate) async fn fetch<S: Directory + Keys>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::FetchPreKeys,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let me = device(session)?;
    let (my_account, my_device) = (me.account, me.device);
    let account = account_field("account_id", &request.account_id)?;
    let list = relay
        .store
        .device_list(account)
        .await?
        .ok_or(RelayError::UnknownAccount)?;
    if request.device_ids.len() > comptoir_protocol::MAX_DEVICES {
        return Err(invalid(format!(
            "at most {} device ids, got {}",
            comptoir_protocol::MAX_DEVICES,
            request.device_ids.len()
        )));
    }
    // The devices asked for (all but this one, when none are named): the
    // others keep their one-time keys.
    let targets: Vec<_> = list
        .list
        .devices
        .iter()
        .filter(|(device_id, _)| !(account == my_account && *device_id == my_device))
        .filter(|(device_id, _)| {
            request.device_ids.is_empty() || request.device_ids.contains(device_id)
        })
        .collect();
    // Per (requester, target device): one account cannot drain another
    // device's one-time prekeys; its own devices are not limited. Every
    // limit is checked before any token or key is taken, so a refusal
    // takes none.
    if account != my_account {
        let keys: Vec<_> = targets
            .iter()
            .map(|(device_id, _)| (my_account, account, *device_id))
            .collect();
        if let Err(retry_after_ms) = relay.prekey_fetch_limiter.check_all(&keys) {
            return Err(RelayError::RateLimited {
                scope: "prekey fetches for this device",
                retry_after_ms,
            });
        }
    }
    let mut bundles = Vec::with_capacity(targets.len());
    for (device_id, identity) in targets {
        let device_id = *device_id;
        let taken = relay.store.take_prekeys(account, device_id).await?;
        if taken.remaining < relay.config.limits.prekeys_low_threshold
            && relay
                .prekeys_low_limiter
                .check(&(account, device_id))
                .is_ok()
        {
            relay.hub.post(
                account,
                device_id,
                Posted::Frame(frame::server(
                    0,
                    Body::PrekeysLow(wire::PreKeysLow {
                        remaining: taken.remaining,
                    }),
                )),
            );
        }
        let TakenPreKeys {
            signed, one_time, ..
        } = taken;
        bundles.push(wire::PreKeyBundle {
            account_id: account.to_vec(),
            device_id,
            identity_key: identity.to_bytes().to_vec(),
            signed_prekey: signed.map(|spk| wire::SignedPreKey {
                key_id: spk.key_id,
                public_key: spk.public.into_bytes(),
                signature: spk.signature,
            }),
            one_time_prekey: one_time.map(|key| wire::OneTimePreKey {
                key_id: key.key_id,
                public_key: key.public.into_bytes(),
            }),
        });
    }
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::PrekeyBundles(wire::PreKeyBundles {
            bundles,
            device_list: Some(wire_list(&list)?),
        }),
    )))
}
