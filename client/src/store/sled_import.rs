//! Stores written before the record log kept their records in a sled
//! database (`db/` in the store's directory). The first open imports them:
//! every record of every tree, as stored (sealed, so nothing is opened),
//! and sled's id counter as the log's sequence.
//!
//! A marker file, made durable (with its directory entry) before anything
//! else, says that `db/`
//! belongs to an import: the new log is then written aside, synced and
//! renamed into place, `db/` deleted, and the marker last. Whatever a
//! crash leaves is finished at the next open. A `db/` beside a log with
//! no marker was written after the import (by an older client run on the
//! upgraded store): it is neither deleted nor imported, and the store
//! refuses to open.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::Path;

use super::Tree;
use super::record_log::{self, RecordLog};
use crate::error::{ClientError, Result};

/// The sled database's directory in a store from before the record log.
pub(super) const SLED_DIR: &str = "db";
/// Present while `db/` is being imported or deleted after its import.
const IMPORT_MARKER: &str = "db.importing";

fn exists(path: &Path, what: &'static str) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ClientError::io(what, e)),
    }
}

/// Import the sled database in `dir` into a record log, if there is one;
/// finish an import a crash interrupted.
pub(super) fn import_if_needed(dir: &Path) -> Result<()> {
    let sled_dir = dir.join(SLED_DIR);
    let marker = dir.join(IMPORT_MARKER);
    if !exists(&sled_dir, "looking for an older store database")? {
        return remove_marker(dir);
    }
    let marked = exists(&marker, "looking for an unfinished import")?;
    let logged = exists(
        &dir.join(record_log::LOG_FILE),
        "looking for the store's log",
    )?;
    if logged && !marked {
        return Err(ClientError::CorruptStore(
            "it holds records an older version of this client wrote after the store was \
             upgraded; open it with that version to read them, or move its `db` folder away \
             to open it without them"
                .into(),
        ));
    }
    if !logged {
        File::create(&marker)
            .and_then(|file| file.sync_all())
            .map_err(|e| ClientError::io("marking the store's import", e))?;
        record_log::sync_dir(dir)?;
        let db = sled::Config::new().path(&sled_dir).open()?;
        let mut records = Vec::new();
        for tree in Tree::ALL {
            for item in db.open_tree(tree.name())?.iter() {
                let (key, sealed) = item?;
                records.push((tree.code(), key.to_vec(), sealed.to_vec()));
            }
        }
        let sequence = db.generate_id()?;
        drop(db);
        let count = records.len();
        RecordLog::write_new(dir, records, sequence).map_err(ClientError::from)?;
        tracing::info!(records = count, "imported the store's records from sled");
    }
    fs::remove_dir_all(&sled_dir)
        .map_err(|e| ClientError::io("deleting the store's old database after importing it", e))?;
    // The deletion is durable before the marker goes: a `db/` is never
    // left beside the log without it.
    record_log::sync_dir(dir)?;
    remove_marker(dir)
}

fn remove_marker(dir: &Path) -> Result<()> {
    match fs::remove_file(dir.join(IMPORT_MARKER)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ClientError::io("finishing the store's import", e)),
    }
}
