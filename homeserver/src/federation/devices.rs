//! Devices and end-to-end keys across servers.
//!
//! Outbound: a local user's device list changes go as `m.device_list_update` (and
//! cross-signing key changes as `m.signing_key_update`) to every server sharing a room
//! with the user; to-device messages for remote users go as `m.direct_to_device`; keys
//! of remote users are asked of their server (`user/keys/query`, `user/keys/claim`).
//! Inbound: the same EDUs from other servers, and their key queries about local users.
//!
//! Remote users' keys are cached while a local user shares a room with them (their
//! server then announces every change here): an inbound device list or signing key
//! update drops the copy and records that the user changed, so that local clients
//! sharing a room see the user in `device_lists.changed`, ask again, and the next
//! `/keys/query` fetches the new keys.

use std::collections::BTreeMap;

use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName, UserId,
    api::federation::keys::{claim_keys, get_keys},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::{e2ee::UserKeys, services::Services};
use kairan_core::error::{Error, Result};

/// The content of an inbound `m.direct_to_device` EDU.
#[derive(Deserialize)]
struct DirectToDevice {
    sender: OwnedUserId,
    #[serde(rename = "type")]
    event_type: String,
    message_id: String,
    messages: BTreeMap<OwnedUserId, BTreeMap<String, Box<serde_json::value::RawValue>>>,
}

/// The content of an inbound `m.device_list_update` or `m.signing_key_update` EDU, as
/// far as kairan reads it.
#[derive(Deserialize)]
struct UserUpdate {
    user_id: OwnedUserId,
}

/// A JSON value from a ruma `Raw`.
fn raw_value<T>(raw: &ruma::serde::Raw<T>) -> Option<Value> {
    serde_json::from_str(raw.json().get()).ok()
}

impl Services {
    /// Handles an inbound device EDU from `origin` (called by `/send`):
    /// `m.device_list_update`, `m.signing_key_update` and `m.direct_to_device`. Other
    /// types are ignored. An EDU about a user of another server than `origin` is
    /// `M_FORBIDDEN`; malformed content is `M_BAD_JSON`.
    pub async fn handle_device_edu(&self, origin: &ServerName, edu_type: &str, content: &Value) -> Result<()> {
        match edu_type {
            "m.device_list_update" | "m.signing_key_update" => {
                let update = UserUpdate::deserialize(content)
                    .map_err(|e| Error::bad_json(format!("invalid {edu_type} content: {e}")))?;
                if update.user_id.server_name() != origin {
                    return Err(Error::forbidden(format!("{origin} cannot announce devices of {}", update.user_id)));
                }
                let pos = self.store.record_device_list_change(update.user_id.as_str()).await?;
                self.notifier.advance(pos, kairan_core::notifier::Audience::Everyone);
                Ok(())
            }
            "m.direct_to_device" => {
                let msg = DirectToDevice::deserialize(content)
                    .map_err(|e| Error::bad_json(format!("invalid m.direct_to_device content: {e}")))?;
                if msg.sender.server_name() != origin {
                    return Err(Error::forbidden(format!("{origin} cannot send to-device messages as {}", msg.sender)));
                }
                let mut messages = Vec::new();
                for (user, devices) in &msg.messages {
                    // Only this server's users are delivered here.
                    if !self.is_local(user) {
                        continue;
                    }
                    for (device, content) in devices {
                        let content = content.get().to_owned();
                        if device == "*" {
                            for d in self.store.devices(user.as_str()).await? {
                                messages.push((user.to_string(), d.device_id, content.clone()));
                            }
                        } else {
                            messages.push((user.to_string(), device.clone(), content));
                        }
                    }
                }
                // The message ID is unique per sender, so a retried transaction is
                // delivered once; the sending device is not known across servers.
                let sender = msg.sender.as_str();
                if let Some(pos) =
                    self.store.put_to_device(sender, "", &msg.message_id, &msg.event_type, &messages).await?
                    && pos > 0
                {
                    self.notifier
                        .advance(pos, kairan_core::notifier::Audience::users(messages.iter().map(|m| m.0.clone())));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The other servers with a user joined to a room `user` is joined to.
    pub async fn servers_sharing_rooms(&self, user: &UserId) -> Result<Vec<OwnedServerName>> {
        let mut servers: Vec<OwnedServerName> = Vec::new();
        for other in self.store.users_sharing_rooms(user.as_str()).await? {
            let Ok(other) = <&UserId>::try_from(other.as_str()) else { continue };
            let server = other.server_name();
            if server != self.server_name() && !servers.iter().any(|s| s == server) {
                servers.push(server.to_owned());
            }
        }
        servers.sort();
        Ok(servers)
    }

    /// Tells the servers sharing a room with `user` that a device changed (`deleted`:
    /// it is gone) at device list position `stream_id`. A failure is logged, not
    /// returned: the local change is done, and a remote server that misses it resyncs
    /// when the next update's `prev_id` is unknown to it.
    pub async fn announce_device_update(&self, user: &UserId, device_id: &str, stream_id: i64, deleted: bool) {
        if let Err(e) = self.try_announce_device_update(user, device_id, stream_id, deleted).await {
            tracing::warn!(%user, device_id, error = %e, "device list update not queued for other servers");
        }
    }

    async fn try_announce_device_update(
        &self,
        user: &UserId,
        device_id: &str,
        stream_id: i64,
        deleted: bool,
    ) -> Result<()> {
        let destinations = self.servers_sharing_rooms(user).await?;
        if destinations.is_empty() {
            return Ok(());
        }
        let prev_id: Vec<i64> =
            self.store.device_list_change_before(user.as_str(), stream_id).await?.into_iter().collect();
        let mut content = json!({
            "user_id": user,
            "device_id": device_id,
            "stream_id": stream_id,
            "prev_id": prev_id,
            "deleted": deleted,
        });
        if !deleted {
            let device = OwnedDeviceId::from(device_id);
            let mut keys = self.e2ee().local_user_keys(user, &[device], None).await?;
            if let Some(mut k) = keys.devices.remove(device_id) {
                if let Some(name) = k.get("unsigned").and_then(|u| u.get("device_display_name")).cloned() {
                    content["device_display_name"] = name;
                }
                if let Some(o) = k.as_object_mut() {
                    o.remove("unsigned");
                }
                content["keys"] = k;
            }
        }
        self.queue_edu(&destinations, json!({ "edu_type": "m.device_list_update", "content": content })).await
    }

    /// Tells the servers sharing a room with `user` about their current master and
    /// self-signing keys (`m.signing_key_update`). Failures are logged, as for devices.
    pub async fn announce_signing_keys(&self, user: &UserId) {
        let result = async {
            let destinations = self.servers_sharing_rooms(user).await?;
            if destinations.is_empty() {
                return Ok(());
            }
            let keys = self.e2ee().local_user_keys(user, &[], None).await?;
            let mut content = json!({ "user_id": user });
            if let Some(m) = keys.master {
                content["master_key"] = m;
            }
            if let Some(s) = keys.self_signing {
                content["self_signing_key"] = s;
            }
            self.queue_edu(&destinations, json!({ "edu_type": "m.signing_key_update", "content": content })).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(%user, error = %e, "signing key update not queued for other servers");
        }
    }

    /// Queues to-device messages for remote users as one `m.direct_to_device` EDU per
    /// server. `messages` maps users to device IDs (or `*`) to content. The message ID is
    /// derived from the sender's device and transaction ID, so a retry of the same
    /// client transaction carries the same ID and the receiver drops the duplicate.
    pub async fn send_remote_to_device(
        &self,
        sender: &UserId,
        sender_device: &str,
        txn_id: &str,
        event_type: &str,
        messages: BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
    ) -> Result<()> {
        let mut by_server: BTreeMap<OwnedServerName, Map<String, Value>> = BTreeMap::new();
        for (user, devices) in messages {
            let devices: Map<String, Value> = devices.into_iter().collect();
            by_server.entry(user.server_name().to_owned()).or_default().insert(user.to_string(), devices.into());
        }
        let digest = Sha256::digest(format!("{sender}\n{sender_device}\n{txn_id}").as_bytes());
        let message_id: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        for (server, users) in by_server {
            let edu = json!({
                "edu_type": "m.direct_to_device",
                "content": { "sender": sender, "type": event_type, "message_id": message_id, "messages": users },
            });
            self.queue_edu(&[server], edu).await?;
        }
        Ok(())
    }

    /// The keys of remote users of `server`: the cached copy where it is current, the
    /// others asked of `server`, for all their devices so that the answer can be kept.
    pub async fn remote_user_keys(
        &self,
        server: &ServerName,
        users: impl IntoIterator<Item = OwnedUserId>,
    ) -> Result<Vec<(OwnedUserId, UserKeys)>> {
        let mut found = Vec::new();
        let mut ask = BTreeMap::new();
        for user in users {
            let cached = self.store.cached_remote_keys(user.as_str()).await?;
            match cached.and_then(|json| serde_json::from_str::<UserKeys>(&json).ok()) {
                Some(keys) => found.push((user, keys)),
                None => {
                    ask.insert(user, Vec::new());
                }
            }
        }
        if ask.is_empty() {
            return Ok(found);
        }
        let asked_at = self.notifier.current().stream;
        let answered = self.query_remote_keys(server, ask).await?;
        for (user, keys) in &answered {
            let json = serde_json::to_string(keys).map_err(|e| Error::internal("remote keys", e))?;
            self.store.cache_remote_keys(user.as_str(), &json, asked_at).await?;
        }
        found.extend(answered);
        Ok(found)
    }

    /// `user/keys/query` asked of `server` for its users; the answer is checked so that a
    /// server only speaks for its own users and each device's keys name that device.
    pub async fn query_remote_keys(
        &self,
        server: &ServerName,
        users: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<Vec<(OwnedUserId, UserKeys)>> {
        let res = self.send_federation_request(server, get_keys::v1::Request::new(users.clone())).await?;
        let mut out: BTreeMap<OwnedUserId, UserKeys> = BTreeMap::new();
        for (user, devices) in &res.device_keys {
            if !users.contains_key(user) {
                continue;
            }
            let entry = out.entry(user.clone()).or_default();
            for (device, raw) in devices {
                let Some(keys) = raw_value(raw) else { continue };
                if keys.get("user_id").and_then(Value::as_str) == Some(user.as_str())
                    && keys.get("device_id").and_then(Value::as_str) == Some(device.as_str())
                {
                    entry.devices.insert(device.to_string(), keys);
                }
            }
        }
        let owned_by = |user: &UserId, key: &Value| key.get("user_id").and_then(Value::as_str) == Some(user.as_str());
        for (user, raw) in &res.master_keys {
            if let (true, Some(key)) = (users.contains_key(user), raw_value(raw))
                && owned_by(user, &key)
            {
                out.entry(user.clone()).or_default().master = Some(key);
            }
        }
        for (user, raw) in &res.self_signing_keys {
            if let (true, Some(key)) = (users.contains_key(user), raw_value(raw))
                && owned_by(user, &key)
            {
                out.entry(user.clone()).or_default().self_signing = Some(key);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// A remote user's master key as their server publishes it: `(public key, key)`.
    pub async fn remote_master_key(&self, user: &UserId) -> Result<Option<(String, Value)>> {
        let query = BTreeMap::from([(user.to_owned(), Vec::new())]);
        let keys = self.query_remote_keys(user.server_name(), query).await?;
        let master = keys.into_iter().find(|(u, _)| u == user).and_then(|(_, k)| k.master);
        Ok(master.and_then(|m| {
            let public = m.get("keys")?.as_object()?.values().next()?.as_str()?.to_owned();
            Some((public, m))
        }))
    }

    /// `user/keys/claim` asked of `server`; only its own users' keys are kept.
    pub async fn claim_remote_keys(
        &self,
        server: &ServerName,
        users: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> Result<Map<String, Value>> {
        let res = self.send_federation_request(server, claim_keys::v1::Request::new(users.clone())).await?;
        let mut out = Map::new();
        for (user, devices) in res.one_time_keys {
            let Some(asked) = users.get(&user) else { continue };
            let mut by_device = Map::new();
            for (device, keys) in devices {
                if !asked.contains_key(&device) {
                    continue;
                }
                let keys: Map<String, Value> =
                    keys.iter().filter_map(|(id, raw)| Some((id.to_string(), raw_value(raw)?))).collect();
                by_device.insert(device.to_string(), keys.into());
            }
            if !by_device.is_empty() {
                out.insert(user.to_string(), by_device.into());
            }
        }
        Ok(out)
    }

    /// `user/keys/query` from another server: the keys of this server's users asked
    /// (others are left out), without user-signing keys or other users' signatures.
    pub async fn keys_for_server(&self, query: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>) -> Result<Value> {
        let (mut device_keys, mut master, mut self_signing) = (Map::new(), Map::new(), Map::new());
        for (user, devices) in query {
            if !self.is_local(user) {
                continue;
            }
            let keys = self.e2ee().local_user_keys(user, devices, None).await?;
            device_keys.insert(user.to_string(), keys.devices.into());
            if let Some(k) = keys.master {
                master.insert(user.to_string(), k);
            }
            if let Some(k) = keys.self_signing {
                self_signing.insert(user.to_string(), k);
            }
        }
        Ok(json!({ "device_keys": device_keys, "master_keys": master, "self_signing_keys": self_signing }))
    }

    /// `user/keys/claim` from another server: one-time (or fallback) keys of this
    /// server's users.
    pub async fn claim_for_server(
        &self,
        query: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> Result<Value> {
        let mut claimed = Map::new();
        for (user, devices) in query {
            if !self.is_local(user) {
                continue;
            }
            let by_device = self.e2ee().claim_local_keys(user, devices).await?;
            if !by_device.is_empty() {
                claimed.insert(user.to_string(), by_device.into());
            }
        }
        Ok(json!({ "one_time_keys": claimed }))
    }

    /// `user/devices/{userId}` from another server: a local user's devices with their
    /// keys, the position of the last device list change (`stream_id`, the one the
    /// next `m.device_list_update` names in `prev_id`) and the cross-signing keys.
    /// `M_NOT_FOUND` for a user not of this server or unknown.
    pub async fn devices_for_server(&self, user: &UserId) -> Result<Value> {
        if !self.is_local(user) || self.store.user(user.as_str()).await?.is_none() {
            return Err(Error::not_found(format!("user {user} is not known here")));
        }
        let stream_id = self.store.device_list_change_before(user.as_str(), i64::MAX).await?.unwrap_or(0);
        let keys = self.e2ee().local_user_keys(user, &[], None).await?;
        let mut devices = Vec::new();
        for (device_id, mut k) in keys.devices {
            let name = k.get("unsigned").and_then(|u| u.get("device_display_name")).cloned();
            if let Some(o) = k.as_object_mut() {
                o.remove("unsigned");
            }
            let mut device = json!({ "device_id": device_id, "keys": k });
            if let Some(name) = name {
                device["device_display_name"] = name;
            }
            devices.push(device);
        }
        let mut out = json!({ "user_id": user, "stream_id": stream_id, "devices": devices });
        if let Some(m) = keys.master {
            out["master_key"] = m;
        }
        if let Some(s) = keys.self_signing {
            out["self_signing_key"] = s;
        }
        Ok(out)
    }
}
