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

/// One choice of an interactive message, for scripts.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Choice {
    /// A reply button.
    Button {
        /// Its number (from 1), as `reply` takes it.
        button: u32,
        /// Its title.
        title: String,
    },
    /// A list row.
    Row {
        /// Its section's title (may be empty).
        section: String,
        /// Its id, as `reply` takes it.
        row: String,
        /// Its title.
        title: String,
        /// Its description (may be empty).
        description: String,
    },
}

/// The choices of `message`.
pub fn choices(message: &comptoir_protocol::proto::content::Interactive) -> Vec<Choice> {
    use comptoir_protocol::proto::content::interactive::Kind;
    match &message.kind {
        Some(Kind::Buttons(buttons)) => buttons
            .titles
            .iter()
            .zip(1..)
            .map(|(title, button)| Choice::Button {
                button,
                title: title.clone(),
            })
            .collect(),
        Some(Kind::List(list)) => list
            .sections
            .iter()
            .flat_map(|section| {
                section.rows.iter().map(|row| Choice::Row {
                    section: section.title.clone(),
                    row: row.id.clone(),
                    title: row.title.clone(),
                    description: row.description.clone(),
                })
            })
            .collect(),
        None => Vec::new(),
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

/// One category's share of a bill.
#[derive(Debug, Serialize)]
pub struct CategoryTotal {
    /// utility, authentication, marketing or status.
    pub category: &'static str,
    /// Lines.
    pub lines: u64,
    /// Their prices' sum, millionths of the currency unit.
    pub millionths: u64,
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
        /// A message request (`listen`): from an account this one never
        /// wrote to; not marked read until accepted (`requests accept`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        request: bool,
    },
    /// A template message (`listen`), checked against the approved
    /// template: the rendered text and its buttons, numbered from 1 in
    /// order (`reply BUSINESS ID NUMBER` takes the number).
    Template {
        /// The message id.
        id: String,
        /// The business.
        peer: String,
        /// How it is shown: its certified name when verified, otherwise its
        /// contact name or account id.
        peer_name: String,
        /// Whether the operator verified the business.
        verified: bool,
        /// The approved template's id.
        template_id: String,
        /// The header, if any.
        header: Option<String>,
        /// The body.
        body: String,
        /// The footer, if any.
        footer: Option<String>,
        /// The buttons: `{"type": "quick_reply", "text"}`, `{"type":
        /// "link", "text", "url"}` or `{"type": "call", "text", "phone"}`.
        buttons: Vec<comptoir_protocol::template::Button>,
        /// The sender's clock.
        #[serde(flatten)]
        time: Time,
    },
    /// A customer's quick reply to a template message (`listen`, business).
    QuickReply {
        /// The reply's message id.
        id: String,
        /// The customer.
        peer: String,
        /// Its contact name, if it has one.
        peer_name: Option<String>,
        /// The template message answered.
        reply_to: String,
        /// Its template id.
        template_id: String,
        /// The button's number (from 1).
        button: u32,
        /// The button's text.
        text: String,
        /// When this device received it.
        #[serde(flatten)]
        time: Time,
    },
    /// An interactive message (reply buttons or a list) from a business
    /// (`listen`).
    Interactive {
        /// The message id (`reply BUSINESS ID CHOICE`).
        id: String,
        /// The business.
        peer: String,
        /// Its certified name when verified, its handle otherwise.
        peer_name: String,
        /// Whether the operator verified it.
        verified: bool,
        /// The text above the choices.
        body: String,
        /// The choices: `{"button": N, "title"}` (N from 1) or `{"section",
        /// "row", "title", "description"}`.
        choices: Vec<Choice>,
        /// The sender's clock.
        #[serde(flatten)]
        time: Time,
    },
    /// A customer's choice in an interactive message (`listen`, business).
    InteractiveReply {
        /// The reply's message id.
        id: String,
        /// The customer.
        peer: String,
        /// Its contact name, if it has one.
        peer_name: Option<String>,
        /// The interactive message answered.
        reply_to: String,
        /// The button's number (from 1), for buttons.
        button: Option<u32>,
        /// The row's id, for a list.
        row: Option<String>,
        /// The choice's title.
        title: String,
        /// When this device received it.
        #[serde(flatten)]
        time: Time,
    },
    /// A business asks for consent (`consent requests`, `listen`).
    ConsentRequest {
        /// The request id (`consent allow ID`).
        id: String,
        /// The business's account id.
        business: String,
        /// How it is shown (see `template`).
        business_name: String,
        /// Whether the operator verified the business.
        verified: bool,
        /// The categories asked for.
        categories: Vec<&'static str>,
        /// Why, in words.
        purpose: &'static str,
        /// When it asked (the relay's clock).
        #[serde(flatten)]
        time: Time,
    },
    /// `business consent answers`: a customer allowed a consent request.
    ConsentAnswer {
        /// The reference `business consent request` printed.
        reference: String,
        /// The customer's account id.
        customer: String,
        /// Its contact name here, if any.
        customer_name: Option<String>,
        /// When the customer allowed.
        #[serde(flatten)]
        time: Time,
    },
    /// `business bill verify`: the bill checked, and what it adds up to
    /// (exact millionths of the currency unit; `total` rounded once, half
    /// up, to hundredths).
    Bill {
        /// Lines checked.
        lines: u64,
        /// The ISO 4217 currency code of the rate card.
        currency: String,
        /// Sum of the lines' prices.
        total_millionths: u64,
        /// The total rounded to hundredths (`0.13`).
        total: String,
        /// Per category: `{category, lines, millionths}`.
        categories: Vec<CategoryTotal>,
    },
    /// `business status`: the business's standing.
    Standing {
        /// Billed lines so far.
        lines: u64,
        /// The ISO 4217 currency code of the rate card.
        currency: String,
        /// Sum of the lines' prices.
        total_millionths: u64,
        /// The total rounded to hundredths.
        total: String,
        /// Per category.
        categories: Vec<CategoryTotal>,
        /// Distinct customers reached with templates today (UTC).
        customers_reached_today: u64,
        /// The quality rating now: high, medium or low.
        rating: String,
        /// The messaging tier in force, e.g. "1 (250 customers a day)".
        tier: String,
        /// Its limit of distinct customers reached by business-initiated
        /// conversations in a rolling 24 hours (absent: unlimited).
        tier_limit: Option<u64>,
        /// Whether the relay's operator fixed the tier.
        tier_overridden: bool,
        /// Customers counted towards the limit in the last 24 hours.
        customers_reached_24h: u64,
        /// Distinct customers reached in the last 7 days.
        customers_reached_7d: u64,
        /// When the oldest counted customer leaves the 24 hours (ms since
        /// the epoch; absent: none).
        next_slot_at_ms: Option<u64>,
        /// When the relay next evaluates the tier (ms since the epoch).
        next_evaluation_ms: u64,
        /// Verified reports against the business in the last 7 days.
        verified_reports_7d: u64,
        /// Customers' blocks of it in the last 7 days.
        blocks_7d: u64,
    },
    /// `requests list`: an account whose messages wait as a request.
    MessageRequest {
        /// The account.
        peer: String,
        /// Its contact name, if it has one.
        peer_name: Option<String>,
        /// When its first message arrived (this device's clock).
        #[serde(flatten)]
        time: Time,
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
    /// A file arrived (`listen`): save it with `save PEER ID PATH`.
    Attachment {
        /// The message id.
        id: String,
        /// The sender.
        peer: String,
        /// Its contact name, if it has one.
        peer_name: Option<String>,
        /// The file's name, as the sender gave it.
        file_name: String,
        /// Its content type, as the sender stated it.
        content_type: String,
        /// Its length in bytes.
        size: u64,
        /// The sender's clock.
        #[serde(flatten)]
        time: Time,
        /// A message request (see [`Record::Message`]).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        request: bool,
    },
    /// A contact posted a Status (`listen`): open it with `status view ID`.
    StatusReceived {
        /// The post id (32 hex digits).
        id: String,
        /// Who posted it.
        poster: String,
        /// Its contact name, if it has one.
        poster_name: Option<String>,
        /// When it was posted (the relay's clock).
        #[serde(flatten)]
        time: Time,
    },
    /// A contact deleted its Status before its time (`listen`).
    StatusRemoved {
        /// The post id (32 hex digits).
        id: String,
        /// Who posted it.
        poster: String,
        /// Its contact name, if it has one.
        poster_name: Option<String>,
    },
    /// A contact chose to say it viewed this account's Status (`listen`).
    StatusViewed {
        /// The post id (32 hex digits).
        id: String,
        /// The viewer.
        viewer: String,
        /// Its contact name, if it has one.
        viewer_name: Option<String>,
        /// When, by the viewer's clock.
        #[serde(flatten)]
        time: Time,
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
            request: false,
        }
    }
}

/// A consent request, with its business shown as `shown` says.
pub fn consent_request(
    request: &comptoir_client::ConsentRequest,
    shown: &crate::business::Shown,
) -> Record {
    Record::ConsentRequest {
        id: hex::encode(request.id),
        business: request.business.to_string(),
        business_name: shown.name.clone(),
        verified: shown.verified,
        categories: request.categories.names(),
        purpose: comptoir_client::purpose_text(request.purpose),
        time: Time::at(request.requested_at_ms),
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
