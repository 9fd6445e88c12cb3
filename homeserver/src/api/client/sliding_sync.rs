//! Simplified sliding sync (MSC4186):
//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.

use std::{collections::BTreeMap, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::{FromRequest, Request, State},
    response::{IntoResponse, Response},
    routing::post,
};
use ruma::api::{Metadata, client::sync::sync_events::v5, path_builder::PathBuilder};
use serde_json::Value;

use crate::{api::Ruma, services::AppState};
use kairan_core::error::Error;

pub fn routes(mut r: Router<AppState>) -> Router<AppState> {
    for path in <v5::Request as Metadata>::PATH_BUILDER.all_paths() {
        r = r.route(path, post(sliding_sync));
    }
    r
}

/// Longest long-poll a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// The body is read here once, so that `bump_event_types` (which ruma's request type does
/// not carry) can be taken from it, and is then parsed by the usual extractor.
async fn sliding_sync(State(services): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let limit = services.config.limits.max_request_bytes;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return Error::too_large(format!("request body is larger than {limit} bytes")).into_response();
    };
    let bump_event_types = bump_event_types(&bytes);
    let req = match Ruma::<v5::Request>::from_request(Request::from_parts(parts, Body::from(bytes)), &services).await {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    let _active = kairan_core::metrics::metrics().sync_started("sliding");
    let result = async {
        let auth = req.auth()?;
        services.note_presence(&auth.user, req.body.set_presence.as_str()).await?;
        services.note_sync_activity(&auth.user).await;
        let timeout = req.body.timeout.unwrap_or_default().min(MAX_TIMEOUT);
        services.sliding_sync(&auth.user, &auth.device, &req.body, &bump_event_types, timeout).await
    }
    .await;
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `lists.{name}.bump_event_types` of a request body, where given.
fn bump_event_types(body: &[u8]) -> BTreeMap<String, Vec<String>> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else { return BTreeMap::new() };
    let Some(Value::Object(lists)) = body.get("lists") else { return BTreeMap::new() };
    lists
        .iter()
        .filter_map(|(name, list)| {
            let types = list.get("bump_event_types")?.as_array()?;
            Some((name.clone(), types.iter().filter_map(Value::as_str).map(str::to_owned).collect()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bump_event_types_per_list() {
        let body = br#"{"lists":{"a":{"ranges":[[0,9]],"timeline_limit":1,"bump_event_types":["m.room.message"]},
            "b":{"ranges":[[0,9]],"timeline_limit":1}}}"#;
        let types = bump_event_types(body);
        assert_eq!(types.len(), 1);
        assert_eq!(types["a"], vec!["m.room.message".to_owned()]);
        assert!(bump_event_types(b"not json").is_empty());
    }
}
