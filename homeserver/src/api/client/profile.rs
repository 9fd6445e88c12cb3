//! Display names and avatars (the rule that a change reaches every joined room is in
//! accounts/profile.rs).

use axum::{Json, Router};
use ruma::api::client::{
    profile::{delete_profile_field, get_profile, get_profile_field, set_profile_field},
    user_directory::search_users,
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, RumaResponse, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(profile).ruma(field).ruma(set_field).ruma(delete_field).ruma(search)
}

/// GET /_matrix/client/v3/profile/{userId}
///
/// A remote user's profile is asked of their server (`query/profile`).
async fn profile(
    services: AppState,
    req: Ruma<get_profile::v3::Request>,
) -> Result<RumaResponse<get_profile::v3::Response>> {
    Ok(RumaResponse(services.profile(&req.body.user_id, None).await?.into_iter().collect()))
}

/// GET /_matrix/client/v3/profile/{userId}/{keyName}
async fn field(services: AppState, req: Ruma<get_profile_field::v3::Request>) -> Result<Json<Value>> {
    let name = req.body.field.to_string();
    let p = services.profile(&req.body.user_id, Some(&name)).await?;
    match p.get(&name) {
        Some(v) => Ok(Json(json!({ name: v }))),
        None => Err(Error::not_found(format!("{name} is not set"))),
    }
}

/// PUT /_matrix/client/v3/profile/{userId}/{keyName}
async fn set_field(
    services: AppState,
    req: Ruma<set_profile_field::v3::Request>,
) -> Result<RumaResponse<set_profile_field::v3::Response>> {
    let user = req.user()?;
    if req.body.user_id != *user {
        return Err(Error::forbidden("you can only change your own profile"));
    }
    let v = serde_json::to_value(&req.body.value).map_err(|e| Error::bad_json(e.to_string()))?;
    let (name, value) = v
        .as_object()
        .and_then(|o| o.iter().next())
        .map(|(k, v)| (k.clone(), v.clone()))
        .ok_or_else(|| Error::bad_json("empty profile update"))?;
    services.set_profile_field(user, &name, value.as_str().map(str::to_owned)).await?;
    Ok(RumaResponse(set_profile_field::v3::Response::new()))
}

/// DELETE /_matrix/client/v3/profile/{userId}/{keyName}
async fn delete_field(
    services: AppState,
    req: Ruma<delete_profile_field::v3::Request>,
) -> Result<RumaResponse<delete_profile_field::v3::Response>> {
    let user = req.user()?;
    if req.body.user_id != *user {
        return Err(Error::forbidden("you can only change your own profile"));
    }
    services.set_profile_field(user, req.body.field.as_ref(), None).await?;
    Ok(RumaResponse(delete_profile_field::v3::Response::new()))
}

/// POST /_matrix/client/v3/user_directory/search
async fn search(services: AppState, req: Ruma<search_users::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let limit = u64::from(req.body.limit).clamp(1, 100) as i64;
    let term = req.body.search_term.to_lowercase();
    let all = services.config.user_directory.search_all_users;
    let rows = services.store.search_users(user.as_str(), &term, all, limit + 1).await?;
    let limited = rows.len() as i64 > limit;
    let results: Vec<Value> = rows
        .into_iter()
        .take(limit as usize)
        .map(|(id, name, avatar)| json!({ "user_id": id, "display_name": name, "avatar_url": avatar }))
        .collect();
    Ok(Json(json!({ "results": results, "limited": limited })))
}
