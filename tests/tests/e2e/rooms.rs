//! Room endpoints around the timeline: aliases, the public directory, state, members,
//! context, forgetting, filters, and the options of `createRoom`.

use std::collections::BTreeMap;

use anyhow::{Context as _, ensure};
use kairan_tests::{Api, PASSWORD, ServerOptions, TestServer, assert_matrix_error, assert_matrix_error_in, enc};
use serde_json::{Value, json};

use crate::support::{ids, next_batch, put_state, state_event, sync_raw_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob", "carol"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let carol = server.api("carol", PASSWORD).await?;
    let lobby = format!("#lobby:{}", server.server_name());
    let second = format!("#lobby-two:{}", server.server_name());
    let directory = |alias: &str| format!("/_matrix/client/v3/directory/room/{}", enc(alias));

    let room = alice.create_room(&json!({ "preset": "public_chat", "room_alias_name": "lobby" })).await?;
    let canonical = alice.state(&room, "m.room.canonical_alias", "").await?;
    ensure!(canonical["alias"] == lobby.as_str(), "m.room.canonical_alias after createRoom: {canonical}");

    // The alias resolves, for anyone (the endpoint needs no access token).
    for (who, api) in [("bob", bob.clone()), ("anonymous", server.anonymous())] {
        let resolved = api.get(&directory(&lobby)).await?.ok().with_context(|| format!("{who} resolves"))?;
        ensure!(resolved["room_id"] == room.as_str(), "{who}: {resolved}");
        let servers = resolved["servers"].as_array().with_context(|| format!("no servers: {resolved}"))?;
        ensure!(servers.contains(&json!(server.server_name())), "{who}: {resolved}");
    }

    // Joining by alias.
    let joined = bob.post(&format!("/_matrix/client/v3/join/{}", enc(&lobby)), &json!({})).await?.ok()?;
    ensure!(joined["room_id"] == room.as_str(), "join by alias: {joined}");
    ensure!(alice.joined_members(&room).await?.contains(&bob.me().to_owned()), "bob is not a member");

    // A second alias; the room lists both.
    alice.put(&directory(&second), &json!({ "room_id": room })).await?.ok().context("PUT a second alias")?;
    let listed = alice.get(&format!("/_matrix/client/v3/rooms/{}/aliases", enc(&room))).await?.ok()?;
    let mut both = vec![lobby.clone(), second.clone()];
    both.sort();
    ensure!(sorted_strings(&listed["aliases"]) == both, "room aliases: {listed}");
    let taken = alice.put(&directory(&second), &json!({ "room_id": room })).await?;
    assert_matrix_error(&taken, 409, "M_UNKNOWN").context("PUT an existing alias")?;
    let in_use = alice.post("/_matrix/client/v3/createRoom", &json!({ "room_alias_name": "lobby" })).await?;
    assert_matrix_error(&in_use, 400, "M_ROOM_IN_USE").context("createRoom with a taken alias")?;

    // Only the alias's creator (or an administrator) may delete it.
    for (who, api) in [("bob", &bob), ("carol", &carol)] {
        assert_matrix_error(&api.delete(&directory(&second), &json!({})).await?, 403, "M_FORBIDDEN")
            .with_context(|| format!("{who} deletes alice's alias"))?;
    }
    alice.delete(&directory(&second), &json!({})).await?.ok().context("alice deletes her alias")?;
    assert_matrix_error(&bob.get(&directory(&second)).await?, 404, "M_NOT_FOUND").context("deleted alias")?;
    assert_matrix_error(&alice.delete(&directory(&second), &json!({})).await?, 404, "M_NOT_FOUND")
        .context("deleting it again")?;
    let listed = alice.get(&format!("/_matrix/client/v3/rooms/{}/aliases", enc(&room))).await?.ok()?;
    ensure!(sorted_strings(&listed["aliases"]) == [lobby.clone()], "room aliases after the deletion: {listed}");
    let resolved = bob.get(&directory(&lobby)).await?.ok().context("the first alias still resolves")?;
    ensure!(resolved["room_id"] == room.as_str(), "{resolved}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_directory() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let anonymous = server.anonymous();

    let public = alice
        .create_room(&json!({
            "preset": "public_chat", "visibility": "public", "room_alias_name": "garden",
            "name": "Garden club", "topic": "Tomatoes and beans",
        }))
        .await?;
    let private = alice.create_room(&json!({ "preset": "private_chat", "name": "Secret garden" })).await?;

    // GET /publicRooms needs no access token.
    let listed = anonymous.get("/_matrix/client/v3/publicRooms").await?.ok().context("GET /publicRooms")?;
    let chunk = listed["chunk"].as_array().with_context(|| format!("no chunk: {listed}"))?;
    ensure!(room_ids(chunk) == [public.clone()], "listed rooms: {listed}");
    let entry = &chunk[0];
    let alias = format!("#garden:{}", server.server_name());
    ensure!(entry["name"] == "Garden club" && entry["topic"] == "Tomatoes and beans", "{entry}");
    ensure!(entry["canonical_alias"] == alias.as_str() && entry["join_rule"] == "public", "{entry}");
    ensure!(entry["num_joined_members"] == 1, "{entry}");
    ensure!(entry["world_readable"] == false && entry["guest_can_join"] == false, "{entry}");

    // POST /publicRooms with a search term matches name and topic, case-insensitively;
    // the private "Secret garden" is not listed at all.
    for (term, expected) in [("tomatoes", vec![public.clone()]), ("GARDEN", vec![public.clone()]), ("zzz", vec![])] {
        let found = search(&alice, term).await?;
        ensure!(found == expected, "search {term:?}: {found:?}");
    }

    let visibility = |room: &str| format!("/_matrix/client/v3/directory/list/room/{}", enc(room));
    ensure!(anonymous.get(&visibility(&public)).await?.ok()?["visibility"] == "public");
    ensure!(anonymous.get(&visibility(&private)).await?.ok()?["visibility"] == "private");

    // Bob is not in the room: he cannot unlist it.
    let refused = bob.put(&visibility(&public), &json!({ "visibility": "private" })).await?;
    assert_matrix_error(&refused, 403, "M_FORBIDDEN").context("bob unlists alice's room")?;

    // The creator lists the private room: both are listed, and paging works.
    alice.put(&visibility(&private), &json!({ "visibility": "public" })).await?.ok().context("list")?;
    ensure!(anonymous.get(&visibility(&private)).await?.ok()?["visibility"] == "public");
    let mut both = vec![public.clone(), private.clone()];
    both.sort();
    ensure!(listed_rooms(&anonymous).await? == both, "after listing the second room");
    let first = anonymous.get("/_matrix/client/v3/publicRooms?limit=1").await?.ok()?;
    let next = first["next_batch"].as_str().with_context(|| format!("one of two rooms, no next_batch: {first}"))?;
    let rest = anonymous.get(&format!("/_matrix/client/v3/publicRooms?limit=1&since={}", enc(next))).await?.ok()?;
    let mut paged = room_ids(first["chunk"].as_array().context("chunk")?);
    paged.extend(room_ids(rest["chunk"].as_array().context("chunk")?));
    paged.sort();
    ensure!(paged == both, "two pages of one: {first} then {rest}");
    ensure!(search(&alice, "secret").await? == [private.clone()], "search after listing");

    // And unlists the first one.
    alice.put(&visibility(&public), &json!({ "visibility": "private" })).await?.ok().context("unlist")?;
    ensure!(listed_rooms(&anonymous).await? == [private.clone()], "after unlisting the first room");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_endpoints() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob", "carol"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let carol = server.api("carol", PASSWORD).await?;
    let room =
        alice.create_room(&json!({ "preset": "public_chat", "name": "Stateful", "topic": "All about state" })).await?;
    let r = enc(&room);
    bob.join(&room).await?.ok().context("bob joins")?;

    let state = alice.get(&format!("/_matrix/client/v3/rooms/{r}/state")).await?.ok().context("GET /state")?;
    ensure!(state_event(&state, "m.room.create", "")?["sender"] == alice.me(), "{state}");
    ensure!(state_event(&state, "m.room.name", "")?["content"]["name"] == "Stateful", "{state}");
    ensure!(state_event(&state, "m.room.topic", "")?["content"]["topic"] == "All about state", "{state}");
    ensure!(state_event(&state, "m.room.member", alice.me())?["content"]["membership"] == "join", "{state}");
    ensure!(state_event(&state, "m.room.member", bob.me())?["content"]["membership"] == "join", "{state}");
    state_event(&state, "m.room.power_levels", "")?;
    state_event(&state, "m.room.join_rules", "")?;
    for event in state.as_array().context("state array")? {
        ensure!(event["event_id"].is_string() && event["state_key"].is_string(), "malformed state event {event}");
        ensure!(event["origin_server_ts"].is_u64() && event["sender"].is_string(), "malformed state event {event}");
    }

    // One state event by type and (empty) key: its content.
    let name = alice.get(&format!("/_matrix/client/v3/rooms/{r}/state/m.room.name/")).await?.ok()?;
    ensure!(name == json!({ "name": "Stateful" }), "GET state/m.room.name/: {name}");
    let nobody = enc(&server.user_id("nobody"));
    let absent = alice.get(&format!("/_matrix/client/v3/rooms/{r}/state/m.room.member/{nobody}")).await?;
    assert_matrix_error(&absent, 404, "M_NOT_FOUND").context("an absent state key")?;
    let absent = alice.get(&format!("/_matrix/client/v3/rooms/{r}/state/org.example.none/")).await?;
    assert_matrix_error(&absent, 404, "M_NOT_FOUND").context("an absent state type")?;

    // PUT state by the creator: a custom type with a key, and a new topic.
    let widget = json!({ "url": "https://example.org/widget", "n": 1 });
    let put = put_state(&alice, &room, "org.example.widget", "w1", &widget).await?.ok().context("PUT widget")?;
    let event_id = put["event_id"].as_str().context("PUT state without event_id")?;
    ensure!(alice.state(&room, "org.example.widget", "w1").await? == widget, "GET the widget");
    let state = alice.get(&format!("/_matrix/client/v3/rooms/{r}/state")).await?.ok()?;
    ensure!(state_event(&state, "org.example.widget", "w1")?["event_id"] == event_id, "{state}");
    put_state(&alice, &room, "m.room.topic", "", &json!({ "topic": "New topic" })).await?.ok().context("topic")?;
    ensure!(bob.state(&room, "m.room.topic", "").await?["topic"] == "New topic", "bob reads the new topic");

    // Bob (power 0) may not set state (state_default 50); Carol, not a member, may not read it.
    let refused = put_state(&bob, &room, "org.example.widget", "w2", &widget).await?;
    assert_matrix_error(&refused, 403, "M_FORBIDDEN").context("bob sets state")?;
    assert_matrix_error(&carol.get(&format!("/_matrix/client/v3/rooms/{r}/state")).await?, 403, "M_FORBIDDEN")
        .context("carol reads /state")?;
    let name = carol.get(&format!("/_matrix/client/v3/rooms/{r}/state/m.room.name/")).await?;
    assert_matrix_error(&name, 403, "M_FORBIDDEN").context("carol reads the name")?;

    // After leaving, Bob reads the state as it was when he left.
    bob.post(&format!("/_matrix/client/v3/rooms/{r}/leave"), &json!({})).await?.ok().context("bob leaves")?;
    put_state(&alice, &room, "m.room.topic", "", &json!({ "topic": "After bob left" })).await?.ok()?;
    ensure!(bob.state(&room, "m.room.topic", "").await?["topic"] == "New topic", "bob sees state after leaving");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob", "carol", "dave"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let carol = server.api("carol", PASSWORD).await?;
    let dave_id = server.user_id("dave");
    for (api, name) in [(&alice, "Alice Liddell"), (&bob, "Bob Builder")] {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(api.me()));
        api.put(&path, &json!({ "displayname": name })).await?.ok().context("set displayname")?;
    }

    let room = alice.create_room(&json!({ "preset": "public_chat" })).await?;
    let r = enc(&room);
    bob.join(&room).await?.ok()?;
    carol.join(&room).await?.ok()?;
    carol.post(&format!("/_matrix/client/v3/rooms/{r}/leave"), &json!({})).await?.ok().context("carol leaves")?;
    alice.post(&format!("/_matrix/client/v3/rooms/{r}/invite"), &json!({ "user_id": dave_id })).await?.ok()?;

    let members = |query: &'static str| {
        let alice = alice.clone();
        let path = format!("/_matrix/client/v3/rooms/{r}/members{query}");
        async move {
            let body = alice.get(&path).await?.ok().with_context(|| format!("GET {path}"))?;
            let chunk = body["chunk"].as_array().with_context(|| format!("no chunk: {body}"))?;
            let mut out = BTreeMap::new();
            for event in chunk {
                ensure!(event["type"] == "m.room.member", "not a member event: {event}");
                let user = event["state_key"].as_str().context("member event without state_key")?.to_owned();
                out.insert(user, event["content"]["membership"].as_str().unwrap_or("?").to_owned());
            }
            anyhow::Ok(out)
        }
    };
    let expect = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(u, m)| (u.to_string(), m.to_string())).collect()
    };
    let (a, b, c, d) = (alice.me(), bob.me(), carol.me(), dave_id.as_str());
    let all = members("").await?;
    ensure!(all == expect(&[(a, "join"), (b, "join"), (c, "leave"), (d, "invite")]), "all members: {all:?}");
    let joined = members("?membership=join").await?;
    ensure!(joined == expect(&[(a, "join"), (b, "join")]), "membership=join: {joined:?}");
    let not_left = members("?not_membership=leave").await?;
    ensure!(not_left == expect(&[(a, "join"), (b, "join"), (d, "invite")]), "not_membership=leave: {not_left:?}");
    let invited = members("?membership=invite").await?;
    ensure!(invited == expect(&[(d, "invite")]), "membership=invite: {invited:?}");

    let body = bob.get(&format!("/_matrix/client/v3/rooms/{r}/joined_members")).await?.ok()?;
    let joined = body["joined"].as_object().with_context(|| format!("no joined object: {body}"))?;
    let mut users: Vec<&str> = joined.keys().map(String::as_str).collect();
    users.sort();
    ensure!(users == [a, b], "joined_members: {body}");
    ensure!(joined[a]["display_name"] == "Alice Liddell" && joined[b]["display_name"] == "Bob Builder", "{body}");
    let refused = carol.get(&format!("/_matrix/client/v3/rooms/{r}/joined_members")).await?;
    assert_matrix_error(&refused, 403, "M_FORBIDDEN").context("joined_members after leaving")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "private_chat" })).await?;
    let r = enc(&room);
    let mut sent = Vec::new();
    for i in 0..9 {
        sent.push(alice.send_text_ok(&room, &format!("c{i}"), &format!("message {i}")).await?);
    }

    let body = alice.get(&format!("/_matrix/client/v3/rooms/{r}/context/{}?limit=4", enc(&sent[4]))).await?.ok()?;
    ensure!(body["event"]["event_id"] == sent[4].as_str(), "context event: {body}");
    let before = ids(body["events_before"].as_array().context("no events_before")?);
    let after = ids(body["events_after"].as_array().context("no events_after")?);
    // events_before is newest first, events_after oldest first; four in all.
    let all_before: Vec<String> = sent[..4].iter().rev().cloned().collect();
    let all_after: Vec<String> = sent[5..].to_vec();
    ensure!(before.len() + after.len() == 4 && !before.is_empty() && !after.is_empty(), "{before:?} {after:?}");
    ensure!(before == all_before[..before.len()], "events_before: {before:?}");
    ensure!(after == all_after[..after.len()], "events_after: {after:?}");
    let state = &body["state"];
    state_event(state, "m.room.create", "").context("context state")?;

    // `start` continues backwards before events_before, `end` forwards after events_after.
    let start = body["start"].as_str().context("context without start")?;
    let end = body["end"].as_str().context("context without end")?;
    let page =
        |dir: &str, from: &str| format!("/_matrix/client/v3/rooms/{r}/messages?dir={dir}&limit=2&from={}", enc(from));
    let older = alice.get(&page("b", start)).await?.ok()?;
    let older = ids(older["chunk"].as_array().context("chunk")?);
    ensure!(older == all_before[before.len()..before.len() + 2], "/messages from context start: {older:?}");
    let newer = alice.get(&page("f", end)).await?.ok()?;
    let newer = ids(newer["chunk"].as_array().context("chunk")?);
    let expected_newer: Vec<String> = all_after[after.len()..].iter().take(2).cloned().collect();
    ensure!(newer == expected_newer, "/messages from context end: {newer:?}");

    // limit=0 still returns the event itself.
    let zero = alice.get(&format!("/_matrix/client/v3/rooms/{r}/context/{}?limit=0", enc(&sent[4]))).await?.ok()?;
    ensure!(zero["event"]["event_id"] == sent[4].as_str(), "limit=0: {zero}");
    ensure!(zero["events_before"] == json!([]) && zero["events_after"] == json!([]), "limit=0: {zero}");
    let unknown = alice.get(&format!("/_matrix/client/v3/rooms/{r}/context/{}", enc("$nosuchevent"))).await?;
    assert_matrix_error(&unknown, 404, "M_NOT_FOUND").context("context of an unknown event")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let forgotten = alice.create_room(&json!({ "preset": "public_chat", "name": "Forgotten" })).await?;
    let remembered = alice.create_room(&json!({ "preset": "public_chat", "name": "Remembered" })).await?;
    for room in [&forgotten, &remembered] {
        bob.join(room).await?.ok()?;
    }
    let since = next_batch(&bob.sync(None, 0).await?)?;
    let forget = |room: &str| format!("/_matrix/client/v3/rooms/{}/forget", enc(room));

    // Not while joined. The spec gives 400 (its example errcode is M_UNKNOWN).
    let refused = bob.post(&forget(&forgotten), &json!({})).await?;
    assert_matrix_error_in(&refused, 400, &["M_UNKNOWN", "M_BAD_STATE"]).context("forget while joined")?;

    for room in [&forgotten, &remembered] {
        bob.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(room)), &json!({})).await?.ok()?;
    }
    bob.post(&forget(&forgotten), &json!({})).await?.ok().context("forget after leaving")?;

    // An incremental sync across the leaves shows only the room that was not forgotten.
    let sync = bob.sync(Some(&since), 0).await?;
    ensure!(sync["rooms"]["join"].get(&forgotten).is_none() && sync["rooms"]["join"].get(&remembered).is_none());
    ensure!(sync["rooms"]["leave"].get(&forgotten).is_none(), "forgotten room in rooms.leave: {sync}");
    ensure!(sync["rooms"]["leave"].get(&remembered).is_some(), "left room missing from rooms.leave: {sync}");

    // So does a fresh initial sync that asks for left rooms (`include_leave`).
    let filter = json!({ "room": { "include_leave": true } }).to_string();
    let path = format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc(&filter));
    let initial = bob.get(&path).await?.ok().context("initial sync with include_leave")?;
    for section in ["join", "invite"] {
        ensure!(initial["rooms"][section].get(&forgotten).is_none(), "forgotten room in rooms.{section}: {initial}");
    }
    ensure!(initial["rooms"]["leave"].get(&forgotten).is_none(), "forgotten room in rooms.leave: {initial}");
    ensure!(initial["rooms"]["leave"].get(&remembered).is_some(), "include_leave: no left room: {initial}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob", "carol"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let carol = server.api("carol", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Filtered" })).await?;
    bob.join(&room).await?.ok()?;
    carol.join(&room).await?.ok()?;
    let c1 = carol.send_text_ok(&room, "c1", "from carol").await?;
    let b1 = bob.send_text_ok(&room, "b1", "from bob").await?;
    let a1 = alice.send_text_ok(&room, "a1", "from alice 1").await?;
    let a2 = alice.send_text_ok(&room, "a2", "from alice 2").await?;

    let me = enc(alice.me());
    let definition = json!({ "room": { "timeline": { "limit": 2 }, "state": { "lazy_load_members": true } } });
    let created = alice.post(&format!("/_matrix/client/v3/user/{me}/filter"), &definition).await?.ok()?;
    let filter_id = created["filter_id"].as_str().with_context(|| format!("no filter_id: {created}"))?;
    let stored = alice.get(&format!("/_matrix/client/v3/user/{me}/filter/{}", enc(filter_id))).await?.ok()?;
    ensure!(stored["room"]["timeline"]["limit"] == 2, "stored filter: {stored}");
    ensure!(stored["room"]["state"]["lazy_load_members"] == true, "stored filter: {stored}");
    let unknown = alice.get(&format!("/_matrix/client/v3/user/{me}/filter/987654")).await?;
    assert_matrix_error(&unknown, 404, "M_NOT_FOUND").context("unknown filter")?;

    // The filter's timeline limit: the last two events, limited, with a usable prev_batch.
    let sync = alice.get(&format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc(filter_id))).await?.ok()?;
    let joined = &sync["rooms"]["join"][&room];
    let timeline = joined["timeline"]["events"].as_array().with_context(|| format!("no timeline: {sync}"))?;
    ensure!(ids(timeline) == [a1.clone(), a2.clone()], "filtered timeline: {timeline:?}");
    ensure!(joined["timeline"]["limited"] == true, "timeline not limited: {joined}");
    let prev_batch = joined["timeline"]["prev_batch"].as_str().with_context(|| format!("no prev_batch: {joined}"))?;
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=2&from={}", enc(&room), enc(prev_batch));
    let older = alice.get(&path).await?.ok()?;
    ensure!(ids(older["chunk"].as_array().context("chunk")?) == [b1, c1], "/messages from prev_batch: {older}");

    // Lazy-loading: the state holds the member events of the timeline's senders only.
    let state = &joined["state"]["events"];
    state_event(state, "m.room.create", "").context("lazy-loaded state")?;
    let members: Vec<&str> = state
        .as_array()
        .context("state events")?
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    ensure!(members == [alice.me()], "lazy-loaded members: {members:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_room_options() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice
        .create_room(&json!({
            "preset": "private_chat",
            "room_version": "10",
            "name": "Configured",
            "initial_state": [
                { "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } },
                { "type": "org.example.config", "state_key": "k", "content": { "v": 1 } },
                { "type": "m.room.name", "state_key": "", "content": { "name": "From initial_state" } },
            ],
            "power_level_content_override": { "state_default": 75, "invite": 50, "events": { "m.room.topic": 10 } },
        }))
        .await?;

    // initial_state overrides the preset and is overridden by `name`.
    ensure!(alice.state(&room, "m.room.history_visibility", "").await?["history_visibility"] == "joined");
    ensure!(alice.state(&room, "org.example.config", "k").await? == json!({ "v": 1 }));
    ensure!(alice.state(&room, "m.room.name", "").await?["name"] == "Configured", "name vs initial_state");
    ensure!(alice.state(&room, "m.room.join_rules", "").await?["join_rule"] == "invite", "private_chat");

    // The override replaces top-level keys of the generated power levels; the rest stays.
    let power = alice.state(&room, "m.room.power_levels", "").await?;
    ensure!(power["state_default"] == 75 && power["invite"] == 50, "{power}");
    ensure!(power["events"] == json!({ "m.room.topic": 10 }), "events replaced as a whole: {power}");
    ensure!(power["kick"] == 50 && power["users"][alice.me()] == 100, "{power}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_invite_rejected() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let mut since = next_batch(&bob.sync(None, 0).await?)?;

    let room = alice
        .create_room(&json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob.me()] }))
        .await?;
    // trusted_private_chat: invitees get the creator's power.
    let power = alice.state(&room, "m.room.power_levels", "").await?;
    ensure!(power["users"][bob.me()] == 100, "invitee's power level: {power}");

    let invite_state = sync_raw_until(&bob, &mut since, "the invite", |s| {
        s["rooms"]["invite"][&room]["invite_state"]["events"].as_array().cloned()
    })
    .await?;
    let member = invite_state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.me())
        .with_context(|| format!("no member event for bob in invite_state: {invite_state:?}"))?;
    ensure!(member["content"]["membership"] == "invite" && member["content"]["is_direct"] == true, "{member}");
    ensure!(member["sender"] == alice.me(), "{member}");

    // Bob rejects it: the inviter sees him as having left.
    bob.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), &json!({})).await?.ok().context("reject")?;
    let body = alice.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(&room))).await?.ok()?;
    let bob_member = body["chunk"]
        .as_array()
        .context("members chunk")?
        .iter()
        .find(|e| e["state_key"] == bob.me())
        .with_context(|| format!("bob missing from /members: {body}"))?
        .clone();
    ensure!(bob_member["content"]["membership"] == "leave" && bob_member["sender"] == bob.me(), "{bob_member}");
    ensure!(alice.joined_members(&room).await? == [alice.me().to_owned()], "joined after the rejection");

    // Bob's sync moves the room from invite to leave.
    let sync = sync_raw_until(&bob, &mut since, "the rejection", |s| {
        s["rooms"]["leave"].get(&room).is_some().then(|| s.clone())
    })
    .await?;
    ensure!(sync["rooms"]["invite"].get(&room).is_none(), "still invited after rejecting: {sync}");
    Ok(())
}

/// The room IDs of a public rooms `chunk`, in the order served.
fn room_ids(chunk: &[Value]) -> Vec<String> {
    chunk.iter().map(|e| e["room_id"].as_str().unwrap_or("?").to_owned()).collect()
}

/// Every listed room (one large page), sorted.
async fn listed_rooms(api: &Api) -> anyhow::Result<Vec<String>> {
    let body = api.get("/_matrix/client/v3/publicRooms?limit=100").await?.ok().context("GET /publicRooms")?;
    let mut rooms = room_ids(body["chunk"].as_array().with_context(|| format!("no chunk: {body}"))?);
    rooms.sort();
    Ok(rooms)
}

/// The rooms `POST /publicRooms` finds for a search term.
async fn search(api: &Api, term: &str) -> anyhow::Result<Vec<String>> {
    let body = json!({ "filter": { "generic_search_term": term } });
    let found = api.post("/_matrix/client/v3/publicRooms", &body).await?.ok().context("POST /publicRooms")?;
    Ok(room_ids(found["chunk"].as_array().with_context(|| format!("no chunk: {found}"))?))
}

fn sorted_strings(value: &Value) -> Vec<String> {
    let mut out: Vec<String> =
        value.as_array().into_iter().flatten().map(|v| v.as_str().unwrap_or("?").to_owned()).collect();
    out.sort();
    out
}

/// Rooms created at the same moment by the same user with the same options are distinct
/// rooms (a v12 room ID is the hash of its create event, which includes the time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_rooms_created_at_once_are_distinct() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let body = json!({ "preset": "private_chat" });
    let created = futures::future::join_all((0..8).map(|_| alice.create_room(&body))).await;
    let mut ids = std::collections::BTreeSet::new();
    for room in created {
        ids.insert(room?);
    }
    ensure!(ids.len() == 8, "8 creations gave {} rooms: {ids:?}", ids.len());
    Ok(())
}

/// Deleting an alias takes it out of the room's `m.room.canonical_alias` (`alias` and
/// `alt_aliases`) and so out of the public room search; matrix-rust-sdk's integration
/// suite found both kept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_alias_leaves_the_canonical_alias_and_the_directory() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let main = format!("#townhall:{}", server.server_name());
    let alt = format!("#townhall-annex:{}", server.server_name());
    let directory = |alias: &str| format!("/_matrix/client/v3/directory/room/{}", enc(alias));
    let room = alice
        .create_room(&json!({ "preset": "public_chat", "visibility": "public", "room_alias_name": "townhall" }))
        .await?;
    alice.put(&directory(&alt), &json!({ "room_id": room })).await?.ok().context("PUT the annex alias")?;
    put_state(&alice, &room, "m.room.canonical_alias", "", &json!({ "alias": main, "alt_aliases": [alt] }))
        .await?
        .ok()
        .context("name both aliases")?;
    let found = |term: &str| {
        let alice = alice.clone();
        let (room, term) = (room.clone(), term.to_owned());
        async move {
            let body = json!({ "filter": { "generic_search_term": term } });
            let listed = alice.post("/_matrix/client/v3/publicRooms", &body).await?.ok()?;
            anyhow::Ok(listed["chunk"].as_array().is_some_and(|c| c.iter().any(|r| r["room_id"] == room.as_str())))
        }
    };
    ensure!(found("townhall").await?, "the public room search does not find the room by its alias");

    alice.delete(&directory(&main), &json!({})).await?.ok().context("delete the canonical alias")?;
    let canonical = alice.state(&room, "m.room.canonical_alias", "").await?;
    ensure!(canonical.get("alias").is_none(), "the deleted alias is still canonical: {canonical}");
    ensure!(canonical["alt_aliases"] == json!([alt]), "the other alias was lost: {canonical}");
    ensure!(!found("townhall").await?, "the public room search still finds the room by the deleted alias");

    alice.delete(&directory(&alt), &json!({})).await?.ok().context("delete the annex alias")?;
    let canonical = alice.state(&room, "m.room.canonical_alias", "").await?;
    ensure!(canonical["alt_aliases"] == json!([]), "the deleted alternative alias is still listed: {canonical}");
    Ok(())
}

/// A `world_readable` room can be previewed by someone who is not in it: its state, its
/// members and its history (matrix-rust-sdk's integration suite: kairan answered 403);
/// a room that is not stays closed to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_readable_room_is_read_by_non_members() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let visibility = |v: &str| json!({ "type": "m.room.history_visibility", "content": { "history_visibility": v } });
    let open = alice
        .create_room(&json!({ "preset": "public_chat", "visibility": "public", "name": "Press room",
            "initial_state": [visibility("world_readable")] }))
        .await?;
    let closed = alice.create_room(&json!({ "preset": "public_chat", "name": "Back office" })).await?;
    let notice = alice.send_text_ok(&open, "n1", "press notice").await?;
    alice.send_text_ok(&closed, "c1", "internal").await?;

    let state = bob.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&open))).await?.ok().context("state")?;
    ensure!(state_event(&state, "m.room.name", "")?["content"]["name"] == "Press room", "state: {state}");
    ensure!(bob.state(&open, "m.room.name", "").await?["name"] == "Press room", "one state event");
    ensure!(bob.joined_members(&open).await? == vec![alice.me().to_owned()], "joined_members of the press room");
    let history = crate::support::paginate(&bob, &open, "b", 50).await?;
    ensure!(ids(&history).contains(&notice), "the notice is not in the history bob reads: {history:?}");
    let listed = bob.get("/_matrix/client/v3/publicRooms").await?.ok()?;
    let entry = listed["chunk"].as_array().and_then(|c| c.iter().find(|r| r["room_id"] == open.as_str()).cloned());
    ensure!(entry.is_some_and(|e| e["world_readable"] == true), "directory entry of the press room: {listed}");

    for path in ["state", "joined_members", "messages?dir=b"] {
        let res = bob.get(&format!("/_matrix/client/v3/rooms/{}/{path}", enc(&closed))).await?;
        assert_matrix_error(&res, 403, "M_FORBIDDEN").with_context(|| format!("{path} of a shared-history room"))?;
    }
    Ok(())
}

/// `unsigned.membership` (MSC4115, spec v1.11): each event says what the reader's
/// membership was once it happened, so a client can tell "sent before you joined" from
/// a message it cannot decrypt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_readers_membership_at_them() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await?;
    let before = alice.send_text_ok(&room, "b1", "before bob").await?;
    bob.join(&room).await?.ok().context("bob joins")?;
    let after = alice.send_text_ok(&room, "a1", "after bob").await?;

    let membership_of = |events: &[Value], id: &str| {
        events.iter().find(|e| e["event_id"] == id).map(|e| e["unsigned"]["membership"].clone()).unwrap_or(Value::Null)
    };
    let bobs = crate::support::paginate(&bob, &room, "b", 50).await?;
    ensure!(membership_of(&bobs, &before) == "leave", "bob before his join: {bobs:?}");
    ensure!(membership_of(&bobs, &after) == "join", "bob after his join: {bobs:?}");
    let alices = crate::support::paginate(&alice, &room, "b", 50).await?;
    ensure!(membership_of(&alices, &before) == "join", "alice's own room: {alices:?}");
    let single = bob.event(&room, &after).await?.ok()?;
    ensure!(single["unsigned"]["membership"] == "join", "GET /event: {single}");
    let sync = bob.sync(None, 0).await?;
    let timeline = crate::support::sync_timeline(&sync, &room);
    ensure!(
        !timeline.is_empty() && timeline.iter().all(|e| e["unsigned"]["membership"].is_string()),
        "sync timeline without unsigned.membership: {timeline:?}"
    );
    Ok(())
}

/// The room summary (MSC3266, spec v1.15; matrix-rust-sdk's room previews): by ID or alias,
/// on the stable and the unstable path, for members (`membership: join`), for anyone when
/// the room is public (`leave`, or no membership without a token), and `M_NOT_FOUND` for a
/// private room one is not in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_summaries_preview_rooms() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let public = alice
        .create_room(&json!({ "preset": "public_chat", "name": "Town hall", "topic": "open to all",
            "room_alias_name": "town-hall" }))
        .await?;
    let private = alice.create_room(&json!({ "preset": "private_chat", "name": "Cabinet" })).await?;
    let alias = format!("#town-hall:{}", server.server_name());
    let stable = |room: &str| format!("/_matrix/client/v1/room_summary/{}", enc(room));
    let unstable = |room: &str| format!("/_matrix/client/unstable/im.nheko.summary/rooms/{}/summary", enc(room));

    for (who, api, membership) in [("alice", &alice, json!("join")), ("bob", &bob, json!("leave"))] {
        for path in [stable(&public), stable(&alias), unstable(&alias)] {
            let summary = api.get(&path).await?.ok().with_context(|| format!("{who}: GET {path}"))?;
            ensure!(summary["room_id"] == public.as_str() && summary["name"] == "Town hall", "{who} {path}: {summary}");
            ensure!(summary["topic"] == "open to all" && summary["join_rule"] == "public", "{who}: {summary}");
            ensure!(summary["num_joined_members"] == 1 && summary["room_version"].is_string(), "{who}: {summary}");
            ensure!(summary["membership"] == membership, "{who}'s membership: {summary}");
        }
    }
    let anonymous = server.anonymous().get(&stable(&public)).await?.ok().context("without a token")?;
    ensure!(anonymous["name"] == "Town hall" && anonymous.get("membership").is_none(), "anonymous: {anonymous}");
    alice.get(&stable(&private)).await?.ok().context("alice previews her private room")?;
    assert_matrix_error(&bob.get(&stable(&private)).await?, 404, "M_NOT_FOUND").context("bob, a private room")?;
    let versions = server.anonymous().get("/_matrix/client/versions").await?.ok()?;
    ensure!(versions["unstable_features"]["im.nheko.summary"] == true, "/versions: {versions}");
    Ok(())
}
