//! The values of a template's placeholders as typed after `--param
//! NAME=VALUE` (`business template send`), read by the type the approved
//! template gives each placeholder:
//!
//! - text: as typed;
//! - number: a whole number in decimal (`12`, `-3`);
//! - money: an amount and an ISO 4217 currency code, `12.50 GBP`, `12 GBP`
//!   or `1000 JPY`, with at most as many decimal places as the currency has
//!   (2 for GBP, 0 for JPY, 3 for KWD); sent in minor units (1250 GBP);
//! - date_time: RFC 3339 (`2026-12-01T08:40:00Z`, or with an offset such
//!   as `+01:00`), sent as ms since the Unix epoch and shown in UTC.
//!
//! Whether every placeholder has a value is checked afterwards by the
//! library against the approved template, as the customer's client will.

use comptoir_protocol::proto::content::{Money, TemplateParameter, template_parameter::Value};
use comptoir_protocol::template::{PlaceholderKind, Template, currency_exponent};
use thiserror::Error;

/// Why a `--param` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParamError {
    /// Not `NAME=VALUE`.
    #[error("{0:?} is not NAME=VALUE")]
    NotNameValue(String),
    /// The template has no placeholder of that name.
    #[error("the template has no placeholder {name:?} (it has: {known})")]
    UnknownPlaceholder {
        /// The name typed.
        name: String,
        /// The template's placeholder names, comma-separated.
        known: String,
    },
    /// The same placeholder twice.
    #[error("{0:?} is given twice")]
    Repeated(String),
    /// The value does not read as the placeholder's type.
    #[error("{name}: {value:?} is not a {kind} value ({expected})")]
    BadValue {
        /// The placeholder.
        name: String,
        /// What was typed.
        value: String,
        /// Its type.
        kind: PlaceholderKind,
        /// What to type instead.
        expected: &'static str,
    },
}

/// The parameters of an instance of `template` from `NAME=VALUE` strings.
pub fn parse_params(
    template: &Template,
    params: &[String],
) -> Result<Vec<TemplateParameter>, ParamError> {
    let mut out: Vec<TemplateParameter> = Vec::with_capacity(params.len());
    for param in params {
        let (name, value) = param
            .split_once('=')
            .ok_or_else(|| ParamError::NotNameValue(param.clone()))?;
        let kind =
            template
                .placeholder_kind(name)
                .ok_or_else(|| ParamError::UnknownPlaceholder {
                    name: name.to_string(),
                    known: template
                        .placeholders
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        if out.iter().any(|p| p.name == name) {
            return Err(ParamError::Repeated(name.to_string()));
        }
        out.push(TemplateParameter {
            name: name.to_string(),
            value: Some(parse_value(name, kind, value)?),
        });
    }
    Ok(out)
}

/// One value read as `kind`.
pub fn parse_value(name: &str, kind: PlaceholderKind, value: &str) -> Result<Value, ParamError> {
    let bad = |expected| ParamError::BadValue {
        name: name.to_string(),
        value: value.to_string(),
        kind,
        expected,
    };
    match kind {
        PlaceholderKind::Text => Ok(Value::Text(value.to_string())),
        PlaceholderKind::Number => value
            .parse::<i64>()
            .map(Value::Number)
            .map_err(|_| bad("a whole number, such as 12")),
        PlaceholderKind::Money => parse_money(value)
            .map(Value::Money)
            .ok_or_else(|| bad("an amount and a currency code, such as `12.50 GBP`")),
        PlaceholderKind::DateTime => parse_date_time(value)
            .map(Value::DateTimeMs)
            .ok_or_else(|| bad("RFC 3339 after 1970, such as 2026-12-01T08:40:00Z")),
    }
}

/// `12.50 GBP` as 1250 minor units of GBP; `None` if it does not read, has
/// more decimal places than the currency, or does not fit.
fn parse_money(value: &str) -> Option<Money> {
    let (amount, currency) = value.trim().split_once(' ')?;
    let currency = currency.trim();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let (negative, amount) = match amount.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, amount),
    };
    let (whole, fraction) = amount.split_once('.').unwrap_or((amount, ""));
    let exponent = currency_exponent(currency);
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || (amount.contains('.') && fraction.is_empty())
        || fraction.len() > exponent as usize
    {
        return None;
    }
    let scale = 10i64.checked_pow(exponent)?;
    let fraction_scale = 10i64.checked_pow(exponent - fraction.len() as u32)?;
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let minor = whole
        .checked_mul(scale)?
        .checked_add(fraction.checked_mul(fraction_scale)?)?;
    Some(Money {
        amount_minor: if negative { -minor } else { minor },
        currency: currency.to_string(),
    })
}

/// RFC 3339 as ms since the Unix epoch; `None` before 1970.
fn parse_date_time(value: &str) -> Option<u64> {
    let parsed =
        time::OffsetDateTime::parse(value.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    u64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.

    use super::*;

    fn money(value: &str) -> Option<(i64, String)> {
        parse_money(value).map(|m| (m.amount_minor, m.currency))
    }

    #[test]
    fn money_reads_in_the_currency_s_minor_units() {
        assert_eq!(money("12.50 GBP"), Some((1250, "GBP".into())));
        assert_eq!(money("12.5 GBP"), Some((1250, "GBP".into())));
        assert_eq!(money("12 GBP"), Some((1200, "GBP".into())));
        assert_eq!(money("-3 JPY"), Some((-3, "JPY".into())));
        assert_eq!(money("1.234 KWD"), Some((1234, "KWD".into())));
        for bad in [
            "12.505 GBP",
            "12.5 JPY",
            "12. GBP",
            ".5 GBP",
            "12.50",
            "12.50 gbp",
            "12,50 GBP",
            "1e3 GBP",
            "99999999999999999999 GBP",
            "",
        ] {
            assert_eq!(money(bad), None, "{bad}");
        }
    }

    #[test]
    fn date_times_are_rfc_3339() {
        assert_eq!(
            parse_date_time("2026-12-01T08:40:00Z"),
            Some(1_796_114_400_000)
        );
        assert_eq!(
            parse_date_time("2026-12-01T09:40:00+01:00"),
            Some(1_796_114_400_000)
        );
        for bad in [
            "2026-12-01",
            "2026-12-01 08:40",
            "1969-12-31T23:59:00Z",
            "soon",
        ] {
            assert_eq!(parse_date_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_are_whole() {
        let kind = PlaceholderKind::Number;
        assert_eq!(parse_value("gate", kind, "12"), Ok(Value::Number(12)));
        assert!(matches!(
            parse_value("gate", kind, "12.5"),
            Err(ParamError::BadValue { .. })
        ));
    }
}
