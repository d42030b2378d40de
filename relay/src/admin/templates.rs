//! Reviewing templates: the operator lists what businesses submitted,
//! reads one, and approves, rejects or revokes it. An approval or a
//! revocation is a record signed by the operator key (docs/PROTOCOL.md,
//! "Template approvals"), stored with the template; the relay's `Send`
//! checks it from then on, and clients fetch it to check for themselves.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use comptoir_protocol::proto::wire::TemplateStatus;
use comptoir_protocol::template::{
    ApprovalStatus, Template, TemplateApproval, TemplateId, sign_template_approval,
};
use serde::{Deserialize, Serialize};

use super::{AdminError, AdminState};
use crate::cmd::template::MAX_TEMPLATES_PER_BUSINESS;
use crate::storage::{Backend, Replaced, SignedApproval, StoredTemplate};

/// Longest rejection reason kept.
pub const MAX_REASON_LEN: usize = 512;

/// One line of `GET /v1/templates`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TemplateSummary {
    /// 64 hex digits.
    pub template_id: String,
    /// The business's account id (32 hex digits).
    pub business: String,
    /// The template's name.
    pub name: String,
    /// Its language.
    pub language: String,
    /// utility, authentication or marketing.
    pub category: String,
    /// pending, approved, rejected or revoked.
    pub status: String,
    /// The relay's clock when it was submitted.
    pub submitted_at_ms: u64,
}

/// `GET /v1/templates`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TemplateList {
    /// Oldest submission first.
    pub templates: Vec<TemplateSummary>,
}

/// The operator's newest signed decision, as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApprovalBody {
    /// approved or revoked.
    pub status: String,
    /// When the operator decided (the relay's clock).
    pub issued_at_ms: u64,
    /// The operator's Ed25519 signature, 128 hex digits.
    pub signature: String,
}

/// `GET /v1/templates/{template_id}` and the answer of every decision.
#[derive(Debug, Serialize, Deserialize)]
pub struct TemplateDetail {
    /// 64 hex digits.
    pub template_id: String,
    /// pending, approved, rejected or revoked.
    pub status: String,
    /// The relay's clock when it was submitted.
    pub submitted_at_ms: u64,
    /// Why it was rejected (rejected templates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The template, in its JSON form.
    pub template: Template,
    /// The newest signed decision (approved or revoked templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalBody>,
}

/// The query of `GET /v1/templates`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only templates in this state.
    pub status: Option<String>,
}

/// The body of `POST …/reject`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RejectRequest {
    /// Why, for the business (1 to 512 characters).
    pub reason: String,
}

/// A status as the API names it.
pub fn status_name(status: TemplateStatus) -> &'static str {
    match status {
        TemplateStatus::Pending => "pending",
        TemplateStatus::Approved => "approved",
        TemplateStatus::Rejected => "rejected",
        TemplateStatus::Revoked => "revoked",
        TemplateStatus::Unspecified => "unknown",
    }
}

fn parse_status(name: &str) -> Result<TemplateStatus, AdminError> {
    match name {
        "pending" => Ok(TemplateStatus::Pending),
        "approved" => Ok(TemplateStatus::Approved),
        "rejected" => Ok(TemplateStatus::Rejected),
        "revoked" => Ok(TemplateStatus::Revoked),
        _ => Err(AdminError::BadRequest(
            "status is one of pending, approved, rejected, revoked".into(),
        )),
    }
}

fn parse_id(text: &str) -> Result<TemplateId, AdminError> {
    TemplateId::from_hex(text)
        .ok_or_else(|| AdminError::BadRequest("a template id is 64 lowercase hex digits".into()))
}

fn detail(stored: &StoredTemplate) -> TemplateDetail {
    TemplateDetail {
        template_id: stored.id.to_hex(),
        status: status_name(stored.status).to_owned(),
        submitted_at_ms: stored.submitted_at_ms,
        reason: (stored.status == TemplateStatus::Rejected).then(|| stored.reason.clone()),
        template: stored.template.clone(),
        approval: stored.approval.as_ref().map(|a| ApprovalBody {
            status: match a.approval.status {
                ApprovalStatus::Approved => "approved",
                ApprovalStatus::Revoked => "revoked",
            }
            .to_owned(),
            issued_at_ms: a.approval.issued_at_ms,
            signature: hex::encode(a.signature),
        }),
    }
}

/// `GET /v1/templates[?status=…]`.
pub(super) async fn list<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<TemplateList>, AdminError> {
    let wanted = query.status.as_deref().map(parse_status).transpose()?;
    let mut templates: Vec<StoredTemplate> = state
        .relay
        .store
        .templates()
        .await?
        .into_iter()
        .filter(|t| wanted.is_none_or(|w| t.status == w))
        .collect();
    templates.sort_by_key(|t| (t.submitted_at_ms, t.id.to_hex()));
    Ok(Json(TemplateList {
        templates: templates
            .iter()
            .map(|t| TemplateSummary {
                template_id: t.id.to_hex(),
                business: t.template.business.to_string(),
                name: t.template.name.clone(),
                language: t.template.language.clone(),
                category: t.template.category.name().to_owned(),
                status: status_name(t.status).to_owned(),
                submitted_at_ms: t.submitted_at_ms,
            })
            .collect(),
    }))
}

/// `GET /v1/templates/{template_id}`.
pub(super) async fn show<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
    Path(id): Path<String>,
) -> Result<Json<TemplateDetail>, AdminError> {
    let id = parse_id(&id)?;
    let stored = state
        .relay
        .store
        .template(&id)
        .await?
        .ok_or(AdminError::UnknownTemplate)?;
    Ok(Json(detail(&stored)))
}

/// The time of a new signed decision: the relay's clock, and always later
/// than the decision it replaces (so that it supersedes it).
fn decision_time<S>(state: &AdminState<S>, stored: &StoredTemplate) -> u64 {
    let now = state.relay.clock.now_ms();
    match &stored.approval {
        Some(previous) => now.max(previous.approval.issued_at_ms.saturating_add(1)),
        None => now,
    }
}

/// Sign `approval` and store `new` in place of `stored`.
async fn decide<S: Backend>(
    state: &AdminState<S>,
    stored: &StoredTemplate,
    new: StoredTemplate,
) -> Result<Json<TemplateDetail>, AdminError> {
    match state
        .relay
        .store
        .replace_template(stored, &new, MAX_TEMPLATES_PER_BUSINESS)
        .await?
    {
        Replaced::Done => {}
        Replaced::Changed => {
            return Err(AdminError::Conflict(
                "the template changed while this decision was taken; show it again and retry"
                    .into(),
            ));
        }
        Replaced::TooMany(live) => {
            return Err(AdminError::Conflict(format!(
                "its business has {live} templates pending or approved, the most it may have; \
                 reject or revoke one first"
            )));
        }
    }
    tracing::info!(
        template = %new.id,
        business = %new.template.business,
        status = status_name(new.status),
        "template decision"
    );
    Ok(Json(detail(&new)))
}

async fn load<S: Backend>(state: &AdminState<S>, id: &str) -> Result<StoredTemplate, AdminError> {
    let id = parse_id(id)?;
    state
        .relay
        .store
        .template(&id)
        .await?
        .ok_or(AdminError::UnknownTemplate)
}

/// `POST /v1/templates/{template_id}/approve`: a pending, rejected or
/// revoked template becomes approved under a new signed record.
pub(super) async fn approve<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
    Path(id): Path<String>,
) -> Result<Json<TemplateDetail>, AdminError> {
    let stored = load(&state, &id).await?;
    if stored.status == TemplateStatus::Approved {
        return Err(AdminError::Conflict(
            "the template is approved already".into(),
        ));
    }
    let approval = TemplateApproval::approve(&stored.template, decision_time(&state, &stored))
        .map_err(|e| AdminError::Conflict(format!("the template cannot be approved: {e}")))?;
    let signature = sign_template_approval(&state.operator, &approval);
    let new = StoredTemplate {
        status: TemplateStatus::Approved,
        approval: Some(SignedApproval {
            approval,
            signature,
        }),
        reason: String::new(),
        ..stored.clone()
    };
    decide(&state, &stored, new).await
}

/// `POST /v1/templates/{template_id}/reject` with `{"reason": …}`: a
/// pending template is refused; the business reads the reason.
pub(super) async fn reject<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<TemplateDetail>, AdminError> {
    let request: RejectRequest = serde_json::from_slice(&body).map_err(|_| {
        AdminError::BadRequest("send a JSON body {\"reason\": \"why, for the business\"}".into())
    })?;
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_LEN {
        return Err(AdminError::BadRequest(format!(
            "a reason is 1 to {MAX_REASON_LEN} characters"
        )));
    }
    let stored = load(&state, &id).await?;
    if stored.status != TemplateStatus::Pending {
        return Err(AdminError::Conflict(format!(
            "only a pending template can be rejected; this one is {} (revoke an approved one)",
            status_name(stored.status)
        )));
    }
    let new = StoredTemplate {
        status: TemplateStatus::Rejected,
        reason: reason.to_owned(),
        ..stored.clone()
    };
    decide(&state, &stored, new).await
}

/// `POST /v1/templates/{template_id}/revoke`: an approved template is
/// revoked under a new signed record; sends naming it are refused from
/// now on.
pub(super) async fn revoke<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
    Path(id): Path<String>,
) -> Result<Json<TemplateDetail>, AdminError> {
    let stored = load(&state, &id).await?;
    let Some(current) = stored
        .approval
        .as_ref()
        .filter(|_| stored.status == TemplateStatus::Approved)
    else {
        return Err(AdminError::Conflict(format!(
            "only an approved template can be revoked; this one is {}",
            status_name(stored.status)
        )));
    };
    let revocation = current.approval.revoke(decision_time(&state, &stored));
    let signature = sign_template_approval(&state.operator, &revocation);
    let new = StoredTemplate {
        status: TemplateStatus::Revoked,
        approval: Some(SignedApproval {
            approval: revocation,
            signature,
        }),
        ..stored.clone()
    };
    decide(&state, &stored, new).await
}
