//! The disk-space reserve: a preallocated file in the log directory,
//! given back to the filesystem when a write finds the disk full, so that
//! acks (their deletions), device removals and the directory store's small
//! writes can still be committed while new sends are refused with
//! [`StorageError::Full`](super::StorageError::Full). The writer makes it
//! again (with backoff) and takes sends again once that succeeds, that is
//! once the operator (or expiry) has freed at least its size.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use super::durable;

/// The reserve's file name, in the mail-log directory.
pub(crate) const FILE_NAME: &str = "space-reserve";

/// The reserve file, held or given back.
#[derive(Debug)]
pub(super) struct Reserve {
    path: PathBuf,
    bytes: u64,
    held: bool,
}

impl Reserve {
    /// The reserve of `bytes` in `dir`, not yet made (0 disables it).
    pub(super) fn new(dir: &Path, bytes: u64) -> Self {
        Self {
            path: dir.join(FILE_NAME),
            bytes,
            held: false,
        }
    }

    /// Whether it holds space that [`Reserve::release`] would give back.
    pub(super) fn held(&self) -> bool {
        self.held
    }

    /// Make the file hold its size in allocated blocks (not a sparse
    /// file), durably. On failure (the disk is still full) whatever was
    /// allocated is given back.
    pub(super) fn fill(&mut self) -> io::Result<()> {
        if self.bytes == 0 || self.held {
            return Ok(());
        }
        let made = self.allocate();
        match made {
            Ok(()) => {
                self.held = true;
                Ok(())
            }
            Err(error) => {
                let _ = std::fs::remove_file(&self.path);
                Err(error)
            }
        }
    }

    fn allocate(&self) -> io::Result<()> {
        #[cfg(test)]
        super::tests::faults::take_space(&self.path, self.bytes)?;
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.path)?;
        fs2::FileExt::allocate(&file, self.bytes)?;
        if file.metadata()?.len() > self.bytes {
            file.set_len(self.bytes)?;
        }
        durable::sync_data(&file)?;
        if let Some(dir) = self.path.parent() {
            durable::sync_dir(dir)?;
        }
        Ok(())
    }

    /// Give the space back (the disk is full).
    pub(super) fn release(&mut self) -> io::Result<()> {
        if !self.held {
            return Ok(());
        }
        self.held = false;
        std::fs::remove_file(&self.path)?;
        #[cfg(test)]
        super::tests::faults::give_space(&self.path, self.bytes);
        Ok(())
    }
}
