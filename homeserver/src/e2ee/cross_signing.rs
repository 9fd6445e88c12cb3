//! Cross-signing: a user's master, self-signing and user-signing keys, and the signatures
//! that tie devices and other users to them (`/keys/device_signing/upload`,
//! `/keys/signatures/upload`).

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use super::{
    E2ee,
    device_keys::REMOTE_KEYS_TIMEOUT,
    parse_stored,
    signatures::{
        check_cross_signing_key, device_ed25519, invalid_signature, signature_of, signed_content, verify_signature,
    },
};
use kairan_core::error::{Error, Result};

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

/// Whether an upload holds at least one key and every key in it is the one stored.
fn same_as_stored(stored: &BTreeMap<&str, Value>, upload: &CrossSigningUpload) -> bool {
    let given: Vec<_> = upload.entries().into_iter().filter_map(|(t, k)| k.map(|k| (t, k))).collect();
    !given.is_empty() && given.iter().all(|(t, k)| stored.get(t) == Some(*k))
}

/// A failed signature check, as a `/keys/signatures/upload` failure entry.
type SignatureResult = std::result::Result<Vec<(String, String, String, String, String)>, Value>;

/// A failure entry of `/keys/signatures/upload`.
fn failure(status: u16, errcode: &str, error: impl Into<String>) -> Value {
    json!({ "status": status, "errcode": errcode, "error": error.into() })
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

impl E2ee<'_> {
    /// Whether a cross-signing upload must pass user-interactive auth: always, except
    /// for the first master key and for a repeat of the keys already stored.
    pub async fn cross_signing_upload_needs_auth(&self, user: &UserId, upload: &CrossSigningUpload) -> Result<bool> {
        let stored = self.services.store.cross_signing_keys(user.as_str()).await?;
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
        let stored_rows = self.services.store.cross_signing_keys(user.as_str()).await?;
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
        let pos = self.services.store.set_cross_signing_keys(user.as_str(), &new).await?;
        self.services.notifier.advance(pos, kairan_core::notifier::Audience::Everyone);
        self.services.announce_signing_keys(user).await;
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
            .services
            .store
            .cross_signing_keys(user.as_str())
            .await?
            .into_iter()
            .map(|k| (k.key_type, (k.public_key, parse_stored(&k.key_json))))
            .collect();
        let devices: BTreeMap<String, Value> = self
            .services
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
        if let Some(pos) = self.services.store.add_signatures(&rows, &changes).await? {
            self.services.notifier.advance(pos, kairan_core::notifier::Audience::Everyone);
            // Signatures on the user's own keys are public: other servers hear of them.
            let own: BTreeSet<&str> = rows.iter().filter(|r| r.0 == user.as_str()).map(|r| r.1.as_str()).collect();
            for key in &own {
                if devices.contains_key(*key) {
                    self.services.announce_device_update(user, key, pos, false).await;
                }
            }
            if own.iter().any(|k| !devices.contains_key(*k)) {
                self.services.announce_signing_keys(user).await;
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
        let master = if self.services.is_local(target) {
            let theirs = self.services.store.cross_signing_keys(target.as_str()).await?;
            theirs.into_iter().find(|k| k.key_type == "master").map(|k| (k.public_key, parse_stored(&k.key_json)))
        } else {
            match tokio::time::timeout(REMOTE_KEYS_TIMEOUT, self.services.remote_master_key(target)).await {
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
}
