//! The daemon's methods, run one at a time on the account it holds: each
//! checks its named parameters, then calls the client library. Results
//! reuse the records of `--output json` ([`crate::json::Record`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use comptoir_client::account::FIRST_DEVICE_ID;
use comptoir_client::attachments::EncryptedFile;
use comptoir_client::error::{ClientError, Result as ClientResult};
use comptoir_client::messages::check_text;
use comptoir_client::{Client, StoredMessage};
use comptoir_protocol::AccountId;
use comptoir_protocol::proto::wire::BlockReason;

use super::rpc::{self, RpcError};
use crate::args::{Cli, Command, OutputFormat};
use crate::json::{self, Record};

/// The methods [`call`] knows, besides `subscribe` and `unsubscribe`
/// (which concern one connection and are answered by it).
pub const METHODS: &[&str] = &[
    "whoami",
    "send",
    "history",
    "contacts_list",
    "devices_list",
    "mark_read",
    "block",
    "unblock",
    "conversations",
    "run",
    "tui_state",
    "tui_action",
    "tui_open_link",
];

/// Run `method` with `params` on `client`.
///
/// `prepared`: the file the call sends, already read and encrypted by
/// the daemon (or why that failed), used instead of reading it here.
pub async fn call(
    client: &mut Client,
    daemon: &Daemon<'_>,
    method: &str,
    params: Map<String, Value>,
    prepared: Option<ClientResult<EncryptedFile>>,
) -> Result<Value, RpcError> {
    match method {
        "run" => run(client, daemon, parse(params)?, prepared).await,
        "tui_state" => {
            let TuiStateParams { templates } = parse(params)?;
            let list = conversations(client)?;
            crate::tui::wire::state(client, list, templates.unwrap_or(false))
                .await
                .map_err(|e| failed(&e))
        }
        "tui_open_link" => {
            let LinkParams { link } = parse(params)?;
            let link = comptoir_client::click_to_chat::ChatLink::parse(&link).map_err(|e| {
                RpcError::invalid_params(format!("\"link\" is not a click-to-chat link: {e}"))
            })?;
            crate::tui::wire::open_link(client, &link)
                .await
                .map_err(|e| failed(&e))
        }
        "tui_action" => {
            let action =
                crate::tui::wire::parse_action(&Value::Object(params)).ok_or_else(|| {
                    RpcError::invalid_params(
                        "not an action of the TUI: see tui_action in docs/CLIENT-RPC.md",
                    )
                })?;
            crate::tui::wire::perform(client, action)
                .await
                .map_err(|e| failed(&e))
        }
        "whoami" => {
            parse::<NoParams>(params)?;
            Ok(json!({
                "account": client.account_id().to_string(),
                "device_id": client.device_id(),
                "connected": client.is_connected(),
            }))
        }
        "send" => send(client, parse(params)?, prepared).await,
        "history" => {
            let HistoryParams { with, limit } = parse(params)?;
            let peer = resolve(client, &with)?;
            let messages = client.history(&peer).map_err(|e| failed(&e))?;
            let skip = limit.map_or(0, |n| messages.len().saturating_sub(n));
            records(
                messages
                    .iter()
                    .skip(skip)
                    .map(|m| Record::stored(client, m)),
            )
        }
        "contacts_list" => {
            parse::<NoParams>(params)?;
            let mut list = Vec::new();
            for contact in client.contacts().map_err(|e| failed(&e))? {
                list.push(Record::Contact {
                    verified: client
                        .is_verified(&contact.account)
                        .map_err(|e| failed(&e))?,
                    blocked: client
                        .is_blocked(&contact.account)
                        .map_err(|e| failed(&e))?,
                    name: contact.name,
                    account: contact.account.to_string(),
                });
            }
            records(list)
        }
        "devices_list" => {
            parse::<NoParams>(params)?;
            let list = client.own_devices().map_err(|e| failed(&e))?;
            let notes = client.device_notes().map_err(|e| failed(&e))?;
            records(list.devices.iter().map(|(id, key)| {
                let note = notes.get(id).cloned().unwrap_or_default();
                Record::Device {
                    device_id: *id,
                    this_device: *id == client.device_id(),
                    first_device: *id == FIRST_DEVICE_ID,
                    name: note.name,
                    added_ms: note.added_at_ms,
                    added: note.added_at_ms.map(crate::format::rfc3339),
                    identity_key: hex::encode(key.as_bytes()),
                }
            }))
        }
        "mark_read" => {
            let WithParams { with } = parse(params)?;
            let peer = resolve(client, &with)?;
            let requests = client.message_requests().map_err(|e| failed(&e))?;
            if requests.iter().any(|(a, _)| *a == peer) {
                return Err(RpcError::new(
                    rpc::FAILED,
                    "a message request is not marked read until it is accepted: accept it \
                     with `comptoir requests accept` (or the method run)",
                    1,
                ));
            }
            let marked = client.mark_read(peer).await.map_err(|e| failed(&e))?;
            Ok(json!({ "marked": marked }))
        }
        "block" => {
            let BlockParams { who, reason } = parse(params)?;
            let reason = block_reason(reason.as_deref())?;
            let peer = resolve(client, &who)?;
            client
                .block_for(peer, reason)
                .await
                .map_err(|e| failed(&e))?;
            Ok(json!({ "peer": peer.to_string(), "blocked": true }))
        }
        "unblock" => {
            let WhoParams { who } = parse(params)?;
            let peer = resolve(client, &who)?;
            client.unblock(peer).await.map_err(|e| failed(&e))?;
            Ok(json!({ "peer": peer.to_string(), "blocked": false }))
        }
        "conversations" => {
            parse::<NoParams>(params)?;
            conversations(client)
        }
        _ => Err(RpcError::new(
            rpc::METHOD_NOT_FOUND,
            format!(
                "no method {:?}: the methods are {}, subscribe and unsubscribe \
                 (docs/CLIENT-RPC.md)",
                crate::format::visible(method),
                METHODS.join(", ")
            ),
            2,
        )),
    }
}

/// What the methods know of the daemon running them.
#[derive(Clone, Copy, Debug)]
pub struct Daemon<'a> {
    /// Its relay.
    pub relay: &'a str,
    /// Its data directory.
    pub data_dir: &'a Path,
}

/// `run`: a command line's command (as [`Command`] serialises it) with the
/// settings of the program that asks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunParams {
    command: Command,
    /// The program's `--data-dir` as given (for the hints it prints).
    data_dir: Option<PathBuf>,
    output: Option<OutputFormat>,
    region: Option<String>,
    /// The program's standard input, for a command that reads it.
    stdin: Option<String>,
    /// Whether the program can ask its user (its standard input is a
    /// terminal): `open` without `--yes` then leaves its question to it.
    ask: Option<bool>,
}

/// Whether `command` runs in the daemon with the method `run`: every
/// command that opens the store, but those that make or replace the
/// store, `daemon` itself, and those with methods of their own that wait
/// for events (`listen`, `chat`, `tui`).
pub fn runs_in_daemon(command: &Command) -> bool {
    !matches!(
        command,
        Command::Init
            | Command::LinkDevice { .. }
            | Command::Restore { .. }
            | Command::Daemon { .. }
            | Command::Listen { .. }
            | Command::Chat { .. }
            | Command::Tui { .. }
            | Command::Completions { .. }
            | Command::Man
    )
}

/// Paths a command names, which the daemon reads or writes on behalf of
/// the program that asks: they must be absolute (the daemon runs in
/// another directory).
pub fn paths_of(command: &mut Command) -> Vec<&mut PathBuf> {
    use crate::args::{BusinessCommand, StatusCommand, TemplateCommand};
    match command {
        Command::Send {
            file: Some(path), ..
        }
        | Command::SendFile { path, .. }
        | Command::Save { path, .. }
        | Command::Status(StatusCommand::Post {
            file: Some(path), ..
        })
        | Command::Status(StatusCommand::View {
            save_to: Some(path),
            ..
        }) => vec![path],
        Command::Business(BusinessCommand::Template(TemplateCommand::Submit { file })) => {
            if file.as_os_str() == "-" {
                Vec::new()
            } else {
                vec![file]
            }
        }
        Command::Business(BusinessCommand::Link { svg, png, .. }) => {
            svg.iter_mut().chain(png.iter_mut()).collect()
        }
        _ => Vec::new(),
    }
}

async fn run(
    client: &mut Client,
    daemon: &Daemon<'_>,
    params: RunParams,
    prepared: Option<ClientResult<EncryptedFile>>,
) -> Result<Value, RpcError> {
    let RunParams {
        mut command,
        data_dir,
        output,
        region,
        stdin,
        ask,
    } = params;
    if !runs_in_daemon(&command) {
        return Err(RpcError::invalid_params(
            "this command does not run in the daemon: init, register, link-device, restore \
             and daemon need the store to themselves (stop the daemon first); listen, chat and \
             tui use subscribe and the other methods; completions and man need no account",
        ));
    }
    if paths_of(&mut command).iter().any(|p| !p.is_absolute()) {
        return Err(RpcError::invalid_params(
            "the paths of a command given to the daemon must be absolute (it runs in another \
             directory)",
        ));
    }
    let cli = Cli {
        data_dir_arg: data_dir,
        data_dir: daemon.data_dir.to_path_buf(),
        relay_arg: None,
        relay: daemon.relay.to_owned(),
        // The daemon's own client, lent below, has its keepalive already.
        keepalive: comptoir_client::Keepalive::default(),
        config: None,
        ca_cert: None,
        insecure: false,
        output,
        region,
        passphrase_file: None,
        command,
    };
    let ran = crate::run_lent(
        &cli,
        client,
        daemon.relay,
        stdin.map(String::into_bytes),
        ask.unwrap_or(false),
        prepared,
    )
    .await;
    let mut result = json!({
        "exit_code": ran.exit_code,
        "stdout": String::from_utf8_lossy(&ran.stdout),
        "stderr": String::from_utf8_lossy(&ran.stderr),
    });
    if let (Some(question), Value::Object(fields)) = (ran.question, &mut result) {
        fields.insert("confirm".into(), json!(question));
    }
    Ok(result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkParams {
    link: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TuiStateParams {
    templates: Option<bool>,
}

/// A method without parameters refuses any.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendParams {
    to: String,
    text: Option<String>,
    file: Option<PathBuf>,
    #[serde(rename = "type")]
    content_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    with: String,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithParams {
    with: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhoParams {
    who: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockParams {
    who: String,
    reason: Option<String>,
}

fn parse<T: DeserializeOwned>(params: Map<String, Value>) -> Result<T, RpcError> {
    serde_json::from_value(Value::Object(params))
        .map_err(|e| RpcError::invalid_params(format!("invalid params: {e}")))
}

fn failed(error: &ClientError) -> RpcError {
    RpcError::from_client(error)
}

fn resolve(client: &Client, name_or_id: &str) -> Result<AccountId, RpcError> {
    client.resolve(name_or_id).map_err(|e| match e {
        ClientError::UnknownContact(_) => RpcError::new(
            rpc::NOT_FOUND,
            format!(
                "no contact named {:?} and not an account id: see the names with the method \
                 contacts_list",
                crate::format::visible(name_or_id)
            ),
            8,
        ),
        e => failed(&e),
    })
}

fn to_value(record: Record) -> Value {
    // A record is plain data: serialising it cannot fail.
    serde_json::to_value(record).unwrap_or(Value::Null)
}

fn records(list: impl IntoIterator<Item = Record>) -> Result<Value, RpcError> {
    Ok(Value::Array(list.into_iter().map(to_value).collect()))
}

fn block_reason(reason: Option<&str>) -> Result<BlockReason, RpcError> {
    Ok(match reason {
        None => BlockReason::Unspecified,
        Some("no_longer_needed") => BlockReason::NoLongerNeeded,
        Some("did_not_sign_up") => BlockReason::DidNotSignUp,
        Some("spam") => BlockReason::Spam,
        Some("offensive") => BlockReason::Offensive,
        Some(other) => {
            return Err(RpcError::invalid_params(format!(
                "reason {:?} is not one of no_longer_needed, did_not_sign_up, spam, offensive",
                crate::format::visible(other)
            )));
        }
    })
}

/// `send`: a text, or a file read by the daemon from `file` (an absolute
/// path on this machine).
async fn send(
    client: &mut Client,
    params: SendParams,
    prepared: Option<ClientResult<EncryptedFile>>,
) -> Result<Value, RpcError> {
    let SendParams {
        to,
        text,
        file,
        content_type,
    } = params;
    let id = match (text, file) {
        (Some(text), None) => {
            if content_type.is_some() {
                return Err(RpcError::invalid_params(
                    "\"type\" names a file's type: give the file with \"file\"",
                ));
            }
            // Refused before anything is stored.
            check_text(&text).map_err(|e| failed(&e))?;
            let peer = resolve(client, &to)?;
            // A connection lost on the way leaves the message in the
            // outbox: it is answered as pending, as when the relay is down.
            match client
                .send_text_naming(peer, &text)
                .await
                .map_err(|e| failed(&e))?
            {
                (id, Ok(())) => id,
                (id, Err(e)) if super::is_unreachable(&e) => id,
                (_, Err(e)) => return Err(failed(&e)),
            }
        }
        (None, Some(path)) => {
            if !path.is_absolute() || !path.is_file() {
                return Err(RpcError::invalid_params(
                    "\"file\" must be the absolute path of a readable file on this machine",
                ));
            }
            let peer = resolve(client, &to)?;
            let content_type =
                content_type.unwrap_or_else(|| crate::guess_content_type(&path).to_owned());
            let encrypted = prepared
                .unwrap_or_else(|| client.encrypt_file(&path, &content_type))
                .map_err(|e| match e {
                    ClientError::Io { .. } => RpcError::new(
                        rpc::FAILED,
                        "the file could not be read; nothing was sent",
                        1,
                    ),
                    e => failed(&e),
                })?;
            client
                .send_attachment(peer, &encrypted)
                .await
                .map_err(|e| failed(&e))?
        }
        _ => {
            return Err(RpcError::invalid_params(
                "give exactly one of \"text\" and \"file\"",
            ));
        }
    };
    let peer = resolve(client, &to)?;
    let stored = client.message(&peer, &id).map_err(|e| failed(&e))?;
    let (at, status) = stored.map_or((comptoir_client::client::now_ms(), "sent"), |m| {
        (m.sent_at_ms, json::status_name(true, m.status))
    });
    Ok(to_value(Record::Sent {
        id: id.to_string(),
        peer: peer.to_string(),
        peer_name: json::name(client, &peer),
        time: json::Time::at(at),
        status,
    }))
}

/// Every conversation as the TUI lists it (contacts first, then the
/// other accounts with messages), each with its history.
fn conversations(client: &Client) -> Result<Value, RpcError> {
    let list = crate::tui::load_conversations(client).map_err(|e| failed(&e))?;
    let mut out = Vec::new();
    for c in list {
        let verified_name = client
            .known_business(&c.peer)
            .map_err(|e| failed(&e))?
            .filter(|view| view.verification.is_verified())
            .map(|view| view.shown_name(&c.name).to_string());
        out.push(json!({
            "peer": c.peer.to_string(),
            "name": c.name,
            "unread": c.unread,
            "identity_changed": c.identity_changed,
            "blocked": c.blocked,
            "request": c.request,
            "verified_name": verified_name,
            "messages": c.messages.iter().map(stored_message).collect::<Vec<_>>(),
        }));
    }
    Ok(Value::Array(out))
}

fn stored_message(m: &StoredMessage) -> Value {
    json!({
        "id": m.id.to_string(),
        "outgoing": m.outgoing,
        "text": m.body,
        "time_ms": m.sent_at_ms,
        "stored_ms": m.stored_at_ms,
        "status": m.status.label(),
        "sequence": m.sequence,
    })
}
