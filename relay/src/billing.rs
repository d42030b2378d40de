//! Bills from the ledger: each business's billed lines as the hash chain
//! the protocol crate defines (`comptoir_protocol::bill`), their totals,
//! and the operator's export of them (CSV or JSON). Shared by the
//! `GetBill` / `GetStanding` requests and the admin API, so the business
//! and the operator read the same lines.

use comptoir_protocol::bill::{BILLED_CATEGORIES, BillLine, chain};
use comptoir_protocol::proto::wire;
use comptoir_protocol::{AccountId, BillCategory, BillTotals, RateCard, round_to_hundredths};

use crate::storage::{BilledCategory, DeliveredEntry, Ledger, LedgerEntry, StorageResult};

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

/// One ledger entry and its first signed delivery as a bill line (not yet
/// chained). An entry written before prices were fixed at accept is
/// priced by `card` as outside the window.
pub fn line_of(entry: &LedgerEntry, delivered: &DeliveredEntry, card: &RateCard) -> BillLine {
    let category = bill_category(entry.category);
    let (price_millionths, inside_window) = match entry.priced {
        Some(priced) => (priced.millionths, priced.inside_window),
        None => (card.price(category, false), false),
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

/// `business`'s chain, read from the ledger.
pub async fn chain_of<S: Ledger>(
    store: &S,
    card: &RateCard,
    business: AccountId,
) -> StorageResult<Chain> {
    let entries = store.bill(business).await?;
    let (lines, head_hash) = chain(entries.iter().map(|(e, d)| line_of(e, d, card)));
    Ok(Chain { lines, head_hash })
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
/// operator key signed it for this export.
pub fn export_csv(currency: &str, lines: &[&BillLine], head: &wire::BillHead) -> String {
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
    out.push_str(&format!(
        "\nhead,count,head_hash,signed_at_ms,signature\nhead,{},{},{},{}\n",
        head.count,
        hex::encode(&head.head_hash),
        head.signed_at_ms,
        hex::encode(&head.signature)
    ));
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

/// An export as JSON: `lines`, `totals` per category, the grand total, and
/// the whole chain's signed `head`.
pub fn export_json(
    business: AccountId,
    currency: &str,
    (from_ms, to_ms): (u64, u64),
    lines: &[&BillLine],
    head: &wire::BillHead,
) -> serde_json::Value {
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
        "head": {
            "count": head.count,
            "head_hash": hex::encode(&head.head_hash),
            "signed_at_ms": head.signed_at_ms,
            "signature": hex::encode(&head.signature),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_and_rounded_once() {
        assert_eq!(format_millionths(5_000), "0.005000");
        assert_eq!(format_millionths(1_234_567), "1.234567");
        assert_eq!(format_rounded(5_000), "0.01");
        assert_eq!(format_rounded(4_999), "0.00");
        assert_eq!(format_rounded(1_234_567), "1.23");
    }
}
