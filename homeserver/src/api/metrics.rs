//! The metrics listener (`listen.metrics`: `GET /metrics`) and the middleware that counts
//! every request of the application router. The registry is `kairan_core::metrics`.

use std::time::Instant;

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use kairan_core::metrics::{DatabaseFigures, Group, PoolStats, metrics};

use crate::services::AppState;

/// Middleware on the application router: counts every request and times it, by group.
pub async fn track_request(req: Request, next: Next) -> Response {
    let group = Group::of(req.uri().path());
    let started = Instant::now();
    let response = next.run(req).await;
    metrics().observe_request(group, response.status(), started.elapsed());
    response
}

/// The metrics listener's application: `GET /metrics` and nothing else.
pub fn router(services: AppState) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(services)
}

/// GET /metrics
///
/// What the database knows better (queue depth, pool use, media bytes) is read now, so it
/// is never stale and costs nothing between scrapes.
async fn scrape(State(services): State<AppState>) -> Response {
    let (size, idle, max) = services.store.pool_stats();
    let figures = match tokio::try_join!(services.store.queue_depths(), services.store.media_bytes_stored()) {
        Ok((queue_depths, media_bytes)) => Some(DatabaseFigures { queue_depths, media_bytes }),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the database did not answer");
            None
        }
    };
    let m = metrics();
    m.set_database(PoolStats { size, idle, max }, figures);
    let content_type = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], m.encode()).into_response()
}
