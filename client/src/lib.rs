//! Comptoir client library: one account on one device, its store encrypted
//! at rest, and its end-to-end encrypted conversations through a relay.
//! Shared by the customer CLI and TUI (the `comptoir-cli` crate, in
//! `client-cli/`) and, later, the business agent; it carries no terminal
//! dependency, so an embedding program builds none.
//!
//! Its one background task only routes the connection's frames (each reply
//! to its request, pushes into a queue); the caller processes pushes
//! (decrypt, store, ack) through [`Client::next_event`], which keeps tests
//! deterministic.
//!
//! Modules:
//! - [`store`]: the store (a record log), sealed with a passphrase-derived
//!   key.
//! - [`account`]: account and device keys.
//! - [`session_store`]: session records and private prekeys at rest.
//! - [`signed_copies`]: the copies a delivery proof was signed for (to
//!   sign one delivered again, and only it).
//! - [`peers`]: pinned account keys and device lists of other accounts.
//! - [`operator_pin`]: the pinned operator key (first use or configuration).
//! - [`requests`]: message requests from accounts this one never wrote to.
//! - [`contacts`]: the address book.
//! - [`device_notes`]: names and dates of this account's devices, kept
//!   on this device.
//! - [`messages`]: history, statuses and the outbox.
//! - [`control_outbox`]: read receipts and copies for this account's
//!   other devices waiting to be sent.
//! - [`evidence`]: messages refused by their labels, kept aside.
//! - [`franked`]: what this device keeps of each franked message it
//!   received, to report it later.
//! - [`quarantine`]: envelopes put aside because they could not be used.
//! - [`rule_checks`]: the relay's window and consent rules, checked by this
//!   client from what it knows first hand.
//! - [`template_cache`]: approved templates fetched from the relay, and the
//!   check that a template message is an instance of one.
//! - [`interactive_messages`]: interactive messages (reply buttons,
//!   lists) sent or received, kept to check a choice in them.
//! - [`business_views`]: the last checked view of each business, so the
//!   verified mark shows offline.
//! - [`hints`]: paths quoted as shell words, for the hints programs print.
//! - [`click_to_chat`]: click-to-chat links (a business and prefilled
//!   text) and their QR codes (SVG, PNG, terminal).
//! - [`outgoing_bodies`]: non-text bodies (template instances, quick
//!   replies) waiting in the outbox.
//! - [`attachments`]: files encrypted to upload, downloads decrypted
//!   with both digests checked, and the pointers kept in the store.
//! - [`status`]: 24-hour Status posts: what may be posted (a video's
//!   length read from its MP4 container), and the posts kept until 24
//!   hours after posting.
//! - [`connection`]: the WebSocket framing; requests from many tasks share
//!   one connection, replies matched by request id.
//! - [`tls`]: ws/wss transport, trusted CAs, the loopback-only rule for ws.
//! - [`client`]: the [`Client`] that ties them together.
//! - [`event`]: what [`Client::next_event`] reports.

#![forbid(unsafe_code)]

pub mod account;
pub mod attachments;
pub mod business_views;
pub mod click_to_chat;
pub mod client;
pub mod connection;
pub mod contacts;
pub mod control_outbox;
pub mod device_notes;
pub mod error;
pub mod event;
pub mod evidence;
pub mod franked;
#[doc(hidden)]
pub mod fuzzing;
pub mod hints;
pub mod interactive_messages;
pub mod messages;
pub mod operator_pin;
pub mod outgoing_bodies;
pub mod peers;
pub mod quarantine;
pub mod requests;
pub mod rule_checks;
pub mod session_store;
pub mod signed_copies;
pub mod status;
pub mod store;
pub mod template_cache;
pub mod tls;

pub use client::{
    Bill, BusinessView, Client, Consent, ConsentAnswer, ConsentRequest, FileInfo, Lease,
    MAX_APP_SYNC_LEN, PostedStatus, Sender, StatusInput, StatusView, TRANSFER_CHUNK, TemplateInfo,
    UploadReport, purpose_text,
};
pub use connection::Keepalive;
pub use device_notes::DeviceNote;
pub use error::{ClientError, Result};
pub use event::{DeliveryProof, Event};
pub use evidence::{Evidence, KeptEvidence};
pub use messages::{MessageId, Status, StoredMessage};
pub use quarantine::Quarantined;
pub use store::KdfParams;
pub use tls::TlsOptions;
