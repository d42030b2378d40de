//! The data directory's identity, kept twice: in sled (tree `meta`) and in
//! the mail log's directory (`mail-log/store-id`). At open they must agree,
//! so that a directory store that was emptied, replaced or damaged (sled
//! then starts empty without a word) or a mail log that belongs to another
//! directory stops the relay instead of serving accounts that are gone or
//! mail for accounts that do not exist.

use std::io::Write;
use std::path::Path;

use ::sled::{Db, Tree};

use super::{StorageError, StorageResult};

/// Key of the identity in the `meta` tree.
const KEY: &[u8] = b"store_id";

/// Name of the identity file in the mail log's directory.
const FILE: &str = "store-id";

/// Bytes of an identity.
const LEN: usize = 16;

fn refuse(dir: &Path, what: &str) -> StorageError {
    StorageError::Backend(format!(
        "the data directory {} is inconsistent: {what}; the relay will not start on it \
         (restore the whole data directory from a backup, or move it away to start empty)",
        dir.display()
    ))
}

fn io(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Backend(format!("cannot access {}: {e}", path.display()))
}

fn sled_error(e: ::sled::Error) -> StorageError {
    StorageError::Backend(format!("the directory store (sled) failed: {e}"))
}

/// Whether the mail log's directory holds any segment.
fn has_segments(log_dir: &Path) -> StorageResult<bool> {
    let entries = match std::fs::read_dir(log_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(log_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io(log_dir, e))?;
        if entry.file_name().to_string_lossy().ends_with(".seg") {
            return Ok(true);
        }
    }
    Ok(false)
}

fn read_file(log_dir: &Path) -> StorageResult<Option<[u8; LEN]>> {
    let path = log_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => bytes
            .try_into()
            .map(Some)
            .map_err(|_| refuse(log_dir, "the mail log's store-id file is damaged")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path, e)),
    }
}

/// Write the identity file durably (a temporary file renamed into place).
fn write_file(log_dir: &Path, id: &[u8; LEN]) -> StorageResult<()> {
    std::fs::create_dir_all(log_dir).map_err(|e| io(log_dir, e))?;
    let path = log_dir.join(FILE);
    let tmp = log_dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    file.write_all(id).map_err(|e| io(&tmp, e))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    std::fs::File::open(log_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(log_dir, e))
}

fn write_sled(db: &Db, meta: &Tree, id: &[u8; LEN]) -> StorageResult<()> {
    meta.insert(KEY, id.as_slice()).map_err(sled_error)?;
    db.flush().map_err(sled_error)?;
    Ok(())
}

/// Check that sled and the mail log in `log_dir` belong together, and give
/// a new (or upgraded) directory its identity. `accounts` is sled's
/// accounts tree: a store that has accounts is not a new one.
pub(crate) fn check(db: &Db, accounts: &Tree, log_dir: &Path) -> StorageResult<()> {
    let meta = db.open_tree("meta").map_err(sled_error)?;
    let in_sled: Option<[u8; LEN]> = match meta.get(KEY).map_err(sled_error)? {
        Some(bytes) => Some(
            bytes
                .as_ref()
                .try_into()
                .map_err(|_| refuse(log_dir, "the directory store's identity is damaged"))?,
        ),
        None => None,
    };
    let in_log = read_file(log_dir)?;
    let sled_empty = accounts.is_empty();
    match (in_sled, in_log) {
        (Some(a), Some(b)) if a == b => Ok(()),
        (Some(_), Some(_)) => Err(refuse(
            log_dir,
            "the mail log belongs to another data directory than the directory store",
        )),
        (Some(_), None) => Err(refuse(
            log_dir,
            "the mail log's store-id file is missing (the mail log was deleted or replaced)",
        )),
        (None, Some(id)) => {
            if sled_empty && !has_segments(log_dir)? {
                // A first start cut short between the two writes below.
                write_sled(db, &meta, &id)
            } else {
                Err(refuse(
                    log_dir,
                    "the directory store (sled: accounts, keys, names) is empty, damaged or \
                     replaced while the mail log holds data",
                ))
            }
        }
        (None, None) => {
            if sled_empty && has_segments(log_dir)? {
                return Err(refuse(
                    log_dir,
                    "the directory store (sled: accounts, keys, names) is empty while the mail \
                     log holds mail",
                ));
            }
            // A new directory, or one from a relay before identities: the
            // file first, so a crash in between is recognised above.
            let id: [u8; LEN] = rand::random();
            write_file(log_dir, &id)?;
            write_sled(db, &meta, &id)
        }
    }
}
