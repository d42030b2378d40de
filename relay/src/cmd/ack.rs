//! `DeliveryAck`: the recipient device stored the envelope; delete it and
//! tell the sender's device `Delivered` (now if it is connected, else when
//! it next connects).
//!
//! The deletion runs beside the connection (it does not hold up the next
//! frames) and is not waited on for durability: if a crash loses it, the
//! envelope is delivered again and the client drops it by message id.

use std::sync::atomic::Ordering::Relaxed;

use comptoir_protocol::proto::wire::{self, server_frame::Body};
use futures_util::FutureExt;

use super::{account_field, device};
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::hub::Posted;
use crate::session::EncodeFrame;
use crate::session::{Completion, Reply, Session};
use crate::state::now_ms;
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
    Ok(Reply::Later(
        async move {
            let removed = relay
                .store
                .acknowledge(account, device_id, sender, message_id)
                .await;
            let reply = |frame| if request_id == 0 { None } else { Some(frame) };
            match removed {
                Ok(Some(sender_device)) => {
                    relay.metrics.envelopes_delivered.fetch_add(1, Relaxed);
                    relay.metrics.notify_change();
                    relay.metrics.queue_depth.fetch_sub(1, Relaxed);
                    let receipt = frame::server(
                        0,
                        Body::Delivered(wire::Delivered {
                            message_id: message_id.to_vec(),
                            recipient_account: account.to_vec(),
                            recipient_device: device_id,
                        }),
                    );
                    if !relay.hub.is_connected(sender, sender_device) {
                        // Kept for the sending device's next connection.
                        let expires = now_ms().saturating_add(relay.config.message_ttl_ms);
                        if let Err(error) = relay
                            .store
                            .store_receipt(sender, sender_device, receipt, expires)
                            .await
                        {
                            tracing::warn!(%error, "keeping a delivery receipt failed");
                        }
                    } else {
                        relay
                            .hub
                            .post(sender, sender_device, Posted::Frame(receipt));
                    }
                    Completion {
                        frame: reply(frame::ok(request_id)),
                        acked: true,
                    }
                }
                // Already acked, or expired after it was pushed: nothing to
                // delete, but the device did take it off the window.
                Ok(None) => Completion {
                    frame: reply(frame::ok(request_id)),
                    acked: true,
                },
                Err(error) => {
                    tracing::error!(%error, "deleting an acked envelope failed");
                    let error = RelayError::Storage(error);
                    relay.metrics.refused(error.code());
                    Completion {
                        frame: reply(error.to_frame(request_id).encode_frame()),
                        acked: false,
                    }
                }
            }
        }
        .boxed(),
    ))
}
