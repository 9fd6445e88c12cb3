//! Discovery: versions, .well-known, capabilities.

use axum::{Json, Router, routing::get};
use ruma::api::client::discovery::get_capabilities;
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    rooms::SUPPORTED_VERSIONS,
    services::AppState,
};
use kairan_core::error::Result;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/_matrix/client/versions", get(versions))
        .route("/.well-known/matrix/client", get(well_known))
        .ruma(capabilities)
}

/// GET /_matrix/client/versions
async fn versions() -> Json<Value> {
    Json(json!({
        "versions": ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"],
        // Element X looks for this flag before using sliding sync.
        "unstable_features": { "org.matrix.simplified_msc3575": true, "im.nheko.summary": true }
    }))
}

/// GET /.well-known/matrix/client
async fn well_known(axum::extract::State(services): axum::extract::State<AppState>) -> Json<Value> {
    Json(json!({ "m.homeserver": { "base_url": format!("http://{}", services.config.listen.client) } }))
}

/// GET /_matrix/client/v3/capabilities
async fn capabilities(services: AppState, _req: Ruma<get_capabilities::v3::Request>) -> Result<Json<Value>> {
    let available: serde_json::Map<String, Value> =
        SUPPORTED_VERSIONS.iter().map(|v| ((*v).to_owned(), Value::from("stable"))).collect();
    Ok(Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": { "default": services.config.rooms.default_version, "available": available },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
        }
    })))
}
