//! Reading a room: `/messages` forwards from the room's cursor to the end, every event
//! archived exactly as received.

use anyhow::{Context as _, bail};
use kairan_types::room_policy::RoomPolicy;
use serde::Deserialize;
use serde_json::{Value, value::RawValue};

use super::{
    Daemon,
    http::enc,
    inspect::{attachment_source, content_notes, lenient},
};
use crate::{
    archive::AppendTx,
    policy::{is_policy_event, is_policy_sender, read_policy, stored_policy},
    record::{NewRecord, kind, sha256_hex},
    retention::{Retention, now_ms},
};

/// Events per `/messages` page.
const PAGE: u32 = 200;

/// One `/messages` page, events kept as the exact bytes received.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    chunk: Vec<Box<RawValue>>,
    #[serde(default)]
    end: Option<String>,
}

impl Daemon {
    /// Reads the room forwards from its cursor to the end, archiving every event.
    ///
    /// The cursor is kept in the archive database and moved in the same transaction as the
    /// records it covers. So a crash, `kill -9` or network loss at any point loses nothing (the
    /// cursor has not moved past what is not committed) and duplicates nothing (every event
    /// has a unique `event:<id>` key). Attachments and decryption are queued in that same
    /// transaction and worked off afterwards, with retries.
    pub(super) async fn catch_up(&self, room_id: &str) -> anyhow::Result<()> {
        let row = self.archive.room(room_id).await?.context("unknown room")?;
        let mut policy = stored_policy(row.policy.as_deref());
        let mut cursor = row.cursor;
        loop {
            let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=f&limit={PAGE}", enc(room_id));
            if let Some(from) = &cursor {
                path.push_str(&format!("&from={}", enc(from)));
            }
            // A page that finds the end holds everything the server had when it was asked for.
            let asked = now_ms();
            let body = self.get_bytes(&path).await?;
            let page: Page = match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => {
                    // Keep what could not be read, then stop this room for now.
                    let mut tx = self.archive.begin_append().await?;
                    tx.append(
                        &self.key,
                        NewRecord {
                            kind: kind::NOTE.into(),
                            dedup_key: Some(format!("page:{}", sha256_hex(&body))),
                            room_id: Some(room_id.to_owned()),
                            payload: body.to_vec(),
                            note: Some(format!("a /messages page could not be parsed ({e}); kept as received")),
                            ..Default::default()
                        },
                    )
                    .await?;
                    self.commit(tx).await?;
                    bail!("unparseable /messages page: {e}");
                }
            };
            let mut tx = self.archive.begin_append().await?;
            let mut changed_policy = None;
            for raw in &page.chunk {
                if let Some(p) = self.archive_event(&mut tx, room_id, &policy, raw).await? {
                    policy = p.0.clone();
                    changed_policy = Some(p);
                }
            }
            let next = page.end.clone().or(cursor.clone());
            tx.set_cursor(room_id, next.as_deref()).await?;
            self.commit(tx).await?;
            if let Some((p, raw)) = changed_policy {
                self.archive.upsert_room(room_id, Some(&raw), p.official || row.official).await?;
            }
            if page.end.is_none() || page.end == cursor {
                self.metrics.read_through(room_id, asked);
                break;
            }
            cursor = page.end;
        }
        Ok(())
    }

    /// Archives one event as received; returns a new policy if the event is one.
    async fn archive_event(
        &self,
        tx: &mut AppendTx,
        room_id: &str,
        policy: &RoomPolicy,
        raw: &RawValue,
    ) -> anyhow::Result<Option<(RoomPolicy, String)>> {
        let bytes = raw.get().as_bytes().to_vec();
        let mut notes = Vec::new();
        let value: Value = match serde_json::from_str(raw.get()) {
            Ok(v) => v,
            Err(e) => {
                notes.push(format!("not decodable as JSON text ({e}); kept as received"));
                lenient(raw.get())
            }
        };
        let event_id = value.get("event_id").and_then(Value::as_str).map(str::to_owned);
        let event_type = value.get("type").and_then(Value::as_str).map(str::to_owned);
        let sender = value.get("sender").and_then(Value::as_str).map(str::to_owned);
        let origin_ts = value.get("origin_server_ts").and_then(Value::as_i64);
        if value.is_object() {
            if event_id.is_none() {
                notes.push("no event_id".into());
            }
            if event_type.is_none() {
                notes.push("no type, or not a string".into());
            }
            if sender.is_none() {
                notes.push("no sender, or not a string".into());
            }
            if origin_ts.is_none() {
                notes.push("origin_server_ts missing or not an integer".into());
            }
            notes.extend(content_notes(&value));
            if value["unsigned"]["redacted_because"].is_object() {
                notes.push("served already redacted: the original content never reached the bridge".into());
            }
        } else if !value.is_null() {
            notes.push("not a JSON object".into());
        }
        let dedup = match &event_id {
            Some(id) => format!("event:{id}"),
            None => format!("raw:{}:{}", room_id, sha256_hex(&bytes)),
        };
        // Retention counts from when the record reached the archive, not from the
        // `origin_server_ts` the sending server chose: a server that dates its events in the
        // past must not make them expire early. (A genuine event is always sent before it
        // is archived, so this only ever keeps a record longer.)
        let retention = Retention::for_record(policy, now_ms());
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        if let Some(n) = &note {
            tracing::warn!(room = room_id, event = ?event_id, note = %n, "archived an odd event with a note");
        }
        let seq = tx
            .append(
                &self.key,
                NewRecord {
                    kind: kind::EVENT.into(),
                    dedup_key: Some(dedup),
                    room_id: Some(room_id.to_owned()),
                    event_id: event_id.clone(),
                    event_type: event_type.clone(),
                    sender,
                    origin_ts,
                    retention: retention.class,
                    expires: retention.expires,
                    on_expiry: retention.on_expiry,
                    payload: bytes,
                    note,
                },
            )
            .await?;
        let (Some(seq), Some(event_id)) = (seq, event_id) else { return Ok(None) };
        if event_type.as_deref() == Some("m.room.encrypted") {
            tx.add_pending(&format!("cleartext:{event_id}"), "decrypt", room_id, &event_id, seq).await?;
        } else if attachment_source(&value["content"]).is_some() {
            tx.add_pending(&format!("attachment:{event_id}"), "attachment", room_id, &event_id, seq).await?;
        }
        if is_policy_event(&value)
            && is_policy_sender(&self.policy_servers, value["sender"].as_str().unwrap_or_default())
        {
            return Ok(Some(read_policy(&value)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_with_a_lone_surrogate_still_parses() {
        let body =
            br#"{"chunk":[{"event_id":"$a","type":"m.room.message","content":{"body":"\udc80.txt"}}],"end":"s1"}"#;
        let page: Page = serde_json::from_slice(body).expect("the page parses");
        assert_eq!(page.chunk.len(), 1);
        assert!(page.chunk[0].get().contains(r"\udc80"));
        // The event as a whole does not decode; its identity still does.
        let raw = page.chunk[0].get();
        assert!(serde_json::from_str::<Value>(raw).is_err());
        let v = lenient(raw);
        assert_eq!(v["event_id"], "$a");
        assert_eq!(v["type"], "m.room.message");
        assert!(v.get("content").is_none());
    }
}
