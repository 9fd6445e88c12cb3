//! Devices and end-to-end keys of local users, for other servers: `user/devices`, `user/keys/query`, `user/keys/claim`.

use axum::{Json, Router};
use ruma::api::federation::{
    device::get_devices,
    keys::{claim_keys, get_keys},
};
use serde_json::Value;

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new().ruma(devices).ruma(query).ruma(claim)
}

/// GET /_matrix/federation/v1/user/devices/{userId}
async fn devices(services: AppState, req: Ruma<get_devices::v1::Request>) -> Result<Json<Value>> {
    req.origin()?;
    Ok(Json(services.devices_for_server(&req.body.user_id).await?))
}

/// POST /_matrix/federation/v1/user/keys/query
async fn query(services: AppState, req: Ruma<get_keys::v1::Request>) -> Result<Json<Value>> {
    req.origin()?;
    Ok(Json(services.keys_for_server(&req.body.device_keys).await?))
}

/// POST /_matrix/federation/v1/user/keys/claim
async fn claim(services: AppState, req: Ruma<claim_keys::v1::Request>) -> Result<Json<Value>> {
    req.origin()?;
    Ok(Json(services.claim_for_server(&req.body.one_time_keys).await?))
}
