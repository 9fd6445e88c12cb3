//! Dates of the admin API: months, days and times in the configured UTC offset
//! (`admin.utc_offset`), without a calendar library (proleptic Gregorian arithmetic).

const DAY_MS: i64 = 86_400_000;

/// `"+09:00"`, `"-03:30"`, `"Z"` → seconds east of UTC.
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

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
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
        days_from_civil(self.year, self.month, 1) * DAY_MS - offset_s * 1000
    }

    /// `[start, end)` in milliseconds.
    pub fn range_ms(self, offset_s: i64) -> (i64, i64) {
        (self.start_ms(offset_s), self.next().start_ms(offset_s))
    }

    /// The month containing an instant, in the given offset.
    pub fn of_ms(ms: i64, offset_s: i64) -> Self {
        let (year, month, _) = civil_from_days((ms + offset_s * 1000).div_euclid(DAY_MS));
        Self { year, month }
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The local date (`YYYY-MM-DD`) of an instant.
pub fn day_of_ms(ms: i64, offset_s: i64) -> String {
    let (y, m, d) = civil_from_days((ms + offset_s * 1000).div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `2026-11-05T09:30:00+09:00` for an instant.
pub fn format_ms(ms: i64, offset_s: i64) -> String {
    let local = ms + offset_s * 1000;
    let (y, m, d) = civil_from_days(local.div_euclid(DAY_MS));
    let secs = local.rem_euclid(DAY_MS) / 1000;
    let sign = if offset_s < 0 { '-' } else { '+' };
    let off = offset_s.abs();
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        off / 3600,
        off / 60 % 60
    )
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
    let mut parts = date.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let day_ms = days_from_civil(y, m, d) * DAY_MS;
    let Some(time) = time else {
        let extra = if edge == DayEdge::End { DAY_MS } else { 0 };
        return Some(day_ms + extra - offset_s * 1000);
    };
    let (clock, zone) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        (&time[..i], parse_utc_offset(&time[i..])?)
    } else {
        (time, offset_s)
    };
    let mut hms = clock.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next()?.parse().ok()?;
    let sec: i64 = match hms.next() {
        Some(x) => x.parse().ok()?,
        None => 0,
    };
    if hms.next().is_some() || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    Some(day_ms + (h * 3600 + mi * 60 + sec) * 1000 - zone * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        for z in [-800_000, -1, 0, 1, 10_957, 20_000, 60_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

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
