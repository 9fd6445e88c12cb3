//! Retention classes (保存期間), expiry dates and what happens on expiry, and JST times.
//!
//! A record's retention is fixed when it is archived, from the room's policy
//! (`jp.kairan.room.policy`), as Japanese records schedules require:
//!
//! - the period counts from the **1 April after the record was made** (翌年度の4月1日起算),
//!   so a message of 25 November 2026 in a `5y` room expires at the end of 31 March 2032;
//! - `under1y` (1年未満) records may be disposed of once their day is over (the department
//!   decides when; the bridge still requires a recorded disposal decision);
//! - `permanent` (永年) records never expire.

use chrono::{DateTime, Datelike as _, FixedOffset, NaiveDate, TimeZone as _, Utc};
use kairan_types::room_policy::RoomPolicy;

/// Japan Standard Time (UTC+9, no daylight saving).
pub fn jst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("a valid offset")
}

/// The retention a record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub class: Option<String>,
    /// The last day (JST) the record must be kept, `YYYY-MM-DD`; `None`: never expires.
    pub expires: Option<String>,
    pub on_expiry: Option<String>,
}

impl Retention {
    /// The retention of a record made at `made_ms` (ms since the epoch) under `policy`.
    /// Without a class (a room not, or not yet, official) the record is kept permanently
    /// until someone decides otherwise: nothing unclassified is ever disposed of.
    pub fn for_record(policy: &RoomPolicy, made_ms: i64) -> Self {
        let class = policy.retention.clone();
        let expires = class.as_deref().and_then(|c| expiry_date(c, made_ms)).map(|d| d.format("%Y-%m-%d").to_string());
        let on_expiry = if class.as_deref() == Some("permanent") { None } else { policy.on_expiry.clone() };
        Self { class, expires, on_expiry }
    }
}

/// The last day of retention for a record made at `made_ms` in class `class`.
pub fn expiry_date(class: &str, made_ms: i64) -> Option<NaiveDate> {
    let made = jst().timestamp_millis_opt(made_ms).single()?.date_naive();
    let years = match class {
        "under1y" => return Some(made),
        "1y" => 1,
        "3y" => 3,
        "5y" => 5,
        "10y" => 10,
        "30y" => 30,
        _ => return None,
    };
    // The fiscal year starts on 1 April; counting starts on the next 1 April.
    let start_year = if made.month() >= 4 { made.year() + 1 } else { made.year() };
    let end = NaiveDate::from_ymd_opt(start_year + years, 4, 1)?;
    end.pred_opt()
}

/// Today's date in JST.
pub fn today_jst() -> NaiveDate {
    Utc::now().with_timezone(&jst()).date_naive()
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| anyhow::anyhow!("{s:?} is not a date (YYYY-MM-DD)"))
}

/// The start of a JST day in ms since the epoch.
pub fn day_start_ms(date: NaiveDate) -> i64 {
    let dt = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    jst().from_local_datetime(&dt).single().expect("JST has no gaps").timestamp_millis()
}

/// A time in JST, `2026-11-25 16:30:05 JST`.
pub fn format_jst(ms: i64) -> String {
    match jst().timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S JST").to_string(),
        None => format!("{ms} ms"),
    }
}

/// A time as RFC 3339 in JST, for machine-readable output.
pub fn rfc3339_jst(ms: i64) -> String {
    let t: Option<DateTime<FixedOffset>> = jst().timestamp_millis_opt(ms).single();
    t.map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(date: &str, hms: (u32, u32, u32)) -> i64 {
        let d = parse_date(date).unwrap().and_hms_opt(hms.0, hms.1, hms.2).unwrap();
        jst().from_local_datetime(&d).single().unwrap().timestamp_millis()
    }

    #[test]
    fn expiry_counts_from_the_next_first_of_april() {
        let nov = ms("2026-11-25", (16, 0, 0));
        assert_eq!(expiry_date("5y", nov).unwrap().to_string(), "2032-03-31");
        assert_eq!(expiry_date("1y", nov).unwrap().to_string(), "2028-03-31");
        // January to March belong to the fiscal year that started the April before.
        let feb = ms("2027-02-10", (9, 0, 0));
        assert_eq!(expiry_date("1y", feb).unwrap().to_string(), "2028-03-31");
        // 1 April starts a new fiscal year.
        let april = ms("2027-04-01", (0, 0, 0));
        assert_eq!(expiry_date("3y", april).unwrap().to_string(), "2031-03-31");
        // The day is the JST day: 2027-03-31 23:30 JST is still March.
        let late = ms("2027-03-31", (23, 30, 0));
        assert_eq!(expiry_date("1y", late).unwrap().to_string(), "2028-03-31");
        assert_eq!(expiry_date("under1y", nov).unwrap().to_string(), "2026-11-25");
        assert_eq!(expiry_date("permanent", nov), None);
    }

    #[test]
    fn policy_from_content() {
        let p = RoomPolicy::from_content(&serde_json::json!({
            "official": true, "retention": "5y", "on_expiry": "dispose", "department": "総務課"
        }));
        assert!(p.official);
        let r = Retention::for_record(&p, ms("2026-11-25", (12, 0, 0)));
        assert_eq!(r.expires.as_deref(), Some("2032-03-31"));
        assert_eq!(r.on_expiry.as_deref(), Some("dispose"));
        let odd = RoomPolicy::from_content(&serde_json::json!({ "official": "yes", "retention": 5 }));
        assert_eq!(odd, RoomPolicy::default());
        let forever = RoomPolicy { retention: Some("permanent".into()), on_expiry: Some("dispose".into()), ..p };
        let r = Retention::for_record(&forever, 0);
        assert_eq!((r.expires, r.on_expiry), (None, None));
    }

    #[test]
    fn jst_formatting() {
        assert_eq!(format_jst(0), "1970-01-01 09:00:00 JST");
        assert_eq!(day_start_ms(parse_date("1970-01-02").unwrap()), 15 * 3600 * 1000);
    }
}
