//! Rules a client cannot get past, whichever endpoint it takes: redactions sent as plain
//! events, registration tokens spent across UIA sessions, name availability while
//! registration is closed, and client-chosen offsets in directory paging.
//!
//! Each of these was a hole (issue 14): the redaction rule ran only in the `/redact`
//! handler, the token stage counted before the request was checked, `register/available`
//! answered `true` with registration closed, and a huge `since` overflowed.

use anyhow::{Context as _, ensure};
use kairan_tests::{Api, PASSWORD, ServerOptions, TestServer, assert_matrix_error, enc};
use serde_json::{Value, json};

const V1: &str = "/_kairan/admin/v1";

async fn redaction_via_send(api: &Api, room: &str, txn: &str, target: &str) -> anyhow::Result<kairan_tests::Response> {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.redaction/{}", enc(room), enc(txn));
    api.put(&path, &json!({ "redacts": target, "reason": "test" })).await
}

async fn content_of(api: &Api, room: &str, event_id: &str) -> anyhow::Result<Value> {
    let event = api.event(room, event_id).await?.ok()?;
    Ok(event["content"].clone())
}

/// A member with power 0 redacts nobody else's events, by `/redact` or by sending an
/// `m.room.redaction` through `/send`; their own they may; the room's moderators may
/// redact anyone's. The server ACL and the room policy are never redacted by a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn powerless_members_cannot_redact_others() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    for version in ["10", "11", "12"] {
        let room = alice.create_room(&json!({ "preset": "public_chat", "room_version": version })).await?;
        bob.join(&room).await?.ok()?;
        let message = alice.send_text_ok(&room, &format!("a-{version}"), "the governor's word").await?;
        let topic = alice
            .put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room)), &json!({ "topic": "budget" }))
            .await?
            .ok()?["event_id"]
            .as_str()
            .context("topic event id")?
            .to_owned();
        let acl = alice
            .put(
                &format!("/_matrix/client/v3/rooms/{}/state/m.room.server_acl/", enc(&room)),
                &json!({ "allow": ["*"], "deny": [], "allow_ip_literals": false }),
            )
            .await?
            .ok()?["event_id"]
            .as_str()
            .context("acl event id")?
            .to_owned();

        for (i, target) in [&message, &topic].into_iter().enumerate() {
            let sent = redaction_via_send(&bob, &room, &format!("b-{version}-{i}"), target).await?;
            assert_matrix_error(&sent, 403, "M_FORBIDDEN").with_context(|| format!("v{version} /send redaction"))?;
            let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r-{version}-{i}", enc(&room), enc(target));
            let redacted = bob.put(&path, &json!({})).await?;
            assert_matrix_error(&redacted, 403, "M_FORBIDDEN").with_context(|| format!("v{version} /redact"))?;
        }
        ensure!(content_of(&alice, &room, &message).await?["body"] == "the governor's word", "v{version}: message");
        ensure!(content_of(&alice, &room, &topic).await?["topic"] == "budget", "v{version}: topic");
        // An event that does not exist cannot be redacted by one without the power.
        let unknown = redaction_via_send(&bob, &room, &format!("u-{version}"), "$nonexistent").await?;
        assert_matrix_error(&unknown, 404, "M_NOT_FOUND")?;

        // Even the room's creator does not redact the server ACL.
        let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/acl-{version}", enc(&room), enc(&acl));
        assert_matrix_error(&alice.put(&path, &json!({})).await?, 403, "M_FORBIDDEN")?;

        // One's own message, yes; and a moderator redacts anyone's.
        let own = bob.send_text_ok(&room, &format!("own-{version}"), "mine").await?;
        redaction_via_send(&bob, &room, &format!("own-r-{version}"), &own).await?.ok()?;
        let own_content = content_of(&bob, &room, &own).await?;
        ensure!(own_content.as_object().is_some_and(|c| c.is_empty()), "v{version}: own message not redacted");
        let bobs = bob.send_text_ok(&room, &format!("bob-{version}"), "to be moderated").await?;
        redaction_via_send(&alice, &room, &format!("mod-{version}"), &bobs).await?.ok()?;
        ensure!(
            content_of(&alice, &room, &bobs).await?.as_object().is_some_and(|c| c.is_empty()),
            "v{version}: moderator's redaction not applied"
        );
    }
    Ok(())
}

/// One `POST /register` attempt; `auth` is the UIA object or nothing.
async fn register(server: &TestServer, username: &str, password: Option<&str>, auth: Value) -> anyhow::Result<u16> {
    let mut body = json!({ "username": username, "auth": auth, "inhibit_login": true });
    if let Some(p) = password {
        body["password"] = p.into();
    }
    Ok(server.anonymous().post("/_matrix/client/v3/register", &body).await?.status)
}

/// A single-use registration token makes one account, whichever way the UIA sessions are
/// driven: passing the token stage in a request that fails later, then completing the
/// session with another stage, used to make an account per session without counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_makes_one_account() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_user("admin", PASSWORD, true).await?;
    let admin = server.api("admin", PASSWORD).await?;
    admin.put(&format!("{V1}/policy/registration"), &json!({ "mode": "token" })).await?.ok()?;
    let created = admin.post(&format!("{V1}/registration_tokens"), &json!({ "uses_allowed": 1 })).await?.ok()?;
    let token = created["token"].as_str().context("token")?.to_owned();

    let mut made = Vec::new();
    for i in 0..3 {
        let name = format!("clerk{i}");
        let session = format!("session-{i}");
        let token_stage = json!({ "type": "m.login.registration_token", "token": token, "session": session });
        // The token stage in a request that cannot succeed (no password)...
        let first = register(&server, &name, None, token_stage).await?;
        ensure!(first >= 400, "a registration without password got {first}");
        // ...then the same session finished with a stage that costs nothing.
        let second =
            register(&server, &name, Some(PASSWORD), json!({ "type": "m.login.dummy", "session": session })).await?;
        if second == 200 {
            made.push(name);
        }
    }
    // The token itself, twice: one account at most in all.
    for i in 0..2 {
        let auth = json!({ "type": "m.login.registration_token", "token": token });
        if register(&server, &format!("direct{i}"), Some(PASSWORD), auth).await? == 200 {
            made.push(format!("direct{i}"));
        }
    }
    ensure!(made.len() == 1, "a single-use token made {} accounts: {made:?}", made.len());
    let list = admin.get(&format!("{V1}/registration_tokens")).await?.ok()?;
    let row = list["tokens"].as_array().and_then(|t| t.first()).context("token listed")?;
    ensure!(row["completed"] == 1 && row["valid"] == false, "token after use: {row}");
    Ok(())
}

/// While registration is closed no name is "available": the answer is 403, as Synapse's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_availability_is_refused_while_registration_is_closed() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    let asked = server.anonymous().get("/_matrix/client/v3/register/available?username=newclerk").await?;
    assert_matrix_error(&asked, 403, "M_FORBIDDEN")?;
    let open = TestServer::start(ServerOptions::default().registration_tokens(["t"])).await?;
    let asked = open.anonymous().get("/_matrix/client/v3/register/available?username=newclerk").await?.ok()?;
    ensure!(asked["available"] == true, "{asked}");
    Ok(())
}

/// Offsets the client chooses (`since`, `from`) of any size page to nothing, never to a
/// server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_paging_offsets_are_harmless() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "public_chat", "visibility": "public" })).await?;
    let huge = u64::MAX.to_string();
    let public = alice.get(&format!("/_matrix/client/v3/publicRooms?limit=10&since={huge}")).await?;
    ensure!(public.status == 200, "GET publicRooms: {} {}", public.status, public.text);
    let searched =
        alice.post("/_matrix/client/v3/publicRooms", &json!({ "limit": 10, "since": huge, "filter": {} })).await?;
    ensure!(searched.status == 200, "POST publicRooms: {} {}", searched.status, searched.text);
    let hierarchy =
        alice.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy?limit=10&from={huge}", enc(&room))).await?;
    ensure!(hierarchy.status == 200, "hierarchy: {} {}", hierarchy.status, hierarchy.text);
    ensure!(hierarchy.ok()?["rooms"].as_array().is_some_and(Vec::is_empty), "a page past the end is empty");
    Ok(())
}

/// `PUT /rooms/{room}/send/m.room.message/{txn}` of a thread reply to `root`.
async fn thread_reply(api: &Api, room: &str, txn: &str, root: &str, body: &str) -> anyhow::Result<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room), enc(txn));
    let content = json!({
        "msgtype": "m.text", "body": body,
        "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true, "m.in_reply_to": { "event_id": root } },
    });
    Ok(api.put(&path, &content).await?.ok()?["event_id"].as_str().context("event id")?.to_owned())
}

/// Bundled relations are filtered as the events themselves: a user who left does not read
/// replies sent after through an old event, and an event of another room naming a root
/// is no reply to it, even for a reader of both rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_relations_respect_visibility_and_rooms() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob", "mallory"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let mallory = server.api("mallory", PASSWORD).await?;
    let room = alice
        .create_room(&json!({ "preset": "public_chat", "initial_state": [
            { "type": "m.room.history_visibility", "content": { "history_visibility": "shared" } }] }))
        .await?;
    bob.join(&room).await?.ok()?;
    let root = alice.send_text_ok(&room, "root", "agenda").await?;
    let before = thread_reply(&alice, &room, "t1", &root, "item one").await?;
    bob.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), &json!({})).await?.ok()?;
    thread_reply(&alice, &room, "t2", &root, "said after bob left").await?;
    let seen = bob.event(&room, &root).await?.ok()?;
    let thread = &seen["unsigned"]["m.relations"]["m.thread"];
    ensure!(thread["latest_event"]["event_id"] == before.as_str(), "bob, who left, is shown: {thread}");
    ensure!(thread["count"] == 1, "bob is counted replies he cannot read: {thread}");

    // Another room, whose members include the reader, cannot add replies to this root.
    let other = mallory.create_room(&json!({ "preset": "public_chat" })).await?;
    alice.join(&other).await?.ok()?;
    thread_reply(&mallory, &other, "inject", &root, "injected into the governor's thread").await?;
    let seen = alice.event(&room, &root).await?.ok()?;
    let thread = &seen["unsigned"]["m.relations"]["m.thread"];
    ensure!(thread["count"] == 2, "replies from another room counted: {thread}");
    ensure!(thread["latest_event"]["room_id"] == room.as_str(), "latest reply from another room: {thread}");
    let listed = alice.get(&format!("/_matrix/client/v1/rooms/{}/relations/{}", enc(&room), enc(&root))).await?.ok()?;
    let chunk = listed["chunk"].as_array().context("chunk")?;
    ensure!(chunk.len() == 2 && chunk.iter().all(|e| e["room_id"] == room.as_str()), "relations: {listed}");
    Ok(())
}

/// A first `/register` without `auth` (and without anything else: matrix-rust-sdk opens
/// with `{}`) is told the flows, 401 with a session, as the spec's user-interactive
/// authentication has it; it used to be 400 "password is required", so that client could
/// never register.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_registration_request_learns_the_flows() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().registration_tokens(["open-sesame"])).await?;
    for body in [json!({}), json!({ "username": "clerk" })] {
        let answer = server.anonymous().post("/_matrix/client/v3/register", &body).await?;
        ensure!(answer.status == 401, "{body}: {} {}", answer.status, answer.text);
        ensure!(answer.body["session"].is_string(), "{body}: no session in {}", answer.text);
        let flows = answer.body["flows"].as_array().cloned().unwrap_or_default();
        ensure!(
            flows.iter().any(|f| f["stages"] == json!(["m.login.registration_token"])),
            "{body}: flows {}",
            answer.text
        );
    }
    Ok(())
}
