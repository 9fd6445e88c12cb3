//! The room model: build, hash, sign, authorise and persist events; read state.

mod aliases;
mod append;
mod backfill;
mod create;
mod ingest;
mod membership;
mod pdu;
mod power;
mod preview;
mod read;
mod redaction;
mod remote;
mod resident;
mod resolve;
mod visibility;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{OwnedRoomId, RoomVersionId, room_version_rules::RoomVersionRules};

pub use self::{
    append::{EventTemplate, Txn},
    create::{CreateRoom, random_device_id, random_localpart},
    ingest::{FetchBudget, Ingested},
    membership::MembershipAction,
    pdu::Pdu,
    read::ClientEventOptions,
};
pub use crate::storage::StateMap;

/// Room versions kairan creates and joins.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["10", "11", "12"];

/// The rules of a supported room version.
pub fn version_rules(version: &str) -> Option<RoomVersionRules> {
    if !SUPPORTED_VERSIONS.contains(&version) {
        return None;
    }
    RoomVersionId::try_from(version).ok()?.rules()
}

/// In-memory helpers of the room service: per-room write locks and caches of immutable data.
#[derive(Default)]
pub struct RoomCaches {
    locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    pdus: Mutex<HashMap<String, Arc<Pdu>>>,
    state_groups: Mutex<HashMap<i64, Arc<StateMap>>>,
    /// Resolved states by the sorted state groups they resolve: a room with many forward
    /// extremities over few distinct states resolves each set once, not per event.
    resolutions: Mutex<HashMap<Vec<i64>, Arc<StateMap>>>,
    /// Events another server could not give (or gave wrong) lately, and when.
    failed_fetches: Mutex<HashMap<ruma::OwnedEventId, std::time::Instant>>,
}

/// How long an event that could not be fetched is not asked for again.
const FETCH_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// Entries kept per cache before it is emptied; both caches hold immutable data, so
/// emptying only costs re-reads.
const CACHE_LIMIT: usize = 50_000;

impl RoomCaches {
    /// The lock serialising appends to one room, so each new event extends the latest.
    pub fn lock(&self, room_id: &ruma::RoomId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(room_id.to_owned()).or_default().clone()
    }

    fn cached_pdu(&self, event_id: &str) -> Option<Arc<Pdu>> {
        self.pdus.lock().unwrap_or_else(|e| e.into_inner()).get(event_id).cloned()
    }

    fn cache_pdu(&self, pdu: Arc<Pdu>) {
        let mut pdus = self.pdus.lock().unwrap_or_else(|e| e.into_inner());
        if pdus.len() >= CACHE_LIMIT {
            pdus.clear();
        }
        pdus.insert(pdu.event_id.to_string(), pdu);
    }

    fn cached_state(&self, group: i64) -> Option<Arc<StateMap>> {
        self.state_groups.lock().unwrap_or_else(|e| e.into_inner()).get(&group).cloned()
    }

    fn fetch_failed_recently(&self, event_id: &ruma::EventId) -> bool {
        let failed = self.failed_fetches.lock().unwrap_or_else(|e| e.into_inner());
        failed.get(event_id).is_some_and(|at| at.elapsed() < FETCH_RETRY_AFTER)
    }

    fn fetch_failed(&self, event_id: &ruma::EventId) {
        let mut failed = self.failed_fetches.lock().unwrap_or_else(|e| e.into_inner());
        if failed.len() >= CACHE_LIMIT / 10 {
            failed.retain(|_, at| at.elapsed() < FETCH_RETRY_AFTER);
            if failed.len() >= CACHE_LIMIT / 10 {
                failed.clear();
            }
        }
        failed.insert(event_id.to_owned(), std::time::Instant::now());
    }

    fn cached_resolution(&self, groups: &[i64]) -> Option<Arc<StateMap>> {
        self.resolutions.lock().unwrap_or_else(|e| e.into_inner()).get(groups).cloned()
    }

    fn cache_resolution(&self, groups: Vec<i64>, state: Arc<StateMap>) {
        let mut resolutions = self.resolutions.lock().unwrap_or_else(|e| e.into_inner());
        if resolutions.len() >= CACHE_LIMIT / 100 {
            resolutions.clear();
        }
        resolutions.insert(groups, state);
    }

    fn cache_state(&self, group: i64, state: Arc<StateMap>) {
        let mut groups = self.state_groups.lock().unwrap_or_else(|e| e.into_inner());
        if groups.len() >= CACHE_LIMIT / 10 {
            groups.clear();
        }
        groups.insert(group, state);
    }
}
