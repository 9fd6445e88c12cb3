//! Helpers shared by the scenarios.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use kairan_tests::{Api, Response, enc};
use matrix_sdk::{
    Client, RoomState,
    config::SyncSettings,
    deserialized_responses::TimelineEvent,
    ruma::{EventId, OwnedEventId, OwnedUserId, RoomId, serde::Raw},
};
use serde_json::Value;

/// How long a test waits for something to show up in sync before failing.
pub const SYNC_DEADLINE: Duration = Duration::from_secs(20);
/// The long-poll timeout of each sync while waiting.
const SYNC_POLL: Duration = Duration::from_secs(1);

pub fn user_id(s: &str) -> anyhow::Result<OwnedUserId> {
    s.try_into().with_context(|| format!("invalid user ID {s}"))
}

/// Typed ruma content from JSON, for request fields that take `Raw<T>`.
pub fn raw<T>(value: Value) -> anyhow::Result<Raw<T>> {
    Ok(Raw::from_json(serde_json::value::to_raw_value(&value)?))
}

/// The JSON of a timeline event as the server sent it.
pub fn event_json(event: &TimelineEvent) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(event.raw().json().get())?)
}

/// The membership state the client believes it has in a room.
pub fn room_state(client: &Client, room_id: &RoomId) -> Option<RoomState> {
    client.get_room(room_id).map(|room| room.state())
}

/// Syncs (short long-polls) until `done` holds for the client's local state.
pub async fn sync_until(client: &Client, what: &str, mut done: impl FnMut(&Client) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        client
            .sync_once(SyncSettings::new().timeout(SYNC_POLL))
            .await
            .with_context(|| format!("syncing while waiting for {what}"))?;
        if done(client) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what}: not seen in sync within {SYNC_DEADLINE:?}");
        }
    }
}

/// Syncs until the timeline of `room_id` brings every event in `wanted`; returns them by ID.
/// Only events that arrive in syncs made by this call are seen.
pub async fn sync_collect(
    client: &Client,
    room_id: &RoomId,
    wanted: &[&EventId],
) -> anyhow::Result<HashMap<OwnedEventId, TimelineEvent>> {
    let wanted: HashSet<&EventId> = wanted.iter().copied().collect();
    let mut found = HashMap::new();
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        let response = client.sync_once(SyncSettings::new().timeout(SYNC_POLL)).await.context("sync")?;
        if let Some(update) = response.rooms.joined.get(room_id) {
            for event in &update.timeline.events {
                if let Some(id) = event.event_id()
                    && wanted.contains(&&*id)
                {
                    found.insert(id, event.clone());
                }
            }
        }
        if found.len() == wanted.len() {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            let missing: Vec<_> = wanted.iter().filter(|id| !found.contains_key(**id)).collect();
            bail!("events {missing:?} not seen in sync of {room_id} within {SYNC_DEADLINE:?}");
        }
    }
}

/// Syncs until one timeline event of `room_id` matches `matches`; returns its JSON.
pub async fn sync_until_event(
    client: &Client,
    room_id: &RoomId,
    what: &str,
    mut matches: impl FnMut(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        let response = client.sync_once(SyncSettings::new().timeout(SYNC_POLL)).await.context("sync")?;
        if let Some(update) = response.rooms.joined.get(room_id) {
            for event in &update.timeline.events {
                let json = event_json(event)?;
                if matches(&json) {
                    return Ok(json);
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("{what}: not seen in sync of {room_id} within {SYNC_DEADLINE:?}");
        }
    }
}

/// The `next_batch` of a `/sync` response.
pub fn next_batch(sync: &Value) -> anyhow::Result<String> {
    Ok(sync["next_batch"].as_str().with_context(|| format!("sync without next_batch: {sync}"))?.to_owned())
}

/// Raw-HTTP counterpart of [`sync_until`]: syncs from `since` (short long-polls), moving
/// `since` on to each response's `next_batch`, until `found` returns `Some` for a response.
pub async fn sync_raw_until<T>(
    api: &Api,
    since: &mut String,
    what: &str,
    mut found: impl FnMut(&Value) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        let response = api
            .sync(Some(since), SYNC_POLL.as_millis() as u64)
            .await
            .with_context(|| format!("syncing while waiting for {what}"))?;
        *since = next_batch(&response)?;
        if let Some(value) = found(&response) {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("{what}: not seen in sync within {SYNC_DEADLINE:?}; last response {response}");
        }
    }
}

/// Pages through `/rooms/{roomId}/messages` in direction `dir` ("b" or "f"), starting
/// without a `from` token (spec v1.3+: the end of the timeline for `b`, the start for `f`)
/// and following `end` until the server omits it. Returns every event in the order served.
pub async fn paginate(api: &Api, room_id: &str, dir: &str, limit: u32) -> anyhow::Result<Vec<Value>> {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for page in 0.. {
        ensure!(page < 10_000, "pagination did not end after 10000 pages");
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir={dir}&limit={limit}", enc(room_id));
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", enc(from)));
        }
        let body = api.get(&path).await?.ok().with_context(|| format!("GET {path}"))?;
        let chunk = body["chunk"].as_array().with_context(|| format!("no chunk array in {body}"))?;
        ensure!(body["start"].is_string(), "/messages response without the required `start`: {body}");
        ensure!(chunk.len() <= limit as usize, "{} events returned for limit {limit}", chunk.len());
        events.extend(chunk.iter().cloned());
        match body["end"].as_str() {
            Some(end) => {
                ensure!(
                    !chunk.is_empty() || from.as_deref() != Some(end),
                    "empty chunk with an `end` equal to `from`: pagination would loop forever"
                );
                from = Some(end.to_owned());
            }
            None => break,
        }
    }
    Ok(events)
}

/// Event IDs of a list of event JSONs.
pub fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["event_id"].as_str().unwrap_or("<no event_id>").to_owned()).collect()
}

/// Fails if an event ID occurs twice.
pub fn ensure_unique(events: &[Value]) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    for id in ids(events) {
        ensure!(seen.insert(id.clone()), "event {id} returned more than once");
    }
    Ok(())
}

/// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`.
pub async fn put_state(
    api: &Api,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    content: &Value,
) -> anyhow::Result<Response> {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{}/{}", enc(room_id), enc(event_type), enc(state_key));
    api.put(&path, content).await
}

/// The event of `event_type`/`state_key` in a list of state events (a `GET /state` response).
pub fn state_event(state: &Value, event_type: &str, state_key: &str) -> anyhow::Result<Value> {
    state
        .as_array()
        .with_context(|| format!("not an array of state events: {state}"))?
        .iter()
        .find(|e| e["type"] == event_type && e["state_key"] == state_key)
        .cloned()
        .with_context(|| format!("no {event_type}/{state_key:?} in {state}"))
}

/// The timeline events of a joined room in a `/sync` response (none if the room is absent).
pub fn sync_timeline(sync: &Value, room_id: &str) -> Vec<Value> {
    sync["rooms"]["join"][room_id]["timeline"]["events"].as_array().cloned().unwrap_or_default()
}

/// The ephemeral events of a joined room in a `/sync` response.
pub fn sync_ephemeral(sync: &Value, room_id: &str) -> Vec<Value> {
    sync["rooms"]["join"][room_id]["ephemeral"]["events"].as_array().cloned().unwrap_or_default()
}
