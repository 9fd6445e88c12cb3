//! HTTP: the Client-Server, Server-Server (key) and admin routers, the request extractor
//! and the response type.

pub mod admin;
pub mod client;
pub mod federation;
mod health;
mod ruma_io;

use axum::{Router, response::IntoResponse};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, Request};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::CorsLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};

pub use self::ruma_io::{Auth, Ruma, RumaResponse};
use crate::{error::Error, services::AppState};

/// The whole HTTP application of the client listener.
pub fn router(state: AppState) -> Router {
    client::routes()
        .merge(federation::routes())
        .merge(health::routes())
        .merge(admin::routes(state.clone()))
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CorsLayer::permissive())
        // Last resort: a bug must cost one request a 500, not the connection.
        .layer(CatchPanicLayer::custom(|_| Error::unknown("internal error").into_response()))
        // Every log line of a request carries its ID, method and path (never the query,
        // which may hold an access token); the ID goes back in `x-request-id`.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", id, method = %req.method(), path = %req.uri().path())
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(SequentialIds::default()))
        // Outermost: every request is counted and timed, including refusals and panics.
        .layer(axum::middleware::from_fn(crate::metrics::track_request))
        .with_state(state)
}

async fn unrecognized() -> impl IntoResponse {
    Error::unrecognized("unrecognized request")
}

async fn method_not_allowed() -> impl IntoResponse {
    Error::method_not_allowed("method not allowed on this endpoint")
}

/// Request IDs: a random per-process prefix and a counter, short enough to grep.
#[derive(Clone)]
struct SequentialIds {
    prefix: u32,
    next: std::sync::Arc<AtomicU64>,
}

impl Default for SequentialIds {
    fn default() -> Self {
        Self { prefix: rand::random(), next: Default::default() }
    }
}

impl MakeRequestId for SequentialIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n}", self.prefix)).ok().map(RequestId::new)
    }
}
