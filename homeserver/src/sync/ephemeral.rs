//! What a client says about itself that `/sync` hands on: receipts and read markers,
//! typing, presence. Each wakes the syncs it concerns and tells the other servers in the
//! room (receipts `m.read`, typing, presence) as EDUs.

use std::time::Duration;

use ruma::{RoomId, UserId};
use serde_json::json;

use crate::services::Services;
use kairan_core::{
    error::{Error, Result},
    notifier::Audience,
    time::now_ms,
};

/// The longest a client may say it is typing for.
const MAX_TYPING: Duration = Duration::from_secs(120);

/// A user's presence as another user may see it.
pub struct Presence {
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ago: Duration,
}

impl Services {
    /// Records a receipt of `rtype` (`m.read`, `m.read.private`, or the `m.fully_read`
    /// marker, which is account data) on an event of the room.
    pub async fn record_receipt(
        &self,
        room: &RoomId,
        user: &UserId,
        rtype: &str,
        event_id: &str,
        thread: &str,
    ) -> Result<()> {
        let row = self.store.event(event_id).await?.filter(|r| r.room_id == room.as_str());
        if row.is_none() {
            return Err(Error::not_found("event not found in this room"));
        }
        if rtype == "m.fully_read" {
            let content = json!({ "event_id": event_id }).to_string();
            let pos = self.store.put_account_data(user.as_str(), room.as_str(), "m.fully_read", &content).await?;
            self.notifier.advance(pos, Audience::user(user.as_str()));
        } else {
            let pos = self.store.put_receipt(room.as_str(), rtype, user.as_str(), thread, event_id, now_ms()).await?;
            self.notifier.advance(pos, Audience::room(room.as_str()));
            if rtype == "m.read" {
                self.send_receipt_edu(room, user, event_id, thread).await?;
            }
        }
        Ok(())
    }

    /// The user types in the room for `timeout` (at most two minutes), or stopped (`None`).
    pub async fn set_typing(&self, room: &RoomId, user: &UserId, timeout: Option<Duration>) -> Result<()> {
        let timeout = timeout.map(|t| t.min(MAX_TYPING));
        let serial = self.notifier.current().typing + 1;
        if self.typing.set(room.as_str(), user.as_str(), timeout, || serial) {
            self.notifier.bump_typing(vec![room.to_string()]);
            self.send_typing_edu(room, user, timeout.is_some()).await?;
        }
        Ok(())
    }

    /// Sets the user's presence, for the users sharing a room with them here and elsewhere.
    pub async fn set_presence(&self, user: &UserId, presence: &str, status_msg: Option<&str>) -> Result<()> {
        let pos = self.store.set_presence(user.as_str(), presence, status_msg, now_ms()).await?;
        self.advance_presence(user, pos).await?;
        self.send_presence_edu(user, presence, status_msg).await
    }

    /// `target`'s presence as `viewer` may see it: their own, or that of a user they share
    /// a room with.
    pub async fn presence_of(&self, viewer: &UserId, target: &UserId) -> Result<Presence> {
        if target != viewer
            && !self.store.users_sharing_rooms(viewer.as_str()).await?.iter().any(|u| u == target.as_str())
        {
            return Err(Error::forbidden("you do not share a room with this user"));
        }
        let (state, status_msg, last, _) =
            self.store.presence(target.as_str()).await?.ok_or_else(|| Error::not_found("no presence"))?;
        let ago = u64::try_from(now_ms() - last).unwrap_or(0);
        Ok(Presence { state, status_msg, last_active_ago: Duration::from_millis(ago) })
    }
}
