//! Room aliases across servers: answering other servers' `query/directory` for what is
//! local, and asking the owning server for what is not. (Profiles: accounts/profile.rs.)

use ruma::{OwnedRoomId, OwnedServerName, RoomAliasId, api::federation::query::get_room_information};

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
}
