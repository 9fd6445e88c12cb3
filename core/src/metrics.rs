//! Prometheus metrics: the registry. The homeserver serves it on its own listener
//! (`listen.metrics`, `GET /metrics`, in `api/metrics.rs`).
//!
//! Counters and histograms are updated where the work happens (a tower middleware on the
//! router, `persist_pdu`, the federation sender, the sync handlers); what the database
//! knows better (queue depth, pool use, media bytes) is read at scrape time, so it is
//! never stale and costs nothing between scrapes. Labels are bounded sets: an endpoint
//! *group* by path prefix (never the full path, which holds room and user IDs), a
//! federation destination (bounded by the allowlist), the origin of an event.
//!
//! The registry is one per process (like the `metrics` crate's global recorder): one
//! process runs one homeserver, and code deep in the services can count without being
//! handed a handle.

use std::{sync::LazyLock, time::Duration};

use http::StatusCode;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// The endpoint group of a request, from its path prefix.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Group {
    /// The Client-Server API, except what the other groups take.
    client,
    /// `/sync` and sliding sync: long polls, kept apart so that their waiting does not
    /// hide the latency of the rest of the client API.
    sync,
    /// End-to-end encryption keys (`/keys/...`, `/room_keys/...`) and the server's
    /// signing keys (`/_matrix/key/...`).
    keys,
    /// The content repository (`/_matrix/media/...`, `/_matrix/client/v1/media/...`).
    media,
    /// The Server-Server API (`/_matrix/federation/...`).
    federation,
    /// The admin API (`/_kairan/admin/...`, `/_synapse/admin/...`).
    admin,
    /// Health checks.
    health,
    /// Anything else (unknown paths, `/.well-known`).
    other,
}

impl Group {
    /// The group of a path. Only fixed prefixes are looked at, so that the label values
    /// stay a small fixed set whatever clients send.
    pub fn of(path: &str) -> Self {
        if path.starts_with("/_matrix/federation/") {
            return Self::federation;
        }
        if path.starts_with("/_matrix/key/") {
            return Self::keys;
        }
        if path.starts_with("/_matrix/media/") || path.starts_with("/_matrix/client/v1/media/") {
            return Self::media;
        }
        if path.starts_with("/_kairan/admin/") || path.starts_with("/_synapse/admin/") {
            return Self::admin;
        }
        if path.starts_with("/_kairan/health") || path == "/health" {
            return Self::health;
        }
        if let Some(rest) = path.strip_prefix("/_matrix/client/") {
            // `/_matrix/client/{version}/{endpoint...}`; unstable MSC paths have a longer version.
            let endpoint = rest.split_once('/').map(|(_, e)| e).unwrap_or("");
            let endpoint = endpoint.strip_prefix("org.matrix.simplified_msc3575/").unwrap_or(endpoint);
            if endpoint == "sync" {
                return Self::sync;
            }
            if endpoint.starts_with("keys/") || endpoint.starts_with("room_keys/") {
                return Self::keys;
            }
            return Self::client;
        }
        Self::other
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    group: Group,
    /// `2xx`, `4xx`, `5xx`...
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: Group,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabels {
    /// `local` (made here) or `remote` (received over federation).
    origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    /// `sync` (v3) or `sliding` (MSC4186).
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WakeLabels {
    /// `read` (the change could concern the sync's user, so it read the database) or
    /// `skipped` (it could not, and the sync went on waiting).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: String,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<GroupLabels, Histogram, fn() -> Histogram>,
    events_persisted: Family<OriginLabels, Counter>,
    sync_active: Family<KindLabels, Gauge>,
    sync_wakes: Family<WakeLabels, Counter>,
    federation_failures: Family<DestinationLabels, Counter>,
    federation_queue: Family<DestinationLabels, Gauge>,
    archive_removed: Counter,
    db_up: Gauge,
    db_pool_size: Gauge,
    db_pool_idle: Gauge,
    db_pool_max: Gauge,
    media_bytes: Gauge,
}

/// 5 ms to about 10 s, doubling: a message send is tens of milliseconds, a slow
/// federation request several seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("kairan");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by endpoint group and status class",
            requests.clone(),
        );
        let latency = Family::<GroupLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (until the response headers), by endpoint group",
            latency.clone(),
        );
        let events_persisted = Family::<OriginLabels, Counter>::default();
        registry.register(
            "events_persisted",
            "Room events (PDUs) persisted, by origin: local (sent here) or remote (received)",
            events_persisted.clone(),
        );
        let sync_active = Family::<KindLabels, Gauge>::default();
        registry.register(
            "sync_active",
            "Sync requests being answered or waiting in a long poll, by kind (sync, sliding)",
            sync_active.clone(),
        );
        let sync_wakes = Family::<WakeLabels, Counter>::default();
        registry.register(
            "sync_wakes",
            "Long-polling /sync requests woken by a change, by outcome: read (the change could concern \
             the user) or skipped (it could not)",
            sync_wakes.clone(),
        );
        let federation_failures = Family::<DestinationLabels, Counter>::default();
        registry.register(
            "federation_send_failures",
            "Failed attempts to deliver a federation transaction, by destination",
            federation_failures.clone(),
        );
        let federation_queue = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "federation_queue_depth",
            "PDUs and EDUs waiting in the durable federation queue, by destination (read at scrape time)",
            federation_queue.clone(),
        );
        let archive_removed = Counter::default();
        registry.register(
            "archive_account_removed",
            "Times the records bridge's account was kicked or banned from an official room (each one is also \
             logged as an error; a kick is answered by inviting it back)",
            archive_removed.clone(),
        );
        let db_up = Gauge::default();
        registry.register("database_up", "1 when the database answered the scrape's queries, else 0", db_up.clone());
        let db_pool_size = Gauge::default();
        registry.register("database_pool_connections", "Open database connections in the pool", db_pool_size.clone());
        let db_pool_idle = Gauge::default();
        registry.register("database_pool_idle", "Idle database connections in the pool", db_pool_idle.clone());
        let db_pool_max = Gauge::default();
        registry.register("database_pool_max", "Largest number of connections the pool opens", db_pool_max.clone());
        let media_bytes = Gauge::default();
        registry.register(
            "media_stored_bytes",
            "Bytes of media content stored (each distinct file once; thumbnails excluded)",
            media_bytes.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            events_persisted,
            sync_active,
            sync_wakes,
            federation_failures,
            federation_queue,
            archive_removed,
            db_up,
            db_pool_size,
            db_pool_idle,
            db_pool_max,
            media_bytes,
        }
    }

    /// Counts a persisted room event; `local` when this server made it.
    pub fn event_persisted(&self, local: bool) {
        self.events_persisted.get_or_create(&OriginLabels { origin: if local { "local" } else { "remote" } }).inc();
    }

    /// Counts a removal of the archive account from an official room.
    pub fn archive_account_removed(&self) {
        self.archive_removed.inc();
    }

    /// Counts a waiting sync woken by a change; `read` when it went to the database.
    pub fn sync_woken(&self, read: bool) {
        self.sync_wakes.get_or_create(&WakeLabels { outcome: if read { "read" } else { "skipped" } }).inc();
    }

    /// Counts a failed delivery attempt to `destination`.
    pub fn federation_send_failed(&self, destination: &str) {
        self.federation_failures.get_or_create(&DestinationLabels { destination: destination.to_owned() }).inc();
    }

    /// Marks a sync request active until the returned guard is dropped (also when the
    /// client goes away and the handler's future is dropped mid-wait).
    pub fn sync_started(&'static self, kind: &'static str) -> ActiveSync {
        let gauge = self.sync_active.get_or_create_owned(&KindLabels { kind });
        gauge.inc();
        ActiveSync(gauge)
    }

    pub fn observe_request(&self, group: Group, status: StatusCode, took: Duration) {
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.get_or_create(&RequestLabels { group, status: class }).inc();
        self.latency.get_or_create(&GroupLabels { group }).observe(took.as_secs_f64());
    }

    /// The database's figures into the scrape-time gauges: `figures` is `None` when the
    /// database did not answer, which sets `database_up` to 0 and leaves the rest as it was.
    pub fn set_database(&self, pool: PoolStats, figures: Option<DatabaseFigures>) {
        self.db_pool_size.set(i64::from(pool.size));
        self.db_pool_idle.set(i64::try_from(pool.idle).unwrap_or(i64::MAX));
        self.db_pool_max.set(i64::from(pool.max));
        let Some(figures) = figures else {
            self.db_up.set(0);
            return;
        };
        self.db_up.set(1);
        self.media_bytes.set(figures.media_bytes);
        // Destinations whose queue emptied disappear rather than linger at their last value.
        self.federation_queue.clear();
        for (destination, depth) in figures.queue_depths {
            self.federation_queue.get_or_create(&DestinationLabels { destination }).set(depth);
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The connection pool's use, read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub size: u32,
    pub idle: usize,
    pub max: u32,
}

/// What the database knows better than the process, read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct DatabaseFigures {
    /// Events waiting in the federation queue, per destination.
    pub queue_depths: std::collections::BTreeMap<String, i64>,
    pub media_bytes: i64,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// An active sync request; see [`Metrics::sync_started`].
pub struct ActiveSync(Gauge);

impl Drop for ActiveSync {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_come_from_fixed_prefixes() {
        for (path, group) in [
            ("/_matrix/client/v3/rooms/!a:x/send/m.room.message/1", Group::client),
            ("/_matrix/client/v3/login", Group::client),
            ("/_matrix/client/v3/sync", Group::sync),
            ("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", Group::sync),
            ("/_matrix/client/v5/sync", Group::sync),
            ("/_matrix/client/v3/keys/upload", Group::keys),
            ("/_matrix/client/v3/room_keys/version", Group::keys),
            ("/_matrix/key/v2/server", Group::keys),
            ("/_matrix/media/v3/upload", Group::media),
            ("/_matrix/client/v1/media/download/x/y", Group::media),
            ("/_matrix/federation/v1/send/1", Group::federation),
            ("/_kairan/admin/v1/users", Group::admin),
            ("/_kairan/health/ready", Group::health),
            ("/health", Group::health),
            ("/.well-known/matrix/server", Group::other),
            ("/anything", Group::other),
        ] {
            assert_eq!(Group::of(path), group, "{path}");
        }
    }

    #[test]
    fn exposition_names_the_metrics() {
        let m = metrics();
        m.observe_request(Group::client, StatusCode::OK, Duration::from_millis(3));
        m.event_persisted(true);
        drop(m.sync_started("sync"));
        let text = m.encode();
        for name in [
            "kairan_http_requests_total{group=\"client\",status=\"2xx\"}",
            "kairan_http_request_duration_seconds_bucket{le=\"0.005\",group=\"client\"}",
            "kairan_events_persisted_total{origin=\"local\"}",
            "kairan_sync_active{kind=\"sync\"} 0",
            "# EOF",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
