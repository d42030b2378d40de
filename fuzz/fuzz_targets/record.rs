//! Stored session and identity records (sealed and unsealed) must never
//! panic when read; a record that reads must write back readable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = comptoir_fuzz::protocol_targets::record(data);
});
