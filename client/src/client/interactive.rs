//! Interactive messages (docs/PROTOCOL.md, "Interactive messages"): a
//! business sends reply buttons or a list in a free-form reply; the
//! customer picks one and the business receives which. The receive path
//! (`receive`) hands both kinds of content to the checks here.

use comptoir_protocol::AccountId;
use comptoir_protocol::interactive::{self, Choice, choose, render_text, validate};
use comptoir_protocol::proto::content::{Interactive, InteractiveReply, content};
use comptoir_protocol::proto::wire::Envelope;

use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::interactive_messages;
use crate::messages::{self, MessageId};
use crate::outgoing_bodies::OutgoingBody;
use crate::rule_checks::Violation;

use super::receive::is_template_category;
use super::{Client, now_ms};

impl Client {
    /// Send `peer` the interactive message `message` (reply buttons or a
    /// list), as free-form text is sent: a business's as a service reply,
    /// which the relay takes inside the 24-hour window only. Checked here
    /// against the limits first (more than 3 buttons, more than 10 rows,
    /// a title too long...: [`ClientError::InvalidInteractive`], and
    /// nothing is stored or sent). The history keeps its text with its
    /// choices.
    pub async fn send_interactive(
        &mut self,
        peer: AccountId,
        message: Interactive,
    ) -> Result<MessageId> {
        validate(&message)?;
        let text = render_text(&message);
        let body = OutgoingBody {
            body: content::Body::Interactive(message),
            category: self.live().text_category(),
            template_id: String::new(),
        };
        let sent = self.live().send_message(peer, &text, Some(body)).await;
        self.note_connection(&sent);
        sent
    }

    /// Pick `choice` (a button by index, a row by id) in the interactive
    /// message `message_id` received from `business`: the business
    /// receives which, as a conversation message. The message must be one
    /// this client received and checked ([`crate::Event::Interactive`]);
    /// otherwise [`ClientError::NotAnInteractiveMessage`]; a choice it does
    /// not offer is [`ClientError::InvalidChoice`]. Nothing is sent on
    /// error.
    pub async fn choose(
        &mut self,
        business: AccountId,
        message_id: MessageId,
        choice: Choice,
    ) -> Result<MessageId> {
        let message = self
            .interactive_of_message(&business, &message_id)?
            .ok_or_else(|| ClientError::NotAnInteractiveMessage(message_id.to_string()))?;
        let reply = choose(&message, &message_id.0, &choice)?;
        let text = reply.title.clone();
        let body = OutgoingBody {
            body: content::Body::InteractiveReply(reply),
            category: comptoir_protocol::proto::wire::Category::Conversation,
            template_id: String::new(),
        };
        let sent = self.live().send_message(business, &text, Some(body)).await;
        self.note_connection(&sent);
        sent
    }

    /// The interactive message `id` received from `peer`, if it was one
    /// this client checked (so `history` and the TUI can offer its
    /// choices as [`crate::Event::Interactive`] did).
    pub fn interactive_of_message(
        &self,
        peer: &AccountId,
        id: &MessageId,
    ) -> Result<Option<Interactive>> {
        let incoming = messages::get(&self.store, peer, id)?.is_some_and(|m| !m.outgoing);
        if !incoming {
            return Ok(None);
        }
        interactive_messages::get(&self.store, peer, id)
    }

    /// An interactive message from `from`: one within the limits is
    /// stored as its text with its choices, kept to check a pick, and
    /// reported as [`Event::Interactive`]; one over them (or under a
    /// template category) is stored as a message saying so, with the
    /// violation, and offers no choice.
    pub(super) fn apply_interactive(
        &self,
        from: AccountId,
        id: MessageId,
        sent_at_ms: u64,
        envelope: &Envelope,
        message: Interactive,
        violations: &mut Vec<Violation>,
    ) -> Result<Option<Event>> {
        let category = envelope.category();
        let checked = if is_template_category(category) {
            Err(Violation::NotATemplate { category })
        } else {
            interactive::validate(&message)
                .map_err(|reason| Violation::InteractiveInvalid { reason })
        };
        if let Err(violation) = checked {
            let text = format!("[an interactive message that breaks the rules: {violation}]");
            violations.push(violation);
            self.store_incoming(from, id, &text, sent_at_ms)?;
            return Ok(Some(Event::Message {
                from,
                id,
                text,
                sent_at_ms,
                request: false,
            }));
        }
        self.store_incoming(from, id, &interactive::render_text(&message), sent_at_ms)?;
        interactive_messages::record(&self.store, &from, &id, &message)?;
        crate::requests::note_incoming(&self.store, &self.account.id(), &from, now_ms())?;
        Ok(Some(Event::Interactive {
            from,
            id,
            message,
            sent_at_ms,
        }))
    }

    /// A customer's choice in an interactive message this account sent
    /// (from this device or another): checked against that message,
    /// stored as the choice's title and reported as
    /// [`Event::InteractiveReply`]; a forged one is only reported as a
    /// violation.
    pub(super) fn apply_interactive_reply(
        &self,
        from: AccountId,
        id: MessageId,
        sent_at_ms: u64,
        reply: &InteractiveReply,
        violations: &mut Vec<Violation>,
    ) -> Result<Option<Event>> {
        let sent = match MessageId::from_bytes(&reply.message_id) {
            Some(reply_to)
                if messages::get(&self.store, &from, &reply_to)?.is_some_and(|m| m.outgoing) =>
            {
                interactive_messages::get(&self.store, &from, &reply_to)?
                    .map(|message| (reply_to, message))
            }
            _ => None,
        };
        let Some((reply_to, message)) = sent else {
            violations.push(Violation::InteractiveReplyToUnknownMessage);
            return Ok(None);
        };
        match interactive::check_reply(&message, reply) {
            Ok((choice, title)) => {
                self.store_incoming(from, id, title, sent_at_ms)?;
                Ok(Some(Event::InteractiveReply {
                    from,
                    id,
                    reply_to,
                    choice,
                    title: title.to_owned(),
                }))
            }
            Err(reason) => {
                violations.push(Violation::InteractiveReplyInvalid { reason });
                Ok(None)
            }
        }
    }
}
