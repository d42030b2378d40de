//! `Register` (create an account with its first signed device list) and
//! `AuthResponse` (prove a device key by signing the connection's fresh
//! challenge nonce).

use std::sync::atomic::Ordering::Relaxed;

use comptoir_protocol::proto::wire::{self, AccountKind, server_frame::Body};
use comptoir_protocol::{AccountKey, DeviceList, auth_payload, register_payload};

use super::{account_field, protocol_refusal, stored_list};
use crate::connection::close;
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::hub::Posted;
use crate::policy;
use crate::session::{Device, Reply, Session};
use crate::storage::{AccountRecord, Created, Directory, Keys, Kind, Mailbox};

/// "customer" or "business".
pub(crate) fn kind_name(kind: AccountKind) -> &'static str {
    match kind {
        AccountKind::Business => "business",
        AccountKind::Customer | AccountKind::Unspecified => "customer",
    }
}

/// Create the account. Registration does not authenticate the connection.
pub(crate) async fn register<S: Directory>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::Register,
) -> Result<Reply, RelayError> {
    let account = account_field("account_id", &request.account_id)?;
    let account_key = AccountKey::from_bytes(&request.account_key)
        .map_err(|e| protocol_refusal("account key", e))?;
    let list = request
        .device_list
        .ok_or_else(|| invalid("register needs the first signed device list"))?;
    let verified = DeviceList::verify(&list, Some(&account_key))
        .map_err(|e| protocol_refusal("device list", e))?;
    if verified.account_id != account {
        return Err(invalid("the device list names another account"));
    }
    let kind = match AccountKind::try_from(request.kind) {
        Ok(AccountKind::Business) => AccountKind::Business,
        Ok(AccountKind::Customer | AccountKind::Unspecified) => AccountKind::Customer,
        Err(_) => return Err(invalid(format!("unknown account kind {}", request.kind))),
    };
    // The signature covers the kind: a registration whose kind was changed
    // on the way is refused here, before anything is stored.
    account_key
        .verify(
            "registration",
            &register_payload(&account, kind, &session.nonce),
            &request.signature,
        )
        .map_err(|e| {
            protocol_refusal(
                "registration (sign the current challenge nonce and the account kind)",
                e,
            )
        })?;
    let relay = &session.relay;
    // A relay-wide refusal first, spending nothing (so a flood elsewhere
    // does not use up this network's budget); then per network, so one
    // network's refused attempts do not spend the relay-wide budget.
    // (Registrations arriving at once may all pass the look and one be
    // refused relay-wide after taking its network's token: a loss bounded
    // by how many arrive together.)
    if let Err(retry_after_ms) = relay.registration_limiter.peek(&()) {
        return Err(RelayError::RateLimited {
            scope: "new accounts on this relay",
            retry_after_ms,
        });
    }
    let prefix = crate::limits::prefix_key(session.peer, 24, 48);
    if let Err(retry_after_ms) = relay.registration_prefix_limiter.check(&prefix) {
        return Err(RelayError::RateLimited {
            scope: "new accounts from this network",
            retry_after_ms,
        });
    }
    if let Err(retry_after_ms) = relay.registration_limiter.check(&()) {
        return Err(RelayError::RateLimited {
            scope: "new accounts on this relay",
            retry_after_ms,
        });
    }
    let record = AccountRecord {
        kind: match kind {
            AccountKind::Business => Kind::Business,
            AccountKind::Customer | AccountKind::Unspecified => Kind::Customer,
        },
        created_at_ms: relay.clock.now_ms(),
        ..AccountRecord::default()
    };
    let store = &relay.store;
    let devices = verified.devices.len();
    let list = stored_list(&list, verified);
    match store.create_account(&list, &record).await? {
        Created::New => {
            tracing::info!(%account, devices, ?kind, "account registered");
        }
        // The same registration again (a lost reply): fine if it states
        // the same kind, which never changes.
        Created::Exists(existing) if existing.signed == list.signed => {
            let stored = store
                .account_record(account)
                .await?
                .map_or(AccountKind::Customer, |r| policy::kind_of(&r));
            if stored != kind {
                return Err(RelayError::AccountKind(format!(
                    "this account is registered as a {}; an account's kind never changes",
                    kind_name(stored)
                )));
            }
        }
        Created::Exists(_) => {
            return Err(invalid(
                "this account id is already registered; generate a new random id",
            ));
        }
        // An expired account's: never given out again.
        Created::Retired => {
            return Err(invalid(
                "this account id is not available; generate a new random id",
            ));
        }
    }
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::Registered(wire::Registered {
            account_id: account.to_vec(),
        }),
    )))
}

/// Check the challenge signature and bind the connection to the device.
pub(crate) async fn authenticate<S: Directory + Keys + Mailbox>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::AuthResponse,
) -> Result<Reply, RelayError> {
    let relay = session.relay.clone();
    let account =
        account_field("account_id", &request.account_id).map_err(|_| RelayError::UnknownDevice)?;
    let list = relay
        .store
        .device_list(account)
        .await?
        .ok_or(RelayError::UnknownDevice)?;
    let identity = *list
        .list
        .device(request.device_id)
        .ok_or(RelayError::UnknownDevice)?;
    // The signature must cover one of this relay's own origins.
    let signed_for_us = relay.config.public_origins.iter().any(|origin| {
        let payload = auth_payload(&session.nonce, &account, request.device_id, origin);
        identity
            .verify("auth challenge", &payload, &request.signature)
            .is_ok()
    });
    if !signed_for_us {
        session.auth_failures += 1;
        // A fresh nonce for the next attempt: an old response never works.
        session.nonce = rand::random();
        let limit = relay.config.limits.auth_attempts;
        tracing::info!(connection = session.id, %account, device = request.device_id, failures = session.auth_failures, "authentication failed");
        if session.auth_failures >= limit {
            return Err(RelayError::TooManyAuthAttempts);
        }
        let error = RelayError::AuthFailed {
            remaining: limit - session.auth_failures,
        };
        relay.metrics.refused(error.code());
        return Ok(Reply::Frames(vec![
            crate::session::EncodeFrame::encode_frame(&error.to_frame(request_id)),
            session.challenge(),
        ]));
    }
    session.nonce = rand::random();
    // The first login takes the account off the expiry of accounts that
    // never authenticated.
    relay.store.mark_authenticated(account).await?;
    let device = request.device_id;
    let (presence, replaced) = relay.hub.join(account, device, session.id);
    // Read the list again now that the device is reachable through the hub:
    // a removal either finished before this read (refused here) or posts
    // its close to this presence (a removal that read the hub before the
    // join stored its list before this read). Either way a removed device
    // is never left authenticated.
    let still_listed = match relay.store.device_list(account).await {
        Ok(Some(now)) => now
            .list
            .device(device)
            .is_some_and(|key| key.as_bytes() == identity.as_bytes()),
        Ok(None) => false,
        Err(error) => {
            relay.hub.leave(account, device, session.id);
            if let Some(old) = replaced {
                // Out of the hub now: it would miss wakes and closes.
                old.post(Posted::Close(
                    close::REPLACED,
                    "replaced by a newer connection",
                ));
            }
            return Err(error.into());
        }
    };
    if !still_listed {
        relay.hub.leave(account, device, session.id);
        if let Some(old) = replaced {
            // The removal may have posted its close to this connection
            // instead: pass it on.
            old.post(Posted::Close(close::DEVICE_REMOVED, "device removed"));
        }
        return Err(RelayError::UnknownDevice);
    }
    if let Some(old) = replaced {
        old.post(Posted::Close(
            close::REPLACED,
            "replaced by a newer connection",
        ));
        tracing::debug!(%account, device, "device reconnected; older connection replaced");
    }
    let queued = relay.store.queued_count(account, device).await?;
    let kind = relay
        .store
        .account_record(account)
        .await?
        .map_or(AccountKind::Customer, |r| policy::kind_of(&r));
    let one_time_prekeys = relay.store.one_time_prekey_count(account, device).await?;
    session.device = Some(Device {
        account,
        device,
        identity,
        presence,
        cursor: None,
        in_flight: 0,
        receipt_cursor: None,
        receipts_in_flight: 0,
        mail_held: false,
        receipts_held: false,
    });
    relay.metrics.authenticated_open.fetch_add(1, Relaxed);
    relay.metrics.notify_change();
    tracing::debug!(connection = session.id, %account, device, queued, "authenticated");
    let mut frames = vec![frame::server(
        request_id,
        Body::AuthOk(wire::AuthOk {
            queued,
            one_time_prekeys,
            kind: kind as i32,
            operator_key: relay.operator_key.to_bytes().to_vec(),
        }),
    )];
    if one_time_prekeys < relay.config.limits.prekeys_low_threshold {
        frames.push(frame::server(
            0,
            Body::PrekeysLow(wire::PreKeysLow {
                remaining: one_time_prekeys,
            }),
        ));
    }
    Ok(Reply::Frames(frames))
}
