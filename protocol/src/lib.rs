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
//! - [`attachment`]: attachments encrypted as a stream of authenticated
//!   chunks that commits to its key.
//! - [`handle`]: business names (claimed handles), their rules.
//! - [`error`]: typed errors.
//! - [`account`]: account ids and the bytes signed to authenticate.
//! - [`consent`]: the bytes a customer device signs to let one business
//!   send it templates (or to revoke that), and their check.
//! - [`delivery`]: the bytes a customer device signs to ack a billed
//!   message (a transferable proof of receipt), and their check.
//! - [`bill`]: the rate card, the per-business hash chain of billed
//!   lines, the operator-signed chain head (on request and periodic), and
//!   the check of a whole bill.
//! - [`template`]: approved templates: their rules, canonical bytes and
//!   id, the operator's signed approval or revocation, and the customer
//!   client's check and rendering of an instance, quick replies.
//! - [`interactive`]: interactive messages (reply buttons, lists): their
//!   limits, the customer's choice and the business's check of it.
//! - [`template_wire`]: signed template approvals to and from their frame.
//! - [`business_wire`]: signed certificates and revocations to and from
//!   their frames.
//! - [`business`]: business profiles signed by the business, operator
//!   certificates and their revocation, and the one decision whether a
//!   business is shown as verified.
//! - [`confusable`]: Unicode confusable skeletons (UTS #39), so that a
//!   name confusable with a verified one can be refused.
//! - [`keys`]: identity, account, operator and X25519 key pairs.
//! - [`device_list`]: account-signed device lists with a version counter.
//! - [`prekeys`]: signed and one-time prekeys, verified bundles.
//! - [`kdf`]: X3DH KDF, root and chain KDFs, message key expansion.
//! - [`x3dh`]: the X3DH key agreement (used by [`session`]; exposed for vectors).
//! - [`franking`]: message franking: the sender's commitment to the
//!   content, its check by the recipient, the relay's tag over it.
//! - [`report`]: reports sealed to the operator's key.
//! - [`labels`]: envelope labels bound inside the encrypted content, and
//!   the receiver's check of them.
//! - [`message`]: byte layout of ratchet and prekey messages.
//! - [`ratchet`], [`skipped`]: the Double Ratchet and its skipped keys.
//! - [`session`]: session records (current + archived states), prekey store.
//! - [`store`]: versioned, sealed records at rest.
//! - [`safety_number`]: fingerprints of two identities.
//! - [`json_error`]: a JSON parse error described without Rust type names.

#![forbid(unsafe_code)]

pub mod account;
pub mod attachment;
pub mod bill;
pub mod business;
pub mod business_wire;
mod canonical;
pub mod confusable;
pub mod consent;
pub mod delivery;
pub mod device_list;
pub mod error;
pub mod frame;
pub mod franking;
pub mod handle;
pub mod interactive;
pub mod json_error;
pub mod kdf;
pub mod keys;
pub mod labels;
pub mod message;
pub mod prekeys;
pub mod proto;
pub mod ratchet;
pub mod report;
pub mod safety_number;
pub mod session;
pub mod skipped;
pub mod store;
pub mod template;
pub mod template_wire;
pub mod x3dh;

pub use account::{
    ACCOUNT_ID_LEN, AUTH_NONCE_LEN, AccountId, auth_payload, register_payload, relay_origin,
};
pub use bill::{
    BILL_HEAD_CONTEXT, BILL_LINE_CONTEXT, BillCategory, BillError, BillHead, BillLine, BillTotals,
    GENESIS_HASH, Prices, RATE_CARD_CONTEXT, RateCard, round_to_hundredths, verify_bill,
};
pub use business::{
    BusinessCertificate, BusinessProfile, CERTIFICATE_CONTEXT, CERTIFICATE_REVOCATION_CONTEXT,
    CertificateRevocation, NotVerified, PROFILE_CONTEXT, ProfileError, Verification, Vertical,
    certificate_payload, revocation_payload, sign_certificate, sign_profile, sign_revocation,
    verified_name, verify_certificate, verify_profile, verify_revocation,
};
pub use confusable::{are_confusable, folded_skeleton, is_reserved_by, reservation_keys, skeleton};
pub use consent::{
    CONSENT_CONTEXT, ConsentCategories, ConsentFields, MAX_CONSENT_LIFETIME_MS, consent_payload,
    sign_consent, verify_consent,
};
pub use delivery::{
    DELIVERY_CONTEXT, DeliveryFields, delivery_proof_payload, is_billed, sign_delivery,
    verify_delivery,
};
pub use device_list::{DeviceList, MAX_DEVICES};
pub use error::{DecodeError, Error, Result};
pub use frame::{FRAME_VERSION, MAX_FRAME_SIZE};
pub use franking::{FrankingError, FrankingKey};
pub use handle::{NameError, normalize_business_name};
pub use keys::{
    AccountKey, AccountKeyPair, IdentityKey, IdentityKeyPair, KeyPair, OperatorKey, OperatorKeyPair,
};
pub use labels::{Label, LabelError};
pub use message::{MAX_PLAINTEXT_LEN, MESSAGE_VERSION};
pub use prekeys::{VerifiedBundle, sign_prekey, signed_prekey_payload, verify_signed_prekey};
pub use report::ReportSealError;
pub use safety_number::SafetyNumber;
pub use session::{
    Decrypted, InMemoryPreKeyStore, MAX_ARCHIVED_STATES, PreKeyStore, SessionRecord,
};
pub use skipped::{MAX_SKIP, MAX_SKIPPED_KEYS};
pub use store::{RecordKind, StorageKey, open_record, seal_record};
pub use template::{
    ApprovalError, ApprovalStatus, Button, InstanceError, Placeholder, PlaceholderKind,
    RenderedTemplate, ReplyError, TEMPLATE_APPROVAL_CONTEXT, TEMPLATE_CONTEXT, Template,
    TemplateApproval, TemplateCategory, TemplateError, TemplateId, build_instance,
    check_quick_reply, quick_reply, render_instance, sign_template_approval,
    template_approval_payload, verify_template_approval,
};
