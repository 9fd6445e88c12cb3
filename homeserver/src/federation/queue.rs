//! The durable per-destination queue of PDUs and EDUs this server sends to others.
//!
//! Rows are written in the same transaction as the event they carry, so an acknowledged
//! event is never lost to a crash; one sender task per destination drains them in order,
//! in transactions of at most 50 PDUs and 100 EDUs, backing off while a destination is
//! down. A request from the destination (it is back) ends the backoff at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, ServerName,
    api::federation::transactions::send_transaction_message, serde::Raw,
};
use serde_json::{Value, value::RawValue};
use tokio::sync::Notify;

use crate::{
    services::Services,
    storage::{QUEUE_EDU, QUEUE_PDU},
};
use kairan_core::error::{Error, Result};

/// PDUs and EDUs per transaction, as the spec allows at most.
const MAX_PDUS: i64 = 50;
const MAX_EDUS: i64 = 100;

/// The running sender task of each destination.
#[derive(Default)]
pub struct Senders {
    services: OnceLock<Weak<Services>>,
    destinations: Mutex<HashMap<OwnedServerName, Arc<Destination>>>,
}

/// What wakes one destination's sender.
#[derive(Default)]
struct Destination {
    /// Something new was queued.
    queued: Notify,
    /// The destination showed it is up: retry now.
    back: Notify,
}

impl Senders {
    /// Gives the senders their handle on the services (they outlive any request).
    pub fn init(&self, services: Weak<Services>) {
        let _ = self.services.set(services);
    }

    /// Wakes (starting if needed) the sender of each destination.
    pub fn wake(&self, destinations: &[OwnedServerName]) {
        for d in destinations {
            self.destination(d).queued.notify_one();
        }
    }

    /// A request arrived from `server`: whatever waits for it is sent now.
    pub fn server_is_up(&self, server: &ServerName) {
        let known = self.destinations.lock().unwrap_or_else(|e| e.into_inner()).get(server).cloned();
        if let Some(d) = known {
            d.back.notify_one();
        }
    }

    fn destination(&self, server: &ServerName) -> Arc<Destination> {
        let mut map = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = map.get(server) {
            return d.clone();
        }
        let d = Arc::new(Destination::default());
        map.insert(server.to_owned(), d.clone());
        if let Some(services) = self.services.get().cloned() {
            tokio::spawn(run_sender(services, server.to_owned(), d.clone()));
        }
        d
    }
}

impl Services {
    /// Queues an EDU (`{"edu_type": .., "content": ..}`) for each destination and wakes
    /// their senders. Destinations the allowlist refuses are skipped.
    pub async fn queue_edu(&self, destinations: &[OwnedServerName], edu: Value) -> Result<()> {
        let allowed = self.allowed_destinations(destinations.iter().cloned());
        if allowed.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = allowed.iter().map(|d| d.to_string()).collect();
        self.store.queue(&names, QUEUE_EDU, &edu.to_string()).await?;
        self.senders.wake(&allowed);
        Ok(())
    }

    /// Queues stored PDUs again, for destinations that did not get them when they were
    /// stored (a server that joined meanwhile), and wakes their senders.
    pub async fn queue_pdus(&self, destinations: &[OwnedServerName], pdus: &[String]) -> Result<()> {
        let allowed = self.allowed_destinations(destinations.iter().cloned());
        if allowed.is_empty() || pdus.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = allowed.iter().map(|d| d.to_string()).collect();
        for pdu in pdus {
            self.store.queue(&names, QUEUE_PDU, pdu).await?;
        }
        self.senders.wake(&allowed);
        Ok(())
    }

    /// The servers (other than this one) with a member joined to a room now.
    pub async fn room_servers(&self, room_id: &str) -> Result<Vec<OwnedServerName>> {
        let mut servers: Vec<OwnedServerName> = self
            .store
            .joined_members(room_id)
            .await?
            .iter()
            .filter_map(|u| ruma::UserId::parse(u.as_str()).ok())
            .map(|u| u.server_name().to_owned())
            .filter(|s| s != self.server_name())
            .collect();
        servers.sort();
        servers.dedup();
        Ok(servers)
    }

    /// The destinations this server may send to, without itself.
    pub fn allowed_destinations(&self, servers: impl IntoIterator<Item = OwnedServerName>) -> Vec<OwnedServerName> {
        let mut out: Vec<OwnedServerName> =
            servers.into_iter().filter(|s| s != self.server_name() && self.federation_allowed(s)).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Starts the senders of destinations with queued items (after a restart).
    pub async fn resume_federation_queue(&self) -> Result<()> {
        let depths = self.store.queue_depths().await?;
        let servers: Vec<OwnedServerName> =
            depths.keys().filter_map(|d| OwnedServerName::try_from(d.as_str()).ok()).collect();
        self.senders.wake(&servers);
        Ok(())
    }

    /// Sends one transaction of queued items; returns how many were delivered.
    async fn send_queued(&self, destination: &ServerName) -> Result<usize> {
        let pdus = self.store.queued(destination.as_str(), QUEUE_PDU, MAX_PDUS).await?;
        let edus = self.store.queued(destination.as_str(), QUEUE_EDU, MAX_EDUS).await?;
        if pdus.is_empty() && edus.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = pdus.iter().chain(&edus).map(|i| i.id).collect();
        // Derived from the queue rows: a retry of the same items carries the same ID, which
        // the receiver recognises; row IDs are never reused, so new items get new IDs.
        let first = ids.iter().min().copied().unwrap_or(0);
        let last = ids.iter().max().copied().unwrap_or(0);
        let txn_id = OwnedTransactionId::from(format!("kq{first}-{last}-{}", ids.len()));
        let mut request = send_transaction_message::v1::Request::new(
            txn_id,
            self.server_name().to_owned(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        for item in &pdus {
            request
                .pdus
                .push(RawValue::from_string(item.payload.clone()).map_err(|e| Error::internal("queued pdu", e))?);
        }
        for item in &edus {
            let raw = RawValue::from_string(item.payload.clone()).map_err(|e| Error::internal("queued edu", e))?;
            request.edus.push(Raw::from_json(raw));
        }
        let response = match self.send_federation_request(destination, request).await {
            Ok(r) => r,
            // The destination refuses this transaction itself (not a transient failure):
            // resending it would be refused forever and hold up everything behind it.
            Err(e) if e.status.is_client_error() && !matches!(e.status.as_u16(), 401 | 408 | 429) => {
                tracing::warn!(%destination, error = %e.message, items = ids.len(), "destination refused a transaction; dropping it");
                self.store.dequeue(&ids).await?;
                return Ok(ids.len());
            }
            Err(e) => return Err(e),
        };
        for (event_id, result) in &response.pdus {
            if let Err(e) = result {
                // The receiver refused one PDU: retrying the same PDU would fail again.
                tracing::info!(%destination, %event_id, error = %e, "destination refused an event");
            }
        }
        self.store.dequeue(&ids).await?;
        Ok(ids.len())
    }
}

/// The sender loop of one destination: drain, and when sending fails, back off
/// exponentially up to the configured ceiling.
async fn run_sender(services: Weak<Services>, destination: OwnedServerName, wake: Arc<Destination>) {
    let mut failures: u32 = 0;
    loop {
        let Some(s) = services.upgrade() else { return };
        if s.notifier.is_shut_down() {
            return;
        }
        if !s.federation_allowed(&destination) {
            drop(s);
            wake.queued.notified().await;
            continue;
        }
        let max_retry = Duration::from_secs(s.config.federation.max_retry_interval_secs.max(1));
        match s.send_queued(&destination).await {
            Ok(0) => {
                failures = 0;
                drop(s);
                tokio::select! {
                    _ = wake.queued.notified() => {}
                    _ = wake.back.notified() => {}
                }
            }
            Ok(_) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = Duration::from_secs(1u64 << failures.min(20)).min(max_retry);
                tracing::warn!(%destination, error = %e.message, retry_in_s = delay.as_secs(), "federation send failed");
                kairan_core::metrics::metrics().federation_send_failed(destination.as_str());
                drop(s);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wake.back.notified() => failures = 0,
                }
            }
        }
    }
}
