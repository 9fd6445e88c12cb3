//! Serving room history to other servers: `/event`, `/state`, `/state_ids`, `/backfill`, `/get_missing_events`, `/event_auth`.
//!
//! Who may read what is decided in federation/history.rs; these handlers only parse and answer.

use axum::{Json, Router};
use ruma::{
    MilliSecondsSinceUnixEpoch,
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
    },
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new().ruma(event).ruma(services).ruma(state_ids).ruma(backfill).ruma(missing_events).ruma(event_auth)
}

/// GET /_matrix/federation/v1/event/{eventId}
async fn event(services: AppState, req: Ruma<get_event::v1::Request>) -> Result<Json<Value>> {
    let pdu = services.event_for_server(req.origin()?, &req.body.event_id).await?;
    Ok(Json(json!({
        "origin": services.server_name(),
        "origin_server_ts": MilliSecondsSinceUnixEpoch::now(),
        "pdus": [pdu],
    })))
}

/// GET /_matrix/federation/v1/state/{roomId}?event_id=
async fn services(services: AppState, req: Ruma<get_room_state::v1::Request>) -> Result<Json<Value>> {
    let origin = req.origin()?;
    let (pdu_ids, auth_ids) = services.state_ids_for_server(origin, &req.body.room_id, &req.body.event_id).await?;
    let pdus = services.pdus_for_server(origin, &pdu_ids).await?;
    let auth_chain = services.pdus_for_server(origin, &auth_ids).await?;
    Ok(Json(json!({ "pdus": pdus, "auth_chain": auth_chain })))
}

/// GET /_matrix/federation/v1/state_ids/{roomId}?event_id=
async fn state_ids(services: AppState, req: Ruma<get_room_state_ids::v1::Request>) -> Result<Json<Value>> {
    let (pdu_ids, auth_chain_ids) =
        services.state_ids_for_server(req.origin()?, &req.body.room_id, &req.body.event_id).await?;
    Ok(Json(json!({ "pdu_ids": pdu_ids, "auth_chain_ids": auth_chain_ids })))
}

/// GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=
async fn backfill(services: AppState, req: Ruma<get_backfill::v1::Request>) -> Result<Json<Value>> {
    let b = &req.body;
    let limit = usize::try_from(u64::from(b.limit)).unwrap_or(usize::MAX);
    let pdus = services.backfill_for_server(req.origin()?, &b.room_id, &b.v, limit).await?;
    Ok(Json(json!({
        "origin": services.server_name(),
        "origin_server_ts": MilliSecondsSinceUnixEpoch::now(),
        "pdus": pdus,
    })))
}

/// POST /_matrix/federation/v1/get_missing_events/{roomId}
async fn missing_events(services: AppState, req: Ruma<get_missing_events::v1::Request>) -> Result<Json<Value>> {
    let b = &req.body;
    let limit = usize::try_from(u64::from(b.limit)).unwrap_or(usize::MAX);
    let events = services
        .missing_events_for_server(
            req.origin()?,
            &b.room_id,
            &b.earliest_events,
            &b.latest_events,
            limit,
            u64::from(b.min_depth),
        )
        .await?;
    Ok(Json(json!({ "events": events })))
}

/// GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}
async fn event_auth(services: AppState, req: Ruma<get_event_authorization::v1::Request>) -> Result<Json<Value>> {
    let auth_chain = services.event_auth_for_server(req.origin()?, &req.body.room_id, &req.body.event_id).await?;
    Ok(Json(json!({ "auth_chain": auth_chain })))
}
