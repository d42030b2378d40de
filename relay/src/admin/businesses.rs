//! Verifying businesses: the operator reads a business's published
//! profile and certifies it (a certificate signed by the operator key,
//! binding the account, its account key, the display name and the
//! profile's digest, with an expiry), or revokes the certificate. A
//! certified name reserves every name confusable with it.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use comptoir_protocol::AccountId;
use comptoir_protocol::business::{
    BusinessCertificate, BusinessProfile, CertificateRevocation, sign_certificate, sign_revocation,
    verify_profile,
};
use comptoir_protocol::confusable::is_reserved_by;
use serde::{Deserialize, Serialize};

use super::{AdminError, AdminState};
use crate::storage::{Backend, StoredBusiness};

/// Days a certificate lasts unless the request says otherwise.
pub const DEFAULT_CERTIFICATE_DAYS: u32 = 365;
/// The longest a certificate may last.
pub const MAX_CERTIFICATE_DAYS: u32 = 825;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// A certificate as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateBody {
    /// The certified display name.
    pub display_name: String,
    /// Valid from (the relay's clock).
    pub issued_at_ms: u64,
    /// Valid until (excluded).
    pub expires_at_ms: u64,
    /// The account key it binds, 64 hex digits.
    pub account_key: String,
    /// The operator's signature, 128 hex digits.
    pub signature: String,
}

/// `GET /v1/businesses/{account}` and the answer of every decision.
#[derive(Debug, Serialize, Deserialize)]
pub struct BusinessBody {
    /// The account id, 32 hex digits.
    pub account: String,
    /// The published profile.
    pub profile: BusinessProfile,
    /// Whether the business is shown as verified now (certified, not
    /// revoked, not expired, and the profile is the certified one).
    pub verified: bool,
    /// The newest certificate, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateBody>,
    /// Whether that certificate was revoked.
    pub revoked: bool,
    /// How many customers blocked the business, by reason
    /// (`no_longer_needed`, `did_not_sign_up`, `spam`, `offensive`,
    /// `none`), for its quality rating.
    #[serde(default)]
    pub blocks: std::collections::BTreeMap<String, u64>,
    /// Its quality rating, messaging tier and usage (absent for an
    /// account that is not a business account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<super::quality::QualityBody>,
}

/// The body of `POST …/verify` (optional).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// How long the certificate lasts, in days (1 to 825; default 365).
    #[serde(default)]
    pub days: Option<u32>,
}

fn parse_account(text: &str) -> Result<AccountId, AdminError> {
    AccountId::from_hex(text)
        .map_err(|_| AdminError::BadRequest("an account id is 32 hex digits".into()))
}

/// A block reason as the API names it.
pub fn reason_name(reason: i32) -> &'static str {
    use comptoir_protocol::proto::wire::BlockReason;
    match BlockReason::try_from(reason) {
        Ok(BlockReason::NoLongerNeeded) => "no_longer_needed",
        Ok(BlockReason::DidNotSignUp) => "did_not_sign_up",
        Ok(BlockReason::Spam) => "spam",
        Ok(BlockReason::Offensive) => "offensive",
        Ok(BlockReason::Unspecified) | Err(_) => "none",
    }
}

fn body(account: AccountId, stored: &StoredBusiness, now_ms: u64) -> BusinessBody {
    let certificate = stored.certificate.as_ref();
    BusinessBody {
        account: account.to_string(),
        profile: stored.profile.clone(),
        verified: stored.verified_name(now_ms).is_some()
            && certificate.is_some_and(|(c, _)| {
                c.profile_digest == stored.profile.digest()
                    && c.display_name == stored.profile.display_name
            }),
        certificate: certificate.map(|(c, s)| CertificateBody {
            display_name: c.display_name.clone(),
            issued_at_ms: c.issued_at_ms,
            expires_at_ms: c.expires_at_ms,
            account_key: hex::encode(c.account_key.to_bytes()),
            signature: hex::encode(s),
        }),
        revoked: match (&stored.certificate, &stored.revocation) {
            (Some((c, _)), Some((r, _))) => r.revokes(c),
            _ => false,
        },
        blocks: std::collections::BTreeMap::new(),
        quality: None,
    }
}

/// [`body`] with the block counts.
async fn full_body<S: Backend>(
    state: &AdminState<S>,
    account: AccountId,
    stored: &StoredBusiness,
) -> Result<BusinessBody, AdminError> {
    let mut shown = body(account, stored, state.relay.clock.now_ms());
    for (reason, count) in state.relay.store.block_reasons(account).await? {
        *shown
            .blocks
            .entry(reason_name(reason).to_owned())
            .or_insert(0) += count;
    }
    let is_business = state
        .relay
        .store
        .account_record(account)
        .await?
        .is_some_and(|r| r.kind == crate::storage::Kind::Business);
    if is_business {
        shown.quality = Some(super::quality::quality_of(state, account).await?);
    }
    Ok(shown)
}

async fn load<S: Backend>(
    state: &AdminState<S>,
    account: &str,
) -> Result<(AccountId, StoredBusiness), AdminError> {
    let account = parse_account(account)?;
    let stored = state
        .relay
        .store
        .business(account)
        .await?
        .ok_or(AdminError::UnknownBusiness)?;
    Ok((account, stored))
}

async fn store<S: Backend>(
    state: &AdminState<S>,
    account: AccountId,
    old: &StoredBusiness,
    new: StoredBusiness,
) -> Result<Json<BusinessBody>, AdminError> {
    if !state
        .relay
        .store
        .replace_business(account, Some(old), &new)
        .await?
    {
        return Err(AdminError::Conflict(
            "the business changed its profile meanwhile; show it again and retry".into(),
        ));
    }
    Ok(Json(full_body(state, account, &new).await?))
}

/// `GET /v1/businesses/{account}`.
pub(super) async fn show<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
    Path(account): Path<String>,
) -> Result<Json<BusinessBody>, AdminError> {
    let (account, stored) = load(&state, &account).await?;
    Ok(Json(full_body(&state, account, &stored).await?))
}

/// `POST /v1/businesses/{account}/verify`: certify the published profile.
pub(super) async fn verify<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
    Path(account): Path<String>,
    request: Bytes,
) -> Result<Json<BusinessBody>, AdminError> {
    let request: VerifyRequest = if request.is_empty() {
        VerifyRequest::default()
    } else {
        serde_json::from_slice(&request).map_err(|_| {
            AdminError::BadRequest("send no body, or a JSON body {\"days\": 1 to 825}".into())
        })?
    };
    let days = request.days.unwrap_or(DEFAULT_CERTIFICATE_DAYS);
    if days == 0 || days > MAX_CERTIFICATE_DAYS {
        return Err(AdminError::BadRequest(format!(
            "a certificate lasts 1 to {MAX_CERTIFICATE_DAYS} days"
        )));
    }
    let (account, stored) = load(&state, &account).await?;
    // The key the profile is checked with now: the account's current one.
    let list = state
        .relay
        .store
        .device_list(account)
        .await?
        .ok_or(AdminError::UnknownBusiness)?;
    let account_key = list.list.account_key;
    if verify_profile(&account_key, &stored.profile, &stored.profile_signature).is_err() {
        return Err(AdminError::Conflict(
            "the profile's signature does not verify with the account's current key; ask the \
             business to publish its profile again"
                .into(),
        ));
    }
    let now = state.relay.clock.now_ms();
    let name = &stored.profile.display_name;
    for (other, business) in state.relay.store.businesses().await? {
        if other == account {
            continue;
        }
        if let Some(verified) = business.verified_name(now)
            && (is_reserved_by(name, verified) || is_reserved_by(verified, name))
        {
            return Err(AdminError::Conflict(format!(
                "{name:?} can be confused with the verified business {verified:?} (account \
                 {other}); it cannot be verified under this name"
            )));
        }
    }
    let certificate = BusinessCertificate::for_profile(
        &stored.profile,
        account_key,
        now,
        now.saturating_add(u64::from(days) * DAY_MS),
    )
    .map_err(|e| AdminError::Conflict(format!("the profile cannot be certified: {e}")))?;
    let signature = sign_certificate(&state.operator, &certificate);
    tracing::info!(%account, name = %certificate.display_name, days, "business verified");
    let new = StoredBusiness {
        certificate: Some((certificate, signature)),
        revocation: None,
        ..stored.clone()
    };
    store(&state, account, &stored, new).await
}

/// `POST /v1/businesses/{account}/revoke`: revoke the certificate.
pub(super) async fn revoke<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
    Path(account): Path<String>,
) -> Result<Json<BusinessBody>, AdminError> {
    let (account, stored) = load(&state, &account).await?;
    let Some((certificate, _)) = &stored.certificate else {
        return Err(AdminError::Conflict(
            "this business was never verified".into(),
        ));
    };
    if stored
        .revocation
        .as_ref()
        .is_some_and(|(r, _)| r.revokes(certificate))
    {
        return Err(AdminError::Conflict(
            "the certificate is revoked already".into(),
        ));
    }
    let revocation = CertificateRevocation::of(certificate, state.relay.clock.now_ms());
    let signature = sign_revocation(&state.operator, &revocation);
    tracing::info!(%account, "business verification revoked");
    let new = StoredBusiness {
        revocation: Some((revocation, signature)),
        ..stored.clone()
    };
    store(&state, account, &stored, new).await
}
