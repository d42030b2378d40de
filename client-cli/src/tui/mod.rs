//! The terminal UI (`comptoir tui`): a conversation list with unread
//! counts, the verified mark (✓ and the certified name) of businesses the
//! operator verified and a `[request]` marker on message requests (not
//! marked read until accepted), a chat view with delivery and read ticks
//! that scrolls by wrapped rows (PgUp/PgDn/Home/End; messages in the order
//! they were written), the identity-change warning, block after a question
//! naming who, and a help line. A customer answers a
//! template's quick reply or an interactive message's button or row
//! (Ctrl-R); a business sees each customer's 24-hour window and the time
//! left, and picks and fills an approved template (Ctrl-P).
//!
//! `s` in the list shows the Status posts of the last 24 hours
//! ([`status_view`]); Enter opens one. `s` on a picked message in the
//! chat saves the file it carries to the downloads directory
//! ([`downloads`]: `DATA_DIR/downloads`, under a safe name).
//!
//! [`app`] holds the state and key handling (tested with key events),
//! [`view`] draws it (tested against ratatui's test backend),
//! [`relay_link`] keeps the connection (the UI opens with the relay down
//! and reconnects by itself), [`open_link`] opens a click-to-chat link in
//! it; this module runs them against a real terminal and a [`Client`],
//! and [`remote`] through a running `comptoir daemon` instead (the same
//! loop, [`run_loop`], on a [`Backend`]; [`wire`] carries the state and
//! the actions between the daemon and the UI).

pub mod app;
pub mod downloads;
pub mod open_link;
pub mod relay_link;
pub mod remote;
pub mod status_view;
pub mod view;
pub mod wire;

use std::collections::hash_map::Entry;
use std::time::Duration;

use comptoir_protocol::AccountId;
use crossterm::event::{self, Event as TermEvent};

use comptoir_client::Client;
use comptoir_client::Event;
use comptoir_client::error::{ClientError, Result};
use comptoir_client::messages::Status;

use comptoir_protocol::proto::wire::TemplateStatus;
use comptoir_protocol::template::Button;

use self::app::{Action, App, Choices, Conversation, Mode, Pick, PickableTemplate};
use self::relay_link::RelayLink;

/// How long one turn of the loop waits for the relay.
const TICK: Duration = Duration::from_millis(100);

/// Every conversation this device knows, contacts first (by name), then
/// other accounts it exchanged messages with.
pub fn load_conversations(client: &Client) -> Result<Vec<Conversation>> {
    let mut peers: Vec<(AccountId, String)> = client
        .contacts()?
        .into_iter()
        .map(|c| (c.account, c.name))
        .collect();
    for peer in client.conversation_peers()? {
        if !peers.iter().any(|(p, _)| *p == peer) {
            peers.push((peer, peer.to_string()));
        }
    }
    let requests = client.message_requests()?;
    let business = client.is_business();
    peers
        .into_iter()
        .map(|(peer, name)| {
            let messages = client.history(&peer)?;
            let unread = messages
                .iter()
                .filter(|m| !m.outgoing && m.status < Status::Read)
                .count();
            Ok(Conversation {
                peer,
                name,
                unread,
                identity_changed: client.identity_changed(&peer)?,
                blocked: client.is_blocked(&peer)?,
                request: requests.iter().any(|(a, _)| *a == peer),
                verified_name: None,
                window: if business {
                    Some(client.window(&peer)?)
                } else {
                    None
                },
                choices: last_choices(client, &peer, &messages)?,
                messages,
            })
        })
        .collect()
}

/// The choices of the last message from `peer` that offers some: a
/// checked template message's quick replies, or an interactive message's
/// buttons or rows.
fn last_choices(
    client: &Client,
    peer: &AccountId,
    messages: &[comptoir_client::StoredMessage],
) -> Result<Option<Choices>> {
    for m in messages.iter().rev().filter(|m| !m.outgoing) {
        if let Some(message) = client.interactive_of_message(peer, &m.id)? {
            let options = crate::json::choices(&message)
                .into_iter()
                .map(|choice| match choice {
                    crate::json::Choice::Button { button, title } => (
                        format!("[{button}] {title}"),
                        Pick::Interactive(comptoir_protocol::interactive::Choice::Button(
                            button - 1,
                        )),
                    ),
                    crate::json::Choice::Row {
                        row,
                        title,
                        description,
                        ..
                    } => (
                        if description.is_empty() {
                            format!("[{row}] {title}")
                        } else {
                            format!("[{row}] {title} — {description}")
                        },
                        Pick::Interactive(comptoir_protocol::interactive::Choice::Row(row)),
                    ),
                })
                .collect();
            return Ok(Some(Choices {
                message: m.id,
                options,
            }));
        }
        if let Some(template) = client.template_of_message(peer, &m.id)? {
            let options: Vec<(String, Pick)> = template
                .buttons
                .iter()
                .zip(0u32..)
                .filter_map(|(button, index)| match button {
                    Button::QuickReply { text } => {
                        Some((format!("[{}] {text}", index + 1), Pick::QuickReply(index)))
                    }
                    _ => None,
                })
                .collect();
            if !options.is_empty() {
                return Ok(Some(Choices {
                    message: m.id,
                    options,
                }));
            }
        }
    }
    Ok(None)
}

/// A business account's approved templates, for the picker.
pub(crate) async fn approved_templates(client: &mut Client) -> Result<Vec<PickableTemplate>> {
    if !client.is_business() {
        return Ok(Vec::new());
    }
    Ok(client
        .own_templates()
        .await?
        .into_iter()
        .filter(|t| t.status == TemplateStatus::Approved)
        .map(|t| PickableTemplate {
            id: t.template_id,
            template: t.template,
        })
        .collect())
}

/// Load the conversations into `app`, each verified business shown by its
/// certified name ([`comptoir_client::BusinessView::shown_name`]); a peer
/// is looked up at the relay once per session.
pub async fn reload(client: &mut Client, app: &mut App) -> Result<()> {
    app.now_ms = comptoir_client::client::now_ms();
    let mut conversations = load_conversations(client)?;
    for conversation in &mut conversations {
        let peer = conversation.peer;
        if let Entry::Vacant(entry) = app.business_names.entry(peer) {
            let certified = match client.business(peer).await {
                Ok(view) if view.verification.is_verified() => {
                    Some(view.shown_name(&conversation.name).to_string())
                }
                Ok(_) => None,
                Err(e @ (ClientError::Database(_) | ClientError::CorruptStore(_))) => {
                    return Err(e);
                }
                // Offline: what was last checked, looked up again once
                // the relay is back.
                Err(e) if relay_link::is_unreachable(&e) => {
                    conversation.verified_name = client
                        .known_business(&peer)?
                        .filter(|view| view.verification.is_verified())
                        .map(|view| view.shown_name(&conversation.name).to_string());
                    continue;
                }
                Err(_) => None,
            };
            entry.insert(certified);
        }
        conversation.verified_name = app.business_names.get(&peer).cloned().flatten();
    }
    app.set_conversations(conversations);
    app.statuses = status_view::load(client).await?;
    Ok(())
}

/// Open the UI's state for `client`: connect to `relay` if it answers,
/// else show what is stored and say so (the returned [`RelayLink`] tries
/// again by itself). Errors retrying cannot fix are returned.
pub async fn open(client: &mut Client, relay: &str) -> Result<(App, RelayLink)> {
    let mut link = RelayLink::new(relay);
    let mut app = App::new(load_conversations(client)?);
    link.reconnect_if_due(client, &mut app, tokio::time::Instant::now())
        .await?;
    if client.is_connected() {
        app.status.clear();
        app.templates = approved_templates(client).await?;
    }
    reload(client, &mut app).await?;
    Ok((app, link))
}

/// Run the UI until the user quits, first opening `chat_link` if given.
pub async fn run(
    client: &mut Client,
    relay: &str,
    chat_link: Option<&comptoir_client::click_to_chat::ChatLink>,
) -> Result<()> {
    let (mut app, mut link) = open(client, relay).await?;
    if let Some(chat_link) = chat_link {
        open_link::open(client, &mut app, chat_link).await?;
        reload(client, &mut app).await?;
    }
    let mut terminal = ratatui::try_init()
        .map_err(|e| ClientError::io("opening the terminal (is this a terminal?)", e))?;
    let mut local = Local {
        client,
        link: &mut link,
    };
    let result = run_loop(&mut terminal, &mut local, &mut app).await;
    ratatui::restore();
    result
}

/// What the UI runs on: the account in this process ([`Local`]), or a
/// running daemon ([`remote`]). The loop ([`run_loop`]) is the same.
pub(crate) trait Backend {
    /// Its failures (those that end the UI).
    type Error: From<ClientError>;

    /// Run an action, saying its outcome on the status line.
    async fn perform(&mut self, app: &mut App, action: Action) -> Result<(), Self::Error>;

    /// Wait up to a tick for what happens to the account and show it;
    /// the sender of a message that came in, if one did.
    async fn next(&mut self, app: &mut App) -> Result<Option<AccountId>, Self::Error>;
}

/// The account opened by this process and its relay connection.
struct Local<'a> {
    client: &'a mut Client,
    link: &'a mut RelayLink,
}

impl Backend for Local<'_> {
    type Error = ClientError;

    async fn perform(&mut self, app: &mut App, action: Action) -> Result<()> {
        perform(self.client, app, action).await
    }

    async fn next(&mut self, app: &mut App) -> Result<Option<AccountId>> {
        let client = &mut *self.client;
        if !client.is_connected() {
            // Keys still answer while the relay is away.
            tokio::time::sleep(TICK).await;
            if self
                .link
                .reconnect_if_due(client, app, tokio::time::Instant::now())
                .await?
            {
                if app.templates.is_empty() {
                    app.templates = approved_templates(client).await.unwrap_or_default();
                }
                reload(client, app).await?;
            }
            return Ok(None);
        }
        match client.next_event(TICK).await {
            Ok(Some(event)) => {
                note(app, client, &event);
                reload(client, app).await?;
                Ok(match event {
                    Event::Message { from, .. } => Some(from),
                    _ => None,
                })
            }
            Ok(None) => Ok(None),
            Err(e) if relay_link::is_unreachable(&e) => {
                app.status = "⚠ connection to the relay lost; reconnecting by itself…".into();
                self.link.lost(tokio::time::Instant::now());
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Draw, answer keys and show what happens until the user quits; a
/// message that comes into the open conversation is marked read.
pub(crate) async fn run_loop<B: Backend>(
    terminal: &mut ratatui::DefaultTerminal,
    backend: &mut B,
    app: &mut App,
) -> std::result::Result<(), B::Error> {
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
                action => backend.perform(app, action).await?,
            }
        }
        if let Some(from) = backend.next(app).await?
            && app.mode == Mode::Chat
            && app.current().is_some_and(|c| c.peer == from)
        {
            backend.perform(app, Action::MarkRead(from)).await?;
        }
    }
}

fn note(app: &mut App, client: &Client, event: &Event) {
    let name = |account: &AccountId| match client.contact_name(account) {
        Ok(Some(name)) => name,
        _ => account.to_string(),
    };
    if let Some(status) = app::event_status(event, &name) {
        app.status = status;
    }
}

/// Run an action against the client, reporting the outcome in the status
/// line; only a broken store ends the UI.
pub async fn perform(client: &mut Client, app: &mut App, action: Action) -> Result<()> {
    let outcome = match action {
        Action::None | Action::Quit => return Ok(()),
        Action::Send { peer, text } => client.send_text(peer, &text).await.map(|_| None),
        Action::MarkRead(peer) if client.message_requests()?.iter().any(|(a, _)| *a == peer) => {
            Ok(Some(
                "a message request: not marked read until you accept it (`comptoir requests \
                 accept`)"
                    .to_string(),
            ))
        }
        Action::MarkRead(peer) => client.mark_read(peer).await.map(|_| None),
        Action::Block(peer) => client.block(peer).await.map(|()| {
            app.set_blocked(peer, true);
            Some("blocked: the relay refuses its messages to you".to_string())
        }),
        Action::SaveAttachment { peer, id } => {
            downloads::save_attachment(client, peer, id).await.map(Some)
        }
        Action::OpenStatus(post_id) => status_view::open(client, app, &post_id).await.map(Some),
        Action::Report { peer, id } => client
            .report_from(peer, id, "")
            .await
            .map(|report_id| Some(format!("reported to the operator (report {report_id})"))),
        Action::Unblock(peer) => client.unblock(peer).await.map(|()| {
            app.set_blocked(peer, false);
            Some("unblocked".to_string())
        }),
        Action::ReviewIdentity(peer) => match client.pending_safety_numbers(&peer) {
            Ok(Some((old, new))) => {
                app.begin_review(peer, old.display(), new.display());
                return Ok(());
            }
            Ok(None) => Ok(Some(
                "nothing to accept: the identity did not change".into(),
            )),
            Err(e) => Err(e),
        },
        Action::AcceptIdentity(peer) => client
            .accept_identity_change(&peer)
            .map(|_| Some("new identity accepted".to_string())),
        Action::Choose {
            peer,
            message,
            pick,
        } => match pick {
            Pick::QuickReply(index) => client.reply_button(peer, message, index).await,
            Pick::Interactive(choice) => client.choose(peer, message, choice).await,
        }
        .map(|_| Some("choice sent".to_string())),
        Action::SendTemplate { peer, id, params } => {
            match app.templates.iter().find(|t| t.id == id) {
                None => Err(ClientError::TemplateNotApproved(id.to_hex())),
                Some(chosen) => {
                    match crate::template_values::parse_params(&chosen.template, &params) {
                        Err(e) => Ok(Some(format!("⚠ not sent: {e}"))),
                        Ok(parameters) => client
                            .send_template(peer, &id, parameters)
                            .await
                            .map(|_| Some(format!("template {} sent", chosen.template.name))),
                    }
                }
            }
        }
    };
    match outcome {
        Ok(Some(status)) => app.status = status,
        Ok(None) => {}
        Err(e @ (ClientError::Database(_) | ClientError::CorruptStore(_))) => return Err(e),
        Err(e) => app.status = e.to_string(),
    }
    reload(client, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
