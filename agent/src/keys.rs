//! API keys: what a backend presents (`Authorization: Bearer ck_…`), kept
//! by the daemon only as SHA-256 hashes with their scopes.
//!
//! Why a plain SHA-256 and not a password hash: a key is 32 random bytes
//! from the operating system's generator, so it has 256 bits of entropy;
//! guessing it from its hash is as hard as guessing it outright, with or
//! without a salt or a slow function. A slow KDF (Argon2) earns its cost
//! only for secrets people choose; here it would cost every API request
//! CPU time and add no security. The hash means a leaked configuration
//! file or backup does not give anyone a usable key.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use zeroize::Zeroizing;

/// The prefix of every key, so one found in a log or a repository is
/// recognisable (and secret scanners can match it).
pub const KEY_PREFIX: &str = "ck_";

/// What a key allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    /// Send text and template messages.
    #[serde(rename = "messages:send")]
    MessagesSend,
    /// List conversations and messages, search them.
    #[serde(rename = "messages:read")]
    MessagesRead,
    /// Ask customers for consent by phone number.
    #[serde(rename = "consent:request")]
    ConsentRequest,
    /// Read the bill (checked) and the business's standing.
    #[serde(rename = "billing:read")]
    BillingRead,
}

impl Scope {
    /// The scope's name in configuration and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MessagesSend => "messages:send",
            Self::MessagesRead => "messages:read",
            Self::ConsentRequest => "consent:request",
            Self::BillingRead => "billing:read",
        }
    }
}

/// One configured key: a name for logs, its hash, its scopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Shown in logs and errors instead of the key.
    pub name: String,
    /// SHA-256 of the key's text.
    pub sha256: [u8; 32],
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// A new random key and its hash (for `agent key new`).
pub fn generate() -> (Zeroizing<String>, [u8; 32]) {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::fill(&mut bytes[..]);
    let key = Zeroizing::new(format!("{KEY_PREFIX}{}", hex::encode(&bytes[..])));
    let hash = hash(&key);
    (key, hash)
}

/// The SHA-256 of a key's text.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The configured key whose hash matches `presented`, comparing every
/// hash in constant time (no early exit on a match).
pub fn find<'a>(keys: &'a [ApiKey], presented: &str) -> Option<&'a ApiKey> {
    let wanted = hash(presented);
    let mut found = None;
    for key in keys {
        if bool::from(key.sha256.ct_eq(&wanted)) {
            found = Some(key);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_found_by_its_hash_only() {
        let (key, sha256) = generate();
        assert!(key.starts_with(KEY_PREFIX));
        assert_eq!(key.len(), KEY_PREFIX.len() + 64);
        let keys = vec![ApiKey {
            name: "backend".into(),
            sha256,
            scopes: vec![Scope::MessagesSend],
        }];
        assert_eq!(find(&keys, &key).map(|k| k.name.as_str()), Some("backend"));
        assert!(find(&keys, &hex::encode(sha256)).is_none());
        assert!(find(&keys, "ck_wrong").is_none());
        let (other, _) = generate();
        assert_ne!(*other, *key);
    }
}
