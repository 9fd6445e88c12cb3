//! A lean Client-Server API client for load: one shared connection pool, raw JSON, and
//! nothing between the request and the clock (no retries, no local checks, no store).

use std::time::Duration;

use anyhow::{Context as _, bail};
pub use kairan_tests::enc;
use reqwest::Method;
use serde_json::{Value, json};

/// The password of every benchmark account.
pub const PASSWORD: &str = "bench password 0123456789";

/// A homeserver's client API: its base URL and an HTTP client shared by all its users, so
/// that thousands of users do not mean thousands of connection pools.
#[derive(Clone, Debug)]
pub struct Homeserver {
    http: reqwest::Client,
    base: String,
}

/// A logged-in user (one device).
#[derive(Clone, Debug)]
pub struct User {
    hs: Homeserver,
    token: String,
}

impl Homeserver {
    /// `http` must trust the server's certificate when `base` is `https://`.
    pub fn new(base: &str, http: reqwest::Client) -> Self {
        Self { http, base: base.trim_end_matches('/').to_owned() }
    }

    /// An HTTP client for benchmarks: a long timeout (long-polls last 30 s) and enough idle
    /// connections kept per host for every concurrent user.
    pub fn http_client(extra_root: Option<reqwest::Certificate>) -> anyhow::Result<reqwest::Client> {
        let mut builder =
            reqwest::Client::builder().timeout(Duration::from_secs(120)).pool_max_idle_per_host(4096).tcp_nodelay(true);
        if let Some(ca) = extra_root {
            builder = builder.add_root_certificate(ca);
        }
        Ok(builder.build()?)
    }

    /// Sends a request and returns the JSON body of a 200 answer; anything else is an error
    /// naming the status and body, so a benchmark never counts a refused request as done.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.with_context(|| format!("{method} {path}: reading the body"))?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: the body is not JSON"))
    }

    /// Registers `localpart` through user-interactive auth, completing whichever single
    /// stage the server offers: a registration token (kairan in `token` mode) or
    /// `m.login.dummy` (Synapse with open registration).
    pub async fn register(&self, localpart: &str, registration_token: &str) -> anyhow::Result<User> {
        let mut body = json!({
            "username": localpart,
            "password": PASSWORD,
            "initial_device_display_name": "kairan-bench",
        });
        let path = "/_matrix/client/v3/register";
        let resp = self.http.post(format!("{}{path}", self.base)).json(&body).send().await?;
        let status = resp.status();
        let challenge: Value = resp.json().await.unwrap_or(Value::Null);
        if status != reqwest::StatusCode::UNAUTHORIZED {
            bail!("registering {localpart}: expected a 401 UIA challenge, got {status}: {challenge}");
        }
        let session = challenge["session"].as_str().map(str::to_owned);
        let offers = |stage: &str| {
            challenge["flows"].as_array().is_some_and(|flows| flows.iter().any(|f| f["stages"] == json!([stage])))
        };
        body["auth"] = if offers("m.login.registration_token") {
            json!({ "type": "m.login.registration_token", "token": registration_token, "session": session })
        } else if offers("m.login.dummy") {
            json!({ "type": "m.login.dummy", "session": session })
        } else {
            bail!("registering {localpart}: no single-stage flow the benchmark can complete: {challenge}");
        };
        let done = self.call(Method::POST, path, None, Some(&body)).await?;
        let token = done["access_token"].as_str().with_context(|| format!("no access_token: {done}"))?;
        Ok(User { hs: self.clone(), token: token.to_owned() })
    }
}

impl User {
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.hs.call(Method::GET, path, Some(&self.token), None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.hs.call(Method::POST, path, Some(&self.token), Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.hs.call(Method::PUT, path, Some(&self.token), Some(body)).await
    }

    /// Creates a public room (anyone may join without an invite) and returns its ID.
    pub async fn create_public_room(&self, name: &str) -> anyhow::Result<String> {
        let body = json!({ "preset": "public_chat", "name": name });
        // kairan answers M_ROOM_IN_USE "try again" when two rooms of one creator fall in
        // the same millisecond (a v12 room ID is the hash of the create event); a client
        // retries, and so does the benchmark, a few times.
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            match self.post("/_matrix/client/v3/createRoom", &body).await {
                Err(e) if attempt < 5 && e.to_string().contains("M_ROOM_IN_USE") => continue,
                other => break other?,
            }
        };
        Ok(resp["room_id"].as_str().with_context(|| format!("createRoom: {resp}"))?.to_owned())
    }

    /// Joins a room by ID, through `via` when it lives on another server.
    pub async fn join(&self, room_id: &str, via: Option<&str>) -> anyhow::Result<()> {
        let query = via.map(|v| format!("?server_name={}&via={}", enc(v), enc(v))).unwrap_or_default();
        self.post(&format!("/_matrix/client/v3/join/{}{query}", enc(room_id)), &json!({})).await?;
        Ok(())
    }

    /// Sends an `m.room.message` text and returns its event ID.
    pub async fn send_text(&self, room_id: &str, txn_id: &str, text: &str) -> anyhow::Result<String> {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room_id), enc(txn_id));
        let resp = self.put(&path, &json!({ "msgtype": "m.text", "body": text })).await?;
        Ok(resp["event_id"].as_str().with_context(|| format!("send: {resp}"))?.to_owned())
    }

    /// `GET /sync` with an inline filter; `since` `None` is an initial sync.
    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64, filter: &Value) -> anyhow::Result<Value> {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}", enc(&filter.to_string()));
        if let Some(since) = since {
            path.push_str(&format!("&since={}", enc(since)));
        }
        self.get(&path).await
    }
}

/// The bodies of the `m.room.message` events of `room_id` in a sync response's timeline.
pub fn timeline_bodies<'a>(sync: &'a Value, room_id: &str) -> impl Iterator<Item = &'a str> {
    sync["rooms"]["join"][room_id]["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["content"]["body"].as_str())
}
