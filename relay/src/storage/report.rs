//! Read-only view of what accepts committed besides mail, for operators
//! (`relay accounting --data-dir DIR` on a stopped relay) and crash tests:
//! the ledger, the conversation state (the window), the customers each
//! business reached (the quality tiers' usage), the quota counts, and
//! how many copies each device has queued.

use std::path::Path;
use std::sync::Arc;

use comptoir_protocol::AccountId;

use super::consent::ConsentRecord;
use super::dir_lock::DirLock;
use super::ledger::{DeliveredEntry, LedgerEntry};
use super::mail_log::{LogOptions, MailLog};
use super::{QuotaCounts, StorageResult};

/// Everything the report holds, as replayed from the mail log.
#[derive(Clone, Debug, Default)]
pub struct AccountingReport {
    /// Every ledger entry, in order of accept id.
    pub ledger: Vec<LedgerEntry>,
    /// Every signed first delivery of a billed send, in order of accept id.
    pub delivered: Vec<DeliveredEntry>,
    /// Every consent kept, by (customer, business).
    pub consents: Vec<ConsentRecord>,
    /// (business, customer, accept time of the customer's last
    /// conversation message).
    pub conversations: Vec<(AccountId, AccountId, u64)>,
    /// (business, customer, accept time of the business-initiated
    /// conversation that last counted the customer): the reach the
    /// quality tiers count.
    pub reaches: Vec<(AccountId, AccountId, u64)>,
    /// (sender, UTC day, counts) for the days still counted.
    pub quotas: Vec<(AccountId, u32, QuotaCounts)>,
    /// (account, device, copies queued) for every non-empty queue.
    pub queues: Vec<(AccountId, u32, u64)>,
}

/// Read the report from the data directory of a stopped relay (it takes
/// the directory's lock: a running relay's directory is refused).
pub async fn read(data_dir: &Path) -> StorageResult<AccountingReport> {
    let lock = Arc::new(DirLock::acquire(data_dir)?);
    let options = LogOptions {
        reserve_bytes: 0,
        ..LogOptions::default()
    };
    let log = MailLog::open_holding(
        &data_dir.join("mail-log"),
        options,
        Arc::default(),
        Some(lock),
    )?;
    let report = AccountingReport {
        ledger: log.ledger_entries(None, usize::MAX),
        delivered: log.delivered_entries(),
        consents: log.all_consents(),
        conversations: log.conversations(),
        reaches: log.reaches(),
        quotas: log.quotas(),
        queues: log.queue_depths(),
    };
    log.close().await?;
    Ok(report)
}
