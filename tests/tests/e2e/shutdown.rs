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
