//! Incoming transactions (`/send/{txnId}`): PDUs into rooms, EDUs to their services.

use std::collections::BTreeMap;

use axum::{Json, Router};
use ruma::api::federation::transactions::send_transaction_message;
use serde_json::{Value, json};

use crate::{
    api::{Ruma, ruma_io::RouterExt},
    error::{Error, Result},
    rooms::{FetchBudget, Ingested},
    services::{AppState, now_ms},
};

/// An inbound transaction taking this long is logged as a warning.
const SLOW_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(5);

pub fn routes() -> Router<AppState> {
    Router::new().ruma(send_transaction)
}

/// PUT /_matrix/federation/v1/send/{txnId}
///
/// Each PDU gets its own result; a PDU that fails does not fail the transaction (the
/// sender would only resend it). A transaction seen before is acknowledged again
/// without being processed twice.
async fn send_transaction(state: AppState, req: Ruma<send_transaction_message::v1::Request>) -> Result<Json<Value>> {
    let origin = req.origin()?;
    let b = &req.body;
    if b.origin != origin {
        return Err(Error::forbidden(format!("transaction claims origin {} but was signed by {origin}", b.origin)));
    }
    if b.pdus.len() > 50 || b.edus.len() > 100 {
        return Err(Error::bad_json("a transaction carries at most 50 PDUs and 100 EDUs"));
    }
    // The sender is up: whatever this server has queued for it goes now.
    state.senders.server_is_up(origin);
    let running = state.inbound_txns.lock(origin, b.transaction_id.as_str());
    let _running = running.lock().await;
    if state.store.received_txn(origin.as_str(), b.transaction_id.as_str()).await? {
        return Ok(Json(json!({ "pdus": {} })));
    }
    let started = std::time::Instant::now();
    let mut results = BTreeMap::new();
    // Whatever the transaction's PDUs make this server fetch comes out of one budget.
    let budget = FetchBudget::for_transaction();
    for pdu in &b.pdus {
        match state.ingest_pdu(origin, pdu, &budget).await {
            Ok((event_id, outcome)) => {
                let result = match outcome {
                    Ingested::Accepted(_) | Ingested::AlreadyKnown | Ingested::SoftFailed(_) => json!({}),
                    Ingested::Rejected(reason) => json!({ "error": reason }),
                };
                results.insert(event_id.to_string(), result);
            }
            Err(e) => tracing::info!(%origin, error = %e.message, "dropped a PDU of a transaction"),
        }
    }
    for edu in &b.edus {
        let Ok(edu) = edu.deserialize_as_unchecked::<Value>() else { continue };
        if let Err(e) = state.handle_edu(origin, &edu).await {
            tracing::info!(%origin, error = %e.message, "dropped an EDU");
        }
    }
    state.store.record_received_txn(origin.as_str(), b.transaction_id.as_str(), now_ms()).await?;
    // The sender waits for this answer before it sends the room anything else: a slow one
    // holds up the whole room between the two servers, so the operator must see it.
    let elapsed = started.elapsed();
    if elapsed >= SLOW_TRANSACTION {
        tracing::warn!(%origin, pdus = b.pdus.len(), edus = b.edus.len(), elapsed_ms = elapsed.as_millis() as u64,
            "slow inbound transaction");
    }
    Ok(Json(json!({ "pdus": results })))
}
