//! Two users chat in a room with a name, a topic and power levels; joins, invites, leaves,
//! kicks and bans obey the power levels and the join rules.

use anyhow::{Context as _, ensure};
use kairan_tests::{
    Backend, PASSWORD, ServerOptions, TestServer, assert_matrix_error, assert_matrix_error_in, assert_sdk_error,
    assert_sdk_error_in, enc,
};
use matrix_sdk::{
    RoomState,
    ruma::{
        api::client::room::create_room::v3::{Request as CreateRoomRequest, RoomPreset},
        events::room::message::RoomMessageEventContent,
    },
};
use serde_json::json;

use crate::support::{raw, room_state, sync_until, sync_until_event, user_id};

both_backends!(scenario);

async fn scenario(backend: Backend) -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().backend(backend)).await?;
    server.create_users(&["alice", "bob", "carol", "dave"]).await?;
    let [alice_id, bob_id, carol_id, dave_id] = ["alice", "bob", "carol", "dave"].map(|n| server.user_id(n));

    let alice = server.client("alice", PASSWORD).await?;
    let bob = server.client("bob", PASSWORD).await?;
    // Alice's second device, for exact state reads; Carol and Dave act through raw HTTP so
    // that every refusal is the server's own (matrix-sdk refuses some calls locally).
    let alice_api = server.api("alice", PASSWORD).await?;
    let carol = server.api("carol", PASSWORD).await?;
    let dave = server.api("dave", PASSWORD).await?;

    // Alice creates an invite-only room with a name, a topic and power levels. The creator
    // is not named in `users`, so that this holds for every room version (in v12 creators
    // must not appear there).
    let mut request = CreateRoomRequest::new();
    request.name = Some("Council".to_owned());
    request.topic = Some("Budget 2027".to_owned());
    request.preset = Some(RoomPreset::PrivateChat);
    request.power_level_content_override = Some(raw(json!({
        "invite": 0, "kick": 50, "ban": 50, "redact": 50, "state_default": 50, "events_default": 0,
    }))?);
    let room = alice.create_room(request).await.context("alice creates the room")?;
    let room_id = room.room_id().to_owned();
    let rid = room_id.as_str();

    ensure!(alice_api.state(rid, "m.room.name", "").await?["name"] == "Council");
    ensure!(alice_api.state(rid, "m.room.topic", "").await?["topic"] == "Budget 2027");
    ensure!(alice_api.state(rid, "m.room.join_rules", "").await?["join_rule"] == "invite");
    let power = alice_api.state(rid, "m.room.power_levels", "").await?;
    ensure!(power["kick"] == 50 && power["ban"] == 50 && power["invite"] == 0, "power levels: {power}");

    // Carol was not invited: she cannot join an invite-only room.
    assert_matrix_error(&carol.join(rid).await?, 403, "M_FORBIDDEN").context("uninvited join")?;

    // Alice invites Bob; Bob sees the invite, accepts it, and sees the name and topic.
    room.invite_user_by_id(&user_id(&bob_id)?).await.context("alice invites bob")?;
    sync_until(&bob, "bob's invite", |c| room_state(c, &room_id) == Some(RoomState::Invited)).await?;
    bob.get_room(&room_id).context("bob knows the room")?.join().await.context("bob joins")?;
    sync_until(&bob, "name and topic on bob's side", |c| {
        c.get_room(&room_id).is_some_and(|r| {
            r.state() == RoomState::Joined
                && r.name().as_deref() == Some("Council")
                && r.topic().as_deref() == Some("Budget 2027")
        })
    })
    .await?;
    let bob_room = bob.get_room(&room_id).context("bob's room")?;

    // They chat.
    let hello = room.send(RoomMessageEventContent::text_plain("Hello Bob")).await?.response.event_id;
    let seen =
        sync_until_event(&bob, &room_id, "alice's message on bob's side", |e| e["event_id"] == hello.as_str()).await?;
    ensure!(seen["sender"] == alice_id && seen["type"] == "m.room.message", "{seen}");
    ensure!(seen["content"]["body"] == "Hello Bob" && seen["content"]["msgtype"] == "m.text", "{seen}");

    let reply = bob_room.send(RoomMessageEventContent::text_plain("Hello Alice")).await?.response.event_id;
    let seen =
        sync_until_event(&alice, &room_id, "bob's reply on alice's side", |e| e["event_id"] == reply.as_str()).await?;
    ensure!(seen["sender"] == bob_id && seen["content"]["body"] == "Hello Alice", "{seen}");
    ensure!(alice_api.joined_members(rid).await? == sorted([&alice_id, &bob_id]));

    // Bob (power 0) may invite (invite: 0) but not kick, ban or change the name (50).
    let alice_uid = user_id(&alice_id)?;
    let carol_uid = user_id(&carol_id)?;
    assert_sdk_error(bob_room.kick_user(&alice_uid, None).await, 403, "M_FORBIDDEN").context("bob kicks alice")?;
    assert_sdk_error(bob_room.set_name("Bob's room".to_owned()).await, 403, "M_FORBIDDEN").context("bob renames")?;
    bob_room.invite_user_by_id(&carol_uid).await.context("bob invites carol")?;
    carol.join(rid).await?.ok().context("carol joins after bob's invite")?;
    assert_sdk_error(bob_room.kick_user(&carol_uid, None).await, 403, "M_FORBIDDEN").context("bob (0) kicks carol")?;
    assert_sdk_error(bob_room.ban_user(&carol_uid, None).await, 403, "M_FORBIDDEN").context("bob (0) bans carol")?;
    ensure!(alice_api.state(rid, "m.room.name", "").await?["name"] == "Council", "the name changed");

    // Alice raises Bob to 50: now he can kick Carol, but still not Alice.
    let mut power = alice_api.state(rid, "m.room.power_levels", "").await?;
    power["users"][&bob_id] = json!(50);
    alice_api
        .put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(rid)), &power)
        .await?
        .ok()
        .context("alice raises bob to 50")?;
    bob_room.kick_user(&carol_uid, Some("off topic")).await.context("bob (50) kicks carol")?;
    let carol_member = alice_api.state(rid, "m.room.member", &carol_id).await?;
    ensure!(carol_member["membership"] == "leave", "carol after the kick: {carol_member}");
    assert_matrix_error(&carol.send_text(rid, "c1", "still here?").await?, 403, "M_FORBIDDEN")
        .context("kicked carol sends")?;
    assert_matrix_error(&carol.join(rid).await?, 403, "M_FORBIDDEN").context("kicked carol rejoins")?;
    assert_sdk_error(bob_room.kick_user(&alice_uid, None).await, 403, "M_FORBIDDEN").context("bob (50) kicks alice")?;
    assert_sdk_error(bob_room.ban_user(&alice_uid, None).await, 403, "M_FORBIDDEN").context("bob (50) bans alice")?;

    // Dave joins on an invite and is banned: he cannot rejoin, send, or be invited again.
    let dave_uid = user_id(&dave_id)?;
    room.invite_user_by_id(&dave_uid).await.context("alice invites dave")?;
    dave.join(rid).await?.ok().context("dave joins")?;
    dave.send_text_ok(rid, "d1", "hi all").await.context("dave speaks while joined")?;
    room.ban_user(&dave_uid, Some("spam")).await.context("alice bans dave")?;
    let dave_member = alice_api.state(rid, "m.room.member", &dave_id).await?;
    ensure!(dave_member["membership"] == "ban", "dave after the ban: {dave_member}");
    // For a banned user's join or invite the spec asks for 403 with "a meaningful errcode":
    // M_FORBIDDEN (an auth-rule rejection) or M_BAD_STATE (Synapse's choice).
    let banned = ["M_FORBIDDEN", "M_BAD_STATE"];
    assert_matrix_error_in(&dave.join(rid).await?, 403, &banned).context("banned dave rejoins")?;
    assert_matrix_error(&dave.send_text(rid, "d2", "let me in").await?, 403, "M_FORBIDDEN")
        .context("banned dave sends")?;
    assert_sdk_error_in(room.invite_user_by_id(&dave_uid).await, 403, &banned).context("inviting banned dave")?;

    // Bob leaves: he can no longer send, and cannot come back uninvited.
    bob_room.leave().await.context("bob leaves")?;
    let bob_api = server.api("bob", PASSWORD).await?;
    assert_matrix_error(&bob_api.send_text(rid, "b1", "one more thing").await?, 403, "M_FORBIDDEN")
        .context("bob sends after leaving")?;
    assert_matrix_error(&bob_api.join(rid).await?, 403, "M_FORBIDDEN").context("bob rejoins uninvited")?;

    let members = alice_api.joined_members(rid).await?;
    ensure!(members == sorted([&alice_id]), "joined members at the end: {members:?}");
    Ok(())
}

fn sorted<const N: usize>(ids: [&String; N]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| (*s).clone()).collect();
    ids.sort();
    ids
}
