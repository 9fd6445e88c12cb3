//! Room aliases: creating one, deleting one and what the room's state says about it
//! afterwards; a room's place in the public directory.

use ruma::{RoomAliasId, RoomId, UserId};
use serde_json::Value;

use super::EventTemplate;
use crate::services::Services;
use kairan_core::error::{Error, Result};

impl Services {
    /// Creates a local alias for a room the user is joined to; `409` if it exists.
    pub async fn create_alias(&self, user: &UserId, alias: &RoomAliasId, room_id: &RoomId) -> Result<()> {
        if alias.server_name() != self.server_name() {
            return Err(Error::invalid_param("aliases must be on this server"));
        }
        self.require_joined(room_id, user).await?;
        if !self.store.create_alias(alias.as_str(), room_id.as_str(), user.as_str()).await? {
            return Err(Error::new(http::StatusCode::CONFLICT, "M_UNKNOWN", format!("alias {alias} already exists")));
        }
        Ok(())
    }

    /// The local aliases of a room.
    pub async fn room_aliases(&self, room_id: &RoomId) -> Result<Vec<ruma::OwnedRoomAliasId>> {
        let aliases = self.store.room_aliases(room_id.as_str()).await?;
        Ok(aliases.into_iter().filter_map(|a| ruma::OwnedRoomAliasId::try_from(a).ok()).collect())
    }

    /// Whether a room is in the public directory; `M_NOT_FOUND` for a room not known here.
    pub async fn room_is_public(&self, room_id: &RoomId) -> Result<bool> {
        if self.store.room_version(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found("unknown room"));
        }
        Ok(self.store.is_room_public(room_id.as_str()).await?)
    }

    /// Puts a room in the public directory or takes it out: for a member who may change
    /// its canonical alias, as Synapse has it.
    pub async fn set_room_public(&self, room_id: &RoomId, user: &UserId, public: bool) -> Result<()> {
        self.require_joined(room_id, user).await?;
        self.require_power(room_id, user, "m.room.canonical_alias").await?;
        Ok(self.store.set_room_public(room_id.as_str(), public).await?)
    }

    /// Deletes a local alias. The alias's creator, a server administrator, or a member
    /// who may change the room's canonical alias may do so; the alias then also leaves
    /// the room's `m.room.canonical_alias` (`alias` and `alt_aliases`), so that neither
    /// clients nor the public room search keep finding the room by it.
    pub async fn delete_alias(&self, user: &UserId, alias: &RoomAliasId) -> Result<()> {
        let (room_id, creator) =
            self.store.alias(alias.as_str()).await?.ok_or_else(|| Error::not_found("alias not found"))?;
        let room_id = RoomId::parse(&room_id).map_err(|e| Error::internal("stored alias room", e))?;
        let admin = self.store.user(user.as_str()).await?.is_some_and(|u| u.is_admin);
        if creator != user.as_str()
            && !admin
            && (self.require_joined(&room_id, user).await.is_err()
                || self.require_power(&room_id, user, "m.room.canonical_alias").await.is_err())
        {
            return Err(Error::forbidden(
                "only the alias's creator, an administrator or a room moderator may delete it",
            ));
        }
        self.store.delete_alias(alias.as_str()).await?;
        self.forget_canonical_alias(&room_id, user, alias).await
    }

    /// Sends a new `m.room.canonical_alias` without `alias` when it names it. As Synapse
    /// does, a deleter who may not change that state leaves it as it is: the alias itself
    /// is gone either way, and the directory no longer resolves it.
    async fn forget_canonical_alias(&self, room_id: &RoomId, user: &UserId, alias: &RoomAliasId) -> Result<()> {
        let Some(id) = self.store.current_state_event(room_id.as_str(), "m.room.canonical_alias", "").await? else {
            return Ok(());
        };
        let Some(event) = self.pdu(&id).await? else { return Ok(()) };
        let mut content = event.content_value();
        let Some(fields) = content.as_object_mut() else { return Ok(()) };
        let mut changed = false;
        if fields.get("alias").and_then(Value::as_str) == Some(alias.as_str()) {
            fields.remove("alias");
            changed = true;
        }
        if let Some(Value::Array(alt)) = fields.get_mut("alt_aliases") {
            let before = alt.len();
            alt.retain(|a| a.as_str() != Some(alias.as_str()));
            changed |= alt.len() != before;
        }
        if !changed {
            return Ok(());
        }
        let template = EventTemplate::state("m.room.canonical_alias", "", content);
        match self.append_event(room_id, user, template, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.status.is_client_error() => {
                tracing::info!(%room_id, alias = %alias, reason = %e.message, "the canonical alias keeps a deleted alias");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
