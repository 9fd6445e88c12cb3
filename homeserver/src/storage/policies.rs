//! Policy set by administrators: each room's (`room_policies`), blocked rooms
//! (`blocked_rooms`) and the server's run-time settings (`server_policy`).

use sqlx::Row;

use super::{Store, flag};

/// The server-side policy of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPolicyRow {
    pub room_id: String,
    pub official: bool,
    pub retention: Option<String>,
    pub on_expiry: Option<String>,
    pub department: Option<String>,
    pub encryption: Option<String>,
    /// A JSON array of server names, when the policy manages the room's server ACL.
    pub allowed_servers: Option<String>,
    pub updated_ts: i64,
    pub updated_by: String,
}

impl Store {
    pub async fn room_policy(&self, room_id: &str) -> sqlx::Result<Option<RoomPolicyRow>> {
        let row = sqlx::query(
            "SELECT room_id, official, retention, on_expiry, department, encryption, allowed_servers, updated_ts, \
             updated_by FROM room_policies WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.map(|r| {
            Ok(RoomPolicyRow {
                room_id: r.try_get(0)?,
                official: r.try_get::<i64, _>(1)? != 0,
                retention: r.try_get(2)?,
                on_expiry: r.try_get(3)?,
                department: r.try_get(4)?,
                encryption: r.try_get(5)?,
                allowed_servers: r.try_get(6)?,
                updated_ts: r.try_get(7)?,
                updated_by: r.try_get(8)?,
            })
        })
        .transpose()
    }

    pub async fn put_room_policy(&self, p: &RoomPolicyRow) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO room_policies (room_id, official, retention, on_expiry, department, encryption, \
             allowed_servers, updated_ts, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (room_id) DO UPDATE SET official = $2, retention = $3, on_expiry = $4, department = $5, \
             encryption = $6, allowed_servers = $7, updated_ts = $8, updated_by = $9",
        )
        .bind(&p.room_id)
        .bind(flag(p.official))
        .bind(&p.retention)
        .bind(&p.on_expiry)
        .bind(&p.department)
        .bind(&p.encryption)
        .bind(&p.allowed_servers)
        .bind(p.updated_ts)
        .bind(&p.updated_by)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// Blocks a room (joins are refused); `false` if it already was.
    pub async fn block_room(&self, room_id: &str, by: &str, reason: Option<&str>, now_ms: i64) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "INSERT INTO blocked_rooms (room_id, blocked_by, reason, blocked_ts) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(by)
        .bind(reason)
        .bind(now_ms)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn is_room_blocked(&self, room_id: &str) -> sqlx::Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blocked_rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(n > 0)
    }

    /// Every stored server policy entry: `(name, JSON value)`.
    pub async fn server_policies(&self) -> sqlx::Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT name, value FROM server_policy ORDER BY name")
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub async fn put_server_policy(&self, name: &str, value: &str, by: &str, now_ms: i64) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO server_policy (name, value, updated_ts, updated_by) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET value = $2, updated_ts = $3, updated_by = $4",
        )
        .bind(name)
        .bind(value)
        .bind(now_ms)
        .bind(by)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }
}
