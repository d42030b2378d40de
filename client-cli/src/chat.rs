//! `comptoir chat` on the account's own relay connection: the last
//! messages, then each typed line sent, the peer's messages printed as
//! they arrive and marked read, each tick naming its message. When the
//! relay goes away, the chat says so, keeps reading what is typed (a line
//! written meanwhile waits in the outbox, and says so), reconnects with
//! backoff and says "reconnected"; the outbox then goes and its ✓ ticks
//! follow. `comptoir chat` through a running daemon
//! ([`crate::daemon::chat`]) prints the same lines.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use comptoir_client::error::{ClientError, Result};
use comptoir_client::{Client, Event};
use comptoir_protocol::AccountId;
use tokio::time::Instant;

use crate::chat_terminal::{ChatTerminal, TERMINAL_LINE_MAX, Typed};
use crate::format::{offline_line, time_of_day, visible, waiting_line};
use crate::{
    POLL, contact_or_id, display_name, excerpt_of, interrupted_flag, print_event,
    tui::relay_link::is_unreachable,
};

/// How many earlier messages are shown when the chat opens.
const SHOWN_HISTORY: usize = 10;

/// The first wait before connecting again; it doubles up to
/// [`MAX_RECONNECT_DELAY`] while the relay stays away.
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// The longest wait between two attempts to reach the relay.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// When to try the relay again while it is away.
struct Reconnect {
    at: Instant,
    delay: Duration,
}

impl Reconnect {
    fn new() -> Self {
        Self {
            at: Instant::now(),
            delay: FIRST_RECONNECT_DELAY,
        }
    }
}

/// Chat with `peer` until standard input ends, Ctrl-C or Ctrl-D; `c` is
/// `comptoir` with the --data-dir in use.
pub(crate) async fn run(
    out: &mut dyn Write,
    client: &mut Client,
    relay: &str,
    peer: AccountId,
    c: &str,
) -> Result<u8> {
    let stop = interrupted_flag();
    let mut reconnect = Reconnect::new();
    // The relay away at the start is no reason not to chat: the history
    // is here, and what is typed waits in the outbox until it is back.
    let offline = match client.connect(relay).await {
        Ok(_) => None,
        Err(e) if is_unreachable(&e) => {
            reconnect.at = Instant::now() + reconnect.delay;
            reconnect.delay = (reconnect.delay * 2).min(MAX_RECONNECT_DELAY);
            Some(e)
        }
        Err(e) => return Err(e),
    };
    let name = display_name(client, &peer);
    eprintln!(
        "Chatting with {name}. Type a line and press Enter to send; Ctrl-D or Ctrl-C to quit."
    );
    for m in client
        .history(&peer)?
        .iter()
        .rev()
        .take(SHOWN_HISTORY)
        .rev()
    {
        let who = if m.outgoing { "me" } else { name.as_str() };
        say!(
            out,
            "[{}] {who}: {}",
            time_of_day(m.sent_at_ms),
            visible(&m.body)
        );
    }
    let mut terminal = ChatTerminal::open();
    let mut above_prompt = terminal.out();
    let out: &mut dyn Write = if terminal.has_editor() {
        &mut above_prompt
    } else {
        out
    };
    let notes = &mut terminal.notes();
    if let Some(e) = &offline {
        note_to!(notes, "{}", offline_line(&visible(&e.to_string())));
    }
    // A message request is not marked read until the user accepts it.
    let mut pending_request = client.message_requests()?.iter().any(|(a, _)| *a == peer);
    if pending_request {
        note_to!(
            notes,
            "{name} is a message request: it is not told you read it until you accept it \
             (`{c} requests accept {}`)",
            contact_or_id(client, &peer)
        );
    } else {
        mark_read_or_warn(client, peer, notes).await?;
    }
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if !client.is_connected() {
            if Instant::now() >= reconnect.at {
                match client.connect(relay).await {
                    Ok(_) => {
                        reconnect = Reconnect::new();
                        note_to!(notes, "reconnected");
                    }
                    Err(e) if is_unreachable(&e) => {
                        note_to!(
                            notes,
                            "relay unreachable ({e}); retrying in {} ms",
                            reconnect.delay.as_millis()
                        );
                        reconnect.at = Instant::now() + reconnect.delay;
                        reconnect.delay = (reconnect.delay * 2).min(MAX_RECONNECT_DELAY);
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            // Typed lines still go (to the outbox) while the relay is away.
            let wake = reconnect.at.min(Instant::now() + POLL);
            let typed = tokio::select! {
                typed = terminal.lines.recv() => typed,
                () = tokio::time::sleep_until(wake) => continue,
            };
            match typed {
                Some(typed) => send_typed(client, peer, typed, notes, &mut reconnect, c).await?,
                None => break,
            }
            continue;
        }
        // Wait for the relay, woken by a typed line.
        let mut typed = None;
        let lines = &mut terminal.lines;
        let event = client
            .next_event_unless(POLL, async {
                typed = Some(lines.recv().await);
            })
            .await;
        match typed {
            Some(Some(typed)) => {
                send_typed(client, peer, typed, notes, &mut reconnect, c).await?;
            }
            Some(None) => break,
            None => {}
        }
        match event {
            Ok(Some(event @ (Event::Message { from, .. } | Event::Template { from, .. }))) => {
                print_event(client, &event, out, notes, c).await?;
                if let Event::Message { request: true, .. } = event {
                    pending_request = true;
                }
                if from == peer && !pending_request {
                    mark_read_or_warn(client, peer, notes).await?;
                }
            }
            // Each tick names its message.
            Ok(Some(Event::Accepted { to, id, .. })) if to == peer => note_to!(
                notes,
                "  ✓ sent (waiting at the relay): {}",
                excerpt_of(client, &peer, &id)
            ),
            Ok(Some(Event::Delivered { to, id, .. })) if to == peer => {
                note_to!(notes, "  ✓✓ delivered: {}", excerpt_of(client, &peer, &id));
            }
            Ok(Some(Event::Read { by, ids })) if by == peer => {
                for id in ids {
                    note_to!(notes, "  ✓✓ read: {}", excerpt_of(client, &peer, &id));
                }
            }
            Ok(Some(event)) => {
                print_event(client, &event, out, notes, c).await?;
            }
            Ok(None) => {}
            Err(e) if is_unreachable(&e) => {
                note_to!(notes, "connection lost ({e}); reconnecting");
                client.close_connection().await;
                reconnect = Reconnect::new();
            }
            Err(e) => return Err(e),
        }
    }
    client.close_connection().await;
    Ok(0)
}

/// Send one typed line to `peer`. Offline, or if the connection drops on
/// the way, it waits in the outbox (and the chat says so); only errors of
/// the store end the chat.
async fn send_typed(
    client: &mut Client,
    peer: AccountId,
    typed: Typed,
    notes: &mut dyn Write,
    reconnect: &mut Reconnect,
    c: &str,
) -> Result<()> {
    let line = match typed {
        Typed::MaybeCut => {
            note_to!(
                notes,
                "not sent: the line filled the terminal's line buffer ({TERMINAL_LINE_MAX} \
                 bytes), so the terminal may have cut it; send long text with \
                 `{c} send NAME -` reading a file, or in shorter lines"
            );
            return Ok(());
        }
        Typed::Line(line) if line.trim().is_empty() => return Ok(()),
        Typed::Line(line) => line,
    };
    let was_connected = client.is_connected();
    match client.send_text(peer, &line).await {
        Ok(_) if client.is_connected() => {}
        Ok(_) => note_to!(notes, "{}", waiting_line(&line)),
        Err(e) if is_unreachable(&e) => {
            // Stored and in the outbox: it goes when the relay is back.
            note_to!(notes, "{}", waiting_line(&line));
            if was_connected {
                client.close_connection().await;
                note_to!(notes, "connection lost ({e}); reconnecting");
                *reconnect = Reconnect::new();
            }
        }
        Err(
            e @ (ClientError::Database(_) | ClientError::CorruptStore(_) | ClientError::Io { .. }),
        ) => return Err(e),
        Err(e) => note_to!(notes, "not sent: {e}"),
    }
    Ok(())
}

/// Tell `peer` its messages were read; if that fails, say so (the chat
/// goes on: the next message read tries again).
async fn mark_read_or_warn(
    client: &mut Client,
    peer: AccountId,
    notes: &mut dyn Write,
) -> Result<()> {
    if let Err(e) = client.mark_read(peer).await {
        note_to!(
            notes,
            "warning: {} was not told its messages were read: {}",
            display_name(client, &peer),
            visible(&e.to_string())
        );
    }
    Ok(())
}
