//! What the customer's client checks by itself of the relay's business
//! rules, from what it knows first hand: the consents this account granted
//! (recorded when granted, revoked or the business blocked; and the
//! customer-signed tokens the relay lists, once checked against this
//! account's own device keys) and when this account last wrote to each
//! peer (the relay's accept time of its last conversation message, from
//! `Accepted`, or from a sync copy of another device's message).
//!
//! A business's template that no consent of this account covers at its
//! accept time (utility or authentication outside the 24-hour window,
//! marketing at all), or a service reply accepted more than 24 hours after
//! this account last wrote to the business, is a [`Violation`]: the relay
//! should have refused it. The message is still shown, marked, and kept as
//! evidence for a report.
//!
//! The template checks ([`crate::template_cache::check_instance`]) and
//! the business's check of a quick reply report through the same
//! [`Violation`] type: a template message that is not an instance of a
//! template the pinned operator approved for that business and category,
//! and a quick reply that names no button of the template it answers; so
//! do an interactive message over the limits and a choice that names no
//! button or row of the interactive message it answers.
//!
//! The other way round, a business's client notes when each customer last
//! wrote to it (the accept time of the customer's last conversation
//! message, from the envelope), to show whether its 24-hour window is open
//! and for how long ([`window`]).
//!
//! Records (sealed in the [`Store`]): tree `Consents` by business (16):
//! `categories (1) || expires_at_ms (8) || counter (8)`; trees `Wrote` and
//! `Heard` by peer (16): `accept time (8)`.

use std::fmt;

use comptoir_protocol::interactive::{ChoiceError, InteractiveError};
use comptoir_protocol::proto::wire::Category;
use comptoir_protocol::template::{InstanceError, ReplyError, TemplateCategory};
use comptoir_protocol::{AccountId, ConsentCategories};

use crate::error::{ClientError, Result};
use crate::store::{Store, Tree};

/// How long a customer's message keeps the window open: 24 hours.
pub const WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// A rule the relay let a peer break, as this client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A service (free-form) reply accepted outside the 24-hour window.
    ServiceOutsideWindow {
        /// When this account last wrote to the business (relay time), if
        /// it ever did.
        last_wrote_at_ms: Option<u64>,
        /// The reply's accept time.
        accepted_at_ms: u64,
    },
    /// A template no consent of this account covers.
    TemplateWithoutConsent {
        /// The template's category.
        category: Category,
    },
    /// A message under a template category whose content is not a
    /// template instance (free text dressed as a template).
    NotATemplate {
        /// The envelope's category.
        category: Category,
    },
    /// A template message, but this client pins no operator key to check
    /// approvals with.
    NoOperatorKey {
        /// The envelope's template id.
        template_id: String,
    },
    /// The relay knows no approval of this template for the sender.
    TemplateNotApproved {
        /// The envelope's template id.
        template_id: String,
    },
    /// The approval record does not check out against the pinned operator
    /// key, or approves another template, business or category.
    TemplateApprovalInvalid {
        /// The envelope's template id.
        template_id: String,
    },
    /// The operator revoked the template.
    TemplateRevoked {
        /// The envelope's template id.
        template_id: String,
    },
    /// Sent under another category than the approved one.
    TemplateCategoryMismatch {
        /// The envelope's template id.
        template_id: String,
        /// The approved category.
        approved: TemplateCategory,
        /// The envelope's category.
        envelope: Category,
    },
    /// The content is not an instance of the approved template (a
    /// parameter missing, unknown, of the wrong type or out of bounds).
    TemplateInstanceInvalid {
        /// The envelope's template id.
        template_id: String,
        /// What is wrong with it.
        reason: InstanceError,
    },
    /// A quick reply to a message that is not a template message this
    /// account sent to the replying customer.
    QuickReplyToUnknownMessage,
    /// A quick reply that does not name a quick-reply button of the
    /// template it answers, or not with that button's text.
    QuickReplyInvalid {
        /// What is wrong with it.
        reason: ReplyError,
    },
    /// An interactive message over the limits (more than 3 buttons, more
    /// than 10 rows...): shown as text, its choices not offered.
    InteractiveInvalid {
        /// What is wrong with it.
        reason: InteractiveError,
    },
    /// A choice in a message that is not an interactive message this
    /// account sent to the replying customer.
    InteractiveReplyToUnknownMessage,
    /// A choice that names no button or row of the message it answers, or
    /// not with its title.
    InteractiveReplyInvalid {
        /// What is wrong with it.
        reason: ChoiceError,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceOutsideWindow {
                last_wrote_at_ms: None,
                ..
            } => write!(
                f,
                "a free-form reply although you never wrote to this business"
            ),
            Self::ServiceOutsideWindow { .. } => write!(
                f,
                "a free-form reply more than 24 hours after your last message to this business"
            ),
            Self::TemplateWithoutConsent { category } => write!(
                f,
                "a {} template you did not consent to",
                comptoir_protocol::labels::category_name(*category as i32)
            ),
            Self::NotATemplate { category } => write!(
                f,
                "a {} message that is not an approved template",
                comptoir_protocol::labels::category_name(*category as i32)
            ),
            Self::NoOperatorKey { template_id } => write!(
                f,
                "template {template_id} cannot be checked: no operator key is pinned"
            ),
            Self::TemplateNotApproved { template_id } => write!(
                f,
                "template {template_id} is not approved for this business"
            ),
            Self::TemplateApprovalInvalid { template_id } => write!(
                f,
                "the approval of template {template_id} does not check out against the \
                 pinned operator key"
            ),
            Self::TemplateRevoked { template_id } => {
                write!(f, "template {template_id} was revoked by the operator")
            }
            Self::TemplateCategoryMismatch {
                template_id,
                approved,
                envelope,
            } => write!(
                f,
                "template {template_id} is approved as {approved} but was sent as {}",
                comptoir_protocol::labels::category_name(*envelope as i32)
            ),
            Self::TemplateInstanceInvalid {
                template_id,
                reason,
            } => write!(
                f,
                "not an instance of the approved template {template_id}: {reason}"
            ),
            Self::QuickReplyToUnknownMessage => write!(
                f,
                "a quick reply to a message that is not a template this account sent"
            ),
            Self::QuickReplyInvalid { reason } => write!(f, "a forged quick reply: {reason}"),
            Self::InteractiveInvalid { reason } => {
                write!(f, "an interactive message over the limits: {reason}")
            }
            Self::InteractiveReplyToUnknownMessage => write!(
                f,
                "a choice in a message that is not an interactive message this account sent"
            ),
            Self::InteractiveReplyInvalid { reason } => write!(f, "a forged choice: {reason}"),
        }
    }
}

/// A consent as this client knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownConsent {
    /// What the business may send (empty: revoked).
    pub categories: ConsentCategories,
    /// Until when, ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// The pair's counter.
    pub counter: u64,
}

/// Record a consent of this account for `business`, unless one with a
/// higher counter is known (a revocation by block takes the counter it
/// revokes: it replaces the grant of the same counter).
pub fn record_consent(store: &Store, business: &AccountId, consent: KnownConsent) -> Result<()> {
    let _guard = store.updating();
    if let Some(known) = known_consent(store, business)?
        && (known.counter > consent.counter
            || (known.counter == consent.counter && !consent.categories.is_empty()))
    {
        return Ok(());
    }
    let mut value = Vec::with_capacity(17);
    value.push(consent.categories.bits());
    value.extend_from_slice(&consent.expires_at_ms.to_be_bytes());
    value.extend_from_slice(&consent.counter.to_be_bytes());
    store.put(Tree::Consents, business.as_bytes(), &value)
}

/// The consent known for `business`.
pub fn known_consent(store: &Store, business: &AccountId) -> Result<Option<KnownConsent>> {
    let Some(value) = store.get(Tree::Consents, business.as_bytes())? else {
        return Ok(None);
    };
    let corrupt = || ClientError::CorruptStore("a consent record".into());
    let (&bits, rest) = value.split_first().ok_or_else(corrupt)?;
    let expires = rest
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let counter = rest
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    Ok(Some(KnownConsent {
        categories: ConsentCategories::from_bits(u32::from(bits)).ok_or_else(corrupt)?,
        expires_at_ms: u64::from_be_bytes(expires),
        counter: u64::from_be_bytes(counter),
    }))
}

/// Note that this account wrote to `peer`, accepted at `accepted_at_ms`
/// (keeps the latest).
pub fn record_wrote(store: &Store, peer: &AccountId, accepted_at_ms: u64) -> Result<()> {
    let _guard = store.updating();
    if last_wrote(store, peer)?.is_some_and(|at| at >= accepted_at_ms) {
        return Ok(());
    }
    store.put(Tree::Wrote, peer.as_bytes(), &accepted_at_ms.to_be_bytes())
}

/// When this account last wrote to `peer` (relay time), if it did.
pub fn last_wrote(store: &Store, peer: &AccountId) -> Result<Option<u64>> {
    let Some(value) = store.get(Tree::Wrote, peer.as_bytes())? else {
        return Ok(None);
    };
    let bytes: [u8; 8] = value
        .as_slice()
        .try_into()
        .map_err(|_| ClientError::CorruptStore("a last-wrote record".into()))?;
    Ok(Some(u64::from_be_bytes(bytes)))
}

/// Note that `peer` wrote to this account, in a conversation message the
/// relay accepted at `accepted_at_ms` (keeps the latest).
pub fn record_heard(store: &Store, peer: &AccountId, accepted_at_ms: u64) -> Result<()> {
    let _guard = store.updating();
    if last_heard(store, peer)?.is_some_and(|at| at >= accepted_at_ms) {
        return Ok(());
    }
    store.put(Tree::Heard, peer.as_bytes(), &accepted_at_ms.to_be_bytes())
}

/// When `peer` last wrote to this account (relay time), if it did.
pub fn last_heard(store: &Store, peer: &AccountId) -> Result<Option<u64>> {
    let Some(value) = store.get(Tree::Heard, peer.as_bytes())? else {
        return Ok(None);
    };
    let bytes: [u8; 8] = value
        .as_slice()
        .try_into()
        .map_err(|_| ClientError::CorruptStore("a last-heard record".into()))?;
    Ok(Some(u64::from_be_bytes(bytes)))
}

/// A customer's 24-hour window as a business's client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// When the customer's last message (relay time) opened it, if the
    /// customer ever wrote (as far as this device knows).
    pub opened_at_ms: Option<u64>,
}

impl Window {
    /// When it closes (or closed): 24 hours after the customer's last
    /// message.
    pub fn closes_at_ms(&self) -> Option<u64> {
        self.opened_at_ms.map(|at| at.saturating_add(WINDOW_MS))
    }

    /// How long it stays open after `now_ms`; `None` when it is closed
    /// (free-form replies are refused; only an approved template under
    /// consent goes through). Judged by this device's clock against the
    /// relay's accept time, so it may be off by the clocks' difference:
    /// the relay decides.
    pub fn time_left_ms(&self, now_ms: u64) -> Option<u64> {
        self.closes_at_ms()
            .filter(|closes| now_ms < *closes)
            .map(|closes| closes - now_ms)
    }
}

/// The window `customer` gave this (business) account.
pub fn window(store: &Store, customer: &AccountId) -> Result<Window> {
    Ok(Window {
        opened_at_ms: last_heard(store, customer)?,
    })
}

/// Check a message from `from` of `category`, accepted by the relay at
/// `accepted_at_ms`, against what this account knows; `None` if it breaks
/// no rule (or is not a business's message: only businesses may send
/// these categories, the relay refuses them from customers).
pub fn check(
    store: &Store,
    from: &AccountId,
    category: Category,
    accepted_at_ms: u64,
) -> Result<Option<Violation>> {
    let wrote = last_wrote(store, from)?;
    let open = wrote.is_some_and(|at| accepted_at_ms < at.saturating_add(WINDOW_MS));
    let covers = known_consent(store, from)?.map_or(ConsentCategories::NONE, |c| {
        if accepted_at_ms < c.expires_at_ms {
            c.categories
        } else {
            ConsentCategories::NONE
        }
    });
    let violation = match (category, ConsentCategories::of(category)) {
        // Only when this device knows when the customer wrote: another
        // device's message may not have reached it (a lost sync copy, a
        // device linked later), and a false alarm is worse than none.
        (Category::Service, _) if !open && wrote.is_some() => {
            Some(Violation::ServiceOutsideWindow {
                last_wrote_at_ms: wrote,
                accepted_at_ms,
            })
        }
        (Category::Marketing, Some(needed)) if !covers.contains(needed) => {
            Some(Violation::TemplateWithoutConsent { category })
        }
        (_, Some(needed)) if !open && !covers.contains(needed) => {
            Some(Violation::TemplateWithoutConsent { category })
        }
        _ => None,
    };
    Ok(violation)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use super::*;
    use crate::store::FAST_TEST_KDF;

    const T: u64 = 1_750_000_000_000;

    #[test]
    fn each_rule_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), "passphrase", FAST_TEST_KDF).unwrap();
        let shop = AccountId::from_bytes(&[5; 16]).unwrap();
        let check = |category, at| check(&store, &shop, category, at).unwrap();
        // Never wrote (as far as this device knows): a service reply is not
        // flagged; a template with no consent is.
        assert_eq!(check(Category::Service, T), None);
        assert_eq!(
            check(Category::Utility, T),
            Some(Violation::TemplateWithoutConsent {
                category: Category::Utility
            })
        );
        // Not a business's category: nothing to check.
        assert_eq!(check(Category::Conversation, T), None);
        assert_eq!(check(Category::Control, T), None);
        // Wrote at T: open until T + 24 h (exclusive).
        record_wrote(&store, &shop, T).unwrap();
        record_wrote(&store, &shop, T - 5).unwrap();
        assert_eq!(last_wrote(&store, &shop).unwrap(), Some(T));
        assert_eq!(check(Category::Service, T + WINDOW_MS - 1), None);
        assert_eq!(check(Category::Authentication, T + 1), None);
        assert!(check(Category::Service, T + WINDOW_MS).is_some());
        assert!(
            check(Category::Marketing, T + 1).is_some(),
            "marketing needs consent"
        );
        // Consent: covers its categories until it expires.
        let grant = KnownConsent {
            categories: ConsentCategories::MARKETING,
            expires_at_ms: T + 10 * WINDOW_MS,
            counter: 2,
        };
        record_consent(&store, &shop, grant).unwrap();
        assert_eq!(check(Category::Marketing, T + 2 * WINDOW_MS), None);
        assert!(check(Category::Marketing, T + 10 * WINDOW_MS).is_some());
        assert!(check(Category::Utility, T + 2 * WINDOW_MS).is_some());
        // An older token changes nothing; a revocation by block (same
        // counter) and a newer one do.
        let older = KnownConsent {
            categories: ConsentCategories::UTILITY,
            counter: 1,
            ..grant
        };
        record_consent(&store, &shop, older).unwrap();
        assert_eq!(known_consent(&store, &shop).unwrap(), Some(grant));
        let blocked = KnownConsent {
            categories: ConsentCategories::NONE,
            ..grant
        };
        record_consent(&store, &shop, blocked).unwrap();
        assert!(check(Category::Marketing, T + 2 * WINDOW_MS).is_some());
        record_consent(&store, &shop, grant).unwrap();
        assert!(
            check(Category::Marketing, T + 2 * WINDOW_MS).is_some(),
            "the grant it revoked does not come back"
        );
    }
}
