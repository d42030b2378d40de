//! The ledger role: append-only entries for what the relay may bill,
//! read back in order.
//!
//! An entry is appended only inside the atomic accept of the send it
//! bills (see [`NewMessage::effects`](super::NewMessage) and
//! docs/STORAGE.md), never on its own, so this trait only reads. Plain
//! Rust types: no protobuf in the signatures.

use std::future::Future;

use comptoir_protocol::{AccountId, RateCard};

use super::{MESSAGE_ID_LEN, StorageResult};

/// What the ledger may bill: a template category, or a business's Status
/// key to a subscriber (the wire `Category` values of the envelope:
/// a Status key travels as `CATEGORY_CONTROL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BilledCategory {
    /// A utility template (order updates, receipts).
    Utility,
    /// An authentication template (one-time codes).
    Authentication,
    /// A marketing template.
    Marketing,
    /// A Status key a business's post delivered to a subscriber.
    Status,
}

impl BilledCategory {
    /// The byte stored for it (the wire `Category` number).
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Utility => 3,
            Self::Authentication => 4,
            Self::Marketing => 5,
            Self::Status => 6,
        }
    }

    /// The category stored as `byte`, if it is one.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            3 => Some(Self::Utility),
            4 => Some(Self::Authentication),
            5 => Some(Self::Marketing),
            6 => Some(Self::Status),
            _ => None,
        }
    }

    /// Its name, as operators see it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Utility => "utility",
            Self::Authentication => "authentication",
            Self::Marketing => "marketing",
            Self::Status => "status",
        }
    }
}

/// What the ledger holds for one send it may bill, written in the same
/// durable step as the send's device copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The relay-assigned accept id of the send (unique: one entry per
    /// accept id).
    pub accept_id: u64,
    /// The sender-chosen message id.
    pub message_id: [u8; MESSAGE_ID_LEN],
    /// The sending business.
    pub business: AccountId,
    /// The receiving customer.
    pub customer: AccountId,
    /// The template's category (or Status).
    pub category: BilledCategory,
    /// The template id (empty for Status).
    pub template_id: String,
    /// The franking commitment the envelope carried (may be empty).
    pub franking_tag: Vec<u8>,
    /// The relay's accept time, ms since the epoch.
    pub accepted_at_ms: u64,
    /// The price fixed at accept by the rate card, and whether the
    /// customer's window was open; `None` for an entry written before the
    /// relay priced at accept (record kind 16), priced when it is billed
    /// by the running rate card as outside the window.
    pub priced: Option<Priced>,
}

/// A price fixed at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priced {
    /// Millionths of the rate card's currency unit.
    pub millionths: u64,
    /// Whether the customer's 24-hour window was open at accept.
    pub inside_window: bool,
}

/// Length of a delivery signature (Ed25519).
pub const DELIVERY_SIGNATURE_LEN: usize = 64;

/// The first delivery of a billed send to a device of its customer: that
/// device's signed ack (docs/PROTOCOL.md, "Signed delivery"). Written in
/// the same durable step as the ack's deletion of the copy; one per
/// accept id (the first device to ack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveredEntry {
    /// The accept id of the billed send (its [`LedgerEntry`]).
    pub accept_id: u64,
    /// The customer's device that acked first.
    pub customer_device: u32,
    /// The device's clock when it signed, ms since the epoch.
    pub signed_at_ms: u64,
    /// The device's identity-key signature over the delivery proof payload.
    pub signature: [u8; DELIVERY_SIGNATURE_LEN],
    /// The relay's clock when it took the ack, ms since the epoch (for an
    /// entry written before the relay kept it, record kind 17: the
    /// device's `signed_at_ms`).
    pub delivered_at_ms: u64,
    /// Its position in the business's bill (0 for the first line); `None`
    /// for an entry written before bills were chained (record kind 17):
    /// those come first, in order of accept id.
    pub chain_seq: Option<u64>,
}

/// The append-only ledger, read in order of accept id.
pub trait Ledger: Send + Sync + 'static {
    /// Up to `limit` entries with an accept id above `after` (from the
    /// start with `None`), in order.
    fn ledger_entries(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = StorageResult<Vec<LedgerEntry>>> + Send;

    /// `business`'s bill: each of its billed sends that a customer device
    /// acked (signed), with that first delivery, in the order of its hash
    /// chain (docs/PROTOCOL.md, "Bills"); append-only, so a later call
    /// returns an extension of an earlier one.
    fn bill(
        &self,
        business: AccountId,
    ) -> impl Future<Output = StorageResult<Vec<(LedgerEntry, DeliveredEntry)>>> + Send;

    /// Every rate card the relay has priced with, in the order they took
    /// effect (the last is in effect now); empty before the first start
    /// that recorded one.
    fn rate_cards(&self) -> impl Future<Output = StorageResult<Vec<RateCard>>> + Send;

    /// Record `card` as in effect from its `effective_from_ms`, which must
    /// be later than every recorded card's. Durable on return.
    fn record_rate_card(&self, card: &RateCard) -> impl Future<Output = StorageResult<()>> + Send;

    /// Distinct customers `business` reached by business-initiated
    /// conversations (templates) on UTC day `day`.
    fn customers_reached(
        &self,
        business: AccountId,
        day: u32,
    ) -> impl Future<Output = StorageResult<u64>> + Send;
}
