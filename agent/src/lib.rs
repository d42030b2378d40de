//! Comptoir business agent daemon (`agent serve`): the business's own
//! device, so end-to-end encryption ends on the business's machine. It
//! holds the device keys in the client library's encrypted store, keeps
//! conversations in SQLite with full-text search, serves the business's
//! backend an HTTP API in the conventions of the WhatsApp Cloud API, and
//! posts signed webhooks from a durable outbox.
//!
//! It also serves the agents' web inbox (`/inbox`). Two daemons of one
//! business are two devices of one account: both record every message
//! and status, they sync the inbox end to end encrypted, and the one
//! holding a relay lease posts webhooks, sends the away message and
//! assigns.
//!
//! Modules:
//! - [`config`]: the TOML file and environment variables, checked.
//! - [`hours`]: opening hours (the away message is sent outside them).
//! - [`keys`]: API keys, stored as hashes, with scopes.
//! - [`clock`]: the injected clock (system, or manual in tests).
//! - [`status`]: message statuses and why they never go backwards.
//! - [`db`]: the SQLite database, its migrations, the webhook outbox.
//! - [`device`]: the task that owns the client library's `Client`.
//! - [`lease`]: which daemon of the business acts (a relay lease).
//! - [`sync`]: the inbox's state between the business's daemons.
//! - [`webhook`]: webhook bodies, signatures, ids and delivery with retries.
//! - [`http_client`]: the small HTTP client that posts webhooks.
//! - [`api`]: the HTTP API and its OpenAPI document.
//! - [`api_error`]: the API's typed errors, mapped once.
//! - [`billing`]: `GET /v1/bill` (the bill, every line checked) and `GET /v1/standing`.
//! - [`inbox`]: the agents' web inbox (logins, pages, live updates, assignment).
//! - [`media`]: documents the backend uploads and sends with a message.
//! - [`received_files`]: files customers sent, fetched and decrypted on
//!   demand for the inbox and the API.
//! - [`link`]: click-to-chat links and their QR codes (`agent link`,
//!   `GET /v1/link`).
//! - [`tls`]: TLS for the API.
//! - [`vanished_peers`]: connections to a vanished browser or backend end
//!   within 30 s of the next write (an agent's presence with them).
//! - [`serve`]: starting and stopping the daemon.
//! - [`fault`]: crash points for tests (feature `fault-injection` only).

#![forbid(unsafe_code)]

pub mod api;
pub mod api_error;
pub mod billing;
pub mod clock;
pub mod config;
pub mod db;
pub mod device;
pub mod fault;
pub mod hours;
pub mod http_client;
pub mod inbox;
pub mod keys;
pub mod lease;
pub mod link;
pub mod media;
pub mod received_files;
pub mod serve;
pub mod status;
pub mod sync;
pub mod tls;
pub mod vanished_peers;
pub mod webhook;

pub use api::{ApiDoc, app, openapi_json};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::{Config, ConfigError};
pub use serve::{Running, ServeError, start};
pub use status::MessageStatus;
