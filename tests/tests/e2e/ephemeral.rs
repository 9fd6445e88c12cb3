//! What is not room history: typing, receipts (public and private), read markers, account
//! data, presence, send-to-device messages and unread notification counts.

use anyhow::{Context as _, ensure};
use kairan_tests::{Api, Backend, PASSWORD, ServerOptions, TestServer, assert_matrix_error, enc};
use serde_json::{Value, json};

use crate::support::{next_batch, sync_ephemeral, sync_raw_until, sync_timeline};

both_backends!(scenario);

async fn scenario(backend: Backend) -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().backend(backend)).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Office" })).await?;
    bob.join(&room).await?.ok().context("bob joins")?;

    typing(&alice, &bob, &room).await.context("typing")?;
    receipts(&alice, &bob, &room).await.context("receipts")?;
    account_data(&alice, &bob, &room).await.context("account data")?;
    presence(&alice, &bob).await.context("presence")?;
    to_device(&server, &alice, &bob).await.context("send-to-device")?;
    unread_counts(&alice, &bob).await.context("unread counts")?;
    Ok(())
}

async fn typing(alice: &Api, bob: &Api, room: &str) -> anyhow::Result<()> {
    let mut since = next_batch(&bob.sync(None, 0).await?)?;
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(room), enc(alice.me()));

    alice.put(&path, &json!({ "typing": true, "timeout": 30_000 })).await?.ok().context("start typing")?;
    let users = sync_raw_until(bob, &mut since, "alice typing", |s| typing_users(s, room)).await?;
    ensure!(users == [alice.me()], "m.typing while alice types: {users:?}");

    alice.put(&path, &json!({ "typing": false })).await?.ok().context("stop typing")?;
    let users = sync_raw_until(bob, &mut since, "alice no longer typing", |s| {
        typing_users(s, room).filter(|users| !users.iter().any(|u| u == alice.me()))
    })
    .await?;
    ensure!(users.is_empty(), "m.typing after alice stopped: {users:?}");

    // A typing notice ends by itself when its timeout runs out.
    alice.put(&path, &json!({ "typing": true, "timeout": 1_000 })).await?.ok().context("type briefly")?;
    let users = sync_raw_until(bob, &mut since, "alice typing briefly", |s| typing_users(s, room)).await?;
    ensure!(users == [alice.me()], "m.typing while alice types briefly: {users:?}");
    let users = sync_raw_until(bob, &mut since, "the typing timeout", |s| {
        typing_users(s, room).filter(|users| !users.iter().any(|u| u == alice.me()))
    })
    .await?;
    ensure!(users.is_empty(), "m.typing after the timeout: {users:?}");
    Ok(())
}

async fn receipts(alice: &Api, bob: &Api, room: &str) -> anyhow::Result<()> {
    let public = alice.send_text_ok(room, "r1", "read me").await?;
    let private = alice.send_text_ok(room, "r2", "read me quietly").await?;
    let mut alice_since = next_batch(&alice.sync(None, 0).await?)?;
    let mut bob_since = next_batch(&bob.sync(None, 0).await?)?;
    let receipt =
        |kind: &str, event: &str| format!("/_matrix/client/v3/rooms/{}/receipt/{kind}/{}", enc(room), enc(event));

    // A public read receipt reaches the other member.
    bob.post(&receipt("m.read", &public), &json!({})).await?.ok().context("m.read")?;
    let seen =
        sync_raw_until(alice, &mut alice_since, "bob's m.read", |s| receipt_in(s, room, &public, "m.read", bob.me()))
            .await?;
    ensure!(seen["ts"].is_u64(), "receipt without a ts: {seen}");

    // A private one reaches only its sender.
    bob.post(&receipt("m.read.private", &private), &json!({})).await?.ok().context("m.read.private")?;
    sync_raw_until(bob, &mut bob_since, "bob's own m.read.private", |s| {
        receipt_in(s, room, &private, "m.read.private", bob.me())
    })
    .await?;
    let incremental = alice.sync(Some(&alice_since), 0).await?;
    ensure!(private_receipts(&incremental, room).is_empty(), "alice sees a private receipt: {incremental}");
    let initial = alice.sync(None, 0).await?;
    ensure!(private_receipts(&initial, room).is_empty(), "alice's initial sync has a private receipt: {initial}");
    ensure!(receipt_in(&initial, room, &public, "m.read", bob.me()).is_some(), "initial sync lacks m.read: {initial}");
    let bobs_initial = bob.sync(None, 0).await?;
    ensure!(
        receipt_in(&bobs_initial, room, &private, "m.read.private", bob.me()).is_some(),
        "bob's initial sync lacks his private receipt: {bobs_initial}"
    );

    // read_markers: m.fully_read becomes room account data; its m.read is a receipt.
    let markers = format!("/_matrix/client/v3/rooms/{}/read_markers", enc(room));
    bob.post(&markers, &json!({ "m.fully_read": private, "m.read": private })).await?.ok().context("read_markers")?;
    let marker =
        sync_raw_until(bob, &mut bob_since, "m.fully_read", |s| room_account_data(s, room, "m.fully_read")).await?;
    ensure!(marker == json!({ "event_id": private }), "m.fully_read in sync: {marker}");
    let path = format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read", enc(bob.me()), enc(room));
    let stored = bob.get(&path).await?.ok().context("GET m.fully_read")?;
    ensure!(stored == json!({ "event_id": private }), "GET m.fully_read: {stored}");
    sync_raw_until(alice, &mut alice_since, "the m.read of read_markers", |s| {
        receipt_in(s, room, &private, "m.read", bob.me())
    })
    .await?;
    Ok(())
}

async fn account_data(alice: &Api, bob: &Api, room: &str) -> anyhow::Result<()> {
    let mut since = next_batch(&alice.sync(None, 0).await?)?;
    let me = enc(alice.me());
    let global = format!("/_matrix/client/v3/user/{me}/account_data/org.example.settings");
    let per_room = format!("/_matrix/client/v3/user/{me}/rooms/{}/account_data/org.example.room", enc(room));
    let settings = json!({ "theme": "dark", "font": { "size": 14 } });
    let room_settings = json!({ "pinned": ["$one", "$two"] });

    alice.put(&global, &settings).await?.ok().context("PUT global account data")?;
    ensure!(alice.get(&global).await?.ok()? == settings, "GET global account data");
    alice.put(&per_room, &room_settings).await?.ok().context("PUT room account data")?;
    ensure!(alice.get(&per_room).await?.ok()? == room_settings, "GET room account data");

    let (mut got_global, mut got_room) = (None, None);
    sync_raw_until(alice, &mut since, "both kinds of account data", |s| {
        got_global = got_global.take().or_else(|| global_account_data(s, "org.example.settings"));
        got_room = got_room.take().or_else(|| room_account_data(s, room, "org.example.room"));
        (got_global.is_some() && got_room.is_some()).then_some(())
    })
    .await?;
    ensure!(got_global.as_ref() == Some(&settings), "global account data in sync: {got_global:?}");
    ensure!(got_room.as_ref() == Some(&room_settings), "room account data in sync: {got_room:?}");

    // Replacing it shows the new content in the next sync.
    let replaced = json!({ "theme": "light" });
    alice.put(&global, &replaced).await?.ok().context("replace global account data")?;
    let got =
        sync_raw_until(alice, &mut since, "replaced account data", |s| global_account_data(s, "org.example.settings"))
            .await?;
    ensure!(got == replaced, "replaced account data in sync: {got}");
    ensure!(alice.get(&global).await?.ok()? == replaced, "GET after replacing");

    let missing = alice.get(&format!("/_matrix/client/v3/user/{me}/account_data/org.example.nothing")).await?;
    assert_matrix_error(&missing, 404, "M_NOT_FOUND").context("GET absent account data")?;
    assert_matrix_error(&bob.get(&global).await?, 403, "M_FORBIDDEN").context("bob reads alice's account data")?;
    let write = bob.put(&global, &json!({ "theme": "bob's" })).await?;
    assert_matrix_error(&write, 403, "M_FORBIDDEN").context("bob writes alice's account data")?;
    ensure!(alice.get(&global).await?.ok()? == replaced, "bob's write changed alice's data");
    Ok(())
}

async fn presence(alice: &Api, bob: &Api) -> anyhow::Result<()> {
    let mut since = next_batch(&bob.sync(None, 0).await?)?;
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(alice.me()));
    alice
        .put(&path, &json!({ "presence": "unavailable", "status_msg": "In a meeting" }))
        .await?
        .ok()
        .context("PUT presence")?;
    for (who, api) in [("alice", alice), ("bob", bob)] {
        let status = api.get(&path).await?.ok().with_context(|| format!("{who} GETs alice's presence"))?;
        ensure!(status["presence"] == "unavailable" && status["status_msg"] == "In a meeting", "{who}: {status}");
    }
    let content = sync_raw_until(bob, &mut since, "alice's presence", |s| {
        s["presence"]["events"].as_array()?.iter().find_map(|e| {
            (e["type"] == "m.presence" && e["sender"] == alice.me() && e["content"]["presence"] == "unavailable")
                .then(|| e["content"].clone())
        })
    })
    .await?;
    ensure!(content["status_msg"] == "In a meeting", "alice's presence in bob's sync: {content}");
    let wrong = bob.put(&path, &json!({ "presence": "offline" })).await?;
    assert_matrix_error(&wrong, 403, "M_FORBIDDEN").context("bob sets alice's presence")?;
    Ok(())
}

async fn to_device(server: &TestServer, alice: &Api, bob: &Api) -> anyhow::Result<()> {
    let bob_phone = server.api("bob", PASSWORD).await?;
    let phone_since = next_batch(&bob_phone.sync(None, 0).await?)?;
    let since = next_batch(&bob.sync(None, 0).await?)?;
    let bob_device = bob.device_id.clone().context("bob's device")?;

    let path = "/_matrix/client/v3/sendToDevice/org.example.ping/td1";
    let body = json!({ "messages": { bob.me(): { &bob_device: { "n": 1 } } } });
    alice.put(path, &body).await?.ok().context("sendToDevice")?;

    // Stored before the 200: the next sync brings it, once.
    let first = bob.sync(Some(&since), 0).await?;
    let expected = vec![json!({ "sender": alice.me(), "type": "org.example.ping", "content": { "n": 1 } })];
    ensure!(to_device_events(&first) == expected, "to_device in the first sync: {first}");
    // The client did not acknowledge it yet (same token again, e.g. after a lost response):
    // it is delivered again.
    let repeated = bob.sync(Some(&since), 0).await?;
    ensure!(to_device_events(&repeated) == expected, "to_device on a repeated sync: {repeated}");
    // Syncing from the new token acknowledges it: never again.
    let acked = next_batch(&repeated)?;
    let after = bob.sync(Some(&acked), 0).await?;
    ensure!(to_device_events(&after).is_empty(), "to_device after acknowledging: {after}");
    let later = next_batch(&after)?;

    // A retried transaction is not delivered twice.
    alice.put(path, &body).await?.ok().context("retried sendToDevice")?;
    let retry = bob.sync(Some(&later), 0).await?;
    ensure!(to_device_events(&retry).is_empty(), "a retried txn was delivered again: {retry}");
    // Bob's other device got nothing: the message was for one device.
    let phone = bob_phone.sync(Some(&phone_since), 0).await?;
    ensure!(to_device_events(&phone).is_empty(), "another device got the message: {phone}");

    // `*` reaches every device of the user.
    let all = json!({ "messages": { bob.me(): { "*": { "n": 2 } } } });
    alice.put("/_matrix/client/v3/sendToDevice/org.example.ping/td2", &all).await?.ok().context("to *")?;
    let expected = vec![json!({ "sender": alice.me(), "type": "org.example.ping", "content": { "n": 2 } })];
    for (name, api, since) in [("bob", bob, next_batch(&retry)?), ("bob's phone", &bob_phone, next_batch(&phone)?)] {
        let sync = api.sync(Some(&since), 0).await?;
        ensure!(to_device_events(&sync) == expected, "{name}: to_device for *: {sync}");
    }
    Ok(())
}

async fn unread_counts(alice: &Api, bob: &Api) -> anyhow::Result<()> {
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Counts" })).await?;
    bob.join(&room).await?.ok().context("bob joins")?;
    let mut since = next_batch(&bob.sync(None, 0).await?)?;
    let room = room.as_str();

    // Each of Alice's messages is a notification for Bob.
    let first = alice.send_text_ok(room, "u1", "first").await?;
    let counts = counts_with_event(bob, &mut since, room, &first).await?;
    ensure!(counts == counts_of(1, 0), "after one message: {counts}");
    let second = alice.send_text_ok(room, "u2", "second").await?;
    let counts = counts_with_event(bob, &mut since, room, &second).await?;
    ensure!(counts == counts_of(2, 0), "after two messages: {counts}");

    // A read receipt on the latest resets the count.
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(room), enc(&second));
    bob.post(&path, &json!({})).await?.ok().context("bob's receipt")?;
    let counts = sync_raw_until(bob, &mut since, "bob's receipt", |s| {
        receipt_in(s, room, &second, "m.read", bob.me())?;
        Some(s["rooms"]["join"][room]["unread_notifications"].clone())
    })
    .await?;
    ensure!(counts == counts_of(0, 0), "after the read receipt: {counts}");

    // A mention (m.mentions, the body does not name Bob) is a highlight.
    let mention = alice
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/u3", enc(room)),
            &json!({ "msgtype": "m.text", "body": "are you there?", "m.mentions": { "user_ids": [bob.me()] } }),
        )
        .await?
        .ok()
        .context("mention")?;
    let mention = mention["event_id"].as_str().context("send without event_id")?;
    let counts = counts_with_event(bob, &mut since, room, mention).await?;
    ensure!(counts == counts_of(1, 1), "after a mention: {counts}");
    Ok(())
}

/// Clients cannot set the account data types the server manages (spec: 405 `M_BAD_JSON`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_managed_account_data_is_refused() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "private_chat" })).await?;
    let event = alice.send_text_ok(&room, "m1", "hi").await?;
    let me = enc(alice.me());
    for kind in ["m.fully_read", "m.push_rules"] {
        let global = alice.put(&format!("/_matrix/client/v3/user/{me}/account_data/{kind}"), &json!({})).await?;
        assert_matrix_error(&global, 405, "M_BAD_JSON").with_context(|| format!("PUT global {kind}"))?;
        let path = format!("/_matrix/client/v3/user/{me}/rooms/{}/account_data/{kind}", enc(&room));
        let per_room = alice.put(&path, &json!({ "event_id": event })).await?;
        assert_matrix_error(&per_room, 405, "M_BAD_JSON").with_context(|| format!("PUT room {kind}"))?;
    }
    Ok(())
}

/// Syncs until `event` is in the timeline of `room`; returns that response's unread counts.
async fn counts_with_event(api: &Api, since: &mut String, room: &str, event: &str) -> anyhow::Result<Value> {
    sync_raw_until(api, since, "the message", |s| {
        sync_timeline(s, room)
            .iter()
            .any(|e| e["event_id"] == event)
            .then(|| s["rooms"]["join"][room]["unread_notifications"].clone())
    })
    .await
}

fn counts_of(notifications: u64, highlights: u64) -> Value {
    json!({ "notification_count": notifications, "highlight_count": highlights })
}

/// The user IDs of the first `m.typing` event of `room`, if any.
fn typing_users(sync: &Value, room: &str) -> Option<Vec<String>> {
    let typing = sync_ephemeral(sync, room).into_iter().find(|e| e["type"] == "m.typing")?;
    let users = typing["content"]["user_ids"].as_array()?;
    Some(users.iter().map(|u| u.as_str().unwrap_or("?").to_owned()).collect())
}

/// The receipt `user` put on `event` with type `kind`, from the `m.receipt` events of `room`.
fn receipt_in(sync: &Value, room: &str, event: &str, kind: &str, user: &str) -> Option<Value> {
    sync_ephemeral(sync, room)
        .iter()
        .filter(|e| e["type"] == "m.receipt")
        .find_map(|e| e["content"][event][kind].get(user).cloned())
}

/// Every `m.read.private` receipt of `room` in a sync response.
fn private_receipts(sync: &Value, room: &str) -> Vec<Value> {
    let mut found = Vec::new();
    for event in sync_ephemeral(sync, room).iter().filter(|e| e["type"] == "m.receipt") {
        for by_type in event["content"].as_object().into_iter().flat_map(|c| c.values()) {
            if let Some(private) = by_type.get("m.read.private") {
                found.push(private.clone());
            }
        }
    }
    found
}

fn global_account_data(sync: &Value, kind: &str) -> Option<Value> {
    let events = sync["account_data"]["events"].as_array()?;
    events.iter().rev().find(|e| e["type"] == kind).map(|e| e["content"].clone())
}

fn room_account_data(sync: &Value, room: &str, kind: &str) -> Option<Value> {
    let events = sync["rooms"]["join"][room]["account_data"]["events"].as_array()?;
    events.iter().rev().find(|e| e["type"] == kind).map(|e| e["content"].clone())
}

fn to_device_events(sync: &Value) -> Vec<Value> {
    sync["to_device"]["events"].as_array().cloned().unwrap_or_default()
}

/// A device away while 250 to-device messages arrive (room keys, in practice) receives
/// every one, once each, over several syncs: an answer holds at most 100, and its token
/// goes on from the last one given instead of skipping the rest. A sync from the same
/// token again (a lost answer) gives the same page again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_to_device_messages_all_arrive_once() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let mut since = next_batch(&bob.sync(None, 0).await?)?;
    let bob_device = bob.device_id.clone().context("bob's device")?;
    const SENT: u64 = 250;
    for n in 0..SENT {
        let path = format!("/_matrix/client/v3/sendToDevice/m.room_key/k{n}");
        let body = json!({ "messages": { bob.me(): { &bob_device: { "n": n } } } });
        alice.put(&path, &body).await?.ok().context("sendToDevice")?;
    }
    let mut seen: Vec<u64> = Vec::new();
    for round in 0.. {
        ensure!(round < 10, "still receiving after 10 syncs: {} of {SENT}", seen.len());
        let page = bob.sync(Some(&since), 0).await?;
        let events = to_device_events(&page);
        ensure!(events.len() <= 100, "one answer held {} to-device messages", events.len());
        if round == 0 {
            let again = bob.sync(Some(&since), 0).await?;
            ensure!(to_device_events(&again) == events, "the same token gave another page");
        }
        if events.is_empty() {
            break;
        }
        seen.extend(events.iter().filter_map(|e| e["content"]["n"].as_u64()));
        since = next_batch(&page)?;
    }
    let expected: Vec<u64> = (0..SENT).collect();
    ensure!(seen == expected, "received {} messages, in order and once each? {:?}", seen.len(), &seen);
    Ok(())
}
