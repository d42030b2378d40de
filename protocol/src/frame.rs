//! Framing of client <-> relay messages.
//!
//! Each WebSocket binary message carries exactly one frame:
//! `FRAME_VERSION (1 byte) || protobuf ClientFrame/ServerFrame`.
//! The version byte is checked first, then the size, then the protobuf; a
//! hostile input gets a [`DecodeError`] and never a panic. Prost allocates at
//! most the size of its input, and the input is capped at [`MAX_FRAME_SIZE`].

use prost::Message;

use crate::error::DecodeError;
use crate::proto::wire::{ClientFrame, ServerFrame};

/// The only frame version this build speaks.
pub const FRAME_VERSION: u8 = 1;

/// Largest frame accepted, version byte included. An envelope to an account
/// with many devices must fit: 256 KiB holds 16 devices of 15 KiB messages;
/// attachments travel as blobs, not in frames.
pub const MAX_FRAME_SIZE: usize = 256 * 1024;

/// Encode a client frame with its version byte.
pub fn encode_client(frame: &ClientFrame) -> Vec<u8> {
    encode(frame)
}

/// Encode a server frame with its version byte.
pub fn encode_server(frame: &ServerFrame) -> Vec<u8> {
    encode(frame)
}

/// Decode a client frame, checking version and size first.
pub fn decode_client(bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
    decode(bytes)
}

/// Decode a server frame, checking version and size first.
pub fn decode_server(bytes: &[u8]) -> Result<ServerFrame, DecodeError> {
    decode(bytes)
}

fn encode<M: Message>(frame: &M) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + frame.encoded_len());
    out.push(FRAME_VERSION);
    frame.encode_raw(&mut out);
    out
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::TooShort {
        expected: 1,
        got: 0,
    })?;
    if version != FRAME_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            expected: FRAME_VERSION,
            got: version,
        });
    }
    if bytes.len() > MAX_FRAME_SIZE {
        return Err(DecodeError::TooLarge {
            limit: MAX_FRAME_SIZE,
            got: bytes.len(),
        });
    }
    Ok(M::decode(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::{FetchPreKeys, client_frame};

    #[test]
    fn round_trip() -> Result<(), DecodeError> {
        let frame = ClientFrame {
            request_id: 7,
            body: Some(client_frame::Body::FetchPrekeys(FetchPreKeys {
                account_id: vec![1; 16],
                device_ids: Vec::new(),
            })),
        };
        let bytes = encode_client(&frame);
        assert_eq!(bytes[0], FRAME_VERSION);
        assert_eq!(decode_client(&bytes)?, frame);
        Ok(())
    }

    #[test]
    fn refuses_bad_version_empty_and_oversized() {
        assert!(matches!(
            decode_client(&[2, 0]),
            Err(DecodeError::UnsupportedVersion { got: 2, .. })
        ));
        assert!(matches!(
            decode_client(&[]),
            Err(DecodeError::TooShort { .. })
        ));
        let big = vec![FRAME_VERSION; MAX_FRAME_SIZE + 1];
        assert!(matches!(
            decode_client(&big),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn refuses_garbage_protobuf() {
        // A field header promising a 2^32-byte length-delimited value.
        let bytes = [FRAME_VERSION, 0x12, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            decode_client(&bytes),
            Err(DecodeError::Protobuf(_))
        ));
    }
}
