//! `Content` (the plaintext inside every message) must decode without
//! panicking, and what decodes must re-encode to an equal value.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = comptoir_fuzz::protocol_targets::content(data);
});
