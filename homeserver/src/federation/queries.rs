//! Room aliases and profiles across servers: answering other servers' `query/directory`
//! and `query/profile` for what is local, and asking the owning server for what is not.

use ruma::{
    OwnedRoomId, OwnedServerName, RoomAliasId, UserId,
    api::federation::query::{get_profile_information, get_room_information},
    profile::ProfileFieldName,
};
use serde_json::{Map, Value};

use crate::services::Services;
use kairan_core::error::{Error, Result};

impl Services {
    /// A local alias: the room and the servers that can help join it (`M_NOT_FOUND` for
    /// an alias that is not this server's or not set).
    pub async fn local_alias(&self, alias: &RoomAliasId) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let not_found = || Error::not_found(format!("room alias {alias} not found"));
        if alias.server_name() != self.server_name() {
            return Err(not_found());
        }
        let (room, _) = self.store.alias(alias.as_str()).await?.ok_or_else(not_found)?;
        let room_id = OwnedRoomId::try_from(room).map_err(|e| Error::internal("stored room id", e))?;
        // This server first: it holds the alias, so it can help a join.
        let mut servers = vec![self.server_name().to_owned()];
        servers.extend(self.room_servers(room_id.as_str()).await?);
        Ok((room_id, servers))
    }

    /// Any alias: local ones from the directory, others from their server's
    /// `query/directory`. The remote's server list always names the remote itself.
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        if alias.server_name() == self.server_name() {
            return self.local_alias(alias).await;
        }
        let server = alias.server_name();
        // The remote's refusal keeps its code (404 for an unknown alias); a server that
        // cannot be asked is a 502 from the federation client.
        let res =
            self.send_federation_request(server, get_room_information::v1::Request::new(alias.to_owned())).await?;
        let mut servers = res.servers;
        if !servers.iter().any(|s| s == server) {
            servers.push(server.to_owned());
        }
        Ok((res.room_id, servers))
    }

    /// The public profile of a local user (`displayname`, `avatar_url`), or only `field`
    /// of it. `M_NOT_FOUND` for a user this server does not have.
    pub async fn local_profile(&self, user: &UserId, field: Option<&str>) -> Result<Map<String, Value>> {
        let u = match self.is_local(user) {
            true => self.store.user(user.as_str()).await?,
            false => None,
        };
        let u = u.ok_or_else(|| Error::not_found(format!("user {user} not found")))?;
        let mut out = Map::new();
        for (name, value) in [("displayname", u.displayname), ("avatar_url", u.avatar_url)] {
            if let Some(v) = value
                && field.is_none_or(|f| f == name)
            {
                out.insert(name.to_owned(), v.into());
            }
        }
        Ok(out)
    }

    /// The profile of any user: local from the database, remote from `query/profile`
    /// on their server.
    pub async fn profile(&self, user: &UserId, field: Option<&str>) -> Result<Map<String, Value>> {
        if self.is_local(user) {
            return self.local_profile(user, field).await;
        }
        let server = user.server_name();
        let mut request = get_profile_information::v1::Request::new(user.to_owned());
        request.field = field.map(ProfileFieldName::from);
        let res = self.send_federation_request(server, request).await?;
        Ok(res.into_iter().filter(|(name, _)| field.is_none_or(|f| f == name)).collect())
    }
}
