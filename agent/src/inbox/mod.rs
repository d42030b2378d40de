//! The agents' web inbox, served by the daemon under `/inbox`: agents log
//! in with their own passwords and answer customers from a browser. Pages
//! are rendered on the server by templates that escape every value
//! (askama), so customer text is always shown as text; a small embedded
//! script adds live updates (server-sent events) and keyboard shortcuts,
//! and every page works without it.
//!
//! Every response carries a strict Content-Security-Policy (scripts and
//! styles from this daemon only, no inline script), `nosniff`, no
//! framing, and no referrer; a request whose `Host` is not the daemon's
//! own address is refused (against DNS rebinding).
//!
//! Modules:
//! - [`agents`]: agents, Argon2id password hashes, the admin role.
//! - [`session`]: sessions (cookies, tokens stored hashed), CSRF tokens,
//!   the login rate limit.
//! - [`conversations`]: what the pages show of conversations (unread
//!   counts, the window, notes, canned replies, search).
//! - [`assign`]: manual assignment, hand-off with a note, and round robin
//!   over available agents under their cap.
//! - [`events`]: server-sent events and who is online.
//! - [`files`]: files customers sent, served as downloads.
//! - [`pages`]: the page handlers and their templates.
//! - [`handover`]: a bounded wait for the device's outcome of an action,
//!   handing a late one over (queued replies, templates, accepts).
//! - [`assets`]: the script and style sheet built into the binary.

pub mod agents;
pub mod assets;
pub mod assign;
pub mod conversations;
pub mod events;
pub mod files;
pub mod handover;
pub mod pages;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use tokio::sync::mpsc;

use crate::clock::SharedClock;
use crate::db::Db;
use crate::device::Command;

/// The inbox's tables (a migration appended to [`crate::db`]'s).
pub const SCHEMA: &str = "
CREATE TABLE agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    cap INTEGER NOT NULL DEFAULT 10,
    created_ms INTEGER NOT NULL
);
CREATE TABLE agent_sessions (
    token_sha256 TEXT PRIMARY KEY,
    agent_id INTEGER NOT NULL REFERENCES agents (id),
    expires_ms INTEGER NOT NULL
);
CREATE TABLE inbox_conversations (
    customer TEXT PRIMARY KEY,
    assignee INTEGER REFERENCES agents (id),
    read_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE inbox_notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer TEXT NOT NULL,
    agent_id INTEGER NOT NULL REFERENCES agents (id),
    body TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX inbox_notes_by_customer ON inbox_notes (customer, id);
CREATE TABLE canned_replies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE inbox_round_robin (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 0),
    last_agent INTEGER
);
";

/// Why an inbox request failed; each maps to one page or redirect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// Not logged in (or the session expired).
    #[error("please log in")]
    LoggedOut,
    /// Logged in, but the page is for admins.
    #[error("only an admin may do this")]
    AdminOnly,
    /// A form came without its CSRF token, or with another session's.
    #[error("the form expired; reload the page and try again")]
    Csrf,
    /// The `Host` header is not this daemon's address.
    #[error("unknown host")]
    WrongHost,
    /// Bad input, explained.
    #[error("{0}")]
    Invalid(String),
    /// An agent name in use.
    #[error("the agent name {0} is taken")]
    NameTaken(String),
    /// No such conversation, agent or note.
    #[error("not found")]
    NotFound,
    /// Too many failed logins for this name from this address.
    #[error("too many failed logins; wait a few minutes and try again")]
    RateLimited,
    /// The device task could not fetch what was asked (the relay is
    /// unreachable, the file expired or failed its checks).
    #[error("the file cannot be downloaded now; try again later")]
    Unavailable,
    /// The device task is busy: what was asked (named) is queued and
    /// done once it is free. Not a failure: doing it again would do it
    /// twice.
    #[error(
        "{0} is queued: the device is busy and goes on with it as soon as it is free; \
         do not send it again (the conversation shows it once done)"
    )]
    Queued(String),
    /// The database failed.
    #[error("{0}")]
    Db(#[from] crate::db::DbError),
}

impl From<rusqlite::Error> for InboxError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(e.into())
    }
}

/// Result alias for the inbox.
pub type Result<T, E = InboxError> = std::result::Result<T, E>;

impl IntoResponse for InboxError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::LoggedOut => return Redirect::to("/inbox/login").into_response(),
            Self::AdminOnly | Self::Csrf | Self::WrongHost => StatusCode::FORBIDDEN,
            Self::Invalid(_) | Self::NameTaken(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::BAD_GATEWAY,
            Self::Queued(_) => StatusCode::ACCEPTED,
            Self::Db(e) => {
                tracing::error!(error = %e, "inbox");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &self {
            Self::Db(_) => {
                "the daemon's database failed; the operator finds the cause in its log".to_owned()
            }
            other => other.to_string(),
        };
        (status, pages::error_page(status, &message)).into_response()
    }
}

/// Password checks run at once at most: each takes Argon2's memory
/// (19 MiB), so logins sent in a burst under many names queue instead of
/// taking the daemon's memory.
pub const PASSWORD_CHECKS: usize = 2;

/// What the inbox's handlers share.
#[derive(Clone)]
pub struct InboxState {
    /// The database.
    pub db: Db,
    /// The device task (sending replies and templates).
    pub commands: mpsc::Sender<Command>,
    /// Where customers' files are downloaded through (none until
    /// [`InboxState::with_downloads`]).
    pub downloads: crate::received_files::Downloads,
    /// The daemon's clock (the window's time left).
    pub clock: SharedClock,
    /// `Host` values accepted: the listen address (and `localhost:PORT`
    /// on loopback), and the configured `inbox_hosts`.
    pub hosts: Arc<Vec<String>>,
    /// Mark cookies `Secure` (the daemon serves TLS).
    pub secure_cookies: bool,
    /// Reverse proxies whose `X-Forwarded-For` names the client (see
    /// [`session::client_ip`]).
    pub trusted_proxies: Arc<Vec<std::net::IpAddr>>,
    /// Login attempts per name and address.
    pub limiter: Arc<session::LoginLimiter>,
    /// Turns to check a password ([`PASSWORD_CHECKS`] at a time).
    pub password_checks: Arc<tokio::sync::Semaphore>,
    /// Who has the inbox open.
    pub presence: Arc<events::Presence>,
    /// Opening hours and the away message, if configured (shown to agents).
    pub away: Option<Arc<crate::config::Away>>,
    /// Turns true when the daemon stops: event streams end then, so the
    /// server's graceful shutdown does not wait for open pages.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    /// Whether this daemon holds the business's lease (it assigns
    /// waiting conversations then; crate::lease).
    pub acting: crate::lease::Acting,
}

impl std::fmt::Debug for InboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxState")
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl InboxState {
    /// The state for a daemon listening on `addr`.
    pub fn new(
        db: Db,
        commands: mpsc::Sender<Command>,
        clock: SharedClock,
        addr: std::net::SocketAddr,
        secure_cookies: bool,
    ) -> Self {
        let mut hosts = vec![addr.to_string()];
        if addr.ip().is_loopback() {
            hosts.push(format!("localhost:{}", addr.port()));
        }
        Self {
            db,
            commands,
            downloads: crate::received_files::Downloads::default(),
            clock,
            hosts: Arc::new(hosts),
            secure_cookies,
            trusted_proxies: Arc::default(),
            limiter: Arc::default(),
            password_checks: Arc::new(tokio::sync::Semaphore::new(PASSWORD_CHECKS)),
            presence: Arc::default(),
            away: None,
            shutdown: None,
            acting: crate::lease::Acting::always(),
        }
    }

    /// Count requests from `proxies` under the client their
    /// `X-Forwarded-For` names.
    pub fn with_trusted_proxies(mut self, proxies: &[std::net::IpAddr]) -> Self {
        self.trusted_proxies = Arc::new(proxies.to_vec());
        self
    }

    /// Download customers' files through `downloads`.
    pub fn with_downloads(mut self, downloads: crate::received_files::Downloads) -> Self {
        self.downloads = downloads;
        self
    }

    /// Assign waiting conversations only while `acting` says so.
    pub fn with_acting(mut self, acting: crate::lease::Acting) -> Self {
        self.acting = acting;
        self
    }

    /// End event streams when `stop` turns true.
    pub fn with_shutdown(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.shutdown = Some(stop);
        self
    }

    /// Also accept these `Host` values (`inbox_hosts` in the configuration).
    pub fn with_hosts(mut self, extra: &[String]) -> Self {
        let mut hosts = (*self.hosts).clone();
        hosts.extend(extra.iter().cloned());
        self.hosts = Arc::new(hosts);
        self
    }

    /// Show agents the opening hours (and whether the away message goes out).
    pub fn with_away(mut self, away: Option<crate::config::Away>) -> Self {
        self.away = away.map(Arc::new);
        self
    }
}

/// The inbox's routes, to merge into the daemon's router.
pub fn router(state: InboxState) -> Router {
    pages::routes()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

/// The Content-Security-Policy of every inbox response: nothing inline,
/// nothing from elsewhere, no framing, forms post here only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(
    State(state): State<InboxState>,
    request: Request,
    next: Next,
) -> Response {
    let host_ok = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| state.hosts.iter().any(|ok| ok.eq_ignore_ascii_case(h)));
    let mut response = if host_ok {
        next.run(request).await
    } else {
        InboxError::WrongHost.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
