//! The mail log's durability calls: syncing a file's data, and the
//! directory changes (create, rename, remove) that only a directory sync
//! makes durable. Kept in one place so that a test can record each of
//! them and rebuild what a power loss would leave (`tests::power_loss`),
//! which `kill -9` cannot show (the page cache survives it).

use std::fs::File;
use std::io;
use std::path::Path;

/// Make a file's data durable.
pub(crate) fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data()?;
    #[cfg(test)]
    super::tests::power_loss::synced(file);
    Ok(())
}

/// Make a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()?;
    #[cfg(test)]
    super::tests::power_loss::dir_synced(dir);
    Ok(())
}

/// Note that `file` was just created at `path` (durable once its directory
/// is synced).
pub(crate) fn created(path: &Path, file: &File) {
    #[cfg(test)]
    super::tests::power_loss::created(path, file);
    let _ = (path, file);
}

/// Rename `from` to `to` (durable once their directory is synced).
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    #[cfg(test)]
    super::tests::power_loss::renamed(from, to);
    Ok(())
}

/// Remove `path` (durable once its directory is synced).
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    #[cfg(test)]
    super::tests::power_loss::removed(path);
    Ok(())
}
