//! The server publishes its signing key for other servers, signed by that key.

use anyhow::{Context as _, ensure};
use kairan_tests::{PASSWORD, ServerOptions, TestServer};
use ruma::{
    CanonicalJsonObject,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet, verify_json},
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_document_is_self_signed() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;

    let keys = alice.with_token(None).get("/_matrix/key/v2/server").await?.ok().context("key document")?;
    ensure!(keys["server_name"] == "localhost", "server_name: {keys}");
    ensure!(keys["valid_until_ts"].as_i64().is_some_and(|t| t > 0), "valid_until_ts: {keys}");
    let verify_keys = keys["verify_keys"].as_object().context("verify_keys")?;
    ensure!(verify_keys.len() == 1, "one current key: {keys}");
    let (key_id, key) = verify_keys.iter().next().unwrap();
    let mut set = PublicKeySet::new();
    set.insert(key_id.clone(), Base64::parse(key["key"].as_str().context("key")?)?);
    let mut map = PublicKeyMap::new();
    map.insert("localhost".to_owned(), set);

    // The key document is signed by the key it publishes.
    let doc: CanonicalJsonObject = serde_json::from_value(keys.clone())?;
    verify_json(&map, &doc).context("the key document's self-signature does not verify")?;

    // A tampered document does not verify.
    let mut forged = keys.clone();
    forged["valid_until_ts"] = json!(1);
    let forged: CanonicalJsonObject = serde_json::from_value(forged)?;
    ensure!(verify_json(&map, &forged).is_err(), "a tampered key document verified");

    Ok(())
}
