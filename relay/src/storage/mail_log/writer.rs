//! The writer thread: takes what appenders buffered, writes and syncs it
//! as one group, then answers the group's waiters. A group whose write
//! fails (a full disk, no file descriptor left) is refused to its waiters
//! and tried again with backoff, every other write refused meanwhile, until
//! it goes through: the log then takes writes again by itself.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comptoir_protocol::AccountId;

use super::checkpoint::maybe_checkpoint;
use super::durable;
use super::reserve::Reserve;
use super::{
    Buffered, Shared, StorageError, StorageResult, Waiter, io_error, segment, write_error,
};

/// How far ahead of the data a segment is filled with zeros. A sync of a
/// write that grows the file also commits the file system's journal (the
/// new length, the new blocks); a write over blocks already written is
/// synced with the data alone, which costs a fraction of that on ext4. So
/// the writer writes zeros ahead, one sync per this many bytes, and groups
/// land on written blocks. A segment's zeros are cut off before it stops
/// being the newest one (see [`let_go_below`]): only the newest segment can
/// end in zeros, which replay cuts off like a torn write.
const ZERO_AHEAD: u64 = 1 << 20;

/// A segment the writer appends to: its file, the length of its data, and
/// how far it is filled with zeros beyond.
struct Seg {
    file: Arc<File>,
    len: u64,
    zeroed: u64,
}

/// Segments this thread created and still appends to.
type Open = HashMap<u32, Seg>;

/// Cut a segment's zeros off, durably.
fn trim(shared: &Shared, id: u32, seg: &mut Seg) -> StorageResult<()> {
    if seg.zeroed > seg.len {
        let path = segment::path(&shared.dir, id);
        seg.file
            .set_len(seg.len)
            .map_err(|e| io_error("cannot truncate", &path, e))?;
        durable::sync_data(&seg.file).map_err(|e| write_error("cannot sync", &path, e))?;
        seg.zeroed = seg.len;
    }
    Ok(())
}

/// Stop appending to the segments below `bound`, their zeros cut off
/// first: a segment that is not the newest must end with its data.
fn let_go_below(shared: &Shared, open: &mut Open, bound: u32) -> StorageResult<()> {
    let ids: Vec<u32> = open.keys().copied().filter(|id| *id < bound).collect();
    for id in ids {
        if let Some(seg) = open.get_mut(&id) {
            trim(shared, id, seg)?;
        }
        open.remove(&id);
    }
    Ok(())
}

/// One group taken by the writer.
struct Group {
    buffered: Buffered,
    waiters: Vec<Waiter>,
    /// Highest seq handed out when the group was taken.
    upto: u64,
    /// Taken while closing: nothing can be appended after it, so the
    /// newest segment is sealed with it.
    last: bool,
    /// The segment receiving appends when it was taken: the writer lets go
    /// of those below once the group is written (a checkpoint moved past
    /// them), before any waiter (the checkpoint's) hears of it.
    active: u32,
}

thread_local! {
    /// Whether the group being written holds a send's accept (fault
    /// injection stops only at those).
    static ACCEPTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How long records nobody waits for (deletions) may stay unsynced while
/// the writer waits for a send to share a sync with.
const DEFER_UNWAITED: Duration = Duration::from_millis(5);

/// While the writer gathers a group, a wait of this long in which no new
/// waiter came ends the gathering (so it ends 250–500 µs after the last
/// arrival). Measured (docs/BENCHMARKS.md, "back-to-back store syncs and a
/// relay that stops gathering when arrivals stop"): 50–400 µs all beat
/// waiting out the linger; the hundred-device load lost about 15% of its
/// throughput at 100 µs (its groups ended early) and none at 250–500 µs.
/// (One device's sends are not gathered at all: see [`LastGroup`].)
const ARRIVAL_GAP: Duration = Duration::from_micros(250);

/// First wait before a failed write is tried again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(10);

/// Longest wait between two tries of a failed write.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// A group's bytes, per segment, not yet durable, in order.
struct Unwritten {
    chunks: VecDeque<(u32, Vec<u8>)>,
    /// Length of the front chunk's segment before its write began, once
    /// known: a failed write is cut back to it before the next try.
    front_from: Option<u64>,
}

/// While the disk is full: when, and after what wait, the reserve is to be
/// made again.
struct Refill {
    at: Instant,
    wait: Duration,
}

/// The sending devices whose sends wait in the group being formed: enough
/// to tell one device from several.
#[derive(Debug, Default)]
pub(super) struct GroupSenders {
    first: Option<(AccountId, u32)>,
    several: bool,
}

impl GroupSenders {
    /// A send of `device` of `account` waits in the group.
    pub(super) fn note(&mut self, account: AccountId, device: u32) {
        match self.first {
            None => self.first = Some((account, device)),
            Some(first) => self.several |= first != (account, device),
        }
    }
}

/// What the last group was, which decides whether the next is gathered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LastGroup {
    /// Its waiters.
    waiters: usize,
    /// Whether its sends came from more than one device.
    several_senders: bool,
}

impl LastGroup {
    /// Whether to give a group that `waiting` callers have begun a moment
    /// to grow: only when the last one had more waiters, sent by more than
    /// one device. Independent senders arrive at random, and those that
    /// came together once are likely to again; one device's concurrent
    /// sends (a client multiplexing many tasks over one connection) come
    /// in bursts paced by that client's own store syncs, so the rest of
    /// its last group is not coming yet, and waiting for it only delays
    /// the sends already here (docs/BENCHMARKS.md, "one device's sends
    /// are not gathered").
    fn gathers(self, waiting: usize) -> bool {
        self.several_senders && waiting < self.waiters
    }
}

pub(super) fn write_loop(shared: &Arc<Shared>, mut reserve: Reserve) {
    // Segments this thread created and still appends to.
    let mut open: Open = HashMap::new();
    // The last group: how many to gather for the next, if any.
    let mut last_group = LastGroup::default();
    let mut refill = shared.lock().full.then(|| Refill {
        at: Instant::now(),
        wait: RETRY_FIRST,
    });
    loop {
        if let Some(next) = &mut refill
            && Instant::now() >= next.at
        {
            match reserve.fill() {
                Ok(()) => {
                    refill = None;
                    let mut state = shared.lock();
                    state.full = false;
                    if state.failed.is_none() {
                        shared.metrics.set_mail_log_failed(false);
                    }
                    tracing::info!("the space reserve is back: the mail log takes sends again");
                }
                Err(error) => {
                    tracing::debug!(%error, "the disk is still full");
                    next.wait = (next.wait * 2).min(RETRY_MAX);
                    next.at = Instant::now() + next.wait;
                }
            }
        }
        let wake_at = refill.as_ref().map(|r| r.at);
        let Some(group) = next_group(shared, &mut open, &mut last_group, wake_at) else {
            // Dropped without `close`: seal what this thread wrote.
            if shared.lock().failed.is_none() {
                let _ = seal_newest(shared, &mut open);
            }
            return;
        };
        let started = Instant::now();
        let accepts = group.buffered.accepts;
        ACCEPTS.set(accepts);
        let mut unwritten = Unwritten {
            chunks: group
                .buffered
                .chunks
                .into_iter()
                .map(|(id, mut w)| (id, w.finish_group()))
                .collect(),
            front_from: None,
        };
        let bytes: u64 = unwritten.chunks.iter().map(|(_, b)| b.len() as u64).sum();
        let mut created = Vec::new();
        let mut written = write_chunks(shared, &mut open, &mut unwritten, &mut created);
        if group.last
            && written.is_ok()
            && let Err(error) = seal_newest(shared, &mut open)
        {
            written = Err(error);
        }
        if matches!(written, Err(StorageError::Full)) && reserve.held() {
            // The disk is full: give the reserve back and write the group
            // into it; from now on sends are refused, and acks, deletions
            // and the directory store's writes use what is left of it.
            match reserve.release() {
                Ok(()) => {
                    tracing::warn!(
                        "the disk is full: the space reserve was given back; new sends are refused until space is freed"
                    );
                    shared.lock().full = true;
                    shared.metrics.set_mail_log_failed(true);
                    refill = Some(Refill {
                        at: Instant::now() + RETRY_FIRST,
                        wait: RETRY_FIRST,
                    });
                    written = repair(shared, &mut open, &mut unwritten)
                        .and_then(|()| {
                            write_chunks(shared, &mut open, &mut unwritten, &mut created)
                        })
                        .and_then(|()| {
                            if group.last {
                                seal_newest(shared, &mut open)
                            } else {
                                Ok(())
                            }
                        });
                }
                Err(error) => {
                    tracing::error!(%error, "cannot give the space reserve back");
                }
            }
        }
        let mut waiters = Some(group.waiters);
        if let Err(error) = written {
            // What reached the disk is unknown: this group's senders are
            // told it failed (not acknowledged: a retry with the same
            // message id is answered once the group is written), every
            // later write is refused, and the group is tried again until it
            // goes through, then the log takes writes again.
            tracing::error!(%error, "mail log write failed; refusing writes until it succeeds (retrying)");
            shared.lock().failed = Some(error.clone());
            shared.metrics.set_mail_log_failed(true);
            for waiter in waiters.take().into_iter().flatten() {
                let _ = waiter.send(Err(error.clone()));
            }
            if !retry(shared, &mut open, &mut unwritten, &mut created, group.last) {
                // Closing while it still fails: give up.
                return;
            }
            tracing::info!("mail log write succeeded again; taking writes");
        }
        if let Err(error) = let_go_below(shared, &mut open, group.active) {
            // Tried again after the next group; until then a crash would
            // leave zeros ending a segment that is not the newest, which
            // replay refuses (naming the file: cut the zeros off).
            tracing::error!(%error, "mail log: cannot cut the zeros off an older segment");
        }
        if accepts {
            crate::fault::hit("after-sync");
        }
        {
            let mut state = shared.lock();
            if state.failed.take().is_some() && !state.full {
                shared.metrics.set_mail_log_failed(false);
            }
            state.durable_seq = state.durable_seq.max(group.upto);
            state.since_checkpoint += bytes;
            for (id, file) in created {
                state.files.insert(id, file);
            }
            maybe_checkpoint(shared, &mut state);
        }
        if let Some(waiters) = waiters {
            if bytes > 0 {
                shared
                    .metrics
                    .record_flush(started.elapsed(), waiters.len());
            }
            for waiter in waiters {
                let _ = waiter.send(Ok(()));
            }
        }
    }
}

/// Try a failed group again, with backoff, until it is written (`true`)
/// or the log is closing (`false`).
fn retry(
    shared: &Shared,
    open: &mut Open,
    unwritten: &mut Unwritten,
    created: &mut Vec<(u32, Arc<File>)>,
    last: bool,
) -> bool {
    let mut wait = RETRY_FIRST;
    loop {
        {
            let state = shared.lock();
            if state.closing && !last {
                return false;
            }
            let (state, _) = shared
                .work
                .wait_timeout(state, wait)
                .unwrap_or_else(|p| p.into_inner());
            if state.closing && !last {
                return false;
            }
        }
        wait = (wait * 2).min(RETRY_MAX);
        let tried = repair(shared, open, unwritten)
            .and_then(|()| write_chunks(shared, open, unwritten, created))
            .and_then(|()| {
                if last {
                    seal_newest(shared, open)
                } else {
                    Ok(())
                }
            });
        match tried {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "mail log write failed again");
                if last {
                    // A close waits for nobody now: give up.
                    return false;
                }
            }
        }
    }
}

/// Undo what a failed write of the front chunk may have left: cut its
/// segment back, or remove a segment whose creation did not finish.
fn repair(shared: &Shared, open: &mut Open, unwritten: &mut Unwritten) -> StorageResult<()> {
    let Some((id, _)) = unwritten.chunks.front() else {
        return Ok(());
    };
    let path = segment::path(&shared.dir, *id);
    match (open.get_mut(id), unwritten.front_from) {
        (Some(seg), Some(from)) => {
            seg.file
                .set_len(from)
                .map_err(|e| io_error("cannot truncate", &path, e))?;
            seg.len = from;
            seg.zeroed = from;
            durable::sync_data(&seg.file).map_err(|e| io_error("cannot sync", &path, e))
        }
        (Some(_), None) => Ok(()),
        (None, _) => match durable::remove(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("cannot remove", &path, e)),
        },
    }
}

/// Wait for work and take it; `None` once closing with nothing left.
/// With `wake_at` (the disk is full), an empty group is returned at that
/// time if nothing came, so that the reserve can be made again.
fn next_group(
    shared: &Shared,
    open: &mut Open,
    last_group: &mut LastGroup,
    wake_at: Option<Instant>,
) -> Option<Group> {
    let mut state = shared.lock();
    while state.buffered.is_empty() && state.waiters.is_empty() {
        // Nothing buffered, so nothing more will go to a segment below the
        // active one: let go of it (a checkpoint may have deleted it, and
        // its disk space is freed only once no handle is left).
        let active = state.active;
        if let Err(error) = let_go_below(shared, open, active) {
            tracing::error!(%error, "mail log: cannot cut the zeros off an older segment");
        }
        if state.closing {
            return None;
        }
        state.writer_idle = true;
        match wake_at {
            None => state = shared.work.wait(state).unwrap_or_else(|p| p.into_inner()),
            Some(at) => {
                let now = Instant::now();
                if now >= at {
                    state.writer_idle = false;
                    return Some(Group {
                        buffered: Buffered::default(),
                        waiters: Vec::new(),
                        upto: state.durable_seq,
                        last: false,
                        active: state.active,
                    });
                }
                state = shared
                    .work
                    .wait_timeout(state, at - now)
                    .map(|(state, _)| state)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
        state.writer_idle = false;
    }
    if state.waiters.is_empty() && !state.closing {
        // Only records nobody waits for (acks' deletions, the expiry
        // clock): let them ride with the next send's sync, and sync them
        // alone only after `DEFER_UNWAITED`. A lone sender whose recipient
        // acks at once then pays one sync per send, not two.
        let deadline = Instant::now() + DEFER_UNWAITED;
        loop {
            let now = Instant::now();
            if !state.waiters.is_empty() || state.closing || now >= deadline {
                break;
            }
            // Woken by a waiter or a close, not by more unwaited records.
            state.writer_idle = true;
            state.deferring = true;
            state = shared
                .work
                .wait_timeout(state, deadline - now)
                .map(|(state, _)| state)
                .unwrap_or_else(|p| p.into_inner().0);
            state.writer_idle = false;
            state.deferring = false;
        }
    }
    if !state.closing && last_group.gathers(state.waiters.len()) {
        // Several senders were at work: give as many a moment to arrive,
        // so that they share this sync instead of each paying for one.
        // Appenders wake this wait only once the group is complete.
        // Arrivals that stop for [`ARRIVAL_GAP`] end the wait early: the
        // rest of the last group's senders are busy elsewhere (waiting
        // for their own store, say), and waiting on for them only delays
        // those already here.
        let deadline = Instant::now() + shared.options.linger;
        state.gather = last_group.waiters;
        #[cfg(test)]
        {
            state.gathered += 1;
        }
        let mut seen = state.waiters.len();
        loop {
            let now = Instant::now();
            if state.closing || state.waiters.len() >= state.gather || now >= deadline {
                break;
            }
            let (next, timeout) = shared
                .work
                .wait_timeout(state, ARRIVAL_GAP.min(deadline - now))
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            if timeout.timed_out() {
                if state.waiters.len() == seen {
                    break;
                }
                seen = state.waiters.len();
            }
        }
        state.gather = 0;
    }
    *last_group = LastGroup {
        waiters: state.waiters.len(),
        several_senders: std::mem::take(&mut state.senders).several,
    };
    Some(Group {
        buffered: std::mem::take(&mut state.buffered),
        waiters: state.take_waiters(),
        upto: state.next_seq - 1,
        last: state.closing,
        active: state.active,
    })
}

/// Write and sync a group's chunks, front first, each dropped once
/// durable; the segments created are added to `created`.
///
/// Each segment's bytes are synced before the next segment is written, so
/// after a crash only the newest segment holding records can end in a torn
/// write; replay relies on that to tell a torn write from corruption.
fn write_chunks(
    shared: &Shared,
    open: &mut Open,
    unwritten: &mut Unwritten,
    created: &mut Vec<(u32, Arc<File>)>,
) -> StorageResult<()> {
    use std::os::unix::fs::FileExt;
    let mut newest = 0;
    while let Some((id, bytes)) = unwritten.chunks.front() {
        let id = *id;
        let path = || segment::path(&shared.dir, id);
        if !open.contains_key(&id) {
            // Older segments get no more writes: they end with their data
            // before a newer one exists.
            let_go_below(shared, open, id)?;
            #[cfg(test)]
            if super::tests::faults::fail_create(&shared.dir) {
                return Err(io_error(
                    "cannot create",
                    &path(),
                    "Too many open files (injected)",
                ));
            }
            let file = Arc::new(
                segment::create(&path()).map_err(|e| write_error("cannot create", &path(), e))?,
            );
            created.push((id, file.clone()));
            open.insert(
                id,
                Seg {
                    file,
                    len: segment::SEGMENT_HEADER_LEN,
                    zeroed: segment::SEGMENT_HEADER_LEN,
                },
            );
        }
        let seg = open
            .get_mut(&id)
            .ok_or(StorageError::Corrupt("mail log segment missing"))?;
        unwritten.front_from = Some(seg.len);
        #[cfg(test)]
        if super::tests::faults::take(&shared.dir) {
            // A write that fails half-way, as a full disk makes it.
            let _ = seg.file.write_all_at(&bytes[..bytes.len() / 2], seg.len);
            return Err(io_error("cannot write", &path(), "injected fault"));
        }
        #[cfg(test)]
        super::tests::faults::take_space(&path(), bytes.len() as u64)
            .map_err(|e| write_error("cannot write", &path(), e))?;
        let end = seg.len + bytes.len() as u64;
        if end > seg.zeroed {
            // Zeros ahead (see `ZERO_AHEAD`), made durable with this
            // group's sync: the sync that grows the file.
            let to = end.max(seg.zeroed + ZERO_AHEAD);
            let zeros = vec![0u8; 64 << 10];
            let mut at = seg.zeroed;
            while at < to {
                let n = (to - at).min(zeros.len() as u64) as usize;
                seg.file
                    .write_all_at(&zeros[..n], at)
                    .map_err(|e| write_error("cannot write", &path(), e))?;
                at += n as u64;
            }
            seg.zeroed = to;
        }
        seg.file
            .write_all_at(bytes, seg.len)
            .map_err(|e| write_error("cannot write", &path(), e))?;
        if ACCEPTS.get() {
            crate::fault::hit("after-write");
        }
        durable::sync_data(&seg.file).map_err(|e| write_error("cannot sync", &path(), e))?;
        seg.len = end;
        newest = newest.max(id);
        unwritten.chunks.pop_front();
        unwritten.front_from = None;
    }
    // Appends go to ever higher segments: older ones get no more writes.
    if newest > 0 {
        let_go_below(shared, open, newest)?;
    }
    Ok(())
}

/// Append an empty group to the newest segment this thread wrote, cut its
/// zeros off and sync it (a clean close): its last group holding records is
/// then known to have been written in full.
fn seal_newest(shared: &Shared, open: &mut Open) -> StorageResult<()> {
    use std::os::unix::fs::FileExt;
    let Some(id) = open.keys().copied().max() else {
        return Ok(());
    };
    let_go_below(shared, open, id)?;
    let Some(seg) = open.get_mut(&id) else {
        return Ok(());
    };
    let path = || segment::path(&shared.dir, id);
    let seal = super::record::seal_group();
    seg.file
        .write_all_at(&seal, seg.len)
        .map_err(|e| io_error("cannot write", &path(), e))?;
    seg.len += seal.len() as u64;
    if seg.zeroed > seg.len {
        seg.file
            .set_len(seg.len)
            .map_err(|e| io_error("cannot truncate", &path(), e))?;
    }
    seg.zeroed = seg.len;
    durable::sync_data(&seg.file).map_err(|e| io_error("cannot sync", &path(), e))?;
    // Sealed once: a second seal would only add bytes.
    open.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> (AccountId, u32) {
        let account = AccountId::from_bytes(&[n; 16]).expect("16 bytes");
        (account, u32::from(n))
    }

    /// Whether a group whose sends came from `senders` had several.
    fn several(senders: &[(AccountId, u32)]) -> bool {
        let mut group = GroupSenders::default();
        for (account, device) in senders {
            group.note(*account, *device);
        }
        group.several
    }

    #[test]
    fn a_group_has_several_senders_only_with_two_devices_in_it() {
        let (a, b) = (device(1), device(2));
        let other_device_of_a = (a.0, 9);
        let cases: &[(&[(AccountId, u32)], bool)] = &[
            (&[], false),
            (&[a], false),
            (&[a, a, a], false),
            (&[a, b], true),
            (&[a, a, b, a], true),
            (&[a, other_device_of_a], true),
        ];
        for (senders, expected) in cases {
            assert_eq!(several(senders), *expected, "{senders:?}");
        }
    }

    #[test]
    fn only_a_group_from_several_devices_makes_the_next_one_wait() {
        let group = |waiters, several_senders| LastGroup {
            waiters,
            several_senders,
        };
        // (last group, waiting now, gathered?)
        let cases = [
            (LastGroup::default(), 1, false),
            (group(1, false), 1, false),
            // One device's burst: never waited for.
            (group(8, false), 1, false),
            (group(8, false), 7, false),
            // Several devices: gathered until as many wait again.
            (group(8, true), 1, true),
            (group(8, true), 7, true),
            (group(8, true), 8, false),
            (group(8, true), 9, false),
        ];
        for (last, waiting, expected) in cases {
            assert_eq!(
                last.gathers(waiting),
                expected,
                "{last:?}, {waiting} waiting"
            );
        }
    }
}
