//! Appending a local event to a room: select prev and auth events, hash, sign,
//! authorise against the state before it, persist, and wake waiting syncs.

use std::{collections::HashMap, sync::Arc};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, RoomId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res,
};
use serde_json::{Value, json};

use super::{Pdu, StateMap, version_rules};
use crate::{
    services::Services,
    storage::{NewEvent, StateDelta},
};
use kairan_core::{
    error::{Error, Result},
    time::now_ms,
};

/// What a local user wants to add to a room; the rest of the PDU is kairan's to fill in.
#[derive(Debug, Clone)]
pub struct EventTemplate {
    pub kind: String,
    pub content: Value,
    pub state_key: Option<String>,
    /// The event a redaction redacts: written where the room version keeps it (the top
    /// level before v11, the content from v11).
    pub redacts: Option<OwnedEventId>,
}

impl EventTemplate {
    pub fn state(kind: impl Into<String>, state_key: impl Into<String>, content: Value) -> Self {
        Self { kind: kind.into(), content, state_key: Some(state_key.into()), redacts: None }
    }

    pub fn message(kind: impl Into<String>, content: Value) -> Self {
        Self { kind: kind.into(), content, state_key: None, redacts: None }
    }

    /// A redaction of `target`, with the reason if one is given.
    pub fn redaction(target: OwnedEventId, reason: Option<&str>) -> Self {
        let content = match reason {
            Some(reason) => json!({ "reason": reason }),
            None => json!({}),
        };
        Self { kind: "m.room.redaction".to_owned(), content, state_key: None, redacts: Some(target) }
    }
}

/// The device transaction that produced an event, for idempotency and local echo.
#[derive(Debug, Clone)]
pub struct Txn {
    pub device_id: String,
    pub txn_id: String,
    /// The request the transaction ID belongs to: a client may reuse an ID on another
    /// path (another room, another event type), which is another request.
    pub scope: String,
}

impl Txn {
    /// The idempotency key: the transaction ID within its request path.
    pub fn key(&self) -> String {
        format!("{}/{}", self.scope, self.txn_id)
    }
}

/// The largest depth canonical JSON can carry.
const MAX_DEPTH: i64 = (1 << 53) - 1;

/// Where a new event attaches to its room.
pub(super) struct Parents {
    pub prev_events: Vec<String>,
    pub depth: i64,
    pub state_group_before: i64,
    pub state_before: Arc<StateMap>,
}

impl Services {
    /// Appends an event from a local user to an existing room and returns it.
    pub async fn append_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        template: EventTemplate,
        txn: Option<Txn>,
    ) -> Result<Arc<Pdu>> {
        self.check_event_policy(room_id, &template.kind).await?;
        let lock = self.rooms.lock(room_id);
        let _guard = lock.lock().await;
        if let Some(txn) = &txn
            && let Some(existing) = self.store.transaction_event(sender.as_str(), &txn.device_id, &txn.key()).await?
        {
            return self.pdu(&existing).await?.ok_or_else(|| Error::internal("transaction", "event vanished"));
        }
        let version = self
            .store
            .room_version(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("unknown room {room_id}")))?;
        let rules = version_rules(&version)
            .ok_or_else(|| Error::internal("room version", format!("stored version {version} unsupported")))?;
        let parents = self.parents(room_id).await?;
        self.build_and_persist(room_id.to_owned(), &rules, sender, template, parents, txn).await
    }

    /// The forward extremities of a room and the state after them (resolved, when
    /// events from other servers forked the room).
    pub(super) async fn parents(&self, room_id: &RoomId) -> Result<Parents> {
        let mut candidates = Vec::new();
        for (id, at) in self.store.forward_extremities_at(room_id.as_str()).await? {
            let (group, event_depth) = match at {
                Some(at) => at,
                None => {
                    let row = self.store.event(&id).await?.ok_or_else(|| Error::internal("extremity", &id))?;
                    let pdu = self.pdu(&id).await?.ok_or_else(|| Error::internal("extremity", &id))?;
                    (row.state_group, pdu.depth as i64)
                }
            };
            candidates.push((id, group, event_depth));
        }
        let mut extremities = Vec::new();
        let mut depth = 0;
        let mut groups = Vec::new();
        for (id, group, event_depth) in choose_parents(candidates) {
            depth = depth.max(event_depth);
            if !groups.contains(&group) {
                groups.push(group);
            }
            extremities.push(id);
        }
        let (state_group_before, state_before) = match groups.as_slice() {
            [] => return Err(Error::not_found(format!("room {room_id} has no events"))),
            [one] => (*one, self.state_at_group(*one).await?),
            _ => {
                let version = self.store.room_version(room_id.as_str()).await?.unwrap_or_default();
                let rules = version_rules(&version)
                    .ok_or_else(|| Error::internal("room version", format!("stored version {version} unsupported")))?;
                let resolved = self.resolve_groups(&rules, &groups).await?;
                let group = self.store.create_state_group(room_id.as_str(), &resolved).await?;
                (group, resolved)
            }
        };
        // Canonical JSON integers stop at 2^53 - 1; a remote event at that depth must not
        // make the room unwritable.
        let depth = (depth + 1).min(MAX_DEPTH);
        Ok(Parents { prev_events: extremities, depth, state_group_before, state_before })
    }

    /// Builds, signs and authorises (but does not persist) an event whose parents are known.
    pub(super) async fn build_event(
        &self,
        room_id: OwnedRoomId,
        rules: &RoomVersionRules,
        sender: &UserId,
        template: EventTemplate,
        parents: &Parents,
    ) -> Result<Arc<Pdu>> {
        self.check_policy_sender(&template.kind, sender)?;
        let redacts = super::redaction::redaction_target(&template)?;
        let kind = TimelineEventType::from(template.kind.as_str());
        let content_raw =
            serde_json::value::to_raw_value(&template.content).map_err(|e| Error::bad_json(format!("content: {e}")))?;
        let auth_types = state_res::auth_types_for_event(
            &kind,
            sender,
            template.state_key.as_deref(),
            &content_raw,
            &rules.authorization,
        )
        .map_err(Error::bad_json)?;
        let mut auth_events = Vec::new();
        for (t, k) in &auth_types {
            if let Some(id) = parents.state_before.get(&(t.to_string(), k.clone())) {
                auth_events.push(id.clone());
            }
        }
        // v12 rooms name their create event through the room ID instead.
        if !rules.authorization.room_create_event_id_as_room_id
            && let Some(id) = parents.state_before.get(&("m.room.create".to_owned(), String::new()))
            && !auth_events.contains(id)
        {
            auth_events.push(id.clone());
        }

        let mut obj = json!({
            "room_id": room_id.as_str(),
            "sender": sender.as_str(),
            "origin_server_ts": now_ms(),
            "type": template.kind,
            "content": template.content,
            "prev_events": &parents.prev_events,
            "auth_events": auth_events,
            "depth": parents.depth,
        });
        if let Some(k) = &template.state_key {
            obj["state_key"] = k.clone().into();
        }
        if let Some(r) = &template.redacts {
            match rules.redaction.content_field_redacts {
                true => obj["content"]["redacts"] = r.as_str().into(),
                false => obj["redacts"] = r.as_str().into(),
            }
        }
        let (pdu, _) = self.sign_pdu(obj, rules, Some(&room_id))?;
        self.authorise(rules, &pdu, &parents.state_before).await?;
        if let Some(target) = &redacts {
            self.check_local_redaction(rules, sender, &room_id, target, &parents.state_before).await?;
        }
        Ok(pdu)
    }

    /// Builds, signs, authorises and persists an event whose parents are known.
    pub(super) async fn build_and_persist(
        &self,
        room_id: OwnedRoomId,
        rules: &RoomVersionRules,
        sender: &UserId,
        template: EventTemplate,
        parents: Parents,
        txn: Option<Txn>,
    ) -> Result<Arc<Pdu>> {
        let pdu = self.build_event(room_id, rules, sender, template, &parents).await?;
        self.persist_checked(rules, pdu, parents, sender, txn).await
    }

    /// Persists a local event built by [`build_event`](Self::build_event).
    pub(super) async fn persist_checked(
        &self,
        rules: &RoomVersionRules,
        pdu: Arc<Pdu>,
        parents: Parents,
        sender: &UserId,
        txn: Option<Txn>,
    ) -> Result<Arc<Pdu>> {
        let push_actions = self.push_actions_for(&pdu, &parents.state_before, rules).await?;
        self.persist_local(pdu, parents, sender, txn, push_actions).await
    }

    /// The rules of a room's version.
    pub async fn rules_of(&self, room_id: &RoomId) -> Result<RoomVersionRules> {
        let version = self
            .store
            .room_version(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("unknown room {room_id}")))?;
        version_rules(&version)
            .ok_or_else(|| Error::internal("room version", format!("stored version {version} unsupported")))
    }

    /// Persists an already signed and authorised local PDU.
    pub(super) async fn persist_local_pdu(&self, pdu: Arc<Pdu>, parents: Parents, sender: &UserId) -> Result<Arc<Pdu>> {
        self.persist_local(pdu, parents, sender, None, vec![]).await
    }

    /// Hashes and signs an event and derives its ID. Returns the PDU and, for a v12
    /// create event, the room ID it founds.
    pub(super) fn sign_pdu(
        &self,
        value: Value,
        rules: &RoomVersionRules,
        room_id: Option<&RoomId>,
    ) -> Result<(Arc<Pdu>, OwnedRoomId)> {
        let mut obj: CanonicalJsonObject = match ruma::canonical_json::to_canonical_value(value) {
            Ok(CanonicalJsonValue::Object(o)) => o,
            Ok(_) => return Err(Error::bad_json("event is not an object")),
            Err(e) => return Err(Error::bad_json(format!("event is not canonical JSON: {e}"))),
        };
        ruma::signatures::hash_and_sign_event(
            self.server_name().as_str(),
            &self.keys.key_pair,
            &mut obj,
            &rules.redaction,
        )
        .map_err(|e| match e {
            ruma::signatures::JsonError::PduTooLarge => Error::too_large("the event is larger than 65535 bytes"),
            e => Error::bad_json(format!("cannot sign event: {e}")),
        })?;
        let hash = ruma::signatures::reference_hash(&obj, rules)
            .map_err(|e| Error::too_large(format!("event cannot be hashed: {e}")))?;
        let event_id = OwnedEventId::try_from(format!("${hash}")).map_err(|e| Error::internal("event id", e))?;
        let room_id = match room_id {
            Some(r) => r.to_owned(),
            None => OwnedRoomId::try_from(format!("!{hash}")).map_err(|e| Error::internal("room id", e))?,
        };
        if let Err(e) = state_res::check_pdu_format(&obj, &rules.event_format) {
            return Err(Error::bad_json(format!("event format: {e}")));
        }
        let pdu = Pdu::from_json(event_id, &room_id, obj).map_err(Error::bad_json)?;
        Ok((Arc::new(pdu), room_id))
    }

    /// Runs the room version's authorisation rules against the state before the event.
    pub(super) async fn authorise(
        &self,
        rules: &RoomVersionRules,
        pdu: &Arc<Pdu>,
        state_before: &StateMap,
    ) -> Result<()> {
        let mut loaded: HashMap<String, Arc<Pdu>> = HashMap::new();
        // v12 events reach their create event through the room ID, not auth_events.
        let create = state_before.get(&("m.room.create".to_owned(), String::new()));
        for id in pdu.auth_events.iter().map(|e| e.as_str()).chain(create.map(String::as_str)) {
            if let Some(p) = self.pdu(id).await? {
                loaded.insert(id.to_owned(), p);
            }
        }
        // Only the state the rules can consult: a room of thousands loads a handful of events.
        let mut keys = state_res::auth_types_for_event(
            &pdu.kind,
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
            &rules.authorization,
        )
        .map_err(Error::bad_json)?;
        keys.push((StateEventType::RoomCreate, String::new()));
        let mut by_key: HashMap<(String, String), Arc<Pdu>> = HashMap::new();
        for (t, k) in keys {
            let key = (t.to_string(), k);
            if let Some(id) = state_before.get(&key)
                && let Some(p) = self.pdu(id).await?
            {
                by_key.insert(key, p);
            }
        }
        let fetch_event = |id: &ruma::EventId| loaded.get(id.as_str()).cloned();
        state_res::check_state_independent_auth_rules(&rules.authorization, &**pdu, fetch_event)
            .map_err(|e| Error::forbidden(format!("event not authorised: {e}")))?;
        let fetch_state = |t: &StateEventType, k: &str| by_key.get(&(t.to_string(), k.to_owned())).cloned();
        state_res::check_state_dependent_auth_rules(&rules.authorization, &**pdu, fetch_state)
            .map_err(|e| Error::forbidden(format!("event not authorised: {e}")))?;
        Ok(())
    }

    async fn persist_local(
        &self,
        pdu: Arc<Pdu>,
        parents: Parents,
        sender: &UserId,
        txn: Option<Txn>,
        push_actions: Vec<crate::storage::PushAction>,
    ) -> Result<Arc<Pdu>> {
        // Every server in the room, and the one a membership change concerns (a kicked
        // server learns of its kick); an invited server got its invite directly.
        let mut servers = self.room_servers(pdu.room_id.as_str()).await?;
        if pdu.kind == TimelineEventType::RoomMember
            && let Some(target) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
            && pdu.content_value().get("membership").and_then(Value::as_str) != Some("invite")
        {
            servers.push(target.server_name().to_owned());
        }
        let destinations = self.allowed_destinations(servers);
        self.persist_pdu(pdu, parents, sender, txn, push_actions, destinations).await
    }

    /// Persists a checked event from another server; `fan_out` are servers to pass it on to.
    pub(super) async fn persist_remote(
        &self,
        pdu: Arc<Pdu>,
        parents: Parents,
        sender: &UserId,
        push_actions: Vec<crate::storage::PushAction>,
        fan_out: Vec<String>,
    ) -> Result<Arc<Pdu>> {
        let destinations =
            self.allowed_destinations(fan_out.iter().filter_map(|s| ruma::OwnedServerName::try_from(s.as_str()).ok()));
        self.persist_pdu(pdu, parents, sender, None, push_actions, destinations).await
    }

    async fn persist_pdu(
        &self,
        pdu: Arc<Pdu>,
        parents: Parents,
        sender: &UserId,
        txn: Option<Txn>,
        push_actions: Vec<crate::storage::PushAction>,
        destinations: Vec<ruma::OwnedServerName>,
    ) -> Result<Arc<Pdu>> {
        let key = pdu.state_key.clone().map(|k| (pdu.kind.to_string(), k));
        let replaces_state = key.as_ref().and_then(|k| parents.state_before.get(k).cloned());
        let content = pdu.content_value();
        let relation = pdu.relation();
        let mut new = NewEvent {
            event_id: pdu.event_id.to_string(),
            room_id: pdu.room_id.to_string(),
            sender: pdu.sender.to_string(),
            event_type: pdu.kind.to_string(),
            state_key: pdu.state_key.clone(),
            depth: pdu.depth as i64,
            origin_server_ts: u64::from(pdu.origin_server_ts.get()) as i64,
            pdu_json: pdu.json_string(),
            prev_events: parents.prev_events,
            state_group_before: parents.state_group_before,
            state_delta: match key {
                Some((event_type, state_key)) => {
                    StateDelta::Set { event_type, state_key, event_id: pdu.event_id.to_string() }
                }
                None => StateDelta::Unchanged,
            },
            replaces_state,
            membership: (pdu.kind == TimelineEventType::RoomMember)
                .then(|| content.get("membership").and_then(Value::as_str).map(str::to_owned))
                .flatten(),
            rel_type: relation.as_ref().map(|r| r.0.clone()),
            relates_to: relation.map(|r| r.1),
            redacts: None,
            withheld_redaction: None,
            redacted_by: None,
            txn_key: txn.as_ref().map(Txn::key),
            txn: txn.map(|t| (sender.to_string(), t.device_id, t.txn_id)),
            push_actions,
            search_text: search_text(&pdu.kind.to_string(), &content),
            destinations: destinations.iter().map(|d| d.to_string()).collect(),
            received: !self.is_local(&pdu.sender),
        };
        self.judge_redactions(&pdu, &parents.state_before, &mut new).await?;
        let (pos, _group) = self.store.persist_event(&new).await?;
        kairan_core::metrics::metrics().event_persisted(self.is_local(&pdu.sender));
        self.rooms.cache_pdu(pdu.clone());
        // A membership change also concerns its target, who may not be in the room yet.
        let audience = kairan_core::notifier::Audience::room(pdu.room_id.as_str());
        let audience = match (&pdu.kind, &pdu.state_key) {
            (TimelineEventType::RoomMember, Some(target)) => audience.and_user(target.as_str()),
            _ => audience,
        };
        self.notifier.advance(pos, audience);
        self.guard_archive_membership(&pdu);
        self.senders.wake(&destinations);
        crate::push::deliver(
            self.store.clone(),
            self.http.clone(),
            std::sync::Arc::new(self.config.push.gateways.clone()),
            pdu.clone(),
            new.push_actions,
        );
        Ok(pdu)
    }

    /// The room's state as of stream position `pos`, as a client should hold it. Where
    /// nothing newer is held that is the current state, which can differ from the state
    /// after the last event: the resolution of a fork, or a join whose state came with
    /// the join (siblings of it are known only there). Earlier, the state after the last
    /// event at `pos`.
    pub async fn state_at_position(&self, room_id: &str, pos: i64) -> Result<Arc<StateMap>> {
        let last = self.store.last_event_at(room_id, pos).await?;
        self.state_as_of(room_id, last.as_ref()).await
    }

    /// [`Self::state_at_position`] for the position of `last`, the room's last event there
    /// (`None`: the room had none yet), for a caller that has read it already.
    pub async fn state_as_of(&self, room_id: &str, last: Option<&crate::storage::EventRow>) -> Result<Arc<StateMap>> {
        let Some(last) = last else {
            return Ok(Arc::default());
        };
        let latest = self.store.last_event_at(room_id, i64::MAX).await?;
        if latest.is_some_and(|l| l.stream_ordering == last.stream_ordering) {
            return Ok(Arc::new(self.store.current_state(room_id).await?));
        }
        self.state_at_group(last.state_group).await
    }

    /// The state map of a state group (cached: groups never change). Group 0 is what an
    /// outlier has (an event known without its place in the room): no state is known there.
    pub async fn state_at_group(&self, group: i64) -> Result<Arc<StateMap>> {
        if group == 0 {
            return Ok(Arc::default());
        }
        if let Some(s) = self.rooms.cached_state(group) {
            return Ok(s);
        }
        let state = Arc::new(self.store.state_group(group).await?);
        self.rooms.cache_state(group, state.clone());
        Ok(state)
    }

    /// A stored PDU by event ID (cached: PDUs never change).
    pub async fn pdu(&self, event_id: &str) -> Result<Option<Arc<Pdu>>> {
        if let Some(p) = self.rooms.cached_pdu(event_id) {
            return Ok(Some(p));
        }
        let Some(row) = self.store.event(event_id).await? else { return Ok(None) };
        let pdu = Pdu::from_stored(&row.event_id, &row.room_id, &row.pdu_json)
            .map_err(|e| Error::internal("stored event unreadable", e))?;
        self.rooms.cache_pdu(pdu.clone());
        Ok(Some(pdu))
    }
}

/// Most parents a new event takes. The format allows 20; taking every extremity would
/// make a server's own events unsendable once it had more (as Synapse, fewer are taken).
const MAX_PREV_EVENTS: usize = 10;

/// The extremities `(event_id, state_group, depth)` a new event builds on: all of them
/// when few, else the newest half and the oldest half of the cap, so the oldest are
/// merged away over the next events instead of lingering.
fn choose_parents(mut candidates: Vec<(String, i64, i64)>) -> Vec<(String, i64, i64)> {
    if candidates.len() <= MAX_PREV_EVENTS {
        return candidates;
    }
    candidates.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let oldest = candidates.split_off(candidates.len() - MAX_PREV_EVENTS / 2);
    candidates.truncate(MAX_PREV_EVENTS - oldest.len());
    candidates.extend(oldest);
    candidates
}

/// What `/search` matches for an event: a message's body, a room's name or topic.
pub(super) fn search_text(kind: &str, content: &Value) -> Option<String> {
    let field = match kind {
        "m.room.message" => "body",
        "m.room.name" => "name",
        "m.room.topic" => "topic",
        _ => return None,
    };
    content.get(field).and_then(Value::as_str).map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parents_are_capped_newest_and_oldest() {
        let many: Vec<(String, i64, i64)> = (0..30).map(|d| (format!("$e{d:02}"), d, d)).collect();
        let chosen: Vec<i64> = super::choose_parents(many).into_iter().map(|c| c.2).collect();
        assert_eq!(chosen, vec![29, 28, 27, 26, 25, 4, 3, 2, 1, 0]);
        let few: Vec<(String, i64, i64)> = (0..3).map(|d| (format!("$e{d}"), d, d)).collect();
        assert_eq!(super::choose_parents(few.clone()), few);
    }
}
