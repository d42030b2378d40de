//! The relay's franking keys and tags (docs/PROTOCOL.md, "The relay's
//! franking tag"; docs/OPERATIONS.md, "Franking keys").
//!
//! The keys live in one user-only (0600) file in the data directory,
//! `franking.keys`, created at first start: one line per key, `ID HEX`
//! (a decimal key id, 64 hex digits). The highest id tags new deliveries;
//! older keys stay to verify reports of messages tagged under them.
//! `relay franking-key rotate` appends a new key (with the relay stopped).
//!
//! The tag of a queued copy is computed when the copy is pushed, from the
//! stored envelope (its commitment, sender, recipient, category, template
//! id and accept time) and its accept id: a pure function of what the
//! relay stored at accept, so nothing else is stored for it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use comptoir_protocol::franking::{self, FRANKING_TAG_LEN, RELAY_FRANKING_KEY_LEN, RelayTagFields};
use prost::Message;
use rand::Rng;
use zeroize::Zeroizing;

use crate::operator::{OperatorFileError, check_user_only};

/// File name of the relay's franking keys in the data directory.
pub const FRANKING_KEYS_FILE: &str = "franking.keys";
/// Most bytes the file may hold (far more than any rotation schedule
/// needs: about 8,000 keys).
const MAX_FILE_LEN: u64 = 600_000;

/// The relay's franking keys, by id.
pub struct FrankingKeys {
    keys: BTreeMap<u32, Zeroizing<[u8; RELAY_FRANKING_KEY_LEN]>>,
}

impl std::fmt::Debug for FrankingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrankingKeys")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The tag the relay delivers with one copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayTag {
    /// HMAC-SHA256 under key `key_id`.
    pub tag: [u8; FRANKING_TAG_LEN],
    /// The key's id.
    pub key_id: u32,
}

/// The envelope fields the tag covers, decoded from a stored envelope
/// without copying its ciphertext (field 12 is skipped).
#[derive(Clone, PartialEq, Message)]
struct EnvelopeHeader {
    #[prost(bytes = "vec", tag = "1")]
    message_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    sender_account: Vec<u8>,
    #[prost(uint32, tag = "3")]
    sender_device: u32,
    #[prost(bytes = "vec", tag = "4")]
    recipient_account: Vec<u8>,
    #[prost(uint32, tag = "5")]
    recipient_device: u32,
    #[prost(uint64, tag = "7")]
    server_timestamp_ms: u64,
    #[prost(int32, tag = "8")]
    category: i32,
    #[prost(string, tag = "9")]
    template_id: String,
    #[prost(bytes = "vec", tag = "10")]
    franking_tag: Vec<u8>,
}

impl FrankingKeys {
    /// Load the keys from `path`, or create the file (0600) with key 1.
    pub fn load_or_create(path: &Path) -> Result<Self, OperatorFileError> {
        match Self::load(path) {
            Err(OperatorFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Self::rotate(path)?;
                Self::load(path)
            }
            other => other,
        }
    }

    /// Load the keys from `path` (refused if others may read it, or if a
    /// line is not `ID HEX`).
    pub fn load(path: &Path) -> Result<Self, OperatorFileError> {
        let io = |what, source| OperatorFileError::Io {
            what,
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(|e| io("cannot open", e))?;
        check_user_only(&file, path)?;
        let mut text = Zeroizing::new(String::new());
        Read::by_ref(&mut file)
            .take(MAX_FILE_LEN)
            .read_to_string(&mut text)
            .map_err(|e| io("cannot read", e))?;
        let malformed = || OperatorFileError::Malformed {
            path: path.to_owned(),
            what: "franking key list (lines of a key id and 64 hex digits)",
        };
        let mut keys = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (id, hex_key) = line.split_once(' ').ok_or_else(malformed)?;
            let id: u32 = id.parse().map_err(|_| malformed())?;
            let mut key = Zeroizing::new([0u8; RELAY_FRANKING_KEY_LEN]);
            hex::decode_to_slice(hex_key.trim(), key.as_mut()).map_err(|_| malformed())?;
            if id == 0 || keys.insert(id, key).is_some() {
                return Err(malformed());
            }
        }
        if keys.is_empty() {
            return Err(malformed());
        }
        Ok(Self { keys })
    }

    /// Append a fresh key with the next id to the file at `path` (created
    /// 0600 if missing), durably. Returns its id. The relay reads the file
    /// at start: rotate while it is stopped.
    pub fn rotate(path: &Path) -> Result<u32, OperatorFileError> {
        let io = |what, source| OperatorFileError::Io {
            what,
            path: path.to_owned(),
            source,
        };
        let next = match Self::load(path) {
            Ok(keys) => {
                keys.current()
                    .0
                    .checked_add(1)
                    .ok_or_else(|| OperatorFileError::Malformed {
                        path: path.to_owned(),
                        what: "franking key list with room for another key id",
                    })?
            }
            Err(OperatorFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                1
            }
            Err(other) => return Err(other),
        };
        let mut key = Zeroizing::new([0u8; RELAY_FRANKING_KEY_LEN]);
        rand::rng().fill_bytes(key.as_mut());
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| io("cannot open", e))?;
        check_user_only(&file, path)?;
        let line = Zeroizing::new(format!("{next} {}\n", hex::encode(*key)));
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("cannot write", e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("cannot sync the directory of", e))?;
        }
        tracing::info!(file = %path.display(), key_id = next, "added a franking key");
        Ok(next)
    }

    /// The key new deliveries are tagged with: the highest id.
    pub fn current(&self) -> (u32, &[u8; RELAY_FRANKING_KEY_LEN]) {
        match self.keys.last_key_value() {
            Some((id, key)) => (*id, key),
            // `load` refuses an empty file: never reached.
            None => (0, &[0; RELAY_FRANKING_KEY_LEN]),
        }
    }

    /// The key with id `key_id`, if the relay still has it.
    pub fn get(&self, key_id: u32) -> Option<&[u8; RELAY_FRANKING_KEY_LEN]> {
        self.keys.get(&key_id).map(|k| &**k)
    }

    /// The tag of a stored envelope (its encoded `Envelope`, without an
    /// accept id) pushed under `accept_id`, by the current key; `None`
    /// when it carries no franking commitment (or does not decode).
    pub fn tag_stored(&self, envelope: &[u8], accept_id: u64) -> Option<RelayTag> {
        let header = EnvelopeHeader::decode(envelope).ok()?;
        if header.franking_tag.is_empty() {
            return None;
        }
        let (key_id, key) = self.current();
        let fields = RelayTagFields {
            key_id,
            commitment: &header.franking_tag,
            message_id: &header.message_id,
            sender_account: &header.sender_account,
            sender_device: header.sender_device,
            recipient_account: &header.recipient_account,
            recipient_device: header.recipient_device,
            accept_id,
            category: header.category,
            template_id: &header.template_id,
            server_timestamp_ms: header.server_timestamp_ms,
        };
        Some(RelayTag {
            tag: franking::relay_tag(key, &fields),
            key_id,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use super::*;
    use comptoir_protocol::proto::wire::Envelope;

    #[test]
    fn created_then_rotated_old_keys_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FRANKING_KEYS_FILE);
        let first = FrankingKeys::load_or_create(&path).unwrap();
        assert_eq!(first.current().0, 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(FrankingKeys::rotate(&path).unwrap(), 2);
        let both = FrankingKeys::load_or_create(&path).unwrap();
        assert_eq!(both.current().0, 2);
        assert_eq!(both.get(1), Some(first.current().1));
        assert!(!format!("{both:?}").contains(&hex::encode(first.current().1)));
    }

    #[test]
    fn a_damaged_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FRANKING_KEYS_FILE);
        FrankingKeys::load_or_create(&path).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("2 zz\n");
        std::fs::write(&path, &text).unwrap();
        let error = FrankingKeys::load_or_create(&path).unwrap_err();
        assert!(
            matches!(error, OperatorFileError::Malformed { .. }),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn the_stored_tag_is_the_protocol_tag_over_the_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let keys = FrankingKeys::load_or_create(&dir.path().join(FRANKING_KEYS_FILE)).unwrap();
        let envelope = Envelope {
            message_id: vec![1; 16],
            sender_account: vec![2; 16],
            sender_device: 3,
            recipient_account: vec![4; 16],
            recipient_device: 5,
            server_timestamp_ms: 6,
            category: 7,
            template_id: "t".into(),
            franking_tag: vec![8; 32],
            ciphertext: vec![9; 100],
            ..Envelope::default()
        };
        let tag = keys.tag_stored(&envelope.encode_to_vec(), 42).unwrap();
        let fields = RelayTagFields {
            key_id: 1,
            commitment: &[8; 32],
            message_id: &[1; 16],
            sender_account: &[2; 16],
            sender_device: 3,
            recipient_account: &[4; 16],
            recipient_device: 5,
            accept_id: 42,
            category: 7,
            template_id: "t",
            server_timestamp_ms: 6,
        };
        assert!(franking::check_relay_tag(
            keys.get(1).unwrap(),
            &fields,
            &tag.tag
        ));
        let unfranked = Envelope {
            franking_tag: Vec::new(),
            ..envelope
        };
        assert_eq!(keys.tag_stored(&unfranked.encode_to_vec(), 42), None);
    }
}
