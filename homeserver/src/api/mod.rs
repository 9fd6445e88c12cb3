//! HTTP: the Client-Server, Server-Server (key) and admin routers, the request extractor
//! and the response type.

pub mod admin;
pub mod client;
pub mod federation;
mod health;
pub mod metrics;
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

pub use self::ruma_io::{Auth, RouterExt, Ruma, RumaResponse};
use crate::services::AppState;
use kairan_core::error::Error;

/// The whole HTTP application of the client listener.
pub fn router(services: AppState) -> Router {
    client::routes()
        .merge(federation::routes())
        .merge(health::routes())
        .merge(admin::routes(services.clone()))
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CorsLayer::permissive())
        // Last resort: a bug must cost one request a 500, not the connection.
        .layer(CatchPanicLayer::custom(|_| Error::unknown("internal error").into_response()))
        // Every log line of a request carries its ID, method and path (never the query,
        // which may hold an access token); the ID goes back in `x-request-id`.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", id, method = %req.method(), path = %loggable_path(req.uri().path()))
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(SequentialIds::default()))
        // Outermost: every request is counted and timed, including refusals and panics.
        .layer(axum::middleware::from_fn(metrics::track_request))
        .with_state(services)
}

/// Path segments that are secrets: the one after each of these prefixes is replaced by
/// `<secret>` in logs (a registration token names itself in the path that revokes it).
const SECRET_SEGMENTS: [&str; 1] = ["/_kairan/admin/v1/registration_tokens/"];

/// A request path as logs may show it.
fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    for prefix in SECRET_SEGMENTS {
        if let Some(rest) = path.strip_prefix(prefix)
            && !rest.is_empty()
        {
            let tail = rest.find('/').map_or("", |i| &rest[i..]);
            return format!("{prefix}<secret>{tail}").into();
        }
    }
    path.into()
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

#[cfg(test)]
mod tests {
    #[test]
    fn secret_path_segments_are_not_logged() {
        let shown = super::loggable_path("/_kairan/admin/v1/registration_tokens/s3cr3t-t0ken");
        assert_eq!(shown, "/_kairan/admin/v1/registration_tokens/<secret>");
        assert_eq!(
            super::loggable_path("/_kairan/admin/v1/registration_tokens"),
            "/_kairan/admin/v1/registration_tokens"
        );
        assert_eq!(super::loggable_path("/_matrix/client/v3/sync"), "/_matrix/client/v3/sync");
    }
}
