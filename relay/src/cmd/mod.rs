//! One file per request: parse and check it, apply it, build the reply.
//! Each handler returns a typed [`RelayError`](crate::error::RelayError)
//! on refusal and changes nothing stored in that case.

pub(crate) mod ack;
pub(crate) mod auth;
pub(crate) mod bill;
pub(crate) mod blob;
pub(crate) mod block;
pub(crate) mod business;
pub(crate) mod consent;
pub(crate) mod consent_request;
pub(crate) mod device_list;
pub(crate) mod lease;
pub(crate) mod name;
pub(crate) mod phone;
pub(crate) mod prekeys;
pub(crate) mod report;
pub(crate) mod send;
pub(crate) mod status;
pub(crate) mod template;

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::wire::SignedDeviceList;
use prost::Message;

use crate::error::{RelayError, invalid};
use crate::session::{Device, Session};
use crate::storage::{StorageError, StoredDeviceList};

/// A stored device list as the wire carries it (the bytes the account
/// signed and published).
pub(crate) fn wire_list(list: &StoredDeviceList) -> Result<SignedDeviceList, RelayError> {
    SignedDeviceList::decode(list.signed.as_slice())
        .map_err(|_| RelayError::Storage(StorageError::Corrupt("accounts")))
}

/// A device list verified by its handler, as storage keeps it.
pub(crate) fn stored_list(
    signed: &SignedDeviceList,
    verified: comptoir_protocol::DeviceList,
) -> StoredDeviceList {
    StoredDeviceList {
        signed: signed.encode_to_vec(),
        list: verified,
    }
}

/// Parse a 16-byte account id field.
pub(crate) fn account_field(field: &'static str, bytes: &[u8]) -> Result<AccountId, RelayError> {
    AccountId::from_bytes(bytes)
        .map_err(|_| invalid(format!("{field} must be 16 bytes, got {}", bytes.len())))
}

/// Refuse with `ACCOUNT_KIND` unless `account` is a business; `doing`
/// completes "only a business account …".
pub(crate) async fn require_business<S: crate::storage::Directory>(
    store: &S,
    account: AccountId,
    doing: &str,
) -> Result<(), RelayError> {
    let record = store.account_record(account).await?.unwrap_or_default();
    if record.kind != crate::storage::Kind::Business {
        return Err(RelayError::AccountKind(format!(
            "only a business account {doing}"
        )));
    }
    Ok(())
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
