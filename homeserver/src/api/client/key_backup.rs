//! Server-side room key backups: versions and the encrypted session keys in them.

use std::collections::BTreeMap;

use axum::Router;
use ruma::api::client::backup::{
    add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version, delete_backup_keys,
    delete_backup_keys_for_room, delete_backup_keys_for_session, delete_backup_version, get_backup_info,
    get_backup_keys, get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
    update_backup_version,
};
use ruma::{OwnedRoomId, api::client::backup::RoomKeyBackup};

use crate::{
    api::{Ruma, RumaResponse, ruma_io::RouterExt},
    services::AppState,
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(create_version)
        .ruma(latest_version)
        .ruma(get_version)
        .ruma(update_version)
        .ruma(delete_version)
        .ruma(put_keys)
        .ruma(put_room_keys)
        .ruma(put_session_key)
        .ruma(get_keys)
        .ruma(get_room_keys)
        .ruma(get_session_key)
        .ruma(delete_keys)
        .ruma(delete_room_keys)
        .ruma(delete_session_key)
}

/// POST /_matrix/client/v3/room_keys/version
async fn create_version(
    services: AppState,
    req: Ruma<create_backup_version::v3::Request>,
) -> Result<RumaResponse<create_backup_version::v3::Response>> {
    let version = services.e2ee().create_backup_version(req.user()?, req.body.algorithm.json()).await?;
    Ok(RumaResponse(create_backup_version::v3::Response::new(version)))
}

/// GET /_matrix/client/v3/room_keys/version
async fn latest_version(
    services: AppState,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<RumaResponse<get_latest_backup_info::v3::Response>> {
    let i = services.e2ee().backup_info(req.user()?, None).await?;
    Ok(RumaResponse(get_latest_backup_info::v3::Response::new(i.algorithm, i.keys.count, i.keys.etag, i.version)))
}

/// GET /_matrix/client/v3/room_keys/version/{version}
async fn get_version(
    services: AppState,
    req: Ruma<get_backup_info::v3::Request>,
) -> Result<RumaResponse<get_backup_info::v3::Response>> {
    let i = services.e2ee().backup_info(req.user()?, Some(&req.body.version)).await?;
    Ok(RumaResponse(get_backup_info::v3::Response::new(i.algorithm, i.keys.count, i.keys.etag, i.version)))
}

/// PUT /_matrix/client/v3/room_keys/version/{version}
async fn update_version(
    services: AppState,
    req: Ruma<update_backup_version::v3::Request>,
) -> Result<RumaResponse<update_backup_version::v3::Response>> {
    services.e2ee().update_backup_version(req.user()?, &req.body.version, req.body.algorithm.json()).await?;
    Ok(RumaResponse(update_backup_version::v3::Response::new()))
}

/// DELETE /_matrix/client/v3/room_keys/version/{version}
async fn delete_version(
    services: AppState,
    req: Ruma<delete_backup_version::v3::Request>,
) -> Result<RumaResponse<delete_backup_version::v3::Response>> {
    services.e2ee().delete_backup_version(req.user()?, &req.body.version).await?;
    Ok(RumaResponse(delete_backup_version::v3::Response::new()))
}

/// PUT /_matrix/client/v3/room_keys/keys
async fn put_keys(
    services: AppState,
    req: Ruma<add_backup_keys::v3::Request>,
) -> Result<RumaResponse<add_backup_keys::v3::Response>> {
    let keys: Vec<_> = req
        .body
        .rooms
        .iter()
        .flat_map(|(room, backup)| backup.sessions.iter().map(move |(s, d)| (room.to_string(), s.clone(), d.json())))
        .collect();
    let k = services.e2ee().put_room_keys(req.user()?, &req.body.version, &keys).await?;
    Ok(RumaResponse(add_backup_keys::v3::Response::new(k.etag, k.count)))
}

/// PUT /_matrix/client/v3/room_keys/keys/{roomId}
async fn put_room_keys(
    services: AppState,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<RumaResponse<add_backup_keys_for_room::v3::Response>> {
    let b = &req.body;
    let keys: Vec<_> = b.sessions.iter().map(|(s, d)| (b.room_id.to_string(), s.clone(), d.json())).collect();
    let k = services.e2ee().put_room_keys(req.user()?, &b.version, &keys).await?;
    Ok(RumaResponse(add_backup_keys_for_room::v3::Response::new(k.etag, k.count)))
}

/// PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
async fn put_session_key(
    services: AppState,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<RumaResponse<add_backup_keys_for_session::v3::Response>> {
    let b = &req.body;
    let keys = [(b.room_id.to_string(), b.session_id.clone(), b.session_data.json())];
    let k = services.e2ee().put_room_keys(req.user()?, &b.version, &keys).await?;
    Ok(RumaResponse(add_backup_keys_for_session::v3::Response::new(k.etag, k.count)))
}

/// GET /_matrix/client/v3/room_keys/keys
async fn get_keys(
    services: AppState,
    req: Ruma<get_backup_keys::v3::Request>,
) -> Result<RumaResponse<get_backup_keys::v3::Response>> {
    let mut rooms: BTreeMap<OwnedRoomId, RoomKeyBackup> = BTreeMap::new();
    for (room, session, data) in services.e2ee().room_keys(req.user()?, &req.body.version, None, None).await? {
        let Ok(room) = OwnedRoomId::try_from(room) else { continue };
        rooms.entry(room).or_insert_with(|| RoomKeyBackup::new(BTreeMap::new())).sessions.insert(session, data);
    }
    Ok(RumaResponse(get_backup_keys::v3::Response::new(rooms)))
}

/// GET /_matrix/client/v3/room_keys/keys/{roomId}
async fn get_room_keys(
    services: AppState,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<RumaResponse<get_backup_keys_for_room::v3::Response>> {
    let b = &req.body;
    let rows = services.e2ee().room_keys(req.user()?, &b.version, Some(b.room_id.as_str()), None).await?;
    let sessions = rows.into_iter().map(|(_, s, d)| (s, d)).collect();
    Ok(RumaResponse(get_backup_keys_for_room::v3::Response::new(sessions)))
}

/// GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
async fn get_session_key(
    services: AppState,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<RumaResponse<get_backup_keys_for_session::v3::Response>> {
    let b = &req.body;
    let rows =
        services.e2ee().room_keys(req.user()?, &b.version, Some(b.room_id.as_str()), Some(&b.session_id)).await?;
    let (_, _, data) = rows.into_iter().next().ok_or_else(|| Error::not_found("no key backed up for this session"))?;
    Ok(RumaResponse(get_backup_keys_for_session::v3::Response::new(data)))
}

/// DELETE /_matrix/client/v3/room_keys/keys
async fn delete_keys(
    services: AppState,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> Result<RumaResponse<delete_backup_keys::v3::Response>> {
    let k = services.e2ee().delete_room_keys(req.user()?, &req.body.version, None, None).await?;
    Ok(RumaResponse(delete_backup_keys::v3::Response::new(k.etag, k.count)))
}

/// DELETE /_matrix/client/v3/room_keys/keys/{roomId}
async fn delete_room_keys(
    services: AppState,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<RumaResponse<delete_backup_keys_for_room::v3::Response>> {
    let b = &req.body;
    let k = services.e2ee().delete_room_keys(req.user()?, &b.version, Some(b.room_id.as_str()), None).await?;
    Ok(RumaResponse(delete_backup_keys_for_room::v3::Response::new(k.etag, k.count)))
}

/// DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
async fn delete_session_key(
    services: AppState,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<RumaResponse<delete_backup_keys_for_session::v3::Response>> {
    let b = &req.body;
    let (room, session) = (Some(b.room_id.as_str()), Some(b.session_id.as_str()));
    let k = services.e2ee().delete_room_keys(req.user()?, &b.version, room, session).await?;
    Ok(RumaResponse(delete_backup_keys_for_session::v3::Response::new(k.etag, k.count)))
}
