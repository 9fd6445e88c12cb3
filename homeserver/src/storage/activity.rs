//! Activity and the utilisation figures (`daily_activity`, and counts over accounts and
//! events) the admin API reports.

use sqlx::{AssertSqlSafe, Row};

use super::Store;

impl Store {
    /// Notes that a user was active (synced) on a day (`YYYY-MM-DD`).
    pub async fn record_daily_activity(&self, user_id: &str, day: &str) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO user_daily_activity (day, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(day)
            .bind(user_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// The last day on which a user synced, if any.
    pub async fn last_active_day(&self, user_id: &str) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT MAX(day) FROM user_daily_activity WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *self.conn().await?)
            .await
    }

    /// `(user_id, department)` of the accounts that existed during `[start_ts, end_ts)`:
    /// created before its end and not deactivated before its start.
    pub async fn accounts_during(&self, start_ts: i64, end_ts: i64) -> sqlx::Result<Vec<(String, Option<String>)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT user_id, department FROM users WHERE created_ts < $2 AND {} \
             AND (deactivated = 0 OR (deactivated_ts IS NOT NULL AND deactivated_ts >= $1))",
            super::not_a_server_account("user_id")
        )))
        .bind(start_ts)
        .bind(end_ts)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Local accounts active in a period: that synced on a day in `[start_day, end_day)`
    /// or sent an event with `start_ts <= origin_server_ts < end_ts`.
    pub async fn active_users(
        &self,
        start_day: &str,
        end_day: &str,
        start_ts: i64,
        end_ts: i64,
    ) -> sqlx::Result<Vec<(String, Option<String>)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT u.user_id, u.department FROM users u JOIN ( \
               SELECT user_id FROM user_daily_activity WHERE day >= $1 AND day < $2 \
               UNION \
               SELECT sender AS user_id FROM events WHERE origin_server_ts >= $3 AND origin_server_ts < $4 \
             ) a ON a.user_id = u.user_id WHERE {} ORDER BY u.user_id",
            super::not_a_server_account("u.user_id")
        )))
        .bind(start_day)
        .bind(end_day)
        .bind(start_ts)
        .bind(end_ts)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Messages (`m.room.message`, `m.room.encrypted`) sent by local accounts in
    /// `[start_ts, end_ts)`: `(room_id, sender's department, count)`.
    pub async fn message_counts(&self, start_ts: i64, end_ts: i64) -> sqlx::Result<Vec<(String, Option<String>, i64)>> {
        let rows = sqlx::query(
            "SELECT e.room_id, u.department, COUNT(*) FROM events e JOIN users u ON u.user_id = e.sender \
             WHERE e.origin_server_ts >= $1 AND e.origin_server_ts < $2 \
             AND e.event_type IN ('m.room.message', 'm.room.encrypted') \
             GROUP BY e.room_id, u.department ORDER BY e.room_id",
        )
        .bind(start_ts)
        .bind(end_ts)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }
}
