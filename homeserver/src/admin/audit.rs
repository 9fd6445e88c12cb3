//! The audit log of the admin API: every call, allowed or not, with its caller, time,
//! target, parameters (secrets removed) and result. Append-only: there is no code to
//! change or delete an entry, and the database refuses it too.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::{
    services::Services,
    storage::{AuditFilter, AuditRow},
};
use kairan_core::error::Result;
use kairan_core::time::format_ms;

/// Keys whose values are secrets and never reach the log.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("token") || k.contains("secret")
}

/// The parameters with every secret value replaced by `"<redacted>"`.
pub fn redact_secrets(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) && !v.is_null() && !v.is_boolean() && !v.is_number() {
                        Value::String("<redacted>".into())
                    } else {
                        redact_secrets(v)
                    };
                    (k.clone(), v)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact_secrets).collect()),
        other => other.clone(),
    }
}

/// A registration token as the log names it: a fingerprint, not the token.
pub fn token_fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("token:sha256:{hex}")
}

impl Services {
    /// Appends an entry to the audit log; a failure to write it is logged loudly.
    pub async fn audit(&self, entry: AuditRow) {
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::error!(
                error = %e,
                caller = entry.caller.as_deref().unwrap_or("-"),
                action = entry.action,
                target = entry.target.as_deref().unwrap_or("-"),
                result = entry.result,
                "cannot write the admin audit log"
            );
        }
    }

    /// Entries of the audit log, newest first, as JSON.
    pub async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<Value>> {
        let offset = self.config.admin.utc_offset_seconds();
        Ok(self
            .store
            .audit_entries(filter)
            .await?
            .into_iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "ts": e.ts,
                    "time": format_ms(e.ts, offset),
                    "caller": e.caller,
                    "action": e.action,
                    "target": e.target,
                    "params": serde_json::from_str::<Value>(&e.params).unwrap_or(Value::String(e.params)),
                    "status": e.status,
                    "result": e.result,
                    "detail": e.detail,
                    "client_ip": e.client_ip,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let v = json!({
            "user_id": "alice", "password": "hunter2",
            "users": [{ "user_id": "bob", "password": "x", "department": "総務課" }],
            "token": "abc", "uses_allowed": 3, "logout_devices": true, "new_password": null,
        });
        let r = redact_secrets(&v);
        assert_eq!(r["password"], "<redacted>");
        assert_eq!(r["users"][0]["password"], "<redacted>");
        assert_eq!(r["users"][0]["department"], "総務課");
        assert_eq!(r["token"], "<redacted>");
        assert_eq!(r["uses_allowed"], 3);
        assert_eq!(r["new_password"], Value::Null);
        assert!(!r.to_string().contains("hunter2"));
        assert!(token_fingerprint("abc").starts_with("token:sha256:"));
        assert_ne!(token_fingerprint("abc"), token_fingerprint("abd"));
    }
}
