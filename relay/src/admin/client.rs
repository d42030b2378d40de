//! A small client of the admin API (HTTP/1.1 over one TCP connection per
//! request), used by `relay admin …` and by the tests.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use super::{ErrorBody, OperatorKeyBody};
use crate::operator::AdminToken;

/// Largest response body read.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminClientError {
    /// The relay's admin listener could not be reached.
    #[error(
        "cannot reach the relay's admin API at {addr}: {source} (is the relay running, and is --admin its admin_listen address?)"
    )]
    Unreachable {
        /// Where it was dialled.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The connection broke or the answer was not HTTP.
    #[error("the admin API at {addr} did not answer properly: {reason}")]
    Protocol {
        /// Where it was dialled.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The relay refused the request.
    #[error("{message} ({error}, HTTP {status})")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's error code.
        error: String,
        /// What to do.
        message: String,
    },
}

/// A client of one relay's admin API.
#[derive(Debug)]
pub struct AdminClient {
    addr: SocketAddr,
    token: AdminToken,
}

impl AdminClient {
    /// A client of the API listening on `addr`, authenticating with `token`.
    pub fn new(addr: SocketAddr, token: AdminToken) -> Self {
        Self { addr, token }
    }

    /// The operator's public key, as the relay publishes it.
    pub async fn operator_key(&self) -> Result<OperatorKeyBody, AdminClientError> {
        self.call(Method::GET, "/v1/operator-key", None).await
    }

    /// Templates, oldest submission first; only those in `status`
    /// (pending, approved, rejected, revoked) when given.
    pub async fn templates(
        &self,
        status: Option<&str>,
    ) -> Result<super::templates::TemplateList, AdminClientError> {
        let path = match status {
            Some(status) => format!("/v1/templates?status={status}"),
            None => "/v1/templates".to_owned(),
        };
        self.call(Method::GET, &path, None).await
    }

    /// One template with its state and signed decision.
    pub async fn template(
        &self,
        id: &str,
    ) -> Result<super::templates::TemplateDetail, AdminClientError> {
        self.call(Method::GET, &format!("/v1/templates/{id}"), None)
            .await
    }

    /// Approve a template (signed with the operator key).
    pub async fn approve_template(
        &self,
        id: &str,
    ) -> Result<super::templates::TemplateDetail, AdminClientError> {
        self.call(Method::POST, &format!("/v1/templates/{id}/approve"), None)
            .await
    }

    /// Reject a pending template, saying why.
    pub async fn reject_template(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<super::templates::TemplateDetail, AdminClientError> {
        self.call(
            Method::POST,
            &format!("/v1/templates/{id}/reject"),
            Some(serde_json::json!({ "reason": reason })),
        )
        .await
    }

    /// Revoke an approved template (signed with the operator key).
    pub async fn revoke_template(
        &self,
        id: &str,
    ) -> Result<super::templates::TemplateDetail, AdminClientError> {
        self.call(Method::POST, &format!("/v1/templates/{id}/revoke"), None)
            .await
    }

    /// Every report, opened and verified.
    pub async fn reports(&self) -> Result<super::reports::ReportsBody, AdminClientError> {
        self.call(Method::GET, "/v1/reports", None).await
    }

    /// One report, opened and verified (`id` as the operator typed it).
    pub async fn report(&self, id: &str) -> Result<super::reports::ReportBody, AdminClientError> {
        self.call(Method::GET, &format!("/v1/reports/{id}"), None)
            .await
    }

    /// A business's profile and certificate state.
    pub async fn business(
        &self,
        account: &str,
    ) -> Result<super::businesses::BusinessBody, AdminClientError> {
        self.call(Method::GET, &format!("/v1/businesses/{account}"), None)
            .await
    }

    /// A business's quality rating, messaging tier and usage.
    pub async fn business_quality(
        &self,
        account: &str,
    ) -> Result<super::quality::QualityBody, AdminClientError> {
        self.call(
            Method::GET,
            &format!("/v1/businesses/{account}/quality"),
            None,
        )
        .await
    }

    /// Fix a business's messaging tier (`1` to `5`, `unlimited`) or give
    /// it back to evaluation (`auto`).
    pub async fn set_business_tier(
        &self,
        account: &str,
        tier: &str,
    ) -> Result<super::quality::QualityBody, AdminClientError> {
        self.call(
            Method::POST,
            &format!("/v1/businesses/{account}/tier"),
            Some(serde_json::json!({ "tier": tier })),
        )
        .await
    }

    /// Certify a business's published profile for `days` (default 365).
    pub async fn verify_business(
        &self,
        account: &str,
        days: Option<u32>,
    ) -> Result<super::businesses::BusinessBody, AdminClientError> {
        let body = days.map(|days| serde_json::json!({ "days": days }));
        self.call(
            Method::POST,
            &format!("/v1/businesses/{account}/verify"),
            body,
        )
        .await
    }

    /// Revoke a business's certificate.
    pub async fn revoke_business(
        &self,
        account: &str,
    ) -> Result<super::businesses::BusinessBody, AdminClientError> {
        self.call(
            Method::POST,
            &format!("/v1/businesses/{account}/revoke"),
            None,
        )
        .await
    }

    /// A business's bill for deliveries in `[from_ms, to_ms)`, in
    /// `format` (`csv` or `json`), as the API wrote it.
    pub async fn export_bill(
        &self,
        account: &str,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
        format: &str,
    ) -> Result<String, AdminClientError> {
        let mut path = format!("/v1/bills/{account}?format={format}");
        if let Some(from) = from_ms {
            path.push_str(&format!("&from_ms={from}"));
        }
        if let Some(to) = to_ms {
            path.push_str(&format!("&to_ms={to}"));
        }
        let (status, bytes) = self.raw(Method::GET, &path, None, true).await?;
        if !status.is_success() {
            let refusal: ErrorBody = serde_json::from_slice(&bytes)
                .map_err(|_| self.protocol(format!("HTTP {status} without an error body")))?;
            return Err(AdminClientError::Refused {
                status: status.as_u16(),
                error: refusal.error,
                message: refusal.message,
            });
        }
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.protocol("the export is not UTF-8".into()))
    }

    /// One request; a JSON answer on success, [`AdminClientError::Refused`]
    /// with the API's message otherwise.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, AdminClientError> {
        let (status, bytes) = self.raw(method, path, body, true).await?;
        if !status.is_success() {
            let refusal: ErrorBody = serde_json::from_slice(&bytes)
                .map_err(|_| self.protocol(format!("HTTP {status} without an error body")))?;
            return Err(AdminClientError::Refused {
                status: status.as_u16(),
                error: refusal.error,
                message: refusal.message,
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| self.protocol(format!("unexpected JSON answer ({e})")))
    }

    /// One request returning the status and body as they are; `with_token`
    /// false leaves the `Authorization` header out (tests of the check).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        with_token: bool,
    ) -> Result<(StatusCode, Bytes), AdminClientError> {
        let stream = TcpStream::connect(self.addr).await.map_err(|source| {
            AdminClientError::Unreachable {
                addr: self.addr,
                source,
            }
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        if with_token {
            request = request.header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token.as_str()),
            );
        }
        let payload = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(payload))
            .map_err(|e| self.protocol(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        let status = response.status();
        let limited = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| self.protocol(e.to_string()))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }

    /// A [`AdminClientError::Protocol`] for this client's address.
    pub fn protocol(&self, reason: String) -> AdminClientError {
        AdminClientError::Protocol {
            addr: self.addr,
            reason,
        }
    }
}
