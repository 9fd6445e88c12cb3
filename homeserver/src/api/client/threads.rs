//! GET /threads: the thread roots of a room, most recently active first.

use axum::{
    Json, Router,
    extract::{FromRequest, Request, State},
    response::{IntoResponse, Response},
    routing::get,
};
use ruma::api::client::threads::get_threads::{self, v1::IncludeThreads};
use serde_json::{Value, json};

use crate::{api::Ruma, rooms::ClientEventOptions, services::AppState, sync::parse_token};
use kairan_core::error::Result;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/_matrix/client/v1/rooms/{room_id}/threads", get(threads_route))
        .route("/_matrix/client/unstable/org.matrix.msc3856/rooms/{room_id}/threads", get(threads_route))
}

/// ruma 0.16's `get_threads` request leaves `include` out when it is the default, yet
/// requires it when parsing, so requests from ruma-based clients (matrix-sdk) would fail.
/// The spec makes it optional (default `all`): supply it before ruma parses.
async fn threads_route(State(services): State<AppState>, mut req: Request) -> Response {
    let has_include = req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv.starts_with("include=")));
    if !has_include {
        let query = match req.uri().query() {
            Some(q) => format!("{q}&include=all"),
            None => "include=all".to_owned(),
        };
        let path_and_query = format!("{}?{query}", req.uri().path());
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
        }
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    match Ruma::<get_threads::v1::Request>::from_request(req, &services).await {
        Ok(r) => threads(services, r).await.into_response(),
        Err(e) => e.into_response(),
    }
}

/// GET /_matrix/client/v1/rooms/{roomId}/threads
async fn threads(services: AppState, req: Ruma<get_threads::v1::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let b = &req.body;
    let (_, left_at) = services.readable_state(&b.room_id, &auth.user).await?;
    let ceiling = left_at.unwrap_or(services.notifier.current().stream);
    let before = match &b.from {
        Some(t) => parse_token(t)?.stream.min(ceiling),
        None => ceiling,
    };
    let limit = b.limit.map_or(20, u64::from).clamp(1, 100) as i64;
    let roots = services.store.thread_roots(b.room_id.as_str(), before, limit + 1).await?;
    let more = roots.len() as i64 > limit;
    let only_mine = b.include == IncludeThreads::Participated;
    let opts = ClientEventOptions { viewer: &auth.user, device_id: Some(&auth.device), bundle_relations: true };
    let mut chunk = Vec::new();
    let mut next = None;
    for (root, latest) in roots.into_iter().take(limit as usize) {
        next = Some(latest - 1);
        let Some(row) = services.store.event(&root).await? else { continue };
        if !services.can_see_event(&auth.user, &row).await? {
            continue;
        }
        let event = services.client_event(&row, opts).await?;
        if only_mine && event["unsigned"]["m.relations"]["m.thread"]["current_user_participated"] != json!(true) {
            continue;
        }
        chunk.push(event);
    }
    let mut response = json!({ "chunk": chunk });
    if more && let Some(n) = next {
        response["next_batch"] = format!("s{n}").into();
    }
    Ok(Json(response))
}
