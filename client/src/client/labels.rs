//! The receiving half of bound labels: compare the labels decrypted from a
//! content with the envelope it arrived in (and its category with what the
//! body is), and keep a refused message aside as evidence. Called from one
//! place, `receive`, after a successful decryption: a refused message is
//! still acknowledged and its session kept (it decrypted fine, so nothing
//! calls for a re-key).

use comptoir_protocol::proto::content::Content;
use comptoir_protocol::proto::wire::Envelope;
use comptoir_protocol::{AccountId, LabelError, franking, labels};

use crate::error::Result;
use crate::event::Event;
use crate::evidence::{self, Evidence, KeptEvidence};
use crate::messages::MessageId;

use super::{Client, now_ms};

impl Client {
    /// `None` if the labels check out; otherwise the message is kept as
    /// evidence and the returned event reports the refusal.
    pub(super) fn screen_labels(
        &mut self,
        from: AccountId,
        id: MessageId,
        envelope: &Envelope,
        content: &Content,
        plaintext: &[u8],
    ) -> Result<Option<Event>> {
        // A content that carries a franking key must open its commitment
        // (bound as a label, so equal to the envelope's franking tag): one
        // that does not is refused like a relabelled one. A content with no
        // key is unfranked (an older or hand-made sender): shown, but it
        // cannot be reported.
        let checked = labels::check(content, envelope).and_then(|()| {
            if content.franking_key.is_empty() {
                Ok(())
            } else {
                franking::open(content).map_err(LabelError::Franking)
            }
        });
        let reason = match checked {
            Ok(()) => return Ok(None),
            Err(reason) => reason,
        };
        let label = match &reason {
            LabelError::LabelMismatch { label } => Some(*label),
            _ => None,
        };
        let saved = evidence::save(
            &self.store,
            &Evidence {
                from,
                envelope: envelope.clone(),
                plaintext: plaintext.to_vec().into(),
                refusal: reason.to_string(),
                label,
                stored_at_ms: now_ms(),
            },
        )?;
        if let Some(warning) = saved.warning(from, id, "was refused") {
            self.events.push_back(Event::Warning(warning));
        }
        Ok(Some(Event::Refused { from, id, reason }))
    }

    /// The messages this device refused by their labels, kept as
    /// evidence, and how many kept records do not read back.
    pub fn evidence(&self) -> Result<KeptEvidence> {
        evidence::all(&self.store)
    }
}
