//! The API's errors, mapped once: each is a status and a JSON body
//! `{"error":{"code","message","what_to_do"}}` with a stable `code`. A
//! relay refusal keeps its rule's name (no consent, window closed,
//! blocked, quota exceeded, template not approved); internal details are
//! logged, never returned.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use comptoir_client::ClientError;
use comptoir_protocol::proto::wire::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong and what to do.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `window_closed`.
    pub code: &'static str,
    /// What happened.
    pub message: String,
    /// What to do about it.
    pub what_to_do: &'static str,
}

/// An API error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No key, or not one of the configured keys.
    #[error("missing or unknown API key")]
    Unauthorized,
    /// The key lacks the scope.
    #[error("this API key does not have the scope {0}")]
    Forbidden(&'static str),
    /// The request is malformed; nothing was stored or sent.
    #[error("{0}")]
    InvalidRequest(String),
    /// No customer known for `to`.
    #[error("{0}")]
    UnknownRecipient(String),
    /// A reference used before.
    #[error("the reference {0} was used by an earlier consent request")]
    DuplicateReference(String),
    /// The relay refused by a business rule, or the client library refused.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The database failed.
    #[error("{0}")]
    Db(#[from] crate::db::DbError),
    /// An upload past the limit for its kind; nothing was stored.
    #[error("{0}")]
    MediaTooLarge(String),
    /// No uploaded document has this id.
    #[error("no uploaded document has the id {0}")]
    UnknownMedia(String),
    /// A document to a customer whose window is closed; nothing was sent.
    #[error("a document goes only inside the customer's 24-hour window; nothing was sent")]
    DocumentOutsideWindow,
    /// The message went, the document after it did not.
    #[error("the message {0} was sent; the document after it was not")]
    DocumentNotSent(String),
    /// No file from this customer came with this message id.
    #[error("no file from this customer came with the message {0}")]
    UnknownFile(String),
    /// A customer's file could not be fetched or kept now.
    #[error("the daemon could not fetch the customer's file now")]
    FileNotFetched,
    /// A temporary file failed.
    #[error("{0}")]
    Io(String),
    /// The device task is gone (the daemon is stopping).
    #[error("the daemon is stopping")]
    Stopping,
}

impl ApiError {
    /// The safe, readable explanation (what the inbox shows an agent).
    pub(crate) fn message(&self) -> String {
        self.parts().2
    }

    fn parts(&self) -> (StatusCode, &'static str, String, &'static str) {
        use StatusCode as S;
        match self {
            Self::Unauthorized => (
                S::UNAUTHORIZED,
                "unauthorized",
                self.to_string(),
                "send `Authorization: Bearer <key>` with a key listed (hashed) in the daemon's configuration",
            ),
            Self::Forbidden(_) => (
                S::FORBIDDEN,
                "forbidden_scope",
                self.to_string(),
                "use a key with this scope, or add the scope to the key in the configuration",
            ),
            Self::InvalidRequest(m) => (
                S::BAD_REQUEST,
                "invalid_request",
                m.clone(),
                "fix the request as described; nothing was stored or sent",
            ),
            Self::UnknownRecipient(m) => (
                S::NOT_FOUND,
                "unknown_recipient",
                m.clone(),
                "request the customer's consent by phone number first (POST /v1/consent_requests) and wait for the consents webhook, or give the customer's account id",
            ),
            Self::DuplicateReference(_) => (
                S::CONFLICT,
                "duplicate_reference",
                self.to_string(),
                "use a new reference, or leave it out and the daemon picks one",
            ),
            Self::Client(e) => client_parts(e),
            Self::Db(_) => (
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "the daemon's database failed".into(),
                "retry later; the operator finds the cause in the daemon's log",
            ),
            Self::MediaTooLarge(m) => (
                S::PAYLOAD_TOO_LARGE,
                "media_too_large",
                m.clone(),
                "send a smaller file (documents up to 100 MB, images 5 MB, audio and video 16 MB, or less if the relay says so); nothing was stored",
            ),
            Self::UnknownMedia(_) => (
                S::NOT_FOUND,
                "unknown_media",
                self.to_string(),
                "upload the document first (POST /v1/media) and name the id it answered",
            ),
            Self::DocumentOutsideWindow => (
                S::UNPROCESSABLE_ENTITY,
                "window_closed",
                self.to_string(),
                "a template message cannot carry a document and the relay takes a document only inside the window: send the template alone, and the document once the customer writes",
            ),
            Self::DocumentNotSent(_) => (
                S::BAD_GATEWAY,
                "document_not_sent",
                self.to_string(),
                "do not send the message again; send the document with a text message (POST /v1/messages with `document`)",
            ),
            Self::UnknownFile(_) => (
                S::NOT_FOUND,
                "unknown_file",
                self.to_string(),
                "name the customer and the message id of a `document` webhook event",
            ),
            Self::FileNotFetched => (
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                self.to_string(),
                "retry later; the operator finds the cause in the daemon's log",
            ),
            Self::Io(_) => (
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "the daemon could not keep the upload".into(),
                "retry later; the operator finds the cause in the daemon's log",
            ),
            Self::Stopping => (
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                self.to_string(),
                "retry once the daemon is running again",
            ),
        }
    }
}

fn client_parts(e: &ClientError) -> (StatusCode, &'static str, String, &'static str) {
    use StatusCode as S;
    let unprocessable = S::UNPROCESSABLE_ENTITY;
    match e {
        ClientError::Relay { code, .. } => match code {
            ErrorCode::NoConsent | ErrorCode::StaleConsent => (
                unprocessable,
                "no_consent",
                "the relay refused: this customer has not consented to templates of this category".into(),
                "ask for consent (POST /v1/consent_requests); send templates once the consents webhook reports it granted",
            ),
            ErrorCode::WindowClosed => (
                unprocessable,
                "window_closed",
                "the relay refused: the customer has not written in the last 24 hours, so free-form text is not allowed".into(),
                "send an approved template (the customer must have consented), or wait for the customer to write",
            ),
            ErrorCode::Blocked => blocked(),
            ErrorCode::QuotaExceeded => (
                S::TOO_MANY_REQUESTS,
                "quota_exceeded",
                "the relay refused: the business reached its daily limit of customers reached by business-initiated conversations".into(),
                "send tomorrow; the limit rises with the business's quality rating",
            ),
            ErrorCode::TemplateNotApproved => template_not_approved(),
            ErrorCode::RateLimited => (
                S::TOO_MANY_REQUESTS,
                "rate_limited",
                "the relay asks to slow down".into(),
                "retry after a short wait",
            ),
            ErrorCode::UnknownAccount => unknown_account(),
            ErrorCode::InvalidRequest => (
                S::BAD_REQUEST,
                "relay_refused_request",
                "the relay refused the request as invalid".into(),
                "check the values (a phone number in E.164, a verified business for consent requests)",
            ),
            _ => (
                S::BAD_GATEWAY,
                "relay_error",
                format!("the relay refused: {e}"),
                "retry later; if it persists, tell the relay's operator",
            ),
        },
        ClientError::Bill(error) => (
            S::BAD_GATEWAY,
            "bill_not_verified",
            format!("the relay's bill does not check: {error}"),
            "do not pay on it; send this error to the relay's operator",
        ),
        ClientError::Blocked { .. } => blocked(),
        ClientError::TemplateNotApproved(_) => template_not_approved(),
        ClientError::NoSuchAccount(_) => unknown_account(),
        ClientError::InvalidInstance(i) => (
            S::BAD_REQUEST,
            "invalid_parameters",
            format!("the parameters do not fit the template: {i}"),
            "give one value per placeholder, of its kind (text, number, currency, date_time)",
        ),
        ClientError::TextTooLong { .. } | ClientError::InvalidArgument(_) => (
            S::BAD_REQUEST,
            "invalid_request",
            e.to_string(),
            "fix the request as described; nothing was sent",
        ),
        ClientError::IdentityChanged { .. } => (
            S::CONFLICT,
            "identity_changed",
            "the customer's identity key changed; messages to it are held".into(),
            "an agent compares safety numbers with the customer and accepts the change",
        ),
        ClientError::NotConnected
        | ClientError::Connect { .. }
        | ClientError::ConnectionClosed(_)
        | ClientError::Timeout(_) => (
            S::SERVICE_UNAVAILABLE,
            "relay_unavailable",
            "the relay cannot be reached right now".into(),
            "retry later",
        ),
        _ => (
            S::INTERNAL_SERVER_ERROR,
            "internal",
            "the daemon could not complete the request".into(),
            "retry later; the operator finds the cause in the daemon's log",
        ),
    }
}

fn blocked() -> (StatusCode, &'static str, String, &'static str) {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        "blocked",
        "the relay refused: the customer blocked this business".into(),
        "do not retry; the customer must unblock the business",
    )
}

fn template_not_approved() -> (StatusCode, &'static str, String, &'static str) {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        "template_not_approved",
        "the template is not approved for this business (unknown, pending, rejected or revoked)"
            .into(),
        "submit the template and wait for the operator's approval, or name an approved one",
    )
}

fn unknown_account() -> (StatusCode, &'static str, String, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "unknown_recipient",
        "the relay knows no such customer account".into(),
        "check the account id",
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, what_to_do) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, code, "API request failed");
        }
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code,
                    message,
                    what_to_do,
                },
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
