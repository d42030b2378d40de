//! Checkpoints: rewrite what is live into one segment numbered below the
//! active one, then delete the older segments (see the module docs of
//! `mail_log` for why a crash at any step replays to the same state).

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use comptoir_protocol::AccountId;
use tokio::sync::oneshot;

use super::durable;
use super::index::{self, Entry, Location};
use super::record::{ReceiptRef, Writer};
use super::segment::{self, SEGMENT_HEADER_LEN};
use super::{SLICE, Shared, State, StorageError, StorageResult, io_error};

/// Start a checkpoint if the log has grown past twice what is live. It is
/// decided here, under the writer's lock, so a checkpoint once decided
/// always runs to the end (`close` waits for it).
pub(super) fn maybe_checkpoint(shared: &Arc<Shared>, state: &mut State) {
    if state.checkpointing || state.closing {
        return;
    }
    let live = state.index.live_log_bytes();
    let threshold = shared
        .options
        .checkpoint_min_bytes
        .max(live.saturating_mul(2));
    if state.since_checkpoint < threshold && !state.checkpoint_requested {
        return;
    }
    state.checkpoint_requested = false;
    state.checkpointing = true;
    shared.checkpoint_running.send_replace(true);
    let capture = capture(state);
    let since = capture.since;
    let alive = super::ThreadAlive::start(shared);
    let worker = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("relay-mail-checkpoint".into())
        .spawn(move || {
            // Dropped after `worker` (declared first).
            let _alive = alive;
            let worker = worker;
            // Reset even if the checkpoint panics, so `close` cannot hang.
            let _running = CheckpointRunning(&worker);
            let id = capture.id;
            let bytes = capture.since;
            if let Err(error) = checkpoint(&worker, capture) {
                tracing::error!(%error, "mail log checkpoint failed; the next group tries again");
                let _ = durable::remove(&segment::partial_path(&worker.dir, id));
                worker.lock().since_checkpoint += bytes;
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start a mail log checkpoint");
        state.since_checkpoint += since;
        state.checkpointing = false;
        shared.checkpoint_running.send_replace(false);
    }
}

/// Marks the end of a checkpoint when dropped.
struct CheckpointRunning<'a>(&'a Shared);

impl Drop for CheckpointRunning<'_> {
    fn drop(&mut self) {
        // Both under the lock: the writer may start the next checkpoint as
        // soon as it sees `checkpointing` false, and its `true` must not be
        // overwritten by this `false`.
        let mut state = self.0.lock();
        state.checkpointing = false;
        self.0.checkpoint_running.send_replace(false);
        drop(state);
    }
}

/// A live copy as captured for a checkpoint.
struct Captured {
    account: AccountId,
    device: u32,
    seq: u64,
    entry: Entry,
}

/// A checkpoint decided: appends already moved past its segment number.
struct Capture {
    id: u32,
    /// Log bytes written since the previous checkpoint (restored if this
    /// one fails, so the next group tries again).
    since: u64,
    /// No seq below this is handed out again, even once every record
    /// that used one is gone.
    next_seq: u64,
    /// Fires once everything appended before is on disk.
    durable: oneshot::Receiver<StorageResult<()>>,
    /// Conversation state, quota counts and ledger as of the capture:
    /// exactly what segments below `id` say (later accepts may still be
    /// unwritten, so they must not enter the checkpoint).
    accounting: index::Accounting,
}

/// Move appends past a new checkpoint's number. O(1) under the writer's
/// lock; the live state is read afterwards, a slice at a time.
fn capture(state: &mut State) -> Capture {
    let id = state.active + 1;
    state.active += 2;
    state.active_len = SEGMENT_HEADER_LEN;
    let since = std::mem::take(&mut state.since_checkpoint);
    // The writer serves this waiter in its next round, closing or not.
    let (tx, durable) = oneshot::channel();
    state.waiters.push(tx);
    Capture {
        id,
        since,
        next_seq: state.next_seq,
        durable,
        accounting: state.index.accounting.clone(),
    }
}

/// The copies living in segments below `id`, read a slice at a time.
///
/// Reading them after appends moved on is safe: whatever changes a copy
/// later (an ack, a device removal) is logged in a segment above `id`,
/// which replay applies after the checkpoint; an expired copy is skipped
/// by replay either way.
fn live_copies(shared: &Shared, id: u32) -> Vec<Captured> {
    let devices: Vec<(AccountId, u32)> = shared.lock().index.devices.keys().copied().collect();
    let mut copies = Vec::new();
    for slice in devices.chunks(SLICE) {
        let state = shared.lock();
        for &(account, device) in slice {
            let Some(queue) = state.index.devices.get(&(account, device)) else {
                continue;
            };
            for (&seq, entry) in &queue.by_seq {
                if entry.at.segment < id {
                    copies.push(Captured {
                        account,
                        device,
                        seq,
                        entry: *entry,
                    });
                }
            }
        }
    }
    // In log order: the old segments are then read front to back.
    copies.sort_unstable_by_key(|c| (c.entry.at.segment, c.entry.at.offset));
    copies
}

/// Rewrite what is live into one segment and delete the older ones.
fn checkpoint(shared: &Shared, capture: Capture) -> StorageResult<()> {
    let Capture {
        id,
        since: _,
        next_seq,
        durable,
        accounting,
    } = capture;
    // 2. Everything below `id` must be on disk before it is read back.
    durable
        .blocking_recv()
        .map_err(|_| StorageError::Closed)??;
    let captured = live_copies(shared, id);
    let files = shared.lock().files.clone();
    let partial = segment::partial_path(&shared.dir, id);
    let file = segment::create(&partial).map_err(|e| io_error("cannot create", &partial, e))?;
    let mut writer = Writer::group();
    writer.seq_floor(next_seq);
    // How far expiry went, so that it is not lost with the old segments.
    writer.clock(shared.lock().clock.ms);
    let mut written = SEGMENT_HEADER_LEN;
    let mut moved = Vec::with_capacity(captured.len());
    let write_out = |writer: &mut Writer, written: &mut u64| -> StorageResult<()> {
        use std::io::Write;
        if writer.group_is_empty() {
            return Ok(());
        }
        let bytes = writer.finish_group();
        (&file)
            .write_all(&bytes)
            .map_err(|e| io_error("cannot write", &partial, e))?;
        *written += bytes.len() as u64;
        Ok(())
    };
    let mut envelope = Vec::new();
    for c in &captured {
        let source = files
            .get(&c.entry.at.segment)
            .ok_or(StorageError::Corrupt("mail log segment missing"))?;
        envelope.resize(c.entry.at.len as usize, 0);
        source
            .read_exact_at(&mut envelope, c.entry.at.offset)
            .map_err(|e| {
                io_error(
                    "cannot read",
                    &segment::path(&shared.dir, c.entry.at.segment),
                    e,
                )
            })?;
        let record_start = written + writer.len() as u64;
        let offset = writer.queued(&c.account, c.device, c.seq, &c.entry.origin, &envelope);
        moved.push(Location {
            segment: id,
            offset: record_start + offset as u64,
            len: c.entry.at.len,
        });
        if writer.len() >= 1 << 20 {
            write_out(&mut writer, &mut written)?;
        }
    }
    // Receipts appended before the capture (seq below `next_seq`) are in
    // the old segments; later ones are in segments above `id`.
    let devices: Vec<(AccountId, u32)> = shared.lock().index.devices.keys().copied().collect();
    for slice in devices.chunks(SLICE) {
        let receipts: Vec<(AccountId, u32, u64, ReceiptRef)> = {
            let state = shared.lock();
            slice
                .iter()
                .filter_map(|key| Some((key, state.index.devices.get(key)?)))
                .flat_map(|(&(account, device), queue)| {
                    queue
                        .receipts
                        .range(..next_seq)
                        .map(move |(&seq, r)| (account, device, seq, *r))
                })
                .collect()
        };
        for (account, device, seq, receipt) in &receipts {
            writer.receipt(account, *device, *seq, receipt);
        }
        if writer.len() >= 1 << 20 {
            write_out(&mut writer, &mut written)?;
        }
    }
    for shard in 0..index::SENT_SHARDS {
        let entries = shared.lock().index.sent.shard_entries(shard);
        for ((sender, recipient, message_id), entry) in &entries {
            writer.sent(
                sender,
                recipient,
                message_id,
                entry.server_ts,
                entry.expires,
                entry.accept_id,
            );
        }
    }
    for (&(business, customer), &ms) in &accounting.conversations {
        writer.conversation(&business, &customer, ms);
    }
    for (&(sender, day), &accepted) in &accounting.quotas {
        writer.quota(&sender, day, accepted);
    }
    for (&(business, day), customers) in &accounting.reached {
        for customer in customers {
            writer.reached(&business, day, customer);
        }
        if writer.len() >= 1 << 20 {
            write_out(&mut writer, &mut written)?;
        }
    }
    for (business, reach) in &accounting.reaches {
        for (customer, &ms) in &reach.last {
            writer.reach(business, customer, ms);
        }
        if writer.len() >= 1 << 20 {
            write_out(&mut writer, &mut written)?;
        }
    }
    // The ledger is carried by every checkpoint (it is append-only and
    // never expires here; see docs/STORAGE.md).
    let ledger = shared.options.appends_ledger();
    for entry in accounting.ledger.values().filter(|_| ledger) {
        writer.ledger(entry);
        if writer.len() >= 1 << 20 {
            write_out(&mut writer, &mut written)?;
        }
    }
    for (&(blocker, blocked), &epoch) in &accounting.block_epochs {
        writer.block_epoch(&blocker, &blocked, epoch);
        if writer.len() >= 1 << 20 {
            write_out(&mut writer, &mut written)?;
        }
    }
    for record in accounting.consents.values() {
        writer.consent(record);
        if writer.len() >= 1 << 20 {
            write_out(&mut writer, &mut written)?;
        }
    }
    for entry in accounting.delivered.values().filter(|_| ledger) {
        writer.delivered(entry);
        if writer.len() >= 1 << 20 {
            write_out(&mut writer, &mut written)?;
        }
    }
    write_out(&mut writer, &mut written)?;
    {
        // Sealed: its last group holding records is followed by another.
        use std::io::Write;
        (&file)
            .write_all(&super::record::seal_group())
            .map_err(|e| io_error("cannot write", &partial, e))?;
    }
    durable::sync_data(&file).map_err(|e| io_error("cannot sync", &partial, e))?;
    let final_path = segment::path(&shared.dir, id);
    durable::rename(&partial, &final_path).map_err(|e| io_error("cannot rename", &partial, e))?;
    // Listed at once, so that whatever fails from here on, the next
    // checkpoint still deletes it with the other old segments (a stale
    // checkpoint left behind would bring back what was deleted after it).
    shared.lock().files.insert(id, Arc::new(file));
    segment::sync_dir(&shared.dir).map_err(|e| io_error("cannot sync", &shared.dir, e))?;
    // 3. Point the index at the new copies (the new file is readable, the
    //    old ones stay until the end), a slice at a time, then retire the
    //    old segments.
    let moves: Vec<(&Captured, Location)> = captured.iter().zip(moved).collect();
    for slice in moves.chunks(SLICE * 16) {
        let mut state = shared.lock();
        for (c, at) in slice {
            if let Some(entry) = state
                .index
                .devices
                .get_mut(&(c.account, c.device))
                .and_then(|q| q.by_seq.get_mut(&c.seq))
                && entry.at == c.entry.at
            {
                entry.at = *at;
            }
        }
    }
    let obsolete: Vec<u32> = shared.lock().files.range(..id).map(|(k, _)| *k).collect();
    // Oldest first, each unlink synced before the next: a power loss then
    // leaves a run of the newest old segments, never an older one without
    // a newer one (which could hold its acks, so it would bring back
    // copies acked and deleted long ago).
    for old in obsolete {
        // Unlisted only once gone, so a failure leaves it to the next
        // checkpoint.
        let path = segment::path(&shared.dir, old);
        durable::remove(&path).map_err(|e| io_error("cannot remove", &path, e))?;
        segment::sync_dir(&shared.dir).map_err(|e| io_error("cannot sync", &shared.dir, e))?;
        shared.lock().files.remove(&old);
    }
    Ok(())
}
