//! Password change, deactivation and devices (deletion behind user-interactive auth).

use axum::{Json, Router};
use ruma::api::client::{
    account::{change_password, deactivate},
    device::{delete_device, delete_devices, get_device, get_devices, update_device},
    uiaa::{AuthData, UserIdentifier},
};
use serde_json::{Value, json};

use crate::{
    accounts::{UiaStage, hash_password},
    api::{Auth, Ruma, ruma_io::RouterExt},
    error::{Error, Result},
    services::{AppState, Services},
    storage::DeviceRow,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(change_password)
        .ruma(deactivate)
        .ruma(get_devices)
        .ruma(get_device)
        .ruma(update_device)
        .ruma(delete_device)
        .ruma(delete_devices)
}

/// Requires the caller's password as a UIA stage.
async fn require_password(state: &Services, auth: &Auth, data: Option<&AuthData>) -> Result<()> {
    let stages = [UiaStage::Password];
    match data {
        Some(AuthData::Password(p)) => {
            let claimed = match &p.identifier {
                UserIdentifier::Matrix(id) => state.user_id_from(&id.user)?,
                _ => return Err(Error::forbidden("only user identifiers are supported")),
            };
            if claimed != auth.user {
                return Err(Error::forbidden("you can only authenticate as yourself"));
            }
            match state.check_password(&auth.user, &p.password).await {
                Ok(()) => Ok(()),
                Err(e) => Err(state.uia().challenge(p.session.as_deref(), &stages, Some(e))),
            }
        }
        other => Err(state.uia().challenge(other.and_then(|d| d.session()), &stages, None)),
    }
}

/// POST /_matrix/client/v3/account/password
async fn change_password(state: AppState, req: Ruma<change_password::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    require_password(&state, auth, req.body.auth.as_ref()).await?;
    let hash = hash_password(req.body.new_password.clone()).await?;
    state.store.set_password_hash(auth.user.as_str(), Some(&hash)).await?;
    if req.body.logout_devices {
        state.store.delete_other_tokens(auth.user.as_str(), &auth.device).await?;
    }
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/account/deactivate
async fn deactivate(state: AppState, req: Ruma<deactivate::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    require_password(&state, auth, req.body.auth.as_ref()).await?;
    state.deactivate_account(&auth.user).await?;
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}

fn device_json(d: &DeviceRow, user: &str) -> Value {
    json!({
        "device_id": d.device_id,
        "display_name": d.display_name,
        "last_seen_ts": d.last_seen_ts,
        "last_seen_ip": d.last_seen_ip,
        "user_id": user,
    })
}

/// GET /_matrix/client/v3/devices
async fn get_devices(state: AppState, req: Ruma<get_devices::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let devices = state.store.devices(user.as_str()).await?;
    Ok(Json(json!({ "devices": devices.iter().map(|d| device_json(d, user.as_str())).collect::<Vec<_>>() })))
}

/// GET /_matrix/client/v3/devices/{deviceId}
async fn get_device(state: AppState, req: Ruma<get_device::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let devices = state.store.devices(user.as_str()).await?;
    let d = devices
        .iter()
        .find(|d| d.device_id == req.body.device_id.as_str())
        .ok_or_else(|| Error::not_found("no such device"))?;
    Ok(Json(device_json(d, user.as_str())))
}

/// PUT /_matrix/client/v3/devices/{deviceId}
async fn update_device(state: AppState, req: Ruma<update_device::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    if !state.store.rename_device(user.as_str(), req.body.device_id.as_str(), req.body.display_name.as_deref()).await? {
        return Err(Error::not_found("no such device"));
    }
    Ok(Json(json!({})))
}

/// DELETE /_matrix/client/v3/devices/{deviceId}
async fn delete_device(state: AppState, req: Ruma<delete_device::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    require_password(&state, auth, req.body.auth.as_ref()).await?;
    state.store.delete_devices(auth.user.as_str(), Some(&[req.body.device_id.to_string()])).await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/delete_devices
async fn delete_devices(state: AppState, req: Ruma<delete_devices::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    require_password(&state, auth, req.body.auth.as_ref()).await?;
    let ids: Vec<String> = req.body.devices.iter().map(|d| d.to_string()).collect();
    state.store.delete_devices(auth.user.as_str(), Some(&ids)).await?;
    Ok(Json(json!({})))
}
