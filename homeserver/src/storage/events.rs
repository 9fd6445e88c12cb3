//! Events, the room DAG's edges and extremities, state groups and current state.

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{Store, Tx};

/// `(event type, state key) -> event ID`
pub type StateMap = BTreeMap<(String, String), String>;

/// An event as stored, with what kairan computed about it.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub pdu_json: String,
    pub redacted_by: Option<String>,
    pub replaces_state: Option<String>,
    pub txn_device: Option<String>,
    pub txn_id: Option<String>,
    pub state_group_before: i64,
    pub state_group: i64,
}

const EVENT_COLUMNS: &str = "stream_ordering, event_id, room_id, pdu_json, redacted_by, replaces_state, \
     txn_device, txn_id, state_group_before, state_group";

fn event_row(r: &AnyRow) -> sqlx::Result<EventRow> {
    Ok(EventRow {
        stream_ordering: r.try_get(0)?,
        event_id: r.try_get(1)?,
        room_id: r.try_get(2)?,
        pdu_json: r.try_get(3)?,
        redacted_by: r.try_get(4)?,
        replaces_state: r.try_get(5)?,
        txn_device: r.try_get(6)?,
        txn_id: r.try_get(7)?,
        state_group_before: r.try_get(8)?,
        state_group: r.try_get(9)?,
    })
}

/// How the state after a new event is recorded.
#[derive(Debug, Clone)]
pub enum StateDelta {
    /// Not a state event: the state after is the state before.
    Unchanged,
    /// One entry changes relative to `state_group_before`.
    Set { event_type: String, state_key: String, event_id: String },
}

/// Everything needed to persist one event atomically.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub depth: i64,
    pub origin_server_ts: i64,
    pub pdu_json: String,
    pub prev_events: Vec<String>,
    /// The state group holding the state before this event (already persisted).
    pub state_group_before: i64,
    pub state_delta: StateDelta,
    /// The event this state event replaces, for `unsigned.replaces_state`.
    pub replaces_state: Option<String>,
    /// For `m.room.member`: the membership it sets.
    pub membership: Option<String>,
    pub rel_type: Option<String>,
    pub relates_to: Option<String>,
    /// The event this redaction redacts now (set only when the redaction may take effect).
    pub redacts: Option<String>,
    /// A redaction whose target is not held yet: kept to be judged when the target arrives.
    pub withheld_redaction: Option<PendingRedaction>,
    /// The redaction, received before this event, that redacts it.
    pub redacted_by: Option<String>,
    /// `(user, device, txn_id)` for client-sent events.
    pub txn: Option<(String, String, String)>,
    /// The idempotency key of `txn` (its ID within the request path).
    pub txn_key: Option<String>,
    /// The notifications this event produces for local users.
    pub push_actions: Vec<super::PushAction>,
    /// Lower-cased text that `/search` matches (a message body, a name or topic).
    pub search_text: Option<String>,
    /// Servers to send this event to, queued in the same transaction.
    pub destinations: Vec<String>,
    /// Received from another server: events building on it may be stored already.
    pub received: bool,
}

/// A redaction whose target was not held when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRedaction {
    pub target: String,
    pub redaction: String,
    /// When the redactor lacked the `redact` level: the server the target's sender must
    /// be on for the redaction to apply.
    pub only_server: Option<String>,
}

/// Longest chain of deltas before a full snapshot is written.
const MAX_CHAIN: i64 = 64;

/// An event waiting for the next group commit, and where its outcome goes.
type Pending = (NewEvent, tokio::sync::oneshot::Sender<sqlx::Result<(i64, i64)>>);

/// Group commit of events on SQLite: whoever holds the writer commits every event waiting
/// at that moment in one transaction. Under load, events from many rooms share a commit
/// (and SQLite's write lock is taken once for them, instead of by each in turn, sleeping
/// in its busy handler); alone, an event commits at once as before.
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    pending: std::sync::Mutex<Vec<Pending>>,
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Events per commit at most, so that one commit stays short.
const MAX_GROUP: usize = 256;

impl Store {
    /// Persists an event and everything derived from it, atomically; on SQLite in a
    /// transaction it may share with events of other rooms (group commit).
    /// Returns `(stream_ordering, state_group)`.
    pub async fn persist_event(&self, ev: &NewEvent) -> sqlx::Result<(i64, i64)> {
        // PostgreSQL runs the statements of concurrent transactions in parallel (only the
        // stream counter's row lock orders their ends); one writer would serialise every
        // statement's round trip instead.
        if self.backend == super::Backend::Postgres {
            let mut tx = self.begin().await?;
            let written = Self::write_event(&mut tx, ev).await?;
            tx.commit().await?;
            return Ok(written);
        }
        let (done, mut outcome) = tokio::sync::oneshot::channel();
        self.memo.commits.pending.lock().unwrap_or_else(|e| e.into_inner()).push((ev.clone(), done));
        loop {
            let writer = self.memo.commits.writer.clone().lock_owned().await;
            match outcome.try_recv() {
                Ok(result) => return result,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err(sqlx::Error::Protocol("the group commit writing this event stopped".into()));
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            let batch: Vec<Pending> = {
                let mut pending = self.memo.commits.pending.lock().unwrap_or_else(|e| e.into_inner());
                let n = pending.len().min(MAX_GROUP);
                pending.drain(..n).collect()
            };
            // On a task of its own: a caller that goes away (its client disconnected) must
            // not cancel the commit of the others' events.
            let store = self.clone();
            let commit = tokio::spawn(async move {
                store.commit_group(batch).await;
                drop(writer);
            });
            if let Err(e) = commit.await {
                return Err(sqlx::Error::Protocol(format!("group commit failed: {e}")));
            }
        }
    }

    /// Commits `batch` in one transaction; if any event of it fails, each is retried in a
    /// transaction of its own, so that only the failing one fails.
    async fn commit_group(&self, batch: Vec<Pending>) {
        if batch.len() > 1 {
            let mut results = Vec::with_capacity(batch.len());
            if let Ok(mut tx) = self.begin().await {
                for (ev, _) in &batch {
                    match Self::write_event(&mut tx, ev).await {
                        Ok(r) => results.push(r),
                        Err(_) => break,
                    }
                }
                if results.len() == batch.len() && tx.commit().await.is_ok() {
                    for ((_, done), result) in batch.into_iter().zip(results) {
                        let _ = done.send(Ok(result));
                    }
                    return;
                }
            }
        }
        for (ev, done) in batch {
            let result = async {
                let mut tx = self.begin().await?;
                let r = Self::write_event(&mut tx, &ev).await?;
                tx.commit().await?;
                Ok(r)
            }
            .await;
            let _ = done.send(result);
        }
    }

    /// Writes an event and everything derived from it inside `tx`.
    async fn write_event(tx: &mut Tx<'_>, ev: &NewEvent) -> sqlx::Result<(i64, i64)> {
        let state_group = match &ev.state_delta {
            StateDelta::Unchanged => ev.state_group_before,
            StateDelta::Set { event_type, state_key, event_id } => {
                let mut delta = StateMap::new();
                delta.insert((event_type.clone(), state_key.clone()), event_id.clone());
                Self::insert_state_group(tx, &ev.room_id, Some(ev.state_group_before), &delta).await?
            }
        };
        // The new event takes the place of the first prev event that was an extremity (one
        // statement in the usual case of a single prev event) and the others are removed.
        let mut placed = false;
        for prev in &ev.prev_events {
            Self::insert_edge(tx, &ev.event_id, prev).await?;
            let done = if placed {
                sqlx::query("DELETE FROM forward_extremities WHERE room_id = $1 AND event_id = $2")
                    .bind(&ev.room_id)
                    .bind(prev)
                    .execute(&mut **tx)
                    .await?
            } else {
                sqlx::query("UPDATE forward_extremities SET event_id = $3 WHERE room_id = $1 AND event_id = $2")
                    .bind(&ev.room_id)
                    .bind(prev)
                    .bind(&ev.event_id)
                    .execute(&mut **tx)
                    .await?
            };
            placed |= done.rows_affected() > 0;
        }
        // A received event whose child is already stored (the child came first, through a
        // gap) is no extremity: something builds on it. A local event is new, so has none.
        let has_child = ev.received
            && sqlx::query_scalar::<_, i64>("SELECT 1 FROM event_edges WHERE prev_event_id = $1 LIMIT 1")
                .bind(&ev.event_id)
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
        if has_child && placed {
            sqlx::query("DELETE FROM forward_extremities WHERE room_id = $1 AND event_id = $2")
                .bind(&ev.room_id)
                .bind(&ev.event_id)
                .execute(&mut **tx)
                .await?;
        } else if !placed && !has_child {
            sqlx::query("INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)")
                .bind(&ev.room_id)
                .bind(&ev.event_id)
                .execute(&mut **tx)
                .await?;
        }
        if let Some(state_key) = &ev.state_key {
            sqlx::query(
                "INSERT INTO current_state (room_id, event_type, state_key, event_id, membership) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, event_type, state_key) \
                 DO UPDATE SET event_id = $4, membership = $5",
            )
            .bind(&ev.room_id)
            .bind(&ev.event_type)
            .bind(state_key)
            .bind(&ev.event_id)
            .bind(&ev.membership)
            .execute(&mut **tx)
            .await?;
        }
        Self::mark_redacted(tx, ev).await?;
        if let (Some((user, device, _)), Some(key)) = (&ev.txn, &ev.txn_key) {
            sqlx::query("INSERT INTO transactions (user_id, device_id, txn_id, event_id) VALUES ($1, $2, $3, $4)")
                .bind(user)
                .bind(device)
                .bind(key)
                .bind(&ev.event_id)
                .execute(&mut **tx)
                .await?;
        }
        Self::insert_push_actions(tx, &ev.event_id, &ev.room_id, &ev.push_actions).await?;
        Self::queue_in_tx(tx, &ev.destinations, super::QUEUE_PDU, &ev.pdu_json).await?;
        let pos = Self::next_counter(tx, "stream").await?;
        sqlx::query(
            "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type, state_key, depth, \
             origin_server_ts, pdu_json, state_group_before, state_group, replaces_state, rel_type, relates_to, \
             txn_device, txn_id, search_text, redacted_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(pos)
        .bind(&ev.event_id)
        .bind(&ev.room_id)
        .bind(&ev.sender)
        .bind(&ev.event_type)
        .bind(&ev.state_key)
        .bind(ev.depth)
        .bind(ev.origin_server_ts)
        .bind(&ev.pdu_json)
        .bind(ev.state_group_before)
        .bind(state_group)
        .bind(&ev.replaces_state)
        .bind(&ev.rel_type)
        .bind(&ev.relates_to)
        .bind(ev.txn.as_ref().map(|t| &t.1))
        .bind(ev.txn.as_ref().map(|t| &t.2))
        .bind(&ev.search_text)
        .bind(&ev.redacted_by)
        .execute(&mut **tx)
        .await?;
        Ok((pos, state_group))
    }

    /// Records that `event_id` follows `prev` in the room's DAG.
    pub(super) async fn insert_edge(tx: &mut Tx<'_>, event_id: &str, prev: &str) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO event_edges (event_id, prev_event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(event_id)
            .bind(prev)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Marks the event a redaction redacts (the first redaction wins), or keeps a
    /// redaction whose target is not held; forgets redactions withheld for `ev` itself.
    pub(super) async fn mark_redacted(tx: &mut Tx<'_>, ev: &NewEvent) -> sqlx::Result<()> {
        if let Some(p) = &ev.withheld_redaction {
            sqlx::query(
                "INSERT INTO withheld_redactions (target_id, redaction_id, room_id, only_server) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&p.target)
            .bind(&p.redaction)
            .bind(&ev.room_id)
            .bind(&p.only_server)
            .execute(&mut **tx)
            .await?;
        }
        if ev.redacted_by.is_some() {
            sqlx::query("DELETE FROM withheld_redactions WHERE target_id = $1")
                .bind(&ev.event_id)
                .execute(&mut **tx)
                .await?;
        }
        if let Some(redacts) = &ev.redacts {
            sqlx::query(
                "UPDATE events SET redacted_by = $1 WHERE event_id = $2 AND room_id = $3 AND redacted_by IS NULL",
            )
            .bind(&ev.event_id)
            .bind(redacts)
            .bind(&ev.room_id)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Redactions of `target_id` (in `room_id`) that arrived before it, oldest first.
    pub async fn withheld_redactions_of(&self, target_id: &str, room_id: &str) -> sqlx::Result<Vec<PendingRedaction>> {
        let rows = sqlx::query(
            "SELECT redaction_id, only_server FROM withheld_redactions WHERE target_id = $1 AND room_id = $2 \
             ORDER BY redaction_id",
        )
        .bind(target_id)
        .bind(room_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(PendingRedaction {
                    target: target_id.to_owned(),
                    redaction: r.try_get(0)?,
                    only_server: r.try_get(1)?,
                })
            })
            .collect()
    }

    /// Writes a state group: a delta on `prev`, or a full snapshot when `prev` is `None`
    /// or its chain is already long.
    pub async fn insert_state_group(
        tx: &mut Tx<'_>,
        room_id: &str,
        prev: Option<i64>,
        delta: &StateMap,
    ) -> sqlx::Result<i64> {
        let id = Self::next_counter(tx, "state_group").await?;
        let prev_len = match prev {
            Some(p) => {
                sqlx::query_scalar::<_, i64>("SELECT chain_len FROM state_groups WHERE id = $1")
                    .bind(p)
                    .fetch_one(&mut **tx)
                    .await?
            }
            None => 0,
        };
        let (prev, chain_len, entries) = match prev {
            Some(p) if prev_len < MAX_CHAIN => (Some(p), prev_len + 1, delta.clone()),
            Some(p) => {
                let mut full = Self::load_state_group_tx(tx, p).await?;
                full.extend(delta.iter().map(|(k, v)| (k.clone(), v.clone())));
                (None, 0, full)
            }
            None => (None, 0, delta.clone()),
        };
        sqlx::query("INSERT INTO state_groups (id, room_id, prev_group, chain_len) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(room_id)
            .bind(prev)
            .bind(chain_len)
            .execute(&mut **tx)
            .await?;
        for ((event_type, state_key), event_id) in &entries {
            sqlx::query(
                "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(event_type)
            .bind(state_key)
            .bind(event_id)
            .execute(&mut **tx)
            .await?;
        }
        Ok(id)
    }

    /// A new full-snapshot state group, in its own transaction.
    pub async fn create_state_group(&self, room_id: &str, state: &StateMap) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        let id = Self::insert_state_group(&mut tx, room_id, None, state).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn load_state_group_tx(tx: &mut Tx<'_>, group: i64) -> sqlx::Result<StateMap> {
        let mut state = StateMap::new();
        let mut next = Some(group);
        while let Some(g) = next {
            let rows =
                sqlx::query("SELECT event_type, state_key, event_id FROM state_group_entries WHERE state_group = $1")
                    .bind(g)
                    .fetch_all(&mut **tx)
                    .await?;
            for r in rows {
                state.entry((r.try_get(0)?, r.try_get(1)?)).or_insert(r.try_get(2)?);
            }
            next = sqlx::query_scalar::<_, Option<i64>>("SELECT prev_group FROM state_groups WHERE id = $1")
                .bind(g)
                .fetch_one(&mut **tx)
                .await?;
        }
        Ok(state)
    }

    /// The full state map of a state group.
    pub async fn state_group(&self, group: i64) -> sqlx::Result<StateMap> {
        let mut tx = self.begin().await?;
        let state = Self::load_state_group_tx(&mut tx, group).await?;
        tx.rollback().await?;
        Ok(state)
    }

    /// An event by ID: from a timeline, or else an outlier (with stream ordering and
    /// state groups 0, as it has neither).
    pub async fn event(&self, event_id: &str) -> sqlx::Result<Option<EventRow>> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1")))
            .bind(event_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        if let Some(row) = row {
            return event_row(&row).map(Some);
        }
        let outlier = sqlx::query("SELECT room_id, pdu_json FROM outliers WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        outlier
            .map(|r| {
                Ok(EventRow {
                    stream_ordering: 0,
                    event_id: event_id.to_owned(),
                    room_id: r.try_get(0)?,
                    pdu_json: r.try_get(1)?,
                    redacted_by: None,
                    replaces_state: None,
                    txn_device: None,
                    txn_id: None,
                    state_group_before: 0,
                    state_group: 0,
                })
            })
            .transpose()
    }

    /// The lowest depth of the events this server took into a room's timeline as they
    /// came (not outliers, not backfilled history, which has positions below 0).
    pub async fn min_depth(&self, room_id: &str) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar("SELECT MIN(depth) FROM events WHERE room_id = $1 AND stream_ordering > 0")
            .bind(room_id)
            .fetch_one(&mut *self.conn().await?)
            .await
    }

    /// The event with the highest stream ordering at or below `pos` in a room.
    pub async fn last_event_at(&self, room_id: &str, pos: i64) -> sqlx::Result<Option<EventRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering <= $2 \
             ORDER BY stream_ordering DESC LIMIT 1"
        )))
        .bind(room_id)
        .bind(pos)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.as_ref().map(event_row).transpose()
    }

    /// Events of a room with `from < stream_ordering <= to`, newest first when `backwards`.
    pub async fn room_events(
        &self,
        room_id: &str,
        from_exclusive: i64,
        to_inclusive: i64,
        backwards: bool,
        limit: i64,
    ) -> sqlx::Result<Vec<EventRow>> {
        let order = if backwards { "DESC" } else { "ASC" };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > $2 \
             AND stream_ordering <= $3 ORDER BY stream_ordering {order} LIMIT $4"
        )))
        .bind(room_id)
        .bind(from_exclusive)
        .bind(to_inclusive)
        .bind(limit)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// Events of `room_id` that relate to `event_id`, optionally of one relation type,
    /// oldest first. An event of another room naming it is no relation of it.
    #[allow(clippy::too_many_arguments)]
    pub async fn relations(
        &self,
        room_id: &str,
        event_id: &str,
        rel_type: Option<&str>,
        from_exclusive: i64,
        to_inclusive: i64,
        backwards: bool,
        limit: i64,
    ) -> sqlx::Result<Vec<EventRow>> {
        let order = if backwards { "DESC" } else { "ASC" };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE relates_to = $1 AND ($2 IS NULL OR rel_type = $2) \
             AND stream_ordering > $3 AND stream_ordering <= $4 AND room_id = $6 ORDER BY stream_ordering {order} LIMIT $5"
        )))
        .bind(event_id)
        .bind(rel_type)
        .bind(from_exclusive)
        .bind(to_inclusive)
        .bind(limit)
        .bind(room_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// Unredacted events relating to each `(event_id, room_id)` given, from that room only.
    pub async fn relations_of(&self, events: &[(String, String)]) -> sqlx::Result<Vec<EventRow>> {
        let mut out = Vec::new();
        for (id, room_id) in events {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE relates_to = $1 AND room_id = $2 AND redacted_by IS NULL \
                 ORDER BY stream_ordering"
            )))
            .bind(id)
            .bind(room_id)
            .fetch_all(&mut *self.conn().await?)
            .await?;
            for r in &rows {
                out.push(event_row(r)?);
            }
        }
        Ok(out)
    }

    /// Thread roots of a room with their latest reply's position, most recent first,
    /// among threads whose latest reply is at or below `before`.
    pub async fn thread_roots(&self, room_id: &str, before: i64, limit: i64) -> sqlx::Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT relates_to, MAX(stream_ordering) AS latest FROM events WHERE room_id = $1 AND rel_type = 'm.thread' \
             GROUP BY relates_to HAVING MAX(stream_ordering) <= $2 ORDER BY latest DESC LIMIT $3",
        )
        .bind(room_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Events of the given rooms whose search text contains `term` (lower-case), newest
    /// first, below `before`.
    pub async fn search_events(
        &self,
        room_id: &str,
        term: &str,
        before: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<EventRow>> {
        let pattern = format!("%{}%", term.replace(['%', '_', '\\'], ""));
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND search_text LIKE $2 AND redacted_by IS NULL \
             AND stream_ordering < $3 ORDER BY stream_ordering DESC LIMIT $4"
        )))
        .bind(room_id)
        .bind(pattern)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// The forward extremities with each one's state group and depth (`None` for an
    /// extremity not among the room's timeline events).
    pub async fn forward_extremities_at(&self, room_id: &str) -> sqlx::Result<Vec<(String, Option<(i64, i64)>)>> {
        let rows = sqlx::query(
            "SELECT f.event_id, e.state_group, e.depth FROM forward_extremities f \
             LEFT JOIN events e ON e.event_id = f.event_id WHERE f.room_id = $1 ORDER BY f.event_id",
        )
        .bind(room_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                let group: Option<i64> = r.try_get(1)?;
                let depth: Option<i64> = r.try_get(2)?;
                Ok((r.try_get(0)?, group.zip(depth)))
            })
            .collect()
    }

    pub async fn forward_extremities(&self, room_id: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT event_id FROM forward_extremities WHERE room_id = $1 ORDER BY event_id")
            .bind(room_id)
            .fetch_all(&mut *self.conn().await?)
            .await
    }

    /// The event a device's transaction produced, if it was already sent.
    pub async fn transaction_event(&self, user: &str, device: &str, txn_id: &str) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT event_id FROM transactions WHERE user_id = $1 AND device_id = $2 AND txn_id = $3")
            .bind(user)
            .bind(device)
            .bind(txn_id)
            .fetch_optional(&mut *self.conn().await?)
            .await
    }

    /// Current state of a room.
    pub async fn current_state(&self, room_id: &str) -> sqlx::Result<StateMap> {
        let rows = sqlx::query("SELECT event_type, state_key, event_id FROM current_state WHERE room_id = $1")
            .bind(room_id)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(|r| Ok(((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?))).collect()
    }

    pub async fn current_state_event(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar(
            "SELECT event_id FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3",
        )
        .bind(room_id)
        .bind(event_type)
        .bind(state_key)
        .fetch_optional(&mut *self.conn().await?)
        .await
    }

    /// Membership changes of `user_id` with `since < stream_ordering <= to`.
    pub async fn membership_changes(&self, user_id: &str, since: i64, to: i64) -> sqlx::Result<Vec<EventRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE state_key = $1 AND event_type = 'm.room.member' \
             AND stream_ordering > $2 AND stream_ordering <= $3 ORDER BY stream_ordering"
        )))
        .bind(user_id)
        .bind(since)
        .bind(to)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// Rooms with an event in `(since, to]`, among those given.
    pub async fn rooms_with_events_since(&self, since: i64, to: i64) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT DISTINCT room_id FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2")
            .bind(since)
            .bind(to)
            .fetch_all(&mut *self.conn().await?)
            .await
    }
}
