//! A simulated power loss. While a test records a directory, every
//! durability call of the mail log (see `durable`) is noted, and after
//! each one a [`Moment`] is kept: the directory entries made durable by
//! directory syncs, the directory changes not synced yet, and each file's
//! data as of its last sync. [`Moment::variants`] then rebuilds what a
//! power loss at that moment could leave: only what was synced, plus none,
//! all, any single one, or all but one of the unsynced directory changes
//! (a file system may make them durable in any order). Unsynced file data
//! is dropped. A missing or misordered `fsync` shows as a rebuilt
//! directory that lost an acknowledged write or brought back a deleted one.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A directory change not yet made durable by a directory sync.
#[derive(Clone, Debug)]
enum DirOp {
    Create(String, u64),
    Rename(String, String),
    Remove(String),
}

/// What a power loss right after one durability call could leave.
#[derive(Clone, Debug)]
pub(crate) struct Moment {
    /// Test marks made before this moment.
    pub(crate) marks: usize,
    /// What the call was (for failure messages).
    pub(crate) what: String,
    durable_entries: BTreeMap<String, u64>,
    pending: Vec<DirOp>,
    data: HashMap<u64, Arc<Vec<u8>>>,
}

impl Moment {
    /// Directory listings (name → inode) a power loss could leave.
    pub(crate) fn variants(&self) -> Vec<BTreeMap<String, u64>> {
        let apply = |keep: &dyn Fn(usize) -> bool| {
            let mut entries = self.durable_entries.clone();
            for (i, op) in self.pending.iter().enumerate() {
                if !keep(i) {
                    continue;
                }
                match op {
                    DirOp::Create(name, ino) => {
                        entries.insert(name.clone(), *ino);
                    }
                    DirOp::Rename(from, to) => {
                        if let Some(ino) = entries.remove(from) {
                            entries.insert(to.clone(), ino);
                        }
                    }
                    DirOp::Remove(name) => {
                        entries.remove(name);
                    }
                }
            }
            entries
        };
        let mut out = vec![apply(&|_| false)];
        if !self.pending.is_empty() {
            out.push(apply(&|_| true));
        }
        if self.pending.len() > 1 {
            for j in 0..self.pending.len() {
                out.push(apply(&|i| i == j));
                out.push(apply(&|i| i != j));
            }
        }
        out
    }

    /// Write a listing from [`Moment::variants`] into the empty `dir`, each
    /// file holding only its synced data.
    pub(crate) fn write_to(&self, entries: &BTreeMap<String, u64>, dir: &Path) {
        for (name, ino) in entries {
            let bytes = self.data.get(ino).map_or(&[][..], |d| d.as_slice());
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

struct Recorder {
    dir: PathBuf,
    entries: BTreeMap<String, u64>,
    durable_entries: BTreeMap<String, u64>,
    pending: Vec<DirOp>,
    data: HashMap<u64, Arc<Vec<u8>>>,
    marks: usize,
    moments: Vec<Moment>,
}

impl Recorder {
    fn moment(&mut self, what: String) {
        let moment = Moment {
            marks: self.marks,
            what,
            durable_entries: self.durable_entries.clone(),
            pending: self.pending.clone(),
            data: self.data.clone(),
        };
        self.moments.push(moment);
    }
}

static RECORDERS: Mutex<Vec<Recorder>> = Mutex::new(Vec::new());

fn recorders() -> std::sync::MutexGuard<'static, Vec<Recorder>> {
    RECORDERS.lock().unwrap_or_else(|p| p.into_inner())
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Start recording the empty directory `dir`.
pub(crate) fn record(dir: &Path) {
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
    recorders().push(Recorder {
        dir: dir.to_path_buf(),
        entries: BTreeMap::new(),
        durable_entries: BTreeMap::new(),
        pending: Vec::new(),
        data: HashMap::new(),
        marks: 0,
        moments: Vec::new(),
    });
}

/// Count one test mark (moments after it see it).
pub(crate) fn mark(dir: &Path) {
    if let Some(r) = recorders().iter_mut().find(|r| r.dir == dir) {
        r.marks += 1;
    }
}

/// Stop recording `dir`; returns its moments in order.
pub(crate) fn finish(dir: &Path) -> Vec<Moment> {
    let mut all = recorders();
    let at = all.iter().position(|r| r.dir == dir).unwrap();
    all.remove(at).moments
}

pub(crate) fn synced(file: &File) {
    let Ok(meta) = file.metadata() else { return };
    let ino = meta.ino();
    let mut all = recorders();
    // Only files listed now: an inode of a removed file may be reused.
    let Some(r) = all
        .iter_mut()
        .find(|r| r.entries.values().any(|i| *i == ino))
    else {
        return;
    };
    let mut bytes = vec![0u8; meta.len() as usize];
    file.read_exact_at(&mut bytes, 0).unwrap();
    r.data.insert(ino, Arc::new(bytes));
    r.moment(format!("sync of inode {ino}"));
}

pub(crate) fn dir_synced(dir: &Path) {
    let mut all = recorders();
    let Some(r) = all.iter_mut().find(|r| r.dir == dir) else {
        return;
    };
    r.durable_entries = r.entries.clone();
    r.pending.clear();
    r.moment("directory sync".into());
}

pub(crate) fn created(path: &Path, file: &File) {
    let Some(dir) = path.parent() else { return };
    let mut all = recorders();
    let Some(r) = all.iter_mut().find(|r| r.dir == dir) else {
        return;
    };
    let ino = file.metadata().unwrap().ino();
    let name = name_of(path);
    r.entries.insert(name.clone(), ino);
    r.data.insert(ino, Arc::new(Vec::new()));
    r.pending.push(DirOp::Create(name.clone(), ino));
    r.moment(format!("create {name}"));
}

pub(crate) fn renamed(from: &Path, to: &Path) {
    let Some(dir) = from.parent() else { return };
    let mut all = recorders();
    let Some(r) = all.iter_mut().find(|r| r.dir == dir) else {
        return;
    };
    let (from, to) = (name_of(from), name_of(to));
    if let Some(ino) = r.entries.remove(&from) {
        r.entries.insert(to.clone(), ino);
    }
    r.pending.push(DirOp::Rename(from.clone(), to.clone()));
    r.moment(format!("rename {from} to {to}"));
}

pub(crate) fn removed(path: &Path) {
    let Some(dir) = path.parent() else { return };
    let mut all = recorders();
    let Some(r) = all.iter_mut().find(|r| r.dir == dir) else {
        return;
    };
    let name = name_of(path);
    r.entries.remove(&name);
    r.pending.push(DirOp::Remove(name.clone()));
    r.moment(format!("remove {name}"));
}
