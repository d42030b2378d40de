//! `DeliveryAck`: the recipient device stored the envelope; delete it and
//! tell the sender's device `Delivered`.
//!
//! The deletion is not waited on for durability: if a crash loses it, the
//! envelope is delivered again and the client drops it by message id.

use std::sync::atomic::Ordering::Relaxed;

use comptoir_protocol::proto::wire::{self, server_frame::Body};

use super::{account_field, device};
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::hub::Posted;
use crate::session::{Reply, Session};
use crate::storage::{MESSAGE_ID_LEN, Storage};

pub(crate) async fn ack<S: Storage>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::DeliveryAck,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let me = device(session)?;
    let (account, device_id) = (me.account, me.device);
    let message_id: [u8; MESSAGE_ID_LEN] = request
        .message_id
        .as_slice()
        .try_into()
        .map_err(|_| invalid("message_id must be 16 bytes"))?;
    let sender = account_field("sender_account", &request.sender_account)?;
    if let Some(sender_device) = relay
        .store
        .acknowledge(account, device_id, sender, message_id)
        .await?
    {
        if let Some(me) = session.device.as_mut() {
            me.in_flight = me.in_flight.saturating_sub(1);
        }
        relay.metrics.envelopes_delivered.fetch_add(1, Relaxed);
        relay.metrics.queue_depth.fetch_sub(1, Relaxed);
        relay.hub.post(
            sender,
            sender_device,
            Posted::Frame(frame::server(
                0,
                Body::Delivered(wire::Delivered {
                    message_id: message_id.to_vec(),
                    recipient_account: account.to_vec(),
                    recipient_device: device_id,
                }),
            )),
        );
        // Room in the window: the session pushes more after this reply.
        if let Some(me) = session.device.as_ref() {
            me.presence.notify.notify_one();
        }
    }
    Ok(if request_id == 0 {
        Reply::None
    } else {
        Reply::Frame(frame::ok(request_id))
    })
}
