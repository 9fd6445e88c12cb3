//! One room of a response: what changed since the connection was sent it (timeline, the
//! required state, counts), or all of it for a room sent for the first time or again.

use std::collections::BTreeSet;

use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use super::{MAX_TIMELINE_LIMIT, Member, RoomConfig, Sent, Timeline};
use crate::{
    rooms::{ClientEventOptions, StateMap},
    services::Services,
};
use kairan_core::{
    error::{Error, Result},
    notifier::Position,
};

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
    /// One room of a response: its JSON, what the connection will have been sent of it,
    /// and, when it is sent in full, the IDs of its timeline events. `None` if the
    /// connection is up to date with it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn room_update(
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
