//! `kairan-homeserver backup` while clients send, and `restore` on a fresh server: every
//! message acknowledged before the backup began is there after the restore.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use kairan_tests::{Backend, PASSWORD, ServerOptions, TestServer, enc};
use serde_json::json;

both_backends!(scenario);

/// Messages sent before the backup, one after another.
const BEFORE: usize = 10;

/// An acknowledged message: its event ID, its text, and when the `event_id` came back.
type Acked = (String, String, Instant);

async fn scenario(backend: Backend) -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().backend(backend)).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "backup" })).await?;
    bob.join(&room).await?.ok().context("bob joins")?;

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    for i in 0..BEFORE {
        let text = format!("before {i}");
        let id = alice.send_text_ok(&room, &format!("b{i}"), &text).await?;
        acked.lock().unwrap().push((id, text, Instant::now()));
    }
    let upload = alice.upload(b"plain text that survives a backup\n".to_vec(), "text/plain", Some("a.txt")).await?;
    let mxc = upload.ok().context("upload")?["content_uri"].as_str().context("content_uri")?.to_owned();

    // Two clients keep sending while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for (who, api) in [("alice", alice.clone()), ("bob", bob.clone())] {
        let (stop, acked, room) = (stop.clone(), acked.clone(), room.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("{who} during {n}");
                let id = api.send_text_ok(&room, &format!("{who}-d{n}"), &text).await?;
                acked.lock().unwrap().push((id, text, Instant::now()));
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    // Let the senders get going, so that the backup overlaps real writes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().unwrap().len() < BEFORE + 6 {
        ensure!(Instant::now() < deadline, "the senders did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let backup_dir = server.dir().join("backup");
    let began = Instant::now();
    let out = server.cli_ok([std::ffi::OsStr::new("backup"), backup_dir.as_os_str()]).await?;
    let ended = Instant::now();
    // Keep sending a little after, then stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut during_total = 0;
    for s in senders {
        during_total += s.await??;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(stdout.contains("backed up"), "backup output: {stdout}");
    let acked = acked.lock().unwrap().clone();
    let during = acked.iter().filter(|(_, _, t)| *t > began && *t < ended).count();
    let must_have: Vec<&Acked> = acked.iter().filter(|(_, _, t)| *t < began).collect();
    ensure!(must_have.len() > BEFORE, "no message was acknowledged between the senders' start and the backup");

    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(backup_dir.join("manifest.json"))?)?;
    let backend_name = if backend == Backend::Sqlite { "sqlite" } else { "postgres" };
    ensure!(manifest["backend"] == backend_name, "manifest: {manifest}");
    ensure!(manifest["server_name"] == server.server_name(), "manifest: {manifest}");
    ensure!(manifest["schema_version"].as_i64().unwrap_or(0) >= 9, "manifest: {manifest}");
    ensure!(manifest["media_files"].as_u64().unwrap_or(0) >= 1, "manifest: {manifest}");
    ensure!(backup_dir.join("signing.key").exists() && backup_dir.join("kairan.toml").exists(), "key or config");

    // A backup never overwrites: the same directory again is refused with one line.
    let again = server.cli([std::ffi::OsStr::new("backup"), backup_dir.as_os_str()]).await?;
    let stderr = String::from_utf8_lossy(&again.stderr);
    ensure!(!again.status.success() && stderr.contains("not empty"), "backup into a full directory: {stderr}");
    ensure!(stderr.trim().lines().count() == 1, "not one line: {stderr}");

    // Restore on "a new machine": a fresh directory and database, then start.
    let mut restored = TestServer::prepare(ServerOptions::default().backend(backend)).await?;
    restored.cli_ok([std::ffi::OsStr::new("restore"), backup_dir.as_os_str()]).await?;
    // The database holds data now: a second restore must be forced.
    let again = restored.cli([std::ffi::OsStr::new("restore"), backup_dir.as_os_str()]).await?;
    let stderr = String::from_utf8_lossy(&again.stderr);
    ensure!(!again.status.success() && stderr.contains("--force"), "a second restore was not refused: {stderr}");
    restored.cli_ok([std::ffi::OsStr::new("restore"), backup_dir.as_os_str(), std::ffi::OsStr::new("--force")]).await?;
    ensure!(
        std::fs::read(restored.signing_key_path())? == std::fs::read(server.signing_key_path())?,
        "the signing key was not restored"
    );
    restored.launch().await?;

    let alice = restored.api("alice", PASSWORD).await?;
    for (id, text, _) in &must_have {
        let r = alice.event(&room, id).await?;
        ensure!(r.status == 200, "{id} ({text}) acknowledged before the backup is missing: {} {}", r.status, r.text);
        let body: serde_json::Value = serde_json::from_str(&r.text)?;
        ensure!(body["content"]["body"] == text.as_str(), "{id}: {body}");
    }
    let (server_name, media_id) = mxc.trim_start_matches("mxc://").split_once('/').context("mxc")?;
    let media = alice.get(&format!("/_matrix/client/v1/media/download/{}/{}", enc(server_name), enc(media_id))).await?;
    ensure!(media.status == 200 && media.text.contains("survives a backup"), "media: {} {}", media.status, media.text);
    // The restored server works on: a new message after the restored ones.
    alice.send_text_ok(&room, "after-restore", "after the restore").await?;
    eprintln!(
        "backup: {} acknowledged before it began, {during} while it ran, {during_total} sent concurrently",
        must_have.len()
    );
    Ok(())
}
