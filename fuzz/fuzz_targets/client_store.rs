//! The client store's header and records must never panic when read.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = comptoir_client::fuzzing::decode_store_records(data);
});
