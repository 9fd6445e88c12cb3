//! Utilisation figures for the assembly: for a month (in `admin.utc_offset`), the
//! accounts, the active users and their share, the messages sent, by department and by
//! room, beside the same month a year before.
//!
//! - accounts: local accounts that existed during the month (created before its end,
//!   not deactivated before its start);
//! - active users: those of them who synced on a day of the month or sent an event in it
//!   (sync days are recorded per user per day by the sync handlers);
//! - messages: `m.room.message` and `m.room.encrypted` events sent by local accounts in
//!   the month, by `origin_server_ts` (purged history is no longer counted).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::{Value, json};

use crate::services::Services;
use kairan_core::error::Result;
use kairan_core::time::{Month, format_ms};

/// The figures of one group (the server, or one department).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub accounts: i64,
    pub active_users: i64,
    /// `active_users / accounts`, 0 without accounts.
    pub active_share: f64,
    pub messages: i64,
}

impl Counts {
    fn finish(&mut self) {
        self.active_share = if self.accounts == 0 { 0.0 } else { self.active_users as f64 / self.accounts as f64 };
    }
}

/// The figures of one month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthFigures {
    pub month: String,
    pub start: String,
    pub end: String,
    #[serde(flatten)]
    pub total: Counts,
    /// By the department of the account (`null`: none recorded).
    pub by_department: Vec<DepartmentFigures>,
    /// Messages by room, most first.
    pub by_room: Vec<RoomFigures>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DepartmentFigures {
    pub department: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomFigures {
    pub room_id: String,
    pub name: Option<String>,
    pub messages: i64,
}

fn growth(now: i64, before: i64) -> Value {
    if before == 0 { Value::Null } else { json!((now - before) as f64 / before as f64) }
}

impl Services {
    /// The figures of a month.
    pub async fn month_figures(&self, month: Month) -> Result<MonthFigures> {
        let offset = self.config.admin.utc_offset_seconds();
        let (start, end) = month.range_ms(offset);
        let accounts = self.store.accounts_during(start, end).await?;
        let existing: HashSet<&str> = accounts.iter().map(|(u, _)| u.as_str()).collect();
        let active = self.store.active_users(&month.first_day(), &month.next().first_day(), start, end).await?;
        let messages = self.store.message_counts(start, end).await?;

        let mut total = Counts::default();
        let mut departments: BTreeMap<Option<String>, Counts> = BTreeMap::new();
        for (_, dept) in &accounts {
            total.accounts += 1;
            departments.entry(dept.clone()).or_default().accounts += 1;
        }
        for (user, dept) in &active {
            if existing.contains(user.as_str()) {
                total.active_users += 1;
                departments.entry(dept.clone()).or_default().active_users += 1;
            }
        }
        let mut rooms: BTreeMap<String, i64> = BTreeMap::new();
        for (room, dept, n) in &messages {
            total.messages += n;
            departments.entry(dept.clone()).or_default().messages += n;
            *rooms.entry(room.clone()).or_default() += n;
        }
        total.finish();
        let by_department = departments
            .into_iter()
            .map(|(department, mut counts)| {
                counts.finish();
                DepartmentFigures { department, counts }
            })
            .collect();
        let mut by_room = Vec::with_capacity(rooms.len());
        for (room_id, messages) in rooms {
            let name = self.room_name(&room_id).await?;
            by_room.push(RoomFigures { room_id, name, messages });
        }
        by_room.sort_by(|a, b| b.messages.cmp(&a.messages).then_with(|| a.room_id.cmp(&b.room_id)));
        Ok(MonthFigures {
            month: month.to_string(),
            start: format_ms(start, offset),
            end: format_ms(end, offset),
            total,
            by_department,
            by_room,
        })
    }

    /// The figures of a month and of the same month a year before, with the growth.
    pub async fn figures_report(&self, month: Month) -> Result<Value> {
        let now = self.month_figures(month).await?;
        let before = self.month_figures(month.year_before()).await?;
        let mut report = serde_json::to_value(&now).unwrap_or_default();
        report["utc_offset"] = self.config.admin.utc_offset.clone().into();
        report["growth"] = json!({
            "accounts": growth(now.total.accounts, before.total.accounts),
            "active_users": growth(now.total.active_users, before.total.active_users),
            "messages": growth(now.total.messages, before.total.messages),
        });
        report["year_before"] = serde_json::to_value(&before).unwrap_or_default();
        Ok(report)
    }
}

/// A CSV field, quoted when it must be.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// The report as CSV: one row per scope (server, department, room) and month, then the
/// growth on the year before.
pub fn figures_csv(report: &Value) -> String {
    let mut out = String::from("scope,month,key,name,accounts,active_users,active_share,messages\n");
    let num = |v: &Value| match v {
        Value::Null => String::new(),
        v => v.to_string(),
    };
    for m in [report, &report["year_before"]] {
        let month = m["month"].as_str().unwrap_or_default();
        let mut row = |scope: &str, key: &str, name: &str, v: &Value| {
            out.push_str(&format!(
                "{scope},{month},{},{},{},{},{},{}\n",
                csv_field(key),
                csv_field(name),
                num(&v["accounts"]),
                num(&v["active_users"]),
                num(&v["active_share"]),
                num(&v["messages"])
            ));
        };
        row("server", "", "", m);
        for d in m["by_department"].as_array().into_iter().flatten() {
            row("department", d["department"].as_str().unwrap_or(""), "", d);
        }
        for r in m["by_room"].as_array().into_iter().flatten() {
            row("room", r["room_id"].as_str().unwrap_or(""), r["name"].as_str().unwrap_or(""), r);
        }
    }
    let g = &report["growth"];
    out.push_str(&format!(
        "growth,{},{},,{},{},,{}\n",
        report["month"].as_str().unwrap_or_default(),
        report["year_before"]["month"].as_str().unwrap_or_default(),
        num(&g["accounts"]),
        num(&g["active_users"]),
        num(&g["messages"])
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_of_a_report() {
        let report = json!({
            "month": "2026-11", "accounts": 4, "active_users": 1, "active_share": 0.25, "messages": 3,
            "by_department": [{ "department": "総務課", "accounts": 4, "active_users": 1, "active_share": 0.25, "messages": 3 }],
            "by_room": [{ "room_id": "!a:x", "name": "Budget, 2026", "messages": 3 }],
            "year_before": { "month": "2025-11", "accounts": 2, "active_users": 0, "active_share": 0.0, "messages": 0,
                             "by_department": [], "by_room": [] },
            "growth": { "accounts": 1.0, "active_users": null, "messages": null },
        });
        let csv = figures_csv(&report);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "scope,month,key,name,accounts,active_users,active_share,messages");
        assert_eq!(lines[1], "server,2026-11,,,4,1,0.25,3");
        assert_eq!(lines[2], "department,2026-11,総務課,,4,1,0.25,3");
        assert_eq!(lines[3], "room,2026-11,!a:x,\"Budget, 2026\",,,,3");
        assert_eq!(lines[4], "server,2025-11,,,2,0,0.0,0");
        assert_eq!(lines[5], "growth,2026-11,2025-11,,1.0,,,");
        assert_eq!(growth(3, 0), Value::Null);
        assert_eq!(growth(3, 2), json!(0.5));
    }
}
