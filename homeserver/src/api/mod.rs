//! HTTP: the Client-Server, Server-Server (key) and admin routers, the request extractor
//! and the response type.

pub mod admin;
pub mod client;
pub mod federation;
mod health;
mod ruma_io;

use axum::{Router, response::IntoResponse};
use tower_http::{catch_panic::CatchPanicLayer, cors::CorsLayer};

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
        .with_state(state)
}

async fn unrecognized() -> impl IntoResponse {
    Error::unrecognized("unrecognized request")
}

async fn method_not_allowed() -> impl IntoResponse {
    Error::method_not_allowed("method not allowed on this endpoint")
}
