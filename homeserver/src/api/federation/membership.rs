//! Joining, leaving and inviting across servers: `make_join`/`send_join`,
//! `make_leave`/`send_leave`, `invite`. The rules live in `rooms::resident`.

use axum::{Json, Router};
use ruma::api::federation::membership::{
    create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event, prepare_knock_event,
    prepare_leave_event,
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma(make_join)
        .ruma(send_join)
        .ruma(make_leave)
        .ruma(send_leave)
        .ruma(invite)
        .ruma(make_knock)
        .ruma(send_knock)
}

/// GET /_matrix/federation/v1/make_knock/{roomId}/{userId}
async fn make_knock(services: AppState, req: Ruma<prepare_knock_event::v1::Request>) -> Result<Json<Value>> {
    let origin = req.origin()?;
    let b = &req.body;
    let (version, event) = services.make_membership(origin, &b.room_id, &b.user_id, "knock", &b.ver).await?;
    Ok(Json(json!({ "room_version": version, "event": event })))
}

/// PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}
async fn send_knock(services: AppState, req: Ruma<create_knock_event::v1::Request>) -> Result<Json<Value>> {
    let origin = req.origin()?;
    let b = &req.body;
    let knocked = services.receive_membership(origin, &b.room_id, &b.event_id, &b.pdu, "knock").await?;
    Ok(Json(json!({ "knock_room_state": knocked.state })))
}

/// GET /_matrix/federation/v1/make_join/{roomId}/{userId}
async fn make_join(services: AppState, req: Ruma<prepare_join_event::v1::Request>) -> Result<Json<Value>> {
    let origin = req.origin()?;
    let b = &req.body;
    let (version, event) = services.make_membership(origin, &b.room_id, &b.user_id, "join", &b.ver).await?;
    Ok(Json(json!({ "room_version": version, "event": event })))
}

/// PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}
async fn send_join(services: AppState, req: Ruma<create_join_event::v2::Request>) -> Result<Json<Value>> {
    let origin = req.origin()?;
    let b = &req.body;
    let joined = services.receive_membership(origin, &b.room_id, &b.event_id, &b.pdu, "join").await?;
    Ok(Json(json!({
        "origin": services.server_name(),
        "members_omitted": false,
        "state": joined.state,
        "auth_chain": joined.auth_chain,
        "event": joined.event,
        "servers_in_room": joined.servers_in_room,
    })))
}

/// GET /_matrix/federation/v1/make_leave/{roomId}/{userId}
async fn make_leave(services: AppState, req: Ruma<prepare_leave_event::v1::Request>) -> Result<Json<Value>> {
    let origin = req.origin()?;
    let b = &req.body;
    let (version, event) = services.make_membership(origin, &b.room_id, &b.user_id, "leave", &[]).await?;
    Ok(Json(json!({ "room_version": version, "event": event })))
}

/// PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}
async fn send_leave(services: AppState, req: Ruma<create_leave_event::v2::Request>) -> Result<Json<Value>> {
    let origin = req.origin()?;
    let b = &req.body;
    services.receive_membership(origin, &b.room_id, &b.event_id, &b.pdu, "leave").await?;
    Ok(Json(json!({})))
}

/// PUT /_matrix/federation/v2/invite/{roomId}/{eventId}
async fn invite(services: AppState, req: Ruma<create_invite::v2::Request>) -> Result<Json<Value>> {
    let origin = req.origin()?;
    let b = &req.body;
    let event = services
        .receive_invite(origin, &b.room_id, &b.event_id, &b.room_version, &b.event, &b.invite_room_state)
        .await?;
    Ok(Json(json!({ "event": event })))
}
