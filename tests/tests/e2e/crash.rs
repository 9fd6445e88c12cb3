//! SIGKILL during a burst of concurrent sends loses nothing that was acknowledged.
//!
//! Four users send as fast as they can; the server is killed (no graceful shutdown) once
//! enough sends have been acknowledged, then restarted on the same data. Every event whose
//! send returned 200 must be there, exactly once, and the room state must be intact.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use kairan_tests::{Api, Backend, PASSWORD, ServerOptions, TestServer};
use serde_json::json;

use crate::support::{ensure_unique, paginate};

const SENDERS: usize = 4;
/// Kill once this many sends have been acknowledged.
const KILL_AFTER: usize = 60;

both_backends!(scenario);

/// What one sender saw before the kill.
#[derive(Default)]
struct SenderLog {
    /// (txn ID, body, event ID) of every send that returned 200.
    acked: Vec<(String, String, String)>,
    /// The send that was in flight when the connection died: (txn ID, body).
    in_flight: Option<(String, String)>,
    /// Responses that were neither 200 nor a dead connection.
    unexpected: Vec<String>,
}

async fn scenario(backend: Backend) -> anyhow::Result<()> {
    let mut server = TestServer::start(ServerOptions::default().backend(backend)).await?;
    let names: Vec<String> = (0..SENDERS).map(|i| format!("sender{i}")).collect();
    server.create_users(&["alice"]).await?;
    for name in &names {
        server.create_user(name, PASSWORD, false).await?;
    }
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Burst room" })).await?;
    let mut senders = Vec::new();
    for name in &names {
        let api = server.api(name, PASSWORD).await?;
        api.join(&room).await?.ok().with_context(|| format!("{name} joins"))?;
        senders.push(api);
    }

    let acked_total = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(n, api)| {
            let api = api.clone();
            let room = room.clone();
            let acked_total = acked_total.clone();
            tokio::spawn(async move {
                let mut log = SenderLog::default();
                for i in 0..1_000_000 {
                    let (txn, body) = (format!("burst-{n}-{i}"), format!("sender {n} message {i}"));
                    match api.send_text(&room, &txn, &body).await {
                        Ok(r) if r.status == 200 => {
                            let event_id = r.body["event_id"].as_str().unwrap_or_default().to_owned();
                            log.acked.push((txn, body, event_id));
                            acked_total.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => log.unexpected.push(format!("{txn}: {} {}", r.status, r.text)),
                        Err(_) => {
                            // The server is gone: this send may or may not have been stored.
                            log.in_flight = Some((txn, body));
                            break;
                        }
                    }
                }
                log
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    while acked_total.load(Ordering::SeqCst) < KILL_AFTER {
        if Instant::now() > deadline || tasks.iter().all(|t| t.is_finished()) {
            bail!("only {} sends acknowledged before the deadline", acked_total.load(Ordering::SeqCst));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ensure!(server.is_running(), "the server died on its own during the burst:\n{}", server.logs());
    server.kill();

    let logs: Vec<SenderLog> = futures::future::try_join_all(tasks).await?;
    let unexpected: Vec<&String> = logs.iter().flat_map(|l| &l.unexpected).collect();
    ensure!(unexpected.is_empty(), "concurrent sends failed before the kill: {unexpected:#?}");
    let acked: Vec<&(String, String, String)> = logs.iter().flat_map(|l| &l.acked).collect();
    ensure!(acked.len() >= KILL_AFTER, "{} acknowledged sends", acked.len());

    server.restart().await.context("restart after SIGKILL")?;

    // Fresh HTTP clients (the old connections died with the server), same access tokens:
    // sessions must survive the crash too.
    let alice = Api::anonymous(&server.url()).with_token(alice.token());
    alice
        .get("/_matrix/client/v3/account/whoami")
        .await?
        .ok()
        .context("alice's access token no longer works after the restart")?;

    // Every acknowledged event is there with its content.
    let mut missing = Vec::new();
    for (_, body, event_id) in &acked {
        let response = alice.event(&room, event_id).await?;
        if response.status != 200 || response.body["content"]["body"] != body.as_str() {
            missing.push(format!("{event_id} ({body}): {} {}", response.status, response.text));
        }
    }
    ensure!(missing.is_empty(), "{} of {} acknowledged events lost: {missing:#?}", missing.len(), acked.len());

    // The room state is intact.
    ensure!(alice.state(&room, "m.room.name", "").await?["name"] == "Burst room", "room name lost");
    let mut expected_members: Vec<String> = names.iter().map(|n| server.user_id(n)).collect();
    expected_members.push(server.user_id("alice"));
    expected_members.sort();
    ensure!(alice.joined_members(&room).await? == expected_members, "members changed across the crash");

    // The senders carry on. Each first retries the send that was cut off, with the same
    // transaction ID: whether or not it was stored before the kill, it must now exist once.
    for (api, log) in senders.iter().zip(&logs) {
        let api = Api::anonymous(&server.url()).with_token(api.token());
        if let Some((txn, body)) = &log.in_flight {
            api.send_text_ok(&room, txn, body).await.with_context(|| format!("retrying {txn} after restart"))?;
        }
        api.send_text_ok(&room, "after-restart", "after the restart").await.context("sending after the restart")?;
    }

    // Nothing is duplicated, every acknowledged and every retried message is in the timeline once.
    let timeline = paginate(&alice, &room, "f", 100).await?;
    ensure_unique(&timeline)?;
    let bodies: Vec<&str> = timeline
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    let mut expected: Vec<&str> = acked.iter().map(|(_, body, _)| body.as_str()).collect();
    expected.extend(logs.iter().filter_map(|l| l.in_flight.as_ref().map(|(_, body)| body.as_str())));
    for body in expected {
        let copies = bodies.iter().filter(|b| **b == body).count();
        ensure!(copies == 1, "{copies} copies of {body:?} in the timeline");
    }
    let after = bodies.iter().filter(|b| **b == "after the restart").count();
    ensure!(after == SENDERS, "{after} post-restart messages in the timeline, expected {SENDERS}");
    Ok(())
}
