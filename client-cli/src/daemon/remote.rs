//! The other side: a `comptoir` command talking to a running daemon over
//! its socket. Calls wait for their response; notifications that arrive
//! meanwhile are kept in order for [`Remote::next_notification`].

use std::collections::VecDeque;
use std::path::Path;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::rpc::RpcError;
use super::socket_path;

/// A connection to the daemon serving a data directory.
#[derive(Debug)]
pub struct Remote {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    next_id: u64,
    notifications: VecDeque<Value>,
}

/// Why talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The daemon answered with an error.
    #[error("{}", .0.message)]
    Rpc(RpcError),
    /// The daemon went away (stopped, or its answer was unreadable).
    #[error(
        "the daemon stopped or answered something unreadable; start it again, or run the \
         command without it"
    )]
    Gone,
}

impl RemoteError {
    /// The command line's exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Rpc(error) => error.data.exit_code,
            Self::Gone => 5,
        }
    }
}

impl Remote {
    /// Connect to the daemon of `data_dir` if one runs there: `None` when
    /// no socket answers (none was started, or it stopped).
    pub async fn connect_if_running(data_dir: &Path) -> Option<Self> {
        let path = socket_path(data_dir);
        if !path.exists() {
            return None;
        }
        let stream = UnixStream::connect(&path).await.ok()?;
        let (read, writer) = stream.into_split();
        Some(Self {
            lines: BufReader::new(read).lines(),
            writer,
            next_id: 1,
            notifications: VecDeque::new(),
        })
    }

    /// Call `method` with `params` (a JSON object) and wait for its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, RemoteError> {
        let id = self.next_id;
        self.next_id += 1;
        let params = match params {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let mut line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|_| RemoteError::Gone)?;
        loop {
            let value = self.read().await?;
            if value.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(error) = value.get("error") {
                    let error: RpcError =
                        serde_json::from_value(error.clone()).map_err(|_| RemoteError::Gone)?;
                    return Err(RemoteError::Rpc(error));
                }
                return Ok(value.get("result").cloned().unwrap_or(Value::Null));
            }
            if value.get("method").is_some() {
                self.notifications.push_back(value);
            }
        }
    }

    /// The next notification's params (the event record); waits for one.
    /// Cancel-safe: a notification is never lost to a cancelled wait.
    pub async fn next_notification(&mut self) -> Result<Value, RemoteError> {
        loop {
            if let Some(value) = self.notifications.pop_front() {
                return Ok(value.get("params").cloned().unwrap_or(Value::Null));
            }
            let value = self.read().await?;
            if value.get("method").is_some() {
                self.notifications.push_back(value);
            }
        }
    }

    async fn read(&mut self) -> Result<Value, RemoteError> {
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .map_err(|_| RemoteError::Gone)?
                .ok_or(RemoteError::Gone)?;
            if line.trim().is_empty() {
                continue;
            }
            return serde_json::from_str(&line).map_err(|_| RemoteError::Gone);
        }
    }
}
