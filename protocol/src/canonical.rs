//! The building blocks of the canonical byte layouts of the business
//! artefacts (templates, profiles, certificates), and the text rules they
//! share. A layout is a context string, then fields in a fixed order:
//! fixed-size fields as they are, integers big-endian, and each string as
//! `u32 BE byte length || UTF-8 bytes`; an optional string is `0x00` when
//! absent and `0x01 || string` when present. Length prefixes make the
//! encoding injective: two different field values never give the same
//! bytes.

/// Append `u32 BE byte length || UTF-8 bytes`. Callers validate lengths
/// first (every limit is far below `u32::MAX`); a longer string, which no
/// valid artefact has, saturates the prefix.
pub(crate) fn put_str(out: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Append `0x00` for `None`, `0x01 || str` for `Some`.
pub(crate) fn put_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_str(out, text);
        }
    }
}

/// Number of characters (Unicode scalar values): what every limit on text
/// counts.
pub(crate) fn char_len(text: &str) -> usize {
    text.chars().count()
}

/// Characters that reorder or hide text (bidirectional controls): refused
/// everywhere a business writes text others see, so that text cannot
/// display as something else.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Whether `text` has a character it may not have: a control character
/// (a newline is allowed only when `newline_allowed`) or a bidirectional
/// control.
pub(crate) fn has_forbidden_char(text: &str, newline_allowed: bool) -> bool {
    text.chars()
        .any(|c| (c.is_control() && !(newline_allowed && c == '\n')) || is_bidi_control(c))
}

/// Whether `url` is an absolute `https://` URL with a host, at most
/// `max_chars` characters, with no whitespace or control character.
pub(crate) fn is_https_url(url: &str, max_chars: usize) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    char_len(url) <= max_chars
        && !host.is_empty()
        && !host.contains('@')
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_bidi_control(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_length_prefixed() {
        let mut out = Vec::new();
        put_str(&mut out, "ab");
        put_opt_str(&mut out, None);
        put_opt_str(&mut out, Some(""));
        assert_eq!(out, [0, 0, 0, 2, b'a', b'b', 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn text_rules() {
        assert!(!has_forbidden_char("Café ☕", false));
        assert!(has_forbidden_char("a\nb", false));
        assert!(!has_forbidden_char("a\nb", true));
        assert!(has_forbidden_char("a\tb", true));
        assert!(has_forbidden_char("evil\u{202E}gnp.exe", true));
        assert!(is_https_url("https://acme.example/track?id=1", 2000));
        for bad in [
            "http://acme.example",
            "https://",
            "https:///path",
            "https://user@acme.example",
            "https://acme.example/a b",
            "javascript:alert(1)",
        ] {
            assert!(!is_https_url(bad, 2000), "{bad}");
        }
        assert!(!is_https_url("https://a.example/xx", 19));
    }
}
