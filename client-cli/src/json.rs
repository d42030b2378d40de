//! The records `--output json` prints: one JSON object per line, each with
//! a `type`, so a script reads the output line by line (README, "Output
//! for scripts", lists the fields).
//!
//! Ids are lower-case hex (accounts 32 digits, messages 32 digits), times
//! are both `time_ms` (ms since the Unix epoch) and `time` (RFC 3339, UTC,
//! millisecond precision). Text is the exact text received, JSON-escaped:
//! a program that shows it to people must neutralise control characters
//! itself (the text output does that with [`crate::format::visible`]).

use std::io::Write;

use serde::Serialize;

use comptoir_client::error::{ClientError, Result};
use comptoir_client::{Client, Status, StoredMessage};
use comptoir_protocol::AccountId;

use crate::format::rfc3339;

/// A message's status as scripts see it: outgoing `pending` (in the
/// outbox), `sent` (stored by the relay), `delivered`, `read`, `failed`;
/// incoming `received` or `read` (read here).
pub fn status_name(outgoing: bool, status: Status) -> &'static str {
    match (outgoing, status) {
        (false, Status::Read) => "read",
        (false, _) => "received",
        (true, status) => status.label(),
    }
}

/// When something happened, in both forms.
#[derive(Debug, Serialize)]
pub struct Time {
    /// ms since the Unix epoch.
    pub time_ms: u64,
    /// RFC 3339, UTC.
    pub time: String,
}

impl Time {
    /// `ms` since the Unix epoch.
    pub fn at(ms: u64) -> Self {
        Self {
            time_ms: ms,
            time: rfc3339(ms),
        }
    }
}

/// One line of `--output json`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A message: incoming (`listen`, `history`) or outgoing (`history`,
    /// `listen` for a copy sent by another device of this account).
    Message {
        /// The message id.
        id: String,
        /// The other side of the conversation.
        peer: String,
        /// Its contact name, if it has one.
        peer_name: Option<String>,
        /// `in` or `out`.
        direction: &'static str,
        /// The sender's account id.
        from: String,
        /// The text.
        text: String,
        /// The sender's clock.
        #[serde(flatten)]
        time: Time,
        /// See [`status_name`].
        status: &'static str,
        /// Sent by another device of this account (`listen` only).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        other_device: bool,
    },
    /// `send`: the message was written (status `sent` once the relay
    /// stored it, `pending` while it waits in the outbox).
    Sent {
        /// The message id.
        id: String,
        /// The recipient.
        peer: String,
        /// Its contact name, if it has one.
        peer_name: Option<String>,
        /// When it was written.
        #[serde(flatten)]
        time: Time,
        /// `sent` or `pending`.
        status: &'static str,
    },
    /// An outgoing message changed status (`listen`): `sent`, `delivered`
    /// or `read`.
    Status {
        /// The message id.
        id: String,
        /// The recipient.
        peer: String,
        /// Its contact name, if it has one.
        peer_name: Option<String>,
        /// When this device learnt it.
        #[serde(flatten)]
        time: Time,
        /// The new status.
        status: &'static str,
    },
    /// Something a person should know (`listen`): an identity change, a
    /// message that could not be decrypted or was refused, a relay that
    /// let through what it should have refused, other warnings.
    Warning {
        /// `identity_changed`, `undecryptable`, `refused`, `violation` or
        /// `other`.
        kind: &'static str,
        /// The account concerned, if any.
        peer: Option<String>,
        /// The message concerned, if any.
        id: Option<String>,
        /// What happened, in words.
        text: String,
        /// When this device learnt it.
        #[serde(flatten)]
        time: Time,
    },
    /// `contacts list`: one contact.
    Contact {
        /// The name.
        name: String,
        /// The account id.
        account: String,
        /// Whether its safety number was verified.
        verified: bool,
        /// Whether this account blocked it.
        blocked: bool,
    },
    /// `devices list`: one device of this account.
    Device {
        /// The device id (what `devices remove` takes).
        device_id: u32,
        /// Whether it is the device running this command.
        this_device: bool,
        /// Whether it is the account's first device (it adds and removes
        /// the others).
        first_device: bool,
        /// The name given to it on this device, if any.
        name: Option<String>,
        /// When it was added (ms since the Unix epoch), if this device
        /// saw it: the first device for the devices it added, each device
        /// for itself.
        added_ms: Option<u64>,
        /// The same in RFC 3339.
        added: Option<String>,
        /// The device's public identity key, hex.
        identity_key: String,
    },
}

impl Record {
    /// A stored message (`history`).
    pub fn stored(client: &Client, message: &StoredMessage) -> Self {
        let from = if message.outgoing {
            client.account_id()
        } else {
            message.peer
        };
        Self::Message {
            id: message.id.to_string(),
            peer: message.peer.to_string(),
            peer_name: name(client, &message.peer),
            direction: if message.outgoing { "out" } else { "in" },
            from: from.to_string(),
            text: message.body.clone(),
            time: Time::at(message.sent_at_ms),
            status: status_name(message.outgoing, message.status),
            other_device: false,
        }
    }
}

/// The contact name of `account`, if it has one.
pub fn name(client: &Client, account: &AccountId) -> Option<String> {
    client.contact_name(account).ok().flatten()
}

/// Write `record` as one line.
pub fn write(out: &mut dyn Write, record: &Record) -> Result<()> {
    let line = serde_json::to_string(record).map_err(|e| {
        ClientError::io(
            "writing JSON to standard output",
            std::io::Error::other(e.to_string()),
        )
    })?;
    writeln!(out, "{line}").map_err(|e| ClientError::io("writing to standard output", e))
}
