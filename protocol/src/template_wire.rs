//! Template approvals on the wire: the conversion between a signed
//! [`TemplateApproval`] and its `TemplateApprovalRecord` frame, shared by
//! the relay (which signs and stores them) and the clients (which check
//! them against the pinned operator key).

use crate::account::AccountId;
use crate::error::{DecodeError, Error, Result};
use crate::keys::SIGNATURE_LEN;
use crate::proto::wire::{Category, TemplateApprovalRecord};
use crate::template::{ApprovalStatus, TemplateApproval, TemplateCategory, TemplateId};

/// A signed approval as a frame.
pub fn approval_to_wire(
    approval: &TemplateApproval,
    signature: &[u8; SIGNATURE_LEN],
) -> TemplateApprovalRecord {
    TemplateApprovalRecord {
        template_id: approval.template_id.as_bytes().to_vec(),
        business_account: approval.business.to_vec(),
        category: Category::from(approval.category) as i32,
        status: match approval.status {
            ApprovalStatus::Approved => 1,
            ApprovalStatus::Revoked => 2,
        },
        issued_at_ms: approval.issued_at_ms,
        signature: signature.to_vec(),
    }
}

/// A frame back to an approval and its signature (not yet verified:
/// check it with [`crate::template::verify_template_approval`]).
pub fn approval_from_wire(
    record: &TemplateApprovalRecord,
) -> Result<(TemplateApproval, [u8; SIGNATURE_LEN])> {
    let bad = |what: &'static str| Error::Decode(DecodeError::Protobuf(what.into()));
    let template_id: [u8; 32] = record
        .template_id
        .as_slice()
        .try_into()
        .map_err(|_| bad("template approval: template_id is not 32 bytes"))?;
    let category = Category::try_from(record.category)
        .ok()
        .and_then(|c| TemplateCategory::try_from(c).ok())
        .ok_or_else(|| bad("template approval: not a template category"))?;
    let status = match record.status {
        1 => ApprovalStatus::Approved,
        2 => ApprovalStatus::Revoked,
        _ => return Err(bad("template approval: unknown status")),
    };
    let signature: [u8; SIGNATURE_LEN] = record
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| bad("template approval: signature is not 64 bytes"))?;
    Ok((
        TemplateApproval {
            template_id: TemplateId(template_id),
            business: AccountId::from_bytes(&record.business_account)?,
            category,
            status,
            issued_at_ms: record.issued_at_ms,
        },
        signature,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use super::*;

    #[test]
    fn round_trip_and_bad_fields() {
        let approval = TemplateApproval {
            template_id: TemplateId([7; 32]),
            business: AccountId::from_bytes(&[2; 16]).unwrap(),
            category: TemplateCategory::Marketing,
            status: ApprovalStatus::Revoked,
            issued_at_ms: 42,
        };
        let wire = approval_to_wire(&approval, &[9; SIGNATURE_LEN]);
        assert_eq!(wire.category, Category::Marketing as i32);
        let (back, signature) = approval_from_wire(&wire).unwrap();
        assert_eq!(back, approval);
        assert_eq!(signature, [9; SIGNATURE_LEN]);
        for broken in [
            TemplateApprovalRecord {
                template_id: vec![1; 31],
                ..wire.clone()
            },
            TemplateApprovalRecord {
                category: Category::Service as i32,
                ..wire.clone()
            },
            TemplateApprovalRecord {
                status: 3,
                ..wire.clone()
            },
            TemplateApprovalRecord {
                signature: vec![0; 63],
                ..wire.clone()
            },
            TemplateApprovalRecord {
                business_account: vec![0; 15],
                ..wire.clone()
            },
        ] {
            assert!(approval_from_wire(&broken).is_err(), "{broken:?}");
        }
    }
}
