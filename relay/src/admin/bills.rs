//! Exporting bills: a business's billed lines delivered in a time range,
//! as CSV or JSON, with totals per category that are the sums of the
//! lines (`relay admin bills export`). The lines are the business's hash
//! chain (see [`crate::billing`]), the same ones the business fetches; the
//! whole chain's head is signed by the operator key for each export, and
//! the heads signed on the relay's schedule at the exported lines' counts
//! come with it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use comptoir_protocol::{AccountId, BillHead};
use serde::Deserialize;

use super::{AdminError, AdminState};
use crate::billing;
use crate::storage::Backend;

/// The query of `GET /v1/bills/{account}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// First delivery time included, ms since the epoch (default 0).
    #[serde(default)]
    pub from_ms: Option<u64>,
    /// First delivery time excluded, ms since the epoch (default: no end).
    #[serde(default)]
    pub to_ms: Option<u64>,
    /// `json` (default) or `csv`.
    #[serde(default)]
    pub format: Option<String>,
}

/// `GET /v1/bills/{account}?from_ms=…&to_ms=…&format=csv|json`.
pub async fn export<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
    Path(account): Path<String>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, AdminError> {
    let business = AccountId::from_hex(&account)
        .map_err(|_| AdminError::BadRequest("an account id is 32 hex digits".into()))?;
    let from_ms = query.from_ms.unwrap_or(0);
    let to_ms = query.to_ms.unwrap_or(u64::MAX);
    if from_ms > to_ms {
        return Err(AdminError::BadRequest(
            "from_ms is after to_ms: give the start of the range first".into(),
        ));
    }
    let relay = &state.relay;
    let chain = billing::chain_of(&relay.store, &relay.rate_cards, business).await?;
    let lines = billing::in_range(&chain, from_ms, to_ms);
    let currency = &relay.rate_card.currency;
    // The whole chain's head, signed for this export.
    let head = BillHead {
        business,
        count: chain.lines.len() as u64,
        head_hash: chain.head_hash,
        signed_at_ms: relay.clock.now_ms(),
    }
    .sign(&state.operator);
    // The periodic heads at the counts of the exported lines.
    let periodic: Vec<_> = match (lines.first(), lines.last()) {
        (Some(first), Some(last)) => relay
            .store
            .periodic_heads(business, first.index..=last.index)
            .await?
            .iter()
            .filter(|h| lines.iter().any(|l| l.index == h.head.count))
            .map(|h| h.to_wire())
            .collect(),
        _ => Vec::new(),
    };
    match query.format.as_deref().unwrap_or("json") {
        "json" => Ok(axum::Json(billing::export_json(
            business,
            currency,
            (from_ms, to_ms),
            &lines,
            &head,
            &periodic,
        ))
        .into_response()),
        "csv" => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            billing::export_csv(currency, &lines, &head, &periodic),
        )
            .into_response()),
        other => Err(AdminError::BadRequest(format!(
            "format {other:?} is not csv or json"
        ))),
    }
}
