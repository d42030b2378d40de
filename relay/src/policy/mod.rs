//! The relay's decisions about a send, as one pure function: no I/O, no
//! clock, no storage. The `Send` handler gathers the inputs (both account
//! records, the recipient's current devices, the block state, the rate
//! limiter's answer, `now`) and applies the [`Decision`]; nothing else
//! decides whether an envelope is accepted. [`admit`] holds the rules that
//! need no stored record, so the handler can refuse a rate-limited send
//! before reading storage.
//!
//! Today's rules, in the order they are checked:
//! 1. rate: the sender's token bucket had a token;
//! 2. category: a known category, not `UNSPECIFIED`;
//! 3. kinds: a business never sends person-to-person `CONVERSATION`; a
//!    customer never sends the business categories (service, utility,
//!    authentication, marketing); control traffic goes between any two;
//! 4. phone: when the operator requires it
//!    ([`Rules::require_phone_for_business`]), a sender with no verified
//!    phone number never sends to a business (other than itself); and a
//!    sender with no verified phone number starts at most
//!    [`Rules::new_conversations_per_day_without_phone`] new conversations
//!    (to an account it never talked with) per UTC day
//!    ([`Quotas::new_conversations_today`]); otherwise `QUOTA_EXCEEDED`;
//! 5. sizes: 1 to [`MAX_DEVICES`] ciphertexts, none empty, none longer than
//!    a ratchet message can be ([`MAX_MESSAGE_LEN`]);
//! 6. block: the recipient has not blocked the sender;
//! 7. template: a template category (utility, authentication, marketing)
//!    names a template the operator approved for this sender, under this
//!    very category ([`TemplateState`]); otherwise `TEMPLATE_NOT_APPROVED`;
//! 8. window and consent, for a business writing to a customer: a
//!    free-form reply (`SERVICE`) only within [`WINDOW_MS`] of the relay's
//!    accept time of the customer's last conversation message to it
//!    ([`Conversation::customer_wrote_at_ms`]); a utility or
//!    authentication template inside the window, or outside it under the
//!    customer's consent for that category; a marketing template only
//!    under consent for marketing, inside the window too
//!    ([`Conversation::consent`]); control traffic is never held to
//!    either;
//! 9. device coverage: exactly one ciphertext per current device of the
//!    recipient (minus the sending device when an account syncs itself);
//! 10. envelope fields: a template id of at most [`MAX_TEMPLATE_ID_LEN`]
//!     bytes, a franking tag of at most [`MAX_FRANKING_TAG_LEN`];
//! 11. franking: every message a business sends carries a franking tag
//!     ([`Rules::requires_franking`]), so its recipient can report it.
//!
//! An accepted send is billed when [`accounting`] says the ledger bills
//! it (a business's template to a customer) at [`price`]'s rate, fixed
//! at accept from the rate card; a Status key at [`status_price`]'s: the
//! decision is then [`Decision::AcceptAndBill`] with that rate (never on
//! an unmetered relay, [`Rules::metered`]). [`accounting`] also says what
//! an accepted send counts for besides (the window, the business's
//! reach), which the handler writes with the accept.
//!
//! [`quality`] rates businesses and sets their messaging tiers (the limit
//! of customers a business reaches in 24 hours), applied at accept.

pub mod quality;
#[cfg(test)]
mod tests;

use comptoir_protocol::message::MAX_MESSAGE_LEN;
use comptoir_protocol::proto::wire::{AccountKind, Category};
use comptoir_protocol::{ConsentCategories, MAX_DEVICES};

use crate::storage::{AccountRecord, Kind};

/// One party of a send: its account record and id bytes.
#[derive(Clone, Copy, Debug)]
pub struct Party<'a> {
    /// The account's record (kind, creation, phone, business fields).
    pub record: &'a AccountRecord,
    /// The account id (16 bytes).
    pub account: &'a [u8],
}

/// What the sender asks for.
#[derive(Clone, Copy, Debug)]
pub struct SendRequest<'a> {
    /// The sending device.
    pub sender_device: u32,
    /// The `Category` number as sent.
    pub category: i32,
    /// The template id (empty when none).
    pub template_id: &'a str,
    /// The franking tag's length (0 when none).
    pub franking_tag_len: usize,
    /// Each ciphertext's device id and length, as sent.
    pub ciphertexts: &'a [(u32, usize)],
    /// A Status key (`SendStatusKey`) rather than a message: billed at
    /// the rate card's `status` price, never as a template.
    pub status_key: bool,
}

/// How long a customer's conversation message keeps the window open for
/// the business's free-form replies: 24 hours.
pub const WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// The state between the two accounts (the business issue adds consent).
#[derive(Clone, Copy, Debug, Default)]
pub struct Conversation {
    /// Whether the recipient blocks the sender.
    pub blocked: bool,
    /// For a business writing to a customer: the relay's accept time of
    /// the customer's last conversation message to that business (`None`
    /// if it never wrote, or for any other pair).
    pub customer_wrote_at_ms: Option<u64>,
    /// For a business writing to a customer: what the customer's kept
    /// consent for that business covers now (empty if none, expired or
    /// revoked).
    pub consent: ConsentCategories,
}

/// What the relay's registry says of the template a send names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TemplateState {
    /// No template approved for the sender by that id: unknown, pending,
    /// rejected, revoked, or another business's (or no id at all).
    #[default]
    NotApproved,
    /// Approved by the operator for the sender, under this category.
    Approved(Category),
}

/// Limits and counters that apply to this send.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quotas {
    /// The sender's rate limiter: `Some(ms)` when its bucket is empty and
    /// a token comes back in `ms`.
    pub rate_retry_after_ms: Option<u64>,
    /// When this send would start a new conversation for a sender with no
    /// verified phone number: how many it started today already.
    pub new_conversations_today: Option<u64>,
}

/// The operator's switches (from the relay configuration).
#[derive(Clone, Copy, Debug, Default)]
pub struct Rules {
    /// A sender must have a verified phone number to send to a business
    /// account: throwaway accounts cannot reach businesses.
    pub require_phone_for_business: bool,
    /// New conversations a sender with no verified phone number may start
    /// per UTC day.
    pub new_conversations_per_day_without_phone: u64,
    /// Every message a business sends carries a franking tag (off only on
    /// a benchmark's relay with franking off).
    pub requires_franking: bool,
    /// The relay bills (off only on a benchmark's unmetered relay, whose
    /// accepted sends are then never billed).
    pub metered: bool,
}

/// Everything one decision reads.
#[derive(Clone, Copy, Debug)]
pub struct SendInput<'a> {
    /// The authenticated sender.
    pub sender: Party<'a>,
    /// The recipient.
    pub recipient: Party<'a>,
    /// The recipient's current device ids (from its signed list).
    pub recipient_devices: &'a [u32],
    /// What is asked.
    pub request: SendRequest<'a>,
    /// Block, consent and window state.
    pub conversation: Conversation,
    /// The named template's approval (read only for template categories).
    pub template: TemplateState,
    /// Rate and (later) quota state.
    pub quotas: Quotas,
    /// The operator's switches.
    pub rules: Rules,
    /// The operator's rate card (what a billed send costs).
    pub rate_card: &'a comptoir_protocol::RateCard,
    /// The relay's clock ([`crate::clock::Clock`]), ms since the Unix
    /// epoch: the accept time the send gets if accepted.
    pub now_ms: u64,
}

/// What a billed send is billed as, and its price fixed at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// The bill's line: the template's category, or Status.
    pub line: crate::storage::BilledCategory,
    /// The price, and whether the customer's 24-hour window was open at
    /// accept (the rate card prices the two apart).
    pub priced: crate::storage::Priced,
}

/// What the relay does with a send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Store and forward it, free.
    Accept,
    /// Store and forward it, billed at `Rate` on its first signed delivery
    /// to a device of the customer: a business's template to a customer,
    /// or its Status key when the rate card prices Status.
    AcceptAndBill(Rate),
    /// Refuse it; nothing is stored.
    Refuse(Refusal),
}

/// Why a send is refused (each maps to one wire `ErrorCode`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The sender's token bucket is empty.
    RateLimited {
        /// When a token will be available.
        retry_after_ms: u64,
    },
    /// The category number is unknown or unspecified.
    UnknownCategory(i32),
    /// A business account sent person-to-person conversation.
    BusinessConversation,
    /// A customer account sent a business category.
    CustomerBusinessCategory(Category),
    /// Not 1 to [`MAX_DEVICES`] ciphertexts.
    DeviceCount(usize),
    /// A ciphertext is empty.
    EmptyCiphertext,
    /// A ciphertext is longer than any ratchet message.
    CiphertextTooLarge {
        /// Its length.
        got: usize,
    },
    /// The relay requires a verified phone number to send to a business,
    /// and the sender has none.
    PhoneRequired,
    /// The recipient blocks the sender.
    Blocked,
    /// A business's template the customer's consent does not cover.
    NoConsent {
        /// The template's category.
        category: Category,
    },
    /// A business's free-form reply outside the 24-hour window.
    WindowClosed {
        /// The accept time of the customer's last conversation message,
        /// if it ever wrote.
        customer_wrote_at_ms: Option<u64>,
    },
    /// A sender with no verified phone number started as many new
    /// conversations today as it may.
    NewConversationQuota {
        /// The daily number allowed.
        per_day: u64,
    },
    /// A template category naming no template approved for the sender.
    TemplateNotApproved,
    /// A template approved under another category than the one sent.
    TemplateCategory {
        /// The category the operator approved.
        approved: Category,
        /// The category of the send.
        sent: Category,
    },
    /// The ciphertexts do not cover exactly the recipient's current
    /// devices.
    DeviceListMismatch,
    /// A template id longer than [`MAX_TEMPLATE_ID_LEN`].
    TemplateIdTooLong {
        /// Its length.
        got: usize,
    },
    /// A franking tag longer than [`MAX_FRANKING_TAG_LEN`].
    FrankingTagTooLong {
        /// Its length.
        got: usize,
    },
    /// A business's message without a franking tag of
    /// [`FRANKING_TAG_LEN`](comptoir_protocol::franking::FRANKING_TAG_LEN)
    /// bytes.
    FrankingRequired {
        /// The length sent.
        got: usize,
    },
}

/// Longest template id a send may carry (template ids are short names).
pub const MAX_TEMPLATE_ID_LEN: usize = 128;
/// Longest franking tag a send may carry (an HMAC-SHA256 is 32 bytes).
pub const MAX_FRANKING_TAG_LEN: usize = 64;

impl Refusal {
    /// What the sender should be told (no paths, no type names).
    pub fn message(&self) -> String {
        match self {
            Refusal::RateLimited { retry_after_ms } => {
                format!("rate limited; retry after {retry_after_ms} ms")
            }
            Refusal::UnknownCategory(n) => format!("unknown category {n}"),
            Refusal::BusinessConversation => "a business account cannot send person-to-person \
                conversation; reply as service (inside the window) or send a template"
                .into(),
            Refusal::CustomerBusinessCategory(c) => format!(
                "a customer account cannot send {}; use conversation",
                comptoir_protocol::labels::category_name(*c as i32)
            ),
            Refusal::DeviceCount(n) => {
                format!("a send carries 1 to {MAX_DEVICES} device ciphertexts, got {n}")
            }
            Refusal::EmptyCiphertext => "empty ciphertext".into(),
            Refusal::CiphertextTooLarge { got } => format!(
                "a ciphertext of {got} bytes exceeds the largest ratchet message \
                 ({MAX_MESSAGE_LEN} bytes); send large content as an attachment"
            ),
            Refusal::PhoneRequired => "this relay requires a verified phone number before an \
                account may write to a business; verify one (request a code, then send it back) \
                and retry"
                .into(),
            Refusal::Blocked => "the recipient has blocked this account".into(),
            Refusal::NoConsent { category } => {
                let name = comptoir_protocol::labels::category_name(*category as i32);
                if *category == Category::Marketing {
                    format!(
                        "the customer has not consented to {name} from this business (marketing \
                         needs consent inside the 24-hour window too); it can grant consent \
                         from its client"
                    )
                } else {
                    format!(
                        "outside the 24-hour window a {name} template needs the customer's \
                         consent for {name}, and it has none for this business; ask it for \
                         consent, or reply within 24 hours of its last message"
                    )
                }
            }
            Refusal::WindowClosed {
                customer_wrote_at_ms,
            } => {
                let since = match customer_wrote_at_ms {
                    None => "this customer has not written to this business".to_owned(),
                    Some(at) => format!(
                        "this customer last wrote at {at} ms since the epoch, over 24 hours ago"
                    ),
                };
                format!(
                    "the 24-hour window is closed: {since}; free-form replies are possible \
                     for 24 hours after the customer's last message; send an approved \
                     template instead"
                )
            }
            Refusal::NewConversationQuota { per_day } => format!(
                "an account without a verified phone number starts at most {per_day} new \
                 conversations a day; verify a phone number, or write again tomorrow"
            ),
            Refusal::TemplateNotApproved => "the template id names no template the operator \
                approved for this business (unknown, pending, rejected or revoked): submit it \
                and send it once approved"
                .into(),
            Refusal::TemplateCategory { approved, sent } => format!(
                "the template was approved as {} and cannot be sent as {}",
                comptoir_protocol::labels::category_name(*approved as i32),
                comptoir_protocol::labels::category_name(*sent as i32)
            ),
            Refusal::DeviceListMismatch => {
                "the send must carry one ciphertext per current device of the recipient".into()
            }
            Refusal::TemplateIdTooLong { got } => {
                format!("template_id is {got} bytes; at most {MAX_TEMPLATE_ID_LEN}")
            }
            Refusal::FrankingTagTooLong { got } => {
                format!("franking_tag is {got} bytes; at most {MAX_FRANKING_TAG_LEN}")
            }
            Refusal::FrankingRequired { got } => format!(
                "a business's message must carry a {}-byte franking tag, got {got} bytes",
                comptoir_protocol::franking::FRANKING_TAG_LEN
            ),
        }
    }
}

/// An account's kind as the policy (and the wire) reads it.
pub fn kind_of(record: &AccountRecord) -> AccountKind {
    match record.kind {
        Kind::Business => AccountKind::Business,
        Kind::Customer => AccountKind::Customer,
    }
}

/// What an accepted send counts for besides its delivery: the window,
/// the business's reach, the ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accounting {
    /// A customer's conversation message to a business: it (re)opens the
    /// 24-hour window of that conversation.
    pub opens_window: bool,
    /// A business-initiated conversation (a template to a customer): it
    /// counts among the customers the business reached today.
    pub business_initiated: bool,
    /// The ledger may bill it: a business's template (utility,
    /// authentication, marketing) to a customer.
    pub billed: Option<Category>,
}

/// The [`Accounting`] of a send the policy accepted.
pub fn accounting(
    sender: &AccountRecord,
    recipient: &AccountRecord,
    category: i32,
    to_self: bool,
) -> Accounting {
    if to_self {
        return Accounting::default();
    }
    let category = Category::try_from(category).unwrap_or(Category::Unspecified);
    match (kind_of(sender), kind_of(recipient), category) {
        (AccountKind::Customer, AccountKind::Business, Category::Conversation) => Accounting {
            opens_window: true,
            ..Accounting::default()
        },
        (sender, recipient, c) if comptoir_protocol::is_billed(sender, recipient, c) => {
            Accounting {
                business_initiated: true,
                billed: Some(c),
                ..Accounting::default()
            }
        }
        _ => Accounting::default(),
    }
}

/// Whether a customer who last wrote at `customer_wrote_at_ms` has the
/// 24-hour window open at `now_ms`.
pub fn window_open(customer_wrote_at_ms: Option<u64>, now_ms: u64) -> bool {
    customer_wrote_at_ms.is_some_and(|at| now_ms < at.saturating_add(WINDOW_MS))
}

/// The price of a billed send of `category` (utility, authentication or
/// marketing) accepted at `now_ms`, by the rate card, inside or outside
/// the window by the same clock reading the window rule used; `None` for
/// any other category. Fixed at accept: a later rate card or window does
/// not change it.
pub fn price(
    card: &comptoir_protocol::RateCard,
    category: Category,
    customer_wrote_at_ms: Option<u64>,
    now_ms: u64,
) -> Option<crate::storage::Priced> {
    let category = comptoir_protocol::TemplateCategory::try_from(category).ok()?;
    let inside_window = window_open(customer_wrote_at_ms, now_ms);
    Some(crate::storage::Priced {
        millionths: card.price(category, inside_window),
        inside_window,
    })
}

/// The price of a Status key `sender` delivers to `recipient`, fixed at
/// accept: a business's to a customer (never its own devices) at the rate
/// card's `status` price, billed like a template (on the first signed ack
/// of a device of the customer, once); `None` when it is not billed: a
/// person's Status, or a `status` price of 0 (free: no line at all).
pub fn status_price(
    card: &comptoir_protocol::RateCard,
    sender: &AccountRecord,
    recipient: &AccountRecord,
    to_self: bool,
) -> Option<crate::storage::Priced> {
    let business_to_customer =
        kind_of(sender) == AccountKind::Business && kind_of(recipient) != AccountKind::Business;
    (business_to_customer && !to_self && card.status > 0).then_some(crate::storage::Priced {
        millionths: card.status,
        inside_window: false,
    })
}

/// The rules that need no stored record (today: the rate), checked by the
/// handler before it reads storage; [`decide`] checks them again first.
pub fn admit(quotas: &Quotas) -> Result<(), Refusal> {
    match quotas.rate_retry_after_ms {
        Some(retry_after_ms) => Err(Refusal::RateLimited { retry_after_ms }),
        None => Ok(()),
    }
}

/// Decide one send. Pure: the same input always gives the same decision.
pub fn decide(input: &SendInput<'_>) -> Decision {
    match check(input) {
        Ok(()) => match bill(input) {
            Some(rate) => Decision::AcceptAndBill(rate),
            None => Decision::Accept,
        },
        Err(refusal) => Decision::Refuse(refusal),
    }
}

/// The rate an accepted send is billed at, if it is billed.
fn bill(input: &SendInput<'_>) -> Option<Rate> {
    if !input.rules.metered {
        return None;
    }
    let (sender, recipient) = (input.sender.record, input.recipient.record);
    let to_self = input.sender.account == input.recipient.account;
    if input.request.status_key {
        return status_price(input.rate_card, sender, recipient, to_self).map(|priced| Rate {
            line: crate::storage::BilledCategory::Status,
            priced,
        });
    }
    let billed = accounting(sender, recipient, input.request.category, to_self).billed?;
    let line = match billed {
        Category::Utility => crate::storage::BilledCategory::Utility,
        Category::Authentication => crate::storage::BilledCategory::Authentication,
        Category::Marketing => crate::storage::BilledCategory::Marketing,
        _ => return None,
    };
    let priced = price(
        input.rate_card,
        billed,
        input.conversation.customer_wrote_at_ms,
        input.now_ms,
    )?;
    Some(Rate { line, priced })
}

fn check(input: &SendInput<'_>) -> Result<(), Refusal> {
    admit(&input.quotas)?;
    let request = &input.request;
    let category = match Category::try_from(request.category) {
        Ok(Category::Unspecified) | Err(_) => {
            return Err(Refusal::UnknownCategory(request.category));
        }
        Ok(category) => category,
    };
    match (kind_of(input.sender.record), category) {
        (AccountKind::Business, Category::Conversation) => {
            return Err(Refusal::BusinessConversation);
        }
        (
            AccountKind::Customer,
            c @ (Category::Service
            | Category::Utility
            | Category::Authentication
            | Category::Marketing),
        ) => return Err(Refusal::CustomerBusinessCategory(c)),
        _ => {}
    }
    let to_self = input.sender.account == input.recipient.account;
    if input.rules.require_phone_for_business
        && !to_self
        && kind_of(input.recipient.record) == AccountKind::Business
        && input.sender.record.phone_number.is_empty()
    {
        return Err(Refusal::PhoneRequired);
    }
    if !to_self
        && let Some(today) = input.quotas.new_conversations_today
        && today >= input.rules.new_conversations_per_day_without_phone
    {
        return Err(Refusal::NewConversationQuota {
            per_day: input.rules.new_conversations_per_day_without_phone,
        });
    }
    let count = request.ciphertexts.len();
    if count == 0 || count > MAX_DEVICES {
        return Err(Refusal::DeviceCount(count));
    }
    for &(_, len) in request.ciphertexts {
        if len == 0 {
            return Err(Refusal::EmptyCiphertext);
        }
        if len > MAX_MESSAGE_LEN {
            return Err(Refusal::CiphertextTooLarge { got: len });
        }
    }
    if !to_self && input.conversation.blocked {
        return Err(Refusal::Blocked);
    }
    if !to_self && ConsentCategories::of(category).is_some() {
        match input.template {
            TemplateState::NotApproved => return Err(Refusal::TemplateNotApproved),
            TemplateState::Approved(approved) if approved != category => {
                return Err(Refusal::TemplateCategory {
                    approved,
                    sent: category,
                });
            }
            TemplateState::Approved(_) => {}
        }
    }
    if !to_self
        && kind_of(input.sender.record) == AccountKind::Business
        && kind_of(input.recipient.record) == AccountKind::Customer
    {
        let wrote = input.conversation.customer_wrote_at_ms;
        let open = window_open(wrote, input.now_ms);
        let consent = input.conversation.consent;
        match (category, ConsentCategories::of(category)) {
            (Category::Service, _) if !open => {
                return Err(Refusal::WindowClosed {
                    customer_wrote_at_ms: wrote,
                });
            }
            (Category::Marketing, Some(needed)) if !consent.contains(needed) => {
                return Err(Refusal::NoConsent { category });
            }
            (_, Some(needed)) if !open && !consent.contains(needed) => {
                return Err(Refusal::NoConsent { category });
            }
            _ => {}
        }
    }
    let mut expected: Vec<u32> = input
        .recipient_devices
        .iter()
        .copied()
        .filter(|&id| !(to_self && id == request.sender_device))
        .collect();
    expected.sort_unstable();
    let mut offered: Vec<u32> = request.ciphertexts.iter().map(|&(d, _)| d).collect();
    offered.sort_unstable();
    if offered != expected {
        return Err(Refusal::DeviceListMismatch);
    }
    let template_id_len = request.template_id.len();
    if template_id_len > MAX_TEMPLATE_ID_LEN {
        return Err(Refusal::TemplateIdTooLong {
            got: template_id_len,
        });
    }
    if request.franking_tag_len > MAX_FRANKING_TAG_LEN {
        return Err(Refusal::FrankingTagTooLong {
            got: request.franking_tag_len,
        });
    }
    if input.rules.requires_franking
        && kind_of(input.sender.record) == AccountKind::Business
        && request.franking_tag_len != comptoir_protocol::franking::FRANKING_TAG_LEN
    {
        return Err(Refusal::FrankingRequired {
            got: request.franking_tag_len,
        });
    }
    Ok(())
}
