//! Bills a business can verify: the relay's rate card, the per-business
//! hash chain of billed lines (one per billed message's first signed
//! delivery), the operator's signature over the chain's head, and the
//! one check of all of it that the relay's tests and the business's
//! client share (docs/PROTOCOL.md, "Bills").
//!
//! Every encoding here is fixed-width big-endian with length-prefixed
//! strings; each signed or hashed payload opens with its own context
//! string, so no payload can be taken for another.

use sha2::{Digest, Sha256};

use crate::account::AccountId;
use crate::delivery::{DeliveryFields, MAX_FRANKING_COMMITMENT_LEN, verify_delivery};
use crate::device_list::DeviceList;
use crate::error::{DecodeError, Error, Result};
use crate::keys::{AccountKey, IdentityKey, OperatorKey, OperatorKeyPair, SIGNATURE_LEN};
use crate::proto::wire;
use crate::template::TemplateCategory;

/// Context string hashed before each line's bytes.
pub const BILL_LINE_CONTEXT: &[u8] = b"Comptoir bill line v1";
/// Context string that opens the signed head payload.
pub const BILL_HEAD_CONTEXT: &[u8] = b"Comptoir bill head v1";
/// Context string that opens the signed rate card payload (v2 added the
/// `status` row, v3 the time the card took effect).
pub const RATE_CARD_CONTEXT: &[u8] = b"Comptoir rate card v3";
/// Length of a line hash (SHA-256).
pub const BILL_HASH_LEN: usize = 32;
/// The `previous_hash` of the first line: 32 zero bytes.
pub const GENESIS_HASH: [u8; BILL_HASH_LEN] = [0; BILL_HASH_LEN];
/// Longest template id a line carries (the relay's send limit).
pub const MAX_BILL_TEMPLATE_ID_LEN: usize = 128;
/// Millionths of the currency unit in one hundredth (a penny, a cent):
/// the unit totals are rounded to for display.
pub const MILLIONTHS_PER_HUNDREDTH: u64 = 10_000;

/// What a bill line bills: a template of one of the three template
/// categories, or the delivery of a business's Status key to a customer
/// (docs/PROTOCOL.md §13.5). Encoded as the wire `Category` number of the
/// envelope billed: 3, 4 or 5 for templates, 6 (`CATEGORY_CONTROL`, the
/// category a Status key travels as) for Status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BillCategory {
    /// A utility template.
    Utility,
    /// An authentication template.
    Authentication,
    /// A marketing template.
    Marketing,
    /// A Status key delivered to a subscriber.
    Status,
}

impl BillCategory {
    /// The byte in the canonical encodings (the wire `Category` number).
    pub fn wire_number(self) -> u8 {
        match self {
            Self::Utility => 3,
            Self::Authentication => 4,
            Self::Marketing => 5,
            Self::Status => 6,
        }
    }

    /// The category of `number`; `None` for any other number.
    pub fn from_wire_number(number: u8) -> Option<Self> {
        match number {
            3 => Some(Self::Utility),
            4 => Some(Self::Authentication),
            5 => Some(Self::Marketing),
            6 => Some(Self::Status),
            _ => None,
        }
    }

    /// Lowercase name, for people (`utility`, `status`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Utility => "utility",
            Self::Authentication => "authentication",
            Self::Marketing => "marketing",
            Self::Status => "status",
        }
    }
}

impl std::fmt::Display for BillCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<TemplateCategory> for BillCategory {
    fn from(category: TemplateCategory) -> Self {
        match category {
            TemplateCategory::Utility => Self::Utility,
            TemplateCategory::Authentication => Self::Authentication,
            TemplateCategory::Marketing => Self::Marketing,
        }
    }
}

impl From<BillCategory> for wire::Category {
    fn from(category: BillCategory) -> Self {
        match category {
            BillCategory::Utility => Self::Utility,
            BillCategory::Authentication => Self::Authentication,
            BillCategory::Marketing => Self::Marketing,
            BillCategory::Status => Self::Control,
        }
    }
}

/// The billed categories in the order rate cards and totals list them.
pub const BILLED_CATEGORIES: [BillCategory; 4] = [
    BillCategory::Utility,
    BillCategory::Authentication,
    BillCategory::Marketing,
    BillCategory::Status,
];

/// Round a total in millionths once, half up, to whole hundredths of the
/// currency unit (pence, cents): the only rounding a bill ever makes.
/// Lines and totals stay exact in millionths; this is for the amount due.
pub fn round_to_hundredths(millionths: u64) -> u64 {
    millionths.saturating_add(MILLIONTHS_PER_HUNDREDTH / 2) / MILLIONTHS_PER_HUNDREDTH
}

/// One category's prices, millionths of the currency unit per delivered
/// message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prices {
    /// Inside the 24-hour window (the customer wrote in the last 24 hours).
    pub inside_window: u64,
    /// Outside it.
    pub outside_window: u64,
}

impl Prices {
    /// The price inside or outside the window.
    pub fn at(&self, inside_window: bool) -> u64 {
        if inside_window {
            self.inside_window
        } else {
            self.outside_window
        }
    }
}

/// The relay's rate card: a price for each template category inside and
/// outside the window, and one for each Status key a business's post
/// delivers to a subscriber. (Service replies are never billed: they are
/// free inside the window and refused outside it.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateCard {
    /// When the relay started pricing with this card, ms since the epoch
    /// by its clock: it prices every message it accepts from then until
    /// the next card's time (0: since the relay's first card).
    pub effective_from_ms: u64,
    /// ISO 4217 code of the currency (three ASCII uppercase letters).
    pub currency: String,
    /// Utility templates.
    pub utility: Prices,
    /// Authentication templates.
    pub authentication: Prices,
    /// Marketing templates.
    pub marketing: Prices,
    /// A business's Status key delivered to a subscriber (no window: one
    /// price). 0, the default, bills nothing: no line is written.
    pub status: u64,
}

impl RateCard {
    /// The prices of `category` (Status: its one price, both ways).
    pub fn prices(&self, category: impl Into<BillCategory>) -> Prices {
        match category.into() {
            BillCategory::Utility => self.utility,
            BillCategory::Authentication => self.authentication,
            BillCategory::Marketing => self.marketing,
            BillCategory::Status => Prices {
                inside_window: self.status,
                outside_window: self.status,
            },
        }
    }

    /// The price of one delivered message of `category`.
    pub fn price(&self, category: impl Into<BillCategory>, inside_window: bool) -> u64 {
        self.prices(category).at(inside_window)
    }

    /// Whether `other` has the same currency and prices (whatever their
    /// times).
    pub fn same_prices(&self, other: &Self) -> bool {
        self.currency == other.currency
            && self.utility == other.utility
            && self.authentication == other.authentication
            && self.marketing == other.marketing
            && self.status == other.status
    }

    /// The bytes the operator signs: `"Comptoir rate card v3" ||
    /// effective_from_ms (u64 BE) || currency_len (u8) || currency
    /// (ASCII) || 4 × (category (u8: 3 utility, 4 authentication, 5
    /// marketing, 6 status) || inside (u64 BE) || outside (u64 BE))`, in
    /// that category order (status: its price twice).
    pub fn payload(&self) -> Vec<u8> {
        let currency = &self.currency.as_bytes()[..self.currency.len().min(255)];
        let mut out = Vec::with_capacity(
            RATE_CARD_CONTEXT.len() + 9 + currency.len() + BILLED_CATEGORIES.len() * 17,
        );
        out.extend_from_slice(RATE_CARD_CONTEXT);
        out.extend_from_slice(&self.effective_from_ms.to_be_bytes());
        out.push(currency.len() as u8);
        out.extend_from_slice(currency);
        for category in BILLED_CATEGORIES {
            let prices = self.prices(category);
            out.push(category.wire_number());
            out.extend_from_slice(&prices.inside_window.to_be_bytes());
            out.extend_from_slice(&prices.outside_window.to_be_bytes());
        }
        out
    }

    /// A card back from its [`payload`](Self::payload) bytes (how the
    /// relay keeps the cards it priced with).
    pub fn from_payload(bytes: &[u8]) -> Result<Self> {
        let rest = bytes
            .strip_prefix(RATE_CARD_CONTEXT)
            .ok_or_else(|| bad("rate card: not a v3 rate card"))?;
        let (effective, rest) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| bad("rate card: too short"))?;
        let (&len, rest) = rest
            .split_first()
            .ok_or_else(|| bad("rate card: too short"))?;
        let currency = rest
            .get(..usize::from(len))
            .and_then(|c| std::str::from_utf8(c).ok())
            .ok_or_else(|| bad("rate card: bad currency"))?;
        let mut rows = &rest[usize::from(len)..];
        let mut prices = [Prices {
            inside_window: 0,
            outside_window: 0,
        }; BILLED_CATEGORIES.len()];
        for (category, slot) in BILLED_CATEGORIES.iter().zip(prices.iter_mut()) {
            let (row, more) = rows
                .split_first_chunk::<17>()
                .ok_or_else(|| bad("rate card: too short"))?;
            let [number, prices @ ..] = row;
            if *number != category.wire_number() {
                return Err(bad("rate card: rows out of order"));
            }
            let (inside, outside) = prices.split_at(8);
            let price = |b: &[u8]| b.first_chunk::<8>().map(|b| u64::from_be_bytes(*b));
            *slot = Prices {
                inside_window: price(inside).ok_or_else(|| bad("rate card: too short"))?,
                outside_window: price(outside).ok_or_else(|| bad("rate card: too short"))?,
            };
            rows = more;
        }
        if !rows.is_empty() {
            return Err(bad("rate card: trailing bytes"));
        }
        let [utility, authentication, marketing, status] = prices;
        Ok(Self {
            effective_from_ms: u64::from_be_bytes(*effective),
            currency: currency.to_owned(),
            utility,
            authentication,
            marketing,
            status: status.inside_window,
        })
    }

    /// Sign with the operator key, as a frame.
    pub fn sign(&self, operator: &OperatorKeyPair) -> wire::SignedRateCard {
        wire::SignedRateCard {
            effective_from_ms: self.effective_from_ms,
            currency: self.currency.clone(),
            rows: BILLED_CATEGORIES
                .iter()
                .map(|&c| wire::RateCardRow {
                    category: wire::Category::from(c) as i32,
                    inside_window_millionths: self.prices(c).inside_window,
                    outside_window_millionths: self.prices(c).outside_window,
                })
                .collect(),
            signature: operator.sign(&self.payload()).to_vec(),
        }
    }

    /// A signed frame back to a rate card, checked against the operator key.
    pub fn verified(signed: &wire::SignedRateCard, operator: &OperatorKey) -> Result<Self> {
        let mut rows = [None; BILLED_CATEGORIES.len()];
        for row in &signed.rows {
            let category = category_from_wire(row.category)
                .ok_or_else(|| bad("rate card: not a billed category"))?;
            let slot = &mut rows[BILLED_CATEGORIES
                .iter()
                .position(|&c| c == category)
                .unwrap_or(0)];
            if slot.is_some() {
                return Err(bad("rate card: a category appears twice"));
            }
            *slot = Some(Prices {
                inside_window: row.inside_window_millionths,
                outside_window: row.outside_window_millionths,
            });
        }
        let [
            Some(utility),
            Some(authentication),
            Some(marketing),
            Some(status),
        ] = rows
        else {
            return Err(bad("rate card: a category is missing"));
        };
        if status.inside_window != status.outside_window {
            return Err(bad("rate card: the status row has two prices"));
        }
        let card = Self {
            effective_from_ms: signed.effective_from_ms,
            currency: signed.currency.clone(),
            utility,
            authentication,
            marketing,
            status: status.inside_window,
        };
        operator.verify("rate card", &card.payload(), &signed.signature)?;
        Ok(card)
    }
}

fn bad(what: &'static str) -> Error {
    Error::Decode(DecodeError::Protobuf(what.into()))
}

fn category_from_wire(number: i32) -> Option<BillCategory> {
    u8::try_from(number)
        .ok()
        .and_then(BillCategory::from_wire_number)
}

/// One line of a business's bill: the first signed delivery of one billed
/// message, and the hash of the line before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillLine {
    /// Position in the business's chain, from 1.
    pub index: u64,
    /// The hash of line `index - 1` ([`GENESIS_HASH`] for line 1).
    pub previous_hash: [u8; BILL_HASH_LEN],
    /// The relay's accept id of the message.
    pub accept_id: u64,
    /// The business's message id.
    pub message_id: [u8; 16],
    /// The billed business.
    pub business: AccountId,
    /// The customer it was delivered to.
    pub customer: AccountId,
    /// The template's category (or Status), fixed at accept.
    pub category: BillCategory,
    /// Whether the customer's 24-hour window was open at accept.
    pub inside_window: bool,
    /// The template id (hex), as sent.
    pub template_id: String,
    /// The relay's accept time, ms since the epoch.
    pub accepted_at_ms: u64,
    /// The relay's time of the first signed ack, ms since the epoch.
    pub delivered_at_ms: u64,
    /// The price fixed at accept, millionths of the currency unit.
    pub price_millionths: u64,
    /// The customer's device whose signed ack this is.
    pub customer_device: u32,
    /// The franking commitment the envelope carried (signed in the ack).
    pub franking_commitment: Vec<u8>,
    /// The device's clock when it signed, ms since the epoch.
    pub device_signed_at_ms: u64,
    /// The device's signature over the delivery proof (docs/PROTOCOL.md,
    /// "Signed delivery").
    pub device_signature: [u8; SIGNATURE_LEN],
}

impl BillLine {
    /// The line's bytes: `index (u64 BE) || previous_hash (32) ||
    /// accept_id (u64 BE) || message_id (16) || business (16) || customer
    /// (16) || category (u8) || inside_window (u8: 0 or 1) ||
    /// template_id_len (u16 BE) || template_id (UTF-8) || accepted_at_ms
    /// (u64 BE) || delivered_at_ms (u64 BE) || price_millionths (u64 BE)
    /// || customer_device (u32 BE) || franking_len (u16 BE) || franking
    /// commitment || device_signed_at_ms (u64 BE) || device_signature
    /// (64)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let template =
            &self.template_id.as_bytes()[..self.template_id.len().min(usize::from(u16::MAX))];
        let franking = &self.franking_commitment[..self
            .franking_commitment
            .len()
            .min(MAX_FRANKING_COMMITMENT_LEN)];
        let mut out = Vec::with_capacity(230 + template.len() + franking.len());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.previous_hash);
        out.extend_from_slice(&self.accept_id.to_be_bytes());
        out.extend_from_slice(&self.message_id);
        out.extend_from_slice(self.business.as_bytes());
        out.extend_from_slice(self.customer.as_bytes());
        out.push(self.category.wire_number());
        out.push(u8::from(self.inside_window));
        out.extend_from_slice(&(template.len() as u16).to_be_bytes());
        out.extend_from_slice(template);
        out.extend_from_slice(&self.accepted_at_ms.to_be_bytes());
        out.extend_from_slice(&self.delivered_at_ms.to_be_bytes());
        out.extend_from_slice(&self.price_millionths.to_be_bytes());
        out.extend_from_slice(&self.customer_device.to_be_bytes());
        out.extend_from_slice(&(franking.len() as u16).to_be_bytes());
        out.extend_from_slice(franking);
        out.extend_from_slice(&self.device_signed_at_ms.to_be_bytes());
        out.extend_from_slice(&self.device_signature);
        out
    }

    /// The line's hash: SHA-256(`"Comptoir bill line v1"` || bytes).
    pub fn hash(&self) -> [u8; BILL_HASH_LEN] {
        let mut h = Sha256::new();
        h.update(BILL_LINE_CONTEXT);
        h.update(self.to_bytes());
        h.finalize().into()
    }

    /// What the device signed when it acked.
    pub fn delivery_fields(&self) -> DeliveryFields {
        DeliveryFields {
            accept_id: self.accept_id,
            message_id: self.message_id,
            business: self.business,
            customer: self.customer,
            customer_device: self.customer_device,
            franking_commitment: self.franking_commitment.clone(),
            time_ms: self.device_signed_at_ms,
        }
    }

    /// As a frame.
    pub fn to_wire(&self) -> wire::BillLine {
        wire::BillLine {
            index: self.index,
            previous_hash: self.previous_hash.to_vec(),
            accept_id: self.accept_id,
            message_id: self.message_id.to_vec(),
            business_account: self.business.to_vec(),
            customer_account: self.customer.to_vec(),
            category: wire::Category::from(self.category) as i32,
            inside_window: self.inside_window,
            template_id: self.template_id.clone(),
            accepted_at_ms: self.accepted_at_ms,
            delivered_at_ms: self.delivered_at_ms,
            price_millionths: self.price_millionths,
            customer_device: self.customer_device,
            franking_commitment: self.franking_commitment.clone(),
            device_signed_at_ms: self.device_signed_at_ms,
            device_signature: self.device_signature.to_vec(),
        }
    }

    /// A frame back to a line (not yet verified: see [`verify_bill`]).
    pub fn from_wire(line: &wire::BillLine) -> Result<Self> {
        Ok(Self {
            index: line.index,
            previous_hash: line
                .previous_hash
                .as_slice()
                .try_into()
                .map_err(|_| bad("bill line: previous_hash is not 32 bytes"))?,
            accept_id: line.accept_id,
            message_id: line
                .message_id
                .as_slice()
                .try_into()
                .map_err(|_| bad("bill line: message_id is not 16 bytes"))?,
            business: AccountId::from_bytes(&line.business_account)?,
            customer: AccountId::from_bytes(&line.customer_account)?,
            category: category_from_wire(line.category)
                .ok_or_else(|| bad("bill line: not a billed category"))?,
            inside_window: line.inside_window,
            template_id: line.template_id.clone(),
            accepted_at_ms: line.accepted_at_ms,
            delivered_at_ms: line.delivered_at_ms,
            price_millionths: line.price_millionths,
            customer_device: line.customer_device,
            franking_commitment: line.franking_commitment.clone(),
            device_signed_at_ms: line.device_signed_at_ms,
            device_signature: line
                .device_signature
                .as_slice()
                .try_into()
                .map_err(|_| bad("bill line: device_signature is not 64 bytes"))?,
        })
    }
}

/// Chain `lines` (in order, without their index and previous hash) from
/// the genesis: numbers them from 1 and links each to the one before.
/// Returns the lines and the head hash (the last line's hash, or
/// [`GENESIS_HASH`] for none).
pub fn chain(lines: impl IntoIterator<Item = BillLine>) -> (Vec<BillLine>, [u8; BILL_HASH_LEN]) {
    let mut previous = GENESIS_HASH;
    let mut out = Vec::new();
    for (i, mut line) in lines.into_iter().enumerate() {
        line.index = i as u64 + 1;
        line.previous_hash = previous;
        previous = line.hash();
        out.push(line);
    }
    (out, previous)
}

/// The head of a business's chain as the operator signs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillHead {
    /// The business.
    pub business: AccountId,
    /// Lines in the chain.
    pub count: u64,
    /// The last line's hash ([`GENESIS_HASH`] for an empty chain).
    pub head_hash: [u8; BILL_HASH_LEN],
    /// The relay's clock when it signed, ms since the epoch.
    pub signed_at_ms: u64,
}

impl BillHead {
    /// The bytes the operator signs: `"Comptoir bill head v1" || business
    /// (16) || count (u64 BE) || head_hash (32) || signed_at_ms (u64 BE)`.
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BILL_HEAD_CONTEXT.len() + 16 + 8 + 32 + 8);
        out.extend_from_slice(BILL_HEAD_CONTEXT);
        out.extend_from_slice(self.business.as_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.head_hash);
        out.extend_from_slice(&self.signed_at_ms.to_be_bytes());
        out
    }

    /// Sign with the operator key, as a frame.
    pub fn sign(&self, operator: &OperatorKeyPair) -> wire::BillHead {
        wire::BillHead {
            business_account: self.business.to_vec(),
            count: self.count,
            head_hash: self.head_hash.to_vec(),
            signed_at_ms: self.signed_at_ms,
            signature: operator.sign(&self.payload()).to_vec(),
        }
    }

    /// A signed frame back to a head, checked against the operator key.
    pub fn verified(signed: &wire::BillHead, operator: &OperatorKey) -> Result<Self> {
        let head = Self {
            business: AccountId::from_bytes(&signed.business_account)?,
            count: signed.count,
            head_hash: signed
                .head_hash
                .as_slice()
                .try_into()
                .map_err(|_| bad("bill head: head_hash is not 32 bytes"))?,
            signed_at_ms: signed.signed_at_ms,
        };
        operator.verify("bill head", &head.payload(), &signed.signature)?;
        Ok(head)
    }
}

/// Why a bill does not check; every line-level failure names the line
/// (its position in the chain, from 1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BillError {
    /// The head's signature does not verify against the pinned operator key.
    #[error("the bill's head is not signed by the operator key you pinned")]
    BadHeadSignature,
    /// The rate card's signature does not verify against the pinned key.
    #[error("the rate card is not signed by the operator key you pinned")]
    BadRateCardSignature,
    /// The head is another account's.
    #[error("the bill's head is for another business")]
    OtherBusinessHead,
    /// A line is missing: `line` was expected and a later one came.
    #[error("line {line} is missing (the next line given is {got})")]
    Dropped {
        /// The missing line.
        line: u64,
        /// The index of the line found in its place.
        got: u64,
    },
    /// A line came after one with a higher or equal index.
    #[error("line {line} is out of order (expected line {expected})")]
    OutOfOrder {
        /// The index of the misplaced line.
        line: u64,
        /// The index expected there.
        expected: u64,
    },
    /// A line is beyond the count the operator signed.
    #[error("line {line} is not in the signed chain (it has {count} lines)")]
    Extra {
        /// The extra line.
        line: u64,
        /// Lines in the signed head.
        count: u64,
    },
    /// The chain ends before the signed count: the last lines are missing.
    #[error("line {line} is missing (the signed chain has {count} lines)")]
    Truncated {
        /// The first missing line.
        line: u64,
        /// Lines in the signed head.
        count: u64,
    },
    /// A line's content is not what the chain recorded: the next line's
    /// previous hash (or, for the last line, the signed head) does not
    /// match its hash.
    #[error("line {line} was altered: its hash does not match the chain")]
    Altered {
        /// The altered line.
        line: u64,
    },
    /// A line bills another business.
    #[error("line {line} bills another business")]
    OtherBusiness {
        /// The line.
        line: u64,
    },
    /// No key is known for the device a line names.
    #[error("line {line}: device {device} is not in the customer's signed device list")]
    UnknownDevice {
        /// The line.
        line: u64,
        /// The device it names.
        device: u32,
    },
    /// A line's device signature does not verify.
    #[error("line {line}: the customer device's delivery signature does not verify")]
    BadDeviceSignature {
        /// The line.
        line: u64,
    },
    /// The chain no longer extends a head this business verified before:
    /// its first `count` lines are not the ones it verified.
    #[error(
        "the chain no longer extends the {count} lines you verified before: the relay rewrote them"
    )]
    Rewritten {
        /// Lines in the head verified before.
        count: u64,
    },
    /// A periodic head's signature does not verify against the pinned
    /// operator key.
    #[error("the periodic head at {count} lines is not signed by the operator key you pinned")]
    BadPeriodicHeadSignature {
        /// The count the head claims.
        count: u64,
    },
    /// A periodic head is for another business.
    #[error("the periodic head at {count} lines is for another business")]
    PeriodicHeadOtherBusiness {
        /// The count the head claims.
        count: u64,
    },
    /// The chain does not extend a periodic head the operator signed: it
    /// has fewer lines than the head's count, or its line `count` does not
    /// hash to the head's hash. The relay signed one chain and bills
    /// another.
    #[error(
        "the chain does not extend the head the operator signed at {count} lines: the relay changed its chain"
    )]
    PeriodicHeadNotInChain {
        /// The head's count.
        count: u64,
    },
    /// Two periodic heads contradict each other: one signed later counts
    /// fewer lines than one signed earlier, though a chain only grows.
    #[error(
        "the periodic head at {count} lines was signed after one with more lines: the chain shrank"
    )]
    PeriodicHeadsShrink {
        /// The later head's count.
        count: u64,
    },
    /// Two rate cards of the bill take effect at the same time, or are in
    /// different currencies.
    #[error("the bill's rate cards contradict each other (same start time or another currency)")]
    RateCardsDisagree,
    /// No rate card of the bill was in effect when a line's message was
    /// accepted (the card that priced it is missing).
    #[error("line {line}: no rate card given was in effect at its accept time ({accepted_at_ms})")]
    NoRateCardInEffect {
        /// The line.
        line: u64,
        /// Its accept time, ms since the epoch.
        accepted_at_ms: u64,
    },
    /// A line's price is not the price of the rate card in effect when its
    /// message was accepted.
    #[error("line {line}: price {price} is not on the rate card ({category} {where_}: {expected})")]
    PriceNotOnRateCard {
        /// The line.
        line: u64,
        /// The line's price, millionths.
        price: u64,
        /// The rate card's price, millionths.
        expected: u64,
        /// The line's category.
        category: BillCategory,
        /// "inside the window", "outside the window" or (Status) "per
        /// delivery".
        where_: &'static str,
    },
}

/// What a verified bill adds up to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BillTotals {
    /// Lines checked.
    pub lines: u64,
    /// Lines and millionths per category, in [`BILLED_CATEGORIES`] order.
    pub per_category: [(u64, u64); BILLED_CATEGORIES.len()],
    /// Sum of every line's price, millionths.
    pub total_millionths: u64,
}

impl BillTotals {
    /// Count one line.
    pub fn add(&mut self, category: BillCategory, price: u64) {
        let i = BILLED_CATEGORIES
            .iter()
            .position(|&c| c == category)
            .unwrap_or(0);
        self.lines += 1;
        self.per_category[i].0 += 1;
        self.per_category[i].1 = self.per_category[i].1.saturating_add(price);
        self.total_millionths = self.total_millionths.saturating_add(price);
    }
}

/// The operator-signed rate cards of a bill, checked and in order of the
/// time each took effect.
#[derive(Clone, Debug)]
pub struct RateCards(Vec<RateCard>);

impl RateCards {
    /// Check every card's signature against the operator key: one currency,
    /// no two cards taking effect at the same time.
    pub fn verified<'a>(
        signed: impl IntoIterator<Item = &'a wire::SignedRateCard>,
        operator: &OperatorKey,
    ) -> std::result::Result<Self, BillError> {
        let mut cards = signed
            .into_iter()
            .map(|card| RateCard::verified(card, operator))
            .collect::<Result<Vec<_>>>()
            .map_err(|_| BillError::BadRateCardSignature)?;
        cards.sort_by_key(|card| card.effective_from_ms);
        let disagree = cards.windows(2).any(|pair| {
            pair[0].effective_from_ms == pair[1].effective_from_ms
                || pair[0].currency != pair[1].currency
        });
        if disagree {
            return Err(BillError::RateCardsDisagree);
        }
        Ok(Self(cards))
    }

    /// The card in effect at `at_ms`: the last to take effect at or before it.
    pub fn in_effect_at(&self, at_ms: u64) -> Option<&RateCard> {
        self.0
            .iter()
            .rev()
            .find(|card| card.effective_from_ms <= at_ms)
    }
}

/// Check a business's whole bill: the head's and the rate cards' operator
/// signatures, that `lines` are lines 1 to `head.count` in order, each
/// linked to the one before and the last to the signed head hash, each
/// billing `business`, each device signature against `device_key`'s key
/// for (customer, device) (from the customer's signed device list), and
/// each price against the rate card in effect when the relay accepted the
/// line's message (`rate_cards`: the bill's current card and the earlier
/// ones, in any order); then each of `periodic_heads` (the heads the
/// relay signed on its schedule, see [`check_periodic_heads`]). The first
/// failure is returned.
pub fn verify_bill<'a>(
    business: &AccountId,
    lines: &[BillLine],
    head: &wire::BillHead,
    periodic_heads: &[wire::BillHead],
    rate_cards: impl IntoIterator<Item = &'a wire::SignedRateCard>,
    operator: &OperatorKey,
    device_key: impl Fn(&AccountId, u32) -> Option<IdentityKey>,
) -> std::result::Result<BillTotals, BillError> {
    let head = BillHead::verified(head, operator).map_err(|_| BillError::BadHeadSignature)?;
    if head.business != *business {
        return Err(BillError::OtherBusinessHead);
    }
    let cards = RateCards::verified(rate_cards, operator)?;
    let mut totals = BillTotals::default();
    let mut previous = GENESIS_HASH;
    for (i, line) in lines.iter().enumerate() {
        let expected = i as u64 + 1;
        if line.index != expected && lines.iter().any(|l| l.index == expected) {
            return Err(BillError::OutOfOrder {
                line: line.index,
                expected,
            });
        }
        if line.index > expected {
            return Err(BillError::Dropped {
                line: expected,
                got: line.index,
            });
        }
        if line.index < expected {
            return Err(BillError::OutOfOrder {
                line: line.index,
                expected,
            });
        }
        if line.index > head.count {
            return Err(BillError::Extra {
                line: line.index,
                count: head.count,
            });
        }
        if line.previous_hash != previous {
            // The line before was changed after line `expected` chained to it.
            return Err(BillError::Altered { line: expected - 1 });
        }
        if line.business != *business {
            return Err(BillError::OtherBusiness { line: expected });
        }
        let key =
            device_key(&line.customer, line.customer_device).ok_or(BillError::UnknownDevice {
                line: expected,
                device: line.customer_device,
            })?;
        verify_delivery(&key, &line.delivery_fields(), &line.device_signature)
            .map_err(|_| BillError::BadDeviceSignature { line: expected })?;
        let card =
            cards
                .in_effect_at(line.accepted_at_ms)
                .ok_or(BillError::NoRateCardInEffect {
                    line: expected,
                    accepted_at_ms: line.accepted_at_ms,
                })?;
        let price = card.price(line.category, line.inside_window);
        if line.price_millionths != price {
            return Err(BillError::PriceNotOnRateCard {
                line: expected,
                price: line.price_millionths,
                expected: price,
                category: line.category,
                where_: match (line.category, line.inside_window) {
                    (BillCategory::Status, _) => "per delivery",
                    (_, true) => "inside the window",
                    (_, false) => "outside the window",
                },
            });
        }
        previous = line.hash();
        totals.add(line.category, line.price_millionths);
    }
    let count = lines.len() as u64;
    if count < head.count {
        return Err(BillError::Truncated {
            line: count + 1,
            count: head.count,
        });
    }
    if previous != head.head_hash {
        return Err(BillError::Altered { line: count });
    }
    check_periodic_heads(business, lines, periodic_heads, operator)?;
    Ok(totals)
}

/// Check heads the relay signed on its schedule against a chain already
/// checked from line 1 (`lines`): each is signed by the operator key
/// ([`BillError::BadPeriodicHeadSignature`]), names `business`
/// ([`BillError::PeriodicHeadOtherBusiness`]), and is this chain's head
/// at its count: line `count` hashes to its head hash, or the genesis
/// hash for a count of 0 ([`BillError::PeriodicHeadNotInChain`]); and, in
/// the order they were signed, their counts never go down
/// ([`BillError::PeriodicHeadsShrink`]). Returns them checked, in the
/// order they were signed.
pub fn check_periodic_heads(
    business: &AccountId,
    lines: &[BillLine],
    periodic_heads: &[wire::BillHead],
    operator: &OperatorKey,
) -> std::result::Result<Vec<BillHead>, BillError> {
    let mut checked = Vec::with_capacity(periodic_heads.len());
    for signed in periodic_heads {
        let count = signed.count;
        let head = BillHead::verified(signed, operator)
            .map_err(|_| BillError::BadPeriodicHeadSignature { count })?;
        if head.business != *business {
            return Err(BillError::PeriodicHeadOtherBusiness { count });
        }
        let at_count = match count {
            0 => Some(GENESIS_HASH),
            n => usize::try_from(n - 1)
                .ok()
                .and_then(|i| lines.get(i))
                .map(BillLine::hash),
        };
        if at_count != Some(head.head_hash) {
            return Err(BillError::PeriodicHeadNotInChain { count });
        }
        checked.push(head);
    }
    checked.sort_by_key(|head| (head.signed_at_ms, head.count));
    if let Some(pair) = checked
        .windows(2)
        .find(|pair| pair[1].count < pair[0].count)
    {
        return Err(BillError::PeriodicHeadsShrink {
            count: pair[1].count,
        });
    }
    Ok(checked)
}

/// The key of `customer`'s device `device` from `lists`, device lists a
/// bill carries for devices removed since they acked: only a list that
/// verifies against `account_key` (the customer's pinned account key),
/// is `customer`'s, is older than the customer's current list
/// (`current_version`) and names `device` counts; the newest such list's
/// key is returned. A list the relay made up or altered does not verify,
/// so its key is never returned.
pub fn superseded_device_key(
    lists: &[wire::SignedDeviceList],
    customer: &AccountId,
    account_key: &AccountKey,
    current_version: u64,
    device: u32,
) -> Option<IdentityKey> {
    lists
        .iter()
        .filter_map(|signed| DeviceList::verify(signed, Some(account_key)).ok())
        .filter(|list| list.account_id == *customer && list.version < current_version)
        .filter_map(|list| list.device(device).map(|key| (list.version, *key)))
        .max_by_key(|(version, _)| *version)
        .map(|(_, key)| key)
}

/// Check that verified `lines` (from line 1) extend a head verified
/// before (`count` lines ending with `head_hash`): an append-only chain
/// only grows, so its first `count` lines must be the same ones.
pub fn check_extends(
    lines: &[BillLine],
    count: u64,
    head_hash: &[u8; BILL_HASH_LEN],
) -> std::result::Result<(), BillError> {
    if count == 0 {
        return Ok(());
    }
    let kept = usize::try_from(count - 1)
        .ok()
        .and_then(|i| lines.get(i))
        .map(BillLine::hash);
    if kept.as_ref() == Some(head_hash) {
        Ok(())
    } else {
        Err(BillError::Rewritten { count })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use super::*;
    use crate::delivery::sign_delivery;
    use crate::keys::IdentityKeyPair;

    struct Fixture {
        operator: OperatorKeyPair,
        device: IdentityKeyPair,
        business: AccountId,
        customer: AccountId,
        card: RateCard,
    }

    fn fixture() -> Fixture {
        Fixture {
            operator: OperatorKeyPair::from_seed(&[7; 32]),
            device: IdentityKeyPair::from_seed(&[9; 32]),
            business: AccountId::from_bytes(&[0xBB; 16]).unwrap(),
            customer: AccountId::from_bytes(&[0xCC; 16]).unwrap(),
            card: RateCard {
                effective_from_ms: 0,
                currency: "GBP".into(),
                utility: Prices {
                    inside_window: 0,
                    outside_window: 5_000,
                },
                authentication: Prices {
                    inside_window: 30_000,
                    outside_window: 30_000,
                },
                marketing: Prices {
                    inside_window: 90_000,
                    outside_window: 90_000,
                },
                status: 2_000,
            },
        }
    }

    fn line(f: &Fixture, n: u64, category: impl Into<BillCategory>, inside: bool) -> BillLine {
        let category = category.into();
        let mut line = BillLine {
            index: 0,
            previous_hash: GENESIS_HASH,
            accept_id: 100 + n,
            message_id: [n as u8; 16],
            business: f.business,
            customer: f.customer,
            category,
            inside_window: inside,
            template_id: "ab".repeat(32),
            accepted_at_ms: 1_700_000_000_000 + n,
            delivered_at_ms: 1_700_000_100_000 + n,
            price_millionths: f.card.price(category, inside),
            customer_device: 1,
            franking_commitment: vec![],
            device_signed_at_ms: 1_700_000_099_000 + n,
            device_signature: [0; 64],
        };
        line.device_signature = sign_delivery(&f.device, &line.delivery_fields());
        line
    }

    fn signed_head(f: &Fixture, count: u64, head_hash: [u8; BILL_HASH_LEN]) -> wire::BillHead {
        BillHead {
            business: f.business,
            count,
            head_hash,
            signed_at_ms: 1_700_001_000_000,
        }
        .sign(&f.operator)
    }

    fn bill(f: &Fixture) -> (Vec<BillLine>, wire::BillHead, wire::SignedRateCard) {
        let (lines, head_hash) = chain([
            line(f, 1, TemplateCategory::Utility, false),
            line(f, 2, TemplateCategory::Marketing, true),
            line(f, 3, TemplateCategory::Authentication, false),
        ]);
        let head = BillHead {
            business: f.business,
            count: lines.len() as u64,
            head_hash,
            signed_at_ms: 1_700_001_000_000,
        }
        .sign(&f.operator);
        (lines, head, f.card.sign(&f.operator))
    }

    fn verify(
        f: &Fixture,
        lines: &[BillLine],
        head: &wire::BillHead,
        card: &wire::SignedRateCard,
    ) -> std::result::Result<BillTotals, BillError> {
        let key = *f.device.public();
        let customer = f.customer;
        verify_bill(
            &f.business,
            lines,
            head,
            &[],
            [card],
            &f.operator.public(),
            move |c, d| (*c == customer && d == 1).then_some(key),
        )
    }

    #[test]
    fn a_genuine_bill_verifies_and_adds_up() {
        let f = fixture();
        let (lines, head, card) = bill(&f);
        let totals = verify(&f, &lines, &head, &card).unwrap();
        assert_eq!(totals.lines, 3);
        assert_eq!(totals.total_millionths, 5_000 + 90_000 + 30_000);
        assert_eq!(
            totals.per_category,
            [(1, 5_000), (1, 30_000), (1, 90_000), (0, 0)]
        );
        // Frames round-trip.
        for l in &lines {
            assert_eq!(&BillLine::from_wire(&l.to_wire()).unwrap(), l);
        }
    }

    #[test]
    fn a_card_round_trips_through_its_payload_and_refuses_damage() {
        let mut card = fixture().card;
        card.effective_from_ms = 1_700_000_000_123;
        assert_eq!(RateCard::from_payload(&card.payload()).unwrap(), card);
        let payload = card.payload();
        assert!(RateCard::from_payload(&payload[..payload.len() - 1]).is_err());
        let mut longer = payload.clone();
        longer.push(0);
        assert!(RateCard::from_payload(&longer).is_err());
        assert!(RateCard::from_payload(b"Comptoir rate card v2").is_err());
    }

    #[test]
    fn each_line_is_priced_by_the_card_in_effect_at_its_accept() {
        let f = fixture();
        // A price change after line 1 was accepted, before line 2 was.
        let mut dearer = f.card.clone();
        dearer.effective_from_ms = 1_700_000_000_002;
        dearer.utility.outside_window = 7_000;
        let (lines, head_hash) = chain([line(&f, 1, TemplateCategory::Utility, false), {
            let mut l = line(&f, 2, TemplateCategory::Utility, false);
            l.price_millionths = 7_000;
            l.device_signature = sign_delivery(&f.device, &l.delivery_fields());
            l
        }]);
        let head = signed_head(&f, 2, head_hash);
        let old = f.card.sign(&f.operator);
        let new = dearer.sign(&f.operator);
        let key = *f.device.public();
        let check = |cards: &[&wire::SignedRateCard]| {
            verify_bill(
                &f.business,
                &lines,
                &head,
                &[],
                cards.iter().copied(),
                &f.operator.public(),
                |_, _| Some(key),
            )
        };
        assert_eq!(check(&[&new, &old]).unwrap().total_millionths, 12_000);
        // Without the old card, line 1 was priced by no card given.
        assert_eq!(
            check(&[&new]),
            Err(BillError::NoRateCardInEffect {
                line: 1,
                accepted_at_ms: 1_700_000_000_001
            })
        );
        // Without the new card, line 2 is not on the (old) card.
        assert!(matches!(
            check(&[&old]),
            Err(BillError::PriceNotOnRateCard { line: 2, .. })
        ));
        // Two cards from the same time, or in two currencies, contradict.
        let mut twin = dearer.clone();
        twin.marketing.inside_window = 1;
        assert_eq!(
            check(&[&old, &new, &twin.sign(&f.operator)]),
            Err(BillError::RateCardsDisagree)
        );
        let mut euros = dearer.clone();
        euros.currency = "EUR".into();
        assert_eq!(
            check(&[&old, &euros.sign(&f.operator)]),
            Err(BillError::RateCardsDisagree)
        );
        // A card's time is signed: moving it breaks the signature.
        let mut moved = new.clone();
        moved.effective_from_ms = 0;
        assert_eq!(check(&[&moved]), Err(BillError::BadRateCardSignature));
    }

    #[test]
    fn each_tampering_is_named() {
        let f = fixture();
        let (lines, head, card) = bill(&f);
        let mut dropped = lines.clone();
        dropped.remove(1);
        assert_eq!(
            verify(&f, &dropped, &head, &card),
            Err(BillError::Dropped { line: 2, got: 3 })
        );
        let mut last_dropped = lines.clone();
        last_dropped.pop();
        assert_eq!(
            verify(&f, &last_dropped, &head, &card),
            Err(BillError::Truncated { line: 3, count: 3 })
        );
        let mut reordered = lines.clone();
        reordered.swap(0, 1);
        assert_eq!(
            verify(&f, &reordered, &head, &card),
            Err(BillError::OutOfOrder {
                line: 2,
                expected: 1
            })
        );
        let mut altered = lines.clone();
        altered[1].delivered_at_ms += 1;
        assert_eq!(
            verify(&f, &altered, &head, &card),
            Err(BillError::Altered { line: 2 })
        );
        let mut altered_last = lines.clone();
        altered_last[2].template_id = "cd".repeat(32);
        assert_eq!(
            verify(&f, &altered_last, &head, &card),
            Err(BillError::Altered { line: 3 })
        );
        let mut extra = lines.clone();
        let mut more = line(&f, 4, TemplateCategory::Utility, false);
        more.index = 4;
        more.previous_hash = lines[2].hash();
        extra.push(more);
        assert_eq!(
            verify(&f, &extra, &head, &card),
            Err(BillError::Extra { line: 4, count: 3 })
        );
        let mut bad_sig = lines.clone();
        bad_sig[0].device_signature[0] ^= 1;
        assert_eq!(
            verify(&f, &bad_sig, &head, &card),
            Err(BillError::BadDeviceSignature { line: 1 })
        );
        // A price off the card, even with the chain and head recomputed.
        let mut priced = lines.clone();
        priced[1].price_millionths = 91_000;
        let (priced, head_hash) = chain(priced);
        let resigned = BillHead {
            business: f.business,
            count: 3,
            head_hash,
            signed_at_ms: 1,
        }
        .sign(&f.operator);
        assert!(matches!(
            verify(&f, &priced, &resigned, &card),
            Err(BillError::PriceNotOnRateCard {
                line: 2,
                price: 91_000,
                expected: 90_000,
                ..
            })
        ));
        let mut forged = head.clone();
        forged.count = 2;
        assert_eq!(
            verify(&f, &lines, &forged, &card),
            Err(BillError::BadHeadSignature)
        );
        let mut forged_card = card.clone();
        forged_card.rows[0].outside_window_millionths = 1;
        assert_eq!(
            verify(&f, &lines, &head, &forged_card),
            Err(BillError::BadRateCardSignature)
        );
    }

    #[test]
    fn a_status_line_is_priced_by_the_status_row() {
        let f = fixture();
        let (lines, head_hash) = chain([
            line(&f, 1, BillCategory::Status, false),
            line(&f, 2, TemplateCategory::Utility, false),
        ]);
        assert_eq!(lines[0].to_bytes()[8 + 32 + 8 + 16 + 16 + 16], 6);
        let head = signed_head(&f, 2, head_hash);
        let card = f.card.sign(&f.operator);
        assert_eq!(card.rows.len(), 4);
        assert_eq!(card.rows[3].category, wire::Category::Control as i32);
        assert_eq!(
            RateCard::verified(&card, &f.operator.public()).unwrap(),
            f.card
        );
        let totals = verify(&f, &lines, &head, &card).unwrap();
        assert_eq!(
            totals.per_category,
            [(1, 5_000), (0, 0), (0, 0), (1, 2_000)]
        );
        assert_eq!(BillLine::from_wire(&lines[0].to_wire()).unwrap(), lines[0]);
        // A card without the status row, or with two status prices, is refused.
        let mut short = card.clone();
        short.rows.pop();
        assert!(RateCard::verified(&short, &f.operator.public()).is_err());
        let mut split = card.clone();
        split.rows[3].inside_window_millionths = 1;
        assert!(RateCard::verified(&split, &f.operator.public()).is_err());
        // A status line priced off the card.
        let mut priced = lines.clone();
        priced[0].price_millionths = 2_001;
        let (priced, head_hash) = chain(priced);
        let resigned = BillHead {
            business: f.business,
            count: 2,
            head_hash,
            signed_at_ms: 1,
        }
        .sign(&f.operator);
        assert!(matches!(
            verify(&f, &priced, &resigned, &card),
            Err(BillError::PriceNotOnRateCard {
                line: 1,
                expected: 2_000,
                category: BillCategory::Status,
                ..
            })
        ));
    }

    #[test]
    fn periodic_heads_must_be_heads_of_this_chain() {
        let f = fixture();
        let (lines, head, card) = bill(&f);
        let key = *f.device.public();
        let check = |periodic: &[wire::BillHead]| {
            verify_bill(
                &f.business,
                &lines,
                &head,
                periodic,
                [&card],
                &f.operator.public(),
                |_, _| Some(key),
            )
        };
        let at = |count: u64, hash: [u8; BILL_HASH_LEN], signed_at_ms: u64| {
            BillHead {
                business: f.business,
                count,
                head_hash: hash,
                signed_at_ms,
            }
            .sign(&f.operator)
        };
        let one = at(1, lines[0].hash(), 10);
        let three = at(3, lines[2].hash(), 20);
        assert_eq!(check(&[one.clone(), three.clone()]).unwrap().lines, 3);
        assert_eq!(
            check_periodic_heads(
                &f.business,
                &lines,
                &[three.clone(), one.clone()],
                &f.operator.public()
            )
            .unwrap()
            .iter()
            .map(|h| h.count)
            .collect::<Vec<_>>(),
            [1, 3],
            "in the order they were signed"
        );
        // Tampered: the signature no longer verifies.
        let mut tampered = one.clone();
        tampered.signed_at_ms += 1;
        assert_eq!(
            check(&[tampered]),
            Err(BillError::BadPeriodicHeadSignature { count: 1 })
        );
        // Signed, but not this chain's head at its count, or beyond it.
        assert_eq!(
            check(&[at(2, lines[0].hash(), 15)]),
            Err(BillError::PeriodicHeadNotInChain { count: 2 })
        );
        assert_eq!(
            check(&[at(4, lines[2].hash(), 25)]),
            Err(BillError::PeriodicHeadNotInChain { count: 4 })
        );
        assert_eq!(check(&[at(0, GENESIS_HASH, 5)]).unwrap().lines, 3);
        // Another business's head.
        let theirs = BillHead {
            business: f.customer,
            count: 1,
            head_hash: lines[0].hash(),
            signed_at_ms: 10,
        }
        .sign(&f.operator);
        assert_eq!(
            check(&[theirs]),
            Err(BillError::PeriodicHeadOtherBusiness { count: 1 })
        );
        // A head signed later with fewer lines: the chain shrank.
        assert_eq!(
            check(&[at(3, lines[2].hash(), 10), at(1, lines[0].hash(), 20)]),
            Err(BillError::PeriodicHeadsShrink { count: 1 })
        );
    }

    #[test]
    fn a_removed_device_key_comes_only_from_an_earlier_list_the_account_signed() {
        let account = crate::keys::AccountKeyPair::from_seed(&[3; 32]);
        let customer = AccountId::from_bytes(&[0xCC; 16]).unwrap();
        let phone = *IdentityKeyPair::from_seed(&[4; 32]).public();
        let laptop = *IdentityKeyPair::from_seed(&[5; 32]).public();
        let list = |key: &crate::keys::AccountKeyPair, version, devices| {
            DeviceList::sign(key, customer, version, devices).unwrap()
        };
        let both = list(&account, 2, vec![(1, phone), (2, laptop)]);
        let pinned = account.public();
        let key = |lists: &[wire::SignedDeviceList], current| {
            superseded_device_key(lists, &customer, &pinned, current, 2)
        };
        assert_eq!(key(std::slice::from_ref(&both), 3), Some(laptop));
        // Not older than the current list, not naming the device, or for
        // another account: no key.
        assert_eq!(key(std::slice::from_ref(&both), 2), None);
        assert_eq!(key(&[list(&account, 1, vec![(1, phone)])], 3), None);
        let other = AccountId::from_bytes(&[0xDD; 16]).unwrap();
        let theirs = DeviceList::sign(&account, other, 2, vec![(2, laptop)]).unwrap();
        assert_eq!(key(&[theirs], 3), None);
        // A key the relay put in: the signature no longer verifies.
        let invented = *IdentityKeyPair::from_seed(&[6; 32]).public();
        let mut altered = both.clone();
        altered.devices[1].identity_key = invented.to_bytes().to_vec();
        assert_eq!(key(&[altered], 3), None);
        // Signed by another account key than the pinned one.
        let impostor = crate::keys::AccountKeyPair::from_seed(&[7; 32]);
        assert_eq!(
            key(&[list(&impostor, 2, vec![(1, phone), (2, invented)])], 3),
            None
        );
        // The newest earlier list naming the device wins.
        let renewed = *IdentityKeyPair::from_seed(&[8; 32]).public();
        let later = list(&account, 4, vec![(1, phone), (2, renewed)]);
        assert_eq!(key(&[later, both], 5), Some(renewed));
    }

    #[test]
    fn a_later_chain_must_extend_an_earlier_head() {
        let f = fixture();
        let (lines, _, _) = bill(&f);
        let two = lines[1].hash();
        assert_eq!(check_extends(&lines, 2, &two), Ok(()));
        assert_eq!(check_extends(&lines, 0, &GENESIS_HASH), Ok(()));
        assert_eq!(
            check_extends(&lines[..1], 2, &two),
            Err(BillError::Rewritten { count: 2 })
        );
        let mut rewritten = lines.clone();
        rewritten[0].delivered_at_ms += 1;
        let (rewritten, _) = chain(rewritten);
        assert_eq!(
            check_extends(&rewritten, 2, &two),
            Err(BillError::Rewritten { count: 2 })
        );
    }

    #[test]
    fn rounding_is_half_up_to_hundredths() {
        assert_eq!(round_to_hundredths(0), 0);
        assert_eq!(round_to_hundredths(4_999), 0);
        assert_eq!(round_to_hundredths(5_000), 1);
        assert_eq!(round_to_hundredths(15_000), 2);
        assert_eq!(round_to_hundredths(125_000), 13);
    }
}
