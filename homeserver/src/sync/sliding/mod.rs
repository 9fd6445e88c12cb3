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

mod extensions;
mod lists;
mod room;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use http::StatusCode;
use ruma::{RoomId, UserId, api::client::sync::sync_events::v5};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use self::extensions::ExtensionScope;
use super::Position;
use crate::{rooms::ClientEventOptions, services::Services, storage::EventRow};
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
        let dm_rooms = self.direct_rooms(user).await?;
        let wanted = self.sliding_wanted(user, req, bump_event_types, &memberships, &dm_rooms).await?;

        // The rooms themselves.
        let opts = ClientEventOptions { viewer: user, device_id: Some(device), bundle_relations: true };
        let mut rooms = Map::new();
        let mut sent = BTreeMap::new();
        let mut full_rooms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut receipts_since: BTreeMap<String, Vec<crate::storage::ReceiptRow>> = BTreeMap::new();
        for (room, config) in &wanted.rooms {
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

        let scope = ExtensionScope { wanted: &wanted, memberships: &memberships, full_rooms: &full_rooms };
        let (extensions, ext_news) =
            self.sliding_extensions(user, device, &req.extensions, since, now, &scope, receipts_since).await?;

        let lists_changed = base.is_none_or(|b| b.lists != wanted.counts);
        Ok(Computed {
            has_news: !rooms.is_empty() || lists_changed || ext_news,
            lists: wanted.counts,
            rooms,
            extensions,
            sent,
        })
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
}
