//! /sync and filters.

use std::time::Duration;

use axum::{Json, Router};
use ruma::api::client::{
    filter::{create_filter, get_filter},
    sync::sync_events,
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    services::AppState,
    sync::{Filter, SyncRequest, parse_to_device_since, parse_token},
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(sync).ruma(create_filter).ruma(get_filter)
}

/// Longest long-poll a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// GET /_matrix/client/v3/sync
async fn sync(services: AppState, req: Ruma<sync_events::v3::Request>) -> Result<Json<Value>> {
    let _active = kairan_core::metrics::metrics().sync_started("sync");
    let auth = req.auth()?;
    let b = &req.body;
    let filter: Filter = match &b.filter {
        None => Filter::default(),
        Some(sync_events::v3::Filter::FilterId(id)) => {
            let n: i64 = id.parse().map_err(|_| Error::invalid_param(format!("unknown filter {id:?}")))?;
            let json = services
                .store
                .filter(auth.user.as_str(), n)
                .await?
                .ok_or_else(|| Error::not_found(format!("unknown filter {id}")))?;
            serde_json::from_str(&json).map_err(|e| Error::internal("stored filter", e))?
        }
        Some(sync_events::v3::Filter::FilterDefinition(def)) => {
            let v = serde_json::to_value(def).map_err(|e| Error::bad_json(e.to_string()))?;
            serde_json::from_value(v).map_err(|e| Error::bad_json(format!("invalid filter: {e}")))?
        }
        Some(_) => Filter::default(),
    };
    services.note_presence(&auth.user, b.set_presence.as_str()).await?;
    services.note_sync_activity(&auth.user).await;
    let request = SyncRequest {
        user: &auth.user,
        device: &auth.device,
        since: b.since.as_deref().map(parse_token).transpose()?,
        to_device_since: b.since.as_deref().and_then(parse_to_device_since),
        filter,
        full_state: b.full_state,
        use_state_after: b.use_state_after,
        timeout: b.timeout.unwrap_or_default().min(MAX_TIMEOUT),
    };
    Ok(Json(services.sync(request).await?))
}

/// POST /_matrix/client/v3/user/{userId}/filter
async fn create_filter(services: AppState, req: Ruma<create_filter::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    if req.body.user_id != *user {
        return Err(Error::forbidden("you can only create filters for yourself"));
    }
    let json = serde_json::to_string(&req.body.filter).map_err(|e| Error::bad_json(e.to_string()))?;
    let id = services.store.put_filter(user.as_str(), &json).await?;
    Ok(Json(json!({ "filter_id": id.to_string() })))
}

/// GET /_matrix/client/v3/user/{userId}/filter/{filterId}
async fn get_filter(services: AppState, req: Ruma<get_filter::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    if req.body.user_id != *user {
        return Err(Error::forbidden("you can only read your own filters"));
    }
    let id: i64 = req.body.filter_id.parse().map_err(|_| Error::not_found("unknown filter"))?;
    let json = services.store.filter(user.as_str(), id).await?.ok_or_else(|| Error::not_found("unknown filter"))?;
    Ok(Json(serde_json::from_str(&json).unwrap_or_default()))
}
