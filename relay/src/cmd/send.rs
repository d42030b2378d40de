//! `Send`: gather the inputs of the [`policy`](crate::policy) (both
//! account records, the recipient's devices, block and rate state) and
//! apply its decision; build one `Envelope` per recipient device; store them durably in one atomic
//! write (group-committed); then `Accepted` and wake the recipients.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use comptoir_protocol::proto::wire::{self, AccountKind, server_frame::Body};
use comptoir_protocol::{ConsentCategories, MAX_FRAME_SIZE};
use futures_util::FutureExt;
use prost::Message;

use super::{account_field, device, wire_list};
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::policy::{
    self, Conversation, Decision, Party, Quotas, Refusal, Rules, SendInput, SendRequest,
    TemplateState,
};
use crate::session::{Completion, EncodeFrame, Reply, Session};
use crate::storage::{
    AcceptEffects, AccountRecord, Billed, BilledCategory, ConsentSeen, Directory, Enqueued,
    FirstContacts, MESSAGE_ID_LEN, Mailbox, NewMessage, Noted, Quality, ReachLimit, Reports,
    StoredDeviceList, Templates,
};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

pub(crate) async fn send<S: Directory + Mailbox + Templates + FirstContacts + Quality + Reports>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::Send,
) -> Result<Reply, RelayError> {
    send_checked(session, request_id, request, None).await
}

/// What a `SendStatusKey` adds to the send of the key (`cmd::status`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StatusKeySend {
    /// The copies expire with the post, at the latest.
    pub(crate) expires_by_ms: u64,
}

/// [`send`], or (with `status_key`) the send of a Status key: its copies
/// expire with the post, and a business's key to a customer is billed at
/// the rate card's `status` price ([`policy::status_price`]).
pub(crate) async fn send_checked<
    S: Directory + Mailbox + Templates + FirstContacts + Quality + Reports,
>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::Send,
    status_key: Option<StatusKeySend>,
) -> Result<Reply, RelayError> {
    let expires_by_ms = status_key.map(|k| k.expires_by_ms);
    let relay = session.relay.clone();
    let me = device(session)?;
    let (sender, sender_device) = (me.account, me.device);
    // Every send takes a token first, and a rate-limited one is refused
    // before any storage read (the rest of the policy needs them).
    let mut quotas = Quotas {
        rate_retry_after_ms: relay.account_limiter.check(&sender).err(),
        new_conversations_today: None,
    };
    if let Err(refusal) = policy::admit(&quotas) {
        return Err(refusal_error(refusal, None));
    }
    let message_id: [u8; MESSAGE_ID_LEN] =
        request.message_id.as_slice().try_into().map_err(|_| {
            invalid(format!(
                "message_id must be {MESSAGE_ID_LEN} bytes, got {}",
                request.message_id.len()
            ))
        })?;
    let recipient = account_field("recipient_account", &request.recipient_account)?;
    let resend = request.resend;
    let template = wire::Category::try_from(request.category)
        .ok()
        .and_then(ConsentCategories::of)
        .is_some();
    // Gather the policy's inputs; it alone decides.
    let list = relay
        .store
        .device_list(recipient)
        .await?
        .ok_or(RelayError::UnknownAccount)?;
    let sender_record = record_of(&relay.store, sender).await?;
    let recipient_record = record_of(&relay.store, recipient).await?;
    // Read before the block itself: a block landing after this read is
    // caught by the accept (its epoch moved), one before it by the read.
    let block_epoch_seen = relay.store.block_epoch(recipient, sender).await?;
    let blocked = recipient != sender && relay.store.is_blocked(recipient, sender).await?;
    // One reading of the relay's clock: the time the policy judges the
    // window and consent by is the accept time the send gets.
    let server_timestamp_ms = relay.clock.now_ms();
    // The window and the consent of a business writing to a customer.
    let (customer_wrote_at_ms, consent, consent_seen) = match (
        policy::kind_of(&sender_record),
        policy::kind_of(&recipient_record),
    ) {
        (AccountKind::Business, AccountKind::Customer) if recipient != sender => {
            let wrote = relay.store.last_customer_message(sender, recipient).await?;
            let kept = relay.store.consent(recipient, sender).await?;
            // Only a template is judged by consent (and guarded by it).
            let seen = template.then_some(ConsentSeen {
                customer: recipient,
                business: sender,
                counter: kept.map_or(0, |c| c.counter),
                revoked_by_block: kept.is_some_and(|c| c.revoked_by_block),
            });
            let covers = kept.map_or(ConsentCategories::NONE, |c| {
                c.covers_at(server_timestamp_ms)
            });
            (wrote, covers, seen)
        }
        _ => (None, ConsentCategories::NONE, None),
    };
    // The named template's approval, for template categories only.
    let template_state = if template && recipient != sender {
        match comptoir_protocol::template::TemplateId::from_hex(&request.template_id) {
            Some(id) => match relay.store.template_shared(&id).await? {
                Some(stored) if stored.approved_for(sender) => {
                    TemplateState::Approved(wire::Category::from(stored.template.category))
                }
                _ => TemplateState::NotApproved,
            },
            None => TemplateState::NotApproved,
        }
    } else {
        TemplateState::NotApproved
    };
    // A person-to-person message to an account the sender never talked
    // with starts a conversation: capped per day without a verified phone.
    let conversation_message =
        request.category == wire::Category::Conversation as i32 && recipient != sender;
    let day = server_timestamp_ms / DAY_MS;
    if conversation_message
        && sender_record.phone_number.is_empty()
        && !relay.store.have_talked(sender, recipient).await?
    {
        quotas.new_conversations_today = Some(relay.store.new_conversations(sender, day).await?);
    }
    let recipient_devices: Vec<u32> = list.list.device_ids();
    let ciphertexts: Vec<(u32, usize)> = request
        .devices
        .iter()
        .map(|d| (d.device_id, d.ciphertext.len()))
        .collect();
    let decision = policy::decide(&SendInput {
        sender: Party {
            record: &sender_record,
            account: sender.as_bytes(),
        },
        recipient: Party {
            record: &recipient_record,
            account: recipient.as_bytes(),
        },
        recipient_devices: &recipient_devices,
        request: SendRequest {
            sender_device,
            category: request.category,
            template_id: &request.template_id,
            franking_tag_len: request.franking_tag.len(),
            ciphertexts: &ciphertexts,
            status_key: status_key.is_some(),
        },
        conversation: Conversation {
            blocked,
            customer_wrote_at_ms,
            consent,
        },
        template: template_state,
        quotas,
        rules: Rules {
            require_phone_for_business: relay.config.limits.require_phone_for_business,
            new_conversations_per_day_without_phone: relay
                .config
                .limits
                .new_conversations_per_day_without_phone,
            requires_franking: relay.config.requires_franking(),
            metered: relay.config.checks_signed_delivery(),
        },
        rate_card: &relay.rate_card,
        now_ms: server_timestamp_ms,
    });
    let rate = match decision {
        Decision::Accept => None,
        Decision::AcceptAndBill(rate) => Some(rate),
        Decision::Refuse(refusal) => return Err(refusal_error(refusal, Some(&list))),
    };
    let expires_at_ms = server_timestamp_ms.saturating_add(relay.config.message_ttl_ms);
    let expires_at_ms = expires_by_ms.map_or(expires_at_ms, |by| by.min(expires_at_ms));
    let mut copies: Vec<(u32, Vec<u8>)> = Vec::with_capacity(request.devices.len());
    for d in request.devices {
        let ciphertext_len = d.ciphertext.len();
        let envelope = wire::Envelope {
            message_id: message_id.to_vec(),
            sender_account: sender.to_vec(),
            sender_device,
            recipient_account: recipient.to_vec(),
            recipient_device: d.device_id,
            client_timestamp_ms: request.client_timestamp_ms,
            server_timestamp_ms,
            category: request.category,
            template_id: request.template_id.clone(),
            franking_tag: request.franking_tag.clone(),
            relay_franking_signature: Vec::new(),
            ciphertext: d.ciphertext,
            // Assigned with the write; added when the copy is pushed.
            accept_id: 0,
        }
        .encode_to_vec();
        // The relay adds sender, timestamps and framing: what it stores must
        // still reach the recipient in one frame, or that device would be
        // offered the same unreadable envelope first on every connection.
        let delivered = frame::deliver_len(
            envelope.len() + frame::ACCEPT_ID_FIELD_MAX + frame::RELAY_TAG_FIELDS_MAX,
        );
        if delivered > MAX_FRAME_SIZE {
            let most = ciphertext_len.saturating_sub(delivered - MAX_FRAME_SIZE);
            return Err(invalid(format!(
                "the ciphertext for device {} is {ciphertext_len} bytes; with the envelope the relay adds it would not fit a {MAX_FRAME_SIZE}-byte frame: send at most {most} bytes",
                d.device_id
            )));
        }
        copies.push((d.device_id, envelope));
    }
    let devices: Vec<u32> = copies.iter().map(|(d, _)| *d).collect();
    // Noted before the next frame of this connection is read, so that
    // pipelined sends are held to the cap one after another; taken back
    // if the store then refuses the send (`finish`).
    let contact = if conversation_message {
        let noted = relay
            .store
            .note_contact(sender, recipient, day, server_timestamp_ms)
            .await?;
        Some(Contact { sender, day, noted })
    } else {
        None
    };
    let accounting = policy::accounting(
        &sender_record,
        &recipient_record,
        request.category,
        sender == recipient,
    );
    // A business-initiated conversation (a template outside the customer's
    // window) is held to the business's messaging tier; the store counts
    // and checks it with the accept.
    let reach = if accounting.business_initiated
        && !policy::window_open(customer_wrote_at_ms, server_timestamp_ms)
    {
        Some(ReachLimit {
            limit: crate::quality::limit_for_send(&relay, sender, server_timestamp_ms).await?,
        })
    } else {
        None
    };
    // The ledger's line for a send the policy billed.
    let billed = rate.map(|rate| Billed {
        category: rate.line,
        template_id: if rate.line == BilledCategory::Status {
            String::new()
        } else {
            request.template_id.clone()
        },
        franking_tag: request.franking_tag.clone(),
        priced: rate.priced,
    });
    let effects = AcceptEffects {
        // A re-sent message is not a new one: it never opens the window.
        customer_wrote_to: (accounting.opens_window && !resend).then_some(recipient),
        business_reached: accounting.business_initiated.then_some(recipient),
        billed,
        consent_seen,
        block_epoch_seen,
        reach,
    };
    let message = NewMessage {
        effects,
        sender,
        sender_device,
        recipient,
        message_id,
        server_timestamp_ms,
        expires_at_ms,
        copies,
    };
    let max_queue = relay.config.limits.max_queue_per_device;
    Ok(Reply::Later(
        async move {
            finish(
                relay, request_id, message_id, recipient, devices, message, max_queue, contact,
            )
            .await
        }
        .boxed(),
    ))
}

/// An account's record; one without (gone since it was read) reads as a
/// customer created at time 0.
async fn record_of<S: Directory>(
    store: &S,
    account: comptoir_protocol::AccountId,
) -> Result<AccountRecord, RelayError> {
    Ok(store.account_record(account).await?.unwrap_or_default())
}

/// The typed refusal for a policy decision.
fn refusal_error(refusal: Refusal, list: Option<&StoredDeviceList>) -> RelayError {
    match refusal {
        Refusal::RateLimited { retry_after_ms } => RelayError::RateLimited {
            scope: "account",
            retry_after_ms,
        },
        Refusal::Blocked => RelayError::Blocked,
        Refusal::PhoneRequired => RelayError::PhoneRequired,
        Refusal::WindowClosed { .. } => RelayError::WindowClosed(refusal.message()),
        Refusal::NoConsent { .. } => RelayError::NoConsent(refusal.message()),
        Refusal::NewConversationQuota { .. } => RelayError::QuotaExceeded(refusal.message()),
        Refusal::TemplateNotApproved | Refusal::TemplateCategory { .. } => {
            RelayError::TemplateNotApproved(refusal.message())
        }
        Refusal::DeviceListMismatch => match list.map(wire_list) {
            Some(Ok(list)) => RelayError::DeviceListMismatch {
                current: Box::new(list),
            },
            Some(Err(error)) => error,
            None => invalid(refusal.message()),
        },
        Refusal::BusinessConversation | Refusal::CustomerBusinessCategory(_) => {
            RelayError::AccountKind(refusal.message())
        }
        Refusal::FrankingRequired { got } => RelayError::FrankingRequired { got },
        other => invalid(other.message()),
    }
}

/// A conversation message's first-contact note, made before the store
/// took the send (see [`FirstContacts::note_contact`]).
#[derive(Clone, Copy)]
struct Contact {
    sender: comptoir_protocol::AccountId,
    day: u64,
    noted: Noted,
}

/// Take back the first-contact note of a send the store refused. Its
/// failure is logged, not returned (the refusal is the answer); the pair
/// then stays marked and the conversation counted, as if it had started.
async fn forget_contact<S: FirstContacts>(
    relay: &crate::state::Relay<S>,
    recipient: comptoir_protocol::AccountId,
    contact: Option<Contact>,
) {
    let Some(Contact { sender, day, noted }) = contact else {
        return;
    };
    if let Err(error) = relay
        .store
        .forget_contact(sender, recipient, day, noted)
        .await
    {
        tracing::error!(%error, "taking back a first contact failed");
    }
}

#[allow(clippy::too_many_arguments)]
async fn finish<S: Mailbox + FirstContacts>(
    relay: Arc<crate::state::Relay<S>>,
    request_id: u64,
    message_id: [u8; MESSAGE_ID_LEN],
    recipient: comptoir_protocol::AccountId,
    devices: Vec<u32>,
    message: NewMessage,
    max_queue: u64,
    contact: Option<Contact>,
) -> Completion {
    let accepted = |server_timestamp_ms, accept_id| {
        frame::server(
            request_id,
            Body::Accepted(wire::Accepted {
                message_id: message_id.to_vec(),
                server_timestamp_ms,
                accept_id,
            }),
        )
    };
    let server_timestamp_ms = message.server_timestamp_ms;
    let outcome = relay.store.enqueue(message, max_queue).await;
    let error = match outcome {
        Ok(Enqueued::Stored { accept_id }) => {
            crate::fault::hit("before-accepted");
            let n = devices.len() as u64;
            relay.metrics.envelopes_accepted.fetch_add(n, Relaxed);
            relay.metrics.queue_depth.fetch_add(n as i64, Relaxed);
            for device in devices {
                relay.hub.wake(recipient, device);
            }
            return Completion {
                frame: Some(accepted(server_timestamp_ms, accept_id)),
                acked: false,
                receipt_acked: false,
                receipt_kept: None,
            };
        }
        Ok(Enqueued::Duplicate {
            server_timestamp_ms,
            accept_id,
        }) => {
            relay.metrics.envelopes_duplicate.fetch_add(1, Relaxed);
            return Completion {
                frame: Some(accepted(server_timestamp_ms, accept_id)),
                acked: false,
                receipt_acked: false,
                receipt_kept: None,
            };
        }
        Ok(Enqueued::QueueFull { device }) => RelayError::QueueFull {
            device,
            limit: max_queue,
        },
        Ok(Enqueued::BlockedMeanwhile) => RelayError::Blocked,
        Ok(Enqueued::QuotaExceeded { limit, retry_at_ms }) => RelayError::TierLimit {
            limit,
            retry_at_ms,
            retry_after_ms: retry_at_ms.saturating_sub(server_timestamp_ms),
        },
        Ok(Enqueued::ConsentChanged) => RelayError::NoConsent(
            "the customer's consent for this business changed while this send was being \
             accepted; nothing was stored: send it again"
                .into(),
        ),
        Err(error) => {
            tracing::error!(%error, "storing an envelope failed");
            RelayError::Storage(error)
        }
    };
    forget_contact(&relay, recipient, contact).await;
    relay.metrics.refused(error.code());
    Completion {
        frame: Some(error.to_frame(request_id).encode_frame()),
        acked: false,
        receipt_acked: false,
        receipt_kept: None,
    }
}
