//! The terminal UI through a running daemon (`comptoir tui` while
//! `comptoir daemon` holds the account): the conversations come from the
//! method `conversations`, events arrive as notifications, and sending,
//! marking read, blocking and unblocking are method calls. What needs the
//! store itself (reporting, accepting a new identity, answering choices,
//! templates, Status posts) says to stop the daemon for it.

use std::time::Duration;

use crossterm::event::{self, Event as TermEvent};
use serde_json::{Value, json};

use comptoir_client::error::ClientError;
use comptoir_client::messages::{MessageId, Status, StoredMessage};
use comptoir_protocol::AccountId;

use super::app::{Action, App, Conversation, Mode};
use super::view;
use crate::daemon::forward::{Failure, connection_line};
use crate::daemon::remote::{Remote, RemoteError};
use crate::daemon::rpc;

/// How long one turn of the loop waits for a notification.
const TICK: Duration = Duration::from_millis(100);

/// What the status line says of an action the daemon does not serve.
const NEEDS_THE_STORE: &str = "⚠ not available through the daemon: stop `comptoir daemon` \
     and open `comptoir tui` for this";

/// Run the UI through `remote` until the user quits.
pub async fn run(remote: &mut Remote) -> Result<(), Failure> {
    let mut app = App::new(conversations(remote).await?);
    remote.call("subscribe", json!({})).await?;
    app.status = "through the daemon (comptoir daemon holds the account)".into();
    let mut terminal = ratatui::try_init()
        .map_err(|e| ClientError::io("opening the terminal (is this a terminal?)", e))?;
    let result = run_loop(&mut terminal, remote, &mut app).await;
    ratatui::restore();
    result
}

async fn run_loop(
    terminal: &mut ratatui::DefaultTerminal,
    remote: &mut Remote,
    app: &mut App,
) -> Result<(), Failure> {
    loop {
        app.now_ms = comptoir_client::client::now_ms();
        terminal
            .draw(|frame| view::draw(frame, app))
            .map_err(|e| ClientError::io("drawing the terminal", e))?;
        while event::poll(Duration::ZERO).map_err(|e| ClientError::io("reading keys", e))? {
            let TermEvent::Key(key) =
                event::read().map_err(|e| ClientError::io("reading keys", e))?
            else {
                continue;
            };
            match app.handle_key(key) {
                Action::Quit => return Ok(()),
                action => perform(remote, app, action).await?,
            }
        }
        let Ok(record) = tokio::time::timeout(TICK, remote.next_notification()).await else {
            continue;
        };
        let record = record?;
        note(app, &record);
        let field = |name: &str| record.get(name).and_then(Value::as_str).unwrap_or_default();
        if field("type") == "message"
            && field("direction") == "in"
            && app.mode == Mode::Chat
            && app
                .current()
                .is_some_and(|c| c.peer.to_string() == field("peer"))
            && let Ok(peer) = AccountId::from_hex(field("peer"))
        {
            perform(remote, app, Action::MarkRead(peer)).await?;
        }
        reload(remote, app).await?;
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
/// line; only the daemon going away ends the UI.
async fn perform(remote: &mut Remote, app: &mut App, action: Action) -> Result<(), Failure> {
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
        Action::ReviewIdentity(_)
        | Action::AcceptIdentity(_)
        | Action::Choose { .. }
        | Action::SendTemplate { .. }
        | Action::Report { .. }
        | Action::SaveAttachment { .. }
        | Action::OpenStatus(_) => Ok(Some(NEEDS_THE_STORE.to_string())),
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

async fn reload(remote: &mut Remote, app: &mut App) -> Result<(), Failure> {
    let list = conversations(remote).await?;
    app.set_conversations(list);
    Ok(())
}

/// The conversations as the daemon lists them.
async fn conversations(remote: &mut Remote) -> Result<Vec<Conversation>, Failure> {
    let list = remote.call("conversations", json!({})).await?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(conversation)
        .collect())
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
