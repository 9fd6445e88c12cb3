//! Events from other servers: checked as the spec's "checks performed on receipt of a
//! PDU" demand, then stored in the room's DAG.
//!
//! In order: format; event ID from the reference hash; the room's server ACL; the
//! signatures of the servers that must sign (a content hash that does not match means
//! the event is kept redacted); authorisation against its own auth events; missing
//! prev events fetched (`get_missing_events`, else the state at them); authorisation
//! against the state before the event (rejected otherwise); and against the current
//! state (soft-failed otherwise: kept, but not in the timeline).

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedRoomId, RoomId, ServerName, UInt,
    api::federation::event::{get_event, get_missing_events, get_room_state},
    canonical_json::redact,
    room_version_rules::RoomVersionRules,
    signatures::Verified,
    state_res,
};
use serde_json::value::RawValue;

use super::{Pdu, StateMap, append::Parents, version_rules};
use crate::{
    error::{Error, Result},
    services::{Services, now_ms},
};

/// What became of a received PDU.
#[derive(Debug)]
pub enum Ingested {
    /// Stored in the room's timeline.
    Accepted(Arc<Pdu>),
    /// Had been received before.
    AlreadyKnown,
    /// Stored but kept out of the timeline: not allowed by the room's current state.
    SoftFailed(String),
    /// Not allowed by its auth events or the state before it.
    Rejected(String),
}

/// How deep the auth events of a fetched event are fetched in turn.
const FETCH_DEPTH: u32 = 5;

/// How many missing events one gap may bring before the state at the gap is fetched instead.
const MISSING_EVENTS_LIMIT: u32 = 50;

impl Services {
    /// Checks and stores one PDU of a transaction from `origin`.
    pub async fn ingest_pdu(&self, origin: &ServerName, raw: &RawValue) -> Result<(OwnedEventId, Ingested)> {
        let (rules, pdu) = match self.verified_pdu(raw, None).await {
            Ok(checked) => checked,
            // A PDU that fails its checks is answered by ID where it has one, so the sender
            // learns which event was refused and why.
            Err(e) => {
                return self.event_id_of(raw).await.map(|id| (id, Ingested::Rejected(e.message.clone()))).ok_or(e);
            }
        };
        let event_id = pdu.event_id.clone();
        // Only rooms this server is in take events: a room it left, or was only invited
        // to, is not open to whatever a server sends. An event that builds on one this
        // server holds is taken even so: a concurrent change (a kick of the last local
        // member racing a demotion of the kicker) may yet resolve to this server being in.
        let attached = {
            let mut any = false;
            for prev in &pdu.prev_events {
                if self.store.in_timeline(prev.as_str()).await? {
                    any = true;
                    break;
                }
            }
            any
        };
        if !attached && !self.is_resident(&pdu.room_id, None).await? {
            return Ok((event_id, Ingested::Rejected(format!("this server is not in room {}", pdu.room_id))));
        }
        if let Err(e) = self.check_server_acl(&pdu.room_id, origin).await {
            return Ok((event_id, self.reject(&pdu, e.message).await?));
        }
        let lock = self.rooms.lock(&pdu.room_id);
        let _guard = lock.lock().await;
        Ok((event_id, self.ingest_locked(origin, &rules, pdu, Vec::new(), 0).await?))
    }

    /// The event ID of a PDU of a known room, if it is well-formed enough to have one.
    async fn event_id_of(&self, raw: &RawValue) -> Option<OwnedEventId> {
        let mut obj: CanonicalJsonObject = serde_json::from_str(raw.get()).ok()?;
        obj.remove("event_id");
        let room_id = obj.get("room_id")?.as_str()?.to_owned();
        let version = self.store.room_version(&room_id).await.ok()??;
        let rules = version_rules(&version)?;
        let hash = ruma::signatures::reference_hash(&obj, &rules).ok()?;
        OwnedEventId::try_from(format!("${hash}")).ok()
    }

    /// Parses a PDU, derives its event ID, and verifies its signatures and content hash
    /// (an event whose hash does not match is kept redacted). `room_id` is needed only
    /// for events that carry none (a v12 create event).
    pub async fn verified_pdu(&self, raw: &RawValue, room_id: Option<&RoomId>) -> Result<(RoomVersionRules, Arc<Pdu>)> {
        let obj: CanonicalJsonObject =
            serde_json::from_str(raw.get()).map_err(|e| Error::bad_json(format!("PDU is not canonical JSON: {e}")))?;
        let room_id = match (obj.get("room_id").and_then(|v| v.as_str()), room_id) {
            (Some(r), _) => OwnedRoomId::try_from(r).map_err(|e| Error::bad_json(format!("room_id: {e}")))?,
            (None, Some(r)) => r.to_owned(),
            (None, None) => return Err(Error::bad_json("PDU has no room_id")),
        };
        let version = self
            .store
            .room_version(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("room {room_id} is not known here")))?;
        let rules = version_rules(&version).ok_or_else(|| Error::unsupported_room_version(version.clone()))?;
        let pdu = self.verify_pdu_object(obj, &room_id, &rules).await?;
        Ok((rules, pdu))
    }

    /// Format, event ID, signatures and content hash of an event of a known room version.
    pub async fn verify_pdu_object(
        &self,
        mut obj: CanonicalJsonObject,
        room_id: &RoomId,
        rules: &RoomVersionRules,
    ) -> Result<Arc<Pdu>> {
        // Some servers send the event ID along (v1 format habits); it is derived, never trusted.
        obj.remove("event_id");
        state_res::check_pdu_format(&obj, &rules.event_format)
            .map_err(|e| Error::bad_json(format!("event format: {e}")))?;
        let hash = ruma::signatures::reference_hash(&obj, rules)
            .map_err(|e| Error::bad_json(format!("event cannot be hashed: {e}")))?;
        let event_id = OwnedEventId::try_from(format!("${hash}")).map_err(|e| Error::bad_json(e.to_string()))?;
        let servers = ruma::signatures::required_server_signatures_to_verify_event(&obj, &rules.signatures)
            .map_err(|e| Error::bad_json(format!("{event_id}: {e}")))?;
        let keys = self.verify_keys(&servers).await?;
        let verified = ruma::signatures::verify_event(&keys, &obj, rules)
            .map_err(|e| Error::forbidden(format!("{event_id}: signature check failed: {e}")))?;
        if verified == Verified::Signatures {
            tracing::info!(%event_id, "content hash mismatch: keeping the event redacted");
            obj = redact(obj, &rules.redaction, None)
                .map_err(|e| Error::bad_json(format!("{event_id}: cannot redact: {e}")))?;
        }
        Ok(Arc::new(Pdu::from_json(event_id, room_id, obj).map_err(Error::bad_json)?))
    }

    /// The checks after the signatures, with the room locked. `fan_out` names servers to
    /// send the accepted event on to (a join this server was asked to complete).
    pub(crate) async fn ingest_locked(
        &self,
        origin: &ServerName,
        rules: &RoomVersionRules,
        pdu: Arc<Pdu>,
        fan_out: Vec<String>,
        recursion: u32,
    ) -> Result<Ingested> {
        let event_id = pdu.event_id.to_string();
        // An outlier (say an auth event fetched earlier) may still join the timeline.
        if self.store.in_timeline(&event_id).await? || self.store.is_rejected(&event_id).await? {
            return Ok(Ingested::AlreadyKnown);
        }
        match self.check_auth_events(Some(origin), rules, &pdu).await? {
            Some((reason, true)) => return self.reject(&pdu, reason).await,
            // Its auth events could not be fetched now: refused, but not for good.
            Some((reason, false)) => return Ok(Ingested::Rejected(reason)),
            None => {}
        }

        // The state before it, from its prev events (fetching what is missing).
        let mut missing: Vec<OwnedEventId> = Vec::new();
        for prev in &pdu.prev_events {
            if !self.store.in_timeline(prev.as_str()).await? {
                missing.push(prev.clone());
            }
        }
        if !missing.is_empty() && recursion == 0 {
            self.fetch_missing_events(origin, rules, &pdu, recursion).await?;
            let mut still = Vec::new();
            for prev in &missing {
                if !self.store.in_timeline(prev.as_str()).await? {
                    still.push(prev.clone());
                }
            }
            missing = still;
        }
        let mut states = Vec::new();
        for prev in &pdu.prev_events {
            if missing.contains(prev) {
                states.push(Arc::new(self.state_after_remote(origin, rules, &pdu.room_id, prev).await?));
            } else if let Some(row) = self.store.event(prev.as_str()).await? {
                states.push(self.state_at_group(row.state_group).await?);
            }
        }
        let state_before = self.resolve_states(rules, &states).await?;
        if let Err(e) = self.authorise(rules, &pdu, &state_before).await {
            return self.reject(&pdu, format!("not allowed by the state before it: {}", e.message)).await;
        }
        // The administrators' policy binds members of other servers as it binds local ones.
        if pdu.state_key.is_some()
            && let Err(e) = self.check_event_policy(&pdu.room_id, &pdu.kind.to_string()).await
        {
            return self.reject(&pdu, e.message).await;
        }
        // Soft failure: allowed where it was sent from, not by the room as it is now.
        let current = self.store.current_state(pdu.room_id.as_str()).await?;
        if current != state_before
            && let Err(e) = self.authorise(rules, &pdu, &current).await
        {
            let reason = format!("soft-failed: {}", e.message);
            self.store.insert_rejected(&event_id, pdu.room_id.as_str(), &pdu.json_string(), &reason, now_ms()).await?;
            return Ok(Ingested::SoftFailed(reason));
        }

        let group = match (pdu.prev_events.as_slice(), missing.is_empty()) {
            ([one], true) => self.store.event(one.as_str()).await?.map(|r| r.state_group),
            _ => None,
        };
        let group = match group {
            Some(g) => g,
            None => self.store.create_state_group(pdu.room_id.as_str(), &state_before).await?,
        };
        let extremities_before = self.store.forward_extremities(pdu.room_id.as_str()).await?;
        let push_actions = self.push_actions_for(&pdu, &state_before, rules).await?;
        let parents = Parents {
            prev_events: pdu.prev_events.iter().map(|e| e.to_string()).collect(),
            depth: pdu.depth as i64,
            state_group_before: group,
            state_before: Arc::new(state_before),
        };
        let sender = pdu.sender.clone();
        let pdu = self.persist_remote(pdu, parents, &sender, push_actions, fan_out).await?;
        // A linear extension keeps the current state the persisted event set; a fork
        // (or a gap) makes it the resolution of every extremity's state.
        let mut prevs: Vec<String> = pdu.prev_events.iter().map(|e| e.to_string()).collect();
        prevs.sort();
        if prevs != extremities_before {
            self.recompute_current_state(&pdu.room_id, rules).await?;
        }
        Ok(Ingested::Accepted(pdu))
    }

    /// Authorisation of an event by its own auth events: fetched from `origin` when not
    /// held, or, without an origin, only those held (as a chain is stored oldest first).
    /// `Some((reason, permanent))` when it fails; an auth event that cannot be had now is
    /// not a permanent failure.
    pub(crate) async fn check_auth_events(
        &self,
        origin: Option<&ServerName>,
        rules: &RoomVersionRules,
        pdu: &Arc<Pdu>,
    ) -> Result<Option<(String, bool)>> {
        let mut ids: Vec<OwnedEventId> = pdu.auth_events.clone();
        // v12 events name their create event through the room ID, not auth_events.
        if rules.authorization.room_create_event_id_as_room_id {
            let create = OwnedEventId::try_from(format!("${}", pdu.room_id.as_str().trim_start_matches('!')))
                .map_err(|e| Error::bad_json(format!("room ID: {e}")))?;
            if create != pdu.event_id {
                ids.push(create);
            }
        }
        let mut auth_state = StateMap::new();
        for id in &ids {
            let held = match origin {
                // Boxed: fetching keeps the event as an outlier, which checks its auth events.
                Some(origin) => Box::pin(self.pdu_or_fetch(origin, &pdu.room_id, id, rules)).await?,
                None => self.pdu(id.as_str()).await?,
            };
            let Some(p) = held else { return Ok(Some((format!("auth event {id} unavailable"), false))) };
            if let Some(k) = &p.state_key {
                auth_state.insert((p.kind.to_string(), k.clone()), p.event_id.to_string());
            }
        }
        Ok(self
            .authorise(rules, pdu, &auth_state)
            .await
            .err()
            .map(|e| (format!("not allowed by its auth events: {}", e.message), true)))
    }

    async fn reject(&self, pdu: &Pdu, reason: String) -> Result<Ingested> {
        tracing::info!(event_id = %pdu.event_id, room_id = %pdu.room_id, %reason, "rejected a received event");
        self.store
            .insert_rejected(pdu.event_id.as_str(), pdu.room_id.as_str(), &pdu.json_string(), &reason, now_ms())
            .await?;
        Ok(Ingested::Rejected(reason))
    }

    /// Makes the room's current state the resolution of its forward extremities' states.
    pub(crate) async fn recompute_current_state(&self, room_id: &RoomId, rules: &RoomVersionRules) -> Result<()> {
        let extremities = self.store.forward_extremities(room_id.as_str()).await?;
        let mut states = Vec::new();
        for id in &extremities {
            if let Some(row) = self.store.event(id).await?
                && row.stream_ordering > 0
            {
                states.push(self.state_at_group(row.state_group).await?);
            }
        }
        let state = self.resolve_states(rules, &states).await?;
        self.set_current_state(room_id, &state, None).await
    }

    /// Writes a room's current state (and optionally its forward extremities).
    pub(crate) async fn set_current_state(
        &self,
        room_id: &RoomId,
        state: &StateMap,
        extremities: Option<&[String]>,
    ) -> Result<()> {
        let mut memberships = BTreeMap::new();
        for ((t, _), id) in state.iter() {
            if t == "m.room.member"
                && let Some(p) = self.pdu(id).await?
                && let Some(m) = p.content_value().get("membership").and_then(|m| m.as_str())
            {
                memberships.insert(id.clone(), m.to_owned());
            }
        }
        self.store.replace_current_state(room_id.as_str(), state, &memberships, extremities).await?;
        Ok(())
    }

    /// An event by ID, fetched from `origin` (and kept as an outlier) when not held here.
    pub(crate) async fn pdu_or_fetch(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        rules: &RoomVersionRules,
    ) -> Result<Option<Arc<Pdu>>> {
        self.fetch_with_budget(origin, room_id, event_id, rules, FETCH_DEPTH).await
    }

    async fn fetch_with_budget(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        rules: &RoomVersionRules,
        budget: u32,
    ) -> Result<Option<Arc<Pdu>>> {
        if let Some(p) = self.pdu(event_id.as_str()).await? {
            return Ok(Some(p));
        }
        let response =
            match self.send_federation_request(origin, get_event::v1::Request::new(event_id.to_owned())).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(%origin, %event_id, error = %e.message, "cannot fetch an event");
                    return Ok(None);
                }
            };
        // Its own auth events first (a short chain at most), so it can be checked.
        if budget > 0
            && let Ok(obj) = serde_json::from_str::<CanonicalJsonObject>(response.pdu.get())
            && let Some(auth) = obj.get("auth_events").and_then(|a| a.as_array())
        {
            for id in auth.iter().filter_map(|v| v.as_str()).filter_map(|v| OwnedEventId::try_from(v).ok()) {
                Box::pin(self.fetch_with_budget(origin, room_id, &id, rules, budget - 1)).await?;
            }
        }
        self.store_outlier(&response.pdu, room_id, rules, Some(event_id)).await
    }

    /// Verifies a PDU and keeps it as an outlier. With `expected`, an event whose ID differs
    /// is refused. Events that fail verification are dropped (logged), not errors.
    pub(crate) async fn store_outlier(
        &self,
        raw: &RawValue,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        expected: Option<&EventId>,
    ) -> Result<Option<Arc<Pdu>>> {
        let obj: CanonicalJsonObject = match serde_json::from_str(raw.get()) {
            Ok(o) => o,
            Err(e) => {
                tracing::info!(error = %e, "dropping a malformed fetched event");
                return Ok(None);
            }
        };
        let pdu = match self.verify_pdu_object(obj, room_id, rules).await {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(error = %e.message, "dropping a fetched event that fails verification");
                return Ok(None);
            }
        };
        if expected.is_some_and(|id| id != pdu.event_id) || pdu.room_id != room_id {
            tracing::info!(event_id = %pdu.event_id, "dropping a fetched event that is not the one asked for");
            return Ok(None);
        }
        self.keep_outlier(rules, pdu).await
    }

    /// Keeps a verified event as an outlier if its held auth events allow it.
    pub(crate) async fn keep_outlier(&self, rules: &RoomVersionRules, pdu: Arc<Pdu>) -> Result<Option<Arc<Pdu>>> {
        let room_id = pdu.room_id.clone();
        if self.pdu(pdu.event_id.as_str()).await?.is_some() {
            return Ok(Some(pdu));
        }
        // Kept only if its own auth events (already held: callers store a chain oldest
        // first) allow it; otherwise it could later pose as an auth event or as state.
        if let Some((reason, permanent)) = self.check_auth_events(None, rules, &pdu).await? {
            tracing::info!(event_id = %pdu.event_id, %reason, "refusing a fetched event");
            if permanent {
                self.store
                    .insert_rejected(pdu.event_id.as_str(), room_id.as_str(), &pdu.json_string(), &reason, now_ms())
                    .await?;
            }
            return Ok(None);
        }
        self.store.insert_outlier(pdu.event_id.as_str(), room_id.as_str(), &pdu.json_string()).await?;
        Ok(Some(pdu))
    }

    /// Fills the gap between this server's forward extremities and `pdu` with
    /// `get_missing_events`, oldest first.
    async fn fetch_missing_events(
        &self,
        origin: &ServerName,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        recursion: u32,
    ) -> Result<()> {
        let earliest: Vec<OwnedEventId> = self
            .store
            .forward_extremities(pdu.room_id.as_str())
            .await?
            .iter()
            .filter_map(|e| OwnedEventId::try_from(e.as_str()).ok())
            .collect();
        let mut request =
            get_missing_events::v1::Request::new(pdu.room_id.clone(), earliest, vec![pdu.event_id.clone()]);
        request.limit = UInt::from(MISSING_EVENTS_LIMIT);
        let response = match self.send_federation_request(origin, request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%origin, error = %e.message, "get_missing_events failed");
                return Ok(());
            }
        };
        let mut events = Vec::new();
        for raw in &response.events {
            let obj: CanonicalJsonObject = match serde_json::from_str(raw.get()) {
                Ok(o) => o,
                Err(_) => continue,
            };
            match self.verify_pdu_object(obj, &pdu.room_id, rules).await {
                Ok(p) if p.room_id == pdu.room_id => events.push(p),
                Ok(p) => tracing::info!(event_id = %p.event_id, "dropping a missing event of another room"),
                Err(e) => tracing::info!(error = %e.message, "dropping a missing event that fails verification"),
            }
        }
        events.sort_by_key(|p| p.depth);
        for p in events {
            if p.event_id == pdu.event_id {
                continue;
            }
            // One level only: the events of a gap do not fetch gaps of their own.
            match Box::pin(self.ingest_locked(origin, rules, p, Vec::new(), recursion + 1)).await {
                Ok(outcome) => tracing::debug!(?outcome, "filled a gap"),
                Err(e) => tracing::info!(error = %e.message, "an event of a gap could not be stored"),
            }
        }
        Ok(())
    }

    /// The state after an event this server does not hold: the state before it (from
    /// `origin`'s `/state`) plus the event itself.
    async fn state_after_remote(
        &self,
        origin: &ServerName,
        rules: &RoomVersionRules,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<StateMap> {
        let response = self
            .send_federation_request(origin, get_room_state::v1::Request::new(event_id.to_owned(), room_id.to_owned()))
            .await?;
        for raw in &response.auth_chain {
            self.store_outlier(raw, room_id, rules, None).await?;
        }
        let mut state = StateMap::new();
        for raw in &response.pdus {
            if let Some(p) = self.store_outlier(raw, room_id, rules, None).await?
                && let Some(k) = &p.state_key
            {
                state.insert((p.kind.to_string(), k.clone()), p.event_id.to_string());
            }
        }
        if let Some(p) = self.pdu_or_fetch(origin, room_id, event_id, rules).await?
            && let Some(k) = &p.state_key
        {
            state.insert((p.kind.to_string(), k.clone()), p.event_id.to_string());
        }
        Ok(state)
    }

    /// Refuses a server the room's `m.room.server_acl` denies.
    pub async fn check_server_acl(&self, room_id: &RoomId, server: &ServerName) -> Result<()> {
        let Some(id) = self.store.current_state_event(room_id.as_str(), "m.room.server_acl", "").await? else {
            return Ok(());
        };
        let Some(acl) = self.pdu(&id).await? else { return Ok(()) };
        let content: ruma::events::room::server_acl::RoomServerAclEventContent =
            match serde_json::from_str(acl.content.get()) {
                Ok(c) => c,
                // A malformed ACL denies no one rather than everyone.
                Err(_) => return Ok(()),
            };
        if content.is_allowed(server) {
            Ok(())
        } else {
            Err(Error::forbidden(format!("server {server} is denied by the room's server ACL")))
        }
    }
}
