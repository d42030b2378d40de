//! What happened on the connection, as the user of the library sees it.

use comptoir_protocol::interactive::Choice;
use comptoir_protocol::proto::content::Interactive;
use comptoir_protocol::template::{RenderedTemplate, TemplateId};
use comptoir_protocol::{AccountId, LabelError};

use crate::messages::MessageId;
use crate::rule_checks::Violation;

/// Something the client received or learned. Produced by
/// [`crate::Client::next_event`] after it was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A text message arrived (already stored in the history).
    Message {
        /// The sender's account.
        from: AccountId,
        /// The message id.
        id: MessageId,
        /// The text.
        text: String,
        /// The sender's clock, ms since the Unix epoch.
        sent_at_ms: u64,
        /// A message request: the sender is an account this one never
        /// wrote to (nor consented to, nor accepted). It waits in
        /// [`crate::Client::message_requests`]; no read receipt goes back
        /// until the user accepts it.
        request: bool,
    },
    /// A message with an attachment arrived (its pointer is kept; fetch
    /// the file with [`crate::Client::download_attachment`]).
    Attachment {
        /// The sender's account.
        from: AccountId,
        /// The message id.
        id: MessageId,
        /// The file's name, as the sender gave it (untrusted: no
        /// directories are taken from it).
        file_name: String,
        /// Its MIME type, as the sender gave it.
        content_type: String,
        /// Its length in bytes.
        size: u64,
        /// The sender's clock, ms since the Unix epoch.
        sent_at_ms: u64,
        /// A message request (see [`Event::Message`]).
        request: bool,
    },
    /// A Status post arrived (its key is kept until 24 hours after
    /// posting; view it with [`crate::Client::view_status`]).
    StatusPosted {
        /// The poster.
        from: AccountId,
        /// The post id.
        post_id: [u8; 16],
        /// When it was posted (the relay's clock), ms since the epoch.
        posted_at_ms: u64,
    },
    /// A poster deleted its Status post before its time (it is gone here).
    StatusDeleted {
        /// The poster.
        from: AccountId,
        /// The post id.
        post_id: [u8; 16],
    },
    /// A viewer chose to tell this account it viewed its Status post.
    StatusViewed {
        /// The viewer.
        by: AccountId,
        /// The post id.
        post_id: [u8; 16],
        /// When, by the viewer's clock.
        viewed_at_ms: u64,
    },
    /// A template message arrived and checked out: an instance of a
    /// template the pinned operator approved for the sender, under its
    /// approved category (stored in the history as its rendered text).
    Template {
        /// The business.
        from: AccountId,
        /// The message id (pass it to [`crate::Client::reply_button`]).
        id: MessageId,
        /// The approved template.
        template_id: TemplateId,
        /// What to show: the approved text with the values filled in, and
        /// the approved buttons.
        rendered: RenderedTemplate,
        /// The sender's clock, ms since the Unix epoch.
        sent_at_ms: u64,
    },
    /// A customer tapped a quick-reply button of a template message this
    /// account sent, checked against the template (stored in the history
    /// as the button's text).
    QuickReply {
        /// The customer.
        from: AccountId,
        /// The reply's message id.
        id: MessageId,
        /// The template message it answers.
        reply_to: MessageId,
        /// That message's template.
        template_id: TemplateId,
        /// The button's index among the template's buttons (from 0).
        button_index: u32,
        /// The button's text.
        text: String,
    },
    /// An interactive message arrived (reply buttons or a list) and keeps
    /// to the limits (stored in the history as its text with its choices;
    /// answer with [`crate::Client::choose`]).
    Interactive {
        /// The sender (a business).
        from: AccountId,
        /// The message id.
        id: MessageId,
        /// The message with its choices.
        message: Interactive,
        /// The sender's clock, ms since the Unix epoch.
        sent_at_ms: u64,
    },
    /// A customer picked a button or a row of an interactive message this
    /// account sent, checked against that message (stored in the history
    /// as the choice's title).
    InteractiveReply {
        /// The customer.
        from: AccountId,
        /// The reply's message id.
        id: MessageId,
        /// The interactive message it answers.
        reply_to: MessageId,
        /// Which button or row.
        choice: Choice,
        /// The choice's title.
        title: String,
    },
    /// Another device of this account sent a message (copied into this
    /// device's history).
    SentElsewhere {
        /// The recipient.
        to: AccountId,
        /// The message id.
        id: MessageId,
        /// The text.
        text: String,
        /// When the other device sent it (its clock), ms since the Unix
        /// epoch.
        sent_at_ms: u64,
    },
    /// A newly linked device of this account asked for the address book,
    /// and this device sent it (end-to-end encrypted).
    ContactsShared {
        /// How many contacts were sent.
        count: usize,
    },
    /// Another device of this account sent its address book: the names
    /// this device lacked were added.
    ContactsSynced {
        /// Names added.
        added: usize,
        /// Names this device already gave another account: kept as they
        /// were.
        kept: usize,
    },
    /// Another device of this account sent application state
    /// ([`crate::Client::sync_to_own_devices`]).
    AppSync {
        /// The sending device of this account.
        device: u32,
        /// The application it is for.
        app: String,
        /// The state, as the application encoded it.
        data: Vec<u8>,
    },
    /// Another device of this account read messages from `peer`.
    ReadElsewhere {
        /// The conversation.
        peer: AccountId,
        /// How many messages are now marked read here.
        count: usize,
    },
    /// The relay stored an outgoing message.
    Accepted {
        /// The recipient.
        to: AccountId,
        /// The message id.
        id: MessageId,
        /// The id the relay assigned to the send (the same in every
        /// `Delivered` for it).
        accept_id: u64,
    },
    /// A recipient device stored an outgoing message.
    Delivered {
        /// The recipient.
        to: AccountId,
        /// The message id.
        id: MessageId,
        /// The relay-assigned accept id of the send (0 if the relay
        /// assigned none).
        accept_id: u64,
    },
    /// A recipient device's signed ack of a billed message this account
    /// sent (a template to a customer), checked against that device's
    /// identity key in the recipient's signed device list: a transferable
    /// proof of receipt. A proof that does not check out is a
    /// [`Event::Warning`] instead.
    DeliveryProved {
        /// The recipient.
        to: AccountId,
        /// The message id.
        id: MessageId,
        /// The checked proof.
        proof: DeliveryProof,
    },
    /// The recipient read outgoing messages.
    Read {
        /// The reader.
        by: AccountId,
        /// The messages now marked read.
        ids: Vec<MessageId>,
    },
    /// A peer's account key changed: messages to it are held until the user
    /// compares safety numbers and accepts the change.
    IdentityChanged {
        /// The peer.
        account: AccountId,
    },
    /// A message could not be decrypted and was dropped.
    Undecryptable {
        /// The sender.
        from: AccountId,
        /// The message id (hex), as the envelope named it.
        id: String,
        /// Why.
        reason: String,
    },
    /// A message decrypted, but its bound labels disagree with its envelope
    /// (or its category with what it is): it was not displayed, was kept
    /// as evidence ([`crate::Client::evidence`]) and was acknowledged.
    Refused {
        /// The sender, as the envelope named it.
        from: AccountId,
        /// The envelope's message id.
        id: MessageId,
        /// Why (for a relabelled message, `LabelMismatch` naming the label).
        reason: LabelError,
    },
    /// A message from `peer`'s `device` could not be decrypted; a fresh
    /// session was started and the sender asked to send it again.
    SessionReset {
        /// The sender.
        peer: AccountId,
        /// Its device.
        device: u32,
        /// The message that failed.
        failed: MessageId,
    },
    /// A peer could not decrypt one of this device's messages and got it
    /// again over a fresh session.
    Resent {
        /// The peer.
        to: AccountId,
        /// The message sent again.
        id: MessageId,
    },
    /// The relay's stock of this device's one-time prekeys ran low and a
    /// new batch was uploaded.
    PreKeysReplenished {
        /// What the relay had left.
        remaining: u32,
        /// How many were uploaded.
        uploaded: u32,
    },
    /// A message just reported ([`Event::Message`], [`Event::Template`])
    /// breaks a rule the relay should have enforced (see
    /// [`crate::rule_checks`]): shown marked, and kept as evidence for a
    /// report. A template message that fails its check is reported as an
    /// [`Event::Message`] saying so, then this; a forged quick reply only
    /// as this.
    Violation {
        /// The peer that sent it.
        from: AccountId,
        /// The message id.
        id: MessageId,
        /// Which rule.
        violation: Violation,
    },
    /// The relay presented another operator key than the one this client
    /// pinned. The pin is kept: certificates and template approvals are
    /// still judged by it, so nothing the new key signed shows as verified
    /// until the user pins the new key on purpose
    /// ([`crate::Client::pin_operator_key`]) after checking it with the
    /// operator.
    OperatorKeyChanged {
        /// The key still trusted.
        pinned: Box<comptoir_protocol::OperatorKey>,
        /// The key the relay presented.
        offered: Box<comptoir_protocol::OperatorKey>,
    },
    /// A verified business asks for this customer's consent (it was given
    /// the customer's phone number); answer with
    /// [`crate::Client::answer_consent_request`]. Pending requests are
    /// also listed by [`crate::Client::consent_requests`].
    ConsentRequested(crate::client::ConsentRequest),
    /// Something worth telling the user that needs no action from the code.
    Warning(String),
}

/// A customer device's signed ack of a billed message: the device's
/// identity-key signature over the delivery proof payload
/// (docs/PROTOCOL.md, "Signed delivery"). Anyone holding the customer's
/// signed device list can check it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryProof {
    /// The accept id the relay gave the send.
    pub accept_id: u64,
    /// The customer's device that signed.
    pub device: u32,
    /// The device's clock when it signed, ms since the Unix epoch.
    pub signed_at_ms: u64,
    /// The franking commitment the proof covers (may be empty).
    pub franking_commitment: Vec<u8>,
    /// The Ed25519 signature (64 bytes).
    pub signature: Vec<u8>,
}
