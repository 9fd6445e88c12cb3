//! Rooms: list, show, shut down, purge history, room policy.

use axum::{Extension, extract::State, response::Response};
use serde::Deserialize;
use serde_json::json;

use super::{AdminJson, AdminPath, AdminQuery, Caller, answer, page_limit};
use crate::{admin::room_policy::RoomPolicyUpdate, services::AppState};
use kairan_core::{
    error::{Error, Result},
    time::{DayEdge, format_ms, parse_instant},
};

#[derive(Deserialize)]
pub struct ListQuery {
    from: Option<String>,
    limit: Option<i64>,
    search: Option<String>,
}

/// GET /rooms
pub async fn list(State(services): State<AppState>, AdminQuery(q): AdminQuery<ListQuery>) -> Result<Response> {
    let limit = page_limit(q.limit)?;
    let (rooms, total, next) = services.admin_list_rooms(q.from.as_deref(), limit, q.search.as_deref()).await?;
    let n = rooms.len();
    Ok(answer(json!({ "rooms": rooms, "total": total, "next": next }), format!("{n} listed")))
}

/// GET /rooms/{room_id}
pub async fn show(
    State(services): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    AdminPath(room): AdminPath<String>,
) -> Result<Response> {
    let room_id = services.admin_target_room(&room).await?;
    Ok(answer(services.admin_room_details(&caller, &room_id).await?, ""))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ShutdownBody {
    /// Every local member leaves (default true).
    evacuate: Option<bool>,
    /// Joins are refused from now on (default true).
    block: Option<bool>,
    reason: Option<String>,
}

/// POST /rooms/{room_id}/shutdown
pub async fn shutdown(
    State(services): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    AdminPath(room): AdminPath<String>,
    AdminJson(b): AdminJson<ShutdownBody>,
) -> Result<Response> {
    let room_id = services.admin_target_room(&room).await?;
    let (evacuate, block) = (b.evacuate.unwrap_or(true), b.block.unwrap_or(true));
    if !evacuate && !block {
        return Err(Error::invalid_param("a shutdown that neither evacuates nor blocks does nothing"));
    }
    let out = services.admin_shutdown_room(&caller, &room_id, evacuate, block, b.reason).await?;
    let detail = format!("{} evacuated, {} failed, blocked: {}", out.evacuated.len(), out.failed.len(), out.blocked);
    Ok(answer(serde_json::to_value(&out).unwrap_or_default(), detail))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeBody {
    /// A date (`YYYY-MM-DD`, from its start) or a time.
    before: Option<String>,
    /// Milliseconds since the epoch.
    before_ts: Option<i64>,
}

/// POST /rooms/{room_id}/purge
pub async fn purge(
    State(services): State<AppState>,
    AdminPath(room): AdminPath<String>,
    AdminJson(b): AdminJson<PurgeBody>,
) -> Result<Response> {
    let room_id = services.admin_target_room(&room).await?;
    let offset = services.config.admin.utc_offset_seconds();
    let before = match (b.before_ts, b.before) {
        (Some(ts), _) => ts,
        (None, Some(d)) => parse_instant(&d, offset, DayEdge::Start)
            .ok_or_else(|| Error::invalid_param(format!("before {d:?} is not a date (YYYY-MM-DD) or time")))?,
        (None, None) => return Err(Error::missing_param("before (a date) is required")),
    };
    let deleted = services.admin_purge_history(&room_id, before).await?;
    Ok(answer(
        json!({ "room_id": room_id, "before_ts": before, "before": format_ms(before, offset), "deleted_events": deleted }),
        format!("{deleted} events deleted"),
    ))
}

/// GET /rooms/{room_id}/policy
pub async fn show_policy(State(services): State<AppState>, AdminPath(room): AdminPath<String>) -> Result<Response> {
    let room_id = services.admin_target_room(&room).await?;
    Ok(answer(services.admin_room_policy(&room_id).await?, ""))
}

/// PUT /rooms/{room_id}/policy
pub async fn set_policy(
    State(services): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    AdminPath(room): AdminPath<String>,
    AdminJson(update): AdminJson<RoomPolicyUpdate>,
) -> Result<Response> {
    let room_id = services.admin_target_room(&room).await?;
    let out = services.admin_set_room_policy(&caller, &room_id, update).await?;
    let detail = format!(
        "{} event(s) sent{}{}",
        out.events.len(),
        out.sender.as_ref().map(|s| format!(" as {s}")).unwrap_or_default(),
        if out.archive_invited { "; archive account invited" } else { "" }
    );
    let events: Vec<_> = out.events.iter().map(|(t, id)| json!({ "type": t, "event_id": id })).collect();
    Ok(answer(
        json!({
            "room_id": out.room_id,
            "policy": out.policy,
            "events": events,
            "sender": out.sender,
            "archive_invited": out.archive_invited,
        }),
        detail,
    ))
}
