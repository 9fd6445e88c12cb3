//! PUT /sendToDevice: direct messages to devices, delivered through /sync.

use std::collections::BTreeMap;

use axum::{Json, Router};
use ruma::{OwnedUserId, api::client::to_device::send_event_to_device, to_device::DeviceIdOrAllDevices};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::{error::Result, notifier::Audience};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(send)
}

/// PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}
async fn send(services: AppState, req: Ruma<send_event_to_device::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let b = &req.body;
    let mut messages = Vec::new();
    let mut remote: BTreeMap<OwnedUserId, BTreeMap<String, Value>> = BTreeMap::new();
    for (user, devices) in &b.messages {
        if !services.is_local(user) {
            // Their server delivers them (`m.direct_to_device`), once this transaction is new.
            let entry = remote.entry(user.clone()).or_default();
            for (device, content) in devices {
                let content: Value = serde_json::from_str(content.json().get()).unwrap_or_default();
                entry.insert(device.to_string(), content);
            }
            continue;
        }
        for (device, content) in devices {
            let content = content.json().get().to_owned();
            match device {
                DeviceIdOrAllDevices::DeviceId(d) => messages.push((user.to_string(), d.to_string(), content)),
                DeviceIdOrAllDevices::AllDevices => {
                    for d in services.store.devices(user.as_str()).await? {
                        messages.push((user.to_string(), d.device_id, content.clone()));
                    }
                }
            }
        }
    }
    let (user, device, txn) = (auth.user.as_str(), auth.device.as_str(), b.txn_id.as_str());
    let event_type = b.event_type.to_string();
    if let Some(pos) = services.store.put_to_device(user, device, txn, &event_type, &messages).await? {
        services.notifier.advance(pos, Audience::users(messages.iter().map(|m| m.0.clone())));
        if !remote.is_empty() {
            services.send_remote_to_device(&auth.user, device, txn, &event_type, remote).await?;
        }
    }
    Ok(Json(json!({})))
}
