//! An official room with text, edits, reactions, a thread, an attachment, a redaction and
//! malformed events is archived completely, history from before the bridge joined
//! included; a room that is not official is refused. Run with the archive on SQLite and
//! on PostgreSQL.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use kairan_tests::enc;
use serde_json::{Value, json};

use super::{ARCHIVE, ARCHIVE_DEADLINE, Setup, edit, event_ids, file, payload, record, redact, send, sha256_hex, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_archives_an_official_room_completely_sqlite() -> anyhow::Result<()> {
    scenario(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_archives_an_official_room_completely_postgres() -> anyhow::Result<()> {
    scenario(true).await
}

async fn scenario(postgres: bool) -> anyhow::Result<()> {
    let mut s = Setup::start(postgres).await?;
    let room = s.room("予算委員会").await?;
    // History from before the room was official (and before the bridge joined).
    let early = text(&s.alice, &room, "official record starts later, but this is history").await?;
    s.make_official(&room, "5y", "dispose").await?;

    // A room that is not official: the bridge joins, sees no policy, and leaves.
    let private = s.alice.create_room(&json!({ "name": "雑談", "invite": [ARCHIVE] })).await?;
    text(&s.alice, &private, "not a record").await?;

    let hello = text(&s.alice, &room, "来年度予算の件です").await?;
    let edit1 = edit(&s.alice, &room, &hello, "来年度予算案の件です").await?;
    let edit2 = edit(&s.alice, &room, &hello, "来年度予算案（第2版）の件です").await?;
    let reaction = send(
        &s.bob,
        &room,
        "m.reaction",
        &json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": hello, "key": "👍" } }),
    )
    .await?;
    let root = text(&s.bob, &room, "スレッドで議論しましょう").await?;
    let reply = send(
        &s.alice,
        &room,
        "m.room.message",
        &json!({
            "msgtype": "m.text", "body": "賛成です",
            "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true, "m.in_reply_to": { "event_id": root } },
        }),
    )
    .await?;
    let minutes = "議事録\n1. 予算案\n".repeat(20);
    let attachment = file(&s.alice, &room, "議事録.txt", minutes.as_bytes()).await?;
    let mistake = text(&s.bob, &room, "誤って送信したメッセージ").await?;
    // The original must be in the archive before it is redacted, as it would be in practice.
    let m = mistake.clone();
    s.bridge
        .wait_records(&room, "the message before its redaction", ARCHIVE_DEADLINE, |r| event_ids(r).contains(&m))
        .await?;
    let redaction = redact(&s.bob, &room, &mistake, "誤送信").await?;

    // Hostile or malformed events: wrong types, a huge body, control characters in a file name.
    let number_body = send(&s.alice, &room, "m.room.message", &json!({ "msgtype": "m.text", "body": 12345 })).await?;
    let odd_msgtype = send(&s.alice, &room, "m.room.message", &json!({ "msgtype": ["x"], "body": "odd" })).await?;
    let huge =
        send(&s.alice, &room, "m.room.message", &json!({ "msgtype": "m.text", "body": "あ".repeat(18_000) })).await?;
    let weird_name = send(
        &s.alice,
        &room,
        "m.room.message",
        &json!({ "msgtype": "m.file", "body": "bad\u{7}name\u{1b}.txt", "url": "mxc://localhost/does-not-exist" }),
    )
    .await?;
    // A lone surrogate (not valid UTF-8 once decoded): the server may refuse it; if it
    // accepts it, the bridge must archive it.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/lone", enc(&room));
    let lone = s
        .alice
        .request(
            reqwest::Method::PUT,
            &path,
            Some((br#"{"msgtype":"m.file","body":"\udc80.txt"}"#.to_vec(), "application/json")),
        )
        .await?;
    ensure!(lone.status == 200 || (400..500).contains(&lone.status), "a lone surrogate: {} {}", lone.status, lone.text);
    let lone = lone.body["event_id"].as_str().map(str::to_owned);

    let records = s.wait_complete(&room).await?;
    let ids = event_ids(&records);
    for (what, id) in [
        ("history from before the bridge joined", &early),
        ("the message", &hello),
        ("the first edit", &edit1),
        ("the second edit", &edit2),
        ("the reaction", &reaction),
        ("the thread root", &root),
        ("the thread reply", &reply),
        ("the attachment message", &attachment),
        ("the redaction", &redaction),
        ("a number body", &number_body),
        ("an array msgtype", &odd_msgtype),
        ("a huge body", &huge),
        ("a weird file name", &weird_name),
    ] {
        ensure!(ids.contains(id), "{what} ({id}) is not in the archive");
    }
    if let Some(lone) = &lone {
        ensure!(ids.contains(lone), "the accepted lone-surrogate event is not in the archive");
    }
    // No duplicates.
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    ensure!(unique.len() == ids.len(), "duplicate records: {ids:?}");

    // Every version of the edited message.
    ensure!(payload(record(&records, "event", &edit1)?)?["content"]["m.new_content"]["body"] == "来年度予算案の件です");
    ensure!(
        payload(record(&records, "event", &edit2)?)?["content"]["m.new_content"]["body"]
            == "来年度予算案（第2版）の件です"
    );
    // The redacted original stays, with the redaction beside it.
    let original = payload(record(&records, "event", &mistake)?)?;
    ensure!(original["content"]["body"] == "誤って送信したメッセージ", "the original was not kept: {original}");
    let r = payload(record(&records, "event", &redaction)?)?;
    ensure!(r["redacts"] == mistake.as_str() || r["content"]["redacts"] == mistake.as_str(), "redaction record: {r}");
    // Retention from the policy: class, expiry (1 April counting) and disposition.
    let rec = record(&records, "event", &hello)?;
    ensure!(rec["retention"] == "5y" && rec["on_expiry"] == "dispose", "{rec}");
    ensure!(rec["expires"].as_str().is_some_and(|e| e.ends_with("-03-31")), "{rec}");
    // The attachment, downloaded and stored by its hash.
    let att = payload(record(&records, "attachment", &attachment)?)?;
    let sha = sha256_hex(minutes.as_bytes());
    ensure!(att["sha256"] == sha.as_str() && att["size"] == minutes.len(), "{att}");
    let stored = std::fs::read(s.bridge.data_dir().join("attachments").join(&sha[..2]).join(&sha))?;
    ensure!(stored == minutes.as_bytes(), "the stored attachment differs");
    // Malformed events are kept with a note, never dropped.
    let note = |id: &str| -> anyhow::Result<String> {
        Ok(record(&records, "event", id)?["note"].as_str().unwrap_or_default().to_owned())
    };
    ensure!(note(&number_body)?.contains("body is not a string"), "{}", note(&number_body)?);
    ensure!(note(&odd_msgtype)?.contains("msgtype is not a string"), "{}", note(&odd_msgtype)?);
    ensure!(note(&huge)?.contains("large body"), "{}", note(&huge)?);
    ensure!(note(&weird_name)?.contains("control"), "{}", note(&weird_name)?);
    if let Some(lone) = &lone {
        ensure!(!note(lone)?.is_empty(), "the lone-surrogate event was archived without a note");
    }
    // Its media does not exist: the failed download is itself recorded.
    let failed = record(&records, "note", &weird_name)?;
    ensure!(failed["note"].as_str().is_some_and(|n| n.contains("attachment failed")), "{failed}");

    // The room that is not official was left and nothing of it archived.
    let deadline = std::time::Instant::now() + ARCHIVE_DEADLINE;
    loop {
        let m = s.alice.state(&private, "m.room.member", ARCHIVE).await.unwrap_or(Value::Null);
        if m["membership"] == "leave" {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "the bridge did not leave the unofficial room: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(s.bridge.records(&private).await?.is_empty(), "records of a room that is not official");

    // The archive verifies.
    let report = s.bridge.json(["verify"]).await?;
    ensure!(report["ok"] == true, "verify: {report}");
    // Restarting re-archives nothing.
    let before = s.bridge.records(&room).await?.len();
    s.bridge.terminate().await?;
    s.bridge.spawn()?;
    text(&s.alice, &room, "after the restart").await?;
    let records = s.wait_complete(&room).await?;
    ensure!(records.iter().filter(|r| r["kind"] == "event").count() == event_ids(&records).len());
    ensure!(records.len() > before, "nothing archived after the restart");
    let _ = s.bridge.json(["status"]).await.context("status")?;
    Ok(())
}
