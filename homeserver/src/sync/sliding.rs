//! Simplified sliding sync (MSC4186), the protocol of Element X and matrix-sdk's room list:
//! lists of the user's rooms sorted by recency with windows (`ranges`) over them, room
//! subscriptions, and the extensions to-device, e2ee, account data, receipts and typing.
//!
//! A connection (user, device, `conn_id`) remembers per room what it was sent: the stream
//! position the room's timeline and state were sent up to, the membership the room was sent
//! as, and the `required_state` / `timeline_limit` it was sent with. That snapshot lives in
//! the database and the `pos` token names it (`{snapshot}_{stream}_{typing}`), so every
//! response carries only what the connection has not seen, across restarts too. An unknown
//! `pos` is `M_UNKNOWN_POS`, on which clients start a new connection.
//!
//! The rest is the classic sync's: timelines in client format with visibility applied,
//! state from the state groups, unread counts from the push actions, receipts, typing,
//! account data, to-device messages and device list changes from the same services.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use http::StatusCode;
use ruma::{
    RoomId, UserId,
    api::client::sync::sync_events::v5::{
        self,
        request::{ExtensionRoomConfig, ListFilters},
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Position, parse_json, parse_token, receipt_event};
use crate::{
    rooms::{ClientEventOptions, StateMap},
    services::Services,
    storage::EventRow,
};
use kairan_core::{
    error::{Error, Result},
    time::now_ms,
};

/// Event types that move a room up a list when the request names none, besides the
/// user's own membership changes.
pub const DEFAULT_BUMP_EVENT_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "org.matrix.msc3381.poll.start",
];

/// Most timeline events sent for one room.
const MAX_TIMELINE_LIMIT: u64 = 1000;
/// Most to-device messages in one response (storage hands out at most 100 at once).
const MAX_TO_DEVICE: usize = 100;

/// What a connection was sent of one room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sent {
    /// The room's timeline and state were sent up to this stream position.
    #[serde(rename = "s")]
    stream: i64,
    /// The membership the room was sent as: `join`, `invite`, `leave` or `ban`.
    #[serde(rename = "m")]
    membership: String,
    /// Every `required_state` entry the room was sent with.
    #[serde(rename = "r")]
    required_state: BTreeSet<(String, String)>,
    /// The largest `timeline_limit` the room was sent with.
    #[serde(rename = "t")]
    timeline_limit: u64,
}

/// The connection state a request continues from.
struct Base {
    snapshot: i64,
    since: Position,
    rooms: BTreeMap<String, Sent>,
    lists: BTreeMap<String, u64>,
}

/// The user's membership in a candidate room.
struct Member {
    /// `join`, `invite`, `leave` or `ban`.
    kind: &'static str,
    /// What the user may see of the room ends here: now while joined, else their
    /// invite or departure.
    cap: i64,
    /// The user's membership event, for invites and departures.
    event: Option<EventRow>,
}

/// What a request wants of one room: the union over its lists and its subscription.
#[derive(Debug, Clone, Default)]
struct RoomConfig {
    required_state: BTreeSet<(String, String)>,
    timeline_limit: u64,
    /// By the bump event types of the first list that holds the room.
    bump_stamp: Option<i64>,
}

impl RoomConfig {
    fn merge(&mut self, required_state: &[(ruma::events::StateEventType, String)], timeline_limit: ruma::UInt) {
        self.required_state.extend(required_state.iter().map(|(t, k)| (t.to_string(), k.clone())));
        self.timeline_limit = self.timeline_limit.max(u64::from(timeline_limit).min(MAX_TIMELINE_LIMIT));
    }
}

/// One computed response, before its `pos` is decided.
struct Computed {
    lists: BTreeMap<String, u64>,
    rooms: Map<String, Value>,
    extensions: Map<String, Value>,
    /// Rooms whose `Sent` entry changes with this response.
    sent: BTreeMap<String, Sent>,
    has_news: bool,
}

/// A room's timeline between two positions.
struct Timeline {
    events: Vec<Value>,
    ids: BTreeSet<String>,
    senders: BTreeSet<String>,
    limited: bool,
    prev_batch: String,
    num_live: usize,
    /// Whether there were any events at all (visible or not) in the range.
    any: bool,
}

fn unknown_pos(message: impl Into<String>) -> Error {
    Error::new(StatusCode::BAD_REQUEST, "M_UNKNOWN_POS", message)
}

/// `{snapshot}_{stream}_{typing}`
fn format_pos(snapshot: i64, p: Position) -> String {
    format!("{snapshot}_{}_{}", p.stream, p.typing)
}

fn parse_pos(pos: &str) -> Option<(i64, Position)> {
    let mut parts = pos.split('_');
    let snapshot = parts.next()?.parse().ok()?;
    let stream = parts.next()?.parse().ok()?;
    let typing = parts.next()?.parse().ok()?;
    if parts.next().is_some() || snapshot < 1 || stream < 0 || typing < 0 {
        return None;
    }
    Some((snapshot, Position { stream, typing }))
}

/// Whether a state entry is one of the `required_state` entries: `*` matches any type or
/// state key, `$ME` the user and `$LAZY` (for members) the senders of the timeline sent.
fn required(rs: &BTreeSet<(String, String)>, t: &str, k: &str, user: &str, lazy: &BTreeSet<String>) -> bool {
    rs.iter().any(|(rt, rk)| {
        (rt == "*" || rt == t)
            && match rk.as_str() {
                "*" => true,
                "$ME" => k == user,
                "$LAZY" => t == "m.room.member" && lazy.contains(k),
                other => other == k,
            }
    })
}

impl Services {
    /// Answers a simplified sliding sync request, waiting up to `timeout` for news when
    /// it continues a connection (`pos`) and nothing is new for it.
    /// `bump_event_types` holds the bump event types per list name, which ruma's request
    /// type does not carry.
    pub async fn sliding_sync(
        &self,
        user: &UserId,
        device: &str,
        req: &v5::Request,
        bump_event_types: &BTreeMap<String, Vec<String>>,
        timeout: Duration,
    ) -> Result<Value> {
        let conn = req.conn_id.as_deref().unwrap_or_default();
        let base = match &req.pos {
            Some(pos) => Some(self.sliding_base(user, device, conn, pos).await?),
            None => None,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.notifier.subscribe();
        loop {
            let now = *rx.borrow_and_update();
            self.expire_typing();
            let computed = self.sliding_once(user, device, req, bump_event_types, base.as_ref(), now).await?;
            if computed.has_news || base.is_none() || tokio::time::Instant::now() >= deadline {
                return self.sliding_finish(user, device, conn, req, base, computed, now).await;
            }
            // Wake for a commit, a typing change, a typing notice running out, or the deadline.
            let typing_expiry = self.typing.next_expiry().map(tokio::time::Instant::from_std);
            let wake = typing_expiry.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return self.sliding_finish(user, device, conn, req, base, computed, now).await;
                    }
                }
                _ = self.notifier.stopped() => {
                    return self.sliding_finish(user, device, conn, req, base, computed, now).await;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// The connection state a `pos` names, or `M_UNKNOWN_POS`.
    async fn sliding_base(&self, user: &UserId, device: &str, conn: &str, pos: &str) -> Result<Base> {
        let (snapshot, mut since) = parse_pos(pos).ok_or_else(|| unknown_pos(format!("unknown pos {pos:?}")))?;
        let current = self.notifier.current();
        if since.stream > current.stream {
            return Err(unknown_pos("pos is ahead of this server"));
        }
        // Typing serials restart with the process.
        if since.typing > current.typing {
            since.typing = 0;
        }
        let stored = self
            .store
            .sliding_snapshot(snapshot, user.as_str(), device, conn)
            .await?
            .ok_or_else(|| unknown_pos("unknown or expired pos"))?;
        let rooms =
            serde_json::from_str(&stored.rooms_json).map_err(|e| Error::internal("sliding sync snapshot", e))?;
        let lists =
            serde_json::from_str(&stored.lists_json).map_err(|e| Error::internal("sliding sync snapshot", e))?;
        Ok(Base { snapshot: stored.id, since, rooms, lists })
    }

    /// Stores the connection's new state if the response changed it, and assembles the
    /// response with its `pos`.
    #[allow(clippy::too_many_arguments)]
    async fn sliding_finish(
        &self,
        user: &UserId,
        device: &str,
        conn: &str,
        req: &v5::Request,
        base: Option<Base>,
        computed: Computed,
        now: Position,
    ) -> Result<Value> {
        let changed = match &base {
            None => true,
            Some(b) => !computed.sent.is_empty() || b.lists != computed.lists,
        };
        let snapshot = match base {
            Some(b) if !changed => b.snapshot,
            base => {
                let based_on = base.as_ref().map(|b| b.snapshot);
                let mut rooms = base.map(|b| b.rooms).unwrap_or_default();
                rooms.extend(computed.sent);
                // A departure is told once; a room the user comes back to is sent afresh.
                rooms.retain(|_, sent| matches!(sent.membership.as_str(), "join" | "invite"));
                let rooms_json = serde_json::to_string(&rooms).map_err(|e| Error::internal("snapshot", e))?;
                let lists_json = serde_json::to_string(&computed.lists).map_err(|e| Error::internal("snapshot", e))?;
                self.store
                    .put_sliding_snapshot(user.as_str(), device, conn, based_on, &rooms_json, &lists_json, now_ms())
                    .await?
            }
        };
        let lists: Map<String, Value> =
            computed.lists.iter().map(|(name, count)| (name.clone(), json!({ "count": count }))).collect();
        let mut response = json!({
            "pos": format_pos(snapshot, now),
            "lists": lists,
            "rooms": computed.rooms,
            "extensions": computed.extensions,
        });
        if let Some(txn_id) = &req.txn_id {
            response["txn_id"] = txn_id.clone().into();
        }
        Ok(response)
    }

    /// Everything one response would carry at `now`.
    async fn sliding_once(
        &self,
        user: &UserId,
        device: &str,
        req: &v5::Request,
        bump_event_types: &BTreeMap<String, Vec<String>>,
        base: Option<&Base>,
        now: Position,
    ) -> Result<Computed> {
        let no_rooms = BTreeMap::new();
        let sent_before = base.map_or(&no_rooms, |b| &b.rooms);
        let since = base.map(|b| b.since);
        let memberships = self.sliding_memberships(user, sent_before, now).await?;

        // Lists: filter, sort by bump stamp (newest first), cut the ranges out.
        let default_types: Vec<String> = DEFAULT_BUMP_EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect();
        let dm_rooms = self.direct_rooms(user).await?;
        let mut bumps: HashMap<(Vec<String>, bool, String), i64> = HashMap::new();
        let mut counts = BTreeMap::new();
        let mut wanted: BTreeMap<String, RoomConfig> = BTreeMap::new();
        let mut in_lists: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (name, list) in &req.lists {
            // Explicit types replace the defaults, the user's own membership included.
            let (types, own) = match bump_event_types.get(name) {
                Some(t) => (t, false),
                None => (&default_types, true),
            };
            let mut entries: Vec<(i64, &String)> = Vec::new();
            for (room, m) in &memberships {
                if !self.passes_filters(room, m, list.filters.as_ref(), &dm_rooms).await? {
                    continue;
                }
                let bump = self.bump_stamp(&mut bumps, room, user, types, own, m).await?;
                entries.push((bump, room));
            }
            entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            counts.insert(name.clone(), entries.len() as u64);
            let in_range = in_lists.entry(name.as_str()).or_default();
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

        // The rooms themselves.
        let opts = ClientEventOptions { viewer: user, device_id: Some(device), bundle_relations: true };
        let mut rooms = Map::new();
        let mut sent = BTreeMap::new();
        let mut full_rooms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut receipts_since: BTreeMap<String, Vec<crate::storage::ReceiptRow>> = BTreeMap::new();
        for (room, config) in &wanted {
            let Some(m) = memberships.get(room) else { continue };
            let room_id = <&RoomId>::try_from(room.as_str()).map_err(|e| Error::internal("room id", e))?;
            if let Some(since) = since
                && m.kind == "join"
            {
                receipts_since.insert(room.clone(), self.store.receipts_since(room, since.stream, now.stream).await?);
            }
            let own_receipt = receipts_since.get(room).is_some_and(|rows| rows.iter().any(|r| r.2 == user.as_str()));
            let dm = dm_rooms.contains(room);
            let update =
                self.room_update(room_id, m, config, sent_before.get(room), since, now, own_receipt, dm, opts).await?;
            if let Some((entry, new_sent, full_timeline)) = update {
                if let Some(ids) = full_timeline {
                    full_rooms.insert(room.clone(), ids);
                }
                rooms.insert(room.clone(), entry);
                sent.insert(room.clone(), new_sent);
            }
        }

        // Extensions.
        let ext = &req.extensions;
        let mut extensions = Map::new();
        let mut ext_news = false;
        let ext_rooms = |lists: &Option<Vec<String>>, rooms_cfg: &Option<Vec<ExtensionRoomConfig>>| {
            let mut out: BTreeSet<String> = BTreeSet::new();
            for (name, rooms) in &in_lists {
                if lists.as_ref().is_none_or(|l| l.iter().any(|n| n == name)) {
                    out.extend(rooms.iter().cloned());
                }
            }
            match rooms_cfg {
                None => out.extend(subscribed.iter().cloned()),
                Some(list) => {
                    for entry in list {
                        match entry {
                            ExtensionRoomConfig::AllSubscribed => out.extend(subscribed.iter().cloned()),
                            ExtensionRoomConfig::Room(r) => {
                                out.insert(r.to_string());
                            }
                            _ => {}
                        }
                    }
                }
            }
            out.retain(|r| memberships.get(r).is_some_and(|m| m.kind == "join"));
            out
        };

        if ext.to_device.enabled == Some(true) {
            let from = match ext.to_device.since.as_deref() {
                Some(token) => match token.parse::<i64>() {
                    Ok(n) => n,
                    Err(_) => parse_token(token)?.stream,
                },
                None => 0,
            };
            let limit = ext.to_device.limit.map_or(MAX_TO_DEVICE, |l| (u64::from(l) as usize).clamp(1, MAX_TO_DEVICE));
            let messages = self.store.take_to_device(user.as_str(), device, from, now.stream, limit).await?;
            let full = messages.len() >= limit;
            let next = match messages.last() {
                Some(last) if full => last.stream_pos,
                _ => now.stream.max(from),
            };
            ext_news |= !messages.is_empty();
            let events: Vec<Value> = messages
                .iter()
                .map(|m| json!({ "sender": m.sender, "type": m.event_type, "content": parse_json(&m.content) }))
                .collect();
            extensions.insert("to_device".into(), json!({ "next_batch": next.to_string(), "events": events }));
        }

        if ext.e2ee.enabled == Some(true) {
            let (changed, left) = match since {
                Some(since) => self.e2ee().device_list_changes(user, since.stream, now.stream).await?,
                None => (vec![], vec![]),
            };
            ext_news |= !changed.is_empty() || !left.is_empty();
            extensions.insert(
                "e2ee".into(),
                json!({
                    "device_lists": { "changed": changed, "left": left },
                    "device_one_time_keys_count": self.one_time_key_counts(user, device).await?,
                    "device_unused_fallback_key_types": self.e2ee().unused_fallback_key_types(user, device).await?,
                }),
            );
        }

        if ext.account_data.enabled == Some(true) {
            let from = since.map_or(0, |s| s.stream);
            let mut global = Vec::new();
            let mut by_room: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for (room, t, content) in self.store.account_data_since(user.as_str(), from, now.stream).await? {
                let event = json!({ "type": t, "content": parse_json(&content) });
                if room.is_empty() {
                    global.push(event);
                } else {
                    by_room.entry(room).or_default().push(event);
                }
            }
            ext_news |= !global.is_empty() || !by_room.is_empty();
            extensions.insert("account_data".into(), json!({ "global": global, "rooms": by_room }));
        }

        if ext.receipts.enabled == Some(true) {
            let mut by_room = Map::new();
            for room in ext_rooms(&ext.receipts.lists, &ext.receipts.rooms) {
                let rows: Vec<crate::storage::ReceiptRow> = if let Some(ids) = full_rooms.get(&room) {
                    // A room sent in full: the receipts on its timeline, and the user's own.
                    let all = self.store.receipts_since(&room, 0, now.stream).await?;
                    all.into_iter().filter(|r| ids.contains(&r.4) || r.2 == user.as_str()).collect()
                } else if let Some(rows) = receipts_since.remove(&room) {
                    rows
                } else if let Some(since) = since {
                    self.store.receipts_since(&room, since.stream, now.stream).await?
                } else {
                    let all = self.store.receipts_since(&room, 0, now.stream).await?;
                    all.into_iter().filter(|r| r.2 == user.as_str()).collect()
                };
                if rows.is_empty() {
                    continue;
                }
                let event = receipt_event(&rows, user.as_str());
                if event["content"].as_object().is_some_and(|c| !c.is_empty()) {
                    by_room.insert(room, event);
                }
            }
            ext_news |= !by_room.is_empty();
            extensions.insert("receipts".into(), json!({ "rooms": by_room }));
        }

        if ext.typing.enabled == Some(true) {
            let mut by_room = Map::new();
            for room in ext_rooms(&ext.typing.lists, &ext.typing.rooms) {
                let (users, serial) = self.typing.typing(&room);
                let fresh = since.is_none() || full_rooms.contains_key(&room);
                let changed = since.is_some_and(|s| serial > s.typing);
                if changed || (fresh && !users.is_empty()) {
                    by_room.insert(room, json!({ "type": "m.typing", "content": { "user_ids": users } }));
                }
            }
            ext_news |= !by_room.is_empty();
            extensions.insert("typing".into(), json!({ "rooms": by_room }));
        }

        let lists_changed = base.is_none_or(|b| b.lists != counts);
        Ok(Computed {
            has_news: !rooms.is_empty() || lists_changed || ext_news,
            lists: counts,
            rooms,
            extensions,
            sent,
        })
    }

    /// The rooms a connection may list: those the user is joined to or invited to, and
    /// those it was sent as joined or invited that the user has left since.
    async fn sliding_memberships(
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
    async fn direct_rooms(&self, user: &UserId) -> Result<BTreeSet<String>> {
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

    /// One room of a response: its JSON, what the connection will have been sent of it,
    /// and, when it is sent in full, the IDs of its timeline events. `None` if the
    /// connection is up to date with it.
    #[allow(clippy::too_many_arguments)]
    async fn room_update(
        &self,
        room_id: &RoomId,
        m: &Member,
        config: &RoomConfig,
        prev: Option<&Sent>,
        since: Option<Position>,
        now: Position,
        own_receipt: bool,
        dm: bool,
        opts: ClientEventOptions<'_>,
    ) -> Result<Option<(Value, Sent, Option<BTreeSet<String>>)>> {
        let user = opts.viewer;
        let live_after = since.map_or(i64::MAX, |s| s.stream);
        let bump_stamp = config.bump_stamp.unwrap_or(0);
        let prev_membership = prev.map(|p| p.membership.as_str());
        let next_sent = |stream: i64, membership: &str, keep_prev: bool| {
            let mut s = Sent {
                stream,
                membership: membership.to_owned(),
                required_state: config.required_state.clone(),
                timeline_limit: config.timeline_limit,
            };
            if keep_prev && let Some(p) = prev {
                s.required_state.extend(p.required_state.iter().cloned());
                s.timeline_limit = s.timeline_limit.max(p.timeline_limit);
            }
            s
        };

        match m.kind {
            "invite" => {
                let invite = m.event.as_ref().ok_or_else(|| Error::internal("invite", "missing event"))?;
                if prev_membership == Some("invite") && prev.is_some_and(|p| p.stream >= m.cap) {
                    return Ok(None);
                }
                let events = self.invite_state(invite, user).await?;
                let mut entry = json!({ "initial": true, "invite_state": events, "bump_stamp": bump_stamp });
                if dm {
                    entry["is_dm"] = true.into();
                }
                Ok(Some((entry, next_sent(m.cap, "invite", false), Some(BTreeSet::new()))))
            }
            "join" => {
                let full = match prev {
                    None => true,
                    Some(p) => {
                        p.membership != "join"
                            || !config.required_state.is_subset(&p.required_state)
                            || config.timeline_limit > p.timeline_limit
                    }
                };
                let from = if full { 0 } else { prev.map_or(0, |p| p.stream) };
                let timeline =
                    self.sliding_timeline(room_id, from, m.cap, config.timeline_limit, live_after, opts).await?;
                if !full && !timeline.any && !own_receipt {
                    return Ok(None);
                }
                let (state_ids, after) =
                    self.sliding_state(room_id, config, &timeline, full, from, m.cap, user).await?;
                let mut entry = self.room_entry(room_id, &timeline, &state_ids, &after, full, user, opts).await?;
                entry["bump_stamp"] = bump_stamp.into();
                if full {
                    entry["initial"] = true.into();
                    entry["is_dm"] = dm.into();
                }
                let (unread, _) = self.unread_counts(room_id, user, now.stream, false).await?;
                entry["notification_count"] = unread["notification_count"].clone();
                entry["highlight_count"] = unread["highlight_count"].clone();
                let ids = full.then(|| timeline.ids.clone());
                Ok(Some((entry, next_sent(m.cap, "join", prev_membership == Some("join")), ids)))
            }
            kind => {
                // The user left (or was kicked or banned) after this connection was sent the room.
                let event = m.event.as_ref().ok_or_else(|| Error::internal("membership", "missing event"))?;
                if prev_membership == Some("invite") {
                    // Only the invite was shown: the departure is all there is to tell.
                    let own = self.client_state_events([&event.event_id], opts).await?;
                    let entry = json!({ "required_state": own, "bump_stamp": bump_stamp });
                    return Ok(Some((entry, next_sent(m.cap, kind, false), None)));
                }
                let from = prev.map_or(0, |p| p.stream);
                let timeline =
                    self.sliding_timeline(room_id, from, m.cap, config.timeline_limit, live_after, opts).await?;
                let (mut state_ids, after) =
                    self.sliding_state(room_id, config, &timeline, false, from, m.cap, user).await?;
                // The client learns its membership from required_state.
                if !state_ids.contains(&event.event_id) {
                    state_ids.push(event.event_id.clone());
                }
                let mut entry = self.room_entry(room_id, &timeline, &state_ids, &after, false, user, opts).await?;
                entry["bump_stamp"] = bump_stamp.into();
                Ok(Some((entry, next_sent(m.cap, kind, true), None)))
            }
        }
    }

    /// The room's events in `(from, to]` that the user may see, newest `limit`.
    async fn sliding_timeline(
        &self,
        room_id: &RoomId,
        from: i64,
        to: i64,
        limit: u64,
        live_after: i64,
        opts: ClientEventOptions<'_>,
    ) -> Result<Timeline> {
        let limit = limit.min(MAX_TIMELINE_LIMIT) as i64;
        let mut rows = self.store.room_events(room_id.as_str(), from, to, true, limit + 1).await?;
        let any = !rows.is_empty();
        let limited = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        rows.reverse();
        let visible = self.visible_events(opts.viewer, rows).await?;
        let prev_batch = match visible.first() {
            Some(first) => format!("s{}", first.stream_ordering - 1),
            None => format!("s{to}"),
        };
        let num_live = visible.iter().filter(|r| r.stream_ordering > live_after).count();
        let events = self.client_events(&visible, opts).await?;
        let senders =
            events.iter().filter_map(|e| e.get("sender").and_then(Value::as_str).map(str::to_owned)).collect();
        let ids = visible.iter().map(|r| r.event_id.clone()).collect();
        Ok(Timeline { events, ids, senders, limited, prev_batch, num_live, any })
    }

    /// The state a room entry carries (as of `to`): every `required_state` entry when it is
    /// sent in full, else those that changed since `from`, plus the timeline senders'
    /// memberships for `$LAZY`. Returns their event IDs and the state at `to`.
    #[allow(clippy::too_many_arguments)]
    async fn sliding_state(
        &self,
        room_id: &RoomId,
        config: &RoomConfig,
        timeline: &Timeline,
        full: bool,
        from: i64,
        to: i64,
        user: &UserId,
    ) -> Result<(Vec<String>, std::sync::Arc<StateMap>)> {
        let room = room_id.as_str();
        let after_row = self.store.last_event_at(room, to).await?;
        let after = self.state_as_of(room, after_row.as_ref()).await?;
        let rs = &config.required_state;
        let me = user.as_str();
        let mut ids = Vec::new();
        if full {
            for ((t, k), id) in after.iter() {
                if required(rs, t, k, me, &timeline.senders) {
                    ids.push(id.clone());
                }
            }
            return Ok((ids, after));
        }
        // The current state moves only with an event: none since `from`, nothing changed.
        let before_row = self.store.last_event_at(room, from).await?;
        let unchanged = before_row.as_ref().map(|r| r.stream_ordering) == after_row.as_ref().map(|r| r.stream_ordering);
        if !unchanged {
            let before = self.state_as_of(room, before_row.as_ref()).await?;
            for ((t, k), id) in after.iter() {
                if before.get(&(t.clone(), k.clone())) != Some(id) && required(rs, t, k, me, &timeline.senders) {
                    ids.push(id.clone());
                }
            }
        }
        // Lazy-loaded members of this timeline, changed or not: the client may not have them.
        if rs.iter().any(|(t, k)| (t == "m.room.member" || t == "*") && k == "$LAZY") {
            for sender in &timeline.senders {
                if let Some(id) = after.get(&("m.room.member".to_owned(), sender.clone()))
                    && !ids.contains(id)
                {
                    ids.push(id.clone());
                }
            }
        }
        Ok((ids, after))
    }

    /// The JSON of a joined or departed room: timeline, state, name, heroes and counts.
    #[allow(clippy::too_many_arguments)]
    async fn room_entry(
        &self,
        room_id: &RoomId,
        timeline: &Timeline,
        state_ids: &[String],
        after: &StateMap,
        full: bool,
        user: &UserId,
        opts: ClientEventOptions<'_>,
    ) -> Result<Value> {
        let required_state = self.client_state_events(state_ids, opts).await?;
        let mut entry = json!({
            "timeline": timeline.events,
            "required_state": required_state,
            "prev_batch": timeline.prev_batch,
            "limited": timeline.limited,
            "num_live": timeline.num_live,
        });
        let content_of = |t: &str| after.get(&(t.to_owned(), String::new())).cloned();
        let changed = |id: &Option<String>| full || id.as_ref().is_some_and(|id| state_ids.contains(id));
        let name_id = content_of("m.room.name");
        let mut name = None;
        if let Some(id) = &name_id
            && let Some(p) = self.pdu(id).await?
        {
            name = p.content_value().get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_owned);
        }
        if changed(&name_id)
            && let Some(n) = &name
        {
            entry["name"] = n.clone().into();
        }
        let avatar_id = content_of("m.room.avatar");
        if changed(&avatar_id)
            && let Some(id) = &avatar_id
            && let Some(p) = self.pdu(id).await?
        {
            entry["avatar"] = p.content_value().get("url").cloned().unwrap_or(Value::Null);
        }
        let summary = self.room_summary(room_id, user).await?;
        entry["joined_count"] = summary["m.joined_member_count"].clone();
        entry["invited_count"] = summary["m.invited_member_count"].clone();
        if full && name.is_none() {
            let mut heroes = Vec::new();
            for hero in summary["m.heroes"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                let mut h = json!({ "user_id": hero });
                if let Some(id) = after.get(&("m.room.member".to_owned(), hero.to_owned()))
                    && let Some(p) = self.pdu(id).await?
                {
                    let c = p.content_value();
                    if let Some(d) = c.get("displayname").filter(|d| d.is_string()) {
                        h["displayname"] = d.clone();
                    }
                    if let Some(a) = c.get("avatar_url").filter(|a| a.is_string()) {
                        h["avatar_url"] = a.clone();
                    }
                }
                heroes.push(h);
            }
            entry["heroes"] = heroes.into();
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pos_round_trips_and_rejects_garbage() {
        let p = Position { stream: 42, typing: 7 };
        assert_eq!(format_pos(3, p), "3_42_7");
        assert_eq!(parse_pos("3_42_7"), Some((3, p)));
        for bad in ["", "made-up", "3_42", "3_42_7_1", "0_1_1", "-1_2_3", "a_b_c", "s3_42_7"] {
            assert_eq!(parse_pos(bad), None, "{bad}");
        }
    }

    #[test]
    fn required_state_patterns() {
        let rs: BTreeSet<(String, String)> =
            [("m.room.name", ""), ("m.room.member", "$LAZY"), ("m.room.member", "$ME"), ("m.space.child", "*")]
                .into_iter()
                .map(|(t, k)| (t.to_owned(), k.to_owned()))
                .collect();
        let lazy: BTreeSet<String> = ["@bob:x".to_owned()].into();
        let me = "@alice:x";
        assert!(required(&rs, "m.room.name", "", me, &lazy));
        assert!(!required(&rs, "m.room.name", "other", me, &lazy));
        assert!(!required(&rs, "m.room.topic", "", me, &lazy));
        assert!(required(&rs, "m.room.member", "@alice:x", me, &lazy));
        assert!(required(&rs, "m.room.member", "@bob:x", me, &lazy));
        assert!(!required(&rs, "m.room.member", "@carol:x", me, &lazy));
        assert!(required(&rs, "m.space.child", "!a:x", me, &lazy));
        let all: BTreeSet<(String, String)> = [("*".to_owned(), "*".to_owned())].into();
        assert!(required(&all, "m.room.topic", "", me, &BTreeSet::new()));
        assert!(required(&all, "m.room.member", "@carol:x", me, &BTreeSet::new()));
    }
}
