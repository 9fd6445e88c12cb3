//! Room state and members.

use axum::{Json, Router};
use ruma::api::client::{
    membership::{get_member_events, joined_members},
    state::{get_state_event_for_key, get_state_events, send_state_event},
};
use serde_json::{Map, Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    rooms::{ClientEventOptions, EventTemplate},
    services::AppState,
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(all_state).ruma(state_for_key).ruma(put_state).ruma(members).ruma(joined)
}

/// GET /_matrix/client/v3/rooms/{roomId}/state
async fn all_state(services: AppState, req: Ruma<get_state_events::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let (map, _) = services.readable_state(&req.body.room_id, user).await?;
    let opts = ClientEventOptions { viewer: user, device_id: None, bundle_relations: false };
    Ok(Json(Value::Array(services.client_state_events(map.values(), opts).await?)))
}

/// GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
async fn state_for_key(services: AppState, req: Ruma<get_state_event_for_key::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let (map, _) = services.readable_state(&req.body.room_id, user).await?;
    let key = (req.body.event_type.to_string(), req.body.state_key.clone());
    let id = map.get(&key).ok_or_else(|| Error::not_found(format!("no {} state with key {:?}", key.0, key.1)))?;
    let pdu = services.pdu(id).await?.ok_or_else(|| Error::not_found("state event missing"))?;
    let row = services.store.event(id).await?.ok_or_else(|| Error::not_found("state event missing"))?;
    if req.body.format == get_state_event_for_key::v3::StateEventFormat::Event {
        let opts = ClientEventOptions { viewer: user, device_id: None, bundle_relations: false };
        return Ok(Json(services.client_event(&row, opts).await?));
    }
    if row.redacted_by.is_some() {
        let opts = ClientEventOptions { viewer: user, device_id: None, bundle_relations: false };
        return Ok(Json(services.client_event(&row, opts).await?["content"].clone()));
    }
    Ok(Json(pdu.content_value()))
}

/// PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
async fn put_state(services: AppState, req: Ruma<send_state_event::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let content: Value =
        serde_json::from_str(req.body.body.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(Error::bad_json("state event content must be an object"));
    }
    services.require_joined(&req.body.room_id, user).await?;
    let kind = req.body.event_type.to_string();
    if kind == "m.room.member" {
        return Err(Error::forbidden(
            "use the membership endpoints (join, invite, leave, kick, ban) to change membership",
        ));
    }
    let template = EventTemplate::state(kind, req.body.state_key.clone(), content);
    let pdu = services.append_event(&req.body.room_id, user, template, None).await?;
    Ok(Json(json!({ "event_id": pdu.event_id })))
}

/// GET /_matrix/client/v3/rooms/{roomId}/members
async fn members(services: AppState, req: Ruma<get_member_events::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    let (map, _) = services.readable_state(&req.body.room_id, user).await?;
    let opts = ClientEventOptions { viewer: user, device_id: None, bundle_relations: false };
    let ids: Vec<&String> = map.iter().filter(|((t, _), _)| t == "m.room.member").map(|(_, id)| id).collect();
    let mut chunk = services.client_state_events(ids, opts).await?;
    let b = &req.body;
    chunk.retain(|e| {
        let m = e["content"]["membership"].as_str().unwrap_or("");
        b.membership.as_ref().is_none_or(|want| want.as_str() == m)
            && b.not_membership.as_ref().is_none_or(|not| not.as_str() != m)
    });
    Ok(Json(json!({ "chunk": chunk })))
}

/// GET /_matrix/client/v3/rooms/{roomId}/joined_members
async fn joined(services: AppState, req: Ruma<joined_members::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?;
    services.require_joined_or_world_readable(&req.body.room_id, user).await?;
    let mut joined = Map::new();
    for (member, membership, event_id) in services.store.members(req.body.room_id.as_str()).await? {
        if membership != "join" {
            continue;
        }
        let content = services.pdu(&event_id).await?.map(|p| p.content_value()).unwrap_or_default();
        joined.insert(
            member,
            json!({ "display_name": content.get("displayname"), "avatar_url": content.get("avatar_url") }),
        );
    }
    Ok(Json(json!({ "joined": joined })))
}
