//! The mail log's on-disk records: framing, encoding and decoding.
//!
//! A segment file is the 8-byte [`SEGMENT_MAGIC`] followed by groups. A
//! group is what one write and one sync put on disk:
//! `length of what follows the header (u32 LE) ‖ CRC-32 of it (u32 LE) ‖
//! CRC-32 of the first 8 header bytes (u32 LE) ‖ records`. The group is
//! self-delimiting, so at open a damaged group is told apart from a write
//! cut short (see `segment::read_records`). An empty group (no records)
//! seals a segment: written at a clean close, at open and at the end of a
//! checkpoint, so the last group holding records is followed by something.
//!
//! A record is `body length (u32 LE) ‖ CRC-32 of body (u32 LE) ‖ body`; the
//! body starts with a kind byte. Integers inside bodies are big-endian.
//! Segments of format 1 ([`SEGMENT_MAGIC_V1`]) hold records without groups
//! and are still read; format 2 ([`SEGMENT_MAGIC_V2`]) is format 3 without
//! the `Receipt` kind, and format 3 ([`SEGMENT_MAGIC_V3`]) is format 4
//! without accept ids (kinds 1, 2, 3 and 8); both are read as format 4,
//! and the accept ids of what they hold are assigned at open (see
//! `mail_log::legacy`).
//!
//! | kind | body after the kind byte |
//! |---|---|
//! | 1 `Message` | sender (16), sender device (4), recipient (16), message id (16), server time (8), expires (8), copies (2), then per copy: device (4), seq (8), length (4), `Envelope` bytes |
//! | 2 `Queued` | recipient (16), device (4), seq (8), sender (16), sender device (4), message id (16), expires (8), length (4), `Envelope` bytes |
//! | 3 `Sent` | sender (16), recipient (16), message id (16), server time (8), expires (8) |
//! | 4 `Removed` | account (16), device (4), seq (8) |
//! | 5 `DeviceDropped` | account (16), device (4) |
//! | 6 `SeqFloor` | next seq (8) |
//! | 7 `Clock` | expiry clock in ms (8) |
//! | 8 `Receipt` | sending account (16), sending device (4), seq (8), recipient account (16), recipient device (4), message id (16), expires (8) |
//! | 9 `Message` (v4) | accept id (8), then as kind 1 |
//! | 10 `Queued` (v4) | accept id (8), then as kind 2 |
//! | 11 `Sent` (v4) | accept id (8), then as kind 3 |
//! | 12 `Receipt` (v4) | accept id (8), then as kind 8 |
//! | 13 `Conversation` | business (16), customer (16), accept time of the customer's last conversation message (8) |
//! | 14 `Quota` | sender (16), UTC day (4), sends accepted that day so far (8) |
//! | 15 `Reached` | business (16), UTC day (4), customer (16) |
//! | 16 `Ledger` | accept id (8), message id (16), business (16), customer (16), category (1), accept time (8), template id length (2), template id (UTF-8), franking tag length (2), franking tag |
//! | 17 `Delivered` | accept id (8), customer device (4), signed at (8), signature (64) |
//! | 20 `Ledger` (priced) | as 16, then price in millionths (8), inside the window (1: 0 or 1) |
//! | 21 `Delivered` (chained) | as 17, then the relay's delivery time (8), position in the business's bill (8) |
//! | 19 `BlockEpoch` | blocker (16), blocked (16), epoch (8) |
//! | 18 `Consent` | customer (16), business (16), device (4), categories (1), issued (8), expires (8), counter (8), signature (64), revoked by block (1) |
//! | 25 `Reach` | business (16), customer (16), accept time of the business-initiated conversation that counted the customer towards the tier limit (8) |
//!
//! Kinds 13 to 16 are what an accept commits besides its copies, in the
//! same group as its `Message`: so the copies, the conversation state,
//! the quota counts and the ledger entry are all durable or none is. They
//! hold values, not increments (replay may see one twice: in its segment
//! and in a checkpoint), and checkpoints rewrite them. Kind 17 is the
//! signed first delivery of a billed send, in the same group as the ack's
//! `Removed` and `Receipt`; the first one for an accept id is kept.
//! Kind 18 is a customer's consent for a business (or its revocation),
//! in a group of its own; replay keeps the highest counter per pair (a
//! block's revocation, same counter, wins over the token it revokes).
//! Kind 19 counts the blocks of one (blocker, blocked) pair, in the same
//! group as the `Removed` records of what the blocked account had queued
//! for the blocker: an accept decided before the block is refused after it.
//! Kind 25 is, like kinds 13 to 16, written by an accept in the group of
//! its `Message`: a business-initiated conversation that counted its
//! customer towards the business's messaging tier limit (the check and
//! the count happen under the log's lock, so the limit holds against
//! concurrent sends); replay keeps the latest time per pair, and
//! checkpoints rewrite those of the last 7 days.
//!
//! Format 4 writes only kinds 4 to 7 and 9 to 12. The accept id of a send
//! is the seq of its first copy: taken from the log's one sequence, so it
//! is never handed out twice (see `SeqFloor`) and no other message or
//! receipt shares it.
//!
//! `Message` is what a send appends; `Queued` and `Sent` are what a
//! checkpoint rewrites (one still-queued copy, one idempotency entry);
//! `SeqFloor` opens a checkpoint, so seqs are never handed out twice even
//! once every record that used them is gone. `Clock` persists how far
//! expiry has gone (appended by expiry passes, repeated by checkpoints), so
//! a wall clock stepped forward cannot expire everything at the next start.
//! `Receipt` is a `Delivered` receipt kept for the sending device until it
//! acks it (a `Removed` of its seq): an ack appends the `Removed` of the
//! envelope and the `Receipt` in one group, so both land or neither does;
//! checkpoints rewrite the receipts still kept.

use comptoir_protocol::{AccountId, ConsentCategories};

use super::super::MESSAGE_ID_LEN;
use super::super::consent::{CONSENT_SIGNATURE_LEN, ConsentRecord};
use super::super::ledger::{
    BilledCategory, DELIVERY_SIGNATURE_LEN, DeliveredEntry, LedgerEntry, Priced,
};

/// First bytes of every segment file written now (format version 4).
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"CMPTMLG4";

/// First bytes of a segment of format 3 (no accept ids), read as format 4
/// so a relay upgraded in place keeps its queues.
pub(crate) const SEGMENT_MAGIC_V3: &[u8; 8] = b"CMPTMLG3";

/// First bytes of a segment of format 2 (groups, no `Receipt` records),
/// read as format 3 so a relay upgraded in place keeps its queues.
pub(crate) const SEGMENT_MAGIC_V2: &[u8; 8] = b"CMPTMLG2";

/// First bytes of a segment of format 1 (records without groups), still
/// read so a relay upgraded in place keeps its queues.
pub(crate) const SEGMENT_MAGIC_V1: &[u8; 8] = b"CMPTMLG1";

/// Bytes of a group header: length, CRC of the group, CRC of those two.
pub(crate) const GROUP_HEADER_LEN: usize = 12;

/// Bytes before a record's body: length and CRC.
pub(crate) const RECORD_HEADER_LEN: usize = 8;

/// Largest body accepted when reading (a send carries at most a few
/// frames' worth of ciphertext; anything larger is corruption).
pub(crate) const MAX_BODY_LEN: usize = 64 * 1024 * 1024;

const KIND_MESSAGE: u8 = 1;
const KIND_QUEUED: u8 = 2;
const KIND_SENT: u8 = 3;
const KIND_REMOVED: u8 = 4;
const KIND_DEVICE_DROPPED: u8 = 5;
const KIND_SEQ_FLOOR: u8 = 6;
const KIND_CLOCK: u8 = 7;
const KIND_RECEIPT: u8 = 8;
const KIND_MESSAGE_V4: u8 = 9;
const KIND_QUEUED_V4: u8 = 10;
const KIND_SENT_V4: u8 = 11;
const KIND_RECEIPT_V4: u8 = 12;
const KIND_CONVERSATION: u8 = 13;
const KIND_QUOTA: u8 = 14;
const KIND_REACHED: u8 = 15;
const KIND_LEDGER: u8 = 16;
const KIND_DELIVERED: u8 = 17;
const KIND_CONSENT: u8 = 18;
const KIND_BLOCK_EPOCH: u8 = 19;
const KIND_LEDGER_PRICED: u8 = 20;
const KIND_DELIVERED_CHAINED: u8 = 21;
const KIND_REACH: u8 = 25;

/// The accept id of a record written before accept ids existed (format 3
/// and older): assigned at open (see `mail_log::legacy`). No real accept
/// id is 0 (seqs start at 1).
pub(crate) const LEGACY_ACCEPT_ID: u64 = 0;

type MessageId = [u8; MESSAGE_ID_LEN];

/// One queued copy as it appears in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyRef<'a> {
    /// Recipient device.
    pub(crate) device: u32,
    /// Queue position.
    pub(crate) seq: u64,
    /// The encoded `Envelope`.
    pub(crate) envelope: &'a [u8],
    /// Where `envelope` starts inside the record body.
    pub(crate) body_offset: usize,
}

/// Who sent what to whom: shared by the record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    /// Sender account.
    pub(crate) sender: AccountId,
    /// Sender device.
    pub(crate) sender_device: u32,
    /// Sender-chosen message id.
    pub(crate) message_id: MessageId,
    /// When undelivered copies expire.
    pub(crate) expires: u64,
    /// The relay-assigned accept id ([`LEGACY_ACCEPT_ID`] until assigned,
    /// for a record of an older format).
    pub(crate) accept_id: u64,
}

/// A `Delivered` receipt kept for a sending device: which recipient
/// device acked which message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReceiptRef {
    /// The account that acked (the message's recipient).
    pub(crate) recipient: AccountId,
    /// The device that acked.
    pub(crate) recipient_device: u32,
    /// The message id.
    pub(crate) message_id: MessageId,
    /// When the receipt is deleted even if never acked.
    pub(crate) expires: u64,
    /// The message's accept id ([`LEGACY_ACCEPT_ID`] for a receipt made
    /// before accept ids existed: its `Delivered` carries none).
    pub(crate) accept_id: u64,
}

/// A decoded record (borrowing the body it came from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// A send: one copy per recipient device.
    Message {
        /// Sender, message id, expiry.
        origin: Origin,
        /// Recipient account.
        recipient: AccountId,
        /// The relay's acceptance time.
        server_ts: u64,
        /// One per recipient device.
        copies: Vec<CopyRef<'a>>,
    },
    /// One still-queued copy, rewritten by a checkpoint.
    Queued {
        /// Sender, message id, expiry.
        origin: Origin,
        /// Recipient account.
        recipient: AccountId,
        /// The copy.
        copy: CopyRef<'a>,
    },
    /// An idempotency entry, rewritten by a checkpoint.
    Sent {
        /// Sender account.
        sender: AccountId,
        /// Recipient account.
        recipient: AccountId,
        /// Message id.
        message_id: MessageId,
        /// First acceptance time.
        server_ts: u64,
        /// When the entry lapses.
        expires: u64,
        /// The send's accept id.
        accept_id: u64,
    },
    /// A copy was acked or otherwise deleted.
    Removed {
        /// Recipient account.
        account: AccountId,
        /// Recipient device.
        device: u32,
        /// Queue position.
        seq: u64,
    },
    /// A device was removed: its whole queue is gone.
    DeviceDropped {
        /// Account.
        account: AccountId,
        /// Device.
        device: u32,
    },
    /// Seqs below `next` were handed out already.
    SeqFloor {
        /// The next seq to hand out, at least.
        next: u64,
    },
    /// Expiry had reached this time (ms since the epoch).
    Clock {
        /// The expiry clock.
        ms: u64,
    },
    /// A receipt kept in a sending device's receipt queue.
    Receipt {
        /// The sending account (whose queue holds it).
        account: AccountId,
        /// The sending device.
        device: u32,
        /// Queue position (the same sequence as copies').
        seq: u64,
        /// What it says.
        receipt: ReceiptRef,
    },
    /// The last conversation message of a customer to a business.
    Conversation {
        /// The business.
        business: AccountId,
        /// The customer.
        customer: AccountId,
        /// The relay's accept time of that message.
        last_customer_ms: u64,
    },
    /// A sender's count of sends accepted on a UTC day.
    Quota {
        /// The sender.
        sender: AccountId,
        /// Days since the epoch (UTC).
        day: u32,
        /// Sends accepted that day so far.
        accepted: u64,
    },
    /// A customer a business reached with a business-initiated
    /// conversation on a UTC day.
    Reached {
        /// The business.
        business: AccountId,
        /// Days since the epoch (UTC).
        day: u32,
        /// The customer.
        customer: AccountId,
    },
    /// A customer counted towards a business's messaging tier limit.
    Reach {
        /// The business.
        business: AccountId,
        /// The customer.
        customer: AccountId,
        /// The accept time of the send that counted it.
        at_ms: u64,
    },
    /// A ledger entry.
    Ledger(LedgerEntry),
    /// The signed first delivery of a billed send.
    Delivered(DeliveredEntry),
    /// A consent (or revocation) of a customer for a business.
    Consent(ConsentRecord),
    /// How many times `blocker` blocked `blocked`.
    BlockEpoch {
        /// The account that blocked.
        blocker: AccountId,
        /// The account blocked.
        blocked: AccountId,
        /// The count.
        epoch: u64,
    },
}

/// A record body that does not parse (corruption, or a newer format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed mail log record")]
pub(crate) struct Malformed;

/// Appends framed records to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

/// The header of a group holding `body`.
pub(crate) fn group_header(body: &[u8]) -> [u8; GROUP_HEADER_LEN] {
    let mut header = [0u8; GROUP_HEADER_LEN];
    header[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    let check = crc32fast::hash(&header[..8]);
    header[8..].copy_from_slice(&check.to_le_bytes());
    header
}

/// The length and CRC of a group from its header, or `None` if the header
/// does not check out.
pub(crate) fn parse_group_header(header: &[u8; GROUP_HEADER_LEN]) -> Option<(usize, u32)> {
    let check = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if crc32fast::hash(&header[..8]) != check {
        return None;
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    Some((len, crc))
}

/// The bytes of an empty group, which seals a segment.
pub(crate) fn seal_group() -> [u8; GROUP_HEADER_LEN] {
    group_header(&[])
}

impl Writer {
    /// A writer for one group: its header is reserved, and filled in by
    /// [`Writer::finish_group`].
    pub(crate) fn group() -> Self {
        Self {
            buf: vec![0; GROUP_HEADER_LEN],
        }
    }

    /// Whether a group writer holds no record.
    pub(crate) fn group_is_empty(&self) -> bool {
        self.buf.len() <= GROUP_HEADER_LEN
    }

    /// Fill in the header of a writer made by [`Writer::group`] and take
    /// its bytes, leaving a new empty group.
    pub(crate) fn finish_group(&mut self) -> Vec<u8> {
        let mut bytes = std::mem::replace(self, Self::group()).buf;
        let header = group_header(&bytes[GROUP_HEADER_LEN..]);
        bytes[..GROUP_HEADER_LEN].copy_from_slice(&header);
        bytes
    }

    /// Bytes appended so far.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Take the bytes, leaving the writer empty.
    #[cfg(test)]
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Append a `Message` record. Returns, per copy, where its envelope
    /// starts relative to the start of this record.
    pub(crate) fn message(
        &mut self,
        origin: &Origin,
        recipient: &AccountId,
        server_ts: u64,
        copies: &[(u32, u64, &[u8])],
    ) -> Vec<usize> {
        let start = self.open(KIND_MESSAGE_V4);
        self.buf.extend_from_slice(&origin.accept_id.to_be_bytes());
        self.put_origin_head(origin);
        self.buf.extend_from_slice(recipient.as_bytes());
        self.buf.extend_from_slice(&origin.message_id);
        self.buf.extend_from_slice(&server_ts.to_be_bytes());
        self.buf.extend_from_slice(&origin.expires.to_be_bytes());
        self.buf
            .extend_from_slice(&(copies.len() as u16).to_be_bytes());
        let mut offsets = Vec::with_capacity(copies.len());
        for (device, seq, envelope) in copies {
            self.buf.extend_from_slice(&device.to_be_bytes());
            self.buf.extend_from_slice(&seq.to_be_bytes());
            self.buf
                .extend_from_slice(&(envelope.len() as u32).to_be_bytes());
            offsets.push(self.buf.len() - start);
            self.buf.extend_from_slice(envelope);
        }
        self.close(start);
        offsets
    }

    /// Append a `Queued` record. Returns where the envelope starts
    /// relative to the start of this record.
    pub(crate) fn queued(
        &mut self,
        recipient: &AccountId,
        device: u32,
        seq: u64,
        origin: &Origin,
        envelope: &[u8],
    ) -> usize {
        let start = self.open(KIND_QUEUED_V4);
        self.buf.extend_from_slice(&origin.accept_id.to_be_bytes());
        self.buf.extend_from_slice(recipient.as_bytes());
        self.buf.extend_from_slice(&device.to_be_bytes());
        self.buf.extend_from_slice(&seq.to_be_bytes());
        self.put_origin_head(origin);
        self.buf.extend_from_slice(&origin.message_id);
        self.buf.extend_from_slice(&origin.expires.to_be_bytes());
        self.buf
            .extend_from_slice(&(envelope.len() as u32).to_be_bytes());
        let at = self.buf.len() - start;
        self.buf.extend_from_slice(envelope);
        self.close(start);
        at
    }

    /// Append a `Sent` record.
    pub(crate) fn sent(
        &mut self,
        sender: &AccountId,
        recipient: &AccountId,
        message_id: &MessageId,
        server_ts: u64,
        expires: u64,
        accept_id: u64,
    ) {
        let start = self.open(KIND_SENT_V4);
        self.buf.extend_from_slice(&accept_id.to_be_bytes());
        self.buf.extend_from_slice(sender.as_bytes());
        self.buf.extend_from_slice(recipient.as_bytes());
        self.buf.extend_from_slice(message_id);
        self.buf.extend_from_slice(&server_ts.to_be_bytes());
        self.buf.extend_from_slice(&expires.to_be_bytes());
        self.close(start);
    }

    /// Append a `Removed` record.
    pub(crate) fn removed(&mut self, account: &AccountId, device: u32, seq: u64) {
        let start = self.open(KIND_REMOVED);
        self.buf.extend_from_slice(account.as_bytes());
        self.buf.extend_from_slice(&device.to_be_bytes());
        self.buf.extend_from_slice(&seq.to_be_bytes());
        self.close(start);
    }

    /// Append a `DeviceDropped` record.
    pub(crate) fn device_dropped(&mut self, account: &AccountId, device: u32) {
        let start = self.open(KIND_DEVICE_DROPPED);
        self.buf.extend_from_slice(account.as_bytes());
        self.buf.extend_from_slice(&device.to_be_bytes());
        self.close(start);
    }

    /// Append a `Clock` record.
    pub(crate) fn clock(&mut self, ms: u64) {
        let start = self.open(KIND_CLOCK);
        self.buf.extend_from_slice(&ms.to_be_bytes());
        self.close(start);
    }

    /// Append a `Receipt` record.
    pub(crate) fn receipt(&mut self, account: &AccountId, device: u32, seq: u64, r: &ReceiptRef) {
        let start = self.open(KIND_RECEIPT_V4);
        self.buf.extend_from_slice(&r.accept_id.to_be_bytes());
        self.buf.extend_from_slice(account.as_bytes());
        self.buf.extend_from_slice(&device.to_be_bytes());
        self.buf.extend_from_slice(&seq.to_be_bytes());
        self.buf.extend_from_slice(r.recipient.as_bytes());
        self.buf
            .extend_from_slice(&r.recipient_device.to_be_bytes());
        self.buf.extend_from_slice(&r.message_id);
        self.buf.extend_from_slice(&r.expires.to_be_bytes());
        self.close(start);
    }

    /// Append a `Conversation` record.
    pub(crate) fn conversation(&mut self, business: &AccountId, customer: &AccountId, ms: u64) {
        let start = self.open(KIND_CONVERSATION);
        self.buf.extend_from_slice(business.as_bytes());
        self.buf.extend_from_slice(customer.as_bytes());
        self.buf.extend_from_slice(&ms.to_be_bytes());
        self.close(start);
    }

    /// Append a `Quota` record.
    pub(crate) fn quota(&mut self, sender: &AccountId, day: u32, accepted: u64) {
        let start = self.open(KIND_QUOTA);
        self.buf.extend_from_slice(sender.as_bytes());
        self.buf.extend_from_slice(&day.to_be_bytes());
        self.buf.extend_from_slice(&accepted.to_be_bytes());
        self.close(start);
    }

    /// Append a `Reached` record.
    pub(crate) fn reached(&mut self, business: &AccountId, day: u32, customer: &AccountId) {
        let start = self.open(KIND_REACHED);
        self.buf.extend_from_slice(business.as_bytes());
        self.buf.extend_from_slice(&day.to_be_bytes());
        self.buf.extend_from_slice(customer.as_bytes());
        self.close(start);
    }

    /// Append a `Ledger` record. Template ids and franking tags longer
    /// than the send limits allow never reach here (the `Send` handler
    /// refuses them); longer ones are cut to what a u16 length holds.
    pub(crate) fn ledger(&mut self, e: &LedgerEntry) {
        let kind = if e.priced.is_some() {
            KIND_LEDGER_PRICED
        } else {
            KIND_LEDGER
        };
        let start = self.open(kind);
        self.buf.extend_from_slice(&e.accept_id.to_be_bytes());
        self.buf.extend_from_slice(&e.message_id);
        self.buf.extend_from_slice(e.business.as_bytes());
        self.buf.extend_from_slice(e.customer.as_bytes());
        self.buf.push(e.category.to_byte());
        self.buf.extend_from_slice(&e.accepted_at_ms.to_be_bytes());
        for field in [e.template_id.as_bytes(), e.franking_tag.as_slice()] {
            let field = &field[..field.len().min(usize::from(u16::MAX))];
            self.buf
                .extend_from_slice(&(field.len() as u16).to_be_bytes());
            self.buf.extend_from_slice(field);
        }
        if let Some(priced) = e.priced {
            self.buf.extend_from_slice(&priced.millionths.to_be_bytes());
            self.buf.push(u8::from(priced.inside_window));
        }
        self.close(start);
    }

    /// Append a `Delivered` record (kind 21, or 17 for an entry replayed
    /// from one, which has no position in its bill).
    pub(crate) fn delivered(&mut self, e: &DeliveredEntry) {
        let kind = if e.chain_seq.is_some() {
            KIND_DELIVERED_CHAINED
        } else {
            KIND_DELIVERED
        };
        let start = self.open(kind);
        self.buf.extend_from_slice(&e.accept_id.to_be_bytes());
        self.buf.extend_from_slice(&e.customer_device.to_be_bytes());
        self.buf.extend_from_slice(&e.signed_at_ms.to_be_bytes());
        self.buf.extend_from_slice(&e.signature);
        if let Some(seq) = e.chain_seq {
            self.buf.extend_from_slice(&e.delivered_at_ms.to_be_bytes());
            self.buf.extend_from_slice(&seq.to_be_bytes());
        }
        self.close(start);
    }

    /// Append a `Consent` record.
    pub(crate) fn consent(&mut self, c: &ConsentRecord) {
        let start = self.open(KIND_CONSENT);
        self.buf.extend_from_slice(c.customer.as_bytes());
        self.buf.extend_from_slice(c.business.as_bytes());
        self.buf.extend_from_slice(&c.device.to_be_bytes());
        self.buf.push(c.categories.bits());
        self.buf.extend_from_slice(&c.issued_at_ms.to_be_bytes());
        self.buf.extend_from_slice(&c.expires_at_ms.to_be_bytes());
        self.buf.extend_from_slice(&c.counter.to_be_bytes());
        self.buf.extend_from_slice(&c.signature);
        self.buf.push(u8::from(c.revoked_by_block));
        self.close(start);
    }

    /// Append a `BlockEpoch` record.
    pub(crate) fn block_epoch(&mut self, blocker: &AccountId, blocked: &AccountId, epoch: u64) {
        let start = self.open(KIND_BLOCK_EPOCH);
        self.buf.extend_from_slice(blocker.as_bytes());
        self.buf.extend_from_slice(blocked.as_bytes());
        self.buf.extend_from_slice(&epoch.to_be_bytes());
        self.close(start);
    }

    /// Append a `Reach` record.
    pub(crate) fn reach(&mut self, business: &AccountId, customer: &AccountId, at_ms: u64) {
        let start = self.open(KIND_REACH);
        self.buf.extend_from_slice(business.as_bytes());
        self.buf.extend_from_slice(customer.as_bytes());
        self.buf.extend_from_slice(&at_ms.to_be_bytes());
        self.close(start);
    }

    /// Append a `SeqFloor` record.
    pub(crate) fn seq_floor(&mut self, next: u64) {
        let start = self.open(KIND_SEQ_FLOOR);
        self.buf.extend_from_slice(&next.to_be_bytes());
        self.close(start);
    }

    fn put_origin_head(&mut self, origin: &Origin) {
        self.buf.extend_from_slice(origin.sender.as_bytes());
        self.buf
            .extend_from_slice(&origin.sender_device.to_be_bytes());
    }

    /// Reserve the header and write the kind; returns the record start.
    fn open(&mut self, kind: u8) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; RECORD_HEADER_LEN]);
        self.buf.push(kind);
        start
    }

    /// Fill in the header of the record that began at `start`.
    fn close(&mut self, start: usize) {
        let body = &self.buf[start + RECORD_HEADER_LEN..];
        let len = (body.len() as u32).to_le_bytes();
        let crc = crc32fast::hash(body).to_le_bytes();
        self.buf[start..start + 4].copy_from_slice(&len);
        self.buf[start + 4..start + 8].copy_from_slice(&crc);
    }
}

#[cfg(test)]
impl Writer {
    /// Rewrite the records of a writer made by `Writer::default()` as the
    /// format-3 encoder wrote them (no accept ids): the old encoder, kept
    /// for migration tests.
    pub(crate) fn into_format3(self) -> Vec<u8> {
        let mut out = Writer::default();
        let mut at = 0;
        while at < self.buf.len() {
            let header: [u8; RECORD_HEADER_LEN] = self.buf[at..at + RECORD_HEADER_LEN]
                .try_into()
                .unwrap_or([0; RECORD_HEADER_LEN]);
            let (len, _) = parse_header(&header);
            let body = &self.buf[at + RECORD_HEADER_LEN..at + RECORD_HEADER_LEN + len];
            let (kind, rest) = match body[0] {
                KIND_MESSAGE_V4 => (KIND_MESSAGE, &body[9..]),
                KIND_QUEUED_V4 => (KIND_QUEUED, &body[9..]),
                KIND_SENT_V4 => (KIND_SENT, &body[9..]),
                KIND_RECEIPT_V4 => (KIND_RECEIPT, &body[9..]),
                kind => (kind, &body[1..]),
            };
            let start = out.open(kind);
            out.buf.extend_from_slice(rest);
            out.close(start);
            at += RECORD_HEADER_LEN + len;
        }
        out.buf
    }
}

/// Parse a record header: the body length and its CRC.
pub(crate) fn parse_header(header: &[u8; RECORD_HEADER_LEN]) -> (usize, u32) {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    (len, crc)
}

/// Whether `body` matches the CRC from its header.
pub(crate) fn crc_matches(body: &[u8], crc: u32) -> bool {
    crc32fast::hash(body) == crc
}

/// Decode one record body (CRC already checked).
pub(crate) fn decode(body: &[u8]) -> Result<Record<'_>, Malformed> {
    let mut r = Reader { body, at: 0 };
    let kind = r.u8()?;
    // Format 4 kinds open with the accept id; older ones have none.
    let accept_id = match kind {
        KIND_MESSAGE_V4 | KIND_QUEUED_V4 | KIND_SENT_V4 | KIND_RECEIPT_V4 => r.u64()?,
        _ => LEGACY_ACCEPT_ID,
    };
    let record = match kind {
        KIND_MESSAGE | KIND_MESSAGE_V4 => {
            let sender = r.account()?;
            let sender_device = r.u32()?;
            let recipient = r.account()?;
            let message_id = r.id()?;
            let server_ts = r.u64()?;
            let expires = r.u64()?;
            let count = r.u16()?;
            let mut copies = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let device = r.u32()?;
                let seq = r.u64()?;
                copies.push(r.copy(device, seq)?);
            }
            Record::Message {
                origin: Origin {
                    sender,
                    sender_device,
                    message_id,
                    expires,
                    accept_id,
                },
                recipient,
                server_ts,
                copies,
            }
        }
        KIND_QUEUED | KIND_QUEUED_V4 => {
            let recipient = r.account()?;
            let device = r.u32()?;
            let seq = r.u64()?;
            let sender = r.account()?;
            let sender_device = r.u32()?;
            let message_id = r.id()?;
            let expires = r.u64()?;
            let copy = r.copy(device, seq)?;
            Record::Queued {
                origin: Origin {
                    sender,
                    sender_device,
                    message_id,
                    expires,
                    accept_id,
                },
                recipient,
                copy,
            }
        }
        KIND_SENT | KIND_SENT_V4 => Record::Sent {
            sender: r.account()?,
            recipient: r.account()?,
            message_id: r.id()?,
            server_ts: r.u64()?,
            expires: r.u64()?,
            accept_id,
        },
        KIND_REMOVED => Record::Removed {
            account: r.account()?,
            device: r.u32()?,
            seq: r.u64()?,
        },
        KIND_DEVICE_DROPPED => Record::DeviceDropped {
            account: r.account()?,
            device: r.u32()?,
        },
        KIND_SEQ_FLOOR => Record::SeqFloor { next: r.u64()? },
        KIND_CLOCK => Record::Clock { ms: r.u64()? },
        KIND_RECEIPT | KIND_RECEIPT_V4 => Record::Receipt {
            account: r.account()?,
            device: r.u32()?,
            seq: r.u64()?,
            receipt: ReceiptRef {
                recipient: r.account()?,
                recipient_device: r.u32()?,
                message_id: r.id()?,
                expires: r.u64()?,
                accept_id,
            },
        },
        KIND_CONVERSATION => Record::Conversation {
            business: r.account()?,
            customer: r.account()?,
            last_customer_ms: r.u64()?,
        },
        KIND_QUOTA => Record::Quota {
            sender: r.account()?,
            day: r.u32()?,
            accepted: r.u64()?,
        },
        KIND_REACHED => Record::Reached {
            business: r.account()?,
            day: r.u32()?,
            customer: r.account()?,
        },
        KIND_LEDGER | KIND_LEDGER_PRICED => {
            let accept_id = r.u64()?;
            let message_id = r.id()?;
            let business = r.account()?;
            let customer = r.account()?;
            let category = BilledCategory::from_byte(r.u8()?).ok_or(Malformed)?;
            let accepted_at_ms = r.u64()?;
            let len = usize::from(r.u16()?);
            let template_id = std::str::from_utf8(r.take(len)?)
                .map_err(|_| Malformed)?
                .to_owned();
            let len = usize::from(r.u16()?);
            let franking_tag = r.take(len)?.to_vec();
            let priced = if kind == KIND_LEDGER_PRICED {
                Some(Priced {
                    millionths: r.u64()?,
                    inside_window: match r.u8()? {
                        0 => false,
                        1 => true,
                        _ => return Err(Malformed),
                    },
                })
            } else {
                None
            };
            Record::Ledger(LedgerEntry {
                accept_id,
                message_id,
                business,
                customer,
                category,
                template_id,
                franking_tag,
                accepted_at_ms,
                priced,
            })
        }
        KIND_DELIVERED | KIND_DELIVERED_CHAINED => {
            let accept_id = r.u64()?;
            let customer_device = r.u32()?;
            let signed_at_ms = r.u64()?;
            let signature = r
                .take(DELIVERY_SIGNATURE_LEN)?
                .try_into()
                .map_err(|_| Malformed)?;
            let (delivered_at_ms, chain_seq) = if kind == KIND_DELIVERED_CHAINED {
                (r.u64()?, Some(r.u64()?))
            } else {
                (signed_at_ms, None)
            };
            Record::Delivered(DeliveredEntry {
                accept_id,
                customer_device,
                signed_at_ms,
                signature,
                delivered_at_ms,
                chain_seq,
            })
        }
        KIND_REACH => Record::Reach {
            business: r.account()?,
            customer: r.account()?,
            at_ms: r.u64()?,
        },
        KIND_BLOCK_EPOCH => Record::BlockEpoch {
            blocker: r.account()?,
            blocked: r.account()?,
            epoch: r.u64()?,
        },
        KIND_CONSENT => Record::Consent(ConsentRecord {
            customer: r.account()?,
            business: r.account()?,
            device: r.u32()?,
            categories: ConsentCategories::from_bits(u32::from(r.u8()?)).ok_or(Malformed)?,
            issued_at_ms: r.u64()?,
            expires_at_ms: r.u64()?,
            counter: r.u64()?,
            signature: r
                .take(CONSENT_SIGNATURE_LEN)?
                .try_into()
                .map_err(|_| Malformed)?,
            revoked_by_block: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(Malformed),
            },
        }),
        _ => return Err(Malformed),
    };
    if r.at != body.len() {
        return Err(Malformed);
    }
    Ok(record)
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.at.checked_add(n).ok_or(Malformed)?;
        let bytes = self.body.get(self.at..end).ok_or(Malformed)?;
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        self.take(N)?.try_into().map_err(|_| Malformed)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn id(&mut self) -> Result<MessageId, Malformed> {
        self.array()
    }

    fn account(&mut self) -> Result<AccountId, Malformed> {
        AccountId::from_bytes(self.take(16)?).map_err(|_| Malformed)
    }

    fn copy(&mut self, device: u32, seq: u64) -> Result<CopyRef<'a>, Malformed> {
        let len = self.u32()? as usize;
        let body_offset = self.at;
        let envelope = self.take(len)?;
        Ok(CopyRef {
            device,
            seq,
            envelope,
            body_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(b: u8) -> AccountId {
        AccountId::from_bytes(&[b; 16]).unwrap()
    }

    fn bodies(bytes: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let header: [u8; 8] = bytes[at..at + 8].try_into().unwrap();
            let (len, crc) = parse_header(&header);
            let body = &bytes[at + 8..at + 8 + len];
            assert!(crc_matches(body, crc));
            out.push(body);
            at += 8 + len;
        }
        out
    }

    #[test]
    fn ledger_and_delivered_records_round_trip_old_kinds_and_new() {
        let entry = |priced| LedgerEntry {
            accept_id: 5,
            message_id: [4; 16],
            business: account(1),
            customer: account(2),
            category: BilledCategory::Marketing,
            template_id: "ab".repeat(32),
            franking_tag: vec![7; 32],
            accepted_at_ms: 1_000,
            priced,
        };
        let delivered = |chain_seq: Option<u64>| DeliveredEntry {
            accept_id: 5,
            customer_device: 2,
            signed_at_ms: 900,
            signature: [3; DELIVERY_SIGNATURE_LEN],
            // Written as kind 17 (no delivery time), read back as the
            // device's signing time.
            delivered_at_ms: if chain_seq.is_some() { 1_500 } else { 900 },
            chain_seq,
        };
        let priced = Some(Priced {
            millionths: 90_000,
            inside_window: true,
        });
        let mut w = Writer::default();
        w.ledger(&entry(None));
        w.ledger(&entry(priced));
        w.delivered(&delivered(None));
        w.delivered(&delivered(Some(4)));
        let bytes = w.take();
        let bodies = bodies(&bytes);
        assert_eq!(
            bodies.iter().map(|b| b[0]).collect::<Vec<_>>(),
            [
                KIND_LEDGER,
                KIND_LEDGER_PRICED,
                KIND_DELIVERED,
                KIND_DELIVERED_CHAINED
            ]
        );
        let records: Vec<Record<'_>> = bodies.into_iter().map(|b| decode(b).unwrap()).collect();
        assert_eq!(records[0], Record::Ledger(entry(None)));
        assert_eq!(records[1], Record::Ledger(entry(priced)));
        assert_eq!(records[2], Record::Delivered(delivered(None)));
        assert_eq!(records[3], Record::Delivered(delivered(Some(4))));
    }

    #[test]
    fn every_kind_round_trips_and_offsets_point_at_the_envelopes() {
        let origin = Origin {
            sender: account(1),
            sender_device: 7,
            message_id: [9; 16],
            expires: 1234,
            accept_id: 10,
        };
        let mut w = Writer::default();
        let offsets = w.message(
            &origin,
            &account(2),
            55,
            &[(1, 10, b"first".as_slice()), (2, 11, b"second".as_slice())],
        );
        let queued_at = w.len();
        let q_offset = w.queued(&account(2), 3, 12, &origin, b"third");
        w.sent(&account(1), &account(2), &[9; 16], 55, 1234, 10);
        w.removed(&account(2), 1, 10);
        w.device_dropped(&account(2), 2);
        w.seq_floor(77);
        w.clock(88);
        let receipt = ReceiptRef {
            recipient: account(2),
            recipient_device: 3,
            message_id: [9; 16],
            expires: 99,
            accept_id: 10,
        };
        w.receipt(&account(1), 7, 13, &receipt);
        let bytes = w.take();
        assert_eq!(&bytes[offsets[0]..offsets[0] + 5], b"first");
        assert_eq!(&bytes[offsets[1]..offsets[1] + 6], b"second");
        assert_eq!(
            &bytes[queued_at + q_offset..queued_at + q_offset + 5],
            b"third"
        );
        let records: Vec<Record<'_>> = bodies(&bytes)
            .into_iter()
            .map(|b| decode(b).unwrap())
            .collect();
        assert_eq!(records.len(), 8);
        assert_eq!(records[5], Record::SeqFloor { next: 77 });
        assert_eq!(records[6], Record::Clock { ms: 88 });
        assert_eq!(
            records[7],
            Record::Receipt {
                account: account(1),
                device: 7,
                seq: 13,
                receipt
            }
        );
        match &records[0] {
            Record::Message {
                origin: o,
                recipient,
                server_ts,
                copies,
            } => {
                assert_eq!(o, &origin);
                assert_eq!(*recipient, account(2));
                assert_eq!(*server_ts, 55);
                assert_eq!(copies.len(), 2);
                assert_eq!(copies[1].envelope, b"second");
                assert_eq!(copies[1].seq, 11);
                assert_eq!(copies[1].body_offset + RECORD_HEADER_LEN, offsets[1]);
            }
            other => panic!("expected a message, got {other:?}"),
        }
        assert!(matches!(&records[1], Record::Queued { copy, .. } if copy.envelope == b"third"));
        assert!(matches!(records[3], Record::Removed { seq: 10, .. }));
        assert!(matches!(
            records[4],
            Record::DeviceDropped { device: 2, .. }
        ));
    }

    #[test]
    fn truncated_or_unknown_bodies_are_malformed() {
        let mut w = Writer::default();
        w.removed(&account(2), 1, 10);
        let bytes = w.take();
        let body = &bytes[8..];
        for cut in 0..body.len() {
            assert_eq!(decode(&body[..cut]), Err(Malformed));
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert_eq!(decode(&longer), Err(Malformed));
        let mut unknown = body.to_vec();
        unknown[0] = 99;
        assert_eq!(decode(&unknown), Err(Malformed));
    }
}
