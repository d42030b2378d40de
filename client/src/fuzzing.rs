//! Entry points for the fuzz targets in `fuzz/`: the decoders of the
//! client store's records, reachable from outside the crate. Not an API.

use comptoir_protocol::{RecordKind, StorageKey, open_record};

/// Feed `bytes` to every decoder of the client store (the header file,
/// the record log, a sealed record, and the unsealed account, peer and
/// message records).
/// Returns how many accepted them; never panics on any input.
pub fn decode_store_records(bytes: &[u8]) -> usize {
    let key = StorageKey::from_bytes([7; 32]);
    [
        crate::store::decode_header(bytes).is_ok(),
        crate::store::replays_as_log(bytes),
        open_record(&key, RecordKind::ClientData, bytes).is_ok(),
        crate::account::Account::decode(bytes).is_ok(),
        crate::peers::decode(bytes).is_ok(),
        crate::messages::decode(bytes).is_ok(),
    ]
    .into_iter()
    .filter(|&ok| ok)
    .count()
}
