//! Joining, inviting, leaving, kicking, banning: membership events built for the user.

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use super::EventTemplate;
use crate::services::Services;
use kairan_core::error::{Error, Result};

/// A membership change made by `sender` about `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipAction {
    Invite,
    Leave,
    Kick,
    Ban,
    Unban,
}

impl Services {
    /// Resolves `#alias:server` or `!room:server` to a room ID known here.
    pub async fn resolve_room(&self, id_or_alias: &str) -> Result<OwnedRoomId> {
        if let Ok(alias) = ruma::RoomAliasId::parse(id_or_alias)
            && alias.server_name() != self.server_name()
        {
            // Another server's alias: its server knows it (federation/queries.rs).
            return Ok(self.resolve_alias(&alias).await?.0);
        }
        if id_or_alias.starts_with('#') {
            let (room, _) = self
                .store
                .alias(id_or_alias)
                .await?
                .ok_or_else(|| Error::not_found(format!("no room has the alias {id_or_alias}")))?;
            OwnedRoomId::try_from(room).map_err(|e| Error::internal("stored room id", e))
        } else {
            OwnedRoomId::try_from(id_or_alias).map_err(|e| Error::invalid_param(format!("invalid room ID: {e}")))
        }
    }

    /// The user joins a room (by the room's own rules: invite, public, ...).
    pub async fn join_room(&self, room_id: &RoomId, user: &UserId, reason: Option<String>) -> Result<()> {
        self.join_room_via(room_id, user, reason, &[]).await
    }

    /// Joins a room, through one of `via` (or the inviter's server, or the room ID's)
    /// when no local user is in it.
    pub async fn join_room_via(
        &self,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<String>,
        via: &[ruma::OwnedServerName],
    ) -> Result<()> {
        if self.store.membership(room_id.as_str(), user.as_str()).await?.as_deref() == Some("join") {
            return Ok(());
        }
        self.check_room_not_blocked(room_id).await?;
        if !self.is_resident(room_id, None).await? {
            let known = self.store.room_version(room_id.as_str()).await?.is_some();
            if !known && via.is_empty() && room_id.server_name().is_none_or(|s| s == self.server_name()) {
                return Err(Error::not_found(format!("room {room_id} is not known to this server")));
            }
            return self.join_remote(room_id, user, via, reason).await;
        }
        let mut content = self.own_member_content(user, "join", reason).await?;
        // A restricted room lets in a member of an allowed room through a local member who
        // may invite, as it does for users of other servers (rooms/resident.rs).
        // The whole state is read only for such a room.
        let rule = match self.store.current_state_event(room_id.as_str(), "m.room.join_rules", "").await? {
            Some(id) => self.pdu(&id).await?.map(|p| p.content_value()["join_rule"].clone()),
            None => None,
        };
        if matches!(rule.as_ref().and_then(Value::as_str), Some("restricted" | "knock_restricted")) {
            let rules = self.rules_of(room_id).await?;
            let state = self.store.current_state(room_id.as_str()).await?;
            if let Some(authoriser) = self.join_authoriser(&rules, &state, user).await? {
                content["join_authorised_via_users_server"] = authoriser.as_str().into();
            }
        }
        self.append_event(room_id, user, EventTemplate::state("m.room.member", user.as_str(), content), None).await?;
        self.store.unforget_room(user.as_str(), room_id.as_str()).await?;
        Ok(())
    }

    /// The user knocks on a room (asks to be invited), where its join rules allow it.
    pub async fn knock_room(
        &self,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<String>,
        via: &[ruma::OwnedServerName],
    ) -> Result<()> {
        match self.store.membership(room_id.as_str(), user.as_str()).await?.as_deref() {
            Some("join") => return Err(Error::forbidden(format!("{user} is already in room {room_id}"))),
            Some("ban") => return Err(Error::forbidden(format!("{user} is banned from room {room_id}"))),
            Some("invite") => return Err(Error::forbidden(format!("{user} is already invited to room {room_id}"))),
            _ => {}
        }
        self.check_room_not_blocked(room_id).await?;
        if !self.is_resident(room_id, None).await? {
            return self.knock_remote(room_id, user, via, reason).await;
        }
        let content = self.own_member_content(user, "knock", reason).await?;
        self.append_event(room_id, user, EventTemplate::state("m.room.member", user.as_str(), content), None).await?;
        Ok(())
    }

    /// A membership change by `sender` concerning `target` (which may be the sender).
    pub async fn change_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        action: MembershipAction,
        reason: Option<String>,
        is_direct: bool,
    ) -> Result<()> {
        let current = self.store.membership(room_id.as_str(), target.as_str()).await?;
        if current.is_none() && self.store.room_version(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found(format!("room {room_id} is not known to this server")));
        }
        let membership = match action {
            MembershipAction::Invite => {
                if self.is_local(target) && self.store.user(target.as_str()).await?.is_none() {
                    return Err(Error::not_found(format!("unknown user {target}")));
                }
                match current.as_deref() {
                    Some("join") => return Err(Error::forbidden(format!("{target} is already in the room"))),
                    Some("ban") => return Err(Error::forbidden(format!("{target} is banned from the room"))),
                    Some("invite") => return Ok(()),
                    _ => "invite",
                }
            }
            MembershipAction::Leave => {
                if matches!(current.as_deref(), Some("invite" | "knock")) && !self.is_resident(room_id, None).await? {
                    return self.leave_remote(room_id, target, reason).await;
                }
                if current.is_none() || current.as_deref() == Some("leave") {
                    // Leaving a room one is not in is a no-op, as in Synapse.
                    return match current {
                        Some(_) => Ok(()),
                        None => Err(Error::forbidden(format!("{target} is not in room {room_id}"))),
                    };
                }
                "leave"
            }
            MembershipAction::Kick => {
                if !matches!(current.as_deref(), Some("join" | "invite" | "knock")) {
                    return Err(Error::forbidden(format!("{target} is not in the room")));
                }
                "leave"
            }
            MembershipAction::Ban => "ban",
            MembershipAction::Unban => {
                if current.as_deref() != Some("ban") {
                    return Err(Error::forbidden(format!("{target} is not banned")));
                }
                "leave"
            }
        };
        let mut content = if matches!(action, MembershipAction::Invite) {
            self.member_content(target, membership).await?
        } else {
            json!({ "membership": membership })
        };
        if let Some(r) = reason {
            content["reason"] = r.into();
        }
        if is_direct {
            content["is_direct"] = true.into();
        }
        if matches!(action, MembershipAction::Invite) && !self.is_local(target) {
            return self.invite_remote(room_id, sender, target, content).await;
        }
        self.append_event(room_id, sender, EventTemplate::state("m.room.member", target.as_str(), content), None)
            .await?;
        Ok(())
    }

    /// The user's own membership event content, with the reason they gave.
    pub(super) async fn own_member_content(
        &self,
        user: &UserId,
        membership: &str,
        reason: Option<String>,
    ) -> Result<Value> {
        let mut content = self.member_content(user, membership).await?;
        if let Some(r) = reason {
            content["reason"] = r.into();
        }
        Ok(content)
    }

    /// `{"membership": m, "displayname": .., "avatar_url": ..}` from the user's profile.
    pub(super) async fn member_content(&self, user: &UserId, membership: &str) -> Result<Value> {
        let mut content = json!({ "membership": membership });
        if let Some(p) = self.store.user(user.as_str()).await? {
            if let Some(n) = p.displayname {
                content["displayname"] = n.into();
            }
            if let Some(a) = p.avatar_url {
                content["avatar_url"] = a.into();
            }
        }
        Ok(content)
    }
}
