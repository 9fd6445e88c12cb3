//! Federation's room-side data: outliers, refused events, the outbound queue, received
//! transactions, invites to rooms this server is not in, and wholesale state changes
//! (a join's state, a resolved fork).

use std::collections::BTreeMap;

use sqlx::Row;

use super::{StateMap, Store, Tx};

/// One queued PDU or EDU for a destination.
#[derive(Debug, Clone)]
pub struct QueueItem {
    pub id: i64,
    pub payload: String,
}

/// What the queue holds: a PDU (its JSON) or an EDU (`{"edu_type", "content"}`).
pub const QUEUE_PDU: &str = "pdu";
pub const QUEUE_EDU: &str = "edu";

impl Store {
    /// Stores an event outside any timeline (known by ID, never synced).
    pub async fn insert_outlier(&self, event_id: &str, room_id: &str, pdu_json: &str) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO outliers (event_id, room_id, pdu_json) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(event_id)
            .bind(room_id)
            .bind(pdu_json)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Records a received event that was rejected or soft-failed.
    pub async fn insert_rejected(
        &self,
        event_id: &str,
        room_id: &str,
        pdu_json: &str,
        reason: &str,
        now_ms: i64,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO rejected_events (event_id, room_id, pdu_json, reason, received_ts) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(event_id)
        .bind(room_id)
        .bind(pdu_json)
        .bind(reason)
        .bind(now_ms)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    pub async fn is_rejected(&self, event_id: &str) -> sqlx::Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rejected_events WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(n > 0)
    }

    /// Whether an event is in a room's timeline (not an outlier).
    pub async fn in_timeline(&self, event_id: &str) -> sqlx::Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(n > 0)
    }

    /// Queues one payload for several destinations inside a transaction.
    pub async fn queue_in_tx(tx: &mut Tx<'_>, destinations: &[String], kind: &str, payload: &str) -> sqlx::Result<()> {
        for d in destinations {
            sqlx::query("INSERT INTO federation_queue (destination, kind, payload) VALUES ($1, $2, $3)")
                .bind(d)
                .bind(kind)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub async fn queue(&self, destinations: &[String], kind: &str, payload: &str) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        Self::queue_in_tx(&mut tx, destinations, kind, payload).await?;
        tx.commit().await
    }

    /// The oldest queued items of one kind for a destination.
    pub async fn queued(&self, destination: &str, kind: &str, limit: i64) -> sqlx::Result<Vec<QueueItem>> {
        let rows = sqlx::query(
            "SELECT id, payload FROM federation_queue WHERE destination = $1 AND kind = $2 ORDER BY id LIMIT $3",
        )
        .bind(destination)
        .bind(kind)
        .bind(limit)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok(QueueItem { id: r.try_get(0)?, payload: r.try_get(1)? })).collect()
    }

    /// Removes delivered items.
    pub async fn dequeue(&self, ids: &[i64]) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        for id in ids {
            sqlx::query("DELETE FROM federation_queue WHERE id = $1").bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Destinations with something queued, and how much.
    pub async fn queue_depths(&self) -> sqlx::Result<BTreeMap<String, i64>> {
        let rows = sqlx::query("SELECT destination, COUNT(*) FROM federation_queue GROUP BY destination")
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Whether a transaction from `origin` was processed already.
    pub async fn received_txn(&self, origin: &str, txn_id: &str) -> sqlx::Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM federation_received WHERE origin = $1 AND txn_id = $2")
            .bind(origin)
            .bind(txn_id)
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(n > 0)
    }

    /// Records a received transaction; false if it had been received before.
    pub async fn record_received_txn(&self, origin: &str, txn_id: &str, now_ms: i64) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "INSERT INTO federation_received (origin, txn_id, received_ts) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(origin)
        .bind(txn_id)
        .bind(now_ms)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_invite_stripped_state(&self, room_id: &str, user_id: &str, events: &str) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO invite_stripped_state (room_id, user_id, events) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id, user_id) DO UPDATE SET events = $3",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(events)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    pub async fn invite_stripped_state(&self, room_id: &str, user_id: &str) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT events FROM invite_stripped_state WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .fetch_optional(&mut *self.conn().await?)
            .await
    }

    /// Makes `state` the room's current state (with each member event's membership),
    /// writing only what differs, and sets the room's forward extremities when given.
    pub async fn replace_current_state(
        &self,
        room_id: &str,
        state: &StateMap,
        memberships: &BTreeMap<String, String>,
        extremities: Option<&[String]>,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query("SELECT event_type, state_key, event_id FROM current_state WHERE room_id = $1")
            .bind(room_id)
            .fetch_all(&mut *tx)
            .await?;
        let mut old = StateMap::new();
        for r in &rows {
            old.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
        }
        for ((t, k), _) in old.iter().filter(|(key, _)| !state.contains_key(*key)) {
            sqlx::query("DELETE FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3")
                .bind(room_id)
                .bind(t)
                .bind(k)
                .execute(&mut *tx)
                .await?;
        }
        for ((t, k), id) in state.iter().filter(|(key, id)| old.get(*key) != Some(*id)) {
            sqlx::query(
                "INSERT INTO current_state (room_id, event_type, state_key, event_id, membership) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, event_type, state_key) \
                 DO UPDATE SET event_id = $4, membership = $5",
            )
            .bind(room_id)
            .bind(t)
            .bind(k)
            .bind(id)
            .bind(memberships.get(id))
            .execute(&mut *tx)
            .await?;
        }
        if let Some(ids) = extremities {
            sqlx::query("DELETE FROM forward_extremities WHERE room_id = $1").bind(room_id).execute(&mut *tx).await?;
            for id in ids {
                sqlx::query("INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)")
                    .bind(room_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await
    }

    /// Stores an event of a room's history fetched from another server: at the next
    /// position below all others, with the state group it is shown with, outside the
    /// room's current state and extremities. Returns false if it was already held.
    pub async fn persist_backfilled(&self, ev: &super::NewEvent) -> sqlx::Result<bool> {
        let mut tx = self.begin().await?;
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_id = $1")
            .bind(&ev.event_id)
            .fetch_one(&mut *tx)
            .await?;
        if held > 0 {
            return Ok(false);
        }
        for prev in &ev.prev_events {
            Self::insert_edge(&mut tx, &ev.event_id, prev).await?;
        }
        let pos: i64 =
            sqlx::query_scalar("UPDATE counters SET value = value - 1 WHERE name = 'backfill' RETURNING value")
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type, state_key, depth, \
             origin_server_ts, pdu_json, state_group_before, state_group, rel_type, relates_to, search_text, \
             redacted_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14)",
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
        .bind(&ev.rel_type)
        .bind(&ev.relates_to)
        .bind(&ev.search_text)
        .bind(&ev.redacted_by)
        .execute(&mut *tx)
        .await?;
        Self::mark_redacted(&mut tx, ev).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The room's earliest event in this server's timeline (the lowest position).
    pub async fn earliest_event(&self, room_id: &str) -> sqlx::Result<Option<(String, i64)>> {
        let row = sqlx::query(
            "SELECT event_id, state_group_before FROM events WHERE room_id = $1 ORDER BY stream_ordering LIMIT 1",
        )
        .bind(room_id)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// The user IDs with membership `join` in a room's current state.
    pub async fn joined_members(&self, room_id: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT state_key FROM current_state WHERE room_id = $1 AND event_type = 'm.room.member' \
             AND membership = 'join'",
        )
        .bind(room_id)
        .fetch_all(&mut *self.conn().await?)
        .await
    }
}
