//! Liveness and readiness for load balancers and orchestrators.
//!
//! The listener opens only after migrations have run, so a server that answers at all
//! has a current schema; readiness adds that the database answers now.

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::{Value, json};

use crate::services::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_kairan/health/live", get(live))
        .route("/_kairan/health/ready", get(ready))
        // Synapse's path, which existing monitoring may already probe.
        .route("/health", get(ready))
}

/// GET /_kairan/health/live: the process serves requests.
async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// GET /_kairan/health/ready: the database answers too; 503 otherwise.
async fn ready(State(services): State<AppState>) -> (StatusCode, Json<Value>) {
    match services.store.current_stream_pos().await {
        Ok(_) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "database unavailable" })))
        }
    }
}
