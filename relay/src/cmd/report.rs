//! `FileReport`: keep a report sealed to the operator's key (the relay
//! cannot read it) for `relay admin reports`; answered `ReportFiled`.

use comptoir_protocol::proto::wire::{self, server_frame::Body};
use comptoir_protocol::report::REPORT_OVERHEAD;

use super::device;
use crate::error::RelayError;
use crate::frame;
use crate::session::{Reply, Session};
use crate::storage::{Filed, Reports};

/// Largest sealed report the relay keeps: a report holds one message's
/// content (a text, a template instance, an attachment pointer), its
/// envelope without ciphertext and a short reason.
pub(crate) const MAX_SEALED_REPORT_LEN: usize = 64 * 1024;
/// Reports the relay keeps from one account, ever: enough to report every
/// abusive sender, while one account cannot fill the operator's queue.
pub(crate) const MAX_REPORTS_PER_ACCOUNT: u64 = 200;

pub(crate) async fn file<S: Reports>(
    session: &mut Session<S>,
    request_id: u64,
    request: wire::FileReport,
) -> Result<Reply, RelayError> {
    let me = device(session)?;
    let len = request.sealed.len();
    if !(REPORT_OVERHEAD..=MAX_SEALED_REPORT_LEN).contains(&len) || request.sealed[0] != 1 {
        return Err(RelayError::ReportRefused(format!(
            "a sealed report is a version-1 report sealed to the operator's key, between \
             {REPORT_OVERHEAD} and {MAX_SEALED_REPORT_LEN} bytes (got {len}); nothing was stored"
        )));
    }
    let relay = &session.relay;
    let filed = relay
        .store
        .file_report(
            me.account,
            me.device,
            relay.clock.now_ms(),
            &request.sealed,
            MAX_REPORTS_PER_ACCOUNT,
        )
        .await?;
    match filed {
        Filed::Stored(report_id) => Ok(Reply::Frame(frame::server(
            request_id,
            Body::ReportFiled(wire::ReportFiled { report_id }),
        ))),
        Filed::LimitReached => Err(RelayError::ReportRefused(format!(
            "this account already filed {MAX_REPORTS_PER_ACCOUNT} reports, the most the relay \
             keeps from one account; nothing was stored"
        ))),
    }
}
