//! Consent requests (docs/PROTOCOL.md, "Consent requests"): a verified
//! business that was given a customer's phone number asks the relay to
//! forward a request for named categories, with a purpose from a fixed
//! list. The business always gets the same `Ok`, at once: whether the
//! number is unknown, already asked, refused in the last 30 days, blocks
//! it, or the business is over its daily cap is decided after the answer,
//! in a task of its own. The relay keys its state by an HMAC of the number
//! (never the number). The customer lists its pending requests, and
//! answers; a refusal stays with the relay, an allowance shows the
//! business the customer's account.

use comptoir_protocol::ConsentCategories;
use comptoir_protocol::proto::wire::{self, ConsentPurpose, server_frame::Body};
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;

use super::device;
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::hub::Posted;
use crate::phone::is_e164;
use crate::session::{Reply, Session};
use crate::state::Relay;
use crate::storage::{
    Backend, ConsentRequests, Directory, PendingRequest, RequestState, StoredRequest,
};

/// How long a refused business may not ask the same number again.
pub(crate) const REFUSED_QUIET_MS: u64 = 30 * DAY_MS;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

pub(crate) async fn request<S: Backend>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::RequestConsent,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let business = device(session)?.account;
    // What may be told: about the business and the request's form.
    let categories = ConsentCategories::from_bits(request.categories)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            invalid("categories is a non-empty bit set of 1 (utility), 2 (authentication) and 4 (marketing)")
        })?;
    let purpose = ConsentPurpose::try_from(request.purpose)
        .ok()
        .filter(|p| *p != ConsentPurpose::Unspecified)
        .ok_or_else(|| invalid("purpose is one of the listed consent purposes"))?;
    let reference: [u8; 16] = request
        .reference
        .as_slice()
        .try_into()
        .map_err(|_| invalid("reference is 16 bytes"))?;
    if !is_e164(&request.phone_number) {
        return Err(invalid(
            "phone_number must be in E.164 form: + then the country code and number",
        ));
    }
    super::require_business(&relay.store, business, "asks for consent").await?;
    let now = relay.clock.now_ms();
    let verified = relay
        .store
        .business(business)
        .await?
        .is_some_and(|b| b.verified_name(now).is_some());
    if !verified {
        return Err(invalid(
            "only a verified business may ask for consent: publish a profile and ask the \
             operator to verify it",
        ));
    }
    // Everything about the number is decided after the answer.
    let number = request.phone_number;
    tokio::spawn(async move {
        let asked = Asked {
            business,
            categories: u32::from(categories.bits()),
            purpose: purpose as i32,
            reference,
        };
        if let Err(error) = forward(&relay, &number, asked).await {
            tracing::warn!(%error, "a consent request could not be forwarded");
        }
        relay
            .metrics
            .consent_requests_handled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        relay.metrics.notify_change();
    });
    Ok(Reply::Frame(frame::ok(request_id)))
}

struct Asked {
    business: comptoir_protocol::AccountId,
    categories: u32,
    purpose: i32,
    reference: [u8; 16],
}

async fn forward<S: Backend>(
    relay: &Relay<S>,
    number: &str,
    asked: Asked,
) -> Result<(), RelayError> {
    let now = relay.clock.now_ms();
    let business = asked.business;
    // Every request counts, whatever becomes of it.
    let count = relay
        .store
        .count_consent_request(business, now / DAY_MS)
        .await?;
    if count > relay.config.limits.consent_requests_per_business_per_day {
        return Ok(());
    }
    let key = relay.store.number_key().await?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).map_err(|_| {
        RelayError::Storage(crate::storage::StorageError::Corrupt("consent_requests"))
    })?;
    mac.update(number.as_bytes());
    let hash: [u8; 32] = mac.finalize().into_bytes().into();
    let existing = relay.store.consent_request(business, hash).await?;
    let may_ask = match &existing {
        None => true,
        Some(r) => {
            r.state == RequestState::Refused && now >= r.at_ms.saturating_add(REFUSED_QUIET_MS)
        }
    };
    if !may_ask {
        return Ok(());
    }
    let Some((customer, _)) = relay.store.lookup_phone(number).await? else {
        return Ok(());
    };
    if relay.store.is_blocked(customer, business).await? {
        return Ok(());
    }
    let mut request_id = [0u8; 16];
    rand::rng().fill_bytes(&mut request_id);
    let new = StoredRequest {
        state: RequestState::Pending,
        at_ms: now,
        request_id,
        customer,
        categories: asked.categories,
        purpose: asked.purpose,
        reference: asked.reference,
    };
    if !relay
        .store
        .open_consent_request(business, hash, existing.as_ref(), &new)
        .await?
    {
        return Ok(());
    }
    tracing::debug!(%business, "consent request forwarded");
    // Devices online now hear of it; the others list it when they connect.
    if let Some(list) = relay.store.device_list(customer).await? {
        let push = frame::server(
            0,
            Body::ConsentRequests(wire::ConsentRequests {
                requests: vec![entry(&PendingRequest {
                    business,
                    request: new,
                })],
            }),
        );
        for device in list.list.device_ids() {
            relay
                .hub
                .post(customer, device, Posted::Frame(push.clone()));
        }
    }
    Ok(())
}

fn entry(pending: &PendingRequest) -> wire::ConsentRequestEntry {
    wire::ConsentRequestEntry {
        request_id: pending.request.request_id.to_vec(),
        business_account: pending.business.to_vec(),
        categories: pending.request.categories,
        purpose: pending.request.purpose,
        requested_at_ms: pending.request.at_ms,
    }
}

pub(crate) async fn pending<S: Directory + ConsentRequests>(
    session: &mut Session<S>,
    request_id: u64,
) -> Result<Reply, RelayError> {
    let customer = device(session)?.account;
    let requests = session
        .relay
        .store
        .pending_consent_requests(customer)
        .await?
        .iter()
        .map(entry)
        .collect();
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::ConsentRequests(wire::ConsentRequests { requests }),
    )))
}

pub(crate) async fn answer<S: Directory + ConsentRequests>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::AnswerConsentRequest,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let customer = device(session)?.account;
    let id: [u8; 16] = request
        .request_id
        .as_slice()
        .try_into()
        .map_err(|_| invalid("request_id is 16 bytes"))?;
    let answered = relay
        .store
        .answer_consent_request(customer, id, request.allow, relay.clock.now_ms())
        .await?;
    if answered.is_none() {
        return Err(invalid(
            "this account has no pending consent request with this id: list them again",
        ));
    }
    Ok(Reply::Frame(frame::ok(request_id)))
}

pub(crate) async fn answers<S: Directory + ConsentRequests>(
    session: &mut Session<S>,
    request_id: u64,
) -> Result<Reply, RelayError> {
    let business = device(session)?.account;
    let answers = session
        .relay
        .store
        .consent_answers(business)
        .await?
        .into_iter()
        .map(|r| wire::ConsentAnswer {
            reference: r.reference.to_vec(),
            customer_account: r.customer.to_vec(),
            answered_at_ms: r.at_ms,
        })
        .collect();
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::ConsentAnswers(wire::ConsentAnswers { answers }),
    )))
}
