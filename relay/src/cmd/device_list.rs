//! `PublishDeviceList` (a newer list signed by the account key; removed
//! devices, and devices whose id now has another identity key, lose their
//! queue and prekeys and are disconnected) and `GetDeviceList`.

use std::collections::BTreeSet;

use comptoir_protocol::DeviceList;
use comptoir_protocol::proto::wire::{self, server_frame::Body};

use super::{account_field, device, protocol_refusal, stored_list, wire_list};
use crate::connection::close;
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::hub::Posted;
use crate::session::{Reply, Session};
use crate::storage::{Directory, Keys, ListUpdate, Mailbox};

pub(crate) async fn publish<S: Directory + Keys + Mailbox>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::PublishDeviceList,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let me = device(session)?;
    let (account, my_device) = (me.account, me.device);
    let list = request
        .device_list
        .ok_or_else(|| invalid("publish needs a signed device list"))?;
    if list.account_id != account.as_bytes() {
        return Err(invalid("a device may only publish its own account's list"));
    }
    let current = relay
        .store
        .device_list(account)
        .await?
        .ok_or(RelayError::UnknownAccount)?;
    let verified = DeviceList::verify(&list, Some(&current.list.account_key))
        .map_err(|e| protocol_refusal("device list", e))?;
    let version = verified.version;
    // A device whose id stays with another identity key is removed and
    // added: its connection (which proved the old key), queue and prekeys
    // (signed by the old key) must not outlive the change.
    let kept: BTreeSet<u32> = verified
        .devices
        .iter()
        .filter(|(id, key)| {
            current
                .list
                .device(*id)
                .is_none_or(|old| old.as_bytes() == key.as_bytes())
        })
        .map(|(id, _)| *id)
        .collect();
    let list = stored_list(&list, verified);
    match relay.store.replace_device_list(account, &list).await? {
        ListUpdate::Stored => {}
        ListUpdate::Stale { have } => {
            return Err(RelayError::StaleDeviceList { have, got: version });
        }
        ListUpdate::UnknownAccount => return Err(RelayError::UnknownAccount),
    }
    let mut removed_self = false;
    for old in current.list.device_ids() {
        if kept.contains(&old) {
            continue;
        }
        let dropped = relay.store.remove_queue(account, old).await?;
        relay.store.remove_device_keys(account, old).await?;
        relay
            .metrics
            .queue_depth
            .fetch_sub(dropped as i64, std::sync::atomic::Ordering::Relaxed);
        if old == my_device {
            removed_self = true;
        } else {
            relay.hub.post(
                account,
                old,
                Posted::Close(close::DEVICE_REMOVED, "device removed"),
            );
        }
    }
    tracing::info!(%account, version, "device list updated");
    Ok(if removed_self {
        Reply::Close(
            frame::ok(request_id),
            close::DEVICE_REMOVED,
            "device removed",
        )
    } else {
        Reply::Frame(frame::ok(request_id))
    })
}

pub(crate) async fn get<S: Directory>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::GetDeviceList,
) -> Result<Reply, RelayError> {
    let account = account_field("account_id", &request.account_id)?;
    let list = session
        .relay
        .store
        .device_list(account)
        .await?
        .ok_or(RelayError::UnknownAccount)?;
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::DeviceList(wire_list(&list)?),
    )))
}
