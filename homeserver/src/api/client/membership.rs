//! Joining, leaving, inviting, kicking, banning, forgetting; joined rooms.

use axum::{Json, Router};
use ruma::api::client::knock::knock_room;
use ruma::api::client::membership::{
    ban_user, forget_room, invite_user, join_room_by_id, join_room_by_id_or_alias, joined_rooms, kick_user, leave_room,
    unban_user,
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    rooms::MembershipAction,
    services::AppState,
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(join_by_id)
        .ruma(join_by_id_or_alias)
        .ruma(invite)
        .ruma(leave)
        .ruma(kick)
        .ruma(ban)
        .ruma(unban)
        .ruma(forget)
        .ruma(joined)
        .ruma(knock)
}

/// POST /_matrix/client/v3/knock/{roomIdOrAlias}
async fn knock(services: AppState, req: Ruma<knock_room::v3::Request>) -> Result<Json<Value>> {
    let room_id = services.resolve_room(req.body.room_id_or_alias.as_str()).await?;
    let mut via = req.body.via.clone();
    if let Ok(alias) = ruma::RoomAliasId::parse(req.body.room_id_or_alias.as_str()) {
        via.push(alias.server_name().to_owned());
    }
    services.knock_room(&room_id, req.user()?, req.body.reason.clone(), &via).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// POST /_matrix/client/v3/rooms/{roomId}/join
async fn join_by_id(services: AppState, req: Ruma<join_room_by_id::v3::Request>) -> Result<Json<Value>> {
    services.join_room(&req.body.room_id, req.user()?, req.body.reason.clone()).await?;
    Ok(Json(json!({ "room_id": req.body.room_id })))
}

/// POST /_matrix/client/v3/join/{roomIdOrAlias}
async fn join_by_id_or_alias(
    services: AppState,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<Json<Value>> {
    let room_id = services.resolve_room(req.body.room_id_or_alias.as_str()).await?;
    let mut via = req.body.via.clone();
    if let Ok(alias) = ruma::RoomAliasId::parse(req.body.room_id_or_alias.as_str()) {
        via.push(alias.server_name().to_owned());
    }
    services.join_room_via(&room_id, req.user()?, req.body.reason.clone(), &via).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// POST /_matrix/client/v3/rooms/{roomId}/invite
async fn invite(services: AppState, req: Ruma<invite_user::v3::Request>) -> Result<Json<Value>> {
    let invite_user::v3::InvitationRecipient::UserId(invitee) = &req.body.recipient else {
        return Err(Error::new(http::StatusCode::BAD_REQUEST, "M_UNKNOWN", "third-party invites are not supported"));
    };
    services
        .change_membership(
            &req.body.room_id,
            req.user()?,
            &invitee.user_id,
            MembershipAction::Invite,
            invitee.reason.clone(),
            false,
        )
        .await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/leave
async fn leave(services: AppState, req: Ruma<leave_room::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    services
        .change_membership(&req.body.room_id, user, user, MembershipAction::Leave, req.body.reason.clone(), false)
        .await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/kick
async fn kick(services: AppState, req: Ruma<kick_user::v3::Request>) -> Result<Json<Value>> {
    let b = &req.body;
    services
        .change_membership(&b.room_id, req.user()?, &b.user_id, MembershipAction::Kick, b.reason.clone(), false)
        .await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/ban
async fn ban(services: AppState, req: Ruma<ban_user::v3::Request>) -> Result<Json<Value>> {
    let b = &req.body;
    services
        .change_membership(&b.room_id, req.user()?, &b.user_id, MembershipAction::Ban, b.reason.clone(), false)
        .await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/unban
async fn unban(services: AppState, req: Ruma<unban_user::v3::Request>) -> Result<Json<Value>> {
    let b = &req.body;
    services
        .change_membership(&b.room_id, req.user()?, &b.user_id, MembershipAction::Unban, b.reason.clone(), false)
        .await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/forget
async fn forget(services: AppState, req: Ruma<forget_room::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    if services.store.membership(req.body.room_id.as_str(), user.as_str()).await?.as_deref() == Some("join") {
        return Err(Error::bad_state("leave the room before forgetting it"));
    }
    services.store.forget_room(user.as_str(), req.body.room_id.as_str()).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/joined_rooms
async fn joined(services: AppState, req: Ruma<joined_rooms::v3::Request>) -> Result<Json<Value>> {
    let rooms = services.store.rooms_with_membership(req.user()?.as_str(), "join").await?;
    Ok(Json(json!({ "joined_rooms": rooms })))
}
