//! The log on real files: replay, torn tails, checkpoints, leftovers.

use std::path::Path;

use super::*;

pub(super) mod power_loss;

/// Injected write failures, per log directory (tests run in parallel).
pub(crate) mod faults {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static CUT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static NO_FDS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// Make every segment creation in `dir` fail (as with no file
    /// descriptor left) until called again with `false`.
    pub(crate) fn no_fds(dir: &Path, on: bool) {
        let mut dirs = NO_FDS.lock().unwrap();
        dirs.retain(|d| d != dir);
        if on {
            dirs.push(dir.to_path_buf());
        }
    }

    /// Whether a segment creation in `dir` is to fail now.
    pub(crate) fn fail_create(dir: &Path) -> bool {
        NO_FDS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|d| d == dir)
    }

    static FULL: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());

    /// Make the disk under `dir` full (no byte free, until the reserve is
    /// released) or, with `false`, roomy again.
    pub(crate) fn disk_full(dir: &Path, on: bool) {
        let mut full = FULL.lock().unwrap();
        full.retain(|(d, _)| d != dir);
        if on {
            full.push((dir.to_path_buf(), 0));
        }
    }

    /// Take `bytes` for a write to `file`, or fail as a full disk does.
    pub(crate) fn take_space(file: &Path, bytes: u64) -> std::io::Result<()> {
        let mut full = FULL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = file.parent();
        match full.iter_mut().find(|(d, _)| Some(d.as_path()) == dir) {
            Some((_, free)) if *free < bytes => Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device (injected)",
            )),
            Some((_, free)) => {
                *free -= bytes;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Give back `bytes` freed by removing `file`.
    pub(crate) fn give_space(file: &Path, bytes: u64) {
        let mut full = FULL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = file.parent();
        if let Some((_, free)) = full.iter_mut().find(|(d, _)| Some(d.as_path()) == dir) {
            *free += bytes;
        }
    }

    /// Make the next write in `dir` fail half-way.
    pub(crate) fn cut_next_write(dir: &Path) {
        CUT.lock().unwrap().push(dir.to_path_buf());
    }

    /// Whether the write now starting in `dir` is to fail (once).
    pub(crate) fn take(dir: &Path) -> bool {
        let mut cut = CUT.lock().unwrap_or_else(|p| p.into_inner());
        match cut.iter().position(|d| d == dir) {
            Some(at) => {
                cut.remove(at);
                true
            }
            None => false,
        }
    }
}

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn account(b: u8) -> AccountId {
    AccountId::from_bytes(&[b; 16]).unwrap()
}

const ALICE: u8 = 1;
const BOB: u8 = 2;

/// A message from Alice to Bob's devices; the envelope is `id` repeated.
/// The acceptance time of the test messages: the time the tests started,
/// so that their idempotency entries are inside their window.
fn base_ts() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BASE.get_or_init(now_ms)
}

fn message(id: u8, devices: &[u32], size: usize) -> NewMessage {
    NewMessage {
        effects: Default::default(),
        sender: account(ALICE),
        sender_device: 3,
        recipient: account(BOB),
        message_id: [id; MESSAGE_ID_LEN],
        server_timestamp_ms: base_ts() + u64::from(id),
        expires_at_ms: now_ms() + 3_600_000,
        copies: devices.iter().map(|d| (*d, vec![id; size])).collect(),
    }
}

fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 4 << 10,
        checkpoint_min_bytes: 16 << 10,
        linger: Duration::ZERO,
        ..LogOptions::default()
    }
}

fn open(dir: &Path, options: LogOptions) -> MailLog {
    MailLog::open(dir, options, Arc::default()).unwrap()
}

/// The first byte of each envelope queued for a device, in order.
fn queue(log: &MailLog, device: u32) -> Vec<u8> {
    log.pending(account(BOB), device, None, usize::MAX, 0)
        .unwrap()
        .iter()
        .map(|q| q.envelope[0])
        .collect()
}

fn segments(dir: &Path) -> Vec<u32> {
    segment::list(dir).unwrap()
}

/// `close` returns only once the log's own threads are gone, so that the
/// data directory's lock is free as soon as the last handle is dropped: a
/// restart in the same process reopens at once (before, the writer thread
/// could still hold it, and a reopen failed with `InUse` now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_the_writer_so_the_directory_is_free_when_dropped() -> TestResult {
    let dir = tempfile::tempdir()?;
    for round in 0..50u8 {
        let lock = Arc::new(DirLock::acquire(dir.path())?);
        let log = MailLog::open_holding(dir.path(), small(), Arc::default(), Some(lock))?;
        log.enqueue(message(round, &[1], 50), 1000).await?;
        log.close().await?;
        assert_eq!(
            Arc::strong_count(&log.owner.shared),
            1,
            "round {round}: a thread of the log still holds it after close"
        );
        drop(log);
    }
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(log.total_queued(), 50);
    Ok(())
}

#[tokio::test]
async fn reopen_replays_sends_acks_and_dropped_devices() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cursor_before;
    {
        let log = open(dir.path(), LogOptions::default());
        for id in 1..=5 {
            assert!(matches!(
                log.enqueue(message(id, &[1, 2, 3], 50), 100).await?,
                Enqueued::Stored { .. }
            ));
        }
        assert_eq!(log.ack(account(BOB), 1, account(ALICE), &[2; 16])?, Some(3));
        assert_eq!(log.ack(account(BOB), 1, account(ALICE), &[2; 16])?, None);
        assert_eq!(log.remove_device(account(BOB), 3)?, 5);
        cursor_before = log
            .pending(account(BOB), 2, None, 10, 0)?
            .last()
            .map(|q| q.cursor);
        log.close().await?;
        assert!(matches!(log.flush().await, Err(StorageError::Closed)));
    }
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(queue(&log, 1), vec![1, 3, 4, 5]);
    assert_eq!(queue(&log, 2), vec![1, 2, 3, 4, 5]);
    assert_eq!(queue(&log, 3), Vec::<u8>::new());
    assert_eq!(log.total_queued(), 9);
    // Idempotency survives, and new copies sort after the old ones.
    assert!(matches!(
        log.enqueue(message(2, &[1, 2], 50), 100).await?,
        Enqueued::Duplicate {
            server_timestamp_ms, ..
        } if server_timestamp_ms == base_ts() + 2
    ));
    assert!(matches!(
        log.enqueue(message(6, &[1, 2], 50), 100).await?,
        Enqueued::Stored { .. }
    ));
    let last = log.pending(account(BOB), 2, None, 10, 0)?;
    assert!(last.last().map(|q| q.cursor) > cursor_before);
    assert_eq!(queue(&log, 2), vec![1, 2, 3, 4, 5, 6]);
    log.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_full_queue_stores_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path(), LogOptions::default());
    log.enqueue(message(1, &[1], 10), 1).await?;
    assert_eq!(
        log.enqueue(message(2, &[2, 1], 10), 1).await?,
        Enqueued::QueueFull { device: 1 }
    );
    assert_eq!(queue(&log, 2), Vec::<u8>::new());
    // Not remembered as sent either: a retry once there is room stores it.
    log.ack(account(BOB), 1, account(ALICE), &[1; 16])?;
    assert!(matches!(
        log.enqueue(message(2, &[2, 1], 10), 1).await?,
        Enqueued::Stored { .. }
    ));
    log.close().await?;
    Ok(())
}

/// Files in `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_torn_last_write_is_cut_off_and_the_rest_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path;
    let intact;
    {
        let log = open(dir.path(), LogOptions::default());
        for id in 1..=2 {
            log.enqueue(message(id, &[1], 100), 100).await?;
        }
        log.close().await?;
        path = segment::path(dir.path(), *segments(dir.path()).last().unwrap());
        intact = std::fs::read(&path)?;
    }
    {
        // A crash in the middle of a third write: half of its group
        // reaches the file (it was never acknowledged).
        let elsewhere = tempfile::tempdir()?;
        let log = open(elsewhere.path(), LogOptions::default());
        log.enqueue(message(3, &[1], 100), 100).await?;
        log.close().await?;
        let other = std::fs::read(segment::path(elsewhere.path(), 1))?;
        let group = &other[8..other.len() - record::GROUP_HEADER_LEN];
        let mut bytes = intact.clone();
        bytes.extend_from_slice(&group[..group.len() / 2]);
        std::fs::write(&path, bytes)?;
    }
    let torn = std::fs::read(&path)?[intact.len()..].to_vec();
    assert!(!torn.is_empty());
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(queue(&log, 1), vec![1, 2]);
    let now = std::fs::read(&path)?;
    assert_eq!(
        &now[..intact.len()],
        &intact[..],
        "the acknowledged writes are kept"
    );
    // What was cut is kept aside, byte for byte, not destroyed.
    let aside = files_ending(dir.path(), ".torn");
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0])?, torn);
    // The log goes on, and the sends before the crash stay.
    log.enqueue(message(3, &[1], 100), 100).await?;
    log.close().await?;
    drop(log);
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(queue(&log, 1), vec![1, 2, 3]);
    log.close().await?;
    Ok(())
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Ten acknowledged sends to one device, one write each, then a clean
/// close; returns the only segment's path.
async fn ten_acknowledged(dir: &Path) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let log = open(dir, LogOptions::default());
    for id in 1..=10 {
        assert!(matches!(
            log.enqueue(message(id, &[1], 100), 100).await?,
            Enqueued::Stored { .. }
        ));
    }
    log.close().await?;
    let ids = segments(dir);
    assert_eq!(ids.len(), 1);
    Ok(segment::path(dir, ids[0]))
}

/// Open must refuse, naming the file and an offset, and leave the file as
/// it was.
fn assert_refused_untouched(dir: &Path, path: &Path, bytes: &[u8]) {
    match MailLog::open(dir, LogOptions::default(), Arc::default()) {
        Err(StorageError::Backend(text)) => {
            assert!(
                text.contains(&path.display().to_string())
                    && text.contains("offset")
                    && text.contains("backup"),
                "{text}"
            );
        }
        Err(other) => panic!("expected a refusal naming the file, got {other:?}"),
        Ok(log) => panic!("expected a refusal, opened with queue {:?}", queue(&log, 1)),
    }
    assert_eq!(std::fs::read(path).unwrap(), bytes, "nothing cut");
    assert!(files_ending(dir, ".torn").is_empty());
}

#[tokio::test]
async fn a_flipped_bit_in_an_acknowledged_write_is_refused_not_cut() -> TestResult {
    // The third envelope of ten, and the last one (the newest write).
    for id in [3u8, 10] {
        let dir = tempfile::tempdir()?;
        let path = ten_acknowledged(dir.path()).await?;
        let mut bytes = std::fs::read(&path)?;
        let at = find(&bytes, &[id; 100]).unwrap();
        bytes[at + 50] ^= 0x04;
        std::fs::write(&path, &bytes)?;
        assert_refused_untouched(dir.path(), &path, &bytes);
    }
    Ok(())
}

#[tokio::test]
async fn a_damaged_length_in_an_acknowledged_write_is_refused_not_cut() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = ten_acknowledged(dir.path()).await?;
    let mut bytes = std::fs::read(&path)?;
    // The length field right before the third envelope.
    let at = find(&bytes, &[3; 100]).unwrap();
    bytes[at - 2] ^= 0x10;
    std::fs::write(&path, &bytes)?;
    assert_refused_untouched(dir.path(), &path, &bytes);
    // And a group's own length: make the third group claim to run past
    // the end of the file.
    let dir = tempfile::tempdir()?;
    let path = ten_acknowledged(dir.path()).await?;
    let clean = std::fs::read(&path)?;
    let mut bytes = clean.clone();
    let record_at = find(&bytes, &[3; 100]).unwrap();
    // Groups are the same size here: the third starts two group lengths
    // after the segment header.
    let group_len = (bytes.len() - 8 - 12) / 10;
    let group_at = 8 + 2 * group_len;
    assert!(group_at < record_at && record_at < group_at + group_len);
    bytes[group_at + 3] = 0x7f;
    std::fs::write(&path, &bytes)?;
    assert_refused_untouched(dir.path(), &path, &bytes);
    Ok(())
}

#[tokio::test]
async fn a_file_that_is_not_a_segment_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(segment::path(dir.path(), 1), b"NOTMAIL!and more")?;
    match MailLog::open(dir.path(), LogOptions::default(), Arc::default()) {
        Err(StorageError::Backend(text)) => assert!(text.contains("restore"), "{text}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(segment::path(dir.path(), 1))?,
        b"NOTMAIL!and more",
        "left as it was"
    );
    Ok(())
}

/// Wait until the log's health (as `/healthz` reads it) is `healthy`.
async fn health_is(metrics: &Metrics, healthy: bool) {
    loop {
        let changed = metrics.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if metrics.storage_failed() != healthy {
            return;
        }
        changed.await;
    }
}

#[tokio::test]
async fn after_running_out_of_file_descriptors_the_log_recovers_by_itself() -> TestResult {
    let dir = tempfile::tempdir()?;
    let metrics = Arc::new(Metrics::default());
    let log = MailLog::open(dir.path(), LogOptions::default(), metrics.clone())?;
    // The first write creates the first segment: no descriptor is left.
    faults::no_fds(dir.path(), true);
    let first = log.enqueue(message(1, &[1], 10), 10).await;
    assert!(matches!(first, Err(StorageError::Backend(_))), "{first:?}");
    assert!(metrics.storage_failed());
    // Refused while it lasts, and nothing shown that is not on disk.
    let second = log.enqueue(message(2, &[1], 10), 10).await;
    assert!(
        matches!(second, Err(StorageError::Backend(_))),
        "{second:?}"
    );
    assert_eq!(queue(&log, 1), Vec::<u8>::new());
    assert!(segments(dir.path()).is_empty(), "nothing written");
    // The condition clears: the same log takes writes again by itself.
    faults::no_fds(dir.path(), false);
    health_is(&metrics, true).await;
    // The send that failed was written by the retry: its own retry is
    // answered as a duplicate (accepted), and it is delivered once.
    assert!(matches!(
        log.enqueue(message(1, &[1], 10), 10).await?,
        Enqueued::Duplicate { .. }
    ));
    assert!(matches!(
        log.enqueue(message(2, &[1], 10), 10).await?,
        Enqueued::Stored { .. }
    ));
    assert_eq!(queue(&log, 1), vec![1, 2]);
    log.close().await?;
    drop(log);
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(queue(&log, 1), vec![1, 2]);
    log.close().await?;
    Ok(())
}

/// Item 3: on a full disk the reserve is given back, so acks (and other
/// deletions) are still committed while new sends get the typed
/// `StorageError::Full`; once space is back the same log takes sends.
#[tokio::test]
async fn on_a_full_disk_sends_are_refused_acks_still_commit_and_sends_come_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let reserve = dir.path().join(reserve::FILE_NAME);
    let metrics = Arc::new(Metrics::default());
    let log = MailLog::open(dir.path(), LogOptions::default(), metrics.clone())?;
    assert_eq!(std::fs::metadata(&reserve)?.len(), DEFAULT_RESERVE_BYTES);
    for id in 1..=2 {
        assert!(matches!(
            log.enqueue(message(id, &[1], 100), 10).await?,
            Enqueued::Stored { .. }
        ));
    }
    faults::disk_full(dir.path(), true);
    // The send that finds the disk full is written into the reserve.
    assert!(matches!(
        log.enqueue(message(3, &[1], 100), 10).await?,
        Enqueued::Stored { .. }
    ));
    assert!(!reserve.exists(), "the reserve was given back");
    assert!(metrics.storage_failed(), "/healthz says so");
    // New sends are refused with the typed error, and nothing is stored.
    let refused = log.enqueue(message(4, &[1], 100), 10).await;
    assert!(matches!(refused, Err(StorageError::Full)), "{refused:?}");
    // Acks still commit.
    assert_eq!(
        log.acknowledge(
            account(BOB),
            1,
            AckOf::Message {
                sender: account(ALICE),
                message_id: [1; 16]
            },
            u64::MAX
        )?
        .map(|(_, device, _durable)| device),
        Some(3)
    );
    log.flush().await?;
    assert_eq!(queue(&log, 1), vec![2, 3]);
    log.close().await?;
    drop(log);
    // Reopened while the disk is still full: the ack held, sends are
    // still refused, acks still work.
    let log = MailLog::open(dir.path(), LogOptions::default(), metrics.clone())?;
    assert_eq!(queue(&log, 1), vec![2, 3]);
    let refused = log.enqueue(message(4, &[1], 100), 10).await;
    assert!(matches!(refused, Err(StorageError::Full)), "{refused:?}");
    assert_eq!(
        log.acknowledge(
            account(BOB),
            1,
            AckOf::Message {
                sender: account(ALICE),
                message_id: [2; 16]
            },
            u64::MAX
        )?
        .map(|(_, device, _durable)| device),
        Some(3)
    );
    log.flush().await?;
    // Space is freed: the reserve is made again and sends come back.
    faults::disk_full(dir.path(), false);
    health_is(&metrics, true).await;
    assert_eq!(std::fs::metadata(&reserve)?.len(), DEFAULT_RESERVE_BYTES);
    assert!(matches!(
        log.enqueue(message(4, &[1], 100), 10).await?,
        Enqueued::Stored { .. }
    ));
    assert_eq!(queue(&log, 1), vec![3, 4]);
    log.close().await?;
    drop(log);
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(queue(&log, 1), vec![3, 4]);
    log.close().await?;
    Ok(())
}

/// Groups are written over zeros written ahead (a sync without a journal
/// commit); only the newest segment may end in zeros, and a copy of the
/// directory taken while the log runs (what `kill -9` leaves) replays in
/// full, its zeros cut off like a torn write.
#[tokio::test]
async fn only_the_newest_segment_is_written_ahead_with_zeros_and_a_crash_copy_replays() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let log = open(dir.path(), small());
    for id in 1..=20 {
        log.enqueue(message(id, &[1], 1024), 100).await?;
    }
    let ids = segments(dir.path());
    assert!(ids.len() >= 4, "segments rolled over: {ids:?}");
    let (newest, older) = ids.split_last().ok_or("no segment")?;
    for id in older {
        let bytes = std::fs::read(segment::path(dir.path(), *id))?;
        assert_ne!(bytes.last(), Some(&0), "segment {id} ends with its data");
    }
    let newest_len = std::fs::metadata(segment::path(dir.path(), *newest))?.len();
    assert!(
        newest_len >= 1 << 20,
        "the newest is written ahead: {newest_len}"
    );
    let copy = tempfile::tempdir()?;
    for entry in std::fs::read_dir(dir.path())? {
        let entry = entry?;
        std::fs::copy(entry.path(), copy.path().join(entry.file_name()))?;
    }
    let crashed = open(copy.path(), small());
    assert_eq!(queue(&crashed, 1), (1..=20).collect::<Vec<u8>>());
    assert!(
        std::fs::metadata(segment::path(copy.path(), *newest))?.len() < newest_len,
        "its zeros were cut off"
    );
    crashed.close().await?;
    log.close().await?;
    drop(log);
    let log = open(dir.path(), small());
    assert_eq!(queue(&log, 1), (1..=20).collect::<Vec<u8>>());
    log.close().await?;
    Ok(())
}

/// Enqueue 1 KiB messages 1..=n for devices 1 and 2, ack all but every
/// tenth on device 1 and all on device 2.
async fn churn(log: &MailLog, n: u8) -> TestResult {
    for id in 1..=n {
        log.enqueue(message(id, &[1, 2], 1024), 1000).await?;
        if id % 10 != 0 {
            log.ack(account(BOB), 1, account(ALICE), &[id; 16])?;
        }
        log.ack(account(BOB), 2, account(ALICE), &[id; 16])?;
    }
    Ok(())
}

#[tokio::test]
async fn checkpoints_keep_what_is_live_and_delete_old_segments() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let log = open(dir.path(), small());
        churn(&log, 200).await?;
        // close() waits for a checkpoint in progress.
        log.close().await?;
    }
    // 400 KiB of sends rolled over about 100 segments of 4 KiB. How many
    // checkpoints ran depends on timing (appends go on meanwhile, and a
    // checkpoint starts only when none is running), but the first one
    // surely ran and replaced the first segments.
    let left = segments(dir.path());
    assert!(!left.contains(&1), "segments left: {left:?}");
    let log = open(dir.path(), small());
    let live: Vec<u8> = (1..=200).filter(|id| id % 10 == 0).collect();
    assert_eq!(queue(&log, 1), live);
    assert_eq!(queue(&log, 2), Vec::<u8>::new());
    // Idempotency entries of acked messages survived the checkpoints.
    assert!(matches!(
        log.enqueue(message(1, &[1, 2], 1024), 1000).await?,
        Enqueued::Duplicate { .. }
    ));
    // Envelope bytes were carried over intact.
    let read = log.pending(account(BOB), 1, None, 1, 0)?;
    assert_eq!(read[0].envelope, vec![10; 1024]);
    log.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_crash_during_or_after_a_checkpoint_replays_to_the_same_state() -> TestResult {
    let dir = tempfile::tempdir()?;
    let saved = tempfile::tempdir()?;
    {
        let log = open(dir.path(), LogOptions::default());
        churn(&log, 50).await?;
        log.close().await?;
    }
    // Keep the pre-checkpoint segments aside.
    for id in segments(dir.path()) {
        std::fs::copy(
            segment::path(dir.path(), id),
            segment::path(saved.path(), id),
        )?;
    }
    {
        // Force a checkpoint at once, then add more after it.
        let options = LogOptions {
            checkpoint_min_bytes: 0,
            ..small()
        };
        let log = open(dir.path(), options);
        log.enqueue(message(51, &[1], 1024), 1000).await?;
        log.close().await?;
        assert!(
            !segments(dir.path()).contains(&1),
            "the checkpoint replaced segment 1"
        );
        let log = open(dir.path(), small());
        log.ack(account(BOB), 1, account(ALICE), &[10; 16])?;
        log.close().await?;
    }
    // Crash after the checkpoint's rename, before old segments were
    // deleted: put them back, with a half-written next checkpoint too.
    for id in segments(saved.path()) {
        std::fs::copy(
            segment::path(saved.path(), id),
            segment::path(dir.path(), id),
        )?;
    }
    let next = segments(dir.path()).last().unwrap() + 1;
    std::fs::write(segment::partial_path(dir.path(), next), b"CMPTMLG1 half")?;
    let log = open(dir.path(), small());
    assert_eq!(queue(&log, 1), vec![20, 30, 40, 50, 51]);
    assert!(
        !segment::partial_path(dir.path(), next).exists(),
        "a partial checkpoint is deleted at open"
    );
    log.close().await?;
    Ok(())
}

#[tokio::test]
async fn expired_copies_are_hidden_expired_and_not_replayed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path(), LogOptions::default());
    let mut soon = message(1, &[1], 10);
    soon.expires_at_ms = now_ms() + 100;
    log.enqueue(soon, 10).await?;
    log.enqueue(message(2, &[1], 10), 10).await?;
    let later = now_ms() + 1_000;
    let visible = log.pending(account(BOB), 1, None, 10, later)?;
    assert_eq!(visible.len(), 1);
    assert_eq!(log.expire(later), 1);
    assert_eq!(log.queued_count(account(BOB), 1), 1);
    log.close().await?;
    Ok(())
}

/// What the log must behave like: ordered queues and a set of sent ids.
#[derive(Debug, Default)]
struct Model {
    queues: BTreeMap<u32, Vec<u8>>,
    sent: std::collections::BTreeSet<u8>,
    /// The accept id each stored message was given.
    accept_ids: BTreeMap<u8, u64>,
}

#[derive(Debug, Clone)]
enum Op {
    Send(u8, Vec<u32>),
    Ack(u32, u8),
    RemoveDevice(u32),
    Checkpoint,
    Reopen,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0u8..40, proptest::sample::subsequence(vec![1u32, 2, 3], 1..=3))
            .prop_map(|(id, devices)| Op::Send(id, devices)),
        4 => (1u32..=3, 0u8..40).prop_map(|(device, id)| Op::Ack(device, id)),
        1 => (1u32..=3).prop_map(Op::RemoveDevice),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

const MODEL_QUEUE: u64 = 6;

async fn run_against_model(ops: Vec<Op>) -> TestResult {
    let dir = tempfile::tempdir()?;
    // Tiny segments and eager checkpoints: every path runs often.
    let options = LogOptions {
        segment_bytes: 600,
        checkpoint_min_bytes: 0,
        linger: Duration::ZERO,
        ..LogOptions::default()
    };
    let mut log = open(dir.path(), options.clone());
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Send(id, devices) => {
                let got = log.enqueue(message(id, &devices, 40), MODEL_QUEUE).await?;
                let full = devices
                    .iter()
                    .find(|d| model.queues.get(d).map_or(0, Vec::len) as u64 >= MODEL_QUEUE);
                let want = if model.sent.contains(&id) {
                    Enqueued::Duplicate {
                        server_timestamp_ms: base_ts() + u64::from(id),
                        accept_id: model.accept_ids[&id],
                    }
                } else if let Some(device) = full {
                    Enqueued::QueueFull { device: *device }
                } else {
                    model.sent.insert(id);
                    for d in &devices {
                        model.queues.entry(*d).or_default().push(id);
                    }
                    let Enqueued::Stored { accept_id } = got else {
                        panic!("expected Stored, got {got:?}");
                    };
                    assert!(
                        model.accept_ids.values().all(|&a| a < accept_id),
                        "accept ids increase and are never reused"
                    );
                    model.accept_ids.insert(id, accept_id);
                    got.clone()
                };
                assert_eq!(got, want);
            }
            Op::Ack(device, id) => {
                let got = log.ack(account(BOB), device, account(ALICE), &[id; 16])?;
                let queue = model.queues.entry(device).or_default();
                let want = queue.iter().position(|x| *x == id).map(|at| {
                    queue.remove(at);
                    3
                });
                assert_eq!(got, want);
            }
            Op::RemoveDevice(device) => {
                let got = log.remove_device(account(BOB), device)?;
                let want = model.queues.remove(&device).map_or(0, |q| q.len() as u64);
                assert_eq!(got, want);
            }
            Op::Checkpoint => log.request_checkpoint().await?,
            Op::Reopen => {
                log.close().await?;
                drop(log);
                log = open(dir.path(), options.clone());
            }
        }
        for device in 1..=3 {
            let want = model.queues.get(&device).cloned().unwrap_or_default();
            assert_eq!(queue(&log, device), want, "device {device}");
        }
        let total: usize = model.queues.values().map(Vec::len).sum();
        assert_eq!(log.total_queued(), total as u64);
    }
    log.close().await?;
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 24,
        ..proptest::test_runner::Config::default()
    })]

    /// Any mix of sends, acks, device removals, reopens and the
    /// checkpoints they trigger leaves the log equal to the model.
    #[test]
    fn the_log_behaves_like_ordered_queues_across_reopens(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        runtime.block_on(run_against_model(ops)).map_err(|e| {
            proptest::test_runner::TestCaseError::fail(e.to_string())
        })?;
    }
}

#[tokio::test]
async fn a_write_that_fails_half_way_is_cut_back_retried_and_the_log_recovers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let metrics = Arc::new(Metrics::default());
    let log = MailLog::open(dir.path(), LogOptions::default(), metrics.clone())?;
    log.enqueue(message(1, &[1], 100), 100).await?;
    // Three writes in a row fail half-way (a full disk), then it clears.
    for _ in 0..3 {
        faults::cut_next_write(dir.path());
    }
    assert!(log.enqueue(message(2, &[1], 100), 100).await.is_err());
    // Not acknowledged, never shown before it is on disk.
    health_is(&metrics, true).await;
    assert!(matches!(
        log.enqueue(message(3, &[1], 100), 100).await?,
        Enqueued::Stored { .. }
    ));
    assert!(matches!(
        log.enqueue(message(2, &[1], 100), 100).await?,
        Enqueued::Duplicate { .. }
    ));
    assert_eq!(queue(&log, 1), vec![1, 2, 3]);
    log.close().await?;
    drop(log);
    // The half-written bytes were cut back before each retry: the segment
    // replays cleanly, with no torn tail.
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(queue(&log, 1), vec![1, 2, 3]);
    assert!(files_ending(dir.path(), ".torn").is_empty());
    log.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_zero_filled_tail_is_a_torn_write() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let log = open(dir.path(), LogOptions::default());
        log.enqueue(message(1, &[1], 100), 100).await?;
        log.close().await?;
    }
    let path = segment::path(dir.path(), *segments(dir.path()).last().unwrap());
    let clean = std::fs::metadata(&path)?.len();
    let mut bytes = std::fs::read(&path)?;
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&path, bytes)?;
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(queue(&log, 1), vec![1]);
    assert_eq!(std::fs::metadata(&path)?.len(), clean);
    log.close().await?;
    Ok(())
}

#[tokio::test]
async fn damage_followed_by_newer_records_is_refused_not_truncated() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let log = open(dir.path(), small());
        for id in 1..=12 {
            log.enqueue(message(id, &[1], 1024), 100).await?;
        }
        log.close().await?;
    }
    let first = segment::path(dir.path(), segments(dir.path())[0]);
    let mut bytes = std::fs::read(&first)?;
    bytes[40] ^= 1;
    std::fs::write(&first, &bytes)?;
    match MailLog::open(dir.path(), small(), Arc::default()) {
        Err(StorageError::Backend(text)) => {
            assert!(
                text.contains("damaged") && text.contains("backup"),
                "{text}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&first)?,
        bytes,
        "the evidence is left as it was"
    );
    Ok(())
}

#[tokio::test]
async fn seqs_are_not_handed_out_again_after_a_checkpoint() -> TestResult {
    let dir = tempfile::tempdir()?;
    let last;
    {
        let log = open(dir.path(), small());
        log.enqueue(message(1, &[1], 10), 100).await?;
        log.enqueue(message(2, &[1], 10), 100).await?;
        last = log.pending(account(BOB), 1, None, 10, 0)?[1].cursor;
        log.ack(account(BOB), 1, account(ALICE), &[1; 16])?;
        log.ack(account(BOB), 1, account(ALICE), &[2; 16])?;
        log.request_checkpoint().await?;
        log.close().await?;
    }
    assert!(!segments(dir.path()).contains(&1), "checkpointed");
    let log = open(dir.path(), small());
    log.enqueue(message(3, &[1], 10), 100).await?;
    assert!(log.pending(account(BOB), 1, None, 10, 0)?[0].cursor > last);
    log.close().await?;
    Ok(())
}

/// What replay must rebuild: per device, (cursor, envelope) in order, and
/// the idempotency entries.
type Snapshot = (
    BTreeMap<(AccountId, u32), Vec<(u64, Vec<u8>)>>,
    std::collections::BTreeSet<(index::SentKey, u64)>,
);

fn snapshot(log: &MailLog) -> Snapshot {
    let keys: Vec<(AccountId, u32)> = log.shared().lock().index.devices.keys().copied().collect();
    let mut queues = BTreeMap::new();
    for (account, device) in keys {
        let queue: Vec<(u64, Vec<u8>)> = log
            .pending(account, device, None, usize::MAX, 0)
            .unwrap()
            .into_iter()
            .map(|q| (q.cursor, q.envelope))
            .collect();
        queues.insert((account, device), queue);
    }
    let state = log.shared().lock();
    let mut sent = std::collections::BTreeSet::new();
    for shard in 0..index::SENT_SHARDS {
        for (key, entry) in state.index.sent.shard_entries(shard) {
            sent.insert((key, entry.expires));
        }
    }
    assert_eq!(sent.len(), state.index.sent.len(), "shard count exact");
    (queues, sent)
}

/// A small deterministic generator (no dependency, same run every time).
fn step(k: &mut u32) -> u32 {
    *k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
    *k >> 8
}

/// Senders, ackers, device removals, expiry and checkpoints all at once on
/// a multi-threaded runtime, with 2 KiB segments: reopening rebuilds
/// exactly what was live (several rounds, different interleavings).
#[test]
fn concurrent_work_during_checkpoints_replays_exactly() -> TestResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for round in 0..3u32 {
            let dir = tempfile::tempdir()?;
            let options = LogOptions {
                segment_bytes: 2048,
                checkpoint_min_bytes: 0,
                linger: Duration::ZERO,
                ..LogOptions::default()
            };
            let log = open(dir.path(), options.clone());
            let mut tasks = Vec::new();
            for sender in 0..3u32 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    let mut k = round * 7_919 + sender;
                    for _ in 0..300 {
                        let r = step(&mut k);
                        let id = (r % 500) as u16;
                        let mut message_id = [0u8; MESSAGE_ID_LEN];
                        message_id[..2].copy_from_slice(&id.to_be_bytes());
                        // A quarter already expired: expiry races the rest.
                        let expires = if r.is_multiple_of(4) {
                            now_ms() - 1
                        } else {
                            now_ms() + 3_600_000
                        };
                        let devices = 1..=(r % 3 + 1);
                        let message = NewMessage {
                            effects: Default::default(),
                            sender: account(1 + (sender % 2) as u8),
                            sender_device: 1,
                            recipient: account(10 + (r % 3) as u8),
                            message_id,
                            server_timestamp_ms: u64::from(r),
                            expires_at_ms: expires,
                            copies: devices.map(|d| (d, vec![id as u8; 40])).collect(),
                        };
                        let _ = log.enqueue(message, 1_000_000).await;
                    }
                }));
            }
            for acker in 0..2u32 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    let mut k = 77 + acker;
                    for _ in 0..300 {
                        let r = step(&mut k);
                        let (recipient, device) = (account(10 + (r % 3) as u8), r % 3 + 1);
                        let ids = log.queued_origins(recipient, device);
                        for (i, (sender, id)) in ids.iter().enumerate() {
                            if i.is_multiple_of(3) {
                                log.ack(recipient, device, *sender, id).unwrap();
                            }
                        }
                        tokio::task::yield_now().await;
                    }
                }));
            }
            {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    let mut k = 5 + round;
                    for _ in 0..150 {
                        let r = step(&mut k);
                        match r % 16 {
                            0 => {
                                log.remove_device(account(10 + (r % 3) as u8), r % 3 + 1)
                                    .unwrap();
                            }
                            1..=6 => {
                                log.expire(now_ms());
                            }
                            _ => log.request_checkpoint().await.unwrap(),
                        }
                    }
                }));
            }
            for task in tasks {
                task.await?;
            }
            log.expire(now_ms());
            let before = snapshot(&log);
            log.close().await?;
            drop(log);
            let log = open(dir.path(), options);
            assert_eq!(snapshot(&log), before, "round {round}");
            log.close().await?;
        }
        Ok(())
    })
}

#[tokio::test]
async fn segments_of_format_1_are_still_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let origin = record::Origin {
        sender: account(ALICE),
        sender_device: 3,
        message_id: [7; MESSAGE_ID_LEN],
        expires: now_ms() + 3_600_000,
        accept_id: record::LEGACY_ACCEPT_ID,
    };
    let mut w = Writer::default();
    w.message(&origin, &account(BOB), 5, &[(1, 1, [7u8; 20].as_slice())]);
    let mut bytes = record::SEGMENT_MAGIC_V1.to_vec();
    bytes.extend_from_slice(&w.into_format3());
    std::fs::write(segment::path(dir.path(), 1), &bytes)?;
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(queue(&log, 1), vec![7]);
    log.enqueue(message(8, &[1], 10), 10).await?;
    log.close().await?;
    drop(log);
    // The old segment is left as it was, or rewritten by the checkpoint
    // that assigning accept ids at open requests.
    if let Ok(kept) = std::fs::read(segment::path(dir.path(), 1)) {
        assert_eq!(kept, bytes);
    }
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(queue(&log, 1), vec![7, 8]);
    log.close().await?;
    Ok(())
}

#[tokio::test]
async fn segments_of_format_2_are_still_read_and_new_ones_are_format_4() -> TestResult {
    let dir = tempfile::tempdir()?;
    let origin = record::Origin {
        sender: account(ALICE),
        sender_device: 3,
        message_id: [7; MESSAGE_ID_LEN],
        expires: now_ms() + 3_600_000,
        accept_id: record::LEGACY_ACCEPT_ID,
    };
    let mut w = Writer::default();
    w.message(&origin, &account(BOB), 5, &[(1, 1, [7u8; 20].as_slice())]);
    let body = w.into_format3();
    let mut bytes = record::SEGMENT_MAGIC_V2.to_vec();
    bytes.extend_from_slice(&record::group_header(&body));
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(&record::seal_group());
    std::fs::write(segment::path(dir.path(), 1), &bytes)?;
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(queue(&log, 1), vec![7]);
    assert_eq!(log.ack(account(BOB), 1, account(ALICE), &[7; 16])?, Some(3));
    log.close().await?;
    drop(log);
    // The old segment is left as it was, or rewritten by the checkpoint
    // that assigning accept ids at open requests.
    if let Ok(kept) = std::fs::read(segment::path(dir.path(), 1)) {
        assert_eq!(kept, bytes, "the old segment is left as it was");
    }
    let newest = *segments(dir.path()).last().unwrap();
    assert!(newest > 1);
    let written = std::fs::read(segment::path(dir.path(), newest))?;
    assert_eq!(&written[..8], record::SEGMENT_MAGIC);
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(queue(&log, 1), Vec::<u8>::new());
    assert_eq!(
        log.pending_receipts(account(ALICE), 3, None, 10, 0).len(),
        1
    );
    log.close().await?;
    Ok(())
}

/// The receipts kept for a device, as (recipient device, message id byte).
fn receipts(log: &MailLog, account_byte: u8, device: u32) -> Vec<(u32, u8)> {
    log.pending_receipts(account(account_byte), device, None, usize::MAX, 0)
        .iter()
        .map(|(_, r)| (r.recipient_device, r.message_id[0]))
        .collect()
}

#[tokio::test]
async fn an_ack_keeps_a_receipt_for_the_sender_until_it_acks_it_across_reopens() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let log = open(dir.path(), LogOptions::default());
        for id in 1..=3 {
            log.enqueue(message(id, &[1, 2], 20), 100).await?;
        }
        let (_, device, durable) = log
            .acknowledge(
                account(BOB),
                1,
                AckOf::Message {
                    sender: account(ALICE),
                    message_id: [1; 16],
                },
                u64::MAX,
            )?
            .expect("queued");
        assert_eq!(device, 3);
        // Visible once durable, and the durability is told.
        durable.await??;
        assert_eq!(receipts(&log, ALICE, 3), vec![(1, 1)]);
        assert_eq!(log.ack(account(BOB), 2, account(ALICE), &[1; 16])?, Some(3));
        assert_eq!(log.ack(account(BOB), 1, account(ALICE), &[2; 16])?, Some(3));
        // No receipt for an ack of nothing.
        assert_eq!(log.ack(account(BOB), 1, account(ALICE), &[2; 16])?, None);
        log.flush().await?;
        assert_eq!(receipts(&log, ALICE, 3), vec![(1, 1), (2, 1), (1, 2)]);
        // Receipts are not envelopes: the queue depth is unchanged.
        assert_eq!(log.queued_count(account(ALICE), 3), 0);
        assert_eq!(log.total_receipts(), 3);
        // The cursor works as for envelopes.
        let first = log.pending_receipts(account(ALICE), 3, None, 1, 0);
        let after = log.pending_receipts(account(ALICE), 3, Some(first[0].0), 10, 0);
        assert_eq!(after.len(), 2);
        log.close().await?;
    }
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(receipts(&log, ALICE, 3), vec![(1, 1), (2, 1), (1, 2)]);
    assert_eq!(queue(&log, 1), vec![3]);
    assert!(log.acknowledge_receipt(account(ALICE), 3, account(BOB), 2, &[1; 16])?);
    assert!(!log.acknowledge_receipt(account(ALICE), 3, account(BOB), 2, &[1; 16])?);
    // Another device's or account's ack deletes nothing.
    assert!(!log.acknowledge_receipt(account(ALICE), 4, account(BOB), 1, &[1; 16])?);
    assert!(!log.acknowledge_receipt(account(BOB), 3, account(BOB), 1, &[1; 16])?);
    log.close().await?;
    drop(log);
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(receipts(&log, ALICE, 3), vec![(1, 1), (1, 2)]);
    log.close().await?;
    Ok(())
}

#[tokio::test]
async fn checkpoints_keep_receipts_and_expiry_and_device_removal_drop_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let log = open(dir.path(), small());
        for id in 1..=40 {
            log.enqueue(message(id, &[1], 300), 1000).await?;
        }
        for id in 1..=40 {
            log.ack(account(BOB), 1, account(ALICE), &[id; 16])?;
        }
        for id in 1..=10 {
            assert!(log.acknowledge_receipt(account(ALICE), 3, account(BOB), 1, &[id; 16])?);
        }
        log.request_checkpoint().await?;
        log.close().await?;
    }
    let log = open(dir.path(), small());
    let kept: Vec<u8> = receipts(&log, ALICE, 3).iter().map(|r| r.1).collect();
    assert_eq!(kept, (11..=40).collect::<Vec<u8>>());
    // A receipt expires with its time.
    log.enqueue(message(42, &[1], 10), 1000).await?;
    log.acknowledge(
        account(BOB),
        1,
        AckOf::Message {
            sender: account(ALICE),
            message_id: [42; 16],
        },
        now_ms() + 1,
    )?;
    log.flush().await?;
    assert_eq!(receipts(&log, ALICE, 3).len(), 31);
    log.expire(now_ms() + 10);
    assert_eq!(receipts(&log, ALICE, 3).len(), 30);
    log.remove_device(account(ALICE), 3)?;
    assert!(receipts(&log, ALICE, 3).is_empty());
    assert_eq!(log.total_receipts(), 0);
    log.close().await?;
    drop(log);
    let log = open(dir.path(), small());
    assert!(receipts(&log, ALICE, 3).is_empty());
    log.close().await?;
    Ok(())
}

/// What the power-loss test did, in order.
#[derive(Clone, Copy, Debug)]
enum Did {
    /// `enqueue` returned `Stored`: must survive.
    Stored(u8),
    /// About to be acked: may survive or not.
    Acking(u8),
    /// Acked and flushed: must not come back.
    Deleted(u8),
}

fn note(dir: &Path, did: &mut Vec<Did>, what: Did) {
    did.push(what);
    power_loss::mark(dir);
}

/// Sends, acks and checkpoints rolling 600-byte segments; then, for every
/// moment right after a durability call, what a power loss could leave is
/// opened: every acknowledged envelope is there, and no envelope whose
/// deletion was flushed came back (an old segment whose unlink reached the
/// disk before an older one's would bring it back).
#[tokio::test]
async fn a_power_loss_after_any_sync_keeps_what_was_acknowledged_and_no_deleted_copy() -> TestResult
{
    let root = tempfile::tempdir()?;
    let dir = root.path().join("log");
    std::fs::create_dir(&dir)?;
    power_loss::record(&dir);
    let options = LogOptions {
        segment_bytes: 600,
        checkpoint_min_bytes: 1 << 30,
        linger: Duration::ZERO,
        ..LogOptions::default()
    };
    let log = open(&dir, options.clone());
    let mut did = Vec::new();
    let mut id = 0u8;
    for round in 0..6 {
        let first = id + 1;
        for _ in 0..10 {
            id += 1;
            assert!(matches!(
                log.enqueue(message(id, &[1], 40), 1000).await?,
                Enqueued::Stored { .. }
            ));
            note(&dir, &mut did, Did::Stored(id));
        }
        let acked: Vec<u8> = (first..=id).filter(|x| x % 3 != 0).collect();
        for &x in &acked {
            note(&dir, &mut did, Did::Acking(x));
            log.ack(account(BOB), 1, account(ALICE), &[x; 16])?;
        }
        log.flush().await?;
        for &x in &acked {
            note(&dir, &mut did, Did::Deleted(x));
        }
        if round % 2 == 1 {
            log.request_checkpoint().await?;
        }
    }
    log.close().await?;
    drop(log);
    let moments = power_loss::finish(&dir);
    assert!(
        moments.iter().any(|m| m.what.starts_with("remove")),
        "checkpoints removed segments"
    );
    let mut opened = 0;
    for (n, moment) in moments.iter().enumerate() {
        let mut required = std::collections::BTreeSet::new();
        let mut forbidden = std::collections::BTreeSet::new();
        for d in &did[..moment.marks] {
            match *d {
                Did::Stored(x) => {
                    required.insert(x);
                }
                Did::Acking(x) => {
                    required.remove(&x);
                }
                Did::Deleted(x) => {
                    forbidden.insert(x);
                }
            }
        }
        for entries in moment.variants() {
            let copy = tempfile::tempdir()?;
            moment.write_to(&entries, copy.path());
            let log = MailLog::open(copy.path(), options.clone(), Arc::default()).map_err(|e| {
                format!(
                    "power loss after #{n} ({}), files {entries:?}: {e}",
                    moment.what
                )
            })?;
            let got: std::collections::BTreeSet<u8> = queue(&log, 1).into_iter().collect();
            let lost: Vec<_> = required.difference(&got).collect();
            let back: Vec<_> = forbidden.intersection(&got).collect();
            assert!(
                lost.is_empty() && back.is_empty(),
                "power loss after #{n} ({}), files {:?}: lost {lost:?}, came back {back:?}",
                moment.what,
                entries.keys().collect::<Vec<_>>()
            );
            log.close().await?;
            opened += 1;
        }
    }
    assert!(opened > moments.len());
    Ok(())
}

#[tokio::test]
async fn a_wall_clock_stepped_forward_expires_at_most_an_hour_per_pass_even_across_a_restart()
-> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path(), LogOptions::default());
    let now = now_ms();
    let mut soon = message(1, &[1], 10);
    soon.expires_at_ms = now + 30 * 60_000;
    let mut later = message(2, &[1], 10);
    later.expires_at_ms = now + 3 * EXPIRY_CATCH_UP_MS;
    log.enqueue(soon, 10).await?;
    log.enqueue(later, 10).await?;
    // The wall clock jumps 30 days ahead.
    let stepped = now + 30 * 86_400_000;
    assert_eq!(log.expire(stepped), 1, "only what was due within the hour");
    assert_eq!(queue(&log, 1), vec![2]);
    let shown = log.pending(account(BOB), 1, None, 10, stepped)?;
    assert_eq!(shown.len(), 1, "not hidden by the stepped clock either");
    log.close().await?;
    drop(log);
    // A restart with the stepped clock goes by the persisted expiry clock.
    let log = MailLog::open_at(dir.path(), LogOptions::default(), stepped)?;
    assert_eq!(queue(&log, 1), vec![2]);
    // Each pass catches up by at most an hour: two more expire it.
    let mut passes = 0;
    while log.queued_count(account(BOB), 1) > 0 {
        log.expire(stepped);
        passes += 1;
        assert!(passes <= 3, "caught up too slowly");
    }
    assert!(passes >= 1);
    assert!(log.expiry_clock_ms() < now + 5 * EXPIRY_CATCH_UP_MS);
    // A clock stepped back does not move expiry back.
    let reached = log.expiry_clock_ms();
    log.expire(now - 86_400_000);
    assert_eq!(log.expiry_clock_ms(), reached);
    log.close().await?;
    Ok(())
}

#[tokio::test]
async fn idempotency_entries_lapse_after_their_window_while_the_mail_stays() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path(), LogOptions::default());
    let now = now_ms();
    let mut first = message(1, &[1], 10);
    first.server_timestamp_ms = now;
    first.expires_at_ms = now + 30 * 86_400_000;
    log.enqueue(first.clone(), 10).await?;
    assert!(matches!(
        log.enqueue(first.clone(), 10).await?,
        Enqueued::Duplicate { .. }
    ));
    assert_eq!(log.idempotency_entries(), 1);
    // The expiry clock moves at most an hour ahead per pass: walk it past
    // the window, well before the message's own expiry.
    let target = now + IDEMPOTENCY_WINDOW_MS + EXPIRY_CATCH_UP_MS;
    let mut passes = 0;
    while log.expiry_clock_ms() < target {
        log.expire(target);
        passes += 1;
        assert!(passes <= 30, "the expiry clock did not advance");
    }
    assert_eq!(log.idempotency_entries(), 0, "the entry lapsed");
    assert_eq!(queue(&log, 1), vec![1], "the mail itself is still queued");
    // The window survives a restart: replay bounds the entry the same way.
    log.close().await?;
    drop(log);
    let log = MailLog::open_at(dir.path(), LogOptions::default(), target)?;
    assert_eq!(log.idempotency_entries(), 0);
    assert_eq!(queue(&log, 1), vec![1]);
    log.close().await?;
    Ok(())
}

/// Groups written so far (syncs with something to write), from metrics.
fn groups(metrics: &Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("comptoir_flush_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// Run `sends` on a log whose linger is 5 s: they fail with `why` if they
/// take 4 s (some group waited the linger out).
async fn sends_under_a_long_linger<Sends>(
    sends: impl FnOnce(MailLog) -> Sends,
    why: &'static str,
) -> TestResult
where
    Sends: std::future::Future<Output = Result<(), StorageError>>,
{
    let dir = tempfile::tempdir()?;
    let options = LogOptions {
        linger: Duration::from_secs(5),
        ..LogOptions::default()
    };
    let log = open(dir.path(), options);
    tokio::time::timeout(Duration::from_secs(4), sends(log.clone()))
        .await
        .map_err(|_| why)??;
    log.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_lone_sender_is_committed_at_once_whatever_the_linger() -> TestResult {
    // Were every group to wait for the linger, 20 sends would take 100 s.
    let sends = |log: MailLog| async move {
        for id in 1..=20 {
            log.enqueue(message(id, &[1], 100), 100).await?;
        }
        Ok(())
    };
    sends_under_a_long_linger(sends, "sequential sends waited for the linger").await
}

/// Message `id` sent by Alice's device `id`.
fn from_device(id: u8) -> NewMessage {
    let mut m = message(id, &[1], 100);
    m.sender_device = u32::from(id);
    m
}

/// A burst of eight sends, each from `sender(id)` for ids 1 to 8, all
/// appended before the first sync ends (so a later group holds several of
/// them), then one more send (id 9) alone; how many groups the writer
/// gathered.
async fn burst_then_one(log: &MailLog, sender: fn(u8) -> NewMessage) -> Result<u64, StorageError> {
    let burst = (1..=8).map(|id| log.enqueue(sender(id), 100));
    for outcome in futures_util::future::join_all(burst).await {
        outcome?;
    }
    log.enqueue(sender(9), 100).await?;
    Ok(log.groups_gathered())
}

#[tokio::test]
async fn a_group_smaller_than_the_last_is_not_held_for_the_linger() -> TestResult {
    let sends = |log: MailLog| async move {
        // Eight devices at once: the writer expects as many next time,
        // and gathers for the lone send that follows, but nobody else is
        // coming: the wait ends once no new sender came for a moment.
        let gathered = burst_then_one(&log, from_device).await?;
        assert!(gathered >= 1, "the lone send was not gathered for");
        Ok(())
    };
    sends_under_a_long_linger(sends, "a send waited for senders that were not coming").await
}

#[tokio::test]
async fn a_burst_from_one_device_does_not_make_the_next_group_wait() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path(), LogOptions::default());
    let one_device = |id| message(id, &[1], 100);
    assert_eq!(burst_then_one(&log, one_device).await?, 0);
    log.close().await?;
    Ok(())
}

#[test]
fn concurrent_senders_share_syncs() -> TestResult {
    senders_share_syncs(|sender| sender, 4)
}

#[test]
fn one_devices_concurrent_sends_share_syncs_without_being_gathered() -> TestResult {
    // All from one device: the writer never holds a group for more of
    // them (`writer::LastGroup`), yet those that arrive during a sync
    // share the next (fewer of them than gathering would put together).
    senders_share_syncs(|_| 3, 2)
}

/// Twenty tasks send ten messages each, the task numbered `s` from device
/// `device(s)` of Alice: they take at most `1 / per_sync` as many syncs.
fn senders_share_syncs(device: fn(u8) -> u8, per_sync: u64) -> TestResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let metrics = Arc::new(Metrics::default());
        let options = LogOptions {
            linger: Duration::from_millis(200),
            ..LogOptions::default()
        };
        let log = MailLog::open(dir.path(), options, metrics.clone())?;
        let (senders, each) = (20u8, 10u8);
        let mut tasks = Vec::new();
        for s in 0..senders {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..each {
                    let mut m = message(0, &[1], 100);
                    m.sender_device = u32::from(device(s));
                    m.message_id = [s; MESSAGE_ID_LEN];
                    m.message_id[1] = i;
                    m.message_id[2] = 1;
                    assert!(matches!(
                        log.enqueue(m, 10_000).await.unwrap(),
                        Enqueued::Stored { .. }
                    ));
                }
            }));
        }
        for task in tasks {
            task.await?;
        }
        let sends = u64::from(senders) * u64::from(each);
        let groups = groups(&metrics);
        assert!(
            groups * per_sync <= sends,
            "{groups} syncs for {sends} concurrent sends"
        );
        log.close().await?;
        Ok(())
    })
}

/// The accept id each device of Bob sees for each queued message, by the
/// message's first byte.
fn accept_ids(log: &MailLog, device: u32) -> Vec<(u8, u64)> {
    log.pending(account(BOB), device, None, usize::MAX, 0)
        .unwrap()
        .iter()
        .map(|q| (q.envelope[0], q.accept_id))
        .collect()
}

fn stored_id(outcome: Enqueued) -> u64 {
    match outcome {
        Enqueued::Stored { accept_id } => accept_id,
        other => panic!("expected Stored, got {other:?}"),
    }
}

#[tokio::test]
async fn accept_ids_survive_reopen_and_checkpoints_and_are_never_reused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path(), LogOptions::default());
    let a = stored_id(log.enqueue(message(1, &[1, 2], 10), 100).await?);
    let b = stored_id(log.enqueue(message(2, &[1], 10), 100).await?);
    assert_ne!(a, b);
    assert_eq!(accept_ids(&log, 1), vec![(1, a), (2, b)]);
    assert_eq!(accept_ids(&log, 2), vec![(1, a)]);
    // Every copy of message 2 delivered: only its idempotency entry is left.
    assert!(
        log.acknowledge(account(BOB), 1, AckOf::Accept(b), u64::MAX)?
            .is_some()
    );
    log.request_checkpoint().await?;
    log.close().await?;
    drop(log);
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(accept_ids(&log, 1), vec![(1, a)]);
    assert_eq!(accept_ids(&log, 2), vec![(1, a)]);
    assert_eq!(
        log.enqueue(message(2, &[1], 10), 100).await?,
        Enqueued::Duplicate {
            server_timestamp_ms: base_ts() + 2,
            accept_id: b
        }
    );
    let c = stored_id(log.enqueue(message(3, &[1], 10), 100).await?);
    assert!(c > a && c > b, "never reused: {c} after {a}, {b}");
    // An ack by accept id deletes that device's copy only.
    assert!(
        log.acknowledge(account(BOB), 2, AckOf::Accept(a), u64::MAX)?
            .is_some()
    );
    assert!(
        log.acknowledge(account(BOB), 2, AckOf::Accept(a), u64::MAX)?
            .is_none()
    );
    assert!(
        log.acknowledge(account(BOB), 1, AckOf::Accept(b), u64::MAX)?
            .is_none()
    );
    assert_eq!(accept_ids(&log, 1), vec![(1, a), (3, c)]);
    log.close().await?;
    Ok(())
}

/// A directory written by the format-3 code path (no accept ids): a
/// checkpoint segment (a copy queued for two devices, an idempotency entry
/// whose copies are all delivered, a receipt) and a later segment (a
/// send), in the bytes the format-3 encoder wrote.
fn write_format3_dir(dir: &Path) {
    let origin = |id: u8| record::Origin {
        sender: account(ALICE),
        sender_device: 3,
        message_id: [id; MESSAGE_ID_LEN],
        expires: now_ms() + 3_600_000,
        accept_id: record::LEGACY_ACCEPT_ID,
    };
    let segment = |id: u32, fill: &dyn Fn(&mut Writer)| {
        let mut w = Writer::default();
        fill(&mut w);
        let body = w.into_format3();
        let mut bytes = record::SEGMENT_MAGIC_V3.to_vec();
        bytes.extend_from_slice(&record::group_header(&body));
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&record::seal_group());
        std::fs::write(segment::path(dir, id), &bytes).unwrap();
    };
    segment(1, &|w| {
        w.seq_floor(20);
        w.queued(&account(BOB), 1, 11, &origin(1), &[1; 10]);
        w.queued(&account(BOB), 2, 12, &origin(1), &[1; 10]);
        let ts = base_ts();
        w.sent(
            &account(ALICE),
            &account(BOB),
            &[1; 16],
            ts,
            ts + 3_600_000,
            0,
        );
        w.sent(
            &account(ALICE),
            &account(BOB),
            &[2; 16],
            ts,
            ts + 3_600_000,
            0,
        );
        let receipt = ReceiptRef {
            recipient: account(BOB),
            recipient_device: 1,
            message_id: [2; 16],
            expires: u64::MAX,
            accept_id: record::LEGACY_ACCEPT_ID,
        };
        w.receipt(&account(ALICE), 3, 13, &receipt);
    });
    segment(2, &|w| {
        w.message(
            &origin(4),
            &account(BOB),
            base_ts(),
            &[(1, 21, [4u8; 10].as_slice()), (2, 22, [4u8; 10].as_slice())],
        );
        let ts = base_ts();
        w.sent(
            &account(ALICE),
            &account(BOB),
            &[4; 16],
            ts,
            ts + 3_600_000,
            0,
        );
    });
}

#[tokio::test]
async fn a_format_3_directory_gets_accept_ids_at_open_durably() -> TestResult {
    let dir = tempfile::tempdir()?;
    write_format3_dir(dir.path());
    let log = open(dir.path(), LogOptions::default());
    // Each send's copies share one id: the lowest seq of its copies.
    assert_eq!(accept_ids(&log, 1), vec![(1, 11), (4, 21)]);
    assert_eq!(accept_ids(&log, 2), vec![(1, 11), (4, 21)]);
    let retry = |id: u8| {
        let mut m = message(id, &[1], 10);
        m.server_timestamp_ms = base_ts();
        m
    };
    let Enqueued::Duplicate {
        accept_id: delivered_id,
        ..
    } = log.enqueue(retry(2), 100).await?
    else {
        panic!("a retry of a migrated send is a duplicate");
    };
    assert!(
        delivered_id >= 23,
        "a fresh id past every seq: {delivered_id}"
    );
    assert!(matches!(
        log.enqueue(retry(4), 100).await?,
        Enqueued::Duplicate { accept_id: 21, .. }
    ));
    let fresh = stored_id(log.enqueue(message(9, &[1], 10), 100).await?);
    assert!(fresh > delivered_id);
    // Acks by accept id work on migrated copies.
    assert!(
        log.acknowledge(account(BOB), 2, AckOf::Accept(11), u64::MAX)?
            .is_some()
    );
    log.close().await?;
    drop(log);
    // Reopened (the checkpoint requested at open may or may not have run):
    // the same ids.
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(accept_ids(&log, 1), vec![(1, 11), (4, 21), (9, fresh)]);
    assert_eq!(accept_ids(&log, 2), vec![(4, 21)]);
    assert!(matches!(
        log.enqueue(retry(2), 100).await?,
        Enqueued::Duplicate { accept_id, .. } if accept_id == delivered_id
    ));
    // The old receipt keeps no accept id.
    let kept = log.pending_receipts(account(ALICE), 3, None, 10, 0);
    assert!(
        kept.iter()
            .any(|(_, r)| r.message_id == [2; 16] && r.accept_id == 0)
    );
    log.request_checkpoint().await?;
    log.close().await?;
    drop(log);
    for id in segments(dir.path()) {
        let bytes = std::fs::read(segment::path(dir.path(), id))?;
        assert_eq!(&bytes[..8], record::SEGMENT_MAGIC, "rewritten in format 4");
    }
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(accept_ids(&log, 1), vec![(1, 11), (4, 21), (9, fresh)]);
    assert!(matches!(
        log.enqueue(retry(2), 100).await?,
        Enqueued::Duplicate { accept_id, .. } if accept_id == delivered_id
    ));
    log.close().await?;
    Ok(())
}

#[tokio::test]
async fn accept_effects_replay_once_across_reopen_and_checkpoints() -> TestResult {
    use crate::storage::{AcceptEffects, Billed, BilledCategory, DeliveredEntry, Priced};
    let dir = tempfile::tempdir()?;
    let billed = |id: u8| {
        let mut m = message(id, &[1], 10);
        m.effects = AcceptEffects {
            customer_wrote_to: None,
            business_reached: Some(account(BOB)),
            billed: Some(Billed {
                category: BilledCategory::Marketing,
                template_id: "promo".into(),
                franking_tag: vec![id; 32],
                priced: Priced {
                    millionths: 1_000 * u64::from(id),
                    inside_window: id == 1,
                },
            }),
            consent_seen: None,
            block_epoch_seen: 0,
            reach: None,
        };
        m
    };
    let log = open(dir.path(), LogOptions::default());
    let first = stored_id(log.enqueue(billed(1), 100).await?);
    let second = stored_id(log.enqueue(billed(2), 100).await?);
    // A retry is a duplicate: nothing counted again.
    assert!(matches!(
        log.enqueue(billed(2), 100).await?,
        Enqueued::Duplicate { .. }
    ));
    // The second send is delivered first: it is the bill's first line.
    // A second signed ack of a send (another device, or a retry after the
    // copy was deleted) makes no second line.
    let delivered = |accept_id: u64| DeliveredEntry {
        accept_id,
        customer_device: 1,
        signed_at_ms: 5,
        signature: [accept_id as u8; 64],
        delivered_at_ms: 7,
        chain_seq: None,
    };
    for accept_id in [second, first, second] {
        log.acknowledge_delivered(
            account(BOB),
            1,
            AckOf::Accept(accept_id),
            u64::MAX,
            delivered(accept_id),
        )?;
    }
    log.flush().await?;
    let check = |log: &MailLog| {
        let ledger = log.ledger_entries(None, 10);
        assert_eq!(
            ledger.iter().map(|e| e.accept_id).collect::<Vec<_>>(),
            vec![first, second]
        );
        assert_eq!(ledger[1].franking_tag, vec![2; 32]);
        assert_eq!(ledger[1].template_id, "promo");
        assert_eq!(
            ledger.iter().map(|e| e.priced).collect::<Vec<_>>(),
            [
                Some(Priced {
                    millionths: 1_000,
                    inside_window: true
                }),
                Some(Priced {
                    millionths: 2_000,
                    inside_window: false
                })
            ]
        );
        let bill: Vec<(u64, Option<u64>)> = log
            .bill(account(ALICE))
            .iter()
            .map(|(e, d)| (e.accept_id, d.chain_seq))
            .collect();
        assert_eq!(bill, [(second, Some(0)), (first, Some(1))]);
        assert!(log.bill(account(BOB)).is_empty());
        assert_eq!(log.ledger_entries(Some(first), 10).len(), 1);
        let quotas = log.quotas();
        assert_eq!(quotas.len(), 1);
        assert_eq!(quotas[0].0, account(ALICE));
        assert_eq!(
            quotas[0].2,
            QuotaCounts {
                accepted: 2,
                customers_reached: 1
            }
        );
    };
    check(&log);
    log.request_checkpoint().await?;
    log.close().await?;
    drop(log);
    // The checkpoint repeats what the older segments said: counted once.
    let log = open(dir.path(), LogOptions::default());
    check(&log);
    log.close().await?;
    Ok(())
}

#[tokio::test]
async fn consents_keep_the_highest_counter_survive_reopen_and_checkpoints_and_guard_the_accept()
-> TestResult {
    use comptoir_protocol::ConsentCategories;

    use crate::storage::{AcceptEffects, ConsentRecord, ConsentSeen, ConsentSet};
    let dir = tempfile::tempdir()?;
    // ALICE is the business sending, BOB the customer.
    let consent = |counter: u64, categories: ConsentCategories| ConsentRecord {
        customer: account(BOB),
        business: account(ALICE),
        device: 1,
        categories,
        issued_at_ms: 1,
        expires_at_ms: u64::MAX,
        counter,
        signature: [counter as u8; 64],
        revoked_by_block: false,
    };
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(
        log.set_consent(consent(2, ConsentCategories::UTILITY))
            .await?,
        ConsentSet::Kept
    );
    // Not higher: a replay, or an older token.
    for counter in [1, 2] {
        assert_eq!(
            log.set_consent(consent(counter, ConsentCategories::MARKETING))
                .await?,
            ConsentSet::Stale { kept: 2 }
        );
    }
    // A send decided on an older state is refused and stores nothing.
    let guarded = |id: u8, seen: u64, revoked: bool| {
        let mut m = message(id, &[1], 10);
        m.effects = AcceptEffects {
            consent_seen: Some(ConsentSeen {
                customer: account(BOB),
                business: account(ALICE),
                counter: seen,
                revoked_by_block: revoked,
            }),
            ..AcceptEffects::default()
        };
        m
    };
    assert_eq!(
        log.enqueue(guarded(1, 1, false), 100).await?,
        Enqueued::ConsentChanged
    );
    assert_eq!(log.total_queued(), 0);
    stored_id(log.enqueue(guarded(2, 2, false), 100).await?);
    log.revoke_consent_by_block(account(BOB), account(ALICE))
        .await?;
    assert_eq!(
        log.enqueue(guarded(3, 2, false), 100).await?,
        Enqueued::ConsentChanged,
        "a block in between"
    );
    let check = |log: &MailLog| {
        let kept = log.consent(account(BOB), account(ALICE)).expect("kept");
        assert_eq!(kept.counter, 2);
        assert!(kept.revoked_by_block);
        assert_eq!(kept.categories, ConsentCategories::UTILITY);
        assert_eq!(log.consents_of(account(BOB)).len(), 1);
        assert!(log.consents_of(account(ALICE)).is_empty());
    };
    check(&log);
    log.close().await?;
    drop(log);
    let log = open(dir.path(), LogOptions::default());
    check(&log);
    log.request_checkpoint().await?;
    log.close().await?;
    drop(log);
    let log = open(dir.path(), LogOptions::default());
    check(&log);
    // A new grant (higher counter) replaces the block's revocation.
    assert_eq!(
        log.set_consent(consent(3, ConsentCategories::MARKETING))
            .await?,
        ConsentSet::Kept
    );
    let kept = log.consent(account(BOB), account(ALICE)).expect("kept");
    assert!(!kept.revoked_by_block);
    log.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_block_deletes_what_was_queued_and_refuses_an_accept_decided_before_it() -> TestResult {
    use crate::storage::AcceptEffects;
    let dir = tempfile::tempdir()?;
    // ALICE sends to BOB; BOB blocks ALICE.
    let decided_at = |id: u8, epoch: u64| {
        let mut m = message(id, &[1, 2], 10);
        m.effects = AcceptEffects {
            block_epoch_seen: epoch,
            ..AcceptEffects::default()
        };
        m
    };
    let log = open(dir.path(), LogOptions::default());
    stored_id(log.enqueue(decided_at(1, 0), 100).await?);
    assert_eq!(log.total_queued(), 2);
    assert_eq!(
        log.remove_queued_from(account(BOB), &[1, 2], account(ALICE))
            .await?,
        2
    );
    assert_eq!(log.total_queued(), 0);
    assert_eq!(log.block_epoch(account(BOB), account(ALICE)), 1);
    assert_eq!(
        log.enqueue(decided_at(2, 0), 100).await?,
        Enqueued::BlockedMeanwhile,
        "decided before the block"
    );
    assert_eq!(log.total_queued(), 0);
    log.close().await?;
    drop(log);
    for checkpoint in [false, true, false] {
        let log = open(dir.path(), LogOptions::default());
        assert_eq!(log.total_queued(), 0);
        assert_eq!(log.block_epoch(account(BOB), account(ALICE)), 1);
        assert_eq!(log.block_epoch(account(ALICE), account(BOB)), 0);
        if checkpoint {
            log.request_checkpoint().await?;
        }
        log.close().await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_tier_limit_is_checked_with_the_accept_and_reaches_outlive_replay_and_checkpoints()
-> TestResult {
    use crate::policy::quality::REACH_WINDOW_MS;
    use crate::storage::{AcceptEffects, ReachLimit};
    let dir = tempfile::tempdir()?;
    // ALICE (a business) reaches customers 10, 11, … at `ts`, limit 2.
    let reach = |id: u8, customer: u8, ts: u64| {
        let mut m = message(id, &[1], 10);
        m.recipient = account(customer);
        m.server_timestamp_ms = ts;
        m.effects = AcceptEffects {
            reach: Some(ReachLimit { limit: Some(2) }),
            ..AcceptEffects::default()
        };
        m
    };
    let t0 = base_ts();
    let log = open(dir.path(), LogOptions::default());
    stored_id(log.enqueue(reach(1, 10, t0), 100).await?);
    stored_id(log.enqueue(reach(2, 11, t0 + 5), 100).await?);
    // Customer 10 again: reached already, not counted, not refused.
    stored_id(log.enqueue(reach(3, 10, t0 + 6), 100).await?);
    assert_eq!(
        log.enqueue(reach(4, 12, t0 + 7), 100).await?,
        Enqueued::QuotaExceeded {
            limit: 2,
            retry_at_ms: t0 + REACH_WINDOW_MS
        }
    );
    assert_eq!(
        log.pending(account(12), 1, None, 10, 0)?.len(),
        0,
        "nothing stored"
    );
    let usage = |log: &MailLog, at: u64| {
        let (window, week) = log.reach_usage(account(ALICE), at);
        (window.used, window.oldest_ms, week)
    };
    assert_eq!(usage(&log, t0 + 7), (2, Some(t0), 2));
    log.close().await?;
    drop(log);
    for checkpoint in [false, true, false] {
        let log = open(dir.path(), LogOptions::default());
        assert_eq!(
            usage(&log, t0 + 7),
            (2, Some(t0), 2),
            "checkpoint {checkpoint}"
        );
        if checkpoint {
            log.request_checkpoint().await?;
        }
        log.close().await?;
    }
    // 24 hours after the first reach its slot is free again.
    let log = open(dir.path(), LogOptions::default());
    let later = t0 + REACH_WINDOW_MS;
    assert_eq!(usage(&log, later), (1, Some(t0 + 5), 2));
    stored_id(log.enqueue(reach(5, 12, later), 100).await?);
    assert_eq!(usage(&log, later), (2, Some(t0 + 5), 3));
    // Once customer 11's count is 24 hours old, customer 10 counts again,
    // once (its first count is gone from the window, not counted twice).
    let again = t0 + 5 + REACH_WINDOW_MS;
    stored_id(log.enqueue(reach(6, 10, again), 100).await?);
    assert_eq!(usage(&log, again), (2, Some(later), 3));
    assert!(matches!(
        log.enqueue(reach(7, 11, again), 100).await?,
        Enqueued::QuotaExceeded { limit: 2, .. }
    ));
    log.request_checkpoint().await?;
    log.close().await?;
    drop(log);
    let log = open(dir.path(), LogOptions::default());
    assert_eq!(usage(&log, again), (2, Some(later), 3));
    log.close().await?;
    Ok(())
}
