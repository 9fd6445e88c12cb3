//! Accounts, sessions and registration tokens.

use axum::{Extension, extract::State, response::Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminJson, AdminPath, AdminQuery, Caller, answer, page_limit};
use crate::{
    admin::users::{CreatedUser, NewUser, new_user, parse_csv},
    services::AppState,
    storage::{AdminUserRow, UserFilter},
};
use kairan_core::{
    error::{Error, Result},
    time::{DayEdge, format_ms, now_ms, parse_instant},
};

fn user_json(u: &AdminUserRow, offset: i64) -> Value {
    json!({
        "user_id": u.user_id,
        "displayname": u.displayname,
        "department": u.department,
        "admin": u.is_admin,
        "deactivated": u.deactivated,
        "has_password": u.has_password,
        "created_ts": u.created_ts,
        "created": format_ms(u.created_ts, offset),
        "deactivated_ts": u.deactivated_ts,
    })
}

fn created_json(c: &CreatedUser) -> Value {
    let mut v = json!({ "user_id": c.user_id });
    if let Some(p) = &c.generated_password {
        v["password"] = p.clone().into();
    }
    v
}

/// GET /whoami
pub async fn whoami(State(services): State<AppState>, Extension(Caller(caller)): Extension<Caller>) -> Response {
    answer(json!({ "user_id": caller, "admin": true, "server_name": services.server_name() }), "")
}

#[derive(Deserialize)]
pub struct ListQuery {
    from: Option<String>,
    limit: Option<i64>,
    search: Option<String>,
    department: Option<String>,
    admin: Option<bool>,
    deactivated: Option<bool>,
}

/// GET /users
pub async fn list(State(services): State<AppState>, AdminQuery(q): AdminQuery<ListQuery>) -> Result<Response> {
    let limit = page_limit(q.limit)?;
    let filter = UserFilter {
        search: q.search.filter(|s| !s.is_empty()),
        department: q.department,
        admin: q.admin,
        deactivated: q.deactivated,
    };
    let (rows, total) = services.store.admin_users(&filter, q.from.as_deref(), limit).await?;
    let offset = services.config.admin.utc_offset_seconds();
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.user_id.clone())).flatten();
    let users: Vec<Value> = rows.iter().map(|u| user_json(u, offset)).collect();
    Ok(answer(json!({ "users": users, "total": total, "next": next }), format!("{} listed", users.len())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    user_id: String,
    displayname: Option<String>,
    department: Option<String>,
    password: Option<String>,
    #[serde(default)]
    admin: bool,
}

/// POST /users
pub async fn create(State(services): State<AppState>, AdminJson(b): AdminJson<CreateBody>) -> Result<Response> {
    let created = services
        .admin_create_user(NewUser {
            user_id: b.user_id,
            displayname: b.displayname,
            department: b.department,
            password: b.password,
            admin: b.admin,
        })
        .await?;
    Ok(answer(created_json(&created), "created"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRow {
    line: Option<usize>,
    user_id: Option<String>,
    displayname: Option<String>,
    department: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    users: Vec<ImportRow>,
}

/// POST /users/import: a CSV (`Content-Type: text/csv`; user ID, display name,
/// department, optionally a password) or JSON `{"users": [...]}`. Each row is created or
/// reported as failed, with its line; a failed row does not stop the others.
pub async fn import(State(services): State<AppState>, req: axum::extract::Request) -> Result<Response> {
    let csv = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/csv"));
    let bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .map_err(|e| Error::bad_json(format!("cannot read the body: {e}")))?;
    // (line, the row or why it is not one)
    let mut rows: Vec<(usize, std::result::Result<NewUser, Error>)> = Vec::new();
    if csv {
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::invalid_param("the CSV is not UTF-8"))?;
        let records = parse_csv(text).map_err(|(line, e)| Error::invalid_param(format!("line {line}: {e}")))?;
        for r in records {
            rows.push((r.line, new_user(&r).map_err(Error::invalid_param)));
        }
    } else {
        let body: ImportBody = serde_json::from_slice(&bytes)
            .map_err(|e| Error::bad_json(format!("expected {{\"users\": [...]}} or a text/csv body: {e}")))?;
        for (i, r) in body.users.into_iter().enumerate() {
            let line = r.line.unwrap_or(i + 1);
            let row = match r.user_id.filter(|u| !u.trim().is_empty()) {
                None => Err(Error::missing_param("user_id is required")),
                Some(user_id) => Ok(NewUser {
                    user_id,
                    displayname: r.displayname,
                    department: r.department,
                    password: r.password,
                    admin: false,
                }),
            };
            rows.push((line, row));
        }
    }
    let mut failed = Vec::new();
    let mut pending = Vec::new();
    let mut pending_lines = Vec::new();
    for (line, row) in rows {
        match row {
            Ok(u) => {
                pending_lines.push((line, u.user_id.clone()));
                pending.push(u);
            }
            Err(e) => failed.push(json!({ "line": line, "errcode": e.errcode, "error": e.message })),
        }
    }
    let mut created = Vec::new();
    for ((line, user), result) in pending_lines.into_iter().zip(services.admin_import_users(pending).await) {
        match result {
            Ok(c) => {
                let mut v = created_json(&c);
                v["line"] = line.into();
                created.push(v);
            }
            Err(e) => failed.push(json!({ "line": line, "user_id": user, "errcode": e.errcode, "error": e.message })),
        }
    }
    failed.sort_by_key(|f| f["line"].as_u64());
    let detail = format!("{} created, {} failed", created.len(), failed.len());
    Ok(answer(json!({ "created": created, "failed": failed }), detail))
}

/// GET /users/{user_id}
pub async fn show(State(services): State<AppState>, AdminPath(user): AdminPath<String>) -> Result<Response> {
    let (user_id, row) = services.admin_target_user(&user).await?;
    let offset = services.config.admin.utc_offset_seconds();
    let mut v = user_json(&row, offset);
    let devices = services.store.devices(user_id.as_str()).await?;
    v["devices"] = devices.len().into();
    v["sessions"] = services.store.session_count(user_id.as_str()).await?.into();
    v["last_seen_ts"] = json!(devices.iter().filter_map(|d| d.last_seen_ts).max());
    v["last_active_day"] = json!(services.store.last_active_day(user_id.as_str()).await?);
    v["joined_rooms"] = json!(services.store.rooms_with_membership(user_id.as_str(), "join").await?);
    Ok(answer(v, ""))
}

/// POST /users/{user_id}/deactivate
pub async fn deactivate(
    State(services): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    AdminPath(user): AdminPath<String>,
) -> Result<Response> {
    let user_id = services.admin_deactivate(&caller, &user).await?;
    Ok(answer(json!({ "user_id": user_id, "deactivated": true }), "deactivated; sessions ended"))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    password: Option<String>,
    logout_devices: Option<bool>,
}

/// POST /users/{user_id}/reactivate
pub async fn reactivate(
    State(services): State<AppState>,
    AdminPath(user): AdminPath<String>,
    AdminJson(b): AdminJson<PasswordBody>,
) -> Result<Response> {
    let c = services.admin_reactivate(&user, b.password).await?;
    let mut v = created_json(&c);
    v["deactivated"] = false.into();
    Ok(answer(v, "reactivated"))
}

/// POST /users/{user_id}/password
pub async fn reset_password(
    State(services): State<AppState>,
    AdminPath(user): AdminPath<String>,
    AdminJson(b): AdminJson<PasswordBody>,
) -> Result<Response> {
    let logout = b.logout_devices.unwrap_or(true);
    let c = services.admin_reset_password(&user, b.password, logout).await?;
    let mut v = created_json(&c);
    v["logged_out"] = logout.into();
    Ok(answer(v, if logout { "password reset; sessions ended" } else { "password reset" }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminBody {
    admin: bool,
}

/// PUT /users/{user_id}/admin
pub async fn set_admin(
    State(services): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    AdminPath(user): AdminPath<String>,
    AdminJson(b): AdminJson<AdminBody>,
) -> Result<Response> {
    let user_id = services.admin_set_admin(&caller, &user, b.admin).await?;
    Ok(answer(json!({ "user_id": user_id, "admin": b.admin }), if b.admin { "granted" } else { "revoked" }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentBody {
    department: Option<String>,
}

/// PUT /users/{user_id}/department
pub async fn set_department(
    State(services): State<AppState>,
    AdminPath(user): AdminPath<String>,
    AdminJson(b): AdminJson<DepartmentBody>,
) -> Result<Response> {
    let (user_id, _) = services.admin_target_user(&user).await?;
    let dept = b.department.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
    services.store.set_user_department(user_id.as_str(), dept.as_deref()).await?;
    Ok(answer(json!({ "user_id": user_id, "department": dept }), ""))
}

/// GET /users/{user_id}/devices
pub async fn devices(State(services): State<AppState>, AdminPath(user): AdminPath<String>) -> Result<Response> {
    let (user_id, _) = services.admin_target_user(&user).await?;
    let offset = services.config.admin.utc_offset_seconds();
    let devices: Vec<Value> = services
        .store
        .devices(user_id.as_str())
        .await?
        .iter()
        .map(|d| {
            json!({
                "device_id": d.device_id,
                "display_name": d.display_name,
                "last_seen_ts": d.last_seen_ts,
                "last_seen": d.last_seen_ts.map(|t| format_ms(t, offset)),
                "last_seen_ip": d.last_seen_ip,
            })
        })
        .collect();
    Ok(answer(json!({ "user_id": user_id, "devices": devices }), ""))
}

/// DELETE /users/{user_id}/devices/{device_id}
pub async fn delete_device(
    State(services): State<AppState>,
    AdminPath((user, device)): AdminPath<(String, String)>,
) -> Result<Response> {
    let user_id = services.admin_delete_device(&user, &device).await?;
    Ok(answer(json!({ "user_id": user_id, "device_id": device, "deleted": true }), "session ended"))
}

// ----- registration tokens -----

fn valid_token(t: &str) -> bool {
    (1..=64).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    token: Option<String>,
    uses_allowed: Option<i64>,
    /// Milliseconds since the epoch.
    expiry_ts: Option<i64>,
    /// A date (the token works through that day) or a time.
    expiry: Option<String>,
}

/// POST /registration_tokens
pub async fn create_token(State(services): State<AppState>, AdminJson(b): AdminJson<TokenBody>) -> Result<Response> {
    let token = match b.token {
        Some(t) if valid_token(&t) => t,
        Some(_) => {
            return Err(Error::invalid_param("a token is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '~', '-'"));
        }
        None => kairan_core::ids::random_localpart(16),
    };
    if b.uses_allowed.is_some_and(|n| n < 0) {
        return Err(Error::invalid_param("uses_allowed must not be negative"));
    }
    let offset = services.config.admin.utc_offset_seconds();
    let expiry_ts = match (b.expiry_ts, b.expiry) {
        (Some(ts), _) => Some(ts),
        (None, Some(e)) => Some(
            parse_instant(&e, offset, DayEdge::End)
                .ok_or_else(|| Error::invalid_param(format!("expiry {e:?} is not a date (YYYY-MM-DD) or time")))?,
        ),
        (None, None) => None,
    };
    if expiry_ts.is_some_and(|t| t <= now_ms()) {
        return Err(Error::invalid_param("the expiry is in the past"));
    }
    if !services.store.create_registration_token(&token, b.uses_allowed, expiry_ts).await? {
        return Err(Error::new(http::StatusCode::BAD_REQUEST, "M_INVALID_PARAM", "this token already exists"));
    }
    Ok(answer(
        json!({
            "token": token,
            "uses_allowed": b.uses_allowed,
            "expiry_ts": expiry_ts,
            "expiry": expiry_ts.map(|t| format_ms(t, offset)),
        }),
        "created",
    ))
}

/// GET /registration_tokens
pub async fn list_tokens(State(services): State<AppState>) -> Result<Response> {
    let offset = services.config.admin.utc_offset_seconds();
    let now = now_ms();
    let tokens: Vec<Value> = services
        .store
        .registration_tokens()
        .await?
        .into_iter()
        .map(|t| {
            let valid = t.uses_allowed.is_none_or(|n| t.completed < n) && t.expiry_ts.is_none_or(|e| e > now);
            json!({
                "token": t.token,
                "uses_allowed": t.uses_allowed,
                "completed": t.completed,
                "expiry_ts": t.expiry_ts,
                "expiry": t.expiry_ts.map(|e| format_ms(e, offset)),
                "valid": valid,
            })
        })
        .collect();
    let n = tokens.len();
    Ok(answer(json!({ "tokens": tokens }), format!("{n} listed")))
}

/// DELETE /registration_tokens/{token}
pub async fn revoke_token(State(services): State<AppState>, AdminPath(token): AdminPath<String>) -> Result<Response> {
    if !services.store.delete_registration_token(&token).await? {
        return Err(Error::not_found("no such registration token"));
    }
    Ok(answer(json!({ "revoked": true }), "revoked"))
}
