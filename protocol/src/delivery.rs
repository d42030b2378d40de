//! Signed delivery: the bytes a customer's device signs with its identity
//! key when it acks a message the relay's ledger may bill, and the check
//! of such a signature. Signed, it is a transferable proof of receipt:
//! anyone holding the customer's signed device list can check that this
//! device acknowledged this message (docs/PROTOCOL.md, "Signed delivery").

use crate::account::{ACCOUNT_ID_LEN, AccountId};
use crate::error::Result;
use crate::keys::{IdentityKey, IdentityKeyPair, SIGNATURE_LEN};
use crate::proto::wire::{AccountKind, Category};

/// Context string that opens every delivery proof payload.
pub const DELIVERY_CONTEXT: &[u8] = b"Comptoir delivery v1";

/// Length of a message id in a delivery proof.
pub const DELIVERY_MESSAGE_ID_LEN: usize = 16;

/// Longest franking commitment a proof covers (the relay refuses longer
/// franking tags on send).
pub const MAX_FRANKING_COMMITMENT_LEN: usize = 64;

/// Whether a send is one the relay's ledger bills, so that its acks must
/// carry a delivery signature: a business's utility, authentication or
/// marketing template to a customer (another account than its own). An
/// unspecified kind counts as a customer. The relay's accounting and the
/// client's ack use this one rule.
pub fn is_billed(sender: AccountKind, recipient: AccountKind, category: Category) -> bool {
    sender == AccountKind::Business
        && recipient != AccountKind::Business
        && matches!(
            category,
            Category::Utility | Category::Authentication | Category::Marketing
        )
}

/// What a delivery proof says: this customer device received this message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryFields {
    /// The relay-assigned accept id of the send.
    pub accept_id: u64,
    /// The sender-chosen message id.
    pub message_id: [u8; DELIVERY_MESSAGE_ID_LEN],
    /// The sending business.
    pub business: AccountId,
    /// The receiving customer.
    pub customer: AccountId,
    /// The customer's device that acknowledged.
    pub customer_device: u32,
    /// The franking commitment the envelope carried (may be empty; at most
    /// [`MAX_FRANKING_COMMITMENT_LEN`] bytes, longer is cut there).
    pub franking_commitment: Vec<u8>,
    /// The device's clock when it acknowledged, ms since the Unix epoch.
    pub time_ms: u64,
}

/// The bytes signed: `"Comptoir delivery v1" || accept_id (u64 BE) ||
/// message_id (16) || business (16) || customer (16) || customer_device
/// (u32 BE) || franking_len (u16 BE) || franking commitment || time_ms
/// (u64 BE)`.
pub fn delivery_proof_payload(fields: &DeliveryFields) -> Vec<u8> {
    let franking = &fields.franking_commitment[..fields
        .franking_commitment
        .len()
        .min(MAX_FRANKING_COMMITMENT_LEN)];
    let mut out = Vec::with_capacity(
        DELIVERY_CONTEXT.len() + 8 + 16 + 2 * ACCOUNT_ID_LEN + 4 + 2 + franking.len() + 8,
    );
    out.extend_from_slice(DELIVERY_CONTEXT);
    out.extend_from_slice(&fields.accept_id.to_be_bytes());
    out.extend_from_slice(&fields.message_id);
    out.extend_from_slice(fields.business.as_bytes());
    out.extend_from_slice(fields.customer.as_bytes());
    out.extend_from_slice(&fields.customer_device.to_be_bytes());
    // At most MAX_FRANKING_COMMITMENT_LEN by the slice above.
    out.extend_from_slice(&(franking.len() as u16).to_be_bytes());
    out.extend_from_slice(franking);
    out.extend_from_slice(&fields.time_ms.to_be_bytes());
    out
}

/// Sign a delivery proof with the acknowledging device's identity.
pub fn sign_delivery(device: &IdentityKeyPair, fields: &DeliveryFields) -> [u8; SIGNATURE_LEN] {
    device.sign(&delivery_proof_payload(fields))
}

/// Check a delivery proof against the acknowledging device's identity key
/// (from the customer's signed device list); strict Ed25519.
pub fn verify_delivery(
    device: &IdentityKey,
    fields: &DeliveryFields,
    signature: &[u8],
) -> Result<()> {
    device.verify("delivery proof", &delivery_proof_payload(fields), signature)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use super::*;

    fn fields() -> DeliveryFields {
        DeliveryFields {
            accept_id: 0x0102_0304_0506_0708,
            message_id: [0x11; 16],
            business: AccountId::from_bytes(&[0xBB; 16]).unwrap(),
            customer: AccountId::from_bytes(&[0xCC; 16]).unwrap(),
            customer_device: 2,
            franking_commitment: vec![0xF0; 3],
            time_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn only_a_business_template_to_a_customer_is_billed() {
        use AccountKind::{Business, Customer, Unspecified};
        for c in [
            Category::Utility,
            Category::Authentication,
            Category::Marketing,
        ] {
            assert!(is_billed(Business, Customer, c));
            assert!(is_billed(Business, Unspecified, c));
            assert!(!is_billed(Business, Business, c));
            assert!(!is_billed(Customer, Business, c));
        }
        for c in [Category::Conversation, Category::Service, Category::Control] {
            assert!(!is_billed(Business, Customer, c));
        }
    }

    #[test]
    fn payload_layout() {
        let p = delivery_proof_payload(&fields());
        assert_eq!(&p[..20], b"Comptoir delivery v1");
        assert_eq!(&p[20..28], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&p[28..44], &[0x11; 16]);
        assert_eq!(&p[44..60], &[0xBB; 16]);
        assert_eq!(&p[60..76], &[0xCC; 16]);
        assert_eq!(&p[76..80], &[0, 0, 0, 2]);
        assert_eq!(&p[80..82], &[0, 3]);
        assert_eq!(&p[82..85], &[0xF0; 3]);
        assert_eq!(&p[85..], &1_700_000_000_000u64.to_be_bytes());
    }

    #[test]
    fn a_proof_verifies_only_for_its_fields_and_device() {
        let mut rng = rand::rng();
        let device = IdentityKeyPair::generate(&mut rng);
        let other = IdentityKeyPair::generate(&mut rng);
        let sig = sign_delivery(&device, &fields());
        verify_delivery(device.public(), &fields(), &sig).unwrap();
        assert!(verify_delivery(other.public(), &fields(), &sig).is_err());
        for change in 0..4 {
            let mut f = fields();
            match change {
                0 => f.accept_id += 1,
                1 => f.customer_device = 3,
                2 => f.franking_commitment.push(0),
                _ => f.time_ms += 1,
            }
            assert!(verify_delivery(device.public(), &f, &sig).is_err());
        }
    }
}
