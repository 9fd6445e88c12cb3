//! Queries from other servers: room aliases (`query/directory`) and profiles (`query/profile`).

use axum::{Json, Router};
use ruma::api::federation::query::{get_profile_information, get_room_information};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    error::Result,
    services::AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new().ruma(directory).ruma(profile)
}

/// GET /_matrix/federation/v1/query/directory?room_alias=
async fn directory(state: AppState, req: Ruma<get_room_information::v1::Request>) -> Result<Json<Value>> {
    req.origin()?;
    let (room_id, servers) = state.local_alias(&req.body.room_alias).await?;
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

/// GET /_matrix/federation/v1/query/profile?user_id=&field=
async fn profile(state: AppState, req: Ruma<get_profile_information::v1::Request>) -> Result<Json<Value>> {
    req.origin()?;
    let field = req.body.field.as_ref().map(|f| f.as_str());
    Ok(Json(Value::Object(state.local_profile(&req.body.user_id, field).await?)))
}
