//! The operator key this client trusts: pinned the first time a relay
//! presents one (in `AuthOk`), or set from configuration
//! ([`crate::Client::pin_operator_key`]). A relay that later presents
//! another key does not replace the pin: the client reports
//! [`crate::Event::OperatorKeyChanged`] and keeps judging certificates and
//! template approvals by the pinned key, so nothing signed by the new key
//! shows as verified until the user pins it on purpose.
//!
//! Record (sealed in the [`Store`]): tree `Operator`, key `key`: the
//! 32-byte Ed25519 public key.

use comptoir_protocol::OperatorKey;

use crate::error::Result;
use crate::store::{Store, Tree};

const KEY: &[u8] = b"key";

/// What a relay's key did to the pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinOutcome {
    /// The relay presented no key (an older relay): nothing changed.
    NoneOffered,
    /// The relay presented a key that is not a valid Ed25519 public key.
    Malformed,
    /// Nothing was pinned: this key is now.
    PinnedNow(OperatorKey),
    /// The pinned key, again.
    Same,
    /// Another key than the pinned one; the pin is kept.
    Changed {
        /// The key this client keeps trusting.
        pinned: OperatorKey,
        /// What the relay presented.
        offered: OperatorKey,
    },
}

/// The pinned key, if any.
pub fn pinned(store: &Store) -> Result<Option<OperatorKey>> {
    Ok(store
        .get(Tree::Operator, KEY)?
        .and_then(|bytes| OperatorKey::from_bytes(&bytes).ok()))
}

/// Pin `key` (replacing any earlier pin): the user or its configuration
/// said so.
pub fn pin(store: &Store, key: &OperatorKey) -> Result<()> {
    store.put(Tree::Operator, KEY, &key.to_bytes())
}

/// Compare what a relay presented with the pin; pin it on first use.
pub fn observe(store: &Store, offered: &[u8]) -> Result<PinOutcome> {
    if offered.is_empty() {
        return Ok(PinOutcome::NoneOffered);
    }
    let Ok(offered) = OperatorKey::from_bytes(offered) else {
        return Ok(PinOutcome::Malformed);
    };
    Ok(match pinned(store)? {
        None => {
            pin(store, &offered)?;
            PinOutcome::PinnedNow(offered)
        }
        Some(pinned) if pinned == offered => PinOutcome::Same,
        Some(pinned) => PinOutcome::Changed { pinned, offered },
    })
}
