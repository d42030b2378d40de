//! The terminal UI through a running daemon (`comptoir tui` while
//! `comptoir daemon` holds the account): its state comes from the method
//! `tui_state`, events arrive as notifications, sending, marking read,
//! blocking and unblocking are method calls, and every other action
//! (reporting, accepting a new identity, answering choices, templates,
//! Status posts, saving a file) is run by the daemon with the TUI's own
//! code through the method `tui_action` ([`super::wire`]). The loop is
//! the TUI's ([`super::run_loop`]).

use std::time::Duration;

use serde_json::{Value, json};

use comptoir_client::click_to_chat::ChatLink;
use comptoir_client::error::ClientError;
use comptoir_client::messages::{MessageId, Status, StoredMessage};
use comptoir_protocol::AccountId;

use super::app::{Action, App, Conversation};
use super::wire;
use crate::daemon::forward::{Failure, connection_line};
use crate::daemon::remote::{Remote, RemoteError};
use crate::daemon::rpc;

/// How long one turn of the loop waits for a notification.
const TICK: Duration = Duration::from_millis(100);

/// Run the UI through `remote` until the user quits.
pub async fn run(remote: &mut Remote, chat_link: Option<&ChatLink>) -> Result<(), Failure> {
    let mut app = load(remote).await?;
    app.status = "through the daemon (comptoir daemon holds the account)".into();
    if let Some(link) = chat_link {
        open_link(remote, &mut app, link).await?;
    }
    let mut terminal = ratatui::try_init()
        .map_err(|e| ClientError::io("opening the terminal (is this a terminal?)", e))?;
    let result = super::run_loop(&mut terminal, remote, &mut app).await;
    ratatui::restore();
    result
}

/// Open a click-to-chat link as `comptoir tui --open` does: its
/// business's conversation with the text in the composer.
pub async fn open_link(remote: &mut Remote, app: &mut App, link: &ChatLink) -> Result<(), Failure> {
    let opened = remote
        .call("tui_open_link", json!({"link": link.to_string()}))
        .await?;
    wire::apply_open_link(app, &opened).ok_or(RemoteError::Gone)?;
    Ok(())
}

/// The UI's state as the daemon has it (with a business's templates),
/// subscribed to what happens next.
pub async fn load(remote: &mut Remote) -> Result<App, Failure> {
    let mut app = App::new(Vec::new());
    let state = remote.call("tui_state", json!({"templates": true})).await?;
    wire::apply_state(&mut app, &state).ok_or(RemoteError::Gone)?;
    remote.call("subscribe", json!({})).await?;
    Ok(app)
}

impl super::Backend for Remote {
    type Error = Failure;

    async fn perform(&mut self, app: &mut App, action: Action) -> Result<(), Failure> {
        perform(self, app, action).await
    }

    async fn next(&mut self, app: &mut App) -> Result<Option<AccountId>, Failure> {
        let Ok(record) = tokio::time::timeout(TICK, self.next_notification()).await else {
            return Ok(None);
        };
        let record = record?;
        note(app, &record);
        reload(self, app).await?;
        let field = |name: &str| record.get(name).and_then(Value::as_str).unwrap_or_default();
        Ok((field("type") == "message" && field("direction") == "in")
            .then(|| AccountId::from_hex(field("peer")).ok())
            .flatten())
    }
}

/// Say on the status line what a notification tells.
fn note(app: &mut App, record: &Value) {
    let field = |name: &str| record.get(name).and_then(Value::as_str).unwrap_or_default();
    let who = crate::daemon::forward::peer_label(record);
    let status = match field("type") {
        "message" if field("direction") == "in" => format!("new message from {who}"),
        "template" | "interactive" => format!("new message from {who}"),
        "warning" => format!("⚠ {}", crate::format::visible(field("text"))),
        "connection" if field("state") == "reconnected" => "reconnected".to_string(),
        "connection" if field("state") == "connected" => return,
        "connection" => format!("⚠ {}", connection_line(record)),
        _ => return,
    };
    app.status = status;
}

/// Run an action through the daemon, reporting the outcome on the status
/// line as the TUI does without it; only the daemon going away (or its
/// store failing) ends the UI.
pub async fn perform(remote: &mut Remote, app: &mut App, action: Action) -> Result<(), Failure> {
    let outcome = match action {
        Action::None | Action::Quit => return Ok(()),
        Action::Send { peer, text } => remote
            .call("send", json!({"to": peer.to_string(), "text": text}))
            .await
            .map(|sent| {
                (sent.get("status").and_then(Value::as_str) == Some("pending")).then(|| {
                    "kept in the outbox: the daemon sends it when the relay is back".to_string()
                })
            }),
        Action::MarkRead(peer) => remote
            .call("mark_read", json!({"with": peer.to_string()}))
            .await
            .map(|_| None),
        Action::Block(peer) => remote
            .call("block", json!({"who": peer.to_string()}))
            .await
            .map(|_| {
                app.set_blocked(peer, true);
                Some("blocked: the relay refuses its messages to you".to_string())
            }),
        Action::Unblock(peer) => remote
            .call("unblock", json!({"who": peer.to_string()}))
            .await
            .map(|_| {
                app.set_blocked(peer, false);
                Some("unblocked".to_string())
            }),
        action => match wire::action(&action) {
            Some(params) => remote.call("tui_action", params).await.and_then(|outcome| {
                wire::apply_outcome(app, &outcome).ok_or(RemoteError::Gone)?;
                Ok(None)
            }),
            None => Ok(None),
        },
    };
    match outcome {
        Ok(Some(status)) => app.status = status,
        Ok(None) => {}
        Err(RemoteError::Rpc(e)) if e.code != rpc::INTERNAL_ERROR => {
            app.status = format!("⚠ {}", crate::format::visible(&e.message));
        }
        Err(e) => return Err(e.into()),
    }
    reload(remote, app).await
}

/// Load the conversations and Status posts again.
pub async fn reload(remote: &mut Remote, app: &mut App) -> Result<(), Failure> {
    let state = remote.call("tui_state", json!({})).await?;
    wire::apply_state(app, &state).ok_or(RemoteError::Gone)?;
    Ok(())
}

/// One conversation of the method `conversations`; `None` if malformed.
pub fn conversation(value: &Value) -> Option<Conversation> {
    let peer = AccountId::from_hex(value.get("peer")?.as_str()?).ok()?;
    let flag = |name: &str| value.get(name).and_then(Value::as_bool).unwrap_or(false);
    let messages = value
        .get("messages")?
        .as_array()?
        .iter()
        .map(|m| stored_message(peer, m))
        .collect::<Option<Vec<_>>>()?;
    Some(Conversation {
        peer,
        name: value.get("name")?.as_str()?.to_string(),
        unread: usize::try_from(value.get("unread")?.as_u64()?).ok()?,
        identity_changed: flag("identity_changed"),
        blocked: flag("blocked"),
        request: flag("request"),
        verified_name: value
            .get("verified_name")
            .and_then(Value::as_str)
            .map(str::to_owned),
        messages,
        window: None,
        choices: None,
    })
}

fn stored_message(peer: AccountId, value: &Value) -> Option<StoredMessage> {
    let number = |name: &str| value.get(name).and_then(Value::as_u64);
    Some(StoredMessage {
        id: MessageId::from_hex(value.get("id")?.as_str()?)?,
        peer,
        outgoing: value.get("outgoing")?.as_bool()?,
        body: value.get("text")?.as_str()?.to_string(),
        sent_at_ms: number("time_ms")?,
        stored_at_ms: number("stored_ms")?,
        status: match value.get("status")?.as_str()? {
            "pending" => Status::Pending,
            "sent" => Status::Accepted,
            "delivered" => Status::Delivered,
            "read" => Status::Read,
            "failed" => Status::Failed,
            _ => return None,
        },
        sequence: number("sequence")?,
    })
}
