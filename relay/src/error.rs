//! Typed errors. Every refusal the relay can make is one [`RelayError`]
//! variant, mapped once (in [`RelayError::to_frame`]) to a wire
//! `ErrorCode` and a message that says what to do.

use comptoir_protocol::proto::wire::{self, ErrorCode, SignedDeviceList};

use crate::storage::StorageError;

/// Result alias for the relay.
pub type Result<T, E = RelayError> = std::result::Result<T, E>;

/// Why the relay refused a frame. None of these leaves partial state behind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The bytes are not a version-1 `ClientFrame`.
    #[error("malformed frame ({0}); send one version-1 protobuf ClientFrame per binary message")]
    MalformedFrame(String),
    /// The frame is larger than the relay accepts.
    #[error(
        "frame of {got} bytes exceeds the limit of {limit} bytes; send large content as an attachment"
    )]
    FrameTooLarge {
        /// The limit.
        limit: usize,
        /// The size received.
        got: usize,
    },
    /// The version byte is not one this relay speaks.
    #[error("unsupported frame version {got}; this relay speaks version 1")]
    UnsupportedVersion {
        /// The version byte received.
        got: u8,
    },
    /// The request needs an authenticated connection.
    #[error("not authenticated: answer the AuthChallenge with an AuthResponse first")]
    NotAuthenticated,
    /// The request is only valid before authentication.
    #[error(
        "already authenticated on this connection; open a new connection to authenticate again"
    )]
    AlreadyAuthenticated,
    /// The challenge signature did not verify.
    #[error(
        "authentication failed: the signature does not match the device key; sign the latest challenge nonce ({remaining} attempts left)"
    )]
    AuthFailed {
        /// Attempts left on this connection.
        remaining: u32,
    },
    /// Too many failed authentication attempts on this connection.
    #[error("too many failed authentication attempts; reconnect and sign the new challenge")]
    TooManyAuthAttempts,
    /// The account or device is not registered (or was removed).
    #[error(
        "unknown device: the account does not list this device; register it in a new signed device list"
    )]
    UnknownDevice,
    /// No account has this id (or handle).
    #[error("unknown account; check the id or look the handle up again")]
    UnknownAccount,
    /// The send does not cover exactly the recipient's current devices.
    #[error(
        "the send must carry one ciphertext per current device of the recipient; retry with the attached device list"
    )]
    DeviceListMismatch {
        /// The current list the sender should encrypt for.
        current: Box<SignedDeviceList>,
    },
    /// A device list older than (or as old as) the stored one.
    #[error(
        "stale device list: version {got} is not newer than the stored version {have}; publish a higher version"
    )]
    StaleDeviceList {
        /// The stored version.
        have: u64,
        /// The version offered.
        got: u64,
    },
    /// A signature or key in the request does not verify.
    #[error("bad signature or key on {0}; sign it with the right key")]
    BadSignature(String),
    /// A recipient device's queue is full.
    #[error("the queue of device {device} is full ({limit} envelopes); retry after it drains")]
    QueueFull {
        /// The recipient device.
        device: u32,
        /// The per-device limit.
        limit: u64,
    },
    /// A token bucket ran dry.
    #[error("rate limited ({scope}); retry after {retry_after_ms} ms")]
    RateLimited {
        /// "account" or "address".
        scope: &'static str,
        /// When a token will be available.
        retry_after_ms: u64,
    },
    /// The recipient blocked the sender.
    #[error("the recipient has blocked this account; the envelope was not stored")]
    Blocked,
    /// The request is structurally invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Too many wrong verification codes.
    #[error("too many wrong codes for this number; request a new code")]
    TooManyCodeAttempts,
    /// The verification code expired (or none was requested).
    #[error("no valid code for this number (expired or never requested); request a new code")]
    CodeExpired,
    /// The verification code is wrong.
    #[error("wrong code; {remaining} attempts left")]
    WrongCode {
        /// Attempts left before the code is discarded.
        remaining: u32,
    },
    /// The business name is held by another account, or the account
    /// already holds a different one.
    #[error("name taken: {0}")]
    NameTaken(String),
    /// The account's kind (customer or business) does not allow this.
    #[error("not allowed for this kind of account: {0}")]
    AccountKind(String),
    /// The relay requires a verified phone number before an account may
    /// write to a business, and this one has none.
    #[error(
        "this relay requires a verified phone number before an account may write to a business; \
         verify one (request a code, then send it back) and retry"
    )]
    PhoneRequired,
    /// A business's template the customer's consent does not cover (the
    /// message says what is missing).
    #[error("{0}")]
    NoConsent(String),
    /// A consent token whose counter is not higher than the one kept.
    #[error(
        "this consent's counter ({got}) is not higher than the one the relay keeps for this \
         business ({kept}): fetch the consents and sign a new one with a higher counter"
    )]
    StaleConsent {
        /// The counter sent.
        got: u64,
        /// The counter kept.
        kept: u64,
    },
    /// A business's free-form reply outside the 24-hour window (the
    /// message says since when and what to send instead).
    #[error("{0}")]
    WindowClosed(String),
    /// A quota of the sender's is used up (the message says which and
    /// what to do).
    #[error("{0}")]
    QuotaExceeded(String),
    /// A business reached as many distinct customers by
    /// business-initiated conversations in 24 hours as its messaging tier
    /// allows (`QUOTA_EXCEEDED`, with the time to retry).
    #[error(
        "this business reached {limit} distinct customers with business-initiated conversations \
         in the last 24 hours, the limit of its messaging tier; a new customer can be reached \
         in {retry_after_ms} ms (at {retry_at_ms} ms since the epoch); replies inside a \
         customer's 24-hour window and templates to customers reached in the last 24 hours are \
         not limited"
    )]
    TierLimit {
        /// The tier's limit.
        limit: u64,
        /// When a customer's slot frees, ms since the epoch.
        retry_at_ms: u64,
        /// How long from the refusal until then.
        retry_after_ms: u64,
    },
    /// A template category naming no template the operator approved for
    /// the sender, or approved under another category.
    #[error("{0}")]
    TemplateNotApproved(String),
    /// The ack of a billed envelope carried no delivery signature, or one
    /// that does not verify against the device's identity key.
    #[error(
        "this envelope is billed: its ack must carry this device's signature over the \
         delivery proof (docs/PROTOCOL.md, signed delivery); {0}; the envelope stays queued"
    )]
    BadDeliverySignature(&'static str),
    /// A blob larger than its kind allows, or past the account's quota
    /// (the message says which).
    #[error("{0}")]
    BlobTooLarge(String),
    /// No complete blob (or no upload) with this id.
    #[error("{0}")]
    BlobNotFound(&'static str),
    /// A business's send without a 32-byte franking commitment.
    #[error(
        "every message a business sends must be franked: franking_tag must be the 32-byte \
         franking commitment (docs/PROTOCOL.md, message franking), got {got} bytes; nothing \
         was stored"
    )]
    FrankingRequired {
        /// The franking tag's length.
        got: usize,
    },
    /// A report the relay does not take (the message says why); nothing
    /// was stored.
    #[error("{0}")]
    ReportRefused(String),
    /// A Status key for a recipient that does not qualify (the message
    /// says why); nothing was stored.
    #[error("{0}")]
    NotASubscriber(String),
    /// No live Status post of the sender with this id.
    #[error(
        "no Status post of this account with this id: it expired (24 hours after posting), \
         was deleted, or was never posted"
    )]
    StatusNotFound,
    /// The relay is shutting down.
    #[error("the relay is shutting down; reconnect in a moment")]
    ShuttingDown,
    /// The storage backend failed. The request was not applied. The
    /// message a peer sees is fixed: the detail (paths, OS errors) only
    /// goes to the operator's log, through [`RelayError::log_detail`].
    #[error("{}", storage_message(.0))]
    Storage(#[from] StorageError),
}

impl From<crate::blobs::BlobError> for RelayError {
    fn from(error: crate::blobs::BlobError) -> Self {
        use crate::blobs::BlobError as B;
        match error {
            B::TooLarge(message) => Self::BlobTooLarge(message),
            B::NotFound(message) => Self::BlobNotFound(message),
            B::Invalid(message) => Self::InvalidRequest(message),
            B::Storage(error) => Self::Storage(error),
        }
    }
}

impl RelayError {
    /// The stable wire code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MalformedFrame(_) => ErrorCode::MalformedFrame,
            Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Self::NotAuthenticated => ErrorCode::NotAuthenticated,
            Self::AlreadyAuthenticated => ErrorCode::InvalidRequest,
            Self::AuthFailed { .. } => ErrorCode::AuthFailed,
            Self::TooManyAuthAttempts => ErrorCode::TooManyAttempts,
            Self::UnknownDevice => ErrorCode::UnknownDevice,
            Self::UnknownAccount => ErrorCode::UnknownAccount,
            Self::DeviceListMismatch { .. } => ErrorCode::DeviceListMismatch,
            Self::StaleDeviceList { .. } => ErrorCode::StaleDeviceList,
            Self::BadSignature(_) => ErrorCode::BadSignature,
            Self::QueueFull { .. } => ErrorCode::QueueFull,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Blocked => ErrorCode::Blocked,
            Self::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Self::TooManyCodeAttempts => ErrorCode::TooManyAttempts,
            Self::CodeExpired => ErrorCode::CodeExpired,
            Self::WrongCode { .. } => ErrorCode::WrongCode,
            Self::NameTaken(_) => ErrorCode::NameTaken,
            Self::AccountKind(_) => ErrorCode::AccountKind,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::BlobTooLarge(_) => ErrorCode::BlobTooLarge,
            Self::BlobNotFound(_) => ErrorCode::BlobNotFound,
            Self::PhoneRequired => ErrorCode::PhoneRequired,
            Self::WindowClosed(_) => ErrorCode::WindowClosed,
            Self::NoConsent(_) => ErrorCode::NoConsent,
            Self::TemplateNotApproved(_) => ErrorCode::TemplateNotApproved,
            Self::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            Self::TierLimit { .. } => ErrorCode::QuotaExceeded,
            Self::StaleConsent { .. } => ErrorCode::StaleConsent,
            Self::BadDeliverySignature(_) => ErrorCode::BadDeliverySignature,
            Self::FrankingRequired { .. } => ErrorCode::FrankingRequired,
            Self::ReportRefused(_) => ErrorCode::ReportRefused,
            Self::NotASubscriber(_) => ErrorCode::NotASubscriber,
            Self::StatusNotFound => ErrorCode::StatusNotFound,
            Self::Storage(StorageError::Full) => ErrorCode::StorageFull,
            Self::Storage(_) => ErrorCode::Internal,
        }
    }

    /// Log what a peer must not see (a storage error's detail), once, where
    /// the refusal is sent.
    pub fn log_detail(&self) {
        match self {
            Self::Storage(StorageError::Full) => {
                tracing::warn!("the disk is full; a send was refused");
            }
            Self::Storage(error) => {
                tracing::error!(%error, "storage failure; the request was refused");
            }
            _ => {}
        }
    }

    /// The error frame answering request `request_id`.
    pub fn to_frame(&self, request_id: u64) -> wire::ServerFrame {
        let device_list = match self {
            Self::DeviceListMismatch { current } => Some((**current).clone()),
            _ => None,
        };
        let retry_after_ms = match self {
            Self::RateLimited { retry_after_ms, .. } => *retry_after_ms,
            Self::TierLimit { retry_after_ms, .. } => *retry_after_ms,
            Self::Storage(StorageError::Full) => STORAGE_FULL_RETRY_MS,
            _ => 0,
        };
        wire::ServerFrame {
            request_id,
            body: Some(wire::server_frame::Body::Error(wire::Error {
                code: self.code() as i32,
                message: self.to_string(),
                device_list,
                retry_after_ms,
            })),
        }
    }
}

/// What a sender is told to wait before retrying a send refused because
/// the relay's disk is full.
pub const STORAGE_FULL_RETRY_MS: u64 = 10_000;

/// What a peer is told about a storage failure: fixed text, no detail.
fn storage_message(error: &StorageError) -> &'static str {
    match error {
        StorageError::Full => {
            "the relay's disk is full; new messages are refused until its operator frees space, \
             retry later (acks still work)"
        }
        _ => "internal storage error; the request was not applied, retry later",
    }
}

/// Shorthand for an invalid-request error.
pub(crate) fn invalid(what: impl Into<String>) -> RelayError {
    RelayError::InvalidRequest(what.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Item 15: storage errors reached peers verbatim (paths, OS errors).
    #[test]
    fn storage_errors_reach_peers_as_a_fixed_message() {
        let error = RelayError::Storage(StorageError::Backend(
            "/var/lib/comptoir/db/blobs/17: No space left on device (os error 28)".into(),
        ));
        let frame = error.to_frame(7);
        let Some(wire::server_frame::Body::Error(body)) = frame.body else {
            panic!("an error frame");
        };
        assert_eq!(body.code, ErrorCode::Internal as i32);
        assert!(!body.message.contains("/var/lib"), "{}", body.message);
        assert!(!body.message.contains("os error"), "{}", body.message);
        assert!(body.message.contains("retry"), "{}", body.message);
    }

    /// Item 3: a send refused on a full disk gets its own code and a
    /// wait, not "internal".
    #[test]
    fn a_full_disk_is_its_own_error_with_a_wait() {
        let frame = RelayError::Storage(StorageError::Full).to_frame(3);
        let Some(wire::server_frame::Body::Error(body)) = frame.body else {
            panic!("an error frame");
        };
        assert_eq!(body.code, ErrorCode::StorageFull as i32);
        assert_eq!(body.retry_after_ms, STORAGE_FULL_RETRY_MS);
        assert!(body.message.contains("disk is full"), "{}", body.message);
        assert!(body.message.contains("retry later"), "{}", body.message);
    }
}
