//! `comptoir daemon`: one task holds the [`Client`] and its relay
//! connection and runs the methods between events; each socket
//! connection (and standard input/output with `--stdio`) is a task that
//! reads requests, hands them over and writes the responses, and, once
//! subscribed, the events as notifications.
//!
//! A slow request does not hold up the others: `whoami` is answered by
//! the connection's task; a file to send is read and encrypted by the
//! connection's task (on a blocking thread), and the account's task then
//! uploads it a few chunks at a time, running the other requests and
//! notifying events between rounds.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::time::Instant;

use comptoir_client::Client;
use comptoir_client::attachments::EncryptedFile;
use comptoir_client::error::{ClientError, Result};

use crate::args::Command;

use super::rpc::{self, Line, RpcError};
use super::{methods, socket_path};

/// Requests waiting for the account's task: past this, a connection's
/// next request waits (each connection has one request in flight).
const QUEUED_CALLS: usize = 64;
/// Events kept for a subscriber that reads slowly; one that falls further
/// behind is told how many it missed (history has them).
const EVENT_BACKLOG: usize = 1024;
/// Lines waiting to be written to one connection.
const OUTGOING_LINES: usize = 256;
/// The first wait before connecting to the relay again, doubling up to
/// [`MAX_RECONNECT_DELAY`].
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// The longest wait between attempts to reach the relay.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);
/// How long the account's task waits for an event before looking again
/// (it is woken at once by a request or a stop).
const IDLE_WAIT: Duration = Duration::from_secs(30);
/// Chunks of a file (64 KiB each) uploaded in one turn of the account's
/// task, before it runs the other requests and notifies events again.
const CHUNKS_PER_TURN: usize = 16;

/// One request handed to the account's task.
struct Call {
    method: String,
    params: serde_json::Map<String, Value>,
    /// The file it sends, already read and encrypted by the connection's
    /// task (or why that failed, said when the request runs).
    prepared: Option<Result<EncryptedFile>>,
    reply: oneshot::Sender<std::result::Result<Value, RpcError>>,
}

/// What the connection tasks share with the account's task.
#[derive(Clone)]
struct Shared {
    calls: mpsc::Sender<Call>,
    /// Woken when a call is queued or the daemon should stop.
    wake: Arc<Notify>,
    /// Each event's records, as JSON, for the subscribers.
    events: broadcast::Sender<Value>,
    stop: Arc<AtomicBool>,
    /// `whoami`'s answer but `connected`, answered without the account's
    /// task.
    identity: Arc<(String, u32)>,
    /// Whether the relay connection is up, as the account's task last saw.
    connected: Arc<AtomicBool>,
    /// Where files to send are encrypted (the data directory).
    data_dir: Arc<PathBuf>,
}

impl Shared {
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// Run the daemon on `client` (already open) until Ctrl-C, SIGTERM or,
/// with `stdio`, the end of standard input. The socket is made in
/// `data_dir`; the client's store lock already keeps a second daemon (or
/// any other `comptoir` process) off this data directory.
pub async fn run(client: Client, data_dir: &Path, relay: &str, stdio: bool) -> Result<()> {
    let path = socket_path(data_dir);
    let listener = bind(data_dir, &path)?;
    let (calls_tx, calls) = mpsc::channel(QUEUED_CALLS);
    let (events, _) = broadcast::channel(EVENT_BACKLOG);
    let shared = Shared {
        calls: calls_tx,
        wake: Arc::new(Notify::new()),
        events,
        stop: Arc::new(AtomicBool::new(false)),
        identity: Arc::new((client.account_id().to_string(), client.device_id())),
        connected: Arc::new(AtomicBool::new(false)),
        data_dir: Arc::new(data_dir.to_path_buf()),
    };
    eprintln!(
        "comptoir daemon: account {} serves JSON-RPC on {} (stop with Ctrl-C)",
        client.account_id(),
        path.display()
    );
    let signals = tokio::spawn(stop_on_signal(shared.clone()));
    let accept = tokio::spawn(accept_loop(listener, shared.clone()));
    if stdio {
        let shared = shared.clone();
        tokio::spawn(async move {
            let reader = BufReader::new(tokio::io::stdin());
            serve_connection(reader, tokio::io::stdout(), shared.clone()).await;
            // The program that started the daemon closed its end.
            shared.stop();
        });
    }
    let result = account_loop(client, relay, data_dir, calls, &shared).await;
    accept.abort();
    signals.abort();
    let _ = std::fs::remove_file(&path);
    result
}

/// Make the socket, readable and writable by this user only, in the data
/// directory (made private to this user too). A socket file left by a
/// daemon that did not stop cleanly is replaced: the store lock this
/// process holds proves no daemon uses it.
fn bind(data_dir: &Path, path: &Path) -> Result<UnixListener> {
    comptoir_client::store::create_private_dir(data_dir)?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ClientError::io("removing an old daemon socket", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        ClientError::io(
            "making the daemon socket (a data directory path shorter than about 100 \
             characters is needed)",
            e,
        )
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| ClientError::io("making the daemon socket private", e))?;
    }
    Ok(listener)
}

async fn stop_on_signal(shared: Shared) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    shared.stop();
}

async fn accept_loop(listener: UnixListener, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (read, write) = stream.into_split();
                tokio::spawn(serve_connection(
                    BufReader::new(read),
                    write,
                    shared.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection on the daemon socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serve one connection until it closes: requests in order, one at a time;
/// notifications interleaved once it subscribed.
async fn serve_connection<R, W>(mut reader: R, writer: W, shared: Shared)
where
    R: AsyncBufRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (lines, lines_rx) = mpsc::channel::<String>(OUTGOING_LINES);
    let writing = tokio::spawn(write_lines(writer, lines_rx));
    let mut subscription: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let line = match rpc::read_line(&mut reader).await {
            Ok(Line::Text(line)) => line,
            Ok(Line::TooLong) => {
                let error = RpcError::new(
                    rpc::INVALID_REQUEST,
                    format!(
                        "a request line is at most {} bytes; this connection is closed",
                        rpc::MAX_LINE
                    ),
                    2,
                );
                let _ = lines.send(rpc::response(&Value::Null, Err(error))).await;
                break;
            }
            Ok(Line::End) | Err(_) => break,
        };
        if line.trim().is_empty() {
            continue;
        }
        let request = match rpc::parse_request(&line) {
            Ok(request) => request,
            Err((id, error)) => {
                if lines.send(rpc::response(&id, Err(error))).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let result = match request.method.as_str() {
            "subscribe" => {
                if let Some(task) = subscription.take() {
                    task.abort();
                }
                subscription = Some(tokio::spawn(forward_events(
                    shared.events.subscribe(),
                    lines.clone(),
                )));
                Ok(json!({ "subscribed": true }))
            }
            "unsubscribe" => {
                if let Some(task) = subscription.take() {
                    task.abort();
                }
                Ok(json!({ "subscribed": false }))
            }
            "whoami" => whoami(&shared, &request.params),
            _ => {
                let prepared = prepare(&shared, &request.method, &request.params).await;
                call(&shared, request.method, request.params, prepared).await
            }
        };
        // A request without an id is a notification: no response.
        if let Some(id) = &request.id
            && lines.send(rpc::response(id, result)).await.is_err()
        {
            break;
        }
    }
    if let Some(task) = subscription {
        task.abort();
    }
    drop(lines);
    let _ = writing.await;
}

/// `whoami`, answered here: the account and device never change while
/// the daemon runs, and the connection's state is shared.
fn whoami(
    shared: &Shared,
    params: &serde_json::Map<String, Value>,
) -> std::result::Result<Value, RpcError> {
    if !params.is_empty() {
        return Err(RpcError::invalid_params(
            "invalid params: whoami takes no parameters",
        ));
    }
    let (account, device_id) = &*shared.identity;
    Ok(json!({
        "account": account,
        "device_id": device_id,
        "connected": shared.connected.load(Ordering::SeqCst),
    }))
}

/// The file a request sends (the method `send` with `file`, or `run` of
/// `send --file` or `send-file`), read and encrypted here on a blocking
/// thread, so that a big or slow file holds up no other request. `None`
/// when the request sends no file (or gives it so that the method
/// refuses it: the method then says why).
async fn prepare(
    shared: &Shared,
    method: &str,
    params: &serde_json::Map<String, Value>,
) -> Option<Result<EncryptedFile>> {
    let (path, content_type) = match method {
        "send" => {
            let path = PathBuf::from(params.get("file")?.as_str()?);
            if !path.is_absolute() || !path.is_file() {
                return None;
            }
            let content_type = params
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_owned);
            (path, content_type)
        }
        "run" => match serde_json::from_value::<Command>(params.get("command")?.clone()).ok()? {
            Command::Send {
                file: Some(path),
                content_type,
                ..
            }
            | Command::SendFile {
                path, content_type, ..
            } if path.is_absolute() => (path, content_type),
            _ => return None,
        },
        _ => return None,
    };
    let content_type = content_type.unwrap_or_else(|| crate::guess_content_type(&path).to_owned());
    let data_dir = Arc::clone(&shared.data_dir);
    let encrypted = tokio::task::spawn_blocking(move || {
        comptoir_client::attachments::encrypt_file(&path, &content_type, &data_dir)
    })
    .await;
    Some(encrypted.unwrap_or_else(|_| {
        Err(ClientError::InvalidArgument(
            "the file could not be read; nothing was sent".into(),
        ))
    }))
}

/// Hand a call to the account's task and wait for its result.
async fn call(
    shared: &Shared,
    method: String,
    params: serde_json::Map<String, Value>,
    prepared: Option<Result<EncryptedFile>>,
) -> std::result::Result<Value, RpcError> {
    let stopping = || {
        RpcError::new(
            rpc::FAILED,
            "the daemon is stopping; start it again, or run the command without it",
            1,
        )
    };
    let (reply, result) = oneshot::channel();
    shared
        .calls
        .send(Call {
            method,
            params,
            prepared,
            reply,
        })
        .await
        .map_err(|_| stopping())?;
    shared.wake.notify_one();
    result.await.unwrap_or_else(|_| Err(stopping()))
}

async fn forward_events(mut events: broadcast::Receiver<Value>, lines: mpsc::Sender<String>) {
    loop {
        let record = match events.recv().await {
            Ok(record) => record,
            Err(broadcast::error::RecvError::Lagged(missed)) => json!({
                "type": "warning",
                "kind": "missed",
                "text": format!(
                    "{missed} events were not sent to this connection (it read too slowly); \
                     the method history has the messages"
                ),
            }),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if lines
            .send(rpc::notification("receive", &record))
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn write_lines<W: AsyncWrite + Unpin>(mut writer: W, mut lines: mpsc::Receiver<String>) {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        if writer.write_all(line.as_bytes()).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
}

/// The account's task: connect (and reconnect with backoff), turn events
/// into notifications, run the calls between them, and upload the files
/// of calls that send one a few chunks per turn. Only errors that
/// retrying cannot fix (a broken store, a removed device) end it.
async fn account_loop(
    mut client: Client,
    relay: &str,
    data_dir: &Path,
    mut calls: mpsc::Receiver<Call>,
    shared: &Shared,
) -> Result<()> {
    let daemon = methods::Daemon { relay, data_dir };
    let mut next_attempt = Instant::now();
    let mut delay = FIRST_RECONNECT_DELAY;
    let mut was_connected = false;
    // Calls whose file is being uploaded, in turn.
    let mut uploading: VecDeque<Call> = VecDeque::new();
    let result = loop {
        let connected = client.is_connected();
        if shared.connected.swap(connected, Ordering::SeqCst) && !connected {
            // Lost during a request (a send whose connection dropped).
            let lost = ClientError::ConnectionClosed("during a request".into());
            notify_connection(shared, "lost", Some(&lost));
            next_attempt = Instant::now() + FIRST_RECONNECT_DELAY;
        }
        if shared.stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        while let Ok(call) = calls.try_recv() {
            if matches!(call.prepared, Some(Ok(_))) && client.is_connected() {
                uploading.push_back(call);
            } else {
                run_call(&mut client, &daemon, call).await;
            }
        }
        if let Some(call) = uploading.pop_front() {
            let complete = match &call.prepared {
                Some(Ok(file)) if client.is_connected() => {
                    // An upload that fails is left to the call, which
                    // meets the same error and answers it.
                    match client.upload_at_most(file, CHUNKS_PER_TURN).await {
                        Ok(report) => report.complete,
                        Err(_) => true,
                    }
                }
                _ => true,
            };
            if complete {
                run_call(&mut client, &daemon, call).await;
            } else {
                uploading.push_back(call);
            }
            // Between turns: the events that arrived meanwhile.
            if client.is_connected() {
                let event = client
                    .next_event_unless(Duration::ZERO, std::future::pending())
                    .await;
                if let Err(e) = notify_event(&mut client, shared, event, &mut next_attempt).await {
                    break Err(e);
                }
            }
            continue;
        }
        if !client.is_connected() {
            if Instant::now() >= next_attempt {
                match client.connect(relay).await {
                    Ok(_) => {
                        delay = FIRST_RECONNECT_DELAY;
                        let state = if was_connected {
                            "reconnected"
                        } else {
                            "connected"
                        };
                        was_connected = true;
                        shared.connected.store(true, Ordering::SeqCst);
                        notify_connection(shared, state, None);
                        continue;
                    }
                    Err(e) if super::is_unreachable(&e) => {
                        tracing::warn!(error = %e, "the relay is unreachable; trying again");
                        notify_connection(shared, "unreachable", Some(&e));
                        next_attempt = Instant::now() + delay;
                        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                    }
                    Err(e) => break Err(e),
                }
            }
            tokio::select! {
                () = shared.wake.notified() => {}
                () = tokio::time::sleep_until(next_attempt) => {}
            }
            continue;
        }
        let event = client
            .next_event_unless(IDLE_WAIT, shared.wake.notified())
            .await;
        if let Err(e) = notify_event(&mut client, shared, event, &mut next_attempt).await {
            break Err(e);
        }
    };
    // Calls still queued are answered by the closed channel.
    calls.close();
    drop(uploading);
    client.close().await?;
    result
}

/// Run one call on the account and answer it.
async fn run_call(client: &mut Client, daemon: &methods::Daemon<'_>, call: Call) {
    let Call {
        method,
        params,
        prepared,
        reply,
    } = call;
    let result = methods::call(client, daemon, &method, params, prepared).await;
    let _ = reply.send(result);
}

/// Notify subscribers of what waiting for an event gave: the event's
/// records, or the connection lost (the next attempt to reconnect is set).
/// An error is one that ends the daemon.
async fn notify_event(
    client: &mut Client,
    shared: &Shared,
    event: Result<Option<comptoir_client::Event>>,
    next_attempt: &mut Instant,
) -> Result<()> {
    match event {
        Ok(Some(event)) => match crate::event_records(client, &event).await {
            Ok(records) => {
                for record in records {
                    if let Ok(value) = serde_json::to_value(record) {
                        // No subscriber is not an error.
                        let _ = shared.events.send(value);
                    }
                }
            }
            Err(e @ (ClientError::Database(_) | ClientError::CorruptStore(_))) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "an event could not be described"),
        },
        Ok(None) => {}
        Err(e) if super::is_unreachable(&e) => {
            tracing::warn!(error = %e, "lost the relay; reconnecting");
            shared.connected.store(false, Ordering::SeqCst);
            notify_connection(shared, "lost", Some(&e));
            *next_attempt = Instant::now() + FIRST_RECONNECT_DELAY;
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Tell subscribers about the relay connection: `connected`,
/// `reconnected`, `lost` or `unreachable`.
fn notify_connection(shared: &Shared, state: &str, error: Option<&ClientError>) {
    let now = comptoir_client::client::now_ms();
    let _ = shared.events.send(json!({
        "type": "connection",
        "state": state,
        "text": error.map(ToString::to_string),
        "time_ms": now,
        "time": crate::format::rfc3339(now),
    }));
}
