//! PUT /sendToDevice: direct messages to devices, delivered through /sync (the rules:
//! sync/to_device.rs).

use axum::Router;
use ruma::api::client::to_device::send_event_to_device;

use crate::{
    api::{Ruma, RumaResponse, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::error::Result;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(send)
}

/// PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}
async fn send(
    services: AppState,
    req: Ruma<send_event_to_device::v3::Request>,
) -> Result<RumaResponse<send_event_to_device::v3::Response>> {
    let auth = req.auth()?;
    let b = &req.body;
    services
        .send_to_device(&auth.user, &auth.device, b.txn_id.as_str(), &b.event_type.to_string(), &b.messages)
        .await?;
    Ok(RumaResponse(send_event_to_device::v3::Response::new()))
}
