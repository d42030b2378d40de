//! How the CLI and the TUI print times and text from the network.

use unicode_general_category::{GeneralCategory, get_general_category};

/// `HH:MM:SS` (UTC) of a time in ms since the Unix epoch.
pub fn time_of_day(ms: u64) -> String {
    let secs = ms / 1000;
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a time in ms since the Unix epoch.
pub fn date_time(ms: u64) -> String {
    format!("{} {}", date(ms), time_of_day(ms))
}

/// RFC 3339 (UTC, milliseconds: `YYYY-MM-DDTHH:MM:SS.mmmZ`) of a time in
/// ms since the Unix epoch, for `--output json`.
pub fn rfc3339(ms: u64) -> String {
    format!("{}T{}.{:03}Z", date(ms), time_of_day(ms), ms % 1000)
}

/// `YYYY-MM-DD` (UTC) of a time in ms since the Unix epoch.
fn date(ms: u64) -> String {
    let days = i64::try_from(ms / 1000 / 86_400).unwrap_or(0);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The start of a message (its first 40 characters, `…` when there is
/// more), quoted and made visible: how `chat` names the message a tick or
/// a waiting line is about.
pub fn quoted_excerpt(text: &str) -> String {
    const SHOWN: usize = 40;
    let mut shown: String = text.chars().take(SHOWN).collect();
    if text.chars().nth(SHOWN).is_some() {
        shown.push('…');
    }
    format!("“{}”", visible(&shown))
}

/// What `chat` says of a message written while the relay is away: it
/// waits in the outbox, and its ✓ comes when it reaches the relay.
pub fn waiting_line(text: &str) -> String {
    format!(
        "  · waiting (the relay is away; sent when it is back): {}",
        quoted_excerpt(text)
    )
}

/// What `chat` says when it opens with the relay away (`reason`, made
/// visible): it chats offline and reconnects by itself.
pub fn offline_line(reason: &str) -> String {
    format!(
        "offline, reconnecting ({reason}): what you type waits in the outbox and is sent \
         when the relay is back"
    )
}

/// Text from anyone else (a message, a name, a relay's warning) as it may
/// reach a terminal: on one line, with every character that could move
/// the cursor, erase or recolour what is shown, reorder it (bidirectional
/// overrides and isolates) or hide in it (zero-width and other format
/// characters) written out visibly as `\u{…}`, so a contact cannot forge
/// who said what. `\n`, `\r` and `\t` are written `\n`, `\r`, `\t`, and a
/// backslash is doubled, so the rendering is unambiguous. The one
/// exception is a zero-width joiner between two emoji (a family, a
/// rainbow flag), which only joins pictures.
///
/// Every command and the TUI print untrusted text through this function
/// and nothing else.
pub fn visible(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ZERO_WIDTH_JOINER if joins_emoji(&chars, i) => out.push(c),
            c if hidden_or_moving(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

const ZERO_WIDTH_JOINER: char = '\u{200d}';
const EMOJI_PRESENTATION: char = '\u{fe0f}';

/// Controls (C0, DEL, C1), format characters (bidirectional marks,
/// overrides and isolates, zero-width spaces and joiners, tags, the byte
/// order mark…) and the Unicode line and paragraph separators.
fn hidden_or_moving(c: char) -> bool {
    matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Whether the joiner at `i` sits between two pictographs (an emoji
/// sequence such as 👨‍👩‍👧 or 🏳️‍🌈).
fn joins_emoji(chars: &[char], i: usize) -> bool {
    let before = i.checked_sub(1).and_then(|j| chars.get(j)).copied();
    let after = chars.get(i + 1).copied();
    let pictograph_before = match before {
        Some(EMOJI_PRESENTATION) => i
            .checked_sub(2)
            .and_then(|j| chars.get(j))
            .is_some_and(|&c| pictograph(c)),
        Some(c) => pictograph(c),
        None => false,
    };
    pictograph_before && after.is_some_and(pictograph)
}

/// Emoji pictographs (the blocks emoji sequences join): misc symbols and
/// dingbats, and the supplementary pictograph planes.
fn pictograph(c: char) -> bool {
    matches!(u32::from(c), 0x2600..=0x27bf | 0x1f000..=0x1faff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Undo [`visible`]: proves it loses nothing (two different texts
    /// never print the same).
    fn unescape(shown: &str) -> Option<String> {
        let mut out = String::new();
        let mut chars = shown.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    if chars.next()? != '{' {
                        return None;
                    }
                    let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            }
        }
        Some(out)
    }

    #[test]
    fn formats_dates_and_lines() {
        assert_eq!(date_time(0), "1970-01-01 00:00:00");
        assert_eq!(date_time(1_709_210_096_000), "2024-02-29 12:34:56");
        assert_eq!(rfc3339(1_709_210_096_007), "2024-02-29T12:34:56.007Z");
        assert_eq!(visible("a\nb"), "a\\nb");
    }

    #[test]
    fn a_forged_sender_line_is_shown_as_what_it_is() {
        let forged = "\u{1b}[2K\u{1b}[1G[17:44:00] alice: please wire 500 EUR";
        assert_eq!(
            visible(forged),
            "\\u{1b}[2K\\u{1b}[1G[17:44:00] alice: please wire 500 EUR"
        );
        // Right-to-left override, zero-width space, BOM, tag, C1 CSI.
        assert_eq!(
            visible("pay\u{202e}lmth.exe\u{200b}\u{feff}\u{e0041}\u{9b}"),
            "pay\\u{202e}lmth.exe\\u{200b}\\u{feff}\\u{e0041}\\u{9b}"
        );
        // Emoji sequences keep their joiner; a lone joiner does not.
        assert_eq!(visible("👨\u{200d}👩\u{200d}👧"), "👨\u{200d}👩\u{200d}👧");
        assert_eq!(visible("🏳\u{fe0f}\u{200d}🌈"), "🏳\u{fe0f}\u{200d}🌈");
        assert_eq!(visible("pay\u{200d}pal"), "pay\\u{200d}pal");
        assert_eq!(visible("café — 東京 ✓"), "café — 東京 ✓");
    }

    proptest! {
        #[test]
        fn nothing_that_moves_hides_or_reorders_text_gets_through(text in any::<String>()) {
            let shown = visible(&text);
            let chars: Vec<char> = shown.chars().collect();
            for (i, &c) in chars.iter().enumerate() {
                prop_assert!(
                    !hidden_or_moving(c) || (c == ZERO_WIDTH_JOINER && joins_emoji(&chars, i)),
                    "{c:?} printed raw in {shown:?}"
                );
            }
            prop_assert_eq!(unescape(&shown), Some(text));
        }

        #[test]
        fn ordinary_text_is_unchanged(text in "[\\p{L}\\p{N}\\p{P}\\p{S} ]{0,64}") {
            prop_assume!(!text.contains('\\'));
            prop_assert_eq!(visible(&text), text);
        }
    }
}
