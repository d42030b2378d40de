//! `PublishProfile` / `GetProfile`: a business publishes its profile,
//! signed by its account key; anyone reads a business's profile with the
//! operator's certificate and revocation, if any, and decides for itself
//! whether to show it as verified (`comptoir_protocol::business::verified_name`).
//! The operator certifies through the admin API (`relay admin business`).

use comptoir_protocol::business::{BusinessProfile, verify_profile};
use comptoir_protocol::business_wire::{certificate_to_wire, revocation_to_wire};
use comptoir_protocol::json_error::describe_json_error;
use comptoir_protocol::keys::SIGNATURE_LEN;
use comptoir_protocol::proto::wire::{self, server_frame::Body};

use super::{account_field, device};
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::session::{Reply, Session};
use crate::storage::{Businesses, Directory, StoredBusiness};

/// Longest profile JSON accepted (a valid profile is far smaller).
pub(crate) const MAX_PROFILE_JSON_LEN: usize = 8 * 1024;
/// Attempts at the read-modify-write of a business record under races.
const ATTEMPTS: usize = 8;

pub(crate) async fn publish<S: Directory + Businesses>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::PublishProfile,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let account = device(session)?.account;
    if request.profile_json.len() > MAX_PROFILE_JSON_LEN {
        return Err(invalid(format!(
            "the profile is {} bytes of JSON; at most {MAX_PROFILE_JSON_LEN}",
            request.profile_json.len()
        )));
    }
    let profile: BusinessProfile = serde_json::from_str(&request.profile_json).map_err(|e| {
        invalid(format!(
            "the profile is not valid profile JSON: {}",
            describe_json_error(&e)
        ))
    })?;
    profile
        .validate()
        .map_err(|e| invalid(format!("the profile breaks a rule: {e}")))?;
    if profile.account != account {
        return Err(invalid(
            "the profile's account must be the publishing account",
        ));
    }
    let signature: [u8; SIGNATURE_LEN] = request
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| RelayError::BadSignature("a profile signature is 64 bytes".into()))?;
    super::require_business(&relay.store, account, "publishes a profile").await?;
    let list = relay
        .store
        .device_list(account)
        .await?
        .ok_or(RelayError::UnknownAccount)?;
    verify_profile(&list.list.account_key, &profile, &signature).map_err(|_| {
        RelayError::BadSignature(
            "the profile signature does not verify with this account's key".into(),
        )
    })?;
    for _ in 0..ATTEMPTS {
        let old = relay.store.business(account).await?;
        let new = StoredBusiness {
            profile: profile.clone(),
            profile_signature: signature,
            certificate: old.as_ref().and_then(|o| o.certificate.clone()),
            revocation: old.as_ref().and_then(|o| o.revocation.clone()),
        };
        if relay
            .store
            .replace_business(account, old.as_ref(), &new)
            .await?
        {
            tracing::debug!(%account, "business profile published");
            return Ok(Reply::Frame(frame::ok(request_id)));
        }
    }
    Err(RelayError::RateLimited {
        scope: "profile",
        retry_after_ms: 100,
    })
}

pub(crate) async fn get<S: Directory + Businesses>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::GetProfile,
) -> Result<Reply, RelayError> {
    device(session)?;
    let account = account_field("account", &request.account)?;
    let profile = match session.relay.store.business(account).await? {
        None => wire::Profile::default(),
        Some(stored) => wire::Profile {
            profile_json: serde_json::to_string(&stored.profile).map_err(|e| {
                RelayError::Storage(crate::storage::StorageError::Backend(format!(
                    "profile JSON: {e}"
                )))
            })?,
            signature: stored.profile_signature.to_vec(),
            certificate: stored
                .certificate
                .as_ref()
                .map(|(c, s)| certificate_to_wire(c, s)),
            revocation: stored
                .revocation
                .as_ref()
                .map(|(r, s)| revocation_to_wire(r, s)),
        },
    };
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::Profile(profile),
    )))
}
