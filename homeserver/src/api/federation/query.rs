//! Queries from other servers: room aliases (`query/directory`) and profiles (`query/profile`).

use axum::{Json, Router};
use ruma::api::federation::query::{get_profile_information, get_room_information};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new().ruma(directory).ruma(profile)
}

/// GET /_matrix/federation/v1/query/directory?room_alias=
async fn directory(services: AppState, req: Ruma<get_room_information::v1::Request>) -> Result<Json<Value>> {
    req.origin()?;
    let (room_id, servers) = services.local_alias(&req.body.room_alias).await?;
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

/// GET /_matrix/federation/v1/query/profile?user_id=&field=
async fn profile(services: AppState, req: Ruma<get_profile_information::v1::Request>) -> Result<Json<Value>> {
    req.origin()?;
    let field = req.body.field.as_ref().map(|f| f.as_str());
    Ok(Json(Value::Object(services.local_profile(&req.body.user_id, field).await?)))
}
