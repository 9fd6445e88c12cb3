//! PUT /sendToDevice: direct messages to devices, delivered through /sync.

use axum::{Json, Router};
use ruma::{api::client::to_device::send_event_to_device, to_device::DeviceIdOrAllDevices};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    error::Result,
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(send)
}

/// PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}
async fn send(state: AppState, req: Ruma<send_event_to_device::v3::Request>) -> Result<Json<Value>> {
    let auth = req.auth()?;
    let b = &req.body;
    let mut messages = Vec::new();
    for (user, devices) in &b.messages {
        if !state.is_local(user) {
            // Remote delivery is federation's (issue 4).
            continue;
        }
        for (device, content) in devices {
            let content = content.json().get().to_owned();
            match device {
                DeviceIdOrAllDevices::DeviceId(d) => messages.push((user.to_string(), d.to_string(), content)),
                DeviceIdOrAllDevices::AllDevices => {
                    for d in state.store.devices(user.as_str()).await? {
                        messages.push((user.to_string(), d.device_id, content.clone()));
                    }
                }
            }
        }
    }
    let (user, device, txn) = (auth.user.as_str(), auth.device.as_str(), b.txn_id.as_str());
    if let Some(pos) = state.store.put_to_device(user, device, txn, &b.event_type.to_string(), &messages).await? {
        state.notifier.advance(pos);
    }
    Ok(Json(json!({})))
}
