//! `SubmitTemplate` / `GetTemplates`: a business submits a template for
//! the operator's review (it waits as pending until `relay admin
//! templates approve|reject`); anyone reads the approved and revoked
//! templates of a business with the operator's signed record, and the
//! business also its pending and rejected ones (docs/PROTOCOL.md,
//! "Templates").

use comptoir_protocol::json_error::describe_json_error;
use comptoir_protocol::proto::wire::{self, TemplateStatus, server_frame::Body};
use comptoir_protocol::template::{Template, TemplateId};
use comptoir_protocol::template_wire::approval_to_wire;

use super::{account_field, device};
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::session::{Reply, Session};
use crate::storage::{Directory, StoredTemplate, Submitted, Templates};

/// Longest template JSON accepted (a valid template is far smaller).
pub(crate) const MAX_TEMPLATE_JSON_LEN: usize = 16 * 1024;
/// Live templates (pending or approved) one business may have (the
/// WhatsApp Business Platform's limit per account); rejected and revoked
/// ones are kept as records but do not count.
pub(crate) const MAX_TEMPLATES_PER_BUSINESS: usize = 250;

pub(crate) async fn submit<S: Directory + Templates>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::SubmitTemplate,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let business = device(session)?.account;
    if request.template_json.len() > MAX_TEMPLATE_JSON_LEN {
        return Err(invalid(format!(
            "the template is {} bytes of JSON; at most {MAX_TEMPLATE_JSON_LEN}",
            request.template_json.len()
        )));
    }
    let template: Template = serde_json::from_str(&request.template_json).map_err(|e| {
        invalid(format!(
            "the template is not valid template JSON: {}",
            describe_json_error(&e)
        ))
    })?;
    template
        .validate()
        .map_err(|e| invalid(format!("the template breaks a rule: {e}")))?;
    if template.business != business {
        return Err(invalid(
            "the template's business must be the submitting account",
        ));
    }
    super::require_business(&relay.store, business, "submits templates").await?;
    let id = template
        .template_id()
        .map_err(|e| invalid(format!("the template breaks a rule: {e}")))?;
    let submitted = relay
        .store
        .submit_template(
            StoredTemplate {
                id,
                template,
                status: TemplateStatus::Pending,
                submitted_at_ms: relay.clock.now_ms(),
                approval: None,
                reason: String::new(),
            },
            MAX_TEMPLATES_PER_BUSINESS,
        )
        .await?;
    let kept = match submitted {
        Submitted::Kept(kept) => kept,
        Submitted::TooMany(live) => {
            return Err(invalid(format!(
                "this business has {live} templates pending or approved, the most it may have; \
                 ask the operator to revoke approved ones it no longer uses, or to reject \
                 pending ones"
            )));
        }
    };
    tracing::debug!(%business, template = %id, status = ?kept.status, "template submitted");
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::TemplateSubmitted(wire::TemplateSubmitted {
            template_id: id.to_hex(),
            status: kept.status as i32,
        }),
    )))
}

pub(crate) async fn get<S: Directory + Templates>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::GetTemplates,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let me = device(session)?.account;
    let business = account_field("business_account", &request.business_account)?;
    let only = if request.template_id.is_empty() {
        None
    } else {
        Some(
            TemplateId::from_hex(&request.template_id)
                .ok_or_else(|| invalid("template_id is 64 lowercase hex digits"))?,
        )
    };
    let owner = me == business;
    let candidates = match only {
        Some(id) => relay.store.template(&id).await?.into_iter().collect(),
        None => relay.store.templates().await?,
    };
    let mut templates = Vec::new();
    for stored in candidates {
        let public = matches!(
            stored.status,
            TemplateStatus::Approved | TemplateStatus::Revoked
        );
        if stored.template.business != business || !(public || owner) {
            continue;
        }
        let template_json = serde_json::to_string(&stored.template).map_err(|e| {
            RelayError::Storage(crate::storage::StorageError::Backend(format!(
                "template JSON: {e}"
            )))
        })?;
        templates.push(wire::TemplateEntry {
            template_id: stored.id.to_hex(),
            template_json,
            status: stored.status as i32,
            approval: stored
                .approval
                .as_ref()
                .map(|a| approval_to_wire(&a.approval, &a.signature)),
            reason: if owner { stored.reason } else { String::new() },
        });
    }
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::Templates(wire::Templates { templates }),
    )))
}
