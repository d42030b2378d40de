//! Opening hours: weekly periods at a fixed UTC offset, and whether a
//! moment falls inside one (the away message is sent outside them).

use crate::config::ConfigError;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTES_PER_DAY: u32 = 24 * 60;

/// The business's weekly opening hours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpeningHours {
    /// Minutes east of UTC of the business's local time.
    pub utc_offset_minutes: i32,
    /// (day from Monday = 0, start minute, end minute) with start < end.
    pub periods: Vec<(u8, u32, u32)>,
}

impl OpeningHours {
    /// Parse `"+01:00"` and periods like `"mon-fri 09:00-18:00"`, `"sat 10:00-13:00"`.
    pub fn parse(utc_offset: &str, periods: &[String]) -> Result<Self, ConfigError> {
        let bad = |what: &str, why: &str| ConfigError::OpeningHours(format!("{what:?}: {why}"));
        let utc_offset_minutes = parse_offset(utc_offset)
            .ok_or_else(|| bad(utc_offset, "a UTC offset is +HH:MM or -HH:MM"))?;
        let mut out = Vec::new();
        for period in periods {
            let (days, times) = period
                .trim()
                .split_once(' ')
                .ok_or_else(|| bad(period, "write days then hours: \"mon-fri 09:00-18:00\""))?;
            let (first, last) = match days.split_once('-') {
                Some((a, b)) => (day(a), day(b)),
                None => (day(days), day(days)),
            };
            let (Some(first), Some(last)) = (first, last) else {
                return Err(bad(period, "days are mon, tue, wed, thu, fri, sat, sun"));
            };
            if first > last {
                return Err(bad(period, "a day range runs forward (mon-fri)"));
            }
            let (start, end) = times
                .trim()
                .split_once('-')
                .and_then(|(a, b)| Some((minute(a)?, minute(b)?)))
                .ok_or_else(|| bad(period, "hours are HH:MM-HH:MM (24:00 allowed as an end)"))?;
            if start >= end {
                return Err(bad(period, "a period ends after it starts"));
            }
            for d in first..=last {
                out.push((d, start, end));
            }
        }
        if out.is_empty() {
            return Err(bad("periods", "name at least one period"));
        }
        Ok(Self {
            utc_offset_minutes,
            periods: out,
        })
    }

    /// Whether the business is open at `now_ms` (ms since the Unix epoch).
    pub fn is_open(&self, now_ms: u64) -> bool {
        let minutes =
            i64::try_from(now_ms / 60_000).unwrap_or(i64::MAX) + i64::from(self.utc_offset_minutes);
        let days = minutes.div_euclid(i64::from(MINUTES_PER_DAY));
        let minute = u32::try_from(minutes.rem_euclid(i64::from(MINUTES_PER_DAY))).unwrap_or(0);
        // 1970-01-01 was a Thursday (day 3 counting from Monday = 0).
        let weekday = u8::try_from((days + 3).rem_euclid(7)).unwrap_or(0);
        self.periods
            .iter()
            .any(|(d, start, end)| *d == weekday && (*start..*end).contains(&minute))
    }
}

fn day(name: &str) -> Option<u8> {
    DAY_NAMES
        .iter()
        .position(|d| d.eq_ignore_ascii_case(name.trim()))
        .and_then(|i| u8::try_from(i).ok())
}

fn minute(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

fn parse_offset(text: &str) -> Option<i32> {
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let minutes = i32::try_from(minute(&text[1..])?).ok()?;
    (minutes <= 14 * 60).then_some(sign * minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(offset: &str, periods: &[&str]) -> Result<OpeningHours, ConfigError> {
        let periods: Vec<String> = periods.iter().map(|p| (*p).to_owned()).collect();
        OpeningHours::parse(offset, &periods)
    }

    #[test]
    fn open_inside_a_period_at_the_local_offset() {
        let h = hours("+01:00", &["mon-fri 09:00-18:00", "sat 10:00-13:00"]).expect("valid");
        // 2026-12-01 is a Tuesday; 08:30 UTC is 09:30 at +01:00.
        let tuesday_0830_utc = 1_796_113_800_000;
        assert!(h.is_open(tuesday_0830_utc));
        assert!(
            !h.is_open(tuesday_0830_utc - 3_600_000),
            "07:30 UTC = 08:30 local"
        );
        // Sunday 2026-12-06 11:00 local.
        assert!(!h.is_open(tuesday_0830_utc + 5 * 86_400_000 + 90 * 60_000));
        // Saturday 2026-12-05 11:00 local.
        assert!(h.is_open(tuesday_0830_utc + 4 * 86_400_000 + 90 * 60_000));
    }

    #[test]
    fn bad_hours_are_refused_with_the_reason() {
        for (offset, periods) in [
            ("01:00", vec!["mon 09:00-10:00"]),
            ("+01:00", vec!["monday 09:00-10:00"]),
            ("+01:00", vec!["fri-mon 09:00-10:00"]),
            ("+01:00", vec!["mon 10:00-09:00"]),
            ("+01:00", vec!["mon 9:00-10:00"]),
            ("+01:00", vec!["mon 09:00-25:00"]),
            ("+01:00", vec![]),
        ] {
            assert!(
                matches!(hours(offset, &periods), Err(ConfigError::OpeningHours(_))),
                "{offset} {periods:?}"
            );
        }
        assert!(hours("-05:30", &["sun 00:00-24:00"]).is_ok());
    }
}
