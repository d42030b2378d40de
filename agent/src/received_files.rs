//! Files customers sent, fetched on demand for the agents' inbox and the
//! backend (`GET /v1/conversations/{customer}/files/{message}`): the
//! request's own task downloads the encrypted blob over the device's
//! connection (a [`comptoir_client::Sender`], chunk by chunk beside
//! everything else the device does; [`DOWNLOADS_AT_ONCE`] at a time,
//! stopped when the caller hangs up) and decrypts it with the client
//! library (both digests checked) into a private temporary directory;
//! the bytes go out as `application/octet-stream`
//! with `Content-Disposition: attachment`, so a browser saves the file and
//! never renders it, whatever its name, type or contents. The name the
//! customer gave is untrusted: the header carries a sanitised ASCII form,
//! quoted, and the UTF-8 original percent-encoded (RFC 6266).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use comptoir_client::{ClientError, MessageId};
use comptoir_protocol::AccountId;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::Semaphore;

use crate::db::AttachmentRow;
use crate::device::SendPath;

/// How long a download may take (a 100 MB file over a slow link).
const DOWNLOAD_WAIT: Duration = Duration::from_secs(600);

/// Downloads running at once, daemon-wide; more wait their turn (and
/// give it up when their caller hangs up).
pub const DOWNLOADS_AT_ONCE: usize = 4;

/// Where received files are downloaded through: the device's current
/// connection, and the turns to use it. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Downloads {
    path: SendPath,
    turns: Arc<Semaphore>,
}

impl Downloads {
    /// Downloads through the connection the device publishes in `path`.
    pub fn new(path: SendPath) -> Self {
        Self {
            path,
            turns: Arc::new(Semaphore::new(DOWNLOADS_AT_ONCE)),
        }
    }
}

impl Default for Downloads {
    /// Downloads through no connection (each one is refused as
    /// unavailable) until a device publishes one.
    fn default() -> Self {
        Self::new(SendPath::default())
    }
}

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
    /// The device is not connected (or the daemon is stopping), or the
    /// download took longer than [`DOWNLOAD_WAIT`].
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

/// A downloaded, decrypted file, open: its name is already removed from
/// the disk (with its private temporary directory), so the plaintext is
/// gone once this is dropped (its response sent, or its caller gone),
/// however slowly the caller reads.
#[derive(Debug)]
pub struct Downloaded {
    file: tokio::fs::File,
    len: u64,
}

/// The prefix of a download's temporary directory under the scratch
/// directory.
const DOWNLOAD_DIR_PREFIX: &str = "download-";

/// Remove what downloads a crash interrupted left under `scratch` (the
/// daemon calls it at start, before any download).
pub fn sweep(scratch: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(scratch)? {
        let entry = entry?;
        if entry.file_type()?.is_dir()
            && entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(DOWNLOAD_DIR_PREFIX))
        {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Download and decrypt `customer`'s file of message `id` (known from
/// `row`) through `downloads`, into a temporary directory under
/// `scratch`. Waiting for a turn counts in [`DOWNLOAD_WAIT`]; dropping
/// the future stops the download.
pub async fn fetch(
    downloads: &Downloads,
    scratch: &Path,
    customer: AccountId,
    id: MessageId,
) -> Result<Downloaded, FetchError> {
    tokio::time::timeout(DOWNLOAD_WAIT, fetch_now(downloads, scratch, customer, id))
        .await
        .map_err(|_| FetchError::Unavailable)?
}

async fn fetch_now(
    downloads: &Downloads,
    scratch: &Path,
    customer: AccountId,
    id: MessageId,
) -> Result<Downloaded, FetchError> {
    let _turn = downloads
        .turns
        .acquire()
        .await
        .map_err(|_| FetchError::Unavailable)?;
    let sender = downloads
        .path
        .current()
        .await
        .ok_or(FetchError::Unavailable)?;
    let dir = tempfile::Builder::new()
        .prefix(DOWNLOAD_DIR_PREFIX)
        .tempdir_in(scratch)?;
    let destination = dir.path().join("file");
    match sender.download_attachment(customer, id, &destination).await {
        Ok(()) => {}
        // A relay's refusal says what it is; anything else (the connection
        // went, the daemon is stopping, a local file failed, the file did
        // not match its digests) is logged, and the caller told to retry.
        Err(e @ ClientError::Relay { .. }) => return Err(FetchError::Client(e)),
        Err(e) => {
            tracing::warn!(error = %e, "downloading a customer's file");
            return Err(FetchError::Unavailable);
        }
    }
    let file = tokio::fs::File::open(&destination).await?;
    let len = file.metadata().await?.len();
    // The open file keeps its bytes; its name goes now, off the async
    // workers (removing a large file takes a while).
    tokio::task::spawn_blocking(move || dir.close())
        .await
        .map_err(|_| FetchError::Unavailable)??;
    Ok(Downloaded { file, len })
}

/// The response carrying the file `row` describes, as a download, read
/// from `downloaded` as it is sent (never held whole in memory).
pub fn download_response(row: &AttachmentRow, downloaded: Downloaded) -> Response {
    use tokio::io::AsyncReadExt;
    let disposition = HeaderValue::from_str(&content_disposition(&row.file_name))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment; filename=\"attachment\""));
    let len = downloaded.len;
    let chunks = futures_util::stream::unfold(Some(downloaded), |state| async move {
        let mut downloaded = state?;
        let mut buf = vec![0u8; 64 * 1024];
        match downloaded.file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), Some(downloaded)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::CONTENT_LENGTH, HeaderValue::from(len)),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a crash left in the middle of a download goes at the next
    /// start, and nothing else.
    #[test]
    fn a_sweep_removes_interrupted_downloads_only() -> std::io::Result<()> {
        let scratch = tempfile::tempdir()?;
        let interrupted = scratch.path().join("download-abc123");
        std::fs::create_dir(&interrupted)?;
        std::fs::write(interrupted.join("file"), b"a customer's passport")?;
        std::fs::create_dir(scratch.path().join("media"))?;
        std::fs::write(scratch.path().join("download-notes.txt"), b"kept")?;
        assert_eq!(sweep(scratch.path())?, 1);
        assert!(!interrupted.exists());
        assert!(scratch.path().join("media").exists());
        assert!(scratch.path().join("download-notes.txt").exists());
        assert_eq!(sweep(scratch.path())?, 0);
        Ok(())
    }

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
