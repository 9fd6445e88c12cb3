//! Message search, the space hierarchy, TURN and sliding sync discovery.

use anyhow::{Context as _, ensure};
use kairan_tests::{PASSWORD, ServerOptions, TestServer, enc};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_spaces_and_turn() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;

    // Search: case-insensitive, newest first, only in rooms the searcher is in.
    let room = alice.create_room(&json!({ "preset": "private_chat", "name": "Finance" })).await?;
    let first = alice.send_text_ok(&room, "s1", "Budget meeting at 10").await?;
    alice.send_text_ok(&room, "s2", "lunch?").await?;
    let second = alice.send_text_ok(&room, "s3", "the BUDGET is approved").await?;
    let query = json!({ "search_categories": { "room_events": { "search_term": "budget" } } });
    let found = alice.post("/_matrix/client/v3/search", &query).await?.ok()?;
    let results = found["search_categories"]["room_events"]["results"].as_array().context("no results")?;
    let ids: Vec<&str> = results.iter().filter_map(|r| r["result"]["event_id"].as_str()).collect();
    ensure!(ids == [second.as_str(), first.as_str()], "search results: {found}");
    let outsider = bob.post("/_matrix/client/v3/search", &query).await?.ok()?;
    ensure!(
        outsider["search_categories"]["room_events"]["results"].as_array().is_some_and(|r| r.is_empty()),
        "bob sees messages of a room he is not in: {outsider}"
    );
    let limited =
        json!({ "search_categories": { "room_events": { "search_term": "budget", "filter": { "limit": 1 } } } });
    let page = alice.post("/_matrix/client/v3/search", &limited).await?.ok()?;
    let next = page["search_categories"]["room_events"]["next_batch"].as_str().context("no next_batch with limit 1")?;
    let rest = alice.post(&format!("/_matrix/client/v3/search?next_batch={}", enc(next)), &limited).await?.ok()?;
    ensure!(
        rest["search_categories"]["room_events"]["results"][0]["result"]["event_id"] == first.as_str(),
        "page 2: {rest}"
    );

    // A space with one child room.
    let space = alice
        .create_room(
            &json!({ "preset": "public_chat", "name": "Prefecture", "creation_content": { "type": "m.space" } }),
        )
        .await?;
    let child = alice.create_room(&json!({ "preset": "public_chat", "name": "Mayors" })).await?;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(&space), enc(&child));
    alice.put(&path, &json!({ "via": ["localhost"], "suggested": true })).await?.ok()?;
    let tree = bob.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space))).await?.ok()?;
    let rooms = tree["rooms"].as_array().context("no rooms")?;
    ensure!(rooms.len() == 2, "hierarchy: {tree}");
    ensure!(rooms[0]["room_id"] == space.as_str() && rooms[0]["room_type"] == "m.space", "space first: {tree}");
    ensure!(rooms[0]["children_state"][0]["state_key"] == child.as_str(), "child listed: {tree}");
    ensure!(rooms[1]["room_id"] == child.as_str() && rooms[1]["name"] == "Mayors", "child room: {tree}");

    // Element X uses sliding sync only when the server advertises it.
    let versions = alice.get("/_matrix/client/versions").await?.ok()?;
    ensure!(versions["unstable_features"]["org.matrix.simplified_msc3575"] == true, "versions: {versions}");

    let turn = alice.get("/_matrix/client/v3/voip/turnServer").await?;
    ensure!(turn.status == 200, "turnServer: {} {}", turn.status, turn.text);
    Ok(())
}
