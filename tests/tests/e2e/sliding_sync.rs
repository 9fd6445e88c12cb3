//! Simplified sliding sync (MSC4186): matrix-sdk-ui's room list service lists rooms in
//! recency order, moves a room up on a new message and shows an invite; raw requests shaped
//! like matrix-sdk's check the exact lists, rooms, deltas and extensions, `M_UNKNOWN_POS`,
//! the long poll, and a connection that survives a server restart.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use futures::{Stream, StreamExt, pin_mut};
use kairan_tests::{Api, Backend, PASSWORD, Response, ServerOptions, TestServer, assert_matrix_error, enc};
use matrix_sdk::{RoomState, ruma::OwnedRoomId};
use matrix_sdk_ui::{
    eyeball_im::{Vector, VectorDiff},
    room_list_service::{RoomListItem, RoomListService, filters::new_filter_non_left},
};
use serde_json::{Value, json};

use crate::support::SYNC_DEADLINE;

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// The `required_state` matrix-sdk-ui's room list service asks for (0.18).
fn room_list_required_state() -> Value {
    json!([
        ["m.room.name", ""],
        ["m.room.encryption", ""],
        ["m.room.member", "$LAZY"],
        ["m.room.member", "$ME"],
        ["m.room.topic", ""],
        ["m.room.avatar", ""],
        ["m.room.canonical_alias", ""],
        ["m.room.power_levels", ""],
        ["org.matrix.msc3401.call.member", "*"],
        ["m.room.join_rules", ""],
        ["m.room.tombstone", ""],
        ["m.room.create", ""],
        ["m.room.history_visibility", ""],
        ["io.element.functional_members", ""],
        ["m.space.parent", "*"],
        ["m.space.child", "*"],
        ["org.matrix.msc3672.beacon_info", "*"]
    ])
}

/// A request body as matrix-sdk-ui's room list service sends it, on connection `conn_id`.
fn room_list_request(conn_id: &str, ranges: Value) -> Value {
    json!({
        "conn_id": conn_id,
        "lists": {
            "all_rooms": {
                "ranges": ranges,
                "required_state": room_list_required_state(),
                "timeline_limit": 1,
                "filters": {}
            }
        },
        "extensions": {
            "account_data": { "enabled": true },
            "receipts": { "enabled": true, "rooms": ["*"] },
            "typing": { "enabled": true }
        }
    })
}

async fn sliding(api: &Api, pos: Option<&str>, timeout_ms: u64, body: &Value) -> anyhow::Result<Response> {
    let mut path = format!("{PATH}?timeout={timeout_ms}");
    if let Some(pos) = pos {
        path.push_str(&format!("&pos={}", enc(pos)));
    }
    api.post(&path, body).await
}

/// A sliding sync that must succeed; returns the body and moves `pos` on.
async fn sliding_ok(api: &Api, pos: &mut Option<String>, body: &Value) -> anyhow::Result<Value> {
    let response = sliding(api, pos.as_deref(), 0, body).await?.ok().context("sliding sync")?;
    *pos = Some(response["pos"].as_str().with_context(|| format!("no pos in {response}"))?.to_owned());
    Ok(response)
}

fn count(response: &Value, list: &str) -> Option<u64> {
    response["lists"][list]["count"].as_u64()
}

fn room_ids(response: &Value) -> BTreeSet<String> {
    response["rooms"].as_object().map(|r| r.keys().cloned().collect()).unwrap_or_default()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).clone()).collect()
}

fn bump(response: &Value, room: &str) -> anyhow::Result<u64> {
    response["rooms"][room]["bump_stamp"].as_u64().with_context(|| format!("no bump_stamp for {room} in {response}"))
}

/// `(type, state_key)` of each event of a room's `required_state`.
fn state_keys(room: &Value) -> BTreeSet<(String, String)> {
    room["required_state"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["type"].as_str().unwrap_or("").to_owned(), e["state_key"].as_str().unwrap_or("").to_owned()))
        .collect()
}

fn timeline_ids(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["event_id"].as_str().unwrap_or("<none>").to_owned())
        .collect()
}

fn key(t: &str, k: &str) -> (String, String) {
    (t.to_owned(), k.to_owned())
}

/// The newest event of a room, by `/messages`.
async fn last_event(api: &Api, room: &str) -> anyhow::Result<String> {
    let body = api.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1", enc(room))).await?.ok()?;
    Ok(body["chunk"][0]["event_id"].as_str().context("empty /messages")?.to_owned())
}

/// Lists, ranges, recency order, deltas, invites, joins and leaves, checked exactly.
async fn lists_scenario(backend: Backend) -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().backend(backend)).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let (alice_id, bob_id) = (alice.me().to_owned(), bob.me().to_owned());

    let one = alice.create_room(&json!({ "preset": "public_chat", "name": "One" })).await?;
    let two = alice.create_room(&json!({ "preset": "public_chat", "name": "Two" })).await?;
    let three = alice.create_room(&json!({ "preset": "public_chat", "name": "Three" })).await?;

    // The first response: every room, in full, newest first.
    let main = room_list_request("room-list", json!([[0, 19]]));
    let mut pos = None;
    let first = sliding_ok(&alice, &mut pos, &main).await?;
    ensure!(count(&first, "all_rooms") == Some(3), "count: {first}");
    ensure!(room_ids(&first) == set(&[&one, &two, &three]), "rooms: {first}");
    let mut order: Vec<&String> = vec![&one, &two, &three];
    order.sort_by_key(|r| std::cmp::Reverse(bump(&first, r).unwrap_or(0)));
    ensure!(order == vec![&three, &two, &one], "recency order {order:?}: {first}");
    let expected_state: BTreeSet<(String, String)> = [
        key("m.room.create", ""),
        key("m.room.member", &alice_id),
        key("m.room.power_levels", ""),
        key("m.room.join_rules", ""),
        key("m.room.history_visibility", ""),
        key("m.room.name", ""),
    ]
    .into();
    for (room, name) in [(&one, "One"), (&two, "Two"), (&three, "Three")] {
        let r = &first["rooms"][room];
        ensure!(r["initial"] == true && r["name"] == name, "{room}: {r}");
        ensure!(timeline_ids(r) == vec![last_event(&alice, room).await?], "{room} timeline: {r}");
        ensure!(r["limited"] == true && r["prev_batch"].is_string(), "{room}: {r}");
        ensure!(r["joined_count"] == 1 && r["invited_count"] == 0, "{room} counts: {r}");
        ensure!(r["notification_count"] == 0 && r["highlight_count"] == 0, "{room} unread: {r}");
        ensure!(state_keys(r) == expected_state, "{room} required_state {:?}", state_keys(r));
        ensure!(r.get("invite_state").is_none() && r.get("heroes").is_none(), "{room}: {r}");
    }

    // A second connection with a window of two rooms gets the two newest.
    let narrow = room_list_request("narrow", json!([[0, 1]]));
    let mut narrow_pos = None;
    let n1 = sliding_ok(&alice, &mut narrow_pos, &narrow).await?;
    ensure!(count(&n1, "all_rooms") == Some(3), "narrow count: {n1}");
    ensure!(room_ids(&n1) == set(&[&three, &two]), "narrow rooms: {n1}");

    // Nothing happened: an incremental request has no rooms.
    let quiet = sliding_ok(&alice, &mut pos, &main).await?;
    ensure!(room_ids(&quiet).is_empty() && count(&quiet, "all_rooms") == Some(3), "quiet: {quiet}");

    // Bob joins room one and writes: only room one comes, as a delta, and moves to the top.
    bob.join(&one).await?.ok()?;
    let hello = bob.send_text_ok(&one, "hello", "hello alice").await?;
    let second = sliding_ok(&alice, &mut pos, &main).await?;
    ensure!(room_ids(&second) == set(&[&one]), "after a message: {second}");
    let r = &second["rooms"][&one];
    ensure!(r.get("initial").is_none() && r.get("name").is_none(), "a delta, not a full room: {r}");
    ensure!(timeline_ids(r) == vec![hello.clone()] && r["limited"] == true, "timeline: {r}");
    ensure!(state_keys(r) == [key("m.room.member", &bob_id)].into(), "delta state {:?}", state_keys(r));
    ensure!(r["joined_count"] == 2 && r["notification_count"] == 1 && r["highlight_count"] == 0, "counts: {r}");
    ensure!(bump(&second, &one)? > bump(&first, &three)?, "bump stamps: {second} / {first}");
    ensure!(count(&second, "all_rooms") == Some(3), "{second}");

    // In the narrow window room one enters (in full), room two drops out.
    let n2 = sliding_ok(&alice, &mut narrow_pos, &narrow).await?;
    ensure!(room_ids(&n2) == set(&[&one]), "narrow after a message: {n2}");
    ensure!(n2["rooms"][&one]["initial"] == true && timeline_ids(&n2["rooms"][&one]) == vec![hello.clone()], "{n2}");

    // An invite: stripped state, no timeline, newest of all.
    let four = bob.create_room(&json!({ "preset": "private_chat", "name": "Four" })).await?;
    bob.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&four)), &json!({ "user_id": alice_id }))
        .await?
        .ok()?;
    let third = sliding_ok(&alice, &mut pos, &main).await?;
    ensure!(room_ids(&third) == set(&[&four]) && count(&third, "all_rooms") == Some(4), "invite: {third}");
    let r = &third["rooms"][&four];
    ensure!(r["initial"] == true && r.get("timeline").is_none() && r.get("required_state").is_none(), "{r}");
    let invite_state = r["invite_state"].as_array().context("no invite_state")?;
    ensure!(
        invite_state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Four"),
        "invite_state without the name: {r}"
    );
    ensure!(
        invite_state.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == alice_id.as_str()
            && e["content"]["membership"] == "invite"),
        "invite_state without the invite: {r}"
    );
    ensure!(bump(&third, &four)? > bump(&second, &one)?, "the invite is the newest room");

    // Alice accepts: the room comes in full, as joined.
    alice.join(&four).await?.ok()?;
    let fourth = sliding_ok(&alice, &mut pos, &main).await?;
    ensure!(room_ids(&fourth) == set(&[&four]) && count(&fourth, "all_rooms") == Some(4), "join: {fourth}");
    let r = &fourth["rooms"][&four];
    ensure!(r["initial"] == true && r.get("invite_state").is_none() && r["name"] == "Four", "{r}");
    let own = r["required_state"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == alice_id.as_str())
        .context("own membership missing")?;
    ensure!(own["content"]["membership"] == "join", "{own}");
    ensure!(r["joined_count"] == 2, "{r}");

    // Alice leaves room two: it comes once more, with her departure, then leaves the list.
    alice.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&two)), &json!({})).await?.ok()?;
    let fifth = sliding_ok(&alice, &mut pos, &main).await?;
    ensure!(room_ids(&fifth) == set(&[&two]) && count(&fifth, "all_rooms") == Some(4), "leave: {fifth}");
    let own = fifth["rooms"][&two]["required_state"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == alice_id.as_str())
        .context("departure missing")?
        .clone();
    ensure!(own["content"]["membership"] == "leave", "{own}");
    let sixth = sliding_ok(&alice, &mut pos, &main).await?;
    ensure!(room_ids(&sixth).is_empty() && count(&sixth, "all_rooms") == Some(3), "after leaving: {sixth}");

    // Opening room one, as Element X does: a subscription with more timeline and more state
    // brings the room again in full; repeating or dropping the subscription brings nothing.
    let mut subscribed = main.clone();
    let mut state = room_list_required_state();
    state.as_array_mut().context("array")?.push(json!(["m.room.pinned_events", ""]));
    subscribed["room_subscriptions"] = json!({ one.clone(): { "required_state": state, "timeline_limit": 20 } });
    let opened = sliding_ok(&alice, &mut pos, &subscribed).await?;
    ensure!(room_ids(&opened) == set(&[&one]), "subscription: {opened}");
    let r = &opened["rooms"][&one];
    let all_of_one: Vec<String> = crate::support::ids(&crate::support::paginate(&alice, &one, "f", 100).await?);
    ensure!(r["initial"] == true && timeline_ids(r) == all_of_one && r["limited"] == false, "{r}");
    ensure!(state_keys(r).contains(&key("m.room.member", &bob_id)), "lazy member of the timeline: {r}");
    let again = sliding_ok(&alice, &mut pos, &subscribed).await?;
    ensure!(room_ids(&again).is_empty(), "the subscription again: {again}");
    let closed = sliding_ok(&alice, &mut pos, &main).await?;
    ensure!(room_ids(&closed).is_empty(), "after closing: {closed}");

    // Filters: only invites, only joined rooms.
    let mut only_invites = room_list_request("invites", json!([[0, 19]]));
    only_invites["lists"]["all_rooms"]["filters"] = json!({ "is_invite": true });
    let inv = sliding_ok(&alice, &mut None, &only_invites).await?;
    ensure!(count(&inv, "all_rooms") == Some(0) && room_ids(&inv).is_empty(), "is_invite: {inv}");
    let mut only_joined = room_list_request("joined", json!([[0, 19]]));
    only_joined["lists"]["all_rooms"]["filters"] = json!({ "is_invite": false });
    let joined = sliding_ok(&alice, &mut None, &only_joined).await?;
    ensure!(room_ids(&joined) == set(&[&one, &three, &four]), "is_invite false: {joined}");
    Ok(())
}

mod lists {
    use super::lists_scenario;
    both_backends!(lists_scenario);
}

/// Explicit `bump_event_types` change the order; a subscription brings a room with its own
/// timeline limit; a room's account data, a receipt, typing, to-device messages and the
/// e2ee counts arrive through the extensions, on a connection without lists (as
/// matrix-sdk's encryption sync uses them).
async fn extensions_scenario(backend: Backend) -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().backend(backend)).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let (alice_id, bob_id) = (alice.me().to_owned(), bob.me().to_owned());
    let alice_device = alice.device_id.clone().context("device")?;

    let chat = alice.create_room(&json!({ "preset": "public_chat", "name": "Chat" })).await?;
    bob.join(&chat).await?.ok()?;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(bob.send_text_ok(&chat, &format!("t{i}"), &format!("message {i}")).await?);
    }
    // A newer room without messages: by default it is the most recent (its creation and
    // Alice's join bump it), by messages only the chat is.
    let quiet = alice.create_room(&json!({ "preset": "public_chat", "name": "Quiet" })).await?;
    let top = |bump_event_types: Option<Value>| {
        let mut list = json!({ "ranges": [[0, 0]], "timeline_limit": 0 });
        if let Some(types) = bump_event_types {
            list["bump_event_types"] = types;
        }
        json!({ "conn_id": "top", "lists": { "top": list } })
    };
    let by_default = sliding_ok(&alice, &mut None, &top(None)).await?;
    ensure!(room_ids(&by_default) == set(&[&quiet]) && count(&by_default, "top") == Some(2), "{by_default}");
    let by_message = sliding_ok(&alice, &mut None, &top(Some(json!(["m.room.message"])))).await?;
    ensure!(room_ids(&by_message) == set(&[&chat]) && count(&by_message, "top") == Some(2), "{by_message}");
    ensure!(timeline_ids(&by_message["rooms"][&chat]).is_empty(), "timeline_limit 0: {by_message}");
    ensure!(bump(&by_message, &chat)? < bump(&by_default, &quiet)?, "{by_message} / {by_default}");

    let body = json!({
        "conn_id": "encryption",
        "room_subscriptions": {
            chat.clone(): { "required_state": [["m.room.topic", ""]], "timeline_limit": 2 }
        },
        "extensions": {
            "to_device": { "enabled": true },
            "e2ee": { "enabled": true },
            "account_data": { "enabled": true },
            "receipts": { "enabled": true, "rooms": ["*"] },
            "typing": { "enabled": true, "rooms": ["*"] }
        }
    });
    let mut pos = None;
    let first = sliding_ok(&alice, &mut pos, &body).await?;
    ensure!(room_ids(&first) == set(&[&chat]) && first["lists"] == json!({}), "{first}");
    let r = &first["rooms"][&chat];
    ensure!(timeline_ids(r) == sent[1..].to_vec() && r["limited"] == true, "subscription timeline: {r}");
    ensure!(state_keys(r).is_empty(), "no topic, no required state: {r}");
    ensure!(r["notification_count"] == 3 && r["joined_count"] == 2, "{r}");
    let e2ee = &first["extensions"]["e2ee"];
    ensure!(e2ee["device_one_time_keys_count"]["signed_curve25519"] == 0, "e2ee: {e2ee}");
    ensure!(e2ee["device_unused_fallback_key_types"] == json!([]), "e2ee: {e2ee}");
    ensure!(e2ee["device_lists"] == json!({ "changed": [], "left": [] }), "e2ee: {e2ee}");
    let to_device = &first["extensions"]["to_device"];
    ensure!(to_device["events"] == json!([]) && to_device["next_batch"].is_string(), "{to_device}");
    let mut to_device_since = to_device["next_batch"].as_str().context("next_batch")?.to_owned();

    // Account data, a receipt, typing and a to-device message: one request brings them all.
    alice
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/org.example.colour", enc(&alice_id)),
            &json!({ "colour": "teal" }),
        )
        .await?
        .ok()?;
    alice
        .put(
            &format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/m.tag", enc(&alice_id), enc(&chat)),
            &json!({ "tags": { "u.work": {} } }),
        )
        .await?
        .ok()?;
    bob.post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&chat), enc(&sent[2])), &json!({}))
        .await?
        .ok()?;
    bob.put(
        &format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&chat), enc(&bob_id)),
        &json!({ "typing": true, "timeout": 30000 }),
    )
    .await?
    .ok()?;
    bob.put(
        "/_matrix/client/v3/sendToDevice/org.example.ping/txn1",
        &json!({ "messages": { alice_id.clone(): { alice_device.clone(): { "n": 1 } } } }),
    )
    .await?
    .ok()?;
    let second = sliding_ok(&alice, &mut pos, &body_with_since(&body, &to_device_since)).await?;
    ensure!(room_ids(&second).is_empty(), "no new events: {second}");
    let ext = &second["extensions"];
    ensure!(
        ext["account_data"]["global"] == json!([{ "type": "org.example.colour", "content": { "colour": "teal" } }]),
        "global account data: {ext}"
    );
    ensure!(
        ext["account_data"]["rooms"][&chat] == json!([{ "type": "m.tag", "content": { "tags": { "u.work": {} } } }]),
        "room account data: {ext}"
    );
    let receipt = &ext["receipts"]["rooms"][&chat];
    ensure!(receipt["type"] == "m.receipt", "{ext}");
    ensure!(receipt["content"][&sent[2]]["m.read"][&bob_id]["ts"].is_u64(), "receipt: {ext}");
    ensure!(ext["typing"]["rooms"][&chat]["content"]["user_ids"] == json!([bob_id]), "typing: {ext}");
    let events = ext["to_device"]["events"].as_array().context("to_device events")?;
    ensure!(
        events.len() == 1
            && events[0]["type"] == "org.example.ping"
            && events[0]["sender"] == bob_id.as_str()
            && events[0]["content"]["n"] == 1,
        "to_device: {ext}"
    );
    to_device_since = ext["to_device"]["next_batch"].as_str().context("next_batch")?.to_owned();

    // Acknowledged with `since`: the message is not delivered again; nothing else repeats.
    let third = sliding_ok(&alice, &mut pos, &body_with_since(&body, &to_device_since)).await?;
    let ext = &third["extensions"];
    ensure!(ext["to_device"]["events"] == json!([]), "to-device delivered twice: {third}");
    ensure!(ext["account_data"] == json!({ "global": [], "rooms": {} }), "account data again: {third}");
    ensure!(ext["receipts"]["rooms"] == json!({}) && ext["typing"]["rooms"] == json!({}), "{third}");
    Ok(())
}

mod subscriptions_and_extensions {
    use super::extensions_scenario;
    both_backends!(extensions_scenario);
}

fn body_with_since(body: &Value, since: &str) -> Value {
    let mut body = body.clone();
    body["extensions"]["to_device"]["since"] = since.into();
    body
}

/// A made-up `pos`, another connection's and another user's are all `M_UNKNOWN_POS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_pos() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    alice.create_room(&json!({ "name": "Somewhere" })).await?;
    let body = room_list_request("room-list", json!([[0, 19]]));

    for made_up in ["made-up", "1_1_1", "999999_0_0", ""] {
        let response = sliding(&alice, Some(made_up), 0, &body).await?;
        assert_matrix_error(&response, 400, "M_UNKNOWN_POS").with_context(|| format!("pos {made_up:?}"))?;
    }
    let mut pos = None;
    sliding_ok(&alice, &mut pos, &body).await?;
    let pos = pos.context("pos")?;
    let other_conn = room_list_request("other", json!([[0, 19]]));
    assert_matrix_error(&sliding(&alice, Some(&pos), 0, &other_conn).await?, 400, "M_UNKNOWN_POS")
        .context("another connection's pos")?;
    assert_matrix_error(&sliding(&bob, Some(&pos), 0, &body).await?, 400, "M_UNKNOWN_POS")
        .context("another user's pos")?;
    let again = server.api("alice", PASSWORD).await?;
    assert_matrix_error(&sliding(&again, Some(&pos), 0, &body).await?, 400, "M_UNKNOWN_POS")
        .context("another device's pos")?;
    // The pos stays valid for its own connection.
    sliding(&alice, Some(&pos), 0, &body).await?.ok().context("own pos")?;
    Ok(())
}

/// A request with a `pos` and a timeout waits, and returns as soon as a message is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_new_message() -> anyhow::Result<()> {
    const LONG_POLL_MS: u64 = 30_000;
    const WAKE_WITHIN: Duration = Duration::from_secs(5);
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Lobby" })).await?;
    bob.join(&room).await?.ok()?;
    let body = room_list_request("room-list", json!([[0, 19]]));
    let mut pos = None;
    sliding_ok(&alice, &mut pos, &body).await?;
    let pos = pos.context("pos")?;

    let waiting = {
        let (alice, body, pos) = (alice.clone(), body.clone(), pos.clone());
        tokio::spawn(async move { (sliding(&alice, Some(&pos), LONG_POLL_MS, &body).await, Instant::now()) })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    if waiting.is_finished() {
        let (response, _) = waiting.await?;
        bail!("the request with timeout={LONG_POLL_MS} returned before anything happened: {response:?}");
    }
    let sent_at = Instant::now();
    let event = bob.send_text_ok(&room, "wake", "wake up").await?;
    let (response, returned_at) = tokio::time::timeout(WAKE_WITHIN, waiting)
        .await
        .with_context(|| format!("the waiting request did not return within {WAKE_WITHIN:?} of the send"))??;
    let response = response?.ok()?;
    ensure!(returned_at >= sent_at, "returned before the send");
    ensure!(room_ids(&response) == set(&[&room]), "{response}");
    ensure!(timeline_ids(&response["rooms"][&room]) == vec![event], "{response}");

    // With nothing new, the request waits out its timeout and returns no rooms.
    let next = response["pos"].as_str().context("pos")?;
    let started = Instant::now();
    let idle = sliding(&alice, Some(next), 1_500, &body).await?.ok()?;
    ensure!(started.elapsed() >= Duration::from_millis(1_400), "returned after {:?}", started.elapsed());
    ensure!(room_ids(&idle).is_empty(), "{idle}");
    Ok(())
}

/// The connection state is in the database: after a restart the same `pos` continues
/// with exactly what happened in between.
async fn restart_scenario(backend: Backend) -> anyhow::Result<()> {
    let mut server = TestServer::start(ServerOptions::default().backend(backend)).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let first = alice.create_room(&json!({ "name": "First" })).await?;
    let second = alice.create_room(&json!({ "name": "Second" })).await?;
    let body = room_list_request("room-list", json!([[0, 19]]));
    let mut pos = None;
    let initial = sliding_ok(&alice, &mut pos, &body).await?;
    ensure!(room_ids(&initial) == set(&[&first, &second]), "{initial}");
    let event = alice.send_text_ok(&first, "before-restart", "still there?").await?;

    server.restart().await?;
    let after = sliding_ok(&alice, &mut pos, &body).await?;
    ensure!(room_ids(&after) == set(&[&first]), "after restart: {after}");
    let r = &after["rooms"][&first];
    ensure!(r.get("initial").is_none() && timeline_ids(r) == vec![event] && r["limited"] == false, "{r}");
    ensure!(count(&after, "all_rooms") == Some(2), "{after}");
    Ok(())
}

mod connection_survives_restart {
    use super::restart_scenario;
    both_backends!(restart_scenario);
}

/// matrix-sdk-ui's room list service: rooms in recency order, a new message moves its room
/// to the top, an invite appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_list_service() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice_api = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let alice_id = alice_api.me().to_owned();

    let mut rooms = Vec::new();
    for name in ["One", "Two", "Three"] {
        let room = alice_api.create_room(&json!({ "preset": "public_chat", "name": name })).await?;
        alice_api.send_text_ok(&room, &format!("first-{name}"), &format!("hello {name}")).await?;
        rooms.push(room);
    }
    let [one, two, three] = [&rooms[0], &rooms[1], &rooms[2]].map(|r| r.clone());

    let client = server.client("alice", PASSWORD).await?;
    let service = Arc::new(RoomListService::new(client.clone()).await.context("room list service")?);
    let all_rooms = service.all_rooms().await?;
    let sync = {
        let service = service.clone();
        tokio::spawn(async move {
            let stream = service.sync();
            pin_mut!(stream);
            while let Some(result) = stream.next().await {
                result?;
            }
            anyhow::Ok(())
        })
    };
    let (entries, controller) = all_rooms.entries_with_dynamic_adapters(50);
    controller.set_filter(Box::new(new_filter_non_left()));
    pin_mut!(entries);
    let mut list: Vector<RoomListItem> = Vector::new();

    let expected = vec![three.clone(), two.clone(), one.clone()];
    let order = wait_for_list(&mut entries, &mut list, &sync, |ids| ids == expected.as_slice()).await?;
    ensure!(order == expected, "initial order {order:?}");
    // The server's bump stamps (the rooms' recency stamps) give the same order.
    decreasing_recency_stamps(&client, &[&three, &two, &one]).await?;

    // Bob writes in room one: it moves to the top.
    bob.join(&one).await?.ok()?;
    bob.send_text_ok(&one, "up", "bump").await?;
    let expected = vec![one.clone(), three.clone(), two.clone()];
    let order = wait_for_list(&mut entries, &mut list, &sync, |ids| ids == expected.as_slice()).await?;
    ensure!(order == expected, "{order:?}");
    decreasing_recency_stamps(&client, &[&one, &three, &two]).await?;

    // Bob invites Alice to a new room: it appears, as an invite.
    let four = bob.create_room(&json!({ "preset": "private_chat", "name": "Four" })).await?;
    bob.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&four)), &json!({ "user_id": alice_id }))
        .await?
        .ok()?;
    // It comes first: the newest room (by its bump stamp, and for the client by the
    // invite's arrival).
    let expected = vec![four.clone(), one.clone(), three.clone(), two.clone()];
    let order = wait_for_list(&mut entries, &mut list, &sync, |ids| ids == expected.as_slice()).await?;
    ensure!(order == expected, "{order:?}");
    let invited = client.get_room(&room_id(&four)).context("the invite is known")?;
    ensure!(invited.state() == RoomState::Invited, "state {:?}", invited.state());
    decreasing_recency_stamps(&client, &[&four, &one, &three, &two]).await?;

    service.stop_sync()?;
    Ok(())
}

/// Waits until the client holds recency stamps (the server's bump stamps) for the rooms,
/// strictly decreasing in the order given.
async fn decreasing_recency_stamps(client: &matrix_sdk::Client, rooms: &[&String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        let stamps: Vec<Option<u64>> = rooms
            .iter()
            .map(|r| client.get_room(&room_id(r)).and_then(|room| room.recency_stamp()).map(u64::from))
            .collect();
        if stamps.iter().all(Option::is_some) && stamps.windows(2).all(|w| w[0] > w[1]) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("recency stamps of {rooms:?} are {stamps:?}, not strictly decreasing, after {SYNC_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(list: &Vector<RoomListItem>) -> Vec<Option<String>> {
    list.iter().map(|r| r.name()).collect()
}

fn room_id(s: &str) -> OwnedRoomId {
    s.try_into().expect("a room ID from the server")
}

/// Applies room list diffs until `done` holds for the list's room IDs; returns them.
async fn wait_for_list(
    entries: &mut (impl Stream<Item = Vec<VectorDiff<RoomListItem>>> + Unpin),
    list: &mut Vector<RoomListItem>,
    sync: &tokio::task::JoinHandle<anyhow::Result<()>>,
    done: impl Fn(&[String]) -> bool,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        let ids: Vec<String> = list.iter().map(|r| r.room_id().to_string()).collect();
        if done(&ids) {
            return Ok(ids);
        }
        ensure!(!sync.is_finished(), "the room list sync stopped; list {ids:?}");
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, entries.next()).await {
            Ok(Some(diffs)) => {
                for diff in diffs {
                    diff.apply(list);
                }
            }
            Ok(None) => bail!("the room list stream ended; list {ids:?}"),
            Err(_) => bail!("room list not as expected within {SYNC_DEADLINE:?}: {ids:?} (names {:?})", names(list)),
        }
    }
}
