//! Attachments on this device: a file encrypted to a temporary file as a
//! stream of key-committing chunks (`comptoir_protocol::attachment`),
//! ready to upload; a downloaded stream decrypted to its destination while
//! both digests are checked; and the pointers (blob id, key, digests) of
//! the attachments in the history, kept sealed in the store.
//!
//! Memory stays bounded by one chunk whatever the file's size: files are
//! read and written chunk by chunk.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use comptoir_protocol::AccountId;
use comptoir_protocol::attachment::{
    AttachmentKey, AttachmentOpener, AttachmentSealer, DEFAULT_CHUNK_LEN, HEADER_LEN,
};
use comptoir_protocol::proto::content::AttachmentPointer;
use prost::Message;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::messages::MessageId;
use crate::store::{Store, Tree};

/// Largest image, video or audio file and document a relay takes by
/// default (bytes before encryption; a relay may set others).
pub const IMAGE_MAX_BYTES: u64 = 5_000_000;
/// See [`IMAGE_MAX_BYTES`].
pub const AUDIO_VIDEO_MAX_BYTES: u64 = 16_000_000;
/// See [`IMAGE_MAX_BYTES`].
pub const DOCUMENT_MAX_BYTES: u64 = 100_000_000;

/// What an attachment holds, for the relay's size limits (the wire
/// `BlobKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachmentKind {
    /// `image/…`
    Image,
    /// `audio/…`
    Audio,
    /// `video/…`
    Video,
    /// Anything else.
    Document,
}

impl AttachmentKind {
    /// The kind of a MIME content type.
    pub fn of(content_type: &str) -> Self {
        match content_type.split('/').next().unwrap_or("") {
            "image" => Self::Image,
            "audio" => Self::Audio,
            "video" => Self::Video,
            _ => Self::Document,
        }
    }

    /// The wire `BlobKind` number.
    pub fn to_wire(self) -> i32 {
        match self {
            Self::Image => 1,
            Self::Audio => 2,
            Self::Video => 3,
            Self::Document => 4,
        }
    }

    /// The default limit for this kind (bytes before encryption).
    pub fn max_bytes(self) -> u64 {
        match self {
            Self::Image => IMAGE_MAX_BYTES,
            Self::Audio | Self::Video => AUDIO_VIDEO_MAX_BYTES,
            Self::Document => DOCUMENT_MAX_BYTES,
        }
    }
}

/// A file encrypted and ready to upload (the encrypted stream sits in a
/// temporary file, deleted when this is dropped). Keep it to resume an
/// upload cut short. `Debug` shows no key bytes.
#[derive(Debug)]
pub struct EncryptedFile {
    /// The encrypted stream.
    pub(crate) stream: tempfile::TempPath,
    /// The blob id (random).
    pub blob_id: [u8; 16],
    pub(crate) key: AttachmentKey,
    /// The encrypted stream's length.
    pub encrypted_size: u64,
    /// SHA-256 of the encrypted stream.
    pub digest: [u8; 32],
    /// SHA-256 of the file.
    pub plaintext_digest: [u8; 32],
    /// The file's length.
    pub size: u64,
    /// What it holds.
    pub kind: AttachmentKind,
    /// Its MIME type.
    pub content_type: String,
    /// Its name as the recipient sees it (no directories).
    pub file_name: String,
}

impl EncryptedFile {
    /// The pointer the message carries.
    pub fn pointer(&self) -> AttachmentPointer {
        AttachmentPointer {
            blob_id: hex::encode(self.blob_id),
            content_type: self.content_type.clone(),
            file_name: self.file_name.clone(),
            size: self.size,
            key: self.key.as_bytes().to_vec(),
            digest: self.digest.to_vec(),
            plaintext_digest: self.plaintext_digest.to_vec(),
            encrypted_size: self.encrypted_size,
        }
    }

    /// The encrypted stream's path (to read chunks from).
    pub(crate) fn stream_path(&self) -> &Path {
        &self.stream
    }
}

fn io(what: &str, error: std::io::Error) -> ClientError {
    ClientError::InvalidArgument(format!("{what}: {error}"))
}

/// Read until `buf` is full or the reader ends; returns the bytes read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match reader.read(&mut buf[at..])? {
            0 => break,
            n => at += n,
        }
    }
    Ok(at)
}

/// Encrypt the file at `path` under a fresh key into a temporary file in
/// `temp_dir` (the client's data directory: not a RAM-backed /tmp).
/// Refuses anything but a regular file, and a file larger than its kind
/// allows by default (also one that grows past it while it is read).
pub fn encrypt_file(path: &Path, content_type: &str, temp_dir: &Path) -> Result<EncryptedFile> {
    let kind = AttachmentKind::of(content_type);
    let file = File::open(path).map_err(|e| io("cannot open the file", e))?;
    let metadata = file.metadata().map_err(|e| io("cannot read the file", e))?;
    if !metadata.is_file() {
        return Err(ClientError::InvalidArgument(
            "only a regular file can be sent (not a directory, pipe or device)".into(),
        ));
    }
    let too_large = |size: u64| {
        ClientError::InvalidArgument(format!(
            "the file is {size} bytes or more; a relay takes {} bytes at most for this kind of \
             file",
            kind.max_bytes()
        ))
    };
    if metadata.len() > kind.max_bytes() {
        return Err(too_large(metadata.len()));
    }
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("attachment")
        .to_owned();
    let key = AttachmentKey::generate(&mut rand::rng());
    let mut sealer = AttachmentSealer::new(&key);
    let temp = tempfile::Builder::new()
        .prefix(".comptoir-upload-")
        .tempfile_in(temp_dir)
        .map_err(|e| io("cannot make a temporary file", e))?;
    let (out, stream) = temp.into_parts();
    let mut out = BufWriter::new(out);
    // One byte past the limit is enough to know the file grew past it.
    let mut reader = BufReader::new(file.take(kind.max_bytes().saturating_add(1)));
    let mut cipher_hash = Sha256::new();
    let mut plain_hash = Sha256::new();
    let write = |out: &mut BufWriter<File>, hash: &mut Sha256, bytes: &[u8]| {
        hash.update(bytes);
        out.write_all(bytes)
            .map_err(|e| io("cannot write the encrypted file", e))
    };
    write(&mut out, &mut cipher_hash, sealer.header())?;
    let chunk = DEFAULT_CHUNK_LEN as usize;
    // One chunk ahead: a chunk is the last one when nothing follows it.
    let mut current = Zeroizing::new(vec![0u8; chunk]);
    let mut next = Zeroizing::new(vec![0u8; chunk]);
    let mut current_len =
        fill(&mut reader, &mut current).map_err(|e| io("cannot read the file", e))?;
    let mut plain_len = 0u64;
    loop {
        let next_len = if current_len == chunk {
            fill(&mut reader, &mut next).map_err(|e| io("cannot read the file", e))?
        } else {
            0
        };
        let last = next_len == 0;
        plain_hash.update(&current[..current_len]);
        plain_len += current_len as u64;
        let sealed = sealer
            .seal(&current[..current_len], last)
            .map_err(|e| ClientError::InvalidArgument(format!("cannot encrypt the file: {e}")))?;
        write(&mut out, &mut cipher_hash, &sealed)?;
        if plain_len > kind.max_bytes() {
            return Err(too_large(plain_len));
        }
        if last {
            break;
        }
        std::mem::swap(&mut current, &mut next);
        current_len = next_len;
    }
    out.flush()
        .map_err(|e| io("cannot write the encrypted file", e))?;
    let encrypted_size = std::fs::metadata(&stream)
        .map_err(|e| io("cannot read the encrypted file", e))?
        .len();
    let mut blob_id = [0u8; 16];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut blob_id);
    Ok(EncryptedFile {
        stream,
        blob_id,
        key,
        encrypted_size,
        digest: cipher_hash.finalize().into(),
        plaintext_digest: plain_hash.finalize().into(),
        size: plain_len,
        kind,
        content_type: content_type.to_owned(),
        file_name,
    })
}

/// Why a downloaded attachment was refused (nothing is left at the
/// destination).
fn refused(reason: impl std::fmt::Display) -> ClientError {
    ClientError::InvalidArgument(format!("the attachment was refused: {reason}"))
}

/// Decrypts a downloaded stream chunk by chunk into a temporary file next
/// to the destination, checking both digests; [`Self::finish`] moves it
/// into place only when everything checks.
pub(crate) struct Decryptor {
    key: AttachmentKey,
    pointer_digest: [u8; 32],
    pointer_plain_digest: [u8; 32],
    pointer_size: u64,
    opener: Option<AttachmentOpener>,
    pending: Vec<u8>,
    cipher_hash: Sha256,
    plain_hash: Sha256,
    plain_len: u64,
    out: BufWriter<tempfile::NamedTempFile>,
    destination: PathBuf,
}

impl Decryptor {
    /// Ready to decrypt `pointer`'s stream into `destination`.
    pub(crate) fn new(pointer: &AttachmentPointer, destination: &Path) -> Result<Self> {
        let key = AttachmentKey::from_bytes(&pointer.key)
            .ok_or_else(|| refused("its key is not 32 bytes"))?;
        let digest = <[u8; 32]>::try_from(pointer.digest.as_slice())
            .map_err(|_| refused("its digest is not 32 bytes"))?;
        let plain = <[u8; 32]>::try_from(pointer.plaintext_digest.as_slice())
            .map_err(|_| refused("its file digest is not 32 bytes"))?;
        let dir = destination
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let temp = tempfile::Builder::new()
            .prefix(".comptoir-download-")
            .tempfile_in(dir)
            .map_err(|e| io("cannot write next to the destination", e))?;
        Ok(Self {
            key,
            pointer_digest: digest,
            pointer_plain_digest: plain,
            pointer_size: pointer.size,
            opener: None,
            pending: Vec::new(),
            cipher_hash: Sha256::new(),
            plain_hash: Sha256::new(),
            plain_len: 0,
            out: BufWriter::new(temp),
            destination: destination.to_path_buf(),
        })
    }

    /// Take the next downloaded bytes; opens every chunk known not to be
    /// the last.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.cipher_hash.update(bytes);
        self.pending.extend_from_slice(bytes);
        if self.opener.is_none() && self.pending.len() >= HEADER_LEN {
            let opener =
                AttachmentOpener::new(&self.key, &self.pending[..HEADER_LEN]).map_err(refused)?;
            self.pending.drain(..HEADER_LEN);
            self.opener = Some(opener);
        }
        let Some(opener) = self.opener.as_mut() else {
            return Ok(());
        };
        let full = opener.sealed_chunk_len();
        // More than a chunk held: the first one is not the last.
        while self.pending.len() > full {
            let plain = opener.open(&self.pending[..full], false).map_err(refused)?;
            self.pending.drain(..full);
            self.plain_hash.update(&plain[..]);
            self.plain_len += plain.len() as u64;
            self.out
                .write_all(&plain)
                .map_err(|e| io("cannot write the file", e))?;
        }
        Ok(())
    }

    /// The stream ended: open the last chunk, check both digests and the
    /// size, and move the file into place.
    pub(crate) fn finish(mut self) -> Result<()> {
        let Some(opener) = self.opener.as_mut() else {
            return Err(refused("it is shorter than its header"));
        };
        let plain = opener.open(&self.pending, true).map_err(refused)?;
        self.plain_hash.update(&plain[..]);
        self.plain_len += plain.len() as u64;
        self.out
            .write_all(&plain)
            .map_err(|e| io("cannot write the file", e))?;
        if <[u8; 32]>::from(self.cipher_hash.finalize()) != self.pointer_digest {
            return Err(refused(
                "the downloaded bytes do not match the digest the message carried",
            ));
        }
        if <[u8; 32]>::from(self.plain_hash.finalize()) != self.pointer_plain_digest
            || self.plain_len != self.pointer_size
        {
            return Err(refused(
                "the file does not match the digest the message carried",
            ));
        }
        let temp = self
            .out
            .into_inner()
            .map_err(|e| io("cannot write the file", e.into_error()))?;
        temp.as_file()
            .sync_all()
            .map_err(|e| io("cannot write the file", e))?;
        // Never replaces a file that appeared at the destination meanwhile.
        temp.persist_noclobber(&self.destination).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                ClientError::InvalidArgument(format!(
                    "{} exists already; nothing was replaced: choose a new path",
                    self.destination.display()
                ))
            } else {
                io("cannot move the file into place", e.error)
            }
        })?;
        Ok(())
    }
}

fn key(peer: &AccountId, id: &MessageId) -> Vec<u8> {
    let mut key = peer.to_vec();
    key.extend_from_slice(&id.0);
    key
}

/// Keep the pointer of the attachment in message `id` with `peer`.
pub fn put(
    store: &Store,
    peer: &AccountId,
    id: &MessageId,
    pointer: &AttachmentPointer,
) -> Result<()> {
    store.put(Tree::Attachments, &key(peer, id), &pointer.encode_to_vec())
}

/// The pointer of the attachment in message `id` with `peer`, if any.
pub fn get(store: &Store, peer: &AccountId, id: &MessageId) -> Result<Option<AttachmentPointer>> {
    let Some(bytes) = store.get(Tree::Attachments, &key(peer, id))? else {
        return Ok(None);
    };
    AttachmentPointer::decode(bytes.as_slice())
        .map(Some)
        .map_err(|_| ClientError::CorruptStore("an attachment pointer".into()))
}

/// How the history shows an attachment.
pub fn summary(pointer: &AttachmentPointer) -> String {
    format!(
        "[attachment: {} ({}, {} bytes)]",
        pointer.file_name, pointer.content_type, pointer.size
    )
}

#[cfg(test)]
mod review_tests {
    use super::*;

    /// Review (attach-review): `Decryptor::finish` moves the file into
    /// place with `persist`, which replaces whatever is at the destination;
    /// `comptoir save` checks `path.exists()` only before connecting, so a
    /// file created there during the download is overwritten. It must be
    /// `persist_noclobber` (and refused with a typed error).
    #[test]
    fn a_download_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("in.bin");
        std::fs::write(&source, b"what the sender sent").unwrap();
        let file = encrypt_file(&source, "application/octet-stream", dir.path()).unwrap();
        let destination = dir.path().join("precious.txt");
        std::fs::write(&destination, b"keep me").unwrap();
        let mut decryptor = Decryptor::new(&file.pointer(), &destination).unwrap();
        decryptor
            .push(&std::fs::read(file.stream_path()).unwrap())
            .unwrap();
        let _ = decryptor.finish();
        assert_eq!(std::fs::read(&destination).unwrap(), b"keep me");
    }

    /// Review finding 8: a pipe or device (its metadata length is 0) is
    /// refused, so the size limit cannot be passed by.
    #[test]
    fn only_regular_files_are_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        for path in [Path::new("/dev/zero"), dir.path()] {
            let refused = encrypt_file(path, "image/png", dir.path()).unwrap_err();
            assert!(refused.to_string().contains("regular file"), "{refused}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
