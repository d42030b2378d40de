//! The policy as a table: each row is one rule, read like the spec.

use comptoir_protocol::proto::wire::{AccountKind, Category};

use crate::storage::{AccountRecord, Kind};

use super::*;

const ALICE: [u8; 16] = [1; 16];
const BOB: [u8; 16] = [2; 16];

fn record(kind: AccountKind) -> AccountRecord {
    AccountRecord {
        kind: match kind {
            AccountKind::Business => Kind::Business,
            AccountKind::Customer | AccountKind::Unspecified => Kind::Customer,
        },
        ..AccountRecord::default()
    }
}

/// A record with a verified phone number.
fn with_phone(mut record: AccountRecord) -> AccountRecord {
    record.phone_number = "+15550100".into();
    record
}

/// One row: who sends what to whom, in which state, and the decision.
struct Row {
    name: &'static str,
    sender: AccountKind,
    recipient: AccountKind,
    to_self: bool,
    category: i32,
    /// (device id, ciphertext length) as sent.
    ciphertexts: Vec<(u32, usize)>,
    /// The recipient's current devices.
    devices: Vec<u32>,
    blocked: bool,
    rate: Option<u64>,
    /// The operator requires a verified phone to write to a business.
    phone_rule: bool,
    /// The sender has a verified phone number.
    sender_phone: bool,
    /// The customer's last conversation message to the business.
    customer_wrote_at_ms: Option<u64>,
    /// What the customer's consent for the business covers now.
    consent: ConsentCategories,
    /// The named template's approval; `None`: approved under the
    /// category sent.
    template: Option<TemplateState>,
    /// New conversations the sender started today, when this send starts
    /// one and it has no verified phone (the cap is 2 in every row).
    new_conversations_today: Option<u64>,
    /// A Status key rather than a message.
    status_key: bool,
    /// The template id sent.
    template_id: &'static str,
    /// The franking tag's length (32, a real tag, in most rows).
    franking_tag_len: usize,
    /// The relay requires franking of businesses' messages.
    requires_franking: bool,
    /// The relay bills.
    metered: bool,
    expect: Decision,
}

/// The rate card of every row: every price distinct.
fn card() -> comptoir_protocol::RateCard {
    let prices = |inside_window, outside_window| comptoir_protocol::Prices {
        inside_window,
        outside_window,
    };
    comptoir_protocol::RateCard {
        effective_from_ms: 0,
        currency: "EUR".into(),
        utility: prices(1_000, 2_000),
        authentication: prices(3_000, 4_000),
        marketing: prices(5_000, 6_000),
        status: 700,
    }
}

/// Billed at `millionths`, inside the window or not, on the line `line`.
fn billed_as(
    line: crate::storage::BilledCategory,
    millionths: u64,
    inside_window: bool,
) -> Decision {
    Decision::AcceptAndBill(Rate {
        line,
        priced: crate::storage::Priced {
            millionths,
            inside_window,
        },
    })
}

/// A template billed at `millionths` (the line follows from the price:
/// the test card prices each category apart).
fn billed(millionths: u64, inside_window: bool) -> Decision {
    use crate::storage::BilledCategory::{Authentication, Marketing, Status, Utility};
    let line = match millionths {
        1_000 | 2_000 => Utility,
        3_000 | 4_000 => Authentication,
        5_000 | 6_000 => Marketing,
        _ => Status,
    };
    billed_as(line, millionths, inside_window)
}

/// The relay's clock in every row.
const NOW: u64 = 1_700_000_000_000;

fn row(name: &'static str, expect: Decision) -> Row {
    Row {
        name,
        sender: AccountKind::Customer,
        recipient: AccountKind::Customer,
        to_self: false,
        category: Category::Conversation as i32,
        ciphertexts: vec![(1, 100), (2, 100)],
        devices: vec![1, 2],
        blocked: false,
        rate: None,
        phone_rule: false,
        sender_phone: false,
        customer_wrote_at_ms: Some(NOW - 60_000),
        consent: ConsentCategories::NONE,
        template: None,
        new_conversations_today: None,
        status_key: false,
        template_id: "",
        franking_tag_len: 32,
        requires_franking: true,
        metered: true,
        expect,
    }
}

fn refuse(r: Refusal) -> Decision {
    Decision::Refuse(r)
}

#[test]
fn table() {
    use AccountKind::{Business, Customer, Unspecified};
    let cases = vec![
        row("customer to customer, conversation", Decision::Accept),
        Row {
            new_conversations_today: Some(1),
            ..row(
                "a second new conversation today, under the cap",
                Decision::Accept,
            )
        },
        Row {
            new_conversations_today: Some(2),
            ..row(
                "no phone: the third new conversation of the day is refused",
                refuse(Refusal::NewConversationQuota { per_day: 2 }),
            )
        },
        Row {
            sender: Business,
            category: Category::Utility as i32,
            template: Some(TemplateState::NotApproved),
            ..row(
                "a template not approved for the sender is refused, even inside the window",
                refuse(Refusal::TemplateNotApproved),
            )
        },
        Row {
            sender: Business,
            category: Category::Marketing as i32,
            consent: ConsentCategories::MARKETING,
            template: Some(TemplateState::Approved(Category::Utility)),
            ..row(
                "a utility template sent as marketing is refused",
                refuse(Refusal::TemplateCategory {
                    approved: Category::Utility,
                    sent: Category::Marketing,
                }),
            )
        },
        Row {
            sender: Business,
            category: Category::Utility as i32,
            consent: ConsentCategories::MARKETING,
            template: Some(TemplateState::Approved(Category::Marketing)),
            ..row(
                "a marketing template relabelled utility is refused",
                refuse(Refusal::TemplateCategory {
                    approved: Category::Marketing,
                    sent: Category::Utility,
                }),
            )
        },
        Row {
            sender: Business,
            recipient: Business,
            to_self: true,
            category: Category::Utility as i32,
            ciphertexts: vec![(2, 100)],
            template: Some(TemplateState::NotApproved),
            ..row(
                "a business's copy to its own devices is not held to approval",
                Decision::Accept,
            )
        },
        Row {
            sender: Business,
            category: Category::Service as i32,
            template: Some(TemplateState::NotApproved),
            ..row("a service reply names no template", Decision::Accept)
        },
        Row {
            recipient: Business,
            phone_rule: true,
            ..row(
                "phone rule: no verified phone, no writing to a business",
                refuse(Refusal::PhoneRequired),
            )
        },
        Row {
            recipient: Business,
            phone_rule: true,
            sender_phone: true,
            ..row(
                "phone rule: a verified phone may write to a business",
                Decision::Accept,
            )
        },
        Row {
            recipient: Business,
            phone_rule: true,
            category: Category::Control as i32,
            ..row(
                "phone rule: control traffic to a business too",
                refuse(Refusal::PhoneRequired),
            )
        },
        Row {
            phone_rule: true,
            ..row(
                "phone rule: customers still write to customers",
                Decision::Accept,
            )
        },
        Row {
            sender: Business,
            recipient: Business,
            to_self: true,
            phone_rule: true,
            category: Category::Service as i32,
            ciphertexts: vec![(2, 100)],
            ..row(
                "phone rule: a business syncs its own devices",
                Decision::Accept,
            )
        },
        Row {
            sender: Business,
            recipient: Business,
            phone_rule: true,
            category: Category::Service as i32,
            ..row(
                "phone rule: a business without a phone writes to another",
                refuse(Refusal::PhoneRequired),
            )
        },
        Row {
            recipient: Business,
            phone_rule: true,
            rate: Some(5),
            ..row(
                "phone rule: the rate comes first",
                refuse(Refusal::RateLimited { retry_after_ms: 5 }),
            )
        },
        Row {
            recipient: Business,
            ..row("phone rule off: no phone needed", Decision::Accept)
        },
        Row {
            sender: Unspecified,
            ..row("a record from before kinds is a customer", Decision::Accept)
        },
        Row {
            recipient: Business,
            ..row("customer writes to a business", Decision::Accept)
        },
        Row {
            sender: Business,
            ..row(
                "business may not send person-to-person conversation",
                refuse(Refusal::BusinessConversation),
            )
        },
        Row {
            sender: Business,
            recipient: Business,
            ..row(
                "not to another business either",
                refuse(Refusal::BusinessConversation),
            )
        },
        Row {
            sender: Business,
            category: Category::Service as i32,
            ..row("business replies as service", Decision::Accept)
        },
        Row {
            sender: Business,
            category: Category::Service as i32,
            customer_wrote_at_ms: None,
            ..row(
                "window: no service reply to a customer who never wrote",
                refuse(Refusal::WindowClosed {
                    customer_wrote_at_ms: None,
                }),
            )
        },
        Row {
            sender: Business,
            category: Category::Service as i32,
            customer_wrote_at_ms: Some(NOW - WINDOW_MS + 1),
            ..row("window: open until its last millisecond", Decision::Accept)
        },
        Row {
            sender: Business,
            category: Category::Service as i32,
            customer_wrote_at_ms: Some(NOW - WINDOW_MS),
            ..row(
                "window: closed 24 hours after the customer's last message",
                refuse(Refusal::WindowClosed {
                    customer_wrote_at_ms: Some(NOW - WINDOW_MS),
                }),
            )
        },
        Row {
            sender: Business,
            category: Category::Utility as i32,
            ..row(
                "consent: a utility template inside the window needs none",
                billed(1_000, true),
            )
        },
        Row {
            sender: Business,
            category: Category::Utility as i32,
            customer_wrote_at_ms: None,
            ..row(
                "consent: outside the window a utility template needs it",
                refuse(Refusal::NoConsent {
                    category: Category::Utility,
                }),
            )
        },
        Row {
            sender: Business,
            category: Category::Authentication as i32,
            customer_wrote_at_ms: None,
            consent: ConsentCategories::UTILITY,
            ..row(
                "consent: for one category is not for another",
                refuse(Refusal::NoConsent {
                    category: Category::Authentication,
                }),
            )
        },
        Row {
            sender: Business,
            category: Category::Authentication as i32,
            customer_wrote_at_ms: None,
            consent: ConsentCategories::AUTHENTICATION,
            ..row(
                "consent: outside the window, under consent",
                billed(4_000, false),
            )
        },
        Row {
            sender: Business,
            category: Category::Marketing as i32,
            consent: ConsentCategories::UTILITY,
            ..row(
                "consent: marketing needs it inside the window too",
                refuse(Refusal::NoConsent {
                    category: Category::Marketing,
                }),
            )
        },
        Row {
            sender: Business,
            category: Category::Marketing as i32,
            customer_wrote_at_ms: None,
            consent: ConsentCategories::MARKETING,
            ..row("consent: marketing under consent", billed(6_000, false))
        },
        Row {
            sender: Business,
            recipient: Business,
            category: Category::Marketing as i32,
            customer_wrote_at_ms: None,
            ..row(
                "consent: only a business writing to a customer needs it",
                Decision::Accept,
            )
        },
        Row {
            sender: Business,
            category: Category::Control as i32,
            customer_wrote_at_ms: None,
            ..row(
                "window: control traffic is not held to it",
                Decision::Accept,
            )
        },
        Row {
            sender: Business,
            recipient: Business,
            category: Category::Service as i32,
            customer_wrote_at_ms: None,
            ..row(
                "window: only a business writing to a customer is held to it",
                Decision::Accept,
            )
        },
        Row {
            sender: Business,
            category: Category::Marketing as i32,
            consent: ConsentCategories::MARKETING,
            ..row("business sends a marketing template", billed(5_000, true))
        },
        Row {
            category: Category::Utility as i32,
            ..row(
                "customer may not send a business category",
                refuse(Refusal::CustomerBusinessCategory(Category::Utility)),
            )
        },
        Row {
            category: Category::Control as i32,
            ..row("control between customers", Decision::Accept)
        },
        Row {
            sender: Business,
            category: Category::Control as i32,
            ..row("control from a business", Decision::Accept)
        },
        Row {
            category: Category::Unspecified as i32,
            ..row("unspecified category", refuse(Refusal::UnknownCategory(0)))
        },
        Row {
            category: 99,
            ..row("unknown category", refuse(Refusal::UnknownCategory(99)))
        },
        Row {
            rate: Some(250),
            ..row(
                "rate first",
                refuse(Refusal::RateLimited {
                    retry_after_ms: 250,
                }),
            )
        },
        Row {
            ciphertexts: vec![],
            ..row("no ciphertext", refuse(Refusal::DeviceCount(0)))
        },
        Row {
            ciphertexts: (1..=(MAX_DEVICES as u32 + 1)).map(|d| (d, 10)).collect(),
            ..row(
                "too many ciphertexts",
                refuse(Refusal::DeviceCount(MAX_DEVICES + 1)),
            )
        },
        Row {
            ciphertexts: vec![(1, 100), (2, 0)],
            ..row("empty ciphertext", refuse(Refusal::EmptyCiphertext))
        },
        Row {
            ciphertexts: vec![(1, 100), (2, MAX_MESSAGE_LEN + 1)],
            ..row(
                "ciphertext larger than any message",
                refuse(Refusal::CiphertextTooLarge {
                    got: MAX_MESSAGE_LEN + 1,
                }),
            )
        },
        Row {
            ciphertexts: vec![(1, 100), (2, MAX_MESSAGE_LEN)],
            ..row("largest message", Decision::Accept)
        },
        Row {
            blocked: true,
            ..row("blocked", refuse(Refusal::Blocked))
        },
        Row {
            ciphertexts: vec![(1, 100)],
            ..row("a device missing", refuse(Refusal::DeviceListMismatch))
        },
        Row {
            ciphertexts: vec![(1, 100), (2, 100), (3, 100)],
            ..row("a device too many", refuse(Refusal::DeviceListMismatch))
        },
        Row {
            ciphertexts: vec![(1, 100), (1, 100)],
            ..row("a device twice", refuse(Refusal::DeviceListMismatch))
        },
        Row {
            to_self: true,
            category: Category::Control as i32,
            ciphertexts: vec![(2, 100)],
            ..row("sync to own other devices", Decision::Accept)
        },
        Row {
            to_self: true,
            blocked: true,
            category: Category::Control as i32,
            ciphertexts: vec![(2, 100)],
            ..row("a block never applies to oneself", Decision::Accept)
        },
        Row {
            to_self: true,
            category: Category::Control as i32,
            ciphertexts: vec![(1, 100), (2, 100)],
            ..row(
                "not to the sending device itself",
                refuse(Refusal::DeviceListMismatch),
            )
        },
        Row {
            sender: Customer,
            recipient: Business,
            blocked: true,
            ..row("a business can block a customer", refuse(Refusal::Blocked))
        },
        Row {
            category: Category::Service as i32,
            ..row(
                "customer may not send service",
                refuse(Refusal::CustomerBusinessCategory(Category::Service)),
            )
        },
        Row {
            category: Category::Authentication as i32,
            ..row(
                "customer may not send an authentication template",
                refuse(Refusal::CustomerBusinessCategory(Category::Authentication)),
            )
        },
        Row {
            category: Category::Marketing as i32,
            ..row(
                "customer may not send a marketing template",
                refuse(Refusal::CustomerBusinessCategory(Category::Marketing)),
            )
        },
        Row {
            to_self: true,
            devices: vec![1, 2, 3],
            ciphertexts: vec![(2, 100), (3, 100)],
            new_conversations_today: Some(2),
            ..row(
                "writing to one's own account starts no conversation, even at the cap",
                Decision::Accept,
            )
        },
        Row {
            sender: Business,
            to_self: true,
            devices: vec![1, 2],
            ciphertexts: vec![(2, 100)],
            category: Category::Utility as i32,
            ..row(
                "billing: nothing bills a business writing to its own devices",
                Decision::Accept,
            )
        },
        Row {
            sender: Business,
            category: Category::Utility as i32,
            metered: false,
            ..row(
                "billing: an unmetered relay bills nothing",
                Decision::Accept,
            )
        },
        Row {
            sender: Business,
            category: Category::Control as i32,
            status_key: true,
            customer_wrote_at_ms: None,
            ..row(
                "billing: a business's Status key to a customer, at the Status price",
                billed(700, false),
            )
        },
        Row {
            sender: Business,
            category: Category::Control as i32,
            status_key: true,
            metered: false,
            ..row(
                "billing: an unmetered relay bills no Status key either",
                Decision::Accept,
            )
        },
        Row {
            sender: Business,
            recipient: Business,
            category: Category::Control as i32,
            status_key: true,
            ..row(
                "billing: a Status key to another business is free",
                Decision::Accept,
            )
        },
        Row {
            category: Category::Control as i32,
            status_key: true,
            ..row("billing: a person's Status key is free", Decision::Accept)
        },
        Row {
            sender: Business,
            category: Category::Control as i32,
            customer_wrote_at_ms: None,
            ..row(
                "billing: other control traffic from a business is free",
                Decision::Accept,
            )
        },
        Row {
            template_id: Box::leak("t".repeat(MAX_TEMPLATE_ID_LEN + 1).into_boxed_str()),
            ..row(
                "sizes: a template id too long",
                refuse(Refusal::TemplateIdTooLong {
                    got: MAX_TEMPLATE_ID_LEN + 1,
                }),
            )
        },
        Row {
            franking_tag_len: MAX_FRANKING_TAG_LEN + 1,
            ..row(
                "sizes: a franking tag too long",
                refuse(Refusal::FrankingTagTooLong {
                    got: MAX_FRANKING_TAG_LEN + 1,
                }),
            )
        },
        Row {
            sender: Business,
            category: Category::Service as i32,
            franking_tag_len: 0,
            ..row(
                "franking: a business's message carries a tag",
                refuse(Refusal::FrankingRequired { got: 0 }),
            )
        },
        Row {
            sender: Business,
            category: Category::Service as i32,
            franking_tag_len: 16,
            ..row(
                "franking: of the tag's length",
                refuse(Refusal::FrankingRequired { got: 16 }),
            )
        },
        Row {
            sender: Business,
            category: Category::Service as i32,
            franking_tag_len: 0,
            requires_franking: false,
            ..row(
                "franking: not on a relay with franking off",
                Decision::Accept,
            )
        },
        Row {
            franking_tag_len: 0,
            ..row(
                "franking: a customer's message needs none",
                Decision::Accept,
            )
        },
    ];
    let rate_card = card();
    for case in cases {
        let sender = if case.sender_phone {
            with_phone(record(case.sender))
        } else {
            record(case.sender)
        };
        let recipient = record(case.recipient);
        let recipient_account = if case.to_self { ALICE } else { BOB };
        let input = SendInput {
            sender: Party {
                record: &sender,
                account: &ALICE,
            },
            recipient: Party {
                record: if case.to_self { &sender } else { &recipient },
                account: &recipient_account,
            },
            recipient_devices: &case.devices,
            request: SendRequest {
                sender_device: 1,
                category: case.category,
                template_id: case.template_id,
                franking_tag_len: case.franking_tag_len,
                ciphertexts: &case.ciphertexts,
                status_key: case.status_key,
            },
            conversation: Conversation {
                blocked: case.blocked,
                customer_wrote_at_ms: case.customer_wrote_at_ms,
                consent: case.consent,
            },
            template: case.template.unwrap_or_else(|| {
                Category::try_from(case.category)
                    .map_or(TemplateState::NotApproved, TemplateState::Approved)
            }),
            quotas: Quotas {
                rate_retry_after_ms: case.rate,
                new_conversations_today: case.new_conversations_today,
            },
            rules: Rules {
                require_phone_for_business: case.phone_rule,
                new_conversations_per_day_without_phone: 2,
                requires_franking: case.requires_franking,
                metered: case.metered,
            },
            rate_card: &rate_card,
            now_ms: NOW,
        };
        assert_eq!(decide(&input), case.expect, "{}", case.name);
    }
}

#[test]
fn every_refusal_says_what_to_do_without_internals() {
    let all = [
        Refusal::RateLimited { retry_after_ms: 1 },
        Refusal::UnknownCategory(7),
        Refusal::BusinessConversation,
        Refusal::CustomerBusinessCategory(Category::Marketing),
        Refusal::DeviceCount(0),
        Refusal::EmptyCiphertext,
        Refusal::CiphertextTooLarge { got: 1 },
        Refusal::Blocked,
        Refusal::DeviceListMismatch,
        Refusal::TemplateIdTooLong { got: 200 },
        Refusal::FrankingTagTooLong { got: 70 },
        Refusal::FrankingRequired { got: 0 },
        Refusal::NewConversationQuota { per_day: 20 },
        Refusal::TemplateNotApproved,
        Refusal::TemplateCategory {
            approved: Category::Utility,
            sent: Category::Marketing,
        },
        Refusal::PhoneRequired,
        Refusal::NoConsent {
            category: Category::Marketing,
        },
        Refusal::NoConsent {
            category: Category::Utility,
        },
        Refusal::WindowClosed {
            customer_wrote_at_ms: None,
        },
        Refusal::WindowClosed {
            customer_wrote_at_ms: Some(NOW),
        },
    ];
    for refusal in all {
        let text = refusal.message();
        assert!(!text.is_empty() && !text.contains("::"), "{text}");
    }
}

#[test]
fn accounting_of_accepted_sends() {
    use super::{Accounting, accounting};
    let (b, c) = (record(AccountKind::Business), record(AccountKind::Customer));
    let none = Accounting::default();
    let cases: &[(&AccountRecord, &AccountRecord, Category, bool, Accounting)] = &[
        // A customer writing to a business opens the window.
        (
            &c,
            &b,
            Category::Conversation,
            false,
            Accounting {
                opens_window: true,
                ..none
            },
        ),
        // Templates from a business to a customer are billed and count
        // among the customers reached.
        (
            &b,
            &c,
            Category::Utility,
            false,
            Accounting {
                business_initiated: true,
                billed: Some(Category::Utility),
                ..none
            },
        ),
        (
            &b,
            &c,
            Category::Marketing,
            false,
            Accounting {
                business_initiated: true,
                billed: Some(Category::Marketing),
                ..none
            },
        ),
        (
            &b,
            &c,
            Category::Authentication,
            false,
            Accounting {
                business_initiated: true,
                billed: Some(Category::Authentication),
                ..none
            },
        ),
        // Service replies, person-to-person chat, control traffic and an
        // account's own devices count for nothing.
        (&b, &c, Category::Service, false, none),
        (&c, &c, Category::Conversation, false, none),
        (&c, &b, Category::Control, false, none),
        (&b, &b, Category::Utility, true, none),
        (&c, &b, Category::Conversation, true, none),
    ];
    for (sender, recipient, category, to_self, want) in cases {
        assert_eq!(
            accounting(sender, recipient, *category as i32, *to_self),
            *want,
            "{category:?} to_self={to_self}"
        );
    }
}

#[test]
fn the_price_is_the_rate_cards_inside_or_outside_the_window_at_accept() {
    use crate::storage::Priced;
    let card = crate::config::RatesConfig::default()
        .card()
        .expect("the default card");
    let wrote = 1_000_000;
    let cases = [
        // (category, customer wrote at, now, price)
        (Category::Utility, Some(wrote), wrote + 1, Some((0, true))),
        (
            Category::Utility,
            Some(wrote),
            wrote + WINDOW_MS - 1,
            Some((0, true)),
        ),
        (
            Category::Utility,
            Some(wrote),
            wrote + WINDOW_MS,
            Some((5_000, false)),
        ),
        (Category::Utility, None, wrote, Some((5_000, false))),
        (
            Category::Authentication,
            Some(wrote),
            wrote + 1,
            Some((30_000, true)),
        ),
        (
            Category::Marketing,
            Some(wrote),
            wrote + 1,
            Some((90_000, true)),
        ),
        (Category::Marketing, None, wrote, Some((90_000, false))),
        (Category::Service, Some(wrote), wrote + 1, None),
        (Category::Conversation, None, wrote, None),
    ];
    for (category, wrote_at, now, expected) in cases {
        assert_eq!(
            price(&card, category, wrote_at, now),
            expected.map(|(millionths, inside_window)| Priced {
                millionths,
                inside_window
            }),
            "{category:?} wrote {wrote_at:?} now {now}"
        );
    }
}

#[test]
fn a_status_key_is_priced_only_from_a_business_to_a_customer_and_only_when_not_free() {
    use crate::storage::Priced;
    use AccountKind::{Business as B, Customer as C, Unspecified as U};
    let free = crate::config::RatesConfig::default()
        .card()
        .expect("the default card");
    assert_eq!(free.status, 0);
    let priced = comptoir_protocol::RateCard {
        status: 2_500,
        ..free.clone()
    };
    let billed = Some(Priced {
        millionths: 2_500,
        inside_window: false,
    });
    // (card, poster, recipient, to its own devices, price)
    let cases = [
        (&priced, B, C, false, billed),
        (&priced, B, U, false, billed),
        (&priced, B, B, false, None),
        (&priced, B, B, true, None),
        (&priced, C, C, false, None),
        (&priced, C, B, false, None),
        (&free, B, C, false, None),
    ];
    for (card, sender, recipient, to_self, expected) in cases {
        assert_eq!(
            status_price(card, &record(sender), &record(recipient), to_self),
            expected,
            "{sender:?} to {recipient:?} (own devices: {to_self}) at {}",
            card.status
        );
    }
}
