//! Who may read what: history visibility and membership at the time of an event.

use ruma::{RoomId, UserId};
use serde_json::Value;

use super::StateMap;
use crate::{
    error::{Error, Result},
    services::Services,
    storage::EventRow,
};

impl Services {
    /// Whether `user` may see `row`, by the room's history visibility at that event.
    pub async fn can_see_event(&self, user: &UserId, row: &EventRow) -> Result<bool> {
        let state = self.state_at_group(row.state_group).await?;
        let at_event = self.membership_in(&state, user).await?;
        let visibility = match state.get(&("m.room.history_visibility".to_owned(), String::new())) {
            Some(id) => self
                .pdu(id)
                .await?
                .and_then(|p| p.content_value().get("history_visibility").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "shared".to_owned()),
            None => "shared".to_owned(),
        };
        Ok(match visibility.as_str() {
            "world_readable" => true,
            "invited" => matches!(at_event.as_deref(), Some("join" | "invite")),
            "joined" => at_event.as_deref() == Some("join"),
            _ => {
                at_event.as_deref() == Some("join")
                    || self.store.membership(&row.room_id, user.as_str()).await?.as_deref() == Some("join")
            }
        })
    }

    /// The events of `rows` the user may see, in their order.
    pub async fn visible_events(&self, user: &UserId, rows: Vec<EventRow>) -> Result<Vec<EventRow>> {
        let mut visible = Vec::with_capacity(rows.len());
        for row in rows {
            if self.can_see_event(user, &row).await? {
                visible.push(row);
            }
        }
        Ok(visible)
    }

    /// The user's membership in the state after `row` (`None`: never a member by then).
    pub async fn membership_at(&self, row: &EventRow, user: &UserId) -> Result<Option<String>> {
        let state = self.state_at_group(row.state_group).await?;
        self.membership_in(&state, user).await
    }

    /// A user's membership in a state map.
    pub(super) async fn membership_in(&self, state: &StateMap, user: &UserId) -> Result<Option<String>> {
        let Some(id) = state.get(&("m.room.member".to_owned(), user.to_string())) else { return Ok(None) };
        Ok(self
            .pdu(id)
            .await?
            .and_then(|p| p.content_value().get("membership").and_then(Value::as_str).map(str::to_owned)))
    }

    /// The room state a user may read: current state while joined, the state when they
    /// left otherwise. Returns the state map and, if they left, the stream position of it.
    /// A `world_readable` room is read by anyone as if joined (room previews, peeking).
    pub async fn readable_state(&self, room_id: &RoomId, user: &UserId) -> Result<(StateMap, Option<i64>)> {
        let membership = self.store.membership(room_id.as_str(), user.as_str()).await?;
        if membership.as_deref() == Some("join") || self.is_world_readable(room_id).await? {
            return Ok((self.store.current_state(room_id.as_str()).await?, None));
        }
        match membership.as_deref() {
            Some("leave" | "ban") => {
                let id = self
                    .store
                    .current_state_event(room_id.as_str(), "m.room.member", user.as_str())
                    .await?
                    .ok_or_else(|| Error::forbidden("not in room"))?;
                let row = self.store.event(&id).await?.ok_or_else(|| Error::forbidden("not in room"))?;
                let state = self.state_at_group(row.state_group_before).await?;
                // Someone who never joined (e.g. an invite they rejected) sees nothing.
                if self.membership_in(&state, user).await?.as_deref() != Some("join") {
                    return Err(Error::forbidden(format!("you are not a member of {room_id}")));
                }
                Ok(((*self.state_at_group(row.state_group).await?).clone(), Some(row.stream_ordering)))
            }
            _ => Err(Error::forbidden(format!("you are not a member of {room_id}"))),
        }
    }

    /// Whether the room's current history visibility is `world_readable`.
    pub async fn is_world_readable(&self, room_id: &RoomId) -> Result<bool> {
        let Some(id) = self.store.current_state_event(room_id.as_str(), "m.room.history_visibility", "").await? else {
            return Ok(false);
        };
        Ok(self.pdu(&id).await?.is_some_and(|p| {
            p.content_value().get("history_visibility").and_then(Value::as_str) == Some("world_readable")
        }))
    }

    /// Fails with `M_FORBIDDEN` unless the user is joined to the room or it is
    /// `world_readable`: what reading a room's members or state requires.
    pub async fn require_joined_or_world_readable(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        if self.is_world_readable(room_id).await? { Ok(()) } else { self.require_joined(room_id, user).await }
    }

    /// Fails with `M_FORBIDDEN` unless the user is joined to the room.
    pub async fn require_joined(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        if self.store.membership(room_id.as_str(), user.as_str()).await?.as_deref() == Some("join") {
            Ok(())
        } else {
            Err(Error::forbidden(format!("you are not joined to {room_id}")))
        }
    }
}

impl Services {
    /// Fails unless the user's power level reaches what sending a state event of
    /// `event_type` requires: the rule Synapse applies to directory changes.
    pub async fn require_power(&self, room_id: &RoomId, user: &UserId, event_type: &str) -> Result<()> {
        let levels = self.power_levels_content(room_id).await?;
        let needed = level(&levels["events"][event_type]).or_else(|| level(&levels["state_default"])).unwrap_or(50);
        self.require_level(room_id, user, &levels, needed).await
    }

    async fn power_levels_content(&self, room_id: &RoomId) -> Result<Value> {
        let Some(id) = self.store.current_state_event(room_id.as_str(), "m.room.power_levels", "").await? else {
            return Ok(Value::Null);
        };
        Ok(self.pdu(&id).await?.map(|p| p.content_value()).unwrap_or(Value::Null))
    }

    async fn require_level(&self, room_id: &RoomId, user: &UserId, levels: &Value, needed: i64) -> Result<()> {
        // Without a power levels event the creator has 100 and everyone else 0.
        let mine = match levels {
            Value::Null => 0,
            _ => level(&levels["users"][user.as_str()]).or_else(|| level(&levels["users_default"])).unwrap_or(0),
        };
        // Room v12 creators hold unlimited power.
        if mine >= needed || self.is_room_creator_v12(room_id, user).await? {
            Ok(())
        } else {
            Err(Error::forbidden(format!("your power level {mine} is below the {needed} needed")))
        }
    }

    async fn is_room_creator_v12(&self, room_id: &RoomId, user: &UserId) -> Result<bool> {
        let version = self.store.room_version(room_id.as_str()).await?.unwrap_or_default();
        if !super::version_rules(&version).is_some_and(|r| r.authorization.explicitly_privilege_room_creators) {
            return Ok(false);
        }
        let Some(id) = self.store.current_state_event(room_id.as_str(), "m.room.create", "").await? else {
            return Ok(false);
        };
        let Some(create) = self.pdu(&id).await? else { return Ok(false) };
        let extra = create.content_value()["additional_creators"].as_array().cloned().unwrap_or_default();
        Ok(create.sender == user || extra.iter().any(|u| u == user.as_str()))
    }
}

/// A power level as the spec allows it: an integer, or (in old rooms) a string of one.
fn level(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}
