//! The mail log's in-memory index: per-device queues (ordered by seq,
//! findable by sender and message id) and the idempotency entries. Built
//! by replaying the segments at open, then kept in step with every append.
//! Envelope bytes stay on disk; the index keeps where they are.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use comptoir_protocol::AccountId;

use super::super::consent::ConsentRecord;
use super::super::ledger::{DeliveredEntry, LedgerEntry};
use super::super::{AckOf, MESSAGE_ID_LEN};
use super::record::{Origin, ReceiptRef};

type MessageId = [u8; MESSAGE_ID_LEN];

/// Where an envelope's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    /// Segment number.
    pub(crate) segment: u32,
    /// Byte offset of the envelope in the segment file.
    pub(crate) offset: u64,
    /// Envelope length.
    pub(crate) len: u32,
}

/// One queued copy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// Sender, message id, expiry.
    pub(crate) origin: Origin,
    /// Where its bytes are.
    pub(crate) at: Location,
}

/// Log bytes per idempotency entry when a checkpoint rewrites it.
pub(crate) const SENT_COST: u64 = 81;

/// Log bytes per receipt when a checkpoint rewrites it.
pub(crate) const RECEIPT_COST: u64 = 89;

/// Who acked which message: a receipt's key within its queue.
pub(crate) type ReceiptKey = (AccountId, u32, MessageId);

/// One device's queue: envelopes for it, and the receipts kept for it as
/// a sender. Both take their seqs from the log's one sequence, but each
/// is pushed after its own cursor and within its own window, so receipts
/// a device does not ack never hold up its mail.
#[derive(Debug, Default)]
pub(crate) struct DeviceQueue {
    /// Copies by queue position.
    pub(crate) by_seq: BTreeMap<u64, Entry>,
    by_id: HashMap<(AccountId, MessageId), u64>,
    /// Receipts by queue position.
    pub(crate) receipts: BTreeMap<u64, ReceiptRef>,
    receipts_by_id: HashMap<ReceiptKey, u64>,
}

impl DeviceQueue {
    fn is_empty(&self) -> bool {
        self.by_seq.is_empty() && self.receipts.is_empty()
    }
}

/// An idempotency entry: a send of this id was accepted at `server_ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SentEntry {
    /// First acceptance time.
    pub(crate) server_ts: u64,
    /// When the entry lapses.
    pub(crate) expires: u64,
    /// The send's accept id, answered again to a retry.
    pub(crate) accept_id: u64,
}

/// (sender, recipient, message id).
pub(crate) type SentKey = (AccountId, AccountId, MessageId);

/// Shards of the idempotency entries.
pub(crate) const SENT_SHARDS: usize = 64;

/// The idempotency entries, in shards, so that expiry and checkpoints can
/// work through them one shard at a time instead of holding up every send
/// while they visit millions of entries.
#[derive(Debug)]
pub(crate) struct SentShards {
    shards: Vec<HashMap<SentKey, SentEntry>>,
    len: usize,
}

impl Default for SentShards {
    fn default() -> Self {
        Self {
            shards: (0..SENT_SHARDS).map(|_| HashMap::new()).collect(),
            len: 0,
        }
    }
}

impl SentShards {
    fn shard_of(key: &SentKey) -> usize {
        usize::from(key.0.as_bytes()[15] ^ key.2[15]) % SENT_SHARDS
    }

    /// The entry for a send, if it was accepted before.
    pub(crate) fn get(&self, key: &SentKey) -> Option<&SentEntry> {
        self.shards.get(Self::shard_of(key))?.get(key)
    }

    /// Record an accepted send (or replace its entry).
    pub(crate) fn insert(&mut self, key: SentKey, entry: SentEntry) {
        if let Some(shard) = self.shards.get_mut(Self::shard_of(&key))
            && shard.insert(key, entry).is_none()
        {
            self.len += 1;
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Drop one shard's entries expired at `now_ms`.
    pub(crate) fn expire_shard(&mut self, shard: usize, now_ms: u64) {
        if let Some(shard) = self.shards.get_mut(shard) {
            let before = shard.len();
            shard.retain(|_, s| s.expires > now_ms);
            self.len -= before - shard.len();
        }
    }

    /// Every entry, mutably (assigning legacy accept ids at open).
    pub(crate) fn entries_mut(&mut self) -> impl Iterator<Item = (&SentKey, &mut SentEntry)> {
        self.shards.iter_mut().flat_map(|s| s.iter_mut())
    }

    /// A copy of one shard's entries.
    pub(crate) fn shard_entries(&self, shard: usize) -> Vec<(SentKey, SentEntry)> {
        self.shards
            .get(shard)
            .map(|s| s.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }
}

/// What accepts commit besides their copies: conversation state, quota
/// counts, the ledger. Values, so replaying a record twice changes
/// nothing.
#[derive(Debug, Default, Clone)]
pub(crate) struct Accounting {
    /// (business, customer) → accept time of the customer's last
    /// conversation message.
    pub(crate) conversations: HashMap<(AccountId, AccountId), u64>,
    /// (sender, UTC day) → sends accepted.
    pub(crate) quotas: HashMap<(AccountId, u32), u64>,
    /// (business, UTC day) → customers reached by business-initiated
    /// conversations.
    pub(crate) reached: HashMap<(AccountId, u32), HashSet<AccountId>>,
    /// Business → the customers counted towards its messaging tier limit
    /// (kept 7 days).
    pub(crate) reaches: HashMap<AccountId, BusinessReach>,
    /// Ledger entries by accept id.
    pub(crate) ledger: BTreeMap<u64, LedgerEntry>,
    /// Signed first deliveries of billed sends by accept id (the first
    /// one kept).
    pub(crate) delivered: BTreeMap<u64, DeliveredEntry>,
    /// (customer, business) → the consent kept (highest counter).
    pub(crate) consents: HashMap<(AccountId, AccountId), ConsentRecord>,
    /// (blocker, blocked) → how many times it blocked it.
    pub(crate) block_epochs: HashMap<(AccountId, AccountId), u64>,
    /// Business → lines in its bill (delivered entries of its sends):
    /// the position the next one takes. Rebuilt at open.
    pub(crate) bill_lengths: HashMap<AccountId, u64>,
}

impl Accounting {
    /// Note a customer's conversation message (keeps the latest).
    pub(crate) fn conversation(&mut self, business: AccountId, customer: AccountId, ms: u64) {
        let at = self.conversations.entry((business, customer)).or_insert(ms);
        *at = (*at).max(ms);
    }

    /// Note a consent: kept if its counter is higher than the pair's, or
    /// equal and it is the block's revocation of the one kept.
    pub(crate) fn consent(&mut self, record: ConsentRecord) {
        let key = (record.customer, record.business);
        match self.consents.get(&key) {
            Some(kept)
                if kept.counter > record.counter
                    || (kept.counter == record.counter && !record.revoked_by_block) => {}
            _ => {
                self.consents.insert(key, record);
            }
        }
    }

    /// Note a customer counted towards a business's tier limit (keeps
    /// the latest).
    pub(crate) fn reach(&mut self, business: AccountId, customer: AccountId, ms: u64) {
        let reach = self.reaches.entry(business).or_default();
        let last = reach.last.entry(customer).or_insert(0);
        if ms >= *last {
            *last = ms;
            reach.window.insert((ms, customer));
        }
    }

    /// `business`'s customers counted in the 24 hours before `now_ms`,
    /// dropping older ones from its window first: for the accept, which
    /// asks with the relay's clock (it never goes back), in time
    /// logarithmic in the window's size.
    pub(crate) fn reach_window(
        &mut self,
        business: AccountId,
        now_ms: u64,
    ) -> crate::policy::quality::ReachWindow {
        use crate::policy::quality::{REACH_WINDOW_MS, ReachWindow};
        let Some(reach) = self.reaches.get_mut(&business) else {
            return ReachWindow::default();
        };
        while let Some(&(at, _)) = reach.window.first() {
            if now_ms < at.saturating_add(REACH_WINDOW_MS) {
                break;
            }
            reach.window.pop_first();
        }
        ReachWindow {
            used: reach.window.len() as u64,
            oldest_ms: reach.window.first().map(|&(at, _)| at),
        }
    }

    /// `business`'s customers counted in the 24 hours before `now_ms`
    /// and how many in the 7 days before it, changing nothing (for the
    /// standing and the operator: linear in the customers of 7 days).
    pub(crate) fn reach_usage(
        &self,
        business: AccountId,
        now_ms: u64,
    ) -> (crate::policy::quality::ReachWindow, u64) {
        use crate::policy::quality::{RATING_WINDOW_MS, REACH_WINDOW_MS, ReachWindow};
        let mut window = ReachWindow::default();
        let Some(reach) = self.reaches.get(&business) else {
            return (window, 0);
        };
        for &(at, _) in &reach.window {
            if now_ms < at.saturating_add(REACH_WINDOW_MS) {
                window.used += 1;
                window.oldest_ms = Some(window.oldest_ms.map_or(at, |o: u64| o.min(at)));
            }
        }
        let week = reach
            .last
            .values()
            .filter(|&&at| now_ms < at.saturating_add(RATING_WINDOW_MS))
            .count() as u64;
        (window, week)
    }

    /// Note a sender's count for a day (keeps the highest).
    pub(crate) fn quota(&mut self, sender: AccountId, day: u32, accepted: u64) {
        let n = self.quotas.entry((sender, day)).or_insert(accepted);
        *n = (*n).max(accepted);
    }

    /// Recount [`Accounting::bill_lengths`] from the delivered entries.
    pub(crate) fn recount_bills(&mut self) {
        let mut lengths: HashMap<AccountId, u64> = HashMap::new();
        for d in self.delivered.values() {
            if let Some(entry) = self.ledger.get(&d.accept_id) {
                let n = lengths.entry(entry.business).or_default();
                *n = (*n).max(d.chain_seq.map_or(*n + 1, |seq| seq + 1));
            }
        }
        self.bill_lengths = lengths;
    }

    /// Forget quota counts of days before `first_day`: only today's (and
    /// yesterday's, around midnight) count.
    pub(crate) fn expire_days(&mut self, first_day: u32) {
        self.quotas.retain(|(_, day), _| *day >= first_day);
        self.reached.retain(|(_, day), _| *day >= first_day);
    }

    /// Forget reaches 7 days old or older at `now_ms`: they count for
    /// neither the tier limit nor the rating.
    pub(crate) fn expire_reaches(&mut self, now_ms: u64) {
        use crate::policy::quality::{RATING_WINDOW_MS, REACH_WINDOW_MS};
        self.reaches.retain(|_, reach| {
            reach
                .last
                .retain(|_, at| now_ms < at.saturating_add(RATING_WINDOW_MS));
            reach
                .window
                .retain(|(at, _)| now_ms < at.saturating_add(REACH_WINDOW_MS));
            !reach.last.is_empty()
        });
    }
}

/// The customers one business reached by business-initiated
/// conversations, as counted towards its messaging tier limit.
#[derive(Debug, Default, Clone)]
pub(crate) struct BusinessReach {
    /// Customer → accept time of the conversation that last counted it
    /// (the last 7 days: the rating's audience, the tier's usage).
    pub(crate) last: HashMap<AccountId, u64>,
    /// (accept time, customer) of the counts of the last 24 hours, by
    /// time (an older entry of a customer counted again leaves with its
    /// time).
    pub(crate) window: BTreeSet<(u64, AccountId)>,
}

/// Everything queued, plus the idempotency entries.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Conversation state, quota counts and the ledger.
    pub(crate) accounting: Accounting,
    /// Queues by (account, device).
    pub(crate) devices: HashMap<(AccountId, u32), DeviceQueue>,
    /// Idempotency entries.
    pub(crate) sent: SentShards,
    /// Copies queued in total.
    pub(crate) queued: u64,
    /// Envelope bytes queued in total.
    pub(crate) queued_bytes: u64,
    /// Receipts kept in total.
    pub(crate) receipts: u64,
}

impl Index {
    /// Copies queued for a device.
    pub(crate) fn depth(&self, account: AccountId, device: u32) -> u64 {
        self.devices
            .get(&(account, device))
            .map_or(0, |q| q.by_seq.len() as u64)
    }

    /// Queue a copy (replacing one at the same seq, as replay may see a
    /// copy twice: in its segment and in a checkpoint).
    pub(crate) fn insert(&mut self, account: AccountId, device: u32, seq: u64, entry: Entry) {
        let queue = self.devices.entry((account, device)).or_default();
        let key = (entry.origin.sender, entry.origin.message_id);
        if let Some(old) = queue.by_id.insert(key, seq)
            && old != seq
            && let Some(gone) = queue.by_seq.remove(&old)
        {
            // The same message queued twice for one device can only come
            // from a damaged log; keep the later copy.
            self.queued -= 1;
            self.queued_bytes -= u64::from(gone.at.len);
        }
        match queue.by_seq.insert(seq, entry) {
            Some(old) => {
                self.queued_bytes -= u64::from(old.at.len);
            }
            None => self.queued += 1,
        }
        self.queued_bytes += u64::from(entry.at.len);
    }

    /// Keep a receipt (replacing one for the same ack, as replay may see
    /// it twice: in its segment and in a checkpoint).
    pub(crate) fn insert_receipt(
        &mut self,
        account: AccountId,
        device: u32,
        seq: u64,
        receipt: ReceiptRef,
    ) {
        let queue = self.devices.entry((account, device)).or_default();
        let key = (
            receipt.recipient,
            receipt.recipient_device,
            receipt.message_id,
        );
        if let Some(old) = queue.receipts_by_id.insert(key, seq)
            && old != seq
            && queue.receipts.remove(&old).is_some()
        {
            self.receipts -= 1;
        }
        if queue.receipts.insert(seq, receipt).is_none() {
            self.receipts += 1;
        }
    }

    /// Remove a receipt by what it says; returns its seq.
    pub(crate) fn remove_receipt(
        &mut self,
        account: AccountId,
        device: u32,
        key: &ReceiptKey,
    ) -> Option<u64> {
        let queue = self.devices.get_mut(&(account, device))?;
        let seq = queue.receipts_by_id.remove(key)?;
        queue.receipts.remove(&seq)?;
        self.receipts -= 1;
        if queue.is_empty() {
            self.devices.remove(&(account, device));
        }
        Some(seq)
    }

    /// Remove a receipt by seq.
    fn remove_receipt_seq(&mut self, account: AccountId, device: u32, seq: u64) -> bool {
        let Some(queue) = self.devices.get_mut(&(account, device)) else {
            return false;
        };
        let Some(r) = queue.receipts.remove(&seq) else {
            return false;
        };
        queue
            .receipts_by_id
            .remove(&(r.recipient, r.recipient_device, r.message_id));
        self.receipts -= 1;
        if queue.is_empty() {
            self.devices.remove(&(account, device));
        }
        true
    }

    /// Remove a copy or a receipt by seq (seqs are never shared); returns
    /// the copy if it was one.
    pub(crate) fn remove_seq(
        &mut self,
        account: AccountId,
        device: u32,
        seq: u64,
    ) -> Option<Entry> {
        let queue = self.devices.get_mut(&(account, device))?;
        let Some(entry) = queue.by_seq.remove(&seq) else {
            self.remove_receipt_seq(account, device, seq);
            return None;
        };
        queue
            .by_id
            .remove(&(entry.origin.sender, entry.origin.message_id));
        self.forget(account, device, &entry);
        Some(entry)
    }

    /// Remove a copy by sender and message id; returns it and its seq.
    pub(crate) fn remove_id(
        &mut self,
        account: AccountId,
        device: u32,
        sender: AccountId,
        message_id: &MessageId,
    ) -> Option<(u64, Entry)> {
        let queue = self.devices.get_mut(&(account, device))?;
        let seq = queue.by_id.remove(&(sender, *message_id))?;
        let entry = queue.by_seq.remove(&seq)?;
        self.forget(account, device, &entry);
        Some((seq, entry))
    }

    /// Remove a copy by its message's accept id (and, if `expect` names
    /// one, only if it is that sender's message id); returns it and its
    /// seq.
    ///
    /// The copies of one send take consecutive seqs from its accept id on
    /// (the accept id is the first copy's seq, or for a send migrated from
    /// an older format the lowest seq of its copies), and a device holds at
    /// most one of them, so the device's copy is the first entry of its
    /// queue at or after the accept id, if that entry is of this send.
    pub(crate) fn remove_accept(
        &mut self,
        account: AccountId,
        device: u32,
        accept_id: u64,
        expect: Option<(AccountId, MessageId)>,
    ) -> Option<(u64, Entry)> {
        let queue = self.devices.get_mut(&(account, device))?;
        let (&seq, entry) = queue.by_seq.range(accept_id..).next()?;
        if entry.origin.accept_id != accept_id {
            return None;
        }
        if let Some((sender, message_id)) = expect
            && (entry.origin.sender, entry.origin.message_id) != (sender, message_id)
        {
            return None;
        }
        let entry = queue.by_seq.remove(&seq)?;
        queue
            .by_id
            .remove(&(entry.origin.sender, entry.origin.message_id));
        self.forget(account, device, &entry);
        Some((seq, entry))
    }

    /// The accept id of the copy `of` names, if it is queued for the
    /// device (what [`Index::remove_accept`] or [`Index::remove_id`] would
    /// remove, without removing it).
    pub(crate) fn find_accept_id(&self, account: AccountId, device: u32, of: AckOf) -> Option<u64> {
        let queue = self.devices.get(&(account, device))?;
        let entry = match of {
            AckOf::Accept(accept_id) | AckOf::AcceptOf { accept_id, .. } => {
                let (_, entry) = queue.by_seq.range(accept_id..).next()?;
                if entry.origin.accept_id != accept_id {
                    return None;
                }
                if let AckOf::AcceptOf {
                    sender, message_id, ..
                } = of
                    && (entry.origin.sender, entry.origin.message_id) != (sender, message_id)
                {
                    return None;
                }
                entry
            }
            AckOf::Message { sender, message_id } => {
                let seq = queue.by_id.get(&(sender, message_id))?;
                queue.by_seq.get(seq)?
            }
        };
        Some(entry.origin.accept_id)
    }

    /// The (device, seq) of every copy `sender` has queued for `devices`
    /// of `recipient` (only those queues are read).
    pub(crate) fn queued_from(
        &self,
        recipient: AccountId,
        devices: &[u32],
        sender: AccountId,
    ) -> Vec<(u32, u64)> {
        devices
            .iter()
            .filter_map(|&device| Some((device, self.devices.get(&(recipient, device))?)))
            .flat_map(|(device, queue)| {
                queue
                    .by_seq
                    .iter()
                    .filter(|(_, entry)| entry.origin.sender == sender)
                    .map(move |(&seq, _)| (device, seq))
            })
            .collect()
    }

    /// Drop a device's whole queue, receipts too; returns how many copies
    /// it held.
    pub(crate) fn drop_device(&mut self, account: AccountId, device: u32) -> u64 {
        let Some(queue) = self.devices.remove(&(account, device)) else {
            return 0;
        };
        self.receipts -= queue.receipts.len() as u64;
        let n = queue.by_seq.len() as u64;
        self.queued -= n;
        self.queued_bytes -= queue
            .by_seq
            .values()
            .map(|e| u64::from(e.at.len))
            .sum::<u64>();
        n
    }

    /// Remove a device's copies and receipts expired at `now_ms`; returns
    /// how many copies.
    pub(crate) fn expire_device(&mut self, account: AccountId, device: u32, now_ms: u64) -> u64 {
        let Some(queue) = self.devices.get_mut(&(account, device)) else {
            return 0;
        };
        let before = queue.receipts.len();
        queue.receipts.retain(|_, r| r.expires > now_ms);
        if queue.receipts.len() != before {
            let DeviceQueue {
                receipts,
                receipts_by_id,
                ..
            } = queue;
            receipts_by_id.retain(|_, seq| receipts.contains_key(seq));
            self.receipts -= (before - receipts.len()) as u64;
        }
        let due: Vec<u64> = queue
            .by_seq
            .iter()
            .filter(|(_, e)| e.origin.expires <= now_ms)
            .map(|(seq, _)| *seq)
            .collect();
        let mut expired = 0;
        for seq in due {
            if let Some(entry) = queue.by_seq.remove(&seq) {
                queue
                    .by_id
                    .remove(&(entry.origin.sender, entry.origin.message_id));
                self.queued -= 1;
                self.queued_bytes -= u64::from(entry.at.len);
                expired += 1;
            }
        }
        if queue.is_empty() {
            self.devices.remove(&(account, device));
        }
        expired
    }

    /// Remove every copy and idempotency entry expired at `now_ms` in one
    /// go (at open, before anyone else holds the index); returns the
    /// copies removed.
    pub(crate) fn expire(&mut self, now_ms: u64) -> u64 {
        let keys: Vec<(AccountId, u32)> = self.devices.keys().copied().collect();
        let expired = keys
            .into_iter()
            .map(|(account, device)| self.expire_device(account, device, now_ms))
            .sum();
        for shard in 0..SENT_SHARDS {
            self.sent.expire_shard(shard, now_ms);
        }
        expired
    }

    /// Bytes a checkpoint would write now: the live envelopes and
    /// idempotency entries with their record overhead.
    pub(crate) fn live_log_bytes(&self) -> u64 {
        self.queued_bytes
            + self.queued * 100
            + self.sent.len() as u64 * SENT_COST
            + self.receipts * RECEIPT_COST
    }

    fn forget(&mut self, account: AccountId, device: u32, entry: &Entry) {
        self.queued -= 1;
        self.queued_bytes -= u64::from(entry.at.len);
        if self
            .devices
            .get(&(account, device))
            .is_some_and(DeviceQueue::is_empty)
        {
            self.devices.remove(&(account, device));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(b: u8) -> AccountId {
        AccountId::from_bytes(&[b; 16]).unwrap()
    }

    fn entry(id: u8, expires: u64) -> Entry {
        Entry {
            origin: Origin {
                sender: account(1),
                sender_device: 1,
                message_id: [id; 16],
                expires,
                accept_id: u64::from(id),
            },
            at: Location {
                segment: 1,
                offset: 8,
                len: 10,
            },
        }
    }

    #[test]
    fn counts_follow_inserts_removals_and_expiry() {
        let mut index = Index::default();
        let bob = account(2);
        index.insert(bob, 1, 5, entry(1, 100));
        index.insert(bob, 1, 5, entry(1, 100)); // replayed twice: one copy
        index.insert(bob, 1, 6, entry(2, 200));
        index.insert(bob, 2, 7, entry(1, 100));
        assert_eq!((index.queued, index.queued_bytes), (3, 30));
        assert_eq!(index.depth(bob, 1), 2);
        assert!(index.remove_id(bob, 1, account(1), &[1; 16]).is_some());
        assert!(index.remove_id(bob, 1, account(1), &[1; 16]).is_none());
        assert_eq!(index.expire(150), 1); // device 2's copy
        assert_eq!(index.depth(bob, 2), 0);
        assert_eq!(index.drop_device(bob, 1), 1);
        assert_eq!((index.queued, index.queued_bytes), (0, 0));
        assert!(index.devices.is_empty());
    }
}
