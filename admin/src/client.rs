//! The admin HTTP API client: requests, and server answers turned into one-line errors.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::error::{CliError, Result, exit};

/// Where the admin API lives on the server.
pub const PREFIX: &str = "/_kairan/admin/v1";

/// A client of one server, with or without an access token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// Percent-encodes one path segment or query value.
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

/// A query string from the pairs that have a value.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v)))).collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

/// A body to send.
pub enum Body {
    Json(Value),
    Csv(String),
}

impl Client {
    /// A client of `server` (a base URL; `https://` is assumed when no scheme is given).
    pub fn new(server: &str, token: Option<String>) -> Result<Self> {
        let base = normalise_server(server)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Imports hash passwords on the server; a batch may take a while.
            .timeout(Duration::from_secs(300))
            .user_agent(concat!("kairan-admin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::failed(format!("cannot set up HTTP: {e}")))?;
        Ok(Self { http, base, token })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request to `path` (absolute, already encoded) and returns the raw answer.
    async fn send(&self, method: Method, path: &str, body: Option<Body>) -> Result<(StatusCode, String)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req = match body {
            None => req,
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Csv(text)) => req.header(reqwest::header::CONTENT_TYPE, "text/csv; charset=utf-8").body(text),
        };
        let response = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.transport_error(&e))?;
        Ok((status, text))
    }

    fn transport_error(&self, e: &reqwest::Error) -> CliError {
        let why = if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() {
            // The innermost cause says what happened (refused, no route, DNS, TLS).
            let mut cause: &dyn std::error::Error = e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            cause.to_string()
        } else {
            e.to_string()
        };
        let hint = if self.base.starts_with("https://")
            && (why.contains("corrupt message") || why.contains("InvalidContentType"))
        {
            "; the server may speak plain HTTP: try an http:// URL"
        } else {
            ""
        };
        let why = format!("{why}{hint}");
        CliError::new(
            exit::UNREACHABLE,
            format!(
                "cannot reach the server at {} ({why}); check the URL and that kairan-homeserver is running",
                self.base
            ),
        )
    }

    /// A request whose answer is JSON; a Matrix error becomes a [`CliError`].
    pub async fn call(&self, method: Method, path: &str, body: Option<Body>) -> Result<Value> {
        let (status, text) = self.send(method, path, body).await?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|_| {
                CliError::failed(format!("the server at {} answered something that is not JSON", self.base))
            });
        }
        Err(api_error(status, &text, &self.base))
    }

    /// A request whose answer is text (CSV).
    pub async fn call_text(&self, path: &str) -> Result<String> {
        let (status, text) = self.send(Method::GET, path, None).await?;
        if status.is_success() { Ok(text) } else { Err(api_error(status, &text, &self.base)) }
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, &format!("{PREFIX}{path}"), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(Method::POST, &format!("{PREFIX}{path}"), Some(Body::Json(body))).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<Value> {
        self.call(Method::PUT, &format!("{PREFIX}{path}"), Some(Body::Json(body))).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.call(Method::DELETE, &format!("{PREFIX}{path}"), None).await
    }

    /// `POST /_matrix/client/v3/login` with a password: `(user_id, device_id, access_token)`.
    pub async fn login(&self, user: &str, password: &str) -> Result<(String, String, String)> {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
            "initial_device_display_name": "kairan-admin",
        });
        let v = self.call(Method::POST, "/_matrix/client/v3/login", Some(Body::Json(body))).await?;
        let field = |k: &str| v[k].as_str().map(str::to_owned);
        match (field("user_id"), field("device_id"), field("access_token")) {
            (Some(u), Some(d), Some(t)) => Ok((u, d, t)),
            _ => Err(CliError::failed("the server's login answer has no access token")),
        }
    }

    /// `POST /_matrix/client/v3/logout`: ends this session on the server.
    pub async fn logout(&self) -> Result<()> {
        self.call(Method::POST, "/_matrix/client/v3/logout", Some(Body::Json(json!({})))).await.map(|_| ())
    }
}

/// `https://` for a bare host; no trailing slash.
fn normalise_server(server: &str) -> Result<String> {
    let s = server.trim().trim_end_matches('/');
    if s.is_empty() {
        return Err(CliError::usage("--server is empty; give the homeserver's URL, e.g. https://matrix.pref.example"));
    }
    let with_scheme = if s.contains("://") { s.to_owned() } else { format!("https://{s}") };
    match reqwest::Url::parse(&with_scheme) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(with_scheme),
        _ => Err(CliError::usage(format!("{server:?} is not a server URL such as https://matrix.pref.example"))),
    }
}

/// A server's error answer as one line, with the exit status it maps to.
fn api_error(status: StatusCode, text: &str, base: &str) -> CliError {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let errcode = body["errcode"].as_str().unwrap_or("");
    let error = body["error"].as_str().map(str::to_owned).unwrap_or_else(|| {
        format!("HTTP {status} from {base}{}", if errcode.is_empty() { " (is this a kairan server?)" } else { "" })
    });
    match (status.as_u16(), errcode) {
        (401, _) => {
            CliError::new(exit::DENIED, format!("{error}: your login is no longer valid; run kairan-admin login again"))
        }
        (403, "M_FORBIDDEN") if error.contains("not a server administrator") => {
            CliError::new(exit::DENIED, format!("{error}; ask a server administrator to grant you the right"))
        }
        (403, "M_USER_DEACTIVATED") => CliError::new(exit::DENIED, error),
        (404, "M_UNRECOGNIZED") => CliError::failed(format!(
            "{base} has no kairan admin API ({error}); is this a kairan-homeserver of a matching version?"
        )),
        (404, _) => CliError::new(exit::NOT_FOUND, error),
        (429, _) => CliError::failed(format!("{error}: too many requests; wait a little and try again")),
        (400..=499, "") => CliError::failed(error),
        (400..=499, code) => CliError::failed(format!("{error} ({code})")),
        _ => CliError::failed(format!("the server failed: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_encoding() {
        assert_eq!(normalise_server("matrix.pref.example/").unwrap(), "https://matrix.pref.example");
        assert_eq!(normalise_server("http://127.0.0.1:8008").unwrap(), "http://127.0.0.1:8008");
        assert!(normalise_server("").is_err());
        assert!(normalise_server("ftp://x").is_err());
        assert_eq!(enc("@a:b"), "%40a%3Ab");
        assert_eq!(query(&[("a", Some("x y".into())), ("b", None)]), "?a=x%20y");
        assert_eq!(query(&[("b", None)]), "");
    }

    #[test]
    fn errors() {
        let e = api_error(
            StatusCode::FORBIDDEN,
            r#"{"errcode":"M_FORBIDDEN","error":"@b:x is not a server administrator"}"#,
            "u",
        );
        assert_eq!(e.code, exit::DENIED);
        let e =
            api_error(StatusCode::NOT_FOUND, r#"{"errcode":"M_NOT_FOUND","error":"no user @z:x on this server"}"#, "u");
        assert_eq!((e.code, e.message.as_str()), (exit::NOT_FOUND, "no user @z:x on this server"));
        let e = api_error(StatusCode::BAD_REQUEST, r#"{"errcode":"M_INVALID_PARAM","error":"bad"}"#, "u");
        assert_eq!((e.code, e.message.as_str()), (exit::FAILED, "bad (M_INVALID_PARAM)"));
        assert_eq!(api_error(StatusCode::UNAUTHORIZED, "{}", "u").code, exit::DENIED);
    }
}
