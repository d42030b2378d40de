//! The embedded default backend: sled 0.34, with group commit.
//!
//! Writes apply to sled's in-memory state at once; the caller then waits
//! on the [`Committer`], a task that gathers every waiting writer, runs one
//! `flush_async()` (an fsync) for all of them and completes them together.
//! Under load one fsync covers hundreds of envelopes.
//!
//! Trees and key layouts (all integers big-endian so keys sort):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `accounts` | account (16) | `SignedDeviceList` protobuf |
//! | `prekeys` | account, device (4), 0 | `SignedPreKey` protobuf |
//! | `prekeys` | account, device, 1, key id (4) | public key (32) |
//! | `mail` | `q`, account, device, seq (8) | expires (8), `Envelope` protobuf |
//! | `mail` | `i`, account, device, sender (16), message id (16) | seq, expires, sender device (4) |
//! | `mail` | `x`, expires, seq, account, device | sender, message id |
//! | `mail` | `c`, account, device | queued count (8) |
//! | `mail` | `s`, sender, recipient, message id | server time (8), expires (8) |
//! | `mail` | `z`, expires, sender, recipient, message id | (empty) |
//! | `blocks` | blocker (16), blocked (16) | (empty) |
//! | `phones` | E.164 text | account (16), discoverable (1) |

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ::sled::{Db, IVec, Tree};
use comptoir_protocol::AccountId;
use comptoir_protocol::proto::wire::{OneTimePreKey, SignedDeviceList, SignedPreKey};
use prost::Message;
use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;

use super::{
    Enqueued, ListUpdate, MESSAGE_ID_LEN, NewMessage, QueuedEnvelope, Storage, StorageError,
    StorageResult, TakenPreKeys,
};
use crate::metrics::Metrics;

/// Work for the writer task.
enum Job {
    /// Store a message; reply once durable.
    Enqueue(
        Box<NewMessage>,
        u64,
        oneshot::Sender<StorageResult<Enqueued>>,
    ),
    /// Delete an acked envelope; reply once applied (not waiting for disk).
    Ack(AckJob, oneshot::Sender<StorageResult<Option<IVec>>>),
    /// Reply once everything written before is durable.
    Durable(oneshot::Sender<StorageResult<()>>),
    /// Flush, release the database and stop the writer.
    Close(oneshot::Sender<StorageResult<()>>),
}

struct AckJob {
    account: AccountId,
    device: u32,
    sender: AccountId,
    message_id: [u8; MESSAGE_ID_LEN],
}

/// The single writer of the mail queues, and group commit: it takes every
/// job waiting, applies them (microseconds each, in memory), runs one
/// `flush_async()` (an fsync) and completes them together. Writers never
/// touch sled while a flush runs, so a burst of sends arriving during one
/// fsync is covered by the next one.
#[derive(Clone, Debug)]
struct Committer {
    jobs: std_mpsc::Sender<Job>,
}

type Stored = (
    oneshot::Sender<StorageResult<Enqueued>>,
    StorageResult<Enqueued>,
);

fn write_loop(core: Core, metrics: &Metrics, rx: &std_mpsc::Receiver<Job>) {
    let mut closing = None;
    let mut group: Vec<Job> = Vec::new();
    let mut stored: Vec<Stored> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<StorageResult<()>>> = Vec::new();
    while let Ok(first) = rx.recv() {
        group.push(first);
        // Linger briefly so one fsync covers a burst, not a trickle.
        let deadline = Instant::now() + GROUP_LINGER;
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(more) => group.push(more),
                        Err(_) => break,
                    }
                }
            }
        }
        for job in group.drain(..) {
            match job {
                Job::Enqueue(message, max_queue, reply) => {
                    let outcome = core.enqueue(&message, max_queue);
                    stored.push((reply, outcome));
                }
                Job::Ack(ack, reply) => {
                    let removed = {
                        let _guard = core.lock_mail();
                        remove_queued(
                            &core.mail,
                            &ack.account,
                            ack.device,
                            &ack.sender,
                            &ack.message_id,
                        )
                    };
                    let _ = reply.send(removed);
                }
                Job::Durable(reply) => waiters.push(reply),
                Job::Close(reply) => closing = Some(reply),
            }
        }
        if stored.is_empty() && waiters.is_empty() && closing.is_none() {
            continue;
        }
        let started = Instant::now();
        let result = core.db.flush().map(|_| ()).map_err(backend);
        metrics.record_flush(started.elapsed(), stored.len() + waiters.len());
        if let Err(error) = &result {
            tracing::error!(%error, "flush failed; writers get an internal error");
        }
        for (reply, outcome) in stored.drain(..) {
            let _ = reply.send(match (&result, outcome) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), outcome) => outcome,
            });
        }
        for reply in waiters.drain(..) {
            let _ = reply.send(result.clone());
        }
        if let Some(reply) = closing.take() {
            // Release this thread's handle before answering, so the caller
            // can reopen the directory as soon as it drops its own.
            drop(core);
            let _ = reply.send(result);
            return;
        }
    }
}

/// How long the writer waits for more jobs before a flush. Each sled
/// flush costs several write+sync system calls whatever it carries, so a
/// short wait buys much larger groups under load, for at most this much
/// added latency.
const GROUP_LINGER: std::time::Duration = std::time::Duration::from_micros(1000);

/// Most jobs taken into one group commit.
const MAX_GROUP: usize = 4096;

impl Committer {
    fn start(core: Core, metrics: Arc<Metrics>) -> StorageResult<Self> {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        // A plain thread: sled's writes and fsyncs block, and must not
        // stall the async workers that read and write sockets.
        std::thread::Builder::new()
            .name("relay-writer".into())
            .spawn(move || write_loop(core, &metrics, &rx))
            .map_err(|e| StorageError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    async fn call<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<StorageResult<T>>) -> Job,
    ) -> StorageResult<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Wait until everything written before this call is on disk.
    async fn durable(&self) -> StorageResult<()> {
        self.call(Job::Durable).await
    }
}

/// What the writer task needs of the store.
#[derive(Clone, Debug)]
struct Core {
    db: Db,
    mail: Tree,
    /// Serialises read-check-write sequences on `mail` (duplicate check,
    /// queue counters) between the writer and expiry. Held for
    /// microseconds, never across an `.await`; every write itself is one
    /// atomic sled batch.
    mail_lock: Arc<Mutex<()>>,
}

/// sled-backed [`Storage`]. Cheap to clone (all handles are shared).
#[derive(Clone, Debug)]
pub struct SledStore {
    accounts: Tree,
    prekeys: Tree,
    mail: Tree,
    blocks: Tree,
    phones: Tree,
    committer: Committer,
    core: Core,
}

fn backend(e: ::sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

fn be_u64(bytes: &[u8], at: usize, what: &'static str) -> StorageResult<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(StorageError::Corrupt(what))
}

fn be_u32(bytes: &[u8], at: usize, what: &'static str) -> StorageResult<u32> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(StorageError::Corrupt(what))
}

fn device_key(tag: u8, account: &AccountId, device: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.push(tag);
    k.extend_from_slice(account.as_bytes());
    k.extend_from_slice(&device.to_be_bytes());
    k
}

fn q_key(account: &AccountId, device: u32, seq: u64) -> Vec<u8> {
    let mut k = device_key(b'q', account, device);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn i_key(account: &AccountId, device: u32, sender: &AccountId, id: &[u8]) -> Vec<u8> {
    let mut k = device_key(b'i', account, device);
    k.extend_from_slice(sender.as_bytes());
    k.extend_from_slice(id);
    k
}

fn x_key(expires: u64, seq: u64, account: &AccountId, device: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(37);
    k.push(b'x');
    k.extend_from_slice(&expires.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(account.as_bytes());
    k.extend_from_slice(&device.to_be_bytes());
    k
}

fn s_suffix(sender: &AccountId, recipient: &AccountId, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    k.extend_from_slice(sender.as_bytes());
    k.extend_from_slice(recipient.as_bytes());
    k.extend_from_slice(id);
    k
}

fn tagged(tag: u8, rest: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![tag];
    for part in rest {
        k.extend_from_slice(part);
    }
    k
}

fn block_key(blocker: &AccountId, blocked: &AccountId) -> Vec<u8> {
    let mut k = blocker.to_vec();
    k.extend_from_slice(blocked.as_bytes());
    k
}

fn prekey_prefix(account: &AccountId, device: u32, kind: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.extend_from_slice(account.as_bytes());
    k.extend_from_slice(&device.to_be_bytes());
    k.push(kind);
    k
}

fn account_from(bytes: &[u8], what: &'static str) -> StorageResult<AccountId> {
    AccountId::from_bytes(bytes).map_err(|_| StorageError::Corrupt(what))
}

fn decode_list(bytes: &[u8]) -> StorageResult<SignedDeviceList> {
    SignedDeviceList::decode(bytes).map_err(|_| StorageError::Corrupt("accounts"))
}

/// Remove one queued envelope (ack, expiry, removed device). The caller
/// holds the mail write lock. Returns the `i` record's value if the
/// envelope was queued.
fn remove_queued(
    mail: &Tree,
    account: &AccountId,
    device: u32,
    sender: &AccountId,
    id: &[u8],
) -> StorageResult<Option<IVec>> {
    let ik = i_key(account, device, sender, id);
    let Some(index) = mail.get(&ik).map_err(backend)? else {
        return Ok(None);
    };
    let seq = be_u64(&index, 0, "mail index")?;
    let expires = be_u64(&index, 8, "mail index")?;
    let mut batch = ::sled::Batch::default();
    batch.remove(ik);
    batch.remove(q_key(account, device, seq));
    batch.remove(x_key(expires, seq, account, device));
    let ck = device_key(b'c', account, device);
    let count = match mail.get(&ck).map_err(backend)? {
        Some(v) => be_u64(&v, 0, "mail count")?,
        None => 0,
    };
    if count <= 1 {
        batch.remove(ck);
    } else {
        batch.insert(ck, &(count - 1).to_be_bytes());
    }
    mail.apply_batch(batch).map_err(backend)?;
    Ok(Some(index))
}

impl Core {
    fn enqueue(&self, message: &NewMessage, max_queue: u64) -> StorageResult<Enqueued> {
        let NewMessage {
            sender,
            sender_device,
            recipient,
            message_id,
            server_timestamp_ms,
            expires_at_ms,
            copies,
        } = message;
        let suffix = s_suffix(sender, recipient, message_id);
        let s_key = tagged(b's', &[&suffix]);
        let z_key = tagged(b'z', &[&expires_at_ms.to_be_bytes(), &suffix]);
        let mut x_value = Vec::with_capacity(32);
        x_value.extend_from_slice(sender.as_bytes());
        x_value.extend_from_slice(message_id);
        let _guard = self.lock_mail();
        self.enqueue_locked(
            &s_key,
            &z_key,
            &x_value,
            *sender_device,
            recipient,
            sender,
            message_id,
            *server_timestamp_ms,
            *expires_at_ms,
            copies,
            max_queue,
        )
    }

    /// The duplicate check, queue limits and the atomic batch of one
    /// enqueue. The caller holds the mail lock.
    #[allow(clippy::too_many_arguments)]
    fn enqueue_locked(
        &self,
        s_key: &[u8],
        z_key: &[u8],
        x_value: &[u8],
        sender_device: u32,
        recipient: &AccountId,
        sender: &AccountId,
        message_id: &[u8; MESSAGE_ID_LEN],
        server_timestamp_ms: u64,
        expires_at_ms: u64,
        copies: &[(u32, Vec<u8>)],
        max_queue: u64,
    ) -> StorageResult<Enqueued> {
        if let Some(existing) = self.mail.get(s_key).map_err(backend)? {
            return Ok(Enqueued::Duplicate {
                server_timestamp_ms: be_u64(&existing, 0, "mail sent")?,
            });
        }
        let mut counts = Vec::with_capacity(copies.len());
        for (device, _) in copies {
            let ck = device_key(b'c', recipient, *device);
            let count = match self.mail.get(&ck).map_err(backend)? {
                Some(v) => be_u64(&v, 0, "mail count")?,
                None => 0,
            };
            if count >= max_queue {
                return Ok(Enqueued::QueueFull { device: *device });
            }
            counts.push((ck, count));
        }
        let mut batch = ::sled::Batch::default();
        for ((device, envelope), (ck, count)) in copies.iter().zip(counts) {
            let seq = self.db.generate_id().map_err(backend)?;
            let mut value = Vec::with_capacity(8 + envelope.len());
            value.extend_from_slice(&expires_at_ms.to_be_bytes());
            value.extend_from_slice(envelope);
            batch.insert(q_key(recipient, *device, seq), value);
            let mut index = Vec::with_capacity(20);
            index.extend_from_slice(&seq.to_be_bytes());
            index.extend_from_slice(&expires_at_ms.to_be_bytes());
            index.extend_from_slice(&sender_device.to_be_bytes());
            batch.insert(i_key(recipient, *device, sender, message_id), index);
            batch.insert(x_key(expires_at_ms, seq, recipient, *device), x_value);
            batch.insert(ck, &(count + 1).to_be_bytes());
        }
        let mut sent = Vec::with_capacity(16);
        sent.extend_from_slice(&server_timestamp_ms.to_be_bytes());
        sent.extend_from_slice(&expires_at_ms.to_be_bytes());
        batch.insert(s_key, sent);
        batch.insert(z_key, &[] as &[u8]);
        self.mail.apply_batch(batch).map_err(backend)?;
        Ok(Enqueued::Stored)
    }

    fn lock_mail(&self) -> MutexGuard<'_, ()> {
        self.mail_lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SledStore {
    /// Open (or create) the store in `dir`. Must run inside a tokio runtime
    /// (it starts the group-commit task).
    pub fn open(dir: &Path, cache_capacity: u64, metrics: Arc<Metrics>) -> StorageResult<Self> {
        let db = ::sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity)
            .mode(::sled::Mode::HighThroughput)
            .open()
            .map_err(backend)?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        let mail = tree("mail")?;
        let core = Core {
            db: db.clone(),
            mail: mail.clone(),
            mail_lock: Arc::new(Mutex::new(())),
        };
        Ok(Self {
            accounts: tree("accounts")?,
            prekeys: tree("prekeys")?,
            mail,
            blocks: tree("blocks")?,
            phones: tree("phones")?,
            committer: Committer::start(core.clone(), metrics)?,
            core,
        })
    }

    fn lock_mail(&self) -> MutexGuard<'_, ()> {
        self.core.lock_mail()
    }

    fn count_one_time(&self, account: &AccountId, device: u32) -> u32 {
        self.prekeys
            .scan_prefix(prekey_prefix(account, device, 1))
            .keys()
            .filter(|k| k.is_ok())
            .count() as u32
    }
}

impl Storage for SledStore {
    async fn create_account(
        &self,
        list: &SignedDeviceList,
    ) -> StorageResult<Option<SignedDeviceList>> {
        let encoded = list.encode_to_vec();
        let previous = self
            .accounts
            .compare_and_swap(&list.account_id, None as Option<&[u8]>, Some(encoded))
            .map_err(backend)?;
        match previous {
            Ok(()) => {
                self.committer.durable().await?;
                Ok(None)
            }
            Err(cas) => match cas.current {
                Some(current) => Ok(Some(decode_list(&current)?)),
                None => Err(StorageError::Corrupt("accounts")),
            },
        }
    }

    async fn device_list(&self, account: AccountId) -> StorageResult<Option<SignedDeviceList>> {
        match self.accounts.get(account.as_bytes()).map_err(backend)? {
            Some(bytes) => Ok(Some(decode_list(&bytes)?)),
            None => Ok(None),
        }
    }

    async fn replace_device_list(
        &self,
        account: AccountId,
        list: &SignedDeviceList,
    ) -> StorageResult<ListUpdate> {
        let encoded = list.encode_to_vec();
        loop {
            let Some(current) = self.accounts.get(account.as_bytes()).map_err(backend)? else {
                return Ok(ListUpdate::UnknownAccount);
            };
            let have = decode_list(&current)?.version;
            if list.version <= have {
                return Ok(ListUpdate::Stale { have });
            }
            let swapped = self
                .accounts
                .compare_and_swap(account.as_bytes(), Some(current), Some(encoded.clone()))
                .map_err(backend)?;
            if swapped.is_ok() {
                self.committer.durable().await?;
                return Ok(ListUpdate::Stored);
            }
        }
    }

    async fn store_prekeys(
        &self,
        account: AccountId,
        device: u32,
        signed: Option<SignedPreKey>,
        one_time: Vec<OneTimePreKey>,
        max: u32,
    ) -> StorageResult<Result<u32, u32>> {
        let have = self.count_one_time(&account, device);
        let mut fresh = 0u32;
        for key in &one_time {
            let mut k = prekey_prefix(&account, device, 1);
            k.extend_from_slice(&key.key_id.to_be_bytes());
            if !self.prekeys.contains_key(k).map_err(backend)? {
                fresh += 1;
            }
        }
        if have.saturating_add(fresh) > max {
            return Ok(Err(have));
        }
        let mut batch = ::sled::Batch::default();
        if let Some(spk) = signed {
            batch.insert(prekey_prefix(&account, device, 0), spk.encode_to_vec());
        }
        for key in one_time {
            let mut k = prekey_prefix(&account, device, 1);
            k.extend_from_slice(&key.key_id.to_be_bytes());
            batch.insert(k, key.public_key);
        }
        self.prekeys.apply_batch(batch).map_err(backend)?;
        self.committer.durable().await?;
        Ok(Ok(have + fresh))
    }

    async fn take_prekeys(&self, account: AccountId, device: u32) -> StorageResult<TakenPreKeys> {
        let signed = match self
            .prekeys
            .get(prekey_prefix(&account, device, 0))
            .map_err(backend)?
        {
            Some(bytes) => {
                Some(SignedPreKey::decode(&*bytes).map_err(|_| StorageError::Corrupt("prekeys"))?)
            }
            None => None,
        };
        let prefix = prekey_prefix(&account, device, 1);
        let mut one_time = None;
        // Compare-and-swap the first key away; a concurrent taker that wins
        // the race makes us retry with the next key.
        while let Some(entry) = self.prekeys.scan_prefix(&prefix).next() {
            let (key, value) = entry.map_err(backend)?;
            let taken = self
                .prekeys
                .compare_and_swap(&key, Some(&value), None as Option<&[u8]>)
                .map_err(backend)?;
            if taken.is_ok() {
                let key_id = be_u32(&key, prefix.len(), "prekeys")?;
                one_time = Some(OneTimePreKey {
                    key_id,
                    public_key: value.to_vec(),
                });
                self.committer.durable().await?;
                break;
            }
        }
        Ok(TakenPreKeys {
            signed,
            one_time,
            remaining: self.count_one_time(&account, device),
        })
    }

    async fn one_time_prekey_count(&self, account: AccountId, device: u32) -> StorageResult<u32> {
        Ok(self.count_one_time(&account, device))
    }

    async fn enqueue(&self, message: NewMessage, max_queue: u64) -> StorageResult<Enqueued> {
        // The writer applies it and replies after the group's flush (a
        // duplicate too: it is acked only once its original is durable).
        self.committer
            .call(|reply| Job::Enqueue(Box::new(message), max_queue, reply))
            .await
    }

    async fn pending(
        &self,
        account: AccountId,
        device: u32,
        after: Option<u64>,
        limit: usize,
        now_ms: u64,
    ) -> StorageResult<Vec<QueuedEnvelope>> {
        let start = match after {
            Some(seq) => match seq.checked_add(1) {
                Some(next) => q_key(&account, device, next),
                None => return Ok(Vec::new()),
            },
            None => q_key(&account, device, 0),
        };
        let end = q_key(&account, device, u64::MAX);
        let prefix_len = 1 + 16 + 4;
        let mut out = Vec::new();
        for entry in self.mail.range(start..=end) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(backend)?;
            let cursor = be_u64(&key, prefix_len, "mail queue")?;
            let expires = be_u64(&value, 0, "mail queue")?;
            if expires <= now_ms {
                continue;
            }
            out.push(QueuedEnvelope {
                cursor,
                envelope: value[8..].to_vec(),
            });
        }
        Ok(out)
    }

    async fn queued_count(&self, account: AccountId, device: u32) -> StorageResult<u64> {
        match self
            .mail
            .get(device_key(b'c', &account, device))
            .map_err(backend)?
        {
            Some(v) => be_u64(&v, 0, "mail count"),
            None => Ok(0),
        }
    }

    async fn acknowledge(
        &self,
        account: AccountId,
        device: u32,
        sender: AccountId,
        message_id: [u8; MESSAGE_ID_LEN],
    ) -> StorageResult<Option<u32>> {
        let removed = self
            .committer
            .call(|reply| {
                Job::Ack(
                    AckJob {
                        account,
                        device,
                        sender,
                        message_id,
                    },
                    reply,
                )
            })
            .await?;
        // Not waited on for durability: see `Storage::acknowledge`.
        match removed {
            Some(index) => Ok(Some(be_u32(&index, 16, "mail index")?)),
            None => Ok(None),
        }
    }

    async fn expire(&self, now_ms: u64) -> StorageResult<u64> {
        let upper = tagged(b'x', &[&now_ms.saturating_add(1).to_be_bytes()]);
        let mut expired = 0u64;
        let due: Vec<_> = self
            .mail
            .range(b"x".to_vec()..upper)
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        for (key, value) in due {
            // x: tag, expires (8), seq (8), account (16), device (4).
            let account = account_from(key.get(17..33).unwrap_or_default(), "mail expiry")?;
            let device = be_u32(&key, 33, "mail expiry")?;
            let sender = account_from(value.get(..16).unwrap_or_default(), "mail expiry")?;
            let id = value.get(16..).unwrap_or_default().to_vec();
            let removed = {
                let _guard = self.lock_mail();
                let removed = remove_queued(&self.mail, &account, device, &sender, &id)?;
                // An orphan expiry record (should not happen) goes too.
                self.mail.remove(&key).map_err(backend)?;
                removed
            };
            if removed.is_some() {
                expired += 1;
            }
        }
        let upper = tagged(b'z', &[&now_ms.saturating_add(1).to_be_bytes()]);
        let mut batch = ::sled::Batch::default();
        for entry in self.mail.range(b"z".to_vec()..upper) {
            let (key, _) = entry.map_err(backend)?;
            batch.remove(key.clone());
            batch.remove(tagged(b's', &[key.get(9..).unwrap_or_default()]));
        }
        self.mail.apply_batch(batch).map_err(backend)?;
        self.committer.durable().await?;
        Ok(expired)
    }

    async fn remove_device(&self, account: AccountId, device: u32) -> StorageResult<u64> {
        let index_prefix = device_key(b'i', &account, device);
        let mut removed = 0;
        for entry in self.mail.scan_prefix(&index_prefix) {
            let (key, _) = entry.map_err(backend)?;
            let sender = account_from(
                key.get(index_prefix.len()..index_prefix.len() + 16)
                    .unwrap_or_default(),
                "mail index",
            )?;
            let id = key
                .get(index_prefix.len() + 16..)
                .unwrap_or_default()
                .to_vec();
            let gone = {
                let _guard = self.lock_mail();
                remove_queued(&self.mail, &account, device, &sender, &id)?
            };
            if gone.is_some() {
                removed += 1;
            }
        }
        let mut batch = ::sled::Batch::default();
        let mut prefix = account.to_vec();
        prefix.extend_from_slice(&device.to_be_bytes());
        for key in self.prekeys.scan_prefix(&prefix).keys() {
            batch.remove(key.map_err(backend)?);
        }
        self.prekeys.apply_batch(batch).map_err(backend)?;
        self.committer.durable().await?;
        Ok(removed)
    }

    async fn set_blocked(
        &self,
        blocker: AccountId,
        blocked: AccountId,
        on: bool,
    ) -> StorageResult<()> {
        let key = block_key(&blocker, &blocked);
        if on {
            self.blocks.insert(key, IVec::default()).map_err(backend)?;
        } else {
            self.blocks.remove(key).map_err(backend)?;
        }
        self.committer.durable().await
    }

    async fn is_blocked(&self, blocker: AccountId, blocked: AccountId) -> StorageResult<bool> {
        let key = block_key(&blocker, &blocked);
        self.blocks.contains_key(key).map_err(backend)
    }

    async fn bind_phone(
        &self,
        phone: &str,
        account: AccountId,
        discoverable: bool,
    ) -> StorageResult<()> {
        let mut value = account.to_vec();
        value.push(u8::from(discoverable));
        self.phones
            .insert(phone.as_bytes(), value)
            .map_err(backend)?;
        self.committer.durable().await
    }

    async fn lookup_phone(&self, phone: &str) -> StorageResult<Option<(AccountId, bool)>> {
        match self.phones.get(phone.as_bytes()).map_err(backend)? {
            Some(v) => {
                let account = account_from(v.get(..16).unwrap_or_default(), "phones")?;
                Ok(Some((account, v.get(16) == Some(&1))))
            }
            None => Ok(None),
        }
    }

    async fn total_queued(&self) -> StorageResult<u64> {
        let mut total = 0;
        for entry in self.mail.scan_prefix(b"c") {
            let (_, v) = entry.map_err(backend)?;
            total += be_u64(&v, 0, "mail count")?;
        }
        Ok(total)
    }

    async fn flush(&self) -> StorageResult<()> {
        self.committer.durable().await
    }

    async fn close(&self) -> StorageResult<()> {
        self.committer.call(Job::Close).await
    }
}
