//! Hostile-input tests for every decoder: random and mutated bytes get a
//! typed error (or a valid value), never a panic, and never change state.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.

mod support;

use comptoir_protocol::frame::{decode_client, decode_server};
use comptoir_protocol::message::IncomingMessage;
use comptoir_protocol::{DeviceList, RecordKind, SessionRecord, StorageKey, open_record};
use proptest::prelude::*;
use support::pair;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_client(&bytes);
        let _ = decode_server(&bytes);
        let _ = IncomingMessage::decode(&bytes);
        let _ = SessionRecord::from_protobuf(&bytes);
        let _ = open_record(&StorageKey::from_bytes([1; 32]), RecordKind::Session, &bytes);
        if let Ok(comptoir_protocol::proto::wire::ServerFrame {
            body: Some(comptoir_protocol::proto::wire::server_frame::Body::DeviceList(list)),
            ..
        }) = decode_server(&bytes)
        {
            let _ = DeviceList::verify(&list, None);
        }
        // With a valid version byte, to get past the first check.
        let mut v = bytes.clone();
        if !v.is_empty() { v[0] = 1; }
        let _ = decode_client(&v);
        let _ = IncomingMessage::decode(&v);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Mutations of a real message are refused and leave the session intact.
    #[test]
    fn mutated_messages_are_refused_without_state_change(
        position in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        truncate in any::<bool>(),
    ) {
        let (_alice, mut a, mut bob, mut b, mut rng) = pair(77);
        let first = a.encrypt(b"establish", &mut rng).unwrap();
        bob.decrypt(&mut b, &first).unwrap();
        let ct = a.encrypt(b"target", &mut rng).unwrap();
        let mut bad = ct.clone();
        let i = position.index(bad.len());
        if truncate { bad.truncate(i); } else { bad[i] ^= xor; }
        let before = b.to_protobuf().to_vec();
        let kept = bob.prekeys.one_time_count();
        prop_assert!(bob.decrypt(&mut b, &bad).is_err());
        prop_assert_eq!(b.to_protobuf().to_vec(), before);
        prop_assert_eq!(bob.prekeys.one_time_count(), kept);
        prop_assert_eq!(bob.decrypt(&mut b, &ct).unwrap().plaintext, b"target".to_vec());
    }
}

#[allow(unreachable_pub)] // Reason: shared with the fuzz crate, where they are its API.
#[path = "../../fuzz/src/interaction.rs"]
mod interaction;
#[allow(unreachable_pub)]
#[path = "../../fuzz/src/protocol_targets.rs"]
mod protocol_targets;

/// The saved inputs of a fuzz target: its corpus (`fuzz/corpus/TARGET/`)
/// and the inputs that once found a bug (`fuzz/regressions/TARGET/`).
fn saved_inputs(target: &str) -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for folder in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
            assert_ne!(folder, "corpus", "corpus of {target} went missing");
            continue;
        };
        for entry in entries {
            inputs.push(
                std::fs::read(entry.expect("readable entry").path()).expect("readable input"),
            );
        }
    }
    inputs
}

/// Every saved input of the protocol crate's fuzz targets is replayed here
/// through the targets' own code, so CI runs them all on every change.
#[test]
fn fuzz_corpus_replays() {
    let mut counts = [0usize; 4];
    let mut accepted = [0usize; 4];
    type Target = (&'static str, fn(&[u8]) -> bool);
    let targets: [Target; 4] = [
        ("frame", protocol_targets::frame),
        ("message", protocol_targets::message),
        ("content", protocol_targets::content),
        ("record", protocol_targets::record),
    ];
    for (i, (target, run)) in targets.into_iter().enumerate() {
        for data in saved_inputs(target) {
            counts[i] += 1;
            accepted[i] += usize::from(run(&data));
        }
    }
    for (i, (target, _)) in targets.iter().enumerate() {
        assert!(
            counts[i] >= 5,
            "corpus of {target} went missing: {}",
            counts[i]
        );
        // The corpora still hold inputs that get past the decoders (valid
        // client frames, prekey messages, contents, session records).
        assert!(
            accepted[i] > 0,
            "no input of {target} gets past its decoder"
        );
    }
}

/// The interaction fuzzer's saved inputs replayed as a deterministic test:
/// two real sessions under delivery, loss, duplication, reordering, backups
/// and rollbacks decrypt every message at most once and converge.
#[test]
fn interaction_corpus_replays() {
    let inputs = saved_inputs("interaction");
    assert!(inputs.len() >= 5, "interaction corpus went missing");
    for data in inputs {
        interaction::run(&data);
    }
}
