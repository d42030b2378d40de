//! Commands run through a running daemon instead of opening the store:
//! `whoami`, `send`, `history`, `contacts list`, `devices list`, `block`,
//! `unblock`, `listen`, `chat` and `tui`. They print what they print
//! without a daemon (the text output of `history` names the peer by its
//! contact name, without the template and interactive layouts) and exit
//! with the same codes.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use comptoir_client::error::{ClientError, Result};
use comptoir_client::messages::check_text;

use super::remote::{Remote, RemoteError};
use crate::args::{Cli, Command, ContactsCommand, DevicesCommand, OutputFormat};
use crate::format::{date_time, time_of_day, visible};

/// Whether `command` goes through a running daemon.
pub fn goes_through_daemon(command: &Command) -> bool {
    matches!(
        command,
        Command::Whoami
            | Command::Send { .. }
            | Command::SendFile { .. }
            | Command::History { .. }
            | Command::Contacts(ContactsCommand::List)
            | Command::Devices(DevicesCommand::List)
            | Command::Block { .. }
            | Command::Unblock { .. }
            | Command::Listen { .. }
            | Command::Chat { .. }
            | Command::Tui { open: None }
    )
}

/// Run the command through the daemon of `cli.data_dir` if one runs and
/// the command goes through it: its exit code, or `None` to run it here.
pub async fn run_if_running(cli: &Cli, out: &mut dyn Write) -> Result<Option<u8>> {
    if !goes_through_daemon(&cli.command) {
        return Ok(None);
    }
    let Some(mut remote) = Remote::connect_if_running(&cli.data_dir).await else {
        return Ok(None);
    };
    match run(cli, &mut remote, out).await {
        Ok(code) => Ok(Some(code)),
        Err(Failure::Client(e)) => Err(e),
        Err(Failure::Remote(e)) => {
            eprintln!("error: {}", visible(&e.to_string()));
            Ok(Some(e.exit_code()))
        }
    }
}

/// A command through the daemon fails on this side or on the daemon's.
#[derive(Debug)]
pub enum Failure {
    /// Here (writing the output, reading standard input, a bad argument).
    Client(ClientError),
    /// The daemon answered with an error, or went away.
    Remote(RemoteError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

impl From<RemoteError> for Failure {
    fn from(e: RemoteError) -> Self {
        Self::Remote(e)
    }
}

fn line(out: &mut dyn Write, text: &str) -> Result<()> {
    writeln!(out, "{text}").map_err(|e| ClientError::io("writing to standard output", e))
}

fn json_line(out: &mut dyn Write, value: &Value) -> Result<()> {
    line(out, &value.to_string())
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or_default()
}

async fn run(cli: &Cli, remote: &mut Remote, out: &mut dyn Write) -> Result<u8, Failure> {
    let json = cli.output_format() == OutputFormat::Json;
    let c = cli.comptoir();
    match &cli.command {
        Command::Whoami => {
            let me = remote.call("whoami", json!({})).await?;
            line(out, text(&me, "account"))?;
            Ok(0)
        }
        Command::Send {
            to,
            text: Some(body),
            file: None,
            ..
        } => {
            let body = if body == "-" {
                crate::read_stdin_text()?
            } else {
                body.clone()
            };
            // Refused before the daemon is asked: nothing is written.
            check_text(&body)?;
            let sent = remote.call("send", json!({"to": to, "text": body})).await?;
            report_sent(out, json, &sent, &c)
        }
        Command::Send {
            to,
            file: Some(path),
            content_type,
            ..
        }
        | Command::SendFile {
            to,
            path,
            content_type,
        } => {
            let path = std::path::absolute(path)
                .map_err(|e| ClientError::io("finding the file to send", e))?;
            let mut params = json!({"to": to, "file": path});
            if let Some(content_type) = content_type {
                params["type"] = json!(content_type);
            }
            let sent = remote.call("send", params).await?;
            report_sent(out, json, &sent, &c)
        }
        Command::History { with } => {
            let messages = remote.call("history", json!({"with": with})).await?;
            for m in messages.as_array().into_iter().flatten() {
                if json {
                    json_line(out, m)?;
                    continue;
                }
                let outgoing = text(m, "direction") == "out";
                let who = if outgoing {
                    "me".to_string()
                } else {
                    peer_label(m)
                };
                let status = if outgoing {
                    format!(" [{}]", text(m, "status"))
                } else {
                    String::new()
                };
                line(
                    out,
                    &format!(
                        "{} {who}: {}{status}",
                        date_time(time_ms(m)),
                        visible(text(m, "text"))
                    ),
                )?;
            }
            Ok(0)
        }
        Command::Contacts(ContactsCommand::List) => {
            let contacts = remote.call("contacts_list", json!({})).await?;
            for contact in contacts.as_array().into_iter().flatten() {
                if json {
                    json_line(out, contact)?;
                    continue;
                }
                let mut flags = String::new();
                if contact.get("verified") == Some(&Value::Bool(true)) {
                    flags.push_str("\tverified");
                }
                if contact.get("blocked") == Some(&Value::Bool(true)) {
                    flags.push_str("\tblocked");
                }
                line(
                    out,
                    &format!(
                        "{}\t{}{flags}",
                        text(contact, "name"),
                        text(contact, "account")
                    ),
                )?;
            }
            Ok(0)
        }
        Command::Devices(DevicesCommand::List) => {
            let devices = remote.call("devices_list", json!({})).await?;
            for device in devices.as_array().into_iter().flatten() {
                if json {
                    json_line(out, device)?;
                    continue;
                }
                let id = device
                    .get("device_id")
                    .and_then(Value::as_u64)
                    .unwrap_or_default();
                let mut roles = Vec::new();
                if device.get("first_device") == Some(&Value::Bool(true)) {
                    roles.push("first device");
                }
                if device.get("this_device") == Some(&Value::Bool(true)) {
                    roles.push("this device");
                }
                let name = device
                    .get("name")
                    .and_then(Value::as_str)
                    .map_or("-".into(), visible);
                let added = device
                    .get("added_ms")
                    .and_then(Value::as_u64)
                    .map_or("added -".into(), |t| format!("added {}", date_time(t)));
                let key: String = text(device, "identity_key").chars().take(16).collect();
                line(
                    out,
                    &format!("{id}\t{name}\t{added}\tkey {key}…\t{}", roles.join(", ")),
                )?;
            }
            Ok(0)
        }
        Command::Block { who, reason } => {
            let mut params = json!({"who": who});
            if let Some(reason) = reason {
                params["reason"] = json!(match reason {
                    crate::args::BlockReasonArg::NoLongerNeeded => "no_longer_needed",
                    crate::args::BlockReasonArg::DidNotSignUp => "did_not_sign_up",
                    crate::args::BlockReasonArg::Spam => "spam",
                    crate::args::BlockReasonArg::Offensive => "offensive",
                });
            }
            remote.call("block", params).await?;
            eprintln!(
                "{} is blocked: the relay refuses its messages to you",
                visible(who)
            );
            Ok(0)
        }
        Command::Unblock { who } => {
            remote.call("unblock", json!({"who": who})).await?;
            eprintln!("{} is unblocked", visible(who));
            Ok(0)
        }
        Command::Listen { count, timeout } => {
            listen(remote, out, json, *count, timeout.map(Duration::from_secs)).await
        }
        Command::Chat { with } => super::chat::run(remote, out, with, &c).await,
        Command::Tui { .. } => {
            crate::tui::remote::run(remote).await?;
            Ok(0)
        }
        // Not forwarded (see `goes_through_daemon`).
        _ => Ok(1),
    }
}

fn time_ms(record: &Value) -> u64 {
    record
        .get("time_ms")
        .and_then(Value::as_u64)
        .unwrap_or_default()
}

/// How a record names its peer: the contact name, else the account id.
pub(crate) fn peer_label(record: &Value) -> String {
    name_or_id(record, "peer")
}

/// A record's `FIELD_name` made visible, or else its `FIELD` (an account
/// id): how a Status poster or viewer is named.
fn name_or_id(record: &Value, field: &str) -> String {
    match record.get(format!("{field}_name")).and_then(Value::as_str) {
        Some(name) => visible(name),
        None => text(record, field).to_string(),
    }
}

fn report_sent(out: &mut dyn Write, json: bool, sent: &Value, c: &str) -> Result<u8, Failure> {
    let id = text(sent, "id");
    if json {
        json_line(out, sent)?;
    } else {
        line(out, id)?;
    }
    if text(sent, "status") == "pending" {
        eprintln!(
            "message {id} waits in the outbox: the daemon cannot reach the relay and sends it \
             when the relay is back; to cancel it, stop the daemon and run `{c} outbox cancel \
             {id}`"
        );
        return Ok(5);
    }
    Ok(0)
}

/// `listen` through the daemon: its events as `listen` prints them.
async fn listen(
    remote: &mut Remote,
    out: &mut dyn Write,
    json: bool,
    count: Option<usize>,
    timeout: Option<Duration>,
) -> Result<u8, Failure> {
    remote.call("subscribe", json!({})).await?;
    eprintln!("listening through the daemon (Ctrl-C to stop)");
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut seen = 0usize;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    while count.is_none_or(|n| seen < n) {
        let next = async {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, remote.next_notification())
                    .await
                    .ok(),
                None => Some(remote.next_notification().await),
            }
        };
        let record = tokio::select! {
            record = next => record,
            _ = &mut interrupted => return Ok(0),
        };
        let Some(record) = record else {
            return Ok(crate::EXIT_TIMED_OUT);
        };
        let record = record?;
        if json {
            if text(&record, "type") != "connection" {
                json_line(out, &record)?;
            }
        } else {
            print_record(out, &record)?;
        }
        if is_incoming(&record) {
            seen += 1;
        }
    }
    Ok(0)
}

/// Whether a notified record is an incoming message (what `--count`
/// counts).
pub(crate) fn is_incoming(record: &Value) -> bool {
    match text(record, "type") {
        "message" => text(record, "direction") == "in",
        "template" | "quick_reply" | "interactive" | "interactive_reply" | "attachment"
        | "status_received" => true,
        _ => false,
    }
}

/// Print a notified record for people, as `listen` does: messages on
/// standard output, ticks, warnings and the connection on standard error.
pub(crate) fn print_record(out: &mut dyn Write, record: &Value) -> Result<()> {
    let at = time_of_day(time_ms(record));
    match text(record, "type") {
        "message" if text(record, "direction") == "in" => {
            let marker = if record.get("request") == Some(&Value::Bool(true)) {
                " [request]"
            } else {
                ""
            };
            line(
                out,
                &format!(
                    "[{at}] {}{marker}: {}",
                    peer_label(record),
                    visible(text(record, "text"))
                ),
            )
        }
        "message" => line(
            out,
            &format!(
                "[{at}] me (other device) → {}: {}",
                peer_label(record),
                visible(text(record, "text"))
            ),
        ),
        "template" | "interactive" => {
            line(
                out,
                &format!(
                    "[{at}] {} ({} {}):",
                    peer_label(record),
                    text(record, "type"),
                    text(record, "id")
                ),
            )?;
            for field in ["header", "body", "footer"] {
                if let Some(part) = record.get(field).and_then(Value::as_str) {
                    line(out, &format!("  {}", visible(part)))?;
                }
            }
            Ok(())
        }
        "quick_reply" | "interactive_reply" => line(
            out,
            &format!(
                "[{at}] {} chose \"{}\" of {}",
                peer_label(record),
                visible(
                    record
                        .get("text")
                        .or_else(|| record.get("title"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ),
                text(record, "reply_to")
            ),
        ),
        "attachment" => {
            let marker = if record.get("request") == Some(&Value::Bool(true)) {
                " [request]"
            } else {
                ""
            };
            line(
                out,
                &format!(
                    "[{at}] {}{marker}: [file {} ({}, {} bytes)]",
                    peer_label(record),
                    visible(text(record, "file_name")),
                    visible(text(record, "content_type")),
                    record
                        .get("size")
                        .and_then(Value::as_u64)
                        .unwrap_or_default()
                ),
            )?;
            eprintln!(
                "  (save it with `comptoir save {} {} PATH`)",
                text(record, "peer"),
                text(record, "id")
            );
            Ok(())
        }
        "status_received" => {
            line(
                out,
                &format!(
                    "[{at}] {} posted a Status {}",
                    name_or_id(record, "poster"),
                    text(record, "id")
                ),
            )?;
            eprintln!(
                "  (see it with `comptoir status view {}`)",
                text(record, "id")
            );
            Ok(())
        }
        "status_removed" => line(
            out,
            &format!(
                "{} deleted its Status {}",
                name_or_id(record, "poster"),
                text(record, "id")
            ),
        ),
        "status_viewed" => line(
            out,
            &format!(
                "[{at}] {} viewed your Status {}",
                name_or_id(record, "viewer"),
                text(record, "id")
            ),
        ),
        "status" => {
            eprintln!(
                "  {} {}: message {} to {}",
                tick(text(record, "status")),
                text(record, "status"),
                text(record, "id"),
                peer_label(record)
            );
            Ok(())
        }
        "warning" => {
            eprintln!("warning: {}", visible(text(record, "text")));
            Ok(())
        }
        "connection" => {
            eprintln!("{}", connection_line(record));
            Ok(())
        }
        "consent_request" => line(
            out,
            &format!(
                "{} asks to send you: {} (see `comptoir consent requests`)",
                visible(text(record, "business_name")),
                text(record, "purpose")
            ),
        ),
        _ => Ok(()),
    }
}

/// ✓ for sent, ✓✓ for delivered and read.
pub(crate) fn tick(status: &str) -> &'static str {
    match status {
        "sent" => "✓",
        "delivered" | "read" => "✓✓",
        _ => "·",
    }
}

/// What to say about the daemon's relay connection.
pub(crate) fn connection_line(record: &Value) -> String {
    match text(record, "state") {
        "reconnected" => "reconnected".to_string(),
        "connected" => "connected to the relay".to_string(),
        state => format!(
            "the daemon's relay connection is {state} ({}); it reconnects by itself",
            visible(text(record, "text"))
        ),
    }
}
