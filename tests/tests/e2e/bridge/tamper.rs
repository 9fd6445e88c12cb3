//! `verify` passes on an untouched archive and fails, naming the record, after each of: a
//! changed byte, a deleted row, an inserted row, a replaced attachment. Each tampering is
//! done on its own copy of the archive (SQLite file and attachment folder).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, ensure};
use serde_json::Value;
use sqlx::{Connection as _, SqliteConnection};

use super::{Setup, file, record, text};

/// Copies the archive database and the attachment folder into `dest`; returns the database URL.
fn copy_archive(data: &Path, dest: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dest)?;
    for name in ["archive.db", "archive.db-wal", "archive.db-shm"] {
        if data.join(name).exists() {
            std::fs::copy(data.join(name), dest.join(name))?;
        }
    }
    copy_dir(&data.join("attachments"), &dest.join("attachments"))?;
    Ok(format!("sqlite://{}", dest.join("archive.db").display()))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Runs `verify` on a copy; returns (success, JSON report, stdout text of a plain run).
async fn verify(s: &Setup, url: &str, attachments: &Path) -> anyhow::Result<(bool, Value, String)> {
    let args = |json: bool| {
        let mut a: Vec<std::ffi::OsString> =
            vec!["verify".into(), "--database".into(), url.into(), "--attachments".into(), attachments.into()];
        a.push("--public-key".into());
        a.push(s.bridge.public_key_path().into());
        if json {
            a.push("--json".into());
        }
        a
    };
    let out = s.bridge.cli(args(true)).await?;
    let report: Value =
        serde_json::from_slice(&out.stdout).with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let plain = s.bridge.cli(args(false)).await?;
    ensure!(plain.status.success() == out.status.success(), "plain and JSON runs disagree");
    Ok((out.status.success(), report, String::from_utf8_lossy(&plain.stdout).into_owned()))
}

async fn open(url: &str) -> anyhow::Result<SqliteConnection> {
    Ok(SqliteConnection::connect(url).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_verify_names_the_tampered_record() -> anyhow::Result<()> {
    let mut s = Setup::start(false).await?;
    let room = s.room("改ざん検知").await?;
    s.make_official(&room, "10y", "transfer").await?;
    let first = text(&s.alice, &room, "first message").await?;
    let target = text(&s.alice, &room, "the amount is 1000000 yen").await?;
    let victim = text(&s.bob, &room, "this row will be deleted").await?;
    let attachment = file(&s.alice, &room, "見積書.txt", "見積金額 1,000,000円".as_bytes()).await?;
    let last = text(&s.bob, &room, "last message").await?;
    let records = s.wait_complete(&room).await?;
    s.bridge.json(["checkpoint"]).await?;
    s.bridge.terminate().await?;
    let data = s.bridge.data_dir();

    // Untouched: verify passes.
    let clean = s.bridge.dir().join("clean");
    let url = copy_archive(&data, &clean)?;
    let (ok, report, text_out) = verify(&s, &url, &clean.join("attachments")).await?;
    ensure!(ok && report["ok"] == true, "untouched archive: {report}");
    ensure!(text_out.starts_with("verify: OK"), "{text_out}");
    ensure!(report["attachments"].as_i64() >= Some(1) && report["heads"].as_i64() >= Some(1), "{report}");

    let seq_of =
        |kind: &str, id: &str| -> anyhow::Result<i64> { record(&records, kind, id)?["seq"].as_i64().context("seq") };

    // 1. One changed byte in a message.
    let dir = s.bridge.dir().join("changed-byte");
    let url = copy_archive(&data, &dir)?;
    let seq = seq_of("event", &target)?;
    let mut db = open(&url).await?;
    let (payload,): (Vec<u8>,) =
        sqlx::query_as("SELECT payload FROM records WHERE seq = $1").bind(seq).fetch_one(&mut db).await?;
    let at = payload.windows(7).position(|w| w == b"1000000").context("amount in the payload")?;
    let mut changed = payload.clone();
    changed[at] = b'9';
    sqlx::query("UPDATE records SET payload = $1 WHERE seq = $2").bind(changed).bind(seq).execute(&mut db).await?;
    db.close().await?;
    expect_named(&s, &url, &dir, seq, Some(&target), "changed byte").await?;

    // 1b. A changed column the leaf covers (the sender), with the leaf hash left alone.
    let dir = s.bridge.dir().join("changed-column");
    let url = copy_archive(&data, &dir)?;
    let seq = seq_of("event", &first)?;
    let mut db = open(&url).await?;
    sqlx::query("UPDATE records SET sender = '@mallory:localhost' WHERE seq = $1").bind(seq).execute(&mut db).await?;
    db.close().await?;
    expect_named(&s, &url, &dir, seq, Some(&first), "changed column").await?;

    // 2. A deleted row.
    let dir = s.bridge.dir().join("deleted-row");
    let url = copy_archive(&data, &dir)?;
    let seq = seq_of("event", &victim)?;
    let mut db = open(&url).await?;
    sqlx::query("DELETE FROM records WHERE seq = $1").bind(seq).execute(&mut db).await?;
    db.close().await?;
    expect_named(&s, &url, &dir, seq, None, "deleted row").await?;

    // 3. An inserted row: later rows moved up by one, a forged copy put in the gap.
    let dir = s.bridge.dir().join("inserted-row");
    let url = copy_archive(&data, &dir)?;
    let seq = seq_of("event", &last)?;
    let mut db = open(&url).await?;
    sqlx::query("UPDATE records SET seq = -(seq + 1) WHERE seq >= $1").bind(seq).execute(&mut db).await?;
    sqlx::query("UPDATE records SET seq = -seq WHERE seq < 0").execute(&mut db).await?;
    sqlx::query(
        "INSERT INTO records (seq, kind, dedup_key, room_id, event_id, event_type, sender, origin_ts, archived_ts, retention, \
         expires, on_expiry, payload, payload_salt, payload_hash, note, leaf_hash, signature, disposed_by) \
         SELECT $1, kind, 'event:$forged', room_id, '$forged', event_type, sender, origin_ts, archived_ts, retention, expires, \
         on_expiry, payload, payload_salt, payload_hash, note, leaf_hash, signature, disposed_by FROM records WHERE seq = $2",
    )
    .bind(seq)
    .bind(seq + 1)
    .execute(&mut db)
    .await?;
    sqlx::query("UPDATE log_state SET size = size + 1").execute(&mut db).await?;
    db.close().await?;
    expect_named(&s, &url, &dir, seq, Some("$forged"), "inserted row").await?;

    // 4. A replaced attachment file.
    let dir = s.bridge.dir().join("replaced-attachment");
    let url = copy_archive(&data, &dir)?;
    let seq = seq_of("attachment", &attachment)?;
    let meta: Value =
        serde_json::from_str(record(&records, "attachment", &attachment)?["payload"].as_str().context("payload")?)?;
    let sha = meta["sha256"].as_str().context("sha256")?;
    let path: PathBuf = dir.join("attachments").join(&sha[..2]).join(sha);
    std::fs::write(&path, "見積金額 9,000,000円")?;
    expect_named(&s, &url, &dir, seq, Some(&attachment), "replaced attachment").await?;
    Ok(())
}

/// Verify fails and its first problem is record `seq` (and event `event_id`, if given).
async fn expect_named(
    s: &Setup,
    url: &str,
    dir: &Path,
    seq: i64,
    event_id: Option<&str>,
    what: &str,
) -> anyhow::Result<()> {
    let (ok, report, text_out) = verify(s, url, &dir.join("attachments")).await?;
    ensure!(!ok && report["ok"] == false, "{what}: verify passed: {report}");
    let first = &report["first_problem"];
    ensure!(first["seq"] == seq, "{what}: the first problem is not record {seq}: {report}");
    if let Some(e) = event_id {
        ensure!(first["event_id"] == e, "{what}: the first problem does not name {e}: {first}");
    }
    ensure!(text_out.contains(&format!("verify: FAILED: record {seq}")), "{what}: {text_out}");
    Ok(())
}
