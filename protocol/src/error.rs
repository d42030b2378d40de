//! Typed errors for everything the protocol crate can refuse.

use thiserror::Error;

/// Result alias for the protocol crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a protocol operation failed. Every variant leaves all state exactly as
/// it was before the call.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Bytes could not be decoded; see the inner reason.
    #[error("malformed input: {0}")]
    Decode(#[from] DecodeError),

    /// A signature did not verify. The data was not produced by the holder of
    /// the key it claims; discard it.
    #[error("bad signature on {what}")]
    BadSignature {
        /// What was signed (signed prekey, device list, ...).
        what: &'static str,
    },

    /// A public key is not a valid curve point, or a Diffie-Hellman result was
    /// all zeros (a low-order point). The peer is misbehaving.
    #[error("invalid public key in {what}")]
    InvalidKey {
        /// Which key.
        what: &'static str,
    },

    /// The AEAD tag did not verify: the ciphertext, header or associated data
    /// was altered, or the message belongs to another session.
    #[error("decryption failed: message was tampered with or belongs to another session")]
    DecryptionFailed,

    /// This message was already decrypted (or its key was evicted).
    #[error("duplicate or replayed message (ratchet key counter {counter})")]
    DuplicateMessage {
        /// The message number in its chain.
        counter: u32,
    },

    /// The message's key was stored as skipped but later evicted by the cap
    /// on stored keys (or the message is a duplicate from that range): ask
    /// the sender to send it again if it is not already in the history.
    #[error(
        "message key {counter} was evicted (too many skipped messages); ask the sender to resend"
    )]
    MessageKeyEvicted {
        /// The message number in its chain.
        counter: u32,
    },

    /// This session state was restored from a backup: its sending chain may
    /// already have been used, so it must never encrypt. Start a new session
    /// (fetch the peer's bundle and initiate).
    #[error("session was restored from a backup and must not send; start a new session")]
    ReceiveOnlySession,

    /// The message is further ahead in its chain than we are willing to skip.
    #[error("message skips {requested} keys in one chain; at most {limit} may be skipped")]
    TooManySkippedMessages {
        /// How many keys it would skip.
        requested: u64,
        /// `MAX_SKIP`.
        limit: u32,
    },

    /// The session cannot encrypt yet (a responder that has received nothing).
    #[error("session cannot send before it has received a message")]
    SessionNotReady,

    /// No session state decrypted the message. Ask the peer to re-key.
    #[error("no session matches this message; request a re-key")]
    NoMatchingSession,

    /// A prekey message names a signed prekey we do not hold.
    #[error("unknown signed prekey id {0}")]
    UnknownSignedPreKey(u32),

    /// A prekey message names a one-time prekey we do not hold (already used).
    #[error("unknown or already used one-time prekey id {0}")]
    UnknownOneTimePreKey(u32),

    /// A device list is older than one already seen.
    #[error("stale device list: version {got} is not newer than {have}")]
    StaleDeviceList {
        /// The version we already trust.
        have: u64,
        /// The version offered.
        got: u64,
    },

    /// The remote identity differs from the one the session was built with.
    #[error("identity key mismatch: the peer's identity changed")]
    IdentityMismatch,

    /// A stored record could not be opened with the key given (wrong key or
    /// corrupted file).
    #[error("stored record could not be decrypted: wrong key or corrupted data")]
    RecordDecryptionFailed,
}

/// Why some bytes could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The version byte is not one we speak.
    #[error("unsupported version {got} (expected {expected})")]
    UnsupportedVersion {
        /// The version we speak.
        expected: u8,
        /// The version found.
        got: u8,
    },
    /// Input larger than allowed.
    #[error("input of {got} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Maximum accepted.
        limit: usize,
        /// Size received.
        got: usize,
    },
    /// Input shorter than its fixed layout.
    #[error("input of {got} bytes is shorter than the minimum {expected}")]
    TooShort {
        /// Minimum length.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// A field has the wrong length.
    #[error("field {field} has length {got}, expected {expected}")]
    BadLength {
        /// Field name.
        field: &'static str,
        /// Expected length.
        expected: usize,
        /// Length found.
        got: usize,
    },
    /// A kind/type byte is unknown.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The protobuf payload is invalid.
    #[error("invalid protobuf: {0}")]
    Protobuf(String),
    /// A required field is absent.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// Bytes remained after a complete message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

impl From<prost::DecodeError> for DecodeError {
    fn from(e: prost::DecodeError) -> Self {
        DecodeError::Protobuf(e.to_string())
    }
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Decode(e.into())
    }
}
