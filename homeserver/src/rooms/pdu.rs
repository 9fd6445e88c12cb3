//! A PDU as kairan holds it: the signed canonical JSON, and the fields state resolution
//! and authorisation read, parsed once.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UInt, UserId, events::TimelineEventType,
};
use serde::Deserialize;
use serde_json::value::RawValue;

/// One event of a room's DAG. Immutable once built; shared as `Arc<Pdu>`.
#[derive(Debug)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    /// Whether `room_id` was a field of the event (not so for a v12 create event).
    pub has_room_id: bool,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: u64,
    /// The canonical JSON as signed (without `event_id`, as on the wire for v3+ rooms).
    pub json: CanonicalJsonObject,
}

#[derive(Deserialize)]
struct Fields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    depth: UInt,
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parses a PDU whose event ID is already known. `room_id` is used when the event
    /// carries none (a v12 create event, whose room ID derives from its event ID).
    pub fn from_json(event_id: OwnedEventId, room_id: &RoomId, json: CanonicalJsonObject) -> Result<Self, String> {
        let value = serde_json::to_value(&json).map_err(|e| e.to_string())?;
        let f: Fields = serde_json::from_value(value).map_err(|e| format!("malformed event: {e}"))?;
        let redacts = match f.redacts {
            Some(r) => Some(r),
            None if f.kind == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<RedactsInContent>(f.content.get()).ok().and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Self {
            event_id,
            has_room_id: f.room_id.is_some(),
            room_id: f.room_id.unwrap_or_else(|| room_id.to_owned()),
            sender: f.sender,
            origin_server_ts: f.origin_server_ts,
            kind: f.kind,
            content: f.content,
            state_key: f.state_key,
            prev_events: f.prev_events,
            auth_events: f.auth_events,
            redacts,
            depth: f.depth.into(),
            json,
        })
    }

    /// Parses a stored PDU.
    pub fn from_stored(event_id: &str, room_id: &str, pdu_json: &str) -> Result<Arc<Self>, String> {
        let json: CanonicalJsonObject = serde_json::from_str(pdu_json).map_err(|e| e.to_string())?;
        let event_id = EventId::parse(event_id).map_err(|e| e.to_string())?;
        let room_id = RoomId::parse(room_id).map_err(|e| e.to_string())?;
        Self::from_json(event_id, &room_id, json).map(Arc::new)
    }

    /// `content` as a JSON value.
    pub fn content_value(&self) -> serde_json::Value {
        serde_json::from_str(self.content.get()).unwrap_or_default()
    }

    /// The `m.relates_to` of the content: `(rel_type, event_id)`.
    pub fn relation(&self) -> Option<(String, String)> {
        let c = self.content_value();
        let rel = c.get("m.relates_to")?;
        let rel_type = rel.get("rel_type")?.as_str()?;
        let target = rel.get("event_id")?.as_str()?;
        Some((rel_type.to_owned(), target.to_owned()))
    }

    /// The JSON of the event with `event_id` (and `room_id`, for v12 create events) added.
    pub fn with_ids(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut obj = match serde_json::to_value(&self.json) {
            Ok(serde_json::Value::Object(o)) => o,
            _ => serde_json::Map::new(),
        };
        obj.insert("event_id".into(), self.event_id.as_str().into());
        obj.insert("room_id".into(), self.room_id.as_str().into());
        obj
    }

    pub fn json_string(&self) -> String {
        CanonicalJsonValue::Object(self.json.clone()).to_string()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.has_room_id.then_some(&*self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}
