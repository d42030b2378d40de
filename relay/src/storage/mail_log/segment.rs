//! Segment files: naming, creation, and reading records back at open.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::record::{self, MAX_BODY_LEN, RECORD_HEADER_LEN, SEGMENT_MAGIC};

/// Suffix of segment files.
const SEGMENT_SUFFIX: &str = ".seg";

/// Suffix of a checkpoint being written (deleted at open if left over).
const PARTIAL_SUFFIX: &str = ".partial";

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
            fs::remove_file(entry.path())?;
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
/// directory entry), open for appending and reading.
pub(crate) fn create(file_path: &Path) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .append(true)
        .open(file_path)?;
    file.write_all(SEGMENT_MAGIC)?;
    file.sync_data()?;
    if let Some(dir) = file_path.parent() {
        sync_dir(dir)?;
    }
    Ok(file)
}

/// Make a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Open an existing segment for reading.
pub(crate) fn open_read(file_path: &Path) -> io::Result<File> {
    File::open(file_path)
}

/// How reading a segment ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Every byte belonged to a whole, valid record.
    Clean,
    /// The records stopped being valid at this offset (a write cut short
    /// by a crash, never acknowledged): the rest is to be discarded.
    TornAt(u64),
}

/// A segment that is not ours or not readable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// I/O failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The file does not start with the segment header.
    #[error("not a mail log segment (bad header)")]
    BadHeader,
    /// A record with a valid CRC did not decode.
    #[error("a mail log record at offset {0} does not decode")]
    Malformed(u64),
}

/// Read every record of a segment in order, calling `apply(offset of the
/// record body, body)`.
pub(crate) fn read_records(
    file_path: &Path,
    mut apply: impl FnMut(u64, &[u8]) -> Result<(), record::Malformed>,
) -> Result<Tail, ReadError> {
    let file = File::open(file_path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; SEGMENT_MAGIC.len()];
    if reader.read_exact(&mut magic).is_err() {
        // Created but its header never reached the disk.
        return Ok(Tail::TornAt(0));
    }
    if &magic != SEGMENT_MAGIC {
        return Err(ReadError::BadHeader);
    }
    let mut at = SEGMENT_HEADER_LEN;
    let mut body = Vec::new();
    loop {
        if at == file_len {
            return Ok(Tail::Clean);
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        if reader.read_exact(&mut header).is_err() {
            return Ok(Tail::TornAt(at));
        }
        let (len, crc) = record::parse_header(&header);
        let body_at = at + RECORD_HEADER_LEN as u64;
        // A zero length is never written (every body has a kind byte): it
        // is a crash's zero-filled tail, like a length past the end.
        if len == 0 || len > MAX_BODY_LEN || body_at + len as u64 > file_len {
            return Ok(Tail::TornAt(at));
        }
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
        if !record::crc_matches(&body, crc) {
            return Ok(Tail::TornAt(at));
        }
        apply(body_at, &body).map_err(|_| ReadError::Malformed(at))?;
        at = body_at + len as u64;
    }
}

/// Cut a segment back to `len` bytes, durably.
pub(crate) fn truncate(file_path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(file_path)?;
    file.set_len(len)?;
    file.sync_all()
}
