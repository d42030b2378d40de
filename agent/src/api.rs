//! The HTTP API for the business's backend, in the conventions of the
//! WhatsApp Cloud API (`POST /v1/messages` with `to`, `type`, `text` or
//! `template`; `Authorization: Bearer`), documented by the OpenAPI
//! document generated here from the handlers ([`ApiDoc`], served at
//! `/v1/openapi.json`).
//!
//! Handlers are thin: authorize, parse and check the body (nothing is
//! stored or sent for bad input), hand the work to the device task (a
//! text send goes through the client library's sender itself, many at
//! once, and only its record through the device task: see
//! [`crate::device::send_text`]), map its outcome once
//! ([`crate::api_error`]).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use comptoir_client::MessageId;
use comptoir_client::client::MAX_TEXT_LEN;
use comptoir_protocol::proto::content::{Money, TemplateParameter, template_parameter};
use comptoir_protocol::proto::wire::ConsentPurpose;
use comptoir_protocol::template::TemplateId;
use comptoir_protocol::{AccountId, ConsentCategories};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{mpsc, oneshot};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::api_error::{ApiError, ErrorBody};
use crate::db::{ConversationRow, Db, MessageRow};
use crate::device::{Command, Sent, TemplateRef};
use crate::keys::{self, ApiKey, Scope};
use crate::status::MessageStatus;

/// The most rows one list returns.
pub const MAX_LIST: u32 = 500;
/// Rows a list returns unless `limit` says otherwise.
const DEFAULT_LIST: u32 = 50;
/// The largest request body read (a text message is at most 8 KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The device task's commands.
    pub commands: mpsc::Sender<Command>,
    /// Where text sends go while connected (see [`crate::device::send_text`]).
    pub send_path: crate::device::SendPath,
    /// Where customers' files are downloaded through.
    pub downloads: crate::received_files::Downloads,
    /// The database.
    pub db: Db,
    /// The configured keys (hashed).
    pub keys: Arc<Vec<ApiKey>>,
    /// This business's account (its click-to-chat link names it).
    pub business: AccountId,
    /// This daemon's device id in the business's account.
    pub device: u32,
    /// Whether this daemon holds the business's lease (crate::lease).
    pub acting: crate::lease::Acting,
    /// Turns true when the daemon stops (long polls answer then).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// The router, shared by `agent serve` and the tests.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/health", get(health))
        .route("/v1/messages", post(send_message).get(list_messages))
        .route("/v1/consent_requests", post(request_consent))
        .route("/v1/conversations", get(list_conversations))
        .route("/v1/changes", get(changes))
        .route("/v1/link", get(crate::link::get_link))
        .route(
            "/v1/conversations/{customer}/messages",
            get(conversation_messages),
        )
        .route(
            "/v1/conversations/{customer}/files/{message}",
            get(received_file),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .merge(crate::media::routes())
        .merge(crate::billing::routes())
        .with_state(state)
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Comptoir business agent API",
        description = "The business's backend sends messages and reads conversations through its own agent daemon; end-to-end encryption ends on the business's machine. Webhooks (not described here) are documented in the README.",
        license(name = "AGPL-3.0-or-later")
    ),
    paths(health, changes, send_message, crate::media::upload_media, request_consent, list_conversations, list_messages, conversation_messages, received_file, crate::link::get_link, crate::billing::bill, crate::billing::standing),
    modifiers(&BearerAuth),
    tags((name = "messages"), (name = "consent"), (name = "billing"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document as pretty JSON (what docs/agent-openapi.json holds).
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

/// The daemon's state, for monitoring and load balancers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the daemon answers.
    pub status: String,
    /// This daemon's device id in the business's account.
    pub device: u32,
    /// Whether this daemon holds the business's lease: it posts the
    /// webhooks, sends the away message and assigns waiting
    /// conversations. Of two daemons of one business, one at a time.
    pub acting: bool,
}

/// The daemon's state (no key needed: it tells nothing of conversations).
#[utoipa::path(
    get, path = "/v1/health", tag = "messages",
    responses((status = 200, body = Health))
)]
async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        device: state.device,
        acting: state.acting.now(),
    })
}

pub(crate) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let key = keys::find(&state.keys, presented.trim()).ok_or(ApiError::Unauthorized)?;
    if key.scopes.contains(&scope) {
        Ok(())
    } else {
        tracing::info!(key = %key.name, scope = scope.as_str(), "API key lacks a scope");
        Err(ApiError::Forbidden(scope.as_str()))
    }
}

/// Parse a JSON body; a parse error says where, without Rust type names.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::InvalidRequest(format!(
            "the body is not a valid request: {}",
            comptoir_protocol::json_error::describe_json_error(&e)
        ))
    })
}

/// An outgoing message, as the WhatsApp Cloud API shapes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// `comptoir` (optional; accepted for familiarity).
    #[serde(default)]
    pub messaging_product: Option<String>,
    /// `individual` (optional).
    #[serde(default)]
    pub recipient_type: Option<String>,
    /// The customer: an E.164 phone number that allowed a consent request
    /// made through this daemon, or the customer's account id (32 hex digits).
    pub to: String,
    /// `text` or `template`.
    #[serde(rename = "type")]
    pub kind: SendKind,
    /// For `text`.
    #[serde(default)]
    pub text: Option<TextBody>,
    /// For `template`.
    #[serde(default)]
    pub template: Option<TemplateBody>,
    /// A document uploaded with `POST /v1/media`, sent right after the
    /// text or template as its own message (a template cannot carry one).
    /// Only inside the customer's 24-hour window.
    #[serde(default)]
    pub document: Option<crate::media::DocumentRef>,
}

/// The kind of message.
#[derive(Debug, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SendKind {
    /// Free-form text: only inside the 24-hour window the customer's last message opened.
    Text,
    /// An approved template: outside the window too, under consent.
    Template,
}

/// A text message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextBody {
    /// The text (at most 8 KiB).
    pub body: String,
}

/// Which template and its values.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// The template id (64 hex digits), or leave it out and give `name` and `language`.
    #[serde(default)]
    pub id: Option<String>,
    /// The template's name, as submitted.
    #[serde(default)]
    pub name: Option<String>,
    /// Its language.
    #[serde(default)]
    pub language: Option<Language>,
    /// The values, as WhatsApp's `components` with named parameters.
    #[serde(default)]
    pub components: Vec<Component>,
}

/// A template language.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Language {
    /// `en_GB`, `fr`, …
    pub code: String,
}

/// A group of template values (`header` or `body`; the placeholders'
/// names are unique across the template, so the group is informative).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// `header` or `body`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Named values.
    pub parameters: Vec<Parameter>,
}

/// One named template value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Parameter {
    /// A text placeholder.
    Text {
        /// The placeholder's name.
        parameter_name: String,
        /// The value.
        text: String,
    },
    /// A number placeholder.
    Number {
        /// The placeholder's name.
        parameter_name: String,
        /// The value.
        number: i64,
    },
    /// A money placeholder.
    Currency {
        /// The placeholder's name.
        parameter_name: String,
        /// The amount.
        currency: CurrencyValue,
    },
    /// A date-time placeholder.
    DateTime {
        /// The placeholder's name.
        parameter_name: String,
        /// The moment.
        date_time: DateTimeValue,
    },
}

/// An amount of money.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CurrencyValue {
    /// ISO 4217 code (`GBP`).
    pub code: String,
    /// Amount in minor units (pence).
    pub amount_minor: i64,
}

/// A moment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DateTimeValue {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

/// The answer to a send.
#[derive(Debug, Serialize, ToSchema)]
pub struct SendResponse {
    /// `comptoir`.
    pub messaging_product: &'static str,
    /// Who it went to.
    pub contacts: Vec<ContactOut>,
    /// The message (then the document's, when one was sent with it).
    pub messages: Vec<MessageOut>,
}

/// A recipient.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactOut {
    /// `to` as given.
    pub input: String,
    /// The customer's account id.
    pub account_id: String,
}

/// A sent message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    /// Its id: statuses and replies name it.
    pub id: String,
    /// `sent` (the relay has it) or `queued` (the daemon is offline; sent on reconnect).
    pub message_status: MessageStatus,
}

fn is_e164(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

fn recipient(state: &AppState, to: &str) -> Result<AccountId, ApiError> {
    let to = to.trim();
    if is_e164(to) {
        let customer = state.db.customer_by_phone(to)?.ok_or_else(|| {
            ApiError::UnknownRecipient(format!(
                "no customer with the number {to} allowed a consent request from this business"
            ))
        })?;
        return AccountId::from_hex(&customer)
            .map_err(|_| ApiError::UnknownRecipient("the stored account id is unreadable".into()));
    }
    AccountId::from_hex(to).map_err(|_| {
        ApiError::InvalidRequest(
            "`to` is an E.164 phone number (+447700900123) or a customer account id (32 hex digits)".into(),
        )
    })
}

fn parameters(components: Vec<Component>) -> Result<Vec<TemplateParameter>, ApiError> {
    let mut out = Vec::new();
    for component in components {
        if !matches!(component.kind.as_str(), "header" | "body") {
            return Err(ApiError::InvalidRequest(format!(
                "component type {:?}: use \"header\" or \"body\"",
                component.kind
            )));
        }
        for p in component.parameters {
            let (name, value) = match p {
                Parameter::Text {
                    parameter_name,
                    text,
                } => (parameter_name, template_parameter::Value::Text(text)),
                Parameter::Number {
                    parameter_name,
                    number,
                } => (parameter_name, template_parameter::Value::Number(number)),
                Parameter::Currency {
                    parameter_name,
                    currency,
                } => (
                    parameter_name,
                    template_parameter::Value::Money(Money {
                        amount_minor: currency.amount_minor,
                        currency: currency.code,
                    }),
                ),
                Parameter::DateTime {
                    parameter_name,
                    date_time,
                } => (
                    parameter_name,
                    template_parameter::Value::DateTimeMs(date_time.unix_ms),
                ),
            };
            out.push(TemplateParameter {
                name,
                value: Some(value),
            });
        }
    }
    Ok(out)
}

pub(crate) async fn ask<T>(
    state: &AppState,
    make: impl FnOnce(oneshot::Sender<Result<T, comptoir_client::ClientError>>) -> Command,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    state
        .commands
        .send(make(tx))
        .await
        .map_err(|_| ApiError::Stopping)?;
    Ok(rx.await.map_err(|_| ApiError::Stopping)??)
}

/// Send a text or template message.
#[utoipa::path(
    post, path = "/v1/messages", tag = "messages",
    request_body = SendRequest,
    responses(
        (status = 200, description = "Sent (or queued while the relay is unreachable)", body = SendResponse),
        (status = 400, description = "Invalid request or parameters; nothing stored or sent", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks `messages:send`", body = ErrorBody),
        (status = 404, description = "Unknown recipient", body = ErrorBody),
        (status = 409, description = "The customer's identity changed", body = ErrorBody),
        (status = 422, description = "Refused by a rule: no_consent, window_closed, blocked, template_not_approved", body = ErrorBody),
        (status = 429, description = "quota_exceeded or rate_limited", body = ErrorBody),
        (status = 503, description = "The relay is unreachable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn send_message(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SendResponse>, ApiError> {
    authorize(&state, &headers, Scope::MessagesSend)?;
    let request: SendRequest = parse(&body)?;
    if request
        .messaging_product
        .as_deref()
        .is_some_and(|p| p != "comptoir")
    {
        return Err(ApiError::InvalidRequest(
            "messaging_product is \"comptoir\" (or left out)".into(),
        ));
    }
    if request
        .recipient_type
        .as_deref()
        .is_some_and(|p| p != "individual")
    {
        return Err(ApiError::InvalidRequest(
            "recipient_type is \"individual\" (or left out)".into(),
        ));
    }
    let to = recipient(&state, &request.to)?;
    let document = match request.document {
        Some(document) => Some(crate::media::prepare(&state, document, to).await?),
        None => None,
    };
    let sent: Sent = match request.kind {
        SendKind::Text => {
            if request.template.is_some() {
                return Err(ApiError::InvalidRequest(
                    "a text message has no `template`".into(),
                ));
            }
            let text = request.text.map(|t| t.body).ok_or_else(|| {
                ApiError::InvalidRequest("a text message needs `text.body`".into())
            })?;
            if text.trim().is_empty() {
                return Err(ApiError::InvalidRequest("`text.body` is empty".into()));
            }
            if text.len() > MAX_TEXT_LEN {
                return Err(ApiError::InvalidRequest(format!(
                    "`text.body` is {} bytes; a message holds at most {MAX_TEXT_LEN}",
                    text.len()
                )));
            }
            crate::device::send_text(&state.send_path, &state.commands, to, text)
                .await
                .ok_or(ApiError::Stopping)??
        }
        SendKind::Template => {
            if request.text.is_some() {
                return Err(ApiError::InvalidRequest(
                    "a template message has no `text`".into(),
                ));
            }
            let t = request.template.ok_or_else(|| {
                ApiError::InvalidRequest("a template message needs `template`".into())
            })?;
            let template = match (t.id, t.name, t.language) {
                (Some(id), None, None) => {
                    TemplateRef::Id(TemplateId::from_hex(&id).ok_or_else(|| {
                        ApiError::InvalidRequest("`template.id` is 64 hex digits".into())
                    })?)
                }
                (None, Some(name), Some(language)) => TemplateRef::Name {
                    name,
                    language: language.code,
                },
                _ => {
                    return Err(ApiError::InvalidRequest(
                        "name the template by `id`, or by `name` and `language.code`".into(),
                    ));
                }
            };
            let parameters = parameters(t.components)?;
            ask(&state, |reply| Command::SendTemplate {
                to,
                template,
                parameters,
                reply,
            })
            .await?
        }
    };
    let mut messages = vec![MessageOut {
        id: sent.id.to_string(),
        message_status: sent.status,
    }];
    if let Some(pointer) = document {
        let document = crate::media::send(&state, to, pointer, &sent).await?;
        messages.push(MessageOut {
            id: document.id.to_string(),
            message_status: document.status,
        });
    }
    Ok(Json(SendResponse {
        messaging_product: "comptoir",
        contacts: vec![ContactOut {
            input: request.to,
            account_id: to.to_string(),
        }],
        messages,
    }))
}

/// A consent request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequestBody {
    /// The customer's number as the customer gave it to the business, E.164.
    pub phone_number: String,
    /// What the business asks to send: `utility`, `authentication`, `marketing`.
    pub categories: Vec<CategoryName>,
    /// Why, from the fixed list.
    pub purpose: PurposeName,
    /// 32 hex digits naming the request in the consents webhook; the daemon picks one if left out.
    #[serde(default)]
    pub reference: Option<String>,
}

/// A template category a consent covers.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CategoryName {
    /// Order, delivery and account updates.
    Utility,
    /// One-time codes.
    Authentication,
    /// Offers.
    Marketing,
}

/// The purposes a consent request may name (no free text).
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PurposeName {
    /// Order updates.
    OrderUpdates,
    /// Delivery updates.
    DeliveryUpdates,
    /// Boarding passes and flight updates.
    BoardingPassAndFlightUpdates,
    /// Appointment reminders.
    AppointmentReminders,
    /// Account security codes.
    AccountSecurityCodes,
}

/// The answer to a consent request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentRequestResponse {
    /// The reference the consents webhook will carry if the customer allows.
    pub reference: String,
    /// `requested`: the relay answers the same whether or not the number
    /// is known, and a refusal is never told to the business.
    pub status: &'static str,
}

/// Ask the holder of a phone number for consent to templates.
#[utoipa::path(
    post, path = "/v1/consent_requests", tag = "consent",
    request_body = ConsentRequestBody,
    responses(
        (status = 202, description = "Asked; an allowance arrives as a consents webhook", body = ConsentRequestResponse),
        (status = 400, description = "Invalid request; nothing stored or sent", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks `consent:request`", body = ErrorBody),
        (status = 409, description = "The reference was used before", body = ErrorBody),
        (status = 503, description = "The relay is unreachable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn request_consent(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Scope::ConsentRequest)?;
    let request: ConsentRequestBody = parse(&body)?;
    let phone = request.phone_number.trim().to_owned();
    if !is_e164(&phone) {
        return Err(ApiError::InvalidRequest(
            "`phone_number` is E.164: + then 8 to 15 digits (+447700900123)".into(),
        ));
    }
    if request.categories.is_empty() {
        return Err(ApiError::InvalidRequest(
            "name at least one category".into(),
        ));
    }
    let mut categories = ConsentCategories::NONE;
    let mut names = Vec::new();
    for c in &request.categories {
        let (bits, name) = match c {
            CategoryName::Utility => (ConsentCategories::UTILITY, "utility"),
            CategoryName::Authentication => (ConsentCategories::AUTHENTICATION, "authentication"),
            CategoryName::Marketing => (ConsentCategories::MARKETING, "marketing"),
        };
        categories = categories.union(bits);
        names.push(name);
    }
    let (purpose, purpose_name) = match request.purpose {
        PurposeName::OrderUpdates => (ConsentPurpose::OrderUpdates, "order_updates"),
        PurposeName::DeliveryUpdates => (ConsentPurpose::DeliveryUpdates, "delivery_updates"),
        PurposeName::BoardingPassAndFlightUpdates => (
            ConsentPurpose::BoardingPassAndFlightUpdates,
            "boarding_pass_and_flight_updates",
        ),
        PurposeName::AppointmentReminders => (
            ConsentPurpose::AppointmentReminders,
            "appointment_reminders",
        ),
        PurposeName::AccountSecurityCodes => (
            ConsentPurpose::AccountSecurityCodes,
            "account_security_codes",
        ),
    };
    let reference: [u8; 16] = match &request.reference {
        Some(r) => hex::decode(r.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ApiError::InvalidRequest("`reference` is 32 hex digits".into()))?,
        None => rand::random(),
    };
    let reference_hex = hex::encode(reference);
    names.sort_unstable();
    names.dedup();
    // Recorded first, so an allowance that comes back quickly finds it;
    // taken back if the relay refuses.
    let now = comptoir_client::client::now_ms();
    if !state.db.record_consent_request(
        &reference_hex,
        &phone,
        &names.join(","),
        purpose_name,
        now,
    )? {
        return Err(ApiError::DuplicateReference(reference_hex));
    }
    let asked = ask(&state, |reply| Command::RequestConsent {
        phone,
        categories,
        purpose,
        reference,
        reply,
    })
    .await;
    if let Err(e) = asked {
        state.db.remove_consent_request(&reference_hex)?;
        return Err(e);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(ConsentRequestResponse {
            reference: reference_hex,
            status: "requested",
        }),
    ))
}

/// A conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Conversation {
    /// The customer's account id.
    pub customer: String,
    /// The customer's number, if a consent request learnt it.
    pub phone: Option<String>,
    /// The latest message, ms since the Unix epoch.
    pub last_message_at_ms: u64,
    /// Until when free-form text is allowed (24 hours after the customer's last message), if ever.
    pub window_open_until_ms: Option<u64>,
}

impl From<ConversationRow> for Conversation {
    fn from(r: ConversationRow) -> Self {
        Self {
            customer: r.customer,
            phone: r.phone,
            last_message_at_ms: r.last_message_ms,
            window_open_until_ms: r.last_inbound_ms.map(|t| t + 24 * 3600 * 1000),
        }
    }
}

/// A message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    /// The message id.
    pub id: String,
    /// The customer.
    pub customer: String,
    /// `in` (from the customer) or `out`.
    pub direction: String,
    /// `text`, `template`, `button_reply`, `document` (a file the business
    /// sent) or `attachment` (a file the customer sent; its text is a summary).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text (a template's rendered text; a button's text).
    pub text: String,
    /// The template of a template message.
    pub template_id: Option<String>,
    /// The message a button reply answers.
    pub reply_to: Option<String>,
    /// Where it stands (`received` for incoming messages).
    pub status: MessageStatus,
    /// When, ms since the Unix epoch.
    pub timestamp_ms: u64,
}

impl From<MessageRow> for Message {
    fn from(r: MessageRow) -> Self {
        Self {
            id: r.id,
            customer: r.customer,
            direction: r.direction,
            kind: r.kind,
            text: r.body,
            template_id: r.template_id,
            reply_to: r.reply_to,
            status: r.status,
            timestamp_ms: r.at_ms,
        }
    }
}

/// A list of conversations.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationList {
    /// Latest first.
    pub data: Vec<Conversation>,
}

/// A list of messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    /// Newest first.
    pub data: Vec<Message>,
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// At most this many (1 to 500, default 50).
    pub limit: Option<u32>,
}

/// Which messages.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessageQuery {
    /// Only this customer's.
    pub customer: Option<String>,
    /// Only those containing every word (full-text search).
    pub search: Option<String>,
    /// At most this many (1 to 500, default 50).
    pub limit: Option<u32>,
}

fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIST),
        Some(n) if (1..=MAX_LIST).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::InvalidRequest(format!(
            "`limit` is 1 to {MAX_LIST}"
        ))),
    }
}

pub(crate) fn query<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::InvalidRequest(format!("bad query: {}", e.body_text())))
}

/// The longest `GET /v1/changes` waits.
pub const MAX_CHANGES_WAIT_MS: u64 = 30_000;

/// What `GET /v1/changes` takes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// Answer once the count is past this (a count an earlier call
    /// returned); left out, answer at once.
    #[serde(default)]
    pub after: Option<u64>,
    /// How long to wait at most, in milliseconds (up to 30000; 25000 if left out).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// How much this daemon's state changed since it started.
#[derive(Debug, Serialize, ToSchema)]
pub struct Changes {
    /// Counts the changes: a message or status recorded, an inbox change
    /// (here or synced from the business's other daemon), a webhook
    /// delivery's outcome, the lease taken or lost. Only its growth
    /// means something; it starts again at each start of the daemon.
    pub changes: u64,
}

/// Wait for the daemon's state to change (a long poll, for monitoring
/// and tests): answers as soon as the count passes `after`, or after
/// `wait_ms`, or when the daemon stops, with the count then. Read what
/// changed with the other calls.
#[utoipa::path(
    get, path = "/v1/changes", tag = "messages",
    params(ChangesQuery),
    responses(
        (status = 200, body = Changes),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The key lacks `messages:read`", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn changes(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Json<Changes>, ApiError> {
    authorize(&state, &headers, Scope::MessagesRead)?;
    let q: ChangesQuery = query(&uri)?;
    let wait = q.wait_ms.unwrap_or(25_000);
    if wait > MAX_CHANGES_WAIT_MS {
        return Err(ApiError::InvalidRequest(format!(
            "`wait_ms` is at most {MAX_CHANGES_WAIT_MS}"
        )));
    }
    let mut changed = state.db.watch_changes();
    let mut outcomes = state.db.watch_outcomes();
    let mut stop = state.shutdown.clone();
    let count = |changed: &mut tokio::sync::watch::Receiver<u64>,
                 outcomes: &mut tokio::sync::watch::Receiver<u64>| {
        changed
            .borrow_and_update()
            .wrapping_add(*outcomes.borrow_and_update())
    };
    let mut now = count(&mut changed, &mut outcomes);
    if let Some(after) = q.after {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait);
        while now <= after && !*stop.borrow() {
            tokio::select! {
                r = changed.changed() => if r.is_err() { break },
                r = outcomes.changed() => if r.is_err() { break },
                r = stop.changed() => if r.is_err() { break },
                () = tokio::time::sleep_until(deadline) => break,
            }
            now = count(&mut changed, &mut outcomes);
        }
    }
    Ok(Json(Changes { changes: now }))
}

/// List conversations.
#[utoipa::path(
    get, path = "/v1/conversations", tag = "messages",
    params(ListQuery),
    responses(
        (status = 200, body = ConversationList),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The key lacks `messages:read`", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn list_conversations(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Json<ConversationList>, ApiError> {
    authorize(&state, &headers, Scope::MessagesRead)?;
    let q: ListQuery = query(&uri)?;
    let rows = state.db.conversations(limit(q.limit)?)?;
    Ok(Json(ConversationList {
        data: rows.into_iter().map(Conversation::from).collect(),
    }))
}

/// List or search messages.
#[utoipa::path(
    get, path = "/v1/messages", tag = "messages",
    params(MessageQuery),
    responses(
        (status = 200, body = MessageList),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The key lacks `messages:read`", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn list_messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Json<MessageList>, ApiError> {
    authorize(&state, &headers, Scope::MessagesRead)?;
    let q: MessageQuery = query(&uri)?;
    messages(&state, q.customer.as_deref(), q.search.as_deref(), q.limit)
}

/// One conversation's messages.
#[utoipa::path(
    get, path = "/v1/conversations/{customer}/messages", tag = "messages",
    params(("customer" = String, Path, description = "The customer's account id"), ListQuery),
    responses(
        (status = 200, body = MessageList),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The key lacks `messages:read`", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn conversation_messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(customer): Path<String>,
    uri: axum::http::Uri,
) -> Result<Json<MessageList>, ApiError> {
    authorize(&state, &headers, Scope::MessagesRead)?;
    let q: ListQuery = query(&uri)?;
    messages(&state, Some(&customer), None, q.limit)
}

/// A file a customer sent, decrypted (the client library checks both of
/// its digests first).
#[utoipa::path(
    get, path = "/v1/conversations/{customer}/files/{message}", tag = "messages",
    params(
        ("customer" = String, Path, description = "The customer's account id"),
        ("message" = String, Path, description = "The id of the customer's message that carried the file: the `id` of its `document` webhook event"),
    ),
    responses(
        (status = 200, description = "The file's bytes, as a download (`application/octet-stream`, `Content-Disposition: attachment` with a safe form of the customer's file name); its name, type and size as the customer gave them are in the webhook event", content_type = "application/octet-stream"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The key lacks `messages:read`", body = ErrorBody),
        (status = 404, description = "`unknown_file`: no file from this customer came with this message", body = ErrorBody),
        (status = 503, description = "`relay_unavailable` or `unavailable`: retry later", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn received_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((customer, message)): Path<(String, String)>,
) -> Result<axum::response::Response, ApiError> {
    use crate::received_files::{self, FetchError};
    authorize(&state, &headers, Scope::MessagesRead)?;
    let account = AccountId::from_hex(&customer).map_err(|_| {
        ApiError::InvalidRequest("`customer` is an account id (32 hex digits)".into())
    })?;
    let id = MessageId::from_hex(&message).ok_or_else(|| {
        ApiError::InvalidRequest("`message` is a message id (32 hex digits)".into())
    })?;
    let (customer, message) = (account.to_string(), id.to_string());
    let row = state
        .db
        .attachment(&customer, &message)?
        .ok_or_else(|| ApiError::UnknownFile(message.clone()))?;
    match received_files::fetch(&state.downloads, state.db.dir(), account, id).await {
        Ok(file) => Ok(received_files::download_response(&row, file)),
        Err(FetchError::Client(e)) => Err(ApiError::Client(e)),
        Err(e) => {
            tracing::error!(error = %e, "fetching a customer's file");
            Err(ApiError::FileNotFetched)
        }
    }
}

fn messages(
    state: &AppState,
    customer: Option<&str>,
    search: Option<&str>,
    n: Option<u32>,
) -> Result<Json<MessageList>, ApiError> {
    if let Some(c) = customer {
        AccountId::from_hex(c).map_err(|_| {
            ApiError::InvalidRequest("`customer` is an account id (32 hex digits)".into())
        })?;
    }
    let rows = state.db.messages(customer, search, limit(n)?)?;
    Ok(Json(MessageList {
        data: rows.into_iter().map(Message::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_e164() {
        assert!(is_e164("+447700900123"));
        assert!(!is_e164("447700900123"));
        assert!(!is_e164("+44 7700 900123"));
        assert!(!is_e164("+0447700900"));
        assert!(!is_e164("+1234"));
    }

    /// docs/agent-openapi.json is what the code generates (regenerate it
    /// with `cargo run -p comptoir-agent -- openapi > docs/agent-openapi.json`).
    #[test]
    fn the_committed_openapi_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/agent-openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            committed.trim_end(),
            openapi_json().trim_end(),
            "docs/agent-openapi.json is stale: run `cargo run -p comptoir-agent -- openapi > docs/agent-openapi.json`"
        );
    }

    /// Every parameter is where the route reads it: a path parameter is
    /// a `{name}` of its path, everything else is in the query.
    #[test]
    fn parameters_are_declared_where_the_routes_read_them() {
        let doc: serde_json::Value =
            serde_json::from_str(&openapi_json()).expect("the document is JSON");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, operations) in paths {
            for (method, operation) in operations.as_object().expect("operations") {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    let name = parameter["name"].as_str().expect("a name");
                    let place = parameter["in"].as_str().expect("a place");
                    let in_path = path.contains(&format!("{{{name}}}"));
                    assert_eq!(
                        place,
                        if in_path { "path" } else { "query" },
                        "{method} {path}: parameter {name}"
                    );
                }
            }
        }
    }
}
