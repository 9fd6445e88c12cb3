//! The device list stream as other servers see it: changes announced by remote servers,
//! and the positions of local changes that `m.device_list_update` EDUs carry as
//! `stream_id` / `prev_id`.
//!
//! Remote users' keys are cached (`remote_user_keys`) for as long as this server keeps
//! hearing of their changes: a change deletes the copy and reaches `device_list_changes`,
//! where `/sync` finds it.

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
        sqlx::query("DELETE FROM remote_user_keys WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(pos)
    }

    /// A remote user's cached keys (the JSON [`Store::cache_remote_keys`] stored), if a
    /// local user has shared a room with them without a break since they were asked for:
    /// both members' current joins are older than the copy. Otherwise their server may
    /// have changed them without telling this one, and they must be asked again.
    pub async fn cached_remote_keys(&self, user_id: &str) -> sqlx::Result<Option<String>> {
        // A member event held only as an outlier (the state a remote join brought) came
        // with the local member's own join, so it counts as that old.
        sqlx::query_scalar(
            "SELECT k.keys_json FROM remote_user_keys k WHERE k.user_id = $1 AND EXISTS ( \
               SELECT 1 FROM current_state r \
               JOIN current_state l ON l.room_id = r.room_id \
               JOIN users lu ON lu.user_id = l.state_key \
               JOIN events le ON le.event_id = l.event_id \
               LEFT JOIN events re ON re.event_id = r.event_id \
               WHERE r.event_type = 'm.room.member' AND r.state_key = k.user_id AND r.membership = 'join' \
                 AND l.event_type = 'm.room.member' AND l.membership = 'join' \
                 AND le.stream_ordering < k.cached_pos \
                 AND COALESCE(re.stream_ordering, le.stream_ordering) < k.cached_pos)",
        )
        .bind(user_id)
        .fetch_optional(&mut *self.conn().await?)
        .await
    }

    /// Keeps a remote user's keys as their server answered, asked for at stream position
    /// `asked_at`, unless a change of them was announced since (the answer may predate it).
    pub async fn cache_remote_keys(&self, user_id: &str, keys_json: &str, asked_at: i64) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO remote_user_keys (user_id, keys_json, cached_pos) SELECT $1, $2, $3 \
             WHERE NOT EXISTS (SELECT 1 FROM device_list_changes WHERE user_id = $1 AND stream_pos > $3) \
             ON CONFLICT (user_id) DO UPDATE SET keys_json = excluded.keys_json, cached_pos = excluded.cached_pos",
        )
        .bind(user_id)
        .bind(keys_json)
        .bind(asked_at)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
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
