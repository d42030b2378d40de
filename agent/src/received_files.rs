//! Files customers sent, fetched on demand for the agents' inbox and the
//! backend (`GET /v1/conversations/{customer}/files/{message}`): the
//! device task downloads the encrypted blob from the relay and decrypts
//! it with the client library (both digests checked) into a private
//! temporary directory; the bytes go out as `application/octet-stream`
//! with `Content-Disposition: attachment`, so a browser saves the file and
//! never renders it, whatever its name, type or contents. The name the
//! customer gave is untrusted: the header carries a sanitised ASCII form,
//! quoted, and the UTF-8 original percent-encoded (RFC 6266).

use std::path::Path;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use comptoir_client::{ClientError, MessageId};
use comptoir_protocol::AccountId;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::{mpsc, oneshot};

use crate::db::AttachmentRow;
use crate::device::Command;

/// How long a download may take (a 100 MB file over a slow link).
const DOWNLOAD_WAIT: Duration = Duration::from_secs(600);

/// RFC 5987 `attr-char`s are left as they are; everything else is
/// percent-encoded.
const ATTR_CHAR_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Why a received file could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The device task is gone (the daemon is stopping), or the download
    /// took longer than [`DOWNLOAD_WAIT`].
    #[error("the daemon could not fetch the file now")]
    Unavailable,
    /// The client library could not download or check it.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The temporary file failed.
    #[error("the daemon could not keep the file: {0}")]
    Io(#[from] std::io::Error),
}

/// The ASCII name a `filename="…"` parameter carries: the last path
/// component, letters, digits and `.-_ ()` kept, anything else `_`,
/// no leading dots, at most 100 characters; `attachment` when nothing
/// is left.
pub fn safe_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ' | '(' | ')') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        "attachment".to_owned()
    } else {
        cleaned
    }
}

/// `attachment; filename="safe"; filename*=UTF-8''encoded` for `name`.
pub fn content_disposition(name: &str) -> String {
    let original: String = name.chars().filter(|c| !c.is_control()).collect();
    let original = original.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut value = format!("attachment; filename=\"{}\"", safe_file_name(name));
    if !original.is_empty() {
        value.push_str("; filename*=UTF-8''");
        value.push_str(&utf8_percent_encode(original, ATTR_CHAR_ENCODE).to_string());
    }
    value
}

/// Download and decrypt `customer`'s file of message `id` (known from
/// `row`) through the device task, into a temporary directory under
/// `scratch`; its bytes, the directory removed.
pub async fn fetch(
    commands: &mpsc::Sender<Command>,
    scratch: &Path,
    customer: AccountId,
    id: MessageId,
) -> Result<Vec<u8>, FetchError> {
    let dir = tempfile::Builder::new()
        .prefix("download-")
        .tempdir_in(scratch)?;
    let destination = dir.path().join("file");
    let (reply, answer) = oneshot::channel();
    commands
        .send(Command::DownloadAttachment {
            customer,
            id,
            destination: destination.clone(),
            reply,
        })
        .await
        .map_err(|_| FetchError::Unavailable)?;
    match tokio::time::timeout(DOWNLOAD_WAIT, answer).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(FetchError::Client(e)),
        _ => return Err(FetchError::Unavailable),
    }
    let bytes = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&destination);
        drop(dir);
        bytes
    })
    .await
    .map_err(|_| FetchError::Unavailable)??;
    Ok(bytes)
}

/// The response carrying `bytes` of the file `row` describes, as a
/// download.
pub fn download_response(row: &AttachmentRow, bytes: Vec<u8>) -> Response {
    let disposition = HeaderValue::from_str(&content_disposition(&row.file_name))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment; filename=\"attachment\""));
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_file_name_is_quoted_safely() {
        let name = "../<script>\"a\";\r\nX-Evil: 1 é.html";
        let value = content_disposition(name);
        assert!(HeaderValue::from_str(&value).is_ok(), "{value}");
        assert!(!value.contains('\r') && !value.contains('\n'));
        let quoted = value
            .strip_prefix("attachment; filename=\"")
            .and_then(|rest| rest.split_once('"'))
            .map(|(q, _)| q)
            .expect("quoted");
        assert_eq!(quoted, "_script__a____X-Evil_ 1 _.html");
        assert!(value.ends_with("X-Evil%3A%201%20%C3%A9.html"), "{value}");
        assert_eq!(safe_file_name(".."), "attachment");
        assert_eq!(safe_file_name("dir/.hidden"), "hidden");
        assert_eq!(safe_file_name("report.pdf"), "report.pdf");
    }
}
