//! Signing keys over HTTP: this server's key document (`/_matrix/key/v2/server`), which
//! other servers and key notaries fetch to verify what this server signs; the key notary
//! (`/_matrix/key/v2/query`), which hands on other servers' documents with this server's
//! signature added; and the version endpoint. None of them is authenticated, as the spec
//! has it.

use axum::{Json, Router, extract::State, routing::get};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch,
    api::federation::discovery::{get_remote_server_keys, get_remote_server_keys_batch},
    serde::Raw,
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, RumaResponse, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::error::{Error, Result};

/// The most servers one notary query may name: each may cost a fetch.
const MAX_NOTARY_SERVERS: usize = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/key/v2/server", get(server_keys))
        .route("/_matrix/key/v2/server/{key_id}", get(server_keys))
        .route("/_matrix/federation/v1/version", get(version))
        .ruma(query_batch)
        .ruma(query_one)
}

/// GET /_matrix/key/v2/server
///
/// The current verify key and the old ones from `federation.old_verify_keys`, signed with
/// the current key, valid for a week.
async fn server_keys(State(services): State<AppState>) -> Result<Json<Value>> {
    let doc = services.own_key_document()?;
    Ok(Json(serde_json::to_value(doc).map_err(|e| Error::internal("server keys", e))?))
}

/// POST /_matrix/key/v2/query
///
/// The key documents of the servers named, each with the origin's signature and this
/// server's. A server nothing is known about is left out, as the spec says.
async fn query_batch(
    services: AppState,
    req: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<RumaResponse<get_remote_server_keys_batch::v2::Response>> {
    if req.body.server_keys.len() > MAX_NOTARY_SERVERS {
        return Err(Error::invalid_param(format!("at most {MAX_NOTARY_SERVERS} servers per query")));
    }
    let mut out = Vec::new();
    for (server, criteria) in &req.body.server_keys {
        let minimum = criteria
            .values()
            .filter_map(|c| c.minimum_valid_until_ts)
            .max()
            .unwrap_or_else(MilliSecondsSinceUnixEpoch::now);
        if let Some(doc) = services.notary_key_document(server, i64::from(minimum.get())).await? {
            out.push(raw(doc)?);
        }
    }
    Ok(RumaResponse(get_remote_server_keys_batch::v2::Response::new(out)))
}

/// GET /_matrix/key/v2/query/{serverName}
async fn query_one(
    services: AppState,
    req: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<RumaResponse<get_remote_server_keys::v2::Response>> {
    let minimum = i64::from(req.body.minimum_valid_until_ts.get());
    let docs = match services.notary_key_document(&req.body.server_name, minimum).await? {
        Some(doc) => vec![raw(doc)?],
        None => Vec::new(),
    };
    Ok(RumaResponse(get_remote_server_keys::v2::Response::new(docs)))
}

fn raw<T>(doc: CanonicalJsonObject) -> Result<Raw<T>> {
    let value = serde_json::value::to_raw_value(&doc).map_err(|e| Error::internal("key document", e))?;
    Ok(Raw::from_json(value))
}

/// GET /_matrix/federation/v1/version
async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "kairan", "version": env!("CARGO_PKG_VERSION") } }))
}
