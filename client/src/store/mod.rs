//! The local store, encrypted at rest.
//!
//! Layout of a data directory:
//! - `store.header`: `MAGIC (8) || version (1) || m_cost (u32 BE) || t_cost
//!   (u32 BE) || p_cost (u32 BE) || salt (16) || verifier length (u16 BE) ||
//!   verifier`. The key is Argon2id(passphrase, salt) with those costs; the
//!   verifier is a sealed known string, so a wrong passphrase is reported as
//!   [`ClientError::WrongPassphrase`] before anything is read or written.
//! - `store.lock`: empty; a client holds an exclusive lock on it while the
//!   store is open.
//! - `daemon.sock`: while `comptoir daemon` (the CLI crate) holds the
//!   store, the socket other programs reach the account through (0600).
//! - `records.log`: the records of every tree (see [`record_log`]). Every
//!   value is sealed with [`comptoir_protocol::seal_record`]; the sealed
//!   plaintext starts with the tree name and key it belongs to, so a
//!   record moved to another key on disk is refused rather than believed.
//!   A store from before it kept them in sled (`db/`), imported when first
//!   opened (see [`sled_import`]).
//!
//! Keys (account ids, message ids) are stored in the clear: the store hides
//! content, not who the user talks to. Zeroized plaintext buffers are
//! returned to callers as [`Zeroizing`].
//!
//! Modules: [`record_log`], the engine (records in memory, an append-only
//! log on disk); [`sled_import`], the import of a store sled wrote.

mod record_log;
mod sled_import;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, TryLockError};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use argon2::{Algorithm, Argon2, Params, Version};
use comptoir_protocol::{RecordKind, StorageKey, open_record, seal_record};
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use record_log::{LogError, RecordLog, Value};

/// File name of the header beside the database.
pub const HEADER_FILE: &str = "store.header";
/// File name of the lock this client holds on the data directory.
const LOCK_FILE: &str = "store.lock";
const MAGIC: &[u8; 8] = b"CMPTRSTO";
/// Version 2 binds the header (costs, salt) into the sealed verifier;
/// version 1 stores (verifier alone) still open.
const HEADER_VERSION: u8 = 2;
const HEADER_VERSION_V1: u8 = 1;
/// Largest accepted Argon2id memory cost, in KiB (1 GiB): a header asking
/// for more is refused instead of exhausting memory.
pub const MAX_M_COST: u32 = 1024 * 1024;
/// Largest accepted Argon2id pass count.
pub const MAX_T_COST: u32 = 16;
/// Largest accepted Argon2id lane count.
pub const MAX_P_COST: u32 = 8;
/// Shortest passphrase accepted for a new store, in characters.
pub const MIN_PASSPHRASE_CHARS: usize = 8;
const SALT_LEN: usize = 16;
const VERIFIER: &[u8] = b"Comptoir store verifier v1";
/// Longest header accepted (a verifier is ~70 bytes).
const MAX_HEADER_LEN: usize = 1024;

/// Argon2id costs. Stored in the header so a store made with other costs
/// still opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// 64 MiB, 3 passes, 1 lane: above OWASP's Argon2id minimum (19 MiB,
    /// t=2), about a quarter of a second on a laptop core to open.
    pub const DEFAULT: Self = Self {
        m_cost: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };

    /// Whether the costs are within [`MAX_M_COST`], [`MAX_T_COST`] and
    /// [`MAX_P_COST`] (and non-zero).
    pub fn within_bounds(self) -> bool {
        (1..=MAX_M_COST).contains(&self.m_cost)
            && (1..=MAX_T_COST).contains(&self.t_cost)
            && (1..=MAX_P_COST).contains(&self.p_cost)
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The trees of the database, one per kind of record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tree {
    /// The account and device keys (one record).
    Account,
    /// Session records, by peer account (16) || device id (u32 BE).
    Sessions,
    /// Private prekeys, by kind byte || key id (u32 BE).
    PreKeys,
    /// Message history, by peer account (16) || message id (16).
    Messages,
    /// Messages not yet accepted by the relay, same keys as `Messages`.
    Outbox,
    /// Contact names of an older store, by name (in plaintext: moved
    /// into `SealedContacts` when the store is opened).
    Contacts,
    /// Contact names and account ids, sealed, by a random key.
    SealedContacts,
    /// Accounts this account blocked at the relay, by account id.
    Blocked,
    /// Pinned account keys and device lists of peers, by account id.
    Peers,
    /// Messages refused by their labels, by sender account (16) ||
    /// envelope message id (16).
    Evidence,
    /// Re-key and re-send limits (one record), kept across restarts.
    Guards,
    /// Envelopes that could not be decoded or decrypted, by sequence (u64 BE).
    Quarantine,
    /// Consents this account granted, by business (see `rule_checks`).
    Consents,
    /// When this account last wrote to each peer (see `rule_checks`).
    Wrote,
    /// The pinned operator key (see `operator_pin`).
    Operator,
    /// The head of this business's bill it last verified (see
    /// `client::bill`).
    Bills,
    /// Message requests and accepted peers (see `requests`).
    Requests,
    /// Names and dates of this account's devices, by device id (u32 BE)
    /// (see `device_notes`).
    DeviceNotes,
    /// Templates fetched from the relay with their newest approval record,
    /// by template id (32) (see `template_cache`).
    Templates,
    /// Which template a template message or quick reply refers to, by peer
    /// account (16) || message id (16) (see `template_cache`).
    TemplateMessages,
    /// The body of an outgoing message that is not plain text (a template
    /// instance, a quick reply), by peer account (16) || message id (16)
    /// (see `outgoing_bodies`).
    OutgoingBodies,
    /// Interactive messages (reply buttons, lists) sent or received, by
    /// peer account (16) || message id (16) (see `interactive_messages`).
    InteractiveMessages,
    /// The last checked view of each business (verified or not), by
    /// account id (see `business_views`).
    BusinessViews,
    /// When each peer last wrote to this account: the relay's accept time
    /// of its last conversation message (see `rule_checks`).
    Heard,
    /// Attachments received or sent (their pointers: blob id, key,
    /// digests), by peer account (16) || message id (16) (see
    /// `attachments`).
    Attachments,
    /// What a report of each franked message received would reveal, by
    /// sender account (16) || message id (16) (see `franked`).
    Franked,
    /// Control messages (read receipts, copies for this account's other
    /// devices) waiting to be sent, by sequence (u64 BE) (see
    /// `control_outbox`).
    ControlOutbox,
    /// Status posts received or posted, by poster account (16) || post id
    /// (16) (see `status`).
    StatusPosts,
    /// A message's status once it moved past the one its `Messages`
    /// record holds, same keys as `Messages`: a status change writes this
    /// one byte rather than the whole message again (see
    /// `messages::advance`).
    MessageStatuses,
}

impl Tree {
    /// Every tree.
    const ALL: [Self; 29] = [
        Self::Account,
        Self::Sessions,
        Self::PreKeys,
        Self::Messages,
        Self::Outbox,
        Self::Contacts,
        Self::SealedContacts,
        Self::Blocked,
        Self::Peers,
        Self::Evidence,
        Self::Guards,
        Self::Quarantine,
        Self::Consents,
        Self::Wrote,
        Self::Operator,
        Self::Bills,
        Self::Requests,
        Self::DeviceNotes,
        Self::Templates,
        Self::TemplateMessages,
        Self::OutgoingBodies,
        Self::InteractiveMessages,
        Self::BusinessViews,
        Self::Heard,
        Self::Attachments,
        Self::Franked,
        Self::ControlOutbox,
        Self::StatusPosts,
        Self::MessageStatuses,
    ];

    /// The tree's number in the record log: fixed for good (a new tree
    /// takes the next number; a number is never reused).
    fn code(self) -> u8 {
        match self {
            Self::Account => 0,
            Self::Sessions => 1,
            Self::PreKeys => 2,
            Self::Messages => 3,
            Self::Outbox => 4,
            Self::Contacts => 5,
            Self::SealedContacts => 6,
            Self::Blocked => 7,
            Self::Peers => 8,
            Self::Evidence => 9,
            Self::Guards => 10,
            Self::Quarantine => 11,
            Self::Consents => 12,
            Self::Wrote => 13,
            Self::Operator => 14,
            Self::Bills => 15,
            Self::Requests => 16,
            Self::DeviceNotes => 17,
            Self::Templates => 18,
            Self::TemplateMessages => 19,
            Self::OutgoingBodies => 20,
            Self::InteractiveMessages => 21,
            Self::BusinessViews => 22,
            Self::Heard => 23,
            Self::Attachments => 24,
            Self::Franked => 25,
            Self::ControlOutbox => 26,
            Self::StatusPosts => 27,
            Self::MessageStatuses => 28,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Sessions => "sessions",
            Self::PreKeys => "prekeys",
            Self::Messages => "messages",
            Self::Outbox => "outbox",
            Self::Contacts => "contacts",
            Self::SealedContacts => "contacts_sealed",
            Self::Blocked => "blocked",
            Self::Peers => "peers",
            Self::Evidence => "evidence",
            Self::Guards => "guards",
            Self::Quarantine => "quarantine",
            Self::Consents => "consents",
            Self::Wrote => "wrote",
            Self::Operator => "operator",
            Self::Bills => "bills",
            Self::Requests => "requests",
            Self::DeviceNotes => "device_notes",
            Self::Templates => "templates",
            Self::TemplateMessages => "template_messages",
            Self::OutgoingBodies => "outgoing_bodies",
            Self::InteractiveMessages => "interactive_messages",
            Self::BusinessViews => "business_views",
            Self::Heard => "heard",
            Self::Attachments => "attachments",
            Self::Franked => "franked",
            Self::ControlOutbox => "control_outbox",
            Self::StatusPosts => "status_posts",
            Self::MessageStatuses => "message_statuses",
        }
    }

    fn kind(self) -> RecordKind {
        match self {
            Self::Account => RecordKind::Identity,
            Self::Sessions => RecordKind::Session,
            Self::PreKeys => RecordKind::PreKey,
            _ => RecordKind::ClientData,
        }
    }
}

/// Create `dir` (and its parents) if missing, and make it this user's
/// only (0700 on Unix): the store is sealed, but the names and sizes of
/// its files are nobody else's business either.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)
        .map_err(|e| ClientError::io(format!("creating {}", dir.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
            ClientError::io(format!("making {} private to this user", dir.display()), e)
        })?;
    }
    Ok(())
}

/// A record as [`Store::scan`] returns it: its key and opened plaintext.
pub type Record = (Vec<u8>, Zeroizing<Vec<u8>>);

/// An open store: the database and the key that seals its records.
///
/// Closing it ([`Store::close`], or dropping it) syncs what is left and
/// lets go of the files, so the store can be opened again at once.
pub struct Store {
    // Fields drop in declaration order: `log` (which syncs) before `lock`.
    log: RecordLog,
    key: StorageKey,
    dir: PathBuf,
    /// Serialises read-modify-write of one record (see [`Store::updating`]).
    updates: Mutex<()>,
    /// Decoded records by their sealed bytes (see [`Store::get_decoded`]).
    decoded: Mutex<DecodedCache>,
    /// Opened plaintexts of small records read on every send (see
    /// [`OpenedCache`]).
    opened: Mutex<OpenedCache>,
    lock: DirLock,
}

/// Values kept per record (tree and key), each beside the sealed bytes it
/// was made from; emptied when it holds [`RECORD_CACHE_ENTRIES`] (it only
/// saves work).
struct RecordCache<V> {
    entries: HashMap<(Tree, Vec<u8>), V>,
}

impl<V> Default for RecordCache<V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<V> RecordCache<V> {
    /// Keep `value` for `key` of `tree`, emptying the cache first if full.
    fn keep(&mut self, tree: Tree, key: &[u8], value: V) {
        if self.entries.len() >= RECORD_CACHE_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert((tree, key.to_vec()), value);
    }
}

/// Records decoded from their sealed bytes, kept while the sealed bytes on
/// disk stay the same. A rewrite seals under a fresh nonce, so the sealed
/// bytes change with every write and a stale entry is never returned. The
/// keys (sealed bytes) are ciphertext; the decoded values stay in memory
/// only as long as the client would hold them anyway.
type DecodedCache = RecordCache<Decoded>;

/// A record's sealed bytes and what they decoded to.
type Decoded = (Value, Arc<dyn Any + Send + Sync>);

/// Entries each [`RecordCache`] keeps at most; it is emptied when full
/// (it only saves decoding and opening work).
const RECORD_CACHE_ENTRIES: usize = 4096;

/// The plaintexts of records that a send writes and then reads back (its
/// message, to advance its status; the peer's last-wrote time; whether
/// the peer's request was accepted), each kept with the sealed bytes it
/// belongs to, as [`DecodedCache`] does: opening a record costs an AEAD
/// decryption, more than the rest of the read. Only the trees in
/// [`OPENED_TREES`] and plaintexts up to [`OPENED_MAX_LEN`] bytes are kept
/// (at most 16 MiB of plaintexts, with the sealed bytes each belongs to),
/// zeroized when dropped, and dropped when their record is removed.
type OpenedCache = RecordCache<Opened>;

/// A record's sealed bytes and its plaintext.
type Opened = (Value, Zeroizing<Vec<u8>>);

/// The trees whose opened records [`OpenedCache`] keeps.
const OPENED_TREES: [Tree; 3] = [Tree::Messages, Tree::Wrote, Tree::Requests];
/// Longer plaintexts are not kept.
const OPENED_MAX_LEN: usize = 4096;

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            log: _,
            key: _,
            dir,
            updates: _,
            decoded: _,
            opened: _,
            lock: _,
        } = self;
        f.debug_struct("Store")
            .field("dir", dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Whether `dir` holds a store.
    pub fn exists(dir: &Path) -> bool {
        dir.join(HEADER_FILE).is_file()
    }

    /// Create a new store in `dir` (created if missing, readable by this
    /// user only) under `passphrase`.
    pub fn create(dir: &Path, passphrase: &str, params: KdfParams) -> Result<Self> {
        if Self::exists(dir) {
            return Err(ClientError::AlreadyInitialized {
                dir: dir.to_path_buf(),
            });
        }
        if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(ClientError::InvalidArgument(format!(
                "the passphrase is too short: use at least {MIN_PASSPHRASE_CHARS} characters \
                 (a few words are best); it alone protects this device's keys and history"
            )));
        }
        if !params.within_bounds() {
            return Err(ClientError::InvalidArgument(format!(
                "Argon2id costs out of bounds (memory 1..={MAX_M_COST} KiB, passes \
                 1..={MAX_T_COST}, lanes 1..={MAX_P_COST})"
            )));
        }
        create_private_dir(dir)?;
        let mut salt = [0u8; SALT_LEN];
        rand::fill(&mut salt);
        let key = derive_key(passphrase, &salt, params)?;
        let prefix = header_prefix(HEADER_VERSION, params, &salt);
        let mut bound = Zeroizing::new(VERIFIER.to_vec());
        bound.extend_from_slice(&prefix);
        let verifier = seal_record(&key, RecordKind::ClientData, &bound, &mut rand::rng())?;
        let header = encode_header(prefix, &verifier)?;
        let lock = DirLock::acquire(dir)?;
        let log = RecordLog::open(dir, true)?;
        write_atomically(&dir.join(HEADER_FILE), &header)?;
        Ok(Self {
            log,
            key,
            dir: dir.to_path_buf(),
            updates: Mutex::new(()),
            decoded: Mutex::new(DecodedCache::default()),
            opened: Mutex::new(OpenedCache::default()),
            lock,
        })
    }

    /// Open the store in `dir`. A wrong passphrase is
    /// [`ClientError::WrongPassphrase`] and touches nothing.
    pub fn open(dir: &Path, passphrase: &str) -> Result<Self> {
        let path = dir.join(HEADER_FILE);
        if !path.is_file() {
            return Err(ClientError::NotInitialized {
                dir: dir.to_path_buf(),
            });
        }
        let bytes = fs::read(&path)
            .map_err(|e| ClientError::io(format!("reading {}", path.display()), e))?;
        let header = decode_header(&bytes)?;
        let key = derive_key(passphrase, &header.salt, header.params)?;
        // v2: the verifier also covers the header's costs and salt.
        let mut expected = VERIFIER.to_vec();
        if header.version != HEADER_VERSION_V1 {
            expected.extend_from_slice(header.prefix);
        }
        match open_record(&key, RecordKind::ClientData, header.verifier) {
            Ok(plain) if plain.as_slice() == expected.as_slice() => {}
            _ => return Err(ClientError::WrongPassphrase),
        }
        let lock = DirLock::acquire(dir)?;
        sled_import::import_if_needed(dir)?;
        let log = RecordLog::open(dir, false)?;
        Ok(Self {
            log,
            key,
            dir: dir.to_path_buf(),
            updates: Mutex::new(()),
            decoded: Mutex::new(DecodedCache::default()),
            opened: Mutex::new(OpenedCache::default()),
            lock,
        })
    }

    /// Sync what is left and close the files, so [`Self::open`] right
    /// after succeeds. Dropping a store does the same but can only log a
    /// failure.
    pub fn close(self) -> Result<()> {
        let Self {
            log,
            key: _,
            dir: _,
            updates: _,
            decoded: _,
            opened: _,
            lock,
        } = self;
        let synced = log.close();
        drop(lock);
        Ok(synced?)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Seal and write a record.
    pub fn put(&self, tree: Tree, key: &[u8], plaintext: &[u8]) -> Result<()> {
        let sealed = Value::from(self.seal(tree, key, plaintext)?);
        self.log.insert(tree.code(), key, Arc::clone(&sealed))?;
        self.remember_opened(tree, key, sealed, plaintext);
        Ok(())
    }

    /// [`Self::put`] of a record read back with [`Self::get_decoded`]:
    /// `value` is what `plaintext` decodes to, kept as the decoded value of
    /// the sealed bytes just written, so the next read of the record does
    /// not decode it again (a session record is rewritten by every send and
    /// read by the next).
    pub fn put_decoded<T: Send + Sync + 'static>(
        &self,
        tree: Tree,
        key: &[u8],
        plaintext: &[u8],
        value: T,
    ) -> Result<()> {
        let sealed = Value::from(self.seal(tree, key, plaintext)?);
        self.log.insert(tree.code(), key, Arc::clone(&sealed))?;
        self.remember_decoded(tree, key, sealed, Arc::new(value));
        Ok(())
    }

    /// `plaintext` sealed for `key` in `tree`.
    fn seal(&self, tree: Tree, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut bound = Zeroizing::new(binding(tree, key));
        bound.extend_from_slice(plaintext);
        Ok(seal_record(
            &self.key,
            tree.kind(),
            &bound,
            &mut rand::rng(),
        )?)
    }

    /// Keep `value` as what the record `key` of `tree` decodes to while its
    /// sealed bytes are `sealed`.
    fn remember_decoded(
        &self,
        tree: Tree,
        key: &[u8],
        sealed: Value,
        value: Arc<dyn Any + Send + Sync>,
    ) {
        let mut cache = self.decoded.lock().unwrap_or_else(PoisonError::into_inner);
        cache.keep(tree, key, (sealed, value));
    }

    /// Keep `plaintext` as the opened record `key` of `tree` while its
    /// sealed bytes are `sealed`, if it is one [`OpenedCache`] keeps.
    fn remember_opened(&self, tree: Tree, key: &[u8], sealed: Value, plaintext: &[u8]) {
        if !OPENED_TREES.contains(&tree) {
            return;
        }
        if plaintext.len() > OPENED_MAX_LEN {
            self.forget_opened(tree, key);
            return;
        }
        let mut cache = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        cache.keep(tree, key, (sealed, Zeroizing::new(plaintext.to_vec())));
    }

    /// Read and open a record.
    pub fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let Some(sealed) = self.log.get(tree.code(), key) else {
            return Ok(None);
        };
        if OPENED_TREES.contains(&tree) {
            let cache = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
            // The same allocation means the same record (see
            // `get_decoded`).
            if let Some((seen, plaintext)) = cache.entries.get(&(tree, key.to_vec()))
                && Arc::ptr_eq(seen, &sealed)
            {
                return Ok(Some(plaintext.clone()));
            }
        }
        let plaintext = self.unseal(tree, key, &sealed)?;
        self.remember_opened(tree, key, sealed, &plaintext);
        Ok(Some(plaintext))
    }

    /// Read a record and decode it with `decode`, or return the value
    /// decoded last time if its sealed bytes did not change since. For
    /// records read on every send whose decoding is costly (session
    /// records and peer records decode and check public keys).
    pub fn get_decoded<T: Clone + Send + Sync + 'static>(
        &self,
        tree: Tree,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<Option<T>> {
        let Some(sealed) = self.log.get(tree.code(), key) else {
            return Ok(None);
        };
        let cache_key = (tree, key.to_vec());
        {
            let cache = self.decoded.lock().unwrap_or_else(PoisonError::into_inner);
            // Every write stores new bytes, and the cache holds the ones
            // it saw, so the same allocation means the same record.
            if let Some((seen, value)) = cache.entries.get(&cache_key)
                && Arc::ptr_eq(seen, &sealed)
                && let Some(value) = value.downcast_ref::<T>()
            {
                return Ok(Some(value.clone()));
            }
        }
        let value = decode(&self.unseal(tree, key, &sealed)?)?;
        self.remember_decoded(tree, key, sealed, Arc::new(value.clone()));
        Ok(Some(value))
    }

    /// Whether a record exists (without opening it).
    pub fn contains(&self, tree: Tree, key: &[u8]) -> Result<bool> {
        Ok(self.log.contains(tree.code(), key))
    }

    /// How many records have keys starting with `prefix` (none opened).
    pub fn count(&self, tree: Tree, prefix: &[u8]) -> Result<usize> {
        Ok(self.log.count_prefix(tree.code(), prefix))
    }

    /// The key and stored (sealed) size of every record whose key starts
    /// with `prefix`, in key order; nothing is opened.
    pub fn sizes(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<(Vec<u8>, usize)>> {
        Ok(self
            .log
            .scan_prefix(tree.code(), prefix)
            .into_iter()
            .map(|(key, sealed)| (key, sealed.len()))
            .collect())
    }

    /// The key and stored (sealed) size of the first record in key order.
    pub fn first_size(&self, tree: Tree) -> Result<Option<(Vec<u8>, usize)>> {
        Ok(self
            .log
            .first(tree.code())
            .map(|(key, sealed)| (key, sealed.len())))
    }

    /// Delete a record.
    pub fn remove(&self, tree: Tree, key: &[u8]) -> Result<()> {
        self.log.remove(tree.code(), key)?;
        self.forget_opened(tree, key);
        Ok(())
    }

    /// Drop (and zeroize) the kept plaintext of `key` in `tree`, if any: a
    /// removed or no longer kept record's plaintext does not linger in
    /// memory.
    fn forget_opened(&self, tree: Tree, key: &[u8]) {
        if OPENED_TREES.contains(&tree) {
            let mut cache = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
            cache.entries.remove(&(tree, key.to_vec()));
        }
    }

    /// Every record whose key starts with `prefix`, opened, in key order.
    pub fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Record>> {
        self.log
            .scan_prefix(tree.code(), prefix)
            .into_iter()
            .map(|(key, sealed)| {
                let plain = self.unseal(tree, &key, &sealed)?;
                Ok((key, plain))
            })
            .collect()
    }

    /// A number larger than every one returned before by this store (across
    /// restarts): orders the history and the outbox without trusting clocks.
    pub fn next_sequence(&self) -> Result<u64> {
        Ok(self.log.next_sequence()?)
    }

    /// Make every write so far durable (fsync). Concurrent callers share
    /// syncs (group commit): the log's sync thread syncs again as soon as
    /// one sync ends while callers wait, and each caller returns once a
    /// sync that began after its call has completed.
    pub async fn flush(&self) -> Result<()> {
        let (ticket, mut synced) = self.log.request_sync();
        let synced = synced
            .wait_for(|synced| synced.ticket >= ticket || synced.broken.is_some())
            .await
            .map_err(|_| {
                ClientError::io(
                    "waiting for the store's sync",
                    std::io::Error::other("the store was closed"),
                )
            })?;
        if synced.ticket >= ticket {
            return Ok(());
        }
        let why = synced.broken.clone().unwrap_or_default();
        Err(LogError::Broken(why).into())
    }

    /// Hold this while reading, changing and writing back one record that
    /// another task may change too (message statuses, peer records); the
    /// critical section is synchronous and short.
    pub fn updating(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere leaves nothing torn.
        self.updates.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`Self::flush`] for synchronous callers.
    pub fn flush_blocking(&self) -> Result<()> {
        Ok(self.log.sync()?)
    }

    /// Whether the store's file, as it was opened, held some record of
    /// `tree`, a removed one included: its key (never sealed) stays in the
    /// file until [`Self::compact`].
    pub fn file_named_at_open(&self, tree: Tree) -> bool {
        self.log.file_named_at_open(tree.code())
    }

    /// Rewrite the store's file as its live records alone, so nothing
    /// removed stays in it; everything written so far is durable when it
    /// returns. Blocks (every sync waits meanwhile). A failure leaves the
    /// file as it was.
    pub fn compact(&self) -> Result<()> {
        Ok(self.log.compact()?)
    }

    fn unseal(&self, tree: Tree, key: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let plain = open_record(&self.key, tree.kind(), sealed).map_err(|_| {
            ClientError::CorruptStore(format!("a {} record does not open", tree.name()))
        })?;
        let expected = binding(tree, key);
        if !plain.starts_with(&expected) {
            return Err(ClientError::CorruptStore(format!(
                "a {} record was moved to another key",
                tree.name()
            )));
        }
        Ok(Zeroizing::new(plain[expected.len()..].to_vec()))
    }
}

/// `len (u16 BE) || tree name || key`: what a record says it belongs to.
fn binding(tree: Tree, key: &[u8]) -> Vec<u8> {
    let name = tree.name().as_bytes();
    let len = (name.len() + key.len()).min(usize::from(u16::MAX)) as u16;
    let mut out = Vec::with_capacity(2 + name.len() + key.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(key);
    out
}

/// The exclusive hold of one [`Store`] on its data directory, given up
/// when dropped (after the record log, which syncs first).
struct DirLock {
    _file: File,
}

impl DirLock {
    /// Take the directory, or [`ClientError::StoreLocked`] if another
    /// client has it.
    fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ClientError::io(format!("opening {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(ClientError::StoreLocked {
                    dir: dir.to_path_buf(),
                });
            }
            // No file locks on this platform: one client at a time is then
            // the user's to keep.
            Err(TryLockError::Error(e)) if e.kind() == ErrorKind::Unsupported => {}
            Err(TryLockError::Error(e)) => {
                return Err(ClientError::io(format!("locking {}", path.display()), e));
            }
        }
        Ok(Self { _file: file })
    }
}

impl From<LogError> for ClientError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Io { context, source } => ClientError::io(context, source),
            LogError::Damaged(_) => ClientError::CorruptStore(error.to_string()),
            LogError::TooLong => ClientError::InvalidArgument(error.to_string()),
            LogError::Broken(_) => ClientError::io(
                "writing the store",
                std::io::Error::other(error.to_string()),
            ),
        }
    }
}

fn derive_key(passphrase: &str, salt: &[u8], params: KdfParams) -> Result<StorageKey> {
    let params = Params::new(params.m_cost, params.t_cost, params.p_cost, Some(32))
        .map_err(|e| ClientError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, out.as_mut())
        .map_err(|e| ClientError::Kdf(e.to_string()))?;
    Ok(StorageKey::from_bytes(*out))
}

/// `magic || version || m_cost || t_cost || p_cost (u32 BE) || salt`.
fn header_prefix(version: u8, params: KdfParams, salt: &[u8; SALT_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + 12 + SALT_LEN);
    out.extend_from_slice(MAGIC);
    out.push(version);
    out.extend_from_slice(&params.m_cost.to_be_bytes());
    out.extend_from_slice(&params.t_cost.to_be_bytes());
    out.extend_from_slice(&params.p_cost.to_be_bytes());
    out.extend_from_slice(salt);
    out
}

fn encode_header(prefix: Vec<u8>, verifier: &[u8]) -> Result<Vec<u8>> {
    let len = u16::try_from(verifier.len())
        .map_err(|_| ClientError::CorruptStore("verifier too long".into()))?;
    let mut out = prefix;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(verifier);
    Ok(out)
}

/// Whether `bytes`, taken as a whole record log, replays (for the fuzz
/// targets, see [`crate::fuzzing`]).
pub(crate) fn replays_as_log(bytes: &[u8]) -> bool {
    record_log::replay(bytes).is_ok()
}

/// A decoded store header.
pub(crate) struct Header<'a> {
    version: u8,
    params: KdfParams,
    salt: [u8; SALT_LEN],
    /// The bytes the v2 verifier covers.
    prefix: &'a [u8],
    verifier: &'a [u8],
}

pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header<'_>> {
    let corrupt = |what: &str| ClientError::CorruptStore(format!("store header: {what}"));
    if bytes.len() > MAX_HEADER_LEN {
        return Err(corrupt("too long"));
    }
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt("bad magic"))?;
    let (&version, rest) = rest.split_first().ok_or_else(|| corrupt("truncated"))?;
    if version != HEADER_VERSION && version != HEADER_VERSION_V1 {
        return Err(corrupt("unsupported version"));
    }
    let mut cursor = Cursor(rest);
    let m_cost = cursor.u32().ok_or_else(|| corrupt("truncated"))?;
    let t_cost = cursor.u32().ok_or_else(|| corrupt("truncated"))?;
    let p_cost = cursor.u32().ok_or_else(|| corrupt("truncated"))?;
    let params = KdfParams {
        m_cost,
        t_cost,
        p_cost,
    };
    if !params.within_bounds() {
        return Err(corrupt("key derivation costs out of bounds"));
    }
    let salt: [u8; SALT_LEN] = cursor
        .take(SALT_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| corrupt("truncated"))?;
    let prefix = &bytes[..bytes.len() - cursor.0.len()];
    let len = cursor
        .take(2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| corrupt("truncated"))?;
    let verifier = cursor.take(len).ok_or_else(|| corrupt("truncated"))?;
    if !cursor.0.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Header {
        version,
        params,
        salt,
        prefix,
        verifier,
    })
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let context = || format!("writing {}", path.display());
    let mut file = fs::File::create(&tmp).map_err(|e| ClientError::io(context(), e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| ClientError::io(context(), e))?;
    fs::rename(&tmp, path).map_err(|e| ClientError::io(context(), e))?;
    Ok(())
}

/// Cheap Argon2id costs for unit tests, which check behaviour, not KDF strength.
#[cfg(test)]
pub(crate) const FAST_TEST_KDF: KdfParams = KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};

#[cfg(test)]
mod tests {
    use super::*;

    use super::FAST_TEST_KDF as FAST;

    #[test]
    fn round_trip_and_wrong_passphrase() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        {
            let store = Store::create(dir.path(), "correct horse", FAST)?;
            store.put(Tree::Contacts, b"alice", b"hello")?;
            store.flush_blocking()?;
        }
        assert!(matches!(
            Store::open(dir.path(), "wrong"),
            Err(ClientError::WrongPassphrase)
        ));
        let store = Store::open(dir.path(), "correct horse")?;
        let got = store.get(Tree::Contacts, b"alice")?;
        assert_eq!(got.as_deref().map(Vec::as_slice), Some(&b"hello"[..]));
        assert!(matches!(
            Store::create(dir.path(), "x", FAST),
            Err(ClientError::AlreadyInitialized { .. })
        ));
        Ok(())
    }

    /// Reads served from the opened plaintexts never return a record
    /// other than the one stored now: each rewrite, removal and rewrite
    /// after removal is seen; long plaintexts and other trees are not kept,
    /// and a removed or replaced plaintext is not kept either.
    #[test]
    fn opened_records_kept_for_reads_follow_every_write() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let store = Store::create(dir.path(), "opened records", FAST)?;
        let read = |key: &[u8]| -> Result<Option<Vec<u8>>> {
            Ok(store.get(Tree::Messages, key)?.map(|p| p.to_vec()))
        };
        let kept = |tree: Tree, key: &[u8]| {
            let cache = store.opened.lock().unwrap_or_else(PoisonError::into_inner);
            cache.entries.contains_key(&(tree, key.to_vec()))
        };
        store.put(Tree::Messages, b"m", b"one")?;
        assert!(kept(Tree::Messages, b"m"));
        assert_eq!(read(b"m")?, Some(b"one".to_vec()));
        store.put(Tree::Messages, b"m", b"two")?;
        assert_eq!(read(b"m")?, Some(b"two".to_vec()));
        store.remove(Tree::Messages, b"m")?;
        assert!(
            !kept(Tree::Messages, b"m"),
            "a removed plaintext stayed in memory"
        );
        assert_eq!(read(b"m")?, None);
        store.put(Tree::Messages, b"m", b"three")?;
        assert_eq!(read(b"m")?, Some(b"three".to_vec()));
        let long = vec![7u8; OPENED_MAX_LEN + 1];
        store.put(Tree::Messages, b"long", b"short first")?;
        store.put(Tree::Messages, b"long", &long)?;
        assert!(
            !kept(Tree::Messages, b"long"),
            "a replaced plaintext stayed in memory"
        );
        assert_eq!(read(b"long")?, Some(long));
        store.put(Tree::Contacts, b"c", b"not kept")?;
        assert!(!kept(Tree::Contacts, b"c"));
        // Reopened, a read opens the record and keeps it.
        store.close()?;
        let store = Store::open(dir.path(), "opened records")?;
        assert_eq!(
            store.get(Tree::Messages, b"m")?.map(|p| p.to_vec()),
            Some(b"three".to_vec())
        );
        let cache = store.opened.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(cache.entries.contains_key(&(Tree::Messages, b"m".to_vec())));
        Ok(())
    }

    /// Many stores in one process syncing at once all finish. (With sled,
    /// whose I/O threads every database in a process shared, they did
    /// not: its `flush_async` parked one of them until the log was
    /// stable, which took another of them to write, so a test or a load
    /// generator holding many clients hung for ever, and the runtime's
    /// workers with it; the deadline is kept by a thread of its own.)
    #[test]
    fn many_stores_flushing_at_once_all_finish() -> Result<()> {
        const STORES: usize = 32;
        const ROUNDS: usize = 30;
        let dirs = (0..STORES)
            .map(|_| tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e)))
            .collect::<Result<Vec<_>>>()?;
        let stores = dirs
            .iter()
            .map(|dir| Store::create(dir.path(), "long enough", FAST).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build();
            let result = runtime
                .map_err(|e| ClientError::io("runtime", e))
                .and_then(|runtime| {
                    runtime.block_on(async move {
                        let mut tasks = tokio::task::JoinSet::new();
                        for store in stores {
                            tasks.spawn(async move {
                                for round in 0..ROUNDS {
                                    store.put(Tree::Contacts, &round.to_be_bytes(), &[7; 512])?;
                                    store.flush().await?;
                                }
                                Ok::<_, ClientError>(())
                            });
                        }
                        while let Some(task) = tasks.join_next().await {
                            task.map_err(|e| ClientError::InvalidArgument(e.to_string()))??;
                        }
                        Ok(())
                    })
                });
            let _ = done.send(result);
        });
        match finished.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(result) => result,
            Err(_) => panic!("the stores' flushes never finished"),
        }
    }

    #[test]
    fn short_passphrases_and_unbounded_costs_are_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        for short in ["", "pw", "1234567"] {
            match Store::create(dir.path(), short, FAST) {
                Err(ClientError::InvalidArgument(m)) => assert!(m.contains("too short"), "{m}"),
                other => panic!("{short:?}: {other:?}"),
            }
        }
        assert!(!Store::exists(dir.path()), "nothing written");
        let huge = KdfParams {
            m_cost: u32::MAX,
            ..FAST
        };
        assert!(matches!(
            Store::create(dir.path(), "long enough", huge),
            Err(ClientError::InvalidArgument(_))
        ));
        Ok(())
    }

    /// A new store (passphrase "long enough") whose header `tamper`
    /// changed.
    fn store_with_header(tamper: impl FnOnce(&mut Vec<u8>)) -> Result<tempfile::TempDir> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        drop(Store::create(dir.path(), "long enough", FAST)?);
        let path = dir.path().join(HEADER_FILE);
        let mut header = fs::read(&path).map_err(|e| ClientError::io("read", e))?;
        tamper(&mut header);
        fs::write(&path, &header).map_err(|e| ClientError::io("write", e))?;
        Ok(dir)
    }

    #[test]
    fn a_header_asking_for_huge_costs_is_refused_without_deriving() -> Result<()> {
        // m_cost sits right after the magic and the version byte.
        let dir = store_with_header(|h| h[9..13].copy_from_slice(&u32::MAX.to_be_bytes()))?;
        assert!(matches!(
            Store::open(dir.path(), "long enough"),
            Err(ClientError::CorruptStore(m)) if m.contains("out of bounds")
        ));
        Ok(())
    }

    #[test]
    fn a_header_with_other_costs_does_not_open() -> Result<()> {
        // t_cost 1 -> 2: a different key, and the verifier covers the header.
        let dir = store_with_header(|h| h[16] ^= 0x03)?;
        assert!(matches!(
            Store::open(dir.path(), "long enough"),
            Err(ClientError::WrongPassphrase)
        ));
        Ok(())
    }

    #[test]
    fn a_version_1_store_still_opens() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        fs::create_dir_all(dir.path()).map_err(|e| ClientError::io("mkdir", e))?;
        let salt = [7u8; SALT_LEN];
        let key = derive_key("pw", &salt, FAST)?;
        let verifier = seal_record(&key, RecordKind::ClientData, VERIFIER, &mut rand::rng())?;
        let header = encode_header(header_prefix(HEADER_VERSION_V1, FAST, &salt), &verifier)?;
        fs::write(dir.path().join(HEADER_FILE), header).map_err(|e| ClientError::io("w", e))?;
        RecordLog::write_new(dir.path(), Vec::new(), 0)?;
        // A short passphrase chosen before the minimum existed still opens.
        drop(Store::open(dir.path(), "pw")?);
        assert!(matches!(
            Store::open(dir.path(), "pX"),
            Err(ClientError::WrongPassphrase)
        ));
        Ok(())
    }

    #[test]
    fn a_record_put_decoded_reads_back_without_decoding_until_rewritten() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST)?;
        let undecodable = |_: &[u8]| -> Result<u32> { Err(ClientError::NotConnected) };
        store.put_decoded(Tree::Sessions, b"k", b"seven", 7u32)?;
        // The value written is read back as is: no decoding.
        assert_eq!(
            store.get_decoded(Tree::Sessions, b"k", undecodable)?,
            Some(7)
        );
        // What is on disk is still the sealed plaintext.
        assert_eq!(
            store
                .get(Tree::Sessions, b"k")?
                .as_deref()
                .map(Vec::as_slice),
            Some(&b"seven"[..])
        );
        // Rewritten without a value: the next read decodes the new bytes.
        store.put(Tree::Sessions, b"k", b"eight")?;
        assert!(
            store
                .get_decoded(Tree::Sessions, b"k", undecodable)
                .is_err()
        );
        let length = |bytes: &[u8]| -> Result<u32> { Ok(bytes.len() as u32) };
        assert_eq!(store.get_decoded(Tree::Sessions, b"k", length)?, Some(5));
        Ok(())
    }

    #[test]
    fn moved_record_is_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST)?;
        store.put(Tree::Contacts, b"alice", b"a")?;
        let code = Tree::Contacts.code();
        let sealed = store
            .log
            .get(code, b"alice")
            .ok_or(ClientError::NotConnected)?;
        store.log.insert(code, b"bob", sealed)?;
        assert!(matches!(
            store.get(Tree::Contacts, b"bob"),
            Err(ClientError::CorruptStore(_))
        ));
        Ok(())
    }

    #[test]
    fn a_closed_or_dropped_store_opens_again_at_once() -> Result<()> {
        // Closing and reopening at once, while other stores do the same on
        // other threads: each close must leave nothing holding the files.
        // (Big records kept sled's I/O threads busy while a store closed;
        // they used to hold the database lock past the close.)
        fn close_and_reopen(rounds: u32) -> Result<()> {
            let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
            Store::create(dir.path(), "pw-long-enough", FAST)?.close()?;
            let value = vec![7u8; 16 * 1024];
            for round in 0..rounds {
                let store = Store::open(dir.path(), "pw-long-enough")?;
                for i in 0u32..16 {
                    store.put(Tree::Messages, &i.to_be_bytes(), &value)?;
                }
                store.flush_blocking()?;
                if round % 2 == 0 {
                    store.close()?;
                } else {
                    drop(store);
                }
            }
            let store = Store::open(dir.path(), "pw-long-enough")?;
            assert_eq!(store.scan(Tree::Messages, b"")?.len(), 16);
            store.close()
        }
        let threads: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(|| close_and_reopen(50)))
            .collect();
        for thread in threads {
            thread
                .join()
                .map_err(|_| ClientError::CorruptStore("a test thread panicked".into()))??;
        }
        Ok(())
    }

    #[test]
    fn a_store_open_elsewhere_is_locked() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST)?;
        assert!(matches!(
            Store::open(dir.path(), "pw-long-enough"),
            Err(ClientError::StoreLocked { .. })
        ));
        store.close()?;
        Store::open(dir.path(), "pw-long-enough")?.close()
    }

    /// Write `records` into a sled database in `dir`, as clients before the
    /// record log did, and hand out `ids` of its ids; returns the last one.
    /// Returns once sled has let go of its files.
    fn write_sled(dir: &Path, records: &[(Tree, &[u8], &[u8])], ids: u32) -> Result<u64> {
        let sled_dir = dir.join(sled_import::SLED_DIR);
        let db = sled::open(&sled_dir)?;
        for (tree, key, value) in records {
            db.open_tree(tree.name())?.insert(key, *value)?;
        }
        let mut last_id = 0;
        for _ in 0..ids {
            last_id = db.generate_id()?;
        }
        db.flush()?;
        drop(db);
        // sled's I/O threads let go of its lock a moment after the drop.
        File::open(sled_dir.join("db"))
            .and_then(|file| file.lock())
            .map_err(|e| ClientError::io("waiting for sled", e))?;
        Ok(last_id)
    }

    /// A store sled wrote (before the record log) opens with every record
    /// and a sequence past sled's ids, and its sled database is gone.
    #[test]
    fn a_store_written_by_sled_is_imported_when_first_opened() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let (contact, session, last_id) = {
            let store = Store::create(dir.path(), "pw-long-enough", FAST)?;
            let contact = store.seal(Tree::SealedContacts, b"alice", b"hello")?;
            let session = store.seal(Tree::Sessions, b"peer", b"ratchet")?;
            store.close()?;
            fs::remove_file(dir.path().join(record_log::LOG_FILE))
                .map_err(|e| ClientError::io("remove", e))?;
            let records = [
                (Tree::SealedContacts, &b"alice"[..], contact.as_slice()),
                (Tree::Sessions, &b"peer"[..], session.as_slice()),
            ];
            let last_id = write_sled(dir.path(), &records, 5)?;
            (contact, session, last_id)
        };
        let store = Store::open(dir.path(), "pw-long-enough")?;
        assert!(!dir.path().join(sled_import::SLED_DIR).exists());
        let get = |tree: Tree, key: &[u8]| -> Result<Option<Vec<u8>>> {
            Ok(store.get(tree, key)?.map(|plain| plain.to_vec()))
        };
        assert_eq!(
            get(Tree::SealedContacts, b"alice")?,
            Some(b"hello".to_vec())
        );
        assert_eq!(get(Tree::Sessions, b"peer")?, Some(b"ratchet".to_vec()));
        assert!(store.next_sequence()? > last_id);
        // The stored bytes are sled's, unchanged.
        assert_eq!(
            store
                .log
                .get(Tree::SealedContacts.code(), b"alice")
                .as_deref(),
            Some(contact.as_slice())
        );
        assert_eq!(
            store.log.get(Tree::Sessions.code(), b"peer").as_deref(),
            Some(session.as_slice())
        );
        store.close()?;
        let store = Store::open(dir.path(), "pw-long-enough")?;
        assert_eq!(store.count(Tree::SealedContacts, b"")?, 1);
        store.close()
    }

    /// A store whose records are gone does not open as an empty one.
    #[test]
    fn a_store_without_its_records_does_not_open_empty() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST)?;
        store.put(Tree::Account, b"me", b"keys")?;
        store.close()?;
        fs::remove_file(dir.path().join(record_log::LOG_FILE))
            .map_err(|e| ClientError::io("remove", e))?;
        assert!(matches!(
            Store::open(dir.path(), "pw-long-enough"),
            Err(ClientError::CorruptStore(_))
        ));
        assert!(!dir.path().join(record_log::LOG_FILE).exists());
        Ok(())
    }

    /// A sled database beside the log that no import left (an older
    /// client ran on the store after the import) is neither deleted nor
    /// ignored: the store refuses to open.
    #[test]
    fn a_sled_database_written_after_the_import_is_kept() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        Store::create(dir.path(), "pw-long-enough", FAST)?.close()?;
        write_sled(dir.path(), &[(Tree::Messages, b"k", b"v")], 0)?;
        let sled_dir = dir.path().join(sled_import::SLED_DIR);
        assert!(Store::open(dir.path(), "pw-long-enough").is_err());
        assert!(sled_dir.exists(), "the older client's records are kept");
        Ok(())
    }

    #[test]
    fn missing_store_is_not_initialized() {
        let dir = std::env::temp_dir().join("comptoir-no-such-store");
        assert!(matches!(
            Store::open(&dir, "pw-long-enough"),
            Err(ClientError::NotInitialized { .. })
        ));
    }
}
