//! Events from other servers: checked as the spec's "checks performed on receipt of a
//! PDU" demand, then stored in the room's DAG.
//!
//! In order: format; event ID from the reference hash; the room's server ACL; the
//! signatures of the servers that must sign (a content hash that does not match means
//! the event is kept redacted); authorisation against its own auth events; missing
//! prev events fetched (`get_missing_events`, else the state at them); authorisation
//! against the state before the event (rejected otherwise); and against the current
//! state (soft-failed otherwise: kept, but not in the timeline).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedRoomId, RoomId, ServerName, UInt,
    api::federation::event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
    canonical_json::redact,
    room_version_rules::RoomVersionRules,
    signatures::Verified,
    state_res,
};
use serde_json::value::RawValue;

use super::{Pdu, StateMap, append::Parents, version_rules};
use crate::services::Services;
use kairan_core::{
    error::{Error, Result},
    time::now_ms,
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

/// Requests to the origin one received PDU may cause (its auth events and theirs, a gap,
/// the state at the gap), and one transaction in all; each answer is itself limited in
/// size and time by the federation client.
const FETCHES_PER_PDU: u32 = 50;
const FETCHES_PER_TRANSACTION: u32 = 200;
/// Time one transaction may spend fetching; what is not had by then is refused for now
/// (the sender retries, or a later event brings it).
const FETCH_TIME_PER_TRANSACTION: Duration = Duration::from_secs(20);
/// Most states one PDU's gaps may cause asking for, and `/state` requests one
/// transaction's (each answer may be 16 MiB); `/state_ids` answers are a few KiB in an
/// honest room, so more of them are allowed (a burst of joins needs one per join).
const STATE_FETCHES_PER_PDU: usize = 3;
const STATE_FETCHES_PER_TRANSACTION: u32 = 5;
const STATE_IDS_FETCHES_PER_TRANSACTION: u32 = 25;

/// What another server may make this one fetch on its behalf: requests per PDU and per
/// transaction, and a deadline. Shared by everything one transaction (or one join, one
/// backfill) causes, so a crafted event cannot make the work grow without bound.
#[derive(Debug)]
pub struct FetchBudget {
    transaction_left: AtomicU32,
    pdu_left: AtomicU32,
    states_left: AtomicU32,
    state_ids_left: AtomicU32,
    deadline: Instant,
}

impl FetchBudget {
    /// The budget of one inbound transaction (or another request from a server).
    pub fn for_transaction() -> Self {
        Self {
            transaction_left: AtomicU32::new(FETCHES_PER_TRANSACTION),
            pdu_left: AtomicU32::new(FETCHES_PER_PDU),
            states_left: AtomicU32::new(STATE_FETCHES_PER_TRANSACTION),
            state_ids_left: AtomicU32::new(STATE_IDS_FETCHES_PER_TRANSACTION),
            deadline: Instant::now() + FETCH_TIME_PER_TRANSACTION,
        }
    }

    /// Starts the share of the next PDU.
    pub fn next_pdu(&self) {
        self.pdu_left.store(FETCHES_PER_PDU, Ordering::Relaxed);
    }

    /// Takes one request from the budget; false when it is spent or out of time.
    fn take(&self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        take(&self.pdu_left) && take(&self.transaction_left)
    }

    /// Takes one `/state` request (and one request) from the budget.
    fn take_state(&self) -> bool {
        take(&self.states_left) && self.take()
    }

    /// Takes one `/state_ids` request (and one request) from the budget.
    fn take_state_ids(&self) -> bool {
        take(&self.state_ids_left) && self.take()
    }

    fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Takes one from a counter unless it is at zero.
fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1)).is_ok()
}

/// What was fetched for a PDU before the room was locked: the events of a gap before it
/// (verified, oldest first) and the state after prev events that no one here holds.
#[derive(Default)]
pub(crate) struct Prepared {
    gap: Vec<Arc<Pdu>>,
    states: HashMap<OwnedEventId, Arc<StateMap>>,
}

impl Services {
    /// Checks and stores one PDU of a transaction from `origin`; what it makes this server
    /// fetch comes out of `budget`.
    pub async fn ingest_pdu(
        &self,
        origin: &ServerName,
        raw: &RawValue,
        budget: &FetchBudget,
    ) -> Result<(OwnedEventId, Ingested)> {
        budget.next_pdu();
        // A room a local user is joining through another server right now: its servers
        // send it events as soon as they accept the join, before this server has stored it.
        if self.rooms.joins_under_way()
            && let Some(room_id) = room_id_of(raw)
        {
            self.rooms.wait_for_join(&room_id).await;
        }
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
        Ok((event_id, self.ingest_prepared(origin, &rules, pdu, Vec::new(), budget).await?))
    }

    /// Fetches what a checked PDU needs (without the room's lock: local sends to the room
    /// go on while another server is slow or hostile), then stores it with the room locked.
    pub(crate) async fn ingest_prepared(
        &self,
        origin: &ServerName,
        rules: &RoomVersionRules,
        pdu: Arc<Pdu>,
        fan_out: Vec<String>,
        budget: &FetchBudget,
    ) -> Result<Ingested> {
        let event_id = pdu.event_id.as_str();
        if self.store.in_timeline(event_id).await? || self.store.is_rejected(event_id).await? {
            return Ok(Ingested::AlreadyKnown);
        }
        let prepared = match tokio::time::timeout(budget.time_left(), self.prepare(origin, rules, &pdu, budget)).await {
            Ok(prepared) => prepared?,
            Err(_) => {
                tracing::info!(%origin, %event_id, "fetching for a received event ran out of time");
                Prepared::default()
            }
        };
        let lock = self.rooms.lock(&pdu.room_id);
        let _guard = lock.lock().await;
        self.ingest_locked(rules, pdu, fan_out, &prepared, 0).await
    }

    /// The network part of receiving `pdu`: its auth events, the events of a gap before it
    /// (with theirs), and the state after prev events that remain unknown.
    async fn prepare(
        &self,
        origin: &ServerName,
        rules: &RoomVersionRules,
        pdu: &Arc<Pdu>,
        budget: &FetchBudget,
    ) -> Result<Prepared> {
        let mut prepared = Prepared::default();
        self.fetch_auth_events(origin, rules, pdu, budget).await?;
        // An event its own auth events refuse (or whose auth events no one gave) is refused
        // before its gaps matter: nothing more is fetched for it.
        if self.check_auth_events(rules, pdu).await?.is_some() {
            return Ok(prepared);
        }
        let mut missing = false;
        for prev in &pdu.prev_events {
            missing |= self.held_state(prev).await?.is_none();
        }
        if !missing {
            return Ok(prepared);
        }
        prepared.gap = self.fetch_missing_events(origin, rules, pdu, budget).await?;
        for event in &prepared.gap {
            self.fetch_auth_events(origin, rules, event, budget).await?;
        }
        // Prev events neither held nor brought by the gap: the state after them, asked of
        // the origin. A gap event refused here before (rejected, soft-failed) will not join
        // the timeline either, so its state is asked for too; so is an invite held from
        // before the join, whether or not the gap brings it again (it is held without it).
        let mut known: HashSet<&EventId> = HashSet::new();
        for p in &prepared.gap {
            let held_without_state =
                self.store.in_timeline(p.event_id.as_str()).await? && self.held_state(&p.event_id).await?.is_none();
            if !held_without_state && !self.store.is_rejected(p.event_id.as_str()).await? {
                known.insert(&p.event_id);
            }
        }
        let mut unknown = Vec::new();
        for event in prepared.gap.iter().chain(std::iter::once(pdu)) {
            // Likewise a gap event its own auth events refuse: the state before it is not needed.
            if event.event_id != pdu.event_id && self.check_auth_events(rules, event).await?.is_some() {
                continue;
            }
            for prev in &event.prev_events {
                if !known.contains(&**prev) && !unknown.contains(prev) && self.held_state(prev).await?.is_none() {
                    unknown.push(prev.clone());
                }
            }
        }
        let mut fetches = 0;
        for prev in unknown {
            if let Some(state) = self.rooms.fetched_state(&prev) {
                prepared.states.insert(prev, state);
                continue;
            }
            // A state that could not be had a moment ago is not asked for again at once.
            if fetches == STATE_FETCHES_PER_PDU || self.rooms.state_fetch_failed_recently(&prev) {
                continue;
            }
            if !budget.take_state_ids() {
                tracing::info!(%origin, %prev, "not fetching the state at a gap: the budget for this request is spent");
                continue;
            }
            fetches += 1;
            match self.state_after_remote(origin, rules, &pdu.room_id, &prev, budget).await {
                Ok(state) => {
                    let state = Arc::new(state);
                    self.rooms.keep_fetched_state(&prev, state.clone());
                    prepared.states.insert(prev, state);
                }
                Err(e) => {
                    tracing::info!(%origin, %prev, error = %e.message, "cannot fetch the state at a gap");
                    self.rooms.state_fetch_failed(&prev);
                }
            }
        }
        Ok(prepared)
    }

    /// The state after an event, where it is in the timeline here with the room's state
    /// at it. An invite or knock received before this server joined is in the timeline
    /// with only itself as state: an event built on it needs the state at it from another
    /// server.
    async fn held_state(&self, event_id: &EventId) -> Result<Option<Arc<StateMap>>> {
        let Some(row) = self.store.event(event_id.as_str()).await?.filter(|r| r.stream_ordering != 0) else {
            return Ok(None);
        };
        let state = self.state_at_group(row.state_group).await?;
        Ok(state.contains_key(&("m.room.create".to_owned(), String::new())).then_some(state))
    }

    /// Fetches the auth events of `pdu` that are not held (keeping them as outliers).
    pub(crate) async fn fetch_auth_events(
        &self,
        origin: &ServerName,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        budget: &FetchBudget,
    ) -> Result<()> {
        for id in auth_event_ids(rules, pdu)? {
            self.pdu_or_fetch(origin, &pdu.room_id, &id, rules, budget).await?;
        }
        Ok(())
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

    /// The checks after the signatures, with the room locked: only what is held (or was
    /// `prepared`) is used, nothing is fetched. `fan_out` names servers to send the
    /// accepted event on to (a join this server was asked to complete).
    pub(crate) async fn ingest_locked(
        &self,
        rules: &RoomVersionRules,
        pdu: Arc<Pdu>,
        fan_out: Vec<String>,
        prepared: &Prepared,
        recursion: u32,
    ) -> Result<Ingested> {
        let event_id = pdu.event_id.to_string();
        // An outlier (say an auth event fetched earlier) may still join the timeline.
        if self.store.in_timeline(&event_id).await? || self.store.is_rejected(&event_id).await? {
            return Ok(Ingested::AlreadyKnown);
        }
        match self.check_auth_events(rules, &pdu).await? {
            Some((reason, true)) => return self.reject(&pdu, reason).await,
            // Its auth events could not be had now: refused, but not for good.
            Some((reason, false)) => return Ok(Ingested::Rejected(reason)),
            None => {}
        }
        // The events of a gap before it first, oldest first; they do not fill gaps of their own.
        if recursion == 0 {
            for p in &prepared.gap {
                if p.event_id == pdu.event_id {
                    continue;
                }
                match Box::pin(self.ingest_locked(rules, p.clone(), Vec::new(), prepared, recursion + 1)).await {
                    Ok(outcome) => tracing::debug!(?outcome, "filled a gap"),
                    Err(e) => tracing::info!(error = %e.message, "an event of a gap could not be stored"),
                }
            }
        }

        // The state before it, from its prev events' states.
        let mut missing: Vec<OwnedEventId> = Vec::new();
        let mut states = Vec::new();
        for prev in &pdu.prev_events {
            if let Some(state) = prepared.states.get(prev) {
                missing.push(prev.clone());
                states.push(state.clone());
            } else if let Some(state) = self.held_state(prev).await? {
                states.push(state);
            } else {
                return Ok(Ingested::Rejected(format!("prev event {prev} and the state at it are unavailable")));
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

    /// Authorisation of an event by its own auth events, as held here (fetched beforehand,
    /// or stored oldest first as a chain is). `Some((reason, permanent))` when it fails; an
    /// auth event that is not held is not a permanent failure.
    pub(crate) async fn check_auth_events(
        &self,
        rules: &RoomVersionRules,
        pdu: &Arc<Pdu>,
    ) -> Result<Option<(String, bool)>> {
        let mut auth_state = StateMap::new();
        for id in auth_event_ids(rules, pdu)? {
            let Some(p) = self.pdu(id.as_str()).await? else {
                return Ok(Some((format!("auth event {id} unavailable"), false)));
            };
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
        let groups: Vec<i64> = self
            .store
            .forward_extremities_at(room_id.as_str())
            .await?
            .into_iter()
            .filter_map(|(_, at)| at)
            .map(|a| a.0)
            .collect();
        // No extremity in the timeline: nothing to say about the current state.
        if groups.is_empty() {
            return Ok(());
        }
        let state = self.resolve_groups(rules, &groups).await?;
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
        budget: &FetchBudget,
    ) -> Result<Option<Arc<Pdu>>> {
        self.fetch_to_depth(origin, room_id, event_id, rules, budget, FETCH_DEPTH).await
    }

    async fn fetch_to_depth(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        rules: &RoomVersionRules,
        budget: &FetchBudget,
        depth: u32,
    ) -> Result<Option<Arc<Pdu>>> {
        if let Some(p) = self.pdu(event_id.as_str()).await? {
            return Ok(Some(p));
        }
        // An event that could not be had a moment ago is not asked for again at once.
        if self.rooms.fetch_failed_recently(event_id) || self.store.is_rejected(event_id.as_str()).await? {
            return Ok(None);
        }
        if !budget.take() {
            tracing::info!(%origin, %event_id, "not fetching: the budget for this request is spent");
            return Ok(None);
        }
        let response =
            match self.send_federation_request(origin, get_event::v1::Request::new(event_id.to_owned())).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(%origin, %event_id, error = %e.message, "cannot fetch an event");
                    self.rooms.fetch_failed(event_id);
                    return Ok(None);
                }
            };
        // Checked before anything it names is followed: it must be the event asked for, of
        // this room, well-formed and signed.
        let pdu = match self.verified_fetched(&response.pdu, room_id, rules, Some(event_id)).await {
            Some(p) => p,
            None => {
                self.rooms.fetch_failed(event_id);
                return Ok(None);
            }
        };
        // Its own auth events first (a short chain at most), so it can be checked.
        if depth > 0 {
            for id in auth_event_ids(rules, &pdu)? {
                Box::pin(self.fetch_to_depth(origin, room_id, &id, rules, budget, depth - 1)).await?;
            }
        }
        self.keep_outlier(rules, pdu).await
    }

    /// A fetched event, verified: format, event ID, signatures, and (with `expected`) the
    /// ID asked for and the room. `None`, logged, when it fails.
    async fn verified_fetched(
        &self,
        raw: &RawValue,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        expected: Option<&EventId>,
    ) -> Option<Arc<Pdu>> {
        let obj: CanonicalJsonObject = match serde_json::from_str(raw.get()) {
            Ok(o) => o,
            Err(e) => {
                tracing::info!(error = %e, "dropping a malformed fetched event");
                return None;
            }
        };
        let pdu = match self.verify_pdu_object(obj, room_id, rules).await {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(error = %e.message, "dropping a fetched event that fails verification");
                return None;
            }
        };
        if expected.is_some_and(|id| id != pdu.event_id) || pdu.room_id != room_id {
            tracing::info!(event_id = %pdu.event_id, "dropping a fetched event that is not the one asked for");
            return None;
        }
        Some(pdu)
    }

    /// Keeps a room's state and its auth chain as another server gave them (`/state`,
    /// `send_join`): every event verified, then kept oldest first, so that each is checked
    /// against its own auth events, by then held (a server cannot hand over a forged
    /// state, and the order it sent them in does not matter). Returns the state's events
    /// that were kept, by key.
    pub(crate) async fn keep_state(
        &self,
        rules: &RoomVersionRules,
        room_id: &RoomId,
        auth_chain: &[Box<RawValue>],
        state: &[Box<RawValue>],
    ) -> Result<StateMap> {
        let mut received = Vec::new();
        let mut state_ids = HashSet::new();
        for (raw, in_state) in auth_chain.iter().map(|r| (r, false)).chain(state.iter().map(|r| (r, true))) {
            if let Some(p) = self.verified_fetched(raw, room_id, rules, None).await {
                if in_state {
                    state_ids.insert(p.event_id.clone());
                }
                received.push(p);
            }
        }
        received.sort_by_key(|p| (p.depth, p.origin_server_ts));
        received.dedup_by(|a, b| a.event_id == b.event_id);
        let mut kept = StateMap::new();
        for p in received {
            let in_state = state_ids.contains(&p.event_id);
            if let Some(p) = self.keep_outlier(rules, p).await?
                && in_state
                && let Some(k) = &p.state_key
            {
                kept.insert((p.kind.to_string(), k.clone()), p.event_id.to_string());
            }
        }
        Ok(kept)
    }

    /// Keeps a verified event as an outlier if its held auth events allow it.
    pub(crate) async fn keep_outlier(&self, rules: &RoomVersionRules, pdu: Arc<Pdu>) -> Result<Option<Arc<Pdu>>> {
        let room_id = pdu.room_id.clone();
        if self.pdu(pdu.event_id.as_str()).await?.is_some() {
            return Ok(Some(pdu));
        }
        // Kept only if its own auth events (already held: callers store a chain oldest
        // first) allow it; otherwise it could later pose as an auth event or as state.
        if let Some((reason, permanent)) = self.check_auth_events(rules, &pdu).await? {
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

    /// The events between this server's forward extremities and `pdu`, from
    /// `get_missing_events`: verified, of this room, oldest first (not yet stored).
    async fn fetch_missing_events(
        &self,
        origin: &ServerName,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        budget: &FetchBudget,
    ) -> Result<Vec<Arc<Pdu>>> {
        if !budget.take() {
            return Ok(Vec::new());
        }
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
        // Not below what this server holds (Synapse's habit): a server that joined lately
        // would otherwise take the room's earlier history, which it holds as the state its
        // join came with, into its timeline as new events.
        if let Some(depth) = self.store.min_depth(pdu.room_id.as_str()).await? {
            request.min_depth = UInt::try_from(depth.max(0) as u64).unwrap_or_default();
        }
        let response = match self.send_federation_request(origin, request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%origin, error = %e.message, "get_missing_events failed");
                return Ok(Vec::new());
            }
        };
        let mut events = Vec::new();
        // More than asked for is not read.
        for raw in response.events.iter().take(MISSING_EVENTS_LIMIT as usize) {
            if let Some(p) = self.verified_fetched(raw, &pdu.room_id, rules, None).await
                && p.event_id != pdu.event_id
            {
                events.push(p);
            }
        }
        events.sort_by_key(|p| p.depth);
        Ok(events)
    }

    /// The state after an event this server does not hold (or holds without it): the state
    /// before it, plus the event itself. Asked as IDs (`/state_ids`, a few KiB; the caller
    /// has taken it from `budget`): the siblings of a join build on what the join brought,
    /// so every event is usually held already; otherwise as whole events with their auth
    /// chain (`/state`).
    async fn state_after_remote(
        &self,
        origin: &ServerName,
        rules: &RoomVersionRules,
        room_id: &RoomId,
        event_id: &EventId,
        budget: &FetchBudget,
    ) -> Result<StateMap> {
        let ids = self
            .send_federation_request(
                origin,
                get_room_state_ids::v1::Request::new(event_id.to_owned(), room_id.to_owned()),
            )
            .await?;
        let mut state = StateMap::new();
        let mut complete = true;
        for id in &ids.pdu_ids {
            match self.pdu(id.as_str()).await? {
                Some(p) if p.room_id == room_id => {
                    if let Some(k) = &p.state_key {
                        state.insert((p.kind.to_string(), k.clone()), p.event_id.to_string());
                    }
                }
                _ => {
                    complete = false;
                    break;
                }
            }
        }
        if !complete {
            if !budget.take_state() {
                return Err(Error::unavailable("the budget for fetching is spent"));
            }
            let response = self
                .send_federation_request(
                    origin,
                    get_room_state::v1::Request::new(event_id.to_owned(), room_id.to_owned()),
                )
                .await?;
            state = self.keep_state(rules, room_id, &response.auth_chain, &response.pdus).await?;
        }
        if let Some(p) = self.pdu_or_fetch(origin, room_id, event_id, rules, budget).await?
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

/// The auth events an event names, with (in v12 rooms) its create event, which the room
/// ID names instead.
fn auth_event_ids(rules: &RoomVersionRules, pdu: &Pdu) -> Result<Vec<OwnedEventId>> {
    let mut ids: Vec<OwnedEventId> = pdu.auth_events.clone();
    if rules.authorization.room_create_event_id_as_room_id {
        let create = OwnedEventId::try_from(format!("${}", pdu.room_id.as_str().trim_start_matches('!')))
            .map_err(|e| Error::bad_json(format!("room ID: {e}")))?;
        if create != pdu.event_id {
            ids.push(create);
        }
    }
    Ok(ids)
}

/// The room ID a raw PDU names, if it is one.
fn room_id_of(raw: &RawValue) -> Option<OwnedRoomId> {
    #[derive(serde::Deserialize)]
    struct RoomOnly {
        room_id: OwnedRoomId,
    }
    serde_json::from_str::<RoomOnly>(raw.get()).ok().map(|r| r.room_id)
}
