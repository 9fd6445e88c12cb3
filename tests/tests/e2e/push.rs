//! Push rules drive unread counts: notification and highlight counts follow the rules,
//! change when a rule changes, reset on a read receipt; /notifications lists them; an
//! HTTP pusher receives them at an on-premises gateway.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use kairan_tests::{Api, PASSWORD, ServerOptions, TestServer, enc};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// `(notification_count, highlight_count)` of a room in an initial sync.
async fn counts(api: &Api, room: &str) -> anyhow::Result<(i64, i64)> {
    let sync = api.sync(None, 0).await?;
    let unread = &sync["rooms"]["join"][room]["unread_notifications"];
    let n = unread["notification_count"].as_i64().with_context(|| format!("no notification_count: {unread}"))?;
    let h = unread["highlight_count"].as_i64().with_context(|| format!("no highlight_count: {unread}"))?;
    Ok((n, h))
}

async fn send(api: &Api, room: &str, txn: &str, content: Value) -> anyhow::Result<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    let body = api.put(&path, &content).await?.ok()?;
    body["event_id"].as_str().map(str::to_owned).context("no event_id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_follow_push_rules() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Counts" })).await?;
    bob.join(&room).await?.ok()?;
    ensure!(counts(&alice, &room).await? == (0, 0), "a fresh room has unread notifications");

    send(&bob, &room, "m1", json!({ "msgtype": "m.text", "body": "hello" })).await?;
    send(&bob, &room, "m2", json!({ "msgtype": "m.text", "body": "again" })).await?;
    ensure!(counts(&alice, &room).await? == (2, 0), "two messages: {:?}", counts(&alice, &room).await?);
    ensure!(counts(&bob, &room).await? == (0, 0), "one's own messages never notify");

    let alice_id = alice.me().to_owned();
    let mention = send(
        &bob,
        &room,
        "m3",
        json!({ "msgtype": "m.text", "body": "alice: look", "m.mentions": { "user_ids": [alice_id] } }),
    )
    .await?;
    ensure!(counts(&alice, &room).await? == (3, 1), "a mention highlights: {:?}", counts(&alice, &room).await?);

    // A room rule with no actions silences the room: new messages no longer count.
    let rule = format!("/_matrix/client/v3/pushrules/global/room/{}", enc(&room));
    alice.put(&rule, &json!({ "actions": [] })).await?.ok().context("PUT room rule")?;
    let stored = alice.get(&rule).await?.ok()?;
    ensure!(stored["rule_id"] == room.as_str() && stored["actions"] == json!([]), "stored rule: {stored}");
    send(&bob, &room, "m4", json!({ "msgtype": "m.text", "body": "quiet now" })).await?;
    ensure!(counts(&alice, &room).await? == (3, 1), "a silenced room still counts: {:?}", counts(&alice, &room).await?);

    // Disabling the rule brings notifications back.
    alice.put(&format!("{rule}/enabled"), &json!({ "enabled": false })).await?.ok()?;
    let enabled = alice.get(&format!("{rule}/enabled")).await?.ok()?;
    ensure!(enabled["enabled"] == false, "rule still enabled: {enabled}");
    send(&bob, &room, "m5", json!({ "msgtype": "m.text", "body": "loud again" })).await?;
    ensure!(counts(&alice, &room).await? == (4, 1), "re-enabled notifications: {:?}", counts(&alice, &room).await?);

    // The rule change reached alice's clients as account data.
    let sync = alice.sync(None, 0).await?;
    let rules = sync["account_data"]["events"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["type"] == "m.push_rules"))
        .cloned()
        .context("no m.push_rules account data in sync")?;
    ensure!(
        rules["content"]["global"]["room"].as_array().is_some_and(|r| r.iter().any(|x| x["rule_id"] == room.as_str())),
        "the room rule is missing from m.push_rules: {rules}"
    );

    // /notifications lists what notified, and `only=highlight` just the mention.
    let list = alice.get("/_matrix/client/v3/notifications").await?.ok()?;
    let items = list["notifications"].as_array().context("no notifications")?;
    ensure!(items.len() == 4, "expected 4 notifications, got {}", items.len());
    let highlights = alice.get("/_matrix/client/v3/notifications?only=highlight").await?.ok()?;
    let ids: Vec<&str> = highlights["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["event"]["event_id"].as_str())
        .collect();
    ensure!(ids == [mention.as_str()], "highlights: {ids:?}");

    // Reading the latest message resets the counts.
    let latest = send(&bob, &room, "m6", json!({ "msgtype": "m.text", "body": "last" })).await?;
    alice
        .post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&latest)), &json!({}))
        .await?
        .ok()?;
    ensure!(counts(&alice, &room).await? == (0, 0), "after a read receipt: {:?}", counts(&alice, &room).await?);

    // Per-thread counts, when the client asks for them: a reply in a thread counts under
    // the thread's root, not the main timeline.
    let root = send(&bob, &room, "t0", json!({ "msgtype": "m.text", "body": "thread root" })).await?;
    send(
        &bob,
        &room,
        "t1",
        json!({ "msgtype": "m.text", "body": "in thread", "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
    )
    .await?;
    let filter = json!({ "room": { "timeline": { "unread_thread_notifications": true } } }).to_string();
    let sync = alice.get(&format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc(&filter))).await?.ok()?;
    let joined = &sync["rooms"]["join"][&room];
    ensure!(joined["unread_notifications"]["notification_count"] == 1, "main timeline count: {joined}");
    ensure!(
        joined["unread_thread_notifications"][&root]["notification_count"] == 1,
        "thread count under its root: {joined}"
    );
    ensure!(counts(&alice, &room).await? == (2, 0), "without the filter, threads add to the room's count");
    // A threaded receipt on the reply reads the thread only.
    let reply_id = joined["timeline"]["events"]
        .as_array()
        .and_then(|evs| evs.iter().rev().find(|e| e["content"]["body"] == "in thread"))
        .and_then(|e| e["event_id"].as_str())
        .context("thread reply not in the timeline")?
        .to_owned();
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&reply_id)),
            &json!({ "thread_id": root }),
        )
        .await?
        .ok()?;
    let sync = alice.get(&format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc(&filter))).await?.ok()?;
    let joined = &sync["rooms"]["join"][&room];
    ensure!(joined["unread_notifications"]["notification_count"] == 1, "main still unread: {joined}");
    ensure!(
        joined["unread_thread_notifications"].get(&root).is_none()
            || joined["unread_thread_notifications"][&root]["notification_count"] == 0,
        "thread read: {joined}"
    );

    // Server-default rules cannot be deleted; unknown rules are 404.
    let r = alice
        .request(reqwest::Method::DELETE, "/_matrix/client/v3/pushrules/global/override/.m.rule.master", None)
        .await?;
    kairan_tests::assert_matrix_error_in(&r, 400, &["M_BAD_JSON", "M_INVALID_PARAM"])?;
    let r = alice.get("/_matrix/client/v3/pushrules/global/override/nope").await?;
    kairan_tests::assert_matrix_error(&r, 404, "M_NOT_FOUND")?;
    Ok(())
}

/// Accepts one HTTP request on `listener` and returns its body as JSON.
async fn receive_push(listener: &TcpListener) -> anyhow::Result<Value> {
    let reply = "{\"rejected\":[]}";
    let ok = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    receive_push_answering(listener, &ok).await
}

/// Reads one notification from `listener` and answers it with the raw HTTP `response`.
async fn receive_push_answering(listener: &TcpListener, response: &str) -> anyhow::Result<Value> {
    let (mut socket, _) = listener.accept().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await?;
        ensure!(n > 0, "connection closed before the request was complete");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
                .context("no content-length")??;
            if buf.len() >= head_end + 4 + length {
                let body = buf[head_end + 4..head_end + 4 + length].to_vec();
                socket.write_all(response.as_bytes()).await?;
                return Ok(serde_json::from_slice(&body)?);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_pusher_reaches_the_gateway() -> anyhow::Result<()> {
    let gateway = TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", gateway.local_addr()?);
    let url = format!("{origin}/_matrix/push/v1/notify");
    let server = TestServer::start(ServerOptions::default().push_gateway(&origin)).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await?;
    bob.join(&room).await?.ok()?;

    let pusher = json!({
        "pushkey": "device-token-1", "kind": "http", "app_id": "jp.lg.pref.chat",
        "app_display_name": "Chat", "device_display_name": "Phone", "lang": "ja",
        "data": { "url": url },
    });
    alice.post("/_matrix/client/v3/pushers/set", &pusher).await?.ok().context("set pusher")?;
    let listed = alice.get("/_matrix/client/v3/pushers").await?.ok()?;
    ensure!(listed["pushers"][0]["pushkey"] == "device-token-1", "pushers: {listed}");
    let bad = alice
        .post("/_matrix/client/v3/pushers/set", &json!({ "pushkey": "k", "kind": "http", "app_id": "a", "app_display_name": "A", "device_display_name": "D", "lang": "en", "data": { "url": "http://x/" } }))
        .await?;
    kairan_tests::assert_matrix_error(&bad, 400, "M_INVALID_PARAM")?;
    // Only the operator's gateways, at the notify path exactly: not another address of
    // the closed network, not the gateway's other paths, not a URL that ends the same.
    for url in [
        "http://127.0.0.1:5432/_matrix/push/v1/notify".to_owned(),
        "http://169.254.169.254/_matrix/push/v1/notify".to_owned(),
        format!("{origin}/admin?x=/_matrix/push/v1/notify"),
        format!("{origin}/other/_matrix/push/v1/notify"),
        format!("http://user@{}/_matrix/push/v1/notify", gateway.local_addr()?),
    ] {
        let refused = alice
            .post(
                "/_matrix/client/v3/pushers/set",
                &json!({ "pushkey": "k2", "kind": "http", "app_id": "a", "app_display_name": "A",
                         "device_display_name": "D", "lang": "en", "data": { "url": url } }),
            )
            .await?;
        kairan_tests::assert_matrix_error(&refused, 400, "M_INVALID_PARAM").with_context(|| url.clone())?;
    }

    let event_id = send(&bob, &room, "p1", json!({ "msgtype": "m.text", "body": "ping" })).await?;
    let push =
        tokio::time::timeout(Duration::from_secs(20), receive_push(&gateway)).await.context("no push arrived")??;
    let n = &push["notification"];
    ensure!(n["event_id"] == event_id.as_str(), "pushed event: {push}");
    ensure!(n["room_id"] == room.as_str() && n["sender"] == bob.me(), "pushed fields: {push}");
    ensure!(
        n["devices"][0]["pushkey"] == "device-token-1" && n["devices"][0]["app_id"] == "jp.lg.pref.chat",
        "devices: {push}"
    );
    ensure!(n["content"]["body"] == "ping", "content: {push}");
    Ok(())
}

/// An allowed gateway that answers with a redirect does not send the server on to the
/// address it names: a pusher cannot reach into the closed network through a gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_gateway_redirects_are_not_followed() -> anyhow::Result<()> {
    let gateway = TcpListener::bind("127.0.0.1:0").await?;
    let inner = TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", gateway.local_addr()?);
    let server = TestServer::start(ServerOptions::default().push_gateway(&origin)).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await?;
    bob.join(&room).await?.ok()?;
    let pusher = json!({
        "pushkey": "device-token-1", "kind": "http", "app_id": "jp.lg.pref.chat",
        "app_display_name": "Chat", "device_display_name": "Phone", "lang": "ja",
        "data": { "url": format!("{origin}/_matrix/push/v1/notify") },
    });
    alice.post("/_matrix/client/v3/pushers/set", &pusher).await?.ok().context("set pusher")?;
    let redirect = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{}/_matrix/push/v1/notify\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        inner.local_addr()?
    );
    send(&bob, &room, "r1", json!({ "msgtype": "m.text", "body": "ping" })).await?;
    tokio::time::timeout(Duration::from_secs(20), receive_push_answering(&gateway, &redirect))
        .await
        .context("no push arrived at the gateway")??;
    // A followed redirect would connect at once; a few seconds of silence is the proof.
    let followed = tokio::time::timeout(Duration::from_secs(3), inner.accept()).await;
    ensure!(followed.is_err(), "the server followed the gateway's redirect to another address");
    Ok(())
}
