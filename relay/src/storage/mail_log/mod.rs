//! The mail queues of the embedded backend: an append-only log with group
//! commit and an in-memory index.
//!
//! A send appends one `Message` record (all its device copies) to a buffer
//! and waits; the writer thread takes everything buffered, writes it with
//! one `write` and makes it durable with one `fdatasync`, then completes
//! every waiter of the group. The commit is adaptive: when the last group
//! had a single waiter the writer commits at once; when it had several,
//! sent by more than one device (senders at work concurrently), it waits,
//! up to [`LogOptions::linger`], only until as many are waiting again, so a
//! burst shares one sync. A group whose sends all came from one device
//! does not make the next one wait: one device's concurrent sends come in
//! bursts its own client paces (see `writer`).
//! An ack removes its copy from the index at once and appends a `Removed`
//! record, and a `Receipt` for the sending device, in one group that the
//! next commit writes (deletions are not waited on: a lost one means a
//! redelivery, which clients drop by message id, and the receipt is lost
//! with it, to be made again by the next ack). Receipts are kept in the
//! sending device's queue, beside the copies for it, until that device
//! acks them (a `Removed` of the receipt's seq) or they expire.
//!
//! The index (queues by device, idempotency entries) lives in memory and is
//! rebuilt at open by replaying the segments in order; envelope bytes stay
//! on disk and are read back with positioned reads when pushed. A copy is
//! visible to readers only once durable (`seq <= durable_seq`).
//!
//! Segments roll over at [`LogOptions::segment_bytes`]. When the log has
//! grown past twice what is still live (and at least
//! [`LogOptions::checkpoint_min_bytes`]), a background thread writes a
//! checkpoint: the live copies and idempotency entries, as a new segment
//! numbered just before the active one, then deletes every older segment.
//! A crash at any point leaves a log that replays to the same state: a
//! half-written checkpoint is a `.partial` file, deleted at open, and a
//! finished one only repeats what older segments say.
//!
//! Each group is written with one write and one sync, framed with its
//! length and CRC (see `record`). A write cut short by a crash (never
//! acknowledged) can only be the last group of the newest segment; replay
//! keeps its bytes aside in a `.torn` file and cuts it off. Anything else
//! that does not check out is corruption: open refuses, naming the file
//! and offset, and changes nothing. The newest segment is sealed (an empty
//! group appended) at open, at a clean close and after a checkpoint, so a
//! damaged group that once was followed by others is never taken for a
//! torn write.

mod checkpoint;
mod durable;
mod index;
mod legacy;
pub(crate) mod record;
mod reserve;
mod segment;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use comptoir_protocol::AccountId;
use tokio::sync::{oneshot, watch};

use self::index::{Entry, Index, Location, ReceiptKey, SentEntry};
pub(crate) use self::record::ReceiptRef;
use self::record::{GROUP_HEADER_LEN, Origin, Record, Writer};
use self::segment::{SEGMENT_HEADER_LEN, Tail};
use super::consent::{ConsentRecord, ConsentSet};
use super::dir_lock::DirLock;
use super::ledger::{DeliveredEntry, LedgerEntry};
use super::{
    AckOf, Enqueued, MESSAGE_ID_LEN, NewMessage, QueuedEnvelope, QuotaCounts, StorageError,
    StorageResult,
};
use crate::metrics::Metrics;
use crate::state::now_ms;

/// Tuning of the log; the defaults suit a production relay.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// No checkpoint until the log has grown by at least this much.
    pub checkpoint_min_bytes: u64,
    /// Under load only (the last group had several waiters, sends from
    /// more than one device), the longest the writer waits for as many
    /// waiters as the last group had before it writes and syncs; it stops
    /// sooner when a 250 µs wait brought no new waiter, and a lone sender
    /// is never held up.
    pub linger: Duration,
    /// Size of the disk-space reserve (`space-reserve` in the log
    /// directory), given back when the disk is full so that acks and
    /// deletions can still be committed while sends are refused; 0
    /// disables it.
    pub reserve_bytes: u64,
    /// Bench-only (cargo feature `bench-unmetered`): keep the ledger's
    /// entries in memory (so a billed copy's signed ack is still checked
    /// and passed on in `Delivered`) but append none to the log or its
    /// checkpoints: a benchmark relay with the ledger off
    /// (`Config::bench_metering`).
    #[cfg(feature = "bench-unmetered")]
    pub ledger_in_memory_only: bool,
}

impl LogOptions {
    /// Whether ledger entries and signed deliveries are written to the log
    /// (always, except a benchmark relay's: [`Self::ledger_in_memory_only`]).
    pub(crate) fn appends_ledger(&self) -> bool {
        #[cfg(feature = "bench-unmetered")]
        {
            !self.ledger_in_memory_only
        }
        #[cfg(not(feature = "bench-unmetered"))]
        {
            true
        }
    }
}

/// Default size of the disk-space reserve (small in unit tests, which open
/// many logs).
pub const DEFAULT_RESERVE_BYTES: u64 = if cfg!(test) { 1 << 20 } else { 64 << 20 };

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            checkpoint_min_bytes: 64 << 20,
            linger: Duration::from_micros(1000),
            reserve_bytes: DEFAULT_RESERVE_BYTES,
            #[cfg(feature = "bench-unmetered")]
            ledger_in_memory_only: false,
        }
    }
}

type Waiter = oneshot::Sender<StorageResult<()>>;

/// Told once the group holding a write is durable.
pub(crate) type Waited = oneshot::Receiver<StorageResult<()>>;

/// How far the expiry clock may move past real elapsed time in one pass
/// (or at open, past the persisted clock). The wall clock can be stepped
/// forward (a bad NTP answer, an operator's typo); expiry follows it at
/// this pace at most, so a step of days deletes an hour's worth of mail per
/// pass instead of every queue at once, and the warning it logs gives the
/// operator time to fix the clock. It also lets expiry catch up after the
/// relay was stopped for a while.
pub const EXPIRY_CATCH_UP_MS: u64 = 3_600_000;

/// How long after its acceptance a send's id is remembered for answering a
/// retry as a duplicate (or until the message expires, if sooner). Each
/// entry costs memory for as long as it is kept, so keeping it for the
/// whole message TTL let one account grow the index by its send rate times
/// 30 days. A client retries a send whose `Accepted` it missed when it
/// reconnects; a retry later than this is stored again, and the recipient's
/// client drops the second copy by its message id.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 3_600_000;

/// When the idempotency entry of a send accepted at `server_ts` and
/// expiring at `expires` lapses.
fn idempotency_expiry(server_ts: u64, expires: u64) -> u64 {
    expires.min(server_ts.saturating_add(IDEMPOTENCY_WINDOW_MS))
}

/// The time expiry goes by: the wall clock, but never backwards and never
/// more than [`EXPIRY_CATCH_UP_MS`] ahead of real elapsed time.
#[derive(Debug, Clone, Copy)]
struct ExpiryClock {
    /// Expiry has reached this time (ms since the epoch); persisted in
    /// `Clock` records.
    ms: u64,
    /// When `ms` was set (monotonic, immune to clock steps).
    at: Instant,
}

impl ExpiryClock {
    /// The expiry time for a wall clock reading of `wall`.
    fn bound(&self, wall: u64) -> u64 {
        let elapsed = u64::try_from(self.at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let limit = self
            .ms
            .saturating_add(elapsed)
            .saturating_add(EXPIRY_CATCH_UP_MS);
        wall.clamp(self.ms, limit)
    }
}

/// Device queues visited per lock by expiry and checkpoints.
const SLICE: usize = 256;

/// Records appended and not yet written, per segment, in log order.
#[derive(Debug, Default)]
struct Buffered {
    chunks: Vec<(u32, Writer)>,
    /// Whether a send's accept is among the records (fault injection
    /// stops only at those).
    accepts: bool,
}

impl Buffered {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[derive(Debug)]
struct State {
    index: Index,
    /// Next queue position to hand out.
    next_seq: u64,
    /// Copies with a seq up to this one are on disk.
    durable_seq: u64,
    /// Segment receiving appends, and its length once they are written.
    active: u32,
    active_len: u64,
    /// Readable segments.
    files: BTreeMap<u32, Arc<File>>,
    buffered: Buffered,
    /// Callers waiting for everything appended before them to be durable.
    waiters: Vec<Waiter>,
    /// Callers told when the next group is durable, who do not hurry it
    /// (an ack's receipt: its sender is woken once the receipt is visible).
    passive: Vec<Waiter>,
    writer_idle: bool,
    /// The writer holds a group of records nobody waits for back (see
    /// `writer::DEFER_UNWAITED`): only a waiter wakes it, not each further
    /// record nobody waits for (an ack each, during a drain).
    deferring: bool,
    /// While the writer gathers a group: wake it once this many wait.
    gather: usize,
    /// The devices whose sends wait in the group being formed.
    senders: writer::GroupSenders,
    /// Groups the writer waited for more waiters for (tests).
    #[cfg(test)]
    gathered: u64,
    /// Log bytes written since the last checkpoint started.
    since_checkpoint: u64,
    checkpointing: bool,
    /// Checkpoint after the next group whatever the sizes (tests).
    checkpoint_requested: bool,
    closing: bool,
    /// Set when a write or sync failed: nothing more is accepted.
    failed: Option<StorageError>,
    /// The disk is full and the reserve was given back: new sends are
    /// refused with [`StorageError::Full`], acks and deletions go on.
    full: bool,
    /// The time expiry goes by.
    clock: ExpiryClock,
}

impl State {
    /// The waiters of the group being taken: those who wait for it and
    /// those who are only told.
    fn take_waiters(&mut self) -> Vec<Waiter> {
        let mut waiters = std::mem::take(&mut self.waiters);
        waiters.append(&mut self.passive);
        waiters
    }

    fn usable(&self) -> StorageResult<()> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.closing {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    /// Append records with `write`; returns the segment and the offset the
    /// appended bytes start at, with `write`'s result.
    fn append<R>(
        &mut self,
        segment_bytes: u64,
        write: impl FnOnce(&mut Writer) -> R,
    ) -> (u32, u64, R) {
        if self.active_len >= segment_bytes {
            self.active += 1;
            self.active_len = SEGMENT_HEADER_LEN;
        }
        let active = self.active;
        if self
            .buffered
            .chunks
            .last()
            .is_none_or(|(s, _)| *s != active)
        {
            // A new group in this segment: its header comes first.
            self.buffered.chunks.push((active, Writer::group()));
            self.active_len += GROUP_HEADER_LEN as u64;
        }
        let start = self.active_len;
        let last = self.buffered.chunks.len() - 1;
        let writer = &mut self.buffered.chunks[last].1;
        let before = writer.len();
        let result = write(writer);
        self.active_len += (writer.len() - before) as u64;
        (active, start, result)
    }
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    options: LogOptions,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Wakes the writer.
    work: Condvar,
    /// `true` while a checkpoint runs.
    checkpoint_running: watch::Sender<bool>,
    /// The data directory's lock, released with the last thread.
    _lock: Option<Arc<DirLock>>,
    /// The log's threads (writer, checkpoints) still holding this
    /// (see [`ThreadAlive`]); [`MailLog::close`] waits for none.
    threads: watch::Sender<usize>,
}

/// Counts a thread of the log as alive until dropped. A thread declares it
/// before its `Arc<Shared>`, so that it is dropped after it: once the count
/// is back to 0, no thread holds the shared state (nor the directory's
/// lock).
struct ThreadAlive(watch::Sender<usize>);

impl ThreadAlive {
    /// Count one more thread of `shared`'s.
    fn start(shared: &Shared) -> Self {
        shared.threads.send_modify(|n| *n += 1);
        Self(shared.threads.clone())
    }
}

impl Drop for ThreadAlive {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wake the writer for records nobody waits for: only if it is idle,
    /// not while it defers such records anyway.
    fn wake_writer(&self, state: &State) {
        if state.writer_idle && !state.deferring {
            self.work.notify_one();
        }
    }

    /// Register a waiter for everything appended so far.
    fn durable_waiter(&self, state: &mut State) -> oneshot::Receiver<StorageResult<()>> {
        let (tx, rx) = oneshot::channel();
        state.waiters.push(tx);
        if state.gather != 0 && state.waiters.len() == state.gather {
            // The group being gathered is complete.
            self.work.notify_one();
        } else if state.writer_idle {
            // Idle, or deferring records nobody waits for: a waiter ends
            // either.
            self.work.notify_one();
        }
        rx
    }
}

/// Stops the writer once the last handle is gone.
#[derive(Debug)]
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closing = true;
        self.shared.work.notify_one();
    }
}

/// The mail log. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MailLog {
    owner: Arc<Owner>,
}

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("mail log: {what} {}: {e}", path.display()))
}

/// [`io_error`] for a write or sync: a full disk is [`StorageError::Full`]
/// (the detail goes to the log).
fn write_error(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        tracing::warn!(error = %e, file = %path.display(), "mail log: {what}: the disk is full");
        StorageError::Full
    } else {
        io_error(what, path, e)
    }
}

impl MailLog {
    /// Open (or create) the log in `dir`, replaying its segments.
    pub fn open(dir: &Path, options: LogOptions, metrics: Arc<Metrics>) -> StorageResult<Self> {
        Self::open_holding(dir, options, metrics, None)
    }

    /// [`MailLog::open`] as if the wall clock read `wall_ms` (tests).
    #[cfg(test)]
    pub(crate) fn open_at(dir: &Path, options: LogOptions, wall_ms: u64) -> StorageResult<Self> {
        Self::open_inner(dir, options, Arc::default(), None, wall_ms)
    }

    /// [`MailLog::open`], keeping `lock` until the log's threads are done
    /// (so a store reopened after a drop never meets a running writer).
    pub(crate) fn open_holding(
        dir: &Path,
        options: LogOptions,
        metrics: Arc<Metrics>,
        lock: Option<Arc<DirLock>>,
    ) -> StorageResult<Self> {
        Self::open_inner(dir, options, metrics, lock, now_ms())
    }

    fn open_inner(
        dir: &Path,
        options: LogOptions,
        metrics: Arc<Metrics>,
        lock: Option<Arc<DirLock>>,
        wall_ms: u64,
    ) -> StorageResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        let ids = segment::list(dir).map_err(|e| io_error("cannot list", dir, e))?;
        // Replay keeps everything; expiry runs once the persisted clock is
        // known, by the guarded clock.
        let mut persisted_clock: Option<u64> = None;
        let mut index = Index::default();
        let mut legacy = legacy::Legacy::default();
        let mut next_seq = 1u64;
        let mut files = BTreeMap::new();
        let mut total = 0u64;
        // Groups sync each segment before the next is created (see
        // `write_group`), so a crash can tear only the newest segment: a
        // damaged tail in any older one is corruption, never a torn write.
        let mut torn: Option<(u32, u64)> = None;
        // Whether each segment ends with an empty group.
        let mut sealed = BTreeMap::new();
        let refuse = |path: &Path, e: &dyn std::fmt::Display| {
            io_error(
                "cannot replay (restore the data directory from a backup)",
                path,
                e,
            )
        };
        for (i, &id) in ids.iter().enumerate() {
            let path = segment::path(dir, id);
            let newest = i + 1 == ids.len();
            let scan = segment::read_records(&path, |body_at, body| {
                let record = record::decode(body)?;
                replay(
                    &mut index,
                    &mut legacy,
                    &mut next_seq,
                    &mut persisted_clock,
                    id,
                    body_at,
                    record,
                );
                Ok(())
            })
            .map_err(|e| refuse(&path, &e))?;
            match scan.tail {
                Tail::Clean => {}
                Tail::TornAt(at) if newest => torn = Some((id, at)),
                Tail::TornAt(at) => {
                    return Err(refuse(
                        &path,
                        &format!(
                            "the group of records at offset {at} is damaged and newer segments follow it"
                        ),
                    ));
                }
            }
            sealed.insert(id, scan.sealed);
            let file = segment::open_read(&path).map_err(|e| io_error("cannot open", &path, e))?;
            total += file.metadata().map(|m| m.len()).unwrap_or(0);
            files.insert(id, Arc::new(file));
        }
        if let Some((id, at)) = torn {
            let path = segment::path(dir, id);
            if at < SEGMENT_HEADER_LEN {
                // Created, but its header never reached the disk.
                files.remove(&id);
                durable::remove(&path).map_err(|e| io_error("cannot remove", &path, e))?;
                segment::sync_dir(dir).map_err(|e| io_error("cannot sync", dir, e))?;
            } else {
                let aside = segment::keep_aside(dir, id, at)
                    .map_err(|e| io_error("cannot keep aside the torn tail of", &path, e))?;
                tracing::warn!(
                    segment = %path.display(),
                    offset = at,
                    kept_in = %aside.as_ref().map_or("(only zeros)".into(), |p| p.display().to_string()),
                    "mail log ends with an incomplete write (a crash before it was acknowledged); cutting it off"
                );
                segment::truncate(&path, at).map_err(|e| io_error("cannot truncate", &path, e))?;
            }
        }
        if let Some((&newest, _)) = files.last_key_value()
            && sealed.get(&newest) == Some(&false)
        {
            // From now on every group of the older segments counts as
            // written in full: damage in any of them is corruption.
            let path = segment::path(dir, newest);
            segment::seal(&path).map_err(|e| io_error("cannot seal", &path, e))?;
        }
        let clock = ExpiryClock {
            ms: persisted_clock.unwrap_or(wall_ms),
            at: Instant::now(),
        };
        let clock = ExpiryClock {
            ms: clock.bound(wall_ms),
            at: clock.at,
        };
        if clock.ms < wall_ms {
            tracing::warn!(
                behind_ms = wall_ms - clock.ms,
                "the wall clock is far ahead of the mail log's expiry clock (stopped for a while, or a clock step?); expiry catches up by at most an hour per pass"
            );
        }
        index.accounting.recount_bills();
        let migrated = legacy.seen();
        let reassigned = legacy.assign(&mut index, &mut next_seq);
        index.expire(clock.ms);
        let active = ids.last().map_or(1, |last| last + 1);
        let mut reserve = reserve::Reserve::new(dir, options.reserve_bytes);
        let full = match reserve.fill() {
            Ok(()) => false,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                tracing::warn!(
                    "the disk is full: no room for the mail log's space reserve; new sends are refused until there is"
                );
                true
            }
            Err(e) => return Err(io_error("cannot make the space reserve in", dir, e)),
        };
        if full {
            metrics.set_mail_log_failed(true);
        }
        let state = State {
            index,
            next_seq,
            durable_seq: next_seq - 1,
            active,
            active_len: SEGMENT_HEADER_LEN,
            files,
            buffered: Buffered::default(),
            waiters: Vec::new(),
            passive: Vec::new(),
            writer_idle: false,
            deferring: false,
            gather: 0,
            senders: writer::GroupSenders::default(),
            #[cfg(test)]
            gathered: 0,
            since_checkpoint: total,
            checkpointing: false,
            checkpoint_requested: false,
            closing: false,
            failed: None,
            full,
            clock,
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            options,
            metrics,
            state: Mutex::new(state),
            work: Condvar::new(),
            checkpoint_running: watch::Sender::new(false),
            _lock: lock,
            threads: watch::Sender::new(0),
        });
        let alive = ThreadAlive::start(&shared);
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("relay-mail-writer".into())
            .spawn(move || {
                // Dropped after `writer` (declared first).
                let _alive = alive;
                let writer = writer;
                writer::write_loop(&writer, reserve);
            })
            .map_err(|e| StorageError::Backend(format!("cannot start the mail writer: {e}")))?;
        let log = Self {
            owner: Arc::new(Owner { shared }),
        };
        if migrated {
            log.migrate(&reassigned)?;
        }
        Ok(log)
    }

    fn shared(&self) -> &Shared {
        &self.owner.shared
    }

    /// Make the accept ids assigned at open to records of an older format
    /// durable (see `legacy`): write the idempotency entries again with
    /// theirs, and the sequence past the fresh ones, now; the copies' ids
    /// are derived the same way at every open until the checkpoint
    /// requested here writes them out.
    fn migrate(&self, reassigned: &[(index::SentKey, index::SentEntry)]) -> StorageResult<()> {
        let shared = self.shared();
        {
            let mut state = shared.lock();
            let next = state.next_seq;
            state.append(shared.options.segment_bytes, |w| {
                w.seq_floor(next);
                for ((sender, recipient, message_id), entry) in reassigned {
                    w.sent(
                        sender,
                        recipient,
                        message_id,
                        entry.server_ts,
                        entry.expires,
                        entry.accept_id,
                    );
                }
            });
            state.checkpoint_requested = true;
        }
        self.flush_blocking()?;
        tracing::info!(
            idempotency_entries = reassigned.len(),
            "mail log of an older format: accept ids assigned; a checkpoint rewrites it in the current format"
        );
        Ok(())
    }

    /// Store one message for all its devices, durably, unless it is a
    /// duplicate or a queue is full. A duplicate is answered once
    /// everything before it (its original included) is durable.
    pub async fn enqueue(&self, message: NewMessage, max_queue: u64) -> StorageResult<Enqueued> {
        let shared = self.shared();
        let (outcome, durable) = {
            let mut state = shared.lock();
            state.usable()?;
            let key = (message.sender, message.recipient, message.message_id);
            if let Some(first) = state.index.sent.get(&key) {
                let outcome = Enqueued::Duplicate {
                    server_timestamp_ms: first.server_ts,
                    accept_id: first.accept_id,
                };
                state.senders.note(message.sender, message.sender_device);
                (outcome, shared.durable_waiter(&mut state))
            } else {
                if state.full {
                    return Err(StorageError::Full);
                }
                if let Some((device, _)) = message
                    .copies
                    .iter()
                    .find(|(device, _)| state.index.depth(message.recipient, *device) >= max_queue)
                {
                    return Ok(Enqueued::QueueFull { device: *device });
                }
                // The consent the send was decided on is still the one
                // kept: a grant or revocation in between refuses it here,
                // under the same lock as the write.
                // Nor did the recipient block the sender since.
                let epoch = state
                    .index
                    .accounting
                    .block_epochs
                    .get(&(message.recipient, message.sender))
                    .copied()
                    .unwrap_or(0);
                if epoch != message.effects.block_epoch_seen {
                    return Ok(Enqueued::BlockedMeanwhile);
                }
                // The messaging tier: the count and the limit are read
                // and written under this lock, with the copies.
                let reach = match message.effects.reach {
                    None => None,
                    Some(limit) => {
                        use crate::policy::quality::{ReachAdmission, admit_reach};
                        let accounting = &mut state.index.accounting;
                        let window =
                            accounting.reach_window(message.sender, message.server_timestamp_ms);
                        let last = accounting
                            .reaches
                            .get(&message.sender)
                            .and_then(|r| r.last.get(&message.recipient))
                            .copied();
                        match admit_reach(last, window, limit.limit, message.server_timestamp_ms) {
                            ReachAdmission::AlreadyReached => None,
                            ReachAdmission::Counts => Some((
                                message.sender,
                                message.recipient,
                                message.server_timestamp_ms,
                            )),
                            ReachAdmission::OverLimit { retry_at_ms, limit } => {
                                return Ok(Enqueued::QuotaExceeded { limit, retry_at_ms });
                            }
                        }
                    }
                };
                if let Some(seen) = &message.effects.consent_seen {
                    let now = state
                        .index
                        .accounting
                        .consents
                        .get(&(seen.customer, seen.business))
                        .map_or((0, false), |c| (c.counter, c.revoked_by_block));
                    if now != (seen.counter, seen.revoked_by_block) {
                        return Ok(Enqueued::ConsentChanged);
                    }
                }
                let first_seq = state.next_seq;
                // The accept id is the first copy's seq: unique and never
                // handed out again (see `record`). A send with no copy
                // still takes one seq for it.
                let accept_id = first_seq;
                let origin = Origin {
                    sender: message.sender,
                    sender_device: message.sender_device,
                    message_id: message.message_id,
                    expires: message.expires_at_ms,
                    accept_id,
                };
                state.next_seq += (message.copies.len() as u64).max(1);
                let copies: Vec<(u32, u64, &[u8])> = message
                    .copies
                    .iter()
                    .zip(first_seq..)
                    .map(|((device, envelope), seq)| (*device, seq, envelope.as_slice()))
                    .collect();
                let mut effects = accept_effects(&state.index.accounting, &message, accept_id);
                effects.reach = reach;
                let (segment, start, offsets) = state.append(shared.options.segment_bytes, |w| {
                    // One group: the copies and everything the accept
                    // changes besides are durable together or not at all.
                    let offsets = w.message(
                        &origin,
                        &message.recipient,
                        message.server_timestamp_ms,
                        &copies,
                    );
                    effects.write(w, shared.options.appends_ledger());
                    offsets
                });
                effects.apply(&mut state.index.accounting);
                state.buffered.accepts = true;
                for ((device, seq, envelope), offset) in copies.iter().zip(offsets) {
                    let at = Location {
                        segment,
                        offset: start + offset as u64,
                        len: envelope.len() as u32,
                    };
                    state
                        .index
                        .insert(message.recipient, *device, *seq, Entry { origin, at });
                }
                state.index.sent.insert(
                    key,
                    SentEntry {
                        server_ts: message.server_timestamp_ms,
                        expires: idempotency_expiry(
                            message.server_timestamp_ms,
                            message.expires_at_ms,
                        ),
                        accept_id,
                    },
                );
                state.senders.note(message.sender, message.sender_device);
                (
                    Enqueued::Stored { accept_id },
                    shared.durable_waiter(&mut state),
                )
            }
        };
        durable.await.map_err(|_| StorageError::Closed)??;
        Ok(outcome)
    }

    /// Up to `limit` durable, unexpired copies queued for a device after
    /// `after`, read from disk.
    pub fn pending(
        &self,
        account: AccountId,
        device: u32,
        after: Option<u64>,
        limit: usize,
        now_ms: u64,
    ) -> StorageResult<Vec<QueuedEnvelope>> {
        let picks: Vec<(u64, u64, Location, Arc<File>)> = {
            let state = self.shared().lock();
            // A wall clock stepped forward hides nothing either.
            let now_ms = state.clock.bound(now_ms);
            let Some(queue) = state.index.devices.get(&(account, device)) else {
                return Ok(Vec::new());
            };
            let from = match after {
                Some(seq) => match seq.checked_add(1) {
                    Some(next) => next,
                    None => return Ok(Vec::new()),
                },
                None => 0,
            };
            if from > state.durable_seq {
                return Ok(Vec::new());
            }
            let mut picks = Vec::with_capacity(limit.min(queue.by_seq.len()));
            for (&seq, entry) in queue.by_seq.range(from..=state.durable_seq) {
                if picks.len() >= limit {
                    break;
                }
                if entry.origin.expires <= now_ms {
                    continue;
                }
                let file = state
                    .files
                    .get(&entry.at.segment)
                    .ok_or(StorageError::Corrupt("mail log segment missing"))?;
                picks.push((seq, entry.origin.accept_id, entry.at, file.clone()));
            }
            picks
        };
        read_envelopes(picks)
    }

    /// Copies queued for a device.
    pub fn queued_count(&self, account: AccountId, device: u32) -> u64 {
        self.shared().lock().index.depth(account, device)
    }

    /// Every account with copies queued (once each).
    pub fn queued_accounts(&self) -> Vec<AccountId> {
        let state = self.shared().lock();
        let mut accounts: Vec<AccountId> = state
            .index
            .devices
            .keys()
            .map(|(account, _)| *account)
            .collect();
        accounts.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        accounts.dedup();
        accounts
    }

    /// Copies queued per (account, device), sorted.
    pub fn queue_depths(&self) -> Vec<(AccountId, u32, u64)> {
        let state = self.shared().lock();
        let mut all: Vec<_> = state
            .index
            .devices
            .iter()
            .filter(|(_, q)| !q.by_seq.is_empty())
            .map(|(&(account, device), q)| (account, device, q.by_seq.len() as u64))
            .collect();
        all.sort_unstable_by(|x, y| (x.0.as_bytes(), x.1).cmp(&(y.0.as_bytes(), y.1)));
        all
    }

    /// Copies queued in total.
    pub fn total_queued(&self) -> u64 {
        self.shared().lock().index.queued
    }

    /// Delete a queued copy and keep a `Delivered` receipt for its
    /// sending device (until `receipt_expires`), both in one group: both
    /// are durable or neither. Returns the sender's device if the copy was
    /// queued, and a receiver told once the group is durable (the receipt
    /// is then visible to [`MailLog::pending_receipts`]); it does not hurry
    /// the group, which rides with the next send's sync or goes alone
    /// soon after.
    pub fn acknowledge(
        &self,
        account: AccountId,
        device: u32,
        of: AckOf,
        receipt_expires: u64,
    ) -> StorageResult<Option<(AccountId, u32, Waited)>> {
        self.acknowledge_with(account, device, of, receipt_expires, None)
    }

    /// The ledger entry of the send whose copy `of` names, if that copy is
    /// queued for the device and the send is billed (its ack must then be
    /// signed: see [`MailLog::acknowledge_delivered`]).
    pub fn billed_copy(&self, account: AccountId, device: u32, of: AckOf) -> Option<LedgerEntry> {
        let state = self.shared().lock();
        let accept_id = state.index.find_accept_id(account, device, of)?;
        state.index.accounting.ledger.get(&accept_id).cloned()
    }

    /// [`MailLog::acknowledge`] of a billed copy whose signed ack was
    /// checked: the deletion, the receipt and, if no device of the
    /// customer acked this send before, `delivered` go in one group. Only
    /// if the copy queued is of `delivered.accept_id`.
    pub fn acknowledge_delivered(
        &self,
        account: AccountId,
        device: u32,
        of: AckOf,
        receipt_expires: u64,
        delivered: DeliveredEntry,
    ) -> StorageResult<Option<(AccountId, u32, Waited)>> {
        self.acknowledge_with(account, device, of, receipt_expires, Some(delivered))
    }

    /// The signed first delivery of the billed send `accept_id`, durable
    /// or not yet (it is in the same group as its device's receipt: once
    /// that receipt is pending, it is durable).
    pub fn delivered_entry(&self, accept_id: u64) -> Option<(LedgerEntry, DeliveredEntry)> {
        let state = self.shared().lock();
        let accounting = &state.index.accounting;
        let delivered = accounting.delivered.get(&accept_id)?;
        Some((accounting.ledger.get(&accept_id)?.clone(), *delivered))
    }

    /// Every business with a bill, and the number of lines in it.
    pub fn bill_lengths(&self) -> Vec<(AccountId, u64)> {
        let state = self.shared().lock();
        state
            .index
            .accounting
            .bill_lengths
            .iter()
            .map(|(&business, &lines)| (business, lines))
            .collect()
    }

    /// `business`'s bill: its billed sends a customer device acked, with
    /// that delivery, in chain order (entries from before bills were
    /// chained first, by accept id, then by position).
    pub fn bill(&self, business: AccountId) -> Vec<(LedgerEntry, DeliveredEntry)> {
        let state = self.shared().lock();
        let accounting = &state.index.accounting;
        let mut lines: Vec<(LedgerEntry, DeliveredEntry)> = accounting
            .delivered
            .values()
            .filter_map(|d| {
                let entry = accounting.ledger.get(&d.accept_id)?;
                (entry.business == business).then(|| (entry.clone(), *d))
            })
            .collect();
        lines.sort_unstable_by_key(|(_, d)| (d.chain_seq.is_some(), d.chain_seq, d.accept_id));
        lines
    }

    /// The bills of `businesses` (each as [`Self::bill`] gives it), read
    /// in one pass over the deliveries.
    pub fn bills_of(
        &self,
        businesses: &std::collections::HashSet<AccountId>,
    ) -> std::collections::HashMap<AccountId, Vec<(LedgerEntry, DeliveredEntry)>> {
        let mut bills: std::collections::HashMap<AccountId, Vec<(LedgerEntry, DeliveredEntry)>> =
            std::collections::HashMap::new();
        {
            let state = self.shared().lock();
            let accounting = &state.index.accounting;
            for d in accounting.delivered.values() {
                if let Some(entry) = accounting.ledger.get(&d.accept_id)
                    && businesses.contains(&entry.business)
                {
                    bills
                        .entry(entry.business)
                        .or_default()
                        .push((entry.clone(), *d));
                }
            }
        }
        for lines in bills.values_mut() {
            lines.sort_unstable_by_key(|(_, d)| (d.chain_seq.is_some(), d.chain_seq, d.accept_id));
        }
        bills
    }

    /// Distinct customers `business` reached with templates on UTC `day`.
    pub fn customers_reached(&self, business: AccountId, day: u32) -> u64 {
        let state = self.shared().lock();
        state
            .index
            .accounting
            .reached
            .get(&(business, day))
            .map_or(0, |set| set.len() as u64)
    }

    /// `business`'s customers counted towards its messaging tier in the
    /// 24 hours before `now_ms`, and in the 7 days before it.
    pub fn reach_usage(
        &self,
        business: AccountId,
        now_ms: u64,
    ) -> (crate::policy::quality::ReachWindow, u64) {
        let state = self.shared().lock();
        state.index.accounting.reach_usage(business, now_ms)
    }

    /// Every signed first delivery, in order of accept id.
    pub fn delivered_entries(&self) -> Vec<DeliveredEntry> {
        let state = self.shared().lock();
        state.index.accounting.delivered.values().copied().collect()
    }

    fn acknowledge_with(
        &self,
        account: AccountId,
        device: u32,
        of: AckOf,
        receipt_expires: u64,
        delivered: Option<DeliveredEntry>,
    ) -> StorageResult<Option<(AccountId, u32, Waited)>> {
        let shared = self.shared();
        let mut state = shared.lock();
        state.usable()?;
        // A signed ack deletes only the billed copy it was checked for,
        // and makes the ledger's delivered entry only if none is kept yet.
        let delivered = match delivered {
            None => None,
            Some(mut d) => {
                let accept_id = state.index.find_accept_id(account, device, of);
                let accounting = &state.index.accounting;
                let Some(business) = accounting.ledger.get(&d.accept_id).map(|e| e.business) else {
                    return Ok(None);
                };
                if accept_id != Some(d.accept_id) {
                    return Ok(None);
                }
                // The next line of the business's bill.
                d.chain_seq = Some(accounting.bill_lengths.get(&business).copied().unwrap_or(0));
                (!accounting.delivered.contains_key(&d.accept_id)).then_some((business, d))
            }
        };
        let removed = match of {
            AckOf::Accept(accept_id) => state.index.remove_accept(account, device, accept_id, None),
            AckOf::AcceptOf {
                accept_id,
                sender,
                message_id,
            } => state
                .index
                .remove_accept(account, device, accept_id, Some((sender, message_id))),
            AckOf::Message { sender, message_id } => {
                state.index.remove_id(account, device, sender, &message_id)
            }
        };
        let Some((seq, entry)) = removed else {
            return Ok(None);
        };
        let sender = entry.origin.sender;
        let sender_device = entry.origin.sender_device;
        let receipt = ReceiptRef {
            recipient: account,
            recipient_device: device,
            message_id: entry.origin.message_id,
            expires: receipt_expires,
            accept_id: entry.origin.accept_id,
        };
        let receipt_seq = state.next_seq;
        state.next_seq += 1;
        // One append: one group, so the deletion and the receipt land in
        // the same write.
        state.append(shared.options.segment_bytes, |w| {
            w.removed(&account, device, seq);
            w.receipt(&sender, sender_device, receipt_seq, &receipt);
            if let Some((_, d)) = &delivered
                && shared.options.appends_ledger()
            {
                w.delivered(d);
            }
        });
        state
            .index
            .insert_receipt(sender, sender_device, receipt_seq, receipt);
        if let Some((business, d)) = delivered {
            let accounting = &mut state.index.accounting;
            accounting.delivered.insert(d.accept_id, d);
            *accounting.bill_lengths.entry(business).or_default() += 1;
        }
        let (tx, rx) = oneshot::channel();
        state.passive.push(tx);
        shared.wake_writer(&state);
        Ok(Some((sender, sender_device, rx)))
    }

    /// [`MailLog::acknowledge`] with a receipt that never expires, returning
    /// only the sender's device (tests).
    #[cfg(test)]
    pub(crate) fn ack(
        &self,
        account: AccountId,
        device: u32,
        sender: AccountId,
        message_id: &[u8; MESSAGE_ID_LEN],
    ) -> StorageResult<Option<u32>> {
        let of = AckOf::Message {
            sender,
            message_id: *message_id,
        };
        Ok(self
            .acknowledge(account, device, of, u64::MAX)?
            .map(|(_, device, _)| device))
    }

    /// Up to `limit` durable, unexpired receipts kept for a device after
    /// `after`, with their queue positions.
    pub(crate) fn pending_receipts(
        &self,
        account: AccountId,
        device: u32,
        after: Option<u64>,
        limit: usize,
        now_ms: u64,
    ) -> Vec<(u64, ReceiptRef)> {
        let state = self.shared().lock();
        let now_ms = state.clock.bound(now_ms);
        let Some(queue) = state.index.devices.get(&(account, device)) else {
            return Vec::new();
        };
        let from = match after {
            Some(seq) => match seq.checked_add(1) {
                Some(next) => next,
                None => return Vec::new(),
            },
            None => 0,
        };
        if from > state.durable_seq {
            return Vec::new();
        }
        queue
            .receipts
            .range(from..=state.durable_seq)
            .filter(|(_, r)| r.expires > now_ms)
            .take(limit)
            .map(|(&seq, r)| (seq, *r))
            .collect()
    }

    /// Delete a receipt kept for a device (its device acked it); `false`
    /// if there was none (acked already, expired, or never made). Durable
    /// with the next group, not on return: a lost deletion only means the
    /// receipt is pushed again.
    pub fn acknowledge_receipt(
        &self,
        account: AccountId,
        device: u32,
        recipient: AccountId,
        recipient_device: u32,
        message_id: &[u8; MESSAGE_ID_LEN],
    ) -> StorageResult<bool> {
        let shared = self.shared();
        let mut state = shared.lock();
        state.usable()?;
        let key: ReceiptKey = (recipient, recipient_device, *message_id);
        let Some(seq) = state.index.remove_receipt(account, device, &key) else {
            return Ok(false);
        };
        state.append(shared.options.segment_bytes, |w| {
            w.removed(&account, device, seq)
        });
        shared.wake_writer(&state);
        Ok(true)
    }

    /// Keep receipts (made by an older relay, which kept them elsewhere)
    /// in their sending devices' queues; durable once [`MailLog::flush`]
    /// returns.
    pub(crate) fn import_receipts(
        &self,
        receipts: &[(AccountId, u32, ReceiptRef)],
    ) -> StorageResult<()> {
        let shared = self.shared();
        let mut state = shared.lock();
        state.usable()?;
        for (account, device, receipt) in receipts {
            let seq = state.next_seq;
            state.next_seq += 1;
            state.append(shared.options.segment_bytes, |w| {
                w.receipt(account, *device, seq, receipt);
            });
            state.index.insert_receipt(*account, *device, seq, *receipt);
        }
        shared.wake_writer(&state);
        Ok(())
    }

    /// Up to `limit` ledger entries with an accept id above `after`, in
    /// order.
    pub fn ledger_entries(&self, after: Option<u64>, limit: usize) -> Vec<LedgerEntry> {
        let state = self.shared().lock();
        let from = match after {
            Some(id) => match id.checked_add(1) {
                Some(next) => next,
                None => return Vec::new(),
            },
            None => 0,
        };
        state
            .index
            .accounting
            .ledger
            .range(from..)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The consent kept for (`customer`, `business`).
    pub fn consent(&self, customer: AccountId, business: AccountId) -> Option<ConsentRecord> {
        let state = self.shared().lock();
        state
            .index
            .accounting
            .consents
            .get(&(customer, business))
            .copied()
    }

    /// Every consent kept for `customer`, sorted by business.
    pub fn consents_of(&self, customer: AccountId) -> Vec<ConsentRecord> {
        let state = self.shared().lock();
        let mut all: Vec<ConsentRecord> = state
            .index
            .accounting
            .consents
            .values()
            .filter(|c| c.customer == customer)
            .copied()
            .collect();
        all.sort_unstable_by(|a, b| a.business.as_bytes().cmp(b.business.as_bytes()));
        all
    }

    /// Every consent kept for `business`, sorted by customer (a scan of
    /// the consents held in memory).
    pub fn consents_for(&self, business: AccountId) -> Vec<ConsentRecord> {
        let state = self.shared().lock();
        let mut all: Vec<ConsentRecord> = state
            .index
            .accounting
            .consents
            .values()
            .filter(|c| c.business == business)
            .copied()
            .collect();
        all.sort_unstable_by(|a, b| a.customer.as_bytes().cmp(b.customer.as_bytes()));
        all
    }

    /// How many times `blocker` blocked `blocked` (what an accept of
    /// `blocked`'s send to `blocker` is decided on).
    pub fn block_epoch(&self, blocker: AccountId, blocked: AccountId) -> u64 {
        let state = self.shared().lock();
        state
            .index
            .accounting
            .block_epochs
            .get(&(blocker, blocked))
            .copied()
            .unwrap_or(0)
    }

    /// Every consent kept, sorted by (customer, business).
    pub fn all_consents(&self) -> Vec<ConsentRecord> {
        let state = self.shared().lock();
        let mut all: Vec<ConsentRecord> =
            state.index.accounting.consents.values().copied().collect();
        all.sort_unstable_by(|a, b| {
            (a.customer.as_bytes(), a.business.as_bytes())
                .cmp(&(b.customer.as_bytes(), b.business.as_bytes()))
        });
        all
    }

    /// Keep `record` if its counter is higher than the pair's (durable
    /// once the returned future completes); else [`ConsentSet::Stale`].
    pub async fn set_consent(&self, record: ConsentRecord) -> StorageResult<ConsentSet> {
        let shared = self.shared();
        let durable = {
            let mut state = shared.lock();
            state.usable()?;
            if let Some(kept) = state
                .index
                .accounting
                .consents
                .get(&(record.customer, record.business))
                && kept.counter >= record.counter
            {
                return Ok(ConsentSet::Stale { kept: kept.counter });
            }
            if state.full {
                return Err(StorageError::Full);
            }
            state.append(shared.options.segment_bytes, |w| w.consent(&record));
            state.index.accounting.consent(record);
            shared.durable_waiter(&mut state)
        };
        durable.await.map_err(|_| StorageError::Closed)??;
        Ok(ConsentSet::Kept)
    }

    /// Mark the pair's kept consent revoked by a block (durable once the
    /// returned future completes); nothing if none is kept or it is
    /// revoked already.
    pub async fn revoke_consent_by_block(
        &self,
        customer: AccountId,
        business: AccountId,
    ) -> StorageResult<()> {
        let shared = self.shared();
        let durable = {
            let mut state = shared.lock();
            state.usable()?;
            let Some(kept) = state
                .index
                .accounting
                .consents
                .get(&(customer, business))
                .copied()
            else {
                return Ok(());
            };
            if kept.revoked_by_block {
                return Ok(());
            }
            let revoked = ConsentRecord {
                revoked_by_block: true,
                ..kept
            };
            state.append(shared.options.segment_bytes, |w| w.consent(&revoked));
            state.index.accounting.consent(revoked);
            shared.durable_waiter(&mut state)
        };
        durable.await.map_err(|_| StorageError::Closed)??;
        Ok(())
    }

    /// The accept time of `customer`'s last conversation message to
    /// `business`, if any (visible once its accept is).
    pub fn last_customer_message(&self, business: AccountId, customer: AccountId) -> Option<u64> {
        let state = self.shared().lock();
        state
            .index
            .accounting
            .conversations
            .get(&(business, customer))
            .copied()
    }

    /// Every (business, customer) conversation with the accept time of the
    /// customer's last conversation message, sorted.
    pub fn conversations(&self) -> Vec<(AccountId, AccountId, u64)> {
        let state = self.shared().lock();
        let mut all: Vec<_> = state
            .index
            .accounting
            .conversations
            .iter()
            .map(|(&(b, c), &ms)| (b, c, ms))
            .collect();
        all.sort_unstable_by(|x, y| {
            (x.0.as_bytes(), x.1.as_bytes()).cmp(&(y.0.as_bytes(), y.1.as_bytes()))
        });
        all
    }

    /// (business, customer, accept time of the business-initiated
    /// conversation that last counted the customer) for the reach the
    /// quality tiers still count (the last 7 days), sorted.
    pub fn reaches(&self) -> Vec<(AccountId, AccountId, u64)> {
        let state = self.shared().lock();
        let mut all: Vec<_> = state
            .index
            .accounting
            .reaches
            .iter()
            .flat_map(|(&business, reach)| {
                reach
                    .last
                    .iter()
                    .map(move |(&customer, &ms)| (business, customer, ms))
            })
            .collect();
        all.sort_unstable_by(|x, y| {
            (x.0.as_bytes(), x.1.as_bytes()).cmp(&(y.0.as_bytes(), y.1.as_bytes()))
        });
        all
    }

    /// Every sender's counts per UTC day still kept, sorted.
    pub fn quotas(&self) -> Vec<(AccountId, u32, QuotaCounts)> {
        let state = self.shared().lock();
        let accounting = &state.index.accounting;
        let mut all: Vec<_> = accounting
            .quotas
            .iter()
            .map(|(&(sender, day), &accepted)| {
                let customers_reached = accounting
                    .reached
                    .get(&(sender, day))
                    .map_or(0, |set| set.len() as u64);
                (
                    sender,
                    day,
                    QuotaCounts {
                        accepted,
                        customers_reached,
                    },
                )
            })
            .collect();
        all.sort_unstable_by(|x, y| (x.0.as_bytes(), x.1).cmp(&(y.0.as_bytes(), y.1)));
        all
    }

    /// Receipts kept in total.
    pub fn total_receipts(&self) -> u64 {
        self.shared().lock().index.receipts
    }

    /// The time expiry went by in its last pass (or at open).
    pub fn expiry_clock_ms(&self) -> u64 {
        self.shared().lock().clock.ms
    }

    /// Advance the expiry clock towards the wall clock reading `wall_ms`
    /// (at most [`EXPIRY_CATCH_UP_MS`] past the real time elapsed since the
    /// last pass, never backwards), note it in the log, and return it.
    fn advance_clock(&self, wall_ms: u64) -> u64 {
        let shared = self.shared();
        let mut state = shared.lock();
        let before = state.clock.ms;
        let now = state.clock.bound(wall_ms);
        state.clock = ExpiryClock {
            ms: now,
            at: Instant::now(),
        };
        if now < wall_ms.saturating_sub(EXPIRY_CATCH_UP_MS) {
            tracing::warn!(
                behind_ms = wall_ms - now,
                "the wall clock is far ahead of the mail log's expiry clock (a clock step?); expiry catches up by at most an hour per pass"
            );
        }
        if now > before && state.usable().is_ok() {
            // Not waited on, like deletions: a lost one only means the
            // next start goes by an older clock.
            state.append(shared.options.segment_bytes, |w| w.clock(now));
            shared.wake_writer(&state);
        }
        now
    }

    /// Delete copies and idempotency entries expired when the wall clock
    /// reads `wall_ms`, going by the expiry clock (see
    /// [`EXPIRY_CATCH_UP_MS`]; [`MailLog::expiry_clock_ms`] tells the time
    /// used). Only the clock is written: replay expires by it too. Returns
    /// the copies deleted.
    ///
    /// Works through the index a slice at a time, so sends wait at most
    /// for one slice, not for the whole index.
    pub fn expire(&self, wall_ms: u64) -> u64 {
        let shared = self.shared();
        let now_ms = self.advance_clock(wall_ms);
        let devices: Vec<(AccountId, u32)> = shared.lock().index.devices.keys().copied().collect();
        let mut expired = 0;
        for slice in devices.chunks(SLICE) {
            let mut state = shared.lock();
            for &(account, device) in slice {
                expired += state.index.expire_device(account, device, now_ms);
            }
        }
        for shard in 0..index::SENT_SHARDS {
            shared.lock().index.sent.expire_shard(shard, now_ms);
        }
        shared
            .lock()
            .index
            .accounting
            .expire_days(utc_day(now_ms).saturating_sub(1));
        shared.lock().index.accounting.expire_reaches(now_ms);
        expired
    }

    /// The recipient blocked the sender: count the block (an accept of
    /// `sender` to `recipient` decided before it is refused) and delete
    /// every copy `sender` has queued for `recipient`'s `devices` (its
    /// current ones), without receipts, in one group; durable once the returned future completes.
    /// Returns how many copies were deleted.
    pub async fn remove_queued_from(
        &self,
        recipient: AccountId,
        devices: &[u32],
        sender: AccountId,
    ) -> StorageResult<u64> {
        let shared = self.shared();
        let (removed, durable) = {
            let mut state = shared.lock();
            state.usable()?;
            let queued = state.index.queued_from(recipient, devices, sender);
            let epochs = &mut state.index.accounting.block_epochs;
            let epoch = epochs.get(&(recipient, sender)).copied().unwrap_or(0) + 1;
            epochs.insert((recipient, sender), epoch);
            let mut removed = Vec::with_capacity(queued.len());
            for (device, seq) in queued {
                if state.index.remove_seq(recipient, device, seq).is_some() {
                    removed.push((device, seq));
                }
            }
            state.append(shared.options.segment_bytes, |w| {
                w.block_epoch(&recipient, &sender, epoch);
                for (device, seq) in &removed {
                    w.removed(&recipient, *device, *seq);
                }
            });
            (removed.len() as u64, shared.durable_waiter(&mut state))
        };
        durable.await.map_err(|_| StorageError::Closed)??;
        Ok(removed)
    }

    /// Forget a removed device's queue; returns how many copies it held.
    pub fn remove_device(&self, account: AccountId, device: u32) -> StorageResult<u64> {
        let shared = self.shared();
        let mut state = shared.lock();
        state.usable()?;
        let removed = state.index.drop_device(account, device);
        state.append(shared.options.segment_bytes, |w| {
            w.device_dropped(&account, device)
        });
        shared.wake_writer(&state);
        Ok(removed)
    }

    /// Wait until everything appended so far is durable.
    pub async fn flush(&self) -> StorageResult<()> {
        let durable = {
            let shared = self.shared();
            let mut state = shared.lock();
            state.usable()?;
            shared.durable_waiter(&mut state)
        };
        durable.await.map_err(|_| StorageError::Closed)?
    }

    /// Wait, blocking the calling thread, until everything appended so far
    /// is durable (at open, before the async runtime serves anyone).
    pub(crate) fn flush_blocking(&self) -> StorageResult<()> {
        let shared = self.shared();
        let target = {
            let state = shared.lock();
            state.usable()?;
            shared.wake_writer(&state);
            state.next_seq - 1
        };
        loop {
            {
                let state = shared.lock();
                if state.durable_seq >= target && state.buffered.is_empty() {
                    return Ok(());
                }
                if let Some(error) = &state.failed {
                    return Err(error.clone());
                }
                if state.closing {
                    return Err(StorageError::Closed);
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Idempotency entries held (tests).
    #[cfg(test)]
    pub(crate) fn idempotency_entries(&self) -> usize {
        self.shared().lock().index.sent.len()
    }

    /// (sender, message id) of each copy queued for a device, in order,
    /// from the index alone (tests).
    #[cfg(test)]
    pub(crate) fn queued_origins(
        &self,
        account: AccountId,
        device: u32,
    ) -> Vec<(AccountId, [u8; MESSAGE_ID_LEN])> {
        let state = self.shared().lock();
        state
            .index
            .devices
            .get(&(account, device))
            .map(|q| {
                q.by_seq
                    .values()
                    .map(|e| (e.origin.sender, e.origin.message_id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many groups the writer gave a moment to grow.
    #[cfg(test)]
    pub(crate) fn groups_gathered(&self) -> u64 {
        self.shared().lock().gathered
    }

    /// Start a checkpoint after the next group (unless one is running), and
    /// wait for that group.
    #[cfg(test)]
    pub(crate) async fn request_checkpoint(&self) -> StorageResult<()> {
        self.shared().lock().checkpoint_requested = true;
        self.flush().await
    }

    /// Make everything durable, wait for a running checkpoint, and refuse
    /// every later call.
    pub async fn close(&self) -> StorageResult<()> {
        let shared = self.shared();
        let (durable, mut checkpoint) = {
            let mut state = shared.lock();
            if state.closing {
                return Ok(());
            }
            let durable = shared.durable_waiter(&mut state);
            state.closing = true;
            (durable, shared.checkpoint_running.subscribe())
        };
        let mut threads = shared.threads.subscribe();
        let flushed = durable.await.map_err(|_| StorageError::Closed)?;
        let _ = checkpoint.wait_for(|running| !running).await;
        // The writer ends once closing and idle: wait until it (and any
        // checkpoint) let go of the shared state, so that dropping the
        // last handle frees the directory at once.
        let _ = threads.wait_for(|alive| *alive == 0).await;
        flushed
    }
}

/// Bytes between two copies [`read_envelopes`] reads over (record headers,
/// the records of other devices' copies and of the accept's effects)
/// rather than making a second read.
const READ_GAP: u64 = 4 << 10;

/// Longest span [`read_envelopes`] reads at once.
const READ_SPAN: u64 = 256 << 10;

/// Read the picked copies from their segments: copies close together in
/// one segment (a queue filled in order lies mostly in one stretch of the
/// log) with one positioned read of the span that holds them, not one read
/// each.
fn read_envelopes(
    picks: Vec<(u64, u64, Location, Arc<File>)>,
) -> StorageResult<Vec<QueuedEnvelope>> {
    let mut out = Vec::with_capacity(picks.len());
    let mut span = Vec::new();
    let mut rest = picks.as_slice();
    while let Some((_, _, first, file)) = rest.first() {
        let start = first.offset;
        let mut end = start + u64::from(first.len);
        let mut n = 1;
        for (_, _, at, _) in &rest[1..] {
            let at_end = at.offset + u64::from(at.len);
            if at.segment != first.segment
                || at.offset < end
                || at.offset - end > READ_GAP
                || at_end - start > READ_SPAN
            {
                break;
            }
            end = at_end;
            n += 1;
        }
        span.resize((end - start) as usize, 0);
        file.read_exact_at(&mut span, start).map_err(|e| {
            StorageError::Backend(format!("mail log: reading segment {}: {e}", first.segment))
        })?;
        for (cursor, accept_id, at, _) in &rest[..n] {
            let from = (at.offset - start) as usize;
            out.push(QueuedEnvelope {
                cursor: *cursor,
                envelope: span[from..from + at.len as usize].to_vec(),
                accept_id: *accept_id,
            });
        }
        rest = &rest[n..];
    }
    Ok(out)
}

/// Apply one replayed record to the index (expired copies too: they are
/// expired once replay is done and the persisted clock is known).
fn replay(
    index: &mut Index,
    legacy: &mut legacy::Legacy,
    next_seq: &mut u64,
    clock: &mut Option<u64>,
    segment: u32,
    body_at: u64,
    record: Record<'_>,
) {
    let location = |copy: &record::CopyRef<'_>| Location {
        segment,
        offset: body_at + copy.body_offset as u64,
        len: copy.envelope.len() as u32,
    };
    match record {
        Record::Message {
            origin,
            recipient,
            server_ts,
            copies,
        } => {
            for copy in &copies {
                *next_seq = (*next_seq).max(copy.seq.saturating_add(1));
                let at = location(copy);
                index.insert(recipient, copy.device, copy.seq, Entry { origin, at });
            }
            legacy.note(&origin, recipient, copies.iter().map(|c| c.seq));
            index.sent.insert(
                (origin.sender, recipient, origin.message_id),
                SentEntry {
                    server_ts,
                    expires: idempotency_expiry(server_ts, origin.expires),
                    accept_id: origin.accept_id,
                },
            );
        }
        Record::Queued {
            origin,
            recipient,
            copy,
        } => {
            *next_seq = (*next_seq).max(copy.seq.saturating_add(1));
            legacy.note(&origin, recipient, [copy.seq]);
            let at = location(&copy);
            index.insert(recipient, copy.device, copy.seq, Entry { origin, at });
        }
        Record::Sent {
            sender,
            recipient,
            message_id,
            server_ts,
            expires,
            accept_id,
        } => {
            legacy.note_sent(accept_id);
            index.sent.insert(
                (sender, recipient, message_id),
                SentEntry {
                    server_ts,
                    expires,
                    accept_id,
                },
            );
        }
        Record::Removed {
            account,
            device,
            seq,
        } => {
            *next_seq = (*next_seq).max(seq.saturating_add(1));
            index.remove_seq(account, device, seq);
        }
        Record::DeviceDropped { account, device } => {
            index.drop_device(account, device);
        }
        Record::SeqFloor { next } => *next_seq = (*next_seq).max(next),
        Record::Receipt {
            account,
            device,
            seq,
            receipt,
        } => {
            *next_seq = (*next_seq).max(seq.saturating_add(1));
            index.insert_receipt(account, device, seq, receipt);
        }
        Record::Clock { ms } => *clock = Some(clock.map_or(ms, |c| c.max(ms))),
        Record::Conversation {
            business,
            customer,
            last_customer_ms,
        } => index
            .accounting
            .conversation(business, customer, last_customer_ms),
        Record::Quota {
            sender,
            day,
            accepted,
        } => index.accounting.quota(sender, day, accepted),
        Record::Reached {
            business,
            day,
            customer,
        } => {
            index
                .accounting
                .reached
                .entry((business, day))
                .or_default()
                .insert(customer);
        }
        Record::Reach {
            business,
            customer,
            at_ms,
        } => index.accounting.reach(business, customer, at_ms),
        Record::Ledger(entry) => {
            index.accounting.ledger.insert(entry.accept_id, entry);
        }
        Record::Consent(record) => index.accounting.consent(record),
        Record::BlockEpoch {
            blocker,
            blocked,
            epoch,
        } => {
            let at = index
                .accounting
                .block_epochs
                .entry((blocker, blocked))
                .or_insert(epoch);
            *at = (*at).max(epoch);
        }
        Record::Delivered(entry) => {
            index
                .accounting
                .delivered
                .entry(entry.accept_id)
                .or_insert(entry);
        }
    }
}

/// Milliseconds in a UTC day (quota counts are per day).
pub const DAY_MS: u64 = 86_400_000;

/// The UTC day (days since the epoch) of a time in ms.
pub fn utc_day(ms: u64) -> u32 {
    u32::try_from(ms / DAY_MS).unwrap_or(u32::MAX)
}

/// The records an accept writes besides its copies, computed from the
/// index before it changes.
struct Effects {
    conversation: Option<(AccountId, AccountId, u64)>,
    quota: (AccountId, u32, u64),
    reached: Option<(AccountId, u32, AccountId)>,
    /// (business, customer, time): counted towards the tier limit.
    reach: Option<(AccountId, AccountId, u64)>,
    ledger: Option<LedgerEntry>,
}

fn accept_effects(accounting: &index::Accounting, message: &NewMessage, accept_id: u64) -> Effects {
    let ts = message.server_timestamp_ms;
    let day = utc_day(ts);
    let sender = message.sender;
    let effects = &message.effects;
    let accepted = accounting
        .quotas
        .get(&(sender, day))
        .copied()
        .unwrap_or(0)
        .saturating_add(1);
    Effects {
        conversation: effects
            .customer_wrote_to
            .map(|business| (business, sender, ts)),
        quota: (sender, day, accepted),
        reached: effects
            .business_reached
            .map(|customer| (sender, day, customer)),
        // Decided by the caller, under the lock, with the limit.
        reach: None,
        ledger: effects.billed.as_ref().map(|billed| LedgerEntry {
            accept_id,
            message_id: message.message_id,
            business: sender,
            customer: message.recipient,
            category: billed.category,
            template_id: billed.template_id.clone(),
            franking_tag: billed.franking_tag.clone(),
            accepted_at_ms: ts,
            priced: Some(billed.priced),
        }),
    }
}

impl Effects {
    /// Write the records; the ledger entry only if `ledger` (see
    /// [`LogOptions::appends_ledger`]).
    fn write(&self, w: &mut Writer, ledger: bool) {
        if let Some((business, customer, ms)) = &self.conversation {
            w.conversation(business, customer, *ms);
        }
        let (sender, day, accepted) = &self.quota;
        w.quota(sender, *day, *accepted);
        if let Some((business, day, customer)) = &self.reached {
            w.reached(business, *day, customer);
        }
        if let Some((business, customer, ms)) = &self.reach {
            w.reach(business, customer, *ms);
        }
        if let Some(entry) = &self.ledger
            && ledger
        {
            w.ledger(entry);
        }
    }

    fn apply(self, accounting: &mut index::Accounting) {
        if let Some((business, customer, ms)) = self.conversation {
            accounting.conversation(business, customer, ms);
        }
        let (sender, day, accepted) = self.quota;
        accounting.quota(sender, day, accepted);
        if let Some((business, day, customer)) = self.reached {
            accounting
                .reached
                .entry((business, day))
                .or_default()
                .insert(customer);
        }
        if let Some((business, customer, ms)) = self.reach {
            accounting.reach(business, customer, ms);
        }
        if let Some(entry) = self.ledger {
            accounting.ledger.insert(entry.accept_id, entry);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
