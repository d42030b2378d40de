//! `AcquireLease`: take, renew or give up a lease shared by the
//! authenticated account's devices ([`crate::leases`]). Any account may
//! hold leases; only its own devices ever see them.

use comptoir_protocol::proto::wire::{self, server_frame::Body};

use super::device;
use crate::error::{RelayError, invalid};
use crate::frame;
use crate::session::{Reply, Session};

pub(crate) async fn acquire<S>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::AcquireLease,
) -> Result<Reply, RelayError> {
    let me = device(session)?;
    let (account, device_id) = (me.account, me.device);
    let now = session.relay.clock.now_ms();
    let view = session
        .relay
        .leases
        .acquire(
            account,
            device_id,
            session.id,
            &request.name,
            request.duration_ms,
            now,
        )
        .map_err(|e| invalid(e.to_string()))?;
    Ok(Reply::Frame(frame::server(
        request_id,
        Body::Lease(wire::Lease {
            name: request.name,
            holder_device: view.holder_device,
            expires_in_ms: view.expires_in_ms,
        }),
    )))
}
