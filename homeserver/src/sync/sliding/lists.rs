//! Which rooms a connection lists: the user's memberships (and rooms it was sent that the
//! user has left since), the lists' filters, the bump stamp that sorts them, the ranges and
//! room subscriptions cut out of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ruma::{
    UserId,
    api::client::sync::sync_events::v5::{self, request::ListFilters},
};

use serde_json::Value;

use super::{DEFAULT_BUMP_EVENT_TYPES, Member, RoomConfig, Sent};
use crate::{services::Services, sync::parse_json};
use kairan_core::{error::Result, notifier::Position};

/// The rooms a request wants.
pub(super) struct Wanted {
    /// Each wanted room, with how to send it.
    pub rooms: BTreeMap<String, RoomConfig>,
    /// Per list, the rooms in its ranges.
    pub in_lists: BTreeMap<String, BTreeSet<String>>,
    /// The rooms subscribed to by ID.
    pub subscribed: BTreeSet<String>,
    /// Per list, how many rooms it holds.
    pub counts: BTreeMap<String, u64>,
}

impl Services {
    /// The rooms the request's lists (filtered, sorted by bump stamp, newest first, cut to
    /// their ranges) and room subscriptions want, with how to send each.
    pub(super) async fn sliding_wanted(
        &self,
        user: &UserId,
        req: &v5::Request,
        bump_event_types: &BTreeMap<String, Vec<String>>,
        memberships: &BTreeMap<String, Member>,
        dm_rooms: &BTreeSet<String>,
    ) -> Result<Wanted> {
        let default_types: Vec<String> = DEFAULT_BUMP_EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect();
        let mut bumps: HashMap<(Vec<String>, bool, String), i64> = HashMap::new();
        let mut counts = BTreeMap::new();
        let mut wanted: BTreeMap<String, RoomConfig> = BTreeMap::new();
        let mut in_lists: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, list) in &req.lists {
            // Explicit types replace the defaults, the user's own membership included.
            let (types, own) = match bump_event_types.get(name) {
                Some(t) => (t, false),
                None => (&default_types, true),
            };
            let mut entries: Vec<(i64, &String)> = Vec::new();
            for (room, m) in memberships {
                if !self.passes_filters(room, m, list.filters.as_ref(), dm_rooms).await? {
                    continue;
                }
                let bump = self.bump_stamp(&mut bumps, room, user, types, own, m).await?;
                entries.push((bump, room));
            }
            entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            counts.insert(name.clone(), entries.len() as u64);
            let in_range = in_lists.entry(name.clone()).or_default();
            for (start, end) in &list.ranges {
                let (start, end) = (u64::from(*start) as usize, u64::from(*end) as usize);
                if end < start {
                    continue;
                }
                for (bump, room) in entries.iter().skip(start).take(end - start + 1) {
                    let config = wanted.entry((*room).clone()).or_default();
                    config.merge(&list.room_details.required_state, list.room_details.timeline_limit);
                    config.bump_stamp.get_or_insert(*bump);
                    in_range.insert((*room).clone());
                }
            }
        }

        // Room subscriptions: rooms the user is in (or has just left), in full.
        let mut subscribed = BTreeSet::new();
        for (room_id, sub) in &req.room_subscriptions {
            let room = room_id.to_string();
            let Some(m) = memberships.get(&room) else { continue };
            let bump = match wanted.get(&room).and_then(|c| c.bump_stamp) {
                Some(b) => b,
                None => self.bump_stamp(&mut bumps, &room, user, &default_types, true, m).await?,
            };
            let config = wanted.entry(room.clone()).or_default();
            config.merge(&sub.required_state, sub.timeline_limit);
            config.bump_stamp.get_or_insert(bump);
            subscribed.insert(room);
        }

        Ok(Wanted { rooms: wanted, in_lists, subscribed, counts })
    }

    /// The rooms a connection may list: those the user is joined to or invited to, and
    /// those it was sent as joined or invited that the user has left since.
    pub(super) async fn sliding_memberships(
        &self,
        user: &UserId,
        sent_before: &BTreeMap<String, Sent>,
        now: Position,
    ) -> Result<BTreeMap<String, Member>> {
        let me = user.as_str();
        let mut out = BTreeMap::new();
        for room in self.store.rooms_with_membership(me, "join").await? {
            out.insert(room, Member { kind: "join", cap: now.stream, event: None });
        }
        for room in self.store.rooms_with_membership(me, "invite").await? {
            let Some(id) = self.store.current_state_event(&room, "m.room.member", me).await? else { continue };
            let Some(row) = self.store.event(&id).await? else { continue };
            out.insert(room, Member { kind: "invite", cap: row.stream_ordering, event: Some(row) });
        }
        for (room, sent) in sent_before {
            if out.contains_key(room) || !matches!(sent.membership.as_str(), "join" | "invite") {
                continue;
            }
            let kind = match self.store.membership(room, me).await?.as_deref() {
                Some("leave") => "leave",
                Some("ban") => "ban",
                _ => continue,
            };
            let Some(id) = self.store.current_state_event(room, "m.room.member", me).await? else { continue };
            let Some(row) = self.store.event(&id).await? else { continue };
            if row.stream_ordering <= now.stream {
                out.insert(room.clone(), Member { kind, cap: row.stream_ordering, event: Some(row) });
            }
        }
        Ok(out)
    }

    /// Rooms named in the user's `m.direct` account data.
    pub(super) async fn direct_rooms(&self, user: &UserId) -> Result<BTreeSet<String>> {
        let Some(json) = self.store.account_data(user.as_str(), "", "m.direct").await? else {
            return Ok(BTreeSet::new());
        };
        let mut out = BTreeSet::new();
        if let Value::Object(by_user) = parse_json(&json) {
            for rooms in by_user.values() {
                out.extend(rooms.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned));
            }
        }
        Ok(out)
    }

    async fn passes_filters(
        &self,
        room: &str,
        m: &Member,
        filters: Option<&ListFilters>,
        dm_rooms: &BTreeSet<String>,
    ) -> Result<bool> {
        let Some(f) = filters else { return Ok(true) };
        if f.is_invite.is_some_and(|invite| invite != (m.kind == "invite")) {
            return Ok(false);
        }
        if f.is_dm.is_some_and(|dm| dm != dm_rooms.contains(room)) {
            return Ok(false);
        }
        if let Some(encrypted) = f.is_encrypted {
            let is = self.store.current_state_event(room, "m.room.encryption", "").await?.is_some();
            if encrypted != is {
                return Ok(false);
            }
        }
        if !f.room_types.is_empty() || !f.not_room_types.is_empty() {
            let create = match self.store.current_state_event(room, "m.room.create", "").await? {
                Some(id) => self.pdu(&id).await?.map(|p| p.content_value()),
                None => None,
            };
            let room_type = create.as_ref().and_then(|c| c.get("type")).and_then(Value::as_str);
            if !f.room_types.is_empty() && !f.room_types.iter().any(|t| t.as_str() == room_type) {
                return Ok(false);
            }
            if f.not_room_types.iter().any(|t| t.as_str() == room_type) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A room's bump stamp: the stream position of its latest event of `types` (or of the
    /// user's own membership, with `own`) while joined; the invite or departure otherwise.
    async fn bump_stamp(
        &self,
        cache: &mut HashMap<(Vec<String>, bool, String), i64>,
        room: &str,
        user: &UserId,
        types: &[String],
        own: bool,
        m: &Member,
    ) -> Result<i64> {
        if m.kind != "join" {
            return Ok(m.cap);
        }
        let key = (types.to_vec(), own, room.to_owned());
        if let Some(b) = cache.get(&key) {
            return Ok(*b);
        }
        let member = own.then_some(user.as_str());
        let bump = self.store.latest_bump(room, member, types, m.cap).await?.unwrap_or(0);
        cache.insert(key, bump);
        Ok(bump)
    }
}
