//! What other servers send: the checks of every request (`x_matrix`), and transactions
//! (`/send/{txnId}`): PDUs into rooms, EDUs to their services.

mod x_matrix;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{OwnedServerName, ServerName, api::federation::transactions::send_transaction_message};
use serde_json::{Value, json};

use crate::{
    rooms::{FetchBudget, Ingested},
    services::Services,
};
use kairan_core::{
    error::{Error, Result},
    time::now_ms,
};

/// Transactions from other servers being processed now: a retry of one waits for the
/// first attempt to finish (and then finds it recorded) instead of running beside it.
#[derive(Default)]
pub struct InboundTransactions {
    running: Mutex<HashMap<(OwnedServerName, String), TxnLock>>,
}

/// Held while one inbound transaction is checked, processed and recorded.
type TxnLock = Arc<tokio::sync::Mutex<()>>;

impl InboundTransactions {
    /// The lock of one transaction; hold it while checking, processing and recording it.
    pub fn lock(&self, origin: &ServerName, txn_id: &str) -> TxnLock {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // Entries nobody holds any more are dropped as new ones come.
        running.retain(|_, m| Arc::strong_count(m) > 1);
        running.entry((origin.to_owned(), txn_id.to_owned())).or_default().clone()
    }
}

/// An inbound transaction taking this long is logged as a warning.
const SLOW_TRANSACTION: Duration = Duration::from_secs(5);

impl Services {
    /// Takes in a transaction from `origin` and answers with each PDU's result. A PDU that
    /// fails does not fail the transaction (the sender would only resend it); one seen
    /// before is acknowledged again without being processed twice.
    ///
    /// The work runs on a task of its own. A sender that stops waiting (its timeout) closes
    /// the connection, and the request's future would be dropped half-way: events stored,
    /// the transaction not recorded as received, the room's lock let go before the last
    /// commit ended — so the retry redid all of it, and raced that commit into storing an
    /// event twice. On its own task the work finishes, and the retry, waiting for it on
    /// the transaction's lock, is answered at once.
    pub async fn receive_transaction(
        self: &Arc<Self>,
        origin: &ServerName,
        txn: send_transaction_message::v1::Request,
    ) -> Result<Value> {
        if txn.origin != origin {
            return Err(Error::forbidden(format!(
                "transaction claims origin {} but was signed by {origin}",
                txn.origin
            )));
        }
        if txn.pdus.len() > 50 || txn.edus.len() > 100 {
            return Err(Error::bad_json("a transaction carries at most 50 PDUs and 100 EDUs"));
        }
        // The sender is up: whatever this server has queued for it goes now.
        self.senders.server_is_up(origin);
        let services = self.clone();
        let origin = origin.to_owned();
        tokio::spawn(async move { services.process_transaction(&origin, &txn).await })
            .await
            .map_err(|e| Error::internal("inbound transaction", e))?
    }

    async fn process_transaction(
        &self,
        origin: &ServerName,
        txn: &send_transaction_message::v1::Request,
    ) -> Result<Value> {
        let running = self.inbound_txns.lock(origin, txn.transaction_id.as_str());
        let _running = running.lock().await;
        if self.store.received_txn(origin.as_str(), txn.transaction_id.as_str()).await? {
            return Ok(json!({ "pdus": {} }));
        }
        let started = std::time::Instant::now();
        let mut results = BTreeMap::new();
        // Whatever the transaction's PDUs make this server fetch comes out of one budget.
        let budget = FetchBudget::for_transaction();
        for pdu in &txn.pdus {
            match self.ingest_pdu(origin, pdu, &budget).await {
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
        for edu in &txn.edus {
            let Ok(edu) = edu.deserialize_as_unchecked::<Value>() else { continue };
            if let Err(e) = self.handle_edu(origin, &edu).await {
                tracing::info!(%origin, error = %e.message, "dropped an EDU");
            }
        }
        self.store.record_received_txn(origin.as_str(), txn.transaction_id.as_str(), now_ms()).await?;
        // The sender waits for this answer before it sends the room anything else: a slow one
        // holds up the whole room between the two servers, so the operator must see it.
        let elapsed = started.elapsed();
        if elapsed >= SLOW_TRANSACTION {
            tracing::warn!(%origin, pdus = txn.pdus.len(), edus = txn.edus.len(),
                elapsed_ms = elapsed.as_millis() as u64, "slow inbound transaction");
        }
        Ok(json!({ "pdus": results }))
    }
}
