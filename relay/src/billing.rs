//! Bills from the ledger: each business's billed lines as the hash chain
//! the protocol crate defines (`comptoir_protocol::bill`), their totals,
//! the heads the relay signs on its schedule (the `[billing]` table,
//! [`sign_heads_periodically`]), and the operator's export of them (CSV
//! or JSON). Shared by the `GetBill` / `GetStanding` requests and the
//! admin API, so the business and the operator read the same lines.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use comptoir_protocol::bill::{BILLED_CATEGORIES, BillLine, chain};
use comptoir_protocol::proto::wire;
use comptoir_protocol::{
    AccountId, BillCategory, BillHead, BillTotals, OperatorKeyPair, RateCard, round_to_hundredths,
};
use serde::Deserialize;

use crate::clock::ClockShifts;
use crate::state::Relay;
use crate::storage::{
    Backend, BillHeads, BilledCategory, DeliveredEntry, Directory, Ledger, LedgerEntry,
    PeriodicHead, StorageResult, StoredDeviceList, SupersededLists,
};

/// Default time between two passes that sign grown chains' heads: one
/// hour (a business holds the operator's word on its chain at most an
/// hour old, for one signature per business per hour at most).
pub const DEFAULT_HEAD_PERIOD_MS: u64 = 3_600_000;

/// Longest the signing task sleeps before it reads the clock again, so a
/// wall clock stepped forward is noticed within a minute.
const MAX_NAP_MS: u64 = 60_000;

/// How long the signing task waits to try again after the store failed.
const RETRY_MS: u64 = 10_000;

/// The `[billing]` table: how often the relay signs bill heads on its own.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// Every `head_period_ms` by the relay's clock, the relay signs with
    /// the operator key the head of each business's chain that grew since
    /// its last periodic head, and keeps it (docs/OPERATIONS.md,
    /// "Periodic bill heads"). 0: never (heads are then signed only when
    /// a bill is fetched or exported).
    pub head_period_ms: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            head_period_ms: DEFAULT_HEAD_PERIOD_MS,
        }
    }
}

/// A business's whole chain and its head hash.
#[derive(Clone, Debug)]
pub struct Chain {
    /// Lines 1 to n, chained.
    pub lines: Vec<BillLine>,
    /// The last line's hash (the genesis hash for none).
    pub head_hash: [u8; 32],
}

fn bill_category(category: BilledCategory) -> BillCategory {
    match category {
        BilledCategory::Utility => BillCategory::Utility,
        BilledCategory::Authentication => BillCategory::Authentication,
        BilledCategory::Marketing => BillCategory::Marketing,
        BilledCategory::Status => BillCategory::Status,
    }
}

/// The rate cards the relay prices and bills with, oldest first: those
/// the store recorded, and `configured` (the configuration's card) after
/// them, in effect from `now_ms`, when its prices differ from the last
/// recorded card's (recorded durably before the relay accepts anything).
/// The first card a relay records is in effect from 0: it is the one that
/// priced every line before cards were recorded. Refused: a currency
/// other than the recorded cards' (a bill is in one currency).
pub async fn rate_card_history<S: Ledger>(
    store: &S,
    mut configured: RateCard,
    now_ms: u64,
) -> Result<Vec<RateCard>, RateCardChangeError> {
    let mut cards = store.rate_cards().await?;
    let Some(last) = cards.last() else {
        configured.effective_from_ms = 0;
        store.record_rate_card(&configured).await?;
        return Ok(vec![configured]);
    };
    if last.same_prices(&configured) {
        return Ok(cards);
    }
    if last.currency != configured.currency {
        return Err(RateCardChangeError::Currency {
            recorded: last.currency.clone(),
            configured: configured.currency,
        });
    }
    // Later than the last card even if the clock stepped back.
    configured.effective_from_ms = now_ms.max(last.effective_from_ms + 1);
    store.record_rate_card(&configured).await?;
    cards.push(configured);
    Ok(cards)
}

/// Why the configured rate card cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum RateCardChangeError {
    /// Its currency is not the one the relay has billed in.
    #[error(
        "the currency is {configured} but this relay's bills are in {recorded}: a relay bills in one currency"
    )]
    Currency {
        /// The recorded cards' currency.
        recorded: String,
        /// The configuration's.
        configured: String,
    },
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// One ledger entry and its first signed delivery as a bill line (not yet
/// chained). An entry written before prices were fixed at accept is
/// priced as outside the window by the card of `cards` in effect at its
/// accept.
pub fn line_of(entry: &LedgerEntry, delivered: &DeliveredEntry, cards: &[RateCard]) -> BillLine {
    let category = bill_category(entry.category);
    let (price_millionths, inside_window) = match entry.priced {
        Some(priced) => (priced.millionths, priced.inside_window),
        None => (
            in_effect_at(cards, entry.accepted_at_ms).map_or(0, |card| card.price(category, false)),
            false,
        ),
    };
    BillLine {
        index: 0,
        previous_hash: comptoir_protocol::GENESIS_HASH,
        accept_id: entry.accept_id,
        message_id: entry.message_id,
        business: entry.business,
        customer: entry.customer,
        category,
        inside_window,
        template_id: entry.template_id.clone(),
        accepted_at_ms: entry.accepted_at_ms,
        delivered_at_ms: delivered.delivered_at_ms,
        price_millionths,
        customer_device: delivered.customer_device,
        franking_commitment: entry.franking_tag.clone(),
        device_signed_at_ms: delivered.signed_at_ms,
        device_signature: delivered.signature,
    }
}

/// The card of `cards` (oldest first) in effect at `at_ms`.
fn in_effect_at(cards: &[RateCard], at_ms: u64) -> Option<&RateCard> {
    cards
        .iter()
        .rev()
        .find(|card| card.effective_from_ms <= at_ms)
}

/// `business`'s chain, read from the ledger (`cards`: the rate cards,
/// oldest first).
pub async fn chain_of<S: Ledger>(
    store: &S,
    cards: &[RateCard],
    business: AccountId,
) -> StorageResult<Chain> {
    let entries = store.bill(business).await?;
    let (lines, head_hash) = chain(entries.iter().map(|(e, d)| line_of(e, d, cards)));
    Ok(Chain { lines, head_hash })
}

/// One pass of periodic signing at `now_ms`: for each business whose
/// chain grew since its last periodic head (or has lines and no head
/// yet), sign its head now with `operator`, and keep the heads and the
/// pass's time in one durable step. Returns the heads signed.
pub async fn sign_periodic_heads<S: Ledger + BillHeads>(
    store: &S,
    cards: &[RateCard],
    operator: &OperatorKeyPair,
    now_ms: u64,
) -> StorageResult<Vec<PeriodicHead>> {
    let mut grown = std::collections::HashMap::new();
    for (business, length) in store.chain_lengths().await? {
        let last = store.last_periodic_count(business).await?;
        if length > 0 && last.is_none_or(|count| count < length) {
            grown.insert(business, last);
        }
    }
    let businesses = grown.keys().copied().collect();
    let mut heads = Vec::new();
    for (business, entries) in store.bills_of(&businesses).await? {
        let last = grown.get(&business).copied().flatten();
        let (lines, head_hash) = chain(entries.iter().map(|(e, d)| line_of(e, d, cards)));
        let count = lines.len() as u64;
        if count == 0 || last.is_some_and(|signed| signed >= count) {
            continue;
        }
        let head = BillHead {
            business,
            count,
            head_hash,
            signed_at_ms: now_ms,
        };
        let signature = operator.sign(&head.payload());
        heads.push(PeriodicHead { head, signature });
    }
    heads.sort_by_key(|h| h.head.business);
    store.record_periodic_heads(&heads, now_ms).await?;
    Ok(heads)
}

/// When the last signing pass ran; at a relay's first start, `now_ms`,
/// recorded (so the first pass comes one period after it, even across
/// restarts).
pub async fn last_signing_pass<S: BillHeads>(store: &S, now_ms: u64) -> StorageResult<u64> {
    match store.heads_swept_at().await? {
        Some(at) => Ok(at),
        None => {
            store.record_periodic_heads(&[], now_ms).await?;
            Ok(now_ms)
        }
    }
}

/// The relay's signing task: a pass of [`sign_periodic_heads`] each time
/// the relay's clock reaches `head_period_ms` after the last one
/// (`last_pass_ms`, from [`last_signing_pass`]). It sleeps until then (at
/// most [`MAX_NAP_MS`] at a time), or until a test shifts the clock
/// (`shifts`). Returns at once when the period is 0, or when the relay
/// appends nothing to the ledger (a benchmark's, see
/// [`crate::Config::appends_ledger`]).
pub(crate) async fn sign_heads_periodically<S: Backend>(
    relay: Arc<Relay<S>>,
    mut last_pass_ms: u64,
    mut shifts: ClockShifts,
) {
    let period = relay.config.billing.head_period_ms;
    if period == 0 || !relay.config.appends_ledger() {
        return;
    }
    loop {
        let now = relay.clock.now_ms();
        let due = last_pass_ms.saturating_add(period);
        let nap = if now >= due {
            match sign_periodic_heads(&relay.store, &relay.rate_cards, &relay.operator, now).await {
                Ok(heads) => {
                    last_pass_ms = now;
                    let metrics = &relay.metrics;
                    metrics
                        .bill_heads_signed
                        .fetch_add(heads.len() as u64, Relaxed);
                    metrics.bill_head_passes.fetch_add(1, Relaxed);
                    metrics.notify_change();
                    if !heads.is_empty() {
                        tracing::info!(heads = heads.len(), "bill heads signed");
                    }
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, "signing bill heads failed; trying again");
                    RETRY_MS
                }
            }
        } else {
            (due - now).min(MAX_NAP_MS)
        };
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(nap)) => {}
            () = shifts.next() => {}
        }
    }
}

/// For each (customer, device) of `lines` whose device is no longer in
/// the customer's current device list, the newest replaced list that
/// named it, as the customer's account key signed it (each once). The
/// business checks those against the customer's pinned account key
/// (`comptoir_protocol::bill::superseded_device_key`): the relay's word
/// adds no key.
pub async fn lists_of_removed_devices<S: Directory + SupersededLists>(
    store: &S,
    lines: &[&BillLine],
) -> StorageResult<Vec<wire::SignedDeviceList>> {
    let mut pairs: Vec<(AccountId, u32)> = lines
        .iter()
        .map(|l| (l.customer, l.customer_device))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut current: Option<(AccountId, Option<Arc<StoredDeviceList>>)> = None;
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for (customer, device) in pairs {
        if current.as_ref().is_none_or(|(c, _)| *c != customer) {
            current = Some((customer, store.device_list(customer).await?));
        }
        let listed = current
            .as_ref()
            .and_then(|(_, list)| list.as_ref())
            .is_some_and(|list| list.list.device(device).is_some());
        if listed {
            continue;
        }
        if let Some(signed) = store.superseded_list_naming(customer, device).await?
            && !kept.contains(&signed)
        {
            kept.push(signed);
        }
    }
    kept.iter()
        .map(|bytes| {
            <wire::SignedDeviceList as prost::Message>::decode(bytes.as_slice())
                .map_err(|_| crate::storage::StorageError::Corrupt("a replaced device list"))
        })
        .collect()
}

/// The totals of `lines` (exact, in millionths).
pub fn totals<'a>(lines: impl IntoIterator<Item = &'a BillLine>) -> BillTotals {
    let mut totals = BillTotals::default();
    for line in lines {
        totals.add(line.category, line.price_millionths);
    }
    totals
}

/// A money amount in millionths as the currency unit with six decimals
/// (`0.005000`): exact, no rounding.
pub fn format_millionths(millionths: u64) -> String {
    format!("{}.{:06}", millionths / 1_000_000, millionths % 1_000_000)
}

/// A total rounded once to hundredths (see
/// [`comptoir_protocol::round_to_hundredths`]), as `12.34`.
pub fn format_rounded(millionths: u64) -> String {
    let hundredths = round_to_hundredths(millionths);
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// The lines of an export: those delivered in `[from_ms, to_ms)`.
pub fn in_range(chain: &Chain, from_ms: u64, to_ms: u64) -> Vec<&BillLine> {
    chain
        .lines
        .iter()
        .filter(|l| l.delivered_at_ms >= from_ms && l.delivered_at_ms < to_ms)
        .collect()
}

/// An export as CSV: a header, one row per line, then one `total` row per
/// category and a grand total (exact millionths, and the grand total
/// rounded once to hundredths), then the whole chain's head as the
/// operator key signed it for this export, then the `periodic` heads (the
/// ones signed on the relay's schedule at the exported lines' counts),
/// one `periodic_head` row each.
pub fn export_csv(
    currency: &str,
    lines: &[&BillLine],
    head: &wire::BillHead,
    periodic: &[wire::BillHead],
) -> String {
    let mut out = String::from(
        "index,accept_id,message_id,customer,category,inside_window,template_id,accepted_at_ms,delivered_at_ms,customer_device,price_millionths,line_hash\n",
    );
    for l in lines {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            l.index,
            l.accept_id,
            hex::encode(l.message_id),
            hex::encode(l.customer.as_bytes()),
            l.category.name(),
            l.inside_window,
            csv_field(&l.template_id),
            l.accepted_at_ms,
            l.delivered_at_ms,
            l.customer_device,
            l.price_millionths,
            hex::encode(l.hash()),
        ));
    }
    let totals = totals(lines.iter().copied());
    out.push_str("\ncategory,lines,total_millionths,total\n");
    for (category, (count, millionths)) in BILLED_CATEGORIES.iter().zip(totals.per_category) {
        out.push_str(&format!(
            "{},{count},{millionths},{} {currency}\n",
            category.name(),
            format_millionths(millionths)
        ));
    }
    out.push_str(&format!(
        "all,{},{},{} {currency} (due: {} {currency})\n",
        totals.lines,
        totals.total_millionths,
        format_millionths(totals.total_millionths),
        format_rounded(totals.total_millionths),
    ));
    // One row per signed head: its kind, then its fields.
    let head_row = |kind: &str, head: &wire::BillHead| {
        format!(
            "{kind},{},{},{},{}\n",
            head.count,
            hex::encode(&head.head_hash),
            head.signed_at_ms,
            hex::encode(&head.signature)
        )
    };
    out.push_str("\nhead,count,head_hash,signed_at_ms,signature\n");
    out.push_str(&head_row("head", head));
    for head in periodic {
        out.push_str(&head_row("periodic_head", head));
    }
    out
}

/// A template id is hex; anything else is quoted.
fn csv_field(text: &str) -> String {
    if text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        text.to_owned()
    } else {
        format!("\"{}\"", text.replace('"', "\"\""))
    }
}

/// An export as JSON: `lines`, `totals` per category, the grand total,
/// the whole chain's signed `head`, and the `periodic_heads` (signed on
/// the relay's schedule at the exported lines' counts).
pub fn export_json(
    business: AccountId,
    currency: &str,
    (from_ms, to_ms): (u64, u64),
    lines: &[&BillLine],
    head: &wire::BillHead,
    periodic: &[wire::BillHead],
) -> serde_json::Value {
    let head_json = |head: &wire::BillHead| {
        serde_json::json!({
            "count": head.count,
            "head_hash": hex::encode(&head.head_hash),
            "signed_at_ms": head.signed_at_ms,
            "signature": hex::encode(&head.signature),
        })
    };
    let totals = totals(lines.iter().copied());
    serde_json::json!({
        "business": hex::encode(business.as_bytes()),
        "currency": currency,
        "from_ms": from_ms,
        "to_ms": to_ms,
        "lines": lines.iter().map(|l| serde_json::json!({
            "index": l.index,
            "accept_id": l.accept_id,
            "message_id": hex::encode(l.message_id),
            "customer": hex::encode(l.customer.as_bytes()),
            "category": l.category.name(),
            "inside_window": l.inside_window,
            "template_id": l.template_id,
            "accepted_at_ms": l.accepted_at_ms,
            "delivered_at_ms": l.delivered_at_ms,
            "customer_device": l.customer_device,
            "price_millionths": l.price_millionths,
            "line_hash": hex::encode(l.hash()),
        })).collect::<Vec<_>>(),
        "totals": BILLED_CATEGORIES.iter().zip(totals.per_category).map(|(c, (count, millionths))| serde_json::json!({
            "category": c.name(),
            "lines": count,
            "total_millionths": millionths,
        })).collect::<Vec<_>>(),
        "total_lines": totals.lines,
        "total_millionths": totals.total_millionths,
        "total_rounded": format_rounded(totals.total_millionths),
        "head": head_json(head),
        "periodic_heads": periodic.iter().map(head_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Metrics;
    use crate::storage::Lifecycle;
    use crate::storage::sled::SledStore;

    #[test]
    fn the_head_period_is_an_hour_unless_billing_says_otherwise() {
        use crate::config::Config;
        assert_eq!(
            Config::default().billing.head_period_ms,
            DEFAULT_HEAD_PERIOD_MS
        );
        let config = Config::from_toml("[billing]\nhead_period_ms = 0\n").unwrap();
        assert_eq!(config.billing.head_period_ms, 0);
        assert!(Config::from_toml("[billing]\nhead_period = 5\n").is_err());
    }

    #[tokio::test]
    async fn a_pass_signs_nothing_without_bills_and_the_first_start_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, Arc::new(Metrics::default())).unwrap();
        assert_eq!(last_signing_pass(&store, 5_000).await.unwrap(), 5_000);
        assert_eq!(last_signing_pass(&store, 9_000).await.unwrap(), 5_000);
        let operator = OperatorKeyPair::from_seed(&[1; 32]);
        let heads = sign_periodic_heads(&store, &[default_card()], &operator, 7_000)
            .await
            .unwrap();
        assert!(heads.is_empty());
        assert_eq!(last_signing_pass(&store, 9_000).await.unwrap(), 7_000);
        store.close().await.unwrap();
    }

    #[test]
    fn amounts_are_exact_and_rounded_once() {
        assert_eq!(format_millionths(5_000), "0.005000");
        assert_eq!(format_millionths(1_234_567), "1.234567");
        assert_eq!(format_rounded(5_000), "0.01");
        assert_eq!(format_rounded(4_999), "0.00");
        assert_eq!(format_rounded(1_234_567), "1.23");
    }

    fn default_card() -> RateCard {
        crate::config::RatesConfig::default().card().unwrap()
    }

    #[tokio::test]
    async fn the_configured_card_is_recorded_once_and_each_change_after_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, Arc::new(Metrics::default())).unwrap();
        // The first card priced everything before cards were recorded.
        let first = rate_card_history(&store, default_card(), 5_000)
            .await
            .unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].effective_from_ms, 0);
        // The same prices again: nothing new.
        let same = rate_card_history(&store, default_card(), 9_000)
            .await
            .unwrap();
        assert_eq!(same, first);
        // New prices take effect now.
        let mut dearer = default_card();
        dearer.utility.outside_window = 7_000;
        let changed = rate_card_history(&store, dearer.clone(), 10_000)
            .await
            .unwrap();
        assert_eq!(changed.len(), 2);
        assert_eq!(changed[1].effective_from_ms, 10_000);
        assert!(changed[1].same_prices(&dearer));
        // Back to the old prices with the clock stepped back: still after.
        let back = rate_card_history(&store, default_card(), 3_000)
            .await
            .unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[2].effective_from_ms, 10_001);
        // Another currency is refused and records nothing.
        let mut euros = default_card();
        euros.currency = "EUR".into();
        assert!(matches!(
            rate_card_history(&store, euros, 20_000).await,
            Err(RateCardChangeError::Currency { .. })
        ));
        store.close().await.unwrap();
        drop(store);
        let store = SledStore::open(dir.path(), 1 << 20, Arc::new(Metrics::default())).unwrap();
        assert_eq!(store.rate_cards().await.unwrap(), back);
        store.close().await.unwrap();
    }
}
