//! The archive database over sqlx: SQLite (default) or PostgreSQL, one set of queries
//! (`$1` parameters) through sqlx's `Any` driver, two migration folders.
//!
//! Appends are serialised across processes (the daemon and the CLI may write at the same
//! time) by updating the single `log_state` row first in every appending transaction:
//! SQLite takes its write lock, PostgreSQL a row lock, so sequence numbers never collide
//! and never leave gaps.

use std::str::FromStr as _;

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use sqlx::{
    AnyPool, Executor as _, Row as _,
    any::{AnyConnectOptions, AnyPoolOptions, AnyRow},
};

use crate::{
    keys,
    merkle::{self, Hash},
    record::{NewRecord, Record, new_salt, payload_hash},
    retention::now_ms,
};

/// Which engine holds the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the archive database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Archive {
    pool: AnyPool,
    backend: Backend,
}

/// A signed tree head as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TreeHead {
    pub id: i64,
    pub tree_size: i64,
    pub root_hash: String,
    pub created_ts: i64,
    pub key_id: String,
    pub public_key: String,
    pub signature: String,
}

impl TreeHead {
    /// The signed message.
    pub fn message(&self) -> String {
        let root = merkle::from_hex(&self.root_hash).unwrap_or([0; 32]);
        keys::head_message(self.tree_size as u64, &root, self.created_ts)
    }
}

/// A co-signature of a tree head.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Cosignature {
    pub head_id: i64,
    pub key_id: String,
    pub public_key: String,
    pub signature: String,
    pub created_ts: i64,
}

/// A room the bridge knows.
#[derive(Debug, Clone)]
pub struct RoomRow {
    pub room_id: String,
    pub policy: Option<String>,
    pub official: bool,
    pub cursor: Option<String>,
}

/// Work still to do for an archived event.
#[derive(Debug, Clone)]
pub struct Pending {
    pub dedup_key: String,
    pub kind: String,
    pub room_id: String,
    pub event_id: String,
    pub source_seq: i64,
    pub attempts: i64,
}

const RECORD_COLUMNS: &str = "seq, kind, dedup_key, room_id, event_id, event_type, sender, origin_ts, archived_ts, \
     retention, expires, on_expiry, payload, payload_salt, payload_hash, note, leaf_hash, signature, disposed_by";

fn record_from_row(row: &AnyRow) -> sqlx::Result<Record> {
    Ok(Record {
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        dedup_key: row.try_get("dedup_key")?,
        room_id: row.try_get("room_id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        sender: row.try_get("sender")?,
        origin_ts: row.try_get("origin_ts")?,
        archived_ts: row.try_get("archived_ts")?,
        retention: row.try_get("retention")?,
        expires: row.try_get("expires")?,
        on_expiry: row.try_get("on_expiry")?,
        payload: row.try_get("payload")?,
        payload_salt: row.try_get("payload_salt")?,
        payload_hash: row.try_get("payload_hash")?,
        note: row.try_get("note")?,
        leaf_hash: row.try_get("leaf_hash")?,
        signature: row.try_get("signature")?,
        disposed_by: row.try_get("disposed_by")?,
    })
}

fn head_from_row(row: &AnyRow) -> sqlx::Result<TreeHead> {
    Ok(TreeHead {
        id: row.try_get("id")?,
        tree_size: row.try_get("tree_size")?,
        root_hash: row.try_get("root_hash")?,
        created_ts: row.try_get("created_ts")?,
        key_id: row.try_get("key_id")?,
        public_key: row.try_get("public_key")?,
        signature: row.try_get("signature")?,
    })
}

/// A database URL without its password, for messages.
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

impl Archive {
    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("the archive database URL must start with sqlite:// or postgres://, got {url:?}");
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        if backend == Backend::Sqlite
            && let Some(path) = url.strip_prefix("sqlite://").and_then(|p| p.split('?').next())
            && let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL and NORMAL: a killed process loses nothing that was committed.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 30000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the archive database {}: {e}", redact_url(&url)))?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        // PostgreSQL migrations take an advisory lock; SQLite's do not, so a daemon and a
        // command opening a new archive at the same moment can race. Each migration is one
        // transaction, so the loser rolls back and, retried, finds the work done.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match migrator.run(&pool).await {
                Ok(()) => break,
                Err(e) if attempt < 10 && backend == Backend::Sqlite => {
                    tracing::debug!(error = %e, "migration raced with another process; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(anyhow::Error::new(e).context("migrating the archive database")),
            }
        }
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts an appending transaction (taking the log's write lock).
    pub async fn begin_append(&self) -> anyhow::Result<AppendTx> {
        let mut tx = self.pool.begin().await?;
        let size: i64 = sqlx::query_scalar("UPDATE log_state SET size = size WHERE id = 1 RETURNING size")
            .fetch_one(&mut *tx)
            .await
            .context("locking the log")?;
        Ok(AppendTx { tx, size, start: size, appended: Vec::new() })
    }

    /// Appends records in one transaction; returns the sequence numbers of those appended
    /// (`None` for a duplicate).
    pub async fn append(&self, key: &SigningKey, records: Vec<NewRecord>) -> anyhow::Result<Vec<Option<i64>>> {
        let mut tx = self.begin_append().await?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            out.push(tx.append(key, r).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The number of records (the tree size).
    pub async fn size(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT size FROM log_state WHERE id = 1").fetch_one(&self.pool).await?)
    }

    /// Records with `from <= seq < to`, in order.
    pub async fn records_range(&self, from: i64, to: i64) -> anyhow::Result<Vec<Record>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE seq >= $1 AND seq < $2 ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(from).bind(to).fetch_all(&self.pool).await?;
        rows.iter().map(record_from_row).collect::<sqlx::Result<_>>().map_err(Into::into)
    }

    /// Every record of a room, in order.
    pub async fn room_records(&self, room_id: &str) -> anyhow::Result<Vec<Record>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE room_id = $1 ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).fetch_all(&self.pool).await?;
        rows.iter().map(record_from_row).collect::<sqlx::Result<_>>().map_err(Into::into)
    }

    /// Records of the given kinds, in order.
    pub async fn records_of_kind(&self, kind: &str) -> anyhow::Result<Vec<Record>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE kind = $1 ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(kind).fetch_all(&self.pool).await?;
        rows.iter().map(record_from_row).collect::<sqlx::Result<_>>().map_err(Into::into)
    }

    /// The record with this dedup key.
    pub async fn record_by_key(&self, dedup_key: &str) -> anyhow::Result<Option<Record>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE dedup_key = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(dedup_key).fetch_optional(&self.pool).await?;
        row.as_ref().map(record_from_row).transpose().map_err(Into::into)
    }

    /// The stored leaf hashes of the first `size` records (for proofs), in order.
    pub async fn leaf_hashes(&self, size: i64) -> anyhow::Result<Vec<Hash>> {
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT seq, leaf_hash FROM records WHERE seq < $1 ORDER BY seq")
            .bind(size)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (i, (seq, h)) in rows.into_iter().enumerate() {
            anyhow::ensure!(seq == i as i64, "record {i} is missing from the log");
            out.push(merkle::from_hex(&h).with_context(|| format!("record {seq}: bad leaf hash"))?);
        }
        Ok(out)
    }

    /// Signs a tree head over the whole log as it is now. With `only_if_grown`, does
    /// nothing when the latest head already covers every record.
    pub async fn sign_head(&self, key: &SigningKey, only_if_grown: bool) -> anyhow::Result<Option<TreeHead>> {
        let mut tx = self.begin_append().await?;
        let size = tx.size;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(tree_size) FROM tree_heads").fetch_one(&mut *tx.tx).await?;
        if only_if_grown && last.is_some_and(|l| l >= size) {
            tx.rollback().await?;
            return Ok(None);
        }
        let head = tx.sign_head(key).await?;
        tx.commit().await?;
        Ok(Some(head))
    }

    /// Every tree head, oldest first.
    pub async fn heads(&self) -> anyhow::Result<Vec<TreeHead>> {
        let rows = sqlx::query(
            "SELECT id, tree_size, root_hash, created_ts, key_id, public_key, signature FROM tree_heads ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(head_from_row).collect::<sqlx::Result<_>>().map_err(Into::into)
    }

    /// The newest signed tree head, and the newest with at least one co-signature stored
    /// (`cosign` verifies before it stores). Two indexed lookups, cheap enough for every scrape.
    pub async fn newest_heads(&self) -> anyhow::Result<(Option<TreeHead>, Option<TreeHead>)> {
        const COLUMNS: &str = "id, tree_size, root_hash, created_ts, key_id, public_key, signature";
        let newest =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM tree_heads ORDER BY id DESC LIMIT 1")))
                .fetch_optional(&self.pool)
                .await?;
        let cosigned = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tree_heads h WHERE EXISTS (SELECT 1 FROM cosignatures c WHERE c.head_id = h.id) \
             ORDER BY id DESC LIMIT 1"
        )))
        .fetch_optional(&self.pool)
        .await?;
        Ok((newest.as_ref().map(head_from_row).transpose()?, cosigned.as_ref().map(head_from_row).transpose()?))
    }

    /// Every co-signature.
    pub async fn cosignatures(&self) -> anyhow::Result<Vec<Cosignature>> {
        let rows: Vec<(i64, String, String, String, i64)> = sqlx::query_as(
            "SELECT head_id, key_id, public_key, signature, created_ts FROM cosignatures ORDER BY head_id, key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(head_id, key_id, public_key, signature, created_ts)| Cosignature {
                head_id,
                key_id,
                public_key,
                signature,
                created_ts,
            })
            .collect())
    }

    /// Stores a co-signature (replacing an earlier one by the same key on the same head).
    pub async fn add_cosignature(&self, c: &Cosignature) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM cosignatures WHERE head_id = $1 AND key_id = $2")
            .bind(c.head_id)
            .bind(&c.key_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO cosignatures (head_id, key_id, public_key, signature, created_ts) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(c.head_id)
        .bind(&c.key_id)
        .bind(&c.public_key)
        .bind(&c.signature)
        .bind(c.created_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records or updates a room's policy and whether it is official.
    pub async fn upsert_room(&self, room_id: &str, policy: Option<&str>, official: bool) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO rooms (room_id, policy, official, updated_ts) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id) DO UPDATE SET policy = excluded.policy, official = excluded.official, updated_ts = excluded.updated_ts",
        )
        .bind(room_id)
        .bind(policy)
        .bind(i64::from(official))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every room the bridge knows.
    pub async fn rooms(&self) -> anyhow::Result<Vec<RoomRow>> {
        let rows: Vec<(String, Option<String>, i64, Option<String>)> =
            sqlx::query_as("SELECT room_id, policy, official, cursor FROM rooms ORDER BY room_id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(room_id, policy, official, cursor)| RoomRow { room_id, policy, official: official != 0, cursor })
            .collect())
    }

    /// One room.
    pub async fn room(&self, room_id: &str) -> anyhow::Result<Option<RoomRow>> {
        Ok(self.rooms().await?.into_iter().find(|r| r.room_id == room_id))
    }

    /// Pending work that is due now.
    pub async fn due_pending(&self, now: i64) -> anyhow::Result<Vec<Pending>> {
        let rows: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT dedup_key, kind, room_id, event_id, source_seq, attempts FROM pending WHERE next_ts <= $1 ORDER BY source_seq",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(dedup_key, kind, room_id, event_id, source_seq, attempts)| Pending {
                dedup_key,
                kind,
                room_id,
                event_id,
                source_seq,
                attempts,
            })
            .collect())
    }

    /// How much work is pending.
    pub async fn pending_count(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM pending").fetch_one(&self.pool).await?)
    }

    /// How much work is pending, by kind (`decrypt`, `attachment`).
    pub async fn pending_by_kind(&self) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as("SELECT kind, COUNT(*) FROM pending GROUP BY kind ORDER BY kind")
            .fetch_all(&self.pool)
            .await?)
    }

    /// The `origin_server_ts` of a room's newest archived event (by archive order: the
    /// `(room_id, seq)` index read backwards, so it costs one row, not the room).
    pub async fn newest_event_ts(&self, room_id: &str) -> anyhow::Result<Option<i64>> {
        let ts: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT origin_ts FROM records WHERE room_id = $1 AND kind = 'event' AND origin_ts IS NOT NULL \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(ts.flatten())
    }

    /// Notes a failed attempt; retried after `retry_in_ms`.
    pub async fn pending_failed(&self, dedup_key: &str, error: &str, retry_at: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE pending SET attempts = attempts + 1, next_ts = $2, last_error = $3 WHERE dedup_key = $1")
            .bind(dedup_key)
            .bind(retry_at)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Number of records per kind in a room (all rooms with `None`).
    pub async fn counts(&self) -> anyhow::Result<Vec<(Option<String>, String, i64)>> {
        Ok(sqlx::query_as("SELECT room_id, kind, COUNT(*) FROM records GROUP BY room_id, kind ORDER BY room_id, kind")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Direct access for the few places that need their own transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// An appending transaction: holds the log's write lock until commit or rollback.
pub struct AppendTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    size: i64,
    start: i64,
    /// The kinds of the records appended so far, for [`commit_appended`](Self::commit_appended).
    appended: Vec<String>,
}

impl AppendTx {
    /// The log size including what this transaction appended so far.
    pub fn size(&self) -> i64 {
        self.size
    }

    /// Appends one record unless its dedup key exists; returns its sequence number.
    pub async fn append(&mut self, key: &SigningKey, new: NewRecord) -> anyhow::Result<Option<i64>> {
        if let Some(dedup) = &new.dedup_key {
            let exists: Option<i64> = sqlx::query_scalar("SELECT seq FROM records WHERE dedup_key = $1")
                .bind(dedup)
                .fetch_optional(&mut *self.tx)
                .await?;
            if exists.is_some() {
                return Ok(None);
            }
        }
        let salt = new_salt();
        let mut record = Record {
            seq: self.size,
            kind: new.kind,
            dedup_key: new.dedup_key,
            room_id: new.room_id,
            event_id: new.event_id,
            event_type: new.event_type,
            sender: new.sender,
            origin_ts: new.origin_ts,
            archived_ts: now_ms(),
            retention: new.retention,
            expires: new.expires,
            on_expiry: new.on_expiry,
            payload_hash: payload_hash(&salt, &new.payload),
            payload: Some(new.payload),
            payload_salt: Some(salt),
            note: new.note,
            leaf_hash: String::new(),
            signature: String::new(),
            disposed_by: None,
        };
        let leaf = record.compute_leaf_hash();
        record.leaf_hash = merkle::to_hex(&leaf);
        record.signature = keys::sign(key, &keys::record_message(&leaf));
        let sql = format!(
            "INSERT INTO records ({RECORD_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(record.seq)
            .bind(&record.kind)
            .bind(&record.dedup_key)
            .bind(&record.room_id)
            .bind(&record.event_id)
            .bind(&record.event_type)
            .bind(&record.sender)
            .bind(record.origin_ts)
            .bind(record.archived_ts)
            .bind(&record.retention)
            .bind(&record.expires)
            .bind(&record.on_expiry)
            .bind(&record.payload)
            .bind(&record.payload_salt)
            .bind(&record.payload_hash)
            .bind(&record.note)
            .bind(&record.leaf_hash)
            .bind(&record.signature)
            .bind(record.disposed_by)
            .execute(&mut *self.tx)
            .await
            .with_context(|| format!("appending record {}", record.seq))?;
        self.size += 1;
        self.appended.push(record.kind);
        Ok(Some(record.seq))
    }

    /// Queues work for an archived event (in the same transaction as its record).
    pub async fn add_pending(
        &mut self,
        dedup_key: &str,
        kind: &str,
        room_id: &str,
        event_id: &str,
        source_seq: i64,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO pending (dedup_key, kind, room_id, event_id, source_seq) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (dedup_key) DO NOTHING",
        )
        .bind(dedup_key)
        .bind(kind)
        .bind(room_id)
        .bind(event_id)
        .bind(source_seq)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Removes done work.
    pub async fn remove_pending(&mut self, dedup_key: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM pending WHERE dedup_key = $1").bind(dedup_key).execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Moves a room's pagination cursor (with the records it covers).
    pub async fn set_cursor(&mut self, room_id: &str, cursor: Option<&str>) -> anyhow::Result<()> {
        sqlx::query("UPDATE rooms SET cursor = $2, updated_ts = $3 WHERE room_id = $1")
            .bind(room_id)
            .bind(cursor)
            .bind(now_ms())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Disposes of a record's payload: the one sanctioned change of a row.
    pub async fn dispose_payload(&mut self, seq: i64, disposal_seq: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE records SET payload = NULL, payload_salt = NULL, disposed_by = $2 WHERE seq = $1 AND disposed_by IS NULL")
            .bind(seq)
            .bind(disposal_seq)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Signs a head over the log as this transaction leaves it.
    pub async fn sign_head(&mut self, key: &SigningKey) -> anyhow::Result<TreeHead> {
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT seq, leaf_hash FROM records WHERE seq < $1 ORDER BY seq")
            .bind(self.size)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut peaks = merkle::Peaks::default();
        for (i, (seq, h)) in rows.iter().enumerate() {
            anyhow::ensure!(*seq == i as i64, "record {i} is missing from the log; refusing to sign");
            peaks.push(merkle::from_hex(h).with_context(|| format!("record {seq}: bad leaf hash"))?);
        }
        anyhow::ensure!(
            peaks.size() as i64 == self.size,
            "the log has {} records, expected {}",
            peaks.size(),
            self.size
        );
        let root = peaks.root();
        let id: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM tree_heads").fetch_one(&mut *self.tx).await?;
        let created_ts = now_ms();
        let public = key.verifying_key();
        let head = TreeHead {
            id,
            tree_size: self.size,
            root_hash: merkle::to_hex(&root),
            created_ts,
            key_id: keys::key_id(&public),
            public_key: keys::public_key_b64(&public),
            signature: keys::sign(key, keys::head_message(self.size as u64, &root, created_ts).as_bytes()),
        };
        sqlx::query(
            "INSERT INTO tree_heads (id, tree_size, root_hash, created_ts, key_id, public_key, signature) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(head.id)
        .bind(head.tree_size)
        .bind(&head.root_hash)
        .bind(head.created_ts)
        .bind(&head.key_id)
        .bind(&head.public_key)
        .bind(&head.signature)
        .execute(&mut *self.tx)
        .await?;
        Ok(head)
    }

    /// Reads records inside this transaction.
    pub async fn records_where_room(&mut self, room_id: &str) -> anyhow::Result<Vec<Record>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE room_id = $1 ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).fetch_all(&mut *self.tx).await?;
        rows.iter().map(record_from_row).collect::<sqlx::Result<_>>().map_err(Into::into)
    }

    /// Records of a kind inside this transaction.
    pub async fn records_of_kind(&mut self, kind: &str) -> anyhow::Result<Vec<Record>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE kind = $1 ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(kind).fetch_all(&mut *self.tx).await?;
        rows.iter().map(record_from_row).collect::<sqlx::Result<_>>().map_err(Into::into)
    }

    /// Commits: records, the new log size and any work state, at once.
    pub async fn commit(self) -> anyhow::Result<()> {
        self.commit_appended().await.map(drop)
    }

    /// Commits like [`commit`](Self::commit); returns the kinds of the records it made
    /// durable (one entry per record), so that they are counted only once they are.
    pub async fn commit_appended(mut self) -> anyhow::Result<Vec<String>> {
        if self.size != self.start {
            sqlx::query("UPDATE log_state SET size = $1 WHERE id = 1").bind(self.size).execute(&mut *self.tx).await?;
        }
        self.tx.commit().await?;
        Ok(self.appended)
    }

    pub async fn rollback(self) -> anyhow::Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}
