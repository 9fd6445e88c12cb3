//! `kill -9` during a burst of 1,000 messages, then a restart: the archive equals the
//! room's history as the server serves it, without gaps or duplicates.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use kairan_tests::Api;

use super::{ARCHIVE_DEADLINE, Setup, event_ids};

const BURST: usize = 1_000;
const SENDERS: usize = 4;

async fn send_share(api: Api, room: String, sender: usize) -> anyhow::Result<()> {
    for i in (sender..BURST).step_by(SENDERS) {
        api.send_text_ok(&room, &format!("burst-{i}"), &format!("一斉送信 {i}"))
            .await
            .with_context(|| format!("message {i}"))?;
    }
    Ok(())
}

/// How many event records the archive holds for the room (from `status`).
async fn archived_events(s: &Setup, room: &str) -> anyhow::Result<i64> {
    let status = s.bridge.json(["status"]).await?;
    Ok(status["rooms"]
        .as_array()
        .and_then(|rooms| rooms.iter().find(|r| r["room_id"] == room))
        .and_then(|r| r["records"]["event"].as_i64())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_killed_during_a_burst_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut s = Setup::start(false).await?;
    let room = s.room("一斉送信").await?;
    s.make_official(&room, "1y", "transfer").await?;
    let base = archived_events(&s, &room).await?;

    let senders: Vec<_> = (0..SENDERS).map(|k| tokio::spawn(send_share(s.alice.clone(), room.clone(), k))).collect();
    // Kill the bridge in the middle of the burst, while it is writing.
    let deadline = Instant::now() + ARCHIVE_DEADLINE;
    loop {
        let n = archived_events(&s, &room).await?;
        if n >= base + 150 {
            break;
        }
        ensure!(Instant::now() < deadline, "the bridge archived only {n} events of the burst");
        s.bridge.ensure_running()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.bridge.kill();
    let at_kill = archived_events(&s, &room).await?;
    ensure!(at_kill < base + BURST as i64, "the burst was over before the kill ({at_kill} archived)");
    // Restart while the burst goes on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.bridge.spawn()?;
    for sender in senders {
        sender.await??;
    }
    let records = s.wait_complete(&room).await?;
    let ids = event_ids(&records);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    ensure!(unique.len() == ids.len(), "duplicates in the archive");
    let burst = records.iter().filter(|r| r["kind"] == "event" && r["event_type"] == "m.room.message").count();
    ensure!(burst >= BURST, "{burst} messages archived of {BURST}");
    // Sequence numbers are dense: no gaps in the log.
    let report = s.bridge.json(["verify"]).await?;
    ensure!(report["ok"] == true, "verify after kill -9: {report}");
    eprintln!("kill -9 scenario took {:?} (killed at {at_kill} archived events)", started.elapsed());
    Ok(())
}

/// The homeserver goes away (killed) while the bridge runs, and comes back: the bridge keeps
/// retrying, and afterwards the archive again equals the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_survives_the_homeserver_going_away() -> anyhow::Result<()> {
    let mut s = Setup::start(false).await?;
    let room = s.room("ネットワーク断").await?;
    s.make_official(&room, "3y", "dispose").await?;
    super::text(&s.alice, &room, "before the outage").await?;
    s.wait_complete(&room).await?;
    s.server.kill();
    // Long enough for the bridge to fail a few syncs and requests.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.bridge.ensure_running()?;
    s.server.restart().await?;
    let after = super::text(&s.alice, &room, "after the outage").await?;
    let records = s.wait_complete(&room).await?;
    ensure!(event_ids(&records).contains(&after), "the message after the outage is not archived");
    let report = s.bridge.json(["verify"]).await?;
    ensure!(report["ok"] == true, "{report}");
    Ok(())
}
