//! The federation transport between real kairan processes: TLS on the federation port
//! (verified against the test CA), remote key fetching and the key notary, X-Matrix
//! verification of every inbound request (bad signature, wrong destination, unsigned,
//! not on the allowlist), static host overrides, and `check-config` on TLS files.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use kairan_tests::{PASSWORD, Response, ServerOptions, TestServer, test_ca};
use ruma::{
    CanonicalJsonObject,
    api::federation::authentication::{ServerSignaturesInput, XMatrix},
    exports::http,
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet, verify_json},
};
use serde_json::{Value, json};

/// A client that trusts the test CA, for the federation port.
pub(crate) fn tls_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tls_certs_only([test_ca().reqwest_certificate()?])
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// The signing key of a test server, read from its key file (Synapse's format:
/// `ed25519 VERSION SEED`), so that a test can sign requests in that server's name.
pub(crate) fn server_key(server: &TestServer) -> anyhow::Result<Ed25519KeyPair> {
    key_as(server, None)
}

/// `server`'s key under another key version (a forger's key presented as someone's).
pub(crate) fn key_as(server: &TestServer, version: Option<&str>) -> anyhow::Result<Ed25519KeyPair> {
    kairan_tests::server_signing_key(server, version)
}

/// A federation request as another server would send it, sent to `to`'s federation port:
/// `signer` is `(origin, destination, key)`, or `None` for an unsigned request.
pub(crate) async fn send_signed(
    to: &TestServer,
    method: http::Method,
    path: &str,
    body: Option<&Value>,
    signer: Option<(&str, &str, &Ed25519KeyPair)>,
) -> anyhow::Result<Response> {
    kairan_tests::federation_request(&tls_client()?, to, method, path, body, signer).await
}

fn expect_error(r: &Response, status: u16, errcode: &str, what: &str) -> anyhow::Result<()> {
    ensure!(
        r.status == status && r.errcode() == Some(errcode),
        "{what}: expected {status} {errcode}, got {} {}",
        r.status,
        r.text
    );
    Ok(())
}

/// A key document's signature by `server`, checked with the key `server` publishes.
fn verify_signed_by(doc: &Value, server: &str, server_doc: &Value) -> anyhow::Result<()> {
    let mut set = PublicKeySet::new();
    for (id, key) in server_doc["verify_keys"].as_object().context("verify_keys")? {
        set.insert(id.clone(), Base64::parse(key["key"].as_str().context("key")?)?);
    }
    let mut map = PublicKeyMap::new();
    map.insert(server.to_owned(), set);
    // Only the named server's signature is checked.
    let mut obj: CanonicalJsonObject = serde_json::from_value(doc.clone())?;
    if let Some(ruma::CanonicalJsonValue::Object(sigs)) = obj.get_mut("signatures") {
        sigs.retain(|entity, _| entity == server);
    }
    verify_json(&map, &obj).with_context(|| format!("signature of {server} on {doc}"))?;
    Ok(())
}

/// The federation port speaks TLS with the configured certificate, which a client that
/// trusts the test CA accepts and one that does not refuses; the key server and the
/// notary work over it, and a server fetches, checks and hands on another's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_keys_and_notary() -> anyhow::Result<()> {
    let a = TestServer::start(ServerOptions::default().federation()).await?;
    let b = TestServer::start(ServerOptions::default().federation()).await?;
    ensure!(a.server_name() == format!("localhost:{}", a.federation_port()), "name: {}", a.server_name());

    // TLS is verified: without the test CA the handshake fails.
    let untrusting = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let url = format!("{}/_matrix/key/v2/server", b.federation_url());
    ensure!(untrusting.get(&url).send().await.is_err(), "a client without the test CA connected to {url}");
    let b_keys: Value = tls_client()?.get(&url).send().await?.error_for_status()?.json().await?;
    ensure!(b_keys["server_name"] == b.server_name(), "B's key document: {b_keys}");
    verify_signed_by(&b_keys, b.server_name(), &b_keys)?;
    // The same application is served on both ports.
    let versions: Value =
        tls_client()?.get(format!("{}/_matrix/client/versions", b.federation_url())).send().await?.json().await?;
    ensure!(versions["versions"].is_array(), "client API on the federation port: {versions}");

    // A's notary fetches B's keys over federation (discovery, TLS with the CA bundle),
    // and returns B's document signed by B and by A.
    let anon = a.anonymous();
    let path = format!("/_matrix/key/v2/query/{}", b.server_name());
    let r = anon.get(&path).await?.ok()?;
    let docs = r["server_keys"].as_array().context("server_keys")?;
    ensure!(docs.len() == 1, "one document for B: {r}");
    let doc = &docs[0];
    ensure!(
        doc["server_name"] == b.server_name() && doc["verify_keys"] == b_keys["verify_keys"],
        "B's keys via A: {doc}"
    );
    verify_signed_by(doc, b.server_name(), &b_keys)?;
    let a_keys = anon.get("/_matrix/key/v2/server").await?.ok()?;
    verify_signed_by(doc, a.server_name(), &a_keys)?;

    // The batch form, asking for A itself and B, after a restart of A: B's keys now come
    // from A's database.
    let mut a = a;
    a.restart().await?;
    let body = json!({ "server_keys": { a.server_name(): {}, b.server_name(): {} } });
    let r = a.anonymous().post("/_matrix/key/v2/query", &body).await?.ok()?;
    let names: Vec<&str> =
        r["server_keys"].as_array().context("server_keys")?.iter().filter_map(|d| d["server_name"].as_str()).collect();
    ensure!(names.contains(&a.server_name()) && names.contains(&b.server_name()), "batch answer: {r}");

    // Shutdown: with a keep-alive connection idle on B's federation port, B still stops
    // at once on SIGTERM.
    let idle = tls_client()?;
    idle.get(&url).send().await?.bytes().await?;
    let mut b = b;
    let took = b.terminate(Duration::from_secs(10)).await?;
    drop(idle);
    ensure!(took < Duration::from_secs(5), "B took {took:?} to stop");
    Ok(())
}

/// Every inbound federation request is checked before its handler runs: a request
/// signed by A's key reaches the handler; a bad signature, another destination, no
/// signature at all get 401; a server not on the allowlist gets 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_requests_are_verified() -> anyhow::Result<()> {
    let a = TestServer::start(ServerOptions::default().federation()).await?;
    let b = TestServer::start(ServerOptions::default().federation()).await?;
    b.create_users(&["alice"]).await?;
    let key = server_key(&a)?;
    let (origin, dest) = (a.server_name(), b.server_name());
    let profile = format!("/_matrix/federation/v1/query/profile?user_id={}", kairan_tests::enc(&b.user_id("alice")));

    // Signed by A for B: B fetches A's key and lets the request through.
    let r = send_signed(&b, http::Method::GET, &profile, None, Some((origin, dest, &key))).await?;
    ensure!(r.status == 200, "a correctly signed request: {} {}", r.status, r.text);

    // Signed for another destination.
    let r = send_signed(&b, http::Method::GET, &profile, None, Some((origin, "localhost:1", &key))).await?;
    expect_error(&r, 401, "M_UNAUTHORIZED", "wrong destination")?;

    // Not signed at all.
    let r = send_signed(&b, http::Method::GET, &profile, None, None).await?;
    expect_error(&r, 401, "M_UNAUTHORIZED", "unsigned")?;

    // Signed by another key in A's name (a forger who knows A's key ID).
    let forger = TestServer::start(ServerOptions::default().federation()).await?;
    let a_version =
        std::fs::read_to_string(a.signing_key_path())?.split_whitespace().nth(1).context("version")?.to_owned();
    let forged = key_as(&forger, Some(&a_version))?;
    let r = send_signed(&b, http::Method::GET, &profile, None, Some((origin, dest, &forged))).await?;
    expect_error(&r, 401, "M_UNAUTHORIZED", "forged signature")?;

    // A correct signature over another path does not cover this one.
    let x = {
        let other =
            http::Request::builder().method("GET").uri("/_matrix/federation/v1/version").body(Vec::<u8>::new())?;
        let input = ServerSignaturesInput::new(origin.try_into()?, dest.try_into()?, &key);
        XMatrix::try_from_http_request(&other, input)?
    };
    let r = tls_client()?
        .get(format!("{}{profile}", b.federation_url()))
        .header("authorization", http::HeaderValue::from(&x).to_str()?.to_owned())
        .send()
        .await?;
    ensure!(r.status() == 401, "a signature over another URI: {}", r.status());

    // A body changed after signing.
    let txn = "/_matrix/federation/v1/send/t1";
    let signed_body = json!({ "origin": origin, "origin_server_ts": 1, "pdus": [] });
    let x = {
        let req = http::Request::builder().method("PUT").uri(txn).body(serde_json::to_vec(&signed_body)?)?;
        XMatrix::try_from_http_request(&req, ServerSignaturesInput::new(origin.try_into()?, dest.try_into()?, &key))?
    };
    let r = tls_client()?
        .put(format!("{}{txn}", b.federation_url()))
        .header("authorization", http::HeaderValue::from(&x).to_str()?.to_owned())
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({ "origin": origin, "origin_server_ts": 2, "pdus": [] }))?)
        .send()
        .await?;
    ensure!(r.status() == 401, "a body changed after signing: {}", r.status());

    // A server that allows only someone else refuses A with 403, before looking at keys.
    let c = TestServer::start(ServerOptions::default().federation_allowlist(["localhost:1"])).await?;
    let r = send_signed(
        &c,
        http::Method::GET,
        "/_matrix/federation/v1/query/profile?user_id=%40x%3Ay",
        None,
        Some((origin, c.server_name(), &key)),
    )
    .await?;
    expect_error(&r, 403, "M_FORBIDDEN", "origin not on the allowlist")?;
    // And C's notary does not contact A (nothing is sent to a server not allowed).
    let r = c.anonymous().get(&format!("/_matrix/key/v2/query/{origin}")).await?.ok()?;
    ensure!(r["server_keys"].as_array().is_some_and(Vec::is_empty), "C fetched keys of a refused server: {r}");
    Ok(())
}

/// Outbound: a local user's request for a remote profile makes the server send a signed
/// federation request, which the other kairan verifies and answers. A destination the
/// allowlist does not name gets nothing (403 here, no connection there); one that is down
/// is a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_requests_are_signed_and_policed() -> anyhow::Result<()> {
    let mut b = TestServer::start(ServerOptions::default().federation()).await?;
    let a = TestServer::start(ServerOptions::default().federation_allowlist([b.server_name()])).await?;
    let c = TestServer::start(ServerOptions::default().federation()).await?;
    a.create_users(&["alice"]).await?;
    b.create_users(&["bob"]).await?;
    c.create_users(&["carol"]).await?;
    let alice = a.api("alice", PASSWORD).await?;

    let path = |user: &str| format!("/_matrix/client/v3/profile/{}", kairan_tests::enc(user));
    let r = alice.get(&path(&b.user_id("bob"))).await?.ok()?;
    ensure!(r["displayname"].is_string(), "bob's profile through federation: {r}");
    ensure!(
        b.logs().contains("fetched the server's signing keys") && b.logs().contains(a.server_name()),
        "B did not fetch A's keys to verify the request:\n{}",
        b.logs()
    );

    // C is not on A's allowlist: refused, and C never hears of it.
    let r = alice.get(&path(&c.user_id("carol"))).await?;
    expect_error(&r, 403, "M_FORBIDDEN", "a destination not on the allowlist")?;
    ensure!(!c.logs().contains("/_matrix/federation/"), "C was contacted:\n{}", c.logs());

    // B down: a 502 that says so, soon (a refused connection is not a timeout).
    b.kill();
    let started = std::time::Instant::now();
    let r = alice.get(&path(&b.user_id("bob"))).await?;
    ensure!(
        r.status == 502 && r.errcode() == Some("M_UNKNOWN") && r.text.contains("unreachable"),
        "B down: {} {}",
        r.status,
        r.text
    );
    ensure!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    Ok(())
}

/// Closed networks: a server name no DNS knows is reached through `host_overrides`, and
/// its certificate is still checked against that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_overrides_route_unresolvable_names() -> anyhow::Result<()> {
    let pref = TestServer::start(ServerOptions::default().server_name("pref.kairan.test").federation()).await?;
    let target = format!("127.0.0.1:{}", pref.federation_port());
    let city =
        TestServer::start(ServerOptions::default().federation().host_override("pref.kairan.test", &target)).await?;
    let r = city.anonymous().get("/_matrix/key/v2/query/pref.kairan.test").await?.ok()?;
    let docs = r["server_keys"].as_array().context("server_keys")?;
    ensure!(docs.len() == 1 && docs[0]["server_name"] == "pref.kairan.test", "keys through the override: {r}");

    // Without the override the name does not resolve, and nothing is found.
    let lost = TestServer::start(ServerOptions::default().federation()).await?;
    let r = lost.anonymous().get("/_matrix/key/v2/query/pref.kairan.test").await?.ok()?;
    ensure!(r["server_keys"].as_array().is_some_and(Vec::is_empty), "found without an override: {r}");
    Ok(())
}

/// Development certificates: a server without TLS files serves a self-signed one, which
/// a verifying server refuses and a server with `verify_tls = false` accepts (logging
/// that it does not verify).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_certificates_and_verify_tls() -> anyhow::Result<()> {
    let dev = TestServer::start(ServerOptions::default().federation().self_signed_tls()).await?;
    ensure!(dev.dir().join("data").join("federation-self-signed.crt").exists(), "no self-signed certificate written");
    ensure!(dev.logs().contains("self-signed"), "no warning about the self-signed certificate:\n{}", dev.logs());
    let path = format!("/_matrix/key/v2/query/{}", dev.server_name());

    let strict = TestServer::start(ServerOptions::default().federation()).await?;
    let r = strict.anonymous().get(&path).await?.ok()?;
    ensure!(r["server_keys"].as_array().is_some_and(Vec::is_empty), "a self-signed certificate was trusted: {r}");

    let lax = TestServer::start(ServerOptions::default().federation().verify_tls(false)).await?;
    let r = lax.anonymous().get(&path).await?.ok()?;
    ensure!(r["server_keys"].as_array().is_some_and(|d| d.len() == 1), "verify_tls = false: {r}");
    ensure!(lax.logs().contains("verify_tls is false"), "no warning about verify_tls:\n{}", lax.logs());
    Ok(())
}

/// After a key rotation, the old key stays published in `old_verify_keys`, directly and
/// through another server's notary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_verify_keys_are_published() -> anyhow::Result<()> {
    let old_key = "Iz6VgsVIx8AyF27vsdNfFIdCbyyuAtO4HWUu1bLnjDU";
    let a = TestServer::start(ServerOptions::default().federation().old_verify_key(
        "ed25519:old1",
        old_key,
        1_700_000_000_000,
    ))
    .await?;
    let b = TestServer::start(ServerOptions::default().federation()).await?;
    let own = a.anonymous().get("/_matrix/key/v2/server").await?.ok()?;
    let expected = json!({ "ed25519:old1": { "key": old_key, "expired_ts": 1_700_000_000_000u64 } });
    ensure!(own["old_verify_keys"] == expected, "old keys: {own}");
    verify_signed_by(&own, a.server_name(), &own)?;
    let r = b.anonymous().get(&format!("/_matrix/key/v2/query/{}", a.server_name())).await?.ok()?;
    ensure!(r["server_keys"][0]["old_verify_keys"] == expected, "old keys via the notary: {r}");
    Ok(())
}

/// `check-config` names a missing TLS file and its line; a server refuses to start on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reports_missing_tls_files() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().federation()).await?;
    let ok = server.cli(["check-config"]).await?;
    ensure!(ok.status.success(), "the harness's federation config: {ok:?}");

    let bad = server.dir().join("bad.toml");
    let ca = test_ca();
    let cases = [
        (
            format!(
                "server_name = \"x.example\"\n\n[listen]\nfederation = \"127.0.0.1:0\"\n\n[federation]\n\
                 tls_certificate = \"/nonexistent/cert.pem\"\ntls_private_key = {:?}\n",
                ca.key_pem
            ),
            "line 7",
            "tls_certificate",
        ),
        (
            format!(
                "[federation]\ntls_certificate = {:?}\n\ntls_private_key = \"/nonexistent/key.pem\"\n",
                ca.cert_pem
            ),
            "line 4",
            "tls_private_key",
        ),
        ("[federation]\nca_bundle = \"/nonexistent/ca.pem\"\n".to_owned(), "line 2", "ca_bundle"),
        ("[federation]\nallowlist = [\"not a name\"]\n".to_owned(), "line 2", "allowlist"),
    ];
    for (text, line, word) in cases {
        std::fs::write(&bad, &text)?;
        let out = tokio::process::Command::new(server.binary())
            .env_clear()
            .arg("--config")
            .arg(&bad)
            .arg("check-config")
            .output()
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "a bad config passed: {text:?}");
        ensure!(stderr.contains(line) && stderr.contains(word), "message for {text:?}: {stderr}");
    }
    Ok(())
}
