//! Speaking as another server: a test server's signing key read from its key file, and a
//! federation request signed with X-Matrix (or deliberately unsigned) sent to a kairan
//! federation port.

use anyhow::{Context as _, ensure};
use ruma::{
    OwnedServerName,
    api::federation::authentication::{ServerSignaturesInput, XMatrix},
    exports::http,
    serde::Base64,
    signatures::Ed25519KeyPair,
};
use serde_json::Value;

use crate::{Response, TestServer};

/// `server`'s signing key, from its key file (Synapse's format: `ed25519 VERSION SEED`),
/// under its own key version or, with `version`, another (a forger's key presented as
/// someone's).
pub fn server_signing_key(server: &TestServer, version: Option<&str>) -> anyhow::Result<Ed25519KeyPair> {
    let text = std::fs::read_to_string(server.signing_key_path())?;
    let mut parts = text.split_whitespace();
    ensure!(parts.next() == Some("ed25519"), "not an ed25519 key file: {text}");
    let own_version = parts.next().context("key version")?;
    let version = version.unwrap_or(own_version).to_owned();
    let seed = Base64::<ruma::serde::base64::Standard>::parse(parts.next().context("seed")?)?;
    // PKCS#8 v1 of an ed25519 seed: a fixed prefix and the 32 bytes.
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(seed.as_bytes());
    Ok(Ed25519KeyPair::from_der(&der, version)?)
}

/// A federation request as another server would send it, through `client` to `to`'s
/// federation port: `signer` is `(origin, destination, key)`, or `None` for an unsigned
/// request.
pub async fn federation_request(
    client: &reqwest::Client,
    to: &TestServer,
    method: http::Method,
    path: &str,
    body: Option<&Value>,
    signer: Option<(&str, &str, &Ed25519KeyPair)>,
) -> anyhow::Result<Response> {
    let bytes = body.map(serde_json::to_vec).transpose()?.unwrap_or_default();
    let mut request = client.request(method.clone(), format!("{}{path}", to.federation_url()));
    if let Some((origin, destination, key)) = signer {
        let http_request = http::Request::builder().method(method.clone()).uri(path).body(bytes.clone())?;
        let input = ServerSignaturesInput::new(
            OwnedServerName::try_from(origin)?,
            OwnedServerName::try_from(destination)?,
            key,
        );
        let x = XMatrix::try_from_http_request(&http_request, input)?;
        request = request.header("authorization", http::HeaderValue::from(&x).to_str()?.to_owned());
    }
    if body.is_some() {
        request = request.header("content-type", "application/json").body(bytes);
    }
    let response = request.send().await.with_context(|| format!("{method} {path}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?.to_vec();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Response { status, body, text, bytes, headers })
}
