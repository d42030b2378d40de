//! Comptoir protocol core: the wire format, the cryptography and the business
//! artefacts shared by the relay and the clients.
//!
//! This crate does **no I/O**: no sockets, no files, no clocks, no tokio.
//! Time and randomness are parameters, so everything is deterministic under
//! test and the vectors in `protocol/vectors/` can be regenerated exactly.
//!
//! Modules:
//! - [`proto`]: types generated from `proto/` (prost).
//! - [`frame`]: client <-> relay framing (version byte, size limit).
//! - [`error`]: typed errors.
//! - [`account`]: account ids and the bytes signed to authenticate.
//! - [`keys`]: identity, account and X25519 key pairs.
//! - [`device_list`]: account-signed device lists with a version counter.
//! - [`prekeys`]: signed and one-time prekeys, verified bundles.

#![forbid(unsafe_code)]

pub mod account;
pub mod device_list;
pub mod error;
pub mod frame;
pub mod keys;
pub mod prekeys;
pub mod proto;

pub use account::{auth_payload, register_payload, AccountId, ACCOUNT_ID_LEN, AUTH_NONCE_LEN};
pub use device_list::{DeviceList, MAX_DEVICES};
pub use error::{DecodeError, Error, Result};
pub use frame::{FRAME_VERSION, MAX_FRAME_SIZE};
pub use prekeys::{sign_prekey, signed_prekey_payload, verify_signed_prekey, VerifiedBundle};
pub use keys::{AccountKey, AccountKeyPair, IdentityKey, IdentityKeyPair, KeyPair};
