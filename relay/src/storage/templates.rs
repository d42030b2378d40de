//! The template registry role: templates businesses submitted, and the
//! operator's decision on each (pending, approved, rejected, revoked, with
//! the newest signed approval or revocation). The `Send` handler reads it
//! for every template category; the admin API writes it.
//!
//! Embedded backend: sled tree `templates`, key the 32-byte template id,
//! value a `comptoir.relay.TemplateRecord`; tree `live_templates`, key the
//! business (16 bytes) and the template id, for each pending or approved
//! template, written in the same transaction as the record (so a
//! business's live templates are counted from its own keys, not from
//! every record; built again from the records at every open). A decision replaces the record only if it is still the
//! one the decision was taken on (compare-and-swap), and is durable
//! before the call returns.
//!
//! `Send` reads the record of every template sent; its decoding (a
//! protobuf holding the template as JSON) is memoised by the exact bytes
//! sled returned ([`ParsedTemplates`]), as device lists are: every read
//! still goes to sled, so a revocation or a rejection takes effect at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use ::sled::Transactional;
use ::sled::transaction::TransactionError;
use comptoir_protocol::AccountId;
use comptoir_protocol::keys::SIGNATURE_LEN;
use comptoir_protocol::proto::relay::TemplateRecord;
use comptoir_protocol::proto::wire::TemplateStatus;
use comptoir_protocol::template::{Template, TemplateApproval, TemplateId};
use comptoir_protocol::template_wire::{approval_from_wire, approval_to_wire};
use prost::Message;

use super::sled::SledStore;
use super::{StorageError, StorageResult};

/// Version of the stored `TemplateRecord`.
const RECORD_VERSION: u32 = 1;

/// An operator's approval (or revocation) with its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedApproval {
    /// What the operator signed.
    pub approval: TemplateApproval,
    /// The operator's Ed25519 signature over it.
    pub signature: [u8; SIGNATURE_LEN],
}

/// A template as the registry keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTemplate {
    /// Its id (SHA-256 of its canonical bytes).
    pub id: TemplateId,
    /// The template.
    pub template: Template,
    /// Where it stands with the operator.
    pub status: TemplateStatus,
    /// The relay's clock when it was first submitted.
    pub submitted_at_ms: u64,
    /// The newest signed decision (approved or revoked templates).
    pub approval: Option<SignedApproval>,
    /// Why the operator rejected it (rejected templates).
    pub reason: String,
}

impl StoredTemplate {
    /// Whether `business` may send it under its approved category now.
    pub fn approved_for(&self, business: AccountId) -> bool {
        self.status == TemplateStatus::Approved && self.template.business == business
    }
}

/// What [`Templates::replace_template`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replaced {
    /// The new record is kept.
    Done,
    /// Another decision came first: nothing changed.
    Changed,
    /// Not replaced: it would make the template live again while its
    /// business already has this many live templates.
    TooMany(usize),
}

/// What [`Templates::submit_template`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// The template is kept: newly added (pending), or as it already was.
    Kept(Box<StoredTemplate>),
    /// Not added: its business already has this many live templates, at
    /// least the limit given.
    TooMany(usize),
}

/// The template registry.
pub trait Templates: Send + Sync + 'static {
    /// Keep a newly submitted template (pending) unless one with its id is
    /// already kept, and only while its business has fewer than
    /// `most_per_business` live templates (pending or approved; rejected
    /// and revoked ones stay kept but do not count), counted and added in
    /// one step so concurrent submissions cannot pass the limit together.
    /// Durable on return.
    fn submit_template(
        &self,
        template: StoredTemplate,
        most_per_business: usize,
    ) -> impl Future<Output = StorageResult<Submitted>> + Send;

    /// The template with this id, if submitted.
    fn template(
        &self,
        id: &TemplateId,
    ) -> impl Future<Output = StorageResult<Option<StoredTemplate>>> + Send;

    /// [`Templates::template`], shared: the same answer, read from the
    /// store on every call, without copying (the `Send` path).
    fn template_shared(
        &self,
        id: &TemplateId,
    ) -> impl Future<Output = StorageResult<Option<Arc<StoredTemplate>>>> + Send;

    /// Every template kept, by id.
    fn templates(&self) -> impl Future<Output = StorageResult<Vec<StoredTemplate>>> + Send;

    /// Replace `expected` by `new` (same id) if `expected` is still what
    /// is kept, and, when `new` makes a rejected or revoked template live
    /// again, only while its business has fewer than `most_per_business`
    /// live templates. Durable on return.
    fn replace_template(
        &self,
        expected: &StoredTemplate,
        new: &StoredTemplate,
        most_per_business: usize,
    ) -> impl Future<Output = StorageResult<Replaced>> + Send;
}

fn encode(stored: &StoredTemplate) -> StorageResult<Vec<u8>> {
    let template_json = serde_json::to_string(&stored.template)
        .map_err(|e| StorageError::Backend(format!("cannot encode a template: {e}")))?;
    Ok(TemplateRecord {
        version: RECORD_VERSION,
        template_json,
        business_account: stored.template.business.to_vec(),
        status: stored.status as i32,
        submitted_at_ms: stored.submitted_at_ms,
        approval: stored
            .approval
            .as_ref()
            .map(|a| approval_to_wire(&a.approval, &a.signature)),
        reason: stored.reason.clone(),
    }
    .encode_to_vec())
}

fn decode(id: &[u8], bytes: &[u8]) -> StorageResult<StoredTemplate> {
    const WHAT: &str = "templates";
    let id: [u8; 32] = id.try_into().map_err(|_| StorageError::Corrupt(WHAT))?;
    let record = TemplateRecord::decode(bytes).map_err(|_| StorageError::Corrupt(WHAT))?;
    let template: Template =
        serde_json::from_str(&record.template_json).map_err(|_| StorageError::Corrupt(WHAT))?;
    let approval = match &record.approval {
        Some(wire) => {
            let (approval, signature) =
                approval_from_wire(wire).map_err(|_| StorageError::Corrupt(WHAT))?;
            Some(SignedApproval {
                approval,
                signature,
            })
        }
        None => None,
    };
    Ok(StoredTemplate {
        id: TemplateId(id),
        template,
        status: TemplateStatus::try_from(record.status).map_err(|_| StorageError::Corrupt(WHAT))?,
        submitted_at_ms: record.submitted_at_ms,
        approval,
        reason: record.reason,
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

/// Whether a template in `status` counts against its business's limit.
fn is_live(status: TemplateStatus) -> bool {
    matches!(status, TemplateStatus::Pending | TemplateStatus::Approved)
}

/// Its key in `live_templates`.
fn live_key(business: &AccountId, id: &TemplateId) -> Vec<u8> {
    [business.as_bytes().as_slice(), id.as_bytes()].concat()
}

/// Build `live` again from the records of `templates`, at every open: a
/// store last written by a version without the index (or run by one
/// since) is counted right. Only each record's business and status are
/// read (no template JSON); a record that does not decode counts as not
/// live, and is logged.
pub(super) fn index_live_templates(
    templates: &::sled::Tree,
    live: &::sled::Tree,
    db: &::sled::Db,
) -> StorageResult<()> {
    let mut batch = ::sled::Batch::default();
    for item in live.iter().keys() {
        batch.remove(item.map_err(backend)?);
    }
    for item in templates.iter() {
        let (key, value) = item.map_err(backend)?;
        let Ok(record) = TemplateRecord::decode(&*value) else {
            tracing::warn!(template = %hex::encode(&key), "a template record does not decode; not counted");
            continue;
        };
        let status = TemplateStatus::try_from(record.status).unwrap_or(TemplateStatus::Unspecified);
        if is_live(status) {
            batch.insert([record.business_account.as_slice(), &key].concat(), &[][..]);
        }
    }
    live.apply_batch(batch).map_err(backend)?;
    db.flush().map_err(backend)?;
    Ok(())
}

/// Decoded templates kept at most; past it the memo starts over.
const PARSED_TEMPLATES: usize = 10_000;

/// The decoding of each template record, keyed by the exact bytes it was
/// decoded from. Not a cache of state: every read still goes to sled, and
/// the memo only answers when the bytes sled returned are the ones it
/// decoded, so it can never serve a record sled no longer holds (a
/// revoked or rejected template reads as such at once), whoever wrote
/// sled and whatever raced.
#[derive(Debug, Default)]
pub(super) struct ParsedTemplates(Mutex<HashMap<TemplateId, (::sled::IVec, Arc<StoredTemplate>)>>);

impl ParsedTemplates {
    /// The decoding of `bytes`, the record sled holds for `id` now.
    fn decode(&self, id: &TemplateId, bytes: ::sled::IVec) -> StorageResult<Arc<StoredTemplate>> {
        let lock = || self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((kept, stored)) = lock().get(id)
            && *kept == bytes
        {
            return Ok(stored.clone());
        }
        let stored = Arc::new(decode(id.as_bytes(), &bytes)?);
        let mut memo = lock();
        if memo.len() >= PARSED_TEMPLATES {
            memo.clear();
        }
        memo.insert(*id, (bytes, stored.clone()));
        Ok(stored)
    }
}

impl Templates for SledStore {
    async fn submit_template(
        &self,
        template: StoredTemplate,
        most_per_business: usize,
    ) -> StorageResult<Submitted> {
        let key = template.id.as_bytes().to_vec();
        let bytes = encode(&template)?;
        let business = template.template.business;
        {
            let _counting = self
                .template_submissions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(kept) = self.templates.get(&key).map_err(backend)? {
                return decode(&key, &kept).map(|kept| Submitted::Kept(Box::new(kept)));
            }
            let live = self.live_templates.scan_prefix(business.as_bytes()).count();
            if live >= most_per_business {
                return Ok(Submitted::TooMany(live));
            }
            // Under the lock nothing else adds a template or makes one
            // live again, so the id is still free and the count holds.
            let live_key = live_key(&business, &template.id);
            (&self.templates, &self.live_templates)
                .transaction(|(templates, live)| {
                    templates.insert(key.as_slice(), bytes.as_slice())?;
                    live.insert(live_key.as_slice(), &[][..])?;
                    Ok(())
                })
                .map_err(|e: TransactionError<StorageError>| transaction(e))?;
        }
        self.committer.durable().await?;
        Ok(Submitted::Kept(Box::new(template)))
    }

    async fn template(&self, id: &TemplateId) -> StorageResult<Option<StoredTemplate>> {
        match self.templates.get(id.as_bytes()).map_err(backend)? {
            Some(bytes) => decode(id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn template_shared(&self, id: &TemplateId) -> StorageResult<Option<Arc<StoredTemplate>>> {
        match self.templates.get(id.as_bytes()).map_err(backend)? {
            Some(bytes) => self.parsed_templates.decode(id, bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn templates(&self) -> StorageResult<Vec<StoredTemplate>> {
        self.templates
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                decode(&key, &value)
            })
            .collect()
    }

    async fn replace_template(
        &self,
        expected: &StoredTemplate,
        new: &StoredTemplate,
        most_per_business: usize,
    ) -> StorageResult<Replaced> {
        let key = expected.id.as_bytes().to_vec();
        let live_key = live_key(&new.template.business, &new.id);
        let encoded = encode(new)?;
        {
            // The same lock as submissions: making a template live again
            // counts like adding one.
            let _counting = self
                .template_submissions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let current = self.templates.get(&key).map_err(backend)?;
            // Compare what is kept with what the decision was taken on by
            // content (an encoding of the same record may differ in bytes).
            let still = match &current {
                Some(bytes) => decode(&key, bytes)? == *expected,
                None => false,
            };
            if !still {
                return Ok(Replaced::Changed);
            }
            if is_live(new.status) && !is_live(expected.status) {
                let live = self
                    .live_templates
                    .scan_prefix(new.template.business.as_bytes())
                    .count();
                if live >= most_per_business {
                    return Ok(Replaced::TooMany(live));
                }
            }
            (&self.templates, &self.live_templates)
                .transaction(|(templates, live)| {
                    templates.insert(key.as_slice(), encoded.as_slice())?;
                    if is_live(new.status) {
                        live.insert(live_key.as_slice(), &[][..])?;
                    } else {
                        live.remove(live_key.as_slice())?;
                    }
                    Ok(())
                })
                .map_err(|e: TransactionError<StorageError>| transaction(e))?;
        }
        self.committer.durable().await?;
        Ok(Replaced::Done)
    }
}
