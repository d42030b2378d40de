//! One file per request: parse and check it, apply it, build the reply.
//! Each handler returns a typed [`RelayError`](crate::error::RelayError)
//! on refusal and changes nothing stored in that case.

pub(crate) mod ack;
pub(crate) mod auth;
pub(crate) mod block;
pub(crate) mod device_list;
pub(crate) mod name;
pub(crate) mod phone;
pub(crate) mod prekeys;
pub(crate) mod send;

use comptoir_protocol::AccountId;

use crate::error::{RelayError, invalid};
use crate::session::{Device, Session};

/// Parse a 16-byte account id field.
pub(crate) fn account_field(field: &'static str, bytes: &[u8]) -> Result<AccountId, RelayError> {
    AccountId::from_bytes(bytes)
        .map_err(|_| invalid(format!("{field} must be 16 bytes, got {}", bytes.len())))
}

/// The authenticated device (dispatch only calls handlers after auth).
pub(crate) fn device<S>(session: &Session<S>) -> Result<&Device, RelayError> {
    session.device.as_ref().ok_or(RelayError::NotAuthenticated)
}

/// Map a protocol verification error to a relay refusal.
pub(crate) fn protocol_refusal(what: &str, error: comptoir_protocol::Error) -> RelayError {
    use comptoir_protocol::Error as E;
    match error {
        E::BadSignature { .. } | E::InvalidKey { .. } | E::IdentityMismatch => {
            RelayError::BadSignature(format!("{what}: {error}"))
        }
        E::StaleDeviceList { have, got } => RelayError::StaleDeviceList { have, got },
        other => invalid(format!("{what}: {other}")),
    }
}
