//! Two parties, real sessions; the input chooses sends, deliveries, drops,
//! duplicates, reorderings, backups and rollbacks (see
//! `src/interaction.rs` for what is checked).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    comptoir_fuzz::interaction::run(data);
});
