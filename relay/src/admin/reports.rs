//! Reviewing reports: each report is opened with the operator key and
//! verified (docs/PROTOCOL.md, "Reports"). A report is **valid** only when
//! the relay's franking tag checks over the envelope it reveals (so the
//! sender, recipient, accept id, category, template id and time are the
//! ones the relay saw at accept), the franking commitment opens over the
//! revealed content under the revealed key (so the content is exactly the
//! one the sender committed to), the labels bound in that content agree
//! with the envelope, and the reporter is the envelope's recipient.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use comptoir_protocol::franking::{self, RelayTagFields};
use comptoir_protocol::labels::{category_name, first_difference};
use comptoir_protocol::proto::content::{Content, content};
use comptoir_protocol::proto::wire::ReportContents;
use comptoir_protocol::{OperatorKeyPair, report};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::{AdminError, AdminState};
use crate::franking::FrankingKeys;
use crate::storage::{Backend, KeptReport};

/// `GET /v1/reports`: every report, verified.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReportsBody {
    /// Oldest first.
    pub reports: Vec<ReportBody>,
}

/// One report as the API shows it (`GET /v1/reports/{id}`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ReportBody {
    /// The report id.
    pub id: u64,
    /// Whether every check below passed.
    pub valid: bool,
    /// The first check that failed, in words (absent when valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The account that filed it (32 hex digits) and its device.
    pub reporter: String,
    /// The reporting device.
    pub reporter_device: u32,
    /// When the relay received it.
    pub received_at_ms: u64,
    /// The reported message's sender account (as the report claims it).
    #[serde(default)]
    pub sender: String,
    /// Its sender device.
    #[serde(default)]
    pub sender_device: u32,
    /// Its recipient account.
    #[serde(default)]
    pub recipient: String,
    /// Its accept id.
    #[serde(default)]
    pub accept_id: u64,
    /// Its category (`service`, `marketing`, …).
    #[serde(default)]
    pub category: String,
    /// Its template id (empty when none).
    #[serde(default)]
    pub template_id: String,
    /// The relay's accept time.
    #[serde(default)]
    pub accepted_at_ms: u64,
    /// The reported content in words (the text, or what the body is).
    #[serde(default)]
    pub content: String,
    /// The reporter's reason.
    #[serde(default)]
    pub reason: String,
    /// The checks one by one.
    pub checks: ReportChecks,
}

/// The verification of one report, check by check.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportChecks {
    /// The report opened with the operator key and decoded.
    pub opened: bool,
    /// The relay's franking tag checks over the revealed envelope.
    pub relay_tag: bool,
    /// The franking commitment opens over the revealed content.
    pub commitment_opens: bool,
    /// The labels bound in the content agree with the envelope.
    pub labels_match: bool,
    /// The reporter is the envelope's recipient.
    pub reporter_is_recipient: bool,
}

/// Open and verify one kept report.
pub fn verify(operator: &OperatorKeyPair, keys: &FrankingKeys, kept: &KeptReport) -> ReportBody {
    let mut body = ReportBody {
        id: kept.id,
        valid: false,
        problem: None,
        reporter: kept.reporter.to_string(),
        reporter_device: kept.reporter_device,
        received_at_ms: kept.received_at_ms,
        sender: String::new(),
        sender_device: 0,
        recipient: String::new(),
        accept_id: 0,
        category: String::new(),
        template_id: String::new(),
        accepted_at_ms: 0,
        content: String::new(),
        reason: String::new(),
        checks: ReportChecks::default(),
    };
    let contents = match report::open(operator, &kept.sealed) {
        Ok(plaintext) => ReportContents::decode(plaintext.as_slice()).ok(),
        Err(_) => None,
    };
    let Some(contents) = contents else {
        body.problem = Some("the report does not open with the operator key".into());
        return body;
    };
    let Some(envelope) = contents.envelope.as_ref() else {
        body.problem = Some("the report reveals no envelope".into());
        return body;
    };
    body.checks.opened = true;
    body.sender = hex::encode(&envelope.sender_account);
    body.sender_device = envelope.sender_device;
    body.recipient = hex::encode(&envelope.recipient_account);
    body.accept_id = envelope.accept_id;
    body.category = category_name(envelope.category).to_owned();
    body.template_id.clone_from(&envelope.template_id);
    body.accepted_at_ms = envelope.server_timestamp_ms;
    body.reason.clone_from(&contents.reason);
    let decoded = Content::decode(contents.content.as_slice()).ok();
    body.content = decoded
        .as_ref()
        .map_or_else(|| "(undecodable content)".to_owned(), describe);

    let fields = RelayTagFields {
        key_id: contents.relay_franking_key_id,
        commitment: &envelope.franking_tag,
        message_id: &envelope.message_id,
        sender_account: &envelope.sender_account,
        sender_device: envelope.sender_device,
        recipient_account: &envelope.recipient_account,
        recipient_device: envelope.recipient_device,
        accept_id: envelope.accept_id,
        category: envelope.category,
        template_id: &envelope.template_id,
        server_timestamp_ms: envelope.server_timestamp_ms,
    };
    body.checks.relay_tag = keys
        .get(contents.relay_franking_key_id)
        .is_some_and(|key| franking::check_relay_tag(key, &fields, &contents.relay_franking_tag));
    body.checks.commitment_opens = franking::check_opening(
        &contents.content,
        &contents.franking_key,
        &envelope.franking_tag,
    )
    .is_ok();
    body.checks.labels_match =
        decoded
            .as_ref()
            .and_then(|c| c.labels.clone())
            .is_some_and(|mut labels| {
                labels
                    .franking_commitment
                    .clone_from(&envelope.franking_tag);
                first_difference(&labels, envelope).is_none()
            });
    body.checks.reporter_is_recipient = envelope.recipient_account == kept.reporter.as_bytes();
    body.problem = if !body.checks.relay_tag {
        Some(
            "the relay's franking tag does not check over this envelope: the sender, recipient, \
             accept id, category, template id or time is not what the relay accepted"
                .into(),
        )
    } else if !body.checks.commitment_opens {
        Some(
            "the franking commitment does not open over this content: it is not what the sender \
             sent"
                .into(),
        )
    } else if !body.checks.labels_match {
        Some("the content's bound labels disagree with the envelope".into())
    } else if !body.checks.reporter_is_recipient {
        Some("the reporter is not the message's recipient".into())
    } else {
        None
    };
    body.valid = body.problem.is_none();
    body
}

/// The content in words, for the operator.
fn describe(content: &Content) -> String {
    match &content.body {
        Some(content::Body::Text(text)) => text.body.clone(),
        Some(content::Body::Template(instance)) => {
            let parameters: Vec<String> = instance
                .parameters
                .iter()
                .map(|p| format!("{}={:?}", p.name, p.value))
                .collect();
            format!(
                "template {} ({})",
                instance.template_id,
                parameters.join(", ")
            )
        }
        Some(content::Body::Attachment(a)) => format!(
            "attachment {} ({}, {} bytes, digest {})",
            a.file_name,
            a.content_type,
            a.size,
            hex::encode(&a.digest)
        ),
        Some(other) => format!("{other:?}"),
        None => "(empty)".into(),
    }
}

/// `GET /v1/reports`.
pub async fn list<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
) -> Result<Json<ReportsBody>, AdminError> {
    let kept = state.relay.store.reports().await?;
    let reports = kept
        .iter()
        .map(|k| verify(&state.operator, &state.relay.franking, k))
        .collect();
    Ok(Json(ReportsBody { reports }))
}

/// `GET /v1/reports/{id}`.
pub async fn show<S: Backend>(
    State(state): State<Arc<AdminState<S>>>,
    Path(id): Path<String>,
) -> Result<Json<ReportBody>, AdminError> {
    let id: u64 = id
        .parse()
        .map_err(|_| AdminError::BadRequest(format!("{id:?} is not a report id (a number)")))?;
    let kept = state
        .relay
        .store
        .report(id)
        .await?
        .ok_or(AdminError::UnknownReport)?;
    Ok(Json(verify(&state.operator, &state.relay.franking, &kept)))
}
