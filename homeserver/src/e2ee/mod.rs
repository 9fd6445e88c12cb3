//! End-to-end encryption, the server's part: it stores and hands out public keys,
//! checks the signatures that tie cross-signing keys together, tells clients whose
//! devices changed, and keeps encrypted room key backups. It never sees a secret.
//!
//! Device list changes are rows on the `stream` counter (`device_list_changes`), so
//! `/sync` and `/keys/changes` read them like any other stream data.

use std::collections::{BTreeMap, BTreeSet};

use http::StatusCode;
use ruma::{
    CanonicalJsonObject, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedServerName, OwnedUserId,
    SigningKeyAlgorithm, UserId,
    encryption::OneTimeKey,
    serde::{Base64, Raw},
};
use serde_json::{Map, Value, json, value::RawValue};

use crate::{
    error::{Error, Result},
    services::{Services, now_ms},
};

fn parse_stored(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|_| json!({}))
}

fn parse_raw(raw: &RawValue, what: &str) -> Result<Value> {
    serde_json::from_str(raw.get()).map_err(|e| Error::bad_json(format!("invalid {what}: {e}")))
}

fn invalid_signature(message: impl Into<String>) -> Error {
    Error::new(StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE", message)
}

/// A key object without `signatures` and `unsigned`: what its signatures cover.
fn signed_content(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("signatures");
        o.remove("unsigned");
    }
    v
}

/// The signature `signer`/`key_id` carries in a key object.
fn signature_of<'a>(v: &'a Value, signer: &str, key_id: &str) -> Option<&'a str> {
    v.get("signatures")?.get(signer)?.get(key_id)?.as_str()
}

/// Checks an ed25519 signature over the canonical form of `object` (which may carry
/// signatures and `unsigned`; they are not signed).
fn verify_signature(object: &Value, signature: &str, public_key: &str) -> bool {
    let Ok(obj) = serde_json::from_value::<CanonicalJsonObject>(object.clone()) else { return false };
    let Ok(canonical) = ruma::signatures::to_canonical_json_string_for_signing(&obj) else { return false };
    let (Ok(key), Ok(sig)) = (
        Base64::<ruma::serde::base64::Standard>::parse(public_key),
        Base64::<ruma::serde::base64::Standard>::parse(signature),
    ) else {
        return false;
    };
    ruma::signatures::verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        key.as_bytes(),
        sig.as_bytes(),
        canonical.as_bytes(),
    )
    .is_ok()
}

/// Adds `signatures[signer][key_id] = signature` to a key object.
fn merge_signature(v: &mut Value, signer: &str, key_id: &str, signature: &str) {
    let Some(obj) = v.as_object_mut() else { return };
    let sigs = obj.entry("signatures").or_insert_with(|| json!({}));
    if !sigs.is_object() {
        *sigs = json!({});
    }
    if let Some(by_signer) = sigs.as_object_mut().map(|s| s.entry(signer.to_owned()).or_insert_with(|| json!({}))) {
        if !by_signer.is_object() {
            *by_signer = json!({});
        }
        by_signer[key_id] = signature.into();
    }
}

/// The ed25519 public key of a device's identity keys.
fn device_ed25519(keys: &Value, device_id: &str) -> Option<String> {
    keys.get("keys")?.get(format!("ed25519:{device_id}"))?.as_str().map(str::to_owned)
}

/// Checks a cross-signing key's owner and usage; returns its public key.
fn check_cross_signing_key(key: &Value, user: &UserId, usage: &str) -> Result<String> {
    let invalid = |why: &str| Error::invalid_param(format!("invalid {usage} key: {why}"));
    if key.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
        return Err(invalid("user_id is not yours"));
    }
    let usages = key.get("usage").and_then(Value::as_array).ok_or_else(|| invalid("usage is missing"))?;
    if !usages.iter().any(|u| u.as_str() == Some(usage)) {
        return Err(invalid(&format!("usage does not include {usage}")));
    }
    let keys = key.get("keys").and_then(Value::as_object).ok_or_else(|| invalid("keys is missing"))?;
    let mut entries = keys.iter();
    match (entries.next(), entries.next()) {
        (Some((id, Value::String(public))), None) if id.strip_prefix("ed25519:").is_some_and(|n| !n.is_empty()) => {
            Ok(public.clone())
        }
        _ => Err(invalid("keys must hold exactly one ed25519 key")),
    }
}

/// A failure entry of `/keys/signatures/upload`.
fn failure(status: u16, errcode: &str, error: impl Into<String>) -> Value {
    json!({ "status": status, "errcode": errcode, "error": error.into() })
}

/// Whether a backed-up session key `new` should replace `old`: verified beats
/// unverified, then the lower first message index, then the lower forwarded count.
fn better_backup_key(old: (bool, i64, i64), new: (bool, i64, i64)) -> bool {
    (new.0, -new.1, -new.2) > (old.0, -old.1, -old.2)
}

/// A backup version from a path or query parameter; anything else is unknown.
fn backup_version_number(version: &str) -> Result<i64> {
    version.parse::<i64>().map_err(|_| Error::not_found(format!("unknown backup version {version:?}")))
}

/// Whether an upload holds at least one key and every key in it is the one stored.
fn same_as_stored(stored: &BTreeMap<&str, Value>, upload: &CrossSigningUpload) -> bool {
    let given: Vec<_> = upload.entries().into_iter().filter_map(|(t, k)| k.map(|k| (t, k))).collect();
    !given.is_empty() && given.iter().all(|(t, k)| stored.get(t) == Some(*k))
}

/// A failed signature check, as a `/keys/signatures/upload` failure entry.
type SignatureResult = std::result::Result<Vec<(String, String, String, String, String)>, Value>;

/// How long `/keys/query` and `/keys/claim` wait for another server.
const REMOTE_KEYS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A user's keys as `/keys/query` returns them: device keys by device ID and the
/// cross-signing keys the asker may see.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct UserKeys {
    pub devices: Map<String, Value>,
    pub master: Option<Value>,
    pub self_signing: Option<Value>,
    pub user_signing: Option<Value>,
}

/// The cross-signing keys of an upload, by type.
#[derive(Debug, Default)]
pub struct CrossSigningUpload {
    pub master: Option<Value>,
    pub self_signing: Option<Value>,
    pub user_signing: Option<Value>,
}

impl CrossSigningUpload {
    fn entries(&self) -> [(&'static str, Option<&Value>); 3] {
        [
            ("master", self.master.as_ref()),
            ("self_signing", self.self_signing.as_ref()),
            ("user_signing", self.user_signing.as_ref()),
        ]
    }
}

impl Services {
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
            if let Some(pos) = self.store.set_device_keys(user.as_str(), device, &keys.to_string()).await? {
                self.notifier.advance(pos, crate::sync::Audience::Everyone);
                self.announce_device_update(user, device, pos, false).await;
            }
        }

        let mut new_keys = Vec::new();
        for (id, raw) in one_time_keys {
            let (algorithm, key_id) = (id.algorithm().to_string(), id.key_name().to_string());
            let key = parse_raw(raw.json(), "one-time key")?;
            if let Some(old) = self.store.one_time_key(user.as_str(), device, &algorithm, &key_id).await? {
                if parse_stored(&old) != key {
                    return Err(Error::invalid_param(format!("one-time key {id} already exists with other content")));
                }
                continue;
            }
            new_keys.push((algorithm, key_id, key.to_string()));
        }
        if !new_keys.is_empty() {
            self.store.add_one_time_keys(user.as_str(), device, &new_keys, now_ms()).await?;
        }

        // One fallback key per algorithm: the last one given wins.
        let mut fallback: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (id, raw) in fallback_keys {
            let key = parse_raw(raw.json(), "fallback key")?;
            fallback.insert(id.algorithm().to_string(), (id.key_name().to_string(), key.to_string()));
        }
        for (algorithm, (key_id, json)) in fallback {
            self.store.set_fallback_key(user.as_str(), device, &algorithm, &key_id, &json).await?;
        }

        self.count_one_time_keys(user, device).await
    }

    /// Unclaimed one-time keys of a device per algorithm. `signed_curve25519` is always
    /// present, as clients expect it.
    pub async fn count_one_time_keys(&self, user: &UserId, device: &str) -> Result<BTreeMap<String, i64>> {
        let mut counts: BTreeMap<String, i64> =
            self.store.count_one_time_keys(user.as_str(), device).await?.into_iter().collect();
        counts.entry("signed_curve25519".to_owned()).or_insert(0);
        Ok(counts)
    }

    /// Algorithms of the device's fallback keys that nobody has claimed yet.
    pub async fn unused_fallback_key_types(&self, user: &UserId, device: &str) -> Result<Vec<String>> {
        Ok(self.store.unused_fallback_key_types(user.as_str(), device).await?)
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
        let signatures = self.store.signatures_on(user.as_str()).await?;
        for row in self.store.device_keys(user.as_str()).await? {
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
        for key in self.store.cross_signing_keys(user.as_str()).await? {
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
            if self.is_local(user) {
                found.push((user.clone(), self.local_user_keys(user, devices, Some(requester)).await?));
            } else {
                remote.entry(user.server_name().to_owned()).or_default().insert(user.clone(), devices.clone());
            }
        }
        let asked = futures::future::join_all(remote.iter().map(|(server, users)| async move {
            let answer =
                tokio::time::timeout(REMOTE_KEYS_TIMEOUT, self.remote_user_keys(server, users.keys().cloned())).await;
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
        for s in self.store.signatures_on(user.as_str()).await? {
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
            let key = match self.store.claim_one_time_key(u, d, a).await? {
                Some(k) => Some(k),
                None => self.store.claim_fallback_key(u, d, a).await?,
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
            if !self.is_local(user) {
                remote.entry(user.server_name().to_owned()).or_default().insert(user.clone(), devices.clone());
                continue;
            }
            let by_device = self.claim_local_keys(user, devices).await?;
            if !by_device.is_empty() {
                claimed.insert(user.to_string(), Value::Object(by_device));
            }
        }
        let asked = futures::future::join_all(remote.into_iter().map(|(server, users)| async move {
            let answer = tokio::time::timeout(REMOTE_KEYS_TIMEOUT, self.claim_remote_keys(&server, users)).await;
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

    /// Whether a cross-signing upload must pass user-interactive auth: always, except
    /// for the first master key and for a repeat of the keys already stored.
    pub async fn cross_signing_upload_needs_auth(&self, user: &UserId, upload: &CrossSigningUpload) -> Result<bool> {
        let stored = self.store.cross_signing_keys(user.as_str()).await?;
        if !stored.iter().any(|k| k.key_type == "master") {
            return Ok(false);
        }
        if upload.master.is_none() {
            return Ok(true);
        }
        let stored: BTreeMap<&str, Value> =
            stored.iter().map(|k| (k.key_type.as_str(), parse_stored(&k.key_json))).collect();
        Ok(!same_as_stored(&stored, upload))
    }

    /// `/keys/device_signing/upload` (after any user-interactive auth): checks and
    /// stores cross-signing keys. Self-signing and user-signing keys must be signed by
    /// the master key (the one uploaded with them, else the stored one).
    pub async fn upload_cross_signing_keys(&self, user: &UserId, upload: &CrossSigningUpload) -> Result<()> {
        let stored_rows = self.store.cross_signing_keys(user.as_str()).await?;
        let stored: BTreeMap<&str, Value> =
            stored_rows.iter().map(|k| (k.key_type.as_str(), parse_stored(&k.key_json))).collect();
        if same_as_stored(&stored, upload) {
            return Ok(());
        }
        let mut new = Vec::new();
        let master_key = match &upload.master {
            Some(m) => {
                let public = check_cross_signing_key(m, user, "master")?;
                new.push(("master".to_owned(), public.clone(), m.to_string()));
                Some(public)
            }
            None => stored_rows.iter().find(|k| k.key_type == "master").map(|k| k.public_key.clone()),
        };
        for (key_type, key) in [("self_signing", &upload.self_signing), ("user_signing", &upload.user_signing)] {
            let Some(key) = key else { continue };
            let public = check_cross_signing_key(key, user, key_type)?;
            let master = master_key
                .as_deref()
                .ok_or_else(|| Error::missing_param(format!("a master key is needed to check the {key_type} key")))?;
            let signature = signature_of(key, user.as_str(), &format!("ed25519:{master}"))
                .ok_or_else(|| invalid_signature(format!("the {key_type} key is not signed by the master key")))?;
            if !verify_signature(key, signature, master) {
                return Err(invalid_signature(format!("invalid master key signature on the {key_type} key")));
            }
            new.push((key_type.to_owned(), public, key.to_string()));
        }
        if new.is_empty() {
            return Ok(());
        }
        let pos = self.store.set_cross_signing_keys(user.as_str(), &new).await?;
        self.notifier.advance(pos, crate::sync::Audience::Everyone);
        self.announce_signing_keys(user).await;
        Ok(())
    }

    /// `/keys/signatures/upload`: stores the signatures that check out; returns the
    /// failures by user and key ID. A user signs their own devices with their
    /// self-signing key and their master key with a device key, and other users'
    /// master keys with their user-signing key.
    pub async fn upload_signatures(
        &self,
        user: &UserId,
        signed: &BTreeMap<OwnedUserId, ruma::api::client::keys::upload_signatures::v3::SignedKeys>,
    ) -> Result<Value> {
        let own: BTreeMap<String, (String, Value)> = self
            .store
            .cross_signing_keys(user.as_str())
            .await?
            .into_iter()
            .map(|k| (k.key_type, (k.public_key, parse_stored(&k.key_json))))
            .collect();
        let devices: BTreeMap<String, Value> = self
            .store
            .device_keys(user.as_str())
            .await?
            .into_iter()
            .map(|d| (d.device_id, parse_stored(&d.key_json)))
            .collect();
        let mut failures = Map::new();
        let mut rows = Vec::new();
        let mut changes = BTreeSet::new();
        for (target, keys) in signed {
            let mut failed = Map::new();
            for (key_id, raw) in keys.iter() {
                let result = match serde_json::from_str::<Value>(raw.get()) {
                    Err(e) => Ok(Err(failure(400, "M_BAD_JSON", format!("invalid signed key: {e}")))),
                    Ok(obj) if target == user => Ok(self_signature(user, key_id, &obj, &own, &devices)),
                    Ok(obj) => self.user_signature(user, target, key_id, &obj, &own).await,
                };
                match result? {
                    Ok(sigs) if !sigs.is_empty() => {
                        let visible_to = (target != user).then(|| user.to_string());
                        changes.insert((target.to_string(), visible_to));
                        rows.extend(sigs);
                    }
                    Ok(_) => {}
                    Err(f) => {
                        failed.insert(key_id.to_owned(), f);
                    }
                }
            }
            if !failed.is_empty() {
                failures.insert(target.to_string(), Value::Object(failed));
            }
        }
        let changes: Vec<(String, Option<String>)> = changes.into_iter().collect();
        if let Some(pos) = self.store.add_signatures(&rows, &changes).await? {
            self.notifier.advance(pos, crate::sync::Audience::Everyone);
            // Signatures on the user's own keys are public: other servers hear of them.
            let own: BTreeSet<&str> = rows.iter().filter(|r| r.0 == user.as_str()).map(|r| r.1.as_str()).collect();
            for key in &own {
                if devices.contains_key(*key) {
                    self.announce_device_update(user, key, pos, false).await;
                }
            }
            if own.iter().any(|k| !devices.contains_key(*k)) {
                self.announce_signing_keys(user).await;
            }
        }
        Ok(json!({ "failures": failures }))
    }

    /// A signature by `user`'s user-signing key on `target`'s master key.
    async fn user_signature(
        &self,
        user: &UserId,
        target: &UserId,
        key_id: &str,
        obj: &Value,
        own: &BTreeMap<String, (String, Value)>,
    ) -> Result<SignatureResult> {
        let Some((user_signing, _)) = own.get("user_signing") else {
            return Ok(Err(failure(400, "M_INVALID_SIGNATURE", "you have no user-signing key")));
        };
        // A remote user's master key is asked of their server: the signature is checked
        // against the key they publish, and kept here for the signer's eyes only.
        let master = if self.is_local(target) {
            let theirs = self.store.cross_signing_keys(target.as_str()).await?;
            theirs.into_iter().find(|k| k.key_type == "master").map(|k| (k.public_key, parse_stored(&k.key_json)))
        } else {
            match tokio::time::timeout(REMOTE_KEYS_TIMEOUT, self.remote_master_key(target)).await {
                Ok(Ok(master)) => master,
                Ok(Err(e)) => return Ok(Err(failure(e.status.as_u16(), e.errcode, e.message))),
                Err(_) => {
                    return Ok(Err(failure(504, "M_UNKNOWN", format!("{} did not answer", target.server_name()))));
                }
            }
        };
        let Some((_, stored)) = master.filter(|(public, _)| public == key_id) else {
            return Ok(Err(failure(404, "M_NOT_FOUND", "only a user's current master key can be signed")));
        };
        if signed_content(obj) != signed_content(&stored) {
            return Ok(Err(failure(400, "M_INVALID_PARAM", "the signed key does not match the stored key")));
        }
        let signer_key = format!("ed25519:{user_signing}");
        let Some(signature) = signature_of(obj, user.as_str(), &signer_key) else {
            return Ok(Err(failure(400, "M_INVALID_SIGNATURE", "no signature by your user-signing key")));
        };
        if !verify_signature(&stored, signature, user_signing) {
            return Ok(Err(failure(400, "M_INVALID_SIGNATURE", "invalid signature")));
        }
        Ok(Ok(vec![(target.to_string(), key_id.to_owned(), user.to_string(), signer_key, signature.to_owned())]))
    }

    /// Removes the keys of deleted devices (all of the user's with `None`) and tells
    /// the users who share a room with them. Call it wherever devices are deleted.
    pub async fn forget_device_keys(&self, user: &UserId, device_ids: Option<&[String]>) -> Result<()> {
        // The devices that had keys, for the other servers' copies of the device list.
        let with_keys: Vec<String> = self
            .store
            .device_ids_with_keys(user.as_str())
            .await?
            .into_iter()
            .filter(|d| device_ids.is_none_or(|ids| ids.contains(d)))
            .collect();
        if let Some(pos) = self.store.delete_device_keys(user.as_str(), device_ids).await? {
            self.notifier.advance(pos, crate::sync::Audience::Everyone);
            for device in &with_keys {
                self.announce_device_update(user, device, pos, true).await;
            }
        }
        Ok(())
    }

    /// After a device's display name changed: users sharing a room with its owner, here
    /// and on other servers, hear of it (the name travels with the device's keys). A
    /// device without keys is nobody else's concern yet.
    pub async fn device_renamed(&self, user: &UserId, device_id: &str) -> Result<()> {
        if !self.store.device_ids_with_keys(user.as_str()).await?.iter().any(|d| d == device_id) {
            return Ok(());
        }
        let pos = self.store.record_device_list_change(user.as_str()).await?;
        self.notifier.advance(pos, crate::sync::Audience::Everyone);
        self.announce_device_update(user, device_id, pos, false).await;
        Ok(())
    }

    /// Users whose devices `user` should re-fetch, and users it no longer shares a room
    /// with, for changes in `(since, to]`: `(changed, left)`.
    pub async fn device_list_changes(&self, user: &UserId, since: i64, to: i64) -> Result<(Vec<String>, Vec<String>)> {
        let me = user.as_str();
        let sharing: BTreeSet<String> = self.store.users_sharing_rooms(me).await?.into_iter().collect();
        let mut changed = BTreeSet::new();
        let mut left = BTreeSet::new();
        for (other, only_for_me) in self.store.device_list_changes(me, since, to).await? {
            if only_for_me || other == me || sharing.contains(&other) {
                changed.insert(other);
            }
        }
        // Others joining and leaving the user's rooms.
        for (_, member, json, prev) in self.store.member_events_in_joined_rooms(me, since, to).await? {
            if member == me {
                continue;
            }
            let now_joined = membership_of(&json) == Some("join");
            let was_joined = prev.as_deref().and_then(membership_of) == Some("join");
            if now_joined && !was_joined && sharing.contains(&member) {
                changed.insert(member);
            } else if !now_joined && was_joined && !sharing.contains(&member) {
                left.insert(member);
            }
        }
        // The user's own joins and leaves.
        for row in self.store.membership_changes(me, since, to).await? {
            let membership = membership_of(&row.pdu_json);
            let was_joined = match &row.replaces_state {
                Some(prev) => self.store.event(prev).await?.is_some_and(|e| membership_of(&e.pdu_json) == Some("join")),
                None => false,
            };
            for (member, m, _) in self.store.members(&row.room_id).await? {
                if m != "join" {
                    continue;
                }
                if membership == Some("join") && !was_joined && sharing.contains(&member) {
                    changed.insert(member);
                } else if membership != Some("join") && was_joined && !sharing.contains(&member) {
                    left.insert(member);
                }
            }
        }
        left.remove(me);
        changed.retain(|u| !left.contains(u));
        Ok((changed.into_iter().collect(), left.into_iter().collect()))
    }

    /// `POST /room_keys/version`: a new backup version, which becomes the current one.
    pub async fn create_backup_version(&self, user: &UserId, body: &RawValue) -> Result<String> {
        let (algorithm, auth_data) = backup_algorithm(body)?;
        let version = self.store.create_backup_version(user.as_str(), &algorithm, &auth_data.to_string()).await?;
        Ok(version.to_string())
    }

    /// `GET /room_keys/version[/{version}]`: a backup version (the current one with
    /// `None`) with its key count and etag.
    pub async fn backup_info(&self, user: &UserId, version: Option<&str>) -> Result<Value> {
        let number = version.map(backup_version_number).transpose()?;
        let row = self.store.backup_version(user.as_str(), number).await?.ok_or_else(|| match version {
            None => Error::not_found("no backup version exists"),
            Some(v) => Error::not_found(format!("unknown backup version {v:?}")),
        })?;
        let (count, etag) = self.store.backup_count_etag(user.as_str(), row.version).await?;
        Ok(json!({
            "algorithm": row.algorithm,
            "auth_data": parse_stored(&row.auth_data),
            "count": count,
            "etag": etag.to_string(),
            "version": row.version.to_string(),
        }))
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
            .store
            .backup_version(user.as_str(), Some(number))
            .await?
            .ok_or_else(|| Error::not_found(format!("unknown backup version {version:?}")))?;
        if row.algorithm != algorithm {
            return Err(Error::invalid_param("the algorithm of a backup version cannot change"));
        }
        self.store.update_backup_auth_data(user.as_str(), number, &auth_data.to_string()).await?;
        Ok(())
    }

    /// `DELETE /room_keys/version/{version}`: the version and its keys.
    pub async fn delete_backup_version(&self, user: &UserId, version: &str) -> Result<()> {
        let number = backup_version_number(version)?;
        if !self.store.delete_backup_version(user.as_str(), number).await? {
            return Err(Error::not_found(format!("unknown backup version {version:?}")));
        }
        Ok(())
    }

    /// A backup version that exists (not deleted).
    async fn existing_backup_version(&self, user: &UserId, version: &str) -> Result<i64> {
        let number = backup_version_number(version)?;
        match self.store.backup_version(user.as_str(), Some(number)).await? {
            Some(row) => Ok(row.version),
            None => Err(Error::not_found(format!("unknown backup version {version:?}"))),
        }
    }

    /// `PUT /room_keys/keys...`: backs up session keys `(room_id, session_id, data)` in
    /// the current version; a stored key is replaced only by a better one. Returns
    /// `{etag, count}`.
    pub async fn put_room_keys(
        &self,
        user: &UserId,
        version: &str,
        keys: &[(String, String, &RawValue)],
    ) -> Result<Value> {
        let number = backup_version_number(version)?;
        let current = self.store.backup_version(user.as_str(), None).await?;
        match current {
            Some(c) if c.version == number => {}
            Some(c) if self.store.backup_version(user.as_str(), Some(number)).await?.is_some() => {
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
        let (count, etag) = self.store.put_backup_keys(user.as_str(), number, &new, better_backup_key).await?;
        Ok(json!({ "etag": etag.to_string(), "count": count }))
    }

    /// `GET /room_keys/keys...`: backed-up keys `(room_id, session_id, data)` of a version.
    pub async fn room_keys(
        &self,
        user: &UserId,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<(String, String, Value)>> {
        let number = self.existing_backup_version(user, version).await?;
        let rows = self.store.backup_keys(user.as_str(), number, room_id, session_id).await?;
        Ok(rows.into_iter().map(|(r, s, json)| (r, s, parse_stored(&json))).collect())
    }

    /// `DELETE /room_keys/keys...`: returns `{etag, count}` afterwards.
    pub async fn delete_room_keys(
        &self,
        user: &UserId,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Value> {
        let number = self.existing_backup_version(user, version).await?;
        let (count, etag) = self.store.delete_backup_keys(user.as_str(), number, room_id, session_id).await?;
        Ok(json!({ "etag": etag.to_string(), "count": count }))
    }
}

/// `content.membership` of a stored member event.
fn membership_of(pdu_json: &str) -> Option<&'static str> {
    let v: Value = serde_json::from_str(pdu_json).ok()?;
    match v.get("content")?.get("membership")?.as_str()? {
        "join" => Some("join"),
        "invite" => Some("invite"),
        "leave" => Some("leave"),
        "ban" => Some("ban"),
        "knock" => Some("knock"),
        _ => None,
    }
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

/// A signature on one of `user`'s own keys: a device signed by the self-signing key,
/// or the master key signed by devices.
fn self_signature(
    user: &UserId,
    key_id: &str,
    obj: &Value,
    own: &BTreeMap<String, (String, Value)>,
    devices: &BTreeMap<String, Value>,
) -> SignatureResult {
    let me = user.as_str();
    if let Some(stored) = devices.get(key_id) {
        let Some((self_signing, _)) = own.get("self_signing") else {
            return Err(failure(400, "M_INVALID_SIGNATURE", "you have no self-signing key"));
        };
        if signed_content(obj) != signed_content(stored) {
            return Err(failure(400, "M_INVALID_PARAM", "the signed key does not match the stored device keys"));
        }
        let signer_key = format!("ed25519:{self_signing}");
        let Some(signature) = signature_of(obj, me, &signer_key) else {
            return Err(failure(400, "M_INVALID_SIGNATURE", "no signature by your self-signing key"));
        };
        if !verify_signature(stored, signature, self_signing) {
            return Err(failure(400, "M_INVALID_SIGNATURE", "invalid signature"));
        }
        return Ok(vec![(me.to_owned(), key_id.to_owned(), me.to_owned(), signer_key, signature.to_owned())]);
    }
    let Some((master, stored)) = own.get("master").filter(|(public, _)| public == key_id) else {
        return Err(failure(404, "M_NOT_FOUND", "no such device or master key"));
    };
    if signed_content(obj) != signed_content(stored) {
        return Err(failure(400, "M_INVALID_PARAM", "the signed key does not match the stored master key"));
    }
    let mut out = Vec::new();
    let sigs = obj.get("signatures").and_then(|s| s.get(me)).and_then(Value::as_object);
    for (signer_key, signature) in sigs.into_iter().flatten() {
        if *signer_key == format!("ed25519:{master}") {
            continue;
        }
        let device = signer_key.strip_prefix("ed25519:").unwrap_or_default();
        let Some(public) = devices.get(device).and_then(|d| device_ed25519(d, device)) else {
            return Err(failure(400, "M_INVALID_SIGNATURE", format!("unknown signing device {signer_key}")));
        };
        let Some(signature) = signature.as_str().filter(|s| verify_signature(stored, s, &public)) else {
            return Err(failure(400, "M_INVALID_SIGNATURE", format!("invalid signature by {signer_key}")));
        };
        out.push((me.to_owned(), key_id.to_owned(), me.to_owned(), signer_key.clone(), signature.to_owned()));
    }
    if out.is_empty() {
        return Err(failure(400, "M_INVALID_SIGNATURE", "no device signature on the master key"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn sign(key: &SigningKey, object: &Value) -> String {
        let obj: CanonicalJsonObject = serde_json::from_value(object.clone()).unwrap();
        let canonical = ruma::signatures::to_canonical_json_string_for_signing(&obj).unwrap();
        STANDARD_NO_PAD.encode(key.sign(canonical.as_bytes()).to_bytes())
    }

    #[test]
    fn signatures_verify_over_canonical_json_without_signatures() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = STANDARD_NO_PAD.encode(key.verifying_key().to_bytes());
        let mut object =
            json!({ "user_id": "@a:x", "usage": ["self_signing"], "keys": { format!("ed25519:{public}"): public } });
        let signature = sign(&key, &object);
        merge_signature(&mut object, "@a:x", &format!("ed25519:{public}"), &signature);
        object["unsigned"] = json!({ "device_display_name": "ignored" });
        assert!(verify_signature(&object, &signature, &public));
        assert_eq!(signature_of(&object, "@a:x", &format!("ed25519:{public}")), Some(signature.as_str()));
        object["usage"] = json!(["master"]);
        assert!(!verify_signature(&object, &signature, &public), "changed content fails");
        assert!(!verify_signature(&object, "not base64!", &public));
    }

    #[test]
    fn cross_signing_keys_are_checked_for_owner_usage_and_one_key() {
        let user = <&UserId>::try_from("@a:x").unwrap();
        let good = json!({ "user_id": "@a:x", "usage": ["master"], "keys": { "ed25519:PK": "PK" } });
        assert_eq!(check_cross_signing_key(&good, user, "master").unwrap(), "PK");
        assert!(check_cross_signing_key(&good, user, "self_signing").is_err());
        let other = json!({ "user_id": "@b:x", "usage": ["master"], "keys": { "ed25519:PK": "PK" } });
        assert!(check_cross_signing_key(&other, user, "master").is_err());
        let two = json!({ "user_id": "@a:x", "usage": ["master"], "keys": { "ed25519:A": "A", "ed25519:B": "B" } });
        assert!(check_cross_signing_key(&two, user, "master").is_err());
    }

    #[test]
    fn backup_keys_rank_verified_then_index_then_forwards() {
        assert!(better_backup_key((false, 0, 0), (true, 9, 9)));
        assert!(!better_backup_key((true, 9, 9), (false, 0, 0)));
        assert!(better_backup_key((false, 5, 0), (false, 4, 9)));
        assert!(better_backup_key((false, 5, 3), (false, 5, 2)));
        assert!(!better_backup_key((false, 5, 2), (false, 5, 2)), "a tie keeps the stored key");
    }
}
