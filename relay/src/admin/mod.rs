//! The operator's admin API: JSON over HTTP/1.1 on its own listener
//! (loopback by default), every request carrying the bearer token from the
//! 0600 token file. `relay admin …` ([`client`]) is its command-line
//! client; docs/admin-openapi.json describes it, and a test keeps the two
//! equal ([`ROUTES`]).
//!
//! Modules:
//! - this one: the router, the token check, the handlers, typed errors.
//! - [`client`]: a small HTTP/1.1 client of the API (the CLI and tests).
//! - [`cli`]: the `relay admin` commands over that client.

pub mod cli;
pub mod client;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use comptoir_protocol::OperatorKeyPair;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::operator::AdminToken;

/// Every (method, path) the API serves, in the OpenAPI file's notation;
/// a test checks docs/admin-openapi.json lists exactly these.
pub const ROUTES: &[(&str, &str)] = &[("get", "/v1/operator-key")];

/// What the handlers share.
pub struct AdminState {
    /// The operator signing key.
    pub operator: Arc<OperatorKeyPair>,
    /// The bearer token every request must carry.
    pub token: AdminToken,
}

impl std::fmt::Debug for AdminState {
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
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
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
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/operator-key", get(operator_key))
        .fallback(|| async { AdminError::NotFound })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Serve the API on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    if let Err(error) = axum::serve(listener, router(state)).await {
        tracing::error!(%error, "admin listener stopped");
    }
}

async fn require_token(
    State(state): State<Arc<AdminState>>,
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

async fn operator_key(State(state): State<Arc<AdminState>>) -> Json<OperatorKeyBody> {
    Json(OperatorKeyBody {
        operator_key: hex::encode(state.operator.public().to_bytes()),
    })
}
