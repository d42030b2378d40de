//! The local store, encrypted at rest.
//!
//! Layout of a data directory:
//! - `store.header`: `MAGIC (8) || version (1) || m_cost (u32 BE) || t_cost
//!   (u32 BE) || p_cost (u32 BE) || salt (16) || verifier length (u16 BE) ||
//!   verifier`. The key is Argon2id(passphrase, salt) with those costs; the
//!   verifier is a sealed known string, so a wrong passphrase is reported as
//!   [`ClientError::WrongPassphrase`] before anything is read or written.
//! - `store.lock`: empty; a client holds an exclusive lock on it while the
//!   store is open, and until every sled handle on `db/` is gone.
//! - `db/`: a sled database. Every value is sealed with
//!   [`comptoir_protocol::seal_record`]; the sealed plaintext starts with
//!   the tree name and key it belongs to, so a record moved to another key
//!   on disk is refused rather than believed.
//!
//! Keys (account ids, message ids) are stored in the clear: the store hides
//! content, not who the user talks to. Zeroized plaintext buffers are
//! returned to callers as [`Zeroizing`].

use std::fmt;
use std::fs::{self, File, TryLockError};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use comptoir_protocol::{RecordKind, StorageKey, open_record, seal_record};
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};

/// File name of the header beside the database.
pub const HEADER_FILE: &str = "store.header";
/// Directory name of the sled database.
const DB_DIR: &str = "db";
/// File sled locks inside [`DB_DIR`] while it has the database open.
const SLED_LOCKED_FILE: &str = "db";
/// File name of the lock this client holds on the data directory.
const LOCK_FILE: &str = "store.lock";
const MAGIC: &[u8; 8] = b"CMPTRSTO";
const HEADER_VERSION: u8 = 1;
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
    /// OWASP's recommended Argon2id minimum: 19 MiB, 2 passes, 1 lane
    /// (about 30 ms on a laptop core: cheap to open, costly to brute-force).
    pub const DEFAULT: Self = Self {
        m_cost: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The trees of the database, one per kind of record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Contact names, by name.
    Contacts,
    /// Accounts this account blocked at the relay, by account id.
    Blocked,
    /// Pinned account keys and device lists of peers, by account id.
    Peers,
}

impl Tree {
    fn name(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Sessions => "sessions",
            Self::PreKeys => "prekeys",
            Self::Messages => "messages",
            Self::Outbox => "outbox",
            Self::Contacts => "contacts",
            Self::Blocked => "blocked",
            Self::Peers => "peers",
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

/// A record as [`Store::scan`] returns it: its key and opened plaintext.
pub type Record = (Vec<u8>, Zeroizing<Vec<u8>>);

/// An open store: the database and the key that seals its records.
///
/// Closing it ([`Store::close`], or dropping it) returns only once sled has
/// let go of the database files, so the store can be opened again at once.
pub struct Store {
    // Fields drop in declaration order: `db` before `lock`, whose drop
    // waits for sled's last handle on the files.
    db: sled::Db,
    key: StorageKey,
    dir: PathBuf,
    lock: DirLock,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            db: _,
            key: _,
            dir,
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

    /// Create a new store in `dir` (created if missing) under `passphrase`.
    pub fn create(dir: &Path, passphrase: &str, params: KdfParams) -> Result<Self> {
        if Self::exists(dir) {
            return Err(ClientError::AlreadyInitialized {
                dir: dir.to_path_buf(),
            });
        }
        if passphrase.is_empty() {
            return Err(ClientError::InvalidArgument(
                "the passphrase must not be empty".into(),
            ));
        }
        fs::create_dir_all(dir)
            .map_err(|e| ClientError::io(format!("creating {}", dir.display()), e))?;
        let mut salt = [0u8; SALT_LEN];
        rand::fill(&mut salt);
        let key = derive_key(passphrase, &salt, params)?;
        let verifier = seal_record(&key, RecordKind::ClientData, VERIFIER, &mut rand::rng())?;
        let header = encode_header(params, &salt, &verifier)?;
        let lock = DirLock::acquire(dir)?;
        let db = open_db(dir)?;
        write_atomically(&dir.join(HEADER_FILE), &header)?;
        Ok(Self {
            db,
            key,
            dir: dir.to_path_buf(),
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
        let (params, salt, verifier) = decode_header(&bytes)?;
        let key = derive_key(passphrase, &salt, params)?;
        match open_record(&key, RecordKind::ClientData, verifier) {
            Ok(plain) if plain.as_slice() == VERIFIER => {}
            _ => return Err(ClientError::WrongPassphrase),
        }
        let lock = DirLock::acquire(dir)?;
        let db = open_db(dir)?;
        Ok(Self {
            db,
            key,
            dir: dir.to_path_buf(),
            lock,
        })
    }

    /// Close the database and return once nothing in this process holds
    /// its files any more (sled's own I/O threads can outlive the `Db` for
    /// a moment), so [`Self::open`] right after succeeds. Dropping a store
    /// does the same but can only log a failure.
    pub fn close(self) -> Result<()> {
        let Self {
            db,
            key: _,
            dir: _,
            mut lock,
        } = self;
        // Flushes what is left and stops sled's flusher thread.
        drop(db);
        lock.release()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Seal and write a record.
    pub fn put(&self, tree: Tree, key: &[u8], plaintext: &[u8]) -> Result<()> {
        let mut bound = Zeroizing::new(binding(tree, key));
        bound.extend_from_slice(plaintext);
        let sealed = seal_record(&self.key, tree.kind(), &bound, &mut rand::rng())?;
        self.tree(tree)?.insert(key, sealed)?;
        Ok(())
    }

    /// Read and open a record.
    pub fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        match self.tree(tree)?.get(key)? {
            Some(sealed) => Ok(Some(self.unseal(tree, key, &sealed)?)),
            None => Ok(None),
        }
    }

    /// Whether a record exists (without opening it).
    pub fn contains(&self, tree: Tree, key: &[u8]) -> Result<bool> {
        Ok(self.tree(tree)?.contains_key(key)?)
    }

    /// Delete a record.
    pub fn remove(&self, tree: Tree, key: &[u8]) -> Result<()> {
        self.tree(tree)?.remove(key)?;
        Ok(())
    }

    /// Every record whose key starts with `prefix`, opened, in key order.
    pub fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for item in self.tree(tree)?.scan_prefix(prefix) {
            let (key, sealed) = item?;
            let plain = self.unseal(tree, &key, &sealed)?;
            out.push((key.to_vec(), plain));
        }
        Ok(out)
    }

    /// A number larger than every one returned before by this store (across
    /// restarts): orders the history and the outbox without trusting clocks.
    pub fn next_sequence(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    /// Make every write so far durable (fsync).
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// [`Self::flush`] for synchronous callers.
    pub fn flush_blocking(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn tree(&self, tree: Tree) -> Result<sled::Tree> {
        Ok(self.db.open_tree(tree.name())?)
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

/// The exclusive hold of one [`Store`] on its data directory: taken before
/// sled opens the database and given up only once sled has closed it.
///
/// Dropping the sled `Db` does not close sled's files: a write or
/// truncation already handed to sled's I/O thread pool keeps a handle on
/// them (and so sled's lock on `db/db`) until that task ends, which is
/// just after the flush that `Db`'s drop waited for is reported. Without
/// this, opening the store again right after closing it could fail with
/// [`ClientError::StoreLocked`]. Holding `store.lock` meanwhile keeps any
/// other client out of the window, so the wait only ever waits for our
/// own finishing I/O.
struct DirLock {
    dir: PathBuf,
    /// `None` once released.
    file: Option<File>,
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
            // No file locks on this platform: sled does not lock either.
            Err(TryLockError::Error(e)) if e.kind() == ErrorKind::Unsupported => {}
            Err(TryLockError::Error(e)) => {
                return Err(ClientError::io(format!("locking {}", path.display()), e));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            file: Some(file),
        })
    }

    /// Wait until sled has closed the database, then give up the
    /// directory. Call only after dropping every sled handle of the store
    /// (it would wait for them forever otherwise).
    fn release(&mut self) -> Result<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let waited = wait_until_sled_closed(&self.dir);
        // Closing the file gives up the directory lock, even after a
        // failed wait.
        drop(file);
        waited
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!(error = %e, "releasing the store failed");
        }
    }
}

/// Block until no handle holds sled's lock on the database file any more.
/// sled takes it with `flock`, which conflicts with any other open file
/// description, in this process too; sled's remaining handles are I/O
/// tasks about to finish, and `store.lock` keeps other clients from
/// taking it meanwhile, so this waits briefly.
fn wait_until_sled_closed(dir: &Path) -> Result<()> {
    let path = dir.join(DB_DIR).join(SLED_LOCKED_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        // sled never created it: nothing to wait for.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ClientError::io(format!("opening {}", path.display()), e)),
    };
    match file.lock() {
        // Closing `file` gives the lock up again.
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::Unsupported => Ok(()),
        Err(e) => Err(ClientError::io(
            format!("waiting for the database to close ({})", path.display()),
            e,
        )),
    }
}

fn open_db(dir: &Path) -> Result<sled::Db> {
    let path = dir.join(DB_DIR);
    sled::Config::new().path(&path).open().map_err(|e| match e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
            ClientError::StoreLocked {
                dir: dir.to_path_buf(),
            }
        }
        sled::Error::Io(io) if io.to_string().contains("lock") => ClientError::StoreLocked {
            dir: dir.to_path_buf(),
        },
        other => ClientError::Database(other),
    })
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

fn encode_header(params: KdfParams, salt: &[u8; SALT_LEN], verifier: &[u8]) -> Result<Vec<u8>> {
    let len = u16::try_from(verifier.len())
        .map_err(|_| ClientError::CorruptStore("verifier too long".into()))?;
    let mut out = Vec::with_capacity(8 + 1 + 12 + SALT_LEN + 2 + verifier.len());
    out.extend_from_slice(MAGIC);
    out.push(HEADER_VERSION);
    out.extend_from_slice(&params.m_cost.to_be_bytes());
    out.extend_from_slice(&params.t_cost.to_be_bytes());
    out.extend_from_slice(&params.p_cost.to_be_bytes());
    out.extend_from_slice(salt);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(verifier);
    Ok(out)
}

/// Parse the store header file: KDF parameters, salt and verifier.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<(KdfParams, [u8; SALT_LEN], &[u8])> {
    let corrupt = |what: &str| ClientError::CorruptStore(format!("store header: {what}"));
    if bytes.len() > MAX_HEADER_LEN {
        return Err(corrupt("too long"));
    }
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt("bad magic"))?;
    let (&version, rest) = rest.split_first().ok_or_else(|| corrupt("truncated"))?;
    if version != HEADER_VERSION {
        return Err(corrupt("unsupported version"));
    }
    let mut cursor = Cursor(rest);
    let m_cost = cursor.u32().ok_or_else(|| corrupt("truncated"))?;
    let t_cost = cursor.u32().ok_or_else(|| corrupt("truncated"))?;
    let p_cost = cursor.u32().ok_or_else(|| corrupt("truncated"))?;
    let salt: [u8; SALT_LEN] = cursor
        .take(SALT_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| corrupt("truncated"))?;
    let len = cursor
        .take(2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| corrupt("truncated"))?;
    let verifier = cursor.take(len).ok_or_else(|| corrupt("truncated"))?;
    if !cursor.0.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok((
        KdfParams {
            m_cost,
            t_cost,
            p_cost,
        },
        salt,
        verifier,
    ))
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

    #[test]
    fn moved_record_is_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let store = Store::create(dir.path(), "pw", FAST)?;
        store.put(Tree::Contacts, b"alice", b"a")?;
        let tree = store.tree(Tree::Contacts)?;
        let sealed = tree.get(b"alice")?.ok_or(ClientError::NotConnected)?;
        tree.insert(b"bob", sealed)?;
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
        // Big records keep sled's I/O threads busy while a store closes;
        // they used to hold the database lock past the close.
        fn close_and_reopen(rounds: u32) -> Result<()> {
            let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
            Store::create(dir.path(), "pw", FAST)?.close()?;
            let value = vec![7u8; 16 * 1024];
            for round in 0..rounds {
                let store = Store::open(dir.path(), "pw")?;
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
            let store = Store::open(dir.path(), "pw")?;
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
        let store = Store::create(dir.path(), "pw", FAST)?;
        assert!(matches!(
            Store::open(dir.path(), "pw"),
            Err(ClientError::StoreLocked { .. })
        ));
        store.close()?;
        Store::open(dir.path(), "pw")?.close()
    }

    #[test]
    fn missing_store_is_not_initialized() {
        let dir = std::env::temp_dir().join("comptoir-no-such-store");
        assert!(matches!(
            Store::open(&dir, "pw"),
            Err(ClientError::NotInitialized { .. })
        ));
    }
}
