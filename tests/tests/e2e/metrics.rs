//! The Prometheus metrics listener: a scrape after some work shows counters for exactly
//! that work, gauges follow live long polls, and labels never carry IDs.

use std::{
    io::Cursor,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use image::{DynamicImage, ImageFormat, RgbaImage};
use kairan_tests::{Backend, PASSWORD, ServerOptions, TestServer, metric_value};
use serde_json::json;

both_backends!(scenario);

/// Messages the test sends; the counters must show at least these.
const MESSAGES: usize = 5;

async fn scrape(server: &TestServer) -> anyhow::Result<String> {
    let response = reqwest::get(server.metrics_url()).await.context("GET /metrics")?;
    ensure!(response.status() == 200, "GET /metrics answered {}", response.status());
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    ensure!(content_type.starts_with("application/openmetrics-text"), "content type {content_type:?}");
    Ok(response.text().await?)
}

fn png() -> anyhow::Result<Vec<u8>> {
    let image =
        DynamicImage::ImageRgba8(RgbaImage::from_fn(16, 16, |x, y| image::Rgba([x as u8 * 16, y as u8, 7, 255])));
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png)?;
    Ok(out.into_inner())
}

async fn scenario(backend: Backend) -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().backend(backend).metrics()).await?;
    server.create_users(&["alice"]).await?;

    // Before the work: the endpoint answers, the database is up, nothing was persisted yet.
    let before = scrape(&server).await?;
    ensure!(metric_value(&before, "kairan_database_up") == 1.0, "database_up:\n{before}");
    ensure!(metric_value(&before, "kairan_database_pool_connections") >= 1.0, "pool:\n{before}");
    ensure!(metric_value(&before, "kairan_database_pool_max") >= 1.0, "pool max:\n{before}");
    ensure!(
        metric_value(&before, "kairan_events_persisted_total{origin=\"local\"}") == 0.0,
        "events before:\n{before}"
    );
    ensure!(metric_value(&before, "kairan_media_stored_bytes") == 0.0, "media before:\n{before}");
    let client_before = metric_value(&before, "kairan_http_requests_total{group=\"client\",status=\"2xx\"}");

    // The work: login, a room, messages, an upload, a refused request, a sync.
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "name": "metrics" })).await?;
    for i in 0..MESSAGES {
        alice.send_text_ok(&room, &format!("m{i}"), &format!("message {i}")).await?;
    }
    let image = png()?;
    alice.upload(image.clone(), "image/png", Some("a.png")).await?.ok().context("upload")?;
    let refused = alice.get("/_matrix/client/v3/rooms/!nope:localhost/state/m.room.name/").await?;
    ensure!(refused.status >= 400 && refused.status < 500, "expected a 4xx, got {}", refused.status);
    let first = alice.sync(None, 0).await?;
    let since = first["next_batch"].as_str().context("next_batch")?.to_owned();

    let after = scrape(&server).await?;
    let client = metric_value(&after, "kairan_http_requests_total{group=\"client\",status=\"2xx\"}") - client_before;
    // login + createRoom + the sends, at least (the harness's readiness polls come before `before`).
    ensure!(client >= (2 + MESSAGES) as f64, "client 2xx grew by {client}:\n{after}");
    ensure!(
        metric_value(&after, "kairan_http_requests_total{group=\"client\",status=\"4xx\"}") >= 1.0,
        "4xx:\n{after}"
    );
    ensure!(metric_value(&after, "kairan_http_requests_total{group=\"sync\",status=\"2xx\"}") >= 1.0, "sync:\n{after}");
    ensure!(
        metric_value(&after, "kairan_http_requests_total{group=\"media\",status=\"2xx\"}") >= 1.0,
        "media:\n{after}"
    );
    ensure!(
        metric_value(&after, "kairan_http_request_duration_seconds_count{group=\"client\"}") >= (2 + MESSAGES) as f64,
        "latency count:\n{after}"
    );
    // The room's creation events and every message.
    let persisted = metric_value(&after, "kairan_events_persisted_total{origin=\"local\"}");
    ensure!(persisted >= (MESSAGES + 1) as f64, "events persisted {persisted}:\n{after}");
    ensure!(metric_value(&after, "kairan_events_persisted_total{origin=\"remote\"}") == 0.0, "remote events:\n{after}");
    ensure!(metric_value(&after, "kairan_media_stored_bytes") == image.len() as f64, "media bytes:\n{after}");
    ensure!(metric_value(&after, "kairan_sync_active{kind=\"sync\"}") == 0.0, "no sync is active now:\n{after}");
    // Bounded labels: no room, user or event ID ever appears in a series.
    ensure!(
        !after.contains('!') && !after.contains('@') && !after.contains('$'),
        "an ID leaked into a label:\n{after}"
    );

    // A long poll in flight shows in the gauge, and leaves it when answered.
    let poller = alice.clone();
    let poll = tokio::spawn(async move { poller.sync(Some(&since), 20_000).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&server).await?;
        if metric_value(&text, "kairan_sync_active{kind=\"sync\"}") == 1.0 {
            break;
        }
        ensure!(Instant::now() < deadline, "the long poll never showed in kairan_sync_active:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice.send_text_ok(&room, "wake", "wake up").await?;
    tokio::time::timeout(Duration::from_secs(10), poll).await.context("the long poll did not end")???;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&server).await?;
        if metric_value(&text, "kairan_sync_active{kind=\"sync\"}") == 0.0 {
            ensure!(
                metric_value(&text, "kairan_events_persisted_total{origin=\"local\"}") == persisted + 1.0,
                "the wake-up message was not counted:\n{text}"
            );
            break;
        }
        ensure!(Instant::now() < deadline, "kairan_sync_active stayed up after the poll ended:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Only /metrics is served there.
    let other = reqwest::get(server.metrics_url().replace("/metrics", "/_matrix/client/versions")).await?;
    ensure!(other.status() == 404, "the metrics listener served a client path: {}", other.status());
    Ok(())
}

/// Federation metrics: an event for a server that cannot be reached stays queued for it,
/// and every failed attempt is counted under its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_queue_and_failures() -> anyhow::Result<()> {
    // Nothing listens on port 1: every delivery to dead.example fails at once.
    let options = ServerOptions::default().metrics().federation().host_override("dead.example", "127.0.0.1:1");
    let server = TestServer::start(options).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "name": "federation metrics" })).await?;
    // Banning a user of another server sends the ban to that server.
    let ban = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", kairan_tests::enc(&room)),
            &json!({ "user_id": "@bob:dead.example" }),
        )
        .await?;
    ensure!(ban.status == 200, "ban: {} {}", ban.status, ban.text);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(&server).await?;
        let failures = metric_value(&text, "kairan_federation_send_failures_total{destination=\"dead.example\"}");
        let depth = metric_value(&text, "kairan_federation_queue_depth{destination=\"dead.example\"}");
        if failures >= 1.0 && depth >= 1.0 {
            break;
        }
        ensure!(Instant::now() < deadline, "failures {failures}, depth {depth} for dead.example:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
