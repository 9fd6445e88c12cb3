//! A deliberately small Client-Server API client over reqwest.
//!
//! matrix-sdk hides status codes, retries, checks some preconditions locally (e.g. it
//! refuses to send into a room it believes it left) and always sends well-formed JSON.
//! Tests that check the server's own answers to exact requests use this instead.

use std::{fmt, time::Duration};

use anyhow::{Context as _, bail, ensure};
use reqwest::Method;
use serde_json::{Value, json};

/// A raw API client, optionally authenticated with an access token.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The user ID `/login` returned, if logged in.
    pub user_id: Option<String>,
    /// The device ID `/login` returned, if logged in.
    pub device_id: Option<String>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api").field("base", &self.base).field("user_id", &self.user_id).finish()
    }
}

/// A response: the status, the body parsed as JSON (`Null` if it is not JSON), the body
/// as (lossy UTF-8) text and as bytes, and the headers.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub bytes: Vec<u8>,
    pub headers: reqwest::header::HeaderMap,
}

impl Response {
    /// The `errcode` of a Matrix error body.
    pub fn errcode(&self) -> Option<&str> {
        self.body.get("errcode").and_then(Value::as_str)
    }

    /// A response header as a string, if present and valid.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body of a 200 response, or an error describing what came back instead.
    pub fn ok(self) -> anyhow::Result<Value> {
        ensure!(self.status == 200, "expected 200, got {}: {}", self.status, self.text);
        Ok(self.body)
    }
}

impl Api {
    /// A client without an access token.
    pub fn anonymous(base: &str) -> Self {
        let http = reqwest::Client::builder()
            // Longer than any long-poll a test makes (30 s), so that only a hung server times out.
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client builds");
        Self { http, base: base.trim_end_matches('/').to_owned(), token: None, user_id: None, device_id: None }
    }

    /// Logs in with `m.login.password` and returns a client for the new device.
    pub async fn login(base: &str, user: &str, password: &str) -> anyhow::Result<Self> {
        let mut api = Self::anonymous(base);
        let body = api
            .post("/_matrix/client/v3/login", &password_login(user, password))
            .await?
            .ok()
            .with_context(|| format!("logging in as {user}"))?;
        let token = body["access_token"].as_str().context("login response without access_token")?;
        api.token = Some(token.to_owned());
        api.user_id = body["user_id"].as_str().map(str::to_owned);
        api.device_id = body["device_id"].as_str().map(str::to_owned);
        Ok(api)
    }

    /// The same client over another HTTP client (e.g. one trusting a test CA, for a TLS server).
    pub fn with_http(self, http: reqwest::Client) -> Self {
        Self { http, ..self }
    }

    /// The same client with another access token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self { token: token.map(str::to_owned), ..self.clone() }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The logged-in user's ID; panics on an anonymous client (a test bug).
    pub fn me(&self) -> &str {
        self.user_id.as_deref().expect("this Api is logged in")
    }

    /// Sends a request with an optional raw body. `path` starts with `/_matrix/…` and must
    /// already be percent-encoded (see [`enc`]). Transport errors are `Err`; any HTTP status
    /// is `Ok`.
    pub async fn request(&self, method: Method, path: &str, body: Option<(Vec<u8>, &str)>) -> anyhow::Result<Response> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some((bytes, content_type)) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type).body(bytes);
        }
        let response = request.send().await.with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.with_context(|| format!("reading body of {method} {path}"))?.to_vec();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Response { status, body, text, bytes, headers })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Response> {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Response> {
        self.request(Method::POST, path, Some((serde_json::to_vec(body)?, "application/json"))).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Response> {
        self.request(Method::PUT, path, Some((serde_json::to_vec(body)?, "application/json"))).await
    }

    /// `DELETE` with a JSON body (the device endpoints take their UIA `auth` in one).
    pub async fn delete(&self, path: &str, body: &Value) -> anyhow::Result<Response> {
        self.request(Method::DELETE, path, Some((serde_json::to_vec(body)?, "application/json"))).await
    }

    /// `POST /_matrix/media/v3/upload` of raw bytes with a declared `Content-Type` and an
    /// optional `filename`.
    pub async fn upload(&self, bytes: Vec<u8>, content_type: &str, filename: Option<&str>) -> anyhow::Result<Response> {
        let mut path = "/_matrix/media/v3/upload".to_owned();
        if let Some(name) = filename {
            path.push_str(&format!("?filename={}", enc(name)));
        }
        self.request(Method::POST, &path, Some((bytes, content_type))).await
    }

    /// `POST /createRoom`; returns the room ID.
    pub async fn create_room(&self, body: &Value) -> anyhow::Result<String> {
        let body = self.post("/_matrix/client/v3/createRoom", body).await?.ok().context("createRoom")?;
        Ok(body["room_id"].as_str().context("createRoom response without room_id")?.to_owned())
    }

    /// `POST /rooms/{roomId}/join`.
    pub async fn join(&self, room_id: &str) -> anyhow::Result<Response> {
        self.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room_id)), &json!({})).await
    }

    /// `PUT /rooms/{roomId}/send/m.room.message/{txnId}` with an `m.text` body.
    pub async fn send_text(&self, room_id: &str, txn_id: &str, text: &str) -> anyhow::Result<Response> {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room_id), enc(txn_id));
        self.put(&path, &json!({ "msgtype": "m.text", "body": text })).await
    }

    /// Like [`send_text`](Self::send_text), requiring 200; returns the event ID.
    pub async fn send_text_ok(&self, room_id: &str, txn_id: &str, text: &str) -> anyhow::Result<String> {
        let body = self.send_text(room_id, txn_id, text).await?.ok()?;
        Ok(body["event_id"].as_str().context("send response without event_id")?.to_owned())
    }

    /// `GET /rooms/{roomId}/event/{eventId}`.
    pub async fn event(&self, room_id: &str, event_id: &str) -> anyhow::Result<Response> {
        self.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room_id), enc(event_id))).await
    }

    /// `GET /rooms/{roomId}/state/{eventType}/{stateKey}`: the content, requiring 200.
    pub async fn state(&self, room_id: &str, event_type: &str, state_key: &str) -> anyhow::Result<Value> {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{}/{}", enc(room_id), enc(event_type), enc(state_key));
        self.get(&path).await?.ok().with_context(|| format!("GET state {event_type}/{state_key}"))
    }

    /// `GET /rooms/{roomId}/joined_members`: the sorted user IDs.
    pub async fn joined_members(&self, room_id: &str) -> anyhow::Result<Vec<String>> {
        let body = self
            .get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room_id)))
            .await?
            .ok()
            .context("joined_members")?;
        let joined = body["joined"].as_object().context("joined_members without `joined` object")?;
        let mut users: Vec<String> = joined.keys().cloned().collect();
        users.sort();
        Ok(users)
    }

    /// The current state of a room as this user's server shows it (`GET /state`), as a set
    /// of `(type, state_key, event_id)`: what servers that agree on a room have in common.
    pub async fn state_set(
        &self,
        room_id: &str,
    ) -> anyhow::Result<std::collections::BTreeSet<(String, String, String)>> {
        let state = self.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room_id))).await?.ok()?;
        let events = state.as_array().with_context(|| format!("/state is not an array: {state}"))?;
        Ok(events
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                (s("type"), s("state_key"), s("event_id"))
            })
            .collect())
    }

    /// `GET /sync` with an optional `since` and a `timeout` in milliseconds, requiring 200.
    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> anyhow::Result<Value> {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(since) = since {
            path.push_str(&format!("&since={}", enc(since)));
        }
        self.get(&path).await?.ok().context("sync")
    }
}

/// The body of an `m.login.password` login with a user identifier.
pub(crate) fn password_login(user: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
        "initial_device_display_name": "kairan-tests raw",
    })
}

/// Percent-encodes one path segment or query value (everything but RFC 3986 unreserved).
pub fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Checks that a response is the Matrix error `errcode` with HTTP status `status`.
pub fn assert_matrix_error(response: &Response, status: u16, errcode: &str) -> anyhow::Result<()> {
    assert_matrix_error_in(response, status, &[errcode])
}

/// Like [`assert_matrix_error`], for where the spec leaves the errcode open ("a meaningful
/// errcode") and servers differ: any of `errcodes`.
pub fn assert_matrix_error_in(response: &Response, status: u16, errcodes: &[&str]) -> anyhow::Result<()> {
    if response.status != status || !response.errcode().is_some_and(|c| errcodes.contains(&c)) {
        bail!("expected {status} {}, got {} with body {}", errcodes.join(" or "), response.status, response.text);
    }
    Ok(())
}

/// Checks that a matrix-sdk call failed with the Matrix error `errcode` and HTTP `status`.
pub fn assert_sdk_error<T: fmt::Debug>(
    result: Result<T, matrix_sdk::Error>,
    status: u16,
    errcode: &str,
) -> anyhow::Result<()> {
    assert_sdk_error_in(result, status, &[errcode])
}

/// Like [`assert_sdk_error`], accepting any of `errcodes`.
pub fn assert_sdk_error_in<T: fmt::Debug>(
    result: Result<T, matrix_sdk::Error>,
    status: u16,
    errcodes: &[&str],
) -> anyhow::Result<()> {
    let expected = errcodes.join(" or ");
    let error = match result {
        Ok(value) => bail!("expected {status} {expected}, but the call succeeded: {value:?}"),
        Err(error) => error,
    };
    let Some(api_error) = error.as_client_api_error() else {
        bail!("expected {status} {expected}, got a non-API error: {error:?}");
    };
    let got_code = api_error.error_kind().map(|kind| kind.errcode().to_string());
    if api_error.status_code.as_u16() != status || !got_code.as_deref().is_some_and(|c| errcodes.contains(&c)) {
        bail!("expected {status} {expected}, got {} {:?} ({error})", api_error.status_code, got_code);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::enc;

    #[test]
    fn encodes_matrix_identifiers() {
        assert_eq!(enc("!abc:localhost"), "%21abc%3Alocalhost");
        assert_eq!(enc("$a+b/c"), "%24a%2Bb%2Fc");
        assert_eq!(enc("m.room.name"), "m.room.name");
    }
}
