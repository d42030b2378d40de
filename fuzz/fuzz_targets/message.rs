//! Ratchet and prekey message decoding, and decryption by a session that has
//! received one message, must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = comptoir_protocol::message::IncomingMessage::decode(data);
});
