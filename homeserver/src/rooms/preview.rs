//! What a room shows of itself to someone deciding whether to join it: the room summary
//! (`/room_summary`, MSC3266 / spec v1.15) and the space hierarchy's entries.

use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use crate::services::Services;
use kairan_core::error::Result;

/// Join rules under which a room shows itself to anyone, who may then join or knock (or,
/// restricted, join from an allowed room).
const OPEN_JOIN_RULES: [&str; 4] = ["public", "knock", "restricted", "knock_restricted"];

impl Services {
    /// The public summary of a room this server is in, if `user` may see it: a member,
    /// someone invited or knocking, or anyone when the room is world-readable or its join
    /// rule lets strangers in (`OPEN_JOIN_RULES`). With a user, `membership` says theirs
    /// (`leave` when they have none), as the room summary endpoint answers.
    pub async fn room_preview(&self, room_id: &RoomId, user: Option<&UserId>) -> Result<Option<Value>> {
        let Some(mut entry) = self.room_summary_of(room_id).await? else { return Ok(None) };
        let membership = match user {
            Some(user) => self.store.membership(room_id.as_str(), user.as_str()).await?,
            None => None,
        };
        let known = matches!(membership.as_deref(), Some("join" | "invite" | "knock"));
        let open = entry["join_rule"].as_str().is_some_and(|r| OPEN_JOIN_RULES.contains(&r));
        if !known && !open && entry["world_readable"] != true {
            return Ok(None);
        }
        if user.is_some() {
            entry["membership"] = membership.unwrap_or_else(|| "leave".to_owned()).into();
        }
        Ok(Some(entry))
    }

    /// A room's summary as anyone allowed to see it sees it (the public room directory's
    /// entries too): `None` for a room this server is not in.
    pub async fn room_summary_of(&self, room_id: &RoomId) -> Result<Option<Value>> {
        let Some(version) = self.store.room_version(room_id.as_str()).await? else { return Ok(None) };
        let current = self.store.current_state(room_id.as_str()).await?;
        let content = |t: &str| {
            let id = current.get(&(t.to_owned(), String::new())).cloned();
            async move {
                match id {
                    Some(id) => Ok::<_, kairan_core::error::Error>(self.pdu(&id).await?.map(|p| p.content_value())),
                    None => Ok(None),
                }
            }
        };
        let join_rule = content("m.room.join_rules").await?.and_then(|c| c["join_rule"].as_str().map(str::to_owned));
        let visibility = content("m.room.history_visibility")
            .await?
            .and_then(|c| c["history_visibility"].as_str().map(str::to_owned));
        let mut entry = json!({
            "room_id": room_id,
            "room_version": version,
            "num_joined_members": self.store.joined_member_count(room_id.as_str()).await?,
            "world_readable": visibility.as_deref() == Some("world_readable"),
            "guest_can_join": false,
            "join_rule": join_rule.unwrap_or_else(|| "invite".to_owned()),
        });
        for (event_type, field, out) in [
            ("m.room.name", "name", "name"),
            ("m.room.topic", "topic", "topic"),
            ("m.room.canonical_alias", "alias", "canonical_alias"),
            ("m.room.avatar", "url", "avatar_url"),
            ("m.room.create", "type", "room_type"),
            ("m.room.encryption", "algorithm", "encryption"),
        ] {
            if let Some(value) =
                content(event_type).await?.and_then(|c| c.get(field).filter(|v| v.is_string()).cloned())
            {
                entry[out] = value;
            }
        }
        Ok(Some(entry))
    }
}
