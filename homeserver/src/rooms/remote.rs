//! Membership across servers, from this server's side: a local user joins or leaves a
//! room this server is not in (make_join/send_join, make_leave/send_leave through a
//! resident server), or invites a user of another server (invite v2).

use std::sync::Arc;

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, UserId,
    api::federation::{
        event::get_event,
        membership::{
            RawStrippedState, create_invite, create_join_event, create_knock_event, create_leave_event,
            prepare_join_event, prepare_knock_event, prepare_leave_event,
        },
    },
    room_version_rules::RoomVersionRules,
};
use serde_json::{Value, value::RawValue};

use super::{EventTemplate, Pdu, SUPPORTED_VERSIONS, append::Parents, version_rules};
use crate::services::Services;
use kairan_core::{
    error::{Error, Result},
    time::now_ms,
};

/// The most of the resident's latest events fetched after a join (a template names at
/// most 20 parents).
const MAX_CATCH_UP_EVENTS: usize = 20;

/// State types another server is shown with an invite (the spec's recommended set).
pub(super) const INVITE_STATE_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

impl Services {
    /// Whether a local user other than `except` is joined: this server then holds the
    /// room's current state and can add events itself.
    pub async fn is_resident(&self, room_id: &RoomId, except: Option<&UserId>) -> Result<bool> {
        Ok(self
            .store
            .joined_members(room_id.as_str())
            .await?
            .iter()
            .any(|u| UserId::parse(u.as_str()).is_ok_and(|u| self.is_local(&u) && except.is_none_or(|e| e != u))))
    }

    /// Servers to ask about a room: those given, the inviter's, the room ID's.
    pub async fn candidate_servers(
        &self,
        room_id: &RoomId,
        user: &UserId,
        via: &[OwnedServerName],
    ) -> Result<Vec<OwnedServerName>> {
        let mut servers: Vec<OwnedServerName> = via.to_vec();
        if let Some(id) = self.store.current_state_event(room_id.as_str(), "m.room.member", user.as_str()).await?
            && let Some(p) = self.pdu(&id).await?
        {
            servers.push(p.sender.server_name().to_owned());
        }
        if let Some(server) = room_id.server_name() {
            servers.push(server.to_owned());
        }
        let mut seen = Vec::new();
        servers.retain(|s| {
            s != self.server_name() && !seen.contains(s) && {
                seen.push(s.clone());
                true
            }
        });
        Ok(servers)
    }

    /// Tries `attempt` through each server that may be in the room, until one succeeds;
    /// the last failure otherwise.
    async fn through_any<F, Fut>(
        &self,
        room_id: &RoomId,
        user: &UserId,
        via: &[OwnedServerName],
        what: &str,
        attempt: F,
    ) -> Result<()>
    where
        F: Fn(OwnedServerName) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let servers = self.candidate_servers(room_id, user, via).await?;
        let mut last = Error::not_found(format!("no server in room {room_id} is known to {what} through"));
        for server in servers {
            match attempt(server.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(%server, %room_id, error = %e.message, "remote {what} failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// A local user joins a room through a server that is in it.
    pub async fn join_remote(
        &self,
        room_id: &RoomId,
        user: &UserId,
        via: &[OwnedServerName],
        reason: Option<String>,
    ) -> Result<()> {
        let _joining = self.rooms.begin_join(room_id);
        self.through_any(room_id, user, via, "join", |server| {
            let reason = reason.clone();
            async move { self.join_through(&server, room_id, user, reason).await }
        })
        .await
    }

    async fn join_through(
        &self,
        server: &ruma::ServerName,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        let mut request = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        request.ver = SUPPORTED_VERSIONS.iter().filter_map(|v| RoomVersionId::try_from(*v).ok()).collect();
        let made = self.send_federation_request(server, request).await?;
        let version = made.room_version.map(|v| v.to_string()).unwrap_or_else(|| "1".to_owned());
        let rules = version_rules(&version).ok_or_else(|| Error::unsupported_room_version(version.clone()))?;
        let content = self.own_member_content(user, "join", reason).await?;
        let pdu = self.fill_template(made.event.get(), user, content, &rules, room_id)?;

        let request = create_join_event::v2::Request::new(room_id.to_owned(), pdu.event_id.clone(), raw(&pdu)?);
        let joined = self.send_federation_request(server, request).await?.room_state;
        // The resident server countersigns a join it vouches for (restricted rooms): only
        // that copy passes other servers' signature checks, so without it the join fails
        // here rather than be refused everywhere else.
        let vouched = pdu.content_value().get("join_authorised_via_users_server").is_some();
        let pdu = match (&joined.event, vouched) {
            (Some(event), _) => match self.verify_received_copy(event, &pdu, &rules).await {
                Some(p) => p,
                None if vouched => {
                    return Err(Error::unavailable(format!(
                        "{server} returned an invalid copy of the join it vouched for"
                    )));
                }
                None => pdu,
            },
            (None, true) => {
                return Err(Error::unavailable(format!("{server} vouched for the join but did not countersign it")));
            }
            (None, false) => pdu,
        };
        let lock = self.rooms.lock(room_id);
        let _guard = lock.lock().await;
        let mut state = self.keep_state(&rules, room_id, &joined.auth_chain, &joined.state).await?;
        let create_id = state
            .get(&("m.room.create".to_owned(), String::new()))
            .ok_or_else(|| Error::bad_json(format!("{server} sent the room's state without its create event")))?;
        let create = self.pdu(create_id).await?.ok_or_else(|| Error::internal("create event", create_id))?;
        let created_version =
            create.content_value().get("room_version").and_then(Value::as_str).unwrap_or("1").to_owned();
        if created_version != version {
            return Err(Error::bad_json(format!(
                "{server} said the room has version {version}, its create event says {created_version}"
            )));
        }
        self.store.create_room_row(room_id.as_str(), &version, create.sender.as_str(), false, now_ms()).await?;
        self.store.set_room_version(room_id.as_str(), &version).await?;
        self.authorise(&rules, &pdu, &state).await?;
        let group = self.store.create_state_group(room_id.as_str(), &state).await?;
        let parents = Parents {
            prev_events: pdu.prev_events.iter().map(|e| e.to_string()).collect(),
            depth: pdu.depth as i64,
            state_group_before: group,
            state_before: Arc::new(state.clone()),
        };
        let pdu = self.persist_remote(pdu, parents, user, vec![], vec![]).await?;
        state.insert(("m.room.member".to_owned(), user.to_string()), pdu.event_id.to_string());
        self.set_current_state(room_id, &state, Some(&[pdu.event_id.to_string()])).await?;
        self.store.unforget_room(user.as_str(), room_id.as_str()).await?;
        tracing::info!(%room_id, %server, %user, "joined a room over federation");
        if let Some(services) = self.handle() {
            let (server, room_id, user) = (server.to_owned(), room_id.to_owned(), user.to_owned());
            tokio::spawn(async move { services.catch_up_after_join(&server, &room_id, &user).await });
        }
        Ok(())
    }

    /// What the room gained while this server was joining. Events the resident server
    /// sent meanwhile were refused (the room was not here yet), and a join racing this
    /// one went only to the servers in the room before it. The resident's forward
    /// extremities, which a fresh make_join template names, lead to all of them: those
    /// not held are fetched and received like any event, gaps before them included.
    async fn catch_up_after_join(&self, server: &ruma::ServerName, room_id: &RoomId, user: &UserId) {
        let mut request = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        request.ver = SUPPORTED_VERSIONS.iter().filter_map(|v| RoomVersionId::try_from(*v).ok()).collect();
        let made = match self.send_federation_request(server, request).await {
            Ok(made) => made,
            Err(e) => {
                tracing::info!(%server, %room_id, error = %e.message, "cannot ask for the room's latest events after joining");
                return;
            }
        };
        let template: Value = serde_json::from_str(made.event.get()).unwrap_or_default();
        let latest: Vec<OwnedEventId> = template["prev_events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str().and_then(|id| OwnedEventId::try_from(id).ok()))
            .take(MAX_CATCH_UP_EVENTS)
            .collect();
        let budget = super::FetchBudget::for_transaction();
        for event_id in latest {
            match self.store.in_timeline(event_id.as_str()).await {
                Ok(false) => {}
                Ok(true) => continue,
                Err(e) => {
                    tracing::info!(error = %e, "catching up after a join");
                    return;
                }
            }
            let fetched = match self
                .send_federation_request(server, get_event::v1::Request::new(event_id.clone()))
                .await
            {
                Ok(f) => f,
                Err(e) => {
                    tracing::info!(%server, %event_id, error = %e.message, "cannot fetch a latest event after joining");
                    continue;
                }
            };
            match self.ingest_pdu(server, &fetched.pdu, &budget).await {
                Ok((id, outcome)) => tracing::debug!(%room_id, %id, ?outcome, "caught up after joining"),
                Err(e) => tracing::info!(%room_id, %event_id, error = %e.message, "a latest event after joining"),
            }
        }
    }

    /// A local user leaves (or declines an invite to) a room this server is not in.
    pub async fn leave_remote(&self, room_id: &RoomId, user: &UserId, reason: Option<String>) -> Result<()> {
        self.through_any(room_id, user, &[], "leave", |server| {
            let reason = reason.clone();
            async move { self.leave_through(&server, room_id, user, reason).await }
        })
        .await
    }

    async fn leave_through(
        &self,
        server: &ruma::ServerName,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        let made = self
            .send_federation_request(server, prepare_leave_event::v1::Request::new(room_id.to_owned(), user.to_owned()))
            .await?;
        let rules = self.rules_of(room_id).await?;
        let mut content = serde_json::json!({ "membership": "leave" });
        if let Some(r) = reason {
            content["reason"] = r.into();
        }
        let pdu = self.fill_template(made.event.get(), user, content, &rules, room_id)?;
        let request = create_leave_event::v2::Request::new(room_id.to_owned(), pdu.event_id.clone(), raw(&pdu)?);
        self.send_federation_request(server, request).await?;

        let lock = self.rooms.lock(room_id);
        let _guard = lock.lock().await;
        let mut state = self.store.current_state(room_id.as_str()).await?;
        let group = self.store.create_state_group(room_id.as_str(), &state).await?;
        let parents = Parents {
            prev_events: pdu.prev_events.iter().map(|e| e.to_string()).collect(),
            depth: pdu.depth as i64,
            state_group_before: group,
            state_before: Arc::new(state.clone()),
        };
        let pdu = self.persist_remote(pdu, parents, user, vec![], vec![]).await?;
        state.insert(("m.room.member".to_owned(), user.to_string()), pdu.event_id.to_string());
        self.set_current_state(room_id, &state, Some(&[pdu.event_id.to_string()])).await?;
        Ok(())
    }

    /// A local user knocks on a room this server is not in, through a server in it.
    pub async fn knock_remote(
        &self,
        room_id: &RoomId,
        user: &UserId,
        via: &[OwnedServerName],
        reason: Option<String>,
    ) -> Result<()> {
        self.through_any(room_id, user, via, "knock", |server| {
            let reason = reason.clone();
            async move { self.knock_through(&server, room_id, user, reason).await }
        })
        .await
    }

    async fn knock_through(
        &self,
        server: &ruma::ServerName,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        let mut request = prepare_knock_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        request.ver = SUPPORTED_VERSIONS.iter().filter_map(|v| RoomVersionId::try_from(*v).ok()).collect();
        let made = self.send_federation_request(server, request).await?;
        let version = made.room_version.to_string();
        let rules = version_rules(&version).ok_or_else(|| Error::unsupported_room_version(version.clone()))?;
        let content = self.own_member_content(user, "knock", reason).await?;
        let pdu = self.fill_template(made.event.get(), user, content, &rules, room_id)?;
        let request = create_knock_event::v1::Request::new(room_id.to_owned(), pdu.event_id.clone(), raw(&pdu)?);
        let knocked = self.send_federation_request(server, request).await?;
        self.keep_outsider_membership(&version, &pdu, user, &knocked.knock_room_state).await
    }

    /// A local user invites a user of another server: the invitee's server countersigns
    /// the invite, then it is persisted and sent to the room like any event.
    pub async fn invite_remote(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        content: Value,
    ) -> Result<()> {
        let lock = self.rooms.lock(room_id);
        // Built under the room's lock, but the lock is not held while the invitee's server
        // answers: a slow server must not stall the room.
        let guard = lock.lock().await;
        let rules = self.rules_of(room_id).await?;
        let version = self.store.room_version(room_id.as_str()).await?.unwrap_or_default();
        let parents = self.parents(room_id).await?;
        let template = EventTemplate::state("m.room.member", target.as_str(), content);
        let pdu = self.build_event(room_id.to_owned(), &rules, sender, template, &parents).await?;
        drop(guard);

        let mut invite_state = Vec::new();
        for ((t, k), id) in parents.state_before.iter() {
            let shown = INVITE_STATE_TYPES.contains(&t.as_str()) || (t == "m.room.member" && k == sender.as_str());
            if shown && let Some(p) = self.pdu(id).await? {
                invite_state.push(RawStrippedState::Pdu(raw(&p)?));
            }
        }
        let room_version = RoomVersionId::try_from(version.as_str()).map_err(|e| Error::internal("room version", e))?;
        let request = create_invite::v2::Request::new(
            room_id.to_owned(),
            pdu.event_id.clone(),
            room_version,
            raw(&pdu)?,
            invite_state,
        );
        let answer = self.send_federation_request(target.server_name(), request).await?;
        let signed = self
            .verify_received_copy(&answer.event, &pdu, &rules)
            .await
            .ok_or_else(|| Error::forbidden(format!("{} returned an invalid invite", target.server_name())))?;
        let _guard = lock.lock().await;
        self.persist_checked(&rules, signed, parents, sender, None).await?;
        // Events that arrived meanwhile make the invite a fork of the room.
        if self.store.forward_extremities(room_id.as_str()).await?.len() > 1 {
            self.recompute_current_state(room_id, &rules).await?;
        }
        Ok(())
    }

    /// Completes a make_join/make_leave template for `user` and signs it.
    fn fill_template(
        &self,
        template: &str,
        user: &UserId,
        content: Value,
        rules: &RoomVersionRules,
        room_id: &RoomId,
    ) -> Result<Arc<Pdu>> {
        let mut event: serde_json::Map<String, Value> =
            serde_json::from_str(template).map_err(|e| Error::bad_json(format!("event template: {e}")))?;
        // The template must be for this user in this room (a v12 room ID is implicit only
        // in the create event, which this is not).
        let fits = event.get("room_id").and_then(Value::as_str) == Some(room_id.as_str())
            && event.get("type").and_then(Value::as_str) == Some("m.room.member")
            && event.get("state_key").and_then(Value::as_str) == Some(user.as_str())
            && event.get("sender").and_then(Value::as_str) == Some(user.as_str());
        if !fits {
            return Err(Error::bad_json("the resident server's template is not for this user and room"));
        }
        for field in ["event_id", "signatures", "hashes", "unsigned"] {
            event.remove(field);
        }
        event.insert("origin_server_ts".into(), now_ms().into());
        // Keep what the resident server put in the content (a restricted room's
        // `join_authorised_via_users_server`), with this server's fields on top.
        let mut merged = match event.remove("content") {
            Some(Value::Object(c)) => c,
            _ => serde_json::Map::new(),
        };
        if let Value::Object(ours) = content {
            merged.extend(ours);
        }
        event.insert("content".into(), Value::Object(merged));
        let (pdu, _) = self.sign_pdu(Value::Object(event), rules, Some(room_id))?;
        Ok(pdu)
    }

    /// The copy of `ours` another server sent back (countersigned), if it is the same
    /// event with valid signatures.
    async fn verify_received_copy(&self, event: &RawValue, ours: &Pdu, rules: &RoomVersionRules) -> Option<Arc<Pdu>> {
        let obj = serde_json::from_str(event.get()).ok()?;
        let room: OwnedRoomId = ours.room_id.clone();
        match self.verify_pdu_object(obj, &room, rules).await {
            Ok(p) if p.event_id == ours.event_id => Some(p),
            Ok(p) => {
                tracing::info!(ours = %ours.event_id, theirs = %p.event_id, "a server changed the event it countersigned");
                None
            }
            Err(e) => {
                tracing::info!(error = %e.message, "countersigned event fails verification");
                None
            }
        }
    }
}

/// An event's signed JSON as a raw JSON value for a request.
pub(super) fn raw(pdu: &Pdu) -> Result<Box<RawValue>> {
    RawValue::from_string(pdu.json_string()).map_err(|e| Error::internal("event json", e))
}
