//! Segment files: naming, creation, and reading records back at open.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::durable;
use super::record::{
    self, GROUP_HEADER_LEN, MAX_BODY_LEN, RECORD_HEADER_LEN, SEGMENT_MAGIC, SEGMENT_MAGIC_V1,
    SEGMENT_MAGIC_V2, SEGMENT_MAGIC_V3,
};

/// Suffix of segment files.
const SEGMENT_SUFFIX: &str = ".seg";

/// Suffix of a checkpoint being written (deleted at open if left over).
const PARTIAL_SUFFIX: &str = ".partial";

/// Suffix of the bytes cut from a torn tail, kept for inspection.
pub(crate) const TORN_SUFFIX: &str = ".torn";

/// Bytes before the first record of a segment.
pub(crate) const SEGMENT_HEADER_LEN: u64 = SEGMENT_MAGIC.len() as u64;

/// The path of segment `id`.
pub(crate) fn path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}{SEGMENT_SUFFIX}"))
}

/// The path a checkpoint is written to before it becomes segment `id`.
pub(crate) fn partial_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}{PARTIAL_SUFFIX}"))
}

/// Segment ids present in `dir`, in order; removes partial checkpoints.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(PARTIAL_SUFFIX) {
            durable::remove(&entry.path())?;
        } else if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX)
            && let Ok(id) = stem.parse::<u32>()
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Create a file holding only the segment header, durably (file and
/// directory entry), open for writing (on from the header, or at given
/// offsets) and reading.
pub(crate) fn create(file_path: &Path) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(file_path)?;
    durable::created(file_path, &file);
    file.write_all(SEGMENT_MAGIC)?;
    durable::sync_data(&file)?;
    if let Some(dir) = file_path.parent() {
        durable::sync_dir(dir)?;
    }
    Ok(file)
}

/// Make a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    durable::sync_dir(dir)
}

/// Open an existing segment for reading.
pub(crate) fn open_read(file_path: &Path) -> io::Result<File> {
    File::open(file_path)
}

/// How reading a segment ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Every byte belonged to a whole, valid group.
    Clean,
    /// The last group is incomplete from this offset on: a write cut short
    /// by a crash if this is the newest segment (never acknowledged, kept
    /// aside and cut off), corruption otherwise.
    TornAt(u64),
}

/// What reading a segment found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// How it ended.
    pub(crate) tail: Tail,
    /// Whether the last whole group is an empty one (the segment was
    /// sealed, so every group holding records is followed by another).
    /// Always `true` for format 1, which cannot be sealed.
    pub(crate) sealed: bool,
}

/// A segment that is not ours, not readable, or damaged where a crash
/// cannot have torn it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// I/O failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The file does not start with the segment header.
    #[error("not a mail log segment (bad header)")]
    BadHeader,
    /// A record inside a whole group does not decode.
    #[error("a mail log record at offset {0} does not decode")]
    Malformed(u64),
    /// A group that was followed by others (so written and synced in full)
    /// no longer checks out.
    #[error("the group of records at offset {0} is damaged and newer writes follow it")]
    Damaged(u64),
}

/// Read every record of a segment in order, calling `apply(offset of the
/// record body, body)`.
///
/// In format 2 a group is torn (the last write, cut short by a crash) only
/// if it is the last thing in the file: a group whose header checks out
/// and whose length reaches the end of the file, or a header that does not
/// check out with no whole group anywhere after it. Anything else that
/// does not check out is damage: [`ReadError::Damaged`].
pub(crate) fn read_records(
    file_path: &Path,
    mut apply: impl FnMut(u64, &[u8]) -> Result<(), record::Malformed>,
) -> Result<Scan, ReadError> {
    let file = File::open(file_path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let mut magic = [0u8; SEGMENT_MAGIC.len()];
    if reader.read_exact(&mut magic).is_err() {
        // Created but its header never reached the disk.
        return Ok(Scan {
            tail: Tail::TornAt(0),
            sealed: false,
        });
    }
    if &magic == SEGMENT_MAGIC_V1 {
        return read_v1(reader, file_len, apply);
    }
    if &magic != SEGMENT_MAGIC && &magic != SEGMENT_MAGIC_V3 && &magic != SEGMENT_MAGIC_V2 {
        return Err(ReadError::BadHeader);
    }
    let mut at = SEGMENT_HEADER_LEN;
    let mut body = Vec::new();
    let mut sealed = false;
    let torn = |at: u64, sealed: bool| {
        Ok(Scan {
            tail: Tail::TornAt(at),
            sealed,
        })
    };
    loop {
        if at == file_len {
            return Ok(Scan {
                tail: Tail::Clean,
                sealed,
            });
        }
        if file_len - at < GROUP_HEADER_LEN as u64 {
            return torn(at, sealed);
        }
        let mut header = [0u8; GROUP_HEADER_LEN];
        reader.read_exact(&mut header)?;
        let Some((len, crc)) = record::parse_group_header(&header) else {
            if whole_group_after(&file, at + 1, file_len)? {
                return Err(ReadError::Damaged(at));
            }
            return torn(at, sealed);
        };
        let body_at = at + GROUP_HEADER_LEN as u64;
        let end = body_at + len as u64;
        if end > file_len {
            return torn(at, sealed);
        }
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
        if !record::crc_matches(&body, crc) {
            if end == file_len {
                return torn(at, sealed);
            }
            return Err(ReadError::Damaged(at));
        }
        apply_group(body_at, &body, &mut apply)?;
        sealed = len == 0;
        at = end;
    }
}

/// Apply the records of a group whose CRC checked out: any flaw in them is
/// corruption (or a newer format), never a torn write.
fn apply_group(
    body_at: u64,
    group: &[u8],
    apply: &mut impl FnMut(u64, &[u8]) -> Result<(), record::Malformed>,
) -> Result<(), ReadError> {
    let mut at = 0usize;
    while at < group.len() {
        let record_at = body_at + at as u64;
        let header: [u8; RECORD_HEADER_LEN] = group
            .get(at..at + RECORD_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(ReadError::Malformed(record_at))?;
        let (len, crc) = record::parse_header(&header);
        let start = at + RECORD_HEADER_LEN;
        let body = group
            .get(start..start.saturating_add(len))
            .filter(|body| record::crc_matches(body, crc))
            .ok_or(ReadError::Malformed(record_at))?;
        apply(body_at + start as u64, body).map_err(|_| ReadError::Malformed(record_at))?;
        at = start + len;
    }
    Ok(())
}

/// Whether a whole, valid group starts anywhere in `[from, file_len)`.
fn whole_group_after(file: &File, from: u64, file_len: u64) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let Some(rest_len) = file_len.checked_sub(from) else {
        return Ok(false);
    };
    let mut rest = vec![0u8; rest_len as usize];
    file.read_exact_at(&mut rest, from)?;
    for start in 0..rest.len().saturating_sub(GROUP_HEADER_LEN - 1) {
        let Some(header) = rest
            .get(start..start + GROUP_HEADER_LEN)
            .and_then(|h| <[u8; GROUP_HEADER_LEN]>::try_from(h).ok())
        else {
            break;
        };
        let Some((len, crc)) = record::parse_group_header(&header) else {
            continue;
        };
        let body_start = start + GROUP_HEADER_LEN;
        if let Some(body) = rest.get(body_start..body_start.saturating_add(len))
            && record::crc_matches(body, crc)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Format 1: records without groups; a record that does not check out
/// ends the segment (the newest one may be torn anywhere).
fn read_v1(
    mut reader: BufReader<&File>,
    file_len: u64,
    mut apply: impl FnMut(u64, &[u8]) -> Result<(), record::Malformed>,
) -> Result<Scan, ReadError> {
    let mut at = SEGMENT_HEADER_LEN;
    let mut body = Vec::new();
    let scan = |tail| Ok(Scan { tail, sealed: true });
    loop {
        if at == file_len {
            return scan(Tail::Clean);
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        if reader.read_exact(&mut header).is_err() {
            return scan(Tail::TornAt(at));
        }
        let (len, crc) = record::parse_header(&header);
        let body_at = at + RECORD_HEADER_LEN as u64;
        // A zero length is never written (every body has a kind byte): it
        // is a crash's zero-filled tail, like a length past the end.
        if len == 0 || len > MAX_BODY_LEN || body_at + len as u64 > file_len {
            return scan(Tail::TornAt(at));
        }
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
        if !record::crc_matches(&body, crc) {
            return scan(Tail::TornAt(at));
        }
        apply(body_at, &body).map_err(|_| ReadError::Malformed(at))?;
        at = body_at + len as u64;
    }
}

/// Copy what follows `at` in a segment to a file of its own next to it
/// (unless it is all zeros), durably, before it is cut off: a torn write
/// was never acknowledged, but it is kept for inspection, not destroyed.
/// Returns the path written, if any.
pub(crate) fn keep_aside(dir: &Path, id: u32, at: u64) -> io::Result<Option<PathBuf>> {
    use std::os::unix::fs::FileExt;
    let source = File::open(path(dir, id))?;
    let len = source.metadata()?.len();
    let mut rest = vec![0u8; len.saturating_sub(at) as usize];
    source.read_exact_at(&mut rest, at)?;
    if rest.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    let aside = dir.join(format!("{id:010}-at-{at}{TORN_SUFFIX}"));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&aside)?;
    file.write_all(&rest)?;
    durable::sync_data(&file)?;
    sync_dir(dir)?;
    Ok(Some(aside))
}

/// Append an empty group to a segment of format 2, durably.
pub(crate) fn seal(file_path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new().read(true).append(true).open(file_path)?;
    file.write_all(&record::seal_group())?;
    durable::sync_data(&file)
}

/// Cut a segment back to `len` bytes, durably.
pub(crate) fn truncate(file_path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().read(true).write(true).open(file_path)?;
    file.set_len(len)?;
    durable::sync_data(&file)
}
