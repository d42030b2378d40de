//! `GetBill` and `GetStanding`: a business reads its own bill (the lines of
//! its hash chain, the head signed now by the operator key, the heads
//! signed on the relay's schedule at the page's counts, the signed rate
//! cards, and the earlier signed device lists naming the page's devices
//! removed since they acked) and its standing. Only the authenticated business's own chain is
//! ever read (the request names no business); a customer is refused with
//! `ACCOUNT_KIND`. The standing carries the quality rating and messaging
//! tier ([`crate::quality`]); asking for it evaluates the tier if due.

use comptoir_protocol::AccountId;
use comptoir_protocol::bill::{BILLED_CATEGORIES, BillHead, BillLine};
use comptoir_protocol::proto::wire::{self, server_frame::Body};

use super::device;
use crate::billing;
use crate::error::RelayError;
use crate::frame;
use crate::policy::kind_of;
use crate::policy::quality::REACH_WINDOW_MS;
use crate::session::{Reply, Session};
use crate::storage::Backend;
use crate::storage::mail_log::DAY_MS;

/// Lines per `Bill` frame when the request asks for none (or more): each
/// line is about 330 bytes, so a page stays well inside a frame.
pub(crate) const BILL_PAGE_LINES: usize = 400;

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
    let chain = billing::chain_of(&relay.store, &relay.rate_cards, business).await?;
    let from = request.from_index.max(1);
    let limit = match request.limit as usize {
        0 => BILL_PAGE_LINES,
        n => n.min(BILL_PAGE_LINES),
    };
    let page: Vec<&BillLine> = chain
        .lines
        .iter()
        .skip(usize::try_from(from - 1).unwrap_or(usize::MAX))
        .take(limit)
        .collect();
    let device_lists = billing::lists_of_removed_devices(&relay.store, &page).await?;
    let lines: Vec<wire::BillLine> = page.iter().map(|l| l.to_wire()).collect();
    // The periodic heads at the counts of this page's lines.
    let periodic_heads = relay
        .store
        .periodic_heads(business, from..=from.saturating_add(lines.len() as u64) - 1)
        .await?
        .iter()
        .map(|h| h.to_wire())
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
            earlier_rate_cards: relay
                .rate_cards
                .iter()
                .filter(|card| card.effective_from_ms < relay.rate_card.effective_from_ms)
                .map(|card| card.sign(&relay.operator))
                .collect(),
            periodic_heads,
            device_lists,
        }),
    )))
}

pub(crate) async fn standing<S: Backend>(
    session: &mut Session<S>,
    request_id: u64,
) -> Result<Reply, RelayError> {
    let business = business_of(session).await?;
    let relay = &session.relay;
    let chain = billing::chain_of(&relay.store, &relay.rate_cards, business).await?;
    let totals = billing::totals(&chain.lines);
    let now_ms = relay.clock.now_ms();
    let day = u32::try_from(now_ms / DAY_MS).unwrap_or(u32::MAX);
    let customers_reached_today = relay.store.customers_reached(business, day).await?;
    let quality = crate::quality::standing(relay, business, now_ms).await?;
    let limits = relay.config.tiers.tier_limits();
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
            rating: quality.rating.name().into(),
            tier: quality.tier_name(&limits),
            tier_limit: quality.limit.unwrap_or(0),
            customers_reached_24h: quality.window.used,
            customers_reached_7d: quality.signals.customers_reached,
            next_slot_at_ms: quality
                .window
                .oldest_ms
                .map_or(0, |at| at.saturating_add(REACH_WINDOW_MS)),
            tier_overridden: quality.state.overridden.is_some(),
            next_evaluation_ms: quality.state.next_evaluation_ms(),
            verified_reports_7d: quality.signals.verified_reports,
            blocks_7d: quality.signals.block_reasons.len() as u64,
        }),
    )))
}
