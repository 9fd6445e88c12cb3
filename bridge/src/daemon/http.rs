//! Plain client-server API requests with the session's access token, beside matrix-sdk:
//! `/messages` pages as the exact bytes the server sent, room state, leaving unknown rooms.

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::Daemon;

impl Daemon {
    pub(super) async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let token = self.client.access_token().context("not logged in")?;
        let response = self.http.get(format!("{}{path}", self.homeserver)).bearer_auth(token).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        }
        Ok(body.to_vec())
    }

    pub(super) async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(&self.get_bytes(path).await?)?)
    }

    pub(super) async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let token = self.client.access_token().context("not logged in")?;
        let response =
            self.http.post(format!("{}{path}", self.homeserver)).bearer_auth(token).json(body).send().await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path}: {status} {value}");
        }
        Ok(value)
    }
}

/// Percent-encodes a path segment or query value.
pub(super) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
