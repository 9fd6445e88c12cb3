//! Push actions (what notified whom) and pushers.

use sqlx::{AssertSqlSafe, Row};

use super::{ROWS_PER_INSERT, Store, Tx};

/// A notification an event produced for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushAction {
    pub user_id: String,
    pub thread_id: String,
    pub highlight: bool,
    /// The JSON array of actions of the rule that matched.
    pub actions: String,
}

/// A row of `/notifications`.
#[derive(Debug, Clone)]
pub struct NotificationRow {
    pub event_id: String,
    pub room_id: String,
    pub stream_ordering: i64,
    pub actions: String,
}

impl Store {
    pub(crate) async fn insert_push_actions(
        tx: &mut Tx<'_>,
        event_id: &str,
        room_id: &str,
        actions: &[PushAction],
    ) -> sqlx::Result<()> {
        // Many rows per statement: a message in a room of a thousand members must not
        // cost a thousand statements.
        for chunk in actions.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO event_push_actions (event_id, user_id, room_id, thread_id, highlight, actions) \
                 VALUES {} ON CONFLICT DO NOTHING",
                super::values_placeholders(chunk.len(), 6)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for a in chunk {
                query = query
                    .bind(event_id)
                    .bind(&a.user_id)
                    .bind(room_id)
                    .bind(&a.thread_id)
                    .bind(i64::from(a.highlight))
                    .bind(&a.actions);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// `(thread_id, notifications, highlights)` after each thread's read position, for one
    /// user in one room. `read` maps a thread to the stream ordering read up to.
    pub async fn unread_by_thread(
        &self,
        user_id: &str,
        room_id: &str,
        read: impl Fn(&str) -> i64,
        to: i64,
    ) -> sqlx::Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT p.thread_id, e.stream_ordering, p.highlight FROM event_push_actions p \
             JOIN events e ON e.event_id = p.event_id WHERE p.user_id = $1 AND p.room_id = $2 \
             AND e.stream_ordering <= $3 AND e.redacted_by IS NULL ORDER BY e.stream_ordering DESC LIMIT 10000",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(to)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let mut out: Vec<(String, i64, i64)> = Vec::new();
        for r in rows {
            let thread: String = r.try_get(0)?;
            let pos: i64 = r.try_get(1)?;
            let highlight: i64 = r.try_get(2)?;
            if pos <= read(&thread) {
                continue;
            }
            match out.iter_mut().find(|(t, _, _)| *t == thread) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 += highlight;
                }
                None => out.push((thread, 1, highlight)),
            }
        }
        Ok(out)
    }

    /// `(thread_id, stream ordering read up to)` of the user's read receipts in a room;
    /// the thread is `""` for an unthreaded receipt.
    pub async fn read_positions(&self, room_id: &str, user_id: &str) -> sqlx::Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT r.thread_id, MAX(e.stream_ordering) FROM receipts r JOIN events e ON e.event_id = r.event_id \
             WHERE r.room_id = $1 AND r.user_id = $2 AND r.receipt_type IN ('m.read', 'm.read.private') \
             GROUP BY r.thread_id",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// The user's notifications, newest first, below `before`.
    pub async fn notifications(
        &self,
        user_id: &str,
        before: i64,
        limit: i64,
        highlights_only: bool,
    ) -> sqlx::Result<Vec<NotificationRow>> {
        let only = if highlights_only { "AND p.highlight = 1" } else { "" };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT p.event_id, p.room_id, e.stream_ordering, p.actions FROM event_push_actions p \
             JOIN events e ON e.event_id = p.event_id WHERE p.user_id = $1 AND e.stream_ordering < $2 {only} \
             ORDER BY e.stream_ordering DESC LIMIT $3"
        )))
        .bind(user_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NotificationRow {
                    event_id: r.try_get(0)?,
                    room_id: r.try_get(1)?,
                    stream_ordering: r.try_get(2)?,
                    actions: r.try_get(3)?,
                })
            })
            .collect()
    }

    pub async fn put_pusher(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
        kind: &str,
        json: &str,
        append: bool,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        if !append {
            // Without `append`, a pushkey belongs to one user: others' copies go.
            sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3")
                .bind(app_id)
                .bind(pushkey)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO pushers (user_id, app_id, pushkey, kind, pusher_json) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = $4, pusher_json = $5",
        )
        .bind(user_id)
        .bind(app_id)
        .bind(pushkey)
        .bind(kind)
        .bind(json)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
            .bind(user_id)
            .bind(app_id)
            .bind(pushkey)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// The stored JSON of the user's pushers.
    pub async fn pushers(&self, user_id: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT pusher_json FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey")
            .bind(user_id)
            .fetch_all(&mut *self.conn().await?)
            .await
    }
}
