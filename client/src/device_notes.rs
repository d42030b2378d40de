//! This device's notes about its account's devices: the name the user gave
//! each and when it was added, sealed in the [`Store`] like every record.
//! The signed device list carries neither (the relay need not know them),
//! so only the device that wrote a note has it: the first device for the
//! devices it added, each device for itself.

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;

use crate::error::{ClientError, Result};
use crate::store::{Store, Tree};

const NOTE_RECORD_VERSION: u32 = 1;
/// Longest device name accepted.
pub const MAX_DEVICE_NAME_LEN: usize = 64;

/// What this device knows about one device of its account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceNote {
    /// The name the user gave it, if any.
    pub name: Option<String>,
    /// When it was added (ms since the Unix epoch), if this device saw it.
    pub added_at_ms: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
struct NoteRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(uint64, tag = "3")]
    added_at_ms: u64,
}

impl fmt::Debug for NoteRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoteRecord(..)")
    }
}

/// Check a device name: 1 to [`MAX_DEVICE_NAME_LEN`] bytes, no control
/// characters.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_DEVICE_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ClientError::InvalidArgument(format!(
            "a device name is 1 to {MAX_DEVICE_NAME_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

fn key(device_id: u32) -> [u8; 4] {
    device_id.to_be_bytes()
}

/// The note about `device_id` (empty if none).
pub fn get(store: &Store, device_id: u32) -> Result<DeviceNote> {
    let Some(bytes) = store.get(Tree::DeviceNotes, &key(device_id))? else {
        return Ok(DeviceNote::default());
    };
    let record = NoteRecord::decode(bytes.as_slice())
        .map_err(|e| ClientError::CorruptStore(format!("device note: {e}")))?;
    Ok(DeviceNote {
        name: Some(record.name).filter(|n| !n.is_empty()),
        added_at_ms: Some(record.added_at_ms).filter(|&t| t != 0),
    })
}

/// Every note, by device id.
pub fn all(store: &Store) -> Result<BTreeMap<u32, DeviceNote>> {
    let mut notes = BTreeMap::new();
    for (k, _) in store.scan(Tree::DeviceNotes, &[])? {
        let id = <[u8; 4]>::try_from(k.as_slice())
            .map(u32::from_be_bytes)
            .map_err(|_| ClientError::CorruptStore("device note key".into()))?;
        notes.insert(id, get(store, id)?);
    }
    Ok(notes)
}

/// Write the note about `device_id`.
pub fn put(store: &Store, device_id: u32, note: &DeviceNote) -> Result<()> {
    if let Some(name) = &note.name {
        check_name(name)?;
    }
    let record = NoteRecord {
        version: NOTE_RECORD_VERSION,
        name: note.name.clone().unwrap_or_default(),
        added_at_ms: note.added_at_ms.unwrap_or(0),
    };
    store.put(Tree::DeviceNotes, &key(device_id), &record.encode_to_vec())
}
