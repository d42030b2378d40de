//! Business names: handles a business claims on the relay (`ClaimName`) so
//! customers can find it with `Lookup`, next to E.164 phone numbers.
//!
//! A name is 3 to 32 characters: lowercase ASCII letters, digits and `-`,
//! neither starting nor ending with `-`. Input is normalised by ASCII
//! lowercasing only (no Unicode case folding, so no look-alike maps onto an
//! ASCII name). A name must not look like a phone number (leading `+`) or
//! an account id (32 hex characters), so a handle is never ambiguous.
//! Names are unverified handles: operator-signed business verification
//! comes later.

/// Fewest characters in a business name.
pub const MIN_NAME_LEN: usize = 3;
/// Most characters in a business name.
pub const MAX_NAME_LEN: usize = 32;

/// What a business name may contain, for error messages.
pub const NAME_RULES: &str = "a business name is 3 to 32 characters: letters a-z (upper case is \
     lowered), digits 0-9 and '-', not starting or ending with '-', and neither a +phone number \
     nor a 32-character hex account id";

/// Why a string is not a business name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid business name {shown:?}: {reason}; {NAME_RULES}")]
pub struct NameError {
    /// The input as received (cut to its first 40 characters).
    pub shown: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Normalise `input` (ASCII lowercase) and check it is a business name.
pub fn normalize_business_name(input: &str) -> Result<String, NameError> {
    let refuse = |reason| NameError {
        shown: input.chars().take(40).collect(),
        reason,
    };
    if input.starts_with('+') {
        return Err(refuse("it looks like a phone number"));
    }
    let name = input.to_ascii_lowercase();
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(refuse("it contains a character that is not allowed"));
    }
    if !(MIN_NAME_LEN..=MAX_NAME_LEN).contains(&name.len()) {
        return Err(refuse("its length is out of range"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(refuse("it starts or ends with '-'"));
    }
    if name.len() == 2 * crate::ACCOUNT_ID_LEN && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refuse("it looks like an account id"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_lowercases() {
        assert_eq!(
            normalize_business_name("Acme-Deliveries").as_deref(),
            Ok("acme-deliveries")
        );
        assert_eq!(normalize_business_name("a1b").as_deref(), Ok("a1b"));
        let longest = "x".repeat(MAX_NAME_LEN);
        assert_eq!(
            normalize_business_name(&longest).as_deref(),
            Ok(longest.as_str())
        );
    }

    #[test]
    fn refuses_what_is_not_a_name() {
        for bad in [
            "",
            "ab",
            &"x".repeat(MAX_NAME_LEN + 1),
            "-acme",
            "acme-",
            "acme deliveries",
            "acme_deliveries",
            "café",
            "\u{212A}elvin", // Kelvin sign: lowercases to 'k' in Unicode, not in ASCII.
            "+447700900123",
            "0123456789abcdef0123456789ABCDEF",
        ] {
            let error = normalize_business_name(bad).expect_err(bad);
            assert!(error.to_string().contains("3 to 32 characters"), "{error}");
        }
    }
}
