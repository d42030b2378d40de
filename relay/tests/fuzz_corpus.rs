//! Every saved input of the relay's fuzz targets (`fuzz/corpus/TARGET/` and
//! `fuzz/regressions/TARGET/`) replayed through the same entry points, so CI
//! runs them all on every change.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.

use comptoir_relay::fuzzing::{decode_directory_records, decode_mail_log_record};

fn saved_inputs(target: &str) -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for folder in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
            assert_ne!(folder, "corpus", "corpus of {target} went missing");
            continue;
        };
        for entry in entries {
            inputs.push(std::fs::read(entry.unwrap().path()).unwrap());
        }
    }
    assert!(inputs.len() >= 5, "corpus of {target} went missing");
    inputs
}

#[test]
fn mail_log_corpus_replays() {
    let parsed = saved_inputs("mail_log")
        .iter()
        .filter(|data| decode_mail_log_record(data))
        .count();
    assert!(parsed > 0, "no saved input is a valid mail-log record");
}

#[test]
fn directory_corpus_replays() {
    let accepted: usize = saved_inputs("directory")
        .iter()
        .map(|data| decode_directory_records(data))
        .sum();
    assert!(accepted > 0, "no saved input is a valid directory record");
}
