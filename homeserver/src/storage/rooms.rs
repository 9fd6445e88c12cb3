//! Rooms, memberships as seen from current state, aliases and the public directory.

use sqlx::{AssertSqlSafe, Row};

use super::{Store, flag};

impl Store {
    pub async fn create_room_row(
        &self,
        room_id: &str,
        version: &str,
        creator: &str,
        is_public: bool,
        now_ms: i64,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (room_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(version)
        .bind(creator)
        .bind(flag(is_public))
        .bind(now_ms)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Corrects a room's version (a room first known from an invite, whose claimed
    /// version the create event settles).
    pub async fn set_room_version(&self, room_id: &str, version: &str) -> sqlx::Result<()> {
        sqlx::query("UPDATE rooms SET room_version = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(version)
            .execute(&mut *self.conn().await?)
            .await?;
        self.memo.versions().remove(room_id);
        Ok(())
    }

    pub async fn room_version(&self, room_id: &str) -> sqlx::Result<Option<String>> {
        if let Some(v) = self.memo.versions().get(room_id) {
            return Ok(Some(v.clone()));
        }
        let version: Option<String> = sqlx::query_scalar("SELECT room_version FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        if let Some(v) = &version {
            super::remember(&mut self.memo.versions(), room_id.to_owned(), v.clone());
        }
        Ok(version)
    }

    pub async fn set_room_public(&self, room_id: &str, public: bool) -> sqlx::Result<()> {
        sqlx::query("UPDATE rooms SET is_public = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(flag(public))
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn is_room_public(&self, room_id: &str) -> sqlx::Result<bool> {
        let v: Option<i64> = sqlx::query_scalar("SELECT is_public FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(v.unwrap_or(0) != 0)
    }

    pub async fn public_rooms(&self) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT room_id FROM rooms WHERE is_public = 1 ORDER BY created_ts, room_id")
            .fetch_all(&mut *self.conn().await?)
            .await
    }

    /// The user's current membership in a room.
    pub async fn membership(&self, room_id: &str, user_id: &str) -> sqlx::Result<Option<String>> {
        let v: Option<Option<String>> = sqlx::query_scalar(
            "SELECT membership FROM current_state WHERE room_id = $1 AND event_type = 'm.room.member' AND state_key = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        Ok(v.flatten())
    }

    /// Rooms in which the user's current membership is the one given.
    pub async fn rooms_with_membership(&self, user_id: &str, membership: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT room_id FROM current_state WHERE state_key = $1 AND event_type = 'm.room.member' \
             AND membership = $2 ORDER BY room_id",
        )
        .bind(user_id)
        .bind(membership)
        .fetch_all(&mut *self.conn().await?)
        .await
    }

    /// Rooms the user is joined to, invited to or knocking on.
    pub async fn rooms_of_user(&self, user_id: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT room_id FROM current_state WHERE state_key = $1 AND event_type = 'm.room.member' \
             AND membership IN ('join', 'invite', 'knock')",
        )
        .bind(user_id)
        .fetch_all(&mut *self.conn().await?)
        .await
    }

    /// `(user_id, membership)` of every member event in a room's current state.
    pub async fn members(&self, room_id: &str) -> sqlx::Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT state_key, membership, event_id FROM current_state WHERE room_id = $1 AND event_type = 'm.room.member' \
             ORDER BY state_key",
        )
        .bind(room_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<Option<String>, _>(1)?.unwrap_or_default(), r.try_get(2)?)))
            .collect()
    }

    pub async fn joined_member_count(&self, room_id: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM current_state WHERE room_id = $1 AND event_type = 'm.room.member' AND membership = 'join'",
        )
        .bind(room_id)
        .fetch_one(&mut *self.conn().await?)
        .await
    }

    /// Users who share a joined room with `user_id` (including the user).
    pub async fn users_sharing_rooms(&self, user_id: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT b.state_key FROM current_state a JOIN current_state b ON a.room_id = b.room_id \
             WHERE a.state_key = $1 AND a.event_type = 'm.room.member' AND a.membership = 'join' \
             AND b.event_type = 'm.room.member' AND b.membership = 'join'",
        )
        .bind(user_id)
        .fetch_all(&mut *self.conn().await?)
        .await
    }

    /// `(user_id, displayname, avatar_url)` of local accounts whose ID or display name
    /// contains `term` (lower-case), among those `searcher` may find.
    pub async fn search_users(
        &self,
        searcher: &str,
        term: &str,
        all_users: bool,
        limit: i64,
    ) -> sqlx::Result<Vec<(String, Option<String>, Option<String>)>> {
        let pattern = format!("%{}%", term.replace(['\\', '%', '_'], ""));
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT u.user_id, u.displayname, u.avatar_url FROM users u WHERE u.deactivated = 0 AND {} \
             AND (LOWER(u.user_id) LIKE $2 OR LOWER(COALESCE(u.displayname, '')) LIKE $2) \
             AND ($3 = 1 OR u.user_id = $1 \
                  OR EXISTS (SELECT 1 FROM current_state a JOIN current_state b ON a.room_id = b.room_id \
                             WHERE a.event_type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join' \
                             AND b.event_type = 'm.room.member' AND b.state_key = u.user_id AND b.membership = 'join') \
                  OR EXISTS (SELECT 1 FROM current_state c JOIN rooms r ON r.room_id = c.room_id \
                             WHERE r.is_public = 1 AND c.event_type = 'm.room.member' AND c.state_key = u.user_id \
                             AND c.membership = 'join')) \
             ORDER BY u.user_id LIMIT $4",
            super::not_a_server_account("u.user_id")
        )))
        .bind(searcher)
        .bind(pattern)
        .bind(i64::from(all_users))
        .bind(limit)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    pub async fn forget_room(&self, user_id: &str, room_id: &str) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(user_id)
            .bind(room_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn unforget_room(&self, user_id: &str, room_id: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2")
            .bind(user_id)
            .bind(room_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn is_forgotten(&self, user_id: &str, room_id: &str) -> sqlx::Result<bool> {
        let v: Option<i64> = sqlx::query_scalar("SELECT 1 FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2")
            .bind(user_id)
            .bind(room_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(v.is_some())
    }

    /// Maps an alias to a room; `false` if the alias is taken.
    pub async fn create_alias(&self, alias: &str, room_id: &str, creator: &str) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) ON CONFLICT (alias) DO NOTHING",
        )
        .bind(alias)
        .bind(room_id)
        .bind(creator)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// `(room_id, creator)` of an alias.
    pub async fn alias(&self, alias: &str) -> sqlx::Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    pub async fn delete_alias(&self, alias: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM room_aliases WHERE alias = $1").bind(alias).execute(&mut *self.conn().await?).await?;
        Ok(())
    }

    pub async fn room_aliases(&self, room_id: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
            .bind(room_id)
            .fetch_all(&mut *self.conn().await?)
            .await
    }
}

// Rooms as administrators see them (admin API), and purging their history.

/// A room in the administrators' list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRoomRow {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub is_public: bool,
    pub created_ts: i64,
    pub joined_members: i64,
    pub official: bool,
    pub blocked: bool,
}

impl Store {
    /// Rooms with a room ID after `after`, in room ID order, and how many there are.
    pub async fn admin_rooms(&self, after: Option<&str>, limit: i64) -> sqlx::Result<(Vec<AdminRoomRow>, i64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rooms").fetch_one(&mut *self.conn().await?).await?;
        let rows = sqlx::query(
            "SELECT r.room_id, r.room_version, r.creator, r.is_public, r.created_ts, \
             (SELECT COUNT(*) FROM current_state m WHERE m.room_id = r.room_id AND m.event_type = 'm.room.member' \
              AND m.membership = 'join'), \
             COALESCE((SELECT p.official FROM room_policies p WHERE p.room_id = r.room_id), 0), \
             (SELECT COUNT(*) FROM blocked_rooms b WHERE b.room_id = r.room_id) \
             FROM rooms r WHERE r.room_id > $1 ORDER BY r.room_id LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let rooms = rows
            .iter()
            .map(|r| {
                Ok(AdminRoomRow {
                    room_id: r.try_get(0)?,
                    room_version: r.try_get(1)?,
                    creator: r.try_get(2)?,
                    is_public: r.try_get::<i64, _>(3)? != 0,
                    created_ts: r.try_get(4)?,
                    joined_members: r.try_get(5)?,
                    official: r.try_get::<i64, _>(6)? != 0,
                    blocked: r.try_get::<i64, _>(7)? != 0,
                })
            })
            .collect::<sqlx::Result<_>>()?;
        Ok((rooms, total))
    }

    /// Deletes the message history of a room older than `before_ts`: every event that is
    /// not a state event and not a forward extremity, with what hangs off it (DAG edges
    /// from it, its transaction ID, its notifications). State events stay: they are the
    /// room's authorisation chain. Returns how many events were deleted.
    pub async fn purge_history(&self, room_id: &str, before_ts: i64) -> sqlx::Result<u64> {
        let mut tx = self.begin().await?;
        let doomed = "SELECT event_id FROM events WHERE room_id = $1 AND origin_server_ts < $2 \
                      AND state_key IS NULL AND event_id NOT IN \
                      (SELECT event_id FROM forward_extremities WHERE room_id = $1)";
        for table in ["event_edges", "transactions", "event_push_actions"] {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE event_id IN ({doomed})")))
                .bind(room_id)
                .bind(before_ts)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query(
            "DELETE FROM events WHERE room_id = $1 AND origin_server_ts < $2 AND state_key IS NULL \
             AND event_id NOT IN (SELECT event_id FROM forward_extremities WHERE room_id = $1)",
        )
        .bind(room_id)
        .bind(before_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
