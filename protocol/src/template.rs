//! Approved templates (docs/PROTOCOL.md, "Templates"): what a business
//! submits, its checks, the canonical bytes whose SHA-256 is the template
//! id, the operator's signed approval (or revocation), and the customer
//! client's check that a decrypted [`TemplateInstance`] is an instance of
//! the approved template, and the quick reply a customer sends back when
//! it taps one of the template's buttons ([`quick_reply`],
//! [`check_quick_reply`]).
//!
//! A template is written by the business as JSON (the serde form of
//! [`Template`]) and reviewed by the operator. Its id covers every field,
//! the business's account id included, so an approved template can be
//! neither changed nor recategorised nor reused by another business
//! without getting a new id that nobody approved.
//!
//! The instance check renders by substituting the typed values into the
//! approved skeleton: what the customer sees is the approved text, with
//! only the placeholders filled in, and the approved buttons.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::account::AccountId;
use crate::canonical::{char_len, has_forbidden_char, is_https_url, put_opt_str, put_str};
use crate::error::Result;
use crate::keys::{OperatorKey, OperatorKeyPair, SIGNATURE_LEN};
use crate::proto::content::{ButtonReply, TemplateInstance, TemplateParameter, template_parameter};
use crate::proto::wire::Category;

/// Context string that opens a template's canonical bytes.
pub const TEMPLATE_CONTEXT: &[u8] = b"Comptoir template v1";
/// Context string that opens a template approval (or revocation).
pub const TEMPLATE_APPROVAL_CONTEXT: &[u8] = b"Comptoir template approval v1";

/// Longest template name, in characters (WhatsApp Business Platform: 512).
pub const MAX_TEMPLATE_NAME_LEN: usize = 512;
/// Longest header, in characters, before and after substitution
/// (WhatsApp: 60).
pub const MAX_HEADER_LEN: usize = 60;
/// Longest body, in characters, as written with its `{{name}}` references
/// (WhatsApp: 1,024).
pub const MAX_BODY_LEN: usize = 1024;
/// Longest rendered body, in characters: the written body plus its
/// values. A bound on what a customer's screen must hold.
pub const MAX_RENDERED_BODY_LEN: usize = 4096;
/// Longest footer, in characters (WhatsApp: 60). A footer has no
/// placeholder.
pub const MAX_FOOTER_LEN: usize = 60;
/// Most placeholders in one template: enough for a boarding pass, few
/// enough that a template stays a skeleton rather than a free-form message.
pub const MAX_PLACEHOLDERS: usize = 20;
/// Most placeholder references in the header (WhatsApp: 1).
pub const MAX_HEADER_PLACEHOLDERS: usize = 1;
/// Longest placeholder name, in characters.
pub const MAX_PLACEHOLDER_NAME_LEN: usize = 64;
/// Most buttons in a template (WhatsApp: 10).
pub const MAX_BUTTONS: usize = 10;
/// Most quick-reply buttons (reply buttons of interactive messages: 3).
pub const MAX_QUICK_REPLIES: usize = 3;
/// Most link buttons (WhatsApp: 2).
pub const MAX_LINK_BUTTONS: usize = 2;
/// Most call buttons (WhatsApp: 1).
pub const MAX_CALL_BUTTONS: usize = 1;
/// Longest button text, in characters (WhatsApp: 25).
pub const MAX_BUTTON_TEXT_LEN: usize = 25;
/// Longest link URL, in characters (WhatsApp: 2,000).
pub const MAX_URL_LEN: usize = 2000;
/// Longest text value of a placeholder, in characters.
pub const MAX_TEXT_VALUE_LEN: usize = 256;
/// Most consecutive spaces in a text value (WhatsApp: 4), so that a value
/// cannot lay itself out as a fake line of the skeleton.
pub const MAX_CONSECUTIVE_SPACES: usize = 4;

/// The category of a template, as approved; the envelope's category must
/// equal it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateCategory {
    /// Order, delivery and account updates.
    Utility,
    /// One-time codes.
    Authentication,
    /// Offers and promotions.
    Marketing,
}

impl TemplateCategory {
    /// The `comptoir.wire.Category` number (3, 4 or 5): the byte in the
    /// canonical encodings.
    pub fn wire_number(self) -> u8 {
        match self {
            Self::Utility => 3,
            Self::Authentication => 4,
            Self::Marketing => 5,
        }
    }

    /// The category from its wire number; `None` for any other number.
    pub fn from_wire_number(number: u8) -> Option<Self> {
        match number {
            3 => Some(Self::Utility),
            4 => Some(Self::Authentication),
            5 => Some(Self::Marketing),
            _ => None,
        }
    }

    /// Lowercase name, for people (`utility`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Utility => "utility",
            Self::Authentication => "authentication",
            Self::Marketing => "marketing",
        }
    }
}

impl fmt::Display for TemplateCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<TemplateCategory> for Category {
    fn from(category: TemplateCategory) -> Self {
        match category {
            TemplateCategory::Utility => Category::Utility,
            TemplateCategory::Authentication => Category::Authentication,
            TemplateCategory::Marketing => Category::Marketing,
        }
    }
}

impl TryFrom<Category> for TemplateCategory {
    type Error = Category;

    /// The template category of a wire category; the wire category back
    /// as the error when it is not a template category.
    fn try_from(category: Category) -> std::result::Result<Self, Category> {
        match category {
            Category::Utility => Ok(Self::Utility),
            Category::Authentication => Ok(Self::Authentication),
            Category::Marketing => Ok(Self::Marketing),
            other => Err(other),
        }
    }
}

/// The type of a placeholder's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceholderKind {
    /// One line of text (at most [`MAX_TEXT_VALUE_LEN`] characters).
    Text,
    /// A whole number, shown in decimal.
    Number,
    /// An amount in minor units with its ISO 4217 currency, shown as
    /// `12.50 GBP`.
    Money,
    /// A moment, shown in UTC to the minute: `2026-12-01T08:40Z`.
    DateTime,
}

impl PlaceholderKind {
    /// The byte in the canonical encoding.
    fn code(self) -> u8 {
        match self {
            Self::Text => 1,
            Self::Number => 2,
            Self::Money => 3,
            Self::DateTime => 4,
        }
    }

    /// Lowercase name, for people and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Number => "number",
            Self::Money => "money",
            Self::DateTime => "date_time",
        }
    }
}

impl fmt::Display for PlaceholderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed placeholder, referenced in the header or body as `{{name}}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placeholder {
    /// 1 to [`MAX_PLACEHOLDER_NAME_LEN`] characters: a-z, 0-9 and `_`,
    /// starting with a letter.
    pub name: String,
    /// The type its value must have.
    #[serde(rename = "type")]
    pub kind: PlaceholderKind,
}

/// A button under a template. Its text is fixed at approval.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Button {
    /// The customer taps it to answer; the business receives which one.
    QuickReply {
        /// The label (1 to [`MAX_BUTTON_TEXT_LEN`] characters).
        text: String,
    },
    /// Opens an `https://` URL fixed at approval.
    Link {
        /// The label.
        text: String,
        /// `https://` only, at most [`MAX_URL_LEN`] characters.
        url: String,
    },
    /// Calls a phone number fixed at approval.
    Call {
        /// The label.
        text: String,
        /// E.164: `+` then 7 to 15 digits, the first not 0.
        phone: String,
    },
}

impl Button {
    /// The label shown on the button.
    pub fn text(&self) -> &str {
        match self {
            Self::QuickReply { text } | Self::Link { text, .. } | Self::Call { text, .. } => text,
        }
    }
}

/// A template as a business submits it and the operator approves it.
///
/// Its JSON form (serde) is what a business writes in a file and what
/// `relay admin templates show` prints:
///
/// ```json
/// {"business": "aaaa…(32 hex)", "name": "boarding_pass", "language": "en_GB",
///  "category": "utility", "header": "Flight {{flight}}",
///  "body": "Gate {{gate}} closes at {{closes}}.", "footer": "Acme Air",
///  "placeholders": [{"name": "flight", "type": "text"}, …],
///  "buttons": [{"type": "quick_reply", "text": "Change seat"}]}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The business that may send it; part of the id, so the same text
    /// approved for another business has another id.
    pub business: AccountId,
    /// 1 to [`MAX_TEMPLATE_NAME_LEN`] characters: a-z, 0-9 and `_`.
    pub name: String,
    /// `ll`, `lll`, `ll_CC` or `lll_CC` (ISO 639 language, optional ISO
    /// 3166 region): `en`, `en_GB`, `pt_BR`.
    pub language: String,
    /// Fixed at approval; the envelope's category must be this one.
    pub category: TemplateCategory,
    /// One line, at most [`MAX_HEADER_LEN`] characters and
    /// [`MAX_HEADER_PLACEHOLDERS`] reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// 1 to [`MAX_BODY_LEN`] characters; may hold newlines.
    pub body: String,
    /// One line, at most [`MAX_FOOTER_LEN`] characters, no reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer: Option<String>,
    /// Every placeholder referenced, each once, each used.
    #[serde(default)]
    pub placeholders: Vec<Placeholder>,
    /// Up to [`MAX_BUTTONS`]: at most [`MAX_QUICK_REPLIES`] quick
    /// replies, [`MAX_LINK_BUTTONS`] links, [`MAX_CALL_BUTTONS`] call.
    #[serde(default)]
    pub buttons: Vec<Button>,
}

/// Why a template cannot be approved (or has no id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The name breaks its rule.
    #[error("the template name must be 1 to {MAX_TEMPLATE_NAME_LEN} characters: a-z, 0-9 and '_'")]
    BadName,
    /// The language is not of the form `en` or `en_GB`.
    #[error("the language must look like 'en' or 'en_GB' (language, then optional region)")]
    BadLanguage,
    /// A text is longer than its limit.
    #[error("the {field} has {got} characters; at most {limit} are allowed")]
    TooLong {
        /// `header`, `body`, `footer`, `button text`.
        field: &'static str,
        /// The limit.
        limit: usize,
        /// Characters found.
        got: usize,
    },
    /// A text that must not be empty is.
    #[error("the {field} is empty; write some text or leave it out")]
    Empty {
        /// Which text.
        field: &'static str,
    },
    /// A control character, a newline outside the body, or a
    /// bidirectional control.
    #[error(
        "the {field} has a character that is not allowed (a control or bidirectional character, or a newline outside the body)"
    )]
    ForbiddenCharacter {
        /// Which text.
        field: &'static str,
    },
    /// A placeholder name breaks its rule.
    #[error(
        "placeholder name {name:?} is not allowed: 1 to {MAX_PLACEHOLDER_NAME_LEN} characters, a-z, 0-9 and '_', starting with a letter"
    )]
    BadPlaceholderName {
        /// The name as declared (cut to 70 characters).
        name: String,
    },
    /// Two placeholders have the same name.
    #[error("placeholder {name:?} is declared twice")]
    DuplicatePlaceholder {
        /// The name.
        name: String,
    },
    /// `{{name}}` appears but `name` is not declared.
    #[error("the {field} refers to {{{{{name}}}}}, which is not declared in placeholders")]
    UndeclaredPlaceholder {
        /// `header` or `body`.
        field: &'static str,
        /// The name referenced.
        name: String,
    },
    /// A declared placeholder is referenced nowhere.
    #[error("placeholder {name:?} is declared but used neither in the header nor in the body")]
    UnusedPlaceholder {
        /// The name.
        name: String,
    },
    /// `{{` without a closing `}}` around a valid name.
    #[error(
        "the {field} has '{{{{' that does not open a reference like {{{{name}}}}; templates cannot show '{{{{' literally"
    )]
    MalformedReference {
        /// `header`, `body` or `footer`.
        field: &'static str,
    },
    /// Too many placeholders, or too many references in the header.
    #[error("the {field} has {got} placeholders; at most {limit} are allowed")]
    TooManyPlaceholders {
        /// `template` or `header`.
        field: &'static str,
        /// The limit.
        limit: usize,
        /// How many.
        got: usize,
    },
    /// Too many buttons of one kind, or in all.
    #[error("the template has {got} {kind} buttons; at most {limit} are allowed")]
    TooManyButtons {
        /// `quick reply`, `link`, `call` or `all`.
        kind: &'static str,
        /// The limit.
        limit: usize,
        /// How many.
        got: usize,
    },
    /// A link button's URL is not an `https://` URL within the limit.
    #[error(
        "link button {index}: the URL must start with https://, name a host, have no spaces and be at most {MAX_URL_LEN} characters"
    )]
    BadUrl {
        /// Index of the button (from 0).
        index: usize,
    },
    /// An authentication template has a link or call button: a one-time
    /// code must not come with somewhere to go (WhatsApp allows only its
    /// code buttons there).
    #[error(
        "an authentication template cannot have link or call buttons; use quick replies or none"
    )]
    ActionInAuthentication,
    /// A call button's number is not E.164.
    #[error("call button {index}: the number must be E.164, like +447700900123")]
    BadPhone {
        /// Index of the button (from 0).
        index: usize,
    },
}

/// A template's id: SHA-256 over its canonical bytes
/// ([`Template::canonical_bytes`]). The wire carries it as 64 lowercase
/// hex characters in the envelope's and the instance's `template_id`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateId(pub [u8; 32]);

impl TemplateId {
    /// The 64-character lowercase hex form (what the wire carries).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse the 64-character hex form; only lowercase is accepted, so
    /// each id has one text form and string comparisons on the wire work.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut id = [0u8; 32];
        hex::decode_to_slice(text, &mut id).ok()?;
        Some(Self(id))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TemplateId({})", self.to_hex())
    }
}

impl Serialize for TemplateId {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for TemplateId {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a template id is 64 lowercase hex characters"))
    }
}

/// A piece of a header or body: literal text, or a `{{name}}` reference.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Literal(&'a str),
    Reference(&'a str),
}

/// Whether `name` is a valid placeholder name.
fn is_placeholder_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= MAX_PLACEHOLDER_NAME_LEN
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Split a text into literals and `{{name}}` references; `None` when a
/// `{{` does not open a valid reference.
fn pieces(text: &str) -> Option<Vec<Piece<'_>>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(Piece::Literal(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        let name = &after[..end];
        if !is_placeholder_name(name) {
            return None;
        }
        out.push(Piece::Reference(name));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest));
    }
    Some(out)
}

/// Whether `phone` is E.164: `+`, then 7 to 15 digits, the first not 0.
fn is_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Whether `language` is `ll`, `lll`, `ll_CC` or `lll_CC`.
fn is_language(language: &str) -> bool {
    let (lang, region) = match language.split_once('_') {
        Some((lang, region)) => (lang, Some(region)),
        None => (language, None),
    };
    (2..=3).contains(&lang.len())
        && lang.bytes().all(|b| b.is_ascii_lowercase())
        && region.is_none_or(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
}

/// Check one text field: length, characters.
fn check_text(
    field: &'static str,
    text: &str,
    limit: usize,
    newline_allowed: bool,
) -> std::result::Result<(), TemplateError> {
    let got = char_len(text);
    if got == 0 {
        return Err(TemplateError::Empty { field });
    }
    if got > limit {
        return Err(TemplateError::TooLong { field, limit, got });
    }
    if has_forbidden_char(text, newline_allowed) {
        return Err(TemplateError::ForbiddenCharacter { field });
    }
    Ok(())
}

/// The references in a text, checked against the declared names.
fn references<'a>(
    field: &'static str,
    text: &'a str,
    declared: &BTreeMap<&str, PlaceholderKind>,
) -> std::result::Result<Vec<&'a str>, TemplateError> {
    let pieces = pieces(text).ok_or(TemplateError::MalformedReference { field })?;
    let mut names = Vec::new();
    for piece in pieces {
        if let Piece::Reference(name) = piece {
            if !declared.contains_key(name) {
                return Err(TemplateError::UndeclaredPlaceholder {
                    field,
                    name: name.to_owned(),
                });
            }
            names.push(name);
        }
    }
    Ok(names)
}

impl Template {
    /// Check every rule (the business's tool before submitting, the relay
    /// before storing, the operator before approving).
    pub fn validate(&self) -> std::result::Result<(), TemplateError> {
        if !(1..=MAX_TEMPLATE_NAME_LEN).contains(&self.name.len())
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(TemplateError::BadName);
        }
        if !is_language(&self.language) {
            return Err(TemplateError::BadLanguage);
        }
        if self.placeholders.len() > MAX_PLACEHOLDERS {
            return Err(TemplateError::TooManyPlaceholders {
                field: "template",
                limit: MAX_PLACEHOLDERS,
                got: self.placeholders.len(),
            });
        }
        let mut declared = BTreeMap::new();
        for placeholder in &self.placeholders {
            if !is_placeholder_name(&placeholder.name) {
                return Err(TemplateError::BadPlaceholderName {
                    name: placeholder.name.chars().take(70).collect(),
                });
            }
            if declared
                .insert(placeholder.name.as_str(), placeholder.kind)
                .is_some()
            {
                return Err(TemplateError::DuplicatePlaceholder {
                    name: placeholder.name.clone(),
                });
            }
        }
        let mut used = BTreeSet::new();
        if let Some(header) = &self.header {
            check_text("header", header, MAX_HEADER_LEN, false)?;
            let names = references("header", header, &declared)?;
            if names.len() > MAX_HEADER_PLACEHOLDERS {
                return Err(TemplateError::TooManyPlaceholders {
                    field: "header",
                    limit: MAX_HEADER_PLACEHOLDERS,
                    got: names.len(),
                });
            }
            used.extend(names);
        }
        check_text("body", &self.body, MAX_BODY_LEN, true)?;
        used.extend(references("body", &self.body, &declared)?);
        if let Some(footer) = &self.footer {
            check_text("footer", footer, MAX_FOOTER_LEN, false)?;
            if footer.contains("{{") {
                return Err(TemplateError::MalformedReference { field: "footer" });
            }
        }
        if let Some(name) = declared.keys().find(|name| !used.contains(*name)) {
            return Err(TemplateError::UnusedPlaceholder {
                name: (*name).to_owned(),
            });
        }
        self.validate_buttons()
    }

    fn validate_buttons(&self) -> std::result::Result<(), TemplateError> {
        let count = |f: fn(&Button) -> bool| self.buttons.iter().filter(|b| f(b)).count();
        for (kind, limit, got) in [
            ("", MAX_BUTTONS, self.buttons.len()),
            (
                "quick reply",
                MAX_QUICK_REPLIES,
                count(|b| matches!(b, Button::QuickReply { .. })),
            ),
            (
                "link",
                MAX_LINK_BUTTONS,
                count(|b| matches!(b, Button::Link { .. })),
            ),
            (
                "call",
                MAX_CALL_BUTTONS,
                count(|b| matches!(b, Button::Call { .. })),
            ),
        ] {
            if got > limit {
                return Err(TemplateError::TooManyButtons {
                    kind: if kind.is_empty() { "in all" } else { kind },
                    limit,
                    got,
                });
            }
        }
        if self.category == TemplateCategory::Authentication
            && self
                .buttons
                .iter()
                .any(|b| !matches!(b, Button::QuickReply { .. }))
        {
            return Err(TemplateError::ActionInAuthentication);
        }
        for (index, button) in self.buttons.iter().enumerate() {
            check_text("button text", button.text(), MAX_BUTTON_TEXT_LEN, false)?;
            match button {
                Button::QuickReply { .. } => {}
                Button::Link { url, .. } => {
                    if !is_https_url(url, MAX_URL_LEN) {
                        return Err(TemplateError::BadUrl { index });
                    }
                }
                Button::Call { phone, .. } => {
                    if !is_e164(phone) {
                        return Err(TemplateError::BadPhone { index });
                    }
                }
            }
        }
        Ok(())
    }

    /// The canonical bytes of a valid template (the template is checked
    /// first):
    ///
    /// ```text
    /// "Comptoir template v1" (20 bytes) || business account (16) ||
    /// str(name) || str(language) || category (u8: 3 utility,
    /// 4 authentication, 5 marketing) || opt(header) || str(body) ||
    /// opt(footer) || placeholder count (u8) || for each placeholder, in
    /// increasing byte order of name: str(name) || type (u8: 1 text,
    /// 2 number, 3 money, 4 date-time) || button count (u8) || for each
    /// button, in the template's order: type (u8: 1 quick reply, 2 link,
    /// 3 call) || str(text) || (link: str(url)) || (call: str(phone))
    /// ```
    ///
    /// where `str(s)` is `u32 BE byte length || UTF-8 bytes` and `opt(s)`
    /// is `0x00` when absent, `0x01 || str(s)` when present. Placeholders
    /// are sorted because their declaration order means nothing; buttons
    /// are not, because their order is what the customer sees.
    pub fn canonical_bytes(&self) -> std::result::Result<Vec<u8>, TemplateError> {
        self.validate()?;
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(TEMPLATE_CONTEXT);
        out.extend_from_slice(self.business.as_bytes());
        put_str(&mut out, &self.name);
        put_str(&mut out, &self.language);
        out.push(self.category.wire_number());
        put_opt_str(&mut out, self.header.as_deref());
        put_str(&mut out, &self.body);
        put_opt_str(&mut out, self.footer.as_deref());
        let mut placeholders: Vec<&Placeholder> = self.placeholders.iter().collect();
        placeholders.sort_by(|a, b| a.name.cmp(&b.name));
        // Validated: at most MAX_PLACEHOLDERS (20) and MAX_BUTTONS (10).
        out.push(placeholders.len() as u8);
        for placeholder in placeholders {
            put_str(&mut out, &placeholder.name);
            out.push(placeholder.kind.code());
        }
        out.push(self.buttons.len() as u8);
        for button in &self.buttons {
            match button {
                Button::QuickReply { text } => {
                    out.push(1);
                    put_str(&mut out, text);
                }
                Button::Link { text, url } => {
                    out.push(2);
                    put_str(&mut out, text);
                    put_str(&mut out, url);
                }
                Button::Call { text, phone } => {
                    out.push(3);
                    put_str(&mut out, text);
                    put_str(&mut out, phone);
                }
            }
        }
        Ok(out)
    }

    /// The template id: SHA-256 of [`Template::canonical_bytes`]. Only a
    /// valid template has one.
    pub fn template_id(&self) -> std::result::Result<TemplateId, TemplateError> {
        Ok(TemplateId(Sha256::digest(self.canonical_bytes()?).into()))
    }

    /// The declared type of a placeholder.
    pub fn placeholder_kind(&self, name: &str) -> Option<PlaceholderKind> {
        self.placeholders
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.kind)
    }
}

/// Whether an approval record approves or revokes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// The business may send the template.
    Approved,
    /// It may no longer.
    Revoked,
}

impl ApprovalStatus {
    /// The byte in the signed layout.
    fn code(self) -> u8 {
        match self {
            Self::Approved => 1,
            Self::Revoked => 2,
        }
    }
}

/// The operator's decision on a template: approved or revoked, at a time.
///
/// A revocation is the same record with [`ApprovalStatus::Revoked`] and a
/// later `issued_at_ms`. A client (and the relay) keeps, per template id,
/// only the newest record it has verified ([`TemplateApproval::supersedes`]):
/// a template counts as approved exactly when that record says
/// `Approved`. An old approval replayed after a revocation therefore
/// changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateApproval {
    /// The template's id.
    pub template_id: TemplateId,
    /// The business it is approved for (the one in the template).
    pub business: AccountId,
    /// The category it is approved under (the one in the template).
    pub category: TemplateCategory,
    /// Approved or revoked.
    pub status: ApprovalStatus,
    /// When the operator decided, ms since the Unix epoch.
    pub issued_at_ms: u64,
}

/// Why an approval record does not cover a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// The record names another template.
    #[error("the approval is for template {approved}, not {template}")]
    OtherTemplate {
        /// The id in the record.
        approved: TemplateId,
        /// The template's id.
        template: TemplateId,
    },
    /// The record names another business or category than the template.
    #[error("the approval names another business or category than the template")]
    OtherBusinessOrCategory,
    /// The newest record revokes the template.
    #[error("template {0} was revoked by the operator")]
    Revoked(TemplateId),
    /// The template itself breaks a rule (it cannot have been approved).
    #[error("invalid template: {0}")]
    InvalidTemplate(#[from] TemplateError),
}

impl TemplateApproval {
    /// An approval of a valid template at `issued_at_ms`.
    pub fn approve(
        template: &Template,
        issued_at_ms: u64,
    ) -> std::result::Result<Self, TemplateError> {
        Ok(Self {
            template_id: template.template_id()?,
            business: template.business,
            category: template.category,
            status: ApprovalStatus::Approved,
            issued_at_ms,
        })
    }

    /// The revocation of this record's template at `revoked_at_ms`
    /// (later than this record's time, or it would not supersede it).
    pub fn revoke(&self, revoked_at_ms: u64) -> Self {
        Self {
            status: ApprovalStatus::Revoked,
            issued_at_ms: revoked_at_ms,
            ..self.clone()
        }
    }

    /// Whether this record replaces `older` for the same template: it is
    /// newer, or as new and a revocation (a revocation wins a tie).
    /// Records for different templates never supersede each other.
    pub fn supersedes(&self, older: &Self) -> bool {
        self.template_id == older.template_id
            && (self.issued_at_ms > older.issued_at_ms
                || (self.issued_at_ms == older.issued_at_ms
                    && self.status == ApprovalStatus::Revoked
                    && older.status == ApprovalStatus::Approved))
    }

    /// Check that this record (the newest verified one for its id) lets
    /// `template` be sent: same id, business and category, and approved.
    pub fn covers(&self, template: &Template) -> std::result::Result<(), ApprovalError> {
        let id = template.template_id()?;
        if id != self.template_id {
            return Err(ApprovalError::OtherTemplate {
                approved: self.template_id,
                template: id,
            });
        }
        if self.business != template.business || self.category != template.category {
            return Err(ApprovalError::OtherBusinessOrCategory);
        }
        if self.status == ApprovalStatus::Revoked {
            return Err(ApprovalError::Revoked(id));
        }
        Ok(())
    }
}

/// The bytes the operator signs:
///
/// ```text
/// "Comptoir template approval v1" (29 bytes) || template id (32) ||
/// business account (16) || category (u8: 3 utility, 4 authentication,
/// 5 marketing) || status (u8: 1 approved, 2 revoked) ||
/// issued_at_ms (u64 BE)
/// ```
pub fn template_approval_payload(approval: &TemplateApproval) -> Vec<u8> {
    let mut out = Vec::with_capacity(TEMPLATE_APPROVAL_CONTEXT.len() + 32 + 16 + 2 + 8);
    out.extend_from_slice(TEMPLATE_APPROVAL_CONTEXT);
    out.extend_from_slice(approval.template_id.as_bytes());
    out.extend_from_slice(approval.business.as_bytes());
    out.push(approval.category.wire_number());
    out.push(approval.status.code());
    out.extend_from_slice(&approval.issued_at_ms.to_be_bytes());
    out
}

/// Sign an approval (or revocation) with the operator key.
pub fn sign_template_approval(
    operator: &OperatorKeyPair,
    approval: &TemplateApproval,
) -> [u8; SIGNATURE_LEN] {
    operator.sign(&template_approval_payload(approval))
}

/// Check an approval (or revocation) against the pinned operator key;
/// strict Ed25519.
pub fn verify_template_approval(
    operator: &OperatorKey,
    approval: &TemplateApproval,
    signature: &[u8],
) -> Result<()> {
    operator.verify(
        "template approval",
        &template_approval_payload(approval),
        signature,
    )
}

/// A template instance as the customer sees it: the approved skeleton with
/// the values filled in, and the approved buttons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedTemplate {
    /// The header, one line.
    pub header: Option<String>,
    /// The body.
    pub body: String,
    /// The footer, as approved.
    pub footer: Option<String>,
    /// The buttons, as approved, in order.
    pub buttons: Vec<Button>,
}

/// Why a decrypted template instance is not an instance of the approved
/// template: the customer's client shows it marked as a violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// The instance names another template than the approved one.
    #[error("the message names template {got:?}, not the approved {expected}")]
    WrongTemplate {
        /// The approved template's id (hex).
        expected: String,
        /// The id in the instance (cut to 80 characters).
        got: String,
    },
    /// The envelope's category is not the approved category.
    #[error(
        "the message was sent as category {envelope:?}; the template is approved as {approved}"
    )]
    CategoryMismatch {
        /// The approved category.
        approved: TemplateCategory,
        /// The envelope's category.
        envelope: Category,
    },
    /// A declared placeholder has no value.
    #[error("no value for placeholder {0:?}")]
    MissingParameter(String),
    /// A value for a name the template does not declare.
    #[error("a value for {0:?}, which the template does not have")]
    UnknownParameter(String),
    /// Two values for one placeholder.
    #[error("two values for placeholder {0:?}")]
    DuplicateParameter(String),
    /// A value of another type than declared (or no value at all).
    #[error("placeholder {name:?} takes {expected}; the message gave {got}")]
    WrongType {
        /// The placeholder.
        name: String,
        /// Its declared type.
        expected: PlaceholderKind,
        /// What the message gave.
        got: &'static str,
    },
    /// A text value is empty or too long.
    #[error("the value of {name:?} has {got} characters; 1 to {limit} are allowed")]
    BadTextLength {
        /// The placeholder.
        name: String,
        /// The limit.
        limit: usize,
        /// Characters found.
        got: usize,
    },
    /// A text value has a newline, tab, other control or bidirectional
    /// character, or more than [`MAX_CONSECUTIVE_SPACES`] spaces in a row.
    #[error("the value of {0:?} has a character or spacing that is not allowed")]
    ForbiddenCharacter(String),
    /// A money value's currency is not three capital letters.
    #[error("the currency of {0:?} is not an ISO 4217 code (three capital letters)")]
    BadCurrency(String),
    /// A date-time value is after the year 9999.
    #[error("the date of {0:?} is out of range")]
    DateOutOfRange(String),
    /// The header, once filled in, is longer than [`MAX_HEADER_LEN`].
    #[error("the header has {got} characters once filled in; at most {limit} are allowed")]
    HeaderTooLong {
        /// The limit.
        limit: usize,
        /// Characters.
        got: usize,
    },
    /// The body, once filled in, is longer than [`MAX_RENDERED_BODY_LEN`].
    #[error("the body has {got} characters once filled in; at most {limit} are allowed")]
    BodyTooLong {
        /// The limit.
        limit: usize,
        /// Characters.
        got: usize,
    },
    /// The approved template itself breaks a rule.
    #[error("the approved template is invalid: {0}")]
    InvalidTemplate(#[from] TemplateError),
}

/// Digits after the decimal point of a currency (ISO 4217 minor unit):
/// 0 and 3 for the currencies listed, 4 for CLF and UYW, 2 for any other.
pub fn currency_exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `12.50 GBP` from 1250 minor units of GBP, `-3 JPY`, `1.234 KWD`.
pub fn format_money(amount_minor: i64, currency: &str) -> String {
    let exponent = currency_exponent(currency);
    let sign = if amount_minor < 0 { "-" } else { "" };
    let magnitude = amount_minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{magnitude} {currency}");
    }
    let unit = 10u64.pow(exponent);
    let width = exponent as usize;
    format!(
        "{sign}{}.{:0width$} {currency}",
        magnitude / unit,
        magnitude % unit
    )
}

/// `2026-12-01T08:40Z` (UTC, to the minute) from ms since the Unix epoch;
/// `None` after the year 9999.
pub fn format_date_time(ms: u64) -> Option<String> {
    let minutes = ms / 60_000;
    let days = minutes / (24 * 60);
    let minute_of_day = minutes % (24 * 60);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, for
    // days >= 0): eras of 400 years starting on 0000-03-01.
    let z = days.checked_add(719_468)?;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    if year > 9999 {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}Z",
        minute_of_day / 60,
        minute_of_day % 60
    ))
}

/// What a parameter's oneof holds, for errors.
fn value_name(value: Option<&template_parameter::Value>) -> &'static str {
    match value {
        None => "no value",
        Some(template_parameter::Value::Text(_)) => "text",
        Some(template_parameter::Value::Number(_)) => "number",
        Some(template_parameter::Value::Money(_)) => "money",
        Some(template_parameter::Value::DateTimeMs(_)) => "date_time",
        Some(template_parameter::Value::AmountMinor(_)) => "a bare amount (use money)",
        Some(template_parameter::Value::Currency(_)) => "a bare currency (use money)",
    }
}

/// The text of one value, checked against its declared type.
fn render_value(
    name: &str,
    kind: PlaceholderKind,
    value: Option<&template_parameter::Value>,
) -> std::result::Result<String, InstanceError> {
    use template_parameter::Value;
    let wrong = || InstanceError::WrongType {
        name: name.to_owned(),
        expected: kind,
        got: value_name(value),
    };
    match (kind, value) {
        (PlaceholderKind::Text, Some(Value::Text(text))) => {
            let got = char_len(text);
            if got == 0 || got > MAX_TEXT_VALUE_LEN {
                return Err(InstanceError::BadTextLength {
                    name: name.to_owned(),
                    limit: MAX_TEXT_VALUE_LEN,
                    got,
                });
            }
            if has_forbidden_char(text, false)
                || text.contains(&" ".repeat(MAX_CONSECUTIVE_SPACES + 1))
            {
                return Err(InstanceError::ForbiddenCharacter(name.to_owned()));
            }
            Ok(text.clone())
        }
        (PlaceholderKind::Number, Some(Value::Number(number))) => Ok(number.to_string()),
        (PlaceholderKind::Money, Some(Value::Money(money))) => {
            let currency = &money.currency;
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(InstanceError::BadCurrency(name.to_owned()));
            }
            Ok(format_money(money.amount_minor, currency))
        }
        (PlaceholderKind::DateTime, Some(Value::DateTimeMs(ms))) => {
            format_date_time(*ms).ok_or_else(|| InstanceError::DateOutOfRange(name.to_owned()))
        }
        _ => Err(wrong()),
    }
}

/// Fill a header or body with the rendered values.
fn fill(text: &str, values: &BTreeMap<&str, String>) -> String {
    // The approved template was validated: every `{{` opens a reference to
    // a declared (hence valued) name.
    pieces(text)
        .unwrap_or_default()
        .into_iter()
        .map(|piece| match piece {
            Piece::Literal(literal) => literal,
            Piece::Reference(name) => values.get(name).map_or("", String::as_str),
        })
        .collect()
}

/// The customer client's check of a decrypted template message: that
/// `instance` is an instance of `template` (the approved template the
/// envelope's `template_id` names, whose approval the client verified,
/// see [`TemplateApproval::covers`]) sent under its approved category.
///
/// Checks, in order: the instance's `template_id` is the template's id
/// (lowercase hex); `envelope_category` is the approved category; each
/// declared placeholder has exactly one value, of its type, and there is
/// no other value; text values are 1 to [`MAX_TEXT_VALUE_LEN`]
/// characters on one line (no control or bidirectional character, at
/// most [`MAX_CONSECUTIVE_SPACES`] spaces in a row); currencies are three
/// capital letters; the filled header is at most [`MAX_HEADER_LEN`]
/// characters and the filled body at most [`MAX_RENDERED_BODY_LEN`].
/// Returns the rendering: money as `12.50 GBP`, date-times as
/// `2026-12-01T08:40Z`, numbers in decimal.
pub fn render_instance(
    template: &Template,
    envelope_category: Category,
    instance: &TemplateInstance,
) -> std::result::Result<RenderedTemplate, InstanceError> {
    let id = template.template_id()?.to_hex();
    if instance.template_id != id {
        return Err(InstanceError::WrongTemplate {
            expected: id,
            got: instance.template_id.chars().take(80).collect(),
        });
    }
    let approved: Category = template.category.into();
    if envelope_category != approved {
        return Err(InstanceError::CategoryMismatch {
            approved: template.category,
            envelope: envelope_category,
        });
    }
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    for parameter in &instance.parameters {
        let name = parameter.name.as_str();
        let kind = template
            .placeholder_kind(name)
            .ok_or_else(|| InstanceError::UnknownParameter(name.chars().take(70).collect()))?;
        if values.contains_key(name) {
            return Err(InstanceError::DuplicateParameter(name.to_owned()));
        }
        values.insert(name, render_value(name, kind, parameter.value.as_ref())?);
    }
    if let Some(missing) = template
        .placeholders
        .iter()
        .find(|p| !values.contains_key(p.name.as_str()))
    {
        return Err(InstanceError::MissingParameter(missing.name.clone()));
    }
    let header = template.header.as_deref().map(|h| fill(h, &values));
    if let Some(header) = &header {
        let got = char_len(header);
        if got > MAX_HEADER_LEN {
            return Err(InstanceError::HeaderTooLong {
                limit: MAX_HEADER_LEN,
                got,
            });
        }
    }
    let body = fill(&template.body, &values);
    let got = char_len(&body);
    if got > MAX_RENDERED_BODY_LEN {
        return Err(InstanceError::BodyTooLong {
            limit: MAX_RENDERED_BODY_LEN,
            got,
        });
    }
    Ok(RenderedTemplate {
        header,
        body,
        footer: template.footer.clone(),
        buttons: template.buttons.clone(),
    })
}

/// The business's side: the instance of `template` with these values
/// (its id filled in), checked exactly as the customer's client will check
/// it ([`render_instance`] under the approved category), so that a
/// business learns of a bad value before sending rather than from a
/// violation report.
pub fn build_instance(
    template: &Template,
    parameters: Vec<TemplateParameter>,
) -> std::result::Result<TemplateInstance, InstanceError> {
    let instance = TemplateInstance {
        template_id: template.template_id()?.to_hex(),
        parameters,
    };
    render_instance(template, template.category.into(), &instance)?;
    Ok(instance)
}

/// Why a quick reply cannot be made or is not one of the template's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The reply names another template than the one the business sent.
    #[error("the reply is to template {got:?}, not {expected}")]
    WrongTemplate {
        /// The template's id (hex).
        expected: String,
        /// The id in the reply (cut to 80 characters).
        got: String,
    },
    /// There is no button at that index.
    #[error("the template has no button {index}")]
    NoSuchButton {
        /// The index given.
        index: u32,
    },
    /// The button at that index is a link or a call, not a quick reply.
    #[error("button {index} is not a quick reply")]
    NotAQuickReply {
        /// The index given.
        index: u32,
    },
    /// The reply's text is not the button's.
    #[error("the reply's text is not the text of button {index}")]
    TextMismatch {
        /// The index given.
        index: u32,
    },
    /// The template itself breaks a rule.
    #[error("invalid template: {0}")]
    InvalidTemplate(#[from] TemplateError),
}

/// The quick-reply button at `index`, if the template has one there.
fn quick_reply_text(template: &Template, index: u32) -> std::result::Result<&str, ReplyError> {
    let button = usize::try_from(index)
        .ok()
        .and_then(|i| template.buttons.get(i))
        .ok_or(ReplyError::NoSuchButton { index })?;
    match button {
        Button::QuickReply { text } => Ok(text),
        _ => Err(ReplyError::NotAQuickReply { index }),
    }
}

/// The customer's answer when it taps quick-reply button `button_index`
/// of the template message `message_id` (a `Content.message_id`): the
/// content body the client sends back to the business.
pub fn quick_reply(
    template: &Template,
    message_id: &[u8],
    button_index: u32,
) -> std::result::Result<ButtonReply, ReplyError> {
    let template_id = template.template_id()?.to_hex();
    let text = quick_reply_text(template, button_index)?.to_owned();
    Ok(ButtonReply {
        message_id: message_id.to_vec(),
        template_id,
        button_index,
        text,
    })
}

/// The business's check of a received [`ButtonReply`] to a message it sent
/// with `template`: the reply names that template, the index is a
/// quick-reply button and the text is that button's. Returns the button's
/// text. (Which message it answers, `reply.message_id`, is for the caller
/// to match against what it sent.)
pub fn check_quick_reply<'a>(
    template: &'a Template,
    reply: &ButtonReply,
) -> std::result::Result<&'a str, ReplyError> {
    let expected = template.template_id()?.to_hex();
    if reply.template_id != expected {
        return Err(ReplyError::WrongTemplate {
            expected,
            got: reply.template_id.chars().take(80).collect(),
        });
    }
    let text = quick_reply_text(template, reply.button_index)?;
    if reply.text != text {
        return Err(ReplyError::TextMismatch {
            index: reply.button_index,
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Reason: test code fails by panicking.
    use super::*;
    use crate::proto::content::Money;
    use proptest::prelude::*;

    fn business() -> AccountId {
        AccountId::from_bytes(&[0xB5; 16]).unwrap()
    }

    /// A boarding pass: every kind of placeholder and button.
    pub(crate) fn boarding_pass() -> Template {
        Template {
            business: business(),
            name: "boarding_pass".into(),
            language: "en_GB".into(),
            category: TemplateCategory::Utility,
            header: Some("Flight {{flight}}".into()),
            body: "Hello {{name}}, gate {{gate}} closes at {{closes}}.\nUpgrade: {{price}}.".into(),
            footer: Some("Acme Air".into()),
            placeholders: vec![
                Placeholder {
                    name: "name".into(),
                    kind: PlaceholderKind::Text,
                },
                Placeholder {
                    name: "flight".into(),
                    kind: PlaceholderKind::Text,
                },
                Placeholder {
                    name: "gate".into(),
                    kind: PlaceholderKind::Number,
                },
                Placeholder {
                    name: "closes".into(),
                    kind: PlaceholderKind::DateTime,
                },
                Placeholder {
                    name: "price".into(),
                    kind: PlaceholderKind::Money,
                },
            ],
            buttons: vec![
                Button::QuickReply {
                    text: "Change seat".into(),
                },
                Button::Link {
                    text: "Boarding pass".into(),
                    url: "https://acme.example/bp".into(),
                },
                Button::Call {
                    text: "Call us".into(),
                    phone: "+447700900123".into(),
                },
            ],
        }
    }

    fn param(name: &str, value: template_parameter::Value) -> TemplateParameter {
        TemplateParameter {
            name: name.into(),
            value: Some(value),
        }
    }

    fn instance(template: &Template) -> TemplateInstance {
        use template_parameter::Value;
        TemplateInstance {
            template_id: template.template_id().unwrap().to_hex(),
            parameters: vec![
                param("flight", Value::Text("AC 123".into())),
                param("name", Value::Text("Alice".into())),
                param("gate", Value::Number(42)),
                // 2026-12-01T08:40:30Z
                param("closes", Value::DateTimeMs(1_796_114_430_000)),
                param(
                    "price",
                    Value::Money(Money {
                        amount_minor: 1250,
                        currency: "GBP".into(),
                    }),
                ),
            ],
        }
    }

    #[test]
    fn a_valid_template_renders_its_instance() {
        let t = boarding_pass();
        t.validate().unwrap();
        let rendered = render_instance(&t, Category::Utility, &instance(&t)).unwrap();
        assert_eq!(rendered.header.as_deref(), Some("Flight AC 123"));
        assert_eq!(
            rendered.body,
            "Hello Alice, gate 42 closes at 2026-12-01T08:40Z.\nUpgrade: 12.50 GBP."
        );
        assert_eq!(rendered.footer.as_deref(), Some("Acme Air"));
        assert_eq!(rendered.buttons, t.buttons);
    }

    #[test]
    fn categories_convert_both_ways() {
        for c in [
            TemplateCategory::Utility,
            TemplateCategory::Authentication,
            TemplateCategory::Marketing,
        ] {
            let wire: Category = c.into();
            assert_eq!(TemplateCategory::try_from(wire), Ok(c));
            assert_eq!(wire as i32, i32::from(c.wire_number()));
            assert_eq!(TemplateCategory::from_wire_number(c.wire_number()), Some(c));
        }
        assert_eq!(
            TemplateCategory::try_from(Category::Service),
            Err(Category::Service)
        );
        assert_eq!(TemplateCategory::from_wire_number(2), None);
    }

    #[test]
    fn template_ids_are_lowercase_hex() {
        let id = boarding_pass().template_id().unwrap();
        let text = id.to_hex();
        assert_eq!(text.len(), 64);
        assert_eq!(TemplateId::from_hex(&text), Some(id));
        assert_eq!(TemplateId::from_hex(&text.to_uppercase()), None);
        assert_eq!(TemplateId::from_hex(&text[1..]), None);
        assert_eq!(TemplateId::from_hex(&format!("{}g", &text[1..])), None);
    }

    #[test]
    fn placeholder_order_does_not_change_the_id() {
        let t = boarding_pass();
        let mut reordered = t.clone();
        reordered.placeholders.reverse();
        assert_eq!(t.template_id(), reordered.template_id());
    }

    #[test]
    fn json_round_trip_keeps_the_id() {
        let t = boarding_pass();
        let json = serde_json::to_string_pretty(&t).unwrap();
        assert!(json.contains("\"type\": \"quick_reply\""), "{json}");
        assert!(json.contains("\"category\": \"utility\""), "{json}");
        let back: Template = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.template_id(), t.template_id());
        // A file with an unknown field (a typo) is refused, not ignored.
        let typo = json.replace("\"footer\"", "\"fotter\"");
        assert!(serde_json::from_str::<Template>(&typo).is_err());
        let bad_account = json.replace(&business().to_string(), "xyz");
        assert!(serde_json::from_str::<Template>(&bad_account).is_err());
    }

    /// Every change of every field: each gives another id.
    fn variants(t: &Template) -> Vec<Template> {
        let mut out = Vec::new();
        let mut push = |f: &dyn Fn(&mut Template)| {
            let mut v = t.clone();
            f(&mut v);
            out.push(v);
        };
        push(&|v| v.business = AccountId::from_bytes(&[0xC6; 16]).unwrap());
        push(&|v| v.name = "boarding_pass2".into());
        push(&|v| v.language = "en_US".into());
        push(&|v| v.category = TemplateCategory::Marketing);
        push(&|v| {
            v.category = TemplateCategory::Authentication;
            v.buttons.truncate(1);
        });
        push(&|v| v.header = Some("Flight: {{flight}}".into()));
        push(&|v| {
            v.header = None;
            v.body.push_str(" {{flight}}");
        });
        push(&|v| v.body.push('!'));
        push(&|v| v.footer = Some("Acme Air Ltd".into()));
        push(&|v| v.footer = None);
        push(&|v| v.placeholders[2].kind = PlaceholderKind::Text);
        push(&|v| {
            v.placeholders[2].name = "gate2".into();
            v.body = v.body.replace("{{gate}}", "{{gate2}}");
        });
        push(&|v| v.buttons.reverse());
        push(&|v| {
            v.buttons.pop();
        });
        push(&|v| {
            v.buttons[0] = Button::QuickReply {
                text: "Seat".into(),
            }
        });
        push(&|v| {
            v.buttons[1] = Button::Link {
                text: "Boarding pass".into(),
                url: "https://acme.example/bp2".into(),
            }
        });
        push(&|v| {
            v.buttons[2] = Button::Call {
                text: "Call us".into(),
                phone: "+447700900124".into(),
            }
        });
        out
    }

    #[test]
    fn every_field_changes_the_id() {
        let t = boarding_pass();
        let mut ids = BTreeSet::new();
        ids.insert(t.template_id().unwrap());
        for v in variants(&t) {
            let id = v
                .template_id()
                .unwrap_or_else(|e| panic!("{v:?} invalid: {e}"));
            assert!(ids.insert(id), "same id for {v:?}");
        }
    }

    #[test]
    fn canonical_layout() {
        let t = Template {
            business: business(),
            name: "otp".into(),
            language: "en".into(),
            category: TemplateCategory::Authentication,
            header: None,
            body: "Code {{code}}".into(),
            footer: None,
            placeholders: vec![Placeholder {
                name: "code".into(),
                kind: PlaceholderKind::Number,
            }],
            buttons: vec![Button::QuickReply { text: "No".into() }],
        };
        let mut expected = b"Comptoir template v1".to_vec();
        expected.extend_from_slice(&[0xB5; 16]);
        expected.extend_from_slice(b"\0\0\0\x03otp\0\0\0\x02en\x04\0");
        expected.extend_from_slice(b"\0\0\0\x0dCode {{code}}\0");
        expected.extend_from_slice(b"\x01\0\0\0\x04code\x02");
        expected.extend_from_slice(b"\x01\x01\0\0\0\x02No");
        assert_eq!(t.canonical_bytes().unwrap(), expected);
        assert_eq!(
            t.template_id().unwrap().0,
            <[u8; 32]>::from(Sha256::digest(&expected))
        );
    }

    #[test]
    fn invalid_templates_are_refused_with_what_is_wrong() {
        let t = boarding_pass();
        type Change = Box<dyn Fn(&mut Template)>;
        let cases: Vec<(Change, TemplateError)> = vec![
            (
                Box::new(|v| v.name = "Boarding".into()),
                TemplateError::BadName,
            ),
            (Box::new(|v| v.name = String::new()), TemplateError::BadName),
            (
                Box::new(|v| v.name = "x".repeat(MAX_TEMPLATE_NAME_LEN + 1)),
                TemplateError::BadName,
            ),
            (
                Box::new(|v| v.language = "english".into()),
                TemplateError::BadLanguage,
            ),
            (
                Box::new(|v| v.language = "en_gb".into()),
                TemplateError::BadLanguage,
            ),
            (
                Box::new(|v| v.header = Some(format!("{{{{flight}}}}{}", "x".repeat(60)))),
                TemplateError::TooLong {
                    field: "header",
                    limit: MAX_HEADER_LEN,
                    got: 70,
                },
            ),
            (
                Box::new(|v| v.header = Some("Flight\n{{flight}}".into())),
                TemplateError::ForbiddenCharacter { field: "header" },
            ),
            (
                Box::new(|v| v.header = Some("{{flight}} {{gate}}".into())),
                TemplateError::TooManyPlaceholders {
                    field: "header",
                    limit: 1,
                    got: 2,
                },
            ),
            (
                Box::new(|v| {
                    v.body = format!(
                        "{{{{name}}}} {{{{gate}}}} {{{{closes}}}} {{{{price}}}}{}",
                        "x".repeat(1000)
                    )
                }),
                TemplateError::TooLong {
                    field: "body",
                    limit: MAX_BODY_LEN,
                    got: 1038,
                },
            ),
            (
                Box::new(|v| v.body.push_str(" {{seat}}")),
                TemplateError::UndeclaredPlaceholder {
                    field: "body",
                    name: "seat".into(),
                },
            ),
            (
                Box::new(|v| v.body.push_str(" {{Seat}}")),
                TemplateError::MalformedReference { field: "body" },
            ),
            (
                Box::new(|v| v.body.push_str(" {{seat")),
                TemplateError::MalformedReference { field: "body" },
            ),
            (
                Box::new(|v| v.body.push_str(" \u{202E}")),
                TemplateError::ForbiddenCharacter { field: "body" },
            ),
            (
                Box::new(|v| v.body = " ".repeat(0)),
                TemplateError::Empty { field: "body" },
            ),
            (
                Box::new(|v| v.footer = Some("{{name}}".into())),
                TemplateError::MalformedReference { field: "footer" },
            ),
            (
                Box::new(|v| v.footer = Some("f".repeat(61))),
                TemplateError::TooLong {
                    field: "footer",
                    limit: MAX_FOOTER_LEN,
                    got: 61,
                },
            ),
            (
                Box::new(|v| {
                    v.placeholders.push(Placeholder {
                        name: "unused".into(),
                        kind: PlaceholderKind::Text,
                    })
                }),
                TemplateError::UnusedPlaceholder {
                    name: "unused".into(),
                },
            ),
            (
                Box::new(|v| {
                    v.placeholders.push(Placeholder {
                        name: "gate".into(),
                        kind: PlaceholderKind::Text,
                    })
                }),
                TemplateError::DuplicatePlaceholder {
                    name: "gate".into(),
                },
            ),
            (
                Box::new(|v| v.placeholders[0].name = "1st".into()),
                TemplateError::BadPlaceholderName { name: "1st".into() },
            ),
            (
                Box::new(|v| {
                    for i in 0..3 {
                        v.buttons.push(Button::QuickReply {
                            text: format!("Reply {i}"),
                        });
                    }
                }),
                TemplateError::TooManyButtons {
                    kind: "quick reply",
                    limit: MAX_QUICK_REPLIES,
                    got: 4,
                },
            ),
            (
                Box::new(|v| {
                    for _ in 0..2 {
                        v.buttons.push(Button::Link {
                            text: "More".into(),
                            url: "https://acme.example".into(),
                        });
                    }
                }),
                TemplateError::TooManyButtons {
                    kind: "link",
                    limit: MAX_LINK_BUTTONS,
                    got: 3,
                },
            ),
            (
                Box::new(|v| {
                    v.buttons.push(Button::Call {
                        text: "Call again".into(),
                        phone: "+33123456789".into(),
                    })
                }),
                TemplateError::TooManyButtons {
                    kind: "call",
                    limit: MAX_CALL_BUTTONS,
                    got: 2,
                },
            ),
            (
                Box::new(|v| {
                    v.buttons[0] = Button::QuickReply {
                        text: "x".repeat(26),
                    }
                }),
                TemplateError::TooLong {
                    field: "button text",
                    limit: MAX_BUTTON_TEXT_LEN,
                    got: 26,
                },
            ),
            (
                Box::new(|v| {
                    v.buttons[1] = Button::Link {
                        text: "Go".into(),
                        url: "http://acme.example".into(),
                    }
                }),
                TemplateError::BadUrl { index: 1 },
            ),
            (
                Box::new(|v| {
                    v.buttons[1] = Button::Link {
                        text: "Go".into(),
                        url: format!("https://acme.example/{}", "x".repeat(2000)),
                    }
                }),
                TemplateError::BadUrl { index: 1 },
            ),
            (
                Box::new(|v| {
                    v.buttons[2] = Button::Call {
                        text: "Call".into(),
                        phone: "07700900123".into(),
                    }
                }),
                TemplateError::BadPhone { index: 2 },
            ),
            (
                Box::new(|v| v.category = TemplateCategory::Authentication),
                TemplateError::ActionInAuthentication,
            ),
        ];
        for (change, expected) in cases {
            let mut v = t.clone();
            change(&mut v);
            assert_eq!(v.validate(), Err(expected.clone()), "{v:?}");
            assert_eq!(v.template_id(), Err(expected.clone()));
            assert!(!expected.to_string().is_empty());
        }
    }

    #[test]
    fn instances_that_break_the_template_are_refused() {
        use template_parameter::Value;
        let t = boarding_pass();
        let good = instance(&t);
        let with = |f: &dyn Fn(&mut TemplateInstance)| {
            let mut i = good.clone();
            f(&mut i);
            render_instance(&t, Category::Utility, &i)
        };
        let other = {
            let mut o = t.clone();
            o.category = TemplateCategory::Marketing;
            o.template_id().unwrap().to_hex()
        };
        assert!(matches!(
            with(&|i| i.template_id = other.clone()),
            Err(InstanceError::WrongTemplate { .. })
        ));
        assert!(matches!(
            with(&|i| i.template_id = i.template_id.to_uppercase()),
            Err(InstanceError::WrongTemplate { .. })
        ));
        assert_eq!(
            render_instance(&t, Category::Marketing, &good),
            Err(InstanceError::CategoryMismatch {
                approved: TemplateCategory::Utility,
                envelope: Category::Marketing
            })
        );
        assert!(matches!(
            render_instance(&t, Category::Service, &good),
            Err(InstanceError::CategoryMismatch { .. })
        ));
        assert_eq!(
            with(&|i| {
                i.parameters.remove(0);
            }),
            Err(InstanceError::MissingParameter("flight".into()))
        );
        assert_eq!(
            with(&|i| i.parameters.push(param("seat", Value::Text("1A".into())))),
            Err(InstanceError::UnknownParameter("seat".into()))
        );
        assert_eq!(
            with(&|i| i.parameters.push(param("gate", Value::Number(7)))),
            Err(InstanceError::DuplicateParameter("gate".into()))
        );
        assert_eq!(
            with(&|i| i.parameters[2] = param("gate", Value::Text("42".into()))),
            Err(InstanceError::WrongType {
                name: "gate".into(),
                expected: PlaceholderKind::Number,
                got: "text"
            })
        );
        assert!(matches!(
            with(&|i| i.parameters[4] = param("price", Value::AmountMinor(1250))),
            Err(InstanceError::WrongType {
                got: "a bare amount (use money)",
                ..
            })
        ));
        assert!(matches!(
            with(&|i| i.parameters[2].value = None),
            Err(InstanceError::WrongType {
                got: "no value",
                ..
            })
        ));
        assert_eq!(
            with(
                &|i| i.parameters[1] = param("name", Value::Text("Alice\nFooter: pay here".into()))
            ),
            Err(InstanceError::ForbiddenCharacter("name".into()))
        );
        assert_eq!(
            with(&|i| i.parameters[1] = param("name", Value::Text("Alice     Bob".into()))),
            Err(InstanceError::ForbiddenCharacter("name".into()))
        );
        assert_eq!(
            with(&|i| i.parameters[1] = param("name", Value::Text(String::new()))),
            Err(InstanceError::BadTextLength {
                name: "name".into(),
                limit: MAX_TEXT_VALUE_LEN,
                got: 0
            })
        );
        assert!(matches!(
            with(&|i| i.parameters[1] = param("name", Value::Text("x".repeat(257)))),
            Err(InstanceError::BadTextLength { got: 257, .. })
        ));
        assert_eq!(
            with(&|i| i.parameters[0] = param("flight", Value::Text("x".repeat(60)))),
            Err(InstanceError::HeaderTooLong {
                limit: MAX_HEADER_LEN,
                got: 67
            })
        );
        assert_eq!(
            with(&|i| i.parameters[4] = param(
                "price",
                Value::Money(Money {
                    amount_minor: 1,
                    currency: "gbp".into()
                })
            )),
            Err(InstanceError::BadCurrency("price".into()))
        );
        assert_eq!(
            with(&|i| i.parameters[3] = param("closes", Value::DateTimeMs(u64::MAX))),
            Err(InstanceError::DateOutOfRange("closes".into()))
        );
    }

    #[test]
    fn a_business_builds_what_the_customer_accepts() {
        let t = boarding_pass();
        let good = instance(&t);
        let built = build_instance(&t, good.parameters.clone()).unwrap();
        assert_eq!(built, good);
        let mut missing = good.parameters.clone();
        missing.pop();
        assert_eq!(
            build_instance(&t, missing),
            Err(InstanceError::MissingParameter("price".into()))
        );
    }

    #[test]
    fn quick_replies_name_the_button_and_are_checked() {
        let t = boarding_pass();
        let reply = quick_reply(&t, &[7; 16], 0).unwrap();
        assert_eq!(reply.text, "Change seat");
        assert_eq!(reply.message_id, vec![7; 16]);
        assert_eq!(check_quick_reply(&t, &reply), Ok("Change seat"));
        assert_eq!(
            quick_reply(&t, &[7; 16], 1),
            Err(ReplyError::NotAQuickReply { index: 1 })
        );
        assert_eq!(
            quick_reply(&t, &[7; 16], 3),
            Err(ReplyError::NoSuchButton { index: 3 })
        );
        let mut forged = reply.clone();
        forged.text = "Cancel my booking".into();
        assert_eq!(
            check_quick_reply(&t, &forged),
            Err(ReplyError::TextMismatch { index: 0 })
        );
        let mut link = reply.clone();
        link.button_index = 1;
        assert_eq!(
            check_quick_reply(&t, &link),
            Err(ReplyError::NotAQuickReply { index: 1 })
        );
        let mut elsewhere = reply.clone();
        elsewhere.template_id = "00".repeat(32);
        assert!(matches!(
            check_quick_reply(&t, &elsewhere),
            Err(ReplyError::WrongTemplate { .. })
        ));
        let mut far = reply;
        far.button_index = u32::MAX;
        assert_eq!(
            check_quick_reply(&t, &far),
            Err(ReplyError::NoSuchButton { index: u32::MAX })
        );
    }

    #[test]
    fn values_render_as_documented() {
        assert_eq!(format_money(1250, "GBP"), "12.50 GBP");
        assert_eq!(format_money(5, "EUR"), "0.05 EUR");
        assert_eq!(format_money(-1250, "USD"), "-12.50 USD");
        assert_eq!(format_money(500, "JPY"), "500 JPY");
        assert_eq!(format_money(1234, "KWD"), "1.234 KWD");
        assert_eq!(format_money(i64::MIN, "GBP"), "-92233720368547758.08 GBP");
        assert_eq!(format_date_time(0).as_deref(), Some("1970-01-01T00:00Z"));
        assert_eq!(
            format_date_time(951_782_400_000).as_deref(),
            Some("2000-02-29T00:00Z")
        );
        assert_eq!(
            format_date_time(1_796_114_459_999).as_deref(),
            Some("2026-12-01T08:40Z")
        );
        assert_eq!(
            format_date_time(253_402_300_799_999).as_deref(),
            Some("9999-12-31T23:59Z")
        );
        assert_eq!(format_date_time(253_402_300_800_000), None);
    }

    #[test]
    fn approvals_are_signed_over_every_field() {
        let operator = OperatorKeyPair::generate(&mut rand::rng());
        let t = boarding_pass();
        let approval = TemplateApproval::approve(&t, 1_750_000_000_000).unwrap();
        approval.covers(&t).unwrap();
        let sig = sign_template_approval(&operator, &approval);
        verify_template_approval(&operator.public(), &approval, &sig).unwrap();
        let other_operator = OperatorKeyPair::generate(&mut rand::rng());
        assert!(verify_template_approval(&other_operator.public(), &approval, &sig).is_err());
        let changed = [
            TemplateApproval {
                template_id: TemplateId([1; 32]),
                ..approval.clone()
            },
            TemplateApproval {
                business: AccountId::from_bytes(&[0xC6; 16]).unwrap(),
                ..approval.clone()
            },
            TemplateApproval {
                category: TemplateCategory::Marketing,
                ..approval.clone()
            },
            TemplateApproval {
                status: ApprovalStatus::Revoked,
                ..approval.clone()
            },
            TemplateApproval {
                issued_at_ms: approval.issued_at_ms + 1,
                ..approval.clone()
            },
        ];
        for other in changed {
            assert!(
                verify_template_approval(&operator.public(), &other, &sig).is_err(),
                "{other:?}"
            );
        }
        let payload = template_approval_payload(&approval);
        assert_eq!(payload.len(), 29 + 32 + 16 + 1 + 1 + 8);
        assert_eq!(&payload[..29], TEMPLATE_APPROVAL_CONTEXT);
        assert_eq!(payload[29 + 32 + 16], 3);
        assert_eq!(payload[29 + 32 + 17], 1);
    }

    #[test]
    fn the_newest_record_decides_and_a_revocation_wins_a_tie() {
        let t = boarding_pass();
        let approval = TemplateApproval::approve(&t, 1_000).unwrap();
        let revoked = approval.revoke(2_000);
        assert!(revoked.supersedes(&approval));
        assert!(!approval.supersedes(&revoked));
        assert_eq!(
            revoked.covers(&t),
            Err(ApprovalError::Revoked(t.template_id().unwrap()))
        );
        let tie = approval.revoke(1_000);
        assert!(tie.supersedes(&approval));
        assert!(!approval.supersedes(&tie));
        let reapproved = TemplateApproval {
            issued_at_ms: 3_000,
            ..approval.clone()
        };
        assert!(reapproved.supersedes(&revoked));
        // A relabelled template is not covered by the approval.
        let mut relabelled = t.clone();
        relabelled.category = TemplateCategory::Marketing;
        assert!(matches!(
            approval.covers(&relabelled),
            Err(ApprovalError::OtherTemplate { .. })
        ));
        let mut forged = approval.clone();
        forged.category = TemplateCategory::Marketing;
        assert_eq!(
            forged.covers(&t),
            Err(ApprovalError::OtherBusinessOrCategory)
        );
        let other = TemplateApproval::approve(&relabelled, 5_000).unwrap();
        assert!(!other.supersedes(&approval));
        let json = serde_json::to_string(&approval).unwrap();
        assert_eq!(
            serde_json::from_str::<TemplateApproval>(&json).unwrap(),
            approval
        );
    }

    fn text_strategy(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                proptest::char::range('a', 'z'),
                Just(' '),
                Just('é'),
                Just('€'),
                Just('!')
            ],
            1..max,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    prop_compose! {
        fn valid_template()(
            business in any::<[u8; 16]>(),
            name in "[a-z0-9_]{1,40}",
            language in prop_oneof![Just("en".to_string()), Just("fr_FR".to_string()), Just("pt_BR".to_string())],
            category in prop_oneof![Just(TemplateCategory::Utility), Just(TemplateCategory::Authentication), Just(TemplateCategory::Marketing)],
            header in proptest::option::of(text_strategy(40)),
            body in text_strategy(300),
            footer in proptest::option::of(text_strategy(60)),
            kinds in proptest::collection::vec(prop_oneof![Just(PlaceholderKind::Text), Just(PlaceholderKind::Number), Just(PlaceholderKind::Money), Just(PlaceholderKind::DateTime)], 0..5),
            quick in proptest::collection::vec("[A-Za-z ]{1,25}", 0..=3),
            link in proptest::option::of("[a-z]{1,20}"),
            call in proptest::option::of("[1-9][0-9]{6,14}"),
        ) -> Template {
            let placeholders: Vec<Placeholder> = kinds.iter().enumerate().map(|(i, kind)| Placeholder { name: format!("p{i}"), kind: *kind }).collect();
            let mut body = body;
            for p in &placeholders {
                body.push_str(&format!(" {{{{{}}}}}", p.name));
            }
            let mut buttons: Vec<Button> = quick.into_iter().map(|text| Button::QuickReply { text }).collect();
            if let Some(path) = link {
                buttons.push(Button::Link { text: "Open".into(), url: format!("https://acme.example/{path}") });
            }
            if let Some(digits) = call {
                buttons.push(Button::Call { text: "Call".into(), phone: format!("+{digits}") });
            }
            if category == TemplateCategory::Authentication {
                buttons.retain(|b| matches!(b, Button::QuickReply { .. }));
            }
            Template {
                business: AccountId::from_bytes(&business).unwrap(),
                name, language, category, header, body, footer, placeholders, buttons,
            }
        }
    }

    /// Text mostly of letters and spaces, now and then any character
    /// (controls, bidirectional marks, newlines included).
    fn mostly_clean_text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                40 => proptest::char::range('a', 'z'),
                10 => Just(' '),
                2 => Just('é'),
                1 => any::<char>(),
            ],
            0..max,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn any_value() -> impl Strategy<Value = Option<template_parameter::Value>> {
        use template_parameter::Value;
        proptest::option::of(prop_oneof![
            ".{0,300}".prop_map(Value::Text),
            any::<i64>().prop_map(Value::Number),
            any::<i64>().prop_map(Value::AmountMinor),
            ".{0,5}".prop_map(Value::Currency),
            any::<u64>().prop_map(Value::DateTimeMs),
            (any::<i64>(), "[A-Za-z]{0,4}").prop_map(|(amount_minor, currency)| Value::Money(
                Money {
                    amount_minor,
                    currency
                }
            )),
        ])
    }

    proptest! {
        /// Whatever a hostile sender puts in an instance, the check answers
        /// (no panic), and what it accepts keeps the approved skeleton: the
        /// literal text around the values, and the approved footer and
        /// buttons.
        #[test]
        fn hostile_instances_are_answered_and_keep_the_skeleton(
            parameters in proptest::collection::vec(
                (prop_oneof![Just("flight".to_string()), Just("name".to_string()), Just("gate".to_string()), Just("closes".to_string()), Just("price".to_string()), ".{0,10}"], any_value()),
                0..8,
            ),
            id_ok in any::<bool>(),
        ) {
            let t = boarding_pass();
            let instance = TemplateInstance {
                template_id: if id_ok { t.template_id().unwrap().to_hex() } else { "x".into() },
                parameters: parameters.into_iter().map(|(name, value)| TemplateParameter { name, value }).collect(),
            };
            if let Ok(rendered) = render_instance(&t, Category::Utility, &instance) {
                prop_assert!(rendered.body.starts_with("Hello "));
                prop_assert!(rendered.body.ends_with(" GBP.") || rendered.body.ends_with("."));
                prop_assert_eq!(rendered.body.matches('\n').count(), 1);
                prop_assert!(rendered.header.unwrap().starts_with("Flight "));
                prop_assert_eq!(rendered.footer, t.footer.clone());
                prop_assert_eq!(rendered.buttons, t.buttons.clone());
            }
        }

        /// Well-typed values with any content: accepted exactly when each
        /// text is one clean line within the limits, and then rendered into
        /// the skeleton and nothing else.
        #[test]
        fn typed_values_fill_the_skeleton_and_nothing_else(
            flight in mostly_clean_text(70),
            name in mostly_clean_text(300),
            gate in any::<i64>(),
            closes in prop_oneof![0..253_402_300_800_000u64, any::<u64>()],
            amount in any::<i64>(),
            currency in "[A-Z]{3}|[a-z]{3}",
        ) {
            use template_parameter::Value;
            let t = boarding_pass();
            let mut i = instance(&t);
            i.parameters[0] = param("flight", Value::Text(flight.clone()));
            i.parameters[1] = param("name", Value::Text(name.clone()));
            i.parameters[2] = param("gate", Value::Number(gate));
            i.parameters[3] = param("closes", Value::DateTimeMs(closes));
            i.parameters[4] = param("price", Value::Money(Money { amount_minor: amount, currency: currency.clone() }));
            let clean = |text: &str, limit: usize| {
                let n = text.chars().count();
                n >= 1 && n <= limit && !has_forbidden_char(text, false) && !text.contains("     ")
            };
            let expected_ok = clean(&flight, MAX_TEXT_VALUE_LEN)
                && flight.chars().count() + 7 <= MAX_HEADER_LEN
                && clean(&name, MAX_TEXT_VALUE_LEN)
                && format_date_time(closes).is_some()
                && currency.bytes().all(|b| b.is_ascii_uppercase());
            match render_instance(&t, Category::Utility, &i) {
                Ok(rendered) => {
                    prop_assert!(expected_ok);
                    prop_assert_eq!(rendered.header, Some(format!("Flight {flight}")));
                    prop_assert_eq!(
                        rendered.body,
                        format!(
                            "Hello {name}, gate {gate} closes at {}.\nUpgrade: {}.",
                            format_date_time(closes).unwrap(),
                            format_money(amount, &currency)
                        )
                    );
                }
                Err(_) => prop_assert!(!expected_ok),
            }
        }

        /// Any template text, valid or not, is answered without a panic,
        /// and only a valid template has an id.
        #[test]
        fn any_template_is_answered(
            name in ".{0,20}",
            language in ".{0,6}",
            header in proptest::option::of(".{0,70}"),
            body in "(.|\\{\\{|\\}\\}|\n){0,80}",
            footer in proptest::option::of(".{0,70}"),
            placeholder in proptest::option::of("[a-z{}]{0,8}"),
            url in ".{0,30}",
            phone in ".{0,16}",
        ) {
            let t = Template {
                business: business(),
                name,
                language,
                category: TemplateCategory::Marketing,
                header,
                body,
                footer,
                placeholders: placeholder.into_iter().map(|name| Placeholder { name, kind: PlaceholderKind::Text }).collect(),
                buttons: vec![Button::Link { text: "Go".into(), url }, Button::Call { text: "Call".into(), phone }],
            };
            prop_assert_eq!(t.validate().is_ok(), t.template_id().is_ok());
        }
    }

    proptest! {
        #[test]
        fn valid_templates_have_stable_ids_and_every_change_shows(t in valid_template()) {
            t.validate().unwrap();
            let id = t.template_id().unwrap();
            // Stable: the same template, and its JSON round trip, give the same id.
            prop_assert_eq!(t.clone().template_id().unwrap(), id);
            let back: Template = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
            prop_assert_eq!(back.template_id().unwrap(), id);
            prop_assert_eq!(TemplateId::from_hex(&id.to_hex()), Some(id));
            // Every change of a field changes the id.
            let mut changed = vec![];
            let mut v = t.clone(); v.business = AccountId::from_bytes(&[!t.business.as_bytes()[0]; 16]).unwrap(); changed.push(v);
            let mut v = t.clone(); v.name.push('x'); changed.push(v);
            let mut v = t.clone(); v.language = if t.language == "en" { "de".into() } else { "en".into() }; changed.push(v);
            let mut v = t.clone(); v.category = if t.category == TemplateCategory::Marketing { TemplateCategory::Utility } else { TemplateCategory::Marketing }; changed.push(v);
            let mut v = t.clone(); v.header = match &t.header { Some(h) if h.chars().count() < 60 => Some(format!("{h}x")), Some(_) => None, None => Some("x".into()) }; changed.push(v);
            let mut v = t.clone(); v.body.push('x'); changed.push(v);
            let mut v = t.clone(); v.footer = match &t.footer { Some(_) => None, None => Some("x".into()) }; changed.push(v);
            if let Some(p) = t.placeholders.first() {
                let mut v = t.clone();
                v.placeholders[0].kind = if p.kind == PlaceholderKind::Text { PlaceholderKind::Number } else { PlaceholderKind::Text };
                changed.push(v);
            }
            if !t.buttons.is_empty() {
                let mut v = t.clone(); v.buttons.pop(); changed.push(v);
            }
            if t.buttons.len() > 1 && t.buttons[0] != t.buttons[1] {
                let mut v = t.clone(); v.buttons.swap(0, 1); changed.push(v);
            }
            for v in changed {
                prop_assert!(v.validate().is_ok(), "{:?}", v.validate());
                prop_assert_ne!(v.template_id().unwrap(), id);
            }
        }
    }
}
