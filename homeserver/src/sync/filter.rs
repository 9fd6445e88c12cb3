//! The parts of a sync filter that kairan applies.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub room: RoomFilter,
    pub account_data: EventFilter,
    pub presence: EventFilter,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoomFilter {
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub include_leave: bool,
    pub timeline: RoomEventFilter,
    pub state: RoomEventFilter,
    pub ephemeral: RoomEventFilter,
    pub account_data: RoomEventFilter,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EventFilter {
    pub limit: Option<u64>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoomEventFilter {
    pub limit: Option<u64>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
    pub contains_url: Option<bool>,
    /// Count notifications per thread (`unread_thread_notifications` in /sync).
    pub unread_thread_notifications: bool,
}

/// `*` at the end of a filter type matches any suffix, as the spec allows.
fn type_matches(pattern: &str, t: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => t.starts_with(prefix),
        None => pattern == t,
    }
}

impl RoomFilter {
    pub fn allows_room(&self, room_id: &str) -> bool {
        self.rooms.as_ref().is_none_or(|r| r.iter().any(|x| x == room_id))
            && !self.not_rooms.iter().any(|x| x == room_id)
    }
}

impl RoomEventFilter {
    /// Whether an event in client format passes the filter.
    pub fn allows(&self, event: &Value) -> bool {
        let t = event.get("type").and_then(Value::as_str).unwrap_or("");
        let sender = event.get("sender").and_then(Value::as_str).unwrap_or("");
        let room = event.get("room_id").and_then(Value::as_str).unwrap_or("");
        if self.not_types.iter().any(|p| type_matches(p, t)) {
            return false;
        }
        if let Some(types) = &self.types
            && !types.iter().any(|p| type_matches(p, t))
        {
            return false;
        }
        if self.not_senders.iter().any(|s| s == sender)
            || self.senders.as_ref().is_some_and(|s| !s.iter().any(|x| x == sender))
        {
            return false;
        }
        if self.not_rooms.iter().any(|r| r == room) || self.rooms.as_ref().is_some_and(|r| !r.iter().any(|x| x == room))
        {
            return false;
        }
        if let Some(want) = self.contains_url {
            let has = event.get("content").and_then(|c| c.get("url")).is_some();
            if has != want {
                return false;
            }
        }
        true
    }
}

impl EventFilter {
    pub fn allows_type(&self, t: &str) -> bool {
        !self.not_types.iter().any(|p| type_matches(p, t))
            && self.types.as_ref().is_none_or(|ts| ts.iter().any(|p| type_matches(p, t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_senders_and_wildcards() {
        let f: RoomEventFilter = serde_json::from_value(json!({
            "types": ["m.room.*"], "not_types": ["m.room.member"], "not_senders": ["@spam:x"]
        }))
        .unwrap();
        assert!(f.allows(&json!({"type": "m.room.message", "sender": "@a:x"})));
        assert!(!f.allows(&json!({"type": "m.room.member", "sender": "@a:x"})));
        assert!(!f.allows(&json!({"type": "m.reaction", "sender": "@a:x"})));
        assert!(!f.allows(&json!({"type": "m.room.message", "sender": "@spam:x"})));
    }
}
