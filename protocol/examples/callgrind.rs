//! A small harness for counting instructions with callgrind, where the
//! criterion figures are too noisy (a shared, loaded machine). It runs one
//! operation of `benches/ratchet.rs` a fixed number of times, for ours or
//! for vodozemac, inside a function callgrind can be told to count alone:
//!
//! ```text
//! cargo build --release -p comptoir-protocol --example callgrind
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='callgrind::measured*' \
//!     target/release/examples/callgrind gap comptoir
//! ```
//!
//! Operations: `gap` (decrypt the 1,001st message of a chain on a fresh
//! copy of the receiver, 10 times) and `labelled` (1 KiB encrypt + decrypt
//! with the six labels bound and checked, 100 times; vodozemac encrypts and
//! decrypts the same 1 KiB text). Implementations: `comptoir`, `vodozemac`.
//! The setup (sessions, the 1,001 messages, the copies of the receiver) is
//! outside `measured_*` and is not counted. Results: docs/BENCHMARKS.md.

// Reason: a measurement harness fails loudly; nothing here is library code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use comptoir_protocol::labels;
use comptoir_protocol::proto::content::{Content, Text, content};
use comptoir_protocol::proto::wire;
use comptoir_protocol::{IdentityKeyPair, InMemoryPreKeyStore, SessionRecord, VerifiedBundle};
use prost::Message;
use rand::SeedableRng;
use rand::rngs::StdRng;
use vodozemac::olm::{Account, OlmMessage, Session, SessionConfig, SessionPickle};

const GAP: usize = 1000;
const GAP_ROUNDS: usize = 10;
const LABELLED_ROUNDS: usize = 100;
const MESSAGE_LEN: usize = 1024;

struct Party {
    identity: IdentityKeyPair,
    prekeys: InMemoryPreKeyStore,
    upload: wire::UploadPreKeys,
    session: SessionRecord,
}

impl Party {
    fn new(rng: &mut StdRng, one_time: u32) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        let (prekeys, upload) = InMemoryPreKeyStore::generate(&identity, 1, 100, one_time, rng);
        Self {
            identity,
            prekeys,
            upload,
            session: SessionRecord::new(),
        }
    }

    fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.session
            .decrypt(&self.identity, &mut self.prekeys, None, bytes)
            .expect("decrypt")
            .plaintext
    }
}

fn send(from: &mut Party, to: &mut Party, plaintext: &[u8], rng: &mut StdRng) {
    let bytes = from.session.encrypt(plaintext, rng).expect("encrypt");
    assert_eq!(to.receive(&bytes), plaintext);
}

fn ours_established(seed: u64) -> (Party, Party, StdRng) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut alice = Party::new(&mut rng, 0);
    let mut bob = Party::new(&mut rng, 1);
    let bundle = wire::PreKeyBundle {
        account_id: vec![0; 16],
        device_id: 1,
        identity_key: bob.identity.public().to_bytes().to_vec(),
        signed_prekey: bob.upload.signed_prekey.clone(),
        one_time_prekey: bob.upload.one_time_prekeys.first().cloned(),
    };
    let bundle = VerifiedBundle::verify(&bundle, Some(bob.identity.public())).expect("bundle");
    alice
        .session
        .initiate(&alice.identity, &bundle, &mut rng)
        .expect("initiate");
    send(&mut alice, &mut bob, b"first", &mut rng);
    send(&mut bob, &mut alice, b"reply", &mut rng);
    send(&mut alice, &mut bob, b"steady", &mut rng);
    (alice, bob, rng)
}

fn olm_established() -> (Session, Session) {
    let alice = Account::new();
    let mut bob = Account::new();
    bob.generate_one_time_keys(1);
    let one_time_key = *bob.one_time_keys().values().next().expect("one-time key");
    bob.mark_keys_as_published();
    let mut alice_session = alice
        .create_outbound_session(
            SessionConfig::version_1(),
            bob.curve25519_key(),
            one_time_key,
        )
        .expect("outbound");
    let OlmMessage::PreKey(first) = alice_session.encrypt(b"first").expect("encrypt") else {
        panic!("prekey message first");
    };
    let mut bob_session = bob
        .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &first)
        .expect("inbound")
        .session;
    let reply = bob_session.encrypt(b"reply").expect("encrypt");
    alice_session.decrypt(&reply).expect("decrypt");
    let steady = alice_session.encrypt(b"steady").expect("encrypt");
    bob_session.decrypt(&steady).expect("decrypt");
    (alice_session, bob_session)
}

#[inline(never)]
fn measured_gap_comptoir(bob: &mut Party, records: &mut [SessionRecord], last: &[u8]) {
    for record in records {
        let out = record
            .decrypt(&bob.identity, &mut bob.prekeys, None, black_box(last))
            .expect("gap decrypt");
        black_box(out);
    }
}

#[inline(never)]
fn measured_gap_vodozemac(sessions: &mut [Session], last: &OlmMessage) {
    for session in sessions {
        black_box(session.decrypt(black_box(last)).expect("gap decrypt"));
    }
}

fn gap(which: &str) {
    let plaintext = vec![7u8; MESSAGE_LEN];
    match which {
        "comptoir" => {
            let (mut alice, mut bob, mut rng) = ours_established(5);
            let mut last = Vec::new();
            for _ in 0..=GAP {
                last = alice
                    .session
                    .encrypt(&plaintext, &mut rng)
                    .expect("encrypt");
            }
            let mut records: Vec<SessionRecord> =
                (0..GAP_ROUNDS).map(|_| bob.session.clone()).collect();
            measured_gap_comptoir(&mut bob, &mut records, &last);
        }
        "vodozemac" => {
            let (mut alice, bob) = olm_established();
            let mut last = None;
            for _ in 0..=GAP {
                last = Some(alice.encrypt(&plaintext).expect("encrypt"));
            }
            let pickle = bob.pickle().encrypt(&[7; 32]);
            let mut sessions: Vec<Session> = (0..GAP_ROUNDS)
                .map(|_| {
                    Session::from_pickle(
                        SessionPickle::from_encrypted(&pickle, &[7; 32]).expect("unpickle"),
                    )
                })
                .collect();
            measured_gap_vodozemac(&mut sessions, &last.expect("1,001 messages"));
        }
        other => panic!("unknown implementation {other}"),
    }
}

#[inline(never)]
fn measured_labelled_comptoir(
    alice: &mut Party,
    bob: &mut Party,
    rng: &mut StdRng,
    content: &mut Content,
    envelope: &wire::Envelope,
) {
    for _ in 0..LABELLED_ROUNDS {
        content.labels = Some(labels::bind(
            &envelope.message_id,
            &envelope.sender_account,
            &envelope.recipient_account,
            wire::Category::Conversation,
            &envelope.template_id,
            &envelope.franking_tag,
        ));
        let bytes = alice
            .session
            .encrypt(&black_box(&*content).encode_to_vec(), rng)
            .expect("encrypt");
        let received = Content::decode(bob.receive(&bytes).as_slice()).expect("content");
        labels::check(&received, black_box(envelope)).expect("labels match");
        black_box(received);
    }
}

#[inline(never)]
fn measured_labelled_vodozemac(alice: &mut Session, bob: &mut Session, text: &str) {
    for _ in 0..LABELLED_ROUNDS {
        let message = alice.encrypt(black_box(text.as_bytes())).expect("encrypt");
        black_box(bob.decrypt(&message).expect("decrypt"));
    }
}

fn labelled(which: &str) {
    let text: String = (0..MESSAGE_LEN)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    match which {
        "comptoir" => {
            let envelope = wire::Envelope {
                message_id: vec![0x11; 16],
                sender_account: vec![0xAA; 16],
                sender_device: 1,
                recipient_account: vec![0xBB; 16],
                recipient_device: 1,
                category: wire::Category::Conversation as i32,
                ..wire::Envelope::default()
            };
            let mut content = Content {
                message_id: envelope.message_id.clone(),
                sent_at_ms: 1_700_000_000_000,
                body: Some(content::Body::Text(Text { body: text })),
                labels: None,
                franking_key: Vec::new(),
                padding: Vec::new(),
            };
            let (mut alice, mut bob, mut rng) = ours_established(6);
            measured_labelled_comptoir(&mut alice, &mut bob, &mut rng, &mut content, &envelope);
        }
        "vodozemac" => {
            let (mut alice, mut bob) = olm_established();
            measured_labelled_vodozemac(&mut alice, &mut bob, &text);
        }
        other => panic!("unknown implementation {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["gap", which] => gap(which),
        ["labelled", which] => labelled(which),
        _ => panic!("usage: callgrind (gap|labelled) (comptoir|vodozemac)"),
    }
}
