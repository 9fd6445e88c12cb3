//! The data layer: SQL over sqlx, one interface for SQLite and PostgreSQL.
//!
//! Queries are written once in the dialect both engines share (`$1` parameters,
//! `ON CONFLICT`, `RETURNING`) and run through sqlx's `Any` driver; only the
//! migrations differ, in `migrations/sqlite` and `migrations/postgres`. Nothing here
//! knows HTTP or Matrix rules: services decide, storage remembers.

mod account;
mod admin;
mod events;
mod federation;
mod keys;
pub mod media;
mod push;
mod remote_devices;
mod rooms;
mod server_keys;
mod sliding;
mod streams;
mod users;

#[cfg(test)]
mod tests;

use std::str::FromStr;

use sqlx::{
    AnyPool, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
};

pub use self::{
    admin::{
        AdminRoomRow, AdminUserRow, AuditFilter, AuditRow, NewAdminUser, RegistrationTokenRow, RoomPolicyRow,
        UserFilter,
    },
    events::{EventRow, NewEvent, StateDelta, StateMap},
    federation::{QUEUE_EDU, QUEUE_PDU, QueueItem},
    push::{NotificationRow, PushAction},
    server_keys::ServerKeyRow,
    streams::{ReceiptRow, ToDeviceRow},
    users::{DeviceRow, UserRow},
};

/// Which database engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    memo: std::sync::Arc<Memo>,
}

/// Answers the hottest lookups keep in memory: every request checks its access token,
/// every send reads its room's version. Each is changed only through this `Store`, which
/// forgets what a write makes stale.
#[derive(Debug, Default)]
struct Memo {
    /// Token hash -> (user, device), for live tokens of active users.
    sessions: std::sync::Mutex<Sessions>,
    /// Room -> version.
    versions: std::sync::Mutex<std::collections::HashMap<String, String>>,
    commits: events::GroupCommit,
}

/// Remembered sessions and a generation that every session-ending write moves on
/// after it commits: a lookup that read the database before such a commit must not
/// remember what it read.
#[derive(Debug, Default)]
struct Sessions {
    generation: u64,
    by_token: std::collections::HashMap<String, (String, String)>,
}

/// Entries a memo holds before it starts over.
const MEMO_LIMIT: usize = 100_000;

impl Memo {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Inserts into a memo, emptying it first when full.
fn remember<V>(map: &mut std::collections::HashMap<String, V>, key: String, value: V) {
    if map.len() >= MEMO_LIMIT {
        map.clear();
    }
    map.insert(key, value);
}

pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

impl Store {
    /// Connects and applies pending migrations.
    pub async fn open(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("database.url must start with sqlite:// or postgres://, got {url:?}");
        };
        let url = match backend {
            // Create the file on first start.
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let max = match (max_connections, backend) {
            (0, Backend::Sqlite) => 8,
            (0, Backend::Postgres) => 16,
            (n, _) => n,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; NORMAL sync is durable
                        // against a killed process (the WAL is in the OS), which is the
                        // guarantee kairan gives for acknowledged events.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open database {}: {e}", redact_url(&url)))?;
        let store = Self { pool, backend, memo: Default::default() };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        let newest_known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        match migrator.run(&self.pool).await {
            Ok(()) => Ok(()),
            // A migration this binary does not have: a newer kairan upgraded the database.
            Err(sqlx::migrate::MigrateError::VersionMissing(v)) => anyhow::bail!(
                "the database has schema version {v}, newer than this kairan-homeserver knows \
                 (up to {newest_known}): it was upgraded by a newer release. Run that release, \
                 or restore the backup taken before the upgrade"
            ),
            Err(e) => Err(e.into()),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a transaction that read first and writes later would fail at once
    /// with "database is locked" when another writer committed in between (its snapshot
    /// is stale, so SQLite's busy wait cannot help), where one that starts as the writer
    /// waits its turn.
    pub async fn begin(&self) -> sqlx::Result<Tx<'static>> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool's open connections, idle connections and maximum, for metrics.
    pub fn pool_stats(&self) -> (u32, usize, u32) {
        (self.pool.size(), self.pool.num_idle(), self.pool.options().get_max_connections())
    }

    /// Takes the next value of a named counter inside `tx`. For `stream` this must be
    /// the last statement before commit: the row stays locked until then, which keeps
    /// commit order and position order the same across connections and processes.
    pub async fn next_counter(tx: &mut Tx<'_>, name: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar("UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value")
            .bind(name)
            .fetch_one(&mut **tx)
            .await
    }

    /// The last stream position handed out (and committed).
    pub async fn current_stream_pos(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT value FROM counters WHERE name = 'stream'").fetch_one(&self.pool).await
    }
}

/// A database URL with any password removed, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Rows per multi-row `INSERT`: well under both engines' limits on bound parameters.
const ROWS_PER_INSERT: usize = 100;

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` parameters each.
fn values_placeholders(rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(r * columns + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// SQLite and PostgreSQL both accept 0/1 for these columns; Rust sees a bool.
pub(crate) fn flag(v: bool) -> i64 {
    i64::from(v)
}

#[cfg(test)]
mod placeholder_tests {
    #[test]
    fn placeholders_number_every_parameter_once() {
        assert_eq!(super::values_placeholders(1, 2), "($1, $2)");
        assert_eq!(super::values_placeholders(3, 2), "($1, $2), ($3, $4), ($5, $6)");
    }
}
