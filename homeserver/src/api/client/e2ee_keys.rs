//! End-to-end encryption keys: upload, query, claim, changes, cross-signing keys and
//! signatures.

use axum::{Json, Router};
use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    e2ee::CrossSigningUpload,
    services::AppState,
    sync::parse_token,
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(upload).ruma(query).ruma(claim).ruma(changes).ruma(upload_signing).ruma(upload_signatures)
}

/// POST /_matrix/client/v3/keys/upload
async fn upload(services: AppState, req: Ruma<upload_keys::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let b = &req.body;
    let device_keys = b.device_keys.as_ref().map(|k| k.json());
    let counts =
        services.e2ee().upload_keys(&auth.user, &auth.device, device_keys, &b.one_time_keys, &b.fallback_keys).await?;
    Ok(Json(json!({ "one_time_key_counts": counts })))
}

/// POST /_matrix/client/v3/keys/query
async fn query(services: AppState, req: Ruma<get_keys::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    Ok(Json(services.e2ee().query_keys(user, &req.body.device_keys).await?))
}

/// POST /_matrix/client/v3/keys/claim
async fn claim(services: AppState, req: Ruma<claim_keys::v3::Request>) -> Result<Json<Value>> {
    req.auth()?;
    Ok(Json(services.e2ee().claim_keys(&req.body.one_time_keys).await?))
}

/// GET /_matrix/client/v3/keys/changes
async fn changes(services: AppState, req: Ruma<get_key_changes::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let from = parse_token(&req.body.from)?.stream;
    let to = parse_token(&req.body.to)?.stream.min(services.notifier.current().stream);
    let (changed, left) = services.e2ee().device_list_changes(user, from, to).await?;
    Ok(Json(json!({ "changed": changed, "left": left })))
}

/// POST /_matrix/client/v3/keys/device_signing/upload
async fn upload_signing(services: AppState, req: Ruma<upload_signing_keys::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let b = &req.body;
    let parse = |raw: &Option<ruma::serde::Raw<_>>, what: &str| -> Result<Option<Value>> {
        raw.as_ref()
            .map(|k: &ruma::serde::Raw<ruma::encryption::CrossSigningKey>| {
                serde_json::from_str(k.json().get()).map_err(|e| Error::bad_json(format!("invalid {what}: {e}")))
            })
            .transpose()
    };
    let upload = CrossSigningUpload {
        master: parse(&b.master_key, "master_key")?,
        self_signing: parse(&b.self_signing_key, "self_signing_key")?,
        user_signing: parse(&b.user_signing_key, "user_signing_key")?,
    };
    if services.e2ee().cross_signing_upload_needs_auth(&auth.user, &upload).await? {
        services.require_password(&auth.user, b.auth.as_ref()).await?;
    }
    services.e2ee().upload_cross_signing_keys(&auth.user, &upload).await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/keys/signatures/upload
async fn upload_signatures(services: AppState, req: Ruma<upload_signatures::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    Ok(Json(services.e2ee().upload_signatures(user, &req.body.signed_keys).await?))
}
