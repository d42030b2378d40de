//! The writer thread: takes what appenders buffered, writes and syncs it
//! as one group, then answers the group's waiters.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use super::checkpoint::maybe_checkpoint;
use super::durable;
use super::{Buffered, Shared, StorageError, StorageResult, Waiter, io_error, segment};

/// One group taken by the writer.
struct Group {
    buffered: Buffered,
    waiters: Vec<Waiter>,
    /// Highest seq handed out when the group was taken.
    upto: u64,
    /// Set if an earlier group failed: this one is refused unwritten.
    failed: Option<StorageError>,
    /// Taken while closing: nothing can be appended after it, so the
    /// newest segment is sealed with it.
    last: bool,
}

pub(super) fn write_loop(shared: &Arc<Shared>) {
    // Segments this thread created and still appends to.
    let mut open: HashMap<u32, Arc<File>> = HashMap::new();
    // Waiters of the last group: how many to gather for the next.
    let mut last_waiters = 0usize;
    loop {
        let Some(group) = next_group(shared, &mut open, &mut last_waiters) else {
            // Dropped without `close`: seal what this thread wrote.
            if shared.lock().failed.is_none() {
                let _ = seal_newest(shared, &mut open);
            }
            return;
        };
        if let Some(error) = group.failed {
            // An earlier write failed: what it left on disk is unknown, so
            // nothing after it may be written or acknowledged.
            for waiter in group.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
            continue;
        }
        let started = Instant::now();
        let bytes: u64 = group
            .buffered
            .chunks
            .iter()
            .map(|(_, w)| w.len() as u64)
            .sum();
        let mut written = if group.buffered.is_empty() {
            // Everything before these waiters was made durable by earlier
            // groups: nothing to write.
            Ok(Vec::new())
        } else {
            write_group(shared, &mut open, group.buffered)
        };
        if group.last
            && written.is_ok()
            && let Err(error) = seal_newest(shared, &mut open)
        {
            written = Err(error);
        }
        let result = {
            let mut state = shared.lock();
            match written {
                Ok(created) => {
                    state.durable_seq = state.durable_seq.max(group.upto);
                    state.since_checkpoint += bytes;
                    for (id, file) in created {
                        state.files.insert(id, file);
                    }
                    maybe_checkpoint(shared, &mut state);
                    Ok(())
                }
                Err(error) => {
                    tracing::error!(%error, "mail log write failed; refusing further writes (restart the relay)");
                    state.failed = Some(error.clone());
                    shared.metrics.set_storage_failed();
                    Err(error)
                }
            }
        };
        if bytes > 0 {
            shared
                .metrics
                .record_flush(started.elapsed(), group.waiters.len());
        }
        for waiter in group.waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

/// Wait for work and take it; `None` once closing with nothing left.
fn next_group(
    shared: &Shared,
    open: &mut HashMap<u32, Arc<File>>,
    last_waiters: &mut usize,
) -> Option<Group> {
    let mut state = shared.lock();
    while state.buffered.is_empty() && state.waiters.is_empty() {
        // Nothing buffered, so nothing more will go to a segment below the
        // active one: let go of it (a checkpoint may have deleted it, and
        // its disk space is freed only once no handle is left).
        let active = state.active;
        open.retain(|id, _| *id >= active);
        if state.closing {
            return None;
        }
        state.writer_idle = true;
        state = shared.work.wait(state).unwrap_or_else(|p| p.into_inner());
        state.writer_idle = false;
    }
    if !state.closing && *last_waiters > 1 && state.waiters.len() < *last_waiters {
        // Several senders were at work: give as many a moment to arrive,
        // so that they share this sync instead of each paying for one.
        // Appenders wake this wait only once the group is complete.
        let deadline = Instant::now() + shared.options.linger;
        state.gather = *last_waiters;
        loop {
            let now = Instant::now();
            if state.closing || state.waiters.len() >= state.gather || now >= deadline {
                break;
            }
            state = shared
                .work
                .wait_timeout(state, deadline - now)
                .map(|(state, _)| state)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        state.gather = 0;
    }
    *last_waiters = state.waiters.len();
    Some(Group {
        buffered: std::mem::take(&mut state.buffered),
        waiters: std::mem::take(&mut state.waiters),
        upto: state.next_seq - 1,
        failed: state.failed.clone(),
        last: state.closing,
    })
}

/// Write and sync a group; returns the segments it created.
///
/// Each segment's bytes are synced before the next segment is written, so
/// after a crash only the newest segment holding records can end in a torn
/// write; replay relies on that to tell a torn write from corruption.
fn write_group(
    shared: &Shared,
    open: &mut HashMap<u32, Arc<File>>,
    buffered: Buffered,
) -> StorageResult<Vec<(u32, Arc<File>)>> {
    use std::io::Write;
    let mut created = Vec::new();
    let mut newest = 0;
    for (id, mut writer) in buffered.chunks {
        let path = || segment::path(&shared.dir, id);
        let file = match open.get(&id) {
            Some(file) => file.clone(),
            None => {
                let file = Arc::new(
                    segment::create(&path()).map_err(|e| io_error("cannot create", &path(), e))?,
                );
                open.insert(id, file.clone());
                created.push((id, file.clone()));
                file
            }
        };
        let bytes = writer.finish_group();
        #[cfg(test)]
        if super::tests::faults::take(&shared.dir) {
            // A write that fails half-way, as a full disk makes it.
            let _ = (&*file).write_all(&bytes[..bytes.len() / 2]);
            return Err(io_error("cannot write", &path(), "injected fault"));
        }
        (&*file)
            .write_all(&bytes)
            .map_err(|e| io_error("cannot write", &path(), e))?;
        durable::sync_data(&file).map_err(|e| io_error("cannot sync", &path(), e))?;
        newest = newest.max(id);
    }
    // Appends go to ever higher segments: older ones get no more writes.
    open.retain(|id, _| *id >= newest);
    Ok(created)
}

/// Append an empty group to the newest segment this thread wrote, and
/// sync it (a clean close): its last group holding records is then known
/// to have been written in full.
fn seal_newest(shared: &Shared, open: &mut HashMap<u32, Arc<File>>) -> StorageResult<()> {
    use std::io::Write;
    let Some((&id, file)) = open.iter().max_by_key(|(id, _)| **id) else {
        return Ok(());
    };
    let path = || segment::path(&shared.dir, id);
    (&**file)
        .write_all(&super::record::seal_group())
        .map_err(|e| io_error("cannot write", &path(), e))?;
    durable::sync_data(file).map_err(|e| io_error("cannot sync", &path(), e))?;
    // Sealed once: a second seal would only add bytes.
    open.clear();
    Ok(())
}
