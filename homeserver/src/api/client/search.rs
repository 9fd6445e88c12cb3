//! Message search, the space hierarchy, and TURN discovery.

use std::collections::{BTreeSet, VecDeque};

use axum::{Json, Router};
use ruma::{
    OwnedRoomId,
    api::client::{search::search_events, space::get_hierarchy, voip::get_turn_server_info},
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    rooms::ClientEventOptions,
    services::AppState,
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(search).ruma(hierarchy).ruma(turn_server)
}

/// POST /_matrix/client/v3/search
///
/// Room events only, newest first: message bodies and room names and topics containing
/// the term, in the user's joined rooms (or the filter's rooms among them). Encrypted
/// messages are the clients' to search.
async fn search(services: AppState, req: Ruma<search_events::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let Some(criteria) = &req.body.search_categories.room_events else {
        return Ok(Json(json!({ "search_categories": {} })));
    };
    let term = criteria.search_term.trim().to_lowercase();
    if term.is_empty() {
        return Err(Error::bad_json("search_term must not be empty"));
    }
    let before = match &req.body.next_batch {
        Some(t) => t.parse::<i64>().map_err(|_| Error::invalid_param("invalid next_batch"))?,
        None => i64::MAX,
    };
    let limit = criteria.filter.limit.map_or(10, u64::from).clamp(1, 100) as i64;
    let mut rooms = services.store.rooms_with_membership(auth.user.as_str(), "join").await?;
    if let Some(only) = &criteria.filter.rooms {
        rooms.retain(|r| only.iter().any(|o| o.as_str() == r));
    }
    rooms.retain(|r| !criteria.filter.not_rooms.iter().any(|o| o.as_str() == r));
    let mut hits = Vec::new();
    for room in &rooms {
        hits.extend(services.store.search_events(room, &term, before, limit + 1).await?);
    }
    hits.sort_by_key(|h| std::cmp::Reverse(h.stream_ordering));
    let mut visible = services.visible_events(&auth.user, hits).await?;
    let more = visible.len() as i64 > limit;
    visible.truncate(limit as usize);
    let opts = ClientEventOptions { viewer: &auth.user, device_id: Some(&auth.device), bundle_relations: false };
    let events = services.client_events(&visible, opts).await?;
    let results: Vec<Value> = events.into_iter().map(|e| json!({ "rank": 1.0, "result": e })).collect();
    let mut room_events = json!({
        "count": results.len(),
        "results": results,
        "highlights": term.split_whitespace().collect::<Vec<_>>(),
    });
    if more && let Some(last) = visible.last() {
        room_events["next_batch"] = last.stream_ordering.to_string().into();
    }
    Ok(Json(json!({ "search_categories": { "room_events": room_events } })))
}

/// GET /_matrix/client/v1/rooms/{roomId}/hierarchy
///
/// The space and the rooms under it (breadth first, following `m.space.child`), among
/// the rooms this server holds that the user has joined or could join or preview.
async fn hierarchy(services: AppState, req: Ruma<get_hierarchy::v1::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let b = &req.body;
    let max_depth = b.max_depth.map_or(3, u64::from).min(10);
    let limit = b.limit.map_or(50, u64::from).clamp(1, 200) as usize;
    let skip: usize = b.from.as_deref().map(|f| f.parse().unwrap_or(0)).unwrap_or(0);
    let mut queue = VecDeque::from([(b.room_id.clone(), 0u64)]);
    let mut seen = BTreeSet::new();
    let mut rooms = Vec::new();
    while let Some((room_id, depth)) = queue.pop_front() {
        if !seen.insert(room_id.clone()) {
            continue;
        }
        let Some(mut summary) = services.room_preview(&room_id, Some(&auth.user)).await? else {
            if depth == 0 {
                return Err(Error::forbidden("you cannot see this space"));
            }
            continue;
        };
        // The hierarchy's entries are summaries without the asker's membership.
        if let Some(fields) = summary.as_object_mut() {
            fields.remove("membership");
        }
        let current = services.store.current_state(room_id.as_str()).await?;
        let mut children_state = Vec::new();
        for ((t, key), id) in current.iter() {
            if t != "m.space.child" {
                continue;
            }
            let Some(child) = services.pdu(id).await? else { continue };
            let content = child.content_value();
            // A child event without `via` has been removed from the space.
            if content.get("via").and_then(Value::as_array).is_none_or(|v| v.is_empty()) {
                continue;
            }
            if b.suggested_only && content["suggested"] != true {
                continue;
            }
            children_state.push(json!({
                "type": "m.space.child", "state_key": key, "content": content,
                "sender": child.sender, "origin_server_ts": child.origin_server_ts,
            }));
            if depth < max_depth
                && let Ok(child_id) = OwnedRoomId::try_from(key.as_str())
            {
                queue.push_back((child_id, depth + 1));
            }
        }
        let mut entry = summary;
        entry["children_state"] = Value::Array(children_state);
        rooms.push(entry);
    }
    let total = rooms.len();
    let page: Vec<Value> = rooms.into_iter().skip(skip).take(limit).collect();
    let mut response = json!({ "rooms": page });
    // `from` is the client's: a huge offset must not wrap (or, in debug, panic).
    let next = skip.saturating_add(limit);
    if next < total {
        response["next_batch"] = next.to_string().into();
    }
    Ok(Json(response))
}

/// GET /_matrix/client/v3/voip/turnServer
///
/// No TURN server is configured: an empty object, as Synapse answers then, so clients
/// fall back to direct connections.
async fn turn_server(_: AppState, _req: Ruma<get_turn_server_info::v3::Request>) -> Result<Json<Value>> {
    Ok(Json(json!({})))
}
