//! The room policy: whether a room is an official record (公文書), how long its records are
//! kept, what happens then, and who owns them. The homeserver's policy account publishes it
//! as the state event [`EVENT_TYPE`] (state key `""`); the records bridge archives official
//! rooms by it; the admin CLI sets it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The state event type of the policy.
pub const EVENT_TYPE: &str = "jp.kairan.room.policy";

/// The retention classes of official records (公文書の保存期間).
pub const RETENTION_CLASSES: [&str; 7] = ["under1y", "1y", "3y", "5y", "10y", "30y", "permanent"];

/// What happens to an official record when its retention ends: transfer to the archives
/// (移管) or disposal (廃棄).
pub const ON_EXPIRY: [&str; 2] = ["transfer", "dispose"];

/// A room's policy, as the admin API shows it and the state event carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomPolicy {
    #[serde(default)]
    pub official: bool,
    /// One of [`RETENTION_CLASSES`].
    #[serde(default)]
    pub retention: Option<String>,
    /// One of [`ON_EXPIRY`]; none for `permanent`.
    #[serde(default)]
    pub on_expiry: Option<String>,
    /// The owning department.
    #[serde(default)]
    pub department: Option<String>,
    /// `required` or `forbidden`; none: no rule.
    #[serde(default)]
    pub encryption: Option<String>,
    /// Servers allowed in the room (the `m.room.server_acl` allow list; `*` wildcards).
    #[serde(default)]
    pub allowed_servers: Option<Vec<String>>,
}

impl RoomPolicy {
    /// Reads the policy from the event content as a reader must take what a room holds:
    /// wrong types and unknown values count as absent.
    pub fn from_content(content: &Value) -> Self {
        let s = |k: &str| content.get(k).and_then(Value::as_str).map(str::to_owned);
        Self {
            official: content.get("official").and_then(Value::as_bool).unwrap_or(false),
            retention: s("retention").filter(|r| RETENTION_CLASSES.contains(&r.as_str())),
            on_expiry: s("on_expiry").filter(|o| ON_EXPIRY.contains(&o.as_str())),
            department: s("department"),
            encryption: s("encryption").filter(|e| e == "required" || e == "forbidden"),
            allowed_servers: content
                .get("allowed_servers")
                .and_then(Value::as_array)
                .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
        }
    }

    /// The content of the state event: what is set, nothing for what is not.
    pub fn to_content(&self) -> Value {
        let mut c = json!({ "official": self.official });
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                c[k] = v.clone().into();
            }
        };
        put("retention", &self.retention);
        put("on_expiry", &self.on_expiry);
        put("department", &self.department);
        put("encryption", &self.encryption);
        if let Some(s) = &self.allowed_servers {
            c["allowed_servers"] = json!(s);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_is_what_is_read() {
        let p = RoomPolicy {
            official: true,
            retention: Some("5y".into()),
            on_expiry: Some("transfer".into()),
            department: Some("総務課".into()),
            encryption: Some("required".into()),
            allowed_servers: Some(vec!["pref.example".into(), "*.city.example".into()]),
        };
        assert_eq!(RoomPolicy::from_content(&p.to_content()), p);
        let bare = RoomPolicy::default();
        assert_eq!(bare.to_content(), json!({ "official": false }));
        assert_eq!(RoomPolicy::from_content(&bare.to_content()), bare);
    }

    #[test]
    fn a_reader_drops_what_it_cannot_use() {
        let p = RoomPolicy::from_content(&json!({
            "official": "yes", "retention": "7y", "on_expiry": "burn", "department": 5, "encryption": "maybe",
        }));
        assert_eq!(p, RoomPolicy::default());
    }
}
