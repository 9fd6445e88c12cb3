//! Room aliases and the public room directory.

use axum::{Json, Router};
use ruma::api::client::{
    alias::{create_alias, delete_alias, get_alias},
    directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
    room::{Visibility, aliases, get_summary},
};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, RumaResponse, ruma_io::RouterExt},
    services::{AppState, Services},
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(put_alias)
        .ruma(get_alias)
        .ruma(delete_alias)
        .ruma(room_aliases)
        .ruma(public_rooms)
        .ruma(public_rooms_filtered)
        .ruma(get_visibility)
        .ruma(set_visibility)
        .ruma(summary)
}

/// GET /_matrix/client/v1/room_summary/{roomIdOrAlias} (and MSC3266's unstable path): a
/// room's summary for someone who may see it, by ID or by alias; `M_NOT_FOUND` otherwise,
/// as for a room this server does not know.
async fn summary(services: AppState, req: Ruma<get_summary::v1::Request>) -> Result<Json<Value>> {
    let room_id = match <&ruma::RoomAliasId>::try_from(&*req.body.room_id_or_alias) {
        Ok(alias) => services.resolve_alias(alias).await?.0,
        Err(_) => ruma::OwnedRoomId::try_from(req.body.room_id_or_alias.as_str())
            .map_err(|e| Error::invalid_param(format!("not a room ID or alias: {e}")))?,
    };
    let user = req.auth.as_ref().map(|a| a.user.as_ref());
    let preview = services.room_preview(&room_id, user).await?;
    Ok(Json(preview.ok_or_else(|| Error::not_found("no such room, or not one you may preview"))?))
}

/// PUT /_matrix/client/v3/directory/room/{roomAlias}
async fn put_alias(
    services: AppState,
    req: Ruma<create_alias::v3::Request>,
) -> Result<RumaResponse<create_alias::v3::Response>> {
    services.create_alias(req.user()?, &req.body.room_alias, &req.body.room_id).await?;
    Ok(RumaResponse(create_alias::v3::Response::new()))
}

/// GET /_matrix/client/v3/directory/room/{roomAlias}
///
/// Another server's alias is asked of that server (`query/directory`).
async fn get_alias(
    services: AppState,
    req: Ruma<get_alias::v3::Request>,
) -> Result<RumaResponse<get_alias::v3::Response>> {
    let (room_id, servers) = services.resolve_alias(&req.body.room_alias).await?;
    Ok(RumaResponse(get_alias::v3::Response::new(room_id, servers)))
}

/// DELETE /_matrix/client/v3/directory/room/{roomAlias}
async fn delete_alias(
    services: AppState,
    req: Ruma<delete_alias::v3::Request>,
) -> Result<RumaResponse<delete_alias::v3::Response>> {
    services.delete_alias(req.user()?, &req.body.room_alias).await?;
    Ok(RumaResponse(delete_alias::v3::Response::new()))
}

/// GET /_matrix/client/v3/rooms/{roomId}/aliases
async fn room_aliases(
    services: AppState,
    req: Ruma<aliases::v3::Request>,
) -> Result<RumaResponse<aliases::v3::Response>> {
    services.readable_state(&req.body.room_id, req.user()?).await?;
    Ok(RumaResponse(aliases::v3::Response::new(services.room_aliases(&req.body.room_id).await?)))
}

async fn directory(
    services: &Services,
    limit: Option<u64>,
    since: Option<&str>,
    term: Option<&str>,
) -> Result<Json<Value>> {
    let offset: usize = since.and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit = limit.unwrap_or(100).clamp(1, 500) as usize;
    let mut chunk = Vec::new();
    for room in services.store.public_rooms().await? {
        let Ok(room_id) = ruma::RoomId::parse(&room) else { continue };
        let Some(entry) = services.room_summary_of(&room_id).await? else { continue };
        if let Some(term) = term {
            let hay = format!("{} {} {}", entry["name"], entry["topic"], entry["canonical_alias"]).to_lowercase();
            if !hay.contains(&term.to_lowercase()) {
                continue;
            }
        }
        chunk.push(entry);
    }
    let total = chunk.len();
    let page: Vec<Value> = chunk.into_iter().skip(offset).take(limit).collect();
    let mut response = json!({ "chunk": page, "total_room_count_estimate": total });
    // `since` is the client's: a huge offset must not wrap (or, in debug, panic).
    let next = offset.saturating_add(limit);
    if next < total {
        response["next_batch"] = next.to_string().into();
    }
    if offset > 0 {
        response["prev_batch"] = offset.saturating_sub(limit).to_string().into();
    }
    Ok(Json(response))
}

/// GET /_matrix/client/v3/publicRooms
async fn public_rooms(services: AppState, req: Ruma<get_public_rooms::v3::Request>) -> Result<Json<Value>> {
    directory(&services, req.body.limit.map(u64::from), req.body.since.as_deref(), None).await
}

/// POST /_matrix/client/v3/publicRooms
async fn public_rooms_filtered(
    services: AppState,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<Json<Value>> {
    let b = &req.body;
    directory(&services, b.limit.map(u64::from), b.since.as_deref(), b.filter.generic_search_term.as_deref()).await
}

/// GET /_matrix/client/v3/directory/list/room/{roomId}
async fn get_visibility(
    services: AppState,
    req: Ruma<get_room_visibility::v3::Request>,
) -> Result<RumaResponse<get_room_visibility::v3::Response>> {
    let public = services.room_is_public(&req.body.room_id).await?;
    Ok(RumaResponse(get_room_visibility::v3::Response::new(if public {
        Visibility::Public
    } else {
        Visibility::Private
    })))
}

/// PUT /_matrix/client/v3/directory/list/room/{roomId}
async fn set_visibility(
    services: AppState,
    req: Ruma<set_room_visibility::v3::Request>,
) -> Result<RumaResponse<set_room_visibility::v3::Response>> {
    services.set_room_public(&req.body.room_id, req.user()?, req.body.visibility == Visibility::Public).await?;
    Ok(RumaResponse(set_room_visibility::v3::Response::new()))
}
