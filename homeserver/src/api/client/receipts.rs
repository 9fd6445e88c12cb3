//! Receipts, read markers, typing and presence.

use std::time::Duration;

use axum::{Json, Router};
use ruma::api::client::{
    presence::{get_presence, set_presence},
    read_marker::set_read_marker,
    receipt::create_receipt,
    typing::create_typing_event,
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    services::{AppState, Services},
};
use kairan_core::{
    error::{Error, Result},
    notifier::Audience,
    time::now_ms,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(receipt).ruma(read_markers).ruma(typing).ruma(put_presence).ruma(presence)
}

async fn record_receipt(
    services: &Services,
    room: &ruma::RoomId,
    user: &ruma::UserId,
    rtype: &str,
    event_id: &str,
    thread: &str,
) -> Result<()> {
    let row = services.store.event(event_id).await?.filter(|r| r.room_id == room.as_str());
    if row.is_none() {
        return Err(Error::not_found("event not found in this room"));
    }
    if rtype == "m.fully_read" {
        let pos = services
            .store
            .put_account_data(
                user.as_str(),
                room.as_str(),
                "m.fully_read",
                &json!({ "event_id": event_id }).to_string(),
            )
            .await?;
        services.notifier.advance(pos, Audience::user(user.as_str()));
    } else {
        let pos = services.store.put_receipt(room.as_str(), rtype, user.as_str(), thread, event_id, now_ms()).await?;
        services.notifier.advance(pos, Audience::room(room.as_str()));
        if rtype == "m.read" {
            services.send_receipt_edu(room, user, event_id, thread).await?;
        }
    }
    Ok(())
}

/// POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}
async fn receipt(services: AppState, req: Ruma<create_receipt::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let b = &req.body;
    services.require_joined(&b.room_id, user).await?;
    let thread = match &b.thread {
        ruma::events::receipt::ReceiptThread::Main => "main".to_owned(),
        ruma::events::receipt::ReceiptThread::Thread(id) => id.to_string(),
        _ => String::new(),
    };
    record_receipt(&services, &b.room_id, user, b.receipt_type.as_str(), b.event_id.as_str(), &thread).await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/read_markers
async fn read_markers(services: AppState, req: Ruma<set_read_marker::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let b = &req.body;
    services.require_joined(&b.room_id, user).await?;
    if let Some(id) = &b.fully_read {
        record_receipt(&services, &b.room_id, user, "m.fully_read", id.as_str(), "").await?;
    }
    if let Some(id) = &b.read_receipt {
        record_receipt(&services, &b.room_id, user, "m.read", id.as_str(), "").await?;
    }
    if let Some(id) = &b.private_read_receipt {
        record_receipt(&services, &b.room_id, user, "m.read.private", id.as_str(), "").await?;
    }
    Ok(Json(json!({})))
}

/// PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}
async fn typing(services: AppState, req: Ruma<create_typing_event::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let b = &req.body;
    if b.user_id != *user {
        return Err(Error::forbidden("you can only set your own typing state"));
    }
    services.require_joined(&b.room_id, user).await?;
    let timeout = match b.state {
        create_typing_event::v3::Typing::Yes(t) => Some(t.timeout.min(Duration::from_secs(120))),
        _ => None,
    };
    let serial = services.notifier.current().typing + 1;
    if services.typing.set(b.room_id.as_str(), user.as_str(), timeout, || serial) {
        services.notifier.bump_typing(vec![b.room_id.to_string()]);
        services.send_typing_edu(&b.room_id, user, timeout.is_some()).await?;
    }
    Ok(Json(json!({})))
}

/// PUT /_matrix/client/v3/presence/{userId}/status
async fn put_presence(services: AppState, req: Ruma<set_presence::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    if req.body.user_id != *user {
        return Err(Error::forbidden("you can only set your own presence"));
    }
    let pos = services
        .store
        .set_presence(user.as_str(), req.body.presence.as_str(), req.body.status_msg.as_deref(), now_ms())
        .await?;
    services.advance_presence(user, pos).await?;
    services.send_presence_edu(user, req.body.presence.as_str(), req.body.status_msg.as_deref()).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/presence/{userId}/status
async fn presence(services: AppState, req: Ruma<get_presence::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let target = &req.body.user_id;
    if target != user && !services.store.users_sharing_rooms(user.as_str()).await?.iter().any(|u| u == target.as_str())
    {
        return Err(Error::forbidden("you do not share a room with this user"));
    }
    let (state_str, msg, last, _) =
        services.store.presence(target.as_str()).await?.ok_or_else(|| Error::not_found("no presence"))?;
    let mut out = json!({ "presence": state_str, "last_active_ago": (now_ms() - last).max(0), "currently_active": state_str == "online" });
    if let Some(m) = msg {
        out["status_msg"] = m.into();
    }
    Ok(Json(out))
}
