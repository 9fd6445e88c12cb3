//! Per-user account data, global and per room.

use axum::{Json, Router};
use ruma::api::client::config::{
    get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    services::{AppState, Services},
};
use kairan_core::{
    error::{Error, Result},
    notifier::Audience,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(get_global).ruma(set_global).ruma(get_room).ruma(set_room)
}

fn own(user: &ruma::UserId, target: &ruma::UserId) -> Result<()> {
    if user == target { Ok(()) } else { Err(Error::forbidden("you can only access your own account data")) }
}

async fn put(services: &Services, user: &ruma::UserId, room: &str, kind: &str, raw: &str) -> Result<Json<Value>> {
    let v: Value = serde_json::from_str(raw).map_err(|e| Error::bad_json(e.to_string()))?;
    if !v.is_object() {
        return Err(Error::bad_json("account data must be a JSON object"));
    }
    if matches!(kind, "m.fully_read" | "m.push_rules") {
        // The spec's status for server-managed types is 405.
        let mut e = Error::bad_json(format!("{kind} is managed by the server; use its own endpoint"));
        e.status = http::StatusCode::METHOD_NOT_ALLOWED;
        return Err(e);
    }
    let pos = services.store.put_account_data(user.as_str(), room, kind, &v.to_string()).await?;
    services.notifier.advance(pos, Audience::user(user.as_str()));
    Ok(Json(json!({})))
}

async fn get(services: &Services, user: &ruma::UserId, room: &str, kind: &str) -> Result<Json<Value>> {
    let data = services
        .store
        .account_data(user.as_str(), room, kind)
        .await?
        .ok_or_else(|| Error::not_found("no account data of that type"))?;
    Ok(Json(serde_json::from_str(&data).unwrap_or_default()))
}

/// GET /_matrix/client/v3/user/{userId}/account_data/{type}
async fn get_global(services: AppState, req: Ruma<get_global_account_data::v3::Request>) -> Result<Json<Value>> {
    own(req.user()?, &req.body.user_id)?;
    get(&services, req.user()?, "", &req.body.event_type.to_string()).await
}

/// PUT /_matrix/client/v3/user/{userId}/account_data/{type}
async fn set_global(services: AppState, req: Ruma<set_global_account_data::v3::Request>) -> Result<Json<Value>> {
    own(req.user()?, &req.body.user_id)?;
    put(&services, req.user()?, "", &req.body.event_type.to_string(), req.body.data.json().get()).await
}

/// GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
async fn get_room(services: AppState, req: Ruma<get_room_account_data::v3::Request>) -> Result<Json<Value>> {
    own(req.user()?, &req.body.user_id)?;
    get(&services, req.user()?, req.body.room_id.as_str(), &req.body.event_type.to_string()).await
}

/// PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
async fn set_room(services: AppState, req: Ruma<set_room_account_data::v3::Request>) -> Result<Json<Value>> {
    own(req.user()?, &req.body.user_id)?;
    put(&services, req.user()?, req.body.room_id.as_str(), &req.body.event_type.to_string(), req.body.data.json().get())
        .await
}
