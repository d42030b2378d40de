//! A click-to-chat link opened in the terminal UI (`comptoir tui --open
//! LINK`): the business's conversation (a new, empty one if there is none
//! yet), shown as the library decides (✓ and the certified name when the
//! operator verified it, otherwise the handle), the composer prefilled
//! with the link's text. Nothing is sent until the user presses Enter.

use comptoir_client::Client;
use comptoir_client::click_to_chat::ChatLink;
use comptoir_client::error::{ClientError, Result};

use super::app::{App, Conversation, Mode};

impl App {
    /// Open `conversation` (selected if the list has its peer, else kept
    /// as [`App::opened`] until it has messages) in the chat pane, the
    /// composer holding `text`, and say `status`.
    pub fn open_chat(&mut self, conversation: Conversation, text: Option<String>, status: String) {
        let peer = conversation.peer;
        match self.conversations.iter().position(|c| c.peer == peer) {
            Some(index) => self.selected = index,
            None => {
                self.conversations.push(conversation.clone());
                self.selected = self.conversations.len() - 1;
                self.opened = Some(conversation);
            }
        }
        self.mode = Mode::Chat;
        self.picked = None;
        self.input = text.unwrap_or_default();
        self.status = status;
    }
}

/// Resolve `link` with the relay (the client is connected) and open its
/// business in `app`; a business that cannot be found is reported in the
/// status line (only a broken store is an error).
pub async fn open(client: &mut Client, app: &mut App, link: &ChatLink) -> Result<()> {
    let (account, shown, verified) = match crate::open_link::resolve(client, link).await {
        Ok(found) => found,
        Err(e @ (ClientError::Database(_) | ClientError::CorruptStore(_))) => return Err(e),
        Err(e) => {
            app.status = format!("⚠ the link's business: {e}");
            return Ok(());
        }
    };
    let handle = match client.contact_name(&account)? {
        Some(name) => name,
        None => link.handle.to_string(),
    };
    let conversation = Conversation {
        peer: account,
        name: handle,
        unread: 0,
        identity_changed: false,
        blocked: client.is_blocked(&account)?,
        request: false,
        verified_name: shown.verified.then(|| shown.name.clone()),
        messages: Vec::new(),
        window: None,
        choices: None,
    };
    let status = match &link.text {
        Some(_) => format!(
            "chat link: {} (verified: {verified}); Enter sends the prefilled text",
            shown.text()
        ),
        None => format!("chat link: {} (verified: {verified})", shown.text()),
    };
    app.open_chat(conversation, link.text.clone(), status);
    Ok(())
}
