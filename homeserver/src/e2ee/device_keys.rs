//! Device keys, one-time and fallback keys: uploaded by a device, handed out to whoever
//! asks (`/keys/query`, `/keys/claim`), and fetched from other servers for their users.

use std::collections::BTreeMap;

use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedServerName, OwnedUserId, UserId,
    encryption::OneTimeKey, serde::Raw,
};
use serde_json::{Map, Value, json, value::RawValue};

use super::{E2ee, parse_raw, parse_stored, signatures::merge_signature};
use kairan_core::{
    error::{Error, Result},
    time::now_ms,
};

/// How long `/keys/query` and `/keys/claim` wait for another server.
pub(super) const REMOTE_KEYS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A user's keys as `/keys/query` returns them: device keys by device ID and the
/// cross-signing keys the asker may see.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct UserKeys {
    pub devices: Map<String, Value>,
    pub master: Option<Value>,
    pub self_signing: Option<Value>,
    pub user_signing: Option<Value>,
}

impl E2ee<'_> {
    /// `/keys/upload`: stores device keys, one-time keys and fallback keys of the
    /// caller's device; returns the unclaimed one-time key counts.
    pub async fn upload_keys(
        &self,
        user: &UserId,
        device: &str,
        device_keys: Option<&RawValue>,
        one_time_keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
        fallback_keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    ) -> Result<BTreeMap<String, i64>> {
        if let Some(raw) = device_keys {
            let mut keys = parse_raw(raw, "device_keys")?;
            let obj = keys.as_object_mut().ok_or_else(|| Error::bad_json("device_keys must be an object"))?;
            if obj.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
                return Err(Error::bad_json("device_keys.user_id does not match the authenticated user"));
            }
            if obj.get("device_id").and_then(Value::as_str) != Some(device) {
                return Err(Error::bad_json("device_keys.device_id does not match the authenticated device"));
            }
            if !obj.get("keys").is_some_and(Value::is_object) {
                return Err(Error::bad_json("device_keys.keys must be an object"));
            }
            // `unsigned` is the server's to fill in on the way out.
            obj.remove("unsigned");
            if let Some(pos) = self.services.store.set_device_keys(user.as_str(), device, &keys.to_string()).await? {
                self.services.notifier.advance(pos, kairan_core::notifier::Audience::Everyone);
                self.services.announce_device_update(user, device, pos, false).await;
            }
        }

        let mut new_keys = Vec::new();
        for (id, raw) in one_time_keys {
            let (algorithm, key_id) = (id.algorithm().to_string(), id.key_name().to_string());
            let key = parse_raw(raw.json(), "one-time key")?;
            if let Some(old) = self.services.store.one_time_key(user.as_str(), device, &algorithm, &key_id).await? {
                if parse_stored(&old) != key {
                    return Err(Error::invalid_param(format!("one-time key {id} already exists with other content")));
                }
                continue;
            }
            new_keys.push((algorithm, key_id, key.to_string()));
        }
        if !new_keys.is_empty() {
            self.services.store.add_one_time_keys(user.as_str(), device, &new_keys, now_ms()).await?;
        }

        // One fallback key per algorithm: the last one given wins.
        let mut fallback: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (id, raw) in fallback_keys {
            let key = parse_raw(raw.json(), "fallback key")?;
            fallback.insert(id.algorithm().to_string(), (id.key_name().to_string(), key.to_string()));
        }
        for (algorithm, (key_id, json)) in fallback {
            self.services.store.set_fallback_key(user.as_str(), device, &algorithm, &key_id, &json).await?;
        }

        self.count_one_time_keys(user, device).await
    }

    /// Unclaimed one-time keys of a device per algorithm. `signed_curve25519` is always
    /// present, as clients expect it.
    pub async fn count_one_time_keys(&self, user: &UserId, device: &str) -> Result<BTreeMap<String, i64>> {
        let mut counts: BTreeMap<String, i64> =
            self.services.store.count_one_time_keys(user.as_str(), device).await?.into_iter().collect();
        counts.entry("signed_curve25519".to_owned()).or_insert(0);
        Ok(counts)
    }

    /// Algorithms of the device's fallback keys that nobody has claimed yet.
    pub async fn unused_fallback_key_types(&self, user: &UserId, device: &str) -> Result<Vec<String>> {
        Ok(self.services.store.unused_fallback_key_types(user.as_str(), device).await?)
    }

    /// The keys of one local user as `requester` sees them (`None`: another server):
    /// device keys (all devices for an empty list) and cross-signing keys, with uploaded
    /// signatures merged in. A user-signing key is only shown to its owner, and
    /// signatures other users made on a master key only to the user who made them.
    pub async fn local_user_keys(
        &self,
        user: &UserId,
        devices: &[OwnedDeviceId],
        requester: Option<&UserId>,
    ) -> Result<UserKeys> {
        let mut keys = UserKeys::default();
        let signatures = self.services.store.signatures_on(user.as_str()).await?;
        for row in self.services.store.device_keys(user.as_str()).await? {
            if !devices.is_empty() && !devices.iter().any(|d| d.as_str() == row.device_id) {
                continue;
            }
            let mut json = parse_stored(&row.key_json);
            for s in signatures.iter().filter(|s| s.target_key == row.device_id) {
                merge_signature(&mut json, &s.signer_user_id, &s.signer_key_id, &s.signature);
            }
            if let (Some(obj), Some(name)) = (json.as_object_mut(), row.display_name) {
                obj.insert("unsigned".to_owned(), json!({ "device_display_name": name }));
            }
            keys.devices.insert(row.device_id, json);
        }
        for key in self.services.store.cross_signing_keys(user.as_str()).await? {
            let target = match key.key_type.as_str() {
                "master" => &mut keys.master,
                "self_signing" => &mut keys.self_signing,
                "user_signing" if requester == Some(user) => &mut keys.user_signing,
                _ => continue,
            };
            let mut json = parse_stored(&key.key_json);
            for s in signatures.iter().filter(|s| {
                s.target_key == key.public_key
                    && (s.signer_user_id == user.as_str()
                        || Some(s.signer_user_id.as_str()) == requester.map(|r| r.as_str()))
            }) {
                merge_signature(&mut json, &s.signer_user_id, &s.signer_key_id, &s.signature);
            }
            *target = Some(json);
        }
        Ok(keys)
    }

    /// `/keys/query`: the keys of local users (see [`Services::local_user_keys`]) and of
    /// remote users, asked of their servers concurrently; a server that fails or does not
    /// answer in time is named in `failures`.
    pub async fn query_keys(
        &self,
        requester: &UserId,
        query: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<Value> {
        let mut failures = Map::new();
        let mut device_keys = Map::new();
        let (mut master, mut self_signing, mut user_signing) = (Map::new(), Map::new(), Map::new());
        let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>> = BTreeMap::new();
        let mut found = Vec::new();
        for (user, devices) in query {
            if self.services.is_local(user) {
                found.push((user.clone(), self.local_user_keys(user, devices, Some(requester)).await?));
            } else {
                remote.entry(user.server_name().to_owned()).or_default().insert(user.clone(), devices.clone());
            }
        }
        let asked = futures::future::join_all(remote.iter().map(|(server, users)| async move {
            let answer = tokio::time::timeout(
                REMOTE_KEYS_TIMEOUT,
                self.services.remote_user_keys(server, users.keys().cloned()),
            )
            .await;
            (server, answer)
        }))
        .await;
        for (server, answer) in asked {
            match answer {
                Ok(Ok(users)) => {
                    for (user, mut keys) in users {
                        // Kept whole; the client may have asked for some devices only.
                        let wanted = remote.get(server).and_then(|u| u.get(&user)).filter(|d| !d.is_empty());
                        if let Some(wanted) = wanted {
                            keys.devices.retain(|d, _| wanted.iter().any(|w| w.as_str() == d));
                        }
                        // Signatures the requester made on a remote master key are kept here.
                        if let Some(master) = keys.master.as_mut() {
                            self.merge_own_signatures(requester, &user, master).await?;
                        }
                        found.push((user, keys));
                    }
                }
                Ok(Err(e)) => {
                    failures.insert(server.to_string(), json!({ "status": e.status.as_u16(), "message": e.message }));
                }
                Err(_) => {
                    failures.insert(server.to_string(), json!({ "status": 504, "message": "timed out" }));
                }
            }
        }
        for (user, keys) in found {
            device_keys.insert(user.to_string(), Value::Object(keys.devices));
            for (target, key) in [
                (&mut master, keys.master),
                (&mut self_signing, keys.self_signing),
                (&mut user_signing, keys.user_signing),
            ] {
                if let Some(key) = key {
                    target.insert(user.to_string(), key);
                }
            }
        }
        Ok(json!({
            "failures": failures,
            "device_keys": device_keys,
            "master_keys": master,
            "self_signing_keys": self_signing,
            "user_signing_keys": user_signing,
        }))
    }

    /// Adds to a remote user's master key the signatures `requester` made on it here.
    async fn merge_own_signatures(&self, requester: &UserId, user: &UserId, master: &mut Value) -> Result<()> {
        let public = master
            .get("keys")
            .and_then(Value::as_object)
            .and_then(|k| k.values().next())
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(public) = public else { return Ok(()) };
        for s in self.services.store.signatures_on(user.as_str()).await? {
            if s.target_key == public && s.signer_user_id == requester.as_str() {
                merge_signature(master, &s.signer_user_id, &s.signer_key_id, &s.signature);
            }
        }
        Ok(())
    }

    /// One key per device of a local user: a one-time key while there is one, else the
    /// device's fallback key. Devices without either are left out.
    pub async fn claim_local_keys(
        &self,
        user: &UserId,
        devices: &BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>,
    ) -> Result<Map<String, Value>> {
        let mut by_device = Map::new();
        for (device, algorithm) in devices {
            let (u, d, a) = (user.as_str(), device.as_str(), algorithm.as_str());
            let key = match self.services.store.claim_one_time_key(u, d, a).await? {
                Some(k) => Some(k),
                None => self.services.store.claim_fallback_key(u, d, a).await?,
            };
            if let Some((key_id, json)) = key {
                by_device.insert(device.to_string(), json!({ format!("{a}:{key_id}"): parse_stored(&json) }));
            }
        }
        Ok(by_device)
    }

    /// `/keys/claim`: local keys from the database, remote ones from their servers
    /// (concurrently; failures by server).
    pub async fn claim_keys(
        &self,
        query: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> Result<Value> {
        let mut failures = Map::new();
        let mut claimed = Map::new();
        let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>> =
            BTreeMap::new();
        for (user, devices) in query {
            if !self.services.is_local(user) {
                remote.entry(user.server_name().to_owned()).or_default().insert(user.clone(), devices.clone());
                continue;
            }
            let by_device = self.claim_local_keys(user, devices).await?;
            if !by_device.is_empty() {
                claimed.insert(user.to_string(), Value::Object(by_device));
            }
        }
        let asked = futures::future::join_all(remote.into_iter().map(|(server, users)| async move {
            let answer =
                tokio::time::timeout(REMOTE_KEYS_TIMEOUT, self.services.claim_remote_keys(&server, users)).await;
            (server, answer)
        }))
        .await;
        for (server, answer) in asked {
            match answer {
                Ok(Ok(users)) => claimed.extend(users),
                Ok(Err(e)) => {
                    failures.insert(server.to_string(), json!({ "status": e.status.as_u16(), "message": e.message }));
                }
                Err(_) => {
                    failures.insert(server.to_string(), json!({ "status": 504, "message": "timed out" }));
                }
            }
        }
        Ok(json!({ "failures": failures, "one_time_keys": claimed }))
    }
}
