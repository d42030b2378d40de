//! The store's engine: every record of every tree in memory, and one
//! append-only log on disk that a sync makes durable.
//!
//! It replaced sled (0.34) as the client's engine because a send through
//! sled cost far more than its records: about 10 KB of log written per
//! 1 KB message, and every write woke each of sled's seven I/O threads
//! (measured in `docs/BENCHMARKS.md`, "A record log for the client
//! store"). Here a write is an append to a buffer in memory, and a sync is
//! one `write` of what was appended since the last one and one
//! `fdatasync` (now and then also growing the file, or compacting it, see
//! below). Stores written by sled are imported when first opened
//! (see [`super::sled_import`]).
//!
//! The file `records.log` in the store's directory is a header, `MAGIC`
//! (8 bytes) and a random salt (8), then one batch per sync:
//! `body length (u32 LE) || batch number (u64 LE) || CRC-32 of salt,
//! number and body (u32 LE) || CRC-32 of salt and the 12 bytes before
//! (u32 LE) || body`. Batches are numbered 1, 2, 3, ... in the file; the
//! body is records one after another, each one of:
//! - `1 || tree (u8) || key length (u16 LE) || value length (u32 LE) ||
//!   key || value`: a record written (or rewritten);
//! - `2 || tree (u8) || key length (u16 LE) || key`: a record removed;
//! - `3 || n (u64 LE)`: sequence numbers up to `n` may have been handed
//!   out (see [`RecordLog::next_sequence`]).
//!
//! Opening replays the batches in order. A crash during a sync can leave
//! its batch partly written, in any order of its pages: a batch that does
//! not check out is a torn tail, cut off (it was never reported durable),
//! unless the header of a batch with a later number stands in its place or
//! after it, or the batch is a whole one numbered before it: that is
//! damage, and the store then refuses to open and leaves the file as it
//! is.
//! The salt keeps bytes that a peer chose (message texts and ids are
//! stored) from ever passing for a batch.
//!
//! The file is grown ahead of its records (by half its size at a time,
//! see [`GROW_MIN_BYTES`]), with zeros made durable once: a sync then
//! overwrites blocks the file already has, which the filesystem commits
//! without a journal transaction (half the time and half the CPU of an
//! appending `fdatasync` on the VMs we measure on). Zeros after the last
//! batch are the file's unused end.
//!
//! Syncs run on the log's own thread (`store-sync`): an async caller asks
//! for one ([`RecordLog::request_sync`]) and waits without blocking a
//! runtime thread; the thread syncs again at once when callers queued
//! during a sync (group commit with no idle gap between syncs), and every
//! [`BACKGROUND_SYNC`] anyway.
//!
//! When the log grows past four times the size of the live records (and
//! past [`COMPACT_MIN_BYTES`]), a sync rewrites it as the live records
//! alone, in `records.log.new`, synced, then renamed over the log. A
//! compaction that fails is tried again once the log has grown by half.
//!
//! Everything is kept in memory: the store's size is about the size of its
//! history (a million 1 KB messages take about 1.3 GB, and a message whose
//! status changed since it was stored about 130 bytes more: its status
//! record, see `messages`).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The log's file name in the store's directory.
pub(crate) const LOG_FILE: &str = "records.log";
/// Where a compaction (or an import) writes the new log before renaming it.
const NEW_LOG_FILE: &str = "records.log.new";
const MAGIC: &[u8; 8] = b"CMPTRLG1";
const SALT_LEN: usize = 8;
const FILE_HEADER_LEN: usize = MAGIC.len() + SALT_LEN;
const BATCH_HEADER_LEN: usize = 20;
const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;
const OP_SEQUENCE: u8 = 3;
/// The longest value a record may have.
pub(crate) const MAX_VALUE_BYTES: usize = 256 << 20;
/// The most bytes one batch may hold (its length is a u32).
const MAX_BATCH_BYTES: usize = u32::MAX as usize - BATCH_HEADER_LEN;
/// Sequence numbers reserved by one `OP_SEQUENCE` record.
const SEQUENCE_BLOCK: u64 = 1024;
/// Largest sequence number a log may hold (far beyond any real use; a
/// larger one is damage).
const SEQUENCE_MAX: u64 = u64::MAX / 2;
/// A log smaller than this is never compacted.
pub(crate) const COMPACT_MIN_BYTES: u64 = 4 << 20;
/// A compaction writes batches of about this size.
const COMPACT_BATCH_BYTES: usize = 1 << 20;
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
    /// The file is missing, not a record log, or damaged before its end.
    #[error("the store's record log is {0}; restore the store from a backup")]
    Damaged(String),
    /// A key longer than 65,535 bytes, a value longer than
    /// [`MAX_VALUE_BYTES`], or more unsynced writes than one batch holds.
    #[error("a record is too long to store")]
    TooLong,
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

/// A set of tree codes.
#[derive(Clone, Copy, Default)]
struct TreeSet([u64; 4]);

impl TreeSet {
    fn add(&mut self, tree: u8) {
        self.0[usize::from(tree / 64)] |= 1 << (tree % 64);
    }

    fn contains(&self, tree: u8) -> bool {
        self.0[usize::from(tree / 64)] & (1 << (tree % 64)) != 0
    }
}

/// A record's value: the stored (sealed) bytes, shared with readers.
pub(crate) type Value = Arc<[u8]>;

/// An open record log (see the module documentation).
pub(crate) struct RecordLog {
    shared: Arc<Shared>,
    background: Option<JoinHandle<()>>,
    /// The trees (by code) that some record of the file named when it was
    /// opened, removed records included.
    named_at_open: TreeSet,
}

struct Shared {
    dir: PathBuf,
    /// The records and what was appended since the last sync.
    state: Mutex<State>,
    /// The file: held by one sync (or compaction) at a time.
    file: Mutex<LogFile>,
    /// Whether the sync thread should stop, and whether it is asleep.
    thread: Mutex<SyncThread>,
    /// Wakes the sync thread (a sync asked for, or a stop).
    wake: Condvar,
    /// Sync tickets handed out so far (see [`RecordLog::request_sync`]).
    taken: AtomicU64,
    /// What the sync thread made durable, for those waiting on it.
    synced: watch::Sender<Synced>,
    /// A failure a test injects.
    #[cfg(test)]
    fault: Mutex<Option<Fault>>,
}

/// Failures tests inject where the filesystem cannot be made to fail.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The compacted log cannot be opened once it is renamed into place.
    AfterRename,
    /// The next write to the log fails.
    Write,
    /// The next sync panics (a bug in the sync thread).
    Panic,
}

struct State {
    /// The trees, by tree code.
    trees: Vec<BTreeMap<Vec<u8>, Value>>,
    /// Records appended since the last sync, after room for the header
    /// of the batch they will be written as.
    pending: Vec<u8>,
    /// Bytes the live records would take in a compacted log.
    live_bytes: u64,
    /// The last sequence number handed out.
    sequence: u64,
    /// The largest sequence number an `OP_SEQUENCE` record reserved.
    reserved: u64,
    /// Why writes are refused, once a write to the file failed.
    broken: Option<String>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            trees: Vec::new(),
            pending: vec![0; BATCH_HEADER_LEN],
            live_bytes: 0,
            sequence: 0,
            reserved: 0,
            broken: None,
        }
    }
}

struct LogFile {
    file: File,
    /// This file's salt (see the module documentation).
    salt: [u8; SALT_LEN],
    /// Where the batches end (the next write goes here).
    len: u64,
    /// The file's size: zeros from `len` to here.
    allocated: u64,
    /// The number of the next batch.
    next_batch: u64,
    /// No compaction is tried before the log reaches this size.
    compact_at: u64,
    /// Set when a write or sync failed.
    broken: Option<String>,
    /// The buffer the last sync wrote, kept to swap in as the next
    /// pending buffer (no allocation per sync).
    spare: Vec<u8>,
}

/// What the sync thread and those asking it for syncs share, under one
/// lock (see [`RecordLog::request_sync`]).
#[derive(Default)]
struct SyncThread {
    /// Set to stop the thread.
    stop: bool,
    /// The thread waits on [`Shared::wake`]: a sync asked for must wake
    /// it. While it syncs, it looks for new tickets before it sleeps, so
    /// asking costs no wake-up (a system call) then.
    asleep: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data whole before it can panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RecordLog {
    /// Open the log in `dir` and replay it; with `create`, start an empty
    /// one if there is none (a missing log is damage otherwise).
    pub(crate) fn open(dir: &Path, create: bool) -> Result<Self, LogError> {
        let path = dir.join(LOG_FILE);
        // A compaction or import that did not finish: the log it would
        // have replaced is still whole.
        match fs::remove_file(dir.join(NEW_LOG_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing an unfinished compaction")(e)),
        }
        let exists = path
            .try_exists()
            .map_err(io_error("looking for the store's log"))?;
        if !exists {
            if !create {
                return Err(LogError::Damaged("missing".into()));
            }
            write_log(dir, &State::default())?;
        }
        let bytes = fs::read(&path).map_err(io_error("reading the store's log"))?;
        let replayed = replay(&bytes)?;
        let file_len = bytes.len() as u64;
        drop(bytes);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error("opening the store's log"))?;
        let mut allocated = file_len;
        if replayed.torn {
            // Cut the torn tail off before writing after it.
            file.set_len(replayed.end as u64)
                .and_then(|()| file.sync_data())
                .map_err(io_error(
                    "cutting off a torn write at the end of the store's log",
                ))?;
            allocated = replayed.end as u64;
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: Mutex::new(replayed.state),
            file: Mutex::new(LogFile {
                file,
                salt: replayed.salt,
                len: replayed.end as u64,
                allocated,
                next_batch: replayed.next_batch,
                compact_at: COMPACT_MIN_BYTES,
                broken: None,
                spare: Vec::new(),
            }),
            thread: Mutex::new(SyncThread::default()),
            wake: Condvar::new(),
            taken: AtomicU64::new(0),
            synced: watch::Sender::new(Synced::default()),
            #[cfg(test)]
            fault: Mutex::new(None),
        });
        shared.maybe_compact(&mut lock(&shared.file));
        let named_at_open = replayed.named;
        let background = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("store-sync".into())
                .spawn(move || shared.serve_syncs())
                .map_err(io_error("starting the store's sync thread"))?
        };
        Ok(Self {
            shared,
            background: Some(background),
            named_at_open,
        })
    }

    /// Whether some record of the log file, as it was opened, named
    /// `tree`, including records removed since they were written (whose
    /// bytes stay in the file until it is compacted).
    pub(crate) fn file_named_at_open(&self, tree: u8) -> bool {
        self.named_at_open.contains(tree)
    }

    /// Rewrite the log now as its live records alone, whatever its size,
    /// so that no removed record's bytes stay in the file; every write
    /// made so far is durable when it returns. A failure leaves the log as
    /// it was.
    pub(crate) fn compact(&self) -> Result<(), LogError> {
        let mut file = lock(&self.shared.file);
        if let Some(why) = &file.broken {
            return Err(LogError::Broken(why.clone()));
        }
        self.shared.compact(&mut file)
    }

    /// Write a log holding exactly `records` (tree code, key, value) and
    /// `sequence` into `dir`, replacing any log there: for importing a
    /// store from another engine.
    pub(crate) fn write_new(
        dir: &Path,
        records: impl IntoIterator<Item = (u8, Vec<u8>, Vec<u8>)>,
        sequence: u64,
    ) -> Result<(), LogError> {
        if sequence > SEQUENCE_MAX {
            return Err(LogError::Damaged(
                "asked to start past its sequence range".into(),
            ));
        }
        let mut state = State {
            sequence,
            reserved: sequence,
            ..State::default()
        };
        for (tree, key, value) in records {
            check_lengths(&key, &value)?;
            state.place(tree, &key, Arc::from(value));
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
        lock(&self.shared.state).insert(tree, key, value)
    }

    /// Remove `key` from `tree`, if it is there. Durable after the next sync.
    pub(crate) fn remove(&self, tree: u8, key: &[u8]) -> Result<(), LogError> {
        lock(&self.shared.state).remove(tree, key)
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
    pub(crate) fn next_sequence(&self) -> Result<u64, LogError> {
        let mut state = lock(&self.shared.state);
        state.writable()?;
        if state.sequence >= SEQUENCE_MAX {
            return Err(LogError::Damaged("out of sequence numbers".into()));
        }
        state.sequence += 1;
        if state.sequence > state.reserved {
            state.reserved = (state.sequence + SEQUENCE_BLOCK - 1).min(SEQUENCE_MAX);
            let reserved = state.reserved;
            push_sequence(&mut state.pending, reserved);
        }
        Ok(state.sequence)
    }

    /// Make every write made before this call durable: one `write` of
    /// what was appended since the last sync, and one `fdatasync`.
    /// Blocks; concurrent callers take turns, and a caller whose writes
    /// an earlier turn already covered finds nothing to do.
    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.shared.sync()
    }

    /// Ask the log's sync thread to make every write made before this
    /// call durable, without blocking: the returned ticket is durable once
    /// the receiver's [`Synced::ticket`] reaches it. The thread syncs again
    /// as soon as one sync ends while tickets wait, so concurrent callers
    /// share syncs (group commit) and the disk is never left idle between
    /// two of them; a lone caller is synced at once.
    pub(crate) fn request_sync(&self) -> (u64, watch::Receiver<Synced>) {
        let shared = &self.shared;
        let ticket = shared.taken.fetch_add(1, Ordering::SeqCst) + 1;
        let receiver = shared.synced.subscribe();
        // Under the thread's lock: it either sees the ticket before it
        // sleeps or is asleep now and gets this wake-up.
        let thread = lock(&shared.thread);
        if thread.asleep {
            shared.wake.notify_all();
        }
        (ticket, receiver)
    }

    /// Sync what is left and stop the sync thread.
    pub(crate) fn close(mut self) -> Result<(), LogError> {
        self.stop_background();
        self.shared.sync()
    }

    fn stop_background(&mut self) {
        lock(&self.shared.thread).stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.background.take() {
            let _ = thread.join();
        }
    }

    /// Where the batches end (for tests of compaction and torn writes).
    #[cfg(test)]
    fn file_len(&self) -> u64 {
        lock(&self.shared.file).len
    }
}

/// What the sync thread has made durable (see [`RecordLog::request_sync`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Synced {
    /// Every ticket up to this one is durable.
    pub(crate) ticket: u64,
    /// Set once a sync failed: why the log refuses writes from then on
    /// (tickets past [`Self::ticket`] will never be durable).
    pub(crate) broken: Option<String>,
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
        pending.clear();
        pending.resize(BATCH_HEADER_LEN, 0);
        std::mem::swap(&mut lock(&self.state).pending, &mut pending);
        if pending.len() == BATCH_HEADER_LEN {
            file.spare = pending;
            return Ok(());
        }
        #[cfg(test)]
        if self.take_fault(Fault::Panic) {
            panic!("injected panic in a sync");
        }
        let number = file.next_batch;
        seal_batch(&mut pending, &file.salt, number);
        #[cfg(test)]
        let written = if self.take_fault(Fault::Write) {
            Err(io::Error::other("injected write failure"))
        } else {
            file.write_at_end(&pending)
        };
        #[cfg(not(test))]
        let written = file.write_at_end(&pending);
        if let Err(e) = written {
            // Part of the batch may be on disk: a later one could not be
            // told from damage. Refuse every later write instead.
            self.break_down(&mut file, e.to_string());
            return Err(io_error("writing the store's log")(e));
        }
        file.len += pending.len() as u64;
        file.next_batch += 1;
        file.spare = pending;
        self.maybe_compact(&mut file);
        Ok(())
    }

    /// Refuse every later write and sync, saying why.
    fn break_down(&self, file: &mut LogFile, why: String) {
        lock(&self.state).broken = Some(why.clone());
        file.broken = Some(why);
    }

    /// Rewrite the log as the live records when it has grown past four
    /// times their size. Holds the file, so no sync runs meanwhile. Best
    /// effort: a compaction that fails leaves the log as it was, its
    /// half-written replacement removed (and is
    /// tried again once it has grown by half), unless it failed after its
    /// rename, when the log is broken (see [`LogError::Broken`]).
    fn maybe_compact(&self, file: &mut LogFile) {
        if file.broken.is_some() || file.len < file.compact_at {
            return;
        }
        let live = lock(&self.state).live_bytes + FILE_HEADER_LEN as u64;
        if file.len < 4 * live {
            return;
        }
        if let Err(error) = self.compact(file) {
            tracing::warn!(%error, "compacting the store's log failed; it is kept as it is");
            if file.broken.is_none() {
                file.compact_at = file.len + file.len / 2;
            }
        }
    }

    /// Rewrite the log as the live records (and what is pending), synced,
    /// renamed over the old one. A failure before the rename leaves the
    /// log as it was, its half-written replacement removed; one after it
    /// breaks the log (see [`LogError::Broken`]).
    fn compact(&self, file: &mut LogFile) -> Result<(), LogError> {
        // The records as they are now, including what is still pending
        // (taken, so it is not written to the old log afterwards).
        let (snapshot, pending) = {
            let mut state = lock(&self.state);
            let snapshot = State {
                trees: state.trees.clone(),
                live_bytes: state.live_bytes,
                sequence: state.sequence,
                reserved: state.reserved,
                ..State::default()
            };
            let pending = std::mem::replace(&mut state.pending, vec![0; BATCH_HEADER_LEN]);
            (snapshot, pending)
        };
        let put_back = || {
            // Give back the space the new log took (it may not exist).
            let _ = fs::remove_file(self.dir.join(NEW_LOG_FILE));
            let mut state = lock(&self.state);
            let later = std::mem::replace(&mut state.pending, pending.clone());
            state.pending.extend_from_slice(&later[BATCH_HEADER_LEN..]);
        };
        let written = match prepare_log(&self.dir, &snapshot) {
            Ok(written) => written,
            Err(error) => {
                put_back();
                return Err(error);
            }
        };
        if let Err(error) = fs::rename(self.dir.join(NEW_LOG_FILE), self.dir.join(LOG_FILE)) {
            put_back();
            return Err(io_error("replacing the store's log")(error));
        }
        // From here the compacted log is the store's: the old file must
        // never be written again.
        let reopened = sync_dir(&self.dir).and_then(|()| {
            #[cfg(test)]
            if self.take_fault(Fault::AfterRename) {
                return Err(io_error("opening the compacted log")(io::Error::other(
                    "injected",
                )));
            }
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.dir.join(LOG_FILE))
                .map_err(io_error("opening the compacted log"))
        });
        match reopened {
            Ok(new) => {
                file.file = new;
                file.salt = written.salt;
                file.len = written.len;
                file.allocated = written.len;
                file.next_batch = written.next_batch;
                file.compact_at = COMPACT_MIN_BYTES;
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "the compacted store log could not be opened");
                self.break_down(file, error.to_string());
                Err(error)
            }
        }
    }

    #[cfg(test)]
    fn take_fault(&self, fault: Fault) -> bool {
        let mut armed = lock(&self.fault);
        if *armed == Some(fault) {
            *armed = None;
            return true;
        }
        false
    }

    /// The sync thread: syncs as soon as a ticket waits (again and again
    /// while more arrive during each sync), and every
    /// [`BACKGROUND_SYNC`] anyway, so writes nobody synced reach the disk
    /// too; syncs a last time when stopped.
    fn serve_syncs(&self) {
        // Should this thread panic, nobody would sync the tickets waiting:
        // tell them, rather than leave them waiting for ever.
        struct OnPanic<'a>(&'a watch::Sender<Synced>);
        impl Drop for OnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.send_modify(|synced| {
                        synced.broken = Some("the store's sync thread stopped".into());
                    });
                }
            }
        }
        let _on_panic = OnPanic(&self.synced);
        let mut covered = 0;
        loop {
            let stopping = {
                let deadline = Instant::now() + BACKGROUND_SYNC;
                let mut thread = lock(&self.thread);
                loop {
                    let now = Instant::now();
                    if thread.stop || self.taken.load(Ordering::SeqCst) > covered || now >= deadline
                    {
                        break;
                    }
                    thread.asleep = true;
                    thread = self
                        .wake
                        .wait_timeout(thread, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    thread.asleep = false;
                }
                thread.stop
            };
            // Every ticket taken so far was taken after its writes: the
            // sync below, which takes what is pending now, covers them.
            let covers = self.taken.load(Ordering::SeqCst);
            match self.sync() {
                Ok(()) => self.synced.send_modify(|synced| synced.ticket = covers),
                Err(e) => {
                    tracing::warn!(error = %e, "the store's sync failed");
                    let why = match e {
                        LogError::Broken(why) => why,
                        other => other.to_string(),
                    };
                    self.synced.send_modify(|synced| synced.broken = Some(why));
                }
            }
            // A failed sync leaves the log refusing writes: its waiters
            // have their answer, and it is not tried again for them.
            covered = covers;
            if stopping {
                return;
            }
        }
    }
}

impl LogFile {
    /// Write `bytes` after the batches and make them durable, growing the
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
    fn writable(&self) -> Result<(), LogError> {
        match &self.broken {
            Some(why) => Err(LogError::Broken(why.clone())),
            None => Ok(()),
        }
    }

    fn tree_mut(&mut self, tree: u8) -> &mut BTreeMap<Vec<u8>, Value> {
        let index = usize::from(tree);
        if self.trees.len() <= index {
            self.trees.resize_with(index + 1, BTreeMap::new);
        }
        &mut self.trees[index]
    }

    /// Put `value` at `key` in the trees, keeping `live_bytes` (nothing
    /// is appended to `pending`).
    fn place(&mut self, tree: u8, key: &[u8], value: Value) {
        self.live_bytes += put_len(key, &value);
        if let Some(old) = self.tree_mut(tree).insert(key.to_vec(), value) {
            self.live_bytes -= put_len(key, &old);
        }
    }

    /// Take `key` out of the trees, keeping `live_bytes`; whether it was
    /// there.
    fn take(&mut self, tree: u8, key: &[u8]) -> bool {
        let Some(old) = self.tree_mut(tree).remove(key) else {
            return false;
        };
        self.live_bytes -= put_len(key, &old);
        true
    }

    fn insert(&mut self, tree: u8, key: &[u8], value: Value) -> Result<(), LogError> {
        self.writable()?;
        if self.pending.len() + 8 + key.len() + value.len() > MAX_BATCH_BYTES {
            return Err(LogError::TooLong);
        }
        push_put(&mut self.pending, tree, key, &value)?;
        self.place(tree, key, value);
        Ok(())
    }

    fn remove(&mut self, tree: u8, key: &[u8]) -> Result<(), LogError> {
        self.writable()?;
        if !self.take(tree, key) {
            return Ok(());
        }
        self.pending.push(OP_REMOVE);
        self.pending.push(tree);
        // Its length was checked when it was written.
        self.pending
            .extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.pending.extend_from_slice(key);
        Ok(())
    }

    /// Apply the records of one batch read back from the log, adding the
    /// trees they name to `named`.
    fn apply_batch(&mut self, mut body: &[u8], named: &mut TreeSet) -> Option<()> {
        while let Some((&op, rest)) = body.split_first() {
            body = match op {
                OP_PUT => {
                    let (&tree, rest) = rest.split_first()?;
                    named.add(tree);
                    let (key_len, rest) = rest.split_first_chunk::<2>()?;
                    let (value_len, rest) = rest.split_first_chunk::<4>()?;
                    let key_len = usize::from(u16::from_le_bytes(*key_len));
                    let value_len = u32::from_le_bytes(*value_len) as usize;
                    let key = rest.get(..key_len)?;
                    let value = rest.get(key_len..key_len.checked_add(value_len)?)?;
                    self.place(tree, key, Arc::from(value));
                    &rest[key_len + value_len..]
                }
                OP_REMOVE => {
                    let (&tree, rest) = rest.split_first()?;
                    named.add(tree);
                    let (key_len, rest) = rest.split_first_chunk::<2>()?;
                    let key_len = usize::from(u16::from_le_bytes(*key_len));
                    self.take(tree, rest.get(..key_len)?);
                    &rest[key_len..]
                }
                OP_SEQUENCE => {
                    let (reserved, rest) = rest.split_first_chunk::<8>()?;
                    let reserved = u64::from_le_bytes(*reserved);
                    if reserved > SEQUENCE_MAX {
                        return None;
                    }
                    self.reserved = self.reserved.max(reserved);
                    self.sequence = self.reserved;
                    rest
                }
                _ => return None,
            };
        }
        Some(())
    }
}

/// Refuse a key or value longer than the format (or [`MAX_VALUE_BYTES`])
/// allows.
fn check_lengths(key: &[u8], value: &[u8]) -> Result<(), LogError> {
    if key.len() > usize::from(u16::MAX) || value.len() > MAX_VALUE_BYTES {
        return Err(LogError::TooLong);
    }
    Ok(())
}

fn push_put(out: &mut Vec<u8>, tree: u8, key: &[u8], value: &[u8]) -> Result<(), LogError> {
    check_lengths(key, value)?;
    let key_len = key.len() as u16;
    let value_len = value.len() as u32;
    out.push(OP_PUT);
    out.push(tree);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    Ok(())
}

fn push_sequence(out: &mut Vec<u8>, reserved: u64) {
    out.push(OP_SEQUENCE);
    out.extend_from_slice(&reserved.to_le_bytes());
}

/// What a live record takes in a compacted log.
fn put_len(key: &[u8], value: &[u8]) -> u64 {
    (8 + key.len() + value.len()) as u64
}

/// Fill in the header of the batch `batch` holds after its first
/// [`BATCH_HEADER_LEN`] bytes.
fn seal_batch(batch: &mut [u8], salt: &[u8; SALT_LEN], number: u64) {
    let (header, body) = batch.split_at_mut(BATCH_HEADER_LEN);
    header[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    header[4..12].copy_from_slice(&number.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(salt);
    crc.update(&header[4..12]);
    crc.update(body);
    header[12..16].copy_from_slice(&crc.finalize().to_le_bytes());
    let mut check = crc32fast::Hasher::new();
    check.update(salt);
    check.update(&header[..16]);
    header[16..20].copy_from_slice(&check.finalize().to_le_bytes());
}

/// The header of a batch starting at `at` in `bytes`, if it checks out
/// under `salt`: the batch's number and body length.
fn batch_header_at(bytes: &[u8], at: usize, salt: &[u8; SALT_LEN]) -> Option<(u64, usize)> {
    let header = bytes.get(at..at.checked_add(BATCH_HEADER_LEN)?)?;
    let mut check = crc32fast::Hasher::new();
    check.update(salt);
    check.update(&header[..16]);
    if check.finalize() != u32::from_le_bytes(header[16..20].try_into().ok()?) {
        return None;
    }
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let number = u64::from_le_bytes(header[4..12].try_into().ok()?);
    Some((number, len))
}

/// The batch starting at `at` in `bytes`, if it is whole and checks out
/// under `salt`: its number, its body and where the next batch starts.
fn batch_at<'a>(
    bytes: &'a [u8],
    at: usize,
    salt: &[u8; SALT_LEN],
) -> Option<(u64, &'a [u8], usize)> {
    let (number, len) = batch_header_at(bytes, at, salt)?;
    let header = bytes.get(at..at + BATCH_HEADER_LEN)?;
    let start = at + BATCH_HEADER_LEN;
    let body = bytes.get(start..start.checked_add(len)?)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(salt);
    crc.update(&header[4..12]);
    crc.update(body);
    (crc.finalize() == u32::from_le_bytes(header[12..16].try_into().ok()?)).then_some((
        number,
        body,
        start + len,
    ))
}

/// What replaying a log file gave.
pub(super) struct Replayed {
    state: State,
    salt: [u8; SALT_LEN],
    /// Where its good batches end.
    end: usize,
    /// Whether what follows them is a torn write (rather than zeros).
    torn: bool,
    next_batch: u64,
    /// The trees its records name (removed ones included).
    named: TreeSet,
}

/// Replay `bytes`, a whole log file.
pub(super) fn replay(bytes: &[u8]) -> Result<Replayed, LogError> {
    let Some(header) = bytes.get(..FILE_HEADER_LEN) else {
        return Err(LogError::Damaged("missing its header".into()));
    };
    if &header[..MAGIC.len()] != MAGIC {
        return Err(LogError::Damaged("not a record log".into()));
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&header[MAGIC.len()..]);
    let mut state = State::default();
    let mut at = FILE_HEADER_LEN;
    let mut next_batch = 1u64;
    let mut named = TreeSet::default();
    let torn = loop {
        if at == bytes.len() {
            break false;
        }
        match batch_at(bytes, at, &salt) {
            Some((number, _, _)) if number < next_batch => {
                return Err(LogError::Damaged(format!(
                    "damaged at byte {at} (an earlier batch again)"
                )));
            }
            Some((number, body, end)) if number == next_batch => {
                if state.apply_batch(body, &mut named).is_none() {
                    return Err(LogError::Damaged(format!(
                        "unreadable at byte {at} (written by a newer version?)"
                    )));
                }
                next_batch += 1;
                at = end;
            }
            _ if bytes[at..].iter().all(|&b| b == 0) => break false,
            _ => {
                // Damage only if a later batch's header is here or
                // follows: a sync cut short is the last thing ever
                // written. Nothing but zeros follows the last non-zero
                // byte.
                let last = bytes.iter().rposition(|&b| b != 0).unwrap_or(at);
                let later = (at..=last).any(|start| {
                    batch_header_at(bytes, start, &salt).is_some_and(|(n, _)| n > next_batch)
                });
                if later {
                    return Err(LogError::Damaged(format!("damaged at byte {at}")));
                }
                break true;
            }
        }
    };
    Ok(Replayed {
        state,
        salt,
        end: at,
        torn,
        next_batch,
        named,
    })
}

/// What [`prepare_log`] wrote.
struct Prepared {
    salt: [u8; SALT_LEN],
    len: u64,
    next_batch: u64,
}

/// Write `state`'s records as a fresh log in `records.log.new` (synced),
/// under a new salt, in batches of about [`COMPACT_BATCH_BYTES`].
fn prepare_log(dir: &Path, state: &State) -> Result<Prepared, LogError> {
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt);
    let mut out = Vec::with_capacity(state.live_bytes as usize + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&salt);
    let mut number = 1;
    let mut batch = vec![0; BATCH_HEADER_LEN];
    push_sequence(&mut batch, state.reserved);
    for (tree, records) in state.trees.iter().enumerate() {
        let tree = tree as u8;
        for (key, value) in records {
            push_put(&mut batch, tree, key, value)?;
            if batch.len() >= COMPACT_BATCH_BYTES {
                seal_batch(&mut batch, &salt, number);
                out.extend_from_slice(&batch);
                number += 1;
                batch.clear();
                batch.resize(BATCH_HEADER_LEN, 0);
            }
        }
    }
    if batch.len() > BATCH_HEADER_LEN {
        seal_batch(&mut batch, &salt, number);
        out.extend_from_slice(&batch);
        number += 1;
    }
    let mut file =
        File::create(dir.join(NEW_LOG_FILE)).map_err(io_error("creating the store's log"))?;
    file.write_all(&out)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing the store's log"))?;
    Ok(Prepared {
        salt,
        len: out.len() as u64,
        next_batch: number,
    })
}

/// Write `state`'s records as a fresh log, replacing `records.log`.
fn write_log(dir: &Path, state: &State) -> Result<(), LogError> {
    prepare_log(dir, state)?;
    fs::rename(dir.join(NEW_LOG_FILE), dir.join(LOG_FILE))
        .map_err(io_error("replacing the store's log"))?;
    sync_dir(dir)
}

/// Make the directory's entries (a file created, renamed or deleted)
/// durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
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

    /// A closed log in `dir` of `batches` syncs, each of one record of
    /// `size` bytes (key: the batch's index); returns where the file
    /// header and each batch end.
    fn log_of_batches(dir: &Path, batches: u8, size: usize) -> Result<Vec<usize>, LogError> {
        let log = RecordLog::open(dir, true)?;
        let mut ends = vec![log.file_len() as usize];
        for i in 0..batches {
            log.insert(0, &[i], Arc::from(vec![i; size]))?;
            log.sync()?;
            ends.push(log.file_len() as usize);
        }
        log.close()?;
        Ok(ends)
    }

    #[test]
    fn records_survive_a_reopen_and_removals_stay_removed() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let log = RecordLog::open(dir.path(), true)?;
            log.insert(0, b"a", value(b"one"))?;
            log.insert(0, b"b", value(b"two"))?;
            log.insert(3, b"a", value(b"other tree"))?;
            log.insert(0, b"a", value(b"one again"))?;
            log.remove(0, b"b")?;
            log.sync()?;
            log.close()?;
        }
        let log = RecordLog::open(dir.path(), true)?;
        assert_eq!(read(&log, 0, b"a").as_deref(), Some(&b"one again"[..]));
        assert_eq!(read(&log, 0, b"b"), None);
        assert_eq!(read(&log, 3, b"a").as_deref(), Some(&b"other tree"[..]));
        assert_eq!(read(&log, 7, b"a"), None);
        Ok(())
    }

    #[test]
    fn prefix_scans_and_counts_stay_inside_the_prefix() -> TestResult {
        let dir = tempfile::tempdir()?;
        let log = RecordLog::open(dir.path(), true)?;
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
            let log = RecordLog::open(dir.path(), true)?;
            for _ in 0..(SEQUENCE_BLOCK + 5) {
                let next = log.next_sequence()?;
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
                let log = RecordLog::open(dir.path(), true)?;
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
            let log = RecordLog::open(dir.path(), true)?;
            assert_eq!(read(&log, 0, b"kept").as_deref(), Some(&b"whole"[..]));
            assert_eq!(read(&log, 0, b"torn"), None);
            // What is written after the cut reads back.
            log.insert(0, b"after", value(b"x"))?;
            log.close()?;
            let log = RecordLog::open(dir.path(), true)?;
            assert_eq!(read(&log, 0, b"after").as_deref(), Some(&b"x"[..]));
            assert_eq!(read(&log, 0, b"kept").as_deref(), Some(&b"whole"[..]));
        }
        Ok(())
    }

    #[test]
    fn syncs_write_into_space_the_file_already_has() -> TestResult {
        let dir = tempfile::tempdir()?;
        let log = RecordLog::open(dir.path(), true)?;
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
        log_of_batches(dir.path(), 10, 50)?;
        let path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&path)?;
        bytes[60] ^= 1;
        fs::write(&path, &bytes)?;
        match RecordLog::open(dir.path(), true) {
            Err(LogError::Damaged(what)) => assert!(what.contains("damaged"), "{what}"),
            Err(other) => panic!("expected damage, got {other}"),
            Ok(_) => panic!("a damaged log opened"),
        }
        assert_eq!(fs::read(&path)?, bytes, "the evidence is left as it was");
        // Not a log at all.
        fs::write(&path, b"something else entirely")?;
        assert!(matches!(
            RecordLog::open(dir.path(), true),
            Err(LogError::Damaged(_))
        ));
        Ok(())
    }

    #[test]
    fn a_log_of_rewrites_is_compacted_to_its_live_records() -> TestResult {
        let dir = tempfile::tempdir()?;
        let big = vec![7u8; 4096];
        {
            let log = RecordLog::open(dir.path(), true)?;
            // One record rewritten again and again, as a session is.
            for round in 0u32..3000 {
                log.insert(2, b"session", value(&big))?;
                log.insert(1, &round.to_be_bytes(), value(b"small"))?;
                if round % 100 == 0 {
                    log.remove(1, &round.to_be_bytes())?;
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
        let log = RecordLog::open(dir.path(), true)?;
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

    /// A power cut during a sync's `fdatasync`: a later page of the write
    /// reached the disk, its first page did not.
    #[test]
    fn a_sync_whose_first_page_never_reached_the_disk_is_a_torn_tail() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (start, end) = {
            let log = RecordLog::open(dir.path(), true)?;
            log.insert(0, b"kept", value(b"whole"))?;
            log.sync()?;
            let start = log.file_len() as usize;
            for i in 0u8..10 {
                log.insert(0, &[i], value(&[5; 1000]))?;
            }
            log.sync()?;
            let end = log.file_len() as usize;
            log.close()?;
            (start, end)
        };
        let path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&path)?;
        bytes[start..(start + 4096).min(end)].fill(0);
        fs::write(&path, &bytes)?;
        let log = RecordLog::open(dir.path(), true)?;
        assert_eq!(read(&log, 0, b"kept").as_deref(), Some(&b"whole"[..]));
        assert_eq!(log.count_prefix(0, b""), 1, "the torn sync is gone");
        Ok(())
    }

    /// A batch missing from the middle of the log (the next one starts
    /// where it should have) is damage, not a torn tail to cut off.
    #[test]
    fn a_batch_missing_before_a_whole_one_is_damage() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ends = log_of_batches(dir.path(), 3, 30)?;
        let path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&path)?;
        bytes.drain(ends[1]..ends[2]);
        fs::write(&path, &bytes)?;
        assert!(matches!(
            RecordLog::open(dir.path(), true),
            Err(LogError::Damaged(_))
        ));
        assert_eq!(fs::read(&path)?, bytes, "the evidence is left as it was");
        Ok(())
    }

    /// The last sequence numbers can be handed out and the log still
    /// opens afterwards.
    #[test]
    fn the_last_sequence_numbers_leave_a_log_that_opens() -> TestResult {
        let dir = tempfile::tempdir()?;
        RecordLog::write_new(dir.path(), Vec::new(), SEQUENCE_MAX - 3)?;
        {
            let log = RecordLog::open(dir.path(), true)?;
            for _ in 0..3 {
                log.next_sequence()?;
            }
            assert!(log.next_sequence().is_err(), "past the range");
            log.close()?;
        }
        RecordLog::open(dir.path(), true)?;
        Ok(())
    }

    /// A damaged batch followed by the header of the next one (the sync
    /// after it began writing) is damage, not a torn tail: the damaged
    /// one was reported durable. So is a whole batch written again.
    #[test]
    fn a_damaged_batch_before_a_torn_one_is_damage() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ends = log_of_batches(dir.path(), 3, 300)?;
        let path = dir.path().join(LOG_FILE);
        let good = fs::read(&path)?;
        // Batch 2 damaged, batch 3 torn after its header.
        let mut bytes = good.clone();
        bytes[ends[1] + BATCH_HEADER_LEN + 5] ^= 1;
        bytes[ends[2] + BATCH_HEADER_LEN..ends[3]].fill(0);
        fs::write(&path, &bytes)?;
        assert!(matches!(
            RecordLog::open(dir.path(), true),
            Err(LogError::Damaged(_))
        ));
        // Batch 1 again where batch 3 was.
        let mut bytes = good[..ends[2]].to_vec();
        bytes.extend_from_slice(&good[ends[0]..ends[1]]);
        fs::write(&path, &bytes)?;
        assert!(matches!(
            RecordLog::open(dir.path(), true),
            Err(LogError::Damaged(_))
        ));
        Ok(())
    }

    /// A value holding bytes that are themselves a whole earlier sync (a
    /// peer chooses message ids and texts) does not turn a torn tail
    /// into "damage".
    #[test]
    fn a_torn_sync_holding_log_bytes_in_a_value_is_still_torn() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(LOG_FILE);
        let end = {
            let log = RecordLog::open(dir.path(), true)?;
            let start = log.file_len() as usize;
            log.insert(0, b"first", value(&[1; 10]))?;
            log.sync()?;
            let first = fs::read(&path)?[start..log.file_len() as usize].to_vec();
            log.insert(0, b"copy", Arc::from(first.repeat(3)))?;
            log.sync()?;
            let end = log.file_len() as usize;
            log.close()?;
            end
        };
        let mut bytes = fs::read(&path)?;
        bytes.truncate(end - 5);
        fs::write(&path, &bytes)?;
        let log = RecordLog::open(dir.path(), true)?;
        assert_eq!(read(&log, 0, b"first").as_deref(), Some(&[1u8; 10][..]));
        assert_eq!(read(&log, 0, b"copy"), None);
        Ok(())
    }

    /// A compaction that cannot run (no room, say) leaves every sync
    /// that made its writes durable reporting so, and the store opening.
    #[test]
    fn a_compaction_that_cannot_run_fails_no_sync() -> TestResult {
        let dir = tempfile::tempdir()?;
        let big = vec![3u8; 64 * 1024];
        {
            let log = RecordLog::open(dir.path(), true)?;
            fs::create_dir(dir.path().join(NEW_LOG_FILE))?;
            for round in 0u32..100 {
                log.insert(0, b"rewritten", value(&big))?;
                log.insert(1, &round.to_be_bytes(), value(b"kept"))?;
                log.sync()?;
            }
            log.close()?;
        }
        fs::remove_dir(dir.path().join(NEW_LOG_FILE))?;
        let log = RecordLog::open(dir.path(), true)?;
        assert_eq!(log.count_prefix(1, b""), 100);
        Ok(())
    }

    /// A compaction that fails once its log is renamed into place must
    /// not leave later syncs writing to the replaced file.
    #[test]
    fn a_compaction_failing_after_its_rename_loses_no_later_write() -> TestResult {
        let dir = tempfile::tempdir()?;
        let big = vec![3u8; 64 * 1024];
        {
            let log = RecordLog::open(dir.path(), true)?;
            *lock(&log.shared.fault) = Some(Fault::AfterRename);
            for _ in 0u32..100 {
                if log.insert(0, b"rewritten", value(&big)).is_err() {
                    break;
                }
                let _ = log.sync();
            }
            assert_eq!(*lock(&log.shared.fault), None, "a compaction ran");
            // Nothing more is taken in: it would go to the replaced file.
            let later = log
                .insert(1, b"later", value(b"x"))
                .and_then(|()| log.sync());
            assert!(matches!(later, Err(LogError::Broken(_))), "{later:?}");
        }
        // What was synced is in the compacted log.
        let log = RecordLog::open(dir.path(), true)?;
        assert_eq!(read(&log, 0, b"rewritten"), Some(big));
        Ok(())
    }

    /// Once a write failed, nothing more is taken in (it could never be
    /// made durable).
    #[test]
    fn after_a_failed_write_writes_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let log = RecordLog::open(dir.path(), true)?;
        log.insert(0, b"a", value(b"1"))?;
        *lock(&log.shared.fault) = Some(Fault::Write);
        assert!(log.sync().is_err());
        assert!(matches!(
            log.insert(0, b"b", value(b"2")),
            Err(LogError::Broken(_))
        ));
        assert!(matches!(log.sync(), Err(LogError::Broken(_))));
        Ok(())
    }

    /// The value of `key` in tree 0 as the log file in `dir` holds it now.
    fn on_disk(dir: &Path, key: &[u8]) -> Result<Option<Vec<u8>>, Box<dyn std::error::Error>> {
        let state = replay(&fs::read(dir.join(LOG_FILE))?)?.state;
        Ok(state
            .trees
            .first()
            .and_then(|t| t.get(key))
            .map(|v| v.to_vec()))
    }

    /// Open a log in `dir` with `fault` armed, write one record, ask for a
    /// sync and wait (bounded) for what the sync thread reports: the log,
    /// the ticket and the report.
    fn one_requested_sync(
        dir: &Path,
        fault: Option<Fault>,
    ) -> Result<(RecordLog, u64, Synced), Box<dyn std::error::Error>> {
        let log = RecordLog::open(dir, true)?;
        *lock(&log.shared.fault) = fault;
        log.insert(0, b"k", value(b"v"))?;
        let (ticket, mut synced) = log.request_sync();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let report = runtime.block_on(async {
            let waited = tokio::time::timeout(
                BACKGROUND_SYNC * 20,
                synced.wait_for(|s| s.ticket >= ticket || s.broken.is_some()),
            )
            .await
            .map_err(|_| "the sync thread never answered")??;
            Ok::<_, Box<dyn std::error::Error>>(waited.clone())
        })?;
        Ok((log, ticket, report))
    }

    #[test]
    fn a_requested_sync_makes_the_writes_before_it_durable() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_log, ticket, synced) = one_requested_sync(dir.path(), None)?;
        assert!(synced.ticket >= ticket && synced.broken.is_none());
        assert_eq!(on_disk(dir.path(), b"k")?, Some(b"v".to_vec()));
        Ok(())
    }

    #[test]
    fn a_failed_sync_is_reported_to_those_waiting_for_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (log, ticket, synced) = one_requested_sync(dir.path(), Some(Fault::Write))?;
        assert!(synced.ticket < ticket, "a failed sync reported durable");
        assert!(synced.broken.is_some());
        assert!(matches!(
            log.insert(0, b"b", value(b"2")),
            Err(LogError::Broken(_))
        ));
        Ok(())
    }

    #[test]
    fn a_sync_thread_that_panicked_fails_the_syncs_waiting_for_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_log, ticket, synced) = one_requested_sync(dir.path(), Some(Fault::Panic))?;
        assert!(synced.ticket < ticket);
        assert_eq!(
            synced.broken.as_deref(),
            Some("the store's sync thread stopped")
        );
        Ok(())
    }

    /// A sequence number near the end of its range in the file (damage,
    /// or a hostile file) is refused when opening, not wrapped or panicked on.
    #[test]
    fn a_sequence_at_the_end_of_its_range_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let hostile = State {
            sequence: u64::MAX - 1,
            reserved: u64::MAX - 1,
            ..State::default()
        };
        write_log(dir.path(), &hostile)?;
        assert!(matches!(
            RecordLog::open(dir.path(), true),
            Err(LogError::Damaged(_))
        ));
        Ok(())
    }

    /// A key longer than the format holds is refused, not cut short.
    #[test]
    fn a_key_too_long_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let key = vec![1u8; usize::from(u16::MAX) + 1];
        assert!(matches!(
            RecordLog::write_new(dir.path(), vec![(0, key.clone(), b"v".to_vec())], 1),
            Err(LogError::TooLong)
        ));
        let log = RecordLog::open(dir.path(), true)?;
        assert!(matches!(
            log.insert(0, &key, value(b"v")),
            Err(LogError::TooLong)
        ));
        Ok(())
    }

    /// Every truncation and every one-bit flip of a real log replays to
    /// a state or a refusal, never a panic (what the `client_store` fuzz
    /// target checks on arbitrary bytes).
    #[test]
    fn every_cut_and_flip_of_a_log_replays_or_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let end = {
            let log = RecordLog::open(dir.path(), true)?;
            for i in 0u8..6 {
                log.insert(i % 3, &[i], value(&[i; 20]))?;
                if i % 2 == 0 {
                    log.remove(i % 3, &[i])?;
                }
                log.next_sequence()?;
                log.sync()?;
            }
            let end = log.file_len() as usize;
            log.close()?;
            end
        };
        let bytes = fs::read(dir.path().join(LOG_FILE))?[..end].to_vec();
        for cut in 0..bytes.len() {
            let _ = replay(&bytes[..cut]);
        }
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[at] ^= 1 << bit;
                let _ = replay(&flipped);
            }
        }
        Ok(())
    }

    /// A log written from docs/PROTOCOL.md's description alone (by a
    /// Python script, saved as a fuzz seed) replays to what it says.
    #[test]
    fn a_log_written_from_the_protocol_document_replays() -> TestResult {
        let seed = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/client_store/record-log-one-batch");
        let replayed = replay(&fs::read(seed)?)?;
        assert!(!replayed.torn);
        assert_eq!(replayed.next_batch, 2);
        assert_eq!(replayed.state.reserved, 1024);
        assert_eq!(
            replayed
                .state
                .trees
                .get(3)
                .and_then(|t| t.get(&b"keyA"[..]))
                .map(|v| v.to_vec()),
            Some(b"value".to_vec())
        );
        Ok(())
    }

    #[test]
    fn an_unfinished_compaction_is_ignored() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let log = RecordLog::open(dir.path(), true)?;
            log.insert(0, b"k", value(b"v"))?;
            log.close()?;
        }
        fs::write(dir.path().join(NEW_LOG_FILE), b"half a compaction")?;
        let log = RecordLog::open(dir.path(), true)?;
        assert_eq!(read(&log, 0, b"k").as_deref(), Some(&b"v"[..]));
        assert!(!dir.path().join(NEW_LOG_FILE).exists());
        Ok(())
    }

    #[test]
    fn writes_nobody_synced_reach_the_disk_by_themselves() -> TestResult {
        let dir = tempfile::tempdir()?;
        let log = RecordLog::open(dir.path(), true)?;
        log.insert(0, b"k", value(b"v"))?;
        // The background sync writes it; wait for the file to show it
        // (bounded: several background periods).
        let deadline = std::time::Instant::now() + BACKGROUND_SYNC * 20;
        loop {
            if on_disk(dir.path(), b"k")? == Some(b"v".to_vec()) {
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
