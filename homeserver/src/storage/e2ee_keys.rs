//! End-to-end encryption: device keys, one-time and fallback keys, cross-signing keys
//! and signatures, the device list stream, and room key backups.
//!
//! Keys are stored as the JSON text the client uploaded; which keys may be stored,
//! handed out or replaced is decided by the e2ee service.

use sqlx::{AssertSqlSafe, Row};

use super::{Store, Tx, flag};

/// A device's identity keys with the device's display name, for `/keys/query`.
#[derive(Debug, Clone)]
pub struct DeviceKeysRow {
    pub device_id: String,
    pub key_json: String,
    pub display_name: Option<String>,
}

/// A cross-signing key of a user.
#[derive(Debug, Clone)]
pub struct CrossSigningKeyRow {
    /// `master`, `self_signing` or `user_signing`.
    pub key_type: String,
    /// The unpadded base64 ed25519 public key.
    pub public_key: String,
    pub key_json: String,
}

/// A signature uploaded by `/keys/signatures/upload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRow {
    /// A device ID or a cross-signing public key of the target user.
    pub target_key: String,
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

/// A room key backup version (not deleted).
#[derive(Debug, Clone)]
pub struct BackupVersionRow {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
}

/// How a backed-up session key ranks against another: `(is_verified,
/// first_message_index, forwarded_count)`.
pub type BackupRank = (bool, i64, i64);

/// A session key to back up: `(room_id, session_id, rank, session_json)`.
pub type NewBackupKey = (String, String, BackupRank, String);

impl Store {
    /// Records a change of `user_id`'s device list at the next stream position. The
    /// counter is taken here, so this must be the last write of the transaction.
    async fn device_list_changed(tx: &mut Tx<'_>, changes: &[(&str, Option<&str>)]) -> sqlx::Result<i64> {
        let pos = Self::next_counter(tx, "stream").await?;
        for (user, visible_to) in changes {
            sqlx::query(
                "INSERT INTO device_list_changes (stream_pos, user_id, visible_to) VALUES ($1, $2, $3) \
                 ON CONFLICT (stream_pos, user_id) DO NOTHING",
            )
            .bind(pos)
            .bind(*user)
            .bind(*visible_to)
            .execute(&mut **tx)
            .await?;
        }
        Ok(pos)
    }

    /// Stores a device's identity keys. Returns the stream position of the device list
    /// change, or `None` when the keys are exactly those already stored.
    pub async fn set_device_keys(&self, user_id: &str, device_id: &str, key_json: &str) -> sqlx::Result<Option<i64>> {
        let mut tx = self.begin().await?;
        let old: Option<String> =
            sqlx::query_scalar("SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
        if old.as_deref() == Some(key_json) {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(key_json)
        .execute(&mut *tx)
        .await?;
        let pos = Self::device_list_changed(&mut tx, &[(user_id, None)]).await?;
        tx.commit().await?;
        Ok(Some(pos))
    }

    /// Identity keys of a user's existing devices, by device ID.
    pub async fn device_keys(&self, user_id: &str) -> sqlx::Result<Vec<DeviceKeysRow>> {
        let rows = sqlx::query(
            "SELECT k.device_id, k.key_json, d.display_name FROM e2e_device_keys k \
             JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id \
             WHERE k.user_id = $1 ORDER BY k.device_id",
        )
        .bind(user_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceKeysRow { device_id: r.try_get(0)?, key_json: r.try_get(1)?, display_name: r.try_get(2)? })
            })
            .collect()
    }

    /// Removes every key of the given devices (all of the user's with `None`): identity,
    /// one-time and fallback keys and the signatures on them. Returns the stream
    /// position of the device list change, or `None` if no device had identity keys.
    pub async fn delete_device_keys(&self, user_id: &str, device_ids: Option<&[String]>) -> sqlx::Result<Option<i64>> {
        let mut tx = self.begin().await?;
        let devices: Vec<String> = match device_ids {
            Some(ids) => ids.to_vec(),
            None => {
                sqlx::query_scalar(
                    "SELECT device_id FROM e2e_device_keys WHERE user_id = $1 UNION \
                     SELECT device_id FROM e2e_one_time_keys WHERE user_id = $1 UNION \
                     SELECT device_id FROM e2e_fallback_keys WHERE user_id = $1",
                )
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?
            }
        };
        let mut had_keys = false;
        for device in &devices {
            for table in ["e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"] {
                let done =
                    sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE user_id = $1 AND device_id = $2")))
                        .bind(user_id)
                        .bind(device)
                        .execute(&mut *tx)
                        .await?;
                had_keys |= table == "e2e_device_keys" && done.rows_affected() > 0;
            }
            sqlx::query("DELETE FROM e2e_signatures WHERE target_user_id = $1 AND target_key = $2")
                .bind(user_id)
                .bind(device)
                .execute(&mut *tx)
                .await?;
        }
        if !had_keys {
            tx.commit().await?;
            return Ok(None);
        }
        let pos = Self::device_list_changed(&mut tx, &[(user_id, None)]).await?;
        tx.commit().await?;
        Ok(Some(pos))
    }

    /// A stored one-time key, to tell a repeated upload from a conflicting one.
    pub async fn one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
        key_id: &str,
    ) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar(
            "SELECT key_json FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
             AND key_id = $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .bind(key_id)
        .fetch_optional(&mut *self.conn().await?)
        .await
    }

    /// Adds one-time keys `(algorithm, key_id, key_json)`; keys already stored are kept.
    pub async fn add_one_time_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[(String, String, String)],
        now_ms: i64,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        for (algorithm, key_id, json) in keys {
            sqlx::query(
                "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json, ts_added_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .bind(key_id)
            .bind(json)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Unclaimed one-time keys of a device per algorithm.
    pub async fn count_one_time_keys(&self, user_id: &str, device_id: &str) -> sqlx::Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 \
             GROUP BY algorithm ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Takes (deletes and returns) the oldest one-time key of a device for an algorithm:
    /// `(key_id, key_json)`. Concurrent claims never get the same key.
    pub async fn claim_one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> sqlx::Result<Option<(String, String)>> {
        // Under PostgreSQL's read committed, a concurrent claim of the same row makes
        // this DELETE find nothing; then the next key is tried.
        for _ in 0..16 {
            let row = sqlx::query(
                "DELETE FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
                 AND key_id = (SELECT key_id FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 \
                 AND algorithm = $3 ORDER BY ts_added_ms, key_id LIMIT 1) RETURNING key_id, key_json",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
            if let Some(r) = row {
                return Ok(Some((r.try_get(0)?, r.try_get(1)?)));
            }
            let left: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_one(&mut *self.conn().await?)
            .await?;
            if left == 0 {
                break;
            }
        }
        Ok(None)
    }

    /// Sets a device's fallback key for an algorithm. Uploading the key already stored
    /// changes nothing (a used key stays used).
    pub async fn set_fallback_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
        key_id: &str,
        key_json: &str,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) \
             VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (user_id, device_id, algorithm) \
             DO UPDATE SET key_id = $4, key_json = $5, used = 0 \
             WHERE e2e_fallback_keys.key_id <> $4 OR e2e_fallback_keys.key_json <> $5",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .bind(key_id)
        .bind(key_json)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// Hands out a device's fallback key for an algorithm, marking it used:
    /// `(key_id, key_json)`.
    pub async fn claim_fallback_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> sqlx::Result<Option<(String, String)>> {
        let row = sqlx::query(
            "UPDATE e2e_fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
             RETURNING key_id, key_json",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// Algorithms for which the device has a fallback key nobody has claimed.
    pub async fn unused_fallback_key_types(&self, user_id: &str, device_id: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0 \
             ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&mut *self.conn().await?)
        .await
    }

    /// A user's cross-signing keys.
    pub async fn cross_signing_keys(&self, user_id: &str) -> sqlx::Result<Vec<CrossSigningKeyRow>> {
        let rows = sqlx::query(
            "SELECT key_type, public_key, key_json FROM e2e_cross_signing_keys WHERE user_id = $1 ORDER BY key_type",
        )
        .bind(user_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CrossSigningKeyRow { key_type: r.try_get(0)?, public_key: r.try_get(1)?, key_json: r.try_get(2)? })
            })
            .collect()
    }

    /// Replaces cross-signing keys `(key_type, public_key, key_json)` together. Returns
    /// the stream position of the device list change.
    pub async fn set_cross_signing_keys(&self, user_id: &str, keys: &[(String, String, String)]) -> sqlx::Result<i64> {
        let mut tx = self.begin().await?;
        for (key_type, public_key, json) in keys {
            sqlx::query(
                "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = $3, key_json = $4",
            )
            .bind(user_id)
            .bind(key_type)
            .bind(public_key)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        }
        let pos = Self::device_list_changed(&mut tx, &[(user_id, None)]).await?;
        tx.commit().await?;
        Ok(pos)
    }

    /// Stores signatures `(target_user_id, target_key, signer_user_id, signer_key_id,
    /// signature)` and records the device list changes `(user_id, visible_to)` they make.
    /// Returns the stream position, or `None` when there was nothing to store.
    pub async fn add_signatures(
        &self,
        signatures: &[(String, String, String, String, String)],
        changes: &[(String, Option<String>)],
    ) -> sqlx::Result<Option<i64>> {
        if signatures.is_empty() {
            return Ok(None);
        }
        let mut tx = self.begin().await?;
        for (target_user, target_key, signer_user, signer_key, signature) in signatures {
            sqlx::query(
                "INSERT INTO e2e_signatures (target_user_id, target_key, signer_user_id, signer_key_id, signature) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (target_user_id, target_key, signer_user_id, signer_key_id) DO UPDATE SET signature = $5",
            )
            .bind(target_user)
            .bind(target_key)
            .bind(signer_user)
            .bind(signer_key)
            .bind(signature)
            .execute(&mut *tx)
            .await?;
        }
        let changes: Vec<(&str, Option<&str>)> = changes.iter().map(|(u, v)| (u.as_str(), v.as_deref())).collect();
        let pos = Self::device_list_changed(&mut tx, &changes).await?;
        tx.commit().await?;
        Ok(Some(pos))
    }

    /// Uploaded signatures on a user's keys (devices and cross-signing keys).
    pub async fn signatures_on(&self, target_user_id: &str) -> sqlx::Result<Vec<SignatureRow>> {
        let rows = sqlx::query(
            "SELECT target_key, signer_user_id, signer_key_id, signature FROM e2e_signatures \
             WHERE target_user_id = $1 ORDER BY target_key, signer_user_id, signer_key_id",
        )
        .bind(target_user_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SignatureRow {
                    target_key: r.try_get(0)?,
                    signer_user_id: r.try_get(1)?,
                    signer_key_id: r.try_get(2)?,
                    signature: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Users whose device list changed in `(since, to]` in a way `viewer` may see:
    /// `(user_id, only_for_viewer)`.
    pub async fn device_list_changes(&self, viewer: &str, since: i64, to: i64) -> sqlx::Result<Vec<(String, bool)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT user_id, visible_to FROM device_list_changes WHERE stream_pos > $1 AND stream_pos <= $2 \
             AND (visible_to IS NULL OR visible_to = $3) ORDER BY user_id",
        )
        .bind(since)
        .bind(to)
        .bind(viewer)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get::<Option<String>, _>(1)?.is_some()))).collect()
    }

    /// Member events in `(since, to]` of the rooms `user_id` is joined to now:
    /// `(room_id, state_key, pdu_json, pdu_json of the member event it replaced)`.
    pub async fn member_events_in_joined_rooms(
        &self,
        user_id: &str,
        since: i64,
        to: i64,
    ) -> sqlx::Result<Vec<(String, String, String, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT e.room_id, e.state_key, e.pdu_json, p.pdu_json FROM events e \
             JOIN current_state c ON c.room_id = e.room_id AND c.event_type = 'm.room.member' \
             AND c.state_key = $1 AND c.membership = 'join' \
             LEFT JOIN events p ON p.event_id = e.replaces_state \
             WHERE e.event_type = 'm.room.member' AND e.stream_ordering > $2 AND e.stream_ordering <= $3 \
             ORDER BY e.stream_ordering",
        )
        .bind(user_id)
        .bind(since)
        .bind(to)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))).collect()
    }

    /// Creates the next backup version of a user (numbers are never reused).
    pub async fn create_backup_version(&self, user_id: &str, algorithm: &str, auth_data: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO e2e_backup_versions (user_id, version, algorithm, auth_data, etag, deleted) \
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, 0, 0 FROM e2e_backup_versions WHERE user_id = $1 \
             RETURNING version",
        )
        .bind(user_id)
        .bind(algorithm)
        .bind(auth_data)
        .fetch_one(&mut *self.conn().await?)
        .await
    }

    /// A backup version that is not deleted; with `None`, the newest one.
    pub async fn backup_version(&self, user_id: &str, version: Option<i64>) -> sqlx::Result<Option<BackupVersionRow>> {
        let row = sqlx::query(
            "SELECT version, algorithm, auth_data, etag FROM e2e_backup_versions WHERE user_id = $1 AND deleted = 0 \
             AND ($2 IS NULL OR version = $2) ORDER BY version DESC LIMIT 1",
        )
        .bind(user_id)
        .bind(version)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.map(|r| {
            Ok(BackupVersionRow {
                version: r.try_get(0)?,
                algorithm: r.try_get(1)?,
                auth_data: r.try_get(2)?,
                etag: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Replaces a backup version's `auth_data`; `false` if there is no such version.
    pub async fn update_backup_auth_data(&self, user_id: &str, version: i64, auth_data: &str) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE e2e_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .bind(auth_data)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a backup version and its keys; `false` if there is no such version.
    pub async fn delete_backup_version(&self, user_id: &str, version: i64) -> sqlx::Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE e2e_backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM e2e_backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Number of keys in a backup version and its etag.
    pub async fn backup_count_etag(&self, user_id: &str, version: i64) -> sqlx::Result<(i64, i64)> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM e2e_backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .fetch_one(&mut *self.conn().await?)
            .await?;
        let etag: Option<i64> =
            sqlx::query_scalar("SELECT etag FROM e2e_backup_versions WHERE user_id = $1 AND version = $2")
                .bind(user_id)
                .bind(version)
                .fetch_optional(&mut *self.conn().await?)
                .await?;
        Ok((count, etag.unwrap_or(0)))
    }

    /// Backs up session keys. An existing key is replaced only when `replace(old, new)`
    /// says so; the version's etag moves when anything changed. Returns `(count, etag)`.
    pub async fn put_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: &[NewBackupKey],
        replace: impl Fn(BackupRank, BackupRank) -> bool,
    ) -> sqlx::Result<(i64, i64)> {
        let mut tx = self.begin().await?;
        let mut changed = false;
        for (room_id, session_id, rank, json) in keys {
            let old = sqlx::query(
                "SELECT is_verified, first_message_index, forwarded_count FROM e2e_backup_keys \
                 WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
            )
            .bind(user_id)
            .bind(version)
            .bind(room_id)
            .bind(session_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = old {
                let old_rank: BackupRank = (r.try_get::<i64, _>(0)? != 0, r.try_get(1)?, r.try_get(2)?);
                if !replace(old_rank, *rank) {
                    continue;
                }
            }
            sqlx::query(
                "INSERT INTO e2e_backup_keys (user_id, version, room_id, session_id, first_message_index, \
                 forwarded_count, is_verified, session_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET first_message_index = $5, \
                 forwarded_count = $6, is_verified = $7, session_json = $8",
            )
            .bind(user_id)
            .bind(version)
            .bind(room_id)
            .bind(session_id)
            .bind(rank.1)
            .bind(rank.2)
            .bind(flag(rank.0))
            .bind(json)
            .execute(&mut *tx)
            .await?;
            changed = true;
        }
        if changed {
            Self::bump_backup_etag(&mut tx, user_id, version).await?;
        }
        tx.commit().await?;
        self.backup_count_etag(user_id, version).await
    }

    async fn bump_backup_etag(tx: &mut Tx<'_>, user_id: &str, version: i64) -> sqlx::Result<()> {
        sqlx::query("UPDATE e2e_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Backed-up keys of a version, optionally of one room or one session:
    /// `(room_id, session_id, session_json)`.
    pub async fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> sqlx::Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT room_id, session_id, session_json FROM e2e_backup_keys WHERE user_id = $1 AND version = $2 \
             AND ($3 IS NULL OR room_id = $3) AND ($4 IS NULL OR session_id = $4) ORDER BY room_id, session_id",
        )
        .bind(user_id)
        .bind(version)
        .bind(room_id)
        .bind(session_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// Deletes backed-up keys of a version, optionally of one room or one session; the
    /// etag moves. Returns `(count, etag)` afterwards.
    pub async fn delete_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> sqlx::Result<(i64, i64)> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM e2e_backup_keys WHERE user_id = $1 AND version = $2 \
             AND ($3 IS NULL OR room_id = $3) AND ($4 IS NULL OR session_id = $4)",
        )
        .bind(user_id)
        .bind(version)
        .bind(room_id)
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
        Self::bump_backup_etag(&mut tx, user_id, version).await?;
        tx.commit().await?;
        self.backup_count_etag(user_id, version).await
    }
}
