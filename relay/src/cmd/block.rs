//! `Block` / `Unblock`: account-level, so it holds across all the
//! blocker's devices. From the `Ok` on, sends from the blocked account to
//! the blocker are refused with `ERROR_CODE_BLOCKED`. Blocking also
//! revokes the blocker's consent for the blocked account, if it kept one
//! (a new grant needs a higher counter), and deletes what the blocked
//! account has queued for the blocker's devices (no receipts). A
//! customer's block of a business is counted with its optional reason
//! (no longer needed, did not sign up, spam, offensive) towards the
//! business's quality rating (`relay admin business show`).

use super::{account_field, device};
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::session::{Reply, Session};
use crate::storage::{Businesses, Directory, Kind, Mailbox};

pub(crate) async fn set<S: Directory + Mailbox + Businesses>(
    session: &mut Session<S>,
    request_id: u64,
    account_id: Vec<u8>,
    on: bool,
    reason: i32,
) -> Result<Reply, RelayError> {
    if comptoir_protocol::proto::wire::BlockReason::try_from(reason).is_err() {
        return Err(invalid("unknown block reason"));
    }
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
        let kinds = (
            relay
                .store
                .account_record(me)
                .await?
                .unwrap_or_default()
                .kind,
            relay
                .store
                .account_record(other)
                .await?
                .unwrap_or_default()
                .kind,
        );
        if kinds == (Kind::Customer, Kind::Business) {
            relay
                .store
                .note_block_reason(other, me, reason, relay.clock.now_ms())
                .await?;
        }
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
