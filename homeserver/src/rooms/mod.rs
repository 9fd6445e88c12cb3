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
mod state_resolution;
mod visibility;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{OwnedRoomId, RoomVersionId, room_version_rules::RoomVersionRules};

pub use self::{
    append::{EventTemplate, Txn},
    create::CreateRoom,
    ingest::{FetchBudget, Ingested},
    membership::MembershipAction,
    pdu::Pdu,
    power::power_levels_from,
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
    /// Rooms a local user is joining through another server right now (how many joins),
    /// with the signal of the last one ending: events for the room wait for it.
    joining: Mutex<HashMap<OwnedRoomId, (usize, Arc<tokio::sync::Notify>)>>,
    /// The state after events not held here (or held without it), as another server gave
    /// it (`/state_ids`, `/state`): the siblings of a join, built on an invite held from
    /// before it, all need it.
    fetched_states: Mutex<HashMap<ruma::OwnedEventId, Arc<StateMap>>>,
    /// Events another server could not give (or gave wrong) lately.
    failed_fetches: RecentFailures,
    /// Events the state at which another server could not give lately.
    failed_states: RecentFailures,
}

/// How long an event that could not be fetched is not asked for again.
const FETCH_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// How long an event for a room waits for a local user's join of it to end.
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Event IDs something could not be fetched for lately, and when: not asked for again
/// within [`FETCH_RETRY_AFTER`], so a server cannot make this one ask the same twice.
#[derive(Default)]
struct RecentFailures(Mutex<HashMap<ruma::OwnedEventId, std::time::Instant>>);

impl RecentFailures {
    fn recently(&self, event_id: &ruma::EventId) -> bool {
        let failed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        failed.get(event_id).is_some_and(|at| at.elapsed() < FETCH_RETRY_AFTER)
    }

    fn note(&self, event_id: &ruma::EventId) {
        let mut failed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if failed.len() >= CACHE_LIMIT / 10 {
            failed.retain(|_, at| at.elapsed() < FETCH_RETRY_AFTER);
            if failed.len() >= CACHE_LIMIT / 10 {
                failed.clear();
            }
        }
        failed.insert(event_id.to_owned(), std::time::Instant::now());
    }
}

/// A join through another server under way ([`RoomCaches::begin_join`]); dropping it ends it.
pub(crate) struct JoinInProgress<'a> {
    caches: &'a RoomCaches,
    room_id: OwnedRoomId,
}

impl Drop for JoinInProgress<'_> {
    fn drop(&mut self) {
        let mut joining = self.caches.joining.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((count, done)) = joining.get_mut(&self.room_id) {
            *count -= 1;
            if *count == 0 {
                done.notify_waiters();
                joining.remove(&self.room_id);
            }
        }
    }
}

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

    fn fetched_state(&self, event_id: &ruma::EventId) -> Option<Arc<StateMap>> {
        self.fetched_states.lock().unwrap_or_else(|e| e.into_inner()).get(event_id).cloned()
    }

    fn keep_fetched_state(&self, event_id: &ruma::EventId, state: Arc<StateMap>) {
        let mut states = self.fetched_states.lock().unwrap_or_else(|e| e.into_inner());
        // Each may be a whole room's state: far fewer than the other caches hold.
        if states.len() >= CACHE_LIMIT / 100 {
            states.clear();
        }
        states.insert(event_id.to_owned(), state);
    }

    fn fetch_failed_recently(&self, event_id: &ruma::EventId) -> bool {
        self.failed_fetches.recently(event_id)
    }

    fn fetch_failed(&self, event_id: &ruma::EventId) {
        self.failed_fetches.note(event_id);
    }

    fn state_fetch_failed_recently(&self, event_id: &ruma::EventId) -> bool {
        self.failed_states.recently(event_id)
    }

    fn state_fetch_failed(&self, event_id: &ruma::EventId) {
        self.failed_states.note(event_id);
    }

    /// Marks a join through another server as under way until the guard is dropped.
    pub(crate) fn begin_join(&self, room_id: &ruma::RoomId) -> JoinInProgress<'_> {
        let mut joining = self.joining.lock().unwrap_or_else(|e| e.into_inner());
        joining.entry(room_id.to_owned()).or_insert_with(|| (0, Arc::default())).0 += 1;
        JoinInProgress { caches: self, room_id: room_id.to_owned() }
    }

    /// Whether any local user is joining a room through another server right now: the
    /// hot path of every received PDU asks this before it reads the PDU's room.
    pub(crate) fn joins_under_way(&self) -> bool {
        !self.joining.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Waits (at most `JOIN_WAIT`) while a local user is joining the room through another
    /// server: what its servers send meanwhile would otherwise find the room unknown here
    /// and be refused, and a refused event is not sent again.
    pub(crate) async fn wait_for_join(&self, room_id: &ruma::RoomId) {
        let Some(done) = self.joining.lock().unwrap_or_else(|e| e.into_inner()).get(room_id).map(|j| j.1.clone())
        else {
            return;
        };
        let notified = done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.joining.lock().unwrap_or_else(|e| e.into_inner()).contains_key(room_id) {
            return;
        }
        let _ = tokio::time::timeout(JOIN_WAIT, notified).await;
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
