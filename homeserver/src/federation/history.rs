//! Serving a room's history to other servers: who may read it, events in federation
//! format, the state before an event, auth chains, backfill and missing events.
//!
//! A server may read a room when the room's `m.room.server_acl` does not deny it and one
//! of its users is joined to the room now or was joined at the event asked about.
//! An event the server could not see by the room's history visibility is sent redacted,
//! as Synapse does, so that the DAG stays complete without leaking content.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use ruma::{
    CanonicalJsonValue, EventId, OwnedEventId, RoomId, ServerName, UserId,
    events::room::server_acl::RoomServerAclEventContent,
};
use serde_json::{Value, value::RawValue};

use crate::{
    rooms::{Pdu, StateMap, version_rules},
    services::Services,
    storage::EventRow,
};
use kairan_core::error::{Error, Result};

/// Most events one `/backfill` answers with.
pub const MAX_BACKFILL: usize = 100;
/// Most events one `/get_missing_events` answers with (Synapse's cap).
pub const MAX_MISSING_EVENTS: usize = 20;

/// Whether `user` belongs to `server`.
fn on_server(user: &str, server: &ServerName) -> bool {
    <&UserId>::try_from(user).is_ok_and(|u| u.server_name() == server)
}

impl Services {
    /// Whether the room's `m.room.server_acl` (in current state) lets `server` take part.
    /// A room without one allows every server; an unreadable one allows none but this one.
    pub async fn server_acl_allows(&self, room_id: &RoomId, server: &ServerName) -> Result<bool> {
        if server == self.server_name() {
            return Ok(true);
        }
        let Some(id) = self.store.current_state_event(room_id.as_str(), "m.room.server_acl", "").await? else {
            return Ok(true);
        };
        let Some(pdu) = self.pdu(&id).await? else { return Ok(true) };
        Ok(match serde_json::from_str::<RoomServerAclEventContent>(pdu.content.get()) {
            Ok(acl) => acl.is_allowed(server),
            // The auth rules let anything through as an ACL's content; a malformed one
            // must not open the room to everybody.
            Err(_) => false,
        })
    }

    /// Whether a user of `server` is joined to the room in its current state.
    pub async fn server_joined_now(&self, room_id: &RoomId, server: &ServerName) -> Result<bool> {
        Ok(self
            .store
            .members(room_id.as_str())
            .await?
            .iter()
            .any(|(user, membership, _)| membership == "join" && on_server(user, server)))
    }

    /// The memberships (`join`, `invite`, ...) users of `server` hold in a state map.
    async fn server_memberships_in(&self, state: &StateMap, server: &ServerName) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for ((kind, key), id) in state {
            if kind != "m.room.member" || !on_server(key, server) {
                continue;
            }
            if let Some(m) = self
                .pdu(id)
                .await?
                .and_then(|p| p.content_value().get("membership").and_then(Value::as_str).map(str::to_owned))
            {
                out.insert(m);
            }
        }
        Ok(out)
    }

    /// Refuses (`M_FORBIDDEN`) a server that may not read the room's history: denied by
    /// the server ACL, or with no user joined now nor at `at` (an event of the room).
    /// An unknown room is `M_NOT_FOUND`.
    pub async fn authorise_server_read(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        at: Option<&EventRow>,
    ) -> Result<()> {
        if self.store.room_version(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found(format!("room {room_id} is not known to this server")));
        }
        if !self.server_acl_allows(room_id, origin).await? {
            return Err(Error::forbidden(format!("{origin} is denied by the server ACL of {room_id}")));
        }
        if self.server_joined_now(room_id, origin).await? {
            return Ok(());
        }
        if let Some(row) = at.filter(|r| r.stream_ordering > 0) {
            let state = self.state_at_group(row.state_group).await?;
            if self.server_memberships_in(&state, origin).await?.contains("join") {
                return Ok(());
            }
        }
        Err(Error::forbidden(format!("{origin} has no user in room {room_id}")))
    }

    /// Whether `server` could see an event by the history visibility at it: always for
    /// `world_readable` and `shared` (the server is in the room, checked before), else
    /// only with a user joined (or, for `invited`, invited) at that event.
    async fn server_can_see(&self, row: &EventRow, server: &ServerName) -> Result<bool> {
        if row.stream_ordering == 0 || server == self.server_name() {
            // An outlier has no state here; it is an auth event others already hold.
            return Ok(true);
        }
        let state = self.state_at_group(row.state_group).await?;
        let visibility = match state.get(&("m.room.history_visibility".to_owned(), String::new())) {
            Some(id) => self
                .pdu(id)
                .await?
                .and_then(|p| p.content_value().get("history_visibility").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "shared".to_owned()),
            None => "shared".to_owned(),
        };
        Ok(match visibility.as_str() {
            "joined" => self.server_memberships_in(&state, server).await?.contains("join"),
            "invited" => {
                let m = self.server_memberships_in(&state, server).await?;
                m.contains("join") || m.contains("invite")
            }
            _ => true,
        })
    }

    /// A stored event in federation format: the canonical JSON as it was signed, redacted
    /// by the room version's rules if it was redacted here or `redact` is set.
    pub async fn federation_pdu(&self, row: &EventRow, redact: bool) -> Result<Box<RawValue>> {
        let pdu = self.pdu(&row.event_id).await?.ok_or_else(|| Error::not_found("event not found"))?;
        let mut json = pdu.json.clone();
        if redact || row.redacted_by.is_some() {
            let version = self.store.room_version(&row.room_id).await?.unwrap_or_default();
            let rules = version_rules(&version)
                .ok_or_else(|| Error::internal("federation_pdu", format!("unsupported room version {version:?}")))?;
            json = ruma::canonical_json::redact(json, &rules.redaction, None)
                .map_err(|e| Error::internal("redacting an event for federation", e))?;
        }
        RawValue::from_string(CanonicalJsonValue::Object(json).to_string())
            .map_err(|e| Error::internal("federation_pdu", e))
    }

    /// An event for `origin`: redacted where the history visibility hides it from them.
    async fn pdu_for_server(&self, row: &EventRow, origin: &ServerName) -> Result<Box<RawValue>> {
        let hidden = !self.server_can_see(row, origin).await?;
        self.federation_pdu(row, hidden).await
    }

    /// An event of `room_id` by ID, or `M_NOT_FOUND` (also when it is in another room).
    async fn room_event(&self, room_id: &RoomId, event_id: &EventId) -> Result<EventRow> {
        match self.store.event(event_id.as_str()).await? {
            Some(row) if row.room_id == room_id.as_str() => Ok(row),
            _ => Err(Error::not_found(format!("event {event_id} is not known in {room_id}"))),
        }
    }

    /// `GET /event/{eventId}` for `origin`: the event in federation format.
    pub async fn event_for_server(&self, origin: &ServerName, event_id: &EventId) -> Result<Box<RawValue>> {
        let row = self
            .store
            .event(event_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("event {event_id} not found")))?;
        let room_id = <&RoomId>::try_from(row.room_id.as_str()).map_err(|e| Error::internal("stored room id", e))?;
        self.authorise_server_read(origin, room_id, Some(&row)).await?;
        self.pdu_for_server(&row, origin).await
    }

    /// The auth chain of the given events (see `auth_chain` in rooms/resolve.rs), oldest
    /// first, so a receiver can check each event after its auth events.
    pub async fn sorted_auth_chain(&self, starts: &[OwnedEventId]) -> Result<Vec<Arc<Pdu>>> {
        let mut events = HashMap::new();
        let ids = self.auth_chain(starts, &mut events).await?;
        let mut chain = Vec::with_capacity(ids.len());
        for id in ids {
            // An auth event this server never had cannot be served; the rest still can.
            if let Some(p) = self.pdu(id.as_str()).await? {
                chain.push(p);
            }
        }
        chain.sort_by(|a, b| a.depth.cmp(&b.depth).then_with(|| a.event_id.cmp(&b.event_id)));
        Ok(chain)
    }

    /// `/state` and `/state_ids`: the room state before `event_id` (what Synapse answers
    /// and what the spec means: the state the event was authorised against) and the
    /// auth chain of that state, as event IDs.
    pub async fn state_ids_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
        let row = self.room_event(room_id, event_id).await?;
        self.authorise_server_read(origin, room_id, Some(&row)).await?;
        if row.stream_ordering == 0 {
            return Err(Error::not_found(format!("this server holds no state at {event_id}")));
        }
        let state = self.state_at_group(row.state_group_before).await?;
        let mut ids = Vec::with_capacity(state.len());
        for id in state.values() {
            ids.push(EventId::parse(id).map_err(|e| Error::internal("stored event id", e))?);
        }
        let chain = self.sorted_auth_chain(&ids).await?;
        Ok((ids, chain.iter().map(|p| p.event_id.clone()).collect()))
    }

    /// Events by ID in federation format for `origin` (unknown ones left out).
    pub async fn pdus_for_server(&self, origin: &ServerName, ids: &[OwnedEventId]) -> Result<Vec<Box<RawValue>>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = self.store.event(id.as_str()).await? {
                out.push(self.pdu_for_server(&row, origin).await?);
            }
        }
        Ok(out)
    }

    /// `/event_auth`: the auth chain of one event of the room.
    pub async fn event_auth_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Vec<Box<RawValue>>> {
        let row = self.room_event(room_id, event_id).await?;
        self.authorise_server_read(origin, room_id, Some(&row)).await?;
        let chain = self.sorted_auth_chain(&[event_id.to_owned()]).await?;
        let ids: Vec<OwnedEventId> = chain.iter().map(|p| p.event_id.clone()).collect();
        self.pdus_for_server(origin, &ids).await
    }

    /// `/backfill`: the events given and those before them, breadth-first along
    /// `prev_events`, at most `limit` (capped at [`MAX_BACKFILL`]).
    pub async fn backfill_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        from: &[OwnedEventId],
        limit: usize,
    ) -> Result<Vec<Box<RawValue>>> {
        self.authorise_server_read(origin, room_id, None).await?;
        let limit = limit.min(MAX_BACKFILL);
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        let mut todo: VecDeque<OwnedEventId> = from.iter().cloned().collect();
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(id) = todo.pop_front() else { break };
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(row) = self.store.event(id.as_str()).await?.filter(|r| r.room_id == room_id.as_str()) else {
                continue;
            };
            if let Some(p) = self.pdu(id.as_str()).await? {
                todo.extend(p.prev_events.iter().filter(|e| !seen.contains(*e)).cloned());
            }
            out.push(self.pdu_for_server(&row, origin).await?);
        }
        Ok(out)
    }

    /// `/get_missing_events`: walks back breadth-first from the `prev_events` of
    /// `latest`, stopping at `earliest` and below `min_depth`, at most `limit` events
    /// (capped at [`MAX_MISSING_EVENTS`]), returned oldest first.
    pub async fn missing_events_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: usize,
        min_depth: u64,
    ) -> Result<Vec<Box<RawValue>>> {
        self.authorise_server_read(origin, room_id, None).await?;
        let limit = limit.min(MAX_MISSING_EVENTS);
        let mut seen: HashSet<OwnedEventId> = earliest.iter().chain(latest).cloned().collect();
        let mut todo: VecDeque<OwnedEventId> = VecDeque::new();
        for id in latest {
            if let Some(p) = self.pdu(id.as_str()).await?.filter(|p| p.room_id == room_id) {
                todo.extend(p.prev_events.iter().cloned());
            }
        }
        let mut found: Vec<EventRow> = Vec::new();
        while found.len() < limit {
            let Some(id) = todo.pop_front() else { break };
            // The requester holds `earliest` and `latest` already.
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(row) = self.store.event(id.as_str()).await?.filter(|r| r.room_id == room_id.as_str()) else {
                continue;
            };
            let Some(p) = self.pdu(id.as_str()).await? else { continue };
            if p.depth < min_depth {
                continue;
            }
            todo.extend(p.prev_events.iter().filter(|e| !seen.contains(*e)).cloned());
            found.push(row);
        }
        // Walked newest to oldest; the receiver applies them oldest first.
        found.reverse();
        let mut out = Vec::with_capacity(found.len());
        for row in &found {
            out.push(self.pdu_for_server(row, origin).await?);
        }
        Ok(out)
    }
}
