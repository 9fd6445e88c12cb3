//! Receipts, read markers, typing and presence (the rules: sync/ephemeral.rs).

use axum::Router;
use ruma::{
    api::client::{
        presence::{get_presence, set_presence},
        read_marker::set_read_marker,
        receipt::create_receipt,
        typing::create_typing_event,
    },
    events::receipt::ReceiptThread,
    presence::PresenceState,
};

use crate::{
    api::{Ruma, RumaResponse, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(receipt).ruma(read_markers).ruma(typing).ruma(put_presence).ruma(presence)
}

/// POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}
async fn receipt(
    services: AppState,
    req: Ruma<create_receipt::v3::Request>,
) -> Result<RumaResponse<create_receipt::v3::Response>> {
    let user = req.user()?;
    let b = &req.body;
    services.require_joined(&b.room_id, user).await?;
    let thread = match &b.thread {
        ReceiptThread::Main => "main".to_owned(),
        ReceiptThread::Thread(id) => id.to_string(),
        _ => String::new(),
    };
    services.record_receipt(&b.room_id, user, b.receipt_type.as_str(), b.event_id.as_str(), &thread).await?;
    Ok(RumaResponse(create_receipt::v3::Response::new()))
}

/// POST /_matrix/client/v3/rooms/{roomId}/read_markers
async fn read_markers(
    services: AppState,
    req: Ruma<set_read_marker::v3::Request>,
) -> Result<RumaResponse<set_read_marker::v3::Response>> {
    let user = req.user()?;
    let b = &req.body;
    services.require_joined(&b.room_id, user).await?;
    for (rtype, id) in
        [("m.fully_read", &b.fully_read), ("m.read", &b.read_receipt), ("m.read.private", &b.private_read_receipt)]
    {
        if let Some(id) = id {
            services.record_receipt(&b.room_id, user, rtype, id.as_str(), "").await?;
        }
    }
    Ok(RumaResponse(set_read_marker::v3::Response::new()))
}

/// PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}
async fn typing(
    services: AppState,
    req: Ruma<create_typing_event::v3::Request>,
) -> Result<RumaResponse<create_typing_event::v3::Response>> {
    let user = req.user()?;
    let b = &req.body;
    if b.user_id != *user {
        return Err(Error::forbidden("you can only set your own typing state"));
    }
    services.require_joined(&b.room_id, user).await?;
    let timeout = match b.state {
        create_typing_event::v3::Typing::Yes(t) => Some(t.timeout),
        _ => None,
    };
    services.set_typing(&b.room_id, user, timeout).await?;
    Ok(RumaResponse(create_typing_event::v3::Response::new()))
}

/// PUT /_matrix/client/v3/presence/{userId}/status
async fn put_presence(
    services: AppState,
    req: Ruma<set_presence::v3::Request>,
) -> Result<RumaResponse<set_presence::v3::Response>> {
    let user = req.user()?;
    if req.body.user_id != *user {
        return Err(Error::forbidden("you can only set your own presence"));
    }
    services.set_presence(user, req.body.presence.as_str(), req.body.status_msg.as_deref()).await?;
    Ok(RumaResponse(set_presence::v3::Response::new()))
}

/// GET /_matrix/client/v3/presence/{userId}/status
async fn presence(
    services: AppState,
    req: Ruma<get_presence::v3::Request>,
) -> Result<RumaResponse<get_presence::v3::Response>> {
    let p = services.presence_of(req.user()?, &req.body.user_id).await?;
    let mut response = get_presence::v3::Response::new(PresenceState::from(p.state.as_str()));
    response.currently_active = Some(p.state == "online");
    response.last_active_ago = Some(p.last_active_ago);
    response.status_msg = p.status_msg;
    Ok(RumaResponse(response))
}
