//! `DeliveryAck`: the recipient device stored the envelope; delete it and
//! keep a `Delivered` receipt for the sender's device, in one write. The
//! sender's device is woken once the receipt is durable (by the connection,
//! once for the acks it finished together: `session::wake_senders`), and
//! gets it pushed (now if it is connected, else when it next connects)
//! until it answers with a `ReceiptAck`, which deletes it.
//!
//! An envelope the ledger bills (a business's template to a customer:
//! see `policy::accounting`; a business's Status key to a customer when
//! the rate card prices Status: `policy::status_price`) is deleted only
//! by a signed ack: the device's
//! identity-key signature over the delivery proof payload, checked against
//! its key in the account's signed device list. A missing or bad one is
//! refused with a typed error and nothing is written. The first device of
//! the customer to ack makes the ledger's delivered entry, in the same
//! group as the deletion and the receipt, so it is durable before the
//! `Delivered` receipt (which carries it) is pushed.
//!
//! Neither deletion holds up the next frames nor is waited on for
//! durability: if a crash loses an ack, the envelope is delivered again
//! (the client drops it by message id) and its receipt is made by the next
//! ack; if it loses a receipt ack, the receipt is pushed again.

use std::sync::atomic::Ordering::Relaxed;

use comptoir_protocol::proto::wire;
use comptoir_protocol::{AccountId, DeliveryFields, IdentityKey, verify_delivery};
use futures_util::FutureExt;

use super::{account_field, device};
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::session::EncodeFrame;
use crate::session::{Completion, ReceiptKept, Reply, Session};
use crate::storage::{
    AckOf, DELIVERY_SIGNATURE_LEN, DeliveredEntry, Directory, LedgerEntry, MESSAGE_ID_LEN, Mailbox,
};

fn message_id_field(bytes: &[u8]) -> Result<[u8; MESSAGE_ID_LEN], RelayError> {
    bytes
        .try_into()
        .map_err(|_| invalid(format!("message_id must be 16 bytes, got {}", bytes.len())))
}

pub(crate) async fn ack<S: Directory + Mailbox>(
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
    let signature = request.delivery_signature;
    let signed_at_ms = request.signed_at_ms;
    let rejected = request.rejected;
    Ok(Reply::Later(
        async move {
            let expires = relay
                .clock
                .now_ms()
                .saturating_add(relay.config.message_ttl_ms);
            let reply = |frame| if request_id == 0 { None } else { Some(frame) };
            let billed = if rejected {
                // Not used by the device: deleted with no proof, never billed.
                Ok(None)
            } else {
                relay.store.billed_copy(account, device_id, of).await
            };
            let removed = match billed {
                Ok(None) => {
                    relay
                        .store
                        .acknowledge(account, device_id, of, expires)
                        .await
                }
                Ok(Some(entry)) => {
                    match checked_delivery(
                        &relay,
                        account,
                        device_id,
                        &entry,
                        &signature,
                        signed_at_ms,
                    )
                    .await
                    {
                        Ok(delivered) => {
                            // Checked, nothing written yet (crash tests).
                            crate::fault::hit("ack-before-ledger");
                            relay
                                .store
                                .acknowledge_delivered(account, device_id, of, expires, delivered)
                                .await
                        }
                        Err(error) => {
                            relay.metrics.refused(error.code());
                            return Completion {
                                frame: reply(error.to_frame(request_id).encode_frame()),
                                acked: false,
                                receipt_acked: false,
                                receipt_kept: None,
                            };
                        }
                    }
                }
                Err(error) => Err(error),
            };
            match removed {
                Ok(Some(acked)) => {
                    relay.metrics.envelopes_delivered.fetch_add(1, Relaxed);
                    relay.metrics.notify_change();
                    relay.metrics.queue_depth.fetch_sub(1, Relaxed);
                    // The connection wakes the sender's device once its
                    // receipt can be read (with those of the other acks
                    // finished at the same time); if it is not connected
                    // then, it gets it at its next authentication.
                    Completion {
                        frame: reply(frame::ok(request_id)),
                        acked: true,
                        receipt_acked: false,
                        receipt_kept: Some(ReceiptKept {
                            sender: acked.sender,
                            sender_device: acked.sender_device,
                            durable: acked.receipt_kept,
                        }),
                    }
                }
                // Already acked, or expired after it was pushed: nothing to
                // delete, but the device did take it off the window.
                Ok(None) => Completion {
                    frame: reply(frame::ok(request_id)),
                    acked: true,
                    receipt_acked: false,
                    receipt_kept: None,
                },
                Err(error) => {
                    tracing::error!(%error, "deleting an acked envelope failed");
                    let error = RelayError::Storage(error);
                    relay.metrics.refused(error.code());
                    Completion {
                        frame: reply(error.to_frame(request_id).encode_frame()),
                        acked: false,
                        receipt_acked: false,
                        receipt_kept: None,
                    }
                }
            }
        }
        .boxed(),
    ))
}

/// Check a signed ack of the billed send `entry` by `account`'s `device`
/// against that device's identity key in the account's signed device list;
/// the delivered entry to keep if it verifies.
async fn checked_delivery<S: Directory + Mailbox>(
    relay: &crate::state::Relay<S>,
    account: AccountId,
    device: u32,
    entry: &LedgerEntry,
    signature: &[u8],
    signed_at_ms: u64,
) -> Result<DeliveredEntry, RelayError> {
    if signature.is_empty() {
        return Err(RelayError::BadDeliverySignature(
            "the ack carried no signature",
        ));
    }
    let signature: [u8; DELIVERY_SIGNATURE_LEN] = signature
        .try_into()
        .map_err(|_| RelayError::BadDeliverySignature("the signature is not 64 bytes"))?;
    let list = relay
        .store
        .device_list(account)
        .await?
        .ok_or(RelayError::UnknownDevice)?;
    let key: &IdentityKey = list
        .list
        .devices
        .iter()
        .find(|(id, _)| *id == device)
        .map(|(_, key)| key)
        .ok_or(RelayError::UnknownDevice)?;
    let fields = DeliveryFields {
        accept_id: entry.accept_id,
        message_id: entry.message_id,
        business: entry.business,
        customer: entry.customer,
        customer_device: device,
        franking_commitment: entry.franking_tag.clone(),
        time_ms: signed_at_ms,
    };
    verify_delivery(key, &fields, &signature).map_err(|_| {
        RelayError::BadDeliverySignature(
            "the signature does not verify against this device's identity key",
        )
    })?;
    Ok(DeliveredEntry {
        accept_id: entry.accept_id,
        customer_device: device,
        signed_at_ms,
        signature,
        delivered_at_ms: relay.clock.now_ms(),
        // Given by the store, under the lock that appends it.
        chain_seq: None,
    })
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
                        receipt_kept: None,
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
                        receipt_kept: None,
                    }
                }
            }
        }
        .boxed(),
    ))
}
