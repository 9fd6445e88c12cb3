//! Server-side room key backup (`/room_keys/...`): versions, and the encrypted session keys
//! in them. The server sees only ciphertext and the fields that rank one copy above another.

use http::StatusCode;
use ruma::{
    UInt, UserId,
    api::client::backup::{BackupAlgorithm, KeyBackupData},
    serde::Raw,
};
use serde_json::{Value, json, value::RawValue};

use super::{E2ee, parse_raw, parse_stored};
use kairan_core::error::{Error, Result};

/// Whether a backed-up session key `new` should replace `old`: verified beats
/// unverified, then the lower first message index, then the lower forwarded count.
fn better_backup_key(old: (bool, i64, i64), new: (bool, i64, i64)) -> bool {
    (new.0, -new.1, -new.2) > (old.0, -old.1, -old.2)
}

/// A backup version from a path or query parameter; anything else is unknown.
fn backup_version_number(version: &str) -> Result<i64> {
    version.parse::<i64>().map_err(|_| Error::not_found(format!("unknown backup version {version:?}")))
}

/// `(algorithm, auth_data)` of a backup version body.
fn backup_algorithm(body: &RawValue) -> Result<(String, Value)> {
    let v = parse_raw(body, "backup version")?;
    let algorithm = v
        .get("algorithm")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_json("algorithm must be a string"))?
        .to_owned();
    let auth_data =
        v.get("auth_data").filter(|a| a.is_object()).ok_or_else(|| Error::bad_json("auth_data must be an object"))?;
    Ok((algorithm, auth_data.clone()))
}

/// How many keys a backup version holds, and the etag that changes with them.
pub struct KeyCount {
    pub count: UInt,
    pub etag: String,
}

impl KeyCount {
    fn new(count: i64, etag: i64) -> Self {
        Self { count: UInt::try_from(count.max(0)).unwrap_or_default(), etag: etag.to_string() }
    }
}

/// A backup version as `GET /room_keys/version` describes it.
pub struct BackupInfo {
    pub algorithm: Raw<BackupAlgorithm>,
    pub keys: KeyCount,
    pub version: String,
}

fn to_raw(v: &Value) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(v).map_err(|e| Error::internal("backup version", e))
}

impl E2ee<'_> {
    /// `POST /room_keys/version`: a new backup version, which becomes the current one.
    pub async fn create_backup_version(&self, user: &UserId, body: &RawValue) -> Result<String> {
        let (algorithm, auth_data) = backup_algorithm(body)?;
        let version =
            self.services.store.create_backup_version(user.as_str(), &algorithm, &auth_data.to_string()).await?;
        Ok(version.to_string())
    }

    /// `GET /room_keys/version[/{version}]`: a backup version (the current one with
    /// `None`) with its key count and etag.
    pub async fn backup_info(&self, user: &UserId, version: Option<&str>) -> Result<BackupInfo> {
        let number = version.map(backup_version_number).transpose()?;
        let row = self.services.store.backup_version(user.as_str(), number).await?.ok_or_else(|| match version {
            None => Error::not_found("no backup version exists"),
            Some(v) => Error::not_found(format!("unknown backup version {v:?}")),
        })?;
        let (count, etag) = self.services.store.backup_count_etag(user.as_str(), row.version).await?;
        let algorithm = json!({ "algorithm": row.algorithm, "auth_data": parse_stored(&row.auth_data) });
        Ok(BackupInfo {
            algorithm: Raw::from_json(to_raw(&algorithm)?),
            keys: KeyCount::new(count, etag),
            version: row.version.to_string(),
        })
    }

    /// `PUT /room_keys/version/{version}`: replaces `auth_data`; the algorithm stays.
    pub async fn update_backup_version(&self, user: &UserId, version: &str, body: &RawValue) -> Result<()> {
        let number = backup_version_number(version)?;
        let parsed = parse_raw(body, "backup version")?;
        if let Some(v) = parsed.get("version")
            && v.as_str() != Some(version)
        {
            return Err(Error::invalid_param("the version in the body does not match the path"));
        }
        let (algorithm, auth_data) = backup_algorithm(body)?;
        let row = self
            .services
            .store
            .backup_version(user.as_str(), Some(number))
            .await?
            .ok_or_else(|| Error::not_found(format!("unknown backup version {version:?}")))?;
        if row.algorithm != algorithm {
            return Err(Error::invalid_param("the algorithm of a backup version cannot change"));
        }
        self.services.store.update_backup_auth_data(user.as_str(), number, &auth_data.to_string()).await?;
        Ok(())
    }

    /// `DELETE /room_keys/version/{version}`: the version and its keys.
    pub async fn delete_backup_version(&self, user: &UserId, version: &str) -> Result<()> {
        let number = backup_version_number(version)?;
        if !self.services.store.delete_backup_version(user.as_str(), number).await? {
            return Err(Error::not_found(format!("unknown backup version {version:?}")));
        }
        Ok(())
    }

    /// A backup version that exists (not deleted).
    async fn existing_backup_version(&self, user: &UserId, version: &str) -> Result<i64> {
        let number = backup_version_number(version)?;
        match self.services.store.backup_version(user.as_str(), Some(number)).await? {
            Some(row) => Ok(row.version),
            None => Err(Error::not_found(format!("unknown backup version {version:?}"))),
        }
    }

    /// `PUT /room_keys/keys...`: backs up session keys `(room_id, session_id, data)` in
    /// the current version; a stored key is replaced only by a better one.
    pub async fn put_room_keys(
        &self,
        user: &UserId,
        version: &str,
        keys: &[(String, String, &RawValue)],
    ) -> Result<KeyCount> {
        let number = backup_version_number(version)?;
        let current = self.services.store.backup_version(user.as_str(), None).await?;
        match current {
            Some(c) if c.version == number => {}
            Some(c) if self.services.store.backup_version(user.as_str(), Some(number)).await?.is_some() => {
                let mut e = Error::new(
                    StatusCode::FORBIDDEN,
                    "M_WRONG_ROOM_KEYS_VERSION",
                    format!("version {version} is not the current backup version"),
                );
                e.body = Some(json!({ "current_version": c.version.to_string() }));
                return Err(e);
            }
            _ => return Err(Error::not_found(format!("unknown backup version {version:?}"))),
        }
        let mut new = Vec::with_capacity(keys.len());
        for (room_id, session_id, raw) in keys {
            let data = parse_raw(raw, "key backup data")?;
            let bad =
                |field: &str| Error::bad_json(format!("key backup data of session {session_id}: invalid {field}"));
            let index =
                data.get("first_message_index").and_then(Value::as_i64).ok_or_else(|| bad("first_message_index"))?;
            let forwarded =
                data.get("forwarded_count").and_then(Value::as_i64).ok_or_else(|| bad("forwarded_count"))?;
            let verified = data.get("is_verified").and_then(Value::as_bool).ok_or_else(|| bad("is_verified"))?;
            if !data.get("session_data").is_some_and(Value::is_object) {
                return Err(bad("session_data"));
            }
            new.push((room_id.clone(), session_id.clone(), (verified, index, forwarded), data.to_string()));
        }
        let (count, etag) = self.services.store.put_backup_keys(user.as_str(), number, &new, better_backup_key).await?;
        Ok(KeyCount::new(count, etag))
    }

    /// `GET /room_keys/keys...`: backed-up keys `(room_id, session_id, data)` of a version.
    pub async fn room_keys(
        &self,
        user: &UserId,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<(String, String, Raw<KeyBackupData>)>> {
        let number = self.existing_backup_version(user, version).await?;
        let rows = self.services.store.backup_keys(user.as_str(), number, room_id, session_id).await?;
        let raw = |json: String| RawValue::from_string(json).map(Raw::from_json);
        rows.into_iter()
            .map(|(r, s, json)| Ok((r, s, raw(json).map_err(|e| Error::internal("stored backup key", e))?)))
            .collect()
    }

    /// `DELETE /room_keys/keys...`: the keys of a version, a room or a session.
    pub async fn delete_room_keys(
        &self,
        user: &UserId,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<KeyCount> {
        let number = self.existing_backup_version(user, version).await?;
        let (count, etag) = self.services.store.delete_backup_keys(user.as_str(), number, room_id, session_id).await?;
        Ok(KeyCount::new(count, etag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_keys_rank_verified_then_index_then_forwards() {
        assert!(better_backup_key((false, 0, 0), (true, 9, 9)));
        assert!(!better_backup_key((true, 9, 9), (false, 0, 0)));
        assert!(better_backup_key((false, 5, 0), (false, 4, 9)));
        assert!(better_backup_key((false, 5, 3), (false, 5, 2)));
        assert!(!better_backup_key((false, 5, 2), (false, 5, 2)), "a tie keeps the stored key");
    }
}
