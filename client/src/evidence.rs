//! Messages refused by their labels, kept aside (sealed in the [`Store`])
//! as evidence: the envelope exactly as the relay delivered it and the
//! plaintext it decrypted to. Never displayed; the billing issue turns
//! them into reports.
//!
//! Records are keyed by `sender account (16) || envelope message id (16)`.

use std::fmt;

use comptoir_protocol::proto::wire::Envelope;
use comptoir_protocol::{AccountId, Label};
use prost::Message;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::messages::MessageId;
use crate::store::{Store, Tree};

const EVIDENCE_RECORD_VERSION: u32 = 1;

/// One refused message.
#[derive(Clone)]
pub struct Evidence {
    /// The sender account, as the envelope named it.
    pub from: AccountId,
    /// The envelope as delivered (its ciphertext included).
    pub envelope: Envelope,
    /// What the ciphertext decrypted to (an encoded `Content`).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Why it was refused (the `LabelError`'s text).
    pub refusal: String,
    /// The mismatched label, when the refusal was a label mismatch.
    pub label: Option<Label>,
    /// When this device kept it, ms since the Unix epoch.
    pub stored_at_ms: u64,
}

impl fmt::Debug for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            from,
            envelope,
            plaintext: _,
            refusal,
            label,
            stored_at_ms,
        } = self;
        f.debug_struct("Evidence")
            .field("from", from)
            .field("message_id", &MessageId::from_bytes(&envelope.message_id))
            .field("refusal", refusal)
            .field("label", label)
            .field("stored_at_ms", stored_at_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
struct EvidenceRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(bytes = "vec", tag = "2")]
    envelope: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    plaintext: Vec<u8>,
    #[prost(string, tag = "4")]
    refusal: String,
    /// 1 + the label's index in `Label::ALL`; 0 for none.
    #[prost(uint32, tag = "5")]
    label: u32,
    #[prost(uint64, tag = "6")]
    stored_at_ms: u64,
}

impl fmt::Debug for EvidenceRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EvidenceRecord(..)")
    }
}

fn key(from: &AccountId, envelope: &Envelope) -> Vec<u8> {
    let mut k = from.to_vec();
    k.extend_from_slice(&envelope.message_id);
    k
}

/// Keep a refused message (replacing an earlier copy of the same envelope).
pub fn save(store: &Store, evidence: &Evidence) -> Result<()> {
    let label = evidence
        .label
        .and_then(|l| Label::ALL.iter().position(|x| *x == l))
        .map_or(0, |i| i as u32 + 1);
    let record = Zeroizing::new(
        EvidenceRecord {
            version: EVIDENCE_RECORD_VERSION,
            envelope: evidence.envelope.encode_to_vec(),
            plaintext: evidence.plaintext.to_vec(),
            refusal: evidence.refusal.clone(),
            label,
            stored_at_ms: evidence.stored_at_ms,
        }
        .encode_to_vec(),
    );
    store.put(
        Tree::Evidence,
        &key(&evidence.from, &evidence.envelope),
        &record,
    )
}

/// Every refused message kept on this device, by sender then id.
pub fn all(store: &Store) -> Result<Vec<Evidence>> {
    let corrupt = |what: &str| ClientError::CorruptStore(format!("evidence record: {what}"));
    let mut out = Vec::new();
    for (k, v) in store.scan(Tree::Evidence, b"")? {
        let mut record =
            EvidenceRecord::decode(v.as_slice()).map_err(|_| corrupt("undecodable"))?;
        let plaintext = Zeroizing::new(std::mem::take(&mut record.plaintext));
        let from = AccountId::from_bytes(k.get(..16).unwrap_or_default())
            .map_err(|_| corrupt("bad key"))?;
        let envelope = Envelope::decode(record.envelope.as_slice())
            .map_err(|_| corrupt("undecodable envelope"))?;
        let label = match record.label {
            0 => None,
            n => Some(
                *Label::ALL
                    .get(n as usize - 1)
                    .ok_or_else(|| corrupt("unknown label"))?,
            ),
        };
        out.push(Evidence {
            from,
            envelope,
            plaintext,
            refusal: record.refusal,
            label,
            stored_at_ms: record.stored_at_ms,
        });
    }
    Ok(out)
}
