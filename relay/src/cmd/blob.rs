//! `BeginUpload` / `UploadChunk` / `FetchBlob`: encrypted attachments,
//! uploaded in chunks (resumable: `UploadStatus` says how much is held)
//! and read back in chunks by any authenticated device that knows the
//! blob's id (docs/PROTOCOL.md §12).

use comptoir_protocol::proto::wire::{self, server_frame::Body};

use super::device;
use crate::blobs::{BLOB_DIGEST_LEN, BLOB_ID_LEN, BlobId, BlobKind, BlobMeta, UploadStatus};
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::session::{Reply, Session};

fn blob_id(bytes: &[u8]) -> Result<BlobId, RelayError> {
    BlobId::try_from(bytes).map_err(|_| {
        invalid(format!(
            "blob_id must be {BLOB_ID_LEN} bytes, got {}",
            bytes.len()
        ))
    })
}

fn status_frame(request_id: u64, id: BlobId, status: UploadStatus) -> Reply {
    Reply::Frame(frame::server(
        request_id,
        Body::UploadStatus(wire::UploadStatus {
            blob_id: id.to_vec(),
            received: status.received,
            complete: status.complete,
            expires_at_ms: status.expires_at_ms,
        }),
    ))
}

/// Take one token of the account's attachment-chunk budget.
fn limit<S>(session: &Session<S>) -> Result<(), RelayError> {
    let account = device(session)?.account;
    session
        .relay
        .blob_chunk_limiter
        .check(&account)
        .map_err(|retry_after_ms| RelayError::RateLimited {
            scope: "attachment chunks",
            retry_after_ms,
        })
}

pub(crate) async fn begin<S>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::BeginUpload,
) -> Result<Reply, RelayError> {
    let owner = device(session)?.account;
    let id = blob_id(&request.blob_id)?;
    let kind = BlobKind::from_wire(request.kind)
        .ok_or_else(|| invalid("kind must be image, audio, video or document"))?;
    let digest: [u8; BLOB_DIGEST_LEN] = request
        .digest
        .as_slice()
        .try_into()
        .map_err(|_| invalid("digest must be the 32-byte SHA-256 of the encrypted blob"))?;
    if request.size == 0 {
        return Err(invalid("size must be the encrypted blob's length, not 0"));
    }
    let relay = &session.relay;
    let now = relay.clock.now_ms();
    let status = relay
        .blobs
        .begin(
            id,
            BlobMeta {
                owner,
                kind,
                size: request.size,
                digest,
                created_at_ms: now,
                expires_at_ms: now.saturating_add(relay.blobs.limits().ttl_ms),
                complete: false,
            },
        )
        .await?;
    Ok(status_frame(request_id, id, status))
}

pub(crate) async fn chunk<S>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::UploadChunk,
) -> Result<Reply, RelayError> {
    limit(session)?;
    let owner = device(session)?.account;
    let id = blob_id(&request.blob_id)?;
    let status = session
        .relay
        .blobs
        .append(owner, id, request.offset, request.data)
        .await?;
    Ok(status_frame(request_id, id, status))
}

pub(crate) async fn fetch<S>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::FetchBlob,
) -> Result<Reply, RelayError> {
    limit(session)?;
    let id = blob_id(&request.blob_id)?;
    if request.max_len == 0 {
        return Err(invalid("max_len must be at least 1"));
    }
    let read = session
        .relay
        .blobs
        .read(id, request.offset, request.max_len as usize)
        .await?;
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::BlobChunk(wire::BlobChunk {
            blob_id: id.to_vec(),
            offset: request.offset,
            data: read.data,
            size: read.size,
        }),
    )))
}
