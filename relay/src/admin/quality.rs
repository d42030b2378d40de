//! A business's quality rating and messaging tier (issue 14 item 5): what
//! the operator sees (`GET /v1/businesses/{account}/quality`, also part of
//! `GET /v1/businesses/{account}`) and its override of the tier (`POST
//! /v1/businesses/{account}/tier`). Looking evaluates the tier if that
//! is due, like the business's own standing request.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use comptoir_protocol::AccountId;
use serde::{Deserialize, Serialize};

use super::{AdminError, AdminState};
use crate::policy::quality::{REACH_WINDOW_MS, parse_tier};
use crate::quality::Standing;
use crate::storage::{Backend, Kind};

/// A business's rating, tier and usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityBody {
    /// The account id, 32 hex digits.
    pub account: String,
    /// The rating now: `high`, `medium` or `low`.
    pub rating: String,
    /// The tier in force, from 1 (5 is unlimited).
    pub tier: u8,
    /// The tier in force in words, e.g. `1 (250 customers a day)`.
    pub tier_name: String,
    /// Its limit of distinct customers in 24 hours (absent: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Whether the operator fixed the tier (`tier` is the override).
    pub overridden: bool,
    /// The tier evaluation arrived at (from 1), override or not.
    pub evaluated_tier: u8,
    /// When the tier was last evaluated (0: never).
    pub evaluated_at_ms: u64,
    /// When it is next evaluated, at the business's next
    /// business-initiated send or standing request from then on.
    pub next_evaluation_ms: u64,
    /// Customers counted towards the limit in the last 24 hours.
    pub customers_reached_24h: u64,
    /// When the oldest of them leaves the 24 hours (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_slot_at_ms: Option<u64>,
    /// Distinct customers reached in the last 7 days.
    pub customers_reached_7d: u64,
    /// Verified reports against it in the last 7 days.
    pub verified_reports_7d: u64,
    /// Customers' blocks in the last 7 days, by reason
    /// (`no_longer_needed`, `did_not_sign_up`, `spam`, `offensive`, `none`).
    pub blocks_7d: BTreeMap<String, u64>,
    /// The weighted sum of those reports and blocks
    /// (docs/OPERATIONS.md, "Quality rating and messaging tiers").
    pub penalty: u64,
}

/// The body of `POST …/tier`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierRequest {
    /// `auto` (lift the override), a tier number `1` to `5`, or
    /// `unlimited`.
    pub tier: String,
}

/// [`QualityBody`] of a [`Standing`].
pub(crate) fn body(
    account: AccountId,
    standing: &Standing,
    limits: &crate::policy::quality::TierLimits,
) -> QualityBody {
    let mut blocks_7d = BTreeMap::new();
    for &reason in &standing.signals.block_reasons {
        *blocks_7d
            .entry(super::businesses::reason_name(reason).to_owned())
            .or_insert(0) += 1;
    }
    let state = standing.state;
    QualityBody {
        account: account.to_string(),
        rating: standing.rating.name().to_owned(),
        tier: state.effective() + 1,
        tier_name: standing.tier_name(limits),
        limit: standing.limit,
        overridden: state.overridden.is_some(),
        evaluated_tier: state.tier + 1,
        evaluated_at_ms: state.evaluated_at_ms,
        next_evaluation_ms: state.next_evaluation_ms(),
        customers_reached_24h: standing.window.used,
        next_slot_at_ms: standing
            .window
            .oldest_ms
            .map(|at| at.saturating_add(REACH_WINDOW_MS)),
        customers_reached_7d: standing.signals.customers_reached,
        verified_reports_7d: standing.signals.verified_reports,
        blocks_7d,
        penalty: standing.signals.penalty(),
    }
}

/// A business account named by `text`: 32 hex digits of an account whose
/// kind is business.
async fn business_account<S: Backend>(
    state: &AdminState<S>,
    text: &str,
) -> Result<AccountId, AdminError> {
    let account = AccountId::from_hex(text)
        .map_err(|_| AdminError::BadRequest("an account id is 32 hex digits".into()))?;
    match state.relay.store.account_record(account).await? {
        Some(record) if record.kind == Kind::Business => Ok(account),
        _ => Err(AdminError::NotABusiness),
    }
}

/// The quality of `account` now (evaluating its tier if due).
pub(crate) async fn quality_of<S: Backend>(
    state: &AdminState<S>,
    account: AccountId,
) -> Result<QualityBody, AdminError> {
    let relay = &state.relay;
    let standing = crate::quality::standing(relay, account, relay.clock.now_ms()).await?;
    Ok(body(account, &standing, &relay.config.tiers.tier_limits()))
}

/// `GET /v1/businesses/{account}/quality`.
pub(super) async fn show<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
    Path(account): Path<String>,
) -> Result<Json<QualityBody>, AdminError> {
    let account = business_account(&state, &account).await?;
    Ok(Json(quality_of(&state, account).await?))
}

/// `POST /v1/businesses/{account}/tier`: set or lift the override.
pub(super) async fn set_tier<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
    Path(account): Path<String>,
    request: Bytes,
) -> Result<Json<QualityBody>, AdminError> {
    let request: TierRequest = serde_json::from_slice(&request).map_err(|_| {
        AdminError::BadRequest(
            "send a JSON body {\"tier\": \"auto\"}, or a tier \"1\" to \"5\" or \"unlimited\""
                .into(),
        )
    })?;
    let tier = parse_tier(&request.tier).map_err(AdminError::BadRequest)?;
    let account = business_account(&state, &account).await?;
    crate::quality::set_override(&state.relay, account, tier).await?;
    Ok(Json(quality_of(&state, account).await?))
}
