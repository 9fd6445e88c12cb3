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
    error::{Error, Result},
    rooms::MembershipAction,
    services::AppState,
};

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
async fn knock(state: AppState, req: Ruma<knock_room::v3::Request>) -> Result<Json<Value>> {
    let room_id = state.resolve_room(req.body.room_id_or_alias.as_str()).await?;
    let mut via = req.body.via.clone();
    if let Ok(alias) = ruma::RoomAliasId::parse(req.body.room_id_or_alias.as_str()) {
        via.push(alias.server_name().to_owned());
    }
    state.knock_room(&room_id, req.user()?, req.body.reason.clone(), &via).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// POST /_matrix/client/v3/rooms/{roomId}/join
async fn join_by_id(state: AppState, req: Ruma<join_room_by_id::v3::Request>) -> Result<Json<Value>> {
    state.join_room(&req.body.room_id, req.user()?, req.body.reason.clone()).await?;
    Ok(Json(json!({ "room_id": req.body.room_id })))
}

/// POST /_matrix/client/v3/join/{roomIdOrAlias}
async fn join_by_id_or_alias(state: AppState, req: Ruma<join_room_by_id_or_alias::v3::Request>) -> Result<Json<Value>> {
    let room_id = state.resolve_room(req.body.room_id_or_alias.as_str()).await?;
    let mut via = req.body.via.clone();
    if let Ok(alias) = ruma::RoomAliasId::parse(req.body.room_id_or_alias.as_str()) {
        via.push(alias.server_name().to_owned());
    }
    state.join_room_via(&room_id, req.user()?, req.body.reason.clone(), &via).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// POST /_matrix/client/v3/rooms/{roomId}/invite
async fn invite(state: AppState, req: Ruma<invite_user::v3::Request>) -> Result<Json<Value>> {
    let invite_user::v3::InvitationRecipient::UserId(invitee) = &req.body.recipient else {
        return Err(Error::new(http::StatusCode::BAD_REQUEST, "M_UNKNOWN", "third-party invites are not supported"));
    };
    state
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
async fn leave(state: AppState, req: Ruma<leave_room::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    state
        .change_membership(&req.body.room_id, user, user, MembershipAction::Leave, req.body.reason.clone(), false)
        .await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/kick
async fn kick(state: AppState, req: Ruma<kick_user::v3::Request>) -> Result<Json<Value>> {
    let b = &req.body;
    state
        .change_membership(&b.room_id, req.user()?, &b.user_id, MembershipAction::Kick, b.reason.clone(), false)
        .await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/ban
async fn ban(state: AppState, req: Ruma<ban_user::v3::Request>) -> Result<Json<Value>> {
    let b = &req.body;
    state
        .change_membership(&b.room_id, req.user()?, &b.user_id, MembershipAction::Ban, b.reason.clone(), false)
        .await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/unban
async fn unban(state: AppState, req: Ruma<unban_user::v3::Request>) -> Result<Json<Value>> {
    let b = &req.body;
    state
        .change_membership(&b.room_id, req.user()?, &b.user_id, MembershipAction::Unban, b.reason.clone(), false)
        .await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/forget
async fn forget(state: AppState, req: Ruma<forget_room::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    if state.store.membership(req.body.room_id.as_str(), user.as_str()).await?.as_deref() == Some("join") {
        return Err(Error::bad_state("leave the room before forgetting it"));
    }
    state.store.forget_room(user.as_str(), req.body.room_id.as_str()).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/joined_rooms
async fn joined(state: AppState, req: Ruma<joined_rooms::v3::Request>) -> Result<Json<Value>> {
    let rooms = state.store.rooms_with_membership(req.user()?.as_str(), "join").await?;
    Ok(Json(json!({ "joined_rooms": rooms })))
}
