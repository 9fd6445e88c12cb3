//! Rooms of versions 10, 11 and 12: the create event, the room ID format, the creator's power,
//! redaction (where `redacts` lives), and power checks for users without power.

use anyhow::{Context as _, ensure};
use kairan_tests::{PASSWORD, ServerOptions, TestServer, assert_matrix_error, enc};
use serde_json::json;

use crate::support::{put_state, state_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v10() -> anyhow::Result<()> {
    scenario("10").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v11() -> anyhow::Result<()> {
    scenario("11").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v12() -> anyhow::Result<()> {
    scenario("12").await
}

async fn scenario(version: &str) -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob", "carol"]).await?;
    let alice_id = server.user_id("alice");
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let carol = server.api("carol", PASSWORD).await?;
    let v12 = version == "12";

    let room = alice
        .create_room(&json!({ "preset": "public_chat", "name": "Versioned", "room_version": version }))
        .await
        .with_context(|| format!("creating a v{version} room"))?;
    let r = enc(&room);

    // The create event names the version; the room ID has the version's format.
    let state = alice.get(&format!("/_matrix/client/v3/rooms/{r}/state")).await?.ok().context("GET /state")?;
    let create = state_event(&state, "m.room.create", "")?;
    ensure!(create["content"]["room_version"] == version, "m.room.create: {create}");
    ensure!(create["sender"] == alice_id.as_str(), "m.room.create: {create}");
    if version == "10" {
        // Up to v10 the create event names the creator in its content.
        ensure!(create["content"]["creator"] == alice_id.as_str(), "v10 m.room.create without creator: {create}");
    }
    if v12 {
        // v12: the room ID is the create event's reference hash, with no server name.
        ensure!(!room.contains(':'), "v12 room ID with a server part: {room}");
        let create_id = create["event_id"].as_str().context("create event without event_id")?;
        ensure!(room.strip_prefix('!') == create_id.strip_prefix('$'), "v12 room {room} vs create event {create_id}");
    } else {
        ensure!(room.starts_with('!') && room.ends_with(&format!(":{}", server.server_name())), "room ID {room}");
    }

    // v12 creators have infinite power and must not be listed in `users`; before, the creator
    // is listed with 100.
    let power = alice.state(&room, "m.room.power_levels", "").await?;
    let listed = &power["users"][&alice_id];
    if v12 {
        ensure!(listed.is_null(), "v12 power levels list the creator: {power}");
    } else {
        ensure!(*listed == json!(100), "the creator's power level: {power}");
    }
    put_state(&alice, &room, "m.room.name", "", &json!({ "name": "Renamed" }))
        .await?
        .ok()
        .context("creator renames")?;
    ensure!(alice.state(&room, "m.room.name", "").await?["name"] == "Renamed");

    // Bob joins the public room and writes; Alice redacts it.
    bob.join(&room).await?.ok().context("bob joins")?;
    carol.join(&room).await?.ok().context("carol joins")?;
    let message = bob.send_text_ok(&room, "m1", "regrettable").await?;
    let redaction = alice
        .put(
            &format!("/_matrix/client/v3/rooms/{r}/redact/{}/{}", enc(&message), "red1"),
            &json!({ "reason": "off topic" }),
        )
        .await?
        .ok()
        .context("the creator redacts bob's message")?;
    let redaction_id = redaction["event_id"].as_str().context("redact without event_id")?;

    let redacted = bob.event(&room, &message).await?.ok().context("GET the redacted event")?;
    ensure!(redacted["content"] == json!({}), "redacted message still has content: {redacted}");
    ensure!(redacted["unsigned"]["redacted_because"]["event_id"] == redaction_id, "{redacted}");
    let event = bob.event(&room, redaction_id).await?.ok().context("GET the redaction")?;
    ensure!(event["type"] == "m.room.redaction" && event["content"]["reason"] == "off topic", "{event}");
    if version == "10" {
        ensure!(event["redacts"] == message.as_str(), "v10 redaction without top-level redacts: {event}");
    } else {
        // From v11 on, `redacts` is a content property.
        ensure!(
            event["content"]["redacts"] == message.as_str(),
            "v{version} redaction, redacts not in content: {event}"
        );
    }

    // Carol has no power: no renaming, kicking, or redacting others' events.
    let rename = put_state(&carol, &room, "m.room.name", "", &json!({ "name": "Carol's" })).await?;
    assert_matrix_error(&rename, 403, "M_FORBIDDEN").context("carol renames")?;
    let kick = carol
        .post(&format!("/_matrix/client/v3/rooms/{r}/kick"), &json!({ "user_id": bob.me(), "reason": "x" }))
        .await?;
    assert_matrix_error(&kick, 403, "M_FORBIDDEN").context("carol kicks bob")?;
    let other = alice.send_text_ok(&room, "m2", "alice speaks").await?;
    let redact =
        carol.put(&format!("/_matrix/client/v3/rooms/{r}/redact/{}/{}", enc(&other), "red2"), &json!({})).await?;
    ensure!(alice.state(&room, "m.room.name", "").await?["name"] == "Renamed", "the name changed");
    let members = alice.joined_members(&room).await?;
    ensure!(members.len() == 3, "members after the refused kick: {members:?}");
    let kept = alice.event(&room, &other).await?.ok()?;
    ensure!(kept["content"]["body"] == "alice speaks", "carol's redaction was applied: {kept}");
    assert_matrix_error(&redact, 403, "M_FORBIDDEN").context("carol redacts alice's message")?;

    // The creator can kick in every version (v12: by virtue of being the creator).
    alice
        .post(&format!("/_matrix/client/v3/rooms/{r}/kick"), &json!({ "user_id": carol.me() }))
        .await?
        .ok()
        .context("the creator kicks carol")?;
    ensure!(alice.state(&room, "m.room.member", carol.me()).await?["membership"] == "leave");
    Ok(())
}
