//! Criterion benchmarks of the protocol crate against vodozemac's Olm, and of
//! the floor: the primitive operations each protocol step cannot avoid.
//!
//! Run (figures and their reading are in `docs/BENCHMARKS.md`):
//!
//! ```text
//! cargo bench -p comptoir-protocol --bench ratchet
//! ```
//!
//! Every group holds the same operation for both implementations, so one run
//! gives figures measured under the same load:
//!
//! - `setup_initiator`: ours = verify the prekey bundle (one Ed25519
//!   verification) + X3DH + ratchet initialisation. The first encrypt is
//!   *not* included. vodozemac = `create_outbound_session` (Olm 3DH, no
//!   signature to verify).
//! - `setup_responder`: decrypt of the first prekey message with a fresh
//!   session record and a fresh prekey store holding the one-time prekey
//!   (X3DH responder side + ratchet initialisation + first decrypt).
//!   vodozemac = `create_inbound_session` on a fresh account (it decrypts too).
//! - `encrypt_decrypt_1k`: steady state, one direction, in order: Alice
//!   encrypts 1 KiB, Bob decrypts it. Symmetric ratchet only.
//! - `encrypt_decrypt_1k_labelled`: the same with the content a client
//!   really sends: the sender binds the six envelope labels and encodes the
//!   `Content` (1 KiB of text), the receiver decodes it and checks the
//!   labels against the envelope (`labels::check`). vodozemac encrypts and
//!   decrypts the same 1 KiB of text, with no labels to bind.
//! - `encrypt_decrypt_1k_before_reply`: the same, but before the responder
//!   has answered, so every message is still a prekey message.
//! - `ping_pong_1k`: Alice → Bob then Bob → Alice, 1 KiB each: every message
//!   turns the DH ratchet.
//! - `gap_1000`: decrypt a message 1,000 messages ahead of the receiving
//!   chain (on a fresh clone of the receiver for each iteration).
//! - `floor`: one X25519 DH, one X25519 key generation, one Ed25519 strict
//!   verification, one 1 KiB ChaCha20-Poly1305 seal + open, one HMAC-SHA256,
//!   one HKDF-SHA256 (extract + 44-byte expand), one SHA-256 compression
//!   and two independent ones, and the decoding of an Ed25519 identity into
//!   its X25519 form.
//! - `parts`: a few of our own building blocks, to locate overhead.
//!
//! vodozemac runs `SessionConfig::version_1()`, the Olm that Matrix deploys
//! (AES-256-CBC + HMAC-SHA256); `version_2()` needs its
//! `experimental-session-config` feature and differs only in the MAC length.

// Reason: benchmark setup fails loudly by panicking; nothing here is library code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Tag};
use comptoir_protocol::labels;
use comptoir_protocol::proto::content::{Content, Text, content};
use comptoir_protocol::proto::wire;
use comptoir_protocol::{
    IdentityKey, IdentityKeyPair, InMemoryPreKeyStore, PreKeyStore, SessionRecord, VerifiedBundle,
    kdf, signed_prekey_payload,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use prost::Message;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::Sha256;
use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{Account, AccountPickle, OlmMessage, Session, SessionConfig, SessionPickle};
use x25519_dalek::{PublicKey, StaticSecret};

/// The message size of the steady-state benchmarks.
const MESSAGE_LEN: usize = 1024;
/// The first (prekey) message of a session: a short text.
const FIRST_MESSAGE: &[u8] = b"It's a secret to everybody";
/// The gap of the `gap_1000` benchmark (our `MAX_SKIP`).
const GAP: usize = 1000;
/// Key for vodozemac's pickles (setup only, never timed).
const PICKLE_KEY: [u8; 32] = [7; 32];
/// Signed prekey id used by [`Party::new`].
const SIGNED_PREKEY_ID: u32 = 1;
/// First one-time prekey id used by [`Party::new`].
const FIRST_ONE_TIME_ID: u32 = 100;

/// A deterministic RNG (ChaCha12), so runs draw the same keys.
fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// The 1 KiB plaintext.
fn message() -> Vec<u8> {
    (0..MESSAGE_LEN).map(|i| (i % 251) as u8).collect()
}

// ---------------------------------------------------------------------------
// Comptoir fixtures
// ---------------------------------------------------------------------------

/// One Comptoir device: identity, prekeys and its session with the peer.
struct Party {
    identity: IdentityKeyPair,
    prekeys: InMemoryPreKeyStore,
    upload: wire::UploadPreKeys,
    session: SessionRecord,
}

impl Party {
    /// A device with `one_time` one-time prekeys.
    fn new(rng: &mut StdRng, one_time: u32) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        let (prekeys, upload) = InMemoryPreKeyStore::generate(
            &identity,
            SIGNED_PREKEY_ID,
            FIRST_ONE_TIME_ID,
            one_time,
            rng,
        );
        Self {
            identity,
            prekeys,
            upload,
            session: SessionRecord::new(),
        }
    }

    /// The bundle the relay would hand out, with the first one-time prekey.
    fn bundle(&self) -> wire::PreKeyBundle {
        wire::PreKeyBundle {
            account_id: vec![0; 16],
            device_id: 1,
            identity_key: self.identity.public().to_bytes().to_vec(),
            signed_prekey: self.upload.signed_prekey.clone(),
            one_time_prekey: self.upload.one_time_prekeys.first().cloned(),
        }
    }

    /// The bundle, verified as an initiator would.
    fn verified_bundle(&self) -> VerifiedBundle {
        VerifiedBundle::verify(&self.bundle(), Some(self.identity.public()))
            .expect("fixture bundle verifies")
    }

    /// Decrypt `bytes` into this party's session.
    fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.session
            .decrypt(&self.identity, &mut self.prekeys, None, bytes)
            .expect("decrypt")
            .plaintext
    }
}

/// Send `plaintext` from `from` to `to`, checking it arrives.
fn ours_send(from: &mut Party, to: &mut Party, plaintext: &[u8], rng: &mut StdRng) {
    let bytes = from.session.encrypt(plaintext, rng).expect("encrypt");
    assert_eq!(to.receive(&bytes), plaintext);
}

/// Alice and Bob with an established session in steady state: Alice's
/// prekey message, Bob's reply, then one normal message from Alice, so both
/// have a sending and a receiving chain and Alice's next message is a plain
/// ratchet message on an existing chain.
fn ours_established(seed: u64) -> (Party, Party, StdRng) {
    let mut rng = rng(seed);
    let mut alice = Party::new(&mut rng, 0);
    let mut bob = Party::new(&mut rng, 1);
    let bundle = bob.verified_bundle();
    alice
        .session
        .initiate(&alice.identity, &bundle, &mut rng)
        .expect("initiate");
    ours_send(&mut alice, &mut bob, FIRST_MESSAGE, &mut rng);
    ours_send(&mut bob, &mut alice, b"reply", &mut rng);
    ours_send(&mut alice, &mut bob, b"steady", &mut rng);
    (alice, bob, rng)
}

// ---------------------------------------------------------------------------
// vodozemac fixtures
// ---------------------------------------------------------------------------

/// An Olm account with one unpublished one-time key; returns the account,
/// its identity (Curve25519) key and the one-time key.
fn olm_account_with_one_time_key() -> (Account, Curve25519PublicKey, Curve25519PublicKey) {
    let mut account = Account::new();
    account.generate_one_time_keys(1);
    let one_time_key = *account
        .one_time_keys()
        .values()
        .next()
        .expect("one one-time key");
    account.mark_keys_as_published();
    let identity = account.curve25519_key();
    (account, identity, one_time_key)
}

/// Olm sessions in the same steady state as [`ours_established`].
fn olm_established() -> (Session, Session) {
    let alice = Account::new();
    let (mut bob, bob_identity, one_time_key) = olm_account_with_one_time_key();
    let mut alice_session = alice
        .create_outbound_session(SessionConfig::version_1(), bob_identity, one_time_key)
        .expect("outbound session");
    let OlmMessage::PreKey(first) = alice_session.encrypt(FIRST_MESSAGE).expect("encrypt") else {
        panic!("the first Olm message is a prekey message");
    };
    let inbound = bob
        .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &first)
        .expect("inbound session");
    assert_eq!(inbound.plaintext, FIRST_MESSAGE);
    let mut bob_session = inbound.session;
    olm_send(&mut bob_session, &mut alice_session, b"reply");
    olm_send(&mut alice_session, &mut bob_session, b"steady");
    (alice_session, bob_session)
}

/// Send `plaintext` over Olm, checking it arrives.
fn olm_send(from: &mut Session, to: &mut Session, plaintext: &[u8]) {
    let message = from.encrypt(plaintext).expect("encrypt");
    assert_eq!(to.decrypt(&message).expect("decrypt"), plaintext);
}

// ---------------------------------------------------------------------------
// (a) Session setup
// ---------------------------------------------------------------------------

/// Initiator side of session setup. Ours: verify the bundle's signed prekey
/// signature, then X3DH (1 key generation, 4 DH with the one-time prekey)
/// and the ratchet's first sending chain (1 key generation, 1 DH). The first
/// encrypt is not included. vodozemac: `create_outbound_session`.
fn setup_initiator(c: &mut Criterion) {
    let mut group = c.benchmark_group("setup_initiator");

    let mut rng = rng(1);
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob = Party::new(&mut rng, 1);
    let bundle = bob.bundle();
    let expected: IdentityKey = *bob.identity.public();
    group.bench_function("comptoir", |b| {
        b.iter_with_large_drop(|| {
            let verified =
                VerifiedBundle::verify(black_box(&bundle), Some(&expected)).expect("verify");
            let mut record = SessionRecord::new();
            record
                .initiate(&alice, &verified, &mut rng)
                .expect("initiate");
            record
        });
    });

    let olm_alice = Account::new();
    let (_olm_bob, bob_identity, one_time_key) = olm_account_with_one_time_key();
    group.bench_function("vodozemac", |b| {
        b.iter_with_large_drop(|| {
            olm_alice
                .create_outbound_session(
                    SessionConfig::version_1(),
                    black_box(bob_identity),
                    black_box(one_time_key),
                )
                .expect("outbound session")
        });
    });
    group.finish();
}

/// Responder side of session setup: decrypt the first prekey message with a
/// fresh session record and a fresh prekey store that still holds the
/// one-time prekey (so every iteration runs X3DH's 4 DH, the ratchet's first
/// DH step and the first AEAD open). vodozemac: `create_inbound_session` on a
/// fresh copy of the account (3 DH and the first decrypt).
fn setup_responder(c: &mut Criterion) {
    let mut group = c.benchmark_group("setup_responder");

    let mut rng = rng(2);
    let mut alice = Party::new(&mut rng, 0);
    let bob = Party::new(&mut rng, 1);
    let signed = bob
        .prekeys
        .signed_prekey(SIGNED_PREKEY_ID)
        .expect("signed prekey");
    let one_time = bob
        .prekeys
        .one_time_prekey(FIRST_ONE_TIME_ID)
        .expect("one-time prekey");
    alice
        .session
        .initiate(&alice.identity, &bob.verified_bundle(), &mut rng)
        .expect("initiate");
    let first = alice
        .session
        .encrypt(FIRST_MESSAGE, &mut rng)
        .expect("encrypt");
    group.bench_function("comptoir", |b| {
        b.iter_batched_ref(
            || {
                let mut store = InMemoryPreKeyStore::default();
                store.insert_signed(SIGNED_PREKEY_ID, signed.clone());
                store.insert_one_time(FIRST_ONE_TIME_ID, one_time.clone());
                (SessionRecord::new(), store)
            },
            |(record, store)| {
                let decrypted = record
                    .decrypt(&bob.identity, store, None, black_box(&first))
                    .expect("first decrypt");
                debug_assert!(decrypted.new_session);
                decrypted
            },
            BatchSize::SmallInput,
        );
    });

    let olm_alice = Account::new();
    let (olm_bob, bob_identity, one_time_key) = olm_account_with_one_time_key();
    let mut outbound = olm_alice
        .create_outbound_session(SessionConfig::version_1(), bob_identity, one_time_key)
        .expect("outbound session");
    let OlmMessage::PreKey(olm_first) = outbound.encrypt(FIRST_MESSAGE).expect("encrypt") else {
        panic!("the first Olm message is a prekey message");
    };
    let pickle = olm_bob.pickle().encrypt(&PICKLE_KEY);
    let alice_identity = olm_alice.curve25519_key();
    group.bench_function("vodozemac", |b| {
        b.iter_batched_ref(
            || {
                Account::from_pickle(
                    AccountPickle::from_encrypted(&pickle, &PICKLE_KEY).expect("unpickle"),
                )
            },
            |account| {
                account
                    .create_inbound_session(
                        SessionConfig::version_1(),
                        alice_identity,
                        black_box(&olm_first),
                    )
                    .expect("inbound session")
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

// ---------------------------------------------------------------------------
// (b) Messages
// ---------------------------------------------------------------------------

/// Steady state, one direction, in order: encrypt 1 KiB then decrypt it.
/// Only the symmetric ratchet runs (2 HMAC-SHA256 and 1 HKDF per side, plus
/// the AEAD).
fn encrypt_decrypt_1k(c: &mut Criterion) {
    let mut group = c.benchmark_group("encrypt_decrypt_1k");
    group.throughput(Throughput::Bytes(MESSAGE_LEN as u64));
    let plaintext = message();

    let (mut alice, mut bob, mut rng) = ours_established(3);
    group.bench_function("comptoir", |b| {
        b.iter(|| {
            let bytes = alice
                .session
                .encrypt(black_box(&plaintext), &mut rng)
                .expect("encrypt");
            bob.receive(&bytes)
        });
    });
    ours_send(&mut alice, &mut bob, &plaintext, &mut rng);

    let (mut olm_alice, mut olm_bob) = olm_established();
    group.bench_function("vodozemac", |b| {
        b.iter(|| {
            let message = olm_alice.encrypt(black_box(&plaintext)).expect("encrypt");
            olm_bob.decrypt(&message).expect("decrypt")
        });
    });
    olm_send(&mut olm_alice, &mut olm_bob, &plaintext);
    group.finish();
}

/// [`encrypt_decrypt_1k`] with bound labels: per message the sender binds
/// the envelope labels into a `Content` carrying 1 KiB of text and encodes
/// it; the receiver decodes it and checks the labels against the envelope.
fn encrypt_decrypt_1k_labelled(c: &mut Criterion) {
    let mut group = c.benchmark_group("encrypt_decrypt_1k_labelled");
    group.throughput(Throughput::Bytes(MESSAGE_LEN as u64));
    let text: String = (0..MESSAGE_LEN)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let envelope = wire::Envelope {
        message_id: vec![0x11; 16],
        sender_account: vec![0xAA; 16],
        sender_device: 1,
        recipient_account: vec![0xBB; 16],
        recipient_device: 1,
        category: wire::Category::Conversation as i32,
        ..wire::Envelope::default()
    };

    // The text is the sender's already (a client moves it into the
    // content); what is timed per message is binding the labels, encoding,
    // the ratchet both ways, decoding and the check.
    let mut content = Content {
        message_id: envelope.message_id.clone(),
        sent_at_ms: 1_700_000_000_000,
        body: Some(content::Body::Text(Text { body: text.clone() })),
        labels: None,
        franking_key: Vec::new(),
        padding: Vec::new(),
    };
    let (mut alice, mut bob, mut rng) = ours_established(6);
    group.bench_function("comptoir", |b| {
        b.iter(|| {
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
                .encrypt(&black_box(&content).encode_to_vec(), &mut rng)
                .expect("encrypt");
            let received = Content::decode(bob.receive(&bytes).as_slice()).expect("content");
            labels::check(&received, black_box(&envelope)).expect("labels match");
            received
        });
    });

    let (mut olm_alice, mut olm_bob) = olm_established();
    group.bench_function("vodozemac", |b| {
        b.iter(|| {
            let message = olm_alice
                .encrypt(black_box(text.as_bytes()))
                .expect("encrypt");
            olm_bob.decrypt(&message).expect("decrypt")
        });
    });
    group.finish();
}

/// Like [`encrypt_decrypt_1k`] but before the responder has ever answered:
/// the initiator's messages are still prekey messages (a burst sent before
/// the first reply), which the responder matches to the session it already
/// built from the first one.
fn encrypt_decrypt_1k_before_reply(c: &mut Criterion) {
    let mut group = c.benchmark_group("encrypt_decrypt_1k_before_reply");
    group.throughput(Throughput::Bytes(MESSAGE_LEN as u64));
    let plaintext = message();

    let mut rng = rng(11);
    let mut alice = Party::new(&mut rng, 0);
    let mut bob = Party::new(&mut rng, 1);
    let bundle = bob.verified_bundle();
    alice
        .session
        .initiate(&alice.identity, &bundle, &mut rng)
        .expect("initiate");
    ours_send(&mut alice, &mut bob, FIRST_MESSAGE, &mut rng);
    group.bench_function("comptoir", |b| {
        b.iter(|| {
            let bytes = alice
                .session
                .encrypt(black_box(&plaintext), &mut rng)
                .expect("encrypt");
            debug_assert_eq!(bytes[1], 2, "still a prekey message");
            bob.receive(&bytes)
        });
    });
    ours_send(&mut alice, &mut bob, &plaintext, &mut rng);

    let olm_alice = Account::new();
    let (mut olm_bob, bob_identity, one_time_key) = olm_account_with_one_time_key();
    let mut alice_session = olm_alice
        .create_outbound_session(SessionConfig::version_1(), bob_identity, one_time_key)
        .expect("outbound session");
    let OlmMessage::PreKey(first) = alice_session.encrypt(FIRST_MESSAGE).expect("encrypt") else {
        panic!("the first Olm message is a prekey message");
    };
    let mut bob_session = olm_bob
        .create_inbound_session(
            SessionConfig::version_1(),
            olm_alice.curve25519_key(),
            &first,
        )
        .expect("inbound session")
        .session;
    group.bench_function("vodozemac", |b| {
        b.iter(|| {
            let message = alice_session
                .encrypt(black_box(&plaintext))
                .expect("encrypt");
            debug_assert!(matches!(message, OlmMessage::PreKey(_)));
            bob_session.decrypt(&message).expect("decrypt")
        });
    });
    olm_send(&mut alice_session, &mut bob_session, &plaintext);
    group.finish();
}

/// Ping-pong: Alice → Bob then Bob → Alice, 1 KiB each, per iteration. Each
/// message turns the DH ratchet: per message 1 key generation and 1 DH on
/// the sender, 1 DH on the receiver.
fn ping_pong_1k(c: &mut Criterion) {
    let mut group = c.benchmark_group("ping_pong_1k");
    group.throughput(Throughput::Bytes(2 * MESSAGE_LEN as u64));
    let plaintext = message();

    let (mut alice, mut bob, mut rng) = ours_established(4);
    group.bench_function("comptoir", |b| {
        b.iter(|| {
            let ping = alice
                .session
                .encrypt(black_box(&plaintext), &mut rng)
                .expect("encrypt");
            let received = bob.receive(&ping);
            let pong = bob.session.encrypt(&received, &mut rng).expect("encrypt");
            alice.receive(&pong)
        });
    });
    ours_send(&mut alice, &mut bob, &plaintext, &mut rng);

    let (mut olm_alice, mut olm_bob) = olm_established();
    group.bench_function("vodozemac", |b| {
        b.iter(|| {
            let ping = olm_alice.encrypt(black_box(&plaintext)).expect("encrypt");
            let received = olm_bob.decrypt(&ping).expect("decrypt");
            let pong = olm_bob.encrypt(&received).expect("encrypt");
            olm_alice.decrypt(&pong).expect("decrypt")
        });
    });
    olm_send(&mut olm_alice, &mut olm_bob, &plaintext);
    group.finish();
}

// ---------------------------------------------------------------------------
// (c) Out of order
// ---------------------------------------------------------------------------

/// Decrypt after a 1,000-message gap: the sender encrypts 1,001 messages on
/// one chain; only the decryption of the last one is timed, on a fresh copy
/// of the receiver. Ours derives and stores all 1,000 skipped message keys
/// (`MAX_SKIP` = 1,000). vodozemac accepts gaps up to 2,000
/// (`MAX_MESSAGE_GAP`) but keeps only the last 40 skipped keys
/// (`MAX_MESSAGE_KEYS`): it only advances the chain for the first 960.
fn gap_1000(c: &mut Criterion) {
    let mut group = c.benchmark_group("gap_1000");
    let plaintext = message();

    let (mut alice, mut bob, mut rng) = ours_established(5);
    let mut last = Vec::new();
    for _ in 0..=GAP {
        last = alice
            .session
            .encrypt(&plaintext, &mut rng)
            .expect("encrypt");
    }
    assert_eq!(
        bob.session
            .clone()
            .decrypt(&bob.identity, &mut bob.prekeys, None, &last)
            .expect("gap decrypt")
            .plaintext,
        plaintext
    );
    group.bench_function("comptoir", |b| {
        b.iter_batched_ref(
            || bob.session.clone(),
            |record| {
                record
                    .decrypt(&bob.identity, &mut bob.prekeys, None, black_box(&last))
                    .expect("gap decrypt")
            },
            BatchSize::SmallInput,
        );
    });

    let (mut olm_alice, olm_bob) = olm_established();
    let mut olm_last = None;
    for _ in 0..=GAP {
        olm_last = Some(olm_alice.encrypt(&plaintext).expect("encrypt"));
    }
    let olm_last = olm_last.expect("1,001 messages");
    let pickle = olm_bob.pickle().encrypt(&PICKLE_KEY);
    let fresh_bob = || {
        Session::from_pickle(SessionPickle::from_encrypted(&pickle, &PICKLE_KEY).expect("unpickle"))
    };
    assert_eq!(
        fresh_bob().decrypt(&olm_last).expect("gap decrypt"),
        plaintext
    );
    group.bench_function("vodozemac", |b| {
        b.iter_batched_ref(
            fresh_bob,
            |session| session.decrypt(black_box(&olm_last)).expect("gap decrypt"),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

// ---------------------------------------------------------------------------
// (d) The floor
// ---------------------------------------------------------------------------

/// One X25519 Diffie-Hellman (Montgomery ladder).
fn floor_x25519_dh(c: &mut Criterion) {
    let mut rng = rng(6);
    let ours = StaticSecret::random_from_rng(&mut rng);
    let theirs = PublicKey::from(&StaticSecret::random_from_rng(&mut rng));
    c.benchmark_group("floor").bench_function("x25519_dh", |b| {
        b.iter(|| black_box(&ours).diffie_hellman(black_box(&theirs)));
    });
}

/// One X25519 key generation: draw a secret, compute its public key (fixed
/// base multiplication).
fn floor_x25519_keygen(c: &mut Criterion) {
    let mut rng = rng(7);
    c.benchmark_group("floor")
        .bench_function("x25519_keygen", |b| {
            b.iter(|| {
                let secret = StaticSecret::random_from_rng(&mut rng);
                let public = PublicKey::from(&secret);
                (secret, public)
            });
        });
}

/// One Ed25519 strict verification of a signed-prekey-sized payload.
fn floor_ed25519_verify(c: &mut Criterion) {
    let mut rng = rng(8);
    let signing = SigningKey::generate(&mut rng);
    let verifying = signing.verifying_key();
    let payload = signed_prekey_payload(1, &[9; 32]);
    let signature = signing.sign(&payload);
    c.benchmark_group("floor")
        .bench_function("ed25519_verify_strict", |b| {
            b.iter(|| {
                black_box(&verifying)
                    .verify_strict(black_box(&payload), black_box(&signature))
                    .expect("valid signature")
            });
        });
}

/// One ChaCha20-Poly1305 seal + open of 1 KiB with 106 bytes of associated
/// data (our AD + header), key setup included on both sides.
fn floor_chacha20poly1305(c: &mut Criterion) {
    let key = [3u8; 32];
    let nonce = [4u8; 12];
    let aad = [5u8; 106];
    let mut buffer = message();
    let mut group = c.benchmark_group("floor");
    group.throughput(Throughput::Bytes(MESSAGE_LEN as u64));
    group.bench_function("chacha20poly1305_seal_open_1k", |b| {
        b.iter(|| {
            let cipher = ChaCha20Poly1305::new(&black_box(key).into());
            let tag: Tag = cipher
                .encrypt_inout_detached(&nonce.into(), &aad, buffer.as_mut_slice().into())
                .expect("seal");
            let cipher = ChaCha20Poly1305::new(&black_box(key).into());
            cipher
                .decrypt_inout_detached(&nonce.into(), &aad, buffer.as_mut_slice().into(), &tag)
                .expect("open");
        });
    });
    group.finish();
}

/// One HMAC-SHA256 of one byte under a 32-byte key (half a chain step).
fn floor_hmac(c: &mut Criterion) {
    let key = [6u8; 32];
    c.benchmark_group("floor")
        .bench_function("hmac_sha256", |b| {
            b.iter(|| {
                let mut mac =
                    <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(black_box(&key)).expect("key");
                mac.update(&[1]);
                mac.finalize().into_bytes()
            });
        });
}

/// SHA-256 compressions (`sha2`'s, the one every HMAC here ends in): one
/// whose input state is the previous one's output (a dependent chain, what
/// a chain step's critical path is made of), and two independent ones
/// issued back to back (what a chain step's pairs are). If the processor
/// overlapped independent compressions, the pair would cost about one; it
/// shows how much of a second compression stays on the clock.
fn floor_sha256(c: &mut Criterion) {
    let block = [9u8; 64];
    let mut group = c.benchmark_group("floor");
    let mut state = [1u32; 8];
    group.bench_function("sha256_compress", |b| {
        b.iter(|| {
            sha2::block_api::compress256(&mut state, std::slice::from_ref(black_box(&block)));
        });
    });
    let (mut first, mut second) = ([1u32; 8], [2u32; 8]);
    group.bench_function("sha256_compress_2_independent", |b| {
        b.iter(|| {
            sha2::block_api::compress256(&mut first, std::slice::from_ref(black_box(&block)));
            sha2::block_api::compress256(&mut second, std::slice::from_ref(black_box(&block)));
        });
    });
    black_box((state, first, second));
    group.finish();
}

/// One HKDF-SHA256: extract with a 32-byte salt, expand 44 bytes (a message
/// key into an AEAD key and nonce).
fn floor_hkdf(c: &mut Criterion) {
    let ikm = [8u8; 32];
    c.benchmark_group("floor")
        .bench_function("hkdf_sha256_44", |b| {
            b.iter(|| {
                let mut okm = [0u8; 44];
                Hkdf::<Sha256>::new(Some(&[0u8; 32]), black_box(&ikm))
                    .expand(b"info string of 24 bytes.", &mut okm)
                    .expect("44 bytes");
                okm
            });
        });
}

/// Decoding an Ed25519 identity key into its X25519 form (decompression,
/// small-order check, birational map): what parsing an identity costs.
fn floor_identity_decode(c: &mut Criterion) {
    let mut rng = rng(9);
    let bytes = SigningKey::generate(&mut rng).verifying_key().to_bytes();
    c.benchmark_group("floor")
        .bench_function("ed25519_decode_to_x25519", |b| {
            b.iter(|| {
                let key = VerifyingKey::from_bytes(black_box(&bytes)).expect("valid key");
                assert!(!key.is_weak());
                PublicKey::from(key.to_montgomery().to_bytes())
            });
        });
}

// ---------------------------------------------------------------------------
// Our building blocks
// ---------------------------------------------------------------------------

/// Our KDF steps and identity parsing, to compare with the floor above.
fn parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("parts");
    let chain_key = [1u8; 32];
    group.bench_function("chain_kdf", |b| {
        b.iter(|| kdf::chain_kdf(black_box(&chain_key)));
    });
    group.bench_function("message_keys", |b| {
        b.iter(|| kdf::message_keys(black_box(&chain_key)));
    });
    let identity = IdentityKeyPair::generate(&mut rng(10)).public().to_bytes();
    group.bench_function("identity_key_from_bytes", |b| {
        b.iter(|| IdentityKey::from_bytes(black_box(&identity)).expect("valid identity"));
    });
    group.finish();
}

/// Modest measurement so the whole suite runs in a few minutes on 2 cores.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
}

criterion_group! {
    name = benches;
    config = config();
    targets = setup_initiator, setup_responder, encrypt_decrypt_1k, encrypt_decrypt_1k_labelled,
        encrypt_decrypt_1k_before_reply,
        ping_pong_1k, gap_1000,
        floor_x25519_dh, floor_x25519_keygen, floor_ed25519_verify, floor_chacha20poly1305,
        floor_hmac, floor_sha256, floor_hkdf, floor_identity_decode, parts
}
criterion_main!(benches);
