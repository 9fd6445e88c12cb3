//! Events as clients see them: the client event format, redaction, `unsigned`, and
//! bundled aggregations of relations.

use std::collections::HashMap;

use ruma::{CanonicalJsonObject, UserId, canonical_json::RedactedBecause};
use serde_json::{Map, Value, json};

use super::version_rules;
use crate::{services::Services, storage::EventRow};
use kairan_core::{
    error::{Error, Result},
    time::now_ms,
};

/// Who reads an event, and how much to add to it.
#[derive(Debug, Clone, Copy)]
pub struct ClientEventOptions<'a> {
    pub viewer: &'a UserId,
    pub device_id: Option<&'a str>,
    /// Add `unsigned.m.relations` (edits, threads, references).
    pub bundle_relations: bool,
}

/// Fields of a PDU that clients do not see.
const FEDERATION_ONLY: [&str; 7] =
    ["auth_events", "prev_events", "depth", "hashes", "signatures", "origin", "prev_state"];

impl Services {
    /// The client format of one stored event.
    pub async fn client_event(&self, row: &EventRow, opts: ClientEventOptions<'_>) -> Result<Value> {
        let mut events = self.client_events(std::slice::from_ref(row), opts).await?;
        Ok(events.pop().unwrap_or(Value::Null))
    }

    /// The client format of stored events, in the order given.
    pub async fn client_events(&self, rows: &[EventRow], opts: ClientEventOptions<'_>) -> Result<Vec<Value>> {
        let relations = if opts.bundle_relations {
            let ids: Vec<(String, String)> = rows
                .iter()
                .filter(|r| r.redacted_by.is_none())
                .map(|r| (r.event_id.clone(), r.room_id.clone()))
                .collect();
            let mut by_target: HashMap<String, Vec<EventRow>> = HashMap::new();
            for rel in self.store.relations_of(&ids).await? {
                // What is bundled is read as the event itself would be: a reply after the
                // reader left, or one the room's history hides from them, is not shown.
                if !self.can_see_event(opts.viewer, &rel).await? {
                    continue;
                }
                if let Some(target) = self.pdu(&rel.event_id).await?.and_then(|p| p.relation()).map(|r| r.1) {
                    by_target.entry(target).or_default().push(rel);
                }
            }
            by_target
        } else {
            HashMap::new()
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut event = self.plain_client_event(row, opts).await?;
            if let Some(rels) = relations.get(&row.event_id) {
                let bundle = self.bundle(row, rels, opts).await?;
                if !bundle.is_empty() {
                    event["unsigned"]["m.relations"] = Value::Object(bundle);
                }
            }
            out.push(event);
        }
        Ok(out)
    }

    /// The client format without aggregations.
    async fn plain_client_event(&self, row: &EventRow, opts: ClientEventOptions<'_>) -> Result<Value> {
        let pdu = self.pdu(&row.event_id).await?.ok_or_else(|| Error::internal("event", "missing"))?;
        let mut json = pdu.json.clone();
        if let Some(redaction_id) = &row.redacted_by {
            let version = self.store.room_version(&row.room_id).await?.unwrap_or_default();
            if let (Some(rules), Some(redaction)) = (version_rules(&version), self.pdu(redaction_id).await?) {
                let because: CanonicalJsonObject = redaction.json.clone();
                json = ruma::canonical_json::redact(json, &rules.redaction, Some(RedactedBecause::from_json(because)))
                    .map_err(|e| Error::internal("redaction", e))?;
            }
        }
        let mut obj: Map<String, Value> = match serde_json::to_value(&json) {
            Ok(Value::Object(o)) => o,
            _ => Map::new(),
        };
        for key in FEDERATION_ONLY {
            obj.remove(key);
        }
        obj.insert("event_id".into(), row.event_id.clone().into());
        obj.insert("room_id".into(), row.room_id.clone().into());
        let mut unsigned = match obj.remove("unsigned") {
            Some(Value::Object(u)) => u,
            _ => Map::new(),
        };
        if let Some(Value::Object(because)) = unsigned.get_mut("redacted_because") {
            for key in FEDERATION_ONLY {
                because.remove(key);
            }
            because.insert("event_id".into(), row.redacted_by.clone().unwrap_or_default().into());
            because.insert("room_id".into(), row.room_id.clone().into());
        }
        let ts = obj.get("origin_server_ts").and_then(Value::as_i64).unwrap_or(0);
        unsigned.insert("age".into(), (now_ms() - ts).max(0).into());
        if pdu.sender == opts.viewer
            && let (Some(device), Some(txn_device), Some(txn_id)) = (opts.device_id, &row.txn_device, &row.txn_id)
            && device == txn_device
        {
            unsigned.insert("transaction_id".into(), txn_id.clone().into());
        }
        if let Some(replaced) = &row.replaces_state {
            unsigned.insert("replaces_state".into(), replaced.clone().into());
            if let Some(prev) = self.pdu(replaced).await? {
                unsigned.insert("prev_content".into(), prev.content_value());
                unsigned.insert("prev_sender".into(), prev.sender.as_str().into());
            }
        }
        // MSC4115 (spec v1.11): the reader's membership once the event is applied, so a
        // client can tell "sent before you joined" from a message it failed to decrypt.
        let membership = self.membership_at(row, opts.viewer).await?;
        unsigned.insert("membership".into(), membership.unwrap_or_else(|| "leave".to_owned()).into());
        obj.insert("unsigned".into(), Value::Object(unsigned));
        Ok(Value::Object(obj))
    }

    /// `unsigned.m.relations` for one event from the relations that point at it.
    async fn bundle(
        &self,
        target: &EventRow,
        rels: &[EventRow],
        opts: ClientEventOptions<'_>,
    ) -> Result<Map<String, Value>> {
        let target_pdu = self.pdu(&target.event_id).await?;
        let mut bundle = Map::new();
        let mut edit: Option<&EventRow> = None;
        let mut thread: Vec<&EventRow> = Vec::new();
        let mut references = Vec::new();
        for rel in rels {
            let Some(pdu) = self.pdu(&rel.event_id).await? else { continue };
            match pdu.relation().map(|r| r.0).as_deref() {
                // Only the original sender may edit; the newest edit wins.
                Some("m.replace") if target_pdu.as_ref().is_some_and(|t| t.sender == pdu.sender) => edit = Some(rel),
                Some("m.thread") => thread.push(rel),
                Some("m.reference") => references.push(json!({ "event_id": rel.event_id })),
                _ => {}
            }
        }
        if let Some(edit) = edit {
            bundle.insert("m.replace".into(), self.plain_client_event(edit, opts).await?);
        }
        if let Some(latest) = thread.last() {
            let mut participated = false;
            for r in &thread {
                if self.pdu(&r.event_id).await?.is_some_and(|p| p.sender == opts.viewer) {
                    participated = true;
                }
            }
            if target_pdu.as_ref().is_some_and(|t| t.sender == opts.viewer) {
                participated = true;
            }
            bundle.insert(
                "m.thread".into(),
                json!({
                    "latest_event": self.plain_client_event(latest, opts).await?,
                    "count": thread.len(),
                    "current_user_participated": participated,
                }),
            );
        }
        if !references.is_empty() {
            bundle.insert("m.reference".into(), json!({ "chunk": references }));
        }
        Ok(bundle)
    }

    /// The client format of the state events given by ID.
    pub async fn client_state_events(
        &self,
        ids: impl IntoIterator<Item = &String>,
        opts: ClientEventOptions<'_>,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(row) = self.store.event(id).await? {
                out.push(self.plain_client_event(&row, opts).await?);
            }
        }
        Ok(out)
    }
}
