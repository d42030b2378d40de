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

/// The RNG used for the published test vectors, simple enough for any
/// implementation to reproduce: the n-th 32-byte block (n from 0) is
/// `SHA-256("Comptoir vector rng" || seed (u64 BE) || n (u64 BE))`; a draw of
/// k bytes takes the first k bytes of the next block(s).
pub struct VectorRng {
    seed: u64,
    counter: u64,
}

impl VectorRng {
    pub fn new(seed: u64) -> Self {
        Self { seed, counter: 0 }
    }

    fn block(&mut self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"Comptoir vector rng");
        h.update(self.seed.to_be_bytes());
        h.update(self.counter.to_be_bytes());
        self.counter += 1;
        let mut out = [0u8; 32];
        out.copy_from_slice(&h.finalize());
        out
    }
}

impl rand_core::TryRng for VectorRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> std::result::Result<u32, Self::Error> {
        let b = self.block();
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn try_next_u64(&mut self) -> std::result::Result<u64, Self::Error> {
        let b = self.block();
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[..8]);
        Ok(u64::from_be_bytes(x))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> std::result::Result<(), Self::Error> {
        for chunk in dst.chunks_mut(32) {
            let b = self.block();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for VectorRng {}
