//! `SetConsent` / `GetConsents`: a customer's consent for one business,
//! signed by the authenticated device, kept per (customer, business) with
//! the highest counter; and the list of what is kept. The accept checks
//! the kept consent in the same step as it stores a template
//! (`policy`, rule 7; docs/PROTOCOL.md, "Consent").

use comptoir_protocol::proto::wire::{self, server_frame::Body};
use comptoir_protocol::{
    AccountId, ConsentCategories, ConsentFields, IdentityKey, MAX_CONSENT_LIFETIME_MS,
    verify_consent,
};

use super::{account_field, device};
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::policy::kind_of;
use crate::session::{Reply, Session};
use crate::storage::{CONSENT_SIGNATURE_LEN, ConsentRecord, ConsentSet, Directory, Kind, Mailbox};

/// How far ahead of the relay's clock a token may say it was issued (the
/// device's clock may run a little fast).
const MAX_ISSUE_SKEW_MS: u64 = 5 * 60 * 1000;

pub(crate) async fn set<S: Directory + Mailbox>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::SetConsent,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let me = device(session)?;
    let (customer, device_id) = (me.account, me.device);
    let business = account_field("business_account", &request.business_account)?;
    let categories = ConsentCategories::from_bits(request.categories).ok_or_else(|| {
        invalid("categories is a bit set of 1 (utility), 2 (authentication) and 4 (marketing)")
    })?;
    let signature: [u8; CONSENT_SIGNATURE_LEN] = request
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| RelayError::BadSignature("a consent signature is 64 bytes".into()))?;
    if request.counter == 0 {
        return Err(invalid("a consent's counter starts at 1"));
    }
    let now = relay.clock.now_ms();
    if request.issued_at_ms > now.saturating_add(MAX_ISSUE_SKEW_MS) {
        return Err(invalid(
            "this consent says it was issued in the future: check the device's clock",
        ));
    }
    if !categories.is_empty() {
        if request.expires_at_ms <= now || request.expires_at_ms <= request.issued_at_ms {
            return Err(invalid("this consent has expired already: issue a new one"));
        }
        if request.expires_at_ms - request.issued_at_ms > MAX_CONSENT_LIFETIME_MS {
            return Err(invalid(
                "a consent lasts at most two years (730 days) after it is issued",
            ));
        }
    }
    let customer_record = relay
        .store
        .account_record(customer)
        .await?
        .unwrap_or_default();
    if customer_record.kind != Kind::Customer {
        return Err(RelayError::AccountKind(
            "only a customer account grants or revokes consent".into(),
        ));
    }
    let business_record = relay
        .store
        .account_record(business)
        .await?
        .ok_or(RelayError::UnknownAccount)?;
    if kind_of(&business_record) != wire::AccountKind::Business {
        return Err(RelayError::AccountKind(
            "consent is given to a business account; this account is a customer".into(),
        ));
    }
    let key = device_key(&relay.store, customer, device_id).await?;
    let fields = ConsentFields {
        customer,
        business,
        device: device_id,
        categories,
        issued_at_ms: request.issued_at_ms,
        expires_at_ms: request.expires_at_ms,
        counter: request.counter,
    };
    verify_consent(&key, &fields, &signature).map_err(|_| {
        RelayError::BadSignature(
            "the consent's signature does not verify against this device's identity key".into(),
        )
    })?;
    let record = ConsentRecord {
        customer,
        business,
        device: device_id,
        categories,
        issued_at_ms: request.issued_at_ms,
        expires_at_ms: request.expires_at_ms,
        counter: request.counter,
        signature,
        revoked_by_block: false,
    };
    match relay.store.set_consent(record).await? {
        ConsentSet::Kept => {
            tracing::info!(%customer, %business, counter = request.counter, "consent kept");
            Ok(Reply::Frame(frame::ok(request_id)))
        }
        ConsentSet::Stale { kept } => Err(RelayError::StaleConsent {
            got: request.counter,
            kept,
        }),
    }
}

pub(crate) async fn list<S: Mailbox>(
    session: &mut Session<S>,
    request_id: u64,
) -> Result<Reply, RelayError> {
    let customer = device(session)?.account;
    let consents = session
        .relay
        .store
        .consents_of(customer)
        .await?
        .into_iter()
        .map(|c| wire::Consent {
            business_account: c.business.to_vec(),
            device_id: c.device,
            categories: u32::from(c.categories.bits()),
            issued_at_ms: c.issued_at_ms,
            expires_at_ms: c.expires_at_ms,
            counter: c.counter,
            signature: c.signature.to_vec(),
            revoked_by_block: c.revoked_by_block,
        })
        .collect();
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::Consents(wire::Consents { consents }),
    )))
}

/// The identity key of `account`'s `device` in its current signed list.
async fn device_key<S: Directory>(
    store: &S,
    account: AccountId,
    device: u32,
) -> Result<IdentityKey, RelayError> {
    let list = store
        .device_list(account)
        .await?
        .ok_or(RelayError::UnknownDevice)?;
    list.list
        .devices
        .iter()
        .find(|(id, _)| *id == device)
        .map(|(_, key)| *key)
        .ok_or(RelayError::UnknownDevice)
}
