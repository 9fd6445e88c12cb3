//! Creating a room: the create event and the initial state, in the order the spec gives.

use std::sync::Arc;

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use super::{EventTemplate, StateMap, append::Parents, version_rules};
use crate::services::Services;
use kairan_core::{
    error::{Error, Result},
    ids::random_localpart,
    time::now_ms,
};

/// The choices of a `createRoom` request, already parsed.
#[derive(Debug, Default)]
pub struct CreateRoom {
    pub room_version: Option<String>,
    /// `private_chat`, `trusted_private_chat` or `public_chat`.
    pub preset: Option<String>,
    pub public: bool,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias_localpart: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub creation_content: Map<String, Value>,
    pub initial_state: Vec<EventTemplate>,
    pub power_level_override: Map<String, Value>,
}

impl Services {
    /// Creates a room and returns its ID.
    pub async fn create_room(&self, creator: &UserId, req: CreateRoom) -> Result<OwnedRoomId> {
        let version = req.room_version.clone().unwrap_or_else(|| self.config.rooms.default_version.clone());
        let rules = version_rules(&version).ok_or_else(|| {
            Error::unsupported_room_version(format!(
                "room version {version:?} is not supported; supported: {}",
                super::SUPPORTED_VERSIONS.join(", ")
            ))
        })?;
        let alias = match &req.alias_localpart {
            Some(local) => {
                let alias = OwnedRoomAliasId::try_from(format!("#{local}:{}", self.server_name()))
                    .map_err(|e| Error::invalid_param(format!("room_alias_name: {e}")))?;
                if self.store.alias(alias.as_str()).await?.is_some() {
                    return Err(Error::room_in_use(format!("alias {alias} is already in use")));
                }
                Some(alias)
            }
            None => None,
        };
        // Refused before anything is made, so a refused request leaves no half-built room.
        for template in &req.initial_state {
            self.check_policy_sender(&template.kind, creator)?;
        }
        for user in &req.invite {
            if self.is_local(user) && self.store.user(user.as_str()).await?.is_none() {
                return Err(Error::not_found(format!("cannot invite unknown user {user}")));
            }
        }

        // The create event.
        let mut create_content = req.creation_content.clone();
        create_content.insert("room_version".into(), version.clone().into());
        if !rules.authorization.use_room_create_sender {
            create_content.insert("creator".into(), creator.as_str().into());
        }
        let v12 = rules.authorization.room_create_event_id_as_room_id;
        let provisional_id = if v12 {
            None
        } else {
            Some(
                OwnedRoomId::try_from(format!("!{}:{}", random_localpart(18), self.server_name()))
                    .map_err(|e| Error::internal("room id", e))?,
            )
        };
        // A v12 room ID is the hash of its create event: two rooms created by one user with
        // the same options in the same millisecond would get the same ID. The next
        // millisecond makes another event (and another room).
        let mut ts = now_ms();
        let mut attempts = 0;
        let (create_pdu, room_id) = loop {
            let mut create = json!({
                "sender": creator.as_str(),
                "origin_server_ts": ts,
                "type": "m.room.create",
                "state_key": "",
                "content": create_content,
                "prev_events": [],
                "auth_events": [],
                "depth": 1,
            });
            if let Some(id) = &provisional_id {
                create["room_id"] = id.as_str().into();
            }
            let (pdu, room_id) = self.sign_pdu(create, &rules, provisional_id.as_deref())?;
            if self.store.create_room_row(room_id.as_str(), &version, creator.as_str(), req.public, now_ms()).await? {
                break (pdu, room_id);
            }
            attempts += 1;
            if attempts >= 100 {
                return Err(Error::room_in_use("room ID collision; try again"));
            }
            ts += 1;
        };
        let lock = self.rooms.lock(&room_id);
        let guard = lock.lock().await;
        let empty = self.store.create_state_group(room_id.as_str(), &StateMap::new()).await?;
        let parents = Parents {
            prev_events: vec![],
            depth: 1,
            state_group_before: empty,
            state_before: Arc::new(StateMap::new()),
        };
        self.authorise(&rules, &create_pdu, &parents.state_before).await?;
        self.persist_local_pdu(create_pdu, parents, creator).await?;

        let profile = self.store.user(creator.as_str()).await?;
        let mut join = json!({ "membership": "join" });
        if let Some(p) = &profile {
            if let Some(n) = &p.displayname {
                join["displayname"] = n.clone().into();
            }
            if let Some(a) = &p.avatar_url {
                join["avatar_url"] = a.clone().into();
            }
        }
        let preset =
            req.preset.clone().unwrap_or_else(|| if req.public { "public_chat" } else { "private_chat" }.to_owned());
        let mut events = vec![EventTemplate::state("m.room.member", creator.as_str(), join)];

        let mut users = Map::new();
        if !v12 {
            users.insert(creator.to_string(), 100.into());
        }
        if preset == "trusted_private_chat" {
            for u in &req.invite {
                users.insert(u.to_string(), 100.into());
            }
        }
        let mut power = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
                "m.room.server_acl": 100, "m.room.encryption": 100, "m.room.topic": 50,
                "m.room.pinned_events": 50
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 0,
            "notifications": { "room": 50 },
        });
        for (k, v) in &req.power_level_override {
            power[k] = v.clone();
        }
        events.push(EventTemplate::state("m.room.power_levels", "", power));
        if let Some(alias) = &alias {
            events.push(EventTemplate::state("m.room.canonical_alias", "", json!({ "alias": alias.as_str() })));
        }
        let (join_rule, guest) = match preset.as_str() {
            "public_chat" => ("public", "forbidden"),
            "private_chat" | "trusted_private_chat" => ("invite", "can_join"),
            other => return Err(Error::invalid_param(format!("unknown preset {other:?}"))),
        };
        events.push(EventTemplate::state("m.room.join_rules", "", json!({ "join_rule": join_rule })));
        events.push(EventTemplate::state("m.room.history_visibility", "", json!({ "history_visibility": "shared" })));
        events.push(EventTemplate::state("m.room.guest_access", "", json!({ "guest_access": guest })));
        events.extend(req.initial_state.iter().cloned());
        if let Some(name) = &req.name {
            events.push(EventTemplate::state("m.room.name", "", json!({ "name": name })));
        }
        if let Some(topic) = &req.topic {
            events.push(EventTemplate::state(
                "m.room.topic",
                "",
                json!({ "topic": topic, "m.topic": [{ "mimetype": "text/plain", "body": topic }] }),
            ));
        }
        for user in req.invite.iter().filter(|u| self.is_local(u)) {
            let mut content = json!({ "membership": "invite" });
            if req.is_direct {
                content["is_direct"] = true.into();
            }
            if let Some(n) = self.store.user(user.as_str()).await?.and_then(|p| p.displayname) {
                content["displayname"] = n.into();
            }
            events.push(EventTemplate::state("m.room.member", user.as_str(), content));
        }
        for template in events {
            let parents = self.parents(&room_id).await?;
            self.build_and_persist(room_id.clone(), &rules, creator, template, parents, None).await?;
        }
        if let Some(alias) = alias {
            self.store.create_alias(alias.as_str(), room_id.as_str(), creator.as_str()).await?;
        }
        drop(guard);
        // Users of other servers are invited through their servers, once the room exists;
        // one that cannot be reached does not undo the room.
        for user in req.invite.iter().filter(|u| !self.is_local(u)) {
            let mut content = json!({ "membership": "invite" });
            if req.is_direct {
                content["is_direct"] = true.into();
            }
            if let Err(e) = self.invite_remote(&room_id, creator, user, content).await {
                tracing::warn!(%room_id, %user, error = %e.message, "cannot invite a user of another server");
            }
        }
        Ok(room_id)
    }
}
