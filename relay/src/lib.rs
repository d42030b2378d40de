//! Comptoir blind relay: an authenticated WebSocket store-and-forward
//! server. It routes end-to-end encrypted envelopes between devices, keeps
//! them durably until each recipient device acks, and never sees plaintext.
//!
//! It does **not** decrypt, parse ciphertext, or hold any private key of a
//! user; it reads only routing metadata (see docs/PROTOCOL.md).
//!
//! Modules:
//! - [`server`]: accept loop, [`run`], graceful shutdown.
//! - [`connection`]: one WebSocket with bounded buffers and write deadlines;
//!   frames fed as a batch go out in one write.
//! - [`frame`]: building server frames (pure).
//! - `session`: one connection's state machine (auth, requests, pushes).
//! - `cmd`: one handler per request.
//! - [`billing`]: each business's bill as a hash chain of billed lines,
//!   its totals, the heads signed on a schedule (`[billing]`), and the
//!   operator's CSV / JSON export.
//! - [`policy`]: the pure decision on a send (accept, refuse, bill).
//! - [`quality`]: each business's quality rating and messaging tier,
//!   gathered from reports, blocks and reach, evaluated lazily.
//! - [`clock`]: the clock of the time rules (never goes back; persisted mark).
//! - [`storage`]: storage by role ([`Backend`] bundles them) and the
//!   embedded sled + mail log backend (group commit).
//! - [`blobs`]: encrypted attachments, uploaded and read in chunks,
//!   kept as files until they expire.
//! - [`status_posts`]: 24-hour Status posts (who posted which blob when)
//!   and the rule saying who may be sent a post's key.
//! - [`hub`]: which devices are connected here; wakes and posts.
//! - [`leases`]: leases one account's devices share (who acts), in memory.
//! - [`limits`]: token buckets per account and per address.
//! - [`phone`]: E.164 checks, verification codes, the pluggable code sender.
//! - [`metrics`], [`http`]: Prometheus counters, `/healthz` and `/metrics`.
//! - [`admin`]: the operator's admin API (axum, bearer token) and its
//!   client, which `relay admin` uses.
//! - [`operator`]: the operator key and admin token files (0600).
//! - [`franking`]: the relay's franking keys (0600 file, rotation) and the
//!   tag it delivers with each franked copy.
//! - [`tls`]: wss:// with rustls (ring).
//! - [`config`]: TOML + environment configuration.
//! - [`shutdown`]: the shutdown signal each connection listens to.
//! - [`error`]: typed refusals mapped to wire error codes.
//! - [`fault`]: crash points for tests (feature `fault-injection` only).

#![forbid(unsafe_code)]

pub mod admin;
pub mod billing;
pub mod blobs;
pub mod clock;
mod cmd;
pub mod config;
pub mod connection;
pub mod error;
pub mod fault;
pub mod frame;
pub mod franking;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod leases;
pub mod limits;
pub mod metrics;
pub mod operator;
pub mod phone;
pub mod policy;
pub mod quality;
pub mod server;
mod session;
pub mod shutdown;
mod state;
pub mod status_posts;
pub mod storage;
pub mod tls;

#[cfg(feature = "bench-unmetered")]
pub use config::BenchMetering;
pub use config::{Config, Limits, TlsFiles};
pub use error::{RelayError, Result};
pub use metrics::Metrics;
pub use phone::{CodeSender, LogCodeSender};
pub use server::{ServerError, Services, run, run_with, run_with_storage};
pub use storage::{Backend, Directory, Keys, Lifecycle, Mailbox, SledStore, StorageError};
