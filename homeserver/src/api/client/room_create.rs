//! POST /createRoom

use axum::{Json, Router};
use ruma::api::client::room::{Visibility, create_room};
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    rooms::{CreateRoom, EventTemplate},
    services::AppState,
};
use kairan_core::error::{Error, Result};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.ruma(create_room)
}

/// POST /_matrix/client/v3/createRoom
async fn create_room(services: AppState, req: Ruma<create_room::v3::Request>) -> Result<Json<Value>> {
    let user = req.user()?.to_owned();
    let body = req.body;
    let to_map = |raw: Option<&serde_json::value::RawValue>| -> Result<serde_json::Map<String, Value>> {
        match raw {
            None => Ok(Default::default()),
            Some(r) => serde_json::from_str(r.get()).map_err(|e| Error::bad_json(format!("{e}"))),
        }
    };
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let v: Value =
            serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(format!("initial_state: {e}")))?;
        let kind =
            v.get("type").and_then(Value::as_str).ok_or_else(|| Error::bad_json("initial_state event without type"))?;
        let key = v.get("state_key").and_then(Value::as_str).unwrap_or("");
        initial_state.push(EventTemplate::state(kind, key, v.get("content").cloned().unwrap_or_else(|| json!({}))));
    }
    let request = CreateRoom {
        room_version: body.room_version.map(|v| v.to_string()),
        preset: body.preset.map(|p| p.to_string()),
        public: body.visibility == Visibility::Public,
        name: body.name,
        topic: body.topic,
        alias_localpart: body.room_alias_name,
        invite: body.invite,
        is_direct: body.is_direct,
        creation_content: to_map(body.creation_content.as_ref().map(|c| c.json()))?,
        initial_state,
        power_level_override: to_map(body.power_level_content_override.as_ref().map(|c| c.json()))?,
    };
    let room_id = services.create_room(&user, request).await?;
    Ok(Json(json!({ "room_id": room_id })))
}
