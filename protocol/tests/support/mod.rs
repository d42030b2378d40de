//! Shared fixtures: parties with identities, prekey stores and bundles.

#![allow(dead_code, unreachable_pub)]

use comptoir_protocol::proto::wire;
use comptoir_protocol::{
    AccountId, Decrypted, IdentityKeyPair, InMemoryPreKeyStore, Result, SessionRecord,
    VerifiedBundle,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A deterministic RNG for reproducible scenarios.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// One device with its keys and prekeys.
pub struct Party {
    pub account: AccountId,
    pub identity: IdentityKeyPair,
    pub prekeys: InMemoryPreKeyStore,
    pub upload: wire::UploadPreKeys,
}

impl Party {
    pub fn new(rng: &mut StdRng, one_time_prekeys: u32) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        let (prekeys, upload) =
            InMemoryPreKeyStore::generate(&identity, 1, 100, one_time_prekeys, rng);
        Self {
            account: AccountId::generate(rng),
            identity,
            prekeys,
            upload,
        }
    }

    /// The bundle the relay would hand out, taking the `n`-th one-time prekey
    /// (or none).
    pub fn bundle(&self, one_time: Option<usize>) -> wire::PreKeyBundle {
        wire::PreKeyBundle {
            account_id: self.account.to_vec(),
            device_id: 1,
            identity_key: self.identity.public().to_bytes().to_vec(),
            signed_prekey: self.upload.signed_prekey.clone(),
            one_time_prekey: one_time.and_then(|i| self.upload.one_time_prekeys.get(i).cloned()),
        }
    }

    pub fn verified_bundle(&self, one_time: Option<usize>) -> VerifiedBundle {
        match VerifiedBundle::verify(&self.bundle(one_time), Some(self.identity.public())) {
            Ok(b) => b,
            Err(e) => panic!("fixture bundle must verify: {e}"),
        }
    }

    /// Decrypt with this party's keys.
    pub fn decrypt(&mut self, record: &mut SessionRecord, bytes: &[u8]) -> Result<Decrypted> {
        record.decrypt(&self.identity, &mut self.prekeys, None, bytes)
    }
}

/// Alice initiates with Bob (using Bob's first one-time prekey).
pub fn pair(seed: u64) -> (Party, SessionRecord, Party, SessionRecord, StdRng) {
    let mut rng = rng(seed);
    let alice = Party::new(&mut rng, 5);
    let bob = Party::new(&mut rng, 5);
    let mut alice_session = SessionRecord::new();
    if let Err(e) = alice_session.initiate(&alice.identity, &bob.verified_bundle(Some(0)), &mut rng)
    {
        panic!("initiate: {e}");
    }
    (alice, alice_session, bob, SessionRecord::new(), rng)
}
