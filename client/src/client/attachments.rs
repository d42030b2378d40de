//! Attachments (docs/PROTOCOL.md §12): upload an encrypted file to the
//! relay in chunks (resuming where the relay stands), send its pointer in
//! an end-to-end encrypted message, and download and decrypt one received.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::{AttachmentPointer, content};
use comptoir_protocol::proto::wire::{
    BeginUpload, FetchBlob, UploadChunk, UploadStatus, client_frame, server_frame,
};

use crate::attachments::{self, Decryptor, EncryptedFile};
use crate::error::{ClientError, Result};
use crate::messages::MessageId;
use crate::outgoing_bodies::OutgoingBody;

use super::{Client, unexpected};

/// Bytes per upload or download request (the relay's maximum).
pub const TRANSFER_CHUNK: usize = 128 * 1024;

/// What one call to [`Client::upload`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadReport {
    /// Bytes the relay already held when it began (0 for a new upload).
    pub resumed_from: u64,
    /// Chunks sent by this call.
    pub chunks_sent: usize,
    /// The relay holds the whole blob and checked its digest.
    pub complete: bool,
}

/// What a message's attachment says of its file (no key material): for
/// showing it, and for picking where to save it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// The file's name as the sender gave it (untrusted: it may hold
    /// directories, `..` or control characters; never use it as a path).
    pub file_name: String,
    /// Its MIME type, as the sender gave it.
    pub content_type: String,
    /// Its length in bytes.
    pub size: u64,
}

impl Client {
    /// The directory of this account's store (its data directory).
    pub fn data_dir(&self) -> &Path {
        self.store.dir()
    }

    /// The file carried by message `id` with `peer`, if it carries one.
    pub fn attachment_info(&self, peer: &AccountId, id: &MessageId) -> Result<Option<FileInfo>> {
        Ok(
            attachments::get(&self.store, peer, id)?.map(|pointer| FileInfo {
                file_name: pointer.file_name,
                content_type: pointer.content_type,
                size: pointer.size,
            }),
        )
    }

    /// Encrypt the file at `path` (no network): see
    /// [`attachments::encrypt_file`].
    pub fn encrypt_file(&self, path: &Path, content_type: &str) -> Result<EncryptedFile> {
        attachments::encrypt_file(path, content_type, self.store.dir())
    }

    /// Upload `file` to the relay, or resume its upload: the relay says
    /// how many bytes it holds, and only the rest is sent.
    pub async fn upload(&mut self, file: &EncryptedFile) -> Result<UploadReport> {
        self.upload_at_most(file, usize::MAX).await
    }

    /// [`Self::upload`], sending at most `max_chunks` chunks (tests: an
    /// upload cut short).
    #[doc(hidden)]
    pub async fn upload_at_most(
        &mut self,
        file: &EncryptedFile,
        max_chunks: usize,
    ) -> Result<UploadReport> {
        let reply = self
            .request(
                client_frame::Body::BeginUpload(BeginUpload {
                    blob_id: file.blob_id.to_vec(),
                    kind: file.kind.to_wire(),
                    size: file.encrypted_size,
                    digest: file.digest.to_vec(),
                }),
                "the upload",
            )
            .await?;
        let mut status = upload_status(reply, file)?;
        let resumed_from = status.received;
        let mut stream = std::fs::File::open(file.stream_path()).map_err(|e| {
            ClientError::InvalidArgument(format!("cannot read the encrypted file: {e}"))
        })?;
        let mut chunks_sent = 0;
        let mut buffer = vec![0u8; TRANSFER_CHUNK];
        while !status.complete && chunks_sent < max_chunks {
            let offset = status.received;
            let len = (file.encrypted_size - offset).min(TRANSFER_CHUNK as u64) as usize;
            stream
                .seek(SeekFrom::Start(offset))
                .and_then(|_| stream.read_exact(&mut buffer[..len]))
                .map_err(|e| {
                    ClientError::InvalidArgument(format!("cannot read the encrypted file: {e}"))
                })?;
            let reply = self
                .request(
                    client_frame::Body::UploadChunk(UploadChunk {
                        blob_id: file.blob_id.to_vec(),
                        offset,
                        data: buffer[..len].to_vec(),
                    }),
                    "the upload",
                )
                .await?;
            status = upload_status(reply, file)?;
            if status.received <= offset && !status.complete {
                return Err(ClientError::UnexpectedFrame(
                    "an upload status that does not move forward".into(),
                ));
            }
            chunks_sent += 1;
        }
        Ok(UploadReport {
            resumed_from,
            chunks_sent,
            complete: status.complete,
        })
    }

    /// Upload `file` (or finish its upload) and send it to `peer` in an
    /// end-to-end encrypted message carrying its key and digests; the
    /// history shows its name, type and size.
    pub async fn send_attachment(
        &mut self,
        peer: AccountId,
        file: &EncryptedFile,
    ) -> Result<MessageId> {
        if !self.upload(file).await?.complete {
            return Err(ClientError::InvalidArgument(
                "the relay did not finish the upload; try again".into(),
            ));
        }
        self.send_uploaded_attachment(peer, &file.pointer()).await
    }

    /// Send `peer` the pointer of an attachment already uploaded (a
    /// business's agent uploads a document once and sends it later);
    /// like [`Self::send_attachment`] without the upload. The relay keeps
    /// the blob until its expiry, so send before it.
    pub async fn send_uploaded_attachment(
        &mut self,
        peer: AccountId,
        pointer: &AttachmentPointer,
    ) -> Result<MessageId> {
        let text = attachments::summary(pointer);
        let live = self.live();
        let body = OutgoingBody {
            body: content::Body::Attachment(pointer.clone()),
            category: live.text_category(),
            template_id: String::new(),
        };
        let sent = live.send_message(peer, &text, Some(body)).await;
        self.note_connection(&sent);
        let id = sent?;
        attachments::put(&self.store, &peer, &id, pointer)?;
        Ok(id)
    }

    /// Download the attachment of message `id` with `peer` and decrypt it
    /// to `destination`, checking the encrypted stream's and the file's
    /// digests; on any refusal nothing is left at `destination`.
    pub async fn download_attachment(
        &mut self,
        peer: AccountId,
        id: MessageId,
        destination: &Path,
    ) -> Result<()> {
        let pointer = attachments::get(&self.store, &peer, &id)?.ok_or_else(|| {
            ClientError::InvalidArgument("that message carries no attachment".into())
        })?;
        self.fetch_and_decrypt(&pointer, destination).await
    }

    /// Download the blob `pointer` names and decrypt it to `destination`,
    /// checking both digests; on any refusal nothing is left there.
    pub(super) async fn fetch_and_decrypt(
        &mut self,
        pointer: &AttachmentPointer,
        destination: &Path,
    ) -> Result<()> {
        let mut download = BlobDownload::new(pointer.clone(), destination.to_path_buf()).await?;
        loop {
            let reply = self
                .request(download.next_request(), "the download")
                .await?;
            match download.take(reply).await? {
                Taken::More(more) => download = more,
                Taken::Done => return Ok(()),
            }
        }
    }
}

impl super::sender::Sender {
    /// [`Client::download_attachment`] from another task, at the same time
    /// as the client and other senders: each chunk is a request of its
    /// own on the shared connection, and the file is written off the
    /// async workers, so a long download holds up nothing else. A closed
    /// connection does not end it: it waits up to
    /// [`super::REQUEST_TIMEOUT`] for the client's next connection (as
    /// does a download started while the client is offline) and goes on
    /// there from where it was, at most [`DOWNLOAD_RECONNECTS`] times; the
    /// client closed or dropped ends it at once ([`ClientError::Closed`]),
    /// and a chunk the relay does not answer within
    /// [`super::REQUEST_TIMEOUT`] ends it with [`ClientError::Timeout`].
    /// Dropping the future stops it; a step already on the blocking pool
    /// finishes first (the last one may still put the file at
    /// `destination`).
    pub async fn download_attachment(
        &self,
        peer: AccountId,
        id: MessageId,
        destination: &Path,
    ) -> Result<()> {
        let super::sender::Live {
            store,
            mut requester,
            ..
        } = self.live()?;
        let pointer = attachments::get(&store, &peer, &id)?.ok_or_else(|| {
            ClientError::InvalidArgument("that message carries no attachment".into())
        })?;
        // The store is not needed past here: a download does not keep the
        // client from closing.
        drop(store);
        let mut reconnects = 0;
        let mut download = BlobDownload::new(pointer, destination.to_path_buf()).await?;
        loop {
            let asked = super::sender::request_on(
                requester.as_ref(),
                download.next_request(),
                "the download",
            )
            .await;
            let reply = match asked {
                Ok(reply) => reply,
                Err(e @ (ClientError::ConnectionClosed(_) | ClientError::NotConnected))
                    if reconnects < DOWNLOAD_RECONNECTS =>
                {
                    reconnects += 1;
                    requester = Some(self.next_connection(requester.as_ref()).await?.ok_or(e)?);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match download.take(reply).await? {
                Taken::More(more) => download = more,
                Taken::Done => return Ok(()),
            }
        }
    }
}

/// How many lost connections one download survives (see
/// [`super::sender::Sender::download_attachment`]).
const DOWNLOAD_RECONNECTS: u32 = 3;

/// One download, chunk by chunk, without network I/O of its own: the
/// caller sends [`BlobDownload::next_request`] and hands back the reply.
/// Decrypting and writing the file run on the blocking pool (a chunk is
/// 128 KiB, the last one ends with a sync of the whole file), never on
/// an async worker.
struct BlobDownload {
    pointer: AttachmentPointer,
    blob_id: Vec<u8>,
    decryptor: Decryptor,
    offset: u64,
}

/// What taking a reply left: more to fetch, or the file in place.
enum Taken {
    More(Box<BlobDownload>),
    Done,
}

impl BlobDownload {
    async fn new(pointer: AttachmentPointer, destination: PathBuf) -> Result<Box<Self>> {
        let blob_id = hex::decode(&pointer.blob_id)
            .map_err(|_| ClientError::InvalidArgument("the attachment's id is not hex".into()))?;
        blocking(move || {
            let decryptor = Decryptor::new(&pointer, &destination)?;
            Ok(Box::new(Self {
                pointer,
                blob_id,
                decryptor,
                offset: 0,
            }))
        })
        .await
    }

    /// The request for the next chunk.
    fn next_request(&self) -> client_frame::Body {
        client_frame::Body::FetchBlob(FetchBlob {
            blob_id: self.blob_id.clone(),
            offset: self.offset,
            max_len: TRANSFER_CHUNK as u32,
        })
    }

    /// Take the relay's reply to [`Self::next_request`]; once the whole
    /// blob arrived, check both digests and move the file into place.
    async fn take(mut self: Box<Self>, reply: server_frame::Body) -> Result<Taken> {
        let server_frame::Body::BlobChunk(chunk) = reply else {
            return Err(unexpected("BlobChunk", &reply));
        };
        if chunk.offset != self.offset || chunk.size != self.pointer.encrypted_size {
            return Err(ClientError::UnexpectedFrame(
                "a download chunk for another place or blob".into(),
            ));
        }
        if chunk.data.is_empty() && self.offset < chunk.size {
            return Err(ClientError::UnexpectedFrame(
                "an empty download chunk".into(),
            ));
        }
        blocking(move || {
            self.decryptor.push(&chunk.data)?;
            self.offset += chunk.data.len() as u64;
            if self.offset < chunk.size {
                return Ok(Taken::More(self));
            }
            self.decryptor.finish()?;
            Ok(Taken::Done)
        })
        .await
    }
}

/// Run `work` (file I/O) on the blocking pool (a runtime shutting down
/// meanwhile is the client closing; a panic goes on as one).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(ClientError::Closed),
    }
}

/// The relay's `UploadStatus` for `file`, checked: its blob, and no more
/// bytes than the file has.
fn upload_status(reply: server_frame::Body, file: &EncryptedFile) -> Result<UploadStatus> {
    let status = match reply {
        server_frame::Body::UploadStatus(status) => status,
        other => return Err(unexpected("UploadStatus", &other)),
    };
    if status.blob_id != file.blob_id
        || status.received > file.encrypted_size
        || (status.complete && status.received != file.encrypted_size)
    {
        return Err(ClientError::UnexpectedFrame(
            "an upload status for another blob or another length".into(),
        ));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review finding 7: a relay's status for another blob, or past the
    /// stream's length, is refused rather than trusted (it would underflow
    /// the bytes left to send).
    #[test]
    fn an_upload_status_from_a_hostile_relay_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, vec![7u8; 5000]).unwrap();
        let file = attachments::encrypt_file(&path, "application/pdf", dir.path()).unwrap();
        let status = |blob_id: Vec<u8>, received: u64, complete: bool| {
            server_frame::Body::UploadStatus(UploadStatus {
                blob_id,
                received,
                complete,
                expires_at_ms: 0,
            })
        };
        let ours = file.blob_id.to_vec();
        assert!(upload_status(status(ours.clone(), 100, false), &file).is_ok());
        for bad in [
            status(vec![0; 16], 100, false),
            status(ours.clone(), file.encrypted_size + 1, false),
            status(ours, 100, true),
        ] {
            assert!(matches!(
                upload_status(bad, &file),
                Err(ClientError::UnexpectedFrame(_))
            ));
        }
    }
}
