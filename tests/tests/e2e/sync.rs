//! A waiting incremental sync returns as soon as a message is sent.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use kairan_tests::{PASSWORD, ServerOptions, TestServer, metric_value};
use serde_json::{Value, json};

/// The long-poll timeout the waiting sync asks for.
const LONG_POLL_MS: u64 = 30_000;
/// How soon after the send the message must arrive: far below the long-poll timeout.
const WAKE_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_new_message() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    // Raw HTTP for Bob: matrix-sdk would upload keys around each sync, and the server may
    // legitimately wake a sync for those.
    let bob = server.api("bob", PASSWORD).await?;

    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Lobby" })).await?;
    bob.join(&room).await?.ok().context("bob joins")?;
    let first = bob.sync(None, 0).await.context("initial sync")?;
    let mut since = first["next_batch"].as_str().context("initial sync without next_batch")?.to_owned();

    // Bob waits for news.
    let waiting = {
        let bob = bob.clone();
        let since = since.clone();
        tokio::spawn(async move {
            let response = bob.sync(Some(&since), LONG_POLL_MS).await;
            (response, Instant::now())
        })
    };
    // Give the request time to reach the server and start waiting. Nothing has happened
    // since `since`, so a correct server must still be holding it after this.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if waiting.is_finished() {
        let (response, _) = waiting.await?;
        bail!("the sync with timeout={LONG_POLL_MS} returned before anything happened: {response:?}");
    }

    let sent_at = Instant::now();
    let event_id = alice.send_text_ok(&room, "wake", "wake up").await?;

    let (response, returned_at) = tokio::time::timeout(WAKE_WITHIN, waiting)
        .await
        .with_context(|| format!("the waiting sync did not return within {WAKE_WITHIN:?} of the send"))??;
    let mut response = response?;
    ensure!(returned_at >= sent_at, "sync returned before the message was sent");

    // The server may wake for something else first; then the message must follow at once.
    loop {
        if timeline_ids(&response, &room).iter().any(|id| id == &event_id) {
            break;
        }
        if sent_at.elapsed() > WAKE_WITHIN {
            bail!("message {event_id} not delivered by sync within {WAKE_WITHIN:?}; last response {response}");
        }
        since = response["next_batch"].as_str().context("sync without next_batch")?.to_owned();
        response = tokio::time::timeout(WAKE_WITHIN, bob.sync(Some(&since), LONG_POLL_MS))
            .await
            .context("follow-up sync hung")??;
    }
    let elapsed = sent_at.elapsed();
    ensure!(elapsed < WAKE_WITHIN, "message arrived {elapsed:?} after the send");
    Ok(())
}

fn timeline_ids(sync: &Value, room_id: &str) -> Vec<String> {
    sync["rooms"]["join"][room_id]["timeline"]["events"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// A waiting sync is woken by every change on the server, but reads the database only
/// for a change in one of its user's rooms (or to the user): messages in a room Bob is
/// not in leave his sync waiting without work, a message in his room ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_sync_ignores_rooms_of_others() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().metrics()).await?;
    server.create_users(&["alice", "bob", "carol"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let carol = server.api("carol", PASSWORD).await?;
    let shared = alice.create_room(&json!({ "preset": "public_chat", "name": "Shared" })).await?;
    bob.join(&shared).await?.ok().context("bob joins")?;
    let other = carol.create_room(&json!({ "name": "Carol's" })).await?;
    let first = bob.sync(None, 0).await?;
    let since = first["next_batch"].as_str().context("next_batch")?.to_owned();

    let scrape = || async {
        let text = reqwest::get(server.metrics_url()).await?.text().await?;
        anyhow::Ok((
            metric_value(&text, "kairan_sync_wakes_total{outcome=\"read\"}"),
            metric_value(&text, "kairan_sync_wakes_total{outcome=\"skipped\"}"),
        ))
    };
    let (read_before, skipped_before) = scrape().await?;
    let waiting = {
        let bob = bob.clone();
        tokio::spawn(async move { bob.sync(Some(&since), LONG_POLL_MS).await })
    };
    // Carol talks to herself until Bob's sync has been woken (and has skipped) for it:
    // the first sends may come before his request reaches the server.
    let deadline = Instant::now() + WAKE_WITHIN;
    let mut n = 0;
    loop {
        carol.send_text_ok(&other, &format!("c{n}"), "not for bob").await?;
        n += 1;
        let (read, skipped) = scrape().await?;
        ensure!(read == read_before, "a message in a room Bob is not in made his sync read ({read_before} -> {read})");
        if skipped >= skipped_before + 3.0 {
            break;
        }
        if Instant::now() >= deadline {
            let early = if waiting.is_finished() { format!("{:?}", waiting.await?) } else { "still waiting".into() };
            bail!("Bob's sync was not woken by Carol's messages ({skipped} skipped); {early}");
        }
    }
    ensure!(!waiting.is_finished(), "Bob's sync returned for messages in a room he is not in");

    let event_id = alice.send_text_ok(&shared, "hi", "for bob").await?;
    let response = tokio::time::timeout(WAKE_WITHIN, waiting).await.context("Bob's sync did not return")???;
    let timeline = &response["rooms"]["join"][&shared]["timeline"]["events"];
    ensure!(
        timeline.as_array().is_some_and(|events| events.iter().any(|e| e["event_id"] == event_id.as_str())),
        "the message in Bob's room is not in his sync: {response}"
    );
    ensure!(response["rooms"]["join"].get(&other).is_none(), "Carol's room reached Bob: {response}");
    let (read, _) = scrape().await?;
    ensure!(read > read_before, "the message in Bob's room did not make his sync read");
    Ok(())
}
