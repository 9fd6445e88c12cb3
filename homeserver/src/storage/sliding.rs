//! Simplified sliding sync (MSC4186): connection snapshots and bump stamps.

use sqlx::{AssertSqlSafe, Row};

use super::Store;

/// What a sliding sync connection has been sent, as stored.
#[derive(Debug, Clone)]
pub struct SlidingSnapshot {
    pub id: i64,
    pub rooms_json: String,
    pub lists_json: String,
}

impl Store {
    /// Snapshot `id`, if it exists and belongs to this connection.
    pub async fn sliding_snapshot(
        &self,
        id: i64,
        user_id: &str,
        device_id: &str,
        conn_id: &str,
    ) -> sqlx::Result<Option<SlidingSnapshot>> {
        let row = sqlx::query(
            "SELECT id, rooms_json, lists_json FROM sliding_sync_snapshots \
             WHERE id = $1 AND user_id = $2 AND device_id = $3 AND conn_id = $4",
        )
        .bind(id)
        .bind(user_id)
        .bind(device_id)
        .bind(conn_id)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.map(|r| Ok(SlidingSnapshot { id: r.try_get(0)?, rooms_json: r.try_get(1)?, lists_json: r.try_get(2)? }))
            .transpose()
    }

    /// Stores a new snapshot of a connection. Drops the connection's snapshots older than
    /// `based_on` (the one the request continued from: the client has moved past the older
    /// ones, while it may still retry this one, and a concurrent request from it may still
    /// answer), or all of them when the request started the connection afresh. Returns the
    /// new ID, which is larger than any before it.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_sliding_snapshot(
        &self,
        user_id: &str,
        device_id: &str,
        conn_id: &str,
        based_on: Option<i64>,
        rooms_json: &str,
        lists_json: &str,
        now_ms: i64,
    ) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        let id = Self::next_counter(&mut tx, "sliding_sync").await?;
        sqlx::query(
            "DELETE FROM sliding_sync_snapshots WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 \
             AND ($4 IS NULL OR id < $4)",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(conn_id)
        .bind(based_on)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO sliding_sync_snapshots (id, user_id, device_id, conn_id, rooms_json, lists_json, created_ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(user_id)
        .bind(device_id)
        .bind(conn_id)
        .bind(rooms_json)
        .bind(lists_json)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The stream position of the latest event in a room at or below `to` that is of one
    /// of `types`, or a membership event of `member` if given: the room's "bump stamp".
    pub async fn latest_bump(
        &self,
        room_id: &str,
        member: Option<&str>,
        types: &[String],
        to: i64,
    ) -> sqlx::Result<Option<i64>> {
        // Only placeholders are formatted into the statement; the values are bound.
        let mut clauses = Vec::new();
        let mut next = 3;
        if member.is_some() {
            clauses.push("(event_type = 'm.room.member' AND state_key = $3)".to_owned());
            next += 1;
        }
        if !types.is_empty() {
            let placeholders: Vec<String> = (next..next + types.len()).map(|i| format!("${i}")).collect();
            clauses.push(format!("event_type IN ({})", placeholders.join(", ")));
        }
        if clauses.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT stream_ordering FROM events WHERE room_id = $1 AND stream_ordering <= $2 AND ({}) \
             ORDER BY stream_ordering DESC LIMIT 1",
            clauses.join(" OR ")
        );
        let mut query = sqlx::query_scalar(AssertSqlSafe(sql)).bind(room_id).bind(to);
        if let Some(member) = member {
            query = query.bind(member);
        }
        for t in types {
            query = query.bind(t);
        }
        query.fetch_optional(&mut *self.conn().await?).await
    }
}
