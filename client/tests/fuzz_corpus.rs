//! Every saved input of the client store's fuzz target
//! (`fuzz/corpus/client_store/` and `fuzz/regressions/client_store/`)
//! replayed through the same entry point, so CI runs them all.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.

use comptoir_client::fuzzing::decode_store_records;

#[test]
fn client_store_corpus_replays() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    let mut accepted = 0;
    for folder in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join("client_store")) else {
            assert_ne!(folder, "corpus", "the client_store corpus went missing");
            continue;
        };
        for entry in entries {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            accepted += decode_store_records(&data);
            replayed += 1;
        }
    }
    assert!(replayed >= 3, "the client_store corpus went missing");
    assert!(
        accepted > 0,
        "no saved input is a valid client store record"
    );
}
