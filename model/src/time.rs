//! Event time: microseconds since the Unix epoch (UTC), its parsing and formatting, the
//! tumbling UTC windows of DESIGN.md section 3, and config durations such as `48h`.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeZone, Utc};
use std::fmt;

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

/// Microseconds in a second, minute, hour and day.
pub const SECOND: Micros = 1_000_000;
/// One minute.
pub const MINUTE: Micros = 60 * SECOND;
/// One hour.
pub const HOUR: Micros = 60 * MINUTE;
/// One day.
pub const DAY: Micros = 24 * HOUR;

/// Greatest accepted epoch-millisecond timestamp: 9999-12-31T23:59:59.999Z.
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// Greatest representable instant: 9999-12-31T23:59:59.999999Z.
pub const MAX_MICROS: Micros = MAX_MILLIS * 1000 + 999;

/// Parses an RFC 3339 timestamp (any offset) to UTC microseconds; digits below the
/// microsecond are truncated.
pub fn parse_rfc3339(text: &str) -> Option<Micros> {
    if let Some(t) = parse_utc_fast(text) {
        return Some(t);
    }
    let t = DateTime::parse_from_rfc3339(text).ok()?;
    let micros = t.timestamp_micros();
    (micros >= 0).then_some(micros)
}

/// The common form `YYYY-MM-DDTHH:MM:SS[.fraction]Z` without chrono; `None` for anything
/// else (other offsets, leap seconds, invalid dates), which goes the general way.
fn parse_utc_fast(text: &str) -> Option<Micros> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as i64)
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let micros = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', frac @ ..] if (1..=9).contains(&frac.len()) => {
            let mut m = 0i64;
            for i in 0..6 {
                let c = frac.get(i).copied().unwrap_or(b'0');
                if !c.is_ascii_digit() {
                    return None;
                }
                m = m * 10 + (c - b'0') as i64;
            }
            if !frac.iter().all(u8::is_ascii_digit) {
                return None;
            }
            m
        }
        _ => return None,
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    if day < 1 || day > month_days[month as usize - 1] || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (civil-from-days, inverted).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * MINUTE + second * SECOND + micros)
}

/// Converts integer epoch milliseconds, accepting 1970-01-01 through 9999-12-31.
pub fn from_epoch_millis(ms: i64) -> Option<Micros> {
    (0..=MAX_MILLIS).contains(&ms).then(|| ms * 1000)
}

/// Formats as RFC 3339 UTC with microseconds, e.g. `2026-10-26T04:06:37.362000Z`.
pub fn format_micros(t: Micros) -> String {
    match Utc.timestamp_micros(t).single() {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Micros, true),
        None => format!("<invalid time {t}>"),
    }
}

/// A tumbling, UTC-aligned window size.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum WindowSize {
    /// 60 seconds.
    Minute,
    /// 60 minutes.
    Hour,
    /// 24 hours, midnight UTC to midnight UTC.
    Day,
    /// Calendar month in UTC.
    Month,
}

impl WindowSize {
    /// All sizes, smallest first.
    pub const ALL: [WindowSize; 4] = [
        WindowSize::Minute,
        WindowSize::Hour,
        WindowSize::Day,
        WindowSize::Month,
    ];

    /// The name used in config and in the `window_size` column.
    pub fn as_str(self) -> &'static str {
        match self {
            WindowSize::Minute => "minute",
            WindowSize::Hour => "hour",
            WindowSize::Day => "day",
            WindowSize::Month => "month",
        }
    }

    /// Parses a config name.
    pub fn from_name(name: &str) -> Option<Self> {
        WindowSize::ALL.into_iter().find(|w| w.as_str() == name)
    }

    /// Start of the window holding `t`.
    pub fn start(self, t: Micros) -> Micros {
        match self {
            WindowSize::Minute => t - t.rem_euclid(MINUTE),
            WindowSize::Hour => t - t.rem_euclid(HOUR),
            WindowSize::Day => t - t.rem_euclid(DAY),
            WindowSize::Month => {
                let d = date_of(t);
                month_start(d.year(), d.month())
            }
        }
    }

    /// End (exclusive) of the window starting at `start`.
    pub fn end(self, start: Micros) -> Micros {
        match self {
            WindowSize::Minute => start + MINUTE,
            WindowSize::Hour => start + HOUR,
            WindowSize::Day => start + DAY,
            WindowSize::Month => {
                let d = date_of(start);
                if d.month() == 12 {
                    month_start(d.year() + 1, 1)
                } else {
                    month_start(d.year(), d.month() + 1)
                }
            }
        }
    }
}

impl fmt::Display for WindowSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn date_of(t: Micros) -> NaiveDate {
    Utc.timestamp_micros(t)
        .single()
        .expect("event times are validated to lie in 1970..=9999")
        .date_naive()
}

fn month_start(year: i32, month: u32) -> Micros {
    NaiveDate::from_ymd_opt(year, month, 1)
        .expect("valid month")
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_micros()
}

/// Parses a duration such as `48h`, `7d`, `30m`, `10s`, `500ms` or `0s` into microseconds.
pub fn parse_duration(text: &str) -> Option<Micros> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = text.split_at(split);
    let n: i64 = num.parse().ok()?;
    let unit_micros = match unit {
        "ms" => 1000,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        "d" => DAY,
        "w" => 7 * DAY,
        _ => return None,
    };
    n.checked_mul(unit_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_utc_parsing_agrees_with_chrono() {
        let chrono_parse = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|d| d.timestamp_micros())
                .filter(|m| *m >= 0)
        };
        let mut cases = vec![
            "1970-01-01T00:00:00Z".to_string(),
            "2024-02-29T23:59:59.999999999Z".into(),
            "2023-02-29T00:00:00Z".into(),
            "2024-13-01T00:00:00Z".into(),
            "2024-01-01T24:00:00Z".into(),
            "2024-01-01T00:00:60Z".into(),
            "2024-01-01T00:00:00.Z".into(),
            "2024-01-01T00:00:00.1234567890Z".into(),
            "2024-01-01T00:00:00.5+01:00".into(),
            "2024-01-01t00:00:00z".into(),
            "9999-12-31T23:59:59.999999Z".into(),
            "2100-02-29T00:00:00Z".into(),
            "2000-02-29T12:34:56.7Z".into(),
        ];
        for y in [1970, 1999, 2000, 2024, 2026, 2100, 2400] {
            for m in 1..=12 {
                for d in [1, 28, 29, 30, 31] {
                    cases.push(format!("{y:04}-{m:02}-{d:02}T13:07:59.000123Z"));
                }
            }
        }
        for c in &cases {
            assert_eq!(parse_rfc3339(c), chrono_parse(c), "{c}");
        }
    }

    #[test]
    fn parses_offsets_to_utc() {
        let a = parse_rfc3339("2024-01-15T10:30:00Z").unwrap();
        let b = parse_rfc3339("2024-01-15T12:30:00+02:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(format_micros(a), "2024-01-15T10:30:00.000000Z");
        assert_eq!(
            parse_rfc3339("2024-01-15T10:30:00.1234567Z").unwrap() % SECOND,
            123_456
        );
        assert!(parse_rfc3339("yesterday").is_none());
        assert!(parse_rfc3339("2024-01-15 10:30:00").is_none());
        assert_eq!(from_epoch_millis(1_705_314_600_000), Some(a));
        assert!(from_epoch_millis(-1).is_none());
    }

    #[test]
    fn windows_are_utc_aligned() {
        let t = parse_rfc3339("2024-02-29T23:59:59.999999Z").unwrap();
        let day = WindowSize::Day.start(t);
        assert_eq!(format_micros(day), "2024-02-29T00:00:00.000000Z");
        let month = WindowSize::Month.start(t);
        assert_eq!(format_micros(month), "2024-02-01T00:00:00.000000Z");
        assert_eq!(
            format_micros(WindowSize::Month.end(month)),
            "2024-03-01T00:00:00.000000Z"
        );
        let dec = parse_rfc3339("2024-12-10T00:00:00Z").unwrap();
        let end = WindowSize::Month.end(WindowSize::Month.start(dec));
        assert_eq!(format_micros(end), "2025-01-01T00:00:00.000000Z");
        assert_eq!(
            WindowSize::Hour.end(WindowSize::Hour.start(t)) - WindowSize::Hour.start(t),
            HOUR
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("48h"), Some(48 * HOUR));
        assert_eq!(parse_duration("7d"), Some(7 * DAY));
        assert_eq!(parse_duration("0s"), Some(0));
        assert_eq!(parse_duration("1500ms"), Some(1_500_000));
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("3 days"), None);
    }
}
