//! What this device keeps of each franked message it received, so that the
//! user can report it later (docs/PROTOCOL.md, "Reports"): the envelope as
//! delivered (without its ciphertext), the relay's franking tag, the
//! committed content bytes and the franking key. Sealed in the [`Store`]
//! like every record, as an encoded `wire.ReportContents` with no reason
//! yet; `Client::report` adds the reason and seals it to the operator.
//!
//! Records are keyed by `sender account (16) || message id (16)` (the
//! content's id, as the history shows it).

use comptoir_protocol::AccountId;
use comptoir_protocol::franking;
use comptoir_protocol::proto::content::Content;
use comptoir_protocol::proto::wire::{Envelope, ReportContents};
use prost::Message;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{ClientError, Result};
use crate::messages::MessageId;
use crate::store::{Store, Tree};

/// Version of the kept `ReportContents`.
pub const REPORT_CONTENTS_VERSION: u32 = 1;

/// The relay's franking tag pushed with an envelope (`Deliver` fields 2
/// and 3): empty when the relay gave none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayTag {
    /// HMAC-SHA256 under the relay's franking key.
    pub tag: Vec<u8>,
    /// Which of the relay's franking keys.
    pub key_id: u32,
}

/// What a report of this message will reveal, if `content` is franked
/// (carries a franking key); `None` for an unfranked content.
pub fn material(
    envelope: &Envelope,
    relay: &RelayTag,
    content: &Content,
) -> Option<ReportContents> {
    if content.franking_key.is_empty() {
        return None;
    }
    Some(ReportContents {
        version: REPORT_CONTENTS_VERSION,
        envelope: Some(Envelope {
            ciphertext: Vec::new(),
            ..envelope.clone()
        }),
        relay_franking_tag: relay.tag.clone(),
        relay_franking_key_id: relay.key_id,
        content: franking::committed_bytes(content).to_vec(),
        franking_key: content.franking_key.clone(),
        reason: String::new(),
        reported_at_ms: 0,
    })
}

fn key(from: &AccountId, id: &MessageId) -> Vec<u8> {
    let mut k = from.to_vec();
    k.extend_from_slice(&id.0);
    k
}

/// Keep the report material of message `id` from `from` (not flushed).
pub fn save(
    store: &Store,
    from: &AccountId,
    id: &MessageId,
    mut material: ReportContents,
) -> Result<()> {
    let bytes = Zeroizing::new(material.encode_to_vec());
    material.franking_key.zeroize();
    material.content.zeroize();
    store.put(Tree::Franked, &key(from, id), &bytes)
}

/// The report material of message `id` from `from`, if it was franked.
pub fn load(store: &Store, from: &AccountId, id: &MessageId) -> Result<Option<ReportContents>> {
    let Some(bytes) = store.get(Tree::Franked, &key(from, id))? else {
        return Ok(None);
    };
    ReportContents::decode(bytes.as_slice())
        .map(Some)
        .map_err(|_| ClientError::CorruptStore("franked message record: undecodable".into()))
}

/// The senders of every kept franked message with id `id` (normally one).
pub fn senders_of(store: &Store, id: &MessageId) -> Result<Vec<AccountId>> {
    let mut out = Vec::new();
    for (k, _) in store.scan(Tree::Franked, b"")? {
        if k.get(16..) == Some(id.0.as_slice())
            && let Ok(from) = AccountId::from_bytes(k.get(..16).unwrap_or_default())
        {
            out.push(from);
        }
    }
    Ok(out)
}
