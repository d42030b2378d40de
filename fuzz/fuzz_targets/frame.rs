//! Client and server frame decoding must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = comptoir_fuzz::protocol_targets::frame(data);
});
