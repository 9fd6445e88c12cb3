//! Registration tokens (`registration_tokens`): created by administrators, used up by
//! registrations.

use sqlx::Row;

use super::Store;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationTokenRow {
    pub token: String,
    pub uses_allowed: Option<i64>,
    pub completed: i64,
    pub expiry_ts: Option<i64>,
}

impl Store {
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

    /// Consumes one use of a registration token stored in the database; `false` if it is
    /// unknown, used up or expired.
    pub async fn use_registration_token(&self, token: &str, now_ms: i64) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1 \
             AND (uses_allowed IS NULL OR completed < uses_allowed) AND (expiry_ts IS NULL OR expiry_ts > $2)",
        )
        .bind(token)
        .bind(now_ms)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn registration_token_valid(&self, token: &str, now_ms: i64) -> sqlx::Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM registration_tokens WHERE token = $1 \
             AND (uses_allowed IS NULL OR completed < uses_allowed) AND (expiry_ts IS NULL OR expiry_ts > $2)",
        )
        .bind(token)
        .bind(now_ms)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.is_some())
    }
}
