//! Typed errors of the client library. Each variant says what happened and
//! what to do about it; the CLI maps them once to exit codes.

use std::path::PathBuf;

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::wire::ErrorCode;

/// Result alias for the client library.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The data directory holds no store yet.
    #[error("no Comptoir account in {}; create one there first", dir.display())]
    NotInitialized {
        /// The data directory.
        dir: PathBuf,
    },
    /// `init` on a directory that already holds a store.
    #[error("{} already holds a Comptoir account; choose another data directory", dir.display())]
    AlreadyInitialized {
        /// The data directory.
        dir: PathBuf,
    },
    /// The passphrase does not open the store.
    #[error("wrong passphrase: it does not open this store (nothing was changed)")]
    WrongPassphrase,
    /// Another process has the store open.
    #[error("the store in {} is in use by another program; stop it first", dir.display())]
    StoreLocked {
        /// The data directory.
        dir: PathBuf,
    },
    /// The store's files are damaged or were altered.
    #[error("the local store is corrupt ({0}); restore the data directory from a backup")]
    CorruptStore(String),
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What the client was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The embedded database failed.
    #[error("local database error: {0}")]
    Database(#[from] sled::Error),
    /// Deriving the store key from the passphrase failed.
    #[error("passphrase key derivation failed: {0}")]
    Kdf(String),
    /// A cryptographic or decoding check failed.
    #[error("protocol error: {0}")]
    Protocol(#[from] comptoir_protocol::Error),
    /// The relay could not be reached.
    #[error(
        "cannot reach the relay at {url}: {reason}; check the relay address and that the relay runs"
    )]
    Connect {
        /// The relay URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The connection to the relay ended.
    #[error("the relay closed the connection ({0}); reconnect")]
    ConnectionClosed(String),
    /// No connection is open (call `connect` first).
    #[error("not connected to a relay")]
    NotConnected,
    /// The relay did not answer in time.
    #[error("the relay did not answer {0} in time; retry")]
    Timeout(&'static str),
    /// The relay sent something the protocol does not allow here.
    #[error("unexpected reply from the relay: {0}")]
    UnexpectedFrame(String),
    /// The recipient has blocked this account; the relay refused the message.
    #[error("{recipient} has blocked you: the relay refused the message")]
    Blocked {
        /// Who refused.
        recipient: AccountId,
    },
    /// The recipient's device list changed; the relay attached the current
    /// one (handled inside the client by encrypting again).
    #[error("the recipient's devices changed; encrypt again for the attached list")]
    DeviceListMismatch {
        /// The current signed list, as the relay sent it.
        current: Box<comptoir_protocol::proto::wire::SignedDeviceList>,
    },
    /// The relay refused a request with a typed error. Shown as a
    /// sentence for the code (see [`refusal`]), with the relay's own words
    /// where they add a detail (attempts left, when to retry).
    #[error("{}", refusal(*code, message))]
    Relay {
        /// The stable error code.
        code: ErrorCode,
        /// The relay's explanation.
        message: String,
    },
    /// The account is not registered on the relay.
    #[error("this device is not registered on the relay; register the account first")]
    NotRegistered,
    /// Only the account's first device holds the account key.
    #[error("only the account's first device can add or remove devices; run this there")]
    NotPrimaryDevice,
    /// This device is not linked to an account yet.
    #[error(
        "this device is not linked yet; finish linking with the approval the account's first device gave"
    )]
    NotLinked,
    /// A link code or approval does not parse.
    #[error("invalid link code: {0}")]
    BadLinkCode(String),
    /// No account has this phone number (or it is not discoverable) or
    /// this business name ([`crate::Client::lookup`]).
    #[error(
        "no account has the phone number or business name {0:?} (a phone number is found only if its owner made it discoverable); check it"
    )]
    NotFound(String),
    /// The relay no longer lists this device among its account's devices:
    /// the account's first device removed it (or the relay lost the
    /// account). This store cannot connect again.
    #[error(
        "this device (device {device}) is no longer one of its account's devices on the relay: it was removed from the account, or the relay lost the account"
    )]
    DeviceRemoved {
        /// This device's id.
        device: u32,
    },
    /// No contact has this name.
    #[error("no contact named {0:?} and not an account id; add the contact first")]
    UnknownContact(String),
    /// A contact name already names another account.
    #[error("the name {name:?} already names account {account}; nothing changed")]
    ContactExists {
        /// The name.
        name: String,
        /// The account it names.
        account: AccountId,
    },
    /// The relay knows no account with this id.
    #[error("the relay knows no account {0}; check the id (nothing was added)")]
    NoSuchAccount(AccountId),
    /// No message with this id waits in the outbox.
    #[error(
        "message {0} is not waiting to be sent (already sent, cancelled, or never written here)"
    )]
    NotQueued(String),
    /// A text is longer than one message may be.
    #[error(
        "the text is {len} bytes and a message holds at most {max}: split it into shorter messages"
    )]
    TextTooLong {
        /// The text's length in bytes.
        len: usize,
        /// The longest message, in bytes.
        max: usize,
    },
    /// A peer's account key changed since it was first seen.
    #[error(
        "the identity of {account} changed since you first talked: compare the new safety number with the contact, then accept the change"
    )]
    IdentityChanged {
        /// The peer.
        account: AccountId,
    },
    /// Nothing is known about this peer yet.
    #[error("no keys known for {0} yet; send it a message or connect to fetch them")]
    UnknownPeer(AccountId),
    /// The client this handle sends for was closed.
    #[error("the client was closed; open it again and take a new sender")]
    Closed,
    /// The client could not close its store: a sender handle kept using it.
    #[error(
        "the store is still in use by a sender handle; stop the tasks sending, then close again"
    )]
    InUse,
    /// A bad argument from the user.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The message cannot be reported: it is not a message this device
    /// received, or it was not franked (an older sender).
    #[error(
        "message {0} cannot be reported: it is not a message this device received, or its sender did not frank it; list messages with `comptoir history`"
    )]
    NotReportable(String),
    /// No operator key is pinned yet, so a report has no one to be sealed to.
    #[error("no operator key is pinned yet: connect to the relay once, then report again")]
    NoOperatorKey,
    /// A template that breaks the template rules (length, placeholders,
    /// buttons); nothing was sent.
    #[error("the template cannot be submitted: {0}")]
    InvalidTemplate(#[from] comptoir_protocol::template::TemplateError),
    /// The template is not approved for this business (unknown, pending,
    /// rejected or revoked); nothing was sent.
    #[error("template {0} is not approved for this business; submit it and wait for the operator")]
    TemplateNotApproved(String),
    /// The parameters do not make an instance of the template; nothing was
    /// sent.
    #[error("these values do not fit the template: {0}")]
    InvalidInstance(#[from] comptoir_protocol::template::InstanceError),
    /// A quick reply to a message that is not a checked template message
    /// from that business.
    #[error("message {0} is not a template message from this business; nothing to reply to")]
    NotATemplateMessage(String),
    /// The chosen button is not a quick reply of the message's template.
    #[error("that button cannot be chosen: {0}")]
    InvalidReply(#[from] comptoir_protocol::template::ReplyError),
    /// The interactive message breaks a limit (too many buttons or rows,
    /// a title too long...); nothing was sent.
    #[error("the interactive message cannot be sent: {0}")]
    InvalidInteractive(#[from] comptoir_protocol::interactive::InteractiveError),
    /// A choice in a message that is not an interactive message received
    /// from that peer.
    #[error("message {0} is not an interactive message from this business; nothing to choose from")]
    NotAnInteractiveMessage(String),
    /// The pick is not one of the message's buttons or rows; nothing was
    /// sent.
    #[error("that cannot be chosen: {0}")]
    InvalidChoice(#[from] comptoir_protocol::interactive::ChoiceError),
    /// A bill does not check: the line named was dropped, reordered,
    /// altered, added, badly signed or priced off the rate card.
    #[error("the bill does not check: {0}; keep this output and contact the operator")]
    Bill(#[from] comptoir_protocol::BillError),
    /// A Status post refused before anything was uploaded or stored (a
    /// video too long, an unsupported file), or one not found.
    #[error(transparent)]
    Status(#[from] crate::status::StatusError),
}

/// A relay refusal in words: what happened and what to do, then the
/// relay's own words for the codes whose message carries a detail.
pub fn refusal(code: ErrorCode, relay_says: &str) -> String {
    let (sentence, detail) = match code {
        ErrorCode::MalformedFrame | ErrorCode::FrameTooLarge | ErrorCode::UnsupportedVersion => (
            "the relay could not read the request (this client and the relay may be \
             incompatible versions)",
            false,
        ),
        ErrorCode::NotAuthenticated | ErrorCode::AuthFailed => (
            "the relay did not accept this device's sign-in; connect again",
            false,
        ),
        ErrorCode::UnknownDevice => (
            "the relay does not list this device among its account's devices",
            false,
        ),
        ErrorCode::UnknownAccount => ("the relay knows no such account; check it", false),
        ErrorCode::DeviceListMismatch | ErrorCode::StaleDeviceList => {
            ("the account's devices changed meanwhile; try again", false)
        }
        ErrorCode::BadSignature | ErrorCode::BadDeliverySignature => {
            ("the relay refused a signature of this device", false)
        }
        ErrorCode::QueueFull => (
            "the recipient has too many messages waiting; try again later",
            false,
        ),
        ErrorCode::RateLimited => ("too many requests; wait, then try again", true),
        ErrorCode::Blocked => ("the recipient has blocked you", false),
        ErrorCode::InvalidRequest => ("the relay refused the request as invalid", true),
        ErrorCode::TooManyAttempts => (
            "too many wrong codes for this number; request a new code",
            false,
        ),
        ErrorCode::CodeExpired => (
            "no valid code for this number (it expired, or none was requested); request a new code",
            false,
        ),
        ErrorCode::WrongCode => ("wrong code", true),
        ErrorCode::Internal => ("the relay failed; try again later", false),
        ErrorCode::ShuttingDown => ("the relay is shutting down; try again shortly", false),
        ErrorCode::NoConsent => (
            "the customer has not consented to templates of this category from this business",
            false,
        ),
        ErrorCode::WindowClosed => (
            "the 24-hour reply window is closed: only templates the customer consented to can \
             be sent",
            false,
        ),
        ErrorCode::TemplateNotApproved => ("the template is not approved", false),
        ErrorCode::QuotaExceeded => ("this account's sending quota is used up for now", true),
        ErrorCode::NameTaken => (
            "the business name is taken, or this account already holds another one",
            false,
        ),
        ErrorCode::AccountKind => (
            "this kind of account cannot do that: only a business account may claim a business \
             name, and a business does not start conversations",
            false,
        ),
        ErrorCode::StorageFull => ("the relay's disk is full; try again later", false),
        ErrorCode::BlobTooLarge => ("the relay refused the attachment as too large", true),
        ErrorCode::BlobNotFound => (
            "the relay holds no such attachment (it expired, or was never uploaded)",
            false,
        ),
        ErrorCode::PhoneRequired => (
            "the relay requires a verified phone number first: verify one, then try again",
            false,
        ),
        ErrorCode::StaleConsent => (
            "a newer consent was given meanwhile; read the consents again, then retry",
            false,
        ),
        ErrorCode::FrankingRequired => (
            "the relay requires every business message to be franked; update this client",
            false,
        ),
        ErrorCode::ReportRefused => ("the relay did not take the report", true),
        ErrorCode::NotASubscriber => (
            "that account does not follow this Status: a business's goes to customers who \
             consented to Status, a person's to the accounts it has a conversation with",
            false,
        ),
        ErrorCode::StatusNotFound => (
            "the relay holds no such Status post (it expired after 24 hours, or was deleted)",
            false,
        ),
        ErrorCode::Unspecified => ("the relay refused the request", true),
    };
    if detail && !relay_says.is_empty() {
        format!("{sentence} (the relay says: {relay_says})")
    } else {
        sentence.to_string()
    }
}

impl ClientError {
    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library is embedded by programs other than the `comptoir` CLI:
    /// its messages say what to do without naming that CLI's commands or
    /// flags (the CLI adds its own hint).
    #[test]
    fn messages_name_no_cli_command_or_flag() {
        let dir = PathBuf::from("/data");
        let account = AccountId::from_bytes(&[7; 16]).unwrap_or_else(|_| unreachable!());
        let errors = [
            ClientError::NotInitialized { dir: dir.clone() },
            ClientError::AlreadyInitialized { dir: dir.clone() },
            ClientError::StoreLocked { dir },
            ClientError::Connect {
                url: "ws://relay.example:80".into(),
                reason: "refused".into(),
            },
            ClientError::NotRegistered,
            ClientError::NotPrimaryDevice,
            ClientError::NotLinked,
            ClientError::UnknownContact("bob".into()),
            ClientError::NotFound("+447700900123".into()),
            ClientError::DeviceRemoved { device: 2 },
            ClientError::IdentityChanged { account },
            ClientError::UnknownPeer(account),
            ClientError::ContactExists {
                name: "bob".into(),
                account,
            },
            ClientError::NoSuchAccount(account),
            ClientError::NotQueued("00".into()),
            ClientError::TextTooLong {
                len: 9000,
                max: 8192,
            },
            ClientError::Closed,
            ClientError::InUse,
        ]
        .into_iter()
        .chain(
            (0..=29)
                .filter_map(|code| ErrorCode::try_from(code).ok())
                .map(|code| ClientError::Relay {
                    code,
                    message: "detail".into(),
                }),
        );
        for error in errors {
            let text = error.to_string();
            for cli in ["comptoir ", "`", "--"] {
                assert!(!text.contains(cli), "{text:?} names {cli:?}");
            }
            // No wire or Rust name of a refusal code.
            if let ClientError::Relay { code, .. } = &error {
                for internal in [format!("{code:?}"), code.as_str_name().to_string()] {
                    assert!(!text.contains(&internal), "{text:?} names {internal}");
                }
            }
        }
    }
}
