//! The interaction fuzzer: two parties with real sessions (X3DH, then the
//! double ratchet) whose input bytes choose what happens to their messages.
//!
//! Input: the first 8 bytes seed the RNG (all keys are deterministic); each
//! following byte is one operation (some read one more byte as argument):
//! send either way, deliver any message in flight (so: reorder), drop one,
//! deliver one again (duplicate / replay), take a backup of a party's
//! session record, round-trip a record through its serialized form, or
//! roll a party back to its backup (the record is marked restored, as the
//! client does, so its next send starts a new session).
//!
//! Checked after every step:
//! - every delivered message decrypts to exactly what was sent, from the
//!   right identity, and at most once: a message the receiver already
//!   decrypted is refused with a typed error. (A rollback forgets what was
//!   decrypted after the backup; the client dedups those by message id.)
//! - without any rollback, every message delivered for the first time
//!   decrypts, unless more than `MAX_PREVIOUS_CHAINS` messages reached its
//!   receiver since it was sent (its chain may be forgotten by then);
//! - a refused message changes nothing: not the record, not the prekeys;
//! - a serialized record reads back to the same bytes;
//! - at the end, after delivering everything in flight, a party that may
//!   not send starts a new session, and then a new message each way
//!   decrypts (the parties converge). After a rollback, a party may send
//!   over a session its peer rolled back past; that message must then fail
//!   as `NoMatchingSession` or, if it is still a prekey message, as
//!   `UnknownOneTimePreKey` (never anything else), and after the re-key a
//!   client does (the receiver starts a new session and asks over it for
//!   the message again) the request and the message sent again decrypt.
//!
//! This file is compiled into the fuzz target `interaction` and into the
//! ordinary test `interaction_corpus_replays` (protocol/tests/decoders.rs).

use std::collections::BTreeSet;

use comptoir_protocol::proto::wire;
use comptoir_protocol::{
    AccountId, Error, IdentityKeyPair, InMemoryPreKeyStore, SessionRecord, VerifiedBundle,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Operations read from one input, at most (bounds the skipped keys far
/// below `MAX_SKIP`).
pub const MAX_OPS: usize = 256;
/// One-time prekeys each party publishes.
const ONE_TIME_PREKEYS: u32 = 4;
/// Receiving chains a ratchet keeps for late messages (the ratchet's
/// `MAX_PREVIOUS_RECEIVING_KEYS`): a message later than this many deliveries
/// may be refused.
const MAX_PREVIOUS_CHAINS: usize = 32;

const ALICE: usize = 0;
const BOB: usize = 1;

/// One device: keys, prekeys, its session with the other party.
struct Party {
    identity: IdentityKeyPair,
    account: AccountId,
    prekeys: InMemoryPreKeyStore,
    upload: wire::UploadPreKeys,
    /// One-time prekeys the "relay" handed out so far.
    handed_out: usize,
    record: SessionRecord,
    /// Message ids decrypted by this record's lineage.
    decrypted: BTreeSet<u32>,
    /// A backup: the serialized record and what it had decrypted.
    backup: Option<(Vec<u8>, BTreeSet<u32>)>,
    /// Rolled back and has not started a new session since.
    restored: bool,
    /// Messages this party decrypted so far.
    received: usize,
}

impl Party {
    fn new(rng: &mut StdRng) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        let (prekeys, upload) =
            InMemoryPreKeyStore::generate(&identity, 1, 100, ONE_TIME_PREKEYS, rng);
        Self {
            identity,
            account: AccountId::generate(rng),
            prekeys,
            upload,
            handed_out: 0,
            record: SessionRecord::new(),
            decrypted: BTreeSet::new(),
            backup: None,
            restored: false,
            received: 0,
        }
    }

    /// The bundle the relay hands out: the next one-time prekey while any
    /// is left.
    fn bundle(&mut self) -> VerifiedBundle {
        let one_time = self.upload.one_time_prekeys.get(self.handed_out).cloned();
        self.handed_out += usize::from(one_time.is_some());
        let bundle = wire::PreKeyBundle {
            account_id: self.account.to_vec(),
            device_id: 1,
            identity_key: self.identity.public().to_bytes().to_vec(),
            signed_prekey: self.upload.signed_prekey.clone(),
            one_time_prekey: one_time,
        };
        match VerifiedBundle::verify(&bundle, Some(self.identity.public())) {
            Ok(verified) => verified,
            Err(e) => panic!("an honest bundle must verify: {e}"),
        }
    }
}

/// A message on the wire.
#[derive(Clone)]
struct Flight {
    to: usize,
    id: u32,
    bytes: Vec<u8>,
    /// The receiver's `received` count when it was sent.
    sent_at: usize,
}

/// The whole scenario.
struct World {
    parties: [Party; 2],
    rng: StdRng,
    in_flight: Vec<Flight>,
    delivered: Vec<Flight>,
    next_id: u32,
    rolled_back: bool,
}

fn plaintext(id: u32) -> Vec<u8> {
    let mut p = b"interaction ".to_vec();
    p.extend_from_slice(&id.to_be_bytes());
    p
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut alice = Party::new(&mut rng);
        let mut bob = Party::new(&mut rng);
        let bundle = bob.bundle();
        if let Err(e) = alice.record.initiate(&alice.identity, &bundle, &mut rng) {
            panic!("X3DH with an honest bundle must succeed: {e}");
        }
        Self {
            parties: [alice, bob],
            rng,
            in_flight: Vec::new(),
            delivered: Vec::new(),
            next_id: 0,
            rolled_back: false,
        }
    }

    /// Make `from` able to send if it can: a restored party starts a new
    /// session with the peer's bundle. Returns whether it can send.
    fn ready_to_send(&mut self, from: usize) -> bool {
        if self.parties[from].record.can_send() {
            return true;
        }
        if !self.parties[from].restored {
            // A responder that has received nothing yet: it waits.
            return false;
        }
        let bundle = self.parties[1 - from].bundle();
        let party = &mut self.parties[from];
        if let Err(e) = party
            .record
            .initiate(&party.identity, &bundle, &mut self.rng)
        {
            panic!("a new session with an honest bundle must start: {e}");
        }
        party.restored = false;
        assert!(party.record.can_send(), "a fresh initiator can send");
        true
    }

    /// Send one message `from` the party; returns it (also put in flight).
    fn send(&mut self, from: usize) -> Option<Flight> {
        if !self.ready_to_send(from) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        Some(self.encrypt(from, id))
    }

    /// Encrypt message `id` `from` the party (which can send) and put it in
    /// flight.
    fn encrypt(&mut self, from: usize, id: u32) -> Flight {
        let bytes = match self.parties[from]
            .record
            .encrypt(&plaintext(id), &mut self.rng)
        {
            Ok(bytes) => bytes,
            Err(e) => panic!("a session that can send must encrypt: {e}"),
        };
        let flight = Flight {
            to: 1 - from,
            id,
            bytes,
            sent_at: self.parties[1 - from].received,
        };
        self.in_flight.push(flight.clone());
        flight
    }

    /// What a client does when a message cannot be decrypted because its
    /// session is out of step: the receiver `who` starts a new session with
    /// a fresh bundle of the sender and asks over it for the message again
    /// (the request must decrypt); the sender sends `failed` again over the
    /// session the request built, and it must decrypt.
    fn rekey(&mut self, who: usize, failed: &Flight) {
        let bundle = self.parties[1 - who].bundle();
        let party = &mut self.parties[who];
        if let Err(e) = party
            .record
            .initiate(&party.identity, &bundle, &mut self.rng)
        {
            panic!("a re-key with an honest bundle must start: {e}");
        }
        party.restored = false;
        let id = self.next_id;
        self.next_id += 1;
        let request = self.encrypt(who, id);
        self.in_flight.clear();
        self.deliver(&request, true);
        let again = self.encrypt(1 - who, failed.id);
        self.in_flight.clear();
        self.deliver(&again, true);
    }

    /// Hand `flight` to its receiver and check the outcome. `strict`: it
    /// must decrypt (unless already decrypted).
    fn deliver(&mut self, flight: &Flight, strict: bool) {
        if let Err(e) = self.attempt(flight, strict) {
            panic!("message {} was refused: {e}", flight.id);
        }
    }

    /// [`Self::deliver`], returning a refusal the rules do not allow
    /// instead of panicking (every other check still panics).
    fn attempt(&mut self, flight: &Flight, strict: bool) -> Result<(), Error> {
        let sender_identity = *self.parties[1 - flight.to].identity.public();
        let party = &mut self.parties[flight.to];
        let before = party.record.to_protobuf().to_vec();
        let prekeys_before = party.prekeys.one_time_count();
        let seen = party.decrypted.contains(&flight.id);
        match party
            .record
            .decrypt(&party.identity, &mut party.prekeys, None, &flight.bytes)
        {
            Ok(decrypted) => {
                assert!(
                    !seen,
                    "message {} decrypted a second time (replay accepted)",
                    flight.id
                );
                assert_eq!(decrypted.plaintext, plaintext(flight.id), "wrong plaintext");
                assert_eq!(decrypted.remote_identity, sender_identity, "wrong sender");
                party.decrypted.insert(flight.id);
                party.received += 1;
            }
            Err(e) => {
                assert_eq!(
                    party.record.to_protobuf().to_vec(),
                    before,
                    "a refused message changed the session record ({e})"
                );
                assert_eq!(
                    party.prekeys.one_time_count(),
                    prekeys_before,
                    "a refused message used a one-time prekey ({e})"
                );
                let late = party.received - flight.sent_at > MAX_PREVIOUS_CHAINS;
                let allowed = seen
                    || (!strict && (self.rolled_back || late))
                    || matches!(e, Error::MessageKeyEvicted { .. });
                if !allowed {
                    self.delivered.push(flight.clone());
                    return Err(e);
                }
            }
        }
        self.delivered.push(flight.clone());
        Ok(())
    }

    fn step(&mut self, op: u8, arg: u8) {
        let who = usize::from(arg & 1);
        match op % 8 {
            0 => {
                self.send(ALICE);
            }
            1 => {
                self.send(BOB);
            }
            // Deliver any message in flight: reordering.
            2 | 3 if !self.in_flight.is_empty() => {
                let flight = self
                    .in_flight
                    .remove(usize::from(arg) % self.in_flight.len());
                self.deliver(&flight, false);
            }
            // Drop one.
            4 if !self.in_flight.is_empty() => {
                self.in_flight
                    .remove(usize::from(arg) % self.in_flight.len());
            }
            // Deliver one again: a duplicate or a replay.
            5 if !self.delivered.is_empty() => {
                let flight = self.delivered[usize::from(arg) % self.delivered.len()].clone();
                self.deliver(&flight, false);
            }
            // Back up one party's record, or round-trip it through storage.
            6 => {
                let party = &mut self.parties[who];
                let bytes = party.record.to_protobuf().to_vec();
                match SessionRecord::from_protobuf(&bytes) {
                    Ok(read) => {
                        assert_eq!(
                            read.to_protobuf().to_vec(),
                            bytes,
                            "a record changed through storage"
                        );
                        party.record = read;
                    }
                    Err(e) => panic!("a stored record must read back: {e}"),
                }
                if arg & 2 == 0 {
                    party.backup = Some((bytes, party.decrypted.clone()));
                }
            }
            // Roll one party back to its backup.
            7 => {
                let party = &mut self.parties[who];
                if let Some((bytes, decrypted)) = &party.backup {
                    match SessionRecord::from_protobuf(bytes) {
                        Ok(mut record) => {
                            record.mark_restored();
                            party.record = record;
                            party.decrypted = decrypted.clone();
                            party.restored = true;
                            self.rolled_back = true;
                        }
                        Err(e) => panic!("a backup must read back: {e}"),
                    }
                }
            }
            _ => {}
        }
    }

    /// Deliver everything in flight, then one new message each way.
    fn converge(&mut self) {
        for flight in std::mem::take(&mut self.in_flight) {
            self.deliver(&flight, false);
        }
        let first = if self.parties[BOB].restored && !self.parties[ALICE].restored {
            BOB
        } else {
            ALICE
        };
        for from in [first, 1 - first] {
            let Some(flight) = self.send(from) else {
                panic!("party {from} cannot send after delivering everything");
            };
            self.in_flight.clear();
            if let Err(e) = self.attempt(&flight, true) {
                // After a rollback a party may send over a session its peer
                // has forgotten (the peer rolled back past it): a message of
                // that session matches no state, or, while it is still a
                // prekey message, names a one-time prekey the peer used up
                // when it first built the session. Only a re-key recovers
                // that, as in the client. Without any rollback, or for any
                // other error, it is a bug.
                let forgotten =
                    matches!(e, Error::NoMatchingSession | Error::UnknownOneTimePreKey(_));
                assert!(
                    self.rolled_back && forgotten,
                    "message {} was refused: {e}",
                    flight.id
                );
                self.rekey(flight.to, &flight);
            }
        }
    }
}

/// Run one input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let mut seed = [0u8; 8];
    let (head, ops) = data.split_at(data.len().min(8));
    seed[..head.len()].copy_from_slice(head);
    let mut world = World::new(u64::from_le_bytes(seed));
    let mut ops = ops.iter().copied().take(MAX_OPS * 2);
    while let Some(op) = ops.next() {
        let arg = ops.next().unwrap_or(0);
        world.step(op, arg);
    }
    world.converge();
}
