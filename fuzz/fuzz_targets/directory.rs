//! The relay's directory records (device lists, prekeys, phones, names)
//! must never panic when read.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = comptoir_relay::fuzzing::decode_directory_records(data);
});
