//! `ClaimName`: bind a business name to the authenticated account, first
//! come first served, one name per account, business accounts only. Names
//! are unverified handles; but a verified business's certified display
//! name reserves every handle confusable with it (UTS #39 skeletons,
//! `comptoir_protocol::confusable`) for that business alone. `Lookup`
//! resolves them (see [`super::phone::lookup`]).

use comptoir_protocol::normalize_business_name;
use comptoir_protocol::proto::wire::{self, AccountKind};

use super::device;
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::policy;
use crate::session::{Reply, Session};
use crate::storage::{Businesses, Directory, NameClaim};

/// Normalise a business name, or refuse it with what is allowed.
pub(crate) fn check_name(name: &str) -> Result<String, RelayError> {
    normalize_business_name(name).map_err(|e| invalid(e.to_string()))
}

pub(crate) async fn claim<S: Directory + Businesses>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::ClaimName,
) -> Result<Reply, RelayError> {
    let account = device(session)?.account;
    let name = check_name(&request.name)?;
    let kind = session
        .relay
        .store
        .account_record(account)
        .await?
        .map_or(AccountKind::Customer, |r| policy::kind_of(&r));
    if kind != AccountKind::Business {
        return Err(RelayError::AccountKind(
            "only a business account may claim a business name; register one with kind business"
                .into(),
        ));
    }
    let now = session.relay.clock.now_ms();
    for (holder, business) in session.relay.store.businesses().await? {
        if holder == account {
            continue;
        }
        if let Some(verified) = business.verified_name(now)
            && comptoir_protocol::confusable::is_reserved_by(&name, verified)
        {
            return Err(RelayError::NameTaken(format!(
                "the name {name:?} is reserved: it can be confused with the verified business \
                 {verified:?}; choose another"
            )));
        }
    }
    match session.relay.store.claim_name(&name, account).await? {
        NameClaim::Claimed => {
            tracing::info!(%account, %name, "business name claimed");
            Ok(Reply::Frame(frame::ok(request_id)))
        }
        NameClaim::AlreadyYours => Ok(Reply::Frame(frame::ok(request_id))),
        NameClaim::TakenByOther => Err(RelayError::NameTaken(format!(
            "the name {name:?} is held by another account; choose another"
        ))),
        NameClaim::AccountHasOther => Err(RelayError::NameTaken(
            "this account already holds a different name (one name per account)".into(),
        )),
    }
}
