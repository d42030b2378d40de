//! Byte layout of Double Ratchet messages (docs/PROTOCOL.md, "Messages").
//!
//! ```text
//! Message     = version (u8 = 1) || type (u8 = 1) || ratchet_key (32)
//!               || previous_counter (u32 BE) || counter (u32 BE)
//!               || ciphertext (plaintext length + 16-byte Poly1305 tag)
//! PreKeyMessage = version (u8 = 1) || type (u8 = 2)
//!               || initiator identity key (32, Ed25519) || base key (32, X25519)
//!               || signed_prekey_id (u32 BE) || has_one_time_prekey (u8: 0 or 1)
//!               || one_time_prekey_id (u32 BE; 0 when absent) || Message
//! ```
//! The first 42 bytes of a Message are its header, bound into the AEAD's
//! associated data. Decoders check the version byte, then the type, then
//! lengths, and refuse trailing or missing bytes.

use crate::error::{DecodeError, Result};
use crate::keys::{KEY_LEN, canonical_x25519, key_bytes};

/// The only message version this build speaks.
pub const MESSAGE_VERSION: u8 = 1;
/// Type byte of a normal ratchet message.
pub const TYPE_MESSAGE: u8 = 1;
/// Type byte of a prekey message (X3DH initial message).
pub const TYPE_PREKEY_MESSAGE: u8 = 2;
/// Length of the message header (version, type, ratchet key, PN, N).
pub const HEADER_LEN: usize = 2 + KEY_LEN + 4 + 4;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Length of the prekey message prefix before the embedded Message.
pub const PREKEY_PREFIX_LEN: usize = 2 + KEY_LEN + KEY_LEN + 4 + 1 + 4;
/// Largest plaintext one message may carry. Bigger content travels as an
/// encrypted attachment; this keeps a hostile message from costing more
/// than one frame's worth of work.
pub const MAX_PLAINTEXT_LEN: usize = 64 * 1024;
/// Largest encoded message accepted by the decoder.
pub const MAX_MESSAGE_LEN: usize = PREKEY_PREFIX_LEN + HEADER_LEN + MAX_PLAINTEXT_LEN + TAG_LEN;

/// The Double Ratchet header: `dh`, `pn`, `n` in the specification's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender's current ratchet public key.
    pub ratchet_key: [u8; KEY_LEN],
    /// Number of messages in the sender's previous sending chain.
    pub previous_counter: u32,
    /// Number of this message in the current sending chain.
    pub counter: u32,
}

impl Header {
    /// The 42 header bytes (version and type included).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = MESSAGE_VERSION;
        out[1] = TYPE_MESSAGE;
        out[2..34].copy_from_slice(&self.ratchet_key);
        out[34..38].copy_from_slice(&self.previous_counter.to_be_bytes());
        out[38..42].copy_from_slice(&self.counter.to_be_bytes());
        out
    }
}

/// A parsed ratchet message, borrowing the input.
#[derive(Clone, Copy, Debug)]
pub struct RatchetMessage<'a> {
    /// The header.
    pub header: Header,
    /// The header bytes as received (bound into the AEAD).
    pub header_bytes: &'a [u8],
    /// Ciphertext and tag.
    pub ciphertext: &'a [u8],
}

impl<'a> RatchetMessage<'a> {
    /// Parse a Message (type 1).
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        check_version_and_size(bytes)?;
        if bytes[1] != TYPE_MESSAGE {
            return Err(DecodeError::UnknownType(bytes[1]).into());
        }
        Self::decode_unchecked(bytes)
    }

    fn decode_unchecked(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(DecodeError::TooShort {
                expected: HEADER_LEN + TAG_LEN,
                got: bytes.len(),
            }
            .into());
        }
        let (header_bytes, ciphertext) = bytes.split_at(HEADER_LEN);
        let header = Header {
            ratchet_key: canonical_x25519("ratchet key", &header_bytes[2..34])?,
            previous_counter: read_u32(&header_bytes[34..38]),
            counter: read_u32(&header_bytes[38..42]),
        };
        Ok(Self {
            header,
            header_bytes,
            ciphertext,
        })
    }
}

/// A parsed prekey message, borrowing the input.
#[derive(Clone, Copy, Debug)]
pub struct PreKeyMessage<'a> {
    /// The initiator's Ed25519 identity key.
    pub identity_key: [u8; KEY_LEN],
    /// The initiator's X3DH ephemeral public key (`EK_A`).
    pub base_key: [u8; KEY_LEN],
    /// Which signed prekey of ours was used.
    pub signed_prekey_id: u32,
    /// Which one-time prekey of ours was used, if any.
    pub one_time_prekey_id: Option<u32>,
    /// The embedded first ratchet message.
    pub message: RatchetMessage<'a>,
}

impl<'a> PreKeyMessage<'a> {
    /// Encode a prekey message around an encoded Message.
    pub fn encode(
        identity_key: &[u8; KEY_LEN],
        base_key: &[u8; KEY_LEN],
        signed_prekey_id: u32,
        one_time_prekey_id: Option<u32>,
        message: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREKEY_PREFIX_LEN + message.len());
        out.push(MESSAGE_VERSION);
        out.push(TYPE_PREKEY_MESSAGE);
        out.extend_from_slice(identity_key);
        out.extend_from_slice(base_key);
        out.extend_from_slice(&signed_prekey_id.to_be_bytes());
        out.push(u8::from(one_time_prekey_id.is_some()));
        out.extend_from_slice(&one_time_prekey_id.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    /// Parse a PreKeyMessage (type 2).
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        check_version_and_size(bytes)?;
        if bytes[1] != TYPE_PREKEY_MESSAGE {
            return Err(DecodeError::UnknownType(bytes[1]).into());
        }
        if bytes.len() < PREKEY_PREFIX_LEN {
            return Err(DecodeError::TooShort {
                expected: PREKEY_PREFIX_LEN,
                got: bytes.len(),
            }
            .into());
        }
        let one_time_prekey_id = match bytes[70] {
            0 => {
                if read_u32(&bytes[71..75]) != 0 {
                    return Err(DecodeError::Protobuf(
                        "one-time prekey id must be 0 when absent".into(),
                    )
                    .into());
                }
                None
            }
            1 => Some(read_u32(&bytes[71..75])),
            other => {
                return Err(DecodeError::Protobuf(format!(
                    "one-time prekey flag must be 0 or 1, got {other}"
                ))
                .into());
            }
        };
        Ok(Self {
            identity_key: key_bytes("identity_key", &bytes[2..34])?,
            base_key: canonical_x25519("base key", &bytes[34..66])?,
            signed_prekey_id: read_u32(&bytes[66..70]),
            one_time_prekey_id,
            message: RatchetMessage::decode(&bytes[PREKEY_PREFIX_LEN..])?,
        })
    }
}

/// Either kind of incoming message.
#[derive(Clone, Copy, Debug)]
pub enum IncomingMessage<'a> {
    /// A normal ratchet message.
    Message(RatchetMessage<'a>),
    /// An X3DH initial message.
    PreKey(PreKeyMessage<'a>),
}

impl<'a> IncomingMessage<'a> {
    /// Parse either kind, dispatching on the type byte.
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        check_version_and_size(bytes)?;
        match bytes[1] {
            TYPE_MESSAGE => Ok(Self::Message(RatchetMessage::decode_unchecked(bytes)?)),
            TYPE_PREKEY_MESSAGE => Ok(Self::PreKey(PreKeyMessage::decode(bytes)?)),
            other => Err(DecodeError::UnknownType(other).into()),
        }
    }
}

fn check_version_and_size(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 2 {
        return Err(DecodeError::TooShort {
            expected: 2,
            got: bytes.len(),
        }
        .into());
    }
    if bytes[0] != MESSAGE_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            expected: MESSAGE_VERSION,
            got: bytes[0],
        }
        .into());
    }
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(DecodeError::TooLarge {
            limit: MAX_MESSAGE_LEN,
            got: bytes.len(),
        }
        .into());
    }
    Ok(())
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut buf = [0u8; 4];
    buf.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn header_round_trip() -> Result<()> {
        let header = Header {
            ratchet_key: [9; 32],
            previous_counter: 3,
            counter: 70_000,
        };
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(&[0; TAG_LEN]);
        let parsed = RatchetMessage::decode(&bytes)?;
        assert_eq!(parsed.header, header);
        assert_eq!(parsed.ciphertext.len(), TAG_LEN);
        Ok(())
    }

    #[test]
    fn prekey_round_trip_and_bad_flag() -> Result<()> {
        let mut inner = Header {
            ratchet_key: [1; 32],
            previous_counter: 0,
            counter: 0,
        }
        .encode()
        .to_vec();
        inner.extend_from_slice(&[0; TAG_LEN]);
        let bytes = PreKeyMessage::encode(&[2; 32], &[3; 32], 5, Some(6), &inner);
        let parsed = PreKeyMessage::decode(&bytes)?;
        assert_eq!(
            (parsed.signed_prekey_id, parsed.one_time_prekey_id),
            (5, Some(6))
        );
        let mut bad = bytes.clone();
        bad[70] = 2;
        assert!(matches!(
            PreKeyMessage::decode(&bad),
            Err(Error::Decode(DecodeError::Protobuf(_)))
        ));
        Ok(())
    }

    #[test]
    fn hostile_prefixes_never_panic() {
        for len in 0..120 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let _ = IncomingMessage::decode(&bytes);
            let mut v1 = bytes.clone();
            if !v1.is_empty() {
                v1[0] = MESSAGE_VERSION;
            }
            if v1.len() > 1 {
                v1[1] = TYPE_PREKEY_MESSAGE;
            }
            let _ = IncomingMessage::decode(&v1);
        }
    }
}
