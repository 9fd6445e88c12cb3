//! Rooms as administrators manage them: listing, inspection, shutting down, purging
//! history. The room policy is room_policy.rs; the archive account's guard archive_guard.rs.

use std::collections::BTreeSet;

use kairan_types::room_policy::{self};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Serialize;
use serde_json::{Value, json};

use super::room_policy::policy_json;
use crate::{
    rooms::{ClientEventOptions, MembershipAction},
    services::Services,
    storage::AdminRoomRow,
};
use kairan_core::{
    error::{Error, Result},
    time::now_ms,
};

/// What a shutdown did.
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownOutcome {
    pub room_id: OwnedRoomId,
    pub evacuated: Vec<String>,
    pub failed: Vec<Value>,
    pub blocked: bool,
}

impl Services {
    /// A room named by ID or alias, which this server must know.
    pub async fn admin_target_room(&self, room: &str) -> Result<OwnedRoomId> {
        let room_id = self.resolve_room(room.trim()).await?;
        if self.store.room_version(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found(format!("no room {room_id} on this server")));
        }
        Ok(room_id)
    }

    /// The content of a current state event.
    pub async fn state_content(&self, room_id: &RoomId, event_type: &str, state_key: &str) -> Result<Option<Value>> {
        let Some(id) = self.store.current_state_event(room_id.as_str(), event_type, state_key).await? else {
            return Ok(None);
        };
        Ok(self.pdu(&id).await?.map(|p| p.content_value()))
    }

    pub(crate) async fn room_name(&self, room_id: &str) -> Result<Option<String>> {
        let Ok(room_id) = OwnedRoomId::try_from(room_id) else { return Ok(None) };
        Ok(self
            .state_content(&room_id, "m.room.name", "")
            .await?
            .and_then(|c| c["name"].as_str().map(str::to_owned))
            .filter(|n| !n.is_empty()))
    }

    /// A page of rooms (after the room ID `from`), or every room matching `search` in its
    /// ID, name or aliases. Returns the rooms, the total, and the cursor of the next page.
    pub async fn admin_list_rooms(
        &self,
        from: Option<&str>,
        limit: i64,
        search: Option<&str>,
    ) -> Result<(Vec<Value>, i64, Option<String>)> {
        let mut out = Vec::new();
        let mut after = from.map(str::to_owned);
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let mut total;
        loop {
            let (rows, all) =
                self.store.admin_rooms(after.as_deref(), if needle.is_some() { 500 } else { limit }).await?;
            total = all;
            let done = rows.len() < if needle.is_some() { 500 } else { limit as usize };
            after = rows.last().map(|r| r.room_id.clone());
            for row in rows {
                let name = self.room_name(&row.room_id).await?;
                let aliases = self.store.room_aliases(&row.room_id).await?;
                if let Some(n) = &needle {
                    let hit = row.room_id.to_lowercase().contains(n)
                        || name.as_deref().is_some_and(|x| x.to_lowercase().contains(n))
                        || aliases.iter().any(|a| a.to_lowercase().contains(n));
                    if !hit {
                        continue;
                    }
                }
                out.push(room_json(&row, name, aliases));
                if out.len() as i64 >= limit {
                    break;
                }
            }
            if needle.is_none() || done || out.len() as i64 >= limit {
                break;
            }
        }
        if needle.is_some() {
            total = out.len() as i64;
        }
        let next = if out.len() as i64 >= limit {
            out.last().and_then(|r| r["room_id"].as_str()).map(str::to_owned)
        } else {
            None
        };
        Ok((out, total, next))
    }

    /// Everything about a room: summary, current state, members, servers, policy.
    pub async fn admin_room_details(&self, caller: &UserId, room_id: &RoomId) -> Result<Value> {
        let version = self.store.room_version(room_id.as_str()).await?.unwrap_or_default();
        let state = self.store.current_state(room_id.as_str()).await?;
        let opts = ClientEventOptions { viewer: caller, device_id: None, bundle_relations: false };
        let events = self.client_state_events(state.values(), opts).await?;
        let members = self.store.members(room_id.as_str()).await?;
        let mut servers = BTreeSet::new();
        let mut member_list = Vec::new();
        for (user, membership, _) in &members {
            if membership == "join"
                && let Some((_, server)) = user.split_once(':')
            {
                servers.insert(server.to_owned());
            }
            member_list.push(json!({ "user_id": user, "membership": membership }));
        }
        let joined = members.iter().filter(|m| m.1 == "join").count();
        let policy = self.store.room_policy(room_id.as_str()).await?;
        let published = self.state_content(room_id, room_policy::EVENT_TYPE, "").await?;
        let creator = match self.store.current_state_event(room_id.as_str(), "m.room.create", "").await? {
            Some(id) => self.pdu(&id).await?.map(|p| p.sender.to_string()),
            None => None,
        };
        Ok(json!({
            "room_id": room_id,
            "room_version": version,
            "creator": creator,
            "name": self.room_name(room_id.as_str()).await?,
            "topic": self.state_content(room_id, "m.room.topic", "").await?.and_then(|c| c["topic"].as_str().map(str::to_owned)),
            "canonical_alias": self.state_content(room_id, "m.room.canonical_alias", "").await?.and_then(|c| c["alias"].as_str().map(str::to_owned)),
            "aliases": self.store.room_aliases(room_id.as_str()).await?,
            "public": self.store.is_room_public(room_id.as_str()).await?,
            "encrypted": state.contains_key(&("m.room.encryption".to_owned(), String::new())),
            "joined_members": joined,
            "members": member_list,
            "servers": servers,
            "blocked": self.store.is_room_blocked(room_id.as_str()).await?,
            "policy": policy.as_ref().map(|p| policy_json(p, self.config.admin.utc_offset_seconds())),
            "published_policy": published,
            "state": events,
        }))
    }

    /// Shuts a room down: every local member leaves (evacuate) and joins are refused
    /// from now on (block); a blocked room also leaves the public directory.
    pub async fn admin_shutdown_room(
        &self,
        caller: &UserId,
        room_id: &RoomId,
        evacuate: bool,
        block: bool,
        reason: Option<String>,
    ) -> Result<ShutdownOutcome> {
        let mut outcome =
            ShutdownOutcome { room_id: room_id.to_owned(), evacuated: Vec::new(), failed: Vec::new(), blocked: false };
        if block {
            self.store.block_room(room_id.as_str(), caller.as_str(), reason.as_deref(), now_ms()).await?;
            self.store.set_room_public(room_id.as_str(), false).await?;
            outcome.blocked = true;
        }
        if evacuate {
            let reason = reason.clone().unwrap_or_else(|| "the room was shut down by an administrator".to_owned());
            for (user, membership, _) in self.store.members(room_id.as_str()).await? {
                if !matches!(membership.as_str(), "join" | "invite" | "knock") {
                    continue;
                }
                let Ok(user_id) = OwnedUserId::try_from(user.as_str()) else { continue };
                if !self.is_local(&user_id) {
                    continue;
                }
                match self
                    .change_membership(
                        room_id,
                        &user_id,
                        &user_id,
                        MembershipAction::Leave,
                        Some(reason.clone()),
                        false,
                    )
                    .await
                {
                    Ok(()) => outcome.evacuated.push(user),
                    Err(e) => outcome.failed.push(json!({ "user_id": user, "errcode": e.errcode, "error": e.message })),
                }
            }
        }
        tracing::warn!(%room_id, by = %caller, evacuate, block, "room shut down");
        Ok(outcome)
    }

    /// Deletes the message history of a room before an instant, unless it is official.
    pub async fn admin_purge_history(&self, room_id: &RoomId, before_ts: i64) -> Result<u64> {
        if let Some(p) = self.store.room_policy(room_id.as_str()).await?
            && p.official
        {
            return Err(Error::forbidden(format!(
                "{room_id} is an official record (retention {}); its history cannot be purged",
                p.retention.as_deref().unwrap_or("?")
            )));
        }
        if before_ts > now_ms() {
            return Err(Error::invalid_param("the purge date is in the future"));
        }
        let n = self.store.purge_history(room_id.as_str(), before_ts).await?;
        tracing::warn!(%room_id, before_ts, deleted = n, "room history purged");
        Ok(n)
    }
}

fn room_json(row: &AdminRoomRow, name: Option<String>, aliases: Vec<String>) -> Value {
    json!({
        "room_id": row.room_id,
        "name": name,
        "aliases": aliases,
        "room_version": row.room_version,
        "creator": row.creator,
        "public": row.is_public,
        "created_ts": row.created_ts,
        "joined_members": row.joined_members,
        "official": row.official,
        "blocked": row.blocked,
    })
}
