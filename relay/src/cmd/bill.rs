//! `GetBill` and `GetStanding`: a business reads its own bill (the lines of
//! its hash chain, the head signed now by the operator key, the signed rate
//! card) and its standing. Only the authenticated business's own chain is
//! ever read (the request names no business); a customer is refused with
//! `ACCOUNT_KIND`.

use comptoir_protocol::AccountId;
use comptoir_protocol::bill::{BILLED_CATEGORIES, BillHead};
use comptoir_protocol::proto::wire::{self, server_frame::Body};

use super::device;
use crate::billing;
use crate::error::RelayError;
use crate::frame;
use crate::policy::kind_of;
use crate::session::{Reply, Session};
use crate::storage::Backend;
use crate::storage::mail_log::DAY_MS;

/// Lines per `Bill` frame when the request asks for none (or more): each
/// line is about 330 bytes, so a page stays well inside a frame.
pub(crate) const BILL_PAGE_LINES: usize = 400;

/// What a `Standing` says of rating and tier until the relay rates
/// businesses (issue 14 item 5).
pub(crate) const NOT_YET_RATED: &str = "not yet rated";

async fn business_of<S: Backend>(session: &Session<S>) -> Result<AccountId, RelayError> {
    let account = device(session)?.account;
    let record = session
        .relay
        .store
        .account_record(account)
        .await?
        .unwrap_or_default();
    if kind_of(&record) != wire::AccountKind::Business {
        return Err(RelayError::AccountKind(
            "only a business account has a bill".into(),
        ));
    }
    Ok(account)
}

pub(crate) async fn bill<S: Backend>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::GetBill,
) -> Result<Reply, RelayError> {
    let business = business_of(session).await?;
    let relay = &session.relay;
    let chain = billing::chain_of(&relay.store, &relay.rate_card, business).await?;
    let from = request.from_index.max(1);
    let limit = match request.limit as usize {
        0 => BILL_PAGE_LINES,
        n => n.min(BILL_PAGE_LINES),
    };
    let lines = chain
        .lines
        .iter()
        .skip(usize::try_from(from - 1).unwrap_or(usize::MAX))
        .take(limit)
        .map(|l| l.to_wire())
        .collect();
    let head = BillHead {
        business,
        count: chain.lines.len() as u64,
        head_hash: chain.head_hash,
        signed_at_ms: relay.clock.now_ms(),
    }
    .sign(&relay.operator);
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::Bill(wire::Bill {
            lines,
            head: Some(head),
            rate_card: Some(relay.rate_card.sign(&relay.operator)),
        }),
    )))
}

pub(crate) async fn standing<S: Backend>(
    session: &mut Session<S>,
    request_id: u64,
) -> Result<Reply, RelayError> {
    let business = business_of(session).await?;
    let relay = &session.relay;
    let chain = billing::chain_of(&relay.store, &relay.rate_card, business).await?;
    let totals = billing::totals(&chain.lines);
    let day = u32::try_from(relay.clock.now_ms() / DAY_MS).unwrap_or(u32::MAX);
    let customers_reached_today = relay.store.customers_reached(business, day).await?;
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::Standing(wire::Standing {
            lines: totals.lines,
            total_millionths: totals.total_millionths,
            totals: BILLED_CATEGORIES
                .iter()
                .zip(totals.per_category)
                .map(|(&c, (lines, millionths))| wire::CategoryTotal {
                    category: wire::Category::from(c) as i32,
                    lines,
                    millionths,
                })
                .collect(),
            currency: relay.rate_card.currency.clone(),
            customers_reached_today,
            rating: NOT_YET_RATED.into(),
            tier: String::new(),
        }),
    )))
}
