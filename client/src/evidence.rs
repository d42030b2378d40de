//! Messages refused by their labels, kept aside (sealed in the [`Store`])
//! as evidence: the envelope exactly as the relay delivered it and the
//! plaintext it decrypted to. Never displayed; the billing issue turns
//! them into reports.
//!
//! Records are keyed by `sender account (16) || envelope message id (16)`.
//! They are bounded per sender and all together (see [`save`]), so
//! neither one sender nor many (a relay can make accounts at will) can
//! fill this device's disk.

use std::fmt;

use comptoir_protocol::proto::wire::Envelope;
use comptoir_protocol::{AccountId, Label};
use prost::Message;
use zeroize::Zeroizing;

use crate::error::Result;
use crate::messages::MessageId;
use crate::store::{Store, Tree};

const EVIDENCE_RECORD_VERSION: u32 = 1;
/// Refused messages kept per sender at most: enough to report a sender,
/// while one that keeps relabelling cannot fill this device's disk. Past
/// it, messages are still refused (and acknowledged), just not kept.
pub const MAX_EVIDENCE_PER_SENDER: usize = 100;
/// Refused messages kept at most, all senders together (a relay can make
/// accounts at will, and each could fill its own share).
pub const MAX_EVIDENCE: usize = 2000;
/// Stored bytes of evidence records at most (sealed sizes), all senders
/// together: room for two thousand ordinary messages, or about a hundred
/// maximal ones.
pub const MAX_EVIDENCE_BYTES: usize = 32 * 1024 * 1024;

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

/// What [`save`] did with a refused message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    /// Kept now.
    Kept,
    /// This very envelope was kept before.
    AlreadyKept,
    /// Another message from the same sender under the same id is kept, not
    /// this one: the first copy is never replaced (a sender or the relay
    /// reusing an id cannot swap the evidence).
    OtherCopyKept,
    /// Not kept: the sender's share or all senders' is full.
    Full,
}

impl Saved {
    /// Whether this message's envelope is kept (now or before).
    pub fn is_kept(self) -> bool {
        matches!(self, Self::Kept | Self::AlreadyKept)
    }

    /// The warning for message `id` from `from` (which `what`: "was
    /// refused", "breaks a rule") if it is not kept.
    pub fn warning(self, from: AccountId, id: MessageId, what: &str) -> Option<String> {
        match self {
            Self::Kept | Self::AlreadyKept => None,
            Self::Full => Some(format!(
                "message {id} from {from} {what} but is not kept as evidence: the evidence this \
                 device keeps (of this sender, or of all) is full"
            )),
            Self::OtherCopyKept => Some(format!(
                "message {id} from {from} {what} but is not kept as evidence: another message \
                 from {from} under the same id is kept, and the first is never replaced"
            )),
        }
    }
}

/// What sealing adds to a record at most (nonce, tag, tree and key
/// binding), for the byte bound.
const SEALED_EXTRA_MAX: usize = 256;

/// Keep a refused message, and say what was done: the first message under
/// a sender and id is kept (a later one under the same sender and id does
/// not replace it); a new one is not once the sender has
/// [`MAX_EVIDENCE_PER_SENDER`] records, or once all senders' records reach
/// [`MAX_EVIDENCE`] or [`MAX_EVIDENCE_BYTES`]. Past the bounds a message
/// is still refused and acknowledged, just not kept.
pub fn save(store: &Store, evidence: &Evidence) -> Result<Saved> {
    save_bounded(store, evidence, MAX_EVIDENCE, MAX_EVIDENCE_BYTES)
}

fn save_bounded(
    store: &Store,
    evidence: &Evidence,
    max_count: usize,
    max_bytes: usize,
) -> Result<Saved> {
    let key = key(&evidence.from, &evidence.envelope);
    if let Some(kept) = store.get(Tree::Evidence, &key)? {
        // A kept record that does not decode (damaged, or written by a
        // later version) stays as it is, as any other first copy does.
        let same = EvidenceRecord::decode(kept.as_slice())
            .is_ok_and(|kept| kept.envelope == evidence.envelope.encode_to_vec());
        return Ok(if same {
            Saved::AlreadyKept
        } else {
            Saved::OtherCopyKept
        });
    }
    if store.count(Tree::Evidence, evidence.from.as_bytes())? >= MAX_EVIDENCE_PER_SENDER {
        return Ok(Saved::Full);
    }
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
    // Refusals are rare: the store-wide bounds are checked from the
    // records' sizes (nothing opened) rather than kept as totals.
    let sizes = store.sizes(Tree::Evidence, b"")?;
    let bytes: usize = sizes.iter().map(|(_, len)| len).sum();
    if sizes.len() >= max_count || bytes + record.len() + SEALED_EXTRA_MAX > max_bytes {
        return Ok(Saved::Full);
    }
    store.put(Tree::Evidence, &key, &record)?;
    Ok(Saved::Kept)
}

/// What this device kept as evidence (see [`all`]).
#[derive(Clone, Debug, Default)]
pub struct KeptEvidence {
    /// The refused messages kept, by sender then id.
    pub evidence: Vec<Evidence>,
    /// Kept records that do not read back (damaged, or written by a later
    /// version): left in the store as they are, and not listed.
    pub unreadable: usize,
}

/// Every refused message kept on this device, by sender then id; a record
/// that does not read back is counted, not an error, so one damaged record
/// does not hide the others.
pub fn all(store: &Store) -> Result<KeptEvidence> {
    let mut kept = KeptEvidence::default();
    for (key, value) in store.scan(Tree::Evidence, b"")? {
        match read(&key, &value) {
            Some(evidence) => kept.evidence.push(evidence),
            None => kept.unreadable += 1,
        }
    }
    Ok(kept)
}

/// One kept record, if it reads back.
fn read(key: &[u8], value: &[u8]) -> Option<Evidence> {
    let mut record = EvidenceRecord::decode(value).ok()?;
    let plaintext = Zeroizing::new(std::mem::take(&mut record.plaintext));
    let from = AccountId::from_bytes(key.get(..16)?).ok()?;
    let envelope = Envelope::decode(record.envelope.as_slice()).ok()?;
    let label = match record.label {
        0 => None,
        n => Some(*Label::ALL.get(n as usize - 1)?),
    };
    Some(Evidence {
        from,
        envelope,
        plaintext,
        refusal: record.refusal,
        label,
        stored_at_ms: record.stored_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ClientError;
    use crate::store::FAST_TEST_KDF;

    fn evidence(from: AccountId, n: u8) -> Evidence {
        Evidence {
            from,
            envelope: Envelope {
                message_id: vec![n; 16],
                sender_account: from.to_vec(),
                ..Envelope::default()
            },
            plaintext: vec![n; 8].into(),
            refusal: "label mismatch: category".into(),
            label: Some(Label::Category),
            stored_at_ms: 5,
        }
    }

    #[test]
    fn kept_sealed_and_capped_per_sender() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("temp dir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST_TEST_KDF)?;
        let (mallory, alice) = (
            AccountId::from_bytes(&[1; 16]),
            AccountId::from_bytes(&[2; 16]),
        );
        let (Ok(mallory), Ok(alice)) = (mallory, alice) else {
            panic!("ids")
        };
        for n in 0..MAX_EVIDENCE_PER_SENDER as u8 {
            assert_eq!(save(&store, &evidence(mallory, n))?, Saved::Kept);
        }
        // The same envelope again is kept already; a new one is not kept.
        assert_eq!(save(&store, &evidence(mallory, 0))?, Saved::AlreadyKept);
        assert_eq!(save(&store, &evidence(mallory, 200))?, Saved::Full);
        // Another sender is not affected.
        assert_eq!(save(&store, &evidence(alice, 0))?, Saved::Kept);
        let all = all(&store)?.evidence;
        assert_eq!(all.len(), MAX_EVIDENCE_PER_SENDER + 1);
        let first = &all[0];
        assert_eq!(first.label, Some(Label::Category));
        assert_eq!(first.plaintext.as_slice(), &[0u8; 8]);
        assert!(!format!("{first:?}").contains("plaintext"));
        Ok(())
    }

    /// A sender cannot replace the evidence kept of its envelope with
    /// another message under the same id (before, a save replaced it).
    #[test]
    fn the_first_copy_of_an_envelope_is_the_one_kept() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("temp dir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST_TEST_KDF)?;
        let Ok(mallory) = AccountId::from_bytes(&[1; 16]) else {
            panic!("id")
        };
        assert_eq!(save(&store, &evidence(mallory, 7))?, Saved::Kept);
        let mut other = evidence(mallory, 7);
        other.envelope.ciphertext = vec![9; 40];
        other.plaintext = vec![9; 8].into();
        other.refusal = "something else".into();
        // Told apart from the same envelope again (before, both were
        // "kept").
        assert_eq!(save(&store, &other)?, Saved::OtherCopyKept);
        assert!(!Saved::OtherCopyKept.is_kept());
        assert_eq!(save(&store, &evidence(mallory, 7))?, Saved::AlreadyKept);
        // A kept record that does not decode stays, and is no error.
        let mut odd = evidence(mallory, 8);
        store.put(
            Tree::Evidence,
            &key(&odd.from, &odd.envelope),
            &[0xff, 0xff],
        )?;
        odd.envelope.ciphertext = vec![8; 40];
        assert_eq!(save(&store, &odd)?, Saved::OtherCopyKept);
        store.remove(Tree::Evidence, &key(&odd.from, &odd.envelope))?;
        let kept = all(&store)?.evidence;
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].plaintext.as_slice(), &[7u8; 8]);
        assert_eq!(kept[0].refusal, "label mismatch: category");
        Ok(())
    }

    /// A kept record that does not read back (damaged, or written by a
    /// later version: here an undecodable one and one naming a label this
    /// version does not know) is counted, and the others are still listed
    /// (before, listing failed as a whole).
    #[test]
    fn a_record_that_does_not_read_back_hides_no_other() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("temp dir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST_TEST_KDF)?;
        let (Ok(mallory), Ok(alice)) = (
            AccountId::from_bytes(&[1; 16]),
            AccountId::from_bytes(&[2; 16]),
        ) else {
            panic!("ids")
        };
        assert_eq!(save(&store, &evidence(mallory, 1))?, Saved::Kept);
        assert_eq!(save(&store, &evidence(alice, 3))?, Saved::Kept);
        let damaged = evidence(mallory, 2);
        store.put(
            Tree::Evidence,
            &key(&damaged.from, &damaged.envelope),
            &[0xff, 0xff],
        )?;
        let later = evidence(alice, 2);
        let record = EvidenceRecord {
            version: EVIDENCE_RECORD_VERSION + 1,
            envelope: later.envelope.encode_to_vec(),
            plaintext: later.plaintext.to_vec(),
            refusal: later.refusal.clone(),
            label: Label::ALL.len() as u32 + 1,
            stored_at_ms: 9,
        };
        store.put(
            Tree::Evidence,
            &key(&later.from, &later.envelope),
            &record.encode_to_vec(),
        )?;

        let kept = all(&store)?;
        assert_eq!(kept.unreadable, 2);
        let listed: Vec<_> = kept
            .evidence
            .iter()
            .map(|e| (e.from, e.envelope.message_id[0]))
            .collect();
        assert_eq!(listed, vec![(mallory, 1), (alice, 3)]);
        Ok(())
    }

    /// Many senders together cannot fill the disk: past the store-wide
    /// bounds nothing more is kept (before, only the per-sender count
    /// bounded it: a relay making accounts at will could add ~13 MB each).
    /// Smaller bounds than the shipped ones, for the test's speed.
    #[test]
    fn evidence_is_bounded_across_senders() -> Result<()> {
        const { assert!(MAX_EVIDENCE * 4096 <= MAX_EVIDENCE_BYTES) };
        const { assert!(MAX_EVIDENCE_PER_SENDER < MAX_EVIDENCE) };
        let (max_count, max_bytes) = (60, 1024 * 1024);
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("temp dir", e))?;
        let store = Store::create(dir.path(), "pw-long-enough", FAST_TEST_KDF)?;
        let sender = |n: u8| {
            AccountId::from_bytes(&[n; 16]).map_err(|_| ClientError::CorruptStore("id".into()))
        };
        let big = |from: AccountId, n: u8| {
            let mut e = evidence(from, n);
            e.envelope.ciphertext = vec![n; 32 * 1024];
            e.plaintext = vec![n; 32 * 1024].into();
            e
        };
        let keep = |e: &Evidence| save_bounded(&store, e, max_count, max_bytes);
        let mut kept = 0usize;
        for s in 0..8u8 {
            for n in 0..4u8 {
                kept += usize::from(keep(&big(sender(s)?, n))?.is_kept());
            }
        }
        let stored: usize = store
            .sizes(Tree::Evidence, b"")?
            .iter()
            .map(|(_, len)| len)
            .sum();
        assert!(stored <= max_bytes, "{stored} bytes kept");
        assert!((1..32).contains(&kept), "{kept} of 32 kept");
        // Small ones are bounded by count.
        for s in 100..120u8 {
            for n in 0..5u8 {
                kept += usize::from(keep(&evidence(sender(s)?, n))?.is_kept());
            }
        }
        assert_eq!(kept, max_count);
        assert_eq!(all(&store)?.evidence.len(), max_count);
        Ok(())
    }

    /// The warning names what happened to the message: refused, or shown
    /// though it breaks a rule (the second is not "refused").
    #[test]
    fn the_not_kept_warning_says_what_happened() -> Result<()> {
        let (from, id) = (AccountId::from_bytes(&[3; 16])?, MessageId::generate());
        assert_eq!(Saved::Kept.warning(from, id, "was refused"), None);
        assert_eq!(Saved::AlreadyKept.warning(from, id, "was refused"), None);
        let full = Saved::Full
            .warning(from, id, "breaks a rule")
            .unwrap_or_default();
        assert!(
            full.contains("breaks a rule") && full.contains("is full"),
            "{full}"
        );
        assert!(!full.contains("refused"), "{full}");
        let other = Saved::OtherCopyKept
            .warning(from, id, "was refused")
            .unwrap_or_default();
        assert!(other.contains("under the same id is kept"), "{other}");
        Ok(())
    }
}
