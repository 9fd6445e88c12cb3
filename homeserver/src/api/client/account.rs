//! Password change, deactivation and devices (deletion behind user-interactive auth).

use axum::{Json, Router};
use ruma::api::client::{
    account::{change_password, deactivate},
    device::{delete_device, delete_devices, get_device, get_devices, update_device},
};
use serde_json::{Value, json};

use crate::{
    accounts::hash_password,
    api::{Ruma, ruma_io::RouterExt},
    services::AppState,
    storage::DeviceRow,
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(change_password)
        .ruma(deactivate)
        .ruma(get_devices)
        .ruma(get_device)
        .ruma(update_device)
        .ruma(delete_device)
        .ruma(delete_devices)
}

/// POST /_matrix/client/v3/account/password
async fn change_password(services: AppState, req: Ruma<change_password::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    services.require_password(&auth.user, req.body.auth.as_ref()).await?;
    let hash = hash_password(req.body.new_password.clone()).await?;
    services.store.set_password_hash(auth.user.as_str(), Some(&hash)).await?;
    if req.body.logout_devices {
        services.remove_other_devices(&auth.user, &auth.device).await?;
    }
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/account/deactivate
async fn deactivate(services: AppState, req: Ruma<deactivate::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    services.require_password(&auth.user, req.body.auth.as_ref()).await?;
    services.deactivate_account(&auth.user).await?;
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
async fn get_devices(services: AppState, req: Ruma<get_devices::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let devices = services.store.devices(user.as_str()).await?;
    Ok(Json(json!({ "devices": devices.iter().map(|d| device_json(d, user.as_str())).collect::<Vec<_>>() })))
}

/// GET /_matrix/client/v3/devices/{deviceId}
async fn get_device(services: AppState, req: Ruma<get_device::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let devices = services.store.devices(user.as_str()).await?;
    let d = devices
        .iter()
        .find(|d| d.device_id == req.body.device_id.as_str())
        .ok_or_else(|| Error::not_found("no such device"))?;
    Ok(Json(device_json(d, user.as_str())))
}

/// PUT /_matrix/client/v3/devices/{deviceId}
async fn update_device(services: AppState, req: Ruma<update_device::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    if !services
        .store
        .rename_device(user.as_str(), req.body.device_id.as_str(), req.body.display_name.as_deref())
        .await?
    {
        return Err(Error::not_found("no such device"));
    }
    services.e2ee().device_renamed(user, req.body.device_id.as_str()).await?;
    Ok(Json(json!({})))
}

/// DELETE /_matrix/client/v3/devices/{deviceId}
async fn delete_device(services: AppState, req: Ruma<delete_device::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    services.require_password(&auth.user, req.body.auth.as_ref()).await?;
    services.remove_devices(&auth.user, Some(&[req.body.device_id.to_string()])).await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/delete_devices
async fn delete_devices(services: AppState, req: Ruma<delete_devices::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    services.require_password(&auth.user, req.body.auth.as_ref()).await?;
    let ids: Vec<String> = req.body.devices.iter().map(|d| d.to_string()).collect();
    services.remove_devices(&auth.user, Some(&ids)).await?;
    Ok(Json(json!({})))
}
