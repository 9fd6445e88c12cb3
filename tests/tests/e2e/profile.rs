//! Profiles and the user directory: a display name change reaches every joined room's
//! member event; search finds people who share a room or sit in public rooms.

use anyhow::{Context as _, ensure};
use kairan_tests::{Api, PASSWORD, ServerOptions, TestServer, enc};
use serde_json::{Value, json};

async fn search(api: &Api, term: &str) -> anyhow::Result<Vec<String>> {
    let body = api.post("/_matrix/client/v3/user_directory/search", &json!({ "search_term": term })).await?.ok()?;
    let results = body["results"].as_array().with_context(|| format!("no results: {body}"))?;
    Ok(results.iter().filter_map(|r| r["user_id"].as_str().map(str::to_owned)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_names_and_directory() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob", "carol"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let carol = server.api("carol", PASSWORD).await?;
    let shared = alice.create_room(&json!({ "preset": "private_chat", "invite": [bob.me()] })).await?;
    bob.join(&shared).await?.ok()?;

    // Display name change: profile, and the member event in the joined room.
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(alice.me()));
    alice.put(&path, &json!({ "displayname": "Governor Aomori" })).await?.ok()?;
    let profile = bob.get(&format!("/_matrix/client/v3/profile/{}", enc(alice.me()))).await?.ok()?;
    ensure!(profile["displayname"] == "Governor Aomori", "profile: {profile}");
    let member = bob.state(&shared, "m.room.member", alice.me()).await?;
    ensure!(member["displayname"] == "Governor Aomori" && member["membership"] == "join", "member event: {member}");

    // Search: by display name and by user ID, only people one may find.
    ensure!(search(&bob, "governor").await? == [alice.me().to_owned()], "search by display name");
    ensure!(search(&bob, "ALICE").await? == [alice.me().to_owned()], "search is case-insensitive on the ID");
    ensure!(search(&bob, "carol").await?.is_empty(), "carol shares no room with bob yet");

    // Someone in a public room can be found by anyone.
    let public = carol.create_room(&json!({ "preset": "public_chat", "visibility": "public" })).await?;
    ensure!(search(&bob, "carol").await? == [carol.me().to_owned()], "carol in a public room");
    let _ = public;

    // Removing the display name falls back to none in the profile.
    let r = alice.request(reqwest::Method::DELETE, &path, None).await?;
    ensure!(r.status == 200, "delete displayname: {} {}", r.status, r.text);
    let profile: Value = bob.get(&format!("/_matrix/client/v3/profile/{}", enc(alice.me()))).await?.ok()?;
    ensure!(profile.get("displayname").is_none(), "displayname after delete: {profile}");
    Ok(())
}
