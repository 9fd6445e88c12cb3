//! Server-Server API handlers. So far: the server's published signing key, which other
//! servers (and key notaries) fetch to verify what this server signs.

use std::time::Duration;

use axum::{Json, Router, extract::State, routing::get};
use ruma::{CanonicalJsonObject, signatures::sign_json};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    services::{AppState, now_ms},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/key/v2/server", get(server_keys))
        .route("/_matrix/key/v2/server/{key_id}", get(server_keys))
        .route("/_matrix/federation/v1/version", get(version))
}

/// How long other servers may cache the key before asking again.
const KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// GET /_matrix/key/v2/server
///
/// The current verify key, signed with itself, valid for a week.
async fn server_keys(State(state): State<AppState>) -> Result<Json<Value>> {
    let body = json!({
        "server_name": state.server_name(),
        "verify_keys": { state.keys.key_id.clone(): { "key": state.keys.public_key_b64 } },
        "old_verify_keys": {},
        "valid_until_ts": now_ms() + KEY_VALIDITY.as_millis() as i64,
    });
    let mut obj: CanonicalJsonObject = serde_json::from_value(body).map_err(|e| Error::internal("server keys", e))?;
    sign_json(state.server_name().as_str(), &state.keys.key_pair, &mut obj)
        .map_err(|e| Error::internal("signing server keys", e))?;
    Ok(Json(serde_json::to_value(obj).map_err(|e| Error::internal("server keys", e))?))
}

/// GET /_matrix/federation/v1/version
async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "kairan", "version": env!("CARGO_PKG_VERSION") } }))
}
