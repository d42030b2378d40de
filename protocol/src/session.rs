//! Sessions with one remote device: X3DH to start, the Double Ratchet after,
//! and a record that keeps a few previous states.
//!
//! A [`SessionRecord`] holds the current state and up to
//! [`MAX_ARCHIVED_STATES`] earlier ones. Decryption tries the current state,
//! then the archived ones, and promotes the one that works: this is what
//! makes simultaneous initiation and a restored device converge instead of
//! wedging. Every failed decryption leaves the record, and the prekey store,
//! exactly as they were.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use rand_core::CryptoRng;
use x25519_dalek::PublicKey;

use crate::error::{Error, Result};
use crate::keys::{IdentityKey, IdentityKeyPair, KEY_LEN, KeyPair};
use crate::message::{IncomingMessage, PreKeyMessage, RatchetMessage};
use crate::prekeys::{VerifiedBundle, sign_prekey};
use crate::proto::wire;
use crate::ratchet::{AD_LEN, RatchetState};
use crate::x3dh;

/// Earlier session states kept per remote device. Each costs a few hundred
/// bytes plus its skipped keys; 10 covers repeated simultaneous initiation
/// and a couple of restores without letting the record grow unbounded.
pub const MAX_ARCHIVED_STATES: usize = 10;

/// The private halves of a device's prekeys, looked up by X3DH responders.
pub trait PreKeyStore {
    /// The signed prekey with this id, if still held.
    fn signed_prekey(&self, id: u32) -> Option<KeyPair>;
    /// The one-time prekey with this id, if not used yet.
    fn one_time_prekey(&self, id: u32) -> Option<KeyPair>;
    /// Delete a one-time prekey after a session was built with it.
    fn remove_one_time_prekey(&mut self, id: u32);
}

/// A [`PreKeyStore`] in memory (tests, vectors, and the client's cache).
#[derive(Default)]
pub struct InMemoryPreKeyStore {
    signed: BTreeMap<u32, KeyPair>,
    one_time: BTreeMap<u32, KeyPair>,
}

impl InMemoryPreKeyStore {
    /// Generate a signed prekey `signed_id` and one-time prekeys
    /// `first_one_time_id..first_one_time_id + count`; returns the store and
    /// the upload for the relay.
    pub fn generate<R: CryptoRng + ?Sized>(
        identity: &IdentityKeyPair,
        signed_id: u32,
        first_one_time_id: u32,
        count: u32,
        rng: &mut R,
    ) -> (Self, wire::UploadPreKeys) {
        let mut store = Self::default();
        let signed = KeyPair::generate(rng);
        let signed_prekey = sign_prekey(identity, signed_id, &signed);
        store.signed.insert(signed_id, signed);
        let mut one_time_prekeys = Vec::with_capacity(count as usize);
        for id in first_one_time_id..first_one_time_id.saturating_add(count) {
            let key = KeyPair::generate(rng);
            one_time_prekeys.push(wire::OneTimePreKey {
                key_id: id,
                public_key: key.public_bytes().to_vec(),
            });
            store.one_time.insert(id, key);
        }
        (
            store,
            wire::UploadPreKeys {
                signed_prekey: Some(signed_prekey),
                one_time_prekeys,
            },
        )
    }

    /// Add a signed prekey.
    pub fn insert_signed(&mut self, id: u32, key: KeyPair) {
        self.signed.insert(id, key);
    }

    /// Add a one-time prekey.
    pub fn insert_one_time(&mut self, id: u32, key: KeyPair) {
        self.one_time.insert(id, key);
    }

    /// How many one-time prekeys remain.
    pub fn one_time_count(&self) -> usize {
        self.one_time.len()
    }
}

impl PreKeyStore for InMemoryPreKeyStore {
    fn signed_prekey(&self, id: u32) -> Option<KeyPair> {
        self.signed.get(&id).cloned()
    }
    fn one_time_prekey(&self, id: u32) -> Option<KeyPair> {
        self.one_time.get(&id).cloned()
    }
    fn remove_one_time_prekey(&mut self, id: u32) {
        self.one_time.remove(&id);
    }
}

/// What an initiator repeats in every message until the peer answers, so the
/// peer can build the session from whichever message arrives first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingPreKey {
    pub(crate) signed_prekey_id: u32,
    pub(crate) one_time_prekey_id: Option<u32>,
}

/// One session state: a ratchet plus who it is with.
#[derive(Clone)]
pub(crate) struct SessionState {
    pub(crate) ratchet: RatchetState,
    pub(crate) local_identity: IdentityKey,
    pub(crate) remote_identity: IdentityKey,
    /// Whether we initiated (decides the order of identities in the AD).
    pub(crate) initiator: bool,
    /// The initiator's X3DH ephemeral public key; identifies the session.
    pub(crate) base_key: [u8; KEY_LEN],
    pub(crate) pending_prekey: Option<PendingPreKey>,
    /// For a responder: the prekeys named by the prekey message that built it.
    pub(crate) built_from: Option<PendingPreKey>,
    /// Restored from a backup: decrypt only, never encrypt.
    pub(crate) receive_only: bool,
}

impl SessionState {
    fn associated_data(&self) -> [u8; AD_LEN] {
        if self.initiator {
            x3dh::associated_data(&self.local_identity, &self.remote_identity)
        } else {
            x3dh::associated_data(&self.remote_identity, &self.local_identity)
        }
    }

    fn encrypt<R: CryptoRng + ?Sized>(&mut self, plaintext: &[u8], rng: &mut R) -> Result<Vec<u8>> {
        if self.receive_only {
            return Err(Error::ReceiveOnlySession);
        }
        let ad = self.associated_data();
        let message = self.ratchet.encrypt(plaintext, &ad, rng)?;
        Ok(match self.pending_prekey {
            Some(pending) => PreKeyMessage::encode(
                self.local_identity.as_bytes(),
                &self.base_key,
                pending.signed_prekey_id,
                pending.one_time_prekey_id,
                &message,
            ),
            None => message,
        })
    }

    fn decrypt(&mut self, message: &RatchetMessage<'_>) -> Result<Vec<u8>> {
        let ad = self.associated_data();
        let plaintext = self.ratchet.decrypt(message, &ad)?;
        // The peer answered: it has the session, stop sending prekey messages.
        self.pending_prekey = None;
        Ok(plaintext)
    }
}

/// All sessions with one remote device: the current one and a few earlier.
#[derive(Clone, Default)]
pub struct SessionRecord {
    pub(crate) current: Option<SessionState>,
    pub(crate) previous: VecDeque<SessionState>,
}

/// A successful decryption. `Debug` shows the plaintext's length, not its
/// bytes.
#[derive(PartialEq, Eq)]
pub struct Decrypted {
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// The sender's identity key.
    pub remote_identity: IdentityKey,
    /// Whether this message established a new session (X3DH as responder).
    pub new_session: bool,
}

impl SessionRecord {
    /// An empty record (no session yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Start a new session as initiator from a verified prekey bundle. Any
    /// current session is archived (kept for late messages).
    pub fn initiate<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &IdentityKeyPair,
        bundle: &VerifiedBundle,
        rng: &mut R,
    ) -> Result<()> {
        let agreement = x3dh::initiate(identity, bundle, rng)?;
        self.install_initiator(identity, bundle, agreement, rng)
    }

    /// [`Self::initiate`] with a caller-chosen ephemeral key (test vectors).
    #[doc(hidden)]
    pub fn initiate_with_ephemeral<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &IdentityKeyPair,
        bundle: &VerifiedBundle,
        ephemeral: &KeyPair,
        rng: &mut R,
    ) -> Result<()> {
        let agreement = x3dh::initiate_with_ephemeral(identity, bundle, ephemeral)?;
        self.install_initiator(identity, bundle, agreement, rng)
    }

    fn install_initiator<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &IdentityKeyPair,
        bundle: &VerifiedBundle,
        agreement: x3dh::InitiatorAgreement,
        rng: &mut R,
    ) -> Result<()> {
        let ratchet = RatchetState::initiator(&agreement.shared_secret, bundle.signed_prekey, rng)?;
        let state = SessionState {
            ratchet,
            local_identity: *identity.public(),
            remote_identity: bundle.identity,
            initiator: true,
            base_key: agreement.ephemeral_public,
            pending_prekey: Some(PendingPreKey {
                signed_prekey_id: bundle.signed_prekey_id,
                one_time_prekey_id: bundle.one_time_prekey.map(|(id, _)| id),
            }),
            built_from: None,
            receive_only: false,
        };
        self.promote(state);
        Ok(())
    }

    /// Whether there is a session to encrypt with.
    pub fn has_current_session(&self) -> bool {
        self.current.is_some()
    }

    /// Whether the current session can send right now (a responder can
    /// only after it has received).
    pub fn can_send(&self) -> bool {
        self.current.as_ref().is_some_and(|s| {
            !s.receive_only
                && (s.ratchet.sending_chain.is_some() || s.ratchet.remote_ratchet_key.is_some())
        })
    }

    /// Mark every state as restored from a backup: they may still decrypt
    /// what the peer sent, but never encrypt again (their sending chains may
    /// have been used after the backup, and reusing a message key would
    /// reuse a ChaCha20-Poly1305 key and nonce). Call this when restoring a
    /// record from a backup; the next send needs a new session.
    pub fn mark_restored(&mut self) {
        for state in self.current.iter_mut().chain(self.previous.iter_mut()) {
            state.receive_only = true;
        }
    }

    /// The identity of the remote device in the current session.
    pub fn remote_identity(&self) -> Option<&IdentityKey> {
        self.current.as_ref().map(|s| &s.remote_identity)
    }

    /// Number of archived states (for tests and diagnostics).
    pub fn archived_states(&self) -> usize {
        self.previous.len()
    }

    /// Encrypt with the current session. Until the peer has answered, the
    /// output is a prekey message.
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        plaintext: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>> {
        let state = self.current.as_mut().ok_or(Error::SessionNotReady)?;
        state.encrypt(plaintext, rng)
    }

    /// Decrypt a message from the remote device. `expected_identity`, when
    /// known (from the sender account's signed device list), must match the
    /// sender's identity. On any error nothing changes: not this record and
    /// not the prekey store.
    pub fn decrypt<S: PreKeyStore + ?Sized>(
        &mut self,
        identity: &IdentityKeyPair,
        prekeys: &mut S,
        expected_identity: Option<&IdentityKey>,
        bytes: &[u8],
    ) -> Result<Decrypted> {
        match IncomingMessage::decode(bytes)? {
            IncomingMessage::Message(message) => {
                let (plaintext, remote_identity) =
                    self.decrypt_with_existing(&message, expected_identity, None)?;
                Ok(Decrypted {
                    plaintext,
                    remote_identity,
                    new_session: false,
                })
            }
            IncomingMessage::PreKey(message) => {
                self.decrypt_prekey(identity, prekeys, expected_identity, &message)
            }
        }
    }

    fn decrypt_prekey<S: PreKeyStore + ?Sized>(
        &mut self,
        identity: &IdentityKeyPair,
        prekeys: &mut S,
        expected_identity: Option<&IdentityKey>,
        message: &PreKeyMessage<'_>,
    ) -> Result<Decrypted> {
        if expected_identity.is_some_and(|expected| *expected.as_bytes() != message.identity_key) {
            return Err(Error::IdentityMismatch);
        }
        // A later message of a session we already built (the first got
        // through). Matched on raw bytes: no curve work for known sessions.
        let named = PendingPreKey {
            signed_prekey_id: message.signed_prekey_id,
            one_time_prekey_id: message.one_time_prekey_id,
        };
        let known = self
            .states()
            .find(|s| {
                s.base_key == message.base_key
                    && *s.remote_identity.as_bytes() == message.identity_key
                    && s.built_from.is_none_or(|built| built == named)
            })
            .map(|s| s.remote_identity);
        if let Some(initiator_identity) = known {
            let (plaintext, remote_identity) = self.decrypt_with_existing(
                &message.message,
                Some(&initiator_identity),
                Some(&message.base_key),
            )?;
            return Ok(Decrypted {
                plaintext,
                remote_identity,
                new_session: false,
            });
        }

        let initiator_identity = IdentityKey::from_bytes(&message.identity_key)?;
        let signed_prekey = prekeys
            .signed_prekey(message.signed_prekey_id)
            .ok_or(Error::UnknownSignedPreKey(message.signed_prekey_id))?;
        let one_time_prekey = match message.one_time_prekey_id {
            Some(id) => Some(
                prekeys
                    .one_time_prekey(id)
                    .ok_or(Error::UnknownOneTimePreKey(id))?,
            ),
            None => None,
        };
        let base_key = PublicKey::from(message.base_key);
        let shared_secret = x3dh::respond(
            identity,
            &signed_prekey,
            one_time_prekey.as_ref(),
            &initiator_identity,
            &base_key,
        )?;
        let mut state = SessionState {
            ratchet: RatchetState::responder(&shared_secret, signed_prekey),
            local_identity: *identity.public(),
            remote_identity: initiator_identity,
            initiator: false,
            base_key: message.base_key,
            pending_prekey: None,
            built_from: Some(named),
            receive_only: false,
        };
        let plaintext = state.decrypt(&message.message)?;
        // Success: commit the new session and consume the one-time prekey.
        if let Some(id) = message.one_time_prekey_id {
            prekeys.remove_one_time_prekey(id);
        }
        self.promote(state);
        Ok(Decrypted {
            plaintext,
            remote_identity: initiator_identity,
            new_session: true,
        })
    }

    /// Try the current state, then archived ones; promote the one that works.
    fn decrypt_with_existing(
        &mut self,
        message: &RatchetMessage<'_>,
        expected_identity: Option<&IdentityKey>,
        base_key: Option<&[u8; KEY_LEN]>,
    ) -> Result<(Vec<u8>, IdentityKey)> {
        let matches = |s: &SessionState| {
            expected_identity.is_none_or(|id| *id == s.remote_identity)
                && base_key.is_none_or(|k| *k == s.base_key)
        };
        let mut first_error = None;
        let mut duplicate = None;
        let mut note = |e: Error| {
            if matches!(e, Error::DuplicateMessage { .. }) && duplicate.is_none() {
                duplicate = Some(e.clone());
            }
            if first_error.is_none() {
                first_error = Some(e);
            }
        };
        if let Some(state) = self.current.as_mut().filter(|s| matches(s)) {
            match state.decrypt(message) {
                Ok(plaintext) => return Ok((plaintext, state.remote_identity)),
                Err(e) => note(e),
            }
        }
        for index in 0..self.previous.len() {
            let state = &mut self.previous[index];
            if !matches(state) {
                continue;
            }
            match state.decrypt(message) {
                Ok(plaintext) => {
                    let remote = state.remote_identity;
                    // A restored (receive-only) state decrypts in place:
                    // promoting it would displace a current state that can
                    // send, and force yet another new session.
                    let stays_archived = state.receive_only && self.current.is_some();
                    if !stays_archived && let Some(state) = self.previous.remove(index) {
                        self.promote(state);
                    }
                    return Ok((plaintext, remote));
                }
                Err(e) => note(e),
            }
        }
        // A duplicate anywhere means the message was already read: say so,
        // so the client does not ask for a re-key.
        Err(match (duplicate, first_error) {
            (Some(dup), _) => dup,
            (None, Some(Error::TooManySkippedMessages { requested, limit })) => {
                Error::TooManySkippedMessages { requested, limit }
            }
            (None, Some(Error::MessageKeyEvicted { counter })) => {
                Error::MessageKeyEvicted { counter }
            }
            _ => Error::NoMatchingSession,
        })
    }

    fn states(&self) -> impl Iterator<Item = &SessionState> {
        self.current.iter().chain(self.previous.iter())
    }

    /// Make `state` current, archiving the old current state.
    fn promote(&mut self, state: SessionState) {
        if let Some(old) = self.current.replace(state) {
            self.previous.push_front(old);
            self.previous.truncate(MAX_ARCHIVED_STATES);
        }
    }
}

impl fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            plaintext,
            remote_identity,
            new_session,
        } = self;
        f.debug_struct("Decrypted")
            .field("plaintext_len", &plaintext.len())
            .field("remote_identity", remote_identity)
            .field("new_session", new_session)
            .finish()
    }
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { current, previous } = self;
        f.debug_struct("SessionRecord")
            .field("current", current)
            .field("archived_states", &previous.len())
            .finish()
    }
}

impl fmt::Debug for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            ratchet,
            local_identity,
            remote_identity,
            initiator,
            base_key: _,
            pending_prekey,
            built_from: _,
            receive_only,
        } = self;
        f.debug_struct("SessionState")
            .field("local_identity", local_identity)
            .field("remote_identity", remote_identity)
            .field("initiator", initiator)
            .field("pending_prekey", &pending_prekey.is_some())
            .field("receive_only", receive_only)
            .field("ratchet", ratchet)
            .finish()
    }
}
