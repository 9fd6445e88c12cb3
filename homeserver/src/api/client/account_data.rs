//! Per-user account data, global and per room (the rules: accounts/account_data.rs).

use axum::Router;
use ruma::{
    api::client::config::{
        get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
    },
    serde::Raw,
};

use crate::{
    api::{Ruma, RumaResponse, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(get_global).ruma(set_global).ruma(get_room).ruma(set_room)
}

fn own(user: &ruma::UserId, target: &ruma::UserId) -> Result<()> {
    if user == target { Ok(()) } else { Err(Error::forbidden("you can only access your own account data")) }
}

/// GET /_matrix/client/v3/user/{userId}/account_data/{type}
async fn get_global(
    services: AppState,
    req: Ruma<get_global_account_data::v3::Request>,
) -> Result<RumaResponse<get_global_account_data::v3::Response>> {
    own(req.user()?, &req.body.user_id)?;
    let data = services.account_data(req.user()?, "", &req.body.event_type.to_string()).await?;
    Ok(RumaResponse(get_global_account_data::v3::Response::new(Raw::from_json(data))))
}

/// PUT /_matrix/client/v3/user/{userId}/account_data/{type}
async fn set_global(
    services: AppState,
    req: Ruma<set_global_account_data::v3::Request>,
) -> Result<RumaResponse<set_global_account_data::v3::Response>> {
    own(req.user()?, &req.body.user_id)?;
    services.set_account_data(req.user()?, "", &req.body.event_type.to_string(), req.body.data.json()).await?;
    Ok(RumaResponse(set_global_account_data::v3::Response::new()))
}

/// GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
async fn get_room(
    services: AppState,
    req: Ruma<get_room_account_data::v3::Request>,
) -> Result<RumaResponse<get_room_account_data::v3::Response>> {
    own(req.user()?, &req.body.user_id)?;
    let data = services.account_data(req.user()?, req.body.room_id.as_str(), &req.body.event_type.to_string()).await?;
    Ok(RumaResponse(get_room_account_data::v3::Response::new(Raw::from_json(data))))
}

/// PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
async fn set_room(
    services: AppState,
    req: Ruma<set_room_account_data::v3::Request>,
) -> Result<RumaResponse<set_room_account_data::v3::Response>> {
    own(req.user()?, &req.body.user_id)?;
    let (room, kind) = (req.body.room_id.as_str(), req.body.event_type.to_string());
    services.set_account_data(req.user()?, room, &kind, req.body.data.json()).await?;
    Ok(RumaResponse(set_room_account_data::v3::Response::new()))
}
