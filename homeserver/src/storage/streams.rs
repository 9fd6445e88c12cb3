//! Stream-positioned data other than events: receipts, to-device messages, presence.

use sqlx::Row;

use super::Store;

#[derive(Debug, Clone)]
pub struct ToDeviceRow {
    pub stream_pos: i64,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

/// `(room_id, receipt_type, user_id, thread_id, event_id, ts)`
pub type ReceiptRow = (String, String, String, String, String, i64);

/// A row of the receipt columns in [`ReceiptRow`]'s order.
fn receipt_row(r: &sqlx::any::AnyRow) -> sqlx::Result<ReceiptRow> {
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?))
}

impl Store {
    /// Records a receipt; returns its stream position.
    pub async fn put_receipt(
        &self,
        room_id: &str,
        receipt_type: &str,
        user_id: &str,
        thread_id: &str,
        event_id: &str,
        ts: i64,
    ) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        let pos = Self::next_counter(&mut tx, "stream").await?;
        sqlx::query(
            "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room_id, receipt_type, user_id, thread_id) \
             DO UPDATE SET event_id = $5, ts = $6, stream_pos = $7",
        )
        .bind(room_id)
        .bind(receipt_type)
        .bind(user_id)
        .bind(thread_id)
        .bind(event_id)
        .bind(ts)
        .bind(pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(pos)
    }

    /// Receipts in a room changed in `(since, to]`.
    pub async fn receipts_since(&self, room_id: &str, since: i64, to: i64) -> sqlx::Result<Vec<ReceiptRow>> {
        let rows = sqlx::query(
            "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts \
             WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3",
        )
        .bind(room_id)
        .bind(since)
        .bind(to)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(receipt_row).collect()
    }

    /// Receipts in `(since, to]` in every room `user_id` is joined to, by room.
    pub async fn receipts_in_joined_rooms(
        &self,
        user_id: &str,
        since: i64,
        to: i64,
    ) -> sqlx::Result<std::collections::HashMap<String, Vec<ReceiptRow>>> {
        let rows = sqlx::query(
            "SELECT r.room_id, r.receipt_type, r.user_id, r.thread_id, r.event_id, r.ts FROM receipts r \
             JOIN current_state m ON m.room_id = r.room_id AND m.event_type = 'm.room.member' \
             AND m.state_key = $1 AND m.membership = 'join' \
             WHERE r.stream_pos > $2 AND r.stream_pos <= $3",
        )
        .bind(user_id)
        .bind(since)
        .bind(to)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let mut by_room: std::collections::HashMap<String, Vec<ReceiptRow>> = Default::default();
        for r in &rows {
            let row = receipt_row(r)?;
            by_room.entry(row.0.clone()).or_default().push(row);
        }
        Ok(by_room)
    }

    /// Queues to-device messages once per sending device's transaction ID. Returns the
    /// last stream position, or `None` if the transaction was already delivered.
    pub async fn put_to_device(
        &self,
        sender: &str,
        sender_device: &str,
        txn_id: &str,
        event_type: &str,
        messages: &[(String, String, String)],
    ) -> sqlx::Result<Option<i64>> {
        let mut tx = self.begin().await?;
        // Transaction IDs are scoped per endpoint; the prefix keeps these apart from /send's.
        let first = sqlx::query(
            "INSERT INTO transactions (user_id, device_id, txn_id, event_id) VALUES ($1, $2, $3, '') \
             ON CONFLICT DO NOTHING",
        )
        .bind(sender)
        .bind(sender_device)
        .bind(format!("to_device:{txn_id}"))
        .execute(&mut *tx)
        .await?;
        if first.rows_affected() == 0 {
            return Ok(None);
        }
        let mut last = 0;
        for (user, device, content) in messages {
            last = Self::next_counter(&mut tx, "stream").await?;
            sqlx::query(
                "INSERT INTO to_device (stream_pos, user_id, device_id, sender, event_type, content) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(last)
            .bind(user)
            .bind(device)
            .bind(sender)
            .bind(event_type)
            .bind(content)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(last))
    }

    /// Drops messages the device has acknowledged by syncing past them, and returns the rest
    /// up to `to`.
    pub async fn take_to_device(
        &self,
        user: &str,
        device: &str,
        since: i64,
        to: i64,
        limit: usize,
    ) -> sqlx::Result<Vec<ToDeviceRow>> {
        // A read first: on SQLite a DELETE takes the database's write lock even when it
        // deletes nothing, and every sync of every device would queue behind the writers.
        let oldest: Option<i64> =
            sqlx::query_scalar("SELECT MIN(stream_pos) FROM to_device WHERE user_id = $1 AND device_id = $2")
                .bind(user)
                .bind(device)
                .fetch_one(&mut *self.conn().await?)
                .await?;
        if oldest.is_some_and(|oldest| oldest <= since) {
            sqlx::query("DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3")
                .bind(user)
                .bind(device)
                .bind(since)
                .execute(&mut *self.conn().await?)
                .await?;
        }
        let rows = sqlx::query(
            "SELECT stream_pos, sender, event_type, content FROM to_device WHERE user_id = $1 AND device_id = $2 \
             AND stream_pos > $3 AND stream_pos <= $4 ORDER BY stream_pos LIMIT $5",
        )
        .bind(user)
        .bind(device)
        .bind(since)
        .bind(to)
        .bind(limit as i64)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ToDeviceRow {
                    stream_pos: r.try_get(0)?,
                    sender: r.try_get(1)?,
                    event_type: r.try_get(2)?,
                    content: r.try_get(3)?,
                })
            })
            .collect()
    }

    pub async fn set_presence(
        &self,
        user_id: &str,
        state: &str,
        status_msg: Option<&str>,
        now_ms: i64,
    ) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        let pos = Self::next_counter(&mut tx, "stream").await?;
        sqlx::query(
            "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id) DO UPDATE SET state = $2, status_msg = $3, last_active_ts = $4, stream_pos = $5",
        )
        .bind(user_id)
        .bind(state)
        .bind(status_msg)
        .bind(now_ms)
        .bind(pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(pos)
    }

    /// Records activity (from a syncing client) without touching the status message.
    pub async fn touch_presence(&self, user_id: &str, state: &str, now_ms: i64) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        let pos = Self::next_counter(&mut tx, "stream").await?;
        sqlx::query(
            "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos) VALUES ($1, $2, NULL, $3, $4) \
             ON CONFLICT (user_id) DO UPDATE SET state = $2, last_active_ts = $3, stream_pos = $4",
        )
        .bind(user_id)
        .bind(state)
        .bind(now_ms)
        .bind(pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(pos)
    }

    /// `(state, status_msg, last_active_ts, stream_pos)`
    pub async fn presence(&self, user_id: &str) -> sqlx::Result<Option<(String, Option<String>, i64, i64)>> {
        let row = sqlx::query("SELECT state, status_msg, last_active_ts, stream_pos FROM presence WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))).transpose()
    }
}
