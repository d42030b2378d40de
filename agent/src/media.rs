//! Documents for the backend to send (`POST /v1/media`): the body is
//! written to a private temporary file while its size is counted
//! (refused past the kind's limit), encrypted with the client library
//! (a fresh key, key-committing chunks), uploaded to the relay by the
//! device task, and kept as its attachment pointer under a random media
//! id. A message of `POST /v1/messages` names it in `document` and the
//! device sends the pointer to the customer, end-to-end encrypted.
//!
//! A template message cannot carry an attachment (its content is the
//! template instance), so a document sent with a template goes as a
//! second message right after it, of the service category: the relay
//! takes it only inside the 24-hour window the customer's last message
//! opened, and the daemon refuses a document outside it before sending
//! anything.
//!
//! The pointer kept in the database holds the document's key: the
//! database is private to the daemon (0600, like the messages' text it
//! already holds). The upload runs on the device task, which receives
//! nothing meanwhile (a 100 MB document holds it for that long).

use std::io::Write;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use comptoir_client::attachments::{self, AttachmentKind};
use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::AttachmentPointer;
use comptoir_protocol::proto::wire::ErrorCode;
use http_body_util::BodyExt;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::AppState;
use crate::api_error::{ApiError, ErrorBody};
use crate::device::{Command, Sent};
use crate::keys::Scope;

/// The longest file name kept.
const MAX_FILE_NAME: usize = 255;

/// The media routes (their own body limit: documents are large).
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/media", post(upload_media))
}

/// Where the document's name comes from.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MediaQuery {
    /// The file name the customer sees (no directories), e.g. `boarding-pass.pdf`.
    pub filename: String,
}

/// An uploaded document.
#[derive(Debug, Serialize, ToSchema)]
pub struct MediaResponse {
    /// Names the document in a message's `document.media_id`.
    pub id: String,
    /// Its MIME type.
    pub mime_type: String,
    /// Its length in bytes.
    pub file_size: u64,
    /// SHA-256 of the document, hex (the customer's client checks it).
    pub sha256: String,
}

/// A document sent with a message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentRef {
    /// The id `POST /v1/media` answered.
    pub media_id: String,
    /// The file name the customer sees (the uploaded one if left out).
    #[serde(default)]
    pub filename: Option<String>,
}

fn file_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty()
        || name.len() > MAX_FILE_NAME
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(ApiError::InvalidRequest(format!(
            "`filename` is a file name without directories or control characters, 1 to {MAX_FILE_NAME} bytes"
        )));
    }
    Ok(name.to_owned())
}

fn content_type(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = value.split(';').next().unwrap_or_default().trim();
    let valid = essence.split_once('/').is_some_and(|(a, b)| {
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
        };
        token(a) && token(b)
    });
    if !valid || essence.starts_with("multipart/") {
        return Err(ApiError::InvalidRequest(
            "send the document as the raw body with its MIME type in `Content-Type` (application/pdf)".into(),
        ));
    }
    Ok(essence.to_ascii_lowercase())
}

/// Upload a document: the raw body, its MIME type in `Content-Type`, its
/// name in `filename`. It is encrypted here and only the ciphertext goes
/// to the relay.
#[utoipa::path(
    post, path = "/v1/media", tag = "messages",
    params(MediaQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The document's bytes; `Content-Type` is its MIME type (application/pdf)"),
    responses(
        (status = 200, description = "Uploaded; name it in a message's `document`", body = MediaResponse),
        (status = 400, description = "Invalid request; nothing stored or sent", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks `messages:send`", body = ErrorBody),
        (status = 413, description = "media_too_large: past the limit for its kind (the daemon's, or the relay's); nothing stored", body = ErrorBody),
        (status = 503, description = "The relay is unreachable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn upload_media(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    crate::api::authorize(&state, &headers, Scope::MessagesSend)?;
    let query: MediaQuery = crate::api::query(&uri)?;
    let name = file_name(&query.filename)?;
    let mime = content_type(&headers)?;
    let limit = AttachmentKind::of(&mime).max_bytes();
    let too_large =
        || ApiError::MediaTooLarge(format!("a {mime} document is at most {limit} bytes here"));
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(too_large());
    }
    // The plaintext waits in the private data directory, never in /tmp,
    // and is deleted when this handler ends, whatever happens.
    let mut plain = tempfile::Builder::new()
        .prefix(".media-upload-")
        .tempfile_in(state.db.dir())
        .map_err(|e| ApiError::Io(format!("cannot make a temporary file: {e}")))?;
    let mut received = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            ApiError::InvalidRequest("the request body ended before it was complete".into())
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > limit {
            return Err(too_large());
        }
        plain
            .write_all(&data)
            .map_err(|e| ApiError::Io(format!("cannot write the temporary file: {e}")))?;
    }
    if received == 0 {
        return Err(ApiError::InvalidRequest("the document is empty".into()));
    }
    plain
        .flush()
        .map_err(|e| ApiError::Io(format!("cannot write the temporary file: {e}")))?;
    let dir = state.db.dir().to_path_buf();
    let mime_for_task = mime.clone();
    let mut file = tokio::task::spawn_blocking(move || {
        let encrypted = attachments::encrypt_file(plain.path(), &mime_for_task, &dir);
        drop(plain);
        encrypted
    })
    .await
    .map_err(|_| ApiError::Stopping)??;
    file.file_name = name;
    let file = Box::new(file);
    let (pointer, plaintext_digest) = (file.pointer(), file.plaintext_digest);
    let complete = crate::api::ask(&state, |reply| Command::UploadMedia { file, reply })
        .await
        .map_err(|e| match e {
            ApiError::Client(comptoir_client::ClientError::Relay {
                code: ErrorCode::BlobTooLarge,
                ..
            }) => ApiError::MediaTooLarge(format!(
                "the relay takes no {mime} document of {received} bytes"
            )),
            other => other,
        })?;
    if !complete {
        return Err(ApiError::Client(
            comptoir_client::ClientError::ConnectionClosed(
                "the relay did not finish the upload".into(),
            ),
        ));
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    state.db.put_media(
        &id,
        &pointer.encode_to_vec(),
        comptoir_client::client::now_ms(),
    )?;
    Ok((
        StatusCode::OK,
        Json(MediaResponse {
            id,
            mime_type: mime,
            file_size: received,
            sha256: hex::encode(plaintext_digest),
        }),
    ))
}

/// The document a message names, checked before anything is sent: a
/// known media id, and the customer's window open.
pub(crate) async fn prepare(
    state: &AppState,
    document: DocumentRef,
    to: AccountId,
) -> Result<AttachmentPointer, ApiError> {
    let bytes = state
        .db
        .media(document.media_id.trim())?
        .ok_or_else(|| ApiError::UnknownMedia(document.media_id.clone()))?;
    let mut pointer = AttachmentPointer::decode(bytes.as_slice())
        .map_err(|_| ApiError::UnknownMedia(document.media_id.clone()))?;
    if let Some(name) = document.filename {
        pointer.file_name = file_name(&name)?;
    }
    let customer = to.to_string();
    let open = crate::api::ask(state, |reply| Command::WindowOpen { customer, reply }).await?;
    if !open {
        return Err(ApiError::DocumentOutsideWindow);
    }
    Ok(pointer)
}

/// Send the document right after the message it goes with.
pub(crate) async fn send(
    state: &AppState,
    to: AccountId,
    pointer: AttachmentPointer,
    after: &Sent,
) -> Result<Sent, ApiError> {
    let pointer = Box::new(pointer);
    crate::api::ask(state, |reply| Command::SendDocument { to, pointer, reply })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, message = %after.id, "a document after a sent message");
            ApiError::DocumentNotSent(after.id.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_have_no_directories_or_control_characters() {
        assert_eq!(
            file_name(" boarding-pass.pdf ").ok().as_deref(),
            Some("boarding-pass.pdf")
        );
        for bad in [
            "",
            "..",
            "../etc/passwd",
            "a\\b.pdf",
            "a\nb.pdf",
            &"x".repeat(256),
        ] {
            assert!(file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_content_type_is_one_mime_type() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().expect("header"));
            content_type(&h)
        };
        assert_eq!(
            with("Application/PDF; charset=binary").ok().as_deref(),
            Some("application/pdf")
        );
        for bad in [
            "pdf",
            "multipart/form-data; boundary=x",
            "a/",
            "/b",
            "a b/c",
        ] {
            assert!(with(bad).is_err(), "{bad:?}");
        }
        assert!(content_type(&HeaderMap::new()).is_err());
    }
}
