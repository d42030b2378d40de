//! A business's bill and standing: fetch the lines of its hash chain with
//! the operator-signed head and rate card, and check all of it with the
//! protocol crate's one check (`comptoir_protocol::verify_bill`): the
//! chain, the operator's signatures against the pinned operator key, each
//! customer device's delivery signature against the customer's signed
//! device list (checked against the customer's pinned account key; for a
//! device removed since it acked, the earlier list that named it, which
//! the bill carries, checked the same way), and
//! each price against the signed rate card, each head the relay signed on
//! its schedule against the operator key and the chain; and that the chain extends the
//! head this client verified last time (kept sealed in the store: tree
//! `Bills`, key `verified-head`, count (u64 BE) || head hash (32)), so a
//! relay cannot rewrite lines a business already checked.

use std::collections::HashMap;

use comptoir_protocol::proto::wire::{self, GetBill, GetStanding, client_frame, server_frame};
use comptoir_protocol::{AccountId, BillLine, BillTotals, IdentityKey};

use super::{Client, unexpected};
use crate::error::{ClientError, Result};
use crate::peers;
use crate::store::Tree;

/// Where the head verified last is kept.
const VERIFIED_HEAD: &[u8] = b"verified-head";

/// Lines asked for per request (the relay caps a page at its own size).
const PAGE_LINES: u32 = 400;

/// A business's bill as fetched, not yet checked: see
/// [`Client::verify_bill`].
#[derive(Clone, Debug)]
pub struct Bill {
    /// Lines 1 to n, as the relay sent them.
    pub lines: Vec<BillLine>,
    /// The chain's head, signed by the operator key.
    pub head: wire::BillHead,
    /// The rate card in effect, signed by the operator key.
    pub rate_card: wire::SignedRateCard,
    /// The cards in effect before it, oldest first, signed the same way:
    /// earlier lines were priced with them.
    pub earlier_rate_cards: Vec<wire::SignedRateCard>,
    /// The heads the relay signed on its schedule (each page's, in order
    /// of count), signed by the operator key: each must be a head of
    /// this chain.
    pub periodic_heads: Vec<wire::BillHead>,
    /// Earlier device lists of customers, signed by their account keys,
    /// naming devices removed since they acked a line (each page's).
    pub device_lists: Vec<wire::SignedDeviceList>,
}

impl Client {
    /// Fetch this business's whole bill, page by page (the head of the
    /// last page is kept: lines delivered meanwhile only extend it).
    pub async fn fetch_bill(&mut self) -> Result<Bill> {
        let mut lines = Vec::new();
        let mut periodic_heads = Vec::new();
        let mut device_lists = Vec::new();
        loop {
            let reply = self
                .request(
                    client_frame::Body::GetBill(GetBill {
                        from_index: lines.len() as u64 + 1,
                        limit: PAGE_LINES,
                    }),
                    "the bill",
                )
                .await?;
            let server_frame::Body::Bill(page) = reply else {
                return Err(unexpected("Bill", &reply));
            };
            let got = page.lines.len();
            periodic_heads.extend(page.periodic_heads);
            device_lists.extend(page.device_lists);
            for line in &page.lines {
                lines.push(BillLine::from_wire(line)?);
            }
            let (Some(head), Some(rate_card)) = (page.head, page.rate_card) else {
                return Err(ClientError::UnexpectedFrame(
                    "a bill without its signed head or rate card".into(),
                ));
            };
            if got == 0 || lines.len() as u64 >= head.count {
                return Ok(Bill {
                    lines,
                    head,
                    rate_card,
                    earlier_rate_cards: page.earlier_rate_cards,
                    periodic_heads,
                    device_lists,
                });
            }
        }
    }

    /// Check `bill` (see the module doc); its totals if every line checks,
    /// otherwise [`ClientError::Bill`] naming the first line that does not.
    /// Fetches each customer's signed device list.
    pub async fn verify_bill(&mut self, bill: &Bill) -> Result<BillTotals> {
        let operator = self.operator_key()?.ok_or_else(|| {
            ClientError::InvalidArgument(
                "no operator key is pinned yet: connect to the relay once (or pin the \
                 operator's key given out of band) before checking a bill"
                    .into(),
            )
        })?;
        let mut keys: HashMap<(AccountId, u32), IdentityKey> = HashMap::new();
        let mut customers: Vec<AccountId> = bill.lines.iter().map(|l| l.customer).collect();
        customers.sort_unstable();
        customers.dedup();
        for customer in customers {
            // A list signed by another key than the pinned one is not
            // adopted: its devices stay unknown and their lines fail.
            self.refresh_peer(customer).await?;
            if let Some(peer) = peers::load(&self.store, &customer)? {
                for line in bill.lines.iter().filter(|l| l.customer == customer) {
                    let device = line.customer_device;
                    if keys.contains_key(&(customer, device)) {
                        continue;
                    }
                    // A device removed since it acked: its key from an
                    // earlier list the customer's pinned account key
                    // signed, if the bill carries one.
                    let key = peer.devices.device(device).copied().or_else(|| {
                        comptoir_protocol::bill::superseded_device_key(
                            &bill.device_lists,
                            &customer,
                            &peer.devices.account_key,
                            peer.devices.version,
                            device,
                        )
                    });
                    if let Some(key) = key {
                        keys.insert((customer, device), key);
                    }
                }
            }
        }
        let business = self.account_id();
        let totals = comptoir_protocol::verify_bill(
            &business,
            &bill.lines,
            &bill.head,
            &bill.periodic_heads,
            std::iter::once(&bill.rate_card).chain(&bill.earlier_rate_cards),
            &operator,
            |customer, device| keys.get(&(*customer, device)).copied(),
        )?;
        let earlier = self
            .store
            .get(Tree::Bills, VERIFIED_HEAD)?
            .and_then(|bytes| {
                let count = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
                let hash: [u8; 32] = bytes.get(8..40)?.try_into().ok()?;
                Some((count, hash))
            });
        if let Some((count, hash)) = earlier {
            comptoir_protocol::bill::check_extends(&bill.lines, count, &hash)?;
        }
        if let Some(last) = bill.lines.last() {
            let mut record = totals.lines.to_be_bytes().to_vec();
            record.extend_from_slice(&last.hash());
            self.store.put(Tree::Bills, VERIFIED_HEAD, &record)?;
        }
        Ok(totals)
    }

    /// This business's standing: its bill so far, today's reach, rating
    /// and tier.
    pub async fn standing(&mut self) -> Result<wire::Standing> {
        let reply = self
            .request(
                client_frame::Body::GetStanding(GetStanding {}),
                "the standing",
            )
            .await?;
        match reply {
            server_frame::Body::Standing(standing) => Ok(standing),
            other => Err(unexpected("Standing", &other)),
        }
    }
}
