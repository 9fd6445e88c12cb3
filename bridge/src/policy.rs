//! Which `jp.kairan.room.policy` events count: only those the policy account of a trusted
//! server sent, as a state event with an empty state key.

use kairan_types::room_policy::{self, RoomPolicy};
use serde_json::Value;

/// The localpart of the account a kairan homeserver sends room policy events from
/// (`@_kairan_policy:server`); kairan refuses that event type from every other sender.
pub const POLICY_LOCALPART: &str = "_kairan_policy";

/// Whether `sender` is the policy account of one of `policy_servers`: the administrators'
/// word, not that of any user of a trusted server (who could otherwise make their own room
/// "official").
pub fn is_policy_sender(policy_servers: &[String], sender: &str) -> bool {
    sender
        .strip_prefix('@')
        .and_then(|s| s.split_once(':'))
        .is_some_and(|(local, server)| local == POLICY_LOCALPART && policy_servers.iter().any(|s| s == server))
}

/// Whether `event` is the room's policy state event (whoever sent it).
pub fn is_policy_event(event: &Value) -> bool {
    event["type"] == room_policy::EVENT_TYPE && event["state_key"] == ""
}

/// The policy event among a room's current state events, if there is one.
pub fn policy_event(state: &[Value]) -> Option<&Value> {
    state.iter().find(|e| is_policy_event(e))
}

/// The policy an event sets, with its content as the JSON text the archive keeps.
pub fn read_policy(event: &Value) -> (RoomPolicy, String) {
    let content = event.get("content").cloned().unwrap_or(Value::Null);
    (RoomPolicy::from_content(&content), content.to_string())
}

/// The policy a room's archived row holds (`None` or unreadable: the default).
pub fn stored_policy(text: Option<&str>) -> RoomPolicy {
    text.and_then(|p| serde_json::from_str(p).ok()).map(|v: Value| RoomPolicy::from_content(&v)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_the_policy_account_of_a_trusted_server_counts() {
        let trusted = vec!["pref.example".to_owned()];
        assert!(is_policy_sender(&trusted, "@_kairan_policy:pref.example"));
        // Any other user of the trusted server (who could make their own room "official").
        assert!(!is_policy_sender(&trusted, "@alice:pref.example"));
        assert!(!is_policy_sender(&trusted, "@_kairan_policy:city.example"));
        assert!(!is_policy_sender(&trusted, "_kairan_policy:pref.example"));
        assert!(!is_policy_sender(&trusted, "@_kairan_policy:pref.example.evil"));
    }

    #[test]
    fn only_a_state_event_with_an_empty_key_is_the_policy() {
        let state = vec![
            json!({ "type": room_policy::EVENT_TYPE, "state_key": "other", "content": { "official": false } }),
            json!({ "type": "m.room.name", "state_key": "", "content": { "name": "x" } }),
            json!({ "type": room_policy::EVENT_TYPE, "state_key": "", "content": { "official": true } }),
        ];
        let event = policy_event(&state).expect("found");
        let (policy, text) = read_policy(event);
        assert!(policy.official);
        assert_eq!(stored_policy(Some(&text)), policy);
        assert_eq!(stored_policy(None), RoomPolicy::default());
        assert!(policy_event(&state[..2]).is_none());
    }
}
