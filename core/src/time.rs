//! Time: the clock, and the dates of the admin API (months, days and instants in the
//! configured UTC offset, `admin.utc_offset`) on chrono's calendar.

use chrono::{DateTime, Datelike as _, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone as _};

const DAY_MS: i64 = 86_400_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `"+09:00"`, `"+9"`, `"Z"` → seconds east of UTC (at most 14 hours, as ISO 8601 zones go).
pub fn parse_utc_offset(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "Z" || s == "z" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    if h.is_empty() || h.len() > 2 || m.len() > 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    if h > 14 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

/// The zone of an offset in seconds (valid offsets come from [`parse_utc_offset`]; anything
/// else falls back to UTC rather than panicking).
fn zone(offset_s: i64) -> FixedOffset {
    i32::try_from(offset_s).ok().and_then(FixedOffset::east_opt).unwrap_or(FixedOffset::east_opt(0).expect("UTC"))
}

/// An instant in a zone; out of chrono's range (±262,000 years) clamps to the epoch.
fn local(ms: i64, offset_s: i64) -> DateTime<FixedOffset> {
    zone(offset_s).timestamp_millis_opt(ms).single().unwrap_or_else(|| zone(offset_s).timestamp_millis_opt(0).unwrap())
}

/// The first instant of a local date, in milliseconds since the epoch.
fn start_of(date: NaiveDate, offset_s: i64) -> i64 {
    date.and_time(NaiveTime::MIN).and_utc().timestamp_millis() - offset_s * 1000
}

/// A calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    pub year: i64,
    pub month: u32,
}

impl Month {
    /// `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Self> {
        let (y, m) = s.trim().split_once('-')?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (year, month) = (y.parse().ok()?, m.parse().ok()?);
        (1..=12).contains(&month).then_some(Self { year, month })
    }

    pub fn next(self) -> Self {
        if self.month == 12 { Self { year: self.year + 1, month: 1 } } else { Self { month: self.month + 1, ..self } }
    }

    pub fn year_before(self) -> Self {
        Self { year: self.year - 1, ..self }
    }

    /// `YYYY-MM-01`, the first day as the activity table writes days.
    pub fn first_day(self) -> String {
        format!("{:04}-{:02}-01", self.year, self.month)
    }

    /// Milliseconds since the epoch at the start of the month, in the given offset.
    pub fn start_ms(self, offset_s: i64) -> i64 {
        let first = i32::try_from(self.year).ok().and_then(|y| NaiveDate::from_ymd_opt(y, self.month, 1));
        first.map_or(0, |d| start_of(d, offset_s))
    }

    /// `[start, end)` in milliseconds.
    pub fn range_ms(self, offset_s: i64) -> (i64, i64) {
        (self.start_ms(offset_s), self.next().start_ms(offset_s))
    }

    /// The month containing an instant, in the given offset.
    pub fn of_ms(ms: i64, offset_s: i64) -> Self {
        let d = local(ms, offset_s);
        Self { year: i64::from(d.year()), month: d.month() }
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The local date (`YYYY-MM-DD`) of an instant.
pub fn day_of_ms(ms: i64, offset_s: i64) -> String {
    local(ms, offset_s).format("%Y-%m-%d").to_string()
}

/// `2026-11-05T09:30:00+09:00` for an instant.
pub fn format_ms(ms: i64, offset_s: i64) -> String {
    local(ms, offset_s).format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Which end of a date-only value a time stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayEdge {
    /// A date means its first instant (`since`, `before`).
    Start,
    /// A date means the day through its end, i.e. the next day's start (`until`).
    End,
}

/// An instant given as milliseconds since the epoch, a date `YYYY-MM-DD` (in the
/// offset; `edge` says which end of the day), or a time `YYYY-MM-DDTHH:MM[:SS]` with an
/// optional `Z` or `±HH:MM` (else in the offset).
pub fn parse_instant(s: &str, offset_s: i64, edge: DayEdge) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.len() > 10 {
        return s.parse().ok();
    }
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    // Four-digit years and two-digit months and days only: chrono alone would take `2026-1-5`.
    let bytes = date.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let Some(time) = time else {
        let extra = if edge == DayEdge::End { DAY_MS } else { 0 };
        return Some(start_of(day, offset_s) + extra);
    };
    let (clock, zone) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        (&time[..i], parse_utc_offset(&time[i..])?)
    } else {
        (time, offset_s)
    };
    let clock =
        NaiveTime::parse_from_str(clock, "%H:%M:%S").or_else(|_| NaiveTime::parse_from_str(clock, "%H:%M")).ok()?;
    Some(NaiveDateTime::new(day, clock).and_utc().timestamp_millis() - zone * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_in_an_offset() {
        let jst = 9 * 3600;
        let m = Month::parse("2026-11").unwrap();
        assert_eq!(m.to_string(), "2026-11");
        // 2026-11-01T00:00+09:00 is 2026-10-31T15:00Z.
        assert_eq!(format_ms(m.start_ms(jst), 0), "2026-10-31T15:00:00+00:00");
        assert_eq!(format_ms(m.start_ms(jst), jst), "2026-11-01T00:00:00+09:00");
        assert_eq!(Month::parse("2026-12").unwrap().next(), Month::parse("2027-01").unwrap());
        assert_eq!(m.year_before().to_string(), "2025-11");
        assert_eq!(Month::of_ms(m.start_ms(jst), jst), m);
        assert_eq!(Month::of_ms(m.start_ms(jst) - 1, jst).to_string(), "2026-10");
        assert_eq!(m.first_day(), "2026-11-01");
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "", "2026-00"] {
            assert!(Month::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn instants() {
        let jst = 9 * 3600;
        let d = parse_instant("2026-11-05", jst, DayEdge::Start).unwrap();
        assert_eq!(format_ms(d, jst), "2026-11-05T00:00:00+09:00");
        let e = parse_instant("2026-11-05", jst, DayEdge::End).unwrap();
        assert_eq!(e - d, DAY_MS);
        let t = parse_instant("2026-11-05T09:30", jst, DayEdge::Start).unwrap();
        assert_eq!(format_ms(t, jst), "2026-11-05T09:30:00+09:00");
        let z = parse_instant("2026-11-05T00:30:00Z", jst, DayEdge::Start).unwrap();
        assert_eq!(format_ms(z, jst), "2026-11-05T09:30:00+09:00");
        let o = parse_instant("2026-11-05T09:30:00+09:00", 0, DayEdge::Start).unwrap();
        assert_eq!(o, z);
        assert_eq!(parse_instant("1762300000000", jst, DayEdge::Start), Some(1_762_300_000_000));
        assert_eq!(day_of_ms(z, jst), "2026-11-05");
        assert_eq!(day_of_ms(z, 0), "2026-11-05");
        for bad in ["2026-02-30", "2026-11-05T25:00", "yesterday", "2026-11", "2026-11-05T09"] {
            assert!(parse_instant(bad, jst, DayEdge::Start).is_none(), "{bad}");
        }
        assert_eq!(parse_utc_offset("+09:00"), Some(32400));
        assert_eq!(parse_utc_offset("-0330"), None);
        assert_eq!(parse_utc_offset("+5"), Some(18000));
        assert_eq!(parse_utc_offset("Z"), Some(0));
    }
}
