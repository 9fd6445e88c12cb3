//! Display names and avatars; a change is written into every joined room's member event.

use axum::{Json, Router};
use ruma::api::client::{
    profile::{delete_profile_field, get_profile, get_profile_field, set_profile_field},
    user_directory::search_users,
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    rooms::EventTemplate,
    services::{AppState, Services},
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(profile).ruma(field).ruma(set_field).ruma(delete_field).ruma(search)
}

async fn profile_json(services: &Services, user: &ruma::UserId) -> Result<Value> {
    let u = services.store.user(user.as_str()).await?.ok_or_else(|| Error::not_found("user not found"))?;
    let mut out = json!({});
    if let Some(n) = u.displayname {
        out["displayname"] = n.into();
    }
    if let Some(a) = u.avatar_url {
        out["avatar_url"] = a.into();
    }
    Ok(out)
}

/// GET /_matrix/client/v3/profile/{userId}
///
/// A remote user's profile is asked of their server (`query/profile`).
async fn profile(services: AppState, req: Ruma<get_profile::v3::Request>) -> Result<Json<Value>> {
    if !services.is_local(&req.body.user_id) {
        return Ok(Json(Value::Object(services.profile(&req.body.user_id, None).await?)));
    }
    Ok(Json(profile_json(&services, &req.body.user_id).await?))
}

/// GET /_matrix/client/v3/profile/{userId}/{keyName}
async fn field(services: AppState, req: Ruma<get_profile_field::v3::Request>) -> Result<Json<Value>> {
    let name = req.body.field.to_string();
    let p = match services.is_local(&req.body.user_id) {
        true => profile_json(&services, &req.body.user_id).await?,
        false => Value::Object(services.profile(&req.body.user_id, Some(&name)).await?),
    };
    match p.get(&name) {
        Some(v) => Ok(Json(json!({ name: v }))),
        None => Err(Error::not_found(format!("{name} is not set"))),
    }
}

async fn update(services: &Services, user: &ruma::UserId, name: &str, value: Option<String>) -> Result<()> {
    match name {
        "displayname" => services.store.set_profile_field(user.as_str(), Some(value.as_deref()), None).await?,
        "avatar_url" => services.store.set_profile_field(user.as_str(), None, Some(value.as_deref())).await?,
        other => return Err(Error::bad_json(format!("profile field {other:?} is not supported"))),
    }
    for room in services.store.rooms_with_membership(user.as_str(), "join").await? {
        let Ok(room_id) = ruma::OwnedRoomId::try_from(room) else { continue };
        let Some(id) = services.store.current_state_event(room_id.as_str(), "m.room.member", user.as_str()).await?
        else {
            continue;
        };
        let Some(pdu) = services.pdu(&id).await? else { continue };
        let mut content = pdu.content_value();
        match &value {
            Some(v) => content[name] = v.clone().into(),
            None => {
                if let Some(o) = content.as_object_mut() {
                    o.remove(name);
                }
            }
        }
        if let Err(e) = services
            .append_event(&room_id, user, EventTemplate::state("m.room.member", user.as_str(), content), None)
            .await
        {
            tracing::warn!(%room_id, error = %e, "could not update member event after profile change");
        }
    }
    Ok(())
}

/// PUT /_matrix/client/v3/profile/{userId}/{keyName}
async fn set_field(services: AppState, req: Ruma<set_profile_field::v3::Request>) -> Result<Json<Value>> {
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
    update(&services, user, &name, value.as_str().map(str::to_owned)).await?;
    Ok(Json(json!({})))
}

/// DELETE /_matrix/client/v3/profile/{userId}/{keyName}
async fn delete_field(services: AppState, req: Ruma<delete_profile_field::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    if req.body.user_id != *user {
        return Err(Error::forbidden("you can only change your own profile"));
    }
    update(&services, user, req.body.field.as_ref(), None).await?;
    Ok(Json(json!({})))
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
