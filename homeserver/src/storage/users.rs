//! Accounts (`users`), devices and access tokens, and accounts as administrators see them.

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{
    Store,
    conditions::{Conditions, Param, like_pattern},
    flag,
};

#[derive(Debug, Clone)]
pub struct UserRow {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

impl Store {
    /// Creates an account; `false` if the user ID is taken.
    pub async fn create_user(
        &self,
        user_id: &str,
        password_hash: Option<&str>,
        is_admin: bool,
        displayname: &str,
        now_ms: i64,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "INSERT INTO users (user_id, password_hash, is_admin, deactivated, displayname, created_ts) \
             VALUES ($1, $2, $3, 0, $4, $5) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(password_hash)
        .bind(flag(is_admin))
        .bind(displayname)
        .bind(now_ms)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn user(&self, user_id: &str) -> sqlx::Result<Option<UserRow>> {
        let row = sqlx::query(
            "SELECT user_id, password_hash, is_admin, deactivated, displayname, avatar_url \
             FROM users WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.map(|r| {
            Ok(UserRow {
                user_id: r.try_get(0)?,
                password_hash: r.try_get(1)?,
                is_admin: r.try_get::<i64, _>(2)? != 0,
                deactivated: r.try_get::<i64, _>(3)? != 0,
                displayname: r.try_get(4)?,
                avatar_url: r.try_get(5)?,
            })
        })
        .transpose()
    }

    pub async fn set_password_hash(&self, user_id: &str, hash: Option<&str>) -> sqlx::Result<()> {
        sqlx::query("UPDATE users SET password_hash = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(hash)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn set_deactivated(&self, user_id: &str, deactivated: bool) -> sqlx::Result<()> {
        sqlx::query("UPDATE users SET deactivated = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(flag(deactivated))
            .execute(&mut *self.conn().await?)
            .await?;
        self.forget_sessions();
        Ok(())
    }

    pub async fn set_profile_field(
        &self,
        user_id: &str,
        displayname: Option<Option<&str>>,
        avatar_url: Option<Option<&str>>,
    ) -> sqlx::Result<()> {
        if let Some(name) = displayname {
            sqlx::query("UPDATE users SET displayname = $2 WHERE user_id = $1")
                .bind(user_id)
                .bind(name)
                .execute(&mut *self.conn().await?)
                .await?;
        }
        if let Some(url) = avatar_url {
            sqlx::query("UPDATE users SET avatar_url = $2 WHERE user_id = $1")
                .bind(user_id)
                .bind(url)
                .execute(&mut *self.conn().await?)
                .await?;
        }
        Ok(())
    }

    /// Creates (or reuses) a device and issues a token for it.
    pub async fn create_session(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        token_hash: &str,
        now_ms: i64,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        // A device logging in again gets a new token; the old one stops working.
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_ts = $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(display_name)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(user_id)
            .bind(device_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.forget_sessions();
        Ok(())
    }

    /// The (user, device) a token hash belongs to, if the user is not deactivated.
    pub async fn session_by_token(&self, token_hash: &str) -> sqlx::Result<Option<(String, String)>> {
        let generation = {
            let sessions = self.memo.sessions();
            if let Some(session) = sessions.by_token.get(token_hash) {
                return Ok(Some(session.clone()));
            }
            sessions.generation
        };
        let row = sqlx::query(
            "SELECT t.user_id, t.device_id FROM access_tokens t JOIN users u ON u.user_id = t.user_id \
             WHERE t.token_hash = $1 AND u.deactivated = 0",
        )
        .bind(token_hash)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        let session: Option<(String, String)> =
            row.map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?))).transpose()?;
        let mut sessions = self.memo.sessions();
        if let Some(s) = &session
            && sessions.generation == generation
        {
            super::remember(&mut sessions.by_token, token_hash.to_owned(), s.clone());
        }
        Ok(session)
    }

    /// Forgets every remembered session. Called after any write that can end one
    /// commits: those are rare (logout, device deletion, deactivation), lookups are on
    /// every request.
    fn forget_sessions(&self) {
        let mut sessions = self.memo.sessions();
        sessions.generation += 1;
        sessions.by_token.clear();
    }

    /// Removes devices and their tokens. With `device_ids = None`, all of the user's.
    pub async fn delete_devices(&self, user_id: &str, device_ids: Option<&[String]>) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        match device_ids {
            None => {
                for table in ["access_tokens", "devices"] {
                    sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE user_id = $1")))
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            Some(ids) => {
                for id in ids {
                    for table in ["access_tokens", "devices"] {
                        sqlx::query(AssertSqlSafe(format!(
                            "DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"
                        )))
                        .bind(user_id)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
        }
        tx.commit().await?;
        self.forget_sessions();
        Ok(())
    }

    pub async fn devices(&self, user_id: &str) -> sqlx::Result<Vec<DeviceRow>> {
        let rows = sqlx::query(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 \
             ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceRow {
                    device_id: r.try_get(0)?,
                    display_name: r.try_get(1)?,
                    last_seen_ts: r.try_get(2)?,
                    last_seen_ip: r.try_get(3)?,
                })
            })
            .collect()
    }

    pub async fn rename_device(&self, user_id: &str, device_id: &str, name: Option<&str>) -> sqlx::Result<bool> {
        let done = sqlx::query("UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .bind(name)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn touch_device(&self, user_id: &str, device_id: &str, ip: &str, now_ms: i64) -> sqlx::Result<()> {
        sqlx::query("UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .bind(now_ms)
            .bind(ip)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }
}

// Accounts as administrators see them (admin API).

const ADMIN_USER_COLUMNS: &str = "user_id, displayname, department, is_admin, deactivated, \
     password_hash IS NOT NULL, created_ts, deactivated_ts";

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

impl Store {
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
}
