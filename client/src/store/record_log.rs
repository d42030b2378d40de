//! The store's engine: every record of every tree in memory, and one
//! append-only log on disk that a sync makes durable.
//!
//! It replaced sled (0.34) as the client's engine because a send through
//! sled cost far more than its records: about 10 KB of log written per
//! 1 KB message, and every write woke each of sled's seven I/O threads
//! (measured in `docs/BENCHMARKS.md`, "A record log for the client
//! store"). Here a write is an append to a buffer in memory, and a sync is
//! one `write` of what was appended since the last one and one
//! `fdatasync`. Stores written by sled are imported when first opened
//! (see [`super::sled_import`]).
//!
//! The file `records.log` in the store's directory is `MAGIC` (8 bytes),
//! then frames, each `body length (u32 LE) || CRC-32 of the body (u32 LE)
//! || CRC-32 of the 8 bytes before (u32 LE) || body`, where a body is one
//! of:
//! - `1 || tree (u8) || key length (u16 LE) || key || value`: a record
//!   written (or rewritten);
//! - `2 || tree (u8) || key length (u16 LE) || key`: a record removed;
//! - `3 || n (u64 LE)`: sequence numbers up to `n` may have been handed
//!   out (see [`RecordLog::next_sequence`]).
//!
//! Opening replays the frames in order. A crash can cut the last frames
//! short: a frame that does not check out with no whole frame after it is
//! a torn tail, and is cut off (it was never reported durable). A frame
//! that does not check out *followed* by whole frames is damage: the store
//! refuses to open and leaves the file as it is.
//!
//! The file is grown ahead of its records (by half its size at a time,
//! see [`GROW_MIN_BYTES`]), with zeros made durable once: a sync then overwrites blocks the
//! file already has, which the filesystem commits without a journal
//! transaction (half the time and half the CPU of an appending
//! `fdatasync` on the VMs we measure on). Zeros after the last frame are
//! the file's unused end.
//!
//! When the log grows past four times the size of the live records (and
//! past [`COMPACT_MIN_BYTES`]), a sync rewrites it as the live records
//! alone, in `records.log.new`, synced, then renamed over the log.
//!
//! Everything is kept in memory: the store's size is about the size of its
//! history (a million 1 KB messages take about 1.3 GB).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// The log's file name in the store's directory.
pub(crate) const LOG_FILE: &str = "records.log";
/// Where a compaction (or an import) writes the new log before renaming it.
const NEW_LOG_FILE: &str = "records.log.new";
const MAGIC: &[u8; 8] = b"CMPTRLG1";
const FRAME_HEADER_LEN: usize = 12;
const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;
const OP_SEQUENCE: u8 = 3;
/// Sequence numbers reserved by one `OP_SEQUENCE` frame.
const SEQUENCE_BLOCK: u64 = 1024;
/// A log smaller than this is never compacted.
pub(crate) const COMPACT_MIN_BYTES: u64 = 4 << 20;
/// How often writes nobody synced are made durable anyway (as sled did).
const BACKGROUND_SYNC: Duration = Duration::from_millis(500);
/// The file grows by half its size at a time, by at least this much and
/// at most [`GROW_MAX_BYTES`] (a small store stays small; a large one
/// grows rarely), in whole multiples of this.
pub(crate) const GROW_MIN_BYTES: u64 = 256 << 10;
/// See [`GROW_MIN_BYTES`].
const GROW_MAX_BYTES: u64 = 64 << 20;

/// Why the log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    /// Reading or writing the file failed.
    #[error("{context}: {source}")]
    Io {
        /// What the log was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not a record log, or is damaged before its end.
    #[error("the store's record log is {0}; restore the store from a backup")]
    Damaged(String),
    /// An earlier write failed: nothing written since can be trusted to
    /// reach the disk.
    #[error(
        "an earlier write to the store's log failed ({0}); close the program and open it again"
    )]
    Broken(String),
}

fn io_error(context: &'static str) -> impl FnOnce(io::Error) -> LogError {
    move |source| LogError::Io { context, source }
}

/// A record's value: the stored (sealed) bytes, shared with readers.
pub(crate) type Value = Arc<[u8]>;

/// An open record log (see the module documentation).
pub(crate) struct RecordLog {
    shared: Arc<Shared>,
    background: Option<JoinHandle<()>>,
}

struct Shared {
    dir: PathBuf,
    /// The records and what was appended since the last sync.
    state: Mutex<State>,
    /// The file: held by one sync (or compaction) at a time.
    file: Mutex<LogFile>,
    /// Set to stop the background sync.
    stop: Mutex<bool>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// The trees, by tree code.
    trees: Vec<BTreeMap<Vec<u8>, Value>>,
    /// Frames appended since the last sync.
    pending: Vec<u8>,
    /// Bytes the live records would take in a compacted log.
    live_bytes: u64,
    /// The last sequence number handed out.
    sequence: u64,
    /// The largest sequence number an `OP_SEQUENCE` frame reserved.
    reserved: u64,
}

struct LogFile {
    file: File,
    /// Where the records end (the next write goes here).
    len: u64,
    /// The file's size: zeros from `len` to here.
    allocated: u64,
    /// Set when a write or sync failed.
    broken: Option<String>,
    /// The buffer the last sync wrote, kept to swap in as the next
    /// pending buffer (no allocation per sync).
    spare: Vec<u8>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data whole before it can panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RecordLog {
    /// Open (or create) the log in `dir` and replay it.
    pub(crate) fn open(dir: &Path) -> Result<Self, LogError> {
        let path = dir.join(LOG_FILE);
        // A compaction or import that did not finish: the log it would
        // have replaced is still whole.
        match fs::remove_file(dir.join(NEW_LOG_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing an unfinished compaction")(e)),
        }
        if !path.exists() {
            write_log(dir, &State::default())?;
        }
        let bytes = fs::read(&path).map_err(io_error("reading the store's log"))?;
        let (state, good, torn) = replay(&bytes)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error("opening the store's log"))?;
        let mut allocated = bytes.len() as u64;
        if torn {
            // Cut the torn tail off before writing after it.
            file.set_len(good as u64)
                .and_then(|()| file.sync_data())
                .map_err(io_error(
                    "cutting off a torn write at the end of the store's log",
                ))?;
            allocated = good as u64;
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
            file: Mutex::new(LogFile {
                file,
                len: good as u64,
                allocated,
                broken: None,
                spare: Vec::new(),
            }),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        shared.maybe_compact(&mut lock(&shared.file))?;
        let background = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("store-sync".into())
                .spawn(move || shared.background_sync())
                .map_err(io_error("starting the store's sync thread"))?
        };
        Ok(Self {
            shared,
            background: Some(background),
        })
    }

    /// Write a log holding exactly `records` (tree code, key, value) and
    /// `sequence` into `dir`, replacing any log there: for importing a
    /// store from another engine.
    pub(crate) fn write_new(
        dir: &Path,
        records: impl IntoIterator<Item = (u8, Vec<u8>, Vec<u8>)>,
        sequence: u64,
    ) -> Result<(), LogError> {
        let mut state = State {
            sequence,
            reserved: sequence,
            ..State::default()
        };
        for (tree, key, value) in records {
            state.insert(tree, &key, Arc::from(value));
        }
        write_log(dir, &state)
    }

    /// The value of `key` in `tree`.
    pub(crate) fn get(&self, tree: u8, key: &[u8]) -> Option<Value> {
        lock(&self.shared.state)
            .trees
            .get(usize::from(tree))
            .and_then(|t| t.get(key))
            .cloned()
    }

    /// Whether `key` is in `tree`.
    pub(crate) fn contains(&self, tree: u8, key: &[u8]) -> bool {
        lock(&self.shared.state)
            .trees
            .get(usize::from(tree))
            .is_some_and(|t| t.contains_key(key))
    }

    /// Write (or rewrite) `key` in `tree`. Durable after the next sync.
    pub(crate) fn insert(&self, tree: u8, key: &[u8], value: Value) -> Result<(), LogError> {
        if key.len() > usize::from(u16::MAX) {
            return Err(LogError::Damaged("asked to store a key too long".into()));
        }
        lock(&self.shared.state).insert(tree, key, value);
        Ok(())
    }

    /// Remove `key` from `tree`, if it is there. Durable after the next sync.
    pub(crate) fn remove(&self, tree: u8, key: &[u8]) {
        lock(&self.shared.state).remove(tree, key);
    }

    /// Every record of `tree` whose key starts with `prefix`, in key order.
    pub(crate) fn scan_prefix(&self, tree: u8, prefix: &[u8]) -> Vec<(Vec<u8>, Value)> {
        let state = lock(&self.shared.state);
        let Some(records) = state.trees.get(usize::from(tree)) else {
            return Vec::new();
        };
        records
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), Arc::clone(value)))
            .collect()
    }

    /// How many keys of `tree` start with `prefix`.
    pub(crate) fn count_prefix(&self, tree: u8, prefix: &[u8]) -> usize {
        let state = lock(&self.shared.state);
        state.trees.get(usize::from(tree)).map_or(0, |records| {
            records
                .range(prefix.to_vec()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .count()
        })
    }

    /// The first record of `tree` in key order.
    pub(crate) fn first(&self, tree: u8) -> Option<(Vec<u8>, Value)> {
        let state = lock(&self.shared.state);
        state
            .trees
            .get(usize::from(tree))
            .and_then(|t| t.first_key_value())
            .map(|(key, value)| (key.clone(), Arc::clone(value)))
    }

    /// A number larger than every one returned before, across restarts
    /// (numbers are reserved in blocks, so some are skipped after one).
    pub(crate) fn next_sequence(&self) -> u64 {
        let mut state = lock(&self.shared.state);
        state.sequence += 1;
        if state.sequence > state.reserved {
            state.reserved = state.sequence + SEQUENCE_BLOCK - 1;
            let reserved = state.reserved;
            push_frame(&mut state.pending, |body| {
                body.push(OP_SEQUENCE);
                body.extend_from_slice(&reserved.to_le_bytes());
            });
        }
        state.sequence
    }

    /// Make every write made before this call durable: one `write` of
    /// what was appended since the last sync, and one `fdatasync`.
    /// Blocks; concurrent callers take turns, and a caller whose writes
    /// an earlier turn already covered finds nothing to do.
    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.shared.sync()
    }

    /// A handle that syncs this log from another thread (see [`Self::sync`]).
    pub(crate) fn sync_handle(&self) -> SyncHandle {
        SyncHandle(Arc::clone(&self.shared))
    }

    /// Sync what is left and stop the background sync.
    pub(crate) fn close(mut self) -> Result<(), LogError> {
        self.stop_background();
        self.shared.sync()
    }

    fn stop_background(&mut self) {
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.background.take() {
            let _ = thread.join();
        }
    }

    /// The size of the log file (for tests of compaction).
    #[cfg(test)]
    fn file_len(&self) -> u64 {
        lock(&self.shared.file).len
    }
}

/// [`RecordLog::sync`] from a thread that does not hold the log.
pub(crate) struct SyncHandle(Arc<Shared>);

impl SyncHandle {
    /// See [`RecordLog::sync`].
    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.0.sync()
    }
}

impl Drop for RecordLog {
    fn drop(&mut self) {
        if self.background.is_some() {
            self.stop_background();
            if let Err(e) = self.shared.sync() {
                tracing::warn!(error = %e, "the store's last sync failed");
            }
        }
    }
}

impl Shared {
    fn sync(&self) -> Result<(), LogError> {
        let mut file = lock(&self.file);
        if let Some(why) = &file.broken {
            return Err(LogError::Broken(why.clone()));
        }
        let mut pending = std::mem::take(&mut file.spare);
        std::mem::swap(&mut lock(&self.state).pending, &mut pending);
        if pending.is_empty() {
            file.spare = pending;
            return Ok(());
        }
        let written = file.write_at_end(&pending);
        if let Err(e) = written {
            // Part of `pending` may be on disk: appending after it could
            // never be read back. Refuse every later write instead.
            file.broken = Some(e.to_string());
            return Err(io_error("writing the store's log")(e));
        }
        file.len += pending.len() as u64;
        pending.clear();
        file.spare = pending;
        self.maybe_compact(&mut file)
    }

    /// Rewrite the log as the live records when it has grown past four
    /// times their size. Holds the file, so no sync runs meanwhile.
    fn maybe_compact(&self, file: &mut LogFile) -> Result<(), LogError> {
        let live = lock(&self.state).live_bytes + MAGIC.len() as u64;
        if file.len < COMPACT_MIN_BYTES || file.len < 4 * live {
            return Ok(());
        }
        // The records as they are now, including what is still pending
        // (taken, so it is not appended to the old log afterwards).
        let (snapshot, pending) = {
            let mut state = lock(&self.state);
            let snapshot = State {
                trees: state.trees.clone(),
                pending: Vec::new(),
                live_bytes: state.live_bytes,
                sequence: state.sequence,
                reserved: state.reserved,
            };
            (snapshot, std::mem::take(&mut state.pending))
        };
        let rewritten = write_log(&self.dir, &snapshot).and_then(|()| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.dir.join(LOG_FILE))
                .map_err(io_error("opening the compacted log"))
        });
        match rewritten {
            Ok(new) => {
                file.len = new
                    .metadata()
                    .map_err(io_error("opening the compacted log"))?
                    .len();
                file.allocated = file.len;
                file.file = new;
                Ok(())
            }
            Err(e) => {
                // The old log is whole: put back what it still lacks.
                let mut state = lock(&self.state);
                let later = std::mem::replace(&mut state.pending, pending);
                state.pending.extend_from_slice(&later);
                Err(e)
            }
        }
    }

    fn background_sync(&self) {
        let mut stopped = lock(&self.stop);
        loop {
            stopped = self
                .wake
                .wait_timeout(stopped, BACKGROUND_SYNC)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if *stopped {
                return;
            }
            drop(stopped);
            if let Err(e) = self.sync() {
                tracing::warn!(error = %e, "the store's background sync failed");
            }
            stopped = lock(&self.stop);
        }
    }
}

impl LogFile {
    /// Write `bytes` after the records and make them durable, growing the
    /// file first (durably) if they would not fit in what it has.
    fn write_at_end(&mut self, bytes: &[u8]) -> io::Result<()> {
        let end = self.len + bytes.len() as u64;
        if end > self.allocated {
            let step = (self.allocated / 2).clamp(GROW_MIN_BYTES, GROW_MAX_BYTES);
            let target = end.max(self.allocated + step).div_ceil(GROW_MIN_BYTES) * GROW_MIN_BYTES;
            self.file.seek(io::SeekFrom::Start(self.allocated))?;
            let zeros = [0u8; 64 * 1024];
            let mut at = self.allocated;
            while at < target {
                let n = (target - at).min(zeros.len() as u64) as usize;
                self.file.write_all(&zeros[..n])?;
                at += n as u64;
            }
            self.file.sync_all()?;
            self.allocated = target;
        }
        self.file.seek(io::SeekFrom::Start(self.len))?;
        self.file.write_all(bytes)?;
        self.file.sync_data()
    }
}

impl State {
    fn tree_mut(&mut self, tree: u8) -> &mut BTreeMap<Vec<u8>, Value> {
        let index = usize::from(tree);
        if self.trees.len() <= index {
            self.trees.resize_with(index + 1, BTreeMap::new);
        }
        &mut self.trees[index]
    }

    fn insert(&mut self, tree: u8, key: &[u8], value: Value) {
        push_frame(&mut self.pending, |body| put_body(body, tree, key, &value));
        self.live_bytes += put_frame_len(key, &value);
        if let Some(old) = self.tree_mut(tree).insert(key.to_vec(), value) {
            self.live_bytes -= put_frame_len(key, &old);
        }
    }

    fn remove(&mut self, tree: u8, key: &[u8]) {
        let Some(old) = self.tree_mut(tree).remove(key) else {
            return;
        };
        self.live_bytes -= put_frame_len(key, &old);
        push_frame(&mut self.pending, |body| {
            body.push(OP_REMOVE);
            body.push(tree);
            body.extend_from_slice(&(key.len() as u16).to_le_bytes());
            body.extend_from_slice(key);
        });
    }

    /// Apply one frame body read back from the log.
    fn apply(&mut self, body: &[u8]) -> Option<()> {
        let (&op, rest) = body.split_first()?;
        match op {
            OP_PUT | OP_REMOVE => {
                let (&tree, rest) = rest.split_first()?;
                let (len, rest) = rest.split_first_chunk::<2>()?;
                let len = usize::from(u16::from_le_bytes(*len));
                if rest.len() < len {
                    return None;
                }
                let (key, value) = rest.split_at(len);
                if op == OP_PUT {
                    let value: Value = Arc::from(value);
                    self.live_bytes += put_frame_len(key, &value);
                    if let Some(old) = self.tree_mut(tree).insert(key.to_vec(), value) {
                        self.live_bytes -= put_frame_len(key, &old);
                    }
                } else if !value.is_empty() {
                    return None;
                } else if let Some(old) = self.tree_mut(tree).remove(key) {
                    self.live_bytes -= put_frame_len(key, &old);
                }
            }
            OP_SEQUENCE => {
                let reserved = u64::from_le_bytes(rest.try_into().ok()?);
                self.reserved = self.reserved.max(reserved);
                self.sequence = self.reserved;
            }
            _ => return None,
        }
        Some(())
    }
}

fn put_body(body: &mut Vec<u8>, tree: u8, key: &[u8], value: &[u8]) {
    body.push(OP_PUT);
    body.push(tree);
    body.extend_from_slice(&(key.len() as u16).to_le_bytes());
    body.extend_from_slice(key);
    body.extend_from_slice(value);
}

fn put_frame_len(key: &[u8], value: &[u8]) -> u64 {
    (FRAME_HEADER_LEN + 4 + key.len() + value.len()) as u64
}

/// Append a frame whose body `fill` writes.
fn push_frame(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    fill(out);
    let body = &out[start + FRAME_HEADER_LEN..];
    let len = (body.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(body).to_le_bytes();
    let header = &mut out[start..start + FRAME_HEADER_LEN];
    header[..4].copy_from_slice(&len);
    header[4..8].copy_from_slice(&crc);
    let check = crc32fast::hash(&header[..8]).to_le_bytes();
    header[8..].copy_from_slice(&check);
}

/// The frame starting at `at` in `bytes`, if it is whole and checks out:
/// its body and where the next frame starts.
fn frame_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at.checked_add(FRAME_HEADER_LEN)?)?;
    let check = u32::from_le_bytes(header[8..12].try_into().ok()?);
    if crc32fast::hash(&header[..8]) != check {
        return None;
    }
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let start = at + FRAME_HEADER_LEN;
    let body = bytes.get(start..start.checked_add(len)?)?;
    (crc32fast::hash(body) == crc).then_some((body, start + len))
}

/// Whether a whole frame starts anywhere after `at`.
fn whole_frame_after(bytes: &[u8], at: usize) -> bool {
    (at + 1..bytes.len()).any(|start| frame_at(bytes, start).is_some())
}

/// The state `bytes` (a whole log file) holds, where its records end, and
/// whether what follows them is a torn write (rather than unused zeros).
fn replay(bytes: &[u8]) -> Result<(State, usize, bool), LogError> {
    let mut state = State::default();
    if bytes.len() < MAGIC.len() {
        // Created, but the magic never reached the disk: nothing was
        // ever synced after it.
        return Err(LogError::Damaged("missing its header".into()));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(LogError::Damaged("not a record log".into()));
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        match frame_at(bytes, at) {
            Some((body, next)) => {
                if state.apply(body).is_none() {
                    return Err(LogError::Damaged(format!(
                        "unreadable at byte {at} (written by a newer version?)"
                    )));
                }
                at = next;
            }
            None if bytes[at..].iter().all(|&b| b == 0) => return Ok((state, at, false)),
            None if whole_frame_after(bytes, at) => {
                return Err(LogError::Damaged(format!("damaged at byte {at}")));
            }
            None => return Ok((state, at, true)),
        }
    }
    Ok((state, at, false))
}

/// Write `state`'s records as a fresh log (`records.log.new`, synced,
/// renamed over `records.log`, the directory synced).
fn write_log(dir: &Path, state: &State) -> Result<(), LogError> {
    let mut out = Vec::with_capacity(state.live_bytes as usize + 64);
    out.extend_from_slice(MAGIC);
    let reserved = state.reserved;
    push_frame(&mut out, |body| {
        body.push(OP_SEQUENCE);
        body.extend_from_slice(&reserved.to_le_bytes());
    });
    for (tree, records) in state.trees.iter().enumerate() {
        let tree = tree as u8;
        for (key, value) in records {
            push_frame(&mut out, |body| put_body(body, tree, key, value));
        }
    }
    let new = dir.join(NEW_LOG_FILE);
    let mut file = File::create(&new).map_err(io_error("creating the store's log"))?;
    file.write_all(&out)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing the store's log"))?;
    drop(file);
    fs::rename(&new, dir.join(LOG_FILE)).map_err(io_error("replacing the store's log"))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing the store's directory"))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn value(bytes: &[u8]) -> Value {
        Arc::from(bytes)
    }

    fn read(log: &RecordLog, tree: u8, key: &[u8]) -> Option<Vec<u8>> {
        log.get(tree, key).map(|v| v.to_vec())
    }

    #[test]
    fn records_survive_a_reopen_and_removals_stay_removed() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let log = RecordLog::open(dir.path())?;
            log.insert(0, b"a", value(b"one"))?;
            log.insert(0, b"b", value(b"two"))?;
            log.insert(3, b"a", value(b"other tree"))?;
            log.insert(0, b"a", value(b"one again"))?;
            log.remove(0, b"b");
            log.sync()?;
            log.close()?;
        }
        let log = RecordLog::open(dir.path())?;
        assert_eq!(read(&log, 0, b"a").as_deref(), Some(&b"one again"[..]));
        assert_eq!(read(&log, 0, b"b"), None);
        assert_eq!(read(&log, 3, b"a").as_deref(), Some(&b"other tree"[..]));
        assert_eq!(read(&log, 7, b"a"), None);
        Ok(())
    }

    #[test]
    fn prefix_scans_and_counts_stay_inside_the_prefix() -> TestResult {
        let dir = tempfile::tempdir()?;
        let log = RecordLog::open(dir.path())?;
        for key in [&b"ab"[..], b"abc", b"abd", b"ac", b"b"] {
            log.insert(1, key, value(key))?;
        }
        let keys: Vec<_> = log
            .scan_prefix(1, b"ab")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"ab".to_vec(), b"abc".to_vec(), b"abd".to_vec()]);
        assert_eq!(log.count_prefix(1, b"a"), 4);
        assert_eq!(log.count_prefix(1, b""), 5);
        assert_eq!(log.count_prefix(2, b""), 0);
        assert_eq!(log.first(1).map(|(k, _)| k), Some(b"ab".to_vec()));
        Ok(())
    }

    #[test]
    fn sequence_numbers_only_grow_across_reopens() -> TestResult {
        let dir = tempfile::tempdir()?;
        let mut last = 0;
        for _ in 0..3 {
            let log = RecordLog::open(dir.path())?;
            for _ in 0..(SEQUENCE_BLOCK + 5) {
                let next = log.next_sequence();
                assert!(next > last, "{next} after {last}");
                last = next;
            }
            // Dropped without an explicit sync: the drop syncs.
        }
        Ok(())
    }

    #[test]
    fn a_torn_last_frame_is_cut_off_and_the_rest_kept() -> TestResult {
        // A crash in the middle of the last write: the file ends inside
        // the last frame, or the frame's end never left the zeros the
        // file was grown with.
        for zeroed in [false, true] {
            let dir = tempfile::tempdir()?;
            let end = {
                let log = RecordLog::open(dir.path())?;
                log.insert(0, b"kept", value(b"whole"))?;
                log.sync()?;
                log.insert(0, b"torn", value(&[9; 100]))?;
                log.sync()?;
                let end = log.file_len() as usize;
                log.close()?;
                end
            };
            let path = dir.path().join(LOG_FILE);
            let mut bytes = fs::read(&path)?;
            assert!(bytes.len() > end, "the file was grown ahead");
            if zeroed {
                bytes[end - 30..end].fill(0);
            } else {
                bytes.truncate(end - 30);
            }
            fs::write(&path, &bytes)?;
            let log = RecordLog::open(dir.path())?;
            assert_eq!(read(&log, 0, b"kept").as_deref(), Some(&b"whole"[..]));
            assert_eq!(read(&log, 0, b"torn"), None);
            // What is written after the cut reads back.
            log.insert(0, b"after", value(b"x"))?;
            log.close()?;
            let log = RecordLog::open(dir.path())?;
            assert_eq!(read(&log, 0, b"after").as_deref(), Some(&b"x"[..]));
            assert_eq!(read(&log, 0, b"kept").as_deref(), Some(&b"whole"[..]));
        }
        Ok(())
    }

    #[test]
    fn syncs_write_into_space_the_file_already_has() -> TestResult {
        let dir = tempfile::tempdir()?;
        let log = RecordLog::open(dir.path())?;
        log.insert(0, b"k", value(b"v"))?;
        log.sync()?;
        let path = dir.path().join(LOG_FILE);
        let grown = fs::metadata(&path)?.len();
        assert!(grown >= GROW_MIN_BYTES, "grown ahead: {grown} bytes");
        for i in 0u32..100 {
            log.insert(0, &i.to_be_bytes(), value(&[1; 1000]))?;
            log.sync()?;
        }
        assert_eq!(fs::metadata(&path)?.len(), grown, "no sync grew the file");
        Ok(())
    }

    #[test]
    fn damage_before_whole_frames_is_refused_and_left_as_it_was() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let log = RecordLog::open(dir.path())?;
            for i in 0u8..10 {
                log.insert(0, &[i], value(&[i; 50]))?;
            }
            log.close()?;
        }
        let path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&path)?;
        bytes[60] ^= 1;
        fs::write(&path, &bytes)?;
        match RecordLog::open(dir.path()) {
            Err(LogError::Damaged(what)) => assert!(what.contains("damaged"), "{what}"),
            Err(other) => panic!("expected damage, got {other}"),
            Ok(_) => panic!("a damaged log opened"),
        }
        assert_eq!(fs::read(&path)?, bytes, "the evidence is left as it was");
        // Not a log at all.
        fs::write(&path, b"something else entirely")?;
        assert!(matches!(
            RecordLog::open(dir.path()),
            Err(LogError::Damaged(_))
        ));
        Ok(())
    }

    #[test]
    fn a_log_of_rewrites_is_compacted_to_its_live_records() -> TestResult {
        let dir = tempfile::tempdir()?;
        let big = vec![7u8; 4096];
        {
            let log = RecordLog::open(dir.path())?;
            // One record rewritten again and again, as a session is.
            for round in 0u32..3000 {
                log.insert(2, b"session", value(&big))?;
                log.insert(1, &round.to_be_bytes(), value(b"small"))?;
                if round % 100 == 0 {
                    log.remove(1, &round.to_be_bytes());
                }
                log.sync()?;
            }
            assert!(
                log.file_len() < COMPACT_MIN_BYTES + 2 * 4096 + 100_000,
                "the log was compacted: {} bytes",
                log.file_len()
            );
            log.close()?;
        }
        let log = RecordLog::open(dir.path())?;
        assert_eq!(read(&log, 2, b"session"), Some(big));
        assert_eq!(log.count_prefix(1, b""), 2970);
        assert_eq!(read(&log, 1, &0u32.to_be_bytes()), None);
        assert_eq!(
            read(&log, 1, &2999u32.to_be_bytes()).as_deref(),
            Some(&b"small"[..])
        );
        assert!(!dir.path().join(NEW_LOG_FILE).exists());
        Ok(())
    }

    #[test]
    fn an_unfinished_compaction_is_ignored() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let log = RecordLog::open(dir.path())?;
            log.insert(0, b"k", value(b"v"))?;
            log.close()?;
        }
        fs::write(dir.path().join(NEW_LOG_FILE), b"half a compaction")?;
        let log = RecordLog::open(dir.path())?;
        assert_eq!(read(&log, 0, b"k").as_deref(), Some(&b"v"[..]));
        assert!(!dir.path().join(NEW_LOG_FILE).exists());
        Ok(())
    }

    #[test]
    fn writes_nobody_synced_reach_the_disk_by_themselves() -> TestResult {
        let dir = tempfile::tempdir()?;
        let log = RecordLog::open(dir.path())?;
        log.insert(0, b"k", value(b"v"))?;
        // The background sync writes it; wait for the file to show it
        // (bounded: several background periods).
        let path = dir.path().join(LOG_FILE);
        let deadline = std::time::Instant::now() + BACKGROUND_SYNC * 20;
        loop {
            let (state, _, _) = replay(&fs::read(&path)?)?;
            if state
                .trees
                .first()
                .and_then(|t| t.get(&b"k"[..]))
                .map(|v| v.to_vec())
                == Some(b"v".to_vec())
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the background sync never wrote"
            );
            std::thread::sleep(BACKGROUND_SYNC / 5);
        }
        drop(log);
        Ok(())
    }
}
