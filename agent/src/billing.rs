//! The business's bill and standing for its backend: `GET /v1/bill`
//! fetches the bill from the relay and checks every line before
//! answering (the hash chain, the operator's signatures on the head and
//! the rate cards, each customer device's signature, each price against
//! the card in effect at accept: `comptoir_protocol::verify_bill`, what
//! `comptoir business bill verify` runs); `GET /v1/standing` answers with
//! the relay's rating, tier and reach. Both need the `billing:read` scope.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use comptoir_protocol::bill::{BILLED_CATEGORIES, BillLine};
use comptoir_protocol::proto::wire;
use comptoir_protocol::{BillCategory, round_to_hundredths};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::{AppState, ask, authorize};
use crate::api_error::{ApiError, ErrorBody};
use crate::device::Command;
use crate::keys::Scope;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/bill", get(bill))
        .route("/v1/standing", get(standing))
}

/// One category's share.
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryTotal {
    /// `utility`, `authentication`, `marketing` or `status`.
    pub category: &'static str,
    /// Lines of this category.
    pub lines: u64,
    /// Their sum, millionths of the currency unit.
    pub total_millionths: u64,
}

/// One billed message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Line {
    /// Its position in the chain, from 1.
    pub index: u64,
    /// The relay's accept id.
    pub accept_id: u64,
    /// The message id (hex).
    pub message_id: String,
    /// The customer's account id.
    pub customer: String,
    /// Its category.
    pub category: &'static str,
    /// Whether the customer's 24-hour window was open at accept.
    pub inside_window: bool,
    /// The template id (hex; empty for Status).
    pub template_id: String,
    /// The relay's accept time, ms since the Unix epoch.
    pub accepted_at_ms: u64,
    /// The first signed delivery, ms since the Unix epoch.
    pub delivered_at_ms: u64,
    /// The price, millionths of the currency unit.
    pub price_millionths: u64,
}

impl From<&BillLine> for Line {
    fn from(l: &BillLine) -> Self {
        Self {
            index: l.index,
            accept_id: l.accept_id,
            message_id: hex::encode(l.message_id),
            customer: l.customer.to_string(),
            category: l.category.name(),
            inside_window: l.inside_window,
            template_id: l.template_id.clone(),
            accepted_at_ms: l.accepted_at_ms,
            delivered_at_ms: l.delivered_at_ms,
            price_millionths: l.price_millionths,
        }
    }
}

/// The bill, every line checked.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillResponse {
    /// Always true: a bill that does not check is an error (502
    /// `bill_not_verified`), never an answer.
    pub verified: bool,
    /// ISO 4217 code of the currency.
    pub currency: String,
    /// Lines billed.
    pub lines: u64,
    /// Their sum, millionths of the currency unit (exact).
    pub total_millionths: u64,
    /// The amount due: the total rounded once, half up, to hundredths.
    pub total_hundredths: u64,
    /// Per category.
    pub totals: Vec<CategoryTotal>,
    /// The chain's head the operator signed: its line count and hash (hex).
    pub head_count: u64,
    /// The last line's hash (hex).
    pub head_hash: String,
    /// When the relay signed the head, ms since the Unix epoch.
    pub head_signed_at_ms: u64,
    /// Every line, in chain order.
    pub data: Vec<Line>,
}

/// The business's standing on the relay.
#[derive(Debug, Serialize, ToSchema)]
pub struct StandingResponse {
    /// `high`, `medium` or `low` (or empty before any evaluation).
    pub rating: String,
    /// The messaging tier's name.
    pub tier: String,
    /// Distinct customers it may reach by business-initiated
    /// conversations in a rolling 24 hours (0: unlimited).
    pub tier_limit: u64,
    /// Customers reached in the last 24 hours.
    pub customers_reached_24h: u64,
    /// Customers reached in the last 7 days.
    pub customers_reached_7d: u64,
    /// When the next slot frees if the limit is reached, ms since the
    /// Unix epoch (0: none pending).
    pub next_slot_at_ms: u64,
    /// Whether the operator set the tier by hand.
    pub tier_overridden: bool,
    /// Verified reports against the business over 7 days.
    pub verified_reports_7d: u64,
    /// Blocks over 7 days.
    pub blocks_7d: u64,
    /// The relay's count of billed lines so far (unchecked: `GET
    /// /v1/bill` checks them).
    pub lines: u64,
    /// Their sum, millionths of `currency`.
    pub total_millionths: u64,
    /// ISO 4217 code of the currency.
    pub currency: String,
}

impl From<wire::Standing> for StandingResponse {
    fn from(s: wire::Standing) -> Self {
        Self {
            rating: s.rating,
            tier: s.tier,
            tier_limit: s.tier_limit,
            customers_reached_24h: s.customers_reached_24h,
            customers_reached_7d: s.customers_reached_7d,
            next_slot_at_ms: s.next_slot_at_ms,
            tier_overridden: s.tier_overridden,
            verified_reports_7d: s.verified_reports_7d,
            blocks_7d: s.blocks_7d,
            lines: s.lines,
            total_millionths: s.total_millionths,
            currency: s.currency,
        }
    }
}

/// The bill, fetched from the relay and checked line by line.
#[utoipa::path(
    get, path = "/v1/bill", tag = "billing",
    responses(
        (status = 200, description = "Every line checks", body = BillResponse),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks `billing:read`", body = ErrorBody),
        (status = 502, description = "bill_not_verified: a line, a signature or a price does not check (the error names it)", body = ErrorBody),
        (status = 503, description = "The relay cannot be reached", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn bill(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<BillResponse>, ApiError> {
    authorize(&state, &headers, Scope::BillingRead)?;
    let (bill, totals) = ask(&state, |reply| Command::Bill { reply }).await?;
    Ok(Json(BillResponse {
        verified: true,
        currency: bill.rate_card.currency.clone(),
        lines: totals.lines,
        total_millionths: totals.total_millionths,
        total_hundredths: round_to_hundredths(totals.total_millionths),
        totals: BILLED_CATEGORIES
            .iter()
            .zip(totals.per_category)
            .map(|(&c, (lines, total_millionths))| CategoryTotal {
                category: BillCategory::name(c),
                lines,
                total_millionths,
            })
            .collect(),
        head_count: bill.head.count,
        head_hash: hex::encode(&bill.head.head_hash),
        head_signed_at_ms: bill.head.signed_at_ms,
        data: bill.lines.iter().map(Line::from).collect(),
    }))
}

/// The business's rating, tier and reach, as the relay counts them.
#[utoipa::path(
    get, path = "/v1/standing", tag = "billing",
    responses(
        (status = 200, body = StandingResponse),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks `billing:read`", body = ErrorBody),
        (status = 503, description = "The relay cannot be reached", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn standing(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<StandingResponse>, ApiError> {
    authorize(&state, &headers, Scope::BillingRead)?;
    let standing = ask(&state, |reply| Command::Standing { reply }).await?;
    Ok(Json(standing.into()))
}
