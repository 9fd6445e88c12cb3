//! Ephemeral data units between servers: typing, read receipts and presence, both ways.
//! Device list updates and to-device messages go to `devices`.

use std::time::Duration;

use ruma::{OwnedServerName, RoomId, ServerName, UserId};
use serde_json::{Value, json};

use crate::services::Services;
use kairan_core::{error::Result, time::now_ms};

/// How long a remote typing notice lasts without a refresh (the spec leaves it to the
/// receiver; Synapse uses 30 s).
const REMOTE_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

impl Services {
    /// Applies one EDU of a transaction from `origin`. An EDU about a user of another
    /// server than `origin`, or about a room the user is not in, is ignored.
    pub async fn handle_edu(&self, origin: &ServerName, edu: &Value) -> Result<()> {
        let content = &edu["content"];
        match edu["edu_type"].as_str().unwrap_or_default() {
            "m.typing" => self.remote_typing(origin, content).await,
            "m.receipt" => self.remote_receipts(origin, content).await,
            "m.presence" => self.remote_presence(origin, content).await,
            t @ ("m.device_list_update" | "m.direct_to_device" | "m.signing_key_update") => {
                self.handle_device_edu(origin, t, content).await
            }
            other => {
                tracing::debug!(%origin, edu_type = other, "ignoring an EDU of an unknown type");
                Ok(())
            }
        }
    }

    async fn remote_member(&self, origin: &ServerName, room: Option<&str>, user: Option<&str>) -> Result<bool> {
        let (Some(room), Some(user)) = (room, user) else { return Ok(false) };
        let Ok(user) = UserId::parse(user) else { return Ok(false) };
        if user.server_name() != origin {
            return Ok(false);
        }
        let Ok(room_id) = ruma::RoomId::parse(room) else { return Ok(false) };
        if self.check_server_acl(&room_id, origin).await.is_err() {
            return Ok(false);
        }
        Ok(self.store.membership(room, user.as_str()).await?.as_deref() == Some("join"))
    }

    async fn remote_typing(&self, origin: &ServerName, c: &Value) -> Result<()> {
        let (room, user) = (c["room_id"].as_str(), c["user_id"].as_str());
        if !self.remote_member(origin, room, user).await? {
            return Ok(());
        }
        let (Some(room), Some(user)) = (room, user) else { return Ok(()) };
        let timeout = c["typing"].as_bool().unwrap_or(false).then_some(REMOTE_TYPING_TIMEOUT);
        let serial = self.notifier.current().typing + 1;
        if self.typing.set(room, user, timeout, || serial) {
            self.notifier.bump_typing(vec![room.to_owned()]);
        }
        Ok(())
    }

    async fn remote_receipts(&self, origin: &ServerName, c: &Value) -> Result<()> {
        let Some(rooms) = c.as_object() else { return Ok(()) };
        for (room, by_type) in rooms {
            for (receipt_type, by_user) in by_type.as_object().into_iter().flatten() {
                if receipt_type != "m.read" {
                    continue;
                }
                for (user, receipt) in by_user.as_object().into_iter().flatten() {
                    if !self.remote_member(origin, Some(room), Some(user)).await? {
                        continue;
                    }
                    let Some(event_id) = receipt["event_ids"].as_array().and_then(|a| a.last()).and_then(Value::as_str)
                    else {
                        continue;
                    };
                    let thread = receipt["data"]["thread_id"].as_str().unwrap_or("");
                    let ts = receipt["data"]["ts"].as_i64().unwrap_or_else(now_ms);
                    let pos = self.store.put_receipt(room, receipt_type, user, thread, event_id, ts).await?;
                    self.notifier.advance(pos, kairan_core::notifier::Audience::room(room));
                }
            }
        }
        Ok(())
    }

    async fn remote_presence(&self, origin: &ServerName, c: &Value) -> Result<()> {
        for update in c["push"].as_array().into_iter().flatten() {
            let Some(user) = update["user_id"].as_str().and_then(|u| UserId::parse(u).ok()) else { continue };
            if user.server_name() != origin {
                continue;
            }
            let presence = update["presence"].as_str().unwrap_or("offline");
            if !matches!(presence, "online" | "offline" | "unavailable") {
                continue;
            }
            // A day at most: a hostile value must not produce a nonsensical timestamp.
            let ago = update["last_active_ago"].as_i64().unwrap_or(0).clamp(0, 86_400_000);
            let pos =
                self.store.set_presence(user.as_str(), presence, update["status_msg"].as_str(), now_ms() - ago).await?;
            self.advance_presence(&user, pos).await?;
        }
        Ok(())
    }

    /// Tells the other servers of a room that a local user types (or stopped).
    pub async fn send_typing_edu(&self, room_id: &RoomId, user: &UserId, typing: bool) -> Result<()> {
        let servers = self.room_servers(room_id.as_str()).await?;
        let edu = json!({
            "edu_type": "m.typing",
            "content": { "room_id": room_id, "user_id": user, "typing": typing },
        });
        self.queue_edu(&servers, edu).await
    }

    /// Tells the other servers of a room about a local user's public read receipt.
    pub async fn send_receipt_edu(&self, room_id: &RoomId, user: &UserId, event_id: &str, thread: &str) -> Result<()> {
        let servers = self.room_servers(room_id.as_str()).await?;
        let mut data = json!({ "ts": now_ms() });
        if !thread.is_empty() {
            data["thread_id"] = thread.into();
        }
        let edu = json!({
            "edu_type": "m.receipt",
            "content": { room_id.as_str(): { "m.read": { user.as_str(): { "event_ids": [event_id], "data": data } } } },
        });
        self.queue_edu(&servers, edu).await
    }

    /// Tells every server sharing a room with a local user about their presence.
    pub async fn send_presence_edu(&self, user: &UserId, presence: &str, status_msg: Option<&str>) -> Result<()> {
        let mut servers: Vec<OwnedServerName> = Vec::new();
        for room in self.store.rooms_with_membership(user.as_str(), "join").await? {
            servers.extend(self.room_servers(&room).await?);
        }
        servers.sort();
        servers.dedup();
        let mut update = json!({ "user_id": user, "presence": presence, "last_active_ago": 0 });
        if let Some(m) = status_msg {
            update["status_msg"] = m.into();
        }
        self.queue_edu(&servers, json!({ "edu_type": "m.presence", "content": { "push": [update] } })).await
    }
}
