//! Stores written before the record log kept their records in a sled
//! database (`db/` in the store's directory). The first open imports them:
//! every record of every tree, as stored (sealed, so nothing is opened),
//! and sled's id counter as the log's sequence; the new log is written
//! aside, synced and renamed into place, and only then is `db/` deleted.
//! A crash in between leaves either the sled database alone (the import
//! runs again) or both (the log is used and `db/` deleted).

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use super::Tree;
use super::record_log::{self, RecordLog};
use crate::error::{ClientError, Result};

/// The sled database's directory in a store from before the record log.
pub(super) const SLED_DIR: &str = "db";

/// Import the sled database in `dir` into a record log, if there is one
/// and no log yet; delete a sled database an earlier import left behind.
pub(super) fn import_if_needed(dir: &Path) -> Result<()> {
    let sled_dir = dir.join(SLED_DIR);
    if !sled_dir.is_dir() {
        return Ok(());
    }
    if !dir.join(record_log::LOG_FILE).exists() {
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
    match fs::remove_dir_all(&sled_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ClientError::io(
            "deleting the store's old database after importing it",
            e,
        )),
    }
}
