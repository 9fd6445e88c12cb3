//! The data layer: SQL over sqlx, one interface for SQLite and PostgreSQL.
//!
//! Queries are written once in the dialect both engines share (`$1` parameters,
//! `ON CONFLICT`, `RETURNING`) and run through sqlx's `Any` driver; only the
//! migrations differ, in `migrations/sqlite` and `migrations/postgres`. Nothing here
//! knows HTTP or Matrix rules: services decide, storage remembers.

mod account_data;
mod activity;
mod audit;
mod conditions;
mod e2ee_keys;
mod events;
mod federation;
pub mod media;
mod policies;
mod push;
mod registration_tokens;
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
    AnyConnection, AnyPool, ConnectOptions, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
    pool::PoolConnection,
};

pub use self::{
    audit::{AuditFilter, AuditRow},
    events::{EventRow, NewEvent, PendingRedaction, StateDelta, StateMap},
    federation::{QUEUE_EDU, QUEUE_PDU, QueueItem},
    policies::RoomPolicyRow,
    push::{NotificationRow, PushAction},
    registration_tokens::RegistrationTokenRow,
    rooms::AdminRoomRow,
    server_keys::ServerKeyRow,
    streams::{ReceiptRow, ToDeviceRow},
    users::{AdminUserRow, DeviceRow, NewAdminUser, UserFilter, UserRow},
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
    direct: std::sync::Arc<Direct>,
}

/// SQLite connections for single statements, kept outside sqlx's pool. The pool pings a
/// connection each time it is returned (a guard against a cancelled query leaving it
/// mid-protocol); for SQLite, whose every call is a round trip to the connection's
/// thread, that doubled the cost of each statement. An SQLite connection stays usable
/// when a query on it is cancelled (its thread finishes or abandons the statement before
/// taking the next command), so these skip the ping. PostgreSQL keeps the pool's.
struct Direct {
    idle: std::sync::Mutex<Vec<AnyConnection>>,
    permits: tokio::sync::Semaphore,
    options: AnyConnectOptions,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").field("available", &self.permits.available_permits()).finish()
    }
}

/// A connection for one or more single statements: `&mut *store.conn().await?` is an
/// executor.
enum Conn<'a> {
    Direct { conn: Option<AnyConnection>, direct: &'a Direct, _permit: tokio::sync::SemaphorePermit<'a> },
    Pooled(PoolConnection<sqlx::Any>),
}

impl std::ops::Deref for Conn<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            // Present until drop.
            Conn::Direct { conn, .. } => conn.as_ref().expect("connection taken only on drop"),
            Conn::Pooled(c) => c,
        }
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Conn::Direct { conn, .. } => conn.as_mut().expect("connection taken only on drop"),
            Conn::Pooled(c) => c,
        }
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Conn::Direct { conn, direct, .. } = self
            && let Some(c) = conn.take()
        {
            direct.idle.lock().unwrap_or_else(|e| e.into_inner()).push(c);
        }
    }
}

/// Settings every SQLite connection gets when it opens.
async fn prepare_sqlite(conn: &mut AnyConnection) -> sqlx::Result<()> {
    // WAL lets readers run beside the writer; NORMAL sync is durable against a killed
    // process (the WAL is in the OS), which is the guarantee kairan gives for
    // acknowledged events.
    conn.execute(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
    )
    .await?;
    Ok(())
}

/// What the `Store` keeps in memory: answers to the hottest lookups (every request checks
/// its access token, every send reads its room's version), each changed only through
/// this `Store`, which forgets what a write makes stale; and the events waiting for the
/// next group commit.
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
            // A pooled SQLite connection is a file handle that cannot go stale; pinging it
            // before each use would double the thread round trips of every query.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        prepare_sqlite(conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot open database {}: {e}", redact_url(&url)))?;
        let direct = Direct { idle: Default::default(), permits: tokio::sync::Semaphore::new(max as usize), options };
        let store = Self { pool, backend, memo: Default::default(), direct: std::sync::Arc::new(direct) };
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

    /// A connection for single statements (see [`Direct`]).
    async fn conn(&self) -> sqlx::Result<Conn<'_>> {
        if self.backend == Backend::Postgres {
            return Ok(Conn::Pooled(self.pool.acquire().await?));
        }
        let permit = self.direct.permits.acquire().await.map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.direct.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => {
                let mut c = self.direct.options.connect().await?;
                prepare_sqlite(&mut c).await?;
                c
            }
        };
        Ok(Conn::Direct { conn: Some(conn), direct: &self.direct, _permit: permit })
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
        self.direct.permits.close();
        let idle: Vec<AnyConnection> = std::mem::take(&mut *self.direct.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for conn in idle {
            let _ = sqlx::Connection::close(conn).await;
        }
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
        sqlx::query_scalar("SELECT value FROM counters WHERE name = 'stream'").fetch_one(&mut *self.conn().await?).await
    }
}

/// A database URL with any password removed, for messages and logs.
/// The SQL condition that `column` (a user ID) is not one of the server's own accounts
/// (`@_kairan…`, see `admin::RESERVED_LOCALPART_PREFIX`), which lists, figures and the
/// user directory leave out: they are not staff.
pub(crate) fn not_a_server_account(column: &str) -> String {
    format!("substr({column}, 1, 8) <> '@_kairan'")
}

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
