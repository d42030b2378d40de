//! Consent, signed by the customer: the bytes a customer's device signs to
//! let one business send it templates of named categories until an
//! expiry, and the check of such a signature. A token with no category is
//! a revocation. Each (customer, business) pair counts its tokens: the
//! relay keeps the one with the highest counter, so an older token cannot
//! be replayed after a revocation (docs/PROTOCOL.md, "Consent").

use crate::account::{ACCOUNT_ID_LEN, AccountId};
use crate::error::Result;
use crate::keys::{IdentityKey, IdentityKeyPair, SIGNATURE_LEN};
use crate::proto::wire::Category;

/// Context string that opens every consent payload.
pub const CONSENT_CONTEXT: &[u8] = b"Comptoir consent v1";

/// The longest a consent may last: two years (730 days) after it was
/// issued.
pub const MAX_CONSENT_LIFETIME_MS: u64 = 730 * 24 * 60 * 60 * 1000;

/// Categories a consent covers, as a bit set: [`ConsentCategories::UTILITY`],
/// [`ConsentCategories::AUTHENTICATION`], [`ConsentCategories::MARKETING`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConsentCategories(u8);

impl ConsentCategories {
    /// Utility templates (order, delivery, account updates).
    pub const UTILITY: Self = Self(1);
    /// Authentication templates (one-time codes).
    pub const AUTHENTICATION: Self = Self(2);
    /// Marketing templates (offers); needed inside the window too.
    pub const MARKETING: Self = Self(4);
    /// The business's Status posts (docs/PROTOCOL.md, "Status"): the
    /// customer subscribes to them. Not a template category.
    pub const STATUS: Self = Self(8);
    /// No category: a revocation.
    pub const NONE: Self = Self(0);
    const ALL: u8 = 15;

    /// The set from its bits; `None` if an unknown bit is set.
    pub fn from_bits(bits: u32) -> Option<Self> {
        u8::try_from(bits)
            .ok()
            .filter(|b| b & !Self::ALL == 0)
            .map(Self)
    }

    /// The bits (for the wire and the signed bytes).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Both sets together.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether every category of `other` is in this set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty (a revocation).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The consent category of a template category; `None` for the
    /// categories consent does not govern (conversation, service, control).
    pub fn of(category: Category) -> Option<Self> {
        match category {
            Category::Utility => Some(Self::UTILITY),
            Category::Authentication => Some(Self::AUTHENTICATION),
            Category::Marketing => Some(Self::MARKETING),
            _ => None,
        }
    }

    /// The names of the categories, for people (`utility, marketing`).
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::UTILITY, "utility"),
            (Self::AUTHENTICATION, "authentication"),
            (Self::MARKETING, "marketing"),
            (Self::STATUS, "status"),
        ]
        .into_iter()
        .filter(|(c, _)| self.contains(*c))
        .map(|(_, name)| name)
        .collect()
    }
}

/// What a consent token says: this customer lets this business send it
/// templates of these categories until the expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentFields {
    /// The customer granting (or revoking).
    pub customer: AccountId,
    /// The business it is for; worthless to any other.
    pub business: AccountId,
    /// The customer's device that signs (on its signed device list).
    pub device: u32,
    /// What the business may send; empty revokes.
    pub categories: ConsentCategories,
    /// When the device issued it, ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// When it stops counting, ms since the Unix epoch (at most
    /// [`MAX_CONSENT_LIFETIME_MS`] after `issued_at_ms`).
    pub expires_at_ms: u64,
    /// Higher than every earlier token of this (customer, business) pair.
    pub counter: u64,
}

/// The bytes signed: `"Comptoir consent v1" (19) || customer (16) ||
/// business (16) || device (u32 BE) || categories (u8) || issued_at_ms
/// (u64 BE) || expires_at_ms (u64 BE) || counter (u64 BE)`.
pub fn consent_payload(fields: &ConsentFields) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONSENT_CONTEXT.len() + 2 * ACCOUNT_ID_LEN + 4 + 1 + 24);
    out.extend_from_slice(CONSENT_CONTEXT);
    out.extend_from_slice(fields.customer.as_bytes());
    out.extend_from_slice(fields.business.as_bytes());
    out.extend_from_slice(&fields.device.to_be_bytes());
    out.push(fields.categories.bits());
    out.extend_from_slice(&fields.issued_at_ms.to_be_bytes());
    out.extend_from_slice(&fields.expires_at_ms.to_be_bytes());
    out.extend_from_slice(&fields.counter.to_be_bytes());
    out
}

/// Sign a consent token with the customer device's identity key.
pub fn sign_consent(device: &IdentityKeyPair, fields: &ConsentFields) -> [u8; SIGNATURE_LEN] {
    device.sign(&consent_payload(fields))
}

/// Check a consent token against the signing device's identity key (from
/// the customer's signed device list); strict Ed25519.
pub fn verify_consent(
    device: &IdentityKey,
    fields: &ConsentFields,
    signature: &[u8],
) -> Result<()> {
    device.verify("consent", &consent_payload(fields), signature)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use super::*;

    fn fields() -> ConsentFields {
        ConsentFields {
            customer: AccountId::from_bytes(&[1; 16]).unwrap(),
            business: AccountId::from_bytes(&[2; 16]).unwrap(),
            device: 3,
            categories: ConsentCategories::UTILITY.union(ConsentCategories::MARKETING),
            issued_at_ms: 1_700_000_000_000,
            expires_at_ms: 1_700_000_000_000 + MAX_CONSENT_LIFETIME_MS,
            counter: 9,
        }
    }

    #[test]
    fn payload_layout() {
        let p = consent_payload(&fields());
        assert_eq!(p.len(), 19 + 16 + 16 + 4 + 1 + 8 + 8 + 8);
        assert_eq!(&p[..19], CONSENT_CONTEXT);
        assert_eq!(&p[19..35], &[1; 16]);
        assert_eq!(&p[35..51], &[2; 16]);
        assert_eq!(&p[51..55], &3u32.to_be_bytes());
        assert_eq!(p[55], 5);
        assert_eq!(&p[72..80], &9u64.to_be_bytes());
    }

    #[test]
    fn a_signature_covers_every_field() {
        let key = IdentityKeyPair::generate(&mut rand::rng());
        let f = fields();
        let sig = sign_consent(&key, &f);
        verify_consent(key.public(), &f, &sig).unwrap();
        let changed: Vec<ConsentFields> = vec![
            ConsentFields {
                business: AccountId::from_bytes(&[4; 16]).unwrap(),
                ..f.clone()
            },
            ConsentFields {
                customer: AccountId::from_bytes(&[4; 16]).unwrap(),
                ..f.clone()
            },
            ConsentFields {
                device: 4,
                ..f.clone()
            },
            ConsentFields {
                categories: ConsentCategories::UTILITY,
                ..f.clone()
            },
            ConsentFields {
                expires_at_ms: f.expires_at_ms + 1,
                ..f.clone()
            },
            ConsentFields {
                issued_at_ms: f.issued_at_ms + 1,
                ..f.clone()
            },
            ConsentFields {
                counter: 10,
                ..f.clone()
            },
        ];
        for other in changed {
            assert!(
                verify_consent(key.public(), &other, &sig).is_err(),
                "{other:?}"
            );
        }
    }

    #[test]
    fn categories() {
        assert_eq!(
            ConsentCategories::from_bits(8),
            Some(ConsentCategories::STATUS)
        );
        assert_eq!(ConsentCategories::from_bits(16), None);
        assert_eq!(ConsentCategories::from_bits(256), None);
        let all = ConsentCategories::from_bits(7).unwrap();
        assert!(all.contains(ConsentCategories::MARKETING));
        assert!(!ConsentCategories::UTILITY.contains(ConsentCategories::MARKETING));
        assert!(ConsentCategories::NONE.is_empty());
        assert_eq!(all.names(), ["utility", "authentication", "marketing"]);
        assert_eq!(ConsentCategories::of(Category::Service), None);
    }
}
