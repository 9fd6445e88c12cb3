//! `/sync`: what changed for one device since a token, waiting for news when nothing has.

mod ephemeral;
mod filter;
mod sliding;
mod to_device;
mod typing;

use std::{collections::BTreeSet, time::Duration};

use ruma::{RoomId, UserId, events::TimelineEventType};
use serde_json::{Map, Value, json};

pub use self::{
    filter::{Filter, RoomEventFilter},
    typing::Typing,
};
use crate::{
    rooms::{ClientEventOptions, StateMap},
    services::Services,
    storage::EventRow,
};
use kairan_core::{
    error::{Error, Result},
    notifier::{Audience, Position},
};

/// A parsed sync token: `s{stream}_{typing}`.
pub fn parse_token(token: &str) -> Result<Position> {
    let t = token.strip_prefix('s').unwrap_or(token);
    let mut parts = t.split('_');
    let stream = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::invalid_param(format!("invalid token {token:?}")))?;
    let typing = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(Position { stream, typing })
}

pub fn format_token(p: Position) -> String {
    format!("s{}_{}", p.stream, p.typing)
}

/// The to-device position a sync token carries when the last answer could not hold every
/// waiting to-device message (`s{stream}_{typing}_{to_device}`): the next sync goes on
/// from there, so a device that was away long receives every message, once each.
pub fn parse_to_device_since(token: &str) -> Option<i64> {
    token.split('_').nth(2).and_then(|s| s.parse().ok())
}

/// To-device messages per sync answer, as Synapse's.
const TO_DEVICE_PER_SYNC: usize = 100;

/// How often a syncing client's activity is written to presence.
const PRESENCE_REFRESH: Duration = Duration::from_secs(60);

/// Default number of timeline events per room, as in Synapse.
const DEFAULT_TIMELINE_LIMIT: u64 = 10;

/// One sync request, parsed.
pub struct SyncRequest<'a> {
    pub user: &'a UserId,
    pub device: &'a str,
    pub since: Option<Position>,
    /// Where to-device delivery goes on from, when the last answer was cut short.
    pub to_device_since: Option<i64>,
    pub filter: Filter,
    pub full_state: bool,
    /// Answer with `state_after` (the state at the end of each timeline) instead of `state`.
    pub use_state_after: bool,
    pub timeout: Duration,
}

impl Services {
    /// Answers a sync request, waiting up to its timeout when there is nothing new.
    ///
    /// A waiting sync is woken by every change on the server, and first asks the
    /// notifier's log whether the change can concern its user (one of their rooms, or
    /// them); only then does it read the database. A token at the current position needs
    /// no reading at all before waiting: every position up to it was committed and
    /// answered when it was issued.
    pub async fn sync(&self, req: SyncRequest<'_>) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + req.timeout;
        let mut rx = self.notifier.subscribe();
        rx.borrow_and_update();
        self.expire_typing();
        let (mut seq, now) = self.notifier.snapshot();
        // A token whose to-device messages were cut short has more to give at once.
        let waits = req.since.is_some() && !req.full_state && req.to_device_since.is_none();
        let mut answer = None;
        if !waits || req.since != Some(now) {
            let (response, has_news) = self.sync_once(&req, now).await?;
            if has_news || !waits || tokio::time::Instant::now() >= deadline {
                return Ok(response);
            }
            answer = Some(response);
        }
        // The user's rooms, read on the first wake and again after any change that
        // concerned the user (it may have been a membership change).
        let mut rooms: Option<std::collections::HashSet<String>> = None;
        let presence = req.filter.presence.allows_type("m.presence");
        loop {
            // Wake for a change, a typing notice running out, or the deadline.
            let typing_expiry = self.typing.next_expiry().map(tokio::time::Instant::from_std);
            let wake = typing_expiry.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                changed = rx.changed() => { if changed.is_err() { break; } }
                _ = self.notifier.stopped() => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
            rx.borrow_and_update();
            self.expire_typing();
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let member_of = match &rooms {
                Some(r) => r,
                None => rooms.insert(self.store.rooms_of_user(req.user.as_str()).await?.into_iter().collect()),
            };
            let woke = self
                .notifier
                .changes_since(seq, |a| a.concerns(req.user.as_str(), |r| member_of.contains(r), presence));
            seq = woke.seq;
            kairan_core::metrics::metrics().sync_woken(woke.concerned);
            if !woke.concerned {
                continue;
            }
            rooms = None;
            let (response, has_news) = self.sync_once(&req, woke.position).await?;
            if has_news {
                return Ok(response);
            }
            answer = Some(response);
        }
        match answer {
            Some(response) => Ok(response),
            None => Ok(self.sync_once(&req, self.notifier.snapshot().1).await?.0),
        }
    }

    /// Records that a user's client is syncing. Written only when the state changes or
    /// once a minute: every write wakes the syncs of everyone sharing a room, so writing
    /// on each sync would make syncing clients wake each other without end.
    pub async fn note_presence(&self, user: &UserId, state: &str) -> Result<()> {
        if state == "offline" {
            return Ok(());
        }
        let due = {
            let mut seen = self.presence_seen.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            match seen.get(user) {
                Some((s, at)) if s == state && now.duration_since(*at) < PRESENCE_REFRESH => false,
                _ => {
                    seen.insert(user.to_owned(), (state.to_owned(), now));
                    true
                }
            }
        };
        if due {
            let pos = self.store.touch_presence(user.as_str(), state, kairan_core::time::now_ms()).await?;
            self.advance_presence(user, pos).await?;
        }
        Ok(())
    }

    /// Records a presence change of `user` for the members of the rooms they are in.
    pub(crate) async fn advance_presence(&self, user: &UserId, pos: i64) -> Result<()> {
        let rooms = self.store.rooms_with_membership(user.as_str(), "join").await?;
        self.notifier.advance(pos, Audience::Presence { rooms });
        Ok(())
    }

    fn expire_typing(&self) {
        if self.typing.next_expiry().is_some_and(|t| t <= std::time::Instant::now()) {
            let serial = self.notifier.current().typing + 1;
            let rooms = self.typing.expire(|| serial);
            if !rooms.is_empty() {
                self.notifier.bump_typing(rooms);
            }
        }
    }

    async fn sync_once(&self, req: &SyncRequest<'_>, now: Position) -> Result<(Value, bool)> {
        let user = req.user;
        let since = req.since.unwrap_or_default();
        let initial = req.since.is_none() || req.full_state;
        let opts = ClientEventOptions { viewer: user, device_id: Some(req.device), bundle_relations: true };
        let mut has_news = false;

        let changes = if req.since.is_some() {
            self.store.membership_changes(user.as_str(), since.stream, now.stream).await?
        } else {
            vec![]
        };
        let active: BTreeSet<String> = if initial {
            BTreeSet::new()
        } else {
            self.store.rooms_with_events_since(since.stream, now.stream).await?.into_iter().collect()
        };

        // Receipts and account data for all rooms at once: a user in hundreds of rooms
        // must not cost hundreds of queries per sync.
        let from = if initial { 0 } else { since.stream };
        let mut all_receipts = self.store.receipts_in_joined_rooms(user.as_str(), from, now.stream).await?;
        let all_account_data = self.store.account_data_since(user.as_str(), from, now.stream).await?;
        let mut join = Map::new();
        for room in self.store.rooms_with_membership(user.as_str(), "join").await? {
            if !req.filter.room.allows_room(&room) {
                continue;
            }
            let room_id = <&RoomId>::try_from(room.as_str()).map_err(|e| Error::internal("room id", e))?;
            let newly_joined = changes.iter().any(|c| c.room_id == room);
            let full = initial || newly_joined;
            let (typing_users, typing_serial) = self.typing.typing(&room);
            let typing_changed = typing_serial > since.typing || (initial && !typing_users.is_empty());
            let receipts = all_receipts.remove(&room).unwrap_or_default();
            let room_data: Vec<_> = all_account_data.iter().filter(|(r, _, _)| *r == room).collect();
            if !full && !active.contains(&room) && !typing_changed && receipts.is_empty() && room_data.is_empty() {
                continue;
            }
            let mut section = self
                .room_section(room_id, req, if full { 0 } else { since.stream }, since.stream, now.stream, full, opts)
                .await?;
            let mut ephemeral = Vec::new();
            if typing_changed {
                ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": typing_users } }));
            }
            if !receipts.is_empty() {
                ephemeral.push(receipt_event(&receipts, user.as_str()));
            }
            section["ephemeral"] = json!({ "events": ephemeral });
            section["account_data"] = json!({
                "events": room_data.iter().map(|(_, t, c)| account_data_event(t, c)).collect::<Vec<_>>()
            });
            let threads = req.filter.room.timeline.unread_thread_notifications;
            let (unread, by_thread) = self.unread_counts(room_id, user, now.stream, threads).await?;
            section["unread_notifications"] = unread;
            if let Some(by_thread) = by_thread {
                section["unread_thread_notifications"] = by_thread;
            }
            join.insert(room, section);
        }

        let mut invite = Map::new();
        for room in self.store.rooms_with_membership(user.as_str(), "invite").await? {
            let Some(member_id) = self.store.current_state_event(&room, "m.room.member", user.as_str()).await? else {
                continue;
            };
            let Some(row) = self.store.event(&member_id).await? else { continue };
            if !initial && row.stream_ordering <= since.stream {
                continue;
            }
            let events = self.invite_state(&row, user).await?;
            invite.insert(room, json!({ "invite_state": { "events": events } }));
        }

        let mut knock = Map::new();
        for room in self.store.rooms_with_membership(user.as_str(), "knock").await? {
            let Some(member_id) = self.store.current_state_event(&room, "m.room.member", user.as_str()).await? else {
                continue;
            };
            let Some(row) = self.store.event(&member_id).await? else { continue };
            if !initial && row.stream_ordering <= since.stream {
                continue;
            }
            let events = self.invite_state(&row, user).await?;
            knock.insert(room, json!({ "knock_state": { "events": events } }));
        }

        let mut leave = Map::new();
        let joined_or_invited: BTreeSet<String> =
            join.keys().chain(invite.keys()).chain(knock.keys()).cloned().collect();
        let mut leave_rows: Vec<EventRow> =
            changes.iter().filter(|c| !joined_or_invited.contains(&c.room_id)).cloned().collect();
        // An initial sync lists rooms already left only when the filter asks for them.
        if req.since.is_none() && req.filter.room.include_leave {
            for membership in ["leave", "ban"] {
                for room in self.store.rooms_with_membership(user.as_str(), membership).await? {
                    if let Some(id) = self.store.current_state_event(&room, "m.room.member", user.as_str()).await?
                        && let Some(row) = self.store.event(&id).await?
                    {
                        leave_rows.push(row);
                    }
                }
            }
        }
        let mut seen = BTreeSet::new();
        for row in leave_rows.iter().rev() {
            if !seen.insert(row.room_id.clone()) {
                continue;
            }
            let m = self.store.membership(&row.room_id, user.as_str()).await?;
            if !matches!(m.as_deref(), Some("leave" | "ban"))
                || self.store.is_forgotten(user.as_str(), &row.room_id).await?
            {
                continue;
            }
            let room_id = <&RoomId>::try_from(row.room_id.as_str()).map_err(|e| Error::internal("room id", e))?;
            // The timeline ends with the user's departure.
            let section =
                self.room_section(room_id, req, since.stream, since.stream, row.stream_ordering, false, opts).await?;
            leave.insert(row.room_id.clone(), section);
        }

        let global: Vec<Value> = all_account_data
            .iter()
            .filter(|(r, t, _)| r.is_empty() && req.filter.account_data.allows_type(t))
            .map(|(_, t, c)| account_data_event(t, c))
            .collect();

        // Only what earlier answers handed out is deleted (up to the token's to-device
        // position); what did not fit in this answer is carried in next_batch.
        let to_device_from = req.to_device_since.unwrap_or(since.stream).min(since.stream);
        let messages = self
            .store
            .take_to_device(user.as_str(), req.device, to_device_from, now.stream, TO_DEVICE_PER_SYNC)
            .await?;
        let to_device_next = (messages.len() == TO_DEVICE_PER_SYNC).then(|| messages.last().map(|m| m.stream_pos));
        let to_device: Vec<Value> = messages.iter().map(to_device_event).collect();
        let next_batch = match to_device_next.flatten() {
            Some(pos) if pos < now.stream => format!("{}_{pos}", format_token(now)),
            _ => format_token(now),
        };

        let mut presence = Vec::new();
        if req.filter.presence.allows_type("m.presence") {
            for other in self.store.users_sharing_rooms(user.as_str()).await? {
                if let Some((state, msg, last_active, pos)) = self.store.presence(&other).await?
                    && (initial || pos > since.stream)
                    && pos <= now.stream
                {
                    let mut content = json!({
                        "presence": state,
                        "last_active_ago": (kairan_core::time::now_ms() - last_active).max(0),
                        "currently_active": state == "online",
                    });
                    if let Some(m) = msg {
                        content["status_msg"] = m.into();
                    }
                    presence.push(json!({ "type": "m.presence", "sender": other, "content": content }));
                }
            }
        }

        let (devices_changed, devices_left) = match req.since {
            Some(since) => self.e2ee().device_list_changes(user, since.stream, now.stream).await?,
            None => (vec![], vec![]),
        };
        has_news |= !join.is_empty()
            || !devices_changed.is_empty()
            || !devices_left.is_empty()
            || !invite.is_empty()
            || !knock.is_empty()
            || !leave.is_empty()
            || !global.is_empty()
            || !to_device.is_empty()
            || !presence.is_empty();
        let otk = self.one_time_key_counts(user, req.device).await?;
        let response = json!({
            "next_batch": next_batch,
            "rooms": { "join": join, "invite": invite, "leave": leave, "knock": knock },
            "account_data": { "events": global },
            "to_device": { "events": to_device },
            "presence": { "events": presence },
            "device_one_time_keys_count": otk,
            "device_unused_fallback_key_types": self.e2ee().unused_fallback_key_types(user, req.device).await?,
            "device_lists": { "changed": devices_changed, "left": devices_left },
        });
        Ok((response, has_news))
    }

    /// The stripped state shown with an invite (`invite` is the user's invite event): the
    /// room's name, avatar, topic and the like, the invite itself and the inviter's membership.
    async fn invite_state(&self, invite: &EventRow, user: &UserId) -> Result<Vec<Value>> {
        let state = self.state_at_group(invite.state_group).await?;
        let mut events = Vec::new();
        // An invite from another server to a room this server is not in: what the
        // inviting server showed of the room, and the invite itself.
        if let Some(stripped) = self.store.invite_stripped_state(&invite.room_id, user.as_str()).await?
            && let Ok(Value::Array(shown)) = serde_json::from_str::<Value>(&stripped)
            && !self
                .is_resident(&RoomId::parse(&invite.room_id).map_err(|e| Error::internal("room id", e))?, None)
                .await?
        {
            events
                .extend(shown.into_iter().filter(|e| e["type"] != "m.room.member" || e["state_key"] != user.as_str()));
            if let Some(p) = self.pdu(&invite.event_id).await? {
                events.push(json!({ "type": "m.room.member", "state_key": user, "content": p.content_value(), "sender": p.sender }));
            }
            return Ok(events);
        }
        for ((t, k), id) in state.iter() {
            let stripped = matches!(
                t.as_str(),
                "m.room.create"
                    | "m.room.join_rules"
                    | "m.room.name"
                    | "m.room.avatar"
                    | "m.room.canonical_alias"
                    | "m.room.encryption"
                    | "m.room.topic"
            ) || (t == "m.room.member" && k == user.as_str())
                || (t == "m.room.member"
                    && Some(k.as_str()) == self.pdu(&invite.event_id).await?.map(|p| p.sender.to_string()).as_deref());
            if stripped && let Some(p) = self.pdu(id).await? {
                events.push(json!({ "type": t, "state_key": k, "content": p.content_value(), "sender": p.sender }));
            }
        }
        Ok(events)
    }

    /// Timeline and state of one room between two positions.
    #[allow(clippy::too_many_arguments)]
    async fn room_section(
        &self,
        room_id: &RoomId,
        req: &SyncRequest<'_>,
        from: i64,
        since: i64,
        to: i64,
        full: bool,
        opts: ClientEventOptions<'_>,
    ) -> Result<Value> {
        let timeline_filter = &req.filter.room.timeline;
        let limit = timeline_filter.limit.unwrap_or(DEFAULT_TIMELINE_LIMIT).clamp(1, 1000) as i64;
        let mut rows = self.store.room_events(room_id.as_str(), from, to, true, limit + 1).await?;
        let limited = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        rows.reverse();
        let mut visible = self.visible_events(opts.viewer, rows).await?;
        // Events held without the room's state before them (an invite or a knock received
        // over federation before this server joined) are not part of the joined room's
        // timeline: the state at the start would be empty and the client would see a room
        // without name or encryption. The timeline starts where the state is known.
        let mut out_of_band = 0;
        for row in &visible {
            let state = self.state_at_group(row.state_group_before).await?;
            let is_create = self.pdu(&row.event_id).await?.is_some_and(|p| p.kind == TimelineEventType::RoomCreate);
            if is_create || state.contains_key(&("m.room.create".to_owned(), String::new())) {
                break;
            }
            out_of_band += 1;
        }
        if out_of_band > 0 && out_of_band < visible.len() {
            visible.drain(..out_of_band);
        }
        let events: Vec<Value> =
            self.client_events(&visible, opts).await?.into_iter().filter(|e| timeline_filter.allows(e)).collect();
        let prev_batch = match visible.first() {
            Some(first) => format!("s{}", first.stream_ordering - 1),
            None => format!("s{to}"),
        };

        // The state section: what the client needs, with the timeline's own state events,
        // to know the room's state at the end of the timeline. For a key the timeline
        // changes, that is the state at its start; for any other key, the state at its end
        // (not at its start: the room's state can move without a timeline event for it, as
        // when this server re-joins a room whose state changed meanwhile — the state comes
        // with the join — or when resolving a fork picks another event). Only what differs
        // from what the client already holds (the state at `since`) is sent.
        let state_filter = &req.filter.room.state;
        let known: std::sync::Arc<StateMap> = match full {
            true => Default::default(),
            false => self.state_at_position(room_id.as_str(), since).await?,
        };
        let start_state = match visible.first() {
            Some(first) => Some(self.state_at_group(first.state_group_before).await?),
            None => None,
        };
        let end_state = self.state_at_position(room_id.as_str(), to).await?;
        let mut touched = BTreeSet::new();
        for row in &visible {
            if let Some(p) = self.pdu(&row.event_id).await?
                && let Some(k) = &p.state_key
            {
                touched.insert((p.kind.to_string(), k.clone()));
            }
        }
        let senders: BTreeSet<String> = events
            .iter()
            .filter_map(|e| e.get("sender").and_then(Value::as_str).map(str::to_owned))
            .chain([opts.viewer.to_string()])
            .collect();
        let mut keep: Vec<String> = Vec::new();
        // `changed_by_timeline`: take only the keys the timeline changes (`Some(true)`), only
        // the others (`Some(false)`), or all (`None`: `state_after`, MSC4222 / spec v1.16, the
        // state at the end of the timeline, which a client takes as it is).
        let mut consider = |state: &StateMap, changed_by_timeline: Option<bool>| {
            for (key, id) in state.iter() {
                if changed_by_timeline.is_none_or(|c| touched.contains(key) == c)
                    && known.get(key) != Some(id)
                    && (!state_filter.lazy_load_members || key.0 != "m.room.member" || senders.contains(&key.1))
                {
                    keep.push(id.clone());
                }
            }
        };
        if let Some(start) = &start_state
            && !req.use_state_after
        {
            consider(start, Some(true));
        }
        if !std::sync::Arc::ptr_eq(&end_state, &known) {
            consider(&end_state, (!req.use_state_after).then_some(false));
        }
        let mut state_events = Vec::new();
        for e in self.client_state_events(&keep, opts).await? {
            if state_filter.allows(&e) {
                state_events.push(e);
            }
        }
        let state_key = if req.use_state_after { "state_after" } else { "state" };
        let mut section = json!({
            "timeline": { "events": events, "limited": limited, "prev_batch": prev_batch },
            state_key: { "events": state_events },
        });
        if full || limited {
            section["summary"] = self.room_summary(room_id, opts.viewer).await?;
        }
        Ok(section)
    }

    /// `m.heroes` and member counts, for clients that name rooms after their members.
    pub async fn room_summary(&self, room_id: &RoomId, user: &UserId) -> Result<Value> {
        let members = self.store.members(room_id.as_str()).await?;
        let joined = members.iter().filter(|m| m.1 == "join").count();
        let invited = members.iter().filter(|m| m.1 == "invite").count();
        let heroes: Vec<&String> = members
            .iter()
            .filter(|m| m.0 != user.as_str() && matches!(m.1.as_str(), "join" | "invite"))
            .map(|m| &m.0)
            .take(5)
            .collect();
        Ok(json!({ "m.heroes": heroes, "m.joined_member_count": joined, "m.invited_member_count": invited }))
    }

    /// Notifications after the user's read receipts, from the push actions stored with
    /// each event: for the room as a whole, or split into the main timeline and threads
    /// when the client asked for thread notifications.
    async fn unread_counts(
        &self,
        room_id: &RoomId,
        user: &UserId,
        to: i64,
        threads: bool,
    ) -> Result<(Value, Option<Value>)> {
        let positions = self.store.read_positions(room_id.as_str(), user.as_str()).await?;
        let unthreaded = positions.iter().find(|(t, _)| t.is_empty()).map_or(0, |p| p.1);
        // An unthreaded receipt covers every thread; a threaded one only its own.
        let read =
            |thread: &str| positions.iter().find(|(t, _)| t == thread).map_or(unthreaded, |p| p.1.max(unthreaded));
        let counts = self.store.unread_by_thread(user.as_str(), room_id.as_str(), read, to).await?;
        let total = |rows: &mut dyn Iterator<Item = &(String, i64, i64)>| {
            rows.fold((0, 0), |(n, h), (_, cn, ch)| (n + cn, h + ch))
        };
        if !threads {
            let (n, h) = total(&mut counts.iter());
            return Ok((json!({ "notification_count": n, "highlight_count": h }), None));
        }
        let (n, h) = total(&mut counts.iter().filter(|(t, _, _)| t == "main"));
        let by_thread: Map<String, Value> = counts
            .iter()
            .filter(|(t, _, _)| t != "main")
            .map(|(t, n, h)| (t.clone(), json!({ "notification_count": n, "highlight_count": h })))
            .collect();
        Ok((json!({ "notification_count": n, "highlight_count": h }), Some(Value::Object(by_thread))))
    }

    /// Counts of unused one-time keys per algorithm.
    async fn one_time_key_counts(&self, user: &UserId, device: &str) -> Result<Value> {
        Ok(json!(self.e2ee().count_one_time_keys(user, device).await?))
    }
}

fn receipt_event(receipts: &[crate::storage::ReceiptRow], viewer: &str) -> Value {
    let mut content = Map::new();
    for (_, rtype, user, thread, event, ts) in receipts {
        // Private receipts are seen only by their owner.
        if rtype == "m.read.private" && user != viewer {
            continue;
        }
        let mut receipt = json!({ "ts": ts });
        if !thread.is_empty() {
            receipt["thread_id"] = thread.clone().into();
        }
        if let Some(by_type) = content.entry(event.clone()).or_insert_with(|| json!({})).as_object_mut() {
            by_type.entry(rtype.clone()).or_insert_with(|| json!({}))[user] = receipt;
        }
    }
    json!({ "type": "m.receipt", "content": content })
}

/// A to-device message as a client receives it (classic and sliding sync alike).
fn to_device_event(m: &crate::storage::ToDeviceRow) -> Value {
    json!({ "sender": m.sender, "type": m.event_type, "content": parse_json(&m.content) })
}

/// An account data event as a client receives it (classic and sliding sync alike).
fn account_data_event(kind: &str, content: &str) -> Value {
    json!({ "type": kind, "content": parse_json(content) })
}

fn parse_json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| json!({}))
}
