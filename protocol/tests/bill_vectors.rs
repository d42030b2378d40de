//! Deterministic test vectors of bills (`protocol/vectors/bills-v1.json`):
//! the signed rate card, three chained bill lines (their bytes and hashes)
//! and the signed head, from fixed seeds (docs/PROTOCOL.md, "Bills").
//! To regenerate after an intended change:
//! `COMPTOIR_WRITE_VECTORS=1 cargo test -p comptoir-protocol --test bill_vectors`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.

use comptoir_protocol::bill::chain;
use comptoir_protocol::{
    AccountId, BillCategory, BillHead, BillLine, GENESIS_HASH, IdentityKeyPair, OperatorKeyPair,
    Prices, RateCard, TemplateCategory, sign_delivery, verify_bill,
};
use serde::{Deserialize, Serialize};

const VECTOR_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/bills-v1.json");

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct BillVectors {
    description: String,
    operator_seed: String,
    device_seed: String,
    business: String,
    customer: String,
    rate_card_payload: String,
    rate_card_signature: String,
    lines: Vec<LineVector>,
    head_payload: String,
    head_signature: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct LineVector {
    bytes: String,
    hash: String,
}

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn generate() -> (
    BillVectors,
    Vec<BillLine>,
    comptoir_protocol::proto::wire::BillHead,
    comptoir_protocol::proto::wire::SignedRateCard,
) {
    let operator = OperatorKeyPair::from_seed(&[0x0B; 32]);
    let device = IdentityKeyPair::from_seed(&[0x0D; 32]);
    let business = AccountId::from_bytes(&[0xB5; 16]).unwrap();
    let customer = AccountId::from_bytes(&[0xC5; 16]).unwrap();
    let card = RateCard {
        effective_from_ms: 1_749_999_000_000,
        currency: "GBP".into(),
        utility: Prices {
            inside_window: 0,
            outside_window: 5_000,
        },
        authentication: Prices {
            inside_window: 30_000,
            outside_window: 30_000,
        },
        marketing: Prices {
            inside_window: 90_000,
            outside_window: 90_000,
        },
        status: 2_000,
    };
    let line = |n: u8, category: BillCategory, inside| {
        let mut line = BillLine {
            index: 0,
            previous_hash: GENESIS_HASH,
            accept_id: 4_000 + u64::from(n),
            message_id: [n; 16],
            business,
            customer,
            category,
            inside_window: inside,
            template_id: "ab".repeat(32),
            accepted_at_ms: 1_750_000_000_000 + u64::from(n),
            delivered_at_ms: 1_750_000_060_000 + u64::from(n),
            price_millionths: card.price(category, inside),
            customer_device: 1,
            franking_commitment: vec![0xF1; 32],
            device_signed_at_ms: 1_750_000_059_000 + u64::from(n),
            device_signature: [0; 64],
        };
        line.device_signature = sign_delivery(&device, &line.delivery_fields());
        line
    };
    let (lines, head_hash) = chain([
        line(1, TemplateCategory::Utility.into(), false),
        line(2, TemplateCategory::Marketing.into(), true),
        line(3, BillCategory::Status, false),
    ]);
    let head = BillHead {
        business,
        count: 3,
        head_hash,
        signed_at_ms: 1_750_000_100_000,
    };
    let signed_head = head.sign(&operator);
    let signed_card = card.sign(&operator);
    let vectors = BillVectors {
        description: "Bills (docs/PROTOCOL.md, \"Bills\"): the operator-signed rate card (v3: with the time it took effect and the status row), three chained lines (utility, marketing, status; bytes and SHA-256 hash with the context), the operator-signed head. Hex.".into(),
        operator_seed: h(&[0x0B; 32]),
        device_seed: h(&[0x0D; 32]),
        business: business.to_string(),
        customer: customer.to_string(),
        rate_card_payload: h(&card.payload()),
        rate_card_signature: h(&signed_card.signature),
        lines: lines
            .iter()
            .map(|l| LineVector {
                bytes: h(&l.to_bytes()),
                hash: h(&l.hash()),
            })
            .collect(),
        head_payload: h(&head.payload()),
        head_signature: h(&signed_head.signature),
    };
    (vectors, lines, signed_head, signed_card)
}

#[test]
fn bill_vectors_match_the_published_file() {
    let (generated, lines, head, card) = generate();
    if std::env::var_os("COMPTOIR_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        std::fs::write(VECTOR_FILE, text).unwrap();
    }
    let published: BillVectors =
        serde_json::from_str(&std::fs::read_to_string(VECTOR_FILE).unwrap()).unwrap();
    assert_eq!(published, generated);
    // And the published bill verifies.
    let operator = OperatorKeyPair::from_seed(&[0x0B; 32]).public();
    let device = *IdentityKeyPair::from_seed(&[0x0D; 32]).public();
    let totals = verify_bill(
        &lines[0].business,
        &lines,
        &head,
        &[],
        [&card],
        &operator,
        |_, d| (d == 1).then_some(device),
    )
    .unwrap();
    assert_eq!(totals.total_millionths, 97_000);
}
