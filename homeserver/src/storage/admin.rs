//! Administration: accounts as administrators see them, registration tokens, room and
//! server policy, blocked rooms, purging history, activity and figures, the audit log.
//!
//! The audit log has an insert and a query here and nothing else: it is append-only, and
//! the database refuses updates and deletes of it too (triggers in `0006_admin.sql`).

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{Store, flag};

/// An account with what administrators see of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUserRow {
    pub user_id: String,
    pub displayname: Option<String>,
    pub department: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub has_password: bool,
    pub created_ts: i64,
    pub deactivated_ts: Option<i64>,
}

const ADMIN_USER_COLUMNS: &str = "user_id, displayname, department, is_admin, deactivated, \
     password_hash IS NOT NULL, created_ts, deactivated_ts";

fn admin_user_row(r: &AnyRow) -> sqlx::Result<AdminUserRow> {
    Ok(AdminUserRow {
        user_id: r.try_get(0)?,
        displayname: r.try_get(1)?,
        department: r.try_get(2)?,
        is_admin: r.try_get::<i64, _>(3)? != 0,
        deactivated: r.try_get::<i64, _>(4)? != 0,
        has_password: bool_column(r, 5)?,
        created_ts: r.try_get(6)?,
        deactivated_ts: r.try_get(7)?,
    })
}

/// A boolean expression's value: SQLite gives an integer, PostgreSQL a boolean.
fn bool_column(r: &AnyRow, i: usize) -> sqlx::Result<bool> {
    match r.try_get::<bool, _>(i) {
        Ok(b) => Ok(b),
        Err(_) => Ok(r.try_get::<i64, _>(i)? != 0),
    }
}

/// Which accounts to list.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// A substring of the user ID or display name (case-insensitive for ASCII).
    pub search: Option<String>,
    pub department: Option<String>,
    pub admin: Option<bool>,
    pub deactivated: Option<bool>,
}

/// A new account as the admin API creates it.
#[derive(Debug, Clone)]
pub struct NewAdminUser<'a> {
    pub user_id: &'a str,
    pub password_hash: Option<&'a str>,
    pub is_admin: bool,
    pub displayname: &'a str,
    pub department: Option<&'a str>,
    pub created_ts: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationTokenRow {
    pub token: String,
    pub uses_allowed: Option<i64>,
    pub completed: i64,
    pub expiry_ts: Option<i64>,
}

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

/// One call of the admin API, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub ts: i64,
    /// `None` when the request carried no valid access token.
    pub caller: Option<String>,
    pub action: String,
    pub target: Option<String>,
    /// JSON, without secrets.
    pub params: String,
    pub status: i64,
    /// `ok` or the errcode.
    pub result: String,
    pub detail: Option<String>,
    pub client_ip: Option<String>,
}

/// Which audit entries to read; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ts: Option<i64>,
    pub until_ts: Option<i64>,
    pub caller: Option<String>,
    pub target: Option<String>,
    /// Only entries with a smaller ID (the next page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Builds a statement from conditions whose parameters are numbered in order.
#[derive(Default)]
struct Conditions {
    sql: Vec<String>,
    texts: Vec<Param>,
}

enum Param {
    Text(String),
    Int(i64),
}

impl Conditions {
    fn next(&self) -> usize {
        self.texts.len() + 1
    }
    fn text(&mut self, template: &str, value: String) {
        let n = self.next();
        self.sql.push(template.replace("$?", &format!("${n}")));
        self.texts.push(Param::Text(value));
    }
    fn int(&mut self, template: &str, value: i64) {
        let n = self.next();
        self.sql.push(template.replace("$?", &format!("${n}")));
        self.texts.push(Param::Int(value));
    }
    fn plain(&mut self, sql: &str) {
        self.sql.push(sql.to_owned());
    }
    fn where_clause(&self) -> String {
        if self.sql.is_empty() { String::new() } else { format!("WHERE {}", self.sql.join(" AND ")) }
    }
    fn bind<'q>(
        &'q self,
        mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        for p in &self.texts {
            q = match p {
                Param::Text(s) => q.bind(s.as_str()),
                Param::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// `%text%` for LIKE, with the pattern characters escaped (`ESCAPE '\'`).
fn like_pattern(text: &str) -> String {
    let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

impl Store {
    // ----- accounts -----

    /// Creates an account with a department; `false` if the user ID is taken.
    pub async fn admin_create_user(&self, u: &NewAdminUser<'_>) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "INSERT INTO users (user_id, password_hash, is_admin, deactivated, displayname, department, created_ts) \
             VALUES ($1, $2, $3, 0, $4, $5, $6) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(u.user_id)
        .bind(u.password_hash)
        .bind(flag(u.is_admin))
        .bind(u.displayname)
        .bind(u.department)
        .bind(u.created_ts)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn admin_user(&self, user_id: &str) -> sqlx::Result<Option<AdminUserRow>> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {ADMIN_USER_COLUMNS} FROM users WHERE user_id = $1")))
            .bind(user_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.as_ref().map(admin_user_row).transpose()
    }

    /// Accounts matching `filter` with a user ID after `after`, in user ID order, and
    /// how many match in all.
    pub async fn admin_users(
        &self,
        filter: &UserFilter,
        after: Option<&str>,
        limit: i64,
    ) -> sqlx::Result<(Vec<AdminUserRow>, i64)> {
        let mut c = Conditions::default();
        if let Some(s) = &filter.search {
            let n = c.next();
            c.sql.push(format!(
                "(LOWER(user_id) LIKE ${n} ESCAPE '\\' OR LOWER(COALESCE(displayname, '')) LIKE ${n} ESCAPE '\\')"
            ));
            c.texts.push(Param::Text(like_pattern(s)));
        }
        if let Some(d) = &filter.department {
            c.text("department = $?", d.clone());
        }
        if let Some(a) = filter.admin {
            c.plain(if a { "is_admin <> 0" } else { "is_admin = 0" });
        }
        if let Some(d) = filter.deactivated {
            c.plain(if d { "deactivated <> 0" } else { "deactivated = 0" });
        }
        c.plain(&super::not_a_server_account("user_id"));
        let total: i64 = c
            .bind(sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) FROM users {}", c.where_clause()))))
            .fetch_one(&mut *self.conn().await?)
            .await?
            .try_get(0)?;
        if let Some(a) = after {
            c.text("user_id > $?", a.to_owned());
        }
        let n = c.next();
        let sql = format!("SELECT {ADMIN_USER_COLUMNS} FROM users {} ORDER BY user_id LIMIT ${n}", c.where_clause());
        let rows = c.bind(sqlx::query(AssertSqlSafe(sql))).bind(limit).fetch_all(&mut *self.conn().await?).await?;
        Ok((rows.iter().map(admin_user_row).collect::<sqlx::Result<_>>()?, total))
    }

    pub async fn set_user_admin(&self, user_id: &str, admin: bool) -> sqlx::Result<bool> {
        let done = sqlx::query("UPDATE users SET is_admin = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(flag(admin))
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_user_department(&self, user_id: &str, department: Option<&str>) -> sqlx::Result<()> {
        sqlx::query("UPDATE users SET department = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(department)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Records when an account was deactivated (for the figures of later months).
    pub async fn set_deactivated_ts(&self, user_id: &str, ts: i64) -> sqlx::Result<()> {
        sqlx::query("UPDATE users SET deactivated_ts = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(ts)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Reactivates an account with a new password hash.
    pub async fn reactivate_user(&self, user_id: &str, password_hash: &str) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET deactivated = 0, deactivated_ts = NULL, password_hash = $2 WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(password_hash)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many access tokens (sessions) a user has.
    pub async fn session_count(&self, user_id: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM access_tokens WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *self.conn().await?)
            .await
    }

    // ----- registration tokens -----

    /// Stores a registration token; `false` if it exists.
    pub async fn create_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<i64>,
        expiry_ts: Option<i64>,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "INSERT INTO registration_tokens (token, uses_allowed, completed, expiry_ts) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (token) DO NOTHING",
        )
        .bind(token)
        .bind(uses_allowed)
        .bind(expiry_ts)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn registration_tokens(&self) -> sqlx::Result<Vec<RegistrationTokenRow>> {
        let rows =
            sqlx::query("SELECT token, uses_allowed, completed, expiry_ts FROM registration_tokens ORDER BY token")
                .fetch_all(&mut *self.conn().await?)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(RegistrationTokenRow {
                    token: r.try_get(0)?,
                    uses_allowed: r.try_get(1)?,
                    completed: r.try_get(2)?,
                    expiry_ts: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Removes a registration token; `false` if there was none.
    pub async fn delete_registration_token(&self, token: &str) -> sqlx::Result<bool> {
        let done = sqlx::query("DELETE FROM registration_tokens WHERE token = $1")
            .bind(token)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ----- rooms -----

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

    // ----- server policy -----

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

    // ----- activity and figures -----

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

    // ----- audit log -----

    /// Appends an entry to the audit log and returns its ID.
    pub async fn append_audit(&self, e: &AuditRow) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO admin_audit (ts, caller, action, target, params, status, result, detail, client_ip) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(e.ts)
        .bind(&e.caller)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.params)
        .bind(e.status)
        .bind(&e.result)
        .bind(&e.detail)
        .bind(&e.client_ip)
        .fetch_one(&mut *self.conn().await?)
        .await
    }

    /// Audit entries matching `f`, newest first.
    pub async fn audit_entries(&self, f: &AuditFilter) -> sqlx::Result<Vec<AuditRow>> {
        let mut c = Conditions::default();
        if let Some(t) = f.since_ts {
            c.int("ts >= $?", t);
        }
        if let Some(t) = f.until_ts {
            c.int("ts < $?", t);
        }
        if let Some(u) = &f.caller {
            c.text("caller = $?", u.clone());
        }
        if let Some(t) = &f.target {
            c.text("target = $?", t.clone());
        }
        if let Some(id) = f.before_id {
            c.int("id < $?", id);
        }
        let n = c.next();
        let sql = format!(
            "SELECT id, ts, caller, action, target, params, status, result, detail, client_ip FROM admin_audit {} \
             ORDER BY id DESC LIMIT ${n}",
            c.where_clause()
        );
        let rows = c.bind(sqlx::query(AssertSqlSafe(sql))).bind(f.limit).fetch_all(&mut *self.conn().await?).await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get(0)?,
                    ts: r.try_get(1)?,
                    caller: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    params: r.try_get(5)?,
                    status: r.try_get(6)?,
                    result: r.try_get(7)?,
                    detail: r.try_get(8)?,
                    client_ip: r.try_get(9)?,
                })
            })
            .collect()
    }
}
