//! Stored session records must never panic when parsed.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = comptoir_protocol::SessionRecord::from_protobuf(data);
});
