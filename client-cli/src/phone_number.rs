//! Phone numbers as people type them (`+44 7400 123456`, `07400 123456`
//! with `--region GB`), checked and written in E.164 (`+447400123456`)
//! with the `phonenumber` crate (Google's libphonenumber metadata) before
//! they reach the relay, which only accepts E.164.

use std::str::FromStr;

use comptoir_client::error::{ClientError, Result};
use phonenumber::country;

use crate::format::visible;

/// A region for numbers written without `+` and a country code: an ISO
/// 3166 two-letter code, checked when the command line is parsed.
pub fn parse_region(value: &str) -> std::result::Result<String, String> {
    let upper = value.to_ascii_uppercase();
    country::Id::from_str(&upper).map(|_| upper).map_err(|_| {
        format!("{value:?} is not a region: write a two-letter country code such as GB or FR")
    })
}

/// Whether `text` looks like a phone number rather than a name or an id:
/// `+` or a digit first, then only digits, spaces and `-./()`.
pub fn looks_like_phone_number(text: &str) -> bool {
    let mut chars = text.trim().chars();
    chars.next().is_some_and(|c| c == '+' || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_digit() || " -./()".contains(c))
}

/// `text` in E.164, if it is a valid number (of `region`, when written
/// without `+` and a country code).
pub fn normalise(text: &str, region: Option<&str>) -> Result<String> {
    let region_id = region.and_then(|r| country::Id::from_str(r).ok());
    let national = !text.trim_start().starts_with('+');
    if national && region_id.is_none() {
        return Err(ClientError::InvalidArgument(format!(
            "{} is not an international phone number: write it with + and the country code \
             (+447400123456), or give the country with --region (--region GB)",
            visible(text)
        )));
    }
    let invalid = || {
        let of_region = match (national, region) {
            (true, Some(region)) => format!(" in {region}"),
            _ => String::new(),
        };
        ClientError::InvalidArgument(format!(
            "{} is not a valid phone number{of_region}: check the digits and the country code",
            visible(text)
        ))
    };
    let number = phonenumber::parse(region_id, text).map_err(|_| invalid())?;
    if !number.is_valid() {
        return Err(invalid());
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_e164() {
        let cases = [
            ("+44 7400 123456", None, "+447400123456"),
            ("07400 123456", Some("GB"), "+447400123456"),
            ("06 12 34 56 78", Some("FR"), "+33612345678"),
            ("+33 (0)6 12-34-56-78", None, "+33612345678"),
            ("+33612345678", Some("GB"), "+33612345678"),
        ];
        for (typed, region, e164) in cases {
            assert_eq!(
                normalise(typed, region).ok().as_deref(),
                Some(e164),
                "{typed}"
            );
        }
        for (typed, region) in [
            ("06 12 34 56 78", None),
            ("+33 1", None),
            ("12", Some("FR")),
            ("+999 12345678", None),
        ] {
            assert!(
                matches!(
                    normalise(typed, region),
                    Err(ClientError::InvalidArgument(_))
                ),
                "{typed}"
            );
        }
        assert!(looks_like_phone_number("+44 7400 123456"));
        assert!(looks_like_phone_number("06.12.34.56.78"));
        assert!(!looks_like_phone_number("acme-deliveries"));
        assert!(parse_region("gb").is_ok() && parse_region("XX").is_err());
    }
}
