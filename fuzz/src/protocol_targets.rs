//! Bodies of the fuzz targets on the protocol crate's decoders. Each takes
//! any bytes and panics only when an invariant breaks.
//!
//! This file is compiled into the fuzz targets and into the ordinary test
//! `fuzz_corpus_replays` (protocol/tests/decoders.rs), so CI runs the same
//! checks over every saved input.

use std::sync::OnceLock;

use comptoir_protocol::frame::{decode_client, decode_server};
use comptoir_protocol::message::{IncomingMessage, PreKeyMessage, RatchetMessage};
use comptoir_protocol::proto::content::Content;
use comptoir_protocol::proto::wire;
use comptoir_protocol::store::open_identity;
use comptoir_protocol::{
    AccountId, IdentityKeyPair, InMemoryPreKeyStore, RecordKind, SessionRecord, StorageKey,
    VerifiedBundle, open_record,
};
use prost::Message;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Client and server frames. Returns whether it is a valid client frame.
pub fn frame(data: &[u8]) -> bool {
    let _ = decode_server(data);
    decode_client(data).is_ok()
}

/// Bob's identity and his record after decrypting Alice's first message.
fn session() -> &'static (IdentityKeyPair, Vec<u8>) {
    static SESSION: OnceLock<(IdentityKeyPair, Vec<u8>)> = OnceLock::new();
    SESSION.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(14);
        let alice = IdentityKeyPair::generate(&mut rng);
        let bob = IdentityKeyPair::generate(&mut rng);
        let (mut prekeys, upload) = InMemoryPreKeyStore::generate(&bob, 1, 100, 1, &mut rng);
        let bundle = wire::PreKeyBundle {
            account_id: AccountId::generate(&mut rng).to_vec(),
            device_id: 1,
            identity_key: bob.public().to_bytes().to_vec(),
            signed_prekey: upload.signed_prekey,
            one_time_prekey: upload.one_time_prekeys.first().cloned(),
        };
        let fixture = |what: &str| -> ! { panic!("fixture: {what}") };
        let verified = VerifiedBundle::verify(&bundle, Some(bob.public()))
            .unwrap_or_else(|_| fixture("bundle"));
        let mut sending = SessionRecord::new();
        if sending.initiate(&alice, &verified, &mut rng).is_err() {
            fixture("initiate");
        }
        let first = sending
            .encrypt(b"first", &mut rng)
            .unwrap_or_else(|_| fixture("encrypt"));
        let mut receiving = SessionRecord::new();
        if receiving.decrypt(&bob, &mut prekeys, None, &first).is_err() {
            fixture("decrypt");
        }
        (bob, receiving.to_protobuf().to_vec())
    })
}

/// Both message types, then decryption by a session that has received one
/// message: a refused message leaves the record unchanged. Returns whether
/// it is a prekey message.
pub fn message(data: &[u8]) -> bool {
    let _ = RatchetMessage::decode(data);
    let _ = PreKeyMessage::decode(data);
    let Ok(incoming) = IncomingMessage::decode(data) else {
        return false;
    };
    let (bob, stored) = session();
    let Ok(mut record) = SessionRecord::from_protobuf(stored) else {
        panic!("the fixture record reads back");
    };
    let mut prekeys = InMemoryPreKeyStore::default();
    if record.decrypt(bob, &mut prekeys, None, data).is_err() {
        assert_eq!(
            record.to_protobuf().as_slice(),
            stored.as_slice(),
            "a refused message changed the record"
        );
    }
    matches!(incoming, IncomingMessage::PreKey(_))
}

/// `Content`: what decodes re-encodes to an equal value. Returns whether it
/// decoded.
pub fn content(data: &[u8]) -> bool {
    let Ok(content) = Content::decode(data) else {
        return false;
    };
    match Content::decode(content.encode_to_vec().as_slice()) {
        Ok(again) => assert_eq!(again, content, "content changed through encode/decode"),
        Err(e) => panic!("re-encoded content does not decode: {e}"),
    }
    true
}

/// Stored session and identity records, sealed and unsealed: a record that
/// reads writes back to bytes that read to the same record. Returns whether
/// it read as a session record.
pub fn record(data: &[u8]) -> bool {
    let key = StorageKey::from_bytes([3; 32]);
    let _ = open_record(&key, RecordKind::Session, data);
    let _ = open_identity(&key, data);
    let Ok(record) = SessionRecord::from_protobuf(data) else {
        return false;
    };
    let written = record.to_protobuf();
    match SessionRecord::from_protobuf(&written) {
        Ok(again) => assert_eq!(
            again.to_protobuf(),
            written,
            "record changed through storage"
        ),
        Err(e) => panic!("a written record does not read back: {e}"),
    }
    true
}
