//! Account ids and the byte strings signed during relay authentication and
//! registration (shared by client and relay so both sign/verify the same
//! bytes).

use std::fmt;

use rand_core::CryptoRng;

use crate::error::{DecodeError, Error, Result};
use crate::proto::wire::AccountKind;

/// Length of an account id.
pub const ACCOUNT_ID_LEN: usize = 16;
/// Length of a relay authentication nonce.
pub const AUTH_NONCE_LEN: usize = 32;

const AUTH_CONTEXT: &[u8] = b"Comptoir auth v2";
const REGISTER_CONTEXT: &[u8] = b"Comptoir register v2";

/// An opaque random account id. Handles (phone numbers, business names)
/// resolve to it in the relay's directory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId([u8; ACCOUNT_ID_LEN]);

impl AccountId {
    /// A fresh random id.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; ACCOUNT_ID_LEN];
        rng.fill_bytes(&mut id);
        Self(id)
    }

    /// Parse 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let id = bytes.try_into().map_err(|_| {
            Error::Decode(DecodeError::BadLength {
                field: "account_id",
                expected: ACCOUNT_ID_LEN,
                got: bytes.len(),
            })
        })?;
        Ok(Self(id))
    }

    /// Parse the 32-character lowercase hex form.
    pub fn from_hex(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.len() != ACCOUNT_ID_LEN * 2 || !text.is_ascii() {
            return Err(Error::Decode(DecodeError::BadLength {
                field: "account_id (hex)",
                expected: ACCOUNT_ID_LEN * 2,
                got: text.len(),
            }));
        }
        let mut id = [0u8; ACCOUNT_ID_LEN];
        hex::decode_to_slice(text, &mut id)
            .map_err(|_| Error::Decode(DecodeError::Protobuf("account id is not hex".into())))?;
        Ok(Self(id))
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; ACCOUNT_ID_LEN] {
        &self.0
    }

    /// The 16 bytes as a `Vec` (for protobuf fields).
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// JSON and other text formats carry an account id as its 32-character
/// lowercase hex form (as [`fmt::Display`] prints it).
impl serde::Serialize for AccountId {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for AccountId {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_hex(&text)
            .map_err(|_| serde::de::Error::custom("an account id is 32 hexadecimal characters"))
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

/// The bytes a device signs with its identity key to answer a relay
/// challenge: `"Comptoir auth v2" || nonce (32) || account_id (16) ||
/// device_id (u32 big-endian) || origin_len (u16 big-endian) || origin`.
///
/// `origin` is the relay as the client dialled it, normalised by
/// [`relay_origin`] (`wss://relay.example:443`): a relay that passes the
/// challenge on to another relay gets a signature that the other refuses.
pub fn auth_payload(nonce: &[u8], account: &AccountId, device_id: u32, origin: &str) -> Vec<u8> {
    let origin = origin.as_bytes();
    let origin = &origin[..origin.len().min(usize::from(u16::MAX))];
    let mut out =
        Vec::with_capacity(AUTH_CONTEXT.len() + nonce.len() + ACCOUNT_ID_LEN + 6 + origin.len());
    out.extend_from_slice(AUTH_CONTEXT);
    out.extend_from_slice(nonce);
    out.extend_from_slice(account.as_bytes());
    out.extend_from_slice(&device_id.to_be_bytes());
    // At most u16::MAX by the slice above.
    out.extend_from_slice(
        &u16::try_from(origin.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(origin);
    out
}

/// A relay's origin as signed in [`auth_payload`]: `scheme://host:port`
/// with the scheme `ws` or `wss`, the host in ASCII lower case (an IPv6
/// address in brackets), and the port always written (80 for `ws`, 443 for
/// `wss` when the URL has none).
pub fn relay_origin(tls: bool, host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.to_ascii_lowercase();
    let scheme = if tls { "wss" } else { "ws" };
    if host.contains(':') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// The bytes an account key signs to register the account on a relay:
/// `"Comptoir register v2" || account_id (16) || kind (u8) || nonce (32)`,
/// where `kind` is the kind the account is registered as: 1 customer
/// (also for [`AccountKind::Unspecified`]), 2 business. The kind is signed so
/// that nobody between the device and the relay can turn a customer into a
/// business or back.
pub fn register_payload(account: &AccountId, kind: AccountKind, nonce: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(REGISTER_CONTEXT.len() + ACCOUNT_ID_LEN + 1 + nonce.len());
    out.extend_from_slice(REGISTER_CONTEXT);
    out.extend_from_slice(account.as_bytes());
    out.push(registered_kind_byte(kind));
    out.extend_from_slice(nonce);
    out
}

/// The kind byte of [`register_payload`]: 1 customer (also for
/// unspecified), 2 business.
fn registered_kind_byte(kind: AccountKind) -> u8 {
    match kind {
        AccountKind::Business => 2,
        AccountKind::Customer | AccountKind::Unspecified => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_register_payload_signs_the_kind() {
        let id = AccountId::from_bytes(&[0xAA; 16]).expect("16 bytes"); // ok: a constant
        let nonce = [0x55; 32];
        let customer = register_payload(&id, AccountKind::Customer, &nonce);
        let business = register_payload(&id, AccountKind::Business, &nonce);
        assert_ne!(customer, business);
        assert_eq!(
            customer,
            register_payload(&id, AccountKind::Unspecified, &nonce)
        );
        assert_eq!(customer.len(), 20 + 16 + 1 + 32);
        assert_eq!((customer[36], business[36]), (1, 2));
    }

    #[test]
    fn hex_form_round_trips_and_refuses_what_is_not_hex() {
        let id = AccountId::from_bytes(&[
            0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xef, 0xff, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60,
            0x70, 0x90,
        ])
        .expect("16 bytes"); // ok: a constant
        let text = id.to_string();
        assert_eq!(text, "00017f80abcdefff1020304050607090");
        assert_eq!(AccountId::from_hex(&text).ok(), Some(id));
        assert_eq!(AccountId::from_hex(&text.to_uppercase()).ok(), Some(id));
        assert_eq!(AccountId::from_hex(&format!(" {text}\n")).ok(), Some(id));
        for bad in [
            "",
            &text[..30],
            "00017f80abcdefff102030405060709g",
            "+0017f80abcdefff1020304050607090",
            "é017f80abcdefff10203040506070",
        ] {
            assert!(AccountId::from_hex(bad).is_err(), "{bad:?} accepted");
        }
    }
}
