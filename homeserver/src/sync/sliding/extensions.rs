//! The extensions of a sliding sync response: to-device messages, end-to-end encryption
//! (device lists, key counts), account data, receipts and typing, each for the rooms the
//! request names (its lists' and subscriptions' rooms by default).

use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    UserId,
    api::client::sync::sync_events::v5::request::{ExtensionRoomConfig, Extensions},
};
use serde_json::{Map, Value, json};

use super::{MAX_TO_DEVICE, Member, lists::Wanted};
use crate::{
    services::Services,
    storage::ReceiptRow,
    sync::{account_data_event, parse_token, receipt_event, to_device_event},
};
use kairan_core::{error::Result, notifier::Position};

/// The rooms of a response, which the extensions cover.
pub(super) struct ExtensionScope<'a> {
    pub wanted: &'a Wanted,
    pub memberships: &'a BTreeMap<String, Member>,
    /// Rooms sent in full, with the events of their timelines.
    pub full_rooms: &'a BTreeMap<String, BTreeSet<String>>,
}

impl Services {
    /// The extensions the request enabled, and whether any has news.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn sliding_extensions(
        &self,
        user: &UserId,
        device: &str,
        ext: &Extensions,
        since: Option<Position>,
        now: Position,
        scope: &ExtensionScope<'_>,
        // Receipts already read for the rooms' own counts, reused here.
        mut receipts_since: BTreeMap<String, Vec<ReceiptRow>>,
    ) -> Result<(Map<String, Value>, bool)> {
        let mut extensions = Map::new();
        let mut ext_news = false;
        let ext_rooms = |lists: &Option<Vec<String>>, rooms_cfg: &Option<Vec<ExtensionRoomConfig>>| {
            let mut out: BTreeSet<String> = BTreeSet::new();
            for (name, rooms) in &scope.wanted.in_lists {
                if lists.as_ref().is_none_or(|l| l.iter().any(|n| n == name)) {
                    out.extend(rooms.iter().cloned());
                }
            }
            match rooms_cfg {
                None => out.extend(scope.wanted.subscribed.iter().cloned()),
                Some(list) => {
                    for entry in list {
                        match entry {
                            ExtensionRoomConfig::AllSubscribed => out.extend(scope.wanted.subscribed.iter().cloned()),
                            ExtensionRoomConfig::Room(r) => {
                                out.insert(r.to_string());
                            }
                            _ => {}
                        }
                    }
                }
            }
            out.retain(|r| scope.memberships.get(r).is_some_and(|m| m.kind == "join"));
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
            let events: Vec<Value> = messages.iter().map(to_device_event).collect();
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
                let event = account_data_event(&t, &content);
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
                let rows: Vec<ReceiptRow> = if let Some(ids) = scope.full_rooms.get(&room) {
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
                let fresh = since.is_none() || scope.full_rooms.contains_key(&room);
                let changed = since.is_some_and(|s| serial > s.typing);
                if changed || (fresh && !users.is_empty()) {
                    by_room.insert(room, json!({ "type": "m.typing", "content": { "user_ids": users } }));
                }
            }
            ext_news |= !by_room.is_empty();
            extensions.insert("typing".into(), json!({ "rooms": by_room }));
        }

        Ok((extensions, ext_news))
    }
}
