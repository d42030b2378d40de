//! JSON-RPC 2.0 as the daemon speaks it: one JSON object per line (no
//! batches), requests with named parameters, responses, notifications, and
//! the typed errors with their codes (docs/CLIENT-RPC.md lists them).
//!
//! Written here rather than taken from a crate: the framing is a line
//! reader and three `serde_json` shapes, while the JSON-RPC crates that
//! exist bring HTTP or WebSocket transports and their dependency trees
//! for what is, over a local socket, newline-delimited JSON.

use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use comptoir_client::error::ClientError;

/// The longest request line the daemon reads (a text message is at most
/// 8 KiB; its JSON escaping can at most sextuple it). A longer line is
/// refused and its connection closed: reading on would buffer whatever a
/// program sends.
pub const MAX_LINE: usize = 256 * 1024;

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON that is not a JSON-RPC 2.0 request.
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Missing, unknown or badly typed parameters, or a value refused (a text
/// too long, a malformed id).
pub const INVALID_PARAMS: i64 = -32602;
/// The daemon could not use its store; its log says why.
pub const INTERNAL_ERROR: i64 = -32603;
/// The request failed for a reason the message gives.
pub const FAILED: i64 = -32000;
/// No contact by that name, no such account, message or request.
pub const NOT_FOUND: i64 = -32001;
/// The relay is unreachable (a message sent meanwhile waits in the
/// outbox and goes on the daemon's next connect).
pub const RELAY_UNREACHABLE: i64 = -32002;
/// The relay refused (the recipient blocked this account, for example).
pub const RELAY_REFUSED: i64 = -32003;
/// The contact's identity changed: compare safety numbers and trust it.
pub const IDENTITY_CHANGED: i64 = -32004;
/// The account cannot do this yet (not registered, not linked, removed,
/// not the first device).
pub const ACCOUNT_STATE: i64 = -32005;

/// A JSON-RPC error: its code, a message saying what to do, and in `data`
/// the exit code the same failure has on the command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RpcError {
    /// One of the codes above.
    pub code: i64,
    /// What happened and what to do, for people.
    pub message: String,
    /// `{"exit_code": N}`: what `comptoir` exits with for this error.
    #[serde(default)]
    pub data: ErrorData,
}

/// The `data` of an [`RpcError`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorData {
    /// The command line's exit code for this failure (see `--help`).
    pub exit_code: u8,
}

impl Default for ErrorData {
    fn default() -> Self {
        Self { exit_code: 1 }
    }
}

impl RpcError {
    /// An error with `code`, `message` and the command line's `exit_code`.
    pub fn new(code: i64, message: impl Into<String>, exit_code: u8) -> Self {
        Self {
            code,
            message: message.into(),
            data: ErrorData { exit_code },
        }
    }

    /// Parameters that do not fit the method.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message, 2)
    }

    /// A client library error as a JSON-RPC error. Errors whose text would
    /// name files or internals (the store, I/O) are logged on the daemon's
    /// standard error and answered with a message that names neither.
    pub fn from_client(error: &ClientError) -> Self {
        let exit_code = crate::exit_code(error);
        let code = match error {
            ClientError::Io { .. }
            | ClientError::Database(_)
            | ClientError::CorruptStore(_)
            | ClientError::Kdf(_)
            | ClientError::StoreLocked { .. }
            | ClientError::NotInitialized { .. }
            | ClientError::AlreadyInitialized { .. }
            | ClientError::Closed
            | ClientError::InUse => {
                tracing::error!(error = %error, "a request failed on the store");
                return Self::new(
                    INTERNAL_ERROR,
                    "the daemon could not use its store; its log (standard error) says why",
                    1,
                );
            }
            ClientError::InvalidArgument(_) | ClientError::TextTooLong { .. } => INVALID_PARAMS,
            ClientError::UnknownContact(_)
            | ClientError::UnknownPeer(_)
            | ClientError::NoSuchAccount(_)
            | ClientError::NotFound(_)
            | ClientError::NotQueued(_) => NOT_FOUND,
            ClientError::Connect { .. }
            | ClientError::ConnectionClosed(_)
            | ClientError::NotConnected
            | ClientError::Timeout(_) => RELAY_UNREACHABLE,
            ClientError::Blocked { .. } | ClientError::Relay { .. } => RELAY_REFUSED,
            ClientError::IdentityChanged { .. } => IDENTITY_CHANGED,
            ClientError::NotRegistered
            | ClientError::NotLinked
            | ClientError::DeviceRemoved { .. }
            | ClientError::NotPrimaryDevice => ACCOUNT_STATE,
            _ => FAILED,
        };
        // A relay's words are carried as they are (JSON escapes them); a
        // program showing them to people neutralises control characters.
        Self::new(code, error.to_string(), exit_code)
    }
}

/// One request read from a line.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Its id; `None` for a notification (no response is sent).
    pub id: Option<Value>,
    /// The method's name.
    pub method: String,
    /// The named parameters (an empty object when left out).
    pub params: serde_json::Map<String, Value>,
}

/// Parse one line as a request. The error carries the id to answer with
/// (`null` when it could not be read).
pub fn parse_request(line: &str) -> Result<Request, (Value, RpcError)> {
    let value: Value = serde_json::from_str(line).map_err(|_| {
        (
            Value::Null,
            RpcError::new(
                PARSE_ERROR,
                "not valid JSON: send one JSON-RPC 2.0 request object per line",
                2,
            ),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err((
            Value::Null,
            RpcError::new(
                INVALID_REQUEST,
                "a request is one JSON object per line (batches are not supported)",
                2,
            ),
        ));
    };
    let id = object.remove("id");
    let answer_to = id.clone().unwrap_or(Value::Null);
    let invalid = |message: &str| {
        (
            answer_to.clone(),
            RpcError::new(INVALID_REQUEST, message, 2),
        )
    };
    if !matches!(
        &id,
        None | Some(Value::String(_) | Value::Number(_) | Value::Null)
    ) {
        return Err(invalid("\"id\" must be a string or a number"));
    }
    if object.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let Some(Value::String(method)) = object.remove("method") else {
        return Err(invalid("\"method\" must be the method's name, a string"));
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(params)) => params,
        Some(_) => {
            return Err((
                answer_to,
                RpcError::invalid_params(
                    "\"params\" must be an object of named parameters (see docs/CLIENT-RPC.md)",
                ),
            ));
        }
    };
    Ok(Request { id, method, params })
}

/// The response line to request `id`.
pub fn response(id: &Value, result: Result<Value, RpcError>) -> String {
    let value = match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    };
    value.to_string()
}

/// A notification line: `method` with `params`.
pub fn notification(method: &str, params: &Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

/// What reading one line gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line (without its newline); not UTF-8 is refused as a parse error
    /// by [`parse_request`] since it is given lossily.
    Text(String),
    /// More than [`MAX_LINE`] bytes without a newline.
    TooLong,
    /// The other side closed.
    End,
}

/// Read one line of at most [`MAX_LINE`] bytes.
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Line> {
    let mut buffer = Vec::new();
    let limit = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
    let read = (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut buffer)
        .await?;
    if read == 0 {
        return Ok(Line::End);
    }
    if buffer.last() != Some(&b'\n') && buffer.len() > MAX_LINE {
        return Ok(Line::TooLong);
    }
    while matches!(buffer.last(), Some(b'\n' | b'\r')) {
        buffer.pop();
    }
    Ok(Line::Text(String::from_utf8_lossy(&buffer).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed_and_bad_ones_typed() {
        let ok = parse_request(r#"{"jsonrpc":"2.0","id":1,"method":"whoami"}"#).expect("ok");
        assert_eq!(ok.method, "whoami");
        assert_eq!(ok.id, Some(json!(1)));
        assert!(ok.params.is_empty());
        let cases = [
            ("{", PARSE_ERROR),
            ("[]", INVALID_REQUEST),
            (r#"{"id":1,"method":"whoami"}"#, INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1}"#, INVALID_REQUEST),
            (
                r#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#,
                INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#,
                INVALID_PARAMS,
            ),
        ];
        for (line, code) in cases {
            let (_, error) = parse_request(line).expect_err(line);
            assert_eq!(error.code, code, "{line}");
        }
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_is_refused() {
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        let mut reader = tokio::io::BufReader::new(&long[..]);
        assert_eq!(read_line(&mut reader).await.expect("read"), Line::TooLong);
        let mut reader = tokio::io::BufReader::new(&b"{}\r\n"[..]);
        assert_eq!(
            read_line(&mut reader).await.expect("read"),
            Line::Text("{}".into())
        );
        assert_eq!(read_line(&mut reader).await.expect("read"), Line::End);
    }
}
