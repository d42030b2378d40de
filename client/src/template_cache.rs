//! Approved templates as this client knows them: the entries fetched from
//! the relay (`GetTemplates`) with their newest operator-signed record,
//! the check that a received template instance is an instance of an
//! approved template (docs/PROTOCOL.md, "Templates"), and which template
//! each template message and quick reply refers to.
//!
//! The cache stores what the relay said, unverified: every use checks the
//! record again with the operator key pinned *at that moment*, so a
//! record is never trusted under a key the user no longer pins.
//!
//! Freshness: an entry is fetched again when it is older than
//! [`TEMPLATE_REFRESH_MS`] (and always when the message's template id is
//! unknown). A verified revocation is final: it is kept even if a relay
//! later serves the older approval, since a record replaces the cached one
//! only when it verifies and [`TemplateApproval::supersedes`] it.

use comptoir_protocol::proto::content::TemplateInstance;
use comptoir_protocol::proto::wire::{Category, TemplateEntry, TemplateStatus};
use comptoir_protocol::template::{
    ApprovalError, Button, RenderedTemplate, Template, TemplateApproval, TemplateId,
    render_instance, verify_template_approval,
};
use comptoir_protocol::template_wire::approval_from_wire;
use comptoir_protocol::{AccountId, OperatorKey};
use prost::Message;

use crate::error::{ClientError, Result};
use crate::messages::MessageId;
use crate::rule_checks::Violation;
use crate::store::{Store, Tree};

/// How long a fetched template entry is trusted before it is fetched
/// again: 10 minutes. A revocation reaches this client at most this late
/// for templates it already cached; shorter costs a request per template
/// message received.
pub const TEMPLATE_REFRESH_MS: u64 = 10 * 60 * 1000;

/// A template entry as fetched from the relay, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedTemplate {
    /// What the relay answered for the id.
    pub entry: TemplateEntry,
    /// When it was fetched, ms since the Unix epoch.
    pub fetched_at_ms: u64,
}

impl CachedTemplate {
    /// Whether it should be fetched again at `now_ms`.
    pub fn is_stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.fetched_at_ms) >= TEMPLATE_REFRESH_MS
    }

    /// The template it holds, if its JSON parses.
    pub fn template(&self) -> Option<Template> {
        serde_json::from_str(&self.entry.template_json).ok()
    }

    /// The approval record, checked against `operator`.
    fn verified_approval(&self, operator: Option<&OperatorKey>) -> Option<TemplateApproval> {
        let record = self.entry.approval.as_ref()?;
        let (approval, signature) = approval_from_wire(record).ok()?;
        verify_template_approval(operator?, &approval, &signature).ok()?;
        Some(approval)
    }
}

/// The cached entry for `id`.
pub fn get(store: &Store, id: &TemplateId) -> Result<Option<CachedTemplate>> {
    let Some(bytes) = store.get(Tree::Templates, id.as_bytes())? else {
        return Ok(None);
    };
    let corrupt = || ClientError::CorruptStore("a cached template".into());
    let (at, entry) = bytes.split_at_checked(8).ok_or_else(corrupt)?;
    let fetched_at_ms = u64::from_be_bytes(at.try_into().map_err(|_| corrupt())?);
    let entry = TemplateEntry::decode(entry).map_err(|_| corrupt())?;
    Ok(Some(CachedTemplate {
        entry,
        fetched_at_ms,
    }))
}

/// Record what the relay answered for `id` at `now_ms` (`None`: it knows
/// no such template for that business). A cached record verified under
/// `operator` is kept unless the new one verifies and supersedes it.
pub fn update(
    store: &Store,
    id: &TemplateId,
    fetched: Option<TemplateEntry>,
    operator: Option<&OperatorKey>,
    now_ms: u64,
) -> Result<()> {
    let _guard = store.updating();
    let old = get(store, id)?;
    let keep_old = match (&old, &fetched) {
        (Some(old), Some(new)) => old.verified_approval(operator).is_some_and(|kept| {
            let candidate = CachedTemplate {
                entry: new.clone(),
                fetched_at_ms: now_ms,
            };
            !candidate
                .verified_approval(operator)
                .is_some_and(|new| new.supersedes(&kept))
        }),
        // Forgotten by the relay: a verified record stays.
        (Some(old), None) => old.verified_approval(operator).is_some(),
        (None, _) => false,
    };
    let entry = match (keep_old, old, fetched) {
        (true, Some(old), _) => old.entry,
        (_, _, Some(new)) => new,
        (_, _, None) => TemplateEntry {
            template_id: id.to_hex(),
            ..TemplateEntry::default()
        },
    };
    let mut value = now_ms.to_be_bytes().to_vec();
    value.extend_from_slice(&entry.encode_to_vec());
    store.put(Tree::Templates, id.as_bytes(), &value)
}

fn message_key(peer: &AccountId, id: &MessageId) -> Vec<u8> {
    let mut key = peer.to_vec();
    key.extend_from_slice(&id.0);
    key
}

/// Note that the message `id` exchanged with `peer` is an instance of
/// `template` (received or sent).
pub fn record_message(
    store: &Store,
    peer: &AccountId,
    id: &MessageId,
    template: &TemplateId,
) -> Result<()> {
    store.put(
        Tree::TemplateMessages,
        &message_key(peer, id),
        template.as_bytes(),
    )
}

/// The template of the message `id` exchanged with `peer`, if it was a
/// template message.
pub fn template_of_message(
    store: &Store,
    peer: &AccountId,
    id: &MessageId,
) -> Result<Option<TemplateId>> {
    let Some(bytes) = store.get(Tree::TemplateMessages, &message_key(peer, id))? else {
        return Ok(None);
    };
    let id: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ClientError::CorruptStore("a template message record".into()))?;
    Ok(Some(TemplateId(id)))
}

/// Check a template instance received from `from` under the envelope
/// `category` and `template_id` against the cached entry, with the pinned
/// `operator` key: the template and what to show, or what is wrong.
pub fn check_instance(
    operator: Option<&OperatorKey>,
    cached: Option<&CachedTemplate>,
    from: &AccountId,
    category: Category,
    envelope_template_id: &str,
    instance: &TemplateInstance,
) -> std::result::Result<(Template, RenderedTemplate), Violation> {
    // Shown to the user: only what an id can hold, so a hostile label
    // cannot lay out text of its own.
    let template_id: String = envelope_template_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    let Some(operator) = operator else {
        return Err(Violation::NoOperatorKey { template_id });
    };
    let not_approved = || Violation::TemplateNotApproved {
        template_id: template_id.clone(),
    };
    let Some(cached) = cached else {
        return Err(not_approved());
    };
    let status = cached.entry.status();
    if !matches!(status, TemplateStatus::Approved | TemplateStatus::Revoked) {
        return Err(not_approved());
    }
    let invalid = || Violation::TemplateApprovalInvalid {
        template_id: template_id.clone(),
    };
    let template = cached.template().ok_or_else(invalid)?;
    let approval = cached
        .verified_approval(Some(operator))
        .ok_or_else(invalid)?;
    if template.business != *from || approval.template_id.to_hex() != envelope_template_id {
        return Err(invalid());
    }
    match approval.covers(&template) {
        Ok(()) => {}
        Err(ApprovalError::Revoked(_)) => {
            return Err(Violation::TemplateRevoked {
                template_id: template_id.clone(),
            });
        }
        Err(_) => return Err(invalid()),
    }
    if category != Category::from(approval.category) {
        return Err(Violation::TemplateCategoryMismatch {
            template_id,
            approved: approval.category,
            envelope: category,
        });
    }
    match render_instance(&template, category, instance) {
        Ok(rendered) => Ok((template, rendered)),
        Err(reason) => Err(Violation::TemplateInstanceInvalid {
            template_id,
            reason,
        }),
    }
}

/// A rendered template as one text for the history: the header, the body
/// and the footer on their own lines, then one line per button.
pub fn rendered_text(rendered: &RenderedTemplate) -> String {
    let mut lines: Vec<String> = Vec::new();
    lines.extend(rendered.header.clone());
    lines.push(rendered.body.clone());
    lines.extend(rendered.footer.clone());
    for button in &rendered.buttons {
        lines.push(match button {
            Button::QuickReply { text } => format!("[{text}]"),
            Button::Link { text, url } => format!("[{text}: {url}]"),
            Button::Call { text, phone } => format!("[{text}: {phone}]"),
        });
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use comptoir_protocol::OperatorKeyPair;
    use comptoir_protocol::proto::content::{TemplateParameter, template_parameter};
    use comptoir_protocol::template::{
        Placeholder, PlaceholderKind, TemplateCategory, sign_template_approval,
    };
    use comptoir_protocol::template_wire::approval_to_wire;

    use super::*;
    use crate::store::FAST_TEST_KDF;

    const T: u64 = 1_750_000_000_000;

    fn template(business: AccountId) -> Template {
        Template {
            business,
            name: "order_update".into(),
            language: "en".into(),
            category: TemplateCategory::Utility,
            header: None,
            body: "Order {{order}} shipped.".into(),
            footer: None,
            placeholders: vec![Placeholder {
                name: "order".into(),
                kind: PlaceholderKind::Text,
            }],
            buttons: Vec::new(),
        }
    }

    fn entry(
        operator: &OperatorKeyPair,
        template: &Template,
        approval: &TemplateApproval,
    ) -> TemplateEntry {
        let signature = sign_template_approval(operator, approval);
        TemplateEntry {
            template_id: approval.template_id.to_hex(),
            template_json: serde_json::to_string(template).unwrap(),
            status: match approval.status {
                comptoir_protocol::template::ApprovalStatus::Approved => {
                    TemplateStatus::Approved as i32
                }
                comptoir_protocol::template::ApprovalStatus::Revoked => {
                    TemplateStatus::Revoked as i32
                }
            },
            approval: Some(approval_to_wire(approval, &signature)),
            reason: String::new(),
        }
    }

    #[test]
    fn a_verified_revocation_is_final_and_each_check_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), "passphrase", FAST_TEST_KDF).unwrap();
        let operator = OperatorKeyPair::generate(&mut rand::rng());
        let pinned = operator.public();
        let shop = AccountId::from_bytes(&[5; 16]).unwrap();
        let template = template(shop);
        let id = template.template_id().unwrap();
        let hex = id.to_hex();
        let approved = TemplateApproval::approve(&template, T).unwrap();
        let revoked = approved.revoke(T + 1);
        let instance = TemplateInstance {
            template_id: hex.clone(),
            parameters: vec![TemplateParameter {
                name: "order".into(),
                value: Some(template_parameter::Value::Text("A1".into())),
            }],
        };
        let check = |cached: Option<&CachedTemplate>, key: Option<&OperatorKey>, category| {
            check_instance(key, cached, &shop, category, &hex, &instance)
        };

        assert_eq!(get(&store, &id).unwrap(), None);
        assert_eq!(
            check(None, Some(&pinned), Category::Utility).unwrap_err(),
            Violation::TemplateNotApproved {
                template_id: hex.clone()
            }
        );
        update(
            &store,
            &id,
            Some(entry(&operator, &template, &approved)),
            Some(&pinned),
            T,
        )
        .unwrap();
        let cached = get(&store, &id).unwrap().unwrap();
        assert!(!cached.is_stale(T + TEMPLATE_REFRESH_MS - 1));
        assert!(cached.is_stale(T + TEMPLATE_REFRESH_MS));
        let (_, rendered) = check(Some(&cached), Some(&pinned), Category::Utility).unwrap();
        assert_eq!(rendered.body, "Order A1 shipped.");
        // No pinned key, another key, another category, another sender.
        assert_eq!(
            check(Some(&cached), None, Category::Utility).unwrap_err(),
            Violation::NoOperatorKey {
                template_id: hex.clone()
            }
        );
        let other = OperatorKeyPair::generate(&mut rand::rng()).public();
        assert_eq!(
            check(Some(&cached), Some(&other), Category::Utility).unwrap_err(),
            Violation::TemplateApprovalInvalid {
                template_id: hex.clone()
            }
        );
        assert!(matches!(
            check(Some(&cached), Some(&pinned), Category::Marketing).unwrap_err(),
            Violation::TemplateCategoryMismatch { .. }
        ));
        let stranger = AccountId::from_bytes(&[6; 16]).unwrap();
        assert_eq!(
            check_instance(
                Some(&pinned),
                Some(&cached),
                &stranger,
                Category::Utility,
                &hex,
                &instance
            )
            .unwrap_err(),
            Violation::TemplateApprovalInvalid {
                template_id: hex.clone()
            }
        );

        // The revocation replaces the approval; the older approval served
        // again, or nothing at all, does not bring it back.
        update(
            &store,
            &id,
            Some(entry(&operator, &template, &revoked)),
            Some(&pinned),
            T + 2,
        )
        .unwrap();
        for replay in [Some(entry(&operator, &template, &approved)), None] {
            update(&store, &id, replay, Some(&pinned), T + 3).unwrap();
            let cached = get(&store, &id).unwrap().unwrap();
            assert_eq!(cached.fetched_at_ms, T + 3);
            assert_eq!(
                check(Some(&cached), Some(&pinned), Category::Utility).unwrap_err(),
                Violation::TemplateRevoked {
                    template_id: hex.clone()
                }
            );
        }
        // A forged approval (not signed by the pinned key) does not either.
        let forger = OperatorKeyPair::generate(&mut rand::rng());
        let later = TemplateApproval::approve(&template, T + 10).unwrap();
        update(
            &store,
            &id,
            Some(entry(&forger, &template, &later)),
            Some(&pinned),
            T + 4,
        )
        .unwrap();
        let cached = get(&store, &id).unwrap().unwrap();
        assert!(matches!(
            check(Some(&cached), Some(&pinned), Category::Utility).unwrap_err(),
            Violation::TemplateRevoked { .. }
        ));
    }
}
