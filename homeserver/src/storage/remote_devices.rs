//! The device list stream as other servers see it: changes announced by remote servers,
//! and the positions of local changes that `m.device_list_update` EDUs carry as
//! `stream_id` / `prev_id`.
//!
//! Remote users' keys are not cached here: `/keys/query` asks their server each time,
//! so a change only needs to reach `device_list_changes`, where `/sync` finds it.

use super::Store;

impl Store {
    /// Records that a user's devices or cross-signing keys changed (a remote user's, as
    /// their server announced, or a local device's display name), at the next stream
    /// position, visible to every local user sharing a room with them.
    pub async fn record_device_list_change(&self, user_id: &str) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        // The counter is the last statement before commit, as for every stream write.
        let pos = Self::next_counter(&mut tx, "stream").await?;
        sqlx::query(
            "INSERT INTO device_list_changes (stream_pos, user_id, visible_to) VALUES ($1, $2, NULL) \
             ON CONFLICT (stream_pos, user_id) DO NOTHING",
        )
        .bind(pos)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(pos)
    }

    /// The latest public change of a user's device list strictly before `before`
    /// (`i64::MAX` for the latest of all).
    pub async fn device_list_change_before(&self, user_id: &str, before: i64) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT MAX(stream_pos) FROM device_list_changes WHERE user_id = $1 AND visible_to IS NULL \
             AND stream_pos < $2",
        )
        .bind(user_id)
        .bind(before)
        .fetch_one(&mut *self.conn().await?)
        .await
    }

    /// The devices of a user that have identity keys, whether or not the device itself
    /// still exists (it is deleted before its keys).
    pub async fn device_ids_with_keys(&self, user_id: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT device_id FROM e2e_device_keys WHERE user_id = $1 ORDER BY device_id")
            .bind(user_id)
            .fetch_all(&mut *self.conn().await?)
            .await
    }
}
