//! The operator's admin API: JSON over HTTP/1.1 on its own listener
//! (loopback by default), every request carrying the bearer token from the
//! 0600 token file. `relay admin …` ([`client`]) is its command-line
//! client; docs/admin-openapi.json describes it, and a test keeps the two
//! equal ([`ROUTES`]).
//!
//! Modules:
//! - this one: the router, the token check, typed errors.
//! - [`businesses`]: verifying businesses (certify or revoke a published
//!   profile; certificates are signed by the operator key).
//! - [`templates`]: reviewing templates (list, show, approve, reject,
//!   revoke); approvals and revocations are signed by the operator key.
//! - [`bills`]: exporting a business's bill (CSV or JSON, with totals).
//! - [`quality`]: a business's quality rating, messaging tier and usage,
//!   and the operator's override of the tier.
//! - [`reports`]: reviewing reports (list, show): each is opened with the
//!   operator key and verified (relay tag, franking commitment, labels).
//! - [`client`]: a small HTTP/1.1 client of the API (the CLI and tests).
//! - [`cli`]: the `relay admin` commands over that client.

pub mod bills;
pub mod businesses;
pub mod cli;
pub mod client;
pub mod quality;
pub mod reports;
pub mod templates;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use comptoir_protocol::OperatorKeyPair;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::operator::AdminToken;
use crate::state::Relay;
use crate::storage::{Backend, StorageError};

/// Every (method, path) the API serves, in the OpenAPI file's notation;
/// a test checks docs/admin-openapi.json lists exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/operator-key"),
    ("get", "/v1/templates"),
    ("get", "/v1/templates/{template_id}"),
    ("post", "/v1/templates/{template_id}/approve"),
    ("post", "/v1/templates/{template_id}/reject"),
    ("post", "/v1/templates/{template_id}/revoke"),
    ("get", "/v1/businesses/{account}"),
    ("post", "/v1/businesses/{account}/verify"),
    ("post", "/v1/businesses/{account}/revoke"),
    ("get", "/v1/businesses/{account}/quality"),
    ("post", "/v1/businesses/{account}/tier"),
    ("get", "/v1/bills/{account}"),
    ("get", "/v1/reports"),
    ("get", "/v1/reports/{report_id}"),
];

/// What the handlers share.
pub struct AdminState<S> {
    /// The operator signing key.
    pub operator: Arc<OperatorKeyPair>,
    /// The bearer token every request must carry.
    pub token: AdminToken,
    /// The relay (its storage and clock).
    pub(crate) relay: Arc<Relay<S>>,
}

impl<S> std::fmt::Debug for AdminState<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("operator", &self.operator.public())
            .finish_non_exhaustive()
    }
}

/// A refusal of the admin API: an HTTP status and a JSON body
/// `{"error": code, "message": text}` saying what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No token, or not the one in the token file.
    #[error(
        "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token from the relay's admin.token file"
    )]
    Unauthorized,
    /// No such route.
    #[error("no such admin endpoint: see docs/admin-openapi.json")]
    NotFound,
    /// No business published a profile under this account.
    #[error("this account published no business profile: the business publishes its profile first")]
    UnknownBusiness,
    /// The account is unknown or not a business account.
    #[error("no business account has this id: a business registers as one first")]
    NotABusiness,
    /// No template has this id.
    #[error("no template has this id: list them with `relay admin templates list`")]
    UnknownTemplate,
    /// No report has this id.
    #[error("no report has this id: list them with `relay admin reports list`")]
    UnknownReport,
    /// The request is malformed (the message says how).
    #[error("{0}")]
    BadRequest(String),
    /// The request does not fit the current state (the message says why).
    #[error("{0}")]
    Conflict(String),
    /// Storage failed (details in the relay's log only).
    #[error("the relay's storage failed; see the relay's log")]
    Storage,
}

impl From<StorageError> for AdminError {
    fn from(error: StorageError) -> Self {
        tracing::error!(%error, "admin request: storage failed");
        Self::Storage
    }
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound
            | Self::UnknownTemplate
            | Self::UnknownBusiness
            | Self::UnknownReport
            | Self::NotABusiness => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Storage => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::UnknownTemplate => "unknown_template",
            Self::UnknownBusiness => "unknown_business",
            Self::NotABusiness => "not_a_business",
            Self::UnknownReport => "unknown_report",
            Self::BadRequest(_) => "bad_request",
            Self::Conflict(_) => "conflict",
            Self::Storage => "internal",
        }
    }
}

/// The JSON body of every refusal.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// A stable machine-readable code (`unauthorized`, `not_found`, …).
    pub error: String,
    /// What went wrong and what to do, for people.
    pub message: String,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code().to_owned(),
            message: self.to_string(),
        };
        (self.status(), Json(body)).into_response()
    }
}

/// `GET /v1/operator-key`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct OperatorKeyBody {
    /// The operator's Ed25519 public key, 64 lowercase hex digits.
    pub operator_key: String,
}

/// The router of the API, token check included.
pub fn router<S: Backend>(state: Arc<AdminState<S>>) -> Router {
    Router::new()
        .route("/v1/operator-key", get(operator_key::<S>))
        .route("/v1/templates", get(templates::list::<S>))
        .route("/v1/templates/{template_id}", get(templates::show::<S>))
        .route(
            "/v1/templates/{template_id}/approve",
            post(templates::approve::<S>),
        )
        .route(
            "/v1/templates/{template_id}/reject",
            post(templates::reject::<S>),
        )
        .route(
            "/v1/templates/{template_id}/revoke",
            post(templates::revoke::<S>),
        )
        .route("/v1/businesses/{account}", get(businesses::show::<S>))
        .route(
            "/v1/businesses/{account}/verify",
            post(businesses::verify::<S>),
        )
        .route(
            "/v1/businesses/{account}/revoke",
            post(businesses::revoke::<S>),
        )
        .route("/v1/businesses/{account}/quality", get(quality::show::<S>))
        .route(
            "/v1/businesses/{account}/tier",
            post(quality::set_tier::<S>),
        )
        .route("/v1/bills/{account}", get(bills::export::<S>))
        .route("/v1/reports", get(reports::list::<S>))
        .route("/v1/reports/{report_id}", get(reports::show::<S>))
        .fallback(|| async { AdminError::NotFound })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_token::<S>,
        ))
        .with_state(state)
}

/// Serve the API on `listener` until the task is dropped.
pub async fn serve<S: Backend>(listener: TcpListener, state: Arc<AdminState<S>>) {
    if let Err(error) = axum::serve(listener, router(state)).await {
        tracing::error!(%error, "admin listener stopped");
    }
}

async fn require_token<S>(
    State(state): State<Arc<AdminState<S>>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if state.token.matches(token) => next.run(request).await,
        _ => AdminError::Unauthorized.into_response(),
    }
}

async fn operator_key<S>(State(state): State<Arc<AdminState<S>>>) -> Json<OperatorKeyBody> {
    Json(OperatorKeyBody {
        operator_key: hex::encode(state.operator.public().to_bytes()),
    })
}
