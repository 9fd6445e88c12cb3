//! Server policy changed at run time: the federation allowlist, the media policy and the
//! registration mode. Stored in the database and in effect from the next request.

use axum::{Extension, extract::State, response::Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminJson, Caller, answer};
use crate::{
    admin::{MediaPolicyJson, POLICY_FEDERATION, POLICY_MEDIA, POLICY_REGISTRATION},
    media::MediaPolicy,
    services::AppState,
};
use kairan_core::{
    config::RegistrationMode,
    error::{Error, Result},
};

fn server_policy_json(services: &AppState) -> Value {
    json!({
        "federation_allowlist": services.federation_allowlist(),
        "media": MediaPolicyJson::from(&services.media.policy()),
        "registration_mode": services.registration_mode(),
    })
}

/// GET /policy
pub async fn show(State(services): State<AppState>) -> Response {
    answer(server_policy_json(&services), "")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationBody {
    allowlist: Vec<String>,
}

fn valid_server_pattern(s: &str) -> bool {
    let name = s.strip_prefix("*.").unwrap_or(s);
    s == "*" || (ruma::ServerName::parse(name).is_ok() && !name.contains('*'))
}

/// PUT /policy/federation
pub async fn set_federation(
    State(services): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    AdminJson(b): AdminJson<FederationBody>,
) -> Result<Response> {
    let mut list: Vec<String> = Vec::new();
    for s in b.allowlist {
        let s = s.trim().to_ascii_lowercase();
        if !valid_server_pattern(&s) {
            return Err(Error::invalid_param(format!(
                "{s:?} is not a server name (pref.example, city.example:8448), *.domain or *"
            )));
        }
        if !list.contains(&s) {
            list.push(s);
        }
    }
    services.set_server_policy(POLICY_FEDERATION, &json!(list), &caller).await?;
    let detail = format!("allowlist: {}", if list.is_empty() { "(none)".to_owned() } else { list.join(", ") });
    Ok(answer(server_policy_json(&services), detail))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaBody {
    max_upload_bytes: Option<u64>,
    refused_types: Option<Vec<String>>,
    allowed_types: Option<Vec<String>>,
}

/// PUT /policy/media: absent fields keep their value.
pub async fn set_media(
    State(services): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    AdminJson(b): AdminJson<MediaBody>,
) -> Result<Response> {
    let current = services.media.policy();
    let max = b.max_upload_bytes.unwrap_or(current.max_upload_bytes);
    if max == 0 {
        return Err(Error::invalid_param("max_upload_bytes must be at least 1"));
    }
    let refused = b.refused_types.unwrap_or(current.refused_types);
    let allowed = b.allowed_types.unwrap_or(current.allowed_types);
    let policy = MediaPolicy::new(max, &refused, &allowed).map_err(Error::invalid_param)?;
    let value = serde_json::to_value(MediaPolicyJson::from(&policy)).unwrap_or_default();
    services.set_server_policy(POLICY_MEDIA, &value, &caller).await?;
    Ok(answer(server_policy_json(&services), format!("max {max} bytes")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationBody {
    mode: String,
}

/// PUT /policy/registration
pub async fn set_registration(
    State(services): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    AdminJson(b): AdminJson<RegistrationBody>,
) -> Result<Response> {
    let mode: RegistrationMode = serde_json::from_value(json!(b.mode.trim().to_lowercase()))
        .map_err(|_| Error::invalid_param(format!("mode {:?} must be closed or token", b.mode)))?;
    services.set_server_policy(POLICY_REGISTRATION, &json!(mode), &caller).await?;
    Ok(answer(server_policy_json(&services), format!("registration {}", b.mode.trim().to_lowercase())))
}
