//! Entry points for the fuzz targets in `fuzz/`: the decoders of what the
//! relay reads back from disk, reachable from outside the crate. Not an API.

use comptoir_protocol::DeviceList;
use comptoir_protocol::proto::wire::{SignedDeviceList, SignedPreKey};
use prost::Message;

use crate::storage::mail_log::record;
use crate::storage::sled;

/// Decode `bytes` as one mail-log record body (the part after the length
/// and CRC). Returns whether it parsed; never panics on any input.
pub fn decode_mail_log_record(bytes: &[u8]) -> bool {
    record::decode(bytes).is_ok()
}

/// Feed `bytes` to every decoder of the relay's directory trees (device
/// lists, signed prekeys, phone bindings, business names). Returns how many
/// accepted them; never panics on any input.
pub fn decode_directory_records(bytes: &[u8]) -> usize {
    let list = sled::decode_list(bytes).ok().map(|_| {
        SignedDeviceList::decode(bytes).is_ok_and(|list| DeviceList::verify(&list, None).is_ok())
    });
    [
        list.is_some(),
        list == Some(true),
        SignedPreKey::decode(bytes).is_ok(),
        sled::decode_phone(bytes).is_ok(),
        sled::account_from(bytes, "names").is_ok(),
    ]
    .into_iter()
    .filter(|&ok| ok)
    .count()
}
