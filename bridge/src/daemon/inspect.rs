//! What the daemon reads out of an event without asking anyone: where its attachment is,
//! what can be decoded of a damaged one, and notes about odd content.

use matrix_sdk::ruma::events::room::MediaSource;
use serde_json::{Value, value::RawValue};

/// A body longer than this is archived whole, with a note.
const LARGE_BODY: usize = 16 * 1024;

/// Where an event's attachment is: `content.file` (encrypted) or `content.url`.
pub(super) fn attachment_source(content: &Value) -> Option<MediaSource> {
    if let Some(file) = content.get("file")
        && let Ok(f) = serde_json::from_value(file.clone())
    {
        return Some(MediaSource::Encrypted(Box::new(f)));
    }
    let url = content.get("url")?.as_str()?;
    if !url.starts_with("mxc://") {
        return None;
    }
    Some(MediaSource::Plain(url.into()))
}

/// What can be read of an event that does not decode as a whole (say, a lone UTF-16
/// surrogate in a file name: valid JSON, but not Unicode): every top-level field that
/// decodes on its own, so the event ID, type and sender are still known.
pub(super) fn lenient(text: &str) -> Value {
    let Ok(fields) = serde_json::from_str::<std::collections::BTreeMap<String, Box<RawValue>>>(text) else {
        return Value::Null;
    };
    let object: serde_json::Map<String, Value> =
        fields.into_iter().filter_map(|(k, v)| serde_json::from_str(v.get()).ok().map(|v| (k, v))).collect();
    Value::Object(object)
}

/// Notes about odd content: wrong types, huge bodies, strange file names.
pub(super) fn content_notes(event: &Value) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(content) = event.get("content") else {
        if event.is_object() {
            notes.push("no content".into());
        }
        return notes;
    };
    if !content.is_object() {
        notes.push("content is not an object".into());
        return notes;
    }
    if event["type"] == "m.room.message" {
        match content.get("body") {
            Some(Value::String(b)) if b.len() > LARGE_BODY => notes.push(format!("large body ({} bytes)", b.len())),
            Some(Value::String(_)) => {}
            Some(other) => notes.push(format!("body is not a string ({})", type_name(other))),
            None if content.as_object().is_some_and(|o| o.is_empty()) => {}
            None => notes.push("no body".into()),
        }
        if let Some(m) = content.get("msgtype")
            && !m.is_string()
        {
            notes.push(format!("msgtype is not a string ({})", type_name(m)));
        }
    }
    if let Some(name) = content.get("filename").or_else(|| content.get("body")).and_then(Value::as_str)
        && name.chars().any(|c| c.is_control() || c == '\u{FFFD}')
    {
        notes.push("file name or body holds control or replacement characters".into());
    }
    notes
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
