//! The customer's `comptoir` command line and terminal UI, on the client
//! library (`comptoir-client`): parse, open the store, run one command, map
//! the outcome to an exit code a script can rely on (listed in `--help`).
//!
//! The library does not depend on this crate, so a program embedding the
//! library builds neither ratatui, crossterm, rpassword nor clap.
//!
//! Modules:
//! - [`account`]: the account a command runs on: its own, or a running
//!   daemon's.
//! - [`args`]: the command line's arguments.
//! - [`business`]: `comptoir business …` (profile, templates, consent
//!   requests) and how a business is shown (the verified mark).
//! - [`chat`]: `comptoir chat` on the account's own connection.
//! - [`chat_terminal`]: what `chat` reads typed lines from and prints
//!   through (a line editor in a terminal).
//! - [`config`]: the default data directory and the config file.
//! - [`daemon`]: `comptoir daemon` (JSON-RPC on a local socket) and the
//!   commands that go through a running one.
//! - [`format`]: times and one-line previews for the output.
//! - [`generate`]: shell completions and the manual page.
//! - [`interactive`]: interactive messages (reply buttons, lists) shown,
//!   written from flags, and answered.
//! - [`json`]: the records `--output json` prints, one per line.
//! - [`open_link`]: click-to-chat links: `comptoir open` and `comptoir
//!   business link`.
//! - [`phone_number`]: phone numbers as typed, written in E.164.
//! - [`status`]: `comptoir status post|list|view|delete` (24-hour Status).
//! - [`template_values`]: template placeholder values as typed
//!   (`--param NAME=VALUE`).
//! - [`tui`]: the terminal UI (`comptoir tui`).

#![forbid(unsafe_code)]

/// Write one line to the command's output.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        writeln!($out, $($arg)*)
            .map_err(|e| ClientError::io("writing to standard output", e))?
    };
}

/// Write one line to the command's notes: standard error, or above the
/// line being typed in `chat`.
macro_rules! note_to {
    ($notes:expr, $($arg:tt)*) => {
        writeln!($notes, $($arg)*)
            .map_err(|e| ClientError::io("writing to standard error", e))?
    };
}

/// Write one line to standard error, or, while the daemon runs the
/// command for another program, to what is sent back to it.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::account::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// What a command says of message `id` left in the outbox by a lost
/// connection (`c`: how to run `comptoir`).
pub(crate) fn queued_note(id: &dyn std::fmt::Display, c: &str) -> String {
    format!(
        "message {id} waits in the outbox and is sent on the next connect; see what waits \
         with `{c} outbox list`, or cancel it with `{c} outbox cancel {id}`"
    )
}

mod account;
pub mod args;
pub mod business;
pub mod chat;
pub mod chat_terminal;
pub mod config;
pub mod daemon;
pub mod format;
pub mod generate;
pub mod interactive;
pub mod json;
pub mod open_link;
pub mod phone_number;
pub mod status;
pub mod template_values;
pub mod tui;

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use comptoir_protocol::interactive::Choice;
use comptoir_protocol::proto::wire::AccountKind;
use comptoir_protocol::template::{Button, RenderedTemplate};
use comptoir_protocol::{AccountId, ConsentCategories};
use zeroize::Zeroizing;

use comptoir_client::client::purpose_text;
use comptoir_client::contacts;
use comptoir_client::error::{ClientError, Result};
use comptoir_client::messages::check_text;
use comptoir_client::store::{KdfParams, Store};
use comptoir_client::{Client, Event, MessageId};

use comptoir_client::account::FIRST_DEVICE_ID;

use self::args::{
    Cli, Command, ConsentCategory, ConsentCommand, ContactsCommand, DevicesCommand, NameCommand,
    OutboxCommand, OutputFormat, PhoneCommand, RequestsCommand,
};
use self::business::business_label;
use self::format::{date_time, time_of_day, visible};
use self::json::Record;

/// Environment variable holding the store passphrase.
pub const PASSPHRASE_ENV: &str = "COMPTOIR_PASSPHRASE";
/// How often a waiting loop checks for Ctrl-C and typed input.
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// Exit code of a timed-out `listen --count`.
const EXIT_TIMED_OUT: u8 = 9;
/// Exit code of `safety-number --verify` when the numbers differ.
const EXIT_MISMATCH: u8 = 10;

/// The exit code for an error (see `--help`).
pub fn exit_code(error: &ClientError) -> u8 {
    match error {
        ClientError::WrongPassphrase => 3,
        ClientError::NotInitialized { .. }
        | ClientError::AlreadyInitialized { .. }
        | ClientError::NotRegistered
        | ClientError::NotLinked
        | ClientError::DeviceRemoved { .. }
        | ClientError::NotPrimaryDevice => 4,
        ClientError::Connect { .. }
        | ClientError::ConnectionClosed(_)
        | ClientError::NotConnected
        | ClientError::Timeout(_) => 5,
        ClientError::Blocked { .. } | ClientError::Relay { .. } => 6,
        ClientError::IdentityChanged { .. } => 7,
        ClientError::UnknownContact(_)
        | ClientError::UnknownPeer(_)
        | ClientError::NoSuchAccount(_)
        | ClientError::NotFound(_)
        | ClientError::Status(comptoir_client::status::StatusError::NotFound(_)) => 8,
        _ => 1,
    }
}

/// What to type next for an error, in this CLI's terms (the library's
/// messages name no command: other programs embed it), for the command
/// that failed, repeating the `--data-dir` in use.
pub fn hint(error: &ClientError, cli: &Cli) -> Option<String> {
    let c = cli.comptoir();
    Some(match error {
        ClientError::NotInitialized { .. } => format!("run `{c} init` first"),
        ClientError::AlreadyInitialized { .. } => "use another --data-dir".into(),
        ClientError::StoreLocked { .. } if daemon::socket_path(&cli.data_dir).exists() => format!(
            "a `comptoir daemon` may hold {}: every command but init, register, link-device \
             and restore goes through it when it answers; stop it for this command",
            config::shell_word(&cli.data_dir)
        ),
        ClientError::StoreLocked { .. } => format!(
            "stop the other comptoir process using {}",
            config::shell_word(&cli.data_dir)
        ),
        ClientError::Connect { .. } => {
            "check --relay (or COMPTOIR_RELAY, or relay in the config file)".into()
        }
        ClientError::NotRegistered => format!("run `{c} register`"),
        ClientError::NotLinked => format!("run `{c} link-device --finish <approval>`"),
        ClientError::NotPrimaryDevice => "run this on the account's first device".into(),
        ClientError::NoSuchAccount(_) => {
            "ask the contact for the id that `comptoir whoami` prints on their device".into()
        }
        ClientError::NotQueued(_) => format!("see what waits with `{c} outbox list`"),
        ClientError::UnknownContact(_)
            if matches!(
                cli.command,
                Command::Contacts(ContactsCommand::Remove { .. } | ContactsCommand::Rename { .. })
            ) =>
        {
            format!("see the names in use with `{c} contacts list`")
        }
        ClientError::UnknownContact(_) => format!(
            "add it with `{c} contacts add NAME ACCOUNT_ID` (`{c} contacts list` shows the \
             names in use)"
        ),
        ClientError::NotFound(_)
            if matches!(
                cli.command,
                Command::Consent(ConsentCommand::Allow { .. } | ConsentCommand::Refuse { .. })
            ) =>
        {
            format!("see the pending requests with `{c} consent requests`")
        }
        ClientError::NotFound(_) if matches!(cli.command, Command::Requests(_)) => {
            format!("see the message requests with `{c} requests list`")
        }
        ClientError::NotFound(_) => {
            "check the spelling, or ask its owner for the account id that `comptoir whoami` \
             prints"
                .into()
        }
        ClientError::DeviceRemoved { device } if *device == FIRST_DEVICE_ID => {
            format!("run `{c} register` to create the account on this relay again")
        }
        ClientError::DeviceRemoved { .. } => {
            "this data directory cannot be used again; to start over, link a new one: \
             `comptoir --data-dir NEW_DIR link-device`, then `comptoir devices add CODE` on \
             your first device"
                .into()
        }
        ClientError::IdentityChanged { account } => format!(
            "compare with `{c} safety-number {account}`, then run \
             `{c} trust NAME --confirm NAME`"
        ),
        _ => return None,
    })
}

/// Run the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COMPTOIR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal: a log file (the daemon's, under a
        // service manager) gets plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            note!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let mut stdout = std::io::stdout();
    let code = runtime.block_on(run_parsed(cli, &mut stdout));
    // A read of standard input still blocked (`daemon --stdio` stopped by
    // a signal) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    ExitCode::from(code)
}

/// Run the command line given as `args` (the first is the program name),
/// writing results to `out` and diagnostics to standard error; returns the
/// exit code. This is what `main` does, callable in-process by tests.
pub async fn run_args<I, T>(args: I, out: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => run_parsed(cli, out).await,
        Err(e) => {
            let _ = e.print();
            u8::try_from(e.exit_code()).unwrap_or(2)
        }
    }
}

/// Refuse plain `ws://` to another machine without `--insecure` as a
/// usage error (exit 2), before anything is stored or queued.
fn check_relay(cli: &Cli) -> std::result::Result<(), clap::Error> {
    let Ok(url) = comptoir_client::tls::RelayUrl::parse(&cli.relay) else {
        // The parser of --relay already refused it.
        return Ok(());
    };
    if url.tls || url.is_loopback() || cli.insecure {
        return Ok(());
    }
    Err(<Cli as clap::CommandFactory>::command().error(
        clap::error::ErrorKind::ValueValidation,
        format!(
            "--relay {}: plain ws:// to another machine can be read and altered on the way; \
             use wss:// (or add --insecure if you really mean it)",
            visible(&cli.relay)
        ),
    ))
}

/// Refuse `send --type` without `--file` as a usage error (exit 2): the
/// type says what a file is, and a text has none.
fn check_send(cli: &Cli) -> std::result::Result<(), clap::Error> {
    match &cli.command {
        Command::Send {
            file: None,
            content_type: Some(_),
            ..
        } => Err(<Cli as clap::CommandFactory>::command().error(
            clap::error::ErrorKind::MissingRequiredArgument,
            "send --type names a file's type: give the file with --file",
        )),
        _ => Ok(()),
    }
}

async fn run_parsed(mut cli: Cli, out: &mut dyn Write) -> u8 {
    let needs_no_settings = matches!(cli.command, Command::Completions { .. } | Command::Man);
    if let Err(problem) = cli.resolve()
        && !needs_no_settings
    {
        let e = <Cli as clap::CommandFactory>::command()
            .error(clap::error::ErrorKind::ValueValidation, problem);
        let _ = e.print();
        return u8::try_from(e.exit_code()).unwrap_or(2);
    }
    if let Err(e) = check_relay(&cli).and_then(|()| check_send(&cli)) {
        let _ = e.print();
        return u8::try_from(e.exit_code()).unwrap_or(2);
    }
    // Boxed: the future of every command together is too big for the
    // stack of a test thread.
    let code = match Box::pin(run(&cli, out)).await {
        Ok(code) => code,
        Err(e) => report(&e, &cli),
    };
    let _ = out.flush();
    code
}

/// Say what went wrong and what to do; the exit code for it.
fn report(error: &ClientError, cli: &Cli) -> u8 {
    // An error can carry a relay's words: printed like any text from the
    // network.
    note!("error: {}", visible(&error.to_string()));
    if let Some(hint) = hint(error, cli) {
        note!("hint: {hint}");
    }
    exit_code(error)
}

/// What a command run by the daemon for another program printed.
#[derive(Debug)]
pub(crate) struct LentRun {
    /// The exit code.
    pub exit_code: u8,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// A question the command left to the program (see
    /// [`account::Question`]).
    pub question: Option<account::Question>,
}

/// Run `cli`'s command on the daemon's `client` for another program, as
/// that program would run it on the store: its standard output and error
/// and exit code are returned; `stdin` is the program's standard input
/// when the command reads it; `can_ask`: whether that program can ask its
/// user (a command that would ask leaves the question to it); `prepared`:
/// the file the command sends, read and encrypted already by the daemon.
pub(crate) async fn run_lent(
    cli: &Cli,
    client: &mut Client,
    relay: &str,
    stdin: Option<Vec<u8>>,
    can_ask: bool,
    prepared: Option<Result<comptoir_client::attachments::EncryptedFile>>,
) -> LentRun {
    let captured = std::cell::RefCell::new(account::Captured {
        err: Vec::new(),
        stdin,
        can_ask,
        question: None,
        prepared,
    });
    account::CAPTURED
        .scope(captured, async {
            let mut stdout = Vec::new();
            let mut source = account::Source::Daemon { client, relay };
            let exit_code = match Box::pin(run_command(cli, &mut source, &mut stdout)).await {
                Ok(code) => code,
                Err(e) => report(&e, cli),
            };
            let (stderr, question) = account::CAPTURED.with(|c| {
                let mut c = c.borrow_mut();
                (std::mem::take(&mut c.err), c.question.take())
            });
            LentRun {
                exit_code,
                stdout,
                stderr,
                question,
            }
        })
        .await
}

fn passphrase(cli: &Cli, confirm: bool) -> Result<Zeroizing<String>> {
    if let Some(path) = &cli.passphrase_file {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            ClientError::io(format!("reading the passphrase file {}", path.display()), e)
        })?);
        let first = text.lines().next().unwrap_or_default();
        return Ok(Zeroizing::new(first.to_string()));
    }
    if let Ok(value) = std::env::var(PASSPHRASE_ENV) {
        return Ok(Zeroizing::new(value));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|e| {
                ClientError::io(
                    format!("reading the passphrase (no terminal? set {PASSPHRASE_ENV})"),
                    e,
                )
            })
    };
    let first = ask("Passphrase: ")?;
    if confirm && *ask("Repeat passphrase: ")? != *first {
        return Err(ClientError::InvalidArgument(
            "the two passphrases differ".into(),
        ));
    }
    Ok(first)
}

/// A CA certificate (PEM) trusted for `wss://` when `--ca-cert` is not given.
pub const RELAY_CA_FILE: &str = "relay-ca.pem";

pub(crate) fn open(cli: &Cli) -> Result<Client> {
    if !Store::exists(&cli.data_dir) {
        return Err(ClientError::NotInitialized {
            dir: cli.data_dir.clone(),
        });
    }
    let mut client = Client::open(&cli.data_dir, &passphrase(cli, false)?)?;
    client.set_tls_options(tls_options(cli)?);
    client.set_keepalive(cli.keepalive);
    Ok(client)
}

/// `--ca-cert` (or `relay-ca.pem` in the data directory) and `--insecure`.
fn tls_options(cli: &Cli) -> Result<comptoir_client::TlsOptions> {
    let mut options = comptoir_client::TlsOptions::default().allow_insecure(cli.insecure);
    let in_data_dir = cli.data_dir.join(RELAY_CA_FILE);
    if let Some(path) = &cli.ca_cert {
        options = options.with_ca_file(path)?;
    } else if in_data_dir.is_file() {
        options = options.with_ca_file(&in_data_dir)?;
    }
    Ok(options)
}

/// A contact's name (shown with [`visible`]), or the account id.
pub(crate) fn display_name(client: &Client, account: &AccountId) -> String {
    match client.contact_name(account) {
        Ok(Some(name)) => visible(&name),
        _ => account.to_string(),
    }
}

async fn run(cli: &Cli, out: &mut dyn Write) -> Result<u8> {
    // A running daemon holds the store: the commands it serves go through it.
    if let Some(code) = Box::pin(daemon::forward::run_if_running(cli, out)).await? {
        return Ok(code);
    }
    run_command(cli, &mut account::Source::Store, out).await
}

/// Run the command on the account from `source`: the store, or the
/// running daemon's account (for a command sent to it).
async fn run_command(
    cli: &Cli,
    source: &mut account::Source<'_>,
    out: &mut dyn Write,
) -> Result<u8> {
    let json = cli.output_format() == OutputFormat::Json;
    // `comptoir` with the --data-dir in use, for what to type next.
    let c = cli.comptoir();
    match &cli.command {
        Command::Daemon { stdio } => daemon::run(cli, *stdio, out).await,
        Command::Init => {
            if Store::exists(&cli.data_dir) {
                return Err(ClientError::AlreadyInitialized {
                    dir: cli.data_dir.clone(),
                });
            }
            let client = Client::create(&cli.data_dir, &passphrase(cli, true)?)?;
            say!(out, "{}", client.account_id());
            note!(
                "Created account {} in {}. Next: {c} register",
                client.account_id(),
                cli.data_dir.display()
            );
            Ok(0)
        }
        Command::Register { business } => {
            let mut client = source.open(cli)?;
            let already = client.is_registered();
            let kind = if *business {
                AccountKind::Business
            } else {
                AccountKind::Customer
            };
            if let account::Account::Lent { .. } = client {
                // A running daemon's account is registered, and registering
                // again would replace the daemon's connection: answer as the
                // relay answers the same registration again.
                registered_again(&client, kind)?;
            } else {
                client.register_as(&cli.relay, kind).await?;
            }
            say!(out, "{}", client.account_id());
            if already {
                note!(
                    "{} is already registered on {}; nothing to do",
                    client.account_id(),
                    cli.relay
                );
            } else {
                note!(
                    "Registered on {}. Others can now write to {}",
                    cli.relay,
                    client.account_id()
                );
            }
            client.close().await?;
            Ok(0)
        }
        Command::LinkDevice { finish: None } => {
            let client = if Store::exists(&cli.data_dir) {
                open(cli)?
            } else {
                Client::create_unlinked(&cli.data_dir, &passphrase(cli, true)?, KdfParams::DEFAULT)?
            };
            say!(out, "{}", client.link_code()?);
            note!(
                "On your first device run: comptoir devices add <the code above>\nThen here: {c} link-device --finish <the approval it prints>"
            );
            Ok(0)
        }
        Command::LinkDevice {
            finish: Some(approval),
        } => {
            let mut client = source.open(cli)?;
            client.finish_link(&cli.relay, approval).await?;
            say!(out, "{}", client.account_id());
            note!(
                "Linked as device {} of account {}",
                client.device_id(),
                client.account_id()
            );
            client.close().await?;
            Ok(0)
        }
        Command::Devices(command) => {
            let mut client = source.open(cli)?;
            client.connect(&cli.relay).await?;
            match command {
                DevicesCommand::List => {
                    let list = client.own_devices()?;
                    let notes = client.device_notes()?;
                    for (id, key) in &list.devices {
                        let note = notes.get(id).cloned().unwrap_or_default();
                        if json {
                            json::write(
                                out,
                                &Record::Device {
                                    device_id: *id,
                                    this_device: *id == client.device_id(),
                                    first_device: *id == FIRST_DEVICE_ID,
                                    name: note.name,
                                    added_ms: note.added_at_ms,
                                    added: note.added_at_ms.map(format::rfc3339),
                                    identity_key: hex::encode(key.as_bytes()),
                                },
                            )?;
                            continue;
                        }
                        let mut roles = Vec::new();
                        if *id == FIRST_DEVICE_ID {
                            roles.push("first device");
                        }
                        if *id == client.device_id() {
                            roles.push("this device");
                        }
                        let key = hex::encode(&key.as_bytes()[..8]);
                        let name = note.name.as_deref().map_or("-".into(), visible);
                        let added = note
                            .added_at_ms
                            .map_or("added -".into(), |t| format!("added {}", date_time(t)));
                        say!(
                            out,
                            "{id}\t{name}\t{added}\tkey {key}…\t{}",
                            roles.join(", ")
                        );
                    }
                }
                DevicesCommand::Add { link_code, name } => {
                    let approval = client.add_device_named(link_code, name.as_deref()).await?;
                    say!(out, "{approval}");
                    note!(
                        "On the new device run: comptoir link-device --finish <the approval above>\n\
                         (if it is an agent daemon: agent --config <its file> init --approval <the approval above>)"
                    );
                }
                DevicesCommand::Name { device_id, name } => {
                    client.name_device(*device_id, name)?;
                    note!("device {device_id} is now called {}", visible(name));
                }
                DevicesCommand::Remove { device_id } => {
                    client.remove_device(*device_id).await?;
                    note!("device {device_id} removed; it no longer receives messages");
                }
            }
            client.close().await?;
            Ok(0)
        }
        Command::Whoami => {
            let client = source.open(cli)?;
            say!(out, "{}", client.account_id());
            Ok(0)
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
        } => send_file(cli, source, out, json, to, path, content_type.as_deref()).await,
        Command::Send {
            to,
            text,
            file: None,
            ..
        } => {
            // Without --file clap requires the text; `-` reads it from
            // standard input.
            let text = match text.as_deref() {
                Some("-") | None => read_stdin_text()?,
                Some(text) => text.to_owned(),
            };
            let text = text.as_str();
            // Refused before the store is opened: nothing is written.
            check_text(text)?;
            let mut client = source.open(cli)?;
            let peer = client.resolve(to)?;
            let connected = client.connect(&cli.relay).await;
            // Once stored, the message has an id even if its send fails: a
            // connection lost on the way leaves it in the outbox, queued
            // as when the relay is down from the start.
            let (sent, queued_by) = match client.send_text_naming(peer, text).await {
                Ok((id, Ok(()))) => (Ok(id), None),
                Ok((id, Err(e))) if daemon::is_unreachable(&e) => (Ok(id), Some(e)),
                Ok((_, Err(e))) | Err(e) => (Err(e), None),
            };
            let connected = match (connected, queued_by) {
                (Ok(_), Some(e)) => Err(e),
                (connected, _) => connected,
            };
            if json && let Ok(id) = &sent {
                let stored = client.message(&peer, id)?;
                let (at, status) = stored
                    .map_or((comptoir_client::client::now_ms(), "pending"), |m| {
                        (m.sent_at_ms, json::status_name(true, m.status))
                    });
                json::write(
                    out,
                    &Record::Sent {
                        id: id.to_string(),
                        peer: peer.to_string(),
                        peer_name: json::name(&client, &peer),
                        time: json::Time::at(at),
                        status,
                    },
                )?;
            }
            let result = match (connected, sent) {
                (Ok(_), Ok(id)) => {
                    if !json {
                        say!(out, "{id}");
                    }
                    Ok(0)
                }
                (Err(e), Ok(id)) => {
                    note!("{}", queued_note(&id, &c));
                    Err(e)
                }
                (_, Err(e)) => Err(e),
            };
            client.close().await?;
            result
        }
        Command::Save {
            from,
            message_id,
            path,
        } => {
            if path.exists() {
                return Err(ClientError::InvalidArgument(format!(
                    "{} exists already; choose a new path",
                    path.display()
                )));
            }
            let mut client = source.open(cli)?;
            let peer = client.resolve(from)?;
            let id = MessageId::from_hex(message_id).ok_or_else(|| {
                ClientError::InvalidArgument("a message id is 32 hex digits".into())
            })?;
            let result = match client.connect(&cli.relay).await {
                Ok(_) => client.download_attachment(peer, id, path).await,
                Err(e) => Err(e),
            };
            client.close().await?;
            result?;
            if !json {
                say!(out, "saved {}", path.display());
            }
            Ok(0)
        }
        Command::Listen { count, timeout } => {
            let mut client = source.open(cli)?;
            listen(
                out,
                &mut client,
                &cli.relay,
                *count,
                timeout.map(Duration::from_secs),
                cli.output_format(),
                &c,
            )
            .await
        }
        Command::Chat { with } => {
            let mut client = source.open(cli)?;
            let peer = client.resolve(with)?;
            chat::run(out, &mut client, &cli.relay, peer, &c).await
        }
        Command::Restore { backup } => {
            let client =
                Client::restore_from_backup(backup, &cli.data_dir, &passphrase(cli, false)?)?;
            say!(out, "{}", client.account_id());
            note!(
                "Restored {} from {}. Peers whose newer messages this copy cannot read are asked to send them again.",
                cli.data_dir.display(),
                backup.display()
            );
            Ok(0)
        }
        Command::Tui { open: link } => {
            let mut client = source.open(cli)?;
            crate::tui::run(&mut client, &cli.relay, link.as_ref()).await?;
            client.close().await?;
            Ok(0)
        }
        Command::History { with } => {
            let client = source.open(cli)?;
            let peer = client.resolve(with)?;
            // A business verified when last checked: its ✓ and certified
            // name (history works offline, from that check).
            let name = business::known_label(&client, &peer)?.text();
            for m in client.history(&peer)? {
                if json {
                    json::write(out, &Record::stored(&client, &m))?;
                    continue;
                }
                let who = if m.outgoing { "me" } else { name.as_str() };
                if !m.outgoing
                    && let Some(template) = client.template_of_message(&peer, &m.id)?
                {
                    say!(
                        out,
                        "{} {who} (template {}):",
                        date_time(m.sent_at_ms),
                        m.id
                    );
                    for line in stored_template_lines(&m.body, &template.buttons) {
                        say!(out, "  {line}");
                    }
                    continue;
                }
                if let Some(message) = client.interactive_of_message(&peer, &m.id)? {
                    say!(
                        out,
                        "{} {who} (interactive {}):",
                        date_time(m.sent_at_ms),
                        m.id
                    );
                    for line in interactive::interactive_lines(&message) {
                        say!(out, "  {line}");
                    }
                    continue;
                }
                let status = if m.outgoing {
                    format!(" [{}]", m.status.label())
                } else {
                    String::new()
                };
                say!(
                    out,
                    "{} {who}: {}{status}",
                    date_time(m.sent_at_ms),
                    visible(&m.body)
                );
            }
            Ok(0)
        }
        Command::Contacts(ContactsCommand::Add {
            name,
            account,
            force,
        }) => {
            contacts::check_name(name)?;
            let mut client = source.open(cli)?;
            client.connect(&cli.relay).await?;
            let found = find_account(&mut client, account, cli.region.as_deref()).await;
            client.close_connection().await;
            let id = found?;
            let added = if *force {
                client.replace_contact(name, id)
            } else {
                client.add_contact(name, id)
            };
            let added = match added {
                Err(ClientError::ContactExists { name, account }) => {
                    let verified = if client.is_verified(&account)? {
                        " It is verified: re-pointing it loses that mark."
                    } else {
                        ""
                    };
                    note!(
                        "{} names {account}, not {id}.{verified} To re-point it: {c} \
                         contacts add {} {id} --force; or first rename the contact: \
                         {c} contacts rename {} NEW_NAME",
                        visible(&name),
                        visible(&name),
                        visible(&name)
                    );
                    return Err(ClientError::ContactExists { name, account });
                }
                other => other?,
            };
            if let contacts::Added::Replaced { previous } = added {
                let lost = if client.is_verified(&previous)? {
                    " and is not verified (the verified mark was the previous account's): \
                     compare safety numbers again"
                } else {
                    ""
                };
                note!(
                    "{} now names {id} instead of {previous}{lost}",
                    visible(name)
                );
            }
            say!(out, "{id}");
            Ok(0)
        }
        Command::Contacts(ContactsCommand::Remove { name }) => {
            let client = source.open(cli)?;
            let account = client.remove_contact(name)?;
            note!(
                "{} no longer names {account}; the conversation stays",
                visible(name)
            );
            Ok(0)
        }
        Command::Contacts(ContactsCommand::Rename { old, new }) => {
            contacts::check_name(new)?;
            let client = source.open(cli)?;
            let account = client.rename_contact(old, new)?;
            note!("{} is now {} ({account})", visible(old), visible(new));
            Ok(0)
        }
        Command::Outbox(OutboxCommand::List) => {
            let client = source.open(cli)?;
            for m in client.queued()? {
                say!(
                    out,
                    "{}\t{}\t{}\t{}",
                    m.id,
                    display_name(&client, &m.peer),
                    date_time(m.sent_at_ms),
                    visible(&m.body)
                );
            }
            Ok(0)
        }
        Command::Outbox(OutboxCommand::Cancel { id }) => {
            let client = source.open(cli)?;
            let parsed = MessageId::from_hex(id).ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "{} is not a message id (32 hex digits, as `outbox list` prints)",
                    visible(id)
                ))
            })?;
            let message = client.cancel_queued(&parsed)?;
            note!(
                "message {} to {} cancelled: it will not be sent",
                message.id,
                display_name(&client, &message.peer)
            );
            Ok(0)
        }
        Command::Name(NameCommand::Claim { name }) => {
            let mut client = source.open(cli)?;
            client.connect(&cli.relay).await?;
            client.claim_name(name).await?;
            client.close().await?;
            let name = name.to_ascii_lowercase();
            say!(out, "{name}");
            note!("Customers can now find you with: comptoir contacts add <name> {name}");
            Ok(0)
        }
        Command::Phone(PhoneCommand::Request { number }) => {
            let number = phone_number::normalise(number, cli.region.as_deref())?;
            let mut client = source.open(cli)?;
            client.connect(&cli.relay).await?;
            client.request_phone_code(&number).await?;
            client.close().await?;
            note!(
                "A code is on its way to {number}. Next: {c} phone verify {number} <code>\n\
                 (A development relay sends no text message: it writes the code to its log, \
                 on its standard error, in a line with \"verification code\".)"
            );
            Ok(0)
        }
        Command::Phone(PhoneCommand::Verify {
            number,
            code,
            discoverable,
        }) => {
            let number = phone_number::normalise(number, cli.region.as_deref())?;
            let mut client = source.open(cli)?;
            client.connect(&cli.relay).await?;
            client.verify_phone(&number, code, *discoverable).await?;
            client.close().await?;
            if *discoverable {
                note!("{number} is verified; people who know it can find you");
            } else {
                note!(
                    "{number} is verified and not discoverable (add --discoverable to let \
                     people who know it find you)"
                );
            }
            Ok(0)
        }
        Command::Contacts(ContactsCommand::List) => {
            let client = source.open(cli)?;
            for contact in client.contacts()? {
                let verified = client.is_verified(&contact.account)?;
                let blocked = client.is_blocked(&contact.account)?;
                if json {
                    json::write(
                        out,
                        &Record::Contact {
                            name: contact.name,
                            account: contact.account.to_string(),
                            verified,
                            blocked,
                        },
                    )?;
                    continue;
                }
                let mut flags = String::new();
                if verified {
                    flags.push_str("\tverified");
                }
                if blocked {
                    flags.push_str("\tblocked");
                }
                say!(out, "{}\t{}{flags}", contact.name, contact.account);
            }
            Ok(0)
        }
        Command::SafetyNumber { with, verify } => {
            let mut client = source.open(cli)?;
            let peer = client.resolve(with)?;
            if matches!(
                client.safety_number(&peer),
                Err(ClientError::UnknownPeer(_))
            ) {
                client.connect(&cli.relay).await?;
                client.refresh_peer(peer).await?;
                client.close_connection().await;
            }
            if let Some(theirs) = verify {
                if client.verify_safety_number(&peer, theirs)? {
                    note!(
                        "safety numbers match: {} is verified",
                        display_name(&client, &peer)
                    );
                    return Ok(0);
                }
                note!(
                    "safety numbers DIFFER: do not trust this conversation with {} until you find out why",
                    display_name(&client, &peer)
                );
                return Ok(EXIT_MISMATCH);
            }
            let number = client.safety_number(&peer)?;
            say!(out, "{}", number.display());
            if client.is_verified(&peer)? {
                note!("(verified)");
            }
            if client.identity_changed(&peer)? {
                note!(
                    "warning: {} has a NEW identity not yet trusted; this number is for the old one",
                    display_name(&client, &peer)
                );
                return Ok(7);
            }
            Ok(0)
        }
        Command::Trust { with, confirm } => {
            let client = source.open(cli)?;
            let peer = client.resolve(with)?;
            let name = display_name(&client, &peer);
            let Some((old, new)) = client.pending_safety_numbers(&peer)? else {
                note!("nothing to accept: the identity of {name} did not change");
                return Ok(0);
            };
            say!(out, "old safety number with {name}: {}", old.display());
            say!(out, "new safety number with {name}: {}", new.display());
            if confirm.as_deref() != Some(name.as_str()) {
                note!(
                    "The identity of {name} changed. An honest relay never changes it: compare \
                     the new safety number with {name} in person or by a call, then run: \
                     {c} trust {with} --confirm {name}"
                );
                return Ok(7);
            }
            client.accept_identity_change(&peer)?;
            note!("{name} is trusted with its new identity");
            Ok(0)
        }
        Command::Completions { shell } => {
            generate::completions(*shell, out).map_err(|e| {
                ClientError::io("writing the completion script to standard output", e)
            })?;
            Ok(0)
        }
        Command::Man => {
            generate::man_page(out)
                .map_err(|e| ClientError::io("writing the manual page to standard output", e))?;
            Ok(0)
        }
        Command::Consent(ConsentCommand::Grant {
            business,
            categories,
            days,
        }) => {
            let mut client = source.open(cli)?;
            let peer = client.resolve(business)?;
            client.connect(&cli.relay).await?;
            let set = category_set(categories);
            let lifetime = Duration::from_secs(u64::from(*days) * 24 * 60 * 60);
            let granted = client.grant_consent(peer, set, lifetime).await?;
            let name = display_name(&client, &peer);
            client.close().await?;
            note!(
                "{name} may send you {} until {} (revoke with: {c} consent revoke {})",
                granted.categories.names().join(", "),
                date_time(granted.expires_at_ms),
                visible(business)
            );
            Ok(0)
        }
        Command::Consent(ConsentCommand::Revoke { business }) => {
            let mut client = source.open(cli)?;
            let peer = client.resolve(business)?;
            client.connect(&cli.relay).await?;
            client.revoke_consent(peer).await?;
            note!(
                "{} may no longer send you templates outside the 24-hour window",
                display_name(&client, &peer)
            );
            client.close().await?;
            Ok(0)
        }
        Command::Consent(ConsentCommand::List) => {
            let mut client = source.open(cli)?;
            client.connect(&cli.relay).await?;
            let consents = client.consents().await?;
            let now = comptoir_client::client::now_ms();
            for c in &consents {
                // A verified business by its certified name, with ✓.
                let name = business_label(&mut client, c.business).await?.text();
                let covers = c.covers_at(now);
                if c.revoked_by_block {
                    say!(out, "{name}: revoked (blocked)");
                } else if c.categories.is_empty() {
                    say!(out, "{name}: revoked");
                } else if covers.is_empty() {
                    say!(out, "{name}: expired {}", date_time(c.expires_at_ms));
                } else {
                    say!(
                        out,
                        "{name}: {} until {}",
                        covers.names().join(", "),
                        date_time(c.expires_at_ms)
                    );
                }
            }
            if consents.is_empty() {
                note!("no business may send you templates outside the 24-hour window");
            }
            client.close().await?;
            Ok(0)
        }
        Command::Consent(ConsentCommand::Requests) => {
            let mut client = source.open(cli)?;
            client.connect(&cli.relay).await?;
            let requests = client.consent_requests().await?;
            for request in &requests {
                let shown = business_label(&mut client, request.business).await?;
                if json {
                    json::write(out, &json::consent_request(request, &shown))?;
                    continue;
                }
                say!(
                    out,
                    "{}\t{}\t{}\t{}",
                    hex::encode(request.id),
                    shown.text(),
                    request.categories.names().join(","),
                    purpose_text(request.purpose)
                );
            }
            if requests.is_empty() {
                note!("no business is asking for your consent");
            } else if !json {
                note!("allow with `{c} consent allow ID`, or refuse with `{c} consent refuse ID`");
            }
            client.close().await?;
            Ok(0)
        }
        Command::Consent(ConsentCommand::Allow { id, .. } | ConsentCommand::Refuse { id }) => {
            let wanted = parse_request_id(id)?;
            let mut client = source.open(cli)?;
            client.connect(&cli.relay).await?;
            let requests = client.consent_requests().await?;
            let request = requests
                .into_iter()
                .find(|r| r.id == wanted)
                .ok_or_else(|| ClientError::NotFound(format!("consent request {}", visible(id))))?;
            let shown = business_label(&mut client, request.business).await?;
            let (allow, days) = match &cli.command {
                Command::Consent(ConsentCommand::Allow { days, .. }) => (true, *days),
                _ => (false, 0),
            };
            let lifetime = Duration::from_secs(u64::from(days) * 24 * 60 * 60);
            client
                .answer_consent_request(&request, allow, lifetime)
                .await?;
            client.close().await?;
            if allow {
                note!(
                    "{} may send you {} ({}) for {days} days; it now knows your account \
                     (stop it with `{c} consent revoke {}`)",
                    shown.text(),
                    request.categories.names().join(", "),
                    purpose_text(request.purpose),
                    request.business
                );
            } else {
                note!(
                    "refused: {} is not told who you are and cannot ask again for 30 days",
                    shown.text()
                );
            }
            Ok(0)
        }
        Command::Requests(RequestsCommand::List) => {
            let client = source.open(cli)?;
            let requests = client.message_requests()?;
            for (account, first_ms) in &requests {
                if json {
                    json::write(
                        out,
                        &Record::MessageRequest {
                            peer: account.to_string(),
                            peer_name: json::name(&client, account),
                            time: json::Time::at(*first_ms),
                        },
                    )?;
                    continue;
                }
                say!(
                    out,
                    "{account}\t{}\t{}",
                    client
                        .contact_name(account)?
                        .map_or("-".to_string(), |n| visible(&n)),
                    date_time(*first_ms)
                );
            }
            if requests.is_empty() {
                note!("no message requests");
            } else if !json {
                note!(
                    "read one with `{c} history ACCOUNT`; accept with `{c} requests accept \
                     ACCOUNT`, delete with `{c} requests delete ACCOUNT`, or `{c} block ACCOUNT`"
                );
            }
            Ok(0)
        }
        Command::Requests(RequestsCommand::Accept { who } | RequestsCommand::Delete { who }) => {
            let mut client = source.open(cli)?;
            let peer = client.resolve(who)?;
            if !client.message_requests()?.iter().any(|(a, _)| *a == peer) {
                return Err(ClientError::NotFound(format!(
                    "a message request from {}",
                    display_name(&client, &peer)
                )));
            }
            let name = display_name(&client, &peer);
            if matches!(
                cli.command,
                Command::Requests(RequestsCommand::Accept { .. })
            ) {
                client.accept_request(peer).await?;
                note!("accepted: {name} is now an ordinary conversation (`{c} chat {name}`)");
            } else {
                client.delete_request(peer).await?;
                note!("deleted the request from {name} and what it sent");
            }
            client.close().await?;
            Ok(0)
        }
        Command::Reply {
            business,
            message_id,
            choice,
        } => {
            let parsed = MessageId::from_hex(message_id).ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "{} is not a message id (32 hex digits, as `listen` prints it)",
                    visible(message_id)
                ))
            })?;
            let mut client = source.open(cli)?;
            let peer = client.resolve(business)?;
            client.connect(&cli.relay).await?;
            // An interactive message's button or row; otherwise a template
            // message's quick-reply button.
            let sent = match client.interactive_of_message(&peer, &parsed)? {
                Some(message) => {
                    let choice = interactive::parse_choice(&message, choice)?;
                    client.choose(peer, parsed, choice).await
                }
                None => {
                    let button = interactive::button_number(choice)?;
                    client.reply_button(peer, parsed, button).await
                }
            };
            client.close().await?;
            say!(out, "{}", sent?);
            Ok(0)
        }
        Command::Report { message_id, reason } => {
            let parsed = MessageId::from_hex(message_id).ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "{} is not a message id (32 hex digits, as `history` prints it)",
                    visible(message_id)
                ))
            })?;
            let mut client = source.open(cli)?;
            client.connect(&cli.relay).await?;
            let filed = client.report(parsed, reason).await;
            client.close().await?;
            let report_id = filed?;
            note!("reported to the operator (report {report_id})");
            Ok(0)
        }
        Command::Open { link, yes } => {
            Box::pin(open_link::run_open(cli, source, link, *yes, out)).await
        }
        Command::Business(command) => Box::pin(business::run(cli, source, command, out)).await,
        Command::Status(command) => Box::pin(status::run(cli, source, command, out)).await,
        Command::OperatorKey { pin } => {
            let client = source.open(cli)?;
            match pin {
                None => match client.operator_key()? {
                    Some(key) => say!(out, "{key}"),
                    None => note!(
                        "no operator key pinned yet: it is pinned at the first connection to \
                         the relay (or give it with `{c} operator-key --pin HEX`)"
                    ),
                },
                Some(hex_key) => {
                    let key = hex::decode(hex_key.trim())
                        .ok()
                        .and_then(|bytes| comptoir_protocol::OperatorKey::from_bytes(&bytes).ok())
                        .ok_or_else(|| {
                            ClientError::InvalidArgument(format!(
                                "{} is not an operator key (64 hex digits, as `relay admin` \
                                 prints it); nothing changed",
                                visible(hex_key)
                            ))
                        })?;
                    let previous = client.operator_key()?;
                    client.pin_operator_key(&key).await?;
                    say!(out, "{key}");
                    match previous {
                        Some(old) if old != key => note!(
                            "the operator key {key} is now trusted instead of {old}: verified \
                             marks and template approvals are checked with it"
                        ),
                        _ => note!("the operator key {key} is trusted"),
                    }
                }
            }
            Ok(0)
        }
        Command::Block { who, .. } | Command::Unblock { who } => {
            let mut client = source.open(cli)?;
            let peer = client.resolve(who)?;
            client.connect(&cli.relay).await?;
            if let Command::Block { reason, .. } = &cli.command {
                use comptoir_protocol::proto::wire::BlockReason;
                let reason = match reason {
                    None => BlockReason::Unspecified,
                    Some(args::BlockReasonArg::NoLongerNeeded) => BlockReason::NoLongerNeeded,
                    Some(args::BlockReasonArg::DidNotSignUp) => BlockReason::DidNotSignUp,
                    Some(args::BlockReasonArg::Spam) => BlockReason::Spam,
                    Some(args::BlockReasonArg::Offensive) => BlockReason::Offensive,
                };
                client.block_for(peer, reason).await?;
                note!(
                    "{} is blocked: the relay refuses its messages to you",
                    display_name(&client, &peer)
                );
            } else {
                client.unblock(peer).await?;
                note!("{} is unblocked", display_name(&client, &peer));
            }
            client.close().await?;
            Ok(0)
        }
    }
}

/// The consent categories named on the command line, as one set.
pub(crate) fn category_set(categories: &[ConsentCategory]) -> ConsentCategories {
    categories
        .iter()
        .map(|c| match c {
            ConsentCategory::Utility => ConsentCategories::UTILITY,
            ConsentCategory::Authentication => ConsentCategories::AUTHENTICATION,
            ConsentCategory::Marketing => ConsentCategories::MARKETING,
            ConsentCategory::Status => ConsentCategories::STATUS,
        })
        .fold(ConsentCategories::NONE, ConsentCategories::union)
}

/// A consent request id as typed (32 hex digits).
fn parse_request_id(id: &str) -> Result<[u8; 16]> {
    hex::decode(id.trim())
        .ok()
        .and_then(|bytes| <[u8; 16]>::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "{} is not a consent request id (32 hex digits, as `consent requests` prints \
                 it); nothing changed",
                visible(id)
            ))
        })
}

/// The account behind what the user typed for `contacts add` (an id, a
/// phone number or a business name), checked with the relay.
pub(crate) async fn find_account(
    client: &mut Client,
    handle: &str,
    region: Option<&str>,
) -> Result<AccountId> {
    let id = match AccountId::from_hex(handle) {
        Ok(id) => id,
        Err(_) if phone_number::looks_like_phone_number(handle) => {
            let number = phone_number::normalise(handle, region)?;
            client.lookup(&number).await.map_err(|e| match e {
                // Name the number as typed.
                ClientError::NotFound(_) => ClientError::NotFound(handle.to_string()),
                e => e,
            })?
        }
        Err(_) => client.lookup(handle).await?,
    };
    client.check_account(id).await?;
    Ok(id)
}

/// The text of `send -`: all of standard input, less one final newline.
pub(crate) fn read_stdin_text() -> Result<String> {
    let bytes = match account::stdin() {
        // The text the program that asked the daemon already read.
        Some(bytes) => {
            return String::from_utf8(bytes).map_err(|_| {
                ClientError::InvalidArgument("the text is not UTF-8; nothing was sent".into())
            });
        }
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .map_err(|e| ClientError::io("reading the text from standard input", e))?;
            bytes
        }
    };
    let mut text = String::from_utf8(bytes).map_err(|_| {
        ClientError::InvalidArgument("standard input is not UTF-8 text; nothing was sent".into())
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// `register` through a running daemon: nothing to do when the account is
/// registered with the kind asked for (as the relay answers the same
/// registration again); the relay's refusal when it is of the other kind.
fn registered_again(client: &Client, kind: AccountKind) -> Result<()> {
    if !client.is_registered() {
        return Err(ClientError::InvalidArgument(
            "a comptoir daemon is running on this data directory but its account is not \
             registered: stop the daemon first, then run `register` again"
                .into(),
        ));
    }
    // Known from the registration or a login (kept in the store); not
    // known in a store from before the kind was kept until its next
    // login: then the relay's answer is the daemon's next login.
    let registered = client.kind();
    if registered != AccountKind::Unspecified && registered != kind {
        return Err(ClientError::Relay {
            code: comptoir_protocol::proto::wire::ErrorCode::AccountKind,
            message: format!(
                "this account is registered as a {}; an account's kind never changes",
                if registered == AccountKind::Business {
                    "business"
                } else {
                    "customer"
                }
            ),
        });
    }
    Ok(())
}

/// Set when Ctrl-C is pressed; waiting loops check it every [`POLL`].
pub(crate) fn interrupted_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            set.store(true, Ordering::SeqCst);
        }
    });
    flag
}

/// Connect, retrying with backoff until connected or interrupted.
async fn reconnect(client: &mut Client, relay: &str, stop: &AtomicBool) -> Result<bool> {
    let mut delay = Duration::from_millis(250);
    loop {
        match client.connect(relay).await {
            Ok(_) => {
                note!("reconnected");
                return Ok(true);
            }
            Err(
                e @ (ClientError::Connect { .. }
                | ClientError::ConnectionClosed(_)
                | ClientError::Timeout(_)),
            ) => {
                note!(
                    "relay unreachable ({e}); retrying in {} ms",
                    delay.as_millis()
                );
                let until = tokio::time::Instant::now() + delay;
                while tokio::time::Instant::now() < until {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(false);
                    }
                    tokio::time::sleep(POLL).await;
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The start of message `id` to `peer`, quoted and made visible, for the
/// line that says what happened to it; its id when it is not stored here.
pub(crate) fn excerpt_of(
    client: &Client,
    peer: &AccountId,
    id: &comptoir_client::MessageId,
) -> String {
    match client.message(peer, id) {
        Ok(Some(message)) => format::quoted_excerpt(&message.body),
        _ => format!("message {id}"),
    }
}

/// Wait for the next event, reconnecting when the connection drops.
/// `Ok(None)` after [`POLL`] without an event.
async fn poll_event(client: &mut Client, relay: &str, stop: &AtomicBool) -> Result<Option<Event>> {
    match client.next_event(POLL).await {
        Ok(event) => Ok(event),
        Err(e @ (ClientError::ConnectionClosed(_) | ClientError::NotConnected)) => {
            note!("connection lost ({e}); reconnecting");
            reconnect(client, relay, stop).await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Print `event` for people; `c` is `comptoir` with the --data-dir in use.
/// Whether it was an incoming message (what `listen --count` counts).
pub(crate) async fn print_event(
    client: &mut Client,
    event: &Event,
    out: &mut dyn Write,
    notes: &mut dyn Write,
    c: &str,
) -> Result<bool> {
    match event {
        Event::Message {
            from,
            text,
            sent_at_ms,
            request,
            ..
        } => {
            let marker = if *request { " [request]" } else { "" };
            say!(
                out,
                "[{}] {}{marker}: {}",
                time_of_day(*sent_at_ms),
                display_name(client, from),
                visible(text)
            );
            if *request {
                note_to!(
                    notes,
                    "  (a message request: not marked read; `{c} requests accept {from}` to \
                     answer, `{c} requests delete {from}` or `{c} block {from}` otherwise)"
                );
            }
            Ok(true)
        }
        Event::Attachment {
            from,
            id,
            file_name,
            content_type,
            size,
            sent_at_ms,
            request,
        } => {
            let marker = if *request { " [request]" } else { "" };
            say!(
                out,
                "[{}] {}{marker}: [file {} ({}, {size} bytes)]",
                time_of_day(*sent_at_ms),
                display_name(client, from),
                visible(file_name),
                visible(content_type)
            );
            note_to!(notes, "  (save it with `{c} save {from} {id} PATH`)");
            Ok(true)
        }
        Event::Template {
            from,
            id,
            rendered,
            sent_at_ms,
            ..
        } => {
            let shown = business_label(client, *from).await?;
            say!(
                out,
                "[{}] {} (template {id}):",
                time_of_day(*sent_at_ms),
                shown.text()
            );
            for line in rendered_lines(rendered) {
                say!(out, "  {line}");
            }
            if rendered
                .buttons
                .iter()
                .any(|b| matches!(b, Button::QuickReply { .. }))
            {
                say!(
                    out,
                    "  answer with `{c} reply {} {id} NUMBER`",
                    contact_or_id(client, from)
                );
            }
            Ok(true)
        }
        Event::Interactive {
            from,
            id,
            message,
            sent_at_ms,
        } => {
            let shown = business_label(client, *from).await?;
            say!(
                out,
                "[{}] {} (interactive {id}):",
                time_of_day(*sent_at_ms),
                shown.text()
            );
            for line in interactive::interactive_lines(message) {
                say!(out, "  {line}");
            }
            say!(
                out,
                "  answer with `{c} reply {} {id} {}`",
                contact_or_id(client, from),
                interactive::answer_hint(message)
            );
            Ok(true)
        }
        Event::InteractiveReply {
            from,
            reply_to,
            choice,
            title,
            ..
        } => {
            let which = match choice {
                Choice::Button(index) => format!("button {}", index + 1),
                Choice::Row(id) => format!("row {}", visible(id)),
            };
            say!(
                out,
                "[{}] {} chose {which} \"{}\" of {reply_to}",
                time_of_day(comptoir_client::client::now_ms()),
                display_name(client, from),
                visible(title)
            );
            Ok(true)
        }
        Event::QuickReply {
            from,
            reply_to,
            button_index,
            text,
            ..
        } => {
            say!(
                out,
                "[{}] {} chose button {} \"{}\" of {reply_to}",
                time_of_day(comptoir_client::client::now_ms()),
                display_name(client, from),
                button_index + 1,
                visible(text)
            );
            Ok(true)
        }
        Event::ConsentRequested(request) => {
            let shown = business_label(client, request.business).await?;
            say!(
                out,
                "{} asks to send you: {} — allow with `{c} consent allow {}` (or refuse \
                 with `{c} consent refuse {}`)",
                shown.text(),
                purpose_text(request.purpose),
                hex::encode(request.id),
                hex::encode(request.id)
            );
            Ok(false)
        }
        Event::SentElsewhere {
            to,
            text,
            sent_at_ms,
            ..
        } => {
            say!(
                out,
                "[{}] me (other device) → {}: {}",
                time_of_day(*sent_at_ms),
                display_name(client, to),
                visible(text)
            );
            Ok(false)
        }
        Event::IdentityChanged { account } => {
            note_to!(
                notes,
                "warning: the identity of {} CHANGED. Compare safety numbers (`{c} safety-number`), then run `{c} trust`. Its messages are held until then.",
                display_name(client, account)
            );
            Ok(false)
        }
        Event::Undecryptable { from, id, reason } => {
            note_to!(
                notes,
                "warning: message {id} from {} could not be decrypted: {}",
                display_name(client, from),
                visible(&reason.to_string())
            );
            Ok(false)
        }
        Event::Refused { from, id, reason } => {
            note_to!(
                notes,
                "warning: message {id} from {} refused and kept as evidence: {}",
                display_name(client, from),
                visible(&reason.to_string())
            );
            Ok(false)
        }
        Event::Warning(text) => {
            note_to!(notes, "warning: {}", visible(text));
            Ok(false)
        }
        Event::ContactsShared { count } => {
            note_to!(
                notes,
                "sent this device's {count} contact(s) to a newly linked device of this account                  (end-to-end encrypted)"
            );
            Ok(false)
        }
        Event::ContactsSynced { added, kept } => {
            note_to!(
                notes,
                "contacts from another device of this account: {added} added{}",
                if *kept > 0 {
                    format!(
                        ", {kept} kept as they were here (the name already names another account)"
                    )
                } else {
                    String::new()
                }
            );
            Ok(false)
        }
        Event::OperatorKeyChanged { pinned, offered } => {
            note_to!(
                notes,
                "WARNING: this relay presents another operator key than the one pinned \
                 ({} pinned, {} presented). Verified marks and template approvals are still \
                 checked with the pinned key. Ask the operator whether the key was rotated \
                 before trusting the new one.",
                pinned,
                offered
            );
            Ok(false)
        }
        Event::Violation {
            from,
            id,
            violation,
            ..
        } => {
            note_to!(
                notes,
                "warning: message {id} from {} is {violation}: the relay should have refused it \
                 (kept as evidence)",
                display_name(client, from)
            );
            Ok(false)
        }
        Event::StatusPosted { .. } | Event::StatusDeleted { .. } | Event::StatusViewed { .. } => {
            status::print_event(client, event, out, notes, c)
        }
        _ => Ok(false),
    }
}

/// A rendered template as lines for people: header, body, footer, then the
/// buttons numbered from 1 (the number `reply` takes), each made visible.
pub(crate) fn rendered_lines(rendered: &RenderedTemplate) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(header) = &rendered.header {
        lines.push(visible(header));
    }
    lines.push(visible(&rendered.body));
    if let Some(footer) = &rendered.footer {
        lines.push(visible(footer));
    }
    for (i, button) in rendered.buttons.iter().enumerate() {
        let n = i + 1;
        lines.push(match button {
            Button::QuickReply { text } => format!("[{n}] {}", visible(text)),
            Button::Link { text, url } => format!("[{n}] {}: {}", visible(text), visible(url)),
            Button::Call { text, phone } => {
                format!("[{n}] {}: call {}", visible(text), visible(phone))
            }
        });
    }
    lines
}

/// A template message as `history` stored it (its rendered text: header,
/// body and footer lines, then one line per button) as lines for people,
/// the buttons numbered from 1 as `listen` numbers them.
fn stored_template_lines(body: &str, buttons: &[Button]) -> Vec<String> {
    let lines: Vec<&str> = body.split('\n').collect();
    let text_lines = lines.len().saturating_sub(buttons.len());
    let rendered = RenderedTemplate {
        header: None,
        body: String::new(),
        footer: None,
        buttons: buttons.to_vec(),
    };
    let mut shown: Vec<String> = lines[..text_lines].iter().map(|l| visible(l)).collect();
    // The buttons as `listen` shows them (after its empty body line).
    shown.extend(rendered_lines(&rendered).into_iter().skip(1));
    shown
}

/// A contact's name when it is a word a shell passes as it is, else the
/// account id: for commands to copy.
pub(crate) fn contact_or_id(client: &Client, account: &AccountId) -> String {
    match client.contact_name(account) {
        Ok(Some(name)) if contacts::check_name(&name).is_ok() => name,
        _ => account.to_string(),
    }
}

/// `listen --output json`: one record for each event a script may care
/// about; whether it was an incoming message (what `--count` counts).
async fn write_event(client: &mut Client, event: &Event, out: &mut dyn Write) -> Result<bool> {
    for record in event_records(client, event).await? {
        json::write(out, &record)?;
    }
    Ok(is_incoming(event))
}

/// Whether `event` is an incoming message, file or Status post (what
/// `listen --count` counts, in either output format).
fn is_incoming(event: &Event) -> bool {
    matches!(
        event,
        Event::Message { .. }
            | Event::Attachment { .. }
            | Event::StatusPosted { .. }
            | Event::Template { .. }
            | Event::QuickReply { .. }
            | Event::Interactive { .. }
            | Event::InteractiveReply { .. }
    )
}

/// The `--output json` records of `event` (none for events scripts do not
/// see; one per message for a read receipt): what `listen --output json`
/// prints and what the daemon notifies.
pub(crate) async fn event_records(client: &mut Client, event: &Event) -> Result<Vec<Record>> {
    let now = json::Time::at(comptoir_client::client::now_ms());
    let status = |id: &MessageId, peer: &AccountId, status: &'static str| Record::Status {
        id: id.to_string(),
        peer: peer.to_string(),
        peer_name: json::name(client, peer),
        time: json::Time::at(comptoir_client::client::now_ms()),
        status,
    };
    let warning =
        |kind, peer: Option<&AccountId>, id: Option<String>, text: String| Record::Warning {
            kind,
            peer: peer.map(ToString::to_string),
            id,
            text,
            time: json::Time::at(comptoir_client::client::now_ms()),
        };
    let record = match event {
        Event::Message {
            from,
            id,
            text,
            sent_at_ms,
            request,
        } => {
            let stored = client.message(from, id)?;
            Record::Message {
                id: id.to_string(),
                peer: from.to_string(),
                peer_name: json::name(client, from),
                direction: "in",
                from: from.to_string(),
                text: text.clone(),
                time: json::Time::at(*sent_at_ms),
                status: stored.map_or("received", |m| json::status_name(false, m.status)),
                other_device: false,
                request: *request,
            }
        }
        Event::Template {
            from,
            id,
            template_id,
            rendered,
            sent_at_ms,
        } => {
            let shown = business_label(client, *from).await?;
            Record::Template {
                id: id.to_string(),
                peer: from.to_string(),
                peer_name: shown.name,
                verified: shown.verified,
                template_id: template_id.to_hex(),
                header: rendered.header.clone(),
                body: rendered.body.clone(),
                footer: rendered.footer.clone(),
                buttons: rendered.buttons.clone(),
                time: json::Time::at(*sent_at_ms),
            }
        }
        Event::QuickReply {
            from,
            id,
            reply_to,
            template_id,
            button_index,
            text,
        } => Record::QuickReply {
            id: id.to_string(),
            peer: from.to_string(),
            peer_name: json::name(client, from),
            reply_to: reply_to.to_string(),
            template_id: template_id.to_hex(),
            button: button_index + 1,
            text: text.clone(),
            time: now,
        },
        Event::Interactive {
            from,
            id,
            message,
            sent_at_ms,
        } => {
            let shown = business_label(client, *from).await?;
            Record::Interactive {
                id: id.to_string(),
                peer: from.to_string(),
                peer_name: shown.name,
                verified: shown.verified,
                body: message.body.clone(),
                choices: json::choices(message),
                time: json::Time::at(*sent_at_ms),
            }
        }
        Event::InteractiveReply {
            from,
            id,
            reply_to,
            choice,
            title,
        } => {
            let (button, row) = match choice {
                Choice::Button(index) => (Some(index + 1), None),
                Choice::Row(row) => (None, Some(row.clone())),
            };
            Record::InteractiveReply {
                id: id.to_string(),
                peer: from.to_string(),
                peer_name: json::name(client, from),
                reply_to: reply_to.to_string(),
                button,
                row,
                title: title.clone(),
                time: now,
            }
        }
        Event::ConsentRequested(request) => {
            let shown = business_label(client, request.business).await?;
            json::consent_request(request, &shown)
        }
        Event::OperatorKeyChanged { pinned, offered } => warning(
            "operator_key_changed",
            None,
            None,
            format!(
                "the relay presents another operator key ({offered}) than the one pinned \
                 ({pinned}); verified marks and template approvals are still checked with \
                 the pinned key. Ask the operator before pinning the new one with \
                 `comptoir operator-key --pin`"
            ),
        ),
        Event::SentElsewhere {
            to,
            id,
            text,
            sent_at_ms,
        } => {
            let stored = client.message(to, id)?;
            Record::Message {
                id: id.to_string(),
                peer: to.to_string(),
                peer_name: json::name(client, to),
                direction: "out",
                from: client.account_id().to_string(),
                text: text.clone(),
                time: json::Time::at(*sent_at_ms),
                status: stored.map_or("sent", |m| json::status_name(true, m.status)),
                other_device: true,
                request: false,
            }
        }
        Event::Accepted { to, id, .. } => status(id, to, "sent"),
        Event::Delivered { to, id, .. } => status(id, to, "delivered"),
        Event::Read { by, ids } => {
            return Ok(ids.iter().map(|id| status(id, by, "read")).collect());
        }
        Event::IdentityChanged { account } => warning(
            "identity_changed",
            Some(account),
            None,
            "the contact's identity changed: compare safety numbers, then accept it with \
             `comptoir trust`; its messages are held until then"
                .into(),
        ),
        Event::Undecryptable { from, id, reason } => warning(
            "undecryptable",
            Some(from),
            Some(id.clone()),
            format!("could not be decrypted: {reason}"),
        ),
        Event::Refused { from, id, reason } => warning(
            "refused",
            Some(from),
            Some(id.to_string()),
            format!("refused and kept as evidence: {reason}"),
        ),
        Event::Violation {
            from,
            id,
            violation,
            ..
        } => warning(
            "violation",
            Some(from),
            Some(id.to_string()),
            format!("{violation}: the relay should have refused it (kept as evidence)"),
        ),
        Event::Warning(text) => warning("other", None, None, text.clone()),
        Event::Attachment {
            from,
            id,
            file_name,
            content_type,
            size,
            sent_at_ms,
            request,
        } => Record::Attachment {
            id: id.to_string(),
            peer: from.to_string(),
            peer_name: json::name(client, from),
            file_name: file_name.clone(),
            content_type: content_type.clone(),
            size: *size,
            time: json::Time::at(*sent_at_ms),
            request: *request,
        },
        Event::StatusPosted {
            from,
            post_id,
            posted_at_ms,
        } => Record::StatusReceived {
            id: hex::encode(post_id),
            poster: from.to_string(),
            poster_name: json::name(client, from),
            time: json::Time::at(*posted_at_ms),
        },
        Event::StatusDeleted { from, post_id } => Record::StatusRemoved {
            id: hex::encode(post_id),
            poster: from.to_string(),
            poster_name: json::name(client, from),
        },
        Event::StatusViewed {
            by,
            post_id,
            viewed_at_ms,
        } => Record::StatusViewed {
            id: hex::encode(post_id),
            viewer: by.to_string(),
            viewer_name: json::name(client, by),
            time: json::Time::at(*viewed_at_ms),
        },
        _ => return Ok(Vec::new()),
    };
    Ok(vec![record])
}

async fn listen(
    out: &mut dyn Write,
    client: &mut Client,
    relay: &str,
    count: Option<usize>,
    timeout: Option<Duration>,
    format: OutputFormat,
    c: &str,
) -> Result<u8> {
    let stop = interrupted_flag();
    client.connect(relay).await?;
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut seen = 0usize;
    loop {
        if count.is_some_and(|n| seen >= n) {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            client.close_connection().await;
            return Ok(EXIT_TIMED_OUT);
        }
        let Some(event) = poll_event(client, relay, &stop).await? else {
            continue;
        };
        let message = match format {
            OutputFormat::Text => {
                print_event(client, &event, out, &mut std::io::stderr(), c).await?
            }
            OutputFormat::Json => write_event(client, &event, out).await?,
        };
        if message {
            seen += 1;
        }
    }
    client.close_connection().await;
    Ok(0)
}

/// `send --file` and `send-file`: encrypt `path`, upload it and send its
/// key and digests to `to`.
async fn send_file(
    cli: &Cli,
    source: &mut account::Source<'_>,
    out: &mut dyn Write,
    json: bool,
    to: &str,
    path: &std::path::Path,
    content_type: Option<&str>,
) -> Result<u8> {
    let content_type =
        content_type.map_or_else(|| guess_content_type(path).to_owned(), str::to_owned);
    let mut client = source.open(cli)?;
    let peer = client.resolve(to)?;
    let file = match account::prepared_file() {
        Some(prepared) => prepared?,
        None => client.encrypt_file(path, &content_type)?,
    };
    let result = match client.connect(&cli.relay).await {
        Ok(_) => client.send_attachment(peer, &file).await,
        Err(e) => Err(e),
    };
    let peer_name = json::name(&client, &peer);
    client.close().await?;
    let id = result?;
    if json {
        // The relay stored it: `sent`, as `send` says of a text.
        json::write(
            out,
            &Record::Sent {
                id: id.to_string(),
                peer: peer.to_string(),
                peer_name,
                time: json::Time::at(comptoir_client::client::now_ms()),
                status: "sent",
            },
        )?;
    } else {
        say!(out, "{id}");
    }
    Ok(0)
}

/// A MIME type from a file's extension (the common ones; anything else is
/// sent as `application/octet-stream`, a document).
pub(crate) fn guess_content_type(path: &std::path::Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match extension.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "ogg" | "opus" => "audio/ogg",
        "m4a" => "audio/mp4",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}
