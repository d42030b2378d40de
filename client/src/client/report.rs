//! Reporting a received message to the operator (docs/PROTOCOL.md,
//! "Reports"): what [`crate::franked`] kept of it, with the user's reason,
//! sealed to the pinned operator key and handed to the relay, which
//! stores it without being able to read it.

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::wire::{FileReport, ReportContents, client_frame, server_frame};
use comptoir_protocol::report;
use prost::Message;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::franked;
use crate::messages::MessageId;
use crate::operator_pin;

use super::{Client, now_ms, unexpected};

/// Longest reason a report carries, in bytes (the operator reads it; it
/// is not a second message).
pub(crate) const MAX_REPORT_REASON_LEN: usize = 500;

impl Client {
    /// Report the received message `id` (whoever sent it) to the
    /// operator, saying why. Returns the relay's id for the report.
    pub async fn report(&mut self, id: MessageId, reason: &str) -> Result<u64> {
        match franked::senders_of(&self.store, &id)?.as_slice() {
            [from] => self.report_from(*from, id, reason).await,
            _ => Err(ClientError::NotReportable(id.to_string())),
        }
    }

    /// Report message `id` received from `from` to the operator, saying
    /// why. Returns the relay's id for the report.
    pub async fn report_from(
        &mut self,
        from: AccountId,
        id: MessageId,
        reason: &str,
    ) -> Result<u64> {
        if reason.len() > MAX_REPORT_REASON_LEN {
            return Err(ClientError::InvalidArgument(format!(
                "the reason is {} bytes; at most {MAX_REPORT_REASON_LEN}",
                reason.len()
            )));
        }
        let mut contents = self.report_contents(from, id)?;
        contents.reason = reason.to_owned();
        contents.reported_at_ms = now_ms();
        self.file_report(&contents).await
    }

    /// What a report of message `id` from `from` would reveal to the
    /// operator (to show the user before it is sent): the envelope as
    /// delivered, the relay's tag, the committed content and its franking
    /// key. No reason or time yet.
    pub fn report_contents(&self, from: AccountId, id: MessageId) -> Result<ReportContents> {
        franked::load(&self.store, &from, &id)?
            .ok_or_else(|| ClientError::NotReportable(id.to_string()))
    }

    /// Seal `contents` to the pinned operator key and file it with the
    /// relay. Returns the relay's id for the report. The operator verifies
    /// it: contents altered after delivery fail there.
    pub async fn file_report(&mut self, contents: &ReportContents) -> Result<u64> {
        let operator = operator_pin::pinned(&self.store)?.ok_or(ClientError::NoOperatorKey)?;
        let plaintext = Zeroizing::new(contents.encode_to_vec());
        let sealed = report::seal(&operator, &plaintext, &mut rand::rng())
            .ok_or(ClientError::NoOperatorKey)?;
        let body = client_frame::Body::FileReport(FileReport { sealed });
        match self.request(body, "the report").await? {
            server_frame::Body::ReportFiled(filed) => Ok(filed.report_id),
            other => Err(unexpected("ReportFiled", &other)),
        }
    }
}
