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

/// Every saved fuzzer input (`fuzz/corpus/TARGET/`) is replayed here, so CI
/// runs them all on every change.
#[test]
fn fuzz_corpus_replays() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut replayed = 0;
    let (mut valid_frames, mut prekey_messages) = (0, 0);
    for target in ["frame", "message", "record"] {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir).expect("corpus directory exists");
        for entry in entries {
            let data =
                std::fs::read(entry.expect("readable entry").path()).expect("readable input");
            match target {
                "frame" => {
                    valid_frames += usize::from(decode_client(&data).is_ok());
                    let _ = decode_server(&data);
                }
                "message" => {
                    if let Ok(IncomingMessage::PreKey(_)) = IncomingMessage::decode(&data) {
                        prekey_messages += 1;
                    }
                }
                _ => {
                    let _ = SessionRecord::from_protobuf(&data);
                }
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 100, "corpus went missing: replayed {replayed}");
    // The corpora still hold inputs that get past the decoders.
    assert!(valid_frames > 0 && prekey_messages > 0);
}
