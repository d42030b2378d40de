//! Verified businesses (docs/PROTOCOL.md, "Verified businesses"): the
//! profile a business signs with its account key, the operator's
//! certificate that binds the account, its key, its display name and the
//! profile's digest until an expiry, the operator's signed revocation of a
//! certificate, and [`verified_name`], the one decision whether a business
//! is shown as verified. Every screen uses it: a business that is not
//! verified is shown by its handle, never by the name it chose.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::account::AccountId;
use crate::canonical::{char_len, has_forbidden_char, is_https_url, put_opt_str, put_str};
use crate::error::Result;
use crate::keys::{AccountKey, AccountKeyPair, OperatorKey, OperatorKeyPair, SIGNATURE_LEN};

/// Context string that opens a profile's canonical bytes.
pub const PROFILE_CONTEXT: &[u8] = b"Comptoir business profile v1";
/// Context string that opens a certificate's signed bytes.
pub const CERTIFICATE_CONTEXT: &[u8] = b"Comptoir business certificate v1";
/// Context string that opens a certificate revocation's signed bytes.
pub const CERTIFICATE_REVOCATION_CONTEXT: &[u8] = b"Comptoir business certificate revocation v1";

/// Longest display name, in characters: room for a trading name, short
/// enough for a chat list.
pub const MAX_DISPLAY_NAME_LEN: usize = 64;
/// Longest "about" text, in characters (WhatsApp: 512).
pub const MAX_ABOUT_LEN: usize = 512;
/// Longest address, in characters (WhatsApp: 256).
pub const MAX_ADDRESS_LEN: usize = 256;
/// Longest website URL, in characters (WhatsApp: 256).
pub const MAX_WEBSITE_LEN: usize = 256;
/// Longest e-mail address, in characters (RFC 5321 path limit: 254).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest opening-hours text, in characters.
pub const MAX_OPENING_HOURS_LEN: usize = 256;

/// What a business does, from a fixed list (after WhatsApp's business
/// profile verticals).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vertical {
    /// Cars, garages, dealers.
    Automotive,
    /// Hairdressers, cosmetics.
    Beauty,
    /// Clothing.
    Apparel,
    /// Schools, courses.
    Education,
    /// Entertainment and events.
    Entertainment,
    /// Banks, insurance, payments.
    Finance,
    /// Groceries.
    Grocery,
    /// Public services.
    Government,
    /// Hotels and lodging.
    Hotel,
    /// Health care.
    Health,
    /// Charities.
    NonProfit,
    /// Professional services.
    ProfessionalServices,
    /// Shops.
    Retail,
    /// Airlines, travel agents.
    Travel,
    /// Restaurants, food.
    Restaurant,
    /// Anything else.
    Other,
}

impl Vertical {
    /// The byte in the canonical encoding.
    pub fn code(self) -> u8 {
        match self {
            Self::Automotive => 1,
            Self::Beauty => 2,
            Self::Apparel => 3,
            Self::Education => 4,
            Self::Entertainment => 5,
            Self::Finance => 6,
            Self::Grocery => 7,
            Self::Government => 8,
            Self::Hotel => 9,
            Self::Health => 10,
            Self::NonProfit => 11,
            Self::ProfessionalServices => 12,
            Self::Retail => 13,
            Self::Travel => 14,
            Self::Restaurant => 15,
            Self::Other => 16,
        }
    }

    /// Every vertical, in code order.
    pub const ALL: [Self; 16] = [
        Self::Automotive,
        Self::Beauty,
        Self::Apparel,
        Self::Education,
        Self::Entertainment,
        Self::Finance,
        Self::Grocery,
        Self::Government,
        Self::Hotel,
        Self::Health,
        Self::NonProfit,
        Self::ProfessionalServices,
        Self::Retail,
        Self::Travel,
        Self::Restaurant,
        Self::Other,
    ];

    /// The vertical of a code; `None` for an unknown one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.code() == code)
    }
}

/// What a business says about itself, signed with its account key.
///
/// Its JSON form (serde) is what the business writes in a file:
/// `{"account": "…32 hex…", "display_name": "Acme Air", "about": "…",
/// "address": "…", "website": "https://acme.example", "email":
/// "help@acme.example", "opening_hours": "Mon-Fri 9-17", "vertical":
/// "travel"}` (`website` and `email` may be left out; `about`, `address`
/// and `opening_hours` default to empty).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessProfile {
    /// The business's account; part of the signed bytes and the digest.
    pub account: AccountId,
    /// 1 to [`MAX_DISPLAY_NAME_LEN`] characters, one line, no leading or
    /// trailing space. Shown only when an operator certificate names it.
    pub display_name: String,
    /// At most [`MAX_ABOUT_LEN`] characters; may hold newlines.
    #[serde(default)]
    pub about: String,
    /// At most [`MAX_ADDRESS_LEN`] characters; may hold newlines.
    #[serde(default)]
    pub address: String,
    /// An `https://` URL of at most [`MAX_WEBSITE_LEN`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    /// `local@domain.tld`, at most [`MAX_EMAIL_LEN`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// At most [`MAX_OPENING_HOURS_LEN`] characters; may hold newlines.
    #[serde(default)]
    pub opening_hours: String,
    /// What the business does.
    pub vertical: Vertical,
}

/// Why a profile is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The display name is empty, too long, or has leading or trailing
    /// space.
    #[error(
        "the display name must be 1 to {MAX_DISPLAY_NAME_LEN} characters, without leading or trailing spaces"
    )]
    BadDisplayName,
    /// A text is longer than its limit.
    #[error("the {field} has {got} characters; at most {limit} are allowed")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// The limit.
        limit: usize,
        /// Characters found.
        got: usize,
    },
    /// A control or bidirectional character (or a newline in a one-line
    /// field).
    #[error(
        "the {field} has a character that is not allowed (a control or bidirectional character, or a newline in a one-line field)"
    )]
    ForbiddenCharacter {
        /// Which field.
        field: &'static str,
    },
    /// The website is not an `https://` URL.
    #[error("the website must be an https:// address of at most {MAX_WEBSITE_LEN} characters")]
    BadWebsite,
    /// The e-mail address does not look like one.
    #[error("the e-mail address must look like name@example.com")]
    BadEmail,
}

/// Whether `email` looks like `local@domain.tld`: one `@`, a non-empty
/// local part, a domain with a dot and no empty label, no space.
fn is_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    char_len(email) <= MAX_EMAIL_LEN
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn check_field(
    field: &'static str,
    text: &str,
    limit: usize,
    newline_allowed: bool,
) -> std::result::Result<(), ProfileError> {
    let got = char_len(text);
    if got > limit {
        return Err(ProfileError::TooLong { field, limit, got });
    }
    if has_forbidden_char(text, newline_allowed) {
        return Err(ProfileError::ForbiddenCharacter { field });
    }
    Ok(())
}

impl BusinessProfile {
    /// Check every rule (the business's tool before signing; the relay and
    /// the operator before storing or certifying).
    pub fn validate(&self) -> std::result::Result<(), ProfileError> {
        let name = &self.display_name;
        if name.is_empty() || char_len(name) > MAX_DISPLAY_NAME_LEN || name.trim() != name {
            return Err(ProfileError::BadDisplayName);
        }
        check_field("display name", name, MAX_DISPLAY_NAME_LEN, false)?;
        check_field("about", &self.about, MAX_ABOUT_LEN, true)?;
        check_field("address", &self.address, MAX_ADDRESS_LEN, true)?;
        check_field(
            "opening hours",
            &self.opening_hours,
            MAX_OPENING_HOURS_LEN,
            true,
        )?;
        if let Some(website) = &self.website
            && !is_https_url(website, MAX_WEBSITE_LEN)
        {
            return Err(ProfileError::BadWebsite);
        }
        if let Some(email) = &self.email
            && !is_email(email)
        {
            return Err(ProfileError::BadEmail);
        }
        Ok(())
    }

    /// The canonical bytes, signed by the business and hashed into its
    /// digest:
    ///
    /// ```text
    /// "Comptoir business profile v1" (28 bytes) || account (16) ||
    /// str(display_name) || str(about) || str(address) || opt(website) ||
    /// opt(email) || str(opening_hours) || vertical (u8)
    /// ```
    ///
    /// with `str` and `opt` as for templates (`u32 BE` byte length ||
    /// UTF-8; `0x00` absent, `0x01 || str` present). Vertical codes: 1
    /// automotive, 2 beauty, 3 apparel, 4 education, 5 entertainment,
    /// 6 finance, 7 grocery, 8 government, 9 hotel, 10 health,
    /// 11 non-profit, 12 professional services, 13 retail, 14 travel,
    /// 15 restaurant, 16 other.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.about.len() + self.address.len());
        out.extend_from_slice(PROFILE_CONTEXT);
        out.extend_from_slice(self.account.as_bytes());
        put_str(&mut out, &self.display_name);
        put_str(&mut out, &self.about);
        put_str(&mut out, &self.address);
        put_opt_str(&mut out, self.website.as_deref());
        put_opt_str(&mut out, self.email.as_deref());
        put_str(&mut out, &self.opening_hours);
        out.push(self.vertical.code());
        out
    }

    /// SHA-256 of [`BusinessProfile::canonical_bytes`]: what a certificate
    /// names.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }
}

/// Sign a valid profile with the business's account key.
pub fn sign_profile(
    account_key: &AccountKeyPair,
    profile: &BusinessProfile,
) -> std::result::Result<[u8; SIGNATURE_LEN], ProfileError> {
    profile.validate()?;
    Ok(account_key.sign(&profile.canonical_bytes()))
}

/// Check a profile's signature against the business's account key (from
/// its signed device list's account); strict Ed25519.
pub fn verify_profile(
    account_key: &AccountKey,
    profile: &BusinessProfile,
    signature: &[u8],
) -> Result<()> {
    account_key.verify("business profile", &profile.canonical_bytes(), signature)
}

/// The operator's statement that an account, holding an account key, is
/// the business of that display name and that profile, from `issued_at_ms`
/// until `expires_at_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessCertificate {
    /// The business's account.
    pub account: AccountId,
    /// Its account key, as the operator checked it.
    pub account_key: AccountKey,
    /// The name a customer sees, equal to the profile's.
    pub display_name: String,
    /// [`BusinessProfile::digest`] of the certified profile.
    pub profile_digest: [u8; 32],
    /// Valid from, ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// Valid until (excluded), ms since the Unix epoch.
    pub expires_at_ms: u64,
}

/// The bytes the operator signs:
///
/// ```text
/// "Comptoir business certificate v1" (32 bytes) || account (16) ||
/// account key (32) || str(display_name) || profile digest (32) ||
/// issued_at_ms (u64 BE) || expires_at_ms (u64 BE)
/// ```
pub fn certificate_payload(certificate: &BusinessCertificate) -> Vec<u8> {
    let mut out = Vec::with_capacity(CERTIFICATE_CONTEXT.len() + 16 + 32 + 4 + 64 + 32 + 16);
    out.extend_from_slice(CERTIFICATE_CONTEXT);
    out.extend_from_slice(certificate.account.as_bytes());
    out.extend_from_slice(&certificate.account_key.to_bytes());
    put_str(&mut out, &certificate.display_name);
    out.extend_from_slice(&certificate.profile_digest);
    out.extend_from_slice(&certificate.issued_at_ms.to_be_bytes());
    out.extend_from_slice(&certificate.expires_at_ms.to_be_bytes());
    out
}

impl BusinessCertificate {
    /// The certificate of a profile (the operator's side of `relay admin
    /// business verify`), after checking the profile.
    pub fn for_profile(
        profile: &BusinessProfile,
        account_key: AccountKey,
        issued_at_ms: u64,
        expires_at_ms: u64,
    ) -> std::result::Result<Self, ProfileError> {
        profile.validate()?;
        Ok(Self {
            account: profile.account,
            account_key,
            display_name: profile.display_name.clone(),
            profile_digest: profile.digest(),
            issued_at_ms,
            expires_at_ms,
        })
    }

    /// SHA-256 of [`certificate_payload`]: how a revocation names the
    /// certificate.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(certificate_payload(self)).into()
    }
}

/// Sign a certificate with the operator key.
pub fn sign_certificate(
    operator: &OperatorKeyPair,
    certificate: &BusinessCertificate,
) -> [u8; SIGNATURE_LEN] {
    operator.sign(&certificate_payload(certificate))
}

/// Check a certificate against the pinned operator key; strict Ed25519.
/// [`verified_name`] is what screens use; this is the signature alone.
pub fn verify_certificate(
    operator: &OperatorKey,
    certificate: &BusinessCertificate,
    signature: &[u8],
) -> Result<()> {
    operator.verify(
        "business certificate",
        &certificate_payload(certificate),
        signature,
    )
}

/// The operator's withdrawal of one certificate (`relay admin business
/// revoke`). It names the certificate by its digest, so a later
/// certificate for the same account is not revoked by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRevocation {
    /// The business's account.
    pub account: AccountId,
    /// [`BusinessCertificate::digest`] of the revoked certificate.
    pub certificate_digest: [u8; 32],
    /// When it was revoked, ms since the Unix epoch.
    pub revoked_at_ms: u64,
}

impl CertificateRevocation {
    /// The revocation of `certificate` at `revoked_at_ms`.
    pub fn of(certificate: &BusinessCertificate, revoked_at_ms: u64) -> Self {
        Self {
            account: certificate.account,
            certificate_digest: certificate.digest(),
            revoked_at_ms,
        }
    }

    /// Whether this (verified) revocation withdraws `certificate`.
    pub fn revokes(&self, certificate: &BusinessCertificate) -> bool {
        self.account == certificate.account && self.certificate_digest == certificate.digest()
    }
}

/// The bytes the operator signs:
///
/// ```text
/// "Comptoir business certificate revocation v1" (43 bytes) ||
/// account (16) || certificate digest (32) || revoked_at_ms (u64 BE)
/// ```
pub fn revocation_payload(revocation: &CertificateRevocation) -> Vec<u8> {
    let mut out = Vec::with_capacity(CERTIFICATE_REVOCATION_CONTEXT.len() + 16 + 32 + 8);
    out.extend_from_slice(CERTIFICATE_REVOCATION_CONTEXT);
    out.extend_from_slice(revocation.account.as_bytes());
    out.extend_from_slice(&revocation.certificate_digest);
    out.extend_from_slice(&revocation.revoked_at_ms.to_be_bytes());
    out
}

/// Sign a revocation with the operator key.
pub fn sign_revocation(
    operator: &OperatorKeyPair,
    revocation: &CertificateRevocation,
) -> [u8; SIGNATURE_LEN] {
    operator.sign(&revocation_payload(revocation))
}

/// Check a revocation against the pinned operator key; strict Ed25519.
pub fn verify_revocation(
    operator: &OperatorKey,
    revocation: &CertificateRevocation,
    signature: &[u8],
) -> Result<()> {
    operator.verify(
        "certificate revocation",
        &revocation_payload(revocation),
        signature,
    )
}

/// Why a business is not shown as verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotVerified {
    /// The certificate's signature does not check against the pinned
    /// operator key (forged, altered, or from another operator).
    BadSignature,
    /// The certificate names another account key than the one the client
    /// pinned for this account (or another account).
    OtherAccountKey,
    /// The operator revoked the certificate.
    Revoked,
    /// `now` is before `issued_at_ms`.
    NotYetValid,
    /// `now` is at or after `expires_at_ms`.
    Expired,
    /// The profile is not the certified one (its digest differs, or it is
    /// another account's, or its name differs).
    ProfileMismatch,
    /// The business has no operator certificate.
    NoCertificate,
    /// No operator key is pinned to check a certificate with.
    NoOperatorKey,
}

impl fmt::Display for NotVerified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadSignature => "its certificate is not signed by the operator",
            Self::OtherAccountKey => "its certificate is for another account key",
            Self::Revoked => "its certificate was revoked",
            Self::NotYetValid => "its certificate is not valid yet",
            Self::Expired => "its certificate has expired",
            Self::ProfileMismatch => "its profile is not the certified one",
            Self::NoCertificate => "it is not verified by the operator",
            Self::NoOperatorKey => "no operator key is pinned to check its certificate",
        })
    }
}

/// Whether to show a business as verified, and by which name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Show the verified mark and this name.
    Verified {
        /// The certified display name.
        display_name: String,
    },
    /// Show the business by its handle, without a mark.
    NotVerified(NotVerified),
}

impl Verification {
    /// The name to show: the certified display name when verified, the
    /// handle otherwise (never a self-chosen name).
    pub fn shown_name<'a>(&'a self, handle: &'a str) -> &'a str {
        match self {
            Self::Verified { display_name } => display_name,
            Self::NotVerified(_) => handle,
        }
    }

    /// Whether the verified mark is shown.
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified { .. })
    }
}

/// The one decision whether a business is shown as verified, used by every
/// screen.
///
/// Verified exactly when: `signature` checks over `certificate` against
/// the `operator` key the client pinned; the certificate names
/// `pinned_account_key` (the key the client pinned for this account) and
/// the profile's account; `revoked` is false (the caller passes whether a
/// revocation verified with [`verify_revocation`] names this certificate,
/// see [`CertificateRevocation::revokes`]); `issued_at_ms <= now_ms <
/// expires_at_ms`; and `profile` is the certified one (same digest and
/// display name). Checked in that order; the first failure is the reason.
pub fn verified_name(
    certificate: &BusinessCertificate,
    signature: &[u8],
    operator: &OperatorKey,
    pinned_account_key: &AccountKey,
    profile: &BusinessProfile,
    now_ms: u64,
    revoked: bool,
) -> Verification {
    let reason = if verify_certificate(operator, certificate, signature).is_err() {
        NotVerified::BadSignature
    } else if certificate.account_key != *pinned_account_key
        || certificate.account != profile.account
    {
        NotVerified::OtherAccountKey
    } else if revoked {
        NotVerified::Revoked
    } else if now_ms < certificate.issued_at_ms {
        NotVerified::NotYetValid
    } else if now_ms >= certificate.expires_at_ms {
        NotVerified::Expired
    } else if profile.digest() != certificate.profile_digest
        || profile.display_name != certificate.display_name
    {
        NotVerified::ProfileMismatch
    } else {
        return Verification::Verified {
            display_name: certificate.display_name.clone(),
        };
    };
    Verification::NotVerified(reason)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use super::*;

    const NOW: u64 = 1_750_000_000_000;
    const DAY: u64 = 24 * 60 * 60 * 1000;

    fn profile() -> BusinessProfile {
        BusinessProfile {
            account: AccountId::from_bytes(&[0xB5; 16]).unwrap(),
            display_name: "Acme Air".into(),
            about: "Flights to everywhere.\nSince 1999.".into(),
            address: "1 Runway Road, London".into(),
            website: Some("https://acme.example".into()),
            email: Some("help@acme.example".into()),
            opening_hours: "Mon-Sun 06:00-22:00".into(),
            vertical: Vertical::Travel,
        }
    }

    struct Setup {
        operator: OperatorKeyPair,
        business: AccountKeyPair,
        profile: BusinessProfile,
        certificate: BusinessCertificate,
        signature: [u8; 64],
    }

    fn setup() -> Setup {
        let operator = OperatorKeyPair::generate(&mut rand::rng());
        let business = AccountKeyPair::generate(&mut rand::rng());
        let profile = profile();
        let certificate =
            BusinessCertificate::for_profile(&profile, business.public(), NOW, NOW + 365 * DAY)
                .unwrap();
        let signature = sign_certificate(&operator, &certificate);
        Setup {
            operator,
            business,
            profile,
            certificate,
            signature,
        }
    }

    #[test]
    fn a_profile_signature_covers_every_field() {
        let key = AccountKeyPair::generate(&mut rand::rng());
        let p = profile();
        let sig = sign_profile(&key, &p).unwrap();
        verify_profile(&key.public(), &p, &sig).unwrap();
        let changed = [
            BusinessProfile {
                account: AccountId::from_bytes(&[0xC6; 16]).unwrap(),
                ..p.clone()
            },
            BusinessProfile {
                display_name: "Acme Air Ltd".into(),
                ..p.clone()
            },
            BusinessProfile {
                about: String::new(),
                ..p.clone()
            },
            BusinessProfile {
                address: "2 Runway Road".into(),
                ..p.clone()
            },
            BusinessProfile {
                website: None,
                ..p.clone()
            },
            BusinessProfile {
                email: Some("sales@acme.example".into()),
                ..p.clone()
            },
            BusinessProfile {
                opening_hours: "Mon-Fri".into(),
                ..p.clone()
            },
            BusinessProfile {
                vertical: Vertical::Retail,
                ..p.clone()
            },
        ];
        let mut digests = std::collections::BTreeSet::from([p.digest()]);
        for other in changed {
            assert!(
                verify_profile(&key.public(), &other, &sig).is_err(),
                "{other:?}"
            );
            assert!(digests.insert(other.digest()), "{other:?}");
        }
        let other_key = AccountKeyPair::generate(&mut rand::rng());
        assert!(verify_profile(&other_key.public(), &p, &sig).is_err());
    }

    #[test]
    fn profile_layout() {
        let p = BusinessProfile {
            account: AccountId::from_bytes(&[0xB5; 16]).unwrap(),
            display_name: "Ab".into(),
            about: String::new(),
            address: "x".into(),
            website: None,
            email: Some("a@b.c".into()),
            opening_hours: String::new(),
            vertical: Vertical::Other,
        };
        let mut expected = b"Comptoir business profile v1".to_vec();
        expected.extend_from_slice(&[0xB5; 16]);
        expected.extend_from_slice(b"\0\0\0\x02Ab\0\0\0\0\0\0\0\x01x\0\x01\0\0\0\x05a@b.c");
        expected.extend_from_slice(b"\0\0\0\0\x10");
        assert_eq!(p.canonical_bytes(), expected);
        assert_eq!(p.digest(), <[u8; 32]>::from(Sha256::digest(&expected)));
    }

    #[test]
    fn invalid_profiles_are_refused() {
        let key = AccountKeyPair::generate(&mut rand::rng());
        let cases = [
            (
                BusinessProfile {
                    display_name: String::new(),
                    ..profile()
                },
                ProfileError::BadDisplayName,
            ),
            (
                BusinessProfile {
                    display_name: " Acme".into(),
                    ..profile()
                },
                ProfileError::BadDisplayName,
            ),
            (
                BusinessProfile {
                    display_name: "A".repeat(65),
                    ..profile()
                },
                ProfileError::BadDisplayName,
            ),
            (
                BusinessProfile {
                    display_name: "Acme\nAir".into(),
                    ..profile()
                },
                ProfileError::ForbiddenCharacter {
                    field: "display name",
                },
            ),
            (
                BusinessProfile {
                    display_name: "Acme\u{202E}riA".into(),
                    ..profile()
                },
                ProfileError::ForbiddenCharacter {
                    field: "display name",
                },
            ),
            (
                BusinessProfile {
                    about: "a".repeat(513),
                    ..profile()
                },
                ProfileError::TooLong {
                    field: "about",
                    limit: MAX_ABOUT_LEN,
                    got: 513,
                },
            ),
            (
                BusinessProfile {
                    address: "a".repeat(257),
                    ..profile()
                },
                ProfileError::TooLong {
                    field: "address",
                    limit: MAX_ADDRESS_LEN,
                    got: 257,
                },
            ),
            (
                BusinessProfile {
                    opening_hours: "a".repeat(257),
                    ..profile()
                },
                ProfileError::TooLong {
                    field: "opening hours",
                    limit: MAX_OPENING_HOURS_LEN,
                    got: 257,
                },
            ),
            (
                BusinessProfile {
                    website: Some("http://acme.example".into()),
                    ..profile()
                },
                ProfileError::BadWebsite,
            ),
            (
                BusinessProfile {
                    email: Some("help at acme".into()),
                    ..profile()
                },
                ProfileError::BadEmail,
            ),
            (
                BusinessProfile {
                    email: Some("help@acme".into()),
                    ..profile()
                },
                ProfileError::BadEmail,
            ),
        ];
        for (p, expected) in cases {
            assert_eq!(p.validate(), Err(expected.clone()), "{p:?}");
            assert_eq!(sign_profile(&key, &p), Err(expected.clone()));
            assert_eq!(
                BusinessCertificate::for_profile(&p, key.public(), 0, 1),
                Err(expected)
            );
        }
        profile().validate().unwrap();
    }

    #[test]
    fn profile_json_round_trip() {
        let p = profile();
        let json = serde_json::to_string_pretty(&p).unwrap();
        assert!(json.contains("\"vertical\": \"travel\""), "{json}");
        let back: BusinessProfile = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.digest(), p.digest());
        let minimal: BusinessProfile = serde_json::from_str(&format!(
            r#"{{"account": "{}", "display_name": "Acme", "vertical": "professional_services"}}"#,
            p.account
        ))
        .unwrap();
        minimal.validate().unwrap();
        assert_eq!(minimal.website, None);
        assert!(
            serde_json::from_str::<BusinessProfile>(&json.replace("\"about\"", "\"abuot\""))
                .is_err()
        );
        assert!(serde_json::from_str::<BusinessProfile>(&json.replace("travel", "space")).is_err());
    }

    #[test]
    fn verticals_have_distinct_codes() {
        for (i, v) in Vertical::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(v.code()), i + 1);
            assert_eq!(Vertical::from_code(v.code()), Some(v));
        }
        assert_eq!(Vertical::from_code(0), None);
        assert_eq!(Vertical::from_code(17), None);
    }

    #[test]
    fn a_certificate_signature_covers_every_field() {
        let s = setup();
        let c = &s.certificate;
        verify_certificate(&s.operator.public(), c, &s.signature).unwrap();
        let other_key = AccountKeyPair::generate(&mut rand::rng()).public();
        let changed = [
            BusinessCertificate {
                account: AccountId::from_bytes(&[0xC6; 16]).unwrap(),
                ..c.clone()
            },
            BusinessCertificate {
                account_key: other_key,
                ..c.clone()
            },
            BusinessCertificate {
                display_name: "Acme Air Ltd".into(),
                ..c.clone()
            },
            BusinessCertificate {
                profile_digest: [0; 32],
                ..c.clone()
            },
            BusinessCertificate {
                issued_at_ms: c.issued_at_ms - 1,
                ..c.clone()
            },
            BusinessCertificate {
                expires_at_ms: c.expires_at_ms + 1,
                ..c.clone()
            },
        ];
        for other in changed {
            assert!(
                verify_certificate(&s.operator.public(), &other, &s.signature).is_err(),
                "{other:?}"
            );
            assert_ne!(other.digest(), c.digest());
        }
        let payload = certificate_payload(c);
        assert_eq!(payload.len(), 32 + 16 + 32 + 4 + 8 + 32 + 8 + 8);
        assert_eq!(&payload[..32], CERTIFICATE_CONTEXT);
        assert_eq!(&payload[48..80], &c.account_key.to_bytes());
    }

    #[test]
    fn a_revocation_signature_covers_every_field() {
        let s = setup();
        let revocation = CertificateRevocation::of(&s.certificate, NOW + DAY);
        assert!(revocation.revokes(&s.certificate));
        let sig = sign_revocation(&s.operator, &revocation);
        verify_revocation(&s.operator.public(), &revocation, &sig).unwrap();
        for other in [
            CertificateRevocation {
                account: AccountId::from_bytes(&[0xC6; 16]).unwrap(),
                ..revocation.clone()
            },
            CertificateRevocation {
                certificate_digest: [0; 32],
                ..revocation.clone()
            },
            CertificateRevocation {
                revoked_at_ms: NOW,
                ..revocation.clone()
            },
        ] {
            assert!(verify_revocation(&s.operator.public(), &other, &sig).is_err());
        }
        // A renewed certificate is not revoked by the old one's revocation.
        let renewed = BusinessCertificate {
            issued_at_ms: NOW + 2 * DAY,
            ..s.certificate.clone()
        };
        assert!(!revocation.revokes(&renewed));
        assert_eq!(revocation_payload(&revocation).len(), 43 + 16 + 32 + 8);
    }

    #[test]
    fn verified_name_says_why_each_way() {
        let s = setup();
        let pinned = s.business.public();
        let check = |certificate: &BusinessCertificate,
                     signature: &[u8],
                     operator: &OperatorKey,
                     pinned: &AccountKey,
                     profile: &BusinessProfile,
                     now: u64,
                     revoked: bool| {
            verified_name(
                certificate,
                signature,
                operator,
                pinned,
                profile,
                now,
                revoked,
            )
        };
        let op = s.operator.public();
        let ok = check(
            &s.certificate,
            &s.signature,
            &op,
            &pinned,
            &s.profile,
            NOW,
            false,
        );
        assert_eq!(
            ok,
            Verification::Verified {
                display_name: "Acme Air".into()
            }
        );
        assert_eq!(ok.shown_name("acme-air"), "Acme Air");
        assert!(ok.is_verified());

        let not = |reason| Verification::NotVerified(reason);
        // Forged: signed by another key, or altered after signing.
        let forger = OperatorKeyPair::generate(&mut rand::rng());
        let forged = sign_certificate(&forger, &s.certificate);
        assert_eq!(
            check(
                &s.certificate,
                &forged,
                &op,
                &pinned,
                &s.profile,
                NOW,
                false
            ),
            not(NotVerified::BadSignature)
        );
        assert_eq!(
            check(
                &s.certificate,
                &s.signature,
                &forger.public(),
                &pinned,
                &s.profile,
                NOW,
                false
            ),
            not(NotVerified::BadSignature)
        );
        assert_eq!(
            check(
                &s.certificate,
                &[0; 10],
                &op,
                &pinned,
                &s.profile,
                NOW,
                false
            ),
            not(NotVerified::BadSignature)
        );
        let mut renamed = s.certificate.clone();
        renamed.display_name = "Acme Airways".into();
        assert_eq!(
            check(&renamed, &s.signature, &op, &pinned, &s.profile, NOW, false),
            not(NotVerified::BadSignature)
        );
        // Another account key: the account was taken over, or the
        // certificate is another business's.
        let other = AccountKeyPair::generate(&mut rand::rng()).public();
        assert_eq!(
            check(
                &s.certificate,
                &s.signature,
                &op,
                &other,
                &s.profile,
                NOW,
                false
            ),
            not(NotVerified::OtherAccountKey)
        );
        let mut elsewhere = s.profile.clone();
        elsewhere.account = AccountId::from_bytes(&[0xC6; 16]).unwrap();
        assert_eq!(
            check(
                &s.certificate,
                &s.signature,
                &op,
                &pinned,
                &elsewhere,
                NOW,
                false
            ),
            not(NotVerified::OtherAccountKey)
        );
        assert_eq!(
            check(
                &s.certificate,
                &s.signature,
                &op,
                &pinned,
                &s.profile,
                NOW,
                true
            ),
            not(NotVerified::Revoked)
        );
        assert_eq!(
            check(
                &s.certificate,
                &s.signature,
                &op,
                &pinned,
                &s.profile,
                NOW - 1,
                false
            ),
            not(NotVerified::NotYetValid)
        );
        let expiry = s.certificate.expires_at_ms;
        assert!(
            check(
                &s.certificate,
                &s.signature,
                &op,
                &pinned,
                &s.profile,
                expiry - 1,
                false
            )
            .is_verified()
        );
        assert_eq!(
            check(
                &s.certificate,
                &s.signature,
                &op,
                &pinned,
                &s.profile,
                expiry,
                false
            ),
            not(NotVerified::Expired)
        );
        let mut edited = s.profile.clone();
        edited.website = Some("https://acme-payments.example".into());
        let refused = check(
            &s.certificate,
            &s.signature,
            &op,
            &pinned,
            &edited,
            NOW,
            false,
        );
        assert_eq!(refused, not(NotVerified::ProfileMismatch));
        assert_eq!(refused.shown_name("acme-air"), "acme-air");
        assert!(!refused.is_verified());
        assert!(!NotVerified::ProfileMismatch.to_string().is_empty());

        // An operator certificate whose name differs from the profile's.
        let mut misnamed = s.certificate.clone();
        misnamed.display_name = "Acme Bank".into();
        let signature = sign_certificate(&s.operator, &misnamed);
        assert_eq!(
            check(&misnamed, &signature, &op, &pinned, &s.profile, NOW, false),
            not(NotVerified::ProfileMismatch)
        );
    }
}
