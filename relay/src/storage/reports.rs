//! The reports role: reports filed by recipients, sealed to the operator's
//! key (docs/PROTOCOL.md, "Reports"). The relay cannot read them; `relay
//! admin reports` opens them with the operator key.
//!
//! Embedded backend: sled tree `reports`, keys `"r" || report id (u64 BE)`
//! (value a `comptoir.relay.StoredReport`), `"c" || reporter account (16)`
//! (how many reports it filed, u64 BE) and `"n"` (the next report id, u64
//! BE). A report, its reporter's count and the next id are written in one
//! transaction, durable before it returns.

use std::future::Future;

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::relay::StoredReport;
use prost::Message;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::sled::SledStore;
use super::{StorageError, StorageResult};

/// Version of the stored `StoredReport`.
const RECORD_VERSION: u32 = 1;
const REPORT_PREFIX: u8 = b'r';
const COUNT_PREFIX: u8 = b'c';
const NEXT_ID_KEY: &[u8] = b"n";

/// A report as kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptReport {
    /// Its id (from 1, never reused).
    pub id: u64,
    /// The authenticated account that filed it.
    pub reporter: AccountId,
    /// Its device.
    pub reporter_device: u32,
    /// The relay's clock when it was filed.
    pub received_at_ms: u64,
    /// The sealed `wire.ReportContents`.
    pub sealed: Vec<u8>,
}

/// What [`Reports::file_report`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filed {
    /// Stored under this id.
    Stored(u64),
    /// The reporter already filed `limit` reports: nothing stored.
    LimitReached,
}

/// Reports filed by recipients.
pub trait Reports: Send + Sync + 'static {
    /// Store a report unless `reporter` already filed `limit`. Durable on
    /// return.
    fn file_report(
        &self,
        reporter: AccountId,
        reporter_device: u32,
        received_at_ms: u64,
        sealed: &[u8],
        limit: u64,
    ) -> impl Future<Output = StorageResult<Filed>> + Send;

    /// Every report, by id.
    fn reports(&self) -> impl Future<Output = StorageResult<Vec<KeptReport>>> + Send;

    /// One report.
    fn report(&self, id: u64) -> impl Future<Output = StorageResult<Option<KeptReport>>> + Send;
}

fn report_key(id: u64) -> Vec<u8> {
    let mut key = vec![REPORT_PREFIX];
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn read_u64(bytes: Option<&[u8]>) -> Result<u64, ()> {
    match bytes {
        None => Ok(0),
        Some(b) => b.try_into().map(u64::from_be_bytes).map_err(|_| ()),
    }
}

fn decode(id: u64, bytes: &[u8]) -> StorageResult<KeptReport> {
    let corrupt = || StorageError::Corrupt("reports");
    let record = StoredReport::decode(bytes).map_err(|_| corrupt())?;
    Ok(KeptReport {
        id,
        reporter: AccountId::from_bytes(&record.reporter_account).map_err(|_| corrupt())?,
        reporter_device: record.reporter_device,
        received_at_ms: record.received_at_ms,
        sealed: record.sealed,
    })
}

fn backend(e: ::sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl Reports for SledStore {
    async fn file_report(
        &self,
        reporter: AccountId,
        reporter_device: u32,
        received_at_ms: u64,
        sealed: &[u8],
        limit: u64,
    ) -> StorageResult<Filed> {
        let mut count_key = vec![COUNT_PREFIX];
        count_key.extend_from_slice(reporter.as_bytes());
        let record = StoredReport {
            version: RECORD_VERSION,
            reporter_account: reporter.to_vec(),
            reporter_device,
            received_at_ms,
            sealed: sealed.to_vec(),
        }
        .encode_to_vec();
        let outcome = self.reports.transaction(|tx| {
            // A counter that is not 8 bytes: the tree is damaged.
            let abort = || ConflictableTransactionError::Abort(());
            let count = read_u64(tx.get(&count_key)?.as_deref()).map_err(|()| abort())?;
            if count >= limit {
                return Ok(Filed::LimitReached);
            }
            let id = read_u64(tx.get(NEXT_ID_KEY)?.as_deref()).map_err(|()| abort())? + 1;
            tx.insert(NEXT_ID_KEY, &id.to_be_bytes())?;
            tx.insert(count_key.as_slice(), &(count + 1).to_be_bytes())?;
            tx.insert(report_key(id), record.as_slice())?;
            Ok(Filed::Stored(id))
        });
        let filed = match outcome {
            Ok(filed) => filed,
            Err(TransactionError::Abort(_)) => return Err(StorageError::Corrupt("reports")),
            Err(TransactionError::Storage(e)) => return Err(backend(e)),
        };
        if let Filed::Stored(_) = filed {
            self.committer.durable().await?;
        }
        Ok(filed)
    }

    async fn reports(&self) -> StorageResult<Vec<KeptReport>> {
        self.reports
            .scan_prefix([REPORT_PREFIX])
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                let id = key
                    .get(1..9)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .ok_or(StorageError::Corrupt("reports"))?;
                decode(id, &value)
            })
            .collect()
    }

    async fn report(&self, id: u64) -> StorageResult<Option<KeptReport>> {
        match self.reports.get(report_key(id)).map_err(backend)? {
            Some(bytes) => decode(id, &bytes).map(Some),
            None => Ok(None),
        }
    }
}
