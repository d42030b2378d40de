//! Commands run through a running daemon instead of opening the store.
//! `listen`, `chat` and `tui` follow its events with `subscribe` and use
//! its methods; every other command that opens the store is run by the
//! daemon with the method `run`, so it prints on standard output and
//! error what it prints without a daemon and exits with the same code.
//! `init`, `register`, `link-device`, `restore` and `daemon` say a daemon
//! runs and to stop it.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use comptoir_client::error::{ClientError, Result};
use comptoir_client::messages::check_text;

use super::methods;
use super::remote::{Remote, RemoteError};
use crate::args::{Cli, Command, OutputFormat};
use crate::format::{time_of_day, visible};

/// Whether `command` follows events through a running daemon with the
/// methods `subscribe` and the others (every other command that opens the
/// store is run by the daemon with `run`).
pub fn goes_through_daemon(command: &Command) -> bool {
    matches!(
        command,
        Command::Listen { .. } | Command::Chat { .. } | Command::Tui { .. }
    )
}

/// Run the command through the daemon of `cli.data_dir` if one runs and
/// the command goes through it: its exit code, or `None` to run it here.
pub async fn run_if_running(cli: &Cli, out: &mut dyn Write) -> Result<Option<u8>> {
    let generic = methods::runs_in_daemon(&cli.command);
    let refused = needs_the_store(&cli.command);
    if !goes_through_daemon(&cli.command) && !generic && !refused {
        return Ok(None);
    }
    let Some(mut remote) = Remote::connect_if_running(&cli.data_dir).await else {
        return Ok(None);
    };
    let ran = if goes_through_daemon(&cli.command) {
        run(cli, &mut remote, out).await
    } else if generic {
        run_in_daemon(cli, &mut remote, out).await
    } else if matches!(cli.command, Command::Daemon { .. }) {
        eprintln!(
            "error: a comptoir daemon already serves {}; use it (see docs/CLIENT-RPC.md), \
             or stop it (Ctrl-C in its terminal) first",
            crate::config::shell_word(&cli.data_dir)
        );
        return Ok(Some(1));
    } else {
        eprintln!(
            "error: a comptoir daemon is running on {}: `{}` needs the store to itself; stop \
             the daemon first (Ctrl-C in its terminal, or end its process), then run it again",
            crate::config::shell_word(&cli.data_dir),
            command_name(&cli.command)
        );
        return Ok(Some(1));
    };
    match ran {
        Ok(code) => Ok(Some(code)),
        Err(Failure::Client(e)) => Err(e),
        Err(Failure::Remote(e)) => {
            eprintln!("error: {}", visible(&e.to_string()));
            Ok(Some(e.exit_code()))
        }
    }
}

/// Commands that cannot run while a daemon holds the store: they make or
/// replace it, or are a daemon.
fn needs_the_store(command: &Command) -> bool {
    matches!(
        command,
        Command::Init
            | Command::LinkDevice { .. }
            | Command::Restore { .. }
            | Command::Daemon { .. }
    )
}

/// The name a command is typed with, for messages.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Init => "init",
        Command::Register { .. } => "register",
        Command::LinkDevice { .. } => "link-device",
        Command::Restore { .. } => "restore",
        Command::Daemon { .. } => "daemon",
        _ => "this command",
    }
}

/// Any other command that opens the store, run by the daemon with the
/// method `run`: what it prints on standard output and error comes back
/// as it would be printed without the daemon, with its exit code.
async fn run_in_daemon(cli: &Cli, remote: &mut Remote, out: &mut dyn Write) -> Result<u8, Failure> {
    let mut command = cli.command.clone();
    for path in methods::paths_of(&mut command) {
        *path = std::path::absolute(&*path)
            .map_err(|e| ClientError::io("finding the current directory", e))?;
    }
    let stdin = match &command {
        // Read and checked here, as without the daemon: a text too long
        // is refused before anything is asked.
        Command::Send {
            text: Some(_) | None,
            file: None,
            ..
        } if sends_stdin(&command) => {
            let text = crate::read_stdin_text()?;
            check_text(&text)?;
            Some(text)
        }
        command if reads_stdin(command) => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                .map_err(|e| ClientError::io("reading standard input", e))?;
            Some(String::from_utf8(bytes).map_err(|_| {
                ClientError::InvalidArgument(
                    "standard input is not UTF-8 text; nothing was sent".into(),
                )
            })?)
        }
        _ => None,
    };
    // A command that asks its user (`open` without --yes) leaves the
    // question to this side, which has the terminal, when it is one.
    let ask = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let params = json!({
        "command": command,
        "data_dir": cli.data_dir_arg,
        "output": cli.output,
        "region": cli.region,
        "stdin": stdin,
        "ask": ask,
    });
    let ran = remote.call("run", params).await?;
    let stdout = text(&ran, "stdout");
    out.write_all(stdout.as_bytes())
        .map_err(|e| ClientError::io("writing to standard output", e))?;
    eprint!("{}", text(&ran, "stderr"));
    let code = ran
        .get("exit_code")
        .and_then(Value::as_u64)
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(1);
    match ran.get("confirm").filter(|q| !q.is_null()) {
        Some(question) if code == 0 => answer(cli, remote, out, question).await,
        _ => Ok(code),
    }
}

/// Ask the question a command run by the daemon left to this side (the
/// `open` confirmation), and on yes send its text with the method `send`:
/// what `open` prints and exits with on its own.
async fn answer(
    cli: &Cli,
    remote: &mut Remote,
    out: &mut dyn Write,
    question: &Value,
) -> Result<u8, Failure> {
    eprint!("{}", text(question, "prompt"));
    if !crate::open_link::read_yes() {
        eprintln!("{}", crate::open_link::NOT_SENT);
        return Ok(0);
    }
    let sent = remote
        .call(
            "send",
            json!({"to": text(question, "to"), "text": text(question, "text")}),
        )
        .await?;
    let id = text(&sent, "id");
    if text(&sent, "status") == "pending" {
        say!(out, "queued\t{id}");
        eprintln!("{}", crate::queued_note(&id, &cli.comptoir()));
        return Ok(5);
    }
    crate::open_link::say_sent(out, id, &cli.comptoir())?;
    Ok(0)
}

/// Whether `command` is `send` reading its text from standard input.
fn sends_stdin(command: &Command) -> bool {
    matches!(
        command,
        Command::Send {
            text: None,
            file: None,
            ..
        }
    ) || matches!(command, Command::Send { text: Some(t), file: None, .. } if t == "-")
}

/// Whether `command` reads a file from standard input (`-`).
fn reads_stdin(command: &Command) -> bool {
    use crate::args::{BusinessCommand, TemplateCommand};
    matches!(
        command,
        Command::Business(BusinessCommand::Template(TemplateCommand::Submit { file }))
            if file.as_os_str() == "-"
    )
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
        Command::Listen { count, timeout } => {
            listen(remote, out, json, *count, timeout.map(Duration::from_secs)).await
        }
        Command::Chat { with } => super::chat::run(remote, out, with, &c).await,
        Command::Tui { open } => {
            crate::tui::remote::run(remote, open.as_ref()).await?;
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
