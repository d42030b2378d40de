//! Interactive messages (docs/PROTOCOL.md, "Interactive messages"): a
//! business sends reply buttons or a list in a free-form reply; the
//! customer picks one and the business receives which (checked in
//! `receive` against the message it sent).

use comptoir_protocol::AccountId;
use comptoir_protocol::interactive::{Choice, choose, render_text, validate};
use comptoir_protocol::proto::content::{Interactive, content};

use crate::error::{ClientError, Result};
use crate::interactive_messages;
use crate::messages::{self, MessageId};
use crate::outgoing_bodies::OutgoingBody;

use super::Client;

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
}
