//! `RequestCode`, `VerifyCode` and `Lookup`: bind a verified E.164 number
//! to the authenticated account; resolve it only if discoverable. `Lookup`
//! also resolves business names (claimed with `ClaimName`, see
//! [`super::name`]).

use comptoir_protocol::AccountId;
use comptoir_protocol::handle::NAME_RULES;
use comptoir_protocol::proto::wire::{self, server_frame::Body};

use super::device;
use super::name::check_name;
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::hub::Posted;
use crate::phone::is_e164;
use crate::session::{Reply, Session};
use crate::storage::Directory;

fn check_number(number: &str) -> Result<(), RelayError> {
    if is_e164(number) {
        Ok(())
    } else {
        Err(invalid(
            "phone number must be E.164: '+', country code and number, digits only (e.g. +447700900123)",
        ))
    }
}

pub(crate) async fn request_code<S: Directory>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::RequestCode,
) -> Result<Reply, RelayError> {
    let account = device(session)?.account;
    check_number(&request.phone_number)?;
    let code = session.relay.codes.issue(&request.phone_number, account)?;
    session
        .relay
        .code_sender
        .send_code(&request.phone_number, &code);
    Ok(Reply::Frame(frame::ok(request_id)))
}

pub(crate) async fn verify_code<S: Directory>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::VerifyCode,
) -> Result<Reply, RelayError> {
    let account = device(session)?.account;
    check_number(&request.phone_number)?;
    session
        .relay
        .codes
        .verify(&request.phone_number, account, &request.code)?;
    let relay = session.relay.clone();
    let previous = relay.store.lookup_phone(&request.phone_number).await?;
    relay
        .store
        .bind_phone(&request.phone_number, account, request.discoverable)
        .await?;
    tracing::info!(%account, discoverable = request.discoverable, "phone number verified");
    // Proving the code is what owns a number: an earlier holder loses it,
    // and its connected devices are told.
    if let Some((holder, _)) = previous
        && holder != account
    {
        tracing::info!(%holder, %account, "phone number moved to another account");
        if let Some(list) = relay.store.device_list(holder).await? {
            for device_id in list.list.device_ids() {
                relay.hub.post(
                    holder,
                    device_id,
                    Posted::Frame(frame::server(
                        0,
                        Body::PhoneNumberReleased(wire::PhoneNumberReleased {
                            phone_number: request.phone_number.clone(),
                        }),
                    )),
                );
            }
        }
    }
    Ok(Reply::Frame(frame::ok(request_id)))
}

fn found(request_id: u64, account: AccountId) -> Reply {
    Reply::Frame(frame::server(
        request_id,
        Body::LookupResult(wire::LookupResult {
            account_id: account.to_vec(),
        }),
    ))
}

/// Resolve a discoverable phone number or a claimed business name.
pub(crate) async fn lookup<S: Directory>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::Lookup,
) -> Result<Reply, RelayError> {
    device(session)?;
    if !is_e164(&request.handle) {
        let name = check_name(&request.handle).map_err(|_| {
            invalid(format!(
                "a handle is an E.164 phone number (+447700900123) or a business name; {NAME_RULES}"
            ))
        })?;
        return match session.relay.store.lookup_name(&name).await? {
            Some(account) => Ok(found(request_id, account)),
            None => Err(RelayError::UnknownAccount),
        };
    }
    match session.relay.store.lookup_phone(&request.handle).await? {
        Some((account, true)) => Ok(found(request_id, account)),
        // Not discoverable looks exactly like unknown.
        _ => Err(RelayError::UnknownAccount),
    }
}
