//! Signing keys: this server's key document (current key and the old keys from
//! `federation.old_verify_keys`), and other servers' keys, fetched from the server itself
//! (`GET /_matrix/key/v2/server`), checked, cached in the database with their validity,
//! and used to check signatures on events and requests. The key notary
//! (`/_matrix/key/v2/query`) answers from the same cache.
//!
//! Trust rules: a fetched document must name the server asked and be signed by a key it
//! publishes as current; its validity is capped at a week (as the spec asks for room
//! versions 5 and later); keys are never forgotten, since old events stay signed by them.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet, sign_json, verify_json},
};
use serde_json::json;

use super::REQUEST_TIMEOUT;
use crate::{services::Services, storage::ServerKeyRow};
use kairan_core::{
    error::{Error, Result},
    time::now_ms,
};

/// How long other servers may cache this server's key before asking again.
pub const OWN_KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest a fetched key is trusted without asking its server again.
const MAX_REMOTE_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;
/// After a fetch (failed, or for a key the server then did not publish), the next one
/// waits this long: a stream of requests under an unknown key must not become a stream
/// of fetches.
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// The in-memory side of the key cache, held by [`super::Federation`].
#[derive(Default)]
pub struct KeyState {
    /// Keys by server name, as last read from the database or fetched.
    cache: RwLock<HashMap<OwnedServerName, Vec<ServerKeyRow>>>,
    /// When each server's keys were last fetched.
    last_fetch: Mutex<HashMap<OwnedServerName, Instant>>,
    /// One fetch per server at a time; the others wait for its result.
    fetching: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
}

impl Services {
    /// The verify keys (current and old) of each server, for `ruma::signatures::verify_event`
    /// and X-Matrix checks. This server's own key is included when named. Servers whose keys
    /// cannot be fetched are left out (verification then fails for them).
    pub async fn verify_keys(&self, servers: &BTreeSet<OwnedServerName>) -> Result<PublicKeyMap> {
        let mut map = PublicKeyMap::new();
        for server in servers {
            let rows =
                if server == self.server_name() { self.own_key_rows() } else { self.remote_keys(server, None).await? };
            let set = key_set(&rows, |_| true);
            if !set.is_empty() {
                map.insert(server.to_string(), set);
            }
        }
        Ok(map)
    }

    /// The keys a request from `origin` may be signed with: its current keys (old ones
    /// sign old events, not new requests). An unknown `key_id` makes the keys be fetched
    /// again (the server may have a new key), at most every [`REFETCH_INTERVAL`].
    pub(crate) async fn request_verify_keys(&self, origin: &ServerName, key_id: &str) -> Result<PublicKeyMap> {
        let rows = if origin == self.server_name() {
            self.own_key_rows()
        } else {
            self.remote_keys(origin, Some(key_id)).await?
        };
        let mut map = PublicKeyMap::new();
        map.insert(origin.to_string(), key_set(&rows, |r| r.expired_ts.is_none()));
        Ok(map)
    }

    /// This server's keys as rows: the signing key and the configured old keys.
    fn own_key_rows(&self) -> Vec<ServerKeyRow> {
        let mut rows = vec![ServerKeyRow {
            key_id: self.keys.key_id.clone(),
            public_key: self.keys.public_key_b64.clone(),
            valid_until_ts: now_ms() + OWN_KEY_VALIDITY.as_millis() as i64,
            expired_ts: None,
        }];
        for (key_id, old) in &self.config.federation.old_verify_keys {
            if *key_id != self.keys.key_id {
                rows.push(ServerKeyRow {
                    key_id: key_id.clone(),
                    public_key: old.key.clone(),
                    valid_until_ts: old.expired_ts as i64,
                    expired_ts: Some(old.expired_ts as i64),
                });
            }
        }
        rows
    }

    /// This server's key document, signed with its key: what `/_matrix/key/v2/server`
    /// serves and what the notary returns for this server.
    pub fn own_key_document(&self) -> Result<CanonicalJsonObject> {
        let old: serde_json::Map<String, serde_json::Value> = self
            .own_key_rows()
            .into_iter()
            .filter(|r| r.expired_ts.is_some())
            .map(|r| (r.key_id, json!({ "key": r.public_key, "expired_ts": r.expired_ts })))
            .collect();
        let body = json!({
            "server_name": self.server_name(),
            "verify_keys": { self.keys.key_id.clone(): { "key": self.keys.public_key_b64 } },
            "old_verify_keys": old,
            "valid_until_ts": now_ms() + OWN_KEY_VALIDITY.as_millis() as i64,
        });
        let mut doc: CanonicalJsonObject =
            serde_json::from_value(body).map_err(|e| Error::internal("own key document", e))?;
        sign_json(self.server_name().as_str(), &self.keys.key_pair, &mut doc)
            .map_err(|e| Error::internal("signing the key document", e))?;
        Ok(doc)
    }

    /// The key notary: `server`'s key document, as it signed it, with this server's
    /// signature added. Taken from the cache when valid until `minimum_valid_until_ts`,
    /// else fetched; a stale document is still returned when the server cannot be reached
    /// (the asker judges its validity). `None`: nothing known about the server.
    pub async fn notary_key_document(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: i64,
    ) -> Result<Option<CanonicalJsonObject>> {
        if server == self.server_name() {
            return self.own_key_document().map(Some);
        }
        let stored = self.store.server_key_document(server.as_str()).await?;
        let fresh = stored.as_ref().is_some_and(|(_, until)| *until >= minimum_valid_until_ts.max(now_ms()));
        let document = if fresh {
            stored.map(|(doc, _)| doc)
        } else {
            self.fetch_if_due(server).await?;
            self.store.server_key_document(server.as_str()).await?.map(|(doc, _)| doc)
        };
        let Some(document) = document else { return Ok(None) };
        let mut doc: CanonicalJsonObject =
            serde_json::from_str(&document).map_err(|e| Error::internal("stored key document", e))?;
        sign_json(self.server_name().as_str(), &self.keys.key_pair, &mut doc)
            .map_err(|e| Error::internal("signing a notary answer", e))?;
        Ok(Some(doc))
    }

    /// A remote server's keys: from memory or the database when a current key is still
    /// valid (and `key_id`, when given, is known), else fetched from the server.
    async fn remote_keys(&self, server: &ServerName, key_id: Option<&str>) -> Result<Vec<ServerKeyRow>> {
        let rows = self.cached_keys(server).await?;
        if keys_are_fresh(&rows, key_id) {
            return Ok(rows);
        }
        self.fetch_if_due(server).await?;
        self.cached_keys(server).await
    }

    async fn cached_keys(&self, server: &ServerName) -> Result<Vec<ServerKeyRow>> {
        if let Some(rows) = self.federation.keys.cache.read().unwrap_or_else(|e| e.into_inner()).get(server) {
            return Ok(rows.clone());
        }
        let rows = self.store.server_signing_keys(server.as_str()).await?;
        self.federation.keys.cache.write().unwrap_or_else(|e| e.into_inner()).insert(server.to_owned(), rows.clone());
        Ok(rows)
    }

    /// Fetches `server`'s keys unless another task just did (then its result is used) or
    /// the last fetch was less than [`REFETCH_INTERVAL`] ago. Servers the allowlist
    /// refuses are never contacted. A failed fetch is logged, not an error: the caller
    /// goes on with what is cached.
    async fn fetch_if_due(&self, server: &ServerName) -> Result<()> {
        if !self.federation_allowed(server) {
            return Ok(());
        }
        let lock = {
            let mut fetching = self.federation.keys.fetching.lock().unwrap_or_else(|e| e.into_inner());
            fetching.entry(server.to_owned()).or_default().clone()
        };
        let _guard = lock.lock().await;
        {
            let last = self.federation.keys.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
            if last.get(server).is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
                return Ok(());
            }
        }
        self.federation
            .keys
            .last_fetch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.to_owned(), Instant::now());
        match self.fetch_server_keys(server).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(%server, error = %e, "cannot fetch the server's signing keys"),
        }
        Ok(())
    }

    /// `GET /_matrix/key/v2/server` from the server itself (unsigned), checked and stored.
    async fn fetch_server_keys(&self, server: &ServerName) -> std::result::Result<(), String> {
        let request = http::Request::get("/_matrix/key/v2/server").body(Vec::new()).map_err(|e| e.to_string())?;
        let response = self.federation.send_to(server, request, REQUEST_TIMEOUT).await?;
        if !response.status().is_success() {
            return Err(format!("/_matrix/key/v2/server answered {}", response.status()));
        }
        let document: CanonicalJsonObject = serde_json::from_slice(response.body())
            .map_err(|e| format!("the key document is not canonical JSON: {e}"))?;
        let now = now_ms();
        let (valid_until_ts, rows) = check_key_document(server, &document, now)?;
        let text = serde_json::to_string(&document).map_err(|e| e.to_string())?;
        self.store
            .put_server_keys(server.as_str(), &text, valid_until_ts, now, &rows)
            .await
            .map_err(|e| format!("storing the keys: {e}"))?;
        let all =
            self.store.server_signing_keys(server.as_str()).await.map_err(|e| format!("reading the keys: {e}"))?;
        tracing::info!(%server, keys = rows.len(), "fetched the server's signing keys");
        self.federation.keys.cache.write().unwrap_or_else(|e| e.into_inner()).insert(server.to_owned(), all);
        Ok(())
    }
}

/// Whether the cached keys can be used without asking the server: a current key valid
/// now, and the wanted key (if any) among them.
fn keys_are_fresh(rows: &[ServerKeyRow], key_id: Option<&str>) -> bool {
    let now = now_ms();
    rows.iter().any(|r| r.expired_ts.is_none() && r.valid_until_ts > now)
        && key_id.is_none_or(|id| rows.iter().any(|r| r.key_id == id))
}

fn key_set(rows: &[ServerKeyRow], include: impl Fn(&ServerKeyRow) -> bool) -> PublicKeySet {
    rows.iter()
        .filter(|r| include(r))
        .filter_map(|r| Some((r.key_id.clone(), Base64::parse(&r.public_key).ok()?)))
        .collect()
}

/// Checks a key document fetched from `server` itself: it names `server`, and is signed
/// by a key it lists in `verify_keys`. Returns its capped validity and its keys.
pub fn check_key_document(
    server: &ServerName,
    document: &CanonicalJsonObject,
    now: i64,
) -> std::result::Result<(i64, Vec<ServerKeyRow>), String> {
    if document.get("server_name").and_then(CanonicalJsonValue::as_str) != Some(server.as_str()) {
        return Err(format!("the key document does not name {server} as its server_name"));
    }
    let valid_until = match document.get("valid_until_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
        _ => return Err("the key document has no valid_until_ts".to_owned()),
    };
    let valid_until = valid_until.min(now + MAX_REMOTE_VALIDITY_MS);
    let object = |name: &str| match document.get(name) {
        Some(CanonicalJsonValue::Object(o)) => Some(o.clone()),
        _ => None,
    };
    let verify_keys = object("verify_keys").ok_or("the key document has no verify_keys")?;
    let mut rows = Vec::new();
    let mut current = PublicKeySet::new();
    for (key_id, value) in &verify_keys {
        let key = value.as_object().and_then(|o| o.get("key")).and_then(CanonicalJsonValue::as_str);
        let key = key.ok_or_else(|| format!("verify key {key_id} has no key"))?;
        let parsed = Base64::parse(key).map_err(|e| format!("verify key {key_id} is not base64: {e}"))?;
        current.insert(key_id.clone(), parsed);
        rows.push(ServerKeyRow {
            key_id: key_id.clone(),
            public_key: key.to_owned(),
            valid_until_ts: valid_until,
            expired_ts: None,
        });
    }
    for (key_id, value) in object("old_verify_keys").unwrap_or_default() {
        let o = value.as_object();
        let key = o.and_then(|o| o.get("key")).and_then(CanonicalJsonValue::as_str);
        let expired = match o.and_then(|o| o.get("expired_ts")) {
            Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
            _ => continue,
        };
        // An old key that is also current is current.
        if let Some(key) = key
            && Base64::<ruma::serde::base64::Standard>::parse(key).is_ok()
            && !current.contains_key(&key_id)
        {
            rows.push(ServerKeyRow {
                key_id,
                public_key: key.to_owned(),
                valid_until_ts: expired,
                expired_ts: Some(expired),
            });
        }
    }
    if current.is_empty() {
        return Err("the key document lists no verify key".to_owned());
    }
    // Only the server's own signature counts here (a notary's would need its keys).
    let mut own = document.clone();
    if let Some(CanonicalJsonValue::Object(signatures)) = own.get_mut("signatures") {
        signatures.retain(|entity, _| entity == server.as_str());
    }
    let mut map = PublicKeyMap::new();
    map.insert(server.to_string(), current);
    verify_json(&map, &own).map_err(|e| format!("the key document is not signed by its own key: {e}"))?;
    Ok((valid_until, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairan_core::signing_key::ServerKeys;

    fn signed_document(keys: &ServerKeys, server: &str, valid_until: i64) -> CanonicalJsonObject {
        let mut doc: CanonicalJsonObject = serde_json::from_value(json!({
            "server_name": server,
            "verify_keys": { keys.key_id.clone(): { "key": keys.public_key_b64 } },
            "old_verify_keys": { "ed25519:old": { "key": keys.public_key_b64, "expired_ts": 1000 } },
            "valid_until_ts": valid_until,
        }))
        .unwrap();
        sign_json(server, &keys.key_pair, &mut doc).unwrap();
        doc
    }

    #[test]
    fn a_self_signed_document_is_accepted_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ServerKeys::load_or_create(dir.path()).unwrap();
        let server = <&ServerName>::try_from("remote.example").unwrap();
        let now = 1_000_000;
        let doc = signed_document(&keys, "remote.example", now + 10 * MAX_REMOTE_VALIDITY_MS);
        let (until, rows) = check_key_document(server, &doc, now).unwrap();
        assert_eq!(until, now + MAX_REMOTE_VALIDITY_MS);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.iter().filter(|r| r.expired_ts == Some(1000)).count(), 1);
    }

    #[test]
    fn forged_and_misnamed_documents_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ServerKeys::load_or_create(dir.path()).unwrap();
        let server = <&ServerName>::try_from("remote.example").unwrap();
        let mut doc = signed_document(&keys, "remote.example", 5_000_000);
        doc.insert("valid_until_ts".to_owned(), CanonicalJsonValue::Integer(9_000_000u32.into()));
        assert!(check_key_document(server, &doc, 0).unwrap_err().contains("not signed"));
        let doc = signed_document(&keys, "other.example", 5_000_000);
        assert!(check_key_document(server, &doc, 0).unwrap_err().contains("server_name"));
        // Signed by a key it does not publish.
        let other_dir = tempfile::tempdir().unwrap();
        let other = ServerKeys::load_or_create(other_dir.path()).unwrap();
        let mut doc: CanonicalJsonObject = serde_json::from_value(json!({
            "server_name": "remote.example",
            "verify_keys": { keys.key_id.clone(): { "key": keys.public_key_b64 } },
            "valid_until_ts": 5_000_000,
        }))
        .unwrap();
        sign_json("remote.example", &other.key_pair, &mut doc).unwrap();
        assert!(check_key_document(server, &doc, 0).is_err());
    }

    #[test]
    fn freshness_needs_a_valid_current_key_and_the_wanted_one() {
        let far = now_ms() + 60_000;
        let row = |id: &str, until: i64, expired: Option<i64>| ServerKeyRow {
            key_id: id.into(),
            public_key: "AAAA".into(),
            valid_until_ts: until,
            expired_ts: expired,
        };
        assert!(!keys_are_fresh(&[], None));
        assert!(keys_are_fresh(&[row("ed25519:a", far, None)], None));
        assert!(!keys_are_fresh(&[row("ed25519:a", 1, None)], None));
        assert!(!keys_are_fresh(&[row("ed25519:a", far, Some(1))], None));
        assert!(!keys_are_fresh(&[row("ed25519:a", far, None)], Some("ed25519:b")));
    }
}
