//! One relay per data directory: an exclusive lock on `relay.lock`, held
//! for the store's lifetime.
//!
//! Also covers a quirk of sled 0.34: dropping its `Db` does not close its
//! files at once (a write already handed to its I/O threads keeps a handle,
//! and so sled's `flock` on the `db` file, a moment longer). Reopening a
//! directory right after closing it, as a restart in the same process
//! does, would then fail. Once `relay.lock` is ours, any remaining holder
//! of sled's lock is such a finishing I/O task, so opening waits for it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::path::Path;

use super::{StorageError, StorageResult};

/// The lock file's name inside the data directory.
const LOCK_FILE: &str = "relay.lock";

/// The file sled locks inside its directory.
const SLED_LOCKED_FILE: &str = "db";

/// The hold on a data directory; released when dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Take the directory (or fail with [`StorageError::InUse`]), then wait
    /// until no earlier sled instance in this process still holds its
    /// database file.
    pub(crate) fn acquire(dir: &Path) -> StorageResult<Self> {
        let path = dir.join(LOCK_FILE);
        let io = |what: &str, e: std::io::Error| {
            StorageError::Backend(format!("{what} {}: {e}", path.display()))
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io("cannot open", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StorageError::InUse(dir.to_path_buf())),
            // No file locks here: sled does not lock either.
            Err(TryLockError::Error(e)) if e.kind() == ErrorKind::Unsupported => {}
            Err(TryLockError::Error(e)) => return Err(io("cannot lock", e)),
        }
        let sled_file = dir.join(SLED_LOCKED_FILE);
        match File::open(&sled_file) {
            // Locking and then closing it waits for, then frees, the lock.
            Ok(db) => match db.lock() {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Unsupported => {}
                Err(e) => return Err(io("cannot wait for the database to close", e)),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot open the database file", e)),
        }
        Ok(Self { _file: file })
    }
}
