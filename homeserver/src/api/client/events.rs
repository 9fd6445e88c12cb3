//! Sending, redacting and reading events: send, redact, event, context, messages, relations.

use std::collections::BTreeSet;

use axum::{Json, Router};
use ruma::api::{
    Direction,
    client::{
        context::get_context,
        message::{get_message_events, send_message_event},
        redact::redact_event,
        relations::{
            get_relating_events, get_relating_events_with_rel_type, get_relating_events_with_rel_type_and_event_type,
        },
        room::get_room_event,
    },
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    rooms::{ClientEventOptions, EventTemplate, Txn},
    services::{AppState, Services},
    storage::EventRow,
    sync::{RoomEventFilter, parse_token},
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(send)
        .ruma(redact)
        .ruma(event)
        .ruma(context)
        .ruma(messages)
        .ruma(relations)
        .ruma(relations_rel)
        .ruma(relations_rel_type)
}

/// PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
async fn send(services: AppState, req: Ruma<send_message_event::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let b = &req.body;
    let content: Value = serde_json::from_str(b.body.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(Error::bad_json("event content must be a JSON object"));
    }
    services.require_joined(&b.room_id, &auth.user).await?;
    // The spec leaves /send unlimited; an office server limits it as Synapse does (rc_message).
    services.limiter.check(kairan_core::ratelimit::LimitClass::Action, auth.user.as_str())?;
    let txn = Txn {
        device_id: auth.device.clone(),
        txn_id: b.txn_id.to_string(),
        scope: format!("send/{}/{}", b.room_id, b.event_type),
    };
    let pdu = services
        .append_event(&b.room_id, &auth.user, EventTemplate::message(b.event_type.to_string(), content), Some(txn))
        .await?;
    Ok(Json(json!({ "event_id": pdu.event_id })))
}

/// PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
async fn redact(services: AppState, req: Ruma<redact_event::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let b = &req.body;
    services.require_joined(&b.room_id, &auth.user).await?;
    let template = EventTemplate::redaction(b.event_id.clone(), b.reason.as_deref());
    let txn = Txn {
        device_id: auth.device.clone(),
        txn_id: b.txn_id.to_string(),
        scope: format!("redact/{}/{}", b.room_id, b.event_id),
    };
    let pdu = services.append_event(&b.room_id, &auth.user, template, Some(txn)).await?;
    Ok(Json(json!({ "event_id": pdu.event_id })))
}

/// A visible event of a room, or `M_NOT_FOUND` (also when it is hidden from the user).
async fn visible_event(services: &Services, room_id: &str, event_id: &str, user: &ruma::UserId) -> Result<EventRow> {
    let row = services.store.event(event_id).await?.filter(|r| r.room_id == room_id);
    match row {
        Some(row) if services.can_see_event(user, &row).await? => Ok(row),
        _ => Err(Error::not_found("event not found")),
    }
}

/// GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}
async fn event(services: AppState, req: Ruma<get_room_event::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let row = visible_event(&services, req.body.room_id.as_str(), req.body.event_id.as_str(), &auth.user).await?;
    let opts = ClientEventOptions { viewer: &auth.user, device_id: Some(&auth.device), bundle_relations: true };
    Ok(Json(services.client_event(&row, opts).await?))
}

fn parse_filter(raw: Option<&str>) -> Result<RoomEventFilter> {
    match raw {
        None | Some("") => Ok(RoomEventFilter::default()),
        Some(s) => serde_json::from_str(s).map_err(|e| Error::bad_json(format!("invalid filter: {e}"))),
    }
}

/// Members of the senders of `events`, for lazy-loading clients.
async fn lazy_members(
    services: &Services,
    room_id: &str,
    events: &[Value],
    viewer: &ruma::UserId,
) -> Result<Vec<Value>> {
    let senders: BTreeSet<&str> = events.iter().filter_map(|e| e["sender"].as_str()).collect();
    let mut ids = Vec::new();
    for s in senders {
        if let Some(id) = services.store.current_state_event(room_id, "m.room.member", s).await? {
            ids.push(id);
        }
    }
    let opts = ClientEventOptions { viewer, device_id: None, bundle_relations: false };
    services.client_state_events(&ids, opts).await
}

/// GET /_matrix/client/v3/rooms/{roomId}/messages
async fn messages(services: AppState, req: Ruma<get_message_events::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let b = &req.body;
    let room = b.room_id.as_str();
    let (_, left_at) = services.readable_state(&b.room_id, &auth.user).await?;
    let ceiling = left_at.unwrap_or(services.notifier.current().stream);
    let filter_json = serde_json::to_string(&b.filter).ok();
    let filter = parse_filter(filter_json.as_deref())?;
    let limit = u64::from(b.limit).clamp(1, 1000) as i64;
    let backwards = b.dir == Direction::Backward;
    let from = match &b.from {
        Some(t) => parse_token(t)?.stream,
        None if backwards => ceiling,
        None => i64::MIN,
    };
    let to = b.to.as_deref().map(parse_token).transpose()?.map(|p| p.stream);
    let rows = if backwards {
        // Backfilled history sits at negative positions.
        let lower = to.unwrap_or(i64::MIN);
        let mut rows = services.store.room_events(room, lower, from.min(ceiling), true, limit).await?;
        // Paging past the start of what this server holds: ask the room's other servers.
        if (rows.len() as i64) < limit && to.is_none() && services.backfill(&b.room_id).await? > 0 {
            rows = services.store.room_events(room, lower, from.min(ceiling), true, limit).await?;
        }
        rows
    } else {
        let upper = to.unwrap_or(ceiling).min(ceiling);
        services.store.room_events(room, from, upper, false, limit).await?
    };
    let end = rows.last().map(|r| if backwards { r.stream_ordering - 1 } else { r.stream_ordering });
    let visible = services.visible_events(&auth.user, rows).await?;
    let opts = ClientEventOptions { viewer: &auth.user, device_id: Some(&auth.device), bundle_relations: true };
    let chunk: Vec<Value> =
        services.client_events(&visible, opts).await?.into_iter().filter(|e| filter.allows(e)).collect();
    let mut response = json!({ "chunk": chunk, "start": format!("s{from}") });
    if let Some(end) = end {
        response["end"] = format!("s{end}").into();
    }
    if filter.lazy_load_members {
        response["state"] = Value::Array(lazy_members(&services, room, &chunk, &auth.user).await?);
    }
    Ok(Json(response))
}

/// GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}
async fn context(services: AppState, req: Ruma<get_context::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let b = &req.body;
    let room = b.room_id.as_str();
    let row = visible_event(&services, room, b.event_id.as_str(), &auth.user).await?;
    let filter_json = serde_json::to_string(&b.filter).ok();
    let filter = parse_filter(filter_json.as_deref())?;
    let limit = u64::from(b.limit).min(100) as i64;
    let before_n = limit / 2;
    let after_n = limit - before_n;
    let (_, left_at) = services.readable_state(&b.room_id, &auth.user).await?;
    let ceiling = left_at.unwrap_or(services.notifier.current().stream);
    let before = services.store.room_events(room, i64::MIN, row.stream_ordering - 1, true, before_n).await?;
    let after = services.store.room_events(room, row.stream_ordering, ceiling, false, after_n).await?;
    let opts = ClientEventOptions { viewer: &auth.user, device_id: Some(&auth.device), bundle_relations: true };
    let vis_before = services.visible_events(&auth.user, before.clone()).await?;
    let vis_after = services.visible_events(&auth.user, after.clone()).await?;
    let start = before.last().map_or(row.stream_ordering - 1, |r| r.stream_ordering - 1);
    let end = after.last().map_or(row.stream_ordering, |r| r.stream_ordering);
    let events_before: Vec<Value> =
        services.client_events(&vis_before, opts).await?.into_iter().filter(|e| filter.allows(e)).collect();
    let events_after: Vec<Value> =
        services.client_events(&vis_after, opts).await?.into_iter().filter(|e| filter.allows(e)).collect();
    let state_map = services.state_at_group(row.state_group).await?;
    let state_events = if filter.lazy_load_members {
        let all: Vec<Value> = events_before.iter().chain(events_after.iter()).cloned().collect();
        lazy_members(&services, room, &all, &auth.user).await?
    } else {
        services.client_state_events(state_map.values(), opts).await?
    };
    Ok(Json(json!({
        "event": services.client_event(&row, opts).await?,
        "events_before": events_before,
        "events_after": events_after,
        "start": format!("s{start}"),
        "end": format!("s{end}"),
        "state": state_events,
    })))
}

/// The shared body of the three relations endpoints.
#[allow(clippy::too_many_arguments)]
async fn relating(
    services: &Services,
    auth: &crate::api::Auth,
    room_id: &ruma::RoomId,
    event_id: &ruma::EventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<&str>,
    to: Option<&str>,
    dir: Direction,
    limit: Option<ruma::UInt>,
) -> Result<Json<Value>> {
    visible_event(services, room_id.as_str(), event_id.as_str(), &auth.user).await?;
    let backwards = dir == Direction::Backward;
    let current = services.notifier.current().stream;
    let from = from.map(parse_token).transpose()?.map(|p| p.stream);
    let to = to.map(parse_token).transpose()?.map(|p| p.stream);
    let limit = limit.map_or(50, u64::from).clamp(1, 1000) as i64;
    let (lower, upper) =
        if backwards { (to.unwrap_or(0), from.unwrap_or(current)) } else { (from.unwrap_or(0), to.unwrap_or(current)) };
    let rows = services
        .store
        .relations(room_id.as_str(), event_id.as_str(), rel_type.as_deref(), lower, upper, backwards, limit + 1)
        .await?;
    let more = rows.len() as i64 > limit;
    let rows: Vec<EventRow> = rows.into_iter().take(limit as usize).collect();
    let next = rows.last().map(|r| if backwards { r.stream_ordering - 1 } else { r.stream_ordering });
    let visible = services.visible_events(&auth.user, rows).await?;
    let opts = ClientEventOptions { viewer: &auth.user, device_id: Some(&auth.device), bundle_relations: false };
    let chunk: Vec<Value> = services
        .client_events(&visible, opts)
        .await?
        .into_iter()
        .filter(|e| event_type.as_deref().is_none_or(|t| e["type"] == t))
        .collect();
    let mut response = json!({ "chunk": chunk });
    if more && let Some(n) = next {
        response["next_batch"] = format!("s{n}").into();
    }
    Ok(Json(response))
}

/// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}
async fn relations(services: AppState, req: Ruma<get_relating_events::v1::Request>) -> Result<Json<Value>> {
    let b = &req.body;
    relating(
        &services,
        req.auth()?,
        &b.room_id,
        &b.event_id,
        None,
        None,
        b.from.as_deref(),
        b.to.as_deref(),
        b.dir,
        b.limit,
    )
    .await
}

/// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}
async fn relations_rel(
    services: AppState,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<Json<Value>> {
    let b = &req.body;
    let rel = Some(b.rel_type.to_string());
    relating(
        &services,
        req.auth()?,
        &b.room_id,
        &b.event_id,
        rel,
        None,
        b.from.as_deref(),
        b.to.as_deref(),
        b.dir,
        b.limit,
    )
    .await
}

/// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}
async fn relations_rel_type(
    services: AppState,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<Json<Value>> {
    let b = &req.body;
    let rel = Some(b.rel_type.to_string());
    let et = Some(b.event_type.to_string());
    relating(
        &services,
        req.auth()?,
        &b.room_id,
        &b.event_id,
        rel,
        et,
        b.from.as_deref(),
        b.to.as_deref(),
        b.dir,
        b.limit,
    )
    .await
}
