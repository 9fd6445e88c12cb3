//! Signatures on key objects: what a signature covers, checking one with a public key,
//! and the shape of a cross-signing key. No state: the services above call these.

use http::StatusCode;
use ruma::{CanonicalJsonObject, SigningKeyAlgorithm, UserId, serde::Base64};
use serde_json::{Value, json};

use kairan_core::error::{Error, Result};

pub(super) fn invalid_signature(message: impl Into<String>) -> Error {
    Error::new(StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE", message)
}

/// A key object without `signatures` and `unsigned`: what its signatures cover.
pub(super) fn signed_content(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("signatures");
        o.remove("unsigned");
    }
    v
}

/// The signature `signer`/`key_id` carries in a key object.
pub(super) fn signature_of<'a>(v: &'a Value, signer: &str, key_id: &str) -> Option<&'a str> {
    v.get("signatures")?.get(signer)?.get(key_id)?.as_str()
}

/// Checks an ed25519 signature over the canonical form of `object` (which may carry
/// signatures and `unsigned`; they are not signed).
pub(super) fn verify_signature(object: &Value, signature: &str, public_key: &str) -> bool {
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
pub(super) fn merge_signature(v: &mut Value, signer: &str, key_id: &str, signature: &str) {
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
pub(super) fn device_ed25519(keys: &Value, device_id: &str) -> Option<String> {
    keys.get("keys")?.get(format!("ed25519:{device_id}"))?.as_str().map(str::to_owned)
}

/// Checks a cross-signing key's owner and usage; returns its public key.
pub(super) fn check_cross_signing_key(key: &Value, user: &UserId, usage: &str) -> Result<String> {
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
}
