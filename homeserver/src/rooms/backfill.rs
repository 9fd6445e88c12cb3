//! Backfill: a room's history from before this server joined, fetched from the servers
//! in it when a client pages back past the start of what this server holds.
//!
//! Backfilled events take positions below every other event's (counting down from 0), so
//! they sort before the join in `/messages` and never appear as news in `/sync`. They are
//! shown with the state this server learnt when it joined (the state before its earliest
//! event), which is what history visibility needs: a user is not a member of the room in
//! it, so "shared" history is visible and "joined"/"invited" history is not.

use std::cmp::Reverse;

use ruma::{CanonicalJsonObject, OwnedEventId, RoomId, UInt, api::federation::backfill::get_backfill};
use serde_json::Value;

use crate::{services::Services, storage::NewEvent};
use kairan_core::error::Result;

/// Events asked for per backfill request.
const BACKFILL_BATCH: u32 = 100;

impl Services {
    /// Fetches older history of a room when this server's timeline begins after the
    /// room does. Returns how many events were added (0: nothing older exists or no
    /// server could give it).
    pub async fn backfill(&self, room_id: &RoomId) -> Result<usize> {
        let Some((earliest, group)) = self.store.earliest_event(room_id.as_str()).await? else { return Ok(0) };
        let Some(first) = self.pdu(&earliest).await? else { return Ok(0) };
        let mut missing: Vec<OwnedEventId> = Vec::new();
        for prev in &first.prev_events {
            if !self.store.in_timeline(prev.as_str()).await? {
                missing.push(prev.clone());
            }
        }
        if missing.is_empty() {
            return Ok(0);
        }
        let rules = self.rules_of(room_id).await?;
        // Backfilled redactions are judged by the power levels this server knows for the
        // history (those at its join): the state before each old event is not held.
        let backfill_state = self.state_at_group(group).await?;
        let budget = super::FetchBudget::for_transaction();
        for server in self.room_servers(room_id.as_str()).await? {
            let request =
                get_backfill::v1::Request::new(room_id.to_owned(), missing.clone(), UInt::from(BACKFILL_BATCH));
            let response = match self.send_federation_request(&server, request).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(%server, %room_id, error = %e.message, "backfill failed");
                    continue;
                }
            };
            let mut events = Vec::new();
            // No more than asked for is read, whatever the answer holds.
            for raw in response.pdus.iter().take(BACKFILL_BATCH as usize) {
                let Ok(obj) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else { continue };
                match self.verify_pdu_object(obj, room_id, &rules).await {
                    Ok(p) if p.room_id == room_id => events.push(p),
                    Ok(_) => {}
                    Err(e) => tracing::info!(error = %e.message, "dropping a backfilled event that fails verification"),
                }
            }
            // Newest first: positions count down, so the oldest ends lowest.
            events.sort_by_key(|p| (Reverse(p.depth), Reverse(p.event_id.clone())));
            // What the events need is fetched before the room is locked.
            for pdu in &events {
                budget.next_pdu();
                self.fetch_auth_events(&server, &rules, pdu, &budget).await?;
            }
            let lock = self.rooms.lock(room_id);
            let _guard = lock.lock().await;
            let mut added = 0;
            for pdu in events {
                if self.store.in_timeline(pdu.event_id.as_str()).await?
                    || self.store.is_rejected(pdu.event_id.as_str()).await?
                {
                    continue;
                }
                if let Some((reason, _)) = self.check_auth_events(&rules, &pdu).await? {
                    tracing::info!(event_id = %pdu.event_id, %reason, "refusing a backfilled event");
                    continue;
                }
                let content = pdu.content_value();
                let relation = pdu.relation();
                let mut new = NewEvent {
                    event_id: pdu.event_id.to_string(),
                    room_id: room_id.to_string(),
                    sender: pdu.sender.to_string(),
                    event_type: pdu.kind.to_string(),
                    state_key: pdu.state_key.clone(),
                    depth: pdu.depth as i64,
                    origin_server_ts: u64::from(pdu.origin_server_ts.get()) as i64,
                    pdu_json: pdu.json_string(),
                    prev_events: pdu.prev_events.iter().map(|e| e.to_string()).collect(),
                    state_group_before: group,
                    state_delta: crate::storage::StateDelta::Unchanged,
                    replaces_state: None,
                    membership: content.get("membership").and_then(Value::as_str).map(str::to_owned),
                    rel_type: relation.as_ref().map(|r| r.0.clone()),
                    relates_to: relation.map(|r| r.1),
                    redacts: None,
                    withheld_redaction: None,
                    redacted_by: None,
                    txn: None,
                    txn_key: None,
                    push_actions: Vec::new(),
                    search_text: super::append::search_text(&pdu.kind.to_string(), &content),
                    destinations: Vec::new(),
                    received: true,
                };
                self.judge_redactions(&pdu, &backfill_state, &mut new).await?;
                if self.store.persist_backfilled(&new).await? {
                    self.rooms.cache_pdu(pdu.clone());
                    added += 1;
                }
            }
            tracing::info!(%room_id, %server, added, "backfilled history");
            return Ok(added);
        }
        Ok(0)
    }
}
