//! `DeliveryAck`: the recipient device stored the envelope; delete it and
//! keep a `Delivered` receipt for the sender's device, in one write. The
//! sender's device is woken once the receipt is durable, and gets it pushed
//! (now if it is connected, else when it next connects) until it answers
//! with a `ReceiptAck`, which deletes it.
//!
//! Neither deletion holds up the next frames nor is waited on for
//! durability: if a crash loses an ack, the envelope is delivered again
//! (the client drops it by message id) and its receipt is made by the next
//! ack; if it loses a receipt ack, the receipt is pushed again.

use std::sync::atomic::Ordering::Relaxed;

use comptoir_protocol::proto::wire;
use futures_util::FutureExt;

use super::{account_field, device};
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::session::EncodeFrame;
use crate::session::{Completion, Reply, Session};
use crate::state::now_ms;
use crate::storage::{AckOf, MESSAGE_ID_LEN, Mailbox};

fn message_id_field(bytes: &[u8]) -> Result<[u8; MESSAGE_ID_LEN], RelayError> {
    bytes
        .try_into()
        .map_err(|_| invalid(format!("message_id must be 16 bytes, got {}", bytes.len())))
}

pub(crate) async fn ack<S: Mailbox>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::DeliveryAck,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let me = device(session)?;
    let (account, device_id) = (me.account, me.device);
    let named = request.accept_id != 0;
    let of = if named && request.message_id.is_empty() && request.sender_account.is_empty() {
        AckOf::Accept(request.accept_id)
    } else if named {
        AckOf::AcceptOf {
            accept_id: request.accept_id,
            sender: account_field("sender_account", &request.sender_account)?,
            message_id: message_id_field(&request.message_id)?,
        }
    } else {
        AckOf::Message {
            sender: account_field("sender_account", &request.sender_account)?,
            message_id: message_id_field(&request.message_id)?,
        }
    };
    Ok(Reply::Later(
        async move {
            let expires = now_ms().saturating_add(relay.config.message_ttl_ms);
            let removed = relay
                .store
                .acknowledge(account, device_id, of, expires)
                .await;
            let reply = |frame| if request_id == 0 { None } else { Some(frame) };
            match removed {
                Ok(Some(acked)) => {
                    relay.metrics.envelopes_delivered.fetch_add(1, Relaxed);
                    relay.metrics.notify_change();
                    relay.metrics.queue_depth.fetch_sub(1, Relaxed);
                    // Wake the sender's device once its receipt can be read;
                    // if it is not connected then, it gets it at its next
                    // authentication.
                    let (sender, sender_device) = (acked.sender, acked.sender_device);
                    let hub_relay = relay.clone();
                    tokio::spawn(async move {
                        if acked.receipt_kept.await.is_ok() {
                            hub_relay.hub.wake(sender, sender_device);
                        }
                    });
                    Completion {
                        frame: reply(frame::ok(request_id)),
                        acked: true,
                        receipt_acked: false,
                    }
                }
                // Already acked, or expired after it was pushed: nothing to
                // delete, but the device did take it off the window.
                Ok(None) => Completion {
                    frame: reply(frame::ok(request_id)),
                    acked: true,
                    receipt_acked: false,
                },
                Err(error) => {
                    tracing::error!(%error, "deleting an acked envelope failed");
                    let error = RelayError::Storage(error);
                    relay.metrics.refused(error.code());
                    Completion {
                        frame: reply(error.to_frame(request_id).encode_frame()),
                        acked: false,
                        receipt_acked: false,
                    }
                }
            }
        }
        .boxed(),
    ))
}

/// `ReceiptAck`: the sending device recorded a `Delivered` receipt; delete
/// it. A receipt no longer kept (acked already, expired) is answered `Ok`
/// too: the device did take it off its window.
pub(crate) async fn receipt_ack<S: Mailbox>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::ReceiptAck,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let me = device(session)?;
    let (account, device_id) = (me.account, me.device);
    let message_id = message_id_field(&request.message_id)?;
    let recipient = account_field("recipient_account", &request.recipient_account)?;
    let recipient_device = request.recipient_device;
    Ok(Reply::Later(
        async move {
            let removed = relay
                .store
                .acknowledge_receipt(account, device_id, recipient, recipient_device, message_id)
                .await;
            let reply = |frame| if request_id == 0 { None } else { Some(frame) };
            match removed {
                Ok(deleted) => {
                    if deleted {
                        relay.metrics.receipts_acked.fetch_add(1, Relaxed);
                        relay.metrics.notify_change();
                    }
                    Completion {
                        frame: reply(frame::ok(request_id)),
                        acked: false,
                        receipt_acked: true,
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "deleting an acked receipt failed");
                    let error = RelayError::Storage(error);
                    relay.metrics.refused(error.code());
                    Completion {
                        frame: reply(error.to_frame(request_id).encode_frame()),
                        acked: false,
                        receipt_acked: false,
                    }
                }
            }
        }
        .boxed(),
    ))
}
