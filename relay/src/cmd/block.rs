//! `Block` / `Unblock`: account-level, so it holds across all the
//! blocker's devices. From the `Ok` on, sends from the blocked account to
//! the blocker are refused with `ERROR_CODE_BLOCKED`. Blocking also
//! revokes the blocker's consent for the blocked account, if it kept one
//! (a new grant needs a higher counter), and deletes what the blocked
//! account has queued for the blocker's devices (no receipts).

use super::{account_field, device};
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::session::{Reply, Session};
use crate::storage::{Directory, Mailbox};

pub(crate) async fn set<S: Directory + Mailbox>(
    session: &mut Session<S>,
    request_id: u64,
    account_id: Vec<u8>,
    on: bool,
) -> Result<Reply, RelayError> {
    let me = device(session)?.account;
    let other = account_field("account_id", &account_id)?;
    if other == me {
        return Err(invalid("an account cannot block itself"));
    }
    // Only accounts that exist: blocks of made-up ones would only grow
    // state. (Unblocking one that has gone since is fine.)
    if on && session.relay.store.device_list(other).await?.is_none() {
        return Err(RelayError::UnknownAccount);
    }
    session.relay.store.set_blocked(me, other, on).await?;
    if on {
        let relay = &session.relay;
        relay.store.revoke_consent_by_block(me, other).await?;
        // Only the blocker's own queues are read.
        let devices = relay
            .store
            .device_list(me)
            .await?
            .map(|list| list.list.device_ids())
            .unwrap_or_default();
        let removed = relay.store.remove_queued_from(me, devices, other).await?;
        if removed > 0 {
            relay
                .metrics
                .queue_depth
                .fetch_sub(removed as i64, std::sync::atomic::Ordering::Relaxed);
            relay.metrics.notify_change();
        }
    }
    tracing::info!(blocker = %me, blocked = %other, on, "block updated");
    Ok(Reply::Frame(frame::ok(request_id)))
}
