//! Pure helpers that build server frames (no I/O).
//!
//! Frames are encoded with [`comptoir_protocol::frame`]; the hot path that
//! pushes a stored envelope splices the stored `Envelope` bytes into a
//! `ServerFrame { deliver: Deliver { envelope } }` without decoding them.

use comptoir_protocol::frame::{FRAME_VERSION, encode_server};
use comptoir_protocol::proto::wire::{self, server_frame::Body};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::franking::RelayTag;

/// Encode a server frame answering `request_id`.
pub fn server(request_id: u64, body: Body) -> Vec<u8> {
    encode_server(&wire::ServerFrame {
        request_id,
        body: Some(body),
    })
}

/// The generic success reply.
pub fn ok(request_id: u64) -> Vec<u8> {
    server(request_id, Body::Ok(wire::Ok {}))
}

/// The size of [`deliver`]'s frame for an envelope of `envelope_len` bytes.
pub fn deliver_len(envelope_len: usize) -> usize {
    let inner_len =
        key_len(DELIVER_ENVELOPE) + encoded_len_varint(envelope_len as u64) + envelope_len;
    1 + key_len(SERVER_FRAME_DELIVER) + encoded_len_varint(inner_len as u64) + inner_len
}

/// `ServerFrame.deliver` (field 5, a message).
const SERVER_FRAME_DELIVER: u32 = 5;
/// `Deliver.envelope` (field 1, bytes).
const DELIVER_ENVELOPE: u32 = 1;
/// `Deliver.relay_franking_tag` (field 2, bytes).
const DELIVER_RELAY_TAG: u32 = 2;
/// `Deliver.relay_franking_key_id` (field 3, varint).
const DELIVER_RELAY_KEY_ID: u32 = 3;
/// `Envelope.accept_id` (field 13, varint).
const ENVELOPE_ACCEPT_ID: u32 = 13;

/// Most bytes [`with_accept_id`] adds to an envelope.
pub const ACCEPT_ID_FIELD_MAX: usize = 1 + 10;

/// A stored envelope (its encoded `Envelope`, without an accept id) with
/// its accept id added: the field is appended, which protobuf decodes as
/// if it had been encoded in place (fields may come in any order), so the
/// stored bytes are never decoded. An accept id of 0 adds nothing.
pub fn with_accept_id(envelope: &[u8], accept_id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(envelope.len() + ACCEPT_ID_FIELD_MAX);
    out.extend_from_slice(envelope);
    if accept_id != 0 {
        encode_key(ENVELOPE_ACCEPT_ID, WireType::Varint, &mut out);
        encode_varint(accept_id, &mut out);
    }
    out
}

/// Most bytes the relay's franking tag adds to a `Deliver` (fields 2 and
/// 3: tag, length and 32 bytes; tag and a varint key id).
pub const RELAY_TAG_FIELDS_MAX: usize = 1 + 1 + 32 + 1 + 5;

/// A push of one stored envelope (its encoded `Envelope` protobuf),
/// byte-identical to encoding `ServerFrame { request_id: 0, deliver }`.
pub fn deliver(envelope: &[u8]) -> Vec<u8> {
    deliver_tagged(envelope, None)
}

/// [`deliver`] with the relay's franking tag for the copy (`Deliver`
/// fields 2 and 3; a key id of 0 is left out, as prost would).
pub fn deliver_tagged(envelope: &[u8], relay_tag: Option<&RelayTag>) -> Vec<u8> {
    deliver_stored(envelope, 0, relay_tag)
}

/// [`deliver_tagged`] of [`with_accept_id`]`(stored, accept_id)`, built
/// with one allocation and one copy of the envelope (the push path does
/// this for every envelope).
pub fn deliver_stored(stored: &[u8], accept_id: u64, relay_tag: Option<&RelayTag>) -> Vec<u8> {
    let accept_id_len = if accept_id == 0 {
        0
    } else {
        key_len(ENVELOPE_ACCEPT_ID) + encoded_len_varint(accept_id)
    };
    let envelope_len = stored.len() + accept_id_len;
    // Deliver { envelope = 1, relay_franking_tag = 2, relay_franking_key_id
    // = 3 } inside ServerFrame { deliver = 5 }, with prost's encoding
    // functions field by field: building a `wire::Envelope` would decode
    // and re-encode every stored envelope on the push path. The tests
    // below pin the bytes to prost's encoding of the whole message.
    let tag_len = relay_tag.map_or(0, |t| {
        key_len(DELIVER_RELAY_TAG)
            + encoded_len_varint(t.tag.len() as u64)
            + t.tag.len()
            + if t.key_id == 0 {
                0
            } else {
                key_len(DELIVER_RELAY_KEY_ID) + encoded_len_varint(u64::from(t.key_id))
            }
    });
    let inner_len = key_len(DELIVER_ENVELOPE)
        + encoded_len_varint(envelope_len as u64)
        + envelope_len
        + tag_len;
    let mut out = Vec::with_capacity(
        1 + key_len(SERVER_FRAME_DELIVER) + encoded_len_varint(inner_len as u64) + inner_len,
    );
    out.push(FRAME_VERSION);
    encode_key(SERVER_FRAME_DELIVER, WireType::LengthDelimited, &mut out);
    encode_varint(inner_len as u64, &mut out);
    encode_key(DELIVER_ENVELOPE, WireType::LengthDelimited, &mut out);
    encode_varint(envelope_len as u64, &mut out);
    out.extend_from_slice(stored);
    if accept_id != 0 {
        encode_key(ENVELOPE_ACCEPT_ID, WireType::Varint, &mut out);
        encode_varint(accept_id, &mut out);
    }
    if let Some(t) = relay_tag {
        encode_key(DELIVER_RELAY_TAG, WireType::LengthDelimited, &mut out);
        encode_varint(t.tag.len() as u64, &mut out);
        out.extend_from_slice(&t.tag);
        if t.key_id != 0 {
            encode_key(DELIVER_RELAY_KEY_ID, WireType::Varint, &mut out);
            encode_varint(u64::from(t.key_id), &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn an_appended_accept_id_decodes_as_the_field() {
        for accept_id in [0u64, 1, 127, 128, u64::MAX] {
            let envelope = wire::Envelope {
                message_id: vec![7; 16],
                ciphertext: vec![0xab; 300],
                ..Default::default()
            };
            let bytes = with_accept_id(&envelope.encode_to_vec(), accept_id);
            assert!(bytes.len() <= envelope.encoded_len() + ACCEPT_ID_FIELD_MAX);
            let decoded = wire::Envelope::decode(bytes.as_slice()).unwrap();
            assert_eq!(
                decoded,
                wire::Envelope {
                    accept_id,
                    ..envelope
                }
            );
        }
    }

    #[test]
    fn deliver_matches_prost_encoding() {
        for size in [0usize, 1, 100, 127, 128, 300, 20_000, 200_000] {
            let envelope = wire::Envelope {
                message_id: vec![7; 16],
                ciphertext: vec![0xab; size],
                ..Default::default()
            };
            let bytes = envelope.encode_to_vec();
            let expected = encode_server(&wire::ServerFrame {
                request_id: 0,
                body: Some(Body::Deliver(wire::Deliver {
                    envelope: Some(envelope),
                    ..Default::default()
                })),
            });
            assert_eq!(deliver(&bytes), expected, "size {size}");
            assert_eq!(deliver_len(bytes.len()), expected.len(), "size {size}");
        }
    }

    #[test]
    fn a_tagged_deliver_matches_prost_encoding() {
        for (size, key_id) in [(0usize, 1u32), (100, 0), (300, 300), (200_000, u32::MAX)] {
            let envelope = wire::Envelope {
                message_id: vec![7; 16],
                ciphertext: vec![0xab; size],
                ..Default::default()
            };
            let bytes = envelope.encode_to_vec();
            let tag = RelayTag {
                tag: [0x5c; 32],
                key_id,
            };
            let expected = encode_server(&wire::ServerFrame {
                request_id: 0,
                body: Some(Body::Deliver(wire::Deliver {
                    envelope: Some(envelope),
                    relay_franking_tag: tag.tag.to_vec(),
                    relay_franking_key_id: key_id,
                })),
            });
            let got = deliver_tagged(&bytes, Some(&tag));
            assert_eq!(got, expected, "size {size}");
            assert!(got.len() <= deliver_len(bytes.len()) + RELAY_TAG_FIELDS_MAX + 1);
        }
    }

    #[test]
    fn a_stored_deliver_is_the_tagged_deliver_of_the_envelope_with_its_accept_id() {
        let tag = RelayTag {
            tag: [0x5c; 32],
            key_id: 3,
        };
        for size in [0usize, 100, 127, 128, 20_000] {
            let stored = wire::Envelope {
                message_id: vec![7; 16],
                ciphertext: vec![0xab; size],
                ..Default::default()
            }
            .encode_to_vec();
            for accept_id in [0u64, 1, 127, 128, u64::MAX] {
                for relay_tag in [None, Some(&tag)] {
                    assert_eq!(
                        deliver_stored(&stored, accept_id, relay_tag),
                        deliver_tagged(&with_accept_id(&stored, accept_id), relay_tag),
                        "size {size}, accept id {accept_id}"
                    );
                }
            }
        }
    }
}
