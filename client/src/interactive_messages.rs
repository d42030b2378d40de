//! Interactive messages (reply buttons, lists) this account sent or
//! received, kept beside their history entry (whose text shows them): the
//! customer's client checks a pick against the message it received, the
//! business's devices check a customer's choice against the message one
//! of them sent (the sending device records it when sending, the others
//! from its sync copy).
//!
//! Records (sealed in the [`Store`]): tree `InteractiveMessages` by peer
//! (16) || message id (16): the `comptoir.content.Interactive` protobuf.

use comptoir_protocol::AccountId;
use comptoir_protocol::proto::content::Interactive;
use prost::Message;

use crate::error::{ClientError, Result};
use crate::messages::MessageId;
use crate::store::{Store, Tree};

fn key(peer: &AccountId, id: &MessageId) -> Vec<u8> {
    let mut key = peer.to_vec();
    key.extend_from_slice(&id.0);
    key
}

/// Keep `message`, exchanged with `peer` as the message `id`.
pub fn record(
    store: &Store,
    peer: &AccountId,
    id: &MessageId,
    message: &Interactive,
) -> Result<()> {
    store.put(
        Tree::InteractiveMessages,
        &key(peer, id),
        &message.encode_to_vec(),
    )
}

/// The interactive message `id` exchanged with `peer`, if it was one.
pub fn get(store: &Store, peer: &AccountId, id: &MessageId) -> Result<Option<Interactive>> {
    let Some(bytes) = store.get(Tree::InteractiveMessages, &key(peer, id))? else {
        return Ok(None);
    };
    Interactive::decode(bytes.as_slice())
        .map(Some)
        .map_err(|_| ClientError::CorruptStore("an interactive message".into()))
}
