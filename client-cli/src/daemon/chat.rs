//! `comptoir chat` through a running daemon: the last messages, then each
//! typed line sent with the method `send`, replies printed as they are
//! notified and marked read, each tick naming its message, a line written
//! while the relay is away shown as waiting, and the daemon's connection
//! lost and back said: the lines the standalone chat ([`crate::chat`])
//! prints, read and printed through the same line editor.

use std::collections::HashMap;
use std::io::Write;

use serde_json::{Value, json};

use comptoir_client::error::ClientError;

use super::forward::{Failure, peer_label, print_record, tick};
use super::remote::{Remote, RemoteError};
use super::rpc;
use crate::chat_terminal::{ChatTerminal, TERMINAL_LINE_MAX, Typed};
use crate::format::{offline_line, quoted_excerpt, time_of_day, visible, waiting_line};

/// How many earlier messages are shown when the chat opens.
const SHOWN_HISTORY: usize = 10;

/// Chat with `with` through `remote` until standard input ends or Ctrl-C.
pub async fn run(
    remote: &mut Remote,
    out: &mut dyn Write,
    with: &str,
    c: &str,
) -> Result<u8, Failure> {
    let history = remote
        .call("history", json!({"with": with, "limit": SHOWN_HISTORY}))
        .await?;
    let messages: Vec<Value> = history.as_array().cloned().unwrap_or_default();
    // The peer's account id, to match notifications: from the history, or
    // from what the user typed when it is an id.
    let mut peer = peer_id(remote, with, &messages).await?;
    let name = messages.first().map_or_else(|| visible(with), peer_label);
    remote.call("subscribe", json!({})).await?;
    eprintln!(
        "Chatting with {name} (through the daemon). Type a line and press Enter to send; \
         Ctrl-D or Ctrl-C to quit."
    );
    // Texts by message id, for the ticks.
    let mut texts: HashMap<String, String> = HashMap::new();
    for m in &messages {
        let who = if m.get("direction").and_then(Value::as_str) == Some("out") {
            "me".to_string()
        } else {
            name.clone()
        };
        let body = m.get("text").and_then(Value::as_str).unwrap_or_default();
        writeln!(
            out,
            "[{}] {who}: {}",
            time_of_day(m.get("time_ms").and_then(Value::as_u64).unwrap_or_default()),
            visible(body)
        )
        .map_err(|e| ClientError::io("writing to standard output", e))?;
        if let Some(id) = m.get("id").and_then(Value::as_str) {
            texts.insert(id.to_string(), body.to_string());
        }
    }
    let mut terminal = ChatTerminal::open();
    let mut above_prompt = terminal.out();
    let out: &mut dyn Write = if terminal.has_editor() {
        &mut above_prompt
    } else {
        out
    };
    let notes = &mut terminal.notes();
    let whoami = remote.call("whoami", json!({})).await?;
    if whoami.get("connected") != Some(&Value::Bool(true)) {
        note_to!(
            notes,
            "{}",
            offline_line("the daemon cannot reach the relay now")
        );
    }
    mark_read(remote, with, notes).await?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => break,
            typed = terminal.lines.recv() => match typed {
                None => break,
                Some(Typed::MaybeCut) => note_to!(notes,
                    "not sent: the line filled the terminal's line buffer ({TERMINAL_LINE_MAX} \
                     bytes), so the terminal may have cut it; send long text with \
                     `{c} send NAME -` reading a file, or in shorter lines"
                ),
                Some(Typed::Line(line)) if line.trim().is_empty() => {}
                Some(Typed::Line(line)) => {
                    match remote.call("send", json!({"to": with, "text": line})).await {
                        Ok(sent) => {
                            if let Some(id) = sent.get("id").and_then(Value::as_str) {
                                texts.insert(id.to_string(), line.clone());
                            }
                            if let Some(to) = sent.get("peer").and_then(Value::as_str) {
                                peer = to.to_string();
                            }
                            if sent.get("status").and_then(Value::as_str) == Some("pending") {
                                note_to!(notes, "{}", waiting_line(&line));
                            }
                        }
                        Err(RemoteError::Rpc(e)) if e.code != rpc::INTERNAL_ERROR => {
                            note_to!(notes, "not sent: {}", visible(&e.message));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            },
            record = remote.next_notification() => {
                let record = record?;
                show(remote, out, notes, &record, &peer, with, &texts).await?;
            }
        }
    }
    Ok(0)
}

/// The peer's account id: from its history, or what the user typed when
/// it is an id, or the contact of that name.
async fn peer_id(remote: &mut Remote, with: &str, messages: &[Value]) -> Result<String, Failure> {
    if let Some(peer) = messages
        .first()
        .and_then(|m| m.get("peer"))
        .and_then(Value::as_str)
    {
        return Ok(peer.to_string());
    }
    if comptoir_protocol::AccountId::from_hex(with).is_ok() {
        return Ok(with.to_ascii_lowercase());
    }
    let contacts = remote.call("contacts_list", json!({})).await?;
    Ok(contacts
        .as_array()
        .into_iter()
        .flatten()
        .find(|contact| contact.get("name").and_then(Value::as_str) == Some(with))
        .and_then(|contact| contact.get("account").and_then(Value::as_str))
        .unwrap_or(with)
        .to_string())
}

/// Print one notification: the peer's messages (then marked read), ticks
/// of messages to the peer naming them, the connection as the standalone
/// chat says it, the rest as `listen` does (ticks, warnings and the
/// connection among the notes).
async fn show(
    remote: &mut Remote,
    out: &mut dyn Write,
    notes: &mut dyn Write,
    record: &Value,
    peer: &str,
    with: &str,
    texts: &HashMap<String, String>,
) -> Result<(), Failure> {
    let field = |name: &str| record.get(name).and_then(Value::as_str).unwrap_or_default();
    let from_peer = field("peer") == peer;
    match field("type") {
        "status" if from_peer => {
            let excerpt = texts.get(field("id")).map_or_else(
                || format!("message {}", field("id")),
                |text| quoted_excerpt(text),
            );
            let what = match field("status") {
                "sent" => "sent (waiting at the relay)",
                other => other,
            };
            note_to!(notes, "  {} {what}: {excerpt}", tick(field("status")));
        }
        "status" => note_to!(
            notes,
            "  {} {}: message {} to {}",
            tick(field("status")),
            field("status"),
            field("id"),
            peer_label(record)
        ),
        "warning" => note_to!(notes, "warning: {}", visible(field("text"))),
        "connection" => {
            let reason = visible(field("text"));
            match field("state") {
                "reconnected" => note_to!(notes, "reconnected"),
                "connected" => note_to!(notes, "connected to the relay"),
                "lost" => note_to!(notes, "connection lost ({reason}); reconnecting"),
                "unreachable" => note_to!(notes, "relay unreachable ({reason}); retrying"),
                state => note_to!(notes, "the relay connection is {}", visible(state)),
            }
        }
        "message" if from_peer && field("direction") == "in" => {
            print_record(out, record)?;
            if record.get("request") != Some(&Value::Bool(true)) {
                mark_read(remote, with, notes).await?;
            }
        }
        _ => print_record(out, record)?,
    }
    Ok(())
}

/// Tell the peer its messages were read; a refusal (a message request,
/// the relay away) is said and the chat goes on.
async fn mark_read(remote: &mut Remote, with: &str, notes: &mut dyn Write) -> Result<(), Failure> {
    match remote.call("mark_read", json!({"with": with})).await {
        Ok(_) => Ok(()),
        Err(RemoteError::Rpc(e)) if e.code != rpc::INTERNAL_ERROR => {
            note_to!(notes, "note: not marked read: {}", visible(&e.message));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
