//! Other servers' signing keys: the verify keys they published (current and old) and the
//! last key document each one signed. Which keys to trust, and for how long, is decided
//! by the federation service (`federation/server_keys.rs`).

use sqlx::Row;

use super::Store;

/// A verify key of another server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeyRow {
    /// `ed25519:ID`
    pub key_id: String,
    /// Unpadded base64 of the public key.
    pub public_key: String,
    /// Until when the key may be used without asking the server again (milliseconds).
    pub valid_until_ts: i64,
    /// When an old key stopped being used; `None` for a current key.
    pub expired_ts: Option<i64>,
}

impl Store {
    /// The known verify keys of a server, current and old.
    pub async fn server_signing_keys(&self, server_name: &str) -> sqlx::Result<Vec<ServerKeyRow>> {
        let rows = sqlx::query(
            "SELECT key_id, public_key, valid_until_ts, expired_ts FROM server_signing_keys \
             WHERE server_name = $1 ORDER BY key_id",
        )
        .bind(server_name)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ServerKeyRow {
                    key_id: r.try_get("key_id")?,
                    public_key: r.try_get("public_key")?,
                    valid_until_ts: r.try_get("valid_until_ts")?,
                    expired_ts: r.try_get("expired_ts")?,
                })
            })
            .collect()
    }

    /// The last key document a server signed, and until when it is valid.
    pub async fn server_key_document(&self, server_name: &str) -> sqlx::Result<Option<(String, i64)>> {
        let row = sqlx::query("SELECT document, valid_until_ts FROM server_key_documents WHERE server_name = $1")
            .bind(server_name)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.map(|r| Ok((r.try_get("document")?, r.try_get("valid_until_ts")?))).transpose()
    }

    /// Stores a freshly fetched key document and its keys, in one transaction. A key seen
    /// before keeps its row with the new validity; keys are never deleted, because old
    /// events stay signed by them.
    pub async fn put_server_keys(
        &self,
        server_name: &str,
        document: &str,
        valid_until_ts: i64,
        fetched_ts: i64,
        keys: &[ServerKeyRow],
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO server_signing_keys (server_name, key_id, public_key, valid_until_ts, expired_ts) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (server_name, key_id) DO UPDATE SET \
                 public_key = $3, valid_until_ts = $4, expired_ts = $5",
            )
            .bind(server_name)
            .bind(&key.key_id)
            .bind(&key.public_key)
            .bind(key.valid_until_ts)
            .bind(key.expired_ts)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO server_key_documents (server_name, document, valid_until_ts, fetched_ts) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (server_name) DO UPDATE SET \
             document = $2, valid_until_ts = $3, fetched_ts = $4",
        )
        .bind(server_name)
        .bind(document)
        .bind(valid_until_ts)
        .bind(fetched_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}
