//! Comptoir client library: one account on one device, its store encrypted
//! at rest, and its end-to-end encrypted conversations through a relay.
//! Shared by the customer CLI (`comptoir`) and, later, the business agent.
//!
//! It does **not** run background tasks: the caller drives the connection
//! through [`Client::next_event`], which keeps tests deterministic.
//!
//! Modules:
//! - [`store`]: the sled store sealed with a passphrase-derived key.
//! - [`account`]: account and device keys.
//! - [`session_store`]: session records and private prekeys at rest.
//! - [`peers`]: pinned account keys and device lists of other accounts.
//! - [`contacts`]: the address book.
//! - [`messages`]: history, statuses and the outbox.
//! - [`connection`]: the WebSocket framing.
//! - [`client`]: the [`Client`] that ties them together.
//! - [`event`]: what [`Client::next_event`] reports.
//! - [`cli`]: the `comptoir` command line.
//! - [`tui`]: the terminal UI (`comptoir tui`).

#![forbid(unsafe_code)]

pub mod account;
pub mod cli;
pub mod client;
pub mod connection;
pub mod contacts;
pub mod error;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod messages;
pub mod peers;
pub mod session_store;
pub mod store;
pub mod tui;

pub use client::Client;
pub use error::{ClientError, Result};
pub use event::Event;
pub use messages::{MessageId, Status, StoredMessage};
pub use store::KdfParams;
