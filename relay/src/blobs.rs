//! Encrypted blobs (attachments): uploaded in chunks, kept durably as
//! files in `data_dir/blobs`, read back in chunks, deleted when they
//! expire (docs/PROTOCOL.md §12, docs/OPERATIONS.md "Attachments").
//!
//! The relay holds only what the client encrypted: it never has the key.
//! Each blob is two files named by its id in hex: `ID.meta` (owner, kind,
//! size, digest, times, whether complete; replaced atomically) and
//! `ID.data` (the bytes received so far, each chunk synced before it is
//! acknowledged, so the `received` count a client resumes from is
//! durable). Once the last byte is in, the relay checks the whole stream's
//! SHA-256 against the digest declared at the start, and only then marks
//! the blob complete and readable. The index (for quotas and expiry) is
//! rebuilt from the meta files at start.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use comptoir_protocol::AccountId;
use comptoir_protocol::attachment::{DEFAULT_CHUNK_LEN, ciphertext_len};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::storage::StorageError;

/// Length of a blob id.
pub const BLOB_ID_LEN: usize = 16;
/// Length of a blob's digest (SHA-256).
pub const BLOB_DIGEST_LEN: usize = 32;
/// The most bytes one `UploadChunk` or `BlobChunk` carries.
pub const MAX_BLOB_CHUNK: usize = 128 * 1024;
/// Version of the meta file layout.
const META_VERSION: u8 = 1;
/// Length of a meta file.
const META_LEN: usize = 1 + 16 + 1 + 8 + BLOB_DIGEST_LEN + 8 + 8 + 1;

/// A blob's id: 16 random bytes the uploading client picks.
pub type BlobId = [u8; BLOB_ID_LEN];

/// What a blob holds, for its size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    /// A photo.
    Image,
    /// A voice note or other sound.
    Audio,
    /// A video.
    Video,
    /// Any other file (a boarding pass PDF).
    Document,
}

impl BlobKind {
    /// The kind from its wire number.
    pub fn from_wire(value: i32) -> Option<Self> {
        match value {
            1 => Some(Self::Image),
            2 => Some(Self::Audio),
            3 => Some(Self::Video),
            4 => Some(Self::Document),
            _ => None,
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Self::Image => 1,
            Self::Audio => 2,
            Self::Video => 3,
            Self::Document => 4,
        }
    }

    /// Its name, as users see it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "an image",
            Self::Audio => "audio",
            Self::Video => "a video",
            Self::Document => "a document",
        }
    }
}

/// Limits on blobs (the `[blobs]` table of the configuration). Sizes are
/// of the file before encryption; the relay allows the encrypted length
/// of a file of that size.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobLimits {
    /// Largest image, bytes.
    pub image_max_bytes: u64,
    /// Largest audio file or video, bytes.
    pub audio_video_max_bytes: u64,
    /// Largest document, bytes.
    pub document_max_bytes: u64,
    /// Bytes of blobs one account may hold at once (uploads in progress
    /// count at their full size).
    pub account_quota_bytes: u64,
    /// How long a complete blob is kept after its upload began, ms. Not
    /// deleted on first fetch: the sender's other devices, and a report,
    /// need it too.
    pub ttl_ms: u64,
    /// How long an upload may stay incomplete before it is deleted, ms.
    pub upload_ttl_ms: u64,
    /// Upload and download chunks (at most 128 KiB each) one account may
    /// send or ask for per second (`RATE_LIMITED` beyond).
    pub chunks_per_sec: f64,
}

impl Default for BlobLimits {
    fn default() -> Self {
        Self {
            image_max_bytes: 5_000_000,
            audio_video_max_bytes: 16_000_000,
            document_max_bytes: 100_000_000,
            account_quota_bytes: 1_000_000_000,
            ttl_ms: 30 * 24 * 3600 * 1000,
            upload_ttl_ms: 24 * 3600 * 1000,
            chunks_per_sec: 1000.0,
        }
    }
}

impl BlobLimits {
    /// The largest encrypted blob of `kind`.
    pub fn max_encrypted(&self, kind: BlobKind) -> u64 {
        let plain = match kind {
            BlobKind::Image => self.image_max_bytes,
            BlobKind::Audio | BlobKind::Video => self.audio_video_max_bytes,
            BlobKind::Document => self.document_max_bytes,
        };
        ciphertext_len(plain, DEFAULT_CHUNK_LEN).unwrap_or(u64::MAX)
    }
}

/// Why a blob request was refused.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Larger than its kind allows, or past the account's quota.
    #[error("{0}")]
    TooLarge(String),
    /// No such blob (or not complete yet, for a read).
    #[error("{0}")]
    NotFound(&'static str),
    /// A request that cannot apply (wrong offset, id taken, bad digest).
    #[error("{0}")]
    Invalid(String),
    /// The disk failed; nothing was acknowledged.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What the relay knows of one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobMeta {
    /// The uploading account.
    pub owner: AccountId,
    /// What it holds.
    pub kind: BlobKind,
    /// The whole encrypted length.
    pub size: u64,
    /// SHA-256 of the whole encrypted stream.
    pub digest: [u8; BLOB_DIGEST_LEN],
    /// When the upload began (relay clock, ms).
    pub created_at_ms: u64,
    /// When the relay deletes it (relay clock, ms).
    pub expires_at_ms: u64,
    /// Every byte in and the digest checked.
    pub complete: bool,
}

/// Where an upload stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadStatus {
    /// Bytes held durably: the next chunk's offset.
    pub received: u64,
    /// Readable.
    pub complete: bool,
    /// When the relay deletes it.
    pub expires_at_ms: u64,
}

/// A read of a complete blob.
#[derive(Debug)]
pub struct BlobRead {
    /// The bytes read.
    pub data: Vec<u8>,
    /// The whole blob's length.
    pub size: u64,
}

#[derive(Debug)]
struct Entry {
    meta: BlobMeta,
    received: u64,
    /// Serialises the writes, reads and deletion of this blob's files.
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Entry {
    /// What the blob costs its owner's quota: its size, but at least
    /// [`MIN_CHARGE`] (files, an index entry and syncs cost that much
    /// whatever the size).
    fn charge(&self) -> u64 {
        charge(self.meta.size)
    }
}

/// The least a blob counts against its owner's quota.
pub const MIN_CHARGE: u64 = 64 * 1024;

fn charge(size: u64) -> u64 {
    size.max(MIN_CHARGE)
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<BlobId, Entry>,
    /// Bytes charged per owner (kept as blobs come and go).
    held: HashMap<AccountId, u64>,
}

impl Index {
    fn insert(&mut self, id: BlobId, entry: Entry) {
        *self.held.entry(entry.meta.owner).or_default() += entry.charge();
        self.entries.insert(id, entry);
    }

    fn remove(&mut self, id: &BlobId) {
        if let Some(entry) = self.entries.remove(id)
            && let Some(held) = self.held.get_mut(&entry.meta.owner)
        {
            *held = held.saturating_sub(entry.charge());
            if *held == 0 {
                self.held.remove(&entry.meta.owner);
            }
        }
    }
}

/// What [`BlobStore::reserve`] found or made.
enum Reserved {
    /// The blob exists: its lock.
    Existing(Arc<tokio::sync::Mutex<()>>),
    /// A new entry, its lock held, and its status.
    New(tokio::sync::OwnedMutexGuard<()>, UploadStatus),
}

/// The relay's blobs.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    limits: BlobLimits,
    index: Mutex<Index>,
}

fn io(what: &str, error: std::io::Error) -> StorageError {
    if error.kind() == std::io::ErrorKind::StorageFull {
        StorageError::Full
    } else {
        StorageError::Backend(format!("blobs: {what}: {error}"))
    }
}

/// Run blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| StorageError::Backend("blobs: a file task stopped".to_owned()))?
}

fn file_path(dir: &Path, id: &BlobId, suffix: &str) -> PathBuf {
    dir.join(format!("{}.{suffix}", hex::encode(id)))
}

impl BlobStore {
    /// The blobs in `dir` (created if missing), indexed from their meta
    /// files. What a crash left half made or half deleted is cleaned up: a
    /// data or acknowledgement file without a meta file is deleted, and a
    /// data file is cut back to the bytes acknowledged. A damaged meta file
    /// stops the start with its name.
    pub fn open(dir: &Path, limits: BlobLimits) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory", e))?;
        let mut index = Index::default();
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io("cannot list the directory", e))? {
            let entry = entry.map_err(|e| io("cannot list the directory", e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        let id_of = |name: &str, suffix: &str| {
            name.strip_suffix(suffix)
                .and_then(|hex_id| hex::decode(hex_id).ok())
                .and_then(|bytes| BlobId::try_from(bytes).ok())
        };
        for name in &names {
            let Some(id) = id_of(name, ".meta") else {
                continue;
            };
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| io("cannot read a meta file", e))?;
            let mut meta = decode_meta(&bytes).ok_or_else(|| {
                StorageError::Backend(format!(
                    "blobs: the meta file {} is damaged; move the blob's files aside to start",
                    path.display()
                ))
            })?;
            let data = file_path(dir, &id, "data");
            let on_disk = std::fs::metadata(&data).map_or(0, |m| m.len());
            let received = if meta.complete {
                if on_disk == meta.size {
                    meta.size
                } else {
                    // Half deleted by an expiry: unreadable; the next
                    // pass finishes the deletion.
                    meta.complete = false;
                    meta.expires_at_ms = 0;
                    0
                }
            } else {
                read_ack(dir, &id).min(on_disk)
            };
            if !meta.complete && on_disk > received {
                OpenOptions::new()
                    .write(true)
                    .open(&data)
                    .and_then(|f| f.set_len(received).and_then(|()| f.sync_all()))
                    .map_err(|e| io("cannot cut back a blob", e))?;
            }
            index.insert(
                id,
                Entry {
                    meta,
                    received,
                    lock: Arc::default(),
                },
            );
        }
        // Files of blobs with no meta file (a crash while one was made or
        // deleted), and meta files never renamed into place.
        for name in &names {
            let orphan = name.ends_with(".meta.new")
                || [".data", ".ack"].iter().any(|suffix| {
                    id_of(name, suffix).is_some_and(|id| !index.entries.contains_key(&id))
                });
            if orphan {
                std::fs::remove_file(dir.join(name))
                    .map_err(|e| io("cannot delete what a crash left", e))?;
            }
        }
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            limits,
            index: Mutex::new(index),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limits in force.
    pub fn limits(&self) -> &BlobLimits {
        &self.limits
    }

    /// Bytes charged to `owner` (uploads in progress at full size, each
    /// blob at least [`MIN_CHARGE`]).
    pub fn held_by(&self, owner: AccountId) -> u64 {
        self.index().held.get(&owner).copied().unwrap_or(0)
    }

    /// Under the index lock: the existing blob's lock (resume), or a new
    /// entry reserved (quota and id) with its lock held, before any file
    /// exists.
    fn reserve(&self, id: BlobId, meta: &BlobMeta) -> Result<Reserved, BlobError> {
        let mut index = self.index();
        if let Some(entry) = index.entries.get(&id) {
            let same = entry.meta.owner == meta.owner
                && entry.meta.kind == meta.kind
                && entry.meta.size == meta.size
                && entry.meta.digest == meta.digest;
            if !same {
                return Err(BlobError::Invalid(
                    "this blob id is in use: pick another random id".to_owned(),
                ));
            }
            return Ok(Reserved::Existing(entry.lock.clone()));
        }
        let held = index.held.get(&meta.owner).copied().unwrap_or(0);
        if held.saturating_add(charge(meta.size)) > self.limits.account_quota_bytes {
            return Err(BlobError::TooLarge(format!(
                "this account holds {held} bytes of attachments (each counts at least \
                 {MIN_CHARGE}) and may hold {}; wait for older ones to expire",
                self.limits.account_quota_bytes
            )));
        }
        let lock: Arc<tokio::sync::Mutex<()>> = Arc::default();
        let guard = lock
            .clone()
            .try_lock_owned()
            .map_err(|_| StorageError::Backend("blobs: a new lock was taken".to_owned()))?;
        let entry = Entry {
            meta: meta.clone(),
            received: 0,
            lock,
        };
        let answer = status(&entry);
        index.insert(id, entry);
        Ok(Reserved::New(guard, answer))
    }

    /// Begin an upload, or resume one begun with the same values.
    pub async fn begin(&self, id: BlobId, meta: BlobMeta) -> Result<UploadStatus, BlobError> {
        let max = self.limits.max_encrypted(meta.kind);
        if meta.size > max {
            return Err(BlobError::TooLarge(format!(
                "{} may be at most {} bytes encrypted; this one is {}",
                meta.kind.name(),
                max,
                meta.size
            )));
        }
        let reserved = self.reserve(id, &meta)?;
        let (guard, answer) = match reserved {
            Reserved::Existing(lock) => {
                // Wait for the blob's files to be made, if they are being.
                let _guard = lock.lock().await;
                return match self.index().entries.get(&id) {
                    Some(entry) => Ok(status(entry)),
                    None => Err(BlobError::NotFound("the upload expired: begin it again")),
                };
            }
            Reserved::New(guard, answer) => (guard, answer),
        };
        let dir = self.dir.clone();
        let made = blocking(move || {
            File::create(file_path(&dir, &id, "data"))
                .and_then(|f| f.sync_all())
                .map_err(|e| io("cannot create a blob", e))?;
            write_ack(&dir, &id, 0)?;
            // The meta file last: a blob exists once it is in place.
            write_meta(&dir, &id, &meta)
        })
        .await;
        if let Err(error) = made {
            self.index().remove(&id);
            drop(guard);
            return Err(error.into());
        }
        drop(guard);
        Ok(answer)
    }

    /// Append `data` at `offset` to an upload of `owner`'s, durably; on
    /// the last byte, check the digest and mark the blob complete.
    pub async fn append(
        &self,
        owner: AccountId,
        id: BlobId,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<UploadStatus, BlobError> {
        let lock = match self.index().entries.get(&id) {
            Some(entry) if entry.meta.owner == owner => entry.lock.clone(),
            _ => {
                return Err(BlobError::NotFound(
                    "no upload with this id: begin it first",
                ));
            }
        };
        let _guard = lock.lock().await;
        // Under the blob's lock: an expiry cannot remove it meanwhile.
        let (meta, received) = match self.index().entries.get(&id) {
            Some(entry) => (entry.meta.clone(), entry.received),
            None => return Err(BlobError::NotFound("the upload expired: begin it again")),
        };
        if meta.complete {
            return Err(BlobError::Invalid("the upload is complete".to_owned()));
        }
        if data.len() > MAX_BLOB_CHUNK {
            return Err(BlobError::Invalid(format!(
                "a chunk is at most {MAX_BLOB_CHUNK} bytes"
            )));
        }
        if offset != received {
            return Err(BlobError::Invalid(format!(
                "the relay holds {received} bytes of this upload: send from there"
            )));
        }
        let end = received.saturating_add(data.len() as u64);
        if end > meta.size {
            return Err(BlobError::Invalid(format!(
                "the upload was begun with {} bytes; this chunk goes past them",
                meta.size
            )));
        }
        let done = end == meta.size;
        let dir = self.dir.clone();
        let mut complete = meta.clone();
        complete.complete = true;
        let matched = blocking(move || {
            let matched = write_chunk(&dir, &id, received, &data, done, &meta.digest)?;
            if !matched {
                // The bytes do not hash to the digest declared: forget them.
                write_ack(&dir, &id, 0)?;
                OpenOptions::new()
                    .write(true)
                    .open(file_path(&dir, &id, "data"))
                    .and_then(|f| f.set_len(0))
                    .map_err(|e| io("cannot cut back a blob", e))?;
            } else if done {
                write_meta(&dir, &id, &complete)?;
            } else {
                write_ack(&dir, &id, end)?;
            }
            Ok(matched)
        })
        .await?;
        let mut index = self.index();
        let entry = index
            .entries
            .get_mut(&id)
            .ok_or(BlobError::NotFound("the upload expired: begin it again"))?;
        if !matched {
            entry.received = 0;
            return Err(BlobError::Invalid(
                "the uploaded bytes do not match the digest given at the start; upload them \
                 again from offset 0"
                    .to_owned(),
            ));
        }
        entry.received = end;
        entry.meta.complete = done;
        Ok(status(entry))
    }

    /// Read at most `max_len` bytes of a complete blob from `offset`.
    pub async fn read(
        &self,
        id: BlobId,
        offset: u64,
        max_len: usize,
    ) -> Result<BlobRead, BlobError> {
        const GONE: &str = "no attachment with this id: it expired, or was never uploaded";
        let (lock, size) = match self.index().entries.get(&id) {
            Some(entry) if entry.meta.complete => (entry.lock.clone(), entry.meta.size),
            _ => return Err(BlobError::NotFound(GONE)),
        };
        if offset > size {
            return Err(BlobError::Invalid(format!("the blob has {size} bytes")));
        }
        let len = (size - offset).min(max_len.min(MAX_BLOB_CHUNK) as u64) as usize;
        let _guard = lock.lock().await;
        if !self.index().entries.contains_key(&id) {
            return Err(BlobError::NotFound(GONE));
        }
        let path = file_path(&self.dir, &id, "data");
        let data = blocking(move || {
            let mut file = File::open(&path).map_err(|e| io("cannot read a blob", e))?;
            let mut data = vec![0; len];
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(&mut data))
                .map_err(|e| io("cannot read a blob", e))?;
            Ok(data)
        })
        .await?;
        Ok(BlobRead { data, size })
    }

    /// Bring the expiry of `owner`'s complete blob `id` forward to
    /// `expires_at_ms` (never later than it was), durably: a Status post's
    /// blob goes with the post. [`BlobError::NotFound`] if `owner` has no
    /// complete blob with this id.
    pub async fn expire_by(
        &self,
        id: BlobId,
        owner: AccountId,
        expires_at_ms: u64,
    ) -> Result<(), BlobError> {
        const GONE: &str = "no complete attachment of this account with this id: upload it first";
        let lock = match self.index().entries.get(&id) {
            Some(entry) if entry.meta.complete && entry.meta.owner == owner => entry.lock.clone(),
            _ => return Err(BlobError::NotFound(GONE)),
        };
        let _guard = lock.lock().await;
        let meta = {
            let mut index = self.index();
            let Some(entry) = index.entries.get_mut(&id) else {
                return Err(BlobError::NotFound(GONE));
            };
            if entry.meta.expires_at_ms <= expires_at_ms {
                return Ok(());
            }
            let mut meta = entry.meta.clone();
            meta.expires_at_ms = expires_at_ms;
            meta
        };
        let dir = self.dir.clone();
        let written = meta.clone();
        blocking(move || write_meta(&dir, &id, &written)).await?;
        if let Some(entry) = self.index().entries.get_mut(&id) {
            entry.meta.expires_at_ms = meta.expires_at_ms;
        }
        Ok(())
    }

    /// Whether a blob (complete or not) with this id is held.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.index().entries.contains_key(id)
    }

    /// Delete the blobs (complete or not) whose time is up at `now_ms`;
    /// returns how many. A blob busy with an upload or a read is left for
    /// the next pass.
    pub async fn expire(&self, now_ms: u64) -> Result<usize, StorageError> {
        let upload_ttl = self.limits.upload_ttl_ms;
        let candidates: Vec<(BlobId, Arc<tokio::sync::Mutex<()>>)> = self
            .index()
            .entries
            .iter()
            .filter(|(_, e)| {
                e.meta.expires_at_ms <= now_ms
                    || (!e.meta.complete
                        && e.meta.created_at_ms.saturating_add(upload_ttl) <= now_ms)
            })
            .map(|(id, e)| (*id, e.lock.clone()))
            .collect();
        let mut gone = 0;
        for (id, lock) in candidates {
            let Ok(_guard) = lock.try_lock() else {
                continue;
            };
            self.index().remove(&id);
            let dir = self.dir.clone();
            blocking(move || {
                // The meta file last: a crash before it leaves a blob that
                // is re-indexed, past its time, and deleted again.
                for suffix in ["data", "ack", "meta"] {
                    match std::fs::remove_file(file_path(&dir, &id, suffix)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io("cannot delete a blob", e)),
                    }
                }
                Ok(())
            })
            .await?;
            gone += 1;
        }
        if gone > 0 {
            let dir = self.dir.clone();
            blocking(move || sync_dir(&dir)).await?;
        }
        Ok(gone)
    }
}

/// Write the meta file: a temporary file, synced, renamed into place, the
/// directory synced.
fn write_meta(dir: &Path, id: &BlobId, meta: &BlobMeta) -> Result<(), StorageError> {
    let path = file_path(dir, id, "meta");
    let temp = file_path(dir, id, "meta.new");
    let mut file = File::create(&temp).map_err(|e| io("cannot write a meta file", e))?;
    file.write_all(&encode_meta(meta))
        .and_then(|()| file.sync_all())
        .map_err(|e| io("cannot write a meta file", e))?;
    std::fs::rename(&temp, &path).map_err(|e| io("cannot write a meta file", e))?;
    sync_dir(dir)
}

/// Record, durably, that `received` bytes of the upload are held (only
/// after those bytes were synced): a restart resumes from here.
fn write_ack(dir: &Path, id: &BlobId, received: u64) -> Result<(), StorageError> {
    let path = file_path(dir, id, "ack");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io("cannot write an upload's progress", e))?;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&received.to_be_bytes()))
        .and_then(|()| file.sync_data())
        .map_err(|e| io("cannot write an upload's progress", e))
}

/// The bytes acknowledged of an upload (0 when not recorded).
fn read_ack(dir: &Path, id: &BlobId) -> u64 {
    std::fs::read(file_path(dir, id, "ack"))
        .ok()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, u64::from_be_bytes)
}

fn status(entry: &Entry) -> UploadStatus {
    UploadStatus {
        received: entry.received,
        complete: entry.meta.complete,
        expires_at_ms: entry.meta.expires_at_ms,
    }
}

#[cfg(test)]
fn data_path(dir: &Path, id: &BlobId) -> PathBuf {
    file_path(dir, id, "data")
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync the directory", e))
}

/// Write `data` at `offset` and sync it; when `done`, hash the whole file
/// and say whether it matches `digest`.
fn write_chunk(
    dir: &Path,
    id: &BlobId,
    offset: u64,
    data: &[u8],
    done: bool,
    digest: &[u8; BLOB_DIGEST_LEN],
) -> Result<bool, StorageError> {
    let mut file = OpenOptions::new()
        .write(true)
        .read(true)
        .open(file_path(dir, id, "data"))
        .map_err(|e| io("cannot open a blob", e))?;
    // A chunk cut short by a crash is overwritten: the file ends at what
    // was acknowledged.
    file.set_len(offset)
        .and_then(|()| file.seek(SeekFrom::Start(offset)).map(drop))
        .and_then(|()| file.write_all(data))
        .and_then(|()| file.sync_data())
        .map_err(|e| io("cannot write a blob", e))?;
    if !done {
        return Ok(true);
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io("cannot read a blob", e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| io("cannot read a blob", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().as_slice() == digest)
}

fn encode_meta(meta: &BlobMeta) -> [u8; META_LEN] {
    let mut out = [0u8; META_LEN];
    out[0] = META_VERSION;
    out[1..17].copy_from_slice(meta.owner.as_bytes());
    out[17] = meta.kind.to_byte();
    out[18..26].copy_from_slice(&meta.size.to_be_bytes());
    out[26..58].copy_from_slice(&meta.digest);
    out[58..66].copy_from_slice(&meta.created_at_ms.to_be_bytes());
    out[66..74].copy_from_slice(&meta.expires_at_ms.to_be_bytes());
    out[74] = u8::from(meta.complete);
    out
}

fn decode_meta(bytes: &[u8]) -> Option<BlobMeta> {
    let bytes: &[u8; META_LEN] = bytes.try_into().ok()?;
    if bytes[0] != META_VERSION {
        return None;
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let mut digest = [0u8; BLOB_DIGEST_LEN];
    digest.copy_from_slice(&bytes[26..58]);
    Some(BlobMeta {
        owner: AccountId::from_bytes(&bytes[1..17]).ok()?,
        kind: BlobKind::from_wire(i32::from(bytes[17]))?,
        size: u64_at(18),
        digest,
        created_at_ms: u64_at(58),
        expires_at_ms: u64_at(66),
        complete: match bytes[74] {
            0 => false,
            1 => true,
            _ => return None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(owner: AccountId, size: u64, digest: [u8; 32]) -> BlobMeta {
        BlobMeta {
            owner,
            kind: BlobKind::Document,
            size,
            digest,
            created_at_ms: 1_000,
            expires_at_ms: 10_000,
            complete: false,
        }
    }

    /// A 300,000-byte document upload begun in a relay process that stored
    /// its first chunk and ended: (owner, the whole body, its digest).
    async fn first_chunk_stored(
        dir: &std::path::Path,
        id: [u8; 16],
    ) -> (AccountId, Vec<u8>, [u8; 32]) {
        let owner = AccountId::from_bytes(&[1; 16]).unwrap();
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let digest: [u8; 32] = Sha256::digest(&body).into();
        let store = BlobStore::open(dir, BlobLimits::default()).unwrap();
        store
            .begin(id, meta(owner, body.len() as u64, digest))
            .await
            .unwrap();
        let status = store
            .append(owner, id, 0, body[..MAX_BLOB_CHUNK].to_vec())
            .await
            .unwrap();
        assert_eq!(status.received, MAX_BLOB_CHUNK as u64);
        (owner, body, digest)
    }

    #[test]
    fn meta_round_trips_and_damage_is_refused() {
        let m = meta(AccountId::from_bytes(&[3; 16]).unwrap(), 77, [9; 32]);
        assert_eq!(decode_meta(&encode_meta(&m)), Some(m.clone()));
        let mut bad = encode_meta(&m);
        bad[74] = 7;
        assert_eq!(decode_meta(&bad), None);
        assert_eq!(decode_meta(&bad[..10]), None);
    }

    #[tokio::test]
    async fn an_upload_resumes_after_a_restart_and_checks_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let id = [5u8; 16];
        let (owner, body, digest) = first_chunk_stored(dir.path(), id).await;
        // A new relay process: the upload resumes where it stood.
        let store = BlobStore::open(dir.path(), BlobLimits::default()).unwrap();
        let status = store
            .begin(id, meta(owner, body.len() as u64, digest))
            .await
            .unwrap();
        assert_eq!(status.received, MAX_BLOB_CHUNK as u64);
        assert!(matches!(
            store.read(id, 0, 10).await,
            Err(BlobError::NotFound(_))
        ));
        let mut at = status.received as usize;
        while at < body.len() {
            let end = (at + MAX_BLOB_CHUNK).min(body.len());
            store
                .append(owner, id, at as u64, body[at..end].to_vec())
                .await
                .unwrap();
            at = end;
        }
        let read = store.read(id, 1000, 50).await.unwrap();
        assert_eq!(read.data, body[1000..1050]);
        assert_eq!(read.size, body.len() as u64);
        // Expired: both files gone.
        assert_eq!(store.expire(10_000).await.unwrap(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_wrong_digest_forgets_the_bytes_and_wrong_offsets_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), BlobLimits::default()).unwrap();
        let owner = AccountId::from_bytes(&[1; 16]).unwrap();
        let other = AccountId::from_bytes(&[2; 16]).unwrap();
        let id = [6u8; 16];
        store.begin(id, meta(owner, 10, [0; 32])).await.unwrap();
        assert!(matches!(
            store.append(owner, id, 3, vec![1; 2]).await,
            Err(BlobError::Invalid(_))
        ));
        assert!(matches!(
            store.append(other, id, 0, vec![1; 2]).await,
            Err(BlobError::NotFound(_))
        ));
        assert!(matches!(
            store.append(owner, id, 0, vec![1; 11]).await,
            Err(BlobError::Invalid(_))
        ));
        assert!(matches!(
            store.append(owner, id, 0, vec![1; 10]).await,
            Err(BlobError::Invalid(_))
        ));
        let status = store.begin(id, meta(owner, 10, [0; 32])).await.unwrap();
        assert_eq!((status.received, status.complete), (0, false));
        // Another account cannot take the id; other values are refused.
        assert!(matches!(
            store.begin(id, meta(other, 10, [0; 32])).await,
            Err(BlobError::Invalid(_))
        ));
    }

    /// Review (attach-review): after a crash, the relay must resume from
    /// what it acknowledged, not from the data file's length, which can
    /// hold bytes of a chunk written but never synced nor acknowledged
    /// (OPERATIONS.md: "the count a client resumes from ... is on disk").
    #[tokio::test]
    async fn a_restart_resumes_from_acknowledged_bytes_not_the_file_length() {
        let dir = tempfile::tempdir().unwrap();
        let id = [7u8; 16];
        let (owner, body, digest) = first_chunk_stored(dir.path(), id).await;
        // The crash: part of the next chunk reached the file (as zeros, as
        // delayed allocation leaves it) but was never synced nor
        // acknowledged.
        let mut data = OpenOptions::new()
            .append(true)
            .open(data_path(dir.path(), &id))
            .unwrap();
        data.write_all(&[0u8; 1000]).unwrap();
        drop(data);
        let store = BlobStore::open(dir.path(), BlobLimits::default()).unwrap();
        let status = store
            .begin(id, meta(owner, body.len() as u64, digest))
            .await
            .unwrap();
        assert_eq!(
            status.received, MAX_BLOB_CHUNK as u64,
            "the relay claims unacknowledged bytes as held durably"
        );
    }

    /// Review (attach-review): `expire` deletes the meta file before the
    /// data file, and `begin` creates the data file before the meta file;
    /// a crash between the two leaves a data file no start indexes and no
    /// expiry ever deletes.
    #[tokio::test]
    async fn a_crash_inside_expire_leaves_no_data_file_forever() {
        let dir = tempfile::tempdir().unwrap();
        let owner = AccountId::from_bytes(&[1; 16]).unwrap();
        let id = [8u8; 16];
        {
            let store = BlobStore::open(dir.path(), BlobLimits::default()).unwrap();
            store.begin(id, meta(owner, 10, [0; 32])).await.unwrap();
            store.append(owner, id, 0, vec![1; 5]).await.unwrap();
        }
        // expire() removed the meta file, then the relay crashed.
        std::fs::remove_file(dir.path().join(format!("{}.meta", hex::encode(id)))).unwrap();
        let store = BlobStore::open(dir.path(), BlobLimits::default()).unwrap();
        store.expire(u64::MAX).await.unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind for ever: {left:?}");
    }

    /// Review (attach-review): the quota counts declared bytes only, so a
    /// 1-byte blob costs one byte of quota but two files, an index entry
    /// and three fsyncs: within a 1 MB quota an account makes a million
    /// blobs (two million inodes). Each blob must cost at least some
    /// fixed overhead (or the number of blobs per account be capped).
    #[tokio::test]
    async fn one_byte_blobs_cannot_multiply_files_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        let limits = BlobLimits {
            account_quota_bytes: 1_000_000,
            ..BlobLimits::default()
        };
        let store = BlobStore::open(dir.path(), limits).unwrap();
        let owner = AccountId::from_bytes(&[1; 16]).unwrap();
        let mut begun = 0u32;
        for n in 0..200u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            if store.begin(id, meta(owner, 1, [0; 32])).await.is_err() {
                break;
            }
            begun += 1;
        }
        assert!(
            begun < 200,
            "{begun} one-byte blobs ({} files) within a 1 MB quota",
            std::fs::read_dir(dir.path()).unwrap().count()
        );
    }

    #[tokio::test]
    async fn sizes_and_quota_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let limits = BlobLimits {
            account_quota_bytes: 10_000_000,
            ..BlobLimits::default()
        };
        let store = BlobStore::open(dir.path(), limits).unwrap();
        let owner = AccountId::from_bytes(&[1; 16]).unwrap();
        let mut image = meta(owner, 5_100_000, [0; 32]);
        image.kind = BlobKind::Image;
        assert!(matches!(
            store.begin([1; 16], image).await,
            Err(BlobError::TooLarge(_))
        ));
        store
            .begin([2; 16], meta(owner, 6_000_000, [0; 32]))
            .await
            .unwrap();
        assert!(matches!(
            store.begin([3; 16], meta(owner, 6_000_000, [0; 32])).await,
            Err(BlobError::TooLarge(_))
        ));
        assert_eq!(store.held_by(owner), 6_000_000);
    }
}
