//! Interaction property test: two parties send random bursts; messages are
//! dropped, duplicated and reordered. Every delivered message decrypts
//! exactly once to what was sent; every redelivery is refused; nothing
//! wedges.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.

mod support;

use comptoir_protocol::{Error, SessionRecord};
use proptest::prelude::*;
use support::{Party, pair};

#[derive(Clone, Debug)]
enum Action {
    /// The party sends this many messages.
    Send { from_alice: bool, count: u8 },
    /// Deliver the in-flight message at this position (mod the queue length).
    Deliver { to_alice: bool, pick: u16 },
    /// Deliver again a message that was already delivered.
    Duplicate { to_alice: bool, pick: u16 },
    /// Lose an in-flight message.
    Drop { to_alice: bool, pick: u16 },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (any::<bool>(), 1u8..6).prop_map(|(from_alice, count)| Action::Send { from_alice, count }),
        5 => (any::<bool>(), any::<u16>()).prop_map(|(to_alice, pick)| Action::Deliver { to_alice, pick }),
        1 => (any::<bool>(), any::<u16>()).prop_map(|(to_alice, pick)| Action::Duplicate { to_alice, pick }),
        1 => (any::<bool>(), any::<u16>()).prop_map(|(to_alice, pick)| Action::Drop { to_alice, pick }),
    ]
}

struct Side {
    party: Party,
    record: SessionRecord,
    /// Messages in flight to this side: (plaintext, ciphertext).
    inbox: Vec<(Vec<u8>, Vec<u8>)>,
    /// Messages this side has read.
    delivered: Vec<(Vec<u8>, Vec<u8>)>,
}

fn run(seed: u64, actions: &[Action]) -> Result<(), TestCaseError> {
    let (alice, a, bob, b, mut rng) = pair(seed);
    let mut sides = [
        Side {
            party: alice,
            record: a,
            inbox: Vec::new(),
            delivered: Vec::new(),
        },
        Side {
            party: bob,
            record: b,
            inbox: Vec::new(),
            delivered: Vec::new(),
        },
    ];
    let mut counter = 0u32;
    for action in actions {
        match *action {
            Action::Send { from_alice, count } => {
                let (from, to) = if from_alice { (0, 1) } else { (1, 0) };
                if !sides[from].record.can_send() {
                    continue; // Bob has not received anything yet.
                }
                for _ in 0..count {
                    counter += 1;
                    let text = format!("message {counter}").into_bytes();
                    let ct = sides[from]
                        .record
                        .encrypt(&text, &mut rng)
                        .map_err(|e| TestCaseError::fail(format!("encrypt failed: {e}")))?;
                    sides[to].inbox.push((text, ct));
                }
            }
            Action::Deliver { to_alice, pick } => {
                let side = &mut sides[if to_alice { 0 } else { 1 }];
                if side.inbox.is_empty() {
                    continue;
                }
                let (text, ct) = side.inbox.remove(pick as usize % side.inbox.len());
                let got = side
                    .party
                    .decrypt(&mut side.record, &ct)
                    .map_err(|e| TestCaseError::fail(format!("delivered message failed: {e}")))?;
                prop_assert_eq!(&got.plaintext, &text);
                side.delivered.push((text, ct));
            }
            Action::Duplicate { to_alice, pick } => {
                let side = &mut sides[if to_alice { 0 } else { 1 }];
                if side.delivered.is_empty() {
                    continue;
                }
                let (_, ct) = side.delivered[pick as usize % side.delivered.len()].clone();
                let before = side.record.to_protobuf().to_vec();
                let result = side.party.decrypt(&mut side.record, &ct);
                prop_assert!(result.is_err(), "a redelivered message decrypted twice");
                prop_assert!(
                    matches!(
                        result,
                        Err(Error::DuplicateMessage { .. }) | Err(Error::NoMatchingSession)
                    ),
                    "unexpected error {:?}",
                    result
                );
                prop_assert_eq!(
                    side.record.to_protobuf().to_vec(),
                    before,
                    "a refused duplicate changed state"
                );
            }
            Action::Drop { to_alice, pick } => {
                let side = &mut sides[if to_alice { 0 } else { 1 }];
                if !side.inbox.is_empty() {
                    let n = side.inbox.len();
                    side.inbox.remove(pick as usize % n);
                }
            }
        }
    }
    // Drain: everything still in flight arrives, in a shuffled order.
    for to in [1usize, 0] {
        let side = &mut sides[to];
        let inbox = std::mem::take(&mut side.inbox);
        for (text, ct) in inbox.into_iter().rev() {
            let got = side
                .party
                .decrypt(&mut side.record, &ct)
                .map_err(|e| TestCaseError::fail(format!("drained message failed: {e}")))?;
            prop_assert_eq!(got.plaintext, text);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_bursts_drops_duplicates_and_reordering(
        seed in any::<u64>(),
        actions in proptest::collection::vec(action(), 1..120),
    ) {
        run(seed, &actions)?;
    }
}
