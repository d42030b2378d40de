//! The embedded default backend: sled 0.34 for the directory and keys,
//! and a [`MailLog`] (an append-only log with group commit) for the mail
//! queues and the `Delivered` receipts kept for sending devices.
//!
//! Mail is the hot path: a send is one append and, shared with every other
//! send of its group, one `write` and one `fdatasync`; sled's per-key
//! trees cost several times that (see docs/BENCHMARKS.md). Everything else
//! is small and read often, which sled does well: those records are written
//! in place and made durable by a `Durable` job on one flusher thread,
//! which groups concurrent callers into one sled flush.
//!
//! Trees and key layouts (integers big-endian so keys sort):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `accounts` | account (16) | `SignedDeviceList` protobuf |
//! | `account_records` | account (16) | `relay.AccountRecord` protobuf |
//! | `prekeys` | account, device (4), 0 | `SignedPreKey` protobuf |
//! | `prekeys` | account, device, 1, key id (4) | public key (32) |
//! | `receipts` | sender account, sender device, id (8) | expires (8), `Delivered` server frame (written by relays before receipts moved to the mail log; moved there at open) |
//! | `blocks` | blocker (16), blocked (16) | (empty) |
//! | `phones` | E.164 text | account (16), discoverable (1) |
//! | `names` | `n`, business name text | account (16) |
//! | `names` | `a`, account (16) | business name text |
//! | `unauthenticated` | created at ms (8), account (16) | (empty) |
//! | `expired_accounts` | account (16) | expired at ms (8), device ids (4 each) |
//! | `retired_accounts` | account (16) | expired at ms (8) |
//!
//! An account is in `unauthenticated` from its registration until its
//! first successful authentication; `expire_unauthenticated` deletes those
//! registered too long ago, and notes each in `expired_accounts` with its
//! devices, so that mail a send in flight queued for it after its queues
//! were dropped is dropped too (at the next pass, or at start, where it
//! would otherwise look like mail for an account sled lost). The id is
//! also kept in `retired_accounts`, for good: registration refuses it
//! (in the same transaction that creates an account), so nothing naming
//! the expired account passes to a new one.
//!
//! Registration writes `accounts` and `account_records` in one sled
//! transaction. Accounts registered before records existed are given one
//! at the first open by this version (`give_records_to_older_accounts`,
//! noted done in `meta`, key `older_accounts_given_records`), or when
//! they prove a phone number. A name claim writes both
//! `names` records in one sled transaction (serializable: of two
//! concurrent claimers of one name, or two names claimed by one account,
//! exactly one commits).
//!
//! The mail log lives in the `mail-log` directory inside sled's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::sled::Transactional;
use ::sled::transaction::{ConflictableTransactionError, TransactionError};
use ::sled::{Batch, Db, IVec, Tree};
use comptoir_protocol::proto::relay::AccountRecord as EncodedRecord;
use comptoir_protocol::proto::wire;
use comptoir_protocol::{AccountId, AccountKey, DeviceList, IdentityKey};
use prost::Message;
use tokio::sync::oneshot;

use super::dir_lock::DirLock;
use super::mail_log::ReceiptRef;
use super::mail_log::{LogOptions, MailLog};
use super::{
    AccountRecord, AckOf, Acked, Created, Cursor, Directory, Enqueued, ExpiredAccounts, Keys, Kind,
    Lifecycle, ListUpdate, MESSAGE_ID_LEN, Mailbox, NameClaim, NewMessage, OneTimePreKeyRecord,
    PreKeyPublic, QueuedMail, QueuedReceipt, SignedPreKeyRecord, StorageError, StorageResult,
    StoredDeviceList, TakenPreKeys,
};

/// Ids noted in `expired_accounts` (by a version from before
/// `retired_accounts`, within the note's hour) are retired too, so none
/// of them is registered again; runs at every open, and finds nothing to
/// do once they are.
fn retire_expired_before_retiring(
    expired_accounts: &Tree,
    retired_accounts: &Tree,
    db: &::sled::Db,
) -> StorageResult<()> {
    let mut retired = 0;
    for entry in expired_accounts.iter() {
        let (account, note) = entry.map_err(backend)?;
        if retired_accounts.contains_key(&account).map_err(backend)? {
            continue;
        }
        let expired_at = note.get(..8).unwrap_or(&[0; 8]);
        retired_accounts
            .insert(&account, expired_at)
            .map_err(backend)?;
        retired += 1;
    }
    if retired > 0 {
        db.flush().map_err(backend)?;
        tracing::info!(
            retired,
            "ids of accounts expired before retiring them are retired"
        );
    }
    Ok(())
}

/// How long an expired account's note is kept: past it no send that read
/// its device list before the expiry can still be on its way.
const EXPIRED_NOTE_MS: u64 = 3_600_000;
use crate::metrics::Metrics;

/// How long the flusher waits for more callers before a sled flush (each
/// costs several write and sync system calls whatever it carries).
const FLUSH_LINGER: Duration = Duration::from_micros(1000);

/// Work for the flusher thread.
enum Job {
    /// Reply once everything written before is durable.
    Durable(oneshot::Sender<StorageResult<()>>),
    /// Flush, release the database and stop the flusher.
    Close(oneshot::Sender<StorageResult<()>>),
}

/// Hands jobs to the flusher thread.
#[derive(Clone, Debug)]
pub(super) struct Committer {
    jobs: std_mpsc::Sender<Job>,
}

impl Committer {
    fn start(db: Db, metrics: Arc<Metrics>) -> StorageResult<Self> {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        // A plain thread: sled's fsyncs block, and must not stall the
        // async workers that read and write sockets.
        std::thread::Builder::new()
            .name("relay-sled-flusher".into())
            .spawn(move || flush_loop(db, &metrics, &rx))
            .map_err(|e| StorageError::Backend(format!("cannot start the flusher thread: {e}")))?;
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
    pub(super) async fn durable(&self) -> StorageResult<()> {
        self.call(Job::Durable).await
    }
}

fn flush_loop(db: Db, metrics: &Metrics, rx: &std_mpsc::Receiver<Job>) {
    let mut waiters: Vec<oneshot::Sender<StorageResult<()>>> = Vec::new();
    let mut closing = None;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        std::thread::sleep(FLUSH_LINGER);
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        for job in jobs {
            match job {
                Job::Durable(reply) => waiters.push(reply),
                Job::Close(reply) => closing = Some(reply),
            }
        }
        let started = Instant::now();
        let result = db.flush().map(|_| ()).map_err(backend);
        metrics.record_flush(started.elapsed(), waiters.len());
        match &result {
            Err(error) => {
                tracing::error!(%error, "sled flush failed; writers get an internal error");
                metrics.set_storage_failed();
            }
            // Flushing again after a failure: healthy again.
            Ok(()) => metrics.set_storage_recovered(),
        }
        for reply in waiters.drain(..) {
            let _ = reply.send(result.clone());
        }
        if let Some(reply) = closing.take() {
            // Release this thread's handle before answering, so the caller
            // can reopen the directory as soon as it drops its own.
            drop(db);
            let _ = reply.send(result);
            return;
        }
    }
}

/// Parsed device lists kept at most; past it the memo starts over.
const PARSED_LISTS: usize = 100_000;

/// The parse of each account's device list, keyed by the exact bytes it
/// was parsed from. Not a cache of state: every read still goes to sled,
/// and the memo only answers when the bytes sled returned are the ones it
/// parsed, so it can never serve a list sled no longer holds, whoever
/// wrote sled and whatever raced (parsing a list checks every key on its
/// curve, which costs more than the read).
#[derive(Debug, Default)]
struct ParsedLists(Mutex<HashMap<AccountId, Arc<StoredDeviceList>>>);

impl ParsedLists {
    /// The parse of `bytes`, the list sled holds for `account` now.
    fn parse(&self, account: AccountId, bytes: &[u8]) -> StorageResult<Arc<StoredDeviceList>> {
        let lock = || self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = lock().get(&account)
            && list.signed == bytes
        {
            return Ok(list.clone());
        }
        let list = Arc::new(decode_list(bytes)?);
        let mut memo = lock();
        if memo.len() >= PARSED_LISTS {
            memo.clear();
        }
        memo.insert(account, list.clone());
        Ok(list)
    }
}

/// Move the receipts an older relay kept in sled's `receipts` tree into
/// the mail log (each to its sending device's receipt queue, with its
/// expiry), make them durable there, then delete them from sled. A crash
/// in between moves them again at the next start; the log keeps one
/// receipt per acked copy whatever it replays. A value that does not
/// decode as a `Delivered` receipt is left in sled, with a warning.
fn move_legacy_receipts(receipts: &Tree, mail: &MailLog, db: &Db) -> StorageResult<()> {
    use comptoir_protocol::proto::wire::server_frame::Body;
    let mut moved = Vec::new();
    let mut keys = Vec::new();
    let mut undecodable = 0usize;
    for entry in receipts.iter() {
        let (key, value) = entry.map_err(backend)?;
        let decoded = (|| {
            let account = account_from(key.get(..16)?, "receipts").ok()?;
            let device = be_u32(&key, 16, "receipts").ok()?;
            let expires = be_u64(&value, 0, "receipts").ok()?;
            let frame = comptoir_protocol::frame::decode_server(value.get(8..)?).ok()?;
            let Some(Body::Delivered(d)) = frame.body else {
                return None;
            };
            let receipt = ReceiptRef {
                recipient: AccountId::from_bytes(&d.recipient_account).ok()?,
                recipient_device: d.recipient_device,
                message_id: d.message_id.as_slice().try_into().ok()?,
                expires,
                accept_id: super::mail_log::record::LEGACY_ACCEPT_ID,
            };
            Some((account, device, receipt))
        })();
        match decoded {
            Some(receipt) => {
                moved.push(receipt);
                keys.push(key);
            }
            None => undecodable += 1,
        }
    }
    if undecodable > 0 {
        tracing::warn!(
            count = undecodable,
            "receipts kept by an older relay that do not decode are left in the directory store's `receipts` tree"
        );
    }
    if moved.is_empty() {
        return Ok(());
    }
    mail.import_receipts(&moved)?;
    mail.flush_blocking()?;
    let mut batch = Batch::default();
    for key in keys {
        batch.remove(key);
    }
    receipts.apply_batch(batch).map_err(backend)?;
    db.flush().map_err(backend)?;
    tracing::info!(
        count = moved.len(),
        "moved the delivery receipts kept by an older relay into the mail log"
    );
    Ok(())
}

/// The record an account registered before records existed is given: a
/// business if it holds a business name (names were business names from
/// the start, and only a business may hold one now), otherwise a
/// customer; created at time 0 (as a missing record was read).
fn older_account_record(holds_name: bool) -> AccountRecord {
    AccountRecord {
        kind: if holds_name {
            Kind::Business
        } else {
            Kind::Customer
        },
        created_at_ms: 0,
        ..AccountRecord::default()
    }
}

/// The `meta` key set once [`give_records_to_older_accounts`] has run.
const OLDER_ACCOUNTS_DONE_KEY: &[u8] = b"older_accounts_given_records";

/// Give a record to every account registered before account records
/// existed (relays older than typed accounts; see
/// [`older_account_record`]), with the phone number bound to it (the
/// first in E.164 order, if an older relay left it several). Without one,
/// a number it proves would not be noted in its record, and a name it
/// holds would resolve to an account that reads as a customer. Then the
/// phone directory and the records are made to agree, as older relays did
/// not always leave them: an entry whose account is gone, or whose
/// account's record names another number or none (an account that
/// verified a second number kept the first), is dropped; a record naming
/// a number the directory gives to another account, or to none, no longer
/// names it. Runs once (a `meta` key notes it is done); a crash before the
/// note runs it again, to the same result. (An account an older relay
/// registers later, on this data directory, gets its record when it
/// proves a number: see `bind_phone`.)
fn give_records_to_older_accounts(
    accounts: &Tree,
    records: &Tree,
    phones: &Tree,
    names: &Tree,
    meta: &Tree,
    db: &Db,
) -> StorageResult<()> {
    if meta
        .contains_key(OLDER_ACCOUNTS_DONE_KEY)
        .map_err(backend)?
    {
        return Ok(());
    }
    let mut missing = Vec::new();
    for key in accounts.iter().keys() {
        let key = key.map_err(backend)?;
        if !records.contains_key(&key).map_err(backend)? {
            missing.push(account_from(&key, "accounts")?);
        }
    }
    let mut numbers: HashMap<AccountId, (String, bool)> = HashMap::new();
    if !missing.is_empty() {
        for entry in phones.iter() {
            let (phone, value) = entry.map_err(backend)?;
            // An entry that does not decode is damage of its own: it names
            // no account to give a number to.
            if let (Ok((account, discoverable)), Ok(phone)) =
                (decode_phone(&value), std::str::from_utf8(&phone))
            {
                numbers
                    .entry(account)
                    .or_insert_with(|| (phone.to_owned(), discoverable));
            }
        }
    }
    let mut batch = Batch::default();
    for account in &missing {
        let business = names
            .contains_key(tagged(b'a', &[account.as_bytes()]))
            .map_err(backend)?;
        if business {
            tracing::info!(%account, "an account registered by an older relay holds a business name: recorded as a business");
        }
        let (phone_number, discoverable) = numbers.remove(account).unwrap_or_default();
        let record = AccountRecord {
            phone_number,
            discoverable,
            ..older_account_record(business)
        };
        batch.insert(account.as_bytes().as_slice(), encode_record(&record));
    }
    records.apply_batch(batch).map_err(backend)?;
    let (dropped, unbound) = make_phones_and_records_agree(records, phones)?;
    // Durable before the note that it is done.
    db.flush().map_err(backend)?;
    meta.insert(OLDER_ACCOUNTS_DONE_KEY, &[1u8][..])
        .map_err(backend)?;
    if !missing.is_empty() || dropped > 0 || unbound > 0 {
        tracing::info!(
            accounts = missing.len(),
            numbers_dropped = dropped,
            records_unbound = unbound,
            "gave account records to accounts registered by an older relay, and made the phone directory and the records agree"
        );
    }
    Ok(())
}

/// Drop the `phones` entries their account's record does not name (the
/// account gone, or its record naming another number or none), and clear
/// the records naming a number `phones` does not give them; returns how
/// many of each (see [`give_records_to_older_accounts`]).
fn make_phones_and_records_agree(records: &Tree, phones: &Tree) -> StorageResult<(usize, usize)> {
    let mut stale = Batch::default();
    let mut dropped = 0usize;
    for entry in phones.iter() {
        let (phone, value) = entry.map_err(backend)?;
        let Ok((holder, _)) = decode_phone(&value) else {
            continue;
        };
        let keep = match records.get(holder.as_bytes()).map_err(backend)? {
            None => false,
            Some(bytes) => match EncodedRecord::decode(bytes.as_ref()) {
                Ok(record) => record.phone_number.as_bytes() == &phone[..],
                // A record that does not decode is damage of its own.
                Err(_) => true,
            },
        };
        if !keep {
            stale.remove(phone);
            dropped += 1;
        }
    }
    phones.apply_batch(stale).map_err(backend)?;
    // The records naming a number the directory does not give them.
    let mut cleared = Batch::default();
    let mut unbound = 0usize;
    for entry in records.iter() {
        let (account, bytes) = entry.map_err(backend)?;
        let Ok(mut record) = EncodedRecord::decode(bytes.as_ref()) else {
            continue;
        };
        if record.phone_number.is_empty() {
            continue;
        }
        let entry = phones
            .get(record.phone_number.as_bytes())
            .map_err(backend)?;
        let holds = entry.is_some_and(|v| {
            decode_phone(&v).is_ok_and(|(holder, _)| holder.as_bytes()[..] == account[..])
        });
        if !holds {
            record.phone_number.clear();
            record.discoverable = false;
            cleared.insert(account, record.encode_to_vec());
            unbound += 1;
        }
    }
    records.apply_batch(cleared).map_err(backend)?;
    Ok((dropped, unbound))
}

/// The embedded backend: every role ([`Directory`], [`Keys`], [`Mailbox`], [`Lifecycle`]). Cheap to clone (all handles are shared).
#[derive(Clone, Debug)]
pub struct SledStore {
    /// Parsed device lists, keyed by their stored bytes (every read still
    /// goes to sled: no state is cached).
    parsed_lists: Arc<ParsedLists>,
    /// Decoded template records, keyed by their stored bytes (the same:
    /// see `storage::templates`).
    pub(super) parsed_templates: Arc<super::templates::ParsedTemplates>,
    /// Held while a submission counts its business's templates and adds
    /// one, so concurrent submissions cannot pass the limit together.
    pub(super) template_submissions: Arc<std::sync::Mutex<()>>,
    accounts: Tree,
    records: Tree,
    prekeys: Tree,
    pub(super) mail: MailLog,
    blocks: Tree,
    phones: Tree,
    names: Tree,
    unauthenticated: Tree,
    expired_accounts: Tree,
    /// Ids of expired accounts, never registered again.
    retired_accounts: Tree,
    /// Relay-wide values: the clock's mark ([`CLOCK_MARK_KEY`]), the
    /// rate cards ([`RATE_CARD_PREFIX`]) and when bill heads were last
    /// signed (see `storage::ledger_heads`).
    meta: Tree,
    /// Submitted templates and the operator's decisions, by template id
    /// (see `storage::templates`).
    pub(super) templates: Tree,
    /// The live (pending or approved) templates of each business: key
    /// business (16) || template id (32), empty value (see
    /// `storage::templates`).
    pub(super) live_templates: Tree,
    /// Business profiles, certificates and revocations, by account (see
    /// `storage::businesses`).
    pub(super) businesses: Tree,
    /// Why customers blocked each business (see `storage::businesses`).
    pub(super) block_reasons: Tree,
    /// Consent requests by number hash, inboxes, answers, daily counts
    /// (see `storage::consent_requests`).
    pub(super) consent_requests: Tree,
    /// Who wrote to whom, and new conversations per day (see
    /// `storage::first_contacts`).
    pub(super) first_contacts: Tree,
    /// Reports sealed to the operator (see `storage::reports`).
    pub(super) reports: Tree,
    /// Each business's messaging tier (see `storage::quality`).
    pub(super) tiers: Tree,
    /// Periodic heads of businesses' bills (see `storage::ledger_heads`).
    pub(super) bill_heads: Tree,
    /// Device lists accounts replaced (see `storage::superseded_lists`).
    pub(super) superseded_device_lists: Tree,
    pub(super) committer: Committer,
    /// Dropped last: the directory is free once every handle is gone.
    _dir_lock: Arc<DirLock>,
}

/// Key of the clock's persisted high-water mark in the `meta` tree.
const CLOCK_MARK_KEY: &[u8] = b"clock_mark_ms";
/// Prefix of the rate cards in the `meta` tree: each card's key is the
/// prefix and the time it took effect (u64 BE, so they scan in order),
/// its value the payload the operator signs (`RateCard::payload`).
const RATE_CARD_PREFIX: &[u8] = b"rate_card/";

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

fn tagged(tag: u8, rest: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![tag];
    for part in rest {
        k.extend_from_slice(part);
    }
    k
}

/// Drop the mail queued for the devices an `expired_accounts` note lists;
/// returns the envelopes dropped. Durable with the log's next group.
fn drop_queues(mail: &MailLog, account: AccountId, note: &[u8]) -> StorageResult<u64> {
    let devices = note
        .get(8..)
        .ok_or(StorageError::Corrupt("expired_accounts"))?;
    let mut dropped = 0;
    for id in devices.chunks_exact(4) {
        let device = be_u32(id, 0, "expired_accounts")?;
        if mail.queued_count(account, device) > 0 {
            dropped += mail.remove_device(account, device)?;
        }
    }
    Ok(dropped)
}

/// Key of an account in the `unauthenticated` tree.
fn unauthenticated_key(created_at_ms: u64, account: &AccountId) -> Vec<u8> {
    let mut key = created_at_ms.to_be_bytes().to_vec();
    key.extend_from_slice(account.as_bytes());
    key
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

pub(crate) fn account_from(bytes: &[u8], what: &'static str) -> StorageResult<AccountId> {
    AccountId::from_bytes(bytes).map_err(|_| StorageError::Corrupt(what))
}

/// Version of the account records this relay writes.
const ACCOUNT_RECORD_VERSION: u32 = 1;

/// An `account_records` value (a `relay.AccountRecord` protobuf).
fn decode_record(bytes: &[u8]) -> StorageResult<AccountRecord> {
    let encoded =
        EncodedRecord::decode(bytes).map_err(|_| StorageError::Corrupt("account_records"))?;
    Ok(record_from(encoded))
}

fn record_from(encoded: EncodedRecord) -> AccountRecord {
    AccountRecord {
        // Unspecified: a record from before kinds existed, a customer.
        kind: match encoded.kind() {
            wire::AccountKind::Business => Kind::Business,
            wire::AccountKind::Customer | wire::AccountKind::Unspecified => Kind::Customer,
        },
        created_at_ms: encoded.created_at_ms,
        phone_number: encoded.phone_number,
        discoverable: encoded.discoverable,
        business_certificate: encoded.business_certificate,
        quality_tier: encoded.quality_tier,
        daily_conversation_quota: encoded.daily_conversation_quota,
    }
}

fn encode_record(record: &AccountRecord) -> Vec<u8> {
    to_encoded(record).encode_to_vec()
}

/// `record` as its protobuf message.
fn to_encoded(record: &AccountRecord) -> EncodedRecord {
    let kind = match record.kind {
        Kind::Customer => wire::AccountKind::Customer,
        Kind::Business => wire::AccountKind::Business,
    };
    EncodedRecord {
        version: ACCOUNT_RECORD_VERSION,
        kind: kind as i32,
        created_at_ms: record.created_at_ms,
        phone_number: record.phone_number.clone(),
        discoverable: record.discoverable,
        business_certificate: record.business_certificate.clone(),
        quality_tier: record.quality_tier,
        daily_conversation_quota: record.daily_conversation_quota,
    }
}

/// A `phones` value: the account and whether it is discoverable.
pub(crate) fn decode_phone(v: &[u8]) -> StorageResult<(AccountId, bool)> {
    let account = account_from(v.get(..16).unwrap_or_default(), "phones")?;
    Ok((account, v.get(16) == Some(&1)))
}

/// An `accounts` value: the signed list as published, parsed (its
/// signature was checked before it was stored, and is not again).
pub(crate) fn decode_list(bytes: &[u8]) -> StorageResult<StoredDeviceList> {
    let corrupt = |_| StorageError::Corrupt("accounts");
    let signed =
        wire::SignedDeviceList::decode(bytes).map_err(|_| StorageError::Corrupt("accounts"))?;
    let mut devices = Vec::with_capacity(signed.devices.len());
    for entry in &signed.devices {
        devices.push((
            entry.device_id,
            IdentityKey::from_bytes(&entry.identity_key).map_err(corrupt)?,
        ));
    }
    let list = DeviceList {
        account_id: AccountId::from_bytes(&signed.account_id).map_err(corrupt)?,
        account_key: AccountKey::from_bytes(&signed.account_key).map_err(corrupt)?,
        version: signed.version,
        devices,
    };
    Ok(StoredDeviceList {
        signed: bytes.to_vec(),
        list,
    })
}

/// A prekey's public key as stored.
fn prekey_public(bytes: Vec<u8>) -> StorageResult<PreKeyPublic> {
    PreKeyPublic::new(bytes).map_err(|_| StorageError::Corrupt("prekeys"))
}

impl SledStore {
    /// Open (or create) the store in `dir`. Must run inside a tokio runtime
    /// (it starts the group-commit task).
    pub fn open(dir: &Path, cache_capacity: u64, metrics: Arc<Metrics>) -> StorageResult<Self> {
        Self::open_with(dir, cache_capacity, LogOptions::default(), metrics)
    }

    /// [`SledStore::open`] with explicit mail log tuning (tests use small
    /// segments to exercise checkpoints).
    pub fn open_with(
        dir: &Path,
        cache_capacity: u64,
        log: LogOptions,
        metrics: Arc<Metrics>,
    ) -> StorageResult<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let dir_lock = Arc::new(DirLock::acquire(dir)?);
        let db = ::sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity)
            .mode(::sled::Mode::HighThroughput)
            .open()
            .map_err(|e| {
                StorageError::Backend(format!(
                    "the directory store (sled) in {} cannot be read ({e}); restore the data \
                     directory from a backup",
                    dir.display()
                ))
            })?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        let legacy_mail = tree("mail")?;
        if !legacy_mail.is_empty() {
            return Err(StorageError::Backend(
                "this data directory holds mail queued by an older relay version (sled `mail` tree); \
                 drain it with that version or start from an empty data directory"
                    .into(),
            ));
        }
        let accounts = tree("accounts")?;
        let log_dir = dir.join("mail-log");
        super::store_id::check(&db, &accounts, &log_dir)?;
        let mail = MailLog::open_holding(&log_dir, log, metrics.clone(), Some(dir_lock.clone()))?;
        // Mail for accounts sled does not know: sled lost records (a
        // damaged or truncated file that it recovered from) or the two do
        // not belong together. Either way, serving it would hide the loss.
        let expired_accounts = tree("expired_accounts")?;
        let mut unknown = 0;
        for account in mail.queued_accounts() {
            if matches!(accounts.contains_key(account.as_bytes()), Ok(true)) {
                continue;
            }
            // An account expired for never authenticating: a send in
            // flight queued mail for it after its queues were dropped.
            match expired_accounts.get(account.as_bytes()).map_err(backend)? {
                Some(note) => {
                    drop_queues(&mail, account, &note)?;
                }
                None => unknown += 1,
            }
        }
        if unknown > 0 {
            return Err(StorageError::Backend(format!(
                "the data directory {} is inconsistent: the mail log holds mail for {unknown} \
                 account(s) that the directory store (sled) does not know (sled lost records?); \
                 the relay will not start on it (restore the whole data directory from a backup)",
                dir.display()
            )));
        }
        let receipts = tree("receipts")?;
        move_legacy_receipts(&receipts, &mail, &db)?;
        let (records, phones, names, meta) = (
            tree("account_records")?,
            tree("phones")?,
            tree("names")?,
            tree("meta")?,
        );
        give_records_to_older_accounts(&accounts, &records, &phones, &names, &meta, &db)?;
        let retired_accounts = tree("retired_accounts")?;
        retire_expired_before_retiring(&expired_accounts, &retired_accounts, &db)?;
        let (templates_tree, live_templates) = (tree("templates")?, tree("live_templates")?);
        super::templates::index_live_templates(&templates_tree, &live_templates, &db)?;
        Ok(Self {
            parsed_lists: Arc::default(),
            parsed_templates: Arc::default(),
            template_submissions: Arc::default(),
            accounts,
            records,
            prekeys: tree("prekeys")?,
            mail,
            blocks: tree("blocks")?,
            phones,
            names,
            unauthenticated: tree("unauthenticated")?,
            expired_accounts,
            retired_accounts,
            meta,
            templates: templates_tree,
            live_templates,
            businesses: tree("businesses")?,
            block_reasons: tree("block_reasons")?,
            consent_requests: tree("consent_requests")?,
            first_contacts: tree("first_contacts")?,
            reports: tree("reports")?,
            tiers: tree("tiers")?,
            bill_heads: tree("bill_heads")?,
            superseded_device_lists: tree("superseded_device_lists")?,
            committer: Committer::start(db, metrics)?,
            _dir_lock: dir_lock,
        })
    }

    /// The `meta` tree (relay-wide values).
    pub(super) fn meta_tree(&self) -> &Tree {
        &self.meta
    }

    fn count_one_time(&self, account: &AccountId, device: u32) -> u32 {
        self.prekeys
            .scan_prefix(prekey_prefix(account, device, 1))
            .keys()
            .filter(|k| k.is_ok())
            .count() as u32
    }
}

impl Directory for SledStore {
    async fn create_account(
        &self,
        list: &StoredDeviceList,
        record: &AccountRecord,
    ) -> StorageResult<Created> {
        let encoded = list.signed.as_slice();
        let encoded_record = encode_record(record);
        let key = list.list.account_id.as_bytes().as_slice();
        let mut pending_key = record.created_at_ms.to_be_bytes().to_vec();
        pending_key.extend_from_slice(key);
        let existing = (
            &self.accounts,
            &self.records,
            &self.unauthenticated,
            &self.retired_accounts,
        )
            .transaction(|(accounts, records, unauthenticated, retired)| {
                if let Some(current) = accounts.get(key)? {
                    return Ok(Some(Some(current)));
                }
                if retired.get(key)?.is_some() {
                    return Ok(Some(None));
                }
                accounts.insert(key, encoded)?;
                records.insert(key, encoded_record.as_slice())?;
                unauthenticated.insert(pending_key.as_slice(), IVec::default())?;
                Ok(None)
            })
            .map_err(|e: ::sled::transaction::TransactionError<::sled::Error>| {
                StorageError::Backend(e.to_string())
            })?;
        match existing {
            None => {
                self.committer.durable().await?;
                Ok(Created::New)
            }
            Some(Some(current)) => Ok(Created::Exists(Arc::new(decode_list(&current)?))),
            Some(None) => Ok(Created::Retired),
        }
    }

    async fn mark_authenticated(&self, account: AccountId) -> StorageResult<()> {
        let Some(record) = self.account_record(account).await? else {
            return Ok(());
        };
        let key = unauthenticated_key(record.created_at_ms, &account);
        // A read on every later login; a write only at the first.
        if self.unauthenticated.contains_key(&key).map_err(backend)?
            && self
                .unauthenticated
                .remove(&key)
                .map_err(backend)?
                .is_some()
        {
            // Once, at the first login: the account must never be taken
            // for one that did not log in.
            self.committer.durable().await?;
        }
        Ok(())
    }

    async fn expire_unauthenticated(
        &self,
        registered_before_ms: u64,
        limit: usize,
    ) -> StorageResult<ExpiredAccounts> {
        let now = crate::state::now_ms();
        let mut expired = ExpiredAccounts::default();
        // Notes old enough that no send can still be on its way: drop
        // what such a send may have queued, then the note.
        let mut old_notes = Vec::new();
        for entry in self.expired_accounts.iter() {
            let (key, note) = entry.map_err(backend)?;
            if be_u64(&note, 0, "expired_accounts")?.saturating_add(EXPIRED_NOTE_MS) <= now {
                old_notes.push((key, note));
            }
            if old_notes.len() >= limit {
                break;
            }
        }
        for (key, note) in &old_notes {
            let account = account_from(key, "expired_accounts")?;
            expired.envelopes += drop_queues(&self.mail, account, note)?;
        }
        if !old_notes.is_empty() {
            self.mail.flush().await?;
            let mut batch = Batch::default();
            for (key, _) in old_notes {
                batch.remove(key);
            }
            self.expired_accounts.apply_batch(batch).map_err(backend)?;
        }
        let due: Vec<IVec> = self
            .unauthenticated
            .range(..registered_before_ms.to_be_bytes().to_vec())
            .keys()
            .take(limit)
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        for pending in due {
            let account = account_from(pending.get(8..).unwrap_or_default(), "unauthenticated")?;
            let list = self.accounts.get(account.as_bytes()).map_err(backend)?;
            let devices: Vec<u32> = match &list {
                Some(bytes) => decode_list(bytes)?.list.device_ids(),
                None => Vec::new(),
            };
            let record = match self.records.get(account.as_bytes()).map_err(backend)? {
                Some(bytes) => Some(decode_record(&bytes)?),
                None => None,
            };
            let mut note = now.to_be_bytes().to_vec();
            for device in &devices {
                note.extend_from_slice(&device.to_be_bytes());
            }
            // sled first, with the note: a crash after it leaves mail the
            // start drops by the note; the account is unknown to sends
            // from here on.
            let mut prekeys = Batch::default();
            for device in &devices {
                let mut prefix = account.to_vec();
                prefix.extend_from_slice(&device.to_be_bytes());
                for key in self.prekeys.scan_prefix(&prefix).keys() {
                    prekeys.remove(key.map_err(backend)?);
                }
            }
            let phone = record
                .as_ref()
                .map(|r| r.phone_number.clone())
                .filter(|p| !p.is_empty());
            let name_of_account = tagged(b'a', &[account.as_bytes()]);
            let still_due = (
                &self.accounts,
                &self.records,
                &self.unauthenticated,
                &self.expired_accounts,
                &self.phones,
                &self.names,
                &self.retired_accounts,
            )
                .transaction(
                    |(
                        accounts,
                        records,
                        unauthenticated,
                        expired_accounts,
                        phones,
                        names,
                        retired,
                    )| {
                        // It logged in since it was listed (this pass
                        // awaits between accounts): it stays.
                        if unauthenticated.remove(&pending)?.is_none() {
                            return Ok(false);
                        }
                        accounts.remove(account.as_bytes().as_slice())?;
                        records.remove(account.as_bytes().as_slice())?;
                        expired_accounts.insert(account.as_bytes().as_slice(), note.as_slice())?;
                        retired.insert(account.as_bytes().as_slice(), &now.to_be_bytes())?;
                        if let Some(phone) = &phone
                            && let Some(holder) = phones.get(phone.as_bytes())?
                            && holder.get(..16) == Some(account.as_bytes().as_slice())
                        {
                            phones.remove(phone.as_bytes())?;
                        }
                        if let Some(name) = names.get(&name_of_account)? {
                            names.remove(name_of_account.as_slice())?;
                            names.remove(tagged(b'n', &[name.as_ref()]))?;
                        }
                        Ok(true)
                    },
                )
                .map_err(|e: TransactionError<::sled::Error>| {
                    StorageError::Backend(e.to_string())
                })?;
            if !still_due {
                continue;
            }
            self.prekeys.apply_batch(prekeys).map_err(backend)?;
            // Only memory: reads go to sled, where the account is gone.
            self.parsed_lists
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&account);
            self.committer.durable().await?;
            expired.envelopes += drop_queues(&self.mail, account, &note)?;
            expired.accounts += 1;
            tracing::info!(%account, "account expired: it never authenticated");
        }
        if expired.accounts > 0 {
            self.mail.flush().await?;
        }
        Ok(expired)
    }

    async fn account_record(&self, account: AccountId) -> StorageResult<Option<AccountRecord>> {
        match self.records.get(account.as_bytes()).map_err(backend)? {
            Some(bytes) => Ok(Some(decode_record(&bytes)?)),
            None => Ok(None),
        }
    }

    async fn device_list(
        &self,
        account: AccountId,
    ) -> StorageResult<Option<Arc<StoredDeviceList>>> {
        match self.accounts.get(account.as_bytes()).map_err(backend)? {
            Some(bytes) => Ok(Some(self.parsed_lists.parse(account, &bytes)?)),
            None => Ok(None),
        }
    }

    async fn replace_device_list(
        &self,
        account: AccountId,
        list: &StoredDeviceList,
    ) -> StorageResult<ListUpdate> {
        let encoded = list.signed.clone();
        loop {
            let Some(current) = self.accounts.get(account.as_bytes()).map_err(backend)? else {
                return Ok(ListUpdate::UnknownAccount);
            };
            let have = decode_list(&current)?.list.version;
            if list.list.version <= have {
                return Ok(ListUpdate::Stale { have });
            }
            // Kept before it is replaced: a bill line its devices signed
            // must stay checkable (`storage::superseded_lists`).
            self.superseded_device_lists
                .insert(super::superseded_lists::key(account, have), current.clone())
                .map_err(backend)?;
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
        self.blocks
            .contains_key(block_key(&blocker, &blocked))
            .map_err(backend)
    }

    async fn bind_phone(
        &self,
        phone: &str,
        account: AccountId,
        discoverable: bool,
    ) -> StorageResult<()> {
        let mut value = account.to_vec();
        value.push(u8::from(discoverable));
        let corrupt =
            || ConflictableTransactionError::Abort(StorageError::Corrupt("account_records"));
        let name_of_account = tagged(b'a', &[account.as_bytes()]);
        (&self.phones, &self.records, &self.accounts, &self.names)
            .transaction(|(phones, records, accounts, names)| {
                let mut record = match records.get(account.as_bytes())? {
                    Some(bytes) => EncodedRecord::decode(bytes.as_ref()).map_err(|_| corrupt())?,
                    // No record: the account is gone (expired meanwhile),
                    // and no number is bound to it...
                    None if accounts.get(account.as_bytes())?.is_none() => return Ok(()),
                    // ...or an older relay registered it on this data
                    // directory after the older accounts got theirs: it
                    // gets its record now.
                    None => to_encoded(&older_account_record(
                        names.get(name_of_account.as_slice())?.is_some(),
                    )),
                };
                let earlier = phones.insert(phone.as_bytes(), value.as_slice())?;
                // The number leaves its earlier holder's record (if that
                // record still names it): only one account holds a number.
                // (An earlier entry or record that does not decode is
                // damage of its own: it does not stop this proof.)
                if let Some(earlier) = earlier
                    && let Ok((holder, _)) = decode_phone(&earlier)
                    && holder != account
                    && let Some(bytes) = records.get(holder.as_bytes())?
                    && let Ok(mut held) = EncodedRecord::decode(bytes.as_ref())
                    && held.phone_number == phone
                {
                    held.phone_number.clear();
                    held.discoverable = false;
                    records.insert(holder.as_bytes().as_slice(), held.encode_to_vec())?;
                }
                // The account's earlier number no longer finds it: an
                // account holds one number.
                if !record.phone_number.is_empty()
                    && record.phone_number != phone
                    && let Some(entry) = phones.get(record.phone_number.as_bytes())?
                    && decode_phone(&entry).is_ok_and(|(holder, _)| holder == account)
                {
                    phones.remove(record.phone_number.as_bytes())?;
                }
                record.phone_number = phone.to_string();
                record.discoverable = discoverable;
                records.insert(account.as_bytes().as_slice(), record.encode_to_vec())?;
                Ok(())
            })
            .map_err(|e: TransactionError<StorageError>| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => backend(e),
            })?;
        self.committer.durable().await
    }

    async fn lookup_phone(&self, phone: &str) -> StorageResult<Option<(AccountId, bool)>> {
        match self.phones.get(phone.as_bytes()).map_err(backend)? {
            Some(v) => decode_phone(&v).map(Some),
            None => Ok(None),
        }
    }

    async fn claim_name(&self, name: &str, account: AccountId) -> StorageResult<NameClaim> {
        let name_key = tagged(b'n', &[name.as_bytes()]);
        let account_key = tagged(b'a', &[account.as_bytes()]);
        let outcome = self
            .names
            .transaction(|tx| {
                let holder = tx.get(&name_key)?;
                let held = tx.get(&account_key)?;
                match (holder, held) {
                    (Some(holder), _) if holder.as_ref() == account.as_bytes() => {
                        Ok(NameClaim::AlreadyYours)
                    }
                    (Some(_), _) => Ok(NameClaim::TakenByOther),
                    (None, Some(_)) => Ok(NameClaim::AccountHasOther),
                    (None, None) => {
                        tx.insert(name_key.as_slice(), account.as_bytes().as_slice())?;
                        tx.insert(account_key.as_slice(), name.as_bytes())?;
                        Ok(NameClaim::Claimed)
                    }
                }
            })
            .map_err(|e: ::sled::transaction::TransactionError<::sled::Error>| {
                StorageError::Backend(e.to_string())
            })?;
        if outcome == NameClaim::Claimed {
            self.committer.durable().await?;
        }
        Ok(outcome)
    }

    async fn lookup_name(&self, name: &str) -> StorageResult<Option<AccountId>> {
        match self
            .names
            .get(tagged(b'n', &[name.as_bytes()]))
            .map_err(backend)?
        {
            Some(v) => Ok(Some(account_from(&v, "names")?)),
            None => Ok(None),
        }
    }
}

impl Keys for SledStore {
    async fn store_prekeys(
        &self,
        account: AccountId,
        device: u32,
        signed: Option<SignedPreKeyRecord>,
        one_time: Vec<OneTimePreKeyRecord>,
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
        let mut batch = Batch::default();
        if let Some(spk) = signed {
            let encoded = wire::SignedPreKey {
                key_id: spk.key_id,
                public_key: spk.public.into_bytes(),
                signature: spk.signature,
            };
            batch.insert(prekey_prefix(&account, device, 0), encoded.encode_to_vec());
        }
        for key in one_time {
            let mut k = prekey_prefix(&account, device, 1);
            k.extend_from_slice(&key.key_id.to_be_bytes());
            batch.insert(k, key.public.into_bytes());
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
                let spk = wire::SignedPreKey::decode(&*bytes)
                    .map_err(|_| StorageError::Corrupt("prekeys"))?;
                Some(SignedPreKeyRecord {
                    key_id: spk.key_id,
                    public: prekey_public(spk.public_key)?,
                    signature: spk.signature,
                })
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
                one_time = Some(OneTimePreKeyRecord {
                    key_id,
                    public: prekey_public(value.to_vec())?,
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

    async fn remove_device_keys(&self, account: AccountId, device: u32) -> StorageResult<()> {
        let mut batch = Batch::default();
        let mut prefix = account.to_vec();
        prefix.extend_from_slice(&device.to_be_bytes());
        for key in self.prekeys.scan_prefix(&prefix).keys() {
            batch.remove(key.map_err(backend)?);
        }
        self.prekeys.apply_batch(batch).map_err(backend)?;
        self.committer.durable().await
    }
}

impl super::Ledger for SledStore {
    async fn ledger_entries(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> StorageResult<Vec<super::LedgerEntry>> {
        // The ledger lives in the mail log, with the accepts it is part of.
        Ok(self.mail.ledger_entries(after, limit))
    }

    async fn bill(
        &self,
        business: AccountId,
    ) -> StorageResult<Vec<(super::LedgerEntry, super::DeliveredEntry)>> {
        Ok(self.mail.bill(business))
    }

    async fn customers_reached(&self, business: AccountId, day: u32) -> StorageResult<u64> {
        Ok(self.mail.customers_reached(business, day))
    }

    async fn rate_cards(&self) -> StorageResult<Vec<comptoir_protocol::RateCard>> {
        self.meta
            .scan_prefix(RATE_CARD_PREFIX)
            .map(|item| {
                let (_, payload) = item.map_err(backend)?;
                comptoir_protocol::RateCard::from_payload(&payload)
                    .map_err(|_| StorageError::Corrupt("a recorded rate card"))
            })
            .collect()
    }

    async fn record_rate_card(&self, card: &comptoir_protocol::RateCard) -> StorageResult<()> {
        let mut key = RATE_CARD_PREFIX.to_vec();
        key.extend_from_slice(&card.effective_from_ms.to_be_bytes());
        self.meta.insert(key, card.payload()).map_err(backend)?;
        self.committer.durable().await
    }
}

impl Mailbox for SledStore {
    async fn enqueue(&self, message: NewMessage, max_queue: u64) -> StorageResult<Enqueued> {
        self.mail.enqueue(message, max_queue).await
    }

    async fn pending(
        &self,
        account: AccountId,
        device: u32,
        after: Option<Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> StorageResult<Vec<QueuedMail>> {
        let after = after.map(Cursor::position);
        Ok(self
            .mail
            .pending(account, device, after, limit, now_ms)?
            .into_iter()
            .map(|queued| QueuedMail {
                cursor: Cursor::from_position(queued.cursor),
                envelope: queued.envelope,
                accept_id: queued.accept_id,
            })
            .collect())
    }

    async fn queued_count(&self, account: AccountId, device: u32) -> StorageResult<u64> {
        Ok(self.mail.queued_count(account, device))
    }

    async fn acknowledge(
        &self,
        account: AccountId,
        device: u32,
        of: AckOf,
        receipt_expires_at_ms: u64,
    ) -> StorageResult<Option<Acked>> {
        // Not waited on for durability: see `Mailbox::acknowledge`.
        let acked = self
            .mail
            .acknowledge(account, device, of, receipt_expires_at_ms)?;
        Ok(acked.map(|(sender, sender_device, durable)| Acked {
            sender,
            sender_device,
            receipt_kept: Box::pin(async move { durable.await.map_err(|_| StorageError::Closed)? }),
        }))
    }

    async fn consent(
        &self,
        customer: AccountId,
        business: AccountId,
    ) -> StorageResult<Option<super::ConsentRecord>> {
        Ok(self.mail.consent(customer, business))
    }

    async fn consents_of(&self, customer: AccountId) -> StorageResult<Vec<super::ConsentRecord>> {
        Ok(self.mail.consents_of(customer))
    }

    async fn consents_for(&self, business: AccountId) -> StorageResult<Vec<super::ConsentRecord>> {
        Ok(self.mail.consents_for(business))
    }

    async fn set_consent(&self, record: super::ConsentRecord) -> StorageResult<super::ConsentSet> {
        self.mail.set_consent(record).await
    }

    async fn block_epoch(&self, blocker: AccountId, blocked: AccountId) -> StorageResult<u64> {
        Ok(self.mail.block_epoch(blocker, blocked))
    }

    async fn remove_queued_from(
        &self,
        recipient: AccountId,
        devices: Vec<u32>,
        sender: AccountId,
    ) -> StorageResult<u64> {
        self.mail
            .remove_queued_from(recipient, &devices, sender)
            .await
    }

    async fn revoke_consent_by_block(
        &self,
        customer: AccountId,
        business: AccountId,
    ) -> StorageResult<()> {
        self.mail.revoke_consent_by_block(customer, business).await
    }

    async fn last_customer_message(
        &self,
        business: AccountId,
        customer: AccountId,
    ) -> StorageResult<Option<u64>> {
        Ok(self.mail.last_customer_message(business, customer))
    }

    async fn billed_copy(
        &self,
        account: AccountId,
        device: u32,
        of: AckOf,
    ) -> StorageResult<Option<super::LedgerEntry>> {
        Ok(self.mail.billed_copy(account, device, of))
    }

    async fn acknowledge_delivered(
        &self,
        account: AccountId,
        device: u32,
        of: AckOf,
        receipt_expires_at_ms: u64,
        delivered: super::DeliveredEntry,
    ) -> StorageResult<Option<Acked>> {
        let acked = self.mail.acknowledge_delivered(
            account,
            device,
            of,
            receipt_expires_at_ms,
            delivered,
        )?;
        Ok(acked.map(|(sender, sender_device, durable)| Acked {
            sender,
            sender_device,
            receipt_kept: Box::pin(async move { durable.await.map_err(|_| StorageError::Closed)? }),
        }))
    }

    async fn delivered_entry(
        &self,
        accept_id: u64,
    ) -> StorageResult<Option<(super::LedgerEntry, super::DeliveredEntry)>> {
        Ok(self.mail.delivered_entry(accept_id))
    }

    async fn pending_receipts(
        &self,
        account: AccountId,
        device: u32,
        after: Option<Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> StorageResult<Vec<QueuedReceipt>> {
        let after = after.map(Cursor::position);
        Ok(self
            .mail
            .pending_receipts(account, device, after, limit, now_ms)
            .into_iter()
            .map(|(cursor, r)| QueuedReceipt {
                cursor: Cursor::from_position(cursor),
                recipient: r.recipient,
                recipient_device: r.recipient_device,
                message_id: r.message_id,
                accept_id: r.accept_id,
            })
            .collect())
    }

    async fn acknowledge_receipt(
        &self,
        account: AccountId,
        device: u32,
        recipient: AccountId,
        recipient_device: u32,
        message_id: [u8; MESSAGE_ID_LEN],
    ) -> StorageResult<bool> {
        self.mail
            .acknowledge_receipt(account, device, recipient, recipient_device, &message_id)
    }

    async fn expire(&self, now_ms: u64) -> StorageResult<u64> {
        // A pass over the whole index, a slice per lock: off the async
        // workers, which it would otherwise hold up meanwhile.
        let mail = self.mail.clone();
        let expired = tokio::task::spawn_blocking(move || mail.expire(now_ms))
            .await
            .map_err(|e| StorageError::Backend(format!("expiry task failed: {e}")))?;
        // Receipts expire with the mail, in the log.
        // Deletions need not wait for the disk (see the trait docs).
        Ok(expired)
    }

    async fn remove_queue(&self, account: AccountId, device: u32) -> StorageResult<u64> {
        let removed = self.mail.remove_device(account, device)?;
        // Durable: a removed device's queue must not come back after a
        // crash.
        self.mail.flush().await?;
        Ok(removed)
    }

    async fn total_queued(&self) -> StorageResult<u64> {
        Ok(self.mail.total_queued())
    }
}

impl Lifecycle for SledStore {
    async fn flush(&self) -> StorageResult<()> {
        self.mail.flush().await?;
        self.committer.durable().await
    }

    async fn clock_mark(&self) -> StorageResult<u64> {
        match self.meta.get(CLOCK_MARK_KEY).map_err(backend)? {
            Some(bytes) => be_u64(&bytes, 0, "the clock mark"),
            None => Ok(0),
        }
    }

    async fn keep_clock_mark(&self, ms: u64) -> StorageResult<()> {
        self.meta
            .fetch_and_update(CLOCK_MARK_KEY, |old| {
                let kept = old
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                Some(kept.max(ms).to_be_bytes().to_vec())
            })
            .map_err(backend)?;
        self.committer.durable().await
    }

    async fn close(&self) -> StorageResult<()> {
        let mail = self.mail.close().await;
        let sled = self.committer.call(Job::Close).await;
        mail.and(sled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-time prekey with a 32-byte public key.
    fn one_time(key_id: u32) -> OneTimePreKeyRecord {
        OneTimePreKeyRecord {
            key_id,
            public: PreKeyPublic::new(vec![7; 32]).unwrap(),
        }
    }

    /// A device list signed by `key`, as a handler stores it.
    fn signed_list(
        key: &comptoir_protocol::AccountKeyPair,
        account: AccountId,
        version: u64,
        devices: Vec<(u32, IdentityKey)>,
    ) -> StorageResult<StoredDeviceList> {
        let signed = DeviceList::sign(key, account, version, devices)
            .map_err(|e| StorageError::Backend(e.to_string()))?;
        let list =
            DeviceList::verify(&signed, None).map_err(|e| StorageError::Backend(e.to_string()))?;
        Ok(StoredDeviceList {
            signed: signed.encode_to_vec(),
            list,
        })
    }

    /// The parsed-list memo answers only for the bytes sled holds now: a
    /// list written behind the store's back (as another writer would) is
    /// read at once, and a block or record has no memo at all.
    #[tokio::test]
    async fn reads_see_every_write_even_one_that_bypassed_the_store() -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let store = open(dir.path());
        let (a, b) = (
            AccountId::generate(&mut rand::rng()),
            AccountId::generate(&mut rand::rng()),
        );
        let key = comptoir_protocol::AccountKeyPair::generate(&mut rand::rng());
        let device = |_| *comptoir_protocol::IdentityKeyPair::generate(&mut rand::rng()).public();
        let v1 = signed_list(&key, a, 1, vec![(1, device(1)), (2, device(2))])?;
        store.create_account(&v1, &AccountRecord::default()).await?;
        assert_eq!(store.device_list(a).await?.map(|l| l.list.version), Some(1));
        let v2 = signed_list(&key, a, 2, vec![(1, device(1))])?;
        store
            .accounts
            .insert(a.as_bytes(), v2.signed.clone())
            .map_err(backend)?;
        let read = store.device_list(a).await?;
        assert_eq!(read.as_deref(), Some(&v2));
        assert!(!store.is_blocked(a, b).await?);
        store
            .blocks
            .insert(block_key(&a, &b), IVec::default())
            .map_err(backend)?;
        assert!(store.is_blocked(a, b).await?);
        store.close().await
    }

    /// Prekey public keys are not tied to X25519's 32 bytes: an ML-KEM-1024
    /// sized key (1568 bytes) is kept and handed back whole; one longer
    /// than storage keeps, or empty, cannot even be built.
    #[tokio::test]
    async fn prekeys_of_post_quantum_size_are_kept_whole() -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let store = open(dir.path());
        let a = AccountId::generate(&mut rand::rng());
        let big = PreKeyPublic::new(vec![9; 1568]).unwrap();
        let signed = SignedPreKeyRecord {
            key_id: 1,
            public: big.clone(),
            signature: vec![1; 64],
        };
        let keys = vec![OneTimePreKeyRecord {
            key_id: 2,
            public: big.clone(),
        }];
        assert_eq!(
            store
                .store_prekeys(a, 1, Some(signed.clone()), keys, 5)
                .await?,
            Ok(1)
        );
        let taken = store.take_prekeys(a, 1).await?;
        assert_eq!(taken.signed, Some(signed));
        assert_eq!(taken.one_time.map(|k| k.public), Some(big));
        assert_eq!(
            PreKeyPublic::new(vec![0; super::super::MAX_PREKEY_PUBLIC_LEN + 1]),
            Err(super::super::PreKeyLength(
                super::super::MAX_PREKEY_PUBLIC_LEN + 1
            ))
        );
        assert!(PreKeyPublic::new(Vec::new()).is_err());
        store.close().await
    }

    fn message(sender: AccountId, recipient: AccountId, id: u8, devices: &[u32]) -> NewMessage {
        NewMessage {
            sender,
            sender_device: 1,
            recipient,
            message_id: [id; MESSAGE_ID_LEN],
            server_timestamp_ms: 1_000 + u64::from(id),
            // Replay drops what expired by the wall clock: expire later.
            expires_at_ms: crate::state::now_ms() + 600_000,
            effects: Default::default(),
            copies: devices.iter().map(|d| (*d, vec![id; 10])).collect(),
        }
    }

    fn open(dir: &Path) -> SledStore {
        SledStore::open(dir, 1 << 20, Arc::new(Metrics::default())).expect("open") // ok: test helper on a temp dir
    }

    #[tokio::test]
    async fn concurrent_duplicates_store_once_and_acks_apply_once() -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let store = open(dir.path());
        let mut rng = rand::rng();
        let (a, b) = (AccountId::generate(&mut rng), AccountId::generate(&mut rng));
        let (first, second) = tokio::join!(
            store.enqueue(message(a, b, 1, &[1, 2]), 10),
            store.enqueue(message(a, b, 1, &[1, 2]), 10),
        );
        let outcomes = [first?, second?];
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| matches!(o, Enqueued::Stored { .. }))
                .count(),
            1,
            "{outcomes:?}"
        );
        assert!(outcomes.iter().any(|o| matches!(
            o,
            Enqueued::Duplicate {
                server_timestamp_ms: 1001,
                ..
            }
        )));
        assert_eq!(store.queued_count(b, 1).await?, 1);
        assert_eq!(store.pending(b, 2, None, 10, 0).await?.len(), 1);
        let (x, y) = tokio::join!(
            store.acknowledge(
                b,
                1,
                AckOf::Message {
                    sender: a,
                    message_id: [1; MESSAGE_ID_LEN]
                },
                u64::MAX
            ),
            store.acknowledge(
                b,
                1,
                AckOf::Message {
                    sender: a,
                    message_id: [1; MESSAGE_ID_LEN]
                },
                u64::MAX
            ),
        );
        assert_eq!(
            [x?, y?]
                .iter()
                .filter(|r| r.as_ref().map(|a| a.sender_device) == Some(1))
                .count(),
            1
        );
        assert_eq!(store.queued_count(b, 1).await?, 0);
        assert_eq!(store.queued_count(b, 2).await?, 1);
        Ok(())
    }

    #[tokio::test]
    async fn queue_limit_expiry_and_depths_after_reopen() -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let mut rng = rand::rng();
        let (a, b) = (AccountId::generate(&mut rng), AccountId::generate(&mut rng));
        {
            let store = open(dir.path());
            make_known(&store, b).await?;
            for id in 0..3 {
                assert!(matches!(
                    store.enqueue(message(a, b, id, &[1]), 3).await?,
                    Enqueued::Stored { .. }
                ));
            }
            assert_eq!(
                store.enqueue(message(a, b, 9, &[1]), 3).await?,
                Enqueued::QueueFull { device: 1 }
            );
            store.close().await?;
        }
        let store = open(dir.path());
        assert_eq!(
            store.queued_count(b, 1).await?,
            3,
            "depth counted from disk"
        );
        assert_eq!(store.total_queued().await?, 3);
        let order: Vec<u8> = store
            .pending(b, 1, None, 10, 0)
            .await?
            .iter()
            .map(|q| q.envelope[0])
            .collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(
            store.pending(b, 1, None, 10, u64::MAX).await?.len(),
            0,
            "expired ones hidden"
        );
        assert_eq!(store.expire(u64::MAX).await?, 3);
        assert_eq!(store.queued_count(b, 1).await?, 0);
        // The idempotency records expired too: the id can be used again.
        assert!(matches!(
            store.enqueue(message(a, b, 0, &[1]), 3).await?,
            Enqueued::Stored { .. }
        ));
        store.close().await?;
        Ok(())
    }

    #[tokio::test]
    async fn one_relay_per_directory_and_reopening_at_once_works() -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let mut rng = rand::rng();
        let (a, b) = (AccountId::generate(&mut rng), AccountId::generate(&mut rng));
        for round in 0..20u8 {
            let store = open(dir.path());
            make_known(&store, b).await?;
            match SledStore::open(dir.path(), 1 << 20, Arc::new(Metrics::default())) {
                Err(StorageError::InUse(path)) => assert_eq!(path, dir.path()),
                other => panic!("expected InUse, got {other:?}"),
            }
            // sled writes through its I/O threads: the next round's open
            // must wait for them, not fail on sled's lock.
            store.set_blocked(a, b, true).await?;
            store.enqueue(message(a, b, round, &[1]), 100).await?;
            store.close().await?;
            drop(store);
        }
        let store = open(dir.path());
        assert_eq!(store.queued_count(b, 1).await?, 20);
        assert!(store.is_blocked(a, b).await?);
        Ok(())
    }

    #[tokio::test]
    async fn one_time_prekeys_are_taken_once() -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let store = open(dir.path());
        let a = AccountId::generate(&mut rand::rng());
        let keys = (0..5).map(one_time).collect();
        assert_eq!(store.store_prekeys(a, 1, None, keys, 5).await?, Ok(5));
        let extra = vec![one_time(99)];
        assert_eq!(store.store_prekeys(a, 1, None, extra, 5).await?, Err(5));
        let takers = (0..8).map(|_| store.take_prekeys(a, 1));
        let mut got = Vec::new();
        for taken in futures_util::future::join_all(takers).await {
            if let Some(key) = taken?.one_time {
                got.push(key.key_id);
            }
        }
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_name_is_claimed_once_and_an_account_holds_one() -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let store = open(dir.path());
        let mut rng = rand::rng();
        let claimers: Vec<AccountId> = (0..8).map(|_| AccountId::generate(&mut rng)).collect();
        // On several threads at once, so the claims really race.
        let tasks: Vec<_> = claimers
            .iter()
            .map(|a| {
                let (store, a) = (store.clone(), *a);
                tokio::spawn(async move { store.claim_name("acme", a).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(
                task.await
                    .map_err(|e| StorageError::Backend(e.to_string()))??,
            );
        }
        let winners: Vec<AccountId> = claimers
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == NameClaim::Claimed)
            .map(|(a, _)| *a)
            .collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == NameClaim::TakenByOther)
                .count(),
            7
        );
        let winner = winners[0];
        assert_eq!(store.lookup_name("acme").await?, Some(winner));
        assert_eq!(
            store.claim_name("acme", winner).await?,
            NameClaim::AlreadyYours
        );
        // One name per account, even when its two claims race.
        let (x, y) = tokio::join!(
            store.claim_name("second", winner),
            store.claim_name("third", winner),
        );
        assert_eq!([x?, y?], [NameClaim::AccountHasOther; 2]);
        let loser = claimers.iter().find(|a| **a != winner).copied();
        let loser = loser.ok_or(StorageError::Closed)?;
        let (x, y) = tokio::join!(
            store.claim_name("beta", loser),
            store.claim_name("gamma", loser),
        );
        let both = [x?, y?];
        assert!(both.contains(&NameClaim::Claimed), "{both:?}");
        assert!(both.contains(&NameClaim::AccountHasOther), "{both:?}");
        let held = [
            store.lookup_name("beta").await?,
            store.lookup_name("gamma").await?,
        ];
        assert_eq!(held.iter().flatten().count(), 1);
        store.close().await?;
        drop(store);
        // Durable: the mapping survives a reopen.
        let store = open(dir.path());
        assert_eq!(store.lookup_name("acme").await?, Some(winner));
        assert_eq!(store.lookup_name("nobody").await?, None);
        Ok(())
    }

    /// Give `account` a device list, so that mail for it is consistent.
    async fn make_known(store: &SledStore, account: AccountId) -> StorageResult<()> {
        let mut rng = rand::rng();
        let key = comptoir_protocol::AccountKeyPair::generate(&mut rng);
        let device = comptoir_protocol::IdentityKeyPair::generate(&mut rng);
        let list = signed_list(&key, account, 1, vec![(1, *device.public())])?;
        store
            .create_account(&list, &AccountRecord::default())
            .await?;
        Ok(())
    }

    /// Register `account` (one device) as created at `created_at_ms`.
    async fn register_at(
        store: &SledStore,
        account: AccountId,
        created_at_ms: u64,
    ) -> StorageResult<()> {
        let mut rng = rand::rng();
        let key = comptoir_protocol::AccountKeyPair::generate(&mut rng);
        let device = comptoir_protocol::IdentityKeyPair::generate(&mut rng);
        let list = signed_list(&key, account, 1, vec![(1, *device.public())])?;
        let record = AccountRecord {
            created_at_ms,
            ..AccountRecord::default()
        };
        store.create_account(&list, &record).await?;
        Ok(())
    }

    /// Accounts registered by a relay from before account records get one
    /// at the next start: a business name's holder as a business, the
    /// others as customers created at time 0, each with the phone number
    /// bound to it (the first, of several); so the phone rule can be met
    /// and a name resolves only to a business. An account with a record
    /// keeps it. The numbers an account no longer holds stop finding it,
    /// and the whole step runs once.
    #[tokio::test]
    async fn accounts_from_before_records_get_one_at_the_next_start() -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let new = || AccountId::generate(&mut rand::rng());
        let (shop, person, plain, typed, moved, taker) = (new(), new(), new(), new(), new(), new());
        {
            let store = open(dir.path());
            for account in [shop, person, plain, typed, moved, taker] {
                register_at(&store, account, 5_000).await?;
                store.mark_authenticated(account).await?;
            }
            assert_eq!(store.claim_name("acme", shop).await?, NameClaim::Claimed);
            store.bind_phone("+15550001", person, true).await?;
            // As an older relay left them: no record but `typed`'s, a
            // second number for `person`, and one `typed` moved off.
            for account in [shop, person] {
                store.records.remove(account.as_bytes()).map_err(backend)?;
            }
            let entry = |account: AccountId| [account.as_bytes().as_slice(), &[0]].concat();
            store
                .phones
                .insert("+15550009", entry(person))
                .map_err(backend)?;
            store.bind_phone("+15550003", typed, false).await?;
            store.bind_phone("+15550004", typed, false).await?;
            store
                .phones
                .insert("+15550003", entry(typed))
                .map_err(backend)?;
            // `moved` verified +15550006 then +15550005 (the first left
            // behind), then `taker` took +15550005: `moved`'s record names
            // none, the directory still gives it +15550006.
            store.bind_phone("+15550006", moved, true).await?;
            store.bind_phone("+15550005", moved, true).await?;
            store
                .phones
                .insert("+15550006", entry(moved))
                .map_err(backend)?;
            store.bind_phone("+15550005", taker, true).await?;
            // And a record naming a number the directory gives another.
            let claims_taken = AccountRecord {
                phone_number: "+15550005".into(),
                ..older_account_record(false)
            };
            store
                .records
                .insert(plain.as_bytes(), encode_record(&claims_taken))
                .map_err(backend)?;
            store
                .meta
                .remove(OLDER_ACCOUNTS_DONE_KEY)
                .map_err(backend)?;
            store.close().await?;
        }
        let store = open(dir.path());
        let record = |kind, phone: &str, discoverable| AccountRecord {
            kind,
            created_at_ms: 0,
            phone_number: phone.into(),
            discoverable,
            ..AccountRecord::default()
        };
        assert_eq!(
            store.account_record(shop).await?,
            Some(record(Kind::Business, "", false))
        );
        assert_eq!(
            store.account_record(person).await?,
            Some(record(Kind::Customer, "+15550001", true))
        );
        assert_eq!(
            store.account_record(plain).await?,
            Some(record(Kind::Customer, "", false))
        );
        assert_eq!(
            store.account_record(typed).await?.map(|r| r.created_at_ms),
            Some(5_000)
        );
        assert_eq!(store.lookup_phone("+15550001").await?, Some((person, true)));
        assert_eq!(store.lookup_phone("+15550009").await?, None);
        assert_eq!(store.lookup_phone("+15550003").await?, None);
        assert_eq!(store.lookup_phone("+15550004").await?, Some((typed, false)));
        assert_eq!(store.lookup_phone("+15550006").await?, None);
        assert_eq!(store.lookup_phone("+15550005").await?, Some((taker, true)));
        assert_eq!(
            store.account_record(moved).await?.map(|r| r.phone_number),
            Some(String::new())
        );
        // A number proved later is noted in the record.
        store.bind_phone("+15550002", plain, false).await?;
        assert_eq!(
            store.account_record(plain).await?,
            Some(record(Kind::Customer, "+15550002", false))
        );
        // Every account that logged in stays.
        assert_eq!(
            store.expire_unauthenticated(u64::MAX, 100).await?,
            ExpiredAccounts::default()
        );
        // Once done, not again: a record missing now (as an older relay
        // would leave one, run on this data directory again) stays
        // missing, until its account proves a number.
        store.records.remove(shop.as_bytes()).map_err(backend)?;
        store.close().await?;
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.account_record(shop).await?, None);
        store.bind_phone("+15550008", shop, false).await?;
        assert_eq!(
            store.account_record(shop).await?,
            Some(record(Kind::Business, "+15550008", false))
        );
        assert_eq!(store.lookup_phone("+15550008").await?, Some((shop, false)));
        store.close().await
    }

    /// An account that logs in for the first time while an expiry pass
    /// runs stays: the pass awaits between accounts, and an account listed
    /// as due is expired only if it is still unauthenticated then (before,
    /// it was deleted though it had just logged in).
    #[tokio::test]
    async fn an_account_that_logs_in_during_an_expiry_pass_stays() -> StorageResult<()> {
        use std::task::Poll;
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let store = open(dir.path());
        let (idle, late) = (
            AccountId::generate(&mut rand::rng()),
            AccountId::generate(&mut rand::rng()),
        );
        register_at(&store, idle, 1_000).await?;
        register_at(&store, late, 1_001).await?;
        let mut pass = std::pin::pin!(store.expire_unauthenticated(2_000, 100));
        // The pass expires `idle` (listed first) and waits for its write
        // to be durable, with `late` still to come...
        let first = std::future::poll_fn(|cx| Poll::Ready(pass.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "the pass ended before it awaited");
        // ...when `late` logs in for the first time.
        store.mark_authenticated(late).await?;
        assert_eq!(
            pass.await?,
            ExpiredAccounts {
                accounts: 1,
                envelopes: 0
            }
        );
        assert!(store.device_list(idle).await?.is_none());
        assert!(store.device_list(late).await?.is_some());
        assert!(store.account_record(late).await?.is_some());
        assert_eq!(
            store.expire_unauthenticated(u64::MAX, 100).await?,
            ExpiredAccounts::default()
        );
        store.close().await
    }

    /// Item 11: an account that never authenticated expires with all it
    /// had, its queued mail too, so the next start (which refuses mail for
    /// accounts sled does not know) still opens; one that logged in stays.
    #[tokio::test]
    async fn accounts_that_never_authenticated_expire_with_their_mail_and_the_store_reopens()
    -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let store = open(dir.path());
        let (idle, active) = (
            AccountId::generate(&mut rand::rng()),
            AccountId::generate(&mut rand::rng()),
        );
        register_at(&store, idle, 1_000).await?;
        register_at(&store, active, 1_000).await?;
        store.mark_authenticated(active).await?;
        let keys = (1..=3).map(one_time).collect();
        assert_eq!(store.store_prekeys(idle, 1, None, keys, 10).await?, Ok(3));
        store.bind_phone("+15550001", idle, true).await?;
        assert_eq!(store.claim_name("idleco", idle).await?, NameClaim::Claimed);
        store.enqueue(message(active, idle, 1, &[1]), 10).await?;
        store.enqueue(message(idle, active, 2, &[1]), 10).await?;

        // Registered at 1000: not before 1000.
        assert_eq!(
            store.expire_unauthenticated(1_000, 100).await?,
            ExpiredAccounts::default()
        );
        assert_eq!(
            store.expire_unauthenticated(2_000, 100).await?,
            ExpiredAccounts {
                accounts: 1,
                envelopes: 1
            }
        );
        assert!(store.account_record(idle).await?.is_none());
        assert!(store.device_list(idle).await?.is_none());
        assert_eq!(store.lookup_phone("+15550001").await?, None);
        assert_eq!(store.lookup_name("idleco").await?, None);
        assert_eq!(store.one_time_prekey_count(idle, 1).await?, 0);
        assert_eq!(store.queued_count(idle, 1).await?, 0);
        assert!(store.device_list(active).await?.is_some());
        assert_eq!(store.queued_count(active, 1).await?, 1);
        assert_eq!(
            store.expire_unauthenticated(u64::MAX, 100).await?,
            ExpiredAccounts::default(),
            "the account that logged in stays"
        );

        // A send that read the device list before the expiry lands after
        // it; the restart drops it by the note instead of refusing to start.
        store.enqueue(message(active, idle, 3, &[1]), 10).await?;
        store.close().await?;
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.queued_count(idle, 1).await?, 0);
        assert_eq!(store.queued_count(active, 1).await?, 1);
        assert!(store.device_list(active).await?.is_some());
        store.close().await?;
        Ok(())
    }

    /// An expired account's id is never given out again: registered anew,
    /// it would inherit what named the old account (consents given to it,
    /// blocks, first contacts), and the expiry note's pass would drop the
    /// new account's mail an hour later. Also after a restart.
    #[tokio::test]
    async fn an_expired_account_id_is_not_registered_again() -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let idle = AccountId::generate(&mut rand::rng());
        let again = |created_at_ms| {
            let mut rng = rand::rng();
            let key = comptoir_protocol::AccountKeyPair::generate(&mut rng);
            let device = comptoir_protocol::IdentityKeyPair::generate(&mut rng);
            let list = signed_list(&key, idle, 1, vec![(1, *device.public())]);
            let record = AccountRecord {
                created_at_ms,
                ..AccountRecord::default()
            };
            (list, record)
        };
        {
            let store = open(dir.path());
            register_at(&store, idle, 1_000).await?;
            assert_eq!(store.expire_unauthenticated(2_000, 100).await?.accounts, 1);
            let (list, record) = again(3_000);
            let created = store.create_account(&list?, &record).await?;
            assert!(matches!(created, Created::Retired), "{created:?}");
            assert!(store.device_list(idle).await?.is_none(), "registered again");
            assert!(store.account_record(idle).await?.is_none());
            store.close().await?;
        }
        let store = open(dir.path());
        let (list, record) = again(4_000);
        let created = store.create_account(&list?, &record).await?;
        assert!(matches!(created, Created::Retired), "{created:?}");
        assert!(
            store.device_list(idle).await?.is_none(),
            "registered again after a restart"
        );
        assert_eq!(
            store.expire_unauthenticated(u64::MAX, 100).await?,
            ExpiredAccounts::default()
        );
        store.close().await?;
        Ok(())
    }

    /// Ids an older version expired (noted in `expired_accounts`, no
    /// `retired_accounts` yet) are retired at the next open.
    #[tokio::test]
    async fn ids_expired_by_an_older_version_are_retired_at_the_next_open() -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let idle = AccountId::generate(&mut rand::rng());
        {
            let store = open(dir.path());
            register_at(&store, idle, 1_000).await?;
            assert_eq!(store.expire_unauthenticated(2_000, 100).await?.accounts, 1);
            // As an older version left it: the note, no retired id.
            store
                .retired_accounts
                .remove(idle.as_bytes())
                .map_err(backend)?;
            store.close().await?;
        }
        let store = open(dir.path());
        assert!(
            store
                .retired_accounts
                .contains_key(idle.as_bytes())
                .map_err(backend)?
        );
        store.close().await?;
        Ok(())
    }

    /// A template of `business` named `t{n}` as submitted (pending).
    fn pending_template(
        business: AccountId,
        n: u32,
    ) -> StorageResult<crate::storage::StoredTemplate> {
        use comptoir_protocol::template::{Template, TemplateCategory};
        let template = Template {
            business,
            name: format!("t{n}"),
            language: "en_GB".into(),
            category: TemplateCategory::Utility,
            header: None,
            body: "Your order has shipped.".into(),
            footer: None,
            placeholders: Vec::new(),
            buttons: Vec::new(),
        };
        Ok(crate::storage::StoredTemplate {
            id: template
                .template_id()
                .map_err(|e| StorageError::Backend(e.to_string()))?,
            template,
            status: wire::TemplateStatus::Pending,
            submitted_at_ms: 1,
            approval: None,
            reason: String::new(),
        })
    }

    /// A store written before the index of live templates (or by an older
    /// version since): it is built again at the next open, so the limit
    /// counts the templates already there.
    #[tokio::test]
    async fn templates_of_an_older_version_are_counted_after_the_next_open() -> StorageResult<()> {
        use crate::storage::Templates;
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let business = AccountId::generate(&mut rand::rng());
        {
            let store = open(dir.path());
            for n in 0..3 {
                store
                    .submit_template(pending_template(business, n)?, 250)
                    .await?;
            }
            // As an older version left it: no index.
            store.live_templates.clear().map_err(backend)?;
            store.close().await?;
        }
        let store = open(dir.path());
        assert_eq!(
            store
                .submit_template(pending_template(business, 3)?, 3)
                .await?,
            crate::storage::Submitted::TooMany(3)
        );
        store.close().await?;
        Ok(())
    }

    /// A store with one account and one envelope queued for it, closed.
    async fn populated(dir: &Path) -> StorageResult<()> {
        let a = AccountId::generate(&mut rand::rng());
        let store = open(dir);
        make_known(&store, a).await?;
        store.enqueue(message(a, a, 1, &[1]), 10).await?;
        store.close().await?;
        Ok(())
    }

    /// Every file under `dir` with its bytes.
    fn files(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
        let mut out = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files(&path));
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
        out
    }

    fn refusal(dir: &Path) -> String {
        match SledStore::open(dir, 1 << 20, Arc::new(Metrics::default())) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened a data directory that does not hold together"),
        }
    }

    #[tokio::test]
    async fn an_emptied_directory_store_stops_the_relay_and_changes_nothing() -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        populated(dir.path()).await?;
        // Everything of sled's gone (the accounts, keys, names), the mail
        // log left: today sled would start empty without a word.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name == "mail-log" || name == "relay.lock" {
                continue;
            }
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
        let log = files(&dir.path().join("mail-log"));
        let text = refusal(dir.path());
        assert!(
            text.contains("directory store") && text.contains("backup"),
            "{text}"
        );
        assert_eq!(
            files(&dir.path().join("mail-log")),
            log,
            "mail log untouched"
        );
        // Still refused the second time (nothing was written in between).
        assert!(refusal(dir.path()).contains("directory store"));
        Ok(())
    }

    #[tokio::test]
    async fn a_mail_log_from_elsewhere_or_missing_stops_the_relay() -> StorageResult<()> {
        let tmp = |_| tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()));
        let (one, two) = (tmp(1)?, tmp(2)?);
        populated(one.path()).await?;
        populated(two.path()).await?;
        let (log_one, log_two) = (one.path().join("mail-log"), two.path().join("mail-log"));
        std::fs::remove_dir_all(&log_one).unwrap();
        std::fs::rename(&log_two, &log_one).unwrap();
        let text = refusal(one.path());
        assert!(text.contains("another data directory"), "{text}");
        std::fs::remove_dir_all(&log_one).unwrap();
        let text = refusal(one.path());
        assert!(text.contains("missing"), "{text}");
        Ok(())
    }

    #[tokio::test]
    async fn a_directory_from_before_identities_is_adopted() -> StorageResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        populated(dir.path()).await?;
        // As an older relay left it: no identity on either side.
        std::fs::remove_file(dir.path().join("mail-log").join("store-id")).unwrap();
        {
            let db = ::sled::open(dir.path()).map_err(backend)?;
            db.drop_tree("meta").map_err(backend)?;
            db.flush().map_err(backend)?;
        }
        let store = open(dir.path());
        assert_eq!(store.total_queued().await?, 1);
        store.close().await?;
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.total_queued().await?, 1);
        store.close().await?;
        Ok(())
    }

    #[tokio::test]
    async fn receipts_kept_in_sled_by_an_older_relay_move_to_the_mail_log_once() -> StorageResult<()>
    {
        use comptoir_protocol::proto::wire::{self, server_frame::Body};
        let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
        let (alice, bob) = (
            AccountId::generate(&mut rand::rng()),
            AccountId::generate(&mut rand::rng()),
        );
        {
            let store = open(dir.path());
            make_known(&store, alice).await?;
            make_known(&store, bob).await?;
            store.close().await?;
        }
        let legacy = |n: u8| {
            let frame = crate::frame::server(
                0,
                Body::Delivered(wire::Delivered {
                    message_id: vec![n; MESSAGE_ID_LEN],
                    recipient_account: bob.to_vec(),
                    recipient_device: 2,
                    accept_id: 0,
                    ..Default::default()
                }),
            );
            let mut value = (crate::state::now_ms() + 600_000).to_be_bytes().to_vec();
            value.extend_from_slice(&frame);
            value
        };
        let key = |id: u64| {
            let mut key = alice.to_vec();
            key.extend_from_slice(&5u32.to_be_bytes());
            key.extend_from_slice(&id.to_be_bytes());
            key
        };
        {
            // As an older relay left it (`store_receipt`).
            let db = ::sled::open(dir.path()).map_err(backend)?;
            let tree = db.open_tree("receipts").map_err(backend)?;
            tree.insert(key(1), legacy(1)).map_err(backend)?;
            tree.insert(key(2), legacy(2)).map_err(backend)?;
            tree.insert(key(3), b"garbage".to_vec()).map_err(backend)?;
            db.flush().map_err(backend)?;
        }
        for _ in 0..2 {
            let store = open(dir.path());
            let got = store.pending_receipts(alice, 5, None, 10, 0).await?;
            let ids: Vec<u8> = got.iter().map(|r| r.message_id[0]).collect();
            assert_eq!(ids, vec![1, 2], "moved once, in order");
            assert!(
                got.iter()
                    .all(|r| r.recipient == bob && r.recipient_device == 2)
            );
            store.close().await?;
        }
        let db = ::sled::open(dir.path()).map_err(backend)?;
        let tree = db.open_tree("receipts").map_err(backend)?;
        let left: Vec<IVec> = tree
            .iter()
            .keys()
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        assert_eq!(
            left,
            vec![IVec::from(key(3))],
            "only what does not decode stays"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_truncated_directory_store_stops_the_relay() -> StorageResult<()> {
        for keep in [0u64, 2] {
            let dir = tempfile::tempdir().map_err(|e| StorageError::Backend(e.to_string()))?;
            populated(dir.path()).await?;
            let db = dir.path().join("db");
            let len = std::fs::metadata(&db).unwrap().len();
            let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
            file.set_len(len * keep / 4).unwrap();
            drop(file);
            let log = files(&dir.path().join("mail-log"));
            // Either refused, or whatever sled recovered still holds the
            // account: never an empty store beside the mail log.
            match SledStore::open(dir.path(), 1 << 20, Arc::new(Metrics::default())) {
                Err(e) => {
                    let text = e.to_string();
                    assert!(text.contains("directory store"), "{text}");
                    assert_eq!(
                        files(&dir.path().join("mail-log")),
                        log,
                        "mail log untouched"
                    );
                }
                Ok(store) => {
                    assert_eq!(store.accounts.len(), 1, "cut to {keep}/4");
                    assert_eq!(store.total_queued().await?, 1);
                    store.close().await?;
                }
            }
        }
        Ok(())
    }
}
