//! Accounts, devices and access tokens.

use sqlx::{AssertSqlSafe, Row};

use super::{Store, flag};

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
