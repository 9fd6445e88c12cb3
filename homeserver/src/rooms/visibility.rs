//! Who may read what: history visibility and membership at the time of an event.

use ruma::{RoomId, UserId};
use serde_json::Value;

use super::StateMap;
use crate::{services::Services, storage::EventRow};
use kairan_core::error::{Error, Result};

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
