//! Account data and filters: what clients store per user (`account_data`, `filters`).

use sqlx::Row;

use super::Store;

impl Store {
    /// Sets account data; `room_id` is empty for global data. Returns its stream position.
    pub async fn put_account_data(
        &self,
        user_id: &str,
        room_id: &str,
        data_type: &str,
        content: &str,
    ) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        let pos = Self::next_counter(&mut tx, "stream").await?;
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_pos) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = $4, stream_pos = $5",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .bind(content)
        .bind(pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(pos)
    }

    pub async fn account_data(&self, user_id: &str, room_id: &str, data_type: &str) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3")
            .bind(user_id)
            .bind(room_id)
            .bind(data_type)
            .fetch_optional(&mut *self.conn().await?)
            .await
    }

    /// `(room_id, data_type, content)` changed in `(since, to]`.
    pub async fn account_data_since(
        &self,
        user_id: &str,
        since: i64,
        to: i64,
    ) -> sqlx::Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT room_id, data_type, content FROM account_data WHERE user_id = $1 AND stream_pos > $2 \
             AND stream_pos <= $3 ORDER BY stream_pos",
        )
        .bind(user_id)
        .bind(since)
        .bind(to)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// Stores a filter and returns its ID (per user, counting from 0).
    pub async fn put_filter(&self, user_id: &str, filter_json: &str) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(filter_id) + 1, 0) FROM filters WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(id)
            .bind(filter_json)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn filter(&self, user_id: &str, filter_id: i64) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT filter_json FROM filters WHERE user_id = $1 AND filter_id = $2")
            .bind(user_id)
            .bind(filter_id)
            .fetch_optional(&mut *self.conn().await?)
            .await
    }
}
