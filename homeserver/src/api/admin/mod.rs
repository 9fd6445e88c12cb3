//! The admin API, under `/_kairan/admin/v1`: what `kairan-admin` (and the records
//! bridge) call. See `docs/admin.md` for every endpoint.
//!
//! One guard sits in front of every route: it authenticates the access token, requires
//! a server administrator (`users.is_admin`; anyone else gets `403 M_FORBIDDEN`), and
//! writes the audit log entry of the call once it has ended, allowed or not, with the
//! caller, the target, the parameters without secrets, and the result. Handlers cannot
//! forget to audit, because they are never reached without the guard.

mod policy;
mod reports;
mod rooms;
mod users;

use std::net::SocketAddr;

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, RawPathParams, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, delete, get, post, put},
};
use http::request::Parts;
use ruma::OwnedUserId;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::ruma_io::access_token;
use crate::{
    admin::audit::{redact_secrets, token_fingerprint},
    services::AppState,
    storage::AuditRow,
};
use kairan_core::{
    error::{Error, Result},
    ratelimit::LimitClass,
    time::now_ms,
};

/// Where the admin API lives.
pub const PREFIX: &str = "/_kairan/admin/v1";
/// Largest admin request body (a CSV of every account of a prefecture fits many times).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Largest parameters kept in an audit entry; larger ones are summarised.
const MAX_AUDIT_PARAMS: usize = 64 * 1024;

/// The administrator making the call (set by the guard).
#[derive(Debug, Clone)]
pub struct Caller(pub OwnedUserId);

/// A handler's summary of what it did, for the audit entry's `detail`.
#[derive(Debug, Clone)]
pub struct AuditDetail(pub String);

/// Every admin endpoint: its path under [`PREFIX`], the action name the audit log
/// records, and its handler (one method each).
fn endpoints() -> Vec<(&'static str, &'static str, MethodRouter<AppState>)> {
    vec![
        ("/whoami", "whoami", get(users::whoami)),
        ("/users", "users.list", get(users::list)),
        ("/users", "users.create", post(users::create)),
        ("/users/import", "users.import", post(users::import)),
        ("/users/{user_id}", "users.show", get(users::show)),
        ("/users/{user_id}/deactivate", "users.deactivate", post(users::deactivate)),
        ("/users/{user_id}/reactivate", "users.reactivate", post(users::reactivate)),
        ("/users/{user_id}/password", "users.reset_password", post(users::reset_password)),
        ("/users/{user_id}/admin", "users.set_admin", put(users::set_admin)),
        ("/users/{user_id}/department", "users.set_department", put(users::set_department)),
        ("/users/{user_id}/devices", "users.devices", get(users::devices)),
        ("/users/{user_id}/devices/{device_id}", "users.delete_device", delete(users::delete_device)),
        ("/registration_tokens", "tokens.list", get(users::list_tokens)),
        ("/registration_tokens", "tokens.create", post(users::create_token)),
        ("/registration_tokens/{token}", "tokens.revoke", delete(users::revoke_token)),
        ("/rooms", "rooms.list", get(rooms::list)),
        ("/rooms/{room_id}", "rooms.show", get(rooms::show)),
        ("/rooms/{room_id}/shutdown", "rooms.shutdown", post(rooms::shutdown)),
        ("/rooms/{room_id}/purge", "rooms.purge", post(rooms::purge)),
        ("/rooms/{room_id}/policy", "policy.room.show", get(rooms::show_policy)),
        ("/rooms/{room_id}/policy", "policy.room.set", put(rooms::set_policy)),
        ("/policy", "policy.server.show", get(policy::show)),
        ("/policy/federation", "policy.server.set_federation", put(policy::set_federation)),
        ("/policy/media", "policy.server.set_media", put(policy::set_media)),
        ("/policy/registration", "policy.server.set_registration", put(policy::set_registration)),
        ("/figures/{month}", "figures", get(reports::figures)),
        ("/audit", "audit", get(reports::audit)),
    ]
}

/// The admin routes, each behind the guard with its action name.
pub fn routes(services: AppState) -> Router<AppState> {
    endpoints().into_iter().fold(Router::new(), |router, (path, action, handler)| {
        let guarded = handler.route_layer(middleware::from_fn_with_state((services.clone(), action), guard));
        router.route(&format!("{PREFIX}{path}"), guarded)
    })
}

/// Authenticates, authorises and audits every admin call.
async fn guard(State((services, action)): State<(AppState, &'static str)>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let action = action.to_owned();
    let client_ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let path_params: Vec<(String, String)> = match RawPathParams::from_request_parts(&mut parts, &services).await {
        Ok(p) => p.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        Err(_) => Vec::new(),
    };
    let mut entry = AuditRow {
        id: 0,
        ts: now_ms(),
        caller: None,
        action,
        target: None,
        params: String::new(),
        status: 0,
        result: String::new(),
        detail: None,
        client_ip: client_ip.clone(),
    };
    let content_type =
        parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();

    // Who is calling, before reading a body that may be large.
    let caller = match access_token(&parts) {
        None => Err(Error::missing_token("the admin API needs the access token of a server administrator")),
        Some(token) => match services.authenticate(&token).await {
            Err(e) => Err(e),
            Ok((user, _device)) => {
                entry.caller = Some(user.to_string());
                match services.store.user(user.as_str()).await {
                    Ok(Some(u)) if u.is_admin => Ok(user),
                    Ok(_) => Err(Error::forbidden(format!("{user} is not a server administrator"))),
                    Err(e) => Err(Error::from(e)),
                }
            }
        },
    };
    let caller = match caller {
        Ok(c) => c,
        Err(e) => {
            // Refused callers are rate-limited per address before they are audited, so
            // that nobody can flood the log; of their body, only a small one is read.
            if let Err(limited) = services.limiter.check(LimitClass::Login, client_ip.as_deref().unwrap_or("")) {
                return limited.into_response();
            }
            let bytes = axum::body::to_bytes(body, MAX_AUDIT_PARAMS).await.unwrap_or_default();
            let (params, body_user) = audit_params(&parts, &path_params, &bytes, &content_type);
            entry.params = params;
            entry.target = audit_target(&services, &path_params, body_user.as_deref()).await;
            entry.status = i64::from(e.status.as_u16());
            entry.result = e.errcode.to_owned();
            entry.detail = Some(e.message.clone());
            tracing::warn!(
                caller = entry.caller.as_deref().unwrap_or("-"),
                action = entry.action,
                "refused admin call"
            );
            services.audit(entry).await;
            return e.into_response();
        }
    };
    entry.caller = Some(caller.to_string());
    let bytes = axum::body::to_bytes(body, MAX_BODY).await;
    let (params, body_user) = audit_params(&parts, &path_params, bytes.as_deref().unwrap_or(&[]), &content_type);
    entry.params = params;
    entry.target = audit_target(&services, &path_params, body_user.as_deref()).await;
    let response = match bytes {
        Err(_) => Error::too_large(format!("admin request bodies are limited to {MAX_BODY} bytes")).into_response(),
        Ok(bytes) => {
            parts.extensions.insert(Caller(caller));
            next.run(Request::from_parts(parts, Body::from(bytes))).await
        }
    };

    // How it ended.
    let status = response.status();
    entry.status = i64::from(status.as_u16());
    let response = if status.is_success() {
        entry.result = "ok".to_owned();
        entry.detail = response.extensions().get::<AuditDetail>().map(|d| d.0.clone()).filter(|d| !d.is_empty());
        response
    } else {
        let (res_parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_BODY).await.unwrap_or_default();
        let err: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        entry.result = err["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned();
        entry.detail = err["error"].as_str().map(str::to_owned);
        Response::from_parts(res_parts, Body::from(bytes))
    };
    tracing::info!(
        caller = entry.caller.as_deref().unwrap_or("-"),
        action = entry.action,
        target = entry.target.as_deref().unwrap_or("-"),
        result = entry.result,
        "admin call"
    );
    services.audit(entry).await;
    response
}

/// The parameters of a call for the audit log, and the `user_id` of its body, if any.
fn audit_params(
    parts: &Parts,
    path_params: &[(String, String)],
    body: &[u8],
    content_type: &str,
) -> (String, Option<String>) {
    let mut params = Map::new();
    let path: Map<String, Value> = path_params
        .iter()
        .map(|(k, v)| (k.clone(), if k == "token" { token_fingerprint(v).into() } else { v.clone().into() }))
        .collect();
    if !path.is_empty() {
        params.insert("path".into(), Value::Object(path));
    }
    if let Some(q) = parts.uri.query() {
        let query: Map<String, Value> =
            form_pairs(q).into_iter().filter(|(k, _)| k != "access_token").map(|(k, v)| (k, v.into())).collect();
        if !query.is_empty() {
            params.insert("query".into(), Value::Object(query));
        }
    }
    let mut body_user = None;
    if !body.is_empty() {
        if content_type.starts_with("text/csv") {
            let text = String::from_utf8_lossy(body);
            params.insert("csv_lines".into(), text.lines().count().into());
            params.insert("csv_bytes".into(), body.len().into());
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(v) => {
                    body_user = v["user_id"].as_str().map(str::to_owned);
                    params.insert("body".into(), v);
                }
                Err(_) => {
                    params.insert("body_bytes".into(), body.len().into());
                }
            }
        }
    }
    let mut text = redact_secrets(&Value::Object(params.clone())).to_string();
    if text.len() > MAX_AUDIT_PARAMS {
        let mut summary = Map::new();
        summary.insert("truncated".into(), true.into());
        summary.insert("size".into(), text.len().into());
        if let Some(Value::Object(b)) = params.get("body") {
            summary.insert("body_keys".into(), json!(b.keys().collect::<Vec<_>>()));
            if let Some(Value::Array(rows)) = b.get("users") {
                summary.insert("rows".into(), rows.len().into());
            }
        }
        text = Value::Object(summary).to_string();
    }
    (text, body_user)
}

fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && hex(bytes[i + 1]).is_some() && hex(bytes[i + 2]).is_some() => {
                out.push(hex(bytes[i + 1]).unwrap_or(0) * 16 + hex(bytes[i + 2]).unwrap_or(0));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a call acts on: the user, room or token of its path, or the user of its body.
async fn audit_target(services: &AppState, path: &[(String, String)], body_user: Option<&str>) -> Option<String> {
    for (k, v) in path {
        match k.as_str() {
            "user_id" => return Some(services.user_id_from(v).map(|u| u.to_string()).unwrap_or_else(|_| v.clone())),
            "room_id" if v.starts_with('#') => {
                return Some(services.resolve_room(v).await.map(|r| r.to_string()).unwrap_or_else(|_| v.clone()));
            }
            "room_id" | "month" => return Some(v.clone()),
            "token" => return Some(token_fingerprint(v)),
            _ => {}
        }
    }
    body_user.map(|u| services.user_id_from(u).map(|u| u.to_string()).unwrap_or_else(|_| u.to_owned()))
}

/// A JSON body; an empty body reads as `{}`. Errors are Matrix errors.
pub struct AdminJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for AdminJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, services: &AppState) -> Result<Self> {
        let bytes = bytes::Bytes::from_request(req, services)
            .await
            .map_err(|_| Error::too_large(format!("admin request bodies are limited to {MAX_BODY} bytes")))?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| Error::not_json(format!("the body is not JSON: {e}")))?;
        serde_json::from_value(value).map(AdminJson).map_err(|e| Error::bad_json(format!("invalid body: {e}")))
    }
}

/// Query parameters; errors are `M_INVALID_PARAM`.
pub struct AdminQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for AdminQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|q| AdminQuery(q.0))
            .map_err(|e| Error::invalid_param(format!("invalid query: {}", e.body_text())))
    }
}

/// Path parameters; errors are `M_INVALID_PARAM`.
pub struct AdminPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for AdminPath<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, services: &AppState) -> Result<Self> {
        Path::<T>::from_request_parts(parts, services)
            .await
            .map(|p| AdminPath(p.0))
            .map_err(|e| Error::invalid_param(format!("invalid path: {}", e.body_text())))
    }
}

/// A JSON answer with the audit log's summary of the call.
pub fn answer(body: Value, detail: impl Into<String>) -> Response {
    let mut r = axum::Json(body).into_response();
    r.extensions_mut().insert(AuditDetail(detail.into()));
    r
}

/// `limit` of a list request: default 100, at most 1000.
pub fn page_limit(limit: Option<i64>) -> Result<i64> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(n) => Err(Error::invalid_param(format!("limit {n} must be between 1 and 1000"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded() {
        assert_eq!(
            form_pairs("a=1&b=%40x%3Ay&c=two+words&d"),
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "@x:y".to_owned()),
                ("c".to_owned(), "two words".to_owned()),
                ("d".to_owned(), String::new()),
            ]
        );
        assert_eq!(percent_decode("%E7%B7%8F%E5%8B%99"), "総務");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn every_endpoint_has_one_action() {
        let endpoints = endpoints();
        let actions: std::collections::BTreeSet<_> = endpoints.iter().map(|(_, a, _)| *a).collect();
        assert_eq!(actions.len(), endpoints.len(), "two endpoints share an audit action name");
        assert!(actions.contains("users.import") && actions.contains("policy.room.set"));
    }
}
