//! The body of an outgoing message that is not plain text (a template
//! instance, a quick reply), with the envelope labels it is sent under,
//! kept beside its history entry (whose text is what the user saw): the
//! outbox encrypts it again from this record when the recipient's devices
//! changed, and a re-send over a fresh session (after the peer could not
//! decrypt it) sends it again as itself, exactly as both do for text. Kept
//! after acceptance for that re-send; removed when the send fails for good.
//!
//! Stored as a `comptoir.content.Content` holding only the body and the
//! labels' category and template id.

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::{Content, Labels, content};
use comptoir_protocol::proto::wire::Category;
use prost::Message;

use crate::error::{ClientError, Result};
use crate::messages::MessageId;
use crate::store::{Store, Tree};

/// A non-text body to send, with its category and envelope template id.
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingBody {
    /// What the content carries.
    pub body: content::Body,
    /// The envelope category.
    pub category: Category,
    /// The envelope template id (empty when not a template).
    pub template_id: String,
}

fn key(peer: &AccountId, id: &MessageId) -> Vec<u8> {
    let mut key = peer.to_vec();
    key.extend_from_slice(&id.0);
    key
}

/// Keep `body` for the message `id` to `peer`.
pub fn put(store: &Store, peer: &AccountId, id: &MessageId, body: &OutgoingBody) -> Result<()> {
    let record = Content {
        body: Some(body.body.clone()),
        labels: Some(Labels {
            category: body.category as i32,
            template_id: body.template_id.clone(),
            ..Labels::default()
        }),
        ..Content::default()
    };
    store.put(
        Tree::OutgoingBodies,
        &key(peer, id),
        &record.encode_to_vec(),
    )
}

/// The body kept for the message `id` to `peer`, if it is not plain text.
pub fn get(store: &Store, peer: &AccountId, id: &MessageId) -> Result<Option<OutgoingBody>> {
    let Some(bytes) = store.get(Tree::OutgoingBodies, &key(peer, id))? else {
        return Ok(None);
    };
    let corrupt = || ClientError::CorruptStore("an outgoing message body".into());
    let record = Content::decode(bytes.as_slice()).map_err(|_| corrupt())?;
    let (Some(body), Some(labels)) = (record.body, record.labels) else {
        return Err(corrupt());
    };
    Ok(Some(OutgoingBody {
        body,
        category: Category::try_from(labels.category).map_err(|_| corrupt())?,
        template_id: labels.template_id,
    }))
}

/// Forget the body of the message `id` to `peer` (accepted or failed).
pub fn remove(store: &Store, peer: &AccountId, id: &MessageId) -> Result<()> {
    store.remove(Tree::OutgoingBodies, &key(peer, id))
}
