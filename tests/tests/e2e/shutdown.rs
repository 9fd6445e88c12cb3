//! SIGTERM stops the server promptly, even with clients long-polling /sync, and nothing
//! acknowledged is lost.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use kairan_tests::{PASSWORD, ServerOptions, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_long_polls_and_keeps_events() -> anyhow::Result<()> {
    let mut server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "private_chat" })).await?;
    let sent = alice.send_text_ok(&room, "t1", "before shutdown").await?;
    let since = alice.sync(None, 0).await?["next_batch"].as_str().context("next_batch")?.to_owned();

    // A client waits in a 60 s long poll; SIGTERM must not wait for it.
    let poller = alice.clone();
    let poll = tokio::spawn(async move { poller.sync(Some(&since), 60_000).await });
    // Give the request time to reach the server and start waiting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(!poll.is_finished(), "the long poll returned before the shutdown");
    let took = server.terminate(Duration::from_secs(15)).await?;
    ensure!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let answer = poll.await?;
    ensure!(answer.is_ok(), "the waiting sync got no answer: {answer:?}");

    server.restart().await?;
    let alice = server.api("alice", PASSWORD).await?;
    let event = alice.event(&room, &sent).await?.ok()?;
    ensure!(event["content"]["body"] == "before shutdown", "event after restart: {event}");
    Ok(())
}

/// SIGTERM while clients are sending as fast as they can: the process exits within the
/// bound, and every event a client got an `event_id` for is there after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_keeps_every_acknowledged_event() -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};

    let mut server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await?;
    bob.join(&room).await?.ok()?;

    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut senders = Vec::new();
    for (who, api) in [("alice", alice.clone()), ("bob", bob.clone())] {
        let (room, acked) = (room.clone(), acknowledged.clone());
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                // The first refused or failed send means the server is going away.
                match api.send_text(&room, &format!("{who}-{i}"), &format!("{who} {i}")).await {
                    Ok(r) if r.status == 200 => match r.body["event_id"].as_str() {
                        Some(id) => acked.lock().unwrap().push(id.to_owned()),
                        None => break,
                    },
                    _ => break,
                }
            }
        }));
    }
    // Terminate once the burst is well under way (a count, not a time).
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < 40 {
        ensure!(std::time::Instant::now() < until, "the burst did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = server.terminate(Duration::from_secs(15)).await?;
    ensure!(took < Duration::from_secs(10), "shutdown took {took:?}");
    for s in senders {
        s.await?;
    }
    let acked = acknowledged.lock().unwrap().clone();

    server.restart().await?;
    let alice = server.api("alice", PASSWORD).await?;
    for id in &acked {
        let r = alice.event(&room, id).await?;
        ensure!(r.status == 200, "acknowledged event {id} is gone after the restart: {}", r.text);
    }
    Ok(())
}
