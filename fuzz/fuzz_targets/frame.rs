//! Client and server frame decoding must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = comptoir_protocol::frame::decode_client(data);
    let _ = comptoir_protocol::frame::decode_server(data);
});
