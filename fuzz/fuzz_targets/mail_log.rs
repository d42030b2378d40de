//! The relay's mail-log record bodies must never panic when read.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = comptoir_relay::fuzzing::decode_mail_log_record(data);
});
