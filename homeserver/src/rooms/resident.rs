//! Membership across servers, as the server in the room: other servers' users join and
//! leave through this one (make_join/send_join, make_leave/send_leave), and invites
//! from other servers to local users arrive here (invite v2). A local member vouches for
//! joins to a restricted room, and joins that race each other are made known to every
//! server in the room.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId,
    ServerName, UserId, api::federation::membership::RawStrippedState, events::TimelineEventType,
    room_version_rules::RoomVersionRules, state_res,
};
use serde_json::{Value, json, value::RawValue};

use super::{Ingested, Pdu, StateMap, append::Parents, remote::raw, version_rules};
use crate::services::Services;
use kairan_core::{
    error::{Error, Result},
    time::now_ms,
};

/// The most state events a joiner is sent after its join that its send_join answer lacked
/// (joins and changes racing its own); more than that many in the moment of one join is no
/// race, and the joiner catches up from later events.
const MAX_MISSED_STATE: usize = 100;

/// What a joining server receives: the state before its join and that state's auth chain.
pub struct JoinedState {
    pub state: Vec<Box<RawValue>>,
    pub auth_chain: Vec<Box<RawValue>>,
    pub event: Box<RawValue>,
    pub servers_in_room: Vec<String>,
}

impl Services {
    /// make_join / make_leave: a template of the membership event for a remote user.
    pub async fn make_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        membership: &str,
        supported: &[RoomVersionId],
    ) -> Result<(RoomVersionId, Value)> {
        if user.server_name() != origin {
            return Err(Error::forbidden(format!("{origin} cannot act for {user}")));
        }
        self.check_server_acl(room_id, origin).await?;
        if !self.is_resident(room_id, None).await? {
            return Err(Error::not_found(format!("this server is not in room {room_id}")));
        }
        // A room an administrator shut down takes no one in, from here or elsewhere.
        if membership != "leave" {
            self.check_room_not_blocked(room_id).await?;
        }
        let version = self.store.room_version(room_id.as_str()).await?.unwrap_or_default();
        let room_version = RoomVersionId::try_from(version.as_str()).map_err(|e| Error::internal("room version", e))?;
        if membership != "leave" && !supported.contains(&room_version) {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                "M_INCOMPATIBLE_ROOM_VERSION",
                format!("the room has version {version}, which {origin} does not support"),
            )
            .with_body(json!({ "room_version": version })));
        }
        let rules = version_rules(&version).ok_or_else(|| Error::unsupported_room_version(version.clone()))?;
        if membership == "knock" && !rules.authorization.knocking {
            return Err(Error::forbidden(format!("room version {version} does not allow knocking")));
        }
        let parents = self.parents(room_id).await?;
        let mut content = json!({ "membership": membership });
        if membership == "join"
            && let Some(authoriser) = self.join_authoriser(&rules, &parents.state_before, user).await?
        {
            content["join_authorised_via_users_server"] = authoriser.as_str().into();
        }
        let content_raw = serde_json::value::to_raw_value(&content).map_err(|e| Error::internal("content", e))?;
        let auth_types = state_res::auth_types_for_event(
            &TimelineEventType::RoomMember,
            user,
            Some(user.as_str()),
            &content_raw,
            &rules.authorization,
        )
        .map_err(Error::bad_json)?;
        let mut auth_events: Vec<&String> =
            auth_types.iter().filter_map(|(t, k)| parents.state_before.get(&(t.to_string(), k.clone()))).collect();
        let create = parents.state_before.get(&("m.room.create".to_owned(), String::new()));
        if !rules.authorization.room_create_event_id_as_room_id
            && let Some(c) = create
            && !auth_events.contains(&c)
        {
            auth_events.push(c);
        }
        let template = json!({
            "room_id": room_id,
            "sender": user,
            "origin": self.server_name(),
            "origin_server_ts": now_ms(),
            "type": "m.room.member",
            "state_key": user,
            "content": content,
            "prev_events": parents.prev_events,
            "auth_events": auth_events,
            "depth": parents.depth,
        });
        // Refuse now what the room would refuse anyway (not invited, banned, ...).
        let mut probe: CanonicalJsonObject =
            serde_json::from_value(template.clone()).map_err(|e| Error::internal("template", e))?;
        probe.remove("origin");
        let probe_id = OwnedEventId::try_from("$probe").map_err(|e| Error::internal("probe", e))?;
        let probe = Arc::new(Pdu::from_json(probe_id, room_id, probe).map_err(Error::bad_json)?);
        self.authorise(&rules, &probe, &parents.state_before).await?;
        Ok((room_version, template))
    }

    /// send_join / send_leave: the membership event a remote server signed, checked
    /// and stored like any received event, then passed on to the room's other servers.
    pub async fn receive_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawValue,
        membership: &str,
    ) -> Result<JoinedState> {
        self.check_server_acl(room_id, origin).await?;
        if !self.is_resident(room_id, None).await? {
            return Err(Error::not_found(format!("this server is not in room {room_id}")));
        }
        if membership != "leave" {
            self.check_room_not_blocked(room_id).await?;
        }
        let countersigned = match membership {
            "join" => Some(self.countersign_join(room_id, pdu).await?),
            _ => None,
        };
        let (rules, pdu) = self.verified_pdu(countersigned.as_deref().unwrap_or(pdu), Some(room_id)).await?;
        let content = pdu.content_value();
        if pdu.event_id != event_id
            || pdu.room_id != room_id
            || pdu.kind != TimelineEventType::RoomMember
            || pdu.state_key.as_deref() != Some(pdu.sender.as_str())
            || pdu.sender.server_name() != origin
            || content.get("membership").and_then(Value::as_str) != Some(membership)
        {
            return Err(Error::bad_json(format!("not a {membership} event of a user of {origin} for this room")));
        }
        let fan_out: Vec<String> = self
            .room_servers(room_id.as_str())
            .await?
            .into_iter()
            .filter(|s| s != origin)
            .map(|s| s.to_string())
            .collect();
        let budget = super::FetchBudget::for_transaction();
        let accepted = match self.ingest_prepared(origin, &rules, pdu.clone(), fan_out.clone(), &budget).await? {
            Ingested::Accepted(_) => true,
            Ingested::AlreadyKnown => false,
            Ingested::SoftFailed(reason) | Ingested::Rejected(reason) => return Err(Error::forbidden(reason)),
        };
        let row = match self.store.event(event_id.as_str()).await? {
            Some(r) if r.stream_ordering != 0 => r,
            // Known, but refused before (a retry of a rejected join).
            _ => return Err(Error::forbidden(format!("{event_id} was refused by this server"))),
        };
        let state = self.state_at_group(row.state_group_before).await?;
        if membership == "join" {
            self.spread_concurrent_join(origin, &pdu, accepted.then_some(fan_out.as_slice()), &state).await?;
        }
        let servers_in_room = self.room_servers(room_id.as_str()).await?.iter().map(|s| s.to_string()).collect();
        let mut joined = JoinedState { state: Vec::new(), auth_chain: Vec::new(), event: raw(&pdu)?, servers_in_room };
        if membership == "knock" {
            // A knocking server sees what an invited one would: name, topic, join rules...
            for ((t, _), id) in state.iter() {
                if super::remote::INVITE_STATE_TYPES.contains(&t.as_str())
                    && let Some(p) = self.pdu(id).await?
                {
                    joined.state.push(raw(&p)?);
                }
            }
            return Ok(joined);
        }
        if membership != "join" {
            return Ok(joined);
        }
        let ids: Vec<OwnedEventId> = state.values().filter_map(|id| OwnedEventId::try_from(id.as_str()).ok()).collect();
        let mut loaded = std::collections::HashMap::new();
        let chain = self.auth_chain(&ids, &mut loaded).await?;
        for id in &ids {
            if let Some(p) = self.pdu(id.as_str()).await? {
                joined.state.push(raw(&p)?);
            }
        }
        for id in chain {
            if let Some(p) = loaded.get(&id) {
                joined.auth_chain.push(raw(p)?);
            }
        }
        Ok(joined)
    }

    /// invite v2: another server invites a local user. The invite is countersigned and,
    /// when no local user is in the room, kept with the state the inviter showed.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        room_version: &RoomVersionId,
        event: &RawValue,
        invite_state: &[RawStrippedState],
    ) -> Result<Box<RawValue>> {
        let version = room_version.to_string();
        let rules = version_rules(&version).ok_or_else(|| {
            Error::new(
                http::StatusCode::BAD_REQUEST,
                "M_INCOMPATIBLE_ROOM_VERSION",
                format!("room version {version} is not supported here"),
            )
            .with_body(json!({ "room_version": version }))
        })?;
        if self.store.room_version(room_id.as_str()).await?.is_some() {
            self.check_server_acl(room_id, origin).await?;
        }
        let obj: CanonicalJsonObject =
            serde_json::from_str(event.get()).map_err(|e| Error::bad_json(format!("invite event: {e}")))?;
        let pdu = self.verify_pdu_object(obj, room_id, &rules).await?;
        let target = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok());
        let invited = pdu.kind == TimelineEventType::RoomMember
            && pdu.content_value().get("membership").and_then(Value::as_str) == Some("invite");
        let Some(target) = target.filter(|_| invited && pdu.event_id == event_id && pdu.room_id == room_id) else {
            return Err(Error::bad_json("not an invite event for this room"));
        };
        if pdu.sender.server_name() != origin {
            return Err(Error::forbidden(format!("{origin} cannot invite on behalf of {}", pdu.sender)));
        }
        if !self.is_local(&target) || self.store.user(target.as_str()).await?.is_none() {
            return Err(Error::not_found(format!("no user {target} here")));
        }
        // Over the event as the room version redacts it, like every signature on an event.
        let mut signed = pdu.json.clone();
        ruma::signatures::sign_event(self.server_name().as_str(), &self.keys.key_pair, &mut signed, &rules.redaction)
            .map_err(|e| Error::internal("signing invite", e))?;
        let signed_pdu = Arc::new(Pdu::from_json(pdu.event_id.clone(), room_id, signed).map_err(Error::bad_json)?);

        // A room with a local member receives the invite through its transactions too.
        if !self.is_resident(room_id, None).await? {
            self.keep_outsider_membership(&version, &signed_pdu, &target, invite_state).await?;
        }
        raw(&signed_pdu)
    }

    /// Stores a local user's invite to, or knock on, a room this server is not in: the
    /// membership event as the room's only known event, and the stripped state the other
    /// server showed, for the user's sync.
    pub(super) async fn keep_outsider_membership(
        &self,
        version: &str,
        pdu: &Arc<Pdu>,
        target: &UserId,
        invite_state: &[RawStrippedState],
    ) -> Result<()> {
        let room_id = &pdu.room_id;
        let mut stripped = Vec::new();
        let mut creator = pdu.sender.to_string();
        for s in invite_state {
            #[allow(deprecated)]
            let json = match s {
                RawStrippedState::Pdu(p) => p.get().to_owned(),
                RawStrippedState::Stripped(r) => r.json().get().to_owned(),
                _ => continue,
            };
            let Ok(v) = serde_json::from_str::<Value>(&json) else { continue };
            let ev = json!({
                "type": v["type"], "state_key": v["state_key"], "content": v["content"], "sender": v["sender"],
            });
            if v["type"] == "m.room.create"
                && let Some(s) = v["sender"].as_str()
            {
                creator = s.to_owned();
            }
            stripped.push(ev);
        }
        self.store.create_room_row(room_id.as_str(), version, &creator, false, now_ms()).await?;
        self.store
            .set_invite_stripped_state(room_id.as_str(), target.as_str(), &Value::Array(stripped).to_string())
            .await?;
        let lock = self.rooms.lock(room_id);
        let _guard = lock.lock().await;
        if self.store.in_timeline(pdu.event_id.as_str()).await? {
            return Ok(());
        }
        let mut state = self.store.current_state(room_id.as_str()).await?;
        let group = self.store.create_state_group(room_id.as_str(), &state).await?;
        let parents = Parents {
            prev_events: pdu.prev_events.iter().map(|e| e.to_string()).collect(),
            depth: pdu.depth as i64,
            state_group_before: group,
            state_before: Arc::new(state.clone()),
        };
        let rules = self.rules_of(room_id).await?;
        let push_actions = self.push_actions_for(pdu, &parents.state_before, &rules).await?;
        let pdu = self.persist_remote(pdu.clone(), parents, &pdu.sender, push_actions, vec![]).await?;
        state.insert(("m.room.member".to_owned(), target.to_string()), pdu.event_id.to_string());
        self.set_current_state(room_id, &state, Some(&[pdu.event_id.to_string()])).await?;
        Ok(())
    }
}

/// Restricted rooms (room versions 8+): a user who is in one of the rooms the join rule
/// names may join without an invite, if a member who may invite vouches for the join
/// (`join_authorised_via_users_server`) and that member's server signs it.
impl Services {
    /// The local member who vouches for `user`'s join under the restricted join rule in
    /// `state`, or None when the join needs no one (another join rule, or the user is
    /// invited or joined already). Refused as the spec says: `M_FORBIDDEN` when the user is
    /// in none of the allowed rooms as far as this server knows, `M_UNABLE_TO_AUTHORISE_JOIN`
    /// when this server cannot know (it is not in every one), `M_UNABLE_TO_GRANT_JOIN` when
    /// no local member may invite.
    pub(super) async fn join_authoriser(
        &self,
        rules: &RoomVersionRules,
        state: &StateMap,
        user: &UserId,
    ) -> Result<Option<OwnedUserId>> {
        if !self.check_restricted_join(rules, state, user).await? {
            return Ok(None);
        }
        let power = self.power_levels_in(state, rules).await?;
        let mut candidates: Vec<(ruma::events::room::power_levels::UserPowerLevel, OwnedUserId)> = state
            .keys()
            .filter(|(t, _)| t == "m.room.member")
            .filter_map(|(_, k)| UserId::parse(k.as_str()).ok())
            .filter(|u| self.is_local(u) && power.user_can_invite(u))
            .map(|u| (power.for_user(&u), u))
            .collect();
        // The most powerful first, as Synapse picks: the one least likely to lose the power
        // to invite before the join is in.
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, candidate) in candidates {
            if self.membership_in(state, &candidate).await?.as_deref() == Some("join") {
                return Ok(Some(candidate));
            }
        }
        Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            "M_UNABLE_TO_GRANT_JOIN",
            "no member of this server may invite to the room; try a server of another member",
        ))
    }

    /// Whether `user`'s join needs someone to vouch for it under a restricted join rule;
    /// an error when the user is in none of the rooms the rule allows.
    async fn check_restricted_join(&self, rules: &RoomVersionRules, state: &StateMap, user: &UserId) -> Result<bool> {
        let Some(allowed) = self.restricted_allow(rules, state).await? else { return Ok(false) };
        if matches!(self.membership_in(state, user).await?.as_deref(), Some("join" | "invite")) {
            return Ok(false);
        }
        let mut unknown = false;
        for room in &allowed {
            if self.store.membership(room.as_str(), user.as_str()).await?.as_deref() == Some("join") {
                return Ok(true);
            }
            unknown |= !self.is_resident(room, None).await?;
        }
        // A user of another server may be in an allowed room this server is not in.
        if unknown && !self.is_local(user) {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                "M_UNABLE_TO_AUTHORISE_JOIN",
                format!("this server cannot tell whether {user} is in a room that allows joining"),
            ));
        }
        Err(Error::forbidden(format!("{user} is not in any of the rooms whose members may join this one")))
    }

    /// The rooms whose members may join without an invite, when the join rule in `state`
    /// is restricted (or knock_restricted) and the room version has that rule.
    async fn restricted_allow(&self, rules: &RoomVersionRules, state: &StateMap) -> Result<Option<Vec<OwnedRoomId>>> {
        let Some(id) = state.get(&("m.room.join_rules".to_owned(), String::new())) else { return Ok(None) };
        let Some(event) = self.pdu(id).await? else { return Ok(None) };
        let content = event.content_value();
        let restricted = match content.get("join_rule").and_then(Value::as_str) {
            Some("restricted") => rules.authorization.restricted_join_rule,
            Some("knock_restricted") => rules.authorization.knock_restricted_join_rule,
            _ => false,
        };
        if !restricted {
            return Ok(None);
        }
        let allowed = content
            .get("allow")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|rule| rule.get("type").and_then(Value::as_str) == Some("m.room_membership"))
            .filter_map(|rule| rule.get("room_id").and_then(Value::as_str))
            .filter_map(|room| OwnedRoomId::try_from(room).ok())
            .collect();
        Ok(Some(allowed))
    }

    /// The send_join of a join a local user vouches for, with this server's signature added:
    /// without it no server accepts the event. Only this server's users can be vouched
    /// for here, and only when the joiner still meets the join rule.
    async fn countersign_join(&self, room_id: &RoomId, pdu: &RawValue) -> Result<Box<RawValue>> {
        let mut obj: CanonicalJsonObject =
            serde_json::from_str(pdu.get()).map_err(|e| Error::bad_json(format!("PDU is not canonical JSON: {e}")))?;
        let field = |obj: &CanonicalJsonObject, outer: &str, inner: Option<&str>| {
            let value = obj.get(outer)?;
            let value = match inner {
                Some(k) => value.as_object()?.get(k)?,
                None => value,
            };
            value.as_str().map(str::to_owned)
        };
        let Some(authoriser) = field(&obj, "content", Some("join_authorised_via_users_server")) else {
            return Ok(pdu.to_owned());
        };
        let authoriser = UserId::parse(authoriser.as_str())
            .map_err(|e| Error::bad_json(format!("join_authorised_via_users_server: {e}")))?;
        if !self.is_local(&authoriser) {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                "M_UNABLE_TO_GRANT_JOIN",
                format!("this server vouches only for joins through its own users, not {authoriser}"),
            ));
        }
        let sender = field(&obj, "sender", None)
            .and_then(|s| UserId::parse(s.as_str()).ok())
            .ok_or_else(|| Error::bad_json("the join has no valid sender"))?;
        let rules = self.rules_of(room_id).await?;
        let state = self.store.current_state(room_id.as_str()).await?;
        self.check_restricted_join(&rules, &state, &sender).await?;
        // The event ID is derived, never part of the signed event.
        obj.remove("event_id");
        ruma::signatures::sign_event(self.server_name().as_str(), &self.keys.key_pair, &mut obj, &rules.redaction)
            .map_err(|e| Error::bad_json(format!("cannot countersign the join: {e}")))?;
        serde_json::value::to_raw_value(&obj).map_err(|e| Error::internal("countersigned join", e))
    }
}

/// Joins at the same moment.
impl Services {
    /// Joins racing each other split the room: each joiner is answered with the state
    /// before its own join, and each join goes to the servers in the room when it arrived.
    /// Once `pdu` is in, with the room locked (every join stored before it is complete),
    /// the servers that joined since the join was passed on to `told` get it too, and the
    /// joiner gets what the current state holds that its answer, `given`, did not
    /// (Synapse ties the extremities together with a dummy event for the same end).
    async fn spread_concurrent_join(
        &self,
        origin: &ServerName,
        pdu: &Pdu,
        told: Option<&[String]>,
        given: &StateMap,
    ) -> Result<()> {
        let room_id = pdu.room_id.as_str();
        let lock = self.rooms.lock(&pdu.room_id);
        let _guard = lock.lock().await;
        if let Some(told) = told {
            let late: Vec<OwnedServerName> = self
                .room_servers(room_id)
                .await?
                .into_iter()
                .filter(|s| s != origin && !told.iter().any(|t| t == s.as_str()))
                .collect();
            if !late.is_empty() {
                tracing::debug!(%room_id, servers = ?late, event_id = %pdu.event_id, "passing on a join to servers that joined meanwhile");
                self.queue_pdus(&late, &[pdu.json_string()]).await?;
            }
        }
        let mut missed = Vec::new();
        for (key, id) in self.store.current_state(room_id).await? {
            if id == pdu.event_id.as_str() || given.get(&key) == Some(&id) {
                continue;
            }
            if let Some(p) = self.pdu(&id).await? {
                missed.push(p);
            }
            if missed.len() >= MAX_MISSED_STATE {
                break;
            }
        }
        if missed.is_empty() {
            return Ok(());
        }
        // Parents before children, so the joiner can take each as it comes.
        missed.sort_by_key(|p| (p.depth, p.origin_server_ts));
        tracing::debug!(%room_id, %origin, events = missed.len(), "sending a joiner the state its answer lacked");
        let payloads: Vec<String> = missed.iter().map(|p| p.json_string()).collect();
        self.queue_pdus(&[origin.to_owned()], &payloads).await
    }
}
