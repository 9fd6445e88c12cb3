//! Prometheus metrics of `kairan-bridge run`, served on `metrics_listen` (`GET /metrics`,
//! the OpenMetrics text format), with the same client and names in the same style as the
//! homeserver's (`kairan_bridge_...` beside `kairan_...`).
//!
//! Counters are counted by the daemon where the work happens, and only once it is durable
//! (records after their transaction commits). What the archive database and the attachment
//! folder know (tree heads, co-signatures, pending work, the log size, stored bytes) is read
//! at scrape time: the records office's commands (`checkpoint`, `cosign`, `dispose`) change
//! it from other processes, and a value read at scrape time cannot be stale. Labels are
//! bounded sets (record kinds, failure kinds); never a room or event ID.
//!
//! **Archive lag** is an upper bound on how old the oldest event the archive does not hold
//! yet can be. The daemon reads a room with `/messages` to the end of its history; when a
//! read reaches the end, everything the server served for the room before that read began
//! is archived. So a room's lag is the time since the start of its last complete read;
//! before the first complete read since the daemon started, the time since the
//! `origin_server_ts` of the room's newest archived event (the frontier the archive is
//! known to hold), or since the daemon started for a room with nothing archived. The
//! gauge is the worst official room. Healthy, it stays below the sweep interval plus a
//! pass; it grows while the homeserver cannot be read or a backlog is being worked off.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{archive::Archive, retention::now_ms};

/// How long a walk of the attachment folder is reused: the daemon's own downloads refresh
/// it at once; files removed by `dispose` (another process) show within this.
const ATTACHMENT_WALK_TTL: Duration = Duration::from_secs(60);

/// What failed, for `kairan_bridge_errors_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Failure {
    /// A `/sync` request (the homeserver unreachable, the session refused).
    sync,
    /// An archiving pass as a whole (the archive database, the room list).
    pass,
    /// Reading one room (it stays behind until a later pass reads it).
    read,
    /// Joining an invited room or reading its policy.
    invite,
    /// A decryption or download that will be retried.
    retry,
    /// A decryption or download given up on, recorded in the archive as a note.
    gave_up,
    /// Signing a tree head.
    checkpoint,
    /// The archive account found kicked or banned from an official room (counted at
    /// every sweep until it is back).
    removed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    /// A record kind (`event`, `cleartext`, `attachment`, `note`) or a pending-work kind
    /// (`decrypt`, `attachment`).
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    what: Failure,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The daemon's metrics. One per daemon, shared with the listener.
pub struct Metrics {
    registry: Registry,
    records_archived: Family<KindLabels, Counter>,
    errors: Family<FailureLabels, Counter>,
    archive_lag: FloatGauge,
    official_rooms: Gauge,
    log_records: Gauge,
    pending: Family<KindLabels, Gauge>,
    head_size: Gauge,
    head_timestamp: FloatGauge,
    head_cosigned: Gauge,
    cosigned_head_size: Gauge,
    cosigned_head_timestamp: FloatGauge,
    attachments_bytes: Gauge,
    database_up: Gauge,
    /// When the daemon started (ms): the lag of a room with nothing archived counts from here.
    started_ms: i64,
    /// Per room, the start (ms) of its last read that reached the end of its history.
    read_through: Mutex<HashMap<String, i64>>,
    /// The last walk of the attachment folder: when, and the bytes found.
    attachments_walk: Mutex<Option<(Instant, i64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kairan_bridge");
        let records_archived = Family::<KindLabels, Counter>::default();
        registry.register(
            "records_archived",
            "Records this daemon appended to the archive (committed), by kind: event, cleartext, attachment, note",
            records_archived.clone(),
        );
        let errors = Family::<FailureLabels, Counter>::default();
        registry.register(
            "errors",
            "Failures of the daemon, by what failed: sync, pass, read, invite, retry, gave_up, checkpoint",
            errors.clone(),
        );
        let archive_lag = FloatGauge::default();
        registry.register(
            "archive_lag_seconds",
            "Upper bound on the age of the oldest event not yet archived, worst official room \
             (time since the start of the room's last complete read)",
            archive_lag.clone(),
        );
        let official_rooms = Gauge::default();
        registry.register("official_rooms", "Official rooms the bridge archives", official_rooms.clone());
        let log_records = Gauge::default();
        registry.register(
            "log_records",
            "Records in the log (its size), whoever appended them (read at scrape time)",
            log_records.clone(),
        );
        let pending = Family::<KindLabels, Gauge>::default();
        registry.register(
            "pending",
            "Work queued for archived events, by kind: decrypt, attachment (read at scrape time)",
            pending.clone(),
        );
        let head_size = Gauge::default();
        registry.register(
            "tree_head_size",
            "Records covered by the newest signed tree head; 0 before the first",
            head_size.clone(),
        );
        let head_timestamp = FloatGauge::default();
        registry.register(
            "tree_head_timestamp_seconds",
            "When the newest signed tree head was signed (Unix time); 0 before the first",
            head_timestamp.clone(),
        );
        let head_cosigned = Gauge::default();
        registry.register(
            "tree_head_cosigned",
            "1 when the newest signed tree head carries a co-signature, else 0",
            head_cosigned.clone(),
        );
        let cosigned_head_size = Gauge::default();
        registry.register(
            "cosigned_tree_head_size",
            "Records covered by the newest co-signed tree head; 0 before the first",
            cosigned_head_size.clone(),
        );
        let cosigned_head_timestamp = FloatGauge::default();
        registry.register(
            "cosigned_tree_head_timestamp_seconds",
            "When the newest co-signed tree head was signed by the bridge (Unix time); 0 before the first",
            cosigned_head_timestamp.clone(),
        );
        let attachments_bytes = Gauge::default();
        registry.register(
            "attachments_stored_bytes",
            "Bytes in the attachment folder (each distinct file once, as stored)",
            attachments_bytes.clone(),
        );
        // Every failure kind from the start at 0, so that a rate over it has a series to read.
        for what in [
            Failure::sync,
            Failure::pass,
            Failure::read,
            Failure::invite,
            Failure::retry,
            Failure::gave_up,
            Failure::checkpoint,
        ] {
            errors.get_or_create(&FailureLabels { what }).inc_by(0);
        }
        let database_up = Gauge::default();
        registry.register(
            "database_up",
            "1 when the archive database answered the scrape's queries, else 0",
            database_up.clone(),
        );
        Self {
            registry,
            records_archived,
            errors,
            archive_lag,
            official_rooms,
            log_records,
            pending,
            head_size,
            head_timestamp,
            head_cosigned,
            cosigned_head_size,
            cosigned_head_timestamp,
            attachments_bytes,
            database_up,
            started_ms: now_ms(),
            read_through: Mutex::new(HashMap::new()),
            attachments_walk: Mutex::new(None),
        }
    }

    /// Counts records made durable, by kind.
    pub fn archived<S: AsRef<str>>(&self, kinds: &[S]) {
        for kind in kinds {
            self.records_archived.get_or_create(&KindLabels { kind: kind.as_ref().to_owned() }).inc();
        }
    }

    /// Counts a failure.
    pub fn failed(&self, what: Failure) {
        self.errors.get_or_create(&FailureLabels { what }).inc();
    }

    /// Notes that a read of `room_id` which began at `started_ms` reached the end of the
    /// room's history: everything served before then is archived.
    pub fn read_through(&self, room_id: &str, started_ms: i64) {
        let mut map = self.read_through.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(room_id.to_owned()).or_insert(started_ms);
        *entry = (*entry).max(started_ms);
    }

    /// Notes a new attachment file, so the next scrape walks the folder again.
    pub fn attachment_stored(&self) {
        *self.attachments_walk.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Reads what the archive and the attachment folder know into the scrape-time gauges.
    /// A failing query sets `database_up` to 0 and leaves the database's gauges as they were.
    pub async fn refresh(&self, archive: &Archive, attachments: &Path) {
        self.attachments_bytes.set(self.attachment_bytes(attachments).await);
        match self.refresh_from(archive).await {
            Ok(()) => {
                self.database_up.set(1);
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "metrics: the archive database did not answer");
                self.database_up.set(0);
            }
        }
    }

    async fn refresh_from(&self, archive: &Archive) -> anyhow::Result<()> {
        let now = now_ms();
        let size = archive.size().await?;
        let (newest, cosigned) = archive.newest_heads().await?;
        let pending = archive.pending_by_kind().await?;
        let official: Vec<String> =
            archive.rooms().await?.into_iter().filter(|r| r.official).map(|r| r.room_id).collect();
        let mut worst = 0i64;
        for room in &official {
            let known = self.read_through.lock().unwrap_or_else(|e| e.into_inner()).get(room).copied();
            let since = match known {
                Some(ts) => ts,
                None => archive.newest_event_ts(room).await?.unwrap_or(self.started_ms),
            };
            worst = worst.max(now - since);
        }
        self.log_records.set(size);
        self.official_rooms.set(official.len() as i64);
        self.archive_lag.set(worst.max(0) as f64 / 1000.0);
        // A kind the daemon no longer queues disappears rather than lingering at its last value.
        self.pending.clear();
        for kind in ["decrypt", "attachment"] {
            self.pending.get_or_create(&KindLabels { kind: kind.to_owned() }).set(0);
        }
        for (kind, n) in pending {
            self.pending.get_or_create(&KindLabels { kind }).set(n);
        }
        self.head_size.set(newest.as_ref().map_or(0, |h| h.tree_size));
        self.head_timestamp.set(newest.as_ref().map_or(0.0, |h| h.created_ts as f64 / 1000.0));
        self.head_cosigned
            .set(i64::from(newest.is_some() && newest.as_ref().map(|h| h.id) == cosigned.as_ref().map(|h| h.id)));
        self.cosigned_head_size.set(cosigned.as_ref().map_or(0, |h| h.tree_size));
        self.cosigned_head_timestamp.set(cosigned.as_ref().map_or(0.0, |h| h.created_ts as f64 / 1000.0));
        Ok(())
    }

    /// The attachment folder's size, walked at most every [`ATTACHMENT_WALK_TTL`].
    async fn attachment_bytes(&self, dir: &Path) -> i64 {
        if let Some((at, bytes)) = *self.attachments_walk.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < ATTACHMENT_WALK_TTL
        {
            return bytes;
        }
        let dir = dir.to_owned();
        let bytes = tokio::task::spawn_blocking(move || folder_bytes(&dir)).await.unwrap_or(0);
        *self.attachments_walk.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), bytes));
        bytes
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Bytes of the files at `<dir>/<xx>/<sha256>` (the layout of [`crate::attachments`]); the
/// temporary files of a write in progress (`.<sha>.<pid>`) are not counted.
fn folder_bytes(dir: &Path) -> i64 {
    let mut total = 0i64;
    let Ok(shards) = std::fs::read_dir(dir) else { return 0 };
    for shard in shards.flatten() {
        let Ok(files) = std::fs::read_dir(shard.path()) else { continue };
        for file in files.flatten() {
            if file.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if let Ok(meta) = file.metadata()
                && meta.is_file()
            {
                total = total.saturating_add(i64::try_from(meta.len()).unwrap_or(i64::MAX));
            }
        }
    }
    total
}

/// What the listener reads: the daemon's metrics, its archive and its attachment folder.
#[derive(Clone)]
pub struct Source {
    pub metrics: Arc<Metrics>,
    pub archive: Archive,
    pub attachments: PathBuf,
}

/// The metrics listener's application: `GET /metrics` and nothing else.
pub fn router(source: Source) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(source)
}

/// GET /metrics
async fn scrape(State(source): State<Source>) -> Response {
    source.metrics.refresh(&source.archive, &source.attachments).await;
    let content_type = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], source.metrics.encode()).into_response()
}

/// Serves [`router`] on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: Source,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router(source))
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::{archive::Cosignature, keys, record::NewRecord};

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
    }

    #[tokio::test]
    async fn scrape_reads_heads_cosignatures_lag_and_attachments() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let archive = Archive::open(&format!("sqlite://{}", dir.path().join("a.db").display())).await?;
        let attachments = dir.path().join("attachments");
        let m = Metrics::new();

        m.refresh(&archive, &attachments).await;
        let text = m.encode();
        assert_eq!(value(&text, "kairan_bridge_database_up"), Some(1.0), "{text}");
        assert_eq!(value(&text, "kairan_bridge_tree_head_size"), Some(0.0), "{text}");
        assert_eq!(value(&text, "kairan_bridge_tree_head_cosigned"), Some(0.0), "{text}");
        assert_eq!(value(&text, "kairan_bridge_archive_lag_seconds"), Some(0.0), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");

        // An official room whose newest archived event is an hour old, not read since start.
        let key = SigningKey::from_bytes(&[7; 32]);
        archive.upsert_room("!r:x", Some("{}"), true).await?;
        let hour_ago = now_ms() - 3_600_000;
        let mut tx = archive.begin_append().await?;
        for (i, ts) in [hour_ago - 5_000, hour_ago].into_iter().enumerate() {
            tx.append(
                &key,
                NewRecord {
                    kind: "event".into(),
                    dedup_key: Some(format!("event:$e{i}")),
                    room_id: Some("!r:x".into()),
                    event_id: Some(format!("$e{i}")),
                    origin_ts: Some(ts),
                    payload: b"{}".to_vec(),
                    ..Default::default()
                },
            )
            .await?;
        }
        let kinds = tx.commit_appended().await?;
        assert_eq!(kinds, ["event", "event"]);
        m.archived(&kinds);
        let head = archive.sign_head(&key, true).await?.expect("a head");
        std::fs::create_dir_all(attachments.join("ab"))?;
        std::fs::write(attachments.join("ab").join("abcd"), [0u8; 100])?;
        std::fs::write(attachments.join("ab").join(".abcd.1"), [0u8; 50])?;
        m.attachment_stored();

        m.refresh(&archive, &attachments).await;
        let text = m.encode();
        assert_eq!(value(&text, "kairan_bridge_records_archived_total{kind=\"event\"}"), Some(2.0), "{text}");
        assert_eq!(value(&text, "kairan_bridge_log_records"), Some(2.0), "{text}");
        assert_eq!(value(&text, "kairan_bridge_official_rooms"), Some(1.0), "{text}");
        assert_eq!(value(&text, "kairan_bridge_tree_head_size"), Some(2.0), "{text}");
        assert_eq!(value(&text, "kairan_bridge_tree_head_timestamp_seconds"), Some(head.created_ts as f64 / 1000.0));
        assert_eq!(value(&text, "kairan_bridge_tree_head_cosigned"), Some(0.0), "{text}");
        assert_eq!(value(&text, "kairan_bridge_cosigned_tree_head_size"), Some(0.0), "{text}");
        assert_eq!(value(&text, "kairan_bridge_attachments_stored_bytes"), Some(100.0), "{text}");
        let lag = value(&text, "kairan_bridge_archive_lag_seconds").expect("lag");
        assert!((3600.0..3700.0).contains(&lag), "lag from the newest archived event: {lag}");

        // A complete read: the lag counts from its start instead.
        m.read_through("!r:x", now_ms() - 2_000);
        let cosigner = SigningKey::from_bytes(&[9; 32]);
        archive
            .add_cosignature(&Cosignature {
                head_id: head.id,
                key_id: keys::key_id(&cosigner.verifying_key()),
                public_key: keys::public_key_b64(&cosigner.verifying_key()),
                signature: keys::sign(&cosigner, head.message().as_bytes()),
                created_ts: now_ms(),
            })
            .await?;
        assert_eq!(value(&text, "kairan_bridge_errors_total{what=\"read\"}"), Some(0.0), "{text}");
        assert_eq!(value(&text, "kairan_bridge_pending{kind=\"decrypt\"}"), Some(0.0), "{text}");
        m.failed(Failure::read);
        m.refresh(&archive, &attachments).await;
        let text = m.encode();
        let lag = value(&text, "kairan_bridge_archive_lag_seconds").expect("lag");
        assert!((2.0..60.0).contains(&lag), "lag from the read: {lag}");
        assert_eq!(value(&text, "kairan_bridge_tree_head_cosigned"), Some(1.0), "{text}");
        assert_eq!(value(&text, "kairan_bridge_cosigned_tree_head_size"), Some(2.0), "{text}");
        assert_eq!(value(&text, "kairan_bridge_errors_total{what=\"read\"}"), Some(1.0), "{text}");

        // A database that is gone: reported, and the scrape still answers.
        archive.close().await;
        m.refresh(&archive, &attachments).await;
        assert_eq!(value(&m.encode(), "kairan_bridge_database_up"), Some(0.0));
        Ok(())
    }
}
