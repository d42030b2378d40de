//! Consents as the relay keeps them: per (customer, business), the
//! customer-signed token with the highest counter, or the relay's own
//! revocation when the customer blocked the business. Kept by the backend
//! that accepts sends, because the accept checks them in the same step
//! (docs/STORAGE.md).

use comptoir_protocol::{AccountId, ConsentCategories};

/// Length of a consent signature (Ed25519).
pub const CONSENT_SIGNATURE_LEN: usize = 64;

/// One kept consent (or revocation) of a customer for a business.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsentRecord {
    /// The customer who signed it.
    pub customer: AccountId,
    /// The business it is for.
    pub business: AccountId,
    /// The customer's device that signed.
    pub device: u32,
    /// What the business may send (empty: revoked).
    pub categories: ConsentCategories,
    /// When the device issued it, ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// When it stops counting, ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// The pair's counter: only a higher one replaces it.
    pub counter: u64,
    /// The device's signature over the token (docs/PROTOCOL.md, "Consent").
    pub signature: [u8; CONSENT_SIGNATURE_LEN],
    /// The customer blocked the business: revoked whatever the token says.
    pub revoked_by_block: bool,
}

impl ConsentRecord {
    /// What it lets the business send at `now_ms`: its categories, unless
    /// it expired or was revoked by a block.
    pub fn covers_at(&self, now_ms: u64) -> ConsentCategories {
        if self.revoked_by_block || now_ms >= self.expires_at_ms {
            ConsentCategories::NONE
        } else {
            self.categories
        }
    }
}

/// What [`super::Mailbox::set_consent`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentSet {
    /// Kept durably; it replaces the earlier one.
    Kept,
    /// Not kept: its counter is not higher than the one kept.
    Stale {
        /// The counter kept.
        kept: u64,
    },
}

/// The consent state an accept was decided on: the accept is refused if
/// the pair's counter changed since (a grant or revocation in between).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsentSeen {
    /// The customer.
    pub customer: AccountId,
    /// The business.
    pub business: AccountId,
    /// The counter read (0 if none was kept).
    pub counter: u64,
    /// Whether it was revoked by a block when read.
    pub revoked_by_block: bool,
}
