//! The consent-request role: what verified businesses asked which numbers
//! (by a keyed hash of the number, never the number), each customer's
//! pending requests, the answers businesses may read, and each business's
//! daily count. docs/PROTOCOL.md, "Consent requests".
//!
//! Embedded backend: sled tree `consent_requests`, keys tagged by their
//! first byte: `k` the relay's hashing key (32 random bytes, created
//! once); `r` || business (16) || number hash (32) a
//! `comptoir.relay.ConsentRequestRecord`; `i` || customer (16) ||
//! request id (16) the pending request's `r` key (the customer's inbox);
//! `c` || business (16) || UTC day (u64 BE) the day's count (u64 BE).
//! Writes are sled transactions, durable before they return.

use std::future::Future;

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::relay::ConsentRequestRecord;
use prost::Message;
use rand::Rng;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::sled::SledStore;
use super::{StorageError, StorageResult};

const WHAT: &str = "consent_requests";
const RECORD_VERSION: u32 = 1;

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestState {
    /// Waiting for the customer.
    Pending,
    /// The customer refused (the business is not told).
    Refused,
    /// The customer allowed: the business may read the answer.
    Allowed,
}

/// One business's request to one number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRequest {
    /// Where it stands.
    pub state: RequestState,
    /// When it was made, or answered.
    pub at_ms: u64,
    /// The relay's id for it (what the customer answers).
    pub request_id: [u8; 16],
    /// The customer the number is bound to.
    pub customer: AccountId,
    /// The consent categories asked for (bit set).
    pub categories: u32,
    /// The purpose (a wire `ConsentPurpose` number).
    pub purpose: i32,
    /// The business's reference.
    pub reference: [u8; 16],
}

/// A pending request as the customer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRequest {
    /// The business asking.
    pub business: AccountId,
    /// The request.
    pub request: StoredRequest,
}

/// The consent-request store.
pub trait ConsentRequests: Send + Sync + 'static {
    /// The relay's key for hashing phone numbers (created on first use).
    fn number_key(&self) -> impl Future<Output = StorageResult<[u8; 32]>> + Send;

    /// Count one request of `business` on UTC `day`; the count after it.
    fn count_consent_request(
        &self,
        business: AccountId,
        day: u64,
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// The request of `business` to the number hashed as `hash`.
    fn consent_request(
        &self,
        business: AccountId,
        hash: [u8; 32],
    ) -> impl Future<Output = StorageResult<Option<StoredRequest>>> + Send;

    /// Keep `new` (pending) in place of `expected` and put it in the
    /// customer's inbox; `false` if the record changed meanwhile.
    fn open_consent_request(
        &self,
        business: AccountId,
        hash: [u8; 32],
        expected: Option<&StoredRequest>,
        new: &StoredRequest,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// The customer's pending requests.
    fn pending_consent_requests(
        &self,
        customer: AccountId,
    ) -> impl Future<Output = StorageResult<Vec<PendingRequest>>> + Send;

    /// Answer one of the customer's pending requests at `at_ms`; the
    /// answered request, or `None` if the customer has no such pending
    /// request.
    fn answer_consent_request(
        &self,
        customer: AccountId,
        request_id: [u8; 16],
        allow: bool,
        at_ms: u64,
    ) -> impl Future<Output = StorageResult<Option<PendingRequest>>> + Send;

    /// The business's allowed requests.
    fn consent_answers(
        &self,
        business: AccountId,
    ) -> impl Future<Output = StorageResult<Vec<StoredRequest>>> + Send;
}

fn key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = vec![tag];
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

fn encode(request: &StoredRequest) -> Vec<u8> {
    ConsentRequestRecord {
        version: RECORD_VERSION,
        state: match request.state {
            RequestState::Pending => 1,
            RequestState::Refused => 2,
            RequestState::Allowed => 3,
        },
        at_ms: request.at_ms,
        request_id: request.request_id.to_vec(),
        customer_account: request.customer.to_vec(),
        categories: request.categories,
        purpose: request.purpose,
        reference: request.reference.to_vec(),
    }
    .encode_to_vec()
}

fn decode(bytes: &[u8]) -> StorageResult<StoredRequest> {
    let corrupt = || StorageError::Corrupt(WHAT);
    let r = ConsentRequestRecord::decode(bytes).map_err(|_| corrupt())?;
    Ok(StoredRequest {
        state: match r.state {
            1 => RequestState::Pending,
            2 => RequestState::Refused,
            3 => RequestState::Allowed,
            _ => return Err(corrupt()),
        },
        at_ms: r.at_ms,
        request_id: r.request_id.as_slice().try_into().map_err(|_| corrupt())?,
        customer: AccountId::from_bytes(&r.customer_account).map_err(|_| corrupt())?,
        categories: r.categories,
        purpose: r.purpose,
        reference: r.reference.as_slice().try_into().map_err(|_| corrupt())?,
    })
}

fn backend(e: ::sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

fn transaction(e: TransactionError<StorageError>) -> StorageError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => backend(e),
    }
}

impl ConsentRequests for SledStore {
    async fn number_key(&self) -> StorageResult<[u8; 32]> {
        let tree = &self.consent_requests;
        if let Some(bytes) = tree.get(b"k").map_err(backend)? {
            return bytes
                .as_ref()
                .try_into()
                .map_err(|_| StorageError::Corrupt(WHAT));
        }
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        // Another caller may have created it first: keep the first.
        let _ = tree
            .compare_and_swap(b"k", None::<&[u8]>, Some(&fresh[..]))
            .map_err(backend)?;
        self.committer.durable().await?;
        let bytes = tree
            .get(b"k")
            .map_err(backend)?
            .ok_or(StorageError::Corrupt(WHAT))?;
        bytes
            .as_ref()
            .try_into()
            .map_err(|_| StorageError::Corrupt(WHAT))
    }

    async fn count_consent_request(&self, business: AccountId, day: u64) -> StorageResult<u64> {
        let k = key(b'c', &[business.as_bytes(), &day.to_be_bytes()]);
        let after = self
            .consent_requests
            .update_and_fetch(&k, |old| {
                let n = old
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, u64::from_be_bytes);
                Some(n.saturating_add(1).to_be_bytes().to_vec())
            })
            .map_err(backend)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        self.committer.durable().await?;
        Ok(after)
    }

    async fn consent_request(
        &self,
        business: AccountId,
        hash: [u8; 32],
    ) -> StorageResult<Option<StoredRequest>> {
        let k = key(b'r', &[business.as_bytes(), &hash]);
        match self.consent_requests.get(k).map_err(backend)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn open_consent_request(
        &self,
        business: AccountId,
        hash: [u8; 32],
        expected: Option<&StoredRequest>,
        new: &StoredRequest,
    ) -> StorageResult<bool> {
        let record_key = key(b'r', &[business.as_bytes(), &hash]);
        let inbox_key = key(b'i', &[new.customer.as_bytes(), &new.request_id]);
        let expected = expected.map(encode);
        let encoded = encode(new);
        let opened = self
            .consent_requests
            .transaction(|tx| {
                let current = tx.get(&record_key)?;
                let same = match (&current, &expected) {
                    (None, None) => true,
                    (Some(c), Some(e)) => decode(c)
                        .and_then(|c| decode(e).map(|e| c == e))
                        .map_err(ConflictableTransactionError::Abort)?,
                    _ => false,
                };
                if !same {
                    return Ok(false);
                }
                tx.insert(record_key.as_slice(), encoded.as_slice())?;
                tx.insert(inbox_key.as_slice(), record_key.as_slice())?;
                Ok(true)
            })
            .map_err(transaction)?;
        if opened {
            self.committer.durable().await?;
        }
        Ok(opened)
    }

    async fn pending_consent_requests(
        &self,
        customer: AccountId,
    ) -> StorageResult<Vec<PendingRequest>> {
        let mut out = Vec::new();
        for item in self
            .consent_requests
            .scan_prefix(key(b'i', &[customer.as_bytes()]))
        {
            let (_, record_key) = item.map_err(backend)?;
            let business = AccountId::from_bytes(record_key.get(1..17).unwrap_or_default())
                .map_err(|_| StorageError::Corrupt(WHAT))?;
            if let Some(bytes) = self.consent_requests.get(&record_key).map_err(backend)? {
                let request = decode(&bytes)?;
                if request.state == RequestState::Pending {
                    out.push(PendingRequest { business, request });
                }
            }
        }
        Ok(out)
    }

    async fn answer_consent_request(
        &self,
        customer: AccountId,
        request_id: [u8; 16],
        allow: bool,
        at_ms: u64,
    ) -> StorageResult<Option<PendingRequest>> {
        let inbox_key = key(b'i', &[customer.as_bytes(), &request_id]);
        let answered = self
            .consent_requests
            .transaction(|tx| {
                let Some(record_key) = tx.get(&inbox_key)? else {
                    return Ok(None);
                };
                let Some(bytes) = tx.get(&record_key)? else {
                    return Ok(None);
                };
                let mut request = decode(&bytes).map_err(ConflictableTransactionError::Abort)?;
                if request.state != RequestState::Pending
                    || request.request_id != request_id
                    || request.customer != customer
                {
                    return Ok(None);
                }
                request.state = if allow {
                    RequestState::Allowed
                } else {
                    RequestState::Refused
                };
                request.at_ms = at_ms;
                tx.insert(record_key.as_ref(), encode(&request))?;
                tx.remove(inbox_key.as_slice())?;
                let business = AccountId::from_bytes(record_key.get(1..17).unwrap_or_default())
                    .map_err(|_| {
                        ConflictableTransactionError::Abort(StorageError::Corrupt(WHAT))
                    })?;
                Ok(Some(PendingRequest { business, request }))
            })
            .map_err(transaction)?;
        if answered.is_some() {
            self.committer.durable().await?;
        }
        Ok(answered)
    }

    async fn consent_answers(&self, business: AccountId) -> StorageResult<Vec<StoredRequest>> {
        let mut out = Vec::new();
        for item in self
            .consent_requests
            .scan_prefix(key(b'r', &[business.as_bytes()]))
        {
            let (_, bytes) = item.map_err(backend)?;
            let request = decode(&bytes)?;
            if request.state == RequestState::Allowed {
                out.push(request);
            }
        }
        Ok(out)
    }
}
