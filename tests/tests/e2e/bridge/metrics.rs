//! The bridge's Prometheus metrics (`metrics_listen`): before anything is official the
//! archive counters and tree-head gauges are zero; after an official room with messages
//! and a file is archived, checkpointed and co-signed, a scrape of the running daemon
//! shows the records, the attachment's bytes, the newest signed and co-signed tree heads
//! as `status` reports them, and a small archive lag. The listener stops with the daemon.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use kairan_tests::{PASSWORD, ServerOptions, TestBridge, TestServer, metric_value};

use super::{ARCHIVE, ARCHIVE_DEADLINE, ARCHIVE_PASSWORD, Setup, file, text};
use crate::admin::admin_api;

/// Messages the test sends; the records counter must show at least these.
const MESSAGES: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_metrics_show_the_archive_and_its_tree_heads() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().archive_user(ARCHIVE)).await?;
    server.create_users(&["alice", "bob"]).await?;
    server.create_user("archive", ARCHIVE_PASSWORD, false).await?;
    let admin = admin_api(&server).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let bridge = TestBridge::start_with_metrics(&server, ARCHIVE, ARCHIVE_PASSWORD, false).await?;
    let mut s = Setup { server, admin, alice, bob, bridge };

    // Nothing official yet: the listener answers, the database is up, nothing is archived.
    let before = s.bridge.scrape(ARCHIVE_DEADLINE).await?;
    ensure!(before.ends_with("# EOF\n"), "not OpenMetrics text:\n{before}");
    ensure!(metric_value(&before, "kairan_bridge_database_up") == 1.0, "database_up:\n{before}");
    ensure!(metric_value(&before, "kairan_bridge_records_archived_total{kind=\"event\"}") == 0.0, "records:\n{before}");
    ensure!(metric_value(&before, "kairan_bridge_tree_head_size") == 0.0, "head before:\n{before}");
    ensure!(metric_value(&before, "kairan_bridge_tree_head_timestamp_seconds") == 0.0, "head ts before:\n{before}");
    ensure!(metric_value(&before, "kairan_bridge_official_rooms") == 0.0, "rooms before:\n{before}");
    ensure!(metric_value(&before, "kairan_bridge_attachments_stored_bytes") == 0.0, "bytes before:\n{before}");

    // The work: an official room with messages and a file, archived completely.
    let room = s.room("監視テスト").await?;
    s.make_official(&room, "5y", "dispose").await?;
    for i in 0..MESSAGES {
        text(&s.alice, &room, &format!("報告 {i}")).await?;
    }
    let minutes = "月例報告\n".repeat(40);
    file(&s.alice, &room, "報告.txt", minutes.as_bytes()).await?;
    let records = s.wait_complete(&room).await?;
    let events = records.iter().filter(|r| r["kind"] == "event").count();
    ensure!(events > MESSAGES, "{events} event records");

    // A checkpoint, co-signed by a second office's key, with the daemon still running.
    let cosigner = s.bridge.dir().join("archives.key");
    let cosigner = cosigner.to_str().context("path")?;
    s.bridge.json(["keygen", "--out", cosigner]).await?;
    s.bridge.json(["checkpoint"]).await?;
    s.bridge.json(["cosign", "--key", cosigner]).await?;
    let status = s.bridge.json(["status"]).await?;
    let head_size = status["latest_head"]["tree_size"].as_f64().context("no latest head")?;
    let head_ts = status["latest_head"]["created_ts"].as_f64().context("no head time")? / 1000.0;

    let after = s.bridge.scrape(ARCHIVE_DEADLINE).await?;
    let archived = metric_value(&after, "kairan_bridge_records_archived_total{kind=\"event\"}");
    ensure!(archived >= MESSAGES as f64, "event records counted {archived}, sent {MESSAGES}:\n{after}");
    ensure!(archived >= events as f64, "event records counted {archived}, archived {events}:\n{after}");
    ensure!(
        metric_value(&after, "kairan_bridge_records_archived_total{kind=\"attachment\"}") >= 1.0,
        "attachment:\n{after}"
    );
    ensure!(
        metric_value(&after, "kairan_bridge_attachments_stored_bytes") >= minutes.len() as f64,
        "attachment bytes (file of {}):\n{after}",
        minutes.len()
    );
    ensure!(metric_value(&after, "kairan_bridge_official_rooms") == 1.0, "rooms:\n{after}");
    ensure!(metric_value(&after, "kairan_bridge_log_records") >= records.len() as f64, "log size:\n{after}");
    // The daemon signs heads too (every 2 s here), but only when the log grew, which it no
    // longer does: the newest head is the co-signed checkpoint `status` shows.
    ensure!(metric_value(&after, "kairan_bridge_tree_head_size") == head_size, "head size {head_size}:\n{after}");
    ensure!(head_size >= records.len() as f64, "the head covers {head_size} of {} records", records.len());
    let ts = metric_value(&after, "kairan_bridge_tree_head_timestamp_seconds");
    ensure!((ts - head_ts).abs() < 0.01, "head time {head_ts}:\n{after}");
    ensure!(metric_value(&after, "kairan_bridge_tree_head_cosigned") == 1.0, "cosigned:\n{after}");
    ensure!(metric_value(&after, "kairan_bridge_cosigned_tree_head_size") == head_size, "cosigned size:\n{after}");
    // Complete, and read through every 2 s: the lag is a few seconds, not the daemon's age.
    let lag = metric_value(&after, "kairan_bridge_archive_lag_seconds");
    ensure!(after.contains("kairan_bridge_archive_lag_seconds "), "no lag:\n{after}");
    ensure!(lag < 30.0, "archive lag {lag} s for a complete archive:\n{after}");
    ensure!(metric_value(&after, "kairan_bridge_database_up") == 1.0, "database_up:\n{after}");
    ensure!(!after.contains(&room), "a room ID in a label:\n{after}");

    // The listener stops with the daemon.
    let url = s.bridge.metrics_url();
    s.bridge.terminate().await?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    ensure!(client.get(&url).send().await.is_err(), "{url} still answers after the daemon stopped");
    Ok(())
}
