//! Ratchet and prekey message decoding, and decryption by a session that has
//! received one message, must never panic; a refused message leaves the
//! session record unchanged.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = comptoir_fuzz::protocol_targets::message(data);
});
