//! Message franking (docs/PROTOCOL.md, "Message franking"): the sender's
//! commitment to the plaintext, the recipient's check that it opens, and
//! the relay's tag binding it to the metadata the relay saw at accept.
//!
//! The construction Facebook published for Messenger (and Grubbs, Lu and
//! Ristenpart analysed): a fresh 32-byte franking key travels inside the
//! encrypted content; the commitment is HMAC-SHA256 under that key of the
//! content itself, with its bound labels. The relay, which sees only the
//! commitment, binds it with HMAC-SHA256 under a key of its own to the
//! sender, recipient, accept id, category, template id and time. A
//! recipient who reports the message reveals the content and the franking
//! key; the operator recomputes both MACs. Pure functions: no I/O.

use hmac::{Hmac, KeyInit, Mac};
use prost::Message;
use rand_core::CryptoRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::proto::content::Content;

/// Length of a franking key.
pub const FRANKING_KEY_LEN: usize = 32;
/// Length of a franking commitment and of a relay tag (HMAC-SHA256).
pub const FRANKING_TAG_LEN: usize = 32;
/// Length of the relay's franking key.
pub const RELAY_FRANKING_KEY_LEN: usize = 32;
/// Context string opening [`relay_tag_payload`].
pub const RELAY_TAG_CONTEXT: &[u8] = b"Comptoir relay franking v1";

type HmacSha256 = Hmac<Sha256>;

/// A sender's franking key: 32 random bytes, zeroized on drop, never
/// printed.
pub struct FrankingKey(Zeroizing<[u8; FRANKING_KEY_LEN]>);

impl FrankingKey {
    /// A fresh key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut key = Zeroizing::new([0u8; FRANKING_KEY_LEN]);
        rng.fill_bytes(key.as_mut());
        Self(key)
    }

    /// A key from its bytes (`None` unless exactly 32).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let key: [u8; FRANKING_KEY_LEN] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(key)))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; FRANKING_KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for FrankingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrankingKey(..)")
    }
}

/// Why a franking commitment does not open.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrankingError {
    /// The content carries no franking commitment, or no franking key.
    #[error("the message is not franked: it carries no franking commitment or no franking key")]
    Unfranked,
    /// The key or the commitment has the wrong length.
    #[error("the franking {field} is {got} bytes, not 32")]
    BadLength {
        /// `"key"` or `"commitment"`.
        field: &'static str,
        /// Its length.
        got: usize,
    },
    /// HMAC-SHA256 of the content under its franking key is not the
    /// commitment: the content is not the one the sender committed to.
    #[error(
        "the franking commitment does not open over this content: it is not what the sender \
         committed to, and is kept as evidence"
    )]
    DoesNotOpen,
}

/// The committed bytes of `content`: its protobuf encoding (proto3 as
/// prost writes it: fields in field-number order, defaults absent) with
/// `franking_key`, `labels.franking_commitment` and `padding` empty. The
/// commitment covers everything else, the bound labels included.
pub fn committed_bytes(content: &Content) -> Zeroizing<Vec<u8>> {
    let mut stripped = Content {
        franking_key: Vec::new(),
        padding: Vec::new(),
        ..content.clone()
    };
    if let Some(labels) = stripped.labels.as_mut() {
        labels.franking_commitment.clear();
    }
    let bytes = Zeroizing::new(stripped.encode_to_vec());
    zeroize::Zeroize::zeroize(&mut stripped.franking_key);
    bytes
}

/// HMAC-SHA256 of `committed` under `key`.
pub fn commitment(key: &FrankingKey, committed: &[u8]) -> [u8; FRANKING_TAG_LEN] {
    mac(key.as_bytes(), committed)
}

fn mac(key: &[u8], message: &[u8]) -> [u8; FRANKING_TAG_LEN] {
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return [0; FRANKING_TAG_LEN];
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Frank `content` (its labels already bound, the commitment among them
/// empty): put `key` in it, and the commitment over its committed bytes
/// in its labels. Returns the commitment (the envelope's franking tag).
/// Content without labels gets labels bound by the caller first; here it
/// is franked over what it holds.
pub fn frank(content: &mut Content, key: &FrankingKey) -> [u8; FRANKING_TAG_LEN] {
    let committed = committed_bytes(content);
    let tag = commitment(key, &committed);
    if let Some(labels) = content.labels.as_mut() {
        labels.franking_commitment = tag.to_vec();
    }
    content.franking_key = key.as_bytes().to_vec();
    tag
}

/// Whether `commitment` opens to `committed` under `key` (lengths checked,
/// MAC compared in constant time).
pub fn check_opening(committed: &[u8], key: &[u8], commitment: &[u8]) -> Result<(), FrankingError> {
    if key.len() != FRANKING_KEY_LEN {
        return Err(FrankingError::BadLength {
            field: "key",
            got: key.len(),
        });
    }
    if commitment.len() != FRANKING_TAG_LEN {
        return Err(FrankingError::BadLength {
            field: "commitment",
            got: commitment.len(),
        });
    }
    let expected = mac(key, committed);
    if bool::from(expected.ct_eq(commitment)) {
        Ok(())
    } else {
        Err(FrankingError::DoesNotOpen)
    }
}

/// The recipient's check of a decrypted content: its bound commitment
/// opens under its franking key over its committed bytes. The labels
/// check (`labels::check`) compares the same commitment with the
/// envelope's franking tag.
pub fn open(content: &Content) -> Result<(), FrankingError> {
    let commitment = content
        .labels
        .as_ref()
        .map(|l| l.franking_commitment.as_slice())
        .unwrap_or_default();
    if commitment.is_empty() || content.franking_key.is_empty() {
        return Err(FrankingError::Unfranked);
    }
    check_opening(&committed_bytes(content), &content.franking_key, commitment)
}

/// What the relay's franking tag covers: the envelope's commitment and
/// the metadata the relay vouches for, as it was at accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayTagFields<'a> {
    /// The relay franking key's id.
    pub key_id: u32,
    /// The envelope's franking commitment (at most 64 bytes are covered;
    /// the relay refuses longer ones).
    pub commitment: &'a [u8],
    /// The envelope's message id (16 bytes).
    pub message_id: &'a [u8],
    /// The authenticated sender account (16 bytes).
    pub sender_account: &'a [u8],
    /// The authenticated sender device.
    pub sender_device: u32,
    /// The recipient account (16 bytes).
    pub recipient_account: &'a [u8],
    /// The recipient device of this copy.
    pub recipient_device: u32,
    /// The relay's accept id of the send.
    pub accept_id: u64,
    /// The envelope's category number.
    pub category: i32,
    /// The envelope's template id (empty when none; at most 128 bytes).
    pub template_id: &'a str,
    /// The relay's clock at accept (`server_timestamp_ms`).
    pub server_timestamp_ms: u64,
}

/// The bytes the relay's tag covers:
///
/// ```text
/// "Comptoir relay franking v1" (26 bytes) || key_id (u32 BE) ||
/// commitment_len (u16 BE) || commitment || message_id_len (u8) ||
/// message_id || sender_account_len (u8) || sender_account ||
/// sender_device (u32 BE) || recipient_account_len (u8) ||
/// recipient_account || recipient_device (u32 BE) || accept_id (u64 BE) ||
/// category (i32 BE) || template_id_len (u16 BE) || template_id (UTF-8) ||
/// server_timestamp_ms (u64 BE)
/// ```
///
/// Each variable field is cut at the longest its length prefix holds.
pub fn relay_tag_payload(fields: &RelayTagFields<'_>) -> Vec<u8> {
    fn short(bytes: &[u8]) -> &[u8] {
        &bytes[..bytes.len().min(u8::MAX as usize)]
    }
    fn long(bytes: &[u8]) -> &[u8] {
        &bytes[..bytes.len().min(u16::MAX as usize)]
    }
    let commitment = long(fields.commitment);
    let template = long(fields.template_id.as_bytes());
    let mut out = Vec::with_capacity(RELAY_TAG_CONTEXT.len() + 128 + template.len());
    out.extend_from_slice(RELAY_TAG_CONTEXT);
    out.extend_from_slice(&fields.key_id.to_be_bytes());
    out.extend_from_slice(&(commitment.len() as u16).to_be_bytes());
    out.extend_from_slice(commitment);
    for (account, device) in [
        (fields.message_id, None),
        (fields.sender_account, Some(fields.sender_device)),
        (fields.recipient_account, Some(fields.recipient_device)),
    ] {
        let account = short(account);
        out.push(account.len() as u8);
        out.extend_from_slice(account);
        if let Some(device) = device {
            out.extend_from_slice(&device.to_be_bytes());
        }
    }
    out.extend_from_slice(&fields.accept_id.to_be_bytes());
    out.extend_from_slice(&fields.category.to_be_bytes());
    out.extend_from_slice(&(template.len() as u16).to_be_bytes());
    out.extend_from_slice(template);
    out.extend_from_slice(&fields.server_timestamp_ms.to_be_bytes());
    out
}

/// The relay's tag: HMAC-SHA256 under the relay's franking key of
/// [`relay_tag_payload`].
pub fn relay_tag(
    key: &[u8; RELAY_FRANKING_KEY_LEN],
    fields: &RelayTagFields<'_>,
) -> [u8; FRANKING_TAG_LEN] {
    mac(key, &relay_tag_payload(fields))
}

/// Whether `tag` is the relay's tag over `fields` under `key` (constant
/// time).
pub fn check_relay_tag(
    key: &[u8; RELAY_FRANKING_KEY_LEN],
    fields: &RelayTagFields<'_>,
    tag: &[u8],
) -> bool {
    tag.len() == FRANKING_TAG_LEN && bool::from(relay_tag(key, fields).ct_eq(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels;
    use crate::proto::content::{Text, content};
    use crate::proto::wire::Category;

    fn franked() -> (Content, FrankingKey, [u8; 32]) {
        let mut content = Content {
            message_id: vec![1; 16],
            sent_at_ms: 5,
            body: Some(content::Body::Text(Text { body: "hi".into() })),
            labels: Some(labels::bind(
                &[1; 16],
                &[2; 16],
                &[3; 16],
                Category::Service,
                "",
                &[],
            )),
            ..Content::default()
        };
        let key = FrankingKey::from_bytes(&[9; 32]).unwrap_or_else(|| unreachable!());
        let tag = frank(&mut content, &key);
        content.padding = vec![0; 7];
        (content, key, tag)
    }

    #[test]
    fn a_franked_content_opens_and_padding_does_not_count() {
        let (content, _, tag) = franked();
        assert_eq!(open(&content), Ok(()));
        assert_eq!(
            content
                .labels
                .as_ref()
                .map(|l| l.franking_commitment.clone()),
            Some(tag.to_vec())
        );
    }

    #[test]
    fn any_change_does_not_open() {
        let (content, _, _) = franked();
        let mut text = content.clone();
        text.body = Some(content::Body::Text(Text { body: "ho".into() }));
        assert_eq!(open(&text), Err(FrankingError::DoesNotOpen));
        let mut label = content.clone();
        if let Some(l) = label.labels.as_mut() {
            l.sender_account[0] ^= 1;
        }
        assert_eq!(open(&label), Err(FrankingError::DoesNotOpen));
        let mut key = content.clone();
        key.franking_key[0] ^= 1;
        assert_eq!(open(&key), Err(FrankingError::DoesNotOpen));
        let mut none = content.clone();
        none.franking_key.clear();
        assert_eq!(open(&none), Err(FrankingError::Unfranked));
        let mut short = content;
        short.franking_key.pop();
        assert_eq!(
            open(&short),
            Err(FrankingError::BadLength {
                field: "key",
                got: 31
            })
        );
    }

    #[test]
    fn the_relay_tag_covers_each_field() {
        let key = [7u8; 32];
        let base = RelayTagFields {
            key_id: 1,
            commitment: &[4; 32],
            message_id: &[1; 16],
            sender_account: &[2; 16],
            sender_device: 1,
            recipient_account: &[3; 16],
            recipient_device: 2,
            accept_id: 9,
            category: Category::Marketing as i32,
            template_id: "t",
            server_timestamp_ms: 1000,
        };
        let tag = relay_tag(&key, &base);
        assert!(check_relay_tag(&key, &base, &tag));
        let other = [0u8; 16];
        let changed = [
            RelayTagFields {
                key_id: 2,
                ..base.clone()
            },
            RelayTagFields {
                commitment: &[5; 32],
                ..base.clone()
            },
            RelayTagFields {
                message_id: &other,
                ..base.clone()
            },
            RelayTagFields {
                sender_account: &other,
                ..base.clone()
            },
            RelayTagFields {
                sender_device: 2,
                ..base.clone()
            },
            RelayTagFields {
                recipient_account: &other,
                ..base.clone()
            },
            RelayTagFields {
                recipient_device: 1,
                ..base.clone()
            },
            RelayTagFields {
                accept_id: 10,
                ..base.clone()
            },
            RelayTagFields {
                category: Category::Utility as i32,
                ..base.clone()
            },
            RelayTagFields {
                template_id: "u",
                ..base.clone()
            },
            RelayTagFields {
                server_timestamp_ms: 1001,
                ..base.clone()
            },
        ];
        for fields in changed {
            assert!(!check_relay_tag(&key, &fields, &tag), "{fields:?}");
        }
        assert!(!check_relay_tag(&[8; 32], &base, &tag));
    }
}
