//! Scenario tests for sessions: X3DH, the ratchet's hard paths, archived
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
//! states, re-keying, and state at rest.

mod support;

use comptoir_protocol::proto::wire;
use comptoir_protocol::store::seal_record_with_nonce;
use comptoir_protocol::{
    Error, IdentityKeyPair, MAX_SKIP, RecordKind, Result, SessionRecord, StorageKey, VerifiedBundle,
};
use support::{Party, pair, rng};

/// Serialized state, to prove a failed call changed nothing.
fn snapshot(record: &SessionRecord) -> Vec<u8> {
    record.to_protobuf().to_vec()
}

#[test]
fn both_directions_many_messages() -> Result<()> {
    let (mut alice, mut a, mut bob, mut b, mut rng) = pair(1);
    for round in 0..20u32 {
        // Bursts of varying length each way, so the DH ratchet turns often.
        for i in 0..(round % 4 + 1) {
            let text = format!("a→b {round}/{i}");
            let ct = a.encrypt(text.as_bytes(), &mut rng)?;
            assert_eq!(bob.decrypt(&mut b, &ct)?.plaintext, text.as_bytes());
        }
        for i in 0..(round % 3 + 1) {
            let text = format!("b→a {round}/{i}");
            let ct = b.encrypt(text.as_bytes(), &mut rng)?;
            assert_eq!(alice.decrypt(&mut a, &ct)?.plaintext, text.as_bytes());
        }
    }
    Ok(())
}

#[test]
fn first_messages_are_prekey_messages_until_the_reply() -> Result<()> {
    let (mut alice, mut a, mut bob, mut b, mut rng) = pair(2);
    let m1 = a.encrypt(b"one", &mut rng)?;
    let m2 = a.encrypt(b"two", &mut rng)?;
    assert_eq!(m1[1], 2, "type byte of a prekey message");
    assert_eq!(m2[1], 2);
    assert_eq!(bob.prekeys.one_time_count(), 5);
    // The second arrives first: it builds the session and uses the prekey.
    let d2 = bob.decrypt(&mut b, &m2)?;
    assert!(d2.new_session);
    assert_eq!(bob.prekeys.one_time_count(), 4);
    // The first then decrypts with the same session, not a new X3DH.
    let d1 = bob.decrypt(&mut b, &m1)?;
    assert_eq!(
        (d1.plaintext.as_slice(), d1.new_session),
        (&b"one"[..], false)
    );
    assert_eq!(b.archived_states(), 0);
    // Once Bob answers, Alice switches to normal messages.
    let reply = b.encrypt(b"hi", &mut rng)?;
    assert_eq!(reply[1], 1);
    alice.decrypt(&mut a, &reply)?;
    assert_eq!(a.encrypt(b"three", &mut rng)?[1], 1);
    Ok(())
}

#[test]
fn x3dh_without_one_time_prekey_when_stock_runs_out() -> Result<()> {
    let mut rng = rng(3);
    let alice = Party::new(&mut rng, 0);
    let mut bob = Party::new(&mut rng, 0);
    let bundle = bob.verified_bundle(None);
    assert!(!bundle.has_one_time_prekey());
    let mut a = SessionRecord::new();
    a.initiate(&alice.identity, &bundle, &mut rng)?;
    let mut b = SessionRecord::new();
    let ct = a.encrypt(b"no opk", &mut rng)?;
    assert_eq!(ct[70], 0, "has_one_time_prekey flag");
    assert_eq!(bob.decrypt(&mut b, &ct)?.plaintext, b"no opk");
    Ok(())
}

#[test]
fn a_failed_prekey_message_consumes_nothing() -> Result<()> {
    let (_alice, mut a, mut bob, mut b, mut rng) = pair(4);
    let mut ct = a.encrypt(b"hello", &mut rng)?;
    let last = ct.len() - 1;
    ct[last] ^= 1;
    assert_eq!(bob.decrypt(&mut b, &ct), Err(Error::DecryptionFailed));
    assert_eq!(bob.prekeys.one_time_count(), 5, "one-time prekey kept");
    assert!(!b.has_current_session(), "no session stored");
    ct[last] ^= 1;
    assert_eq!(bob.decrypt(&mut b, &ct)?.plaintext, b"hello");
    assert_eq!(bob.prekeys.one_time_count(), 4);
    // Replaying the prekey message: the one-time prekey is gone, but the
    // session is known by its base key, so this is a duplicate.
    assert!(matches!(
        bob.decrypt(&mut b, &ct),
        Err(Error::DuplicateMessage { counter: 0 })
    ));
    Ok(())
}

#[test]
fn unknown_prekeys_and_bad_bundles_are_typed_errors() -> Result<()> {
    let (_alice, mut a, mut bob, mut b, mut rng) = pair(5);
    let mut ct = a.encrypt(b"x", &mut rng)?;
    ct[66..70].copy_from_slice(&9u32.to_be_bytes());
    assert_eq!(bob.decrypt(&mut b, &ct), Err(Error::UnknownSignedPreKey(9)));
    let mut ct = a.encrypt(b"x", &mut rng)?;
    ct[71..75].copy_from_slice(&4242u32.to_be_bytes());
    assert_eq!(
        bob.decrypt(&mut b, &ct),
        Err(Error::UnknownOneTimePreKey(4242))
    );

    // A bundle whose signed prekey signature does not verify.
    let mut bundle = bob.bundle(Some(1));
    if let Some(spk) = bundle.signed_prekey.as_mut() {
        spk.public_key[0] ^= 1;
    }
    assert!(matches!(
        VerifiedBundle::verify(&bundle, None),
        Err(Error::BadSignature { .. })
    ));
    // A bundle for another identity than the device list says.
    let other = IdentityKeyPair::generate(&mut rng);
    assert_eq!(
        VerifiedBundle::verify(&bob.bundle(Some(1)), Some(other.public())).err(),
        Some(Error::IdentityMismatch)
    );
    let no_spk = wire::PreKeyBundle {
        signed_prekey: None,
        ..bob.bundle(None)
    };
    assert!(VerifiedBundle::verify(&no_spk, None).is_err());
    Ok(())
}

#[test]
fn tampering_is_refused_and_changes_nothing() -> Result<()> {
    let (mut alice, mut a, mut bob, mut b, mut rng) = pair(6);
    let first = a.encrypt(b"establish", &mut rng)?;
    bob.decrypt(&mut b, &first)?;
    let reply = b.encrypt(b"ok", &mut rng)?;
    alice.decrypt(&mut a, &reply)?;

    let ct = a.encrypt(b"the real message", &mut rng)?;
    let before = snapshot(&b);
    // Flip a bit in: the ratchet key, PN, N, the body, the tag.
    for position in [5, 36, 41, 45, ct.len() - 1] {
        let mut bad = ct.clone();
        bad[position] ^= 0x40;
        assert!(bob.decrypt(&mut b, &bad).is_err(), "flip at {position}");
        assert_eq!(
            snapshot(&b),
            before,
            "state unchanged after flip at {position}"
        );
    }
    // Truncated, and wrong version byte.
    assert!(matches!(
        bob.decrypt(&mut b, &ct[..30]),
        Err(Error::Decode(_))
    ));
    let mut v2 = ct.clone();
    v2[0] = 2;
    assert!(matches!(bob.decrypt(&mut b, &v2), Err(Error::Decode(_))));
    assert_eq!(snapshot(&b), before);

    // A message from another pair's session is refused.
    let (_x, mut x, _y, _yr, mut rng3) = pair(60);
    let foreign = x.encrypt(b"not for bob", &mut rng3)?;
    assert!(bob.decrypt(&mut b, &foreign).is_err());
    assert_eq!(snapshot(&b), before);

    // Expected-identity check from the device list.
    let stranger = IdentityKeyPair::generate(&mut rng);
    assert_eq!(
        b.decrypt(
            &bob.identity,
            &mut bob.prekeys,
            Some(stranger.public()),
            &ct
        ),
        Err(Error::NoMatchingSession)
    );
    assert_eq!(snapshot(&b), before);

    // The genuine message still decrypts after all of that.
    assert_eq!(bob.decrypt(&mut b, &ct)?.plaintext, b"the real message");
    Ok(())
}

#[test]
fn out_of_order_within_max_skip_and_refusal_beyond() -> Result<()> {
    let (mut _alice, mut a, mut bob, mut b, mut rng) = pair(7);
    let msgs: Vec<Vec<u8>> = (0..50)
        .map(|i| a.encrypt(format!("m{i}").as_bytes(), &mut rng))
        .collect::<Result<_>>()?;
    // Deliver in a scrambled order.
    let order = [
        3usize, 0, 49, 1, 2, 10, 4, 5, 48, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
        22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
        45, 46, 47,
    ];
    for i in order {
        assert_eq!(
            bob.decrypt(&mut b, &msgs[i])?.plaintext,
            format!("m{i}").as_bytes()
        );
    }
    // A gap of exactly MAX_SKIP is fine; one more is refused, state intact.
    let far: Vec<Vec<u8>> = (0..=MAX_SKIP + 1)
        .map(|i| a.encrypt(format!("f{i}").as_bytes(), &mut rng))
        .collect::<Result<_>>()?;
    let before = snapshot(&b);
    let too_far = &far[(MAX_SKIP + 1) as usize];
    assert!(matches!(
        bob.decrypt(&mut b, too_far),
        Err(Error::TooManySkippedMessages { requested, limit: MAX_SKIP }) if requested == u64::from(MAX_SKIP) + 1
    ));
    assert_eq!(snapshot(&b), before);
    let just_fits = &far[MAX_SKIP as usize];
    assert_eq!(
        bob.decrypt(&mut b, just_fits)?.plaintext,
        format!("f{MAX_SKIP}").as_bytes()
    );
    // The skipped ones are still readable, once each.
    assert_eq!(bob.decrypt(&mut b, &far[0])?.plaintext, b"f0");
    assert!(matches!(
        bob.decrypt(&mut b, &far[0]),
        Err(Error::DuplicateMessage { counter: _ })
    ));
    Ok(())
}

#[test]
fn duplicates_are_typed_in_every_position() -> Result<()> {
    let (mut alice, mut a, mut bob, mut b, mut rng) = pair(8);
    let m0 = a.encrypt(b"0", &mut rng)?;
    let m1 = a.encrypt(b"1", &mut rng)?;
    bob.decrypt(&mut b, &m0)?;
    bob.decrypt(&mut b, &m1)?;
    // Same chain, in order.
    assert!(matches!(
        bob.decrypt(&mut b, &m1),
        Err(Error::DuplicateMessage { .. })
    ));
    // After a ratchet turn, from the old chain.
    let r = b.encrypt(b"r", &mut rng)?;
    alice.decrypt(&mut a, &r)?;
    let n0 = a.encrypt(b"n0", &mut rng)?;
    bob.decrypt(&mut b, &n0)?;
    assert!(matches!(
        bob.decrypt(&mut b, &m0),
        Err(Error::DuplicateMessage { .. })
    ));
    // Alice receiving Bob's reply twice.
    assert!(matches!(
        alice.decrypt(&mut a, &r),
        Err(Error::DuplicateMessage { .. })
    ));
    Ok(())
}

#[test]
fn skipped_keys_are_capped_overall_evicting_the_oldest() -> Result<()> {
    let (mut alice, mut a, mut bob, mut b, mut rng) = pair(9);
    let mut lost_first = None;
    // Three chains, each skipping 900 keys: 2,700 > MAX_SKIPPED_KEYS.
    for round in 0..3 {
        let mut chain = Vec::new();
        for i in 0..901 {
            chain.push(a.encrypt(format!("{round}/{i}").as_bytes(), &mut rng)?);
        }
        if round == 0 {
            lost_first = Some(chain[0].clone());
        }
        bob.decrypt(&mut b, &chain[900])?;
        let reply = b.encrypt(b"ack", &mut rng)?;
        alice.decrypt(&mut a, &reply)?;
    }
    let record = b.to_protobuf();
    let parsed = SessionRecord::from_protobuf(&record)?;
    assert_eq!(parsed.to_protobuf().to_vec(), record.to_vec());
    // The oldest skipped key (round 0, message 0) was evicted: the genuine,
    // never-read message is reported as evicted (ask for a re-send), not
    // silently taken for a duplicate, and this survives a save and load.
    let lost = lost_first.ok_or(Error::SessionNotReady)?;
    assert_eq!(
        bob.decrypt(&mut b, &lost),
        Err(Error::MessageKeyEvicted { counter: 0 })
    );
    let mut reloaded = SessionRecord::from_protobuf(&b.to_protobuf())?;
    assert_eq!(
        bob.decrypt(&mut reloaded, &lost),
        Err(Error::MessageKeyEvicted { counter: 0 })
    );
    Ok(())
}

#[test]
fn simultaneous_initiation_converges() -> Result<()> {
    let mut rng = rng(10);
    let mut alice = Party::new(&mut rng, 3);
    let mut bob = Party::new(&mut rng, 3);
    let mut a = SessionRecord::new();
    let mut b = SessionRecord::new();
    a.initiate(&alice.identity, &bob.verified_bundle(Some(0)), &mut rng)?;
    b.initiate(&bob.identity, &alice.verified_bundle(Some(0)), &mut rng)?;
    let from_a = a.encrypt(b"hi bob", &mut rng)?;
    let from_b = b.encrypt(b"hi alice", &mut rng)?;
    assert_eq!(bob.decrypt(&mut b, &from_a)?.plaintext, b"hi bob");
    assert_eq!(alice.decrypt(&mut a, &from_b)?.plaintext, b"hi alice");
    // Both now have two states; whatever each picks, messages get through
    // and the two sides settle on one session.
    for i in 0..6 {
        let text = format!("a{i}");
        let ct = a.encrypt(text.as_bytes(), &mut rng)?;
        assert_eq!(bob.decrypt(&mut b, &ct)?.plaintext, text.as_bytes());
        let text = format!("b{i}");
        let ct = b.encrypt(text.as_bytes(), &mut rng)?;
        assert_eq!(alice.decrypt(&mut a, &ct)?.plaintext, text.as_bytes());
    }
    Ok(())
}

#[test]
fn restored_device_recovers_through_a_rekey() -> Result<()> {
    let (mut alice, mut a, mut bob, mut b, mut rng) = pair(11);
    let first = a.encrypt(b"hello", &mut rng)?;
    bob.decrypt(&mut b, &first)?;
    let backup = b.clone(); // Bob backs up his session here.
    for i in 0..3 {
        let ct = b.encrypt(format!("b{i}").as_bytes(), &mut rng)?;
        alice.decrypt(&mut a, &ct)?;
        let ct = a.encrypt(format!("a{i}").as_bytes(), &mut rng)?;
        bob.decrypt(&mut b, &ct)?;
    }
    // Bob's device is restored from the old backup: it is now wedged.
    let mut b = backup;
    let failed = a.encrypt(b"lost in the wedge", &mut rng)?;
    assert!(bob.decrypt(&mut b, &failed).is_err());

    // Bob asks for a re-key: a fresh session from Alice's bundle, carrying
    // the id of the message that failed (content type RekeyRequest).
    b.initiate(&bob.identity, &alice.verified_bundle(Some(1)), &mut rng)?;
    let rekey = b.encrypt(b"rekey: please resend message 42", &mut rng)?;
    let got = alice.decrypt(&mut a, &rekey)?;
    assert!(got.new_session);
    // Alice resends over the fresh session; it arrives, and so does the next.
    let resent = a.encrypt(b"lost in the wedge", &mut rng)?;
    assert_eq!(
        bob.decrypt(&mut b, &resent)?.plaintext,
        b"lost in the wedge"
    );
    let next = a.encrypt(b"and the next one", &mut rng)?;
    assert_eq!(bob.decrypt(&mut b, &next)?.plaintext, b"and the next one");
    let back = b.encrypt(b"all good", &mut rng)?;
    assert_eq!(alice.decrypt(&mut a, &back)?.plaintext, b"all good");
    Ok(())
}

#[test]
fn responder_cannot_send_first_and_empty_record_refuses() {
    let mut rng = rng(12);
    let mut empty = SessionRecord::new();
    assert_eq!(empty.encrypt(b"x", &mut rng), Err(Error::SessionNotReady));
    assert!(!empty.can_send());
}

#[test]
fn sealed_records_round_trip_and_refuse_the_wrong_key() -> Result<()> {
    let (mut alice, mut a, mut bob, mut b, mut rng) = pair(13);
    let ct = a.encrypt(b"persist me", &mut rng)?;
    bob.decrypt(&mut b, &ct)?;
    let key = StorageKey::from_bytes([7; 32]);
    let sealed = b.seal(&key, &mut rng)?;
    let mut restored = SessionRecord::open(&key, &sealed)?;
    let reply = restored.encrypt(b"from disk", &mut rng)?;
    assert_eq!(alice.decrypt(&mut a, &reply)?.plaintext, b"from disk");
    // Wrong key, flipped byte, wrong kind, truncated: typed errors.
    let wrong = StorageKey::from_bytes([8; 32]);
    assert_eq!(
        SessionRecord::open(&wrong, &sealed).err(),
        Some(Error::RecordDecryptionFailed)
    );
    let mut flipped = sealed.clone();
    flipped[40] ^= 1;
    assert_eq!(
        SessionRecord::open(&key, &flipped).err(),
        Some(Error::RecordDecryptionFailed)
    );
    assert!(matches!(
        comptoir_protocol::open_record(&key, RecordKind::Identity, &sealed),
        Err(Error::Decode(_))
    ));
    assert!(matches!(
        SessionRecord::open(&key, &sealed[..10]),
        Err(Error::Decode(_))
    ));
    Ok(())
}

/// The first released layout of `SessionStateRecord`, before fields 13
/// (`previous_receiving_keys`) and 14 (`sending_ratchet_pending`) existed.
#[derive(Clone, PartialEq, prost::Message)]
struct LegacyStateV1 {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(bytes = "vec", tag = "2")]
    local_identity: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    remote_identity: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    root_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    sending_ratchet_secret: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    receiving_ratchet_key: Vec<u8>,
    #[prost(message, optional, tag = "7")]
    sending_chain: Option<comptoir_protocol::proto::storage::ChainRecord>,
    #[prost(message, optional, tag = "8")]
    receiving_chain: Option<comptoir_protocol::proto::storage::ChainRecord>,
    #[prost(uint32, tag = "9")]
    previous_counter: u32,
    #[prost(bytes = "vec", tag = "12")]
    base_key: Vec<u8>,
    #[prost(bool, tag = "15")]
    initiator: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LegacyRecordV1 {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(message, optional, tag = "2")]
    current: Option<LegacyStateV1>,
}

#[test]
fn an_old_format_record_still_loads() -> Result<()> {
    use prost::Message;
    let (mut alice, mut a, mut bob, mut b, mut rng) = pair(14);
    let ct = a.encrypt(b"before the upgrade", &mut rng)?;
    bob.decrypt(&mut b, &ct)?;
    // Write Bob's state with the old schema, as an old build would have.
    let current = comptoir_protocol::proto::storage::SessionRecord::decode(&b.to_protobuf()[..])?
        .current
        .ok_or(Error::SessionNotReady)?;
    let legacy = LegacyRecordV1 {
        version: 1,
        current: Some(LegacyStateV1 {
            version: 1,
            local_identity: current.local_identity,
            remote_identity: current.remote_identity,
            root_key: current.root_key,
            sending_ratchet_secret: current.sending_ratchet_secret,
            receiving_ratchet_key: current.receiving_ratchet_key,
            sending_chain: current.sending_chain,
            receiving_chain: current.receiving_chain,
            previous_counter: current.previous_counter,
            base_key: current.base_key,
            initiator: current.initiator,
        }),
    };
    let key = StorageKey::from_bytes([3; 32]);
    let sealed =
        seal_record_with_nonce(&key, RecordKind::Session, &legacy.encode_to_vec(), &[1; 24])?;
    let mut loaded = SessionRecord::open(&key, &sealed)?;
    let reply = loaded.encrypt(b"after the upgrade", &mut rng)?;
    assert_eq!(
        alice.decrypt(&mut a, &reply)?.plaintext,
        b"after the upgrade"
    );
    Ok(())
}

#[test]
fn debug_output_shows_no_key_bytes() -> Result<()> {
    let (mut _alice, mut a, mut bob, mut b, mut rng) = pair(15);
    let ct = a.encrypt(b"x", &mut rng)?;
    bob.decrypt(&mut b, &ct)?;
    let printed = format!(
        "{b:?} {:?} {:?}",
        bob.identity,
        StorageKey::from_bytes([0xAB; 32])
    );
    let seed_hex = hex::encode(bob.identity.seed());
    assert!(
        !printed.contains(&seed_hex[..8]),
        "identity seed leaked: {printed}"
    );
    assert!(
        !printed.to_lowercase().contains("abab"),
        "storage key leaked: {printed}"
    );
    // Every secret in the serialized state is absent from the Debug output.
    let state = comptoir_protocol::proto::storage::SessionRecord::decode(&b.to_protobuf()[..])
        .map_err(Error::from)?;
    use prost::Message;
    let current = state.current.ok_or(Error::SessionNotReady)?;
    for secret in [current.root_key, current.sending_ratchet_secret] {
        let start = hex::encode(secret.get(..4).unwrap_or(&secret));
        assert!(!printed.contains(&start), "secret leaked: {printed}");
    }
    assert!(printed.contains("SessionRecord"));
    Ok(())
}

#[test]
fn non_canonical_x25519_keys_are_refused() -> Result<()> {
    let (_alice, mut a, mut bob, mut b, mut rng) = pair(16);
    let ct = a.encrypt(b"genuine", &mut rng)?;
    // Bit 255 of the base key: X25519 ignores it, so without the check the
    // relay could make a second "new" session from one prekey message.
    let mut flipped = ct.clone();
    flipped[65] ^= 0x80;
    assert_eq!(
        bob.decrypt(&mut b, &flipped),
        Err(Error::InvalidKey { what: "base key" })
    );
    // Same for the ratchet key in the embedded header (75 + 2 + 31).
    let mut flipped = ct.clone();
    flipped[108] ^= 0x80;
    assert_eq!(
        bob.decrypt(&mut b, &flipped),
        Err(Error::InvalidKey {
            what: "ratchet key"
        })
    );
    assert_eq!(bob.prekeys.one_time_count(), 5);
    assert!(!b.has_current_session());
    assert_eq!(bob.decrypt(&mut b, &ct)?.plaintext, b"genuine");
    // A prekey bundle with a non-canonical one-time prekey is refused.
    let mut bundle = bob.bundle(Some(1));
    if let Some(opk) = bundle.one_time_prekey.as_mut() {
        opk.public_key = vec![0xff; 32];
        opk.public_key[31] = 0x7f;
    }
    assert!(matches!(
        VerifiedBundle::verify(&bundle, None),
        Err(Error::InvalidKey { .. })
    ));
    Ok(())
}

#[test]
fn a_restored_record_receives_but_never_sends_again() -> Result<()> {
    let (mut alice, mut a, mut bob, mut b, mut rng) = pair(17);
    let first = a.encrypt(b"hello", &mut rng)?;
    bob.decrypt(&mut b, &first)?;
    let reply = b.encrypt(b"first reply", &mut rng)?;
    alice.decrypt(&mut a, &reply)?;
    let key = StorageKey::from_bytes([9; 32]);
    let backup = b.seal(&key, &mut rng)?;
    // Bob keeps talking after the backup...
    let sent_after_backup = b.encrypt(b"attack at dawn!!", &mut rng)?;
    alice.decrypt(&mut a, &sent_after_backup)?;
    // ...then restores it. Reusing its sending chain would reuse a message
    // key (same key and nonce for two plaintexts), so it must refuse.
    let mut restored = SessionRecord::open(&key, &backup)?;
    restored.mark_restored();
    assert!(!restored.can_send());
    assert_eq!(
        restored.encrypt(b"retreat at noon!", &mut rng),
        Err(Error::ReceiveOnlySession)
    );
    // The flag survives a save and load.
    let mut reloaded = SessionRecord::open(&key, &restored.seal(&key, &mut rng)?)?;
    assert_eq!(
        reloaded.encrypt(b"x", &mut rng),
        Err(Error::ReceiveOnlySession)
    );
    // It still decrypts what Alice sends on the old chain...
    let from_alice = a.encrypt(b"still there?", &mut rng)?;
    assert_eq!(
        bob.decrypt(&mut reloaded, &from_alice)?.plaintext,
        b"still there?"
    );
    // ...and a new session restores sending.
    reloaded.initiate(&bob.identity, &alice.verified_bundle(Some(2)), &mut rng)?;
    let fresh = reloaded.encrypt(b"new session", &mut rng)?;
    assert_eq!(alice.decrypt(&mut a, &fresh)?.plaintext, b"new session");
    Ok(())
}

#[test]
fn stored_record_types_print_no_fields() {
    use comptoir_protocol::proto::storage;
    let state = storage::SessionStateRecord {
        root_key: vec![0xCD; 32],
        ..Default::default()
    };
    let identity = storage::IdentityRecord {
        identity_seed: vec![0xEF; 32],
        ..Default::default()
    };
    let printed = format!("{state:?} {identity:?}");
    assert_eq!(printed, "SessionStateRecord(..) IdentityRecord(..)");
}

/// Skipped keys from a gap are stored deferred (64 bytes: the outer HMAC
/// state and the inner digest, docs/PROTOCOL.md §8). They decrypt their
/// messages after a save and load; and a version-1 record holding the same
/// keys finished (32-byte message keys, what older builds wrote) decrypts
/// the same messages.
#[test]
fn deferred_skipped_keys_survive_a_reload_and_old_records_still_decrypt() -> Result<()> {
    use comptoir_protocol::proto::storage as pb;
    use prost::Message;
    let (_alice, mut a, mut bob, mut b, mut rng) = pair(15);
    let texts: Vec<String> = (0..6).map(|i| format!("gap {i}")).collect();
    let mut sent = Vec::new();
    for text in &texts {
        sent.push(a.encrypt(text.as_bytes(), &mut rng)?);
    }
    assert_eq!(
        bob.decrypt(&mut b, &sent[5])?.plaintext,
        texts[5].as_bytes()
    );
    let mut record = pb::SessionRecord::decode(&b.to_protobuf()[..])?;
    let state = record.current.as_mut().ok_or(Error::SessionNotReady)?;
    assert_eq!(state.skipped_keys.len(), 5);
    assert!(state.skipped_keys.iter().all(|k| k.message_key.len() == 64));

    // Reloaded as written: every skipped message decrypts, once.
    let mut reloaded = SessionRecord::from_protobuf(&b.to_protobuf())?;
    for i in [3, 0, 4] {
        assert_eq!(
            bob.decrypt(&mut reloaded, &sent[i])?.plaintext,
            texts[i].as_bytes()
        );
    }
    assert_eq!(
        bob.decrypt(&mut reloaded, &sent[0]),
        Err(Error::DuplicateMessage { counter: 0 })
    );

    // The same keys finished, as a version-1 record: the outer SHA-256
    // compression over the inner digest (HMAC's outer hash).
    record.version = 1;
    for state in record.current.iter_mut() {
        state.version = 1;
        for key in &mut state.skipped_keys {
            let (words, inner) = key.message_key.split_at(32);
            let mut outer: [u32; 8] = std::array::from_fn(|i| {
                u32::from_be_bytes(words[4 * i..4 * i + 4].try_into().unwrap())
            });
            let mut block = [0u8; 64];
            block[..32].copy_from_slice(inner);
            block[32] = 0x80;
            block[56..].copy_from_slice(&768u64.to_be_bytes());
            sha2::block_api::compress256(&mut outer, &[block]);
            key.message_key = outer.iter().flat_map(|w| w.to_be_bytes()).collect();
        }
    }
    let mut old = SessionRecord::from_protobuf(&record.encode_to_vec())?;
    for i in [4, 1, 0, 2, 3] {
        assert_eq!(
            bob.decrypt(&mut old, &sent[i])?.plaintext,
            texts[i].as_bytes()
        );
    }
    // A stored key of any other length is refused.
    let state = record.current.as_mut().ok_or(Error::SessionNotReady)?;
    state.skipped_keys[0].message_key.push(0);
    assert!(SessionRecord::from_protobuf(&record.encode_to_vec()).is_err());
    Ok(())
}
