//! A disclosure export with masking: whole events and text spans (with their edits) are
//! replaced by a visible 不開示 mark and the reason, every masked place is listed, nothing
//! masked leaks into the disclosure folder, the unmasked copy keeps everything, and the
//! proofs check out with separate code (see `proofs`).

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use super::{Setup, edit, file, proofs::check_package, send, text};

fn all_text(dir: &std::path::Path) -> anyhow::Result<String> {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.push_str(&all_text(&entry.path())?);
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(entry.path())?));
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_export_masks_and_proves() -> anyhow::Result<()> {
    let mut s = Setup::start(false).await?;
    let room = s.room("開示請求テスト").await?;
    s.make_official(&room, "5y", "transfer").await?;
    let address = text(&s.alice, &room, "山田さんの自宅住所は青森市新町1-2-3です").await?;
    let phone = text(&s.bob, &room, "連絡先は090-1234-5678です。明日お電話します").await?;
    let draft = text(&s.alice, &room, "予算案A（内部検討中）を共有します").await?;
    let draft_edit = edit(&s.alice, &room, &draft, "予算案B（内部検討中）を共有します").await?;
    let meeting = text(&s.bob, &room, "会議は10時から第3会議室です").await?;
    let thread_reply = send(
        &s.alice,
        &room,
        "m.room.message",
        &json!({
            "msgtype": "m.text", "body": "了解しました",
            "m.relates_to": { "rel_type": "m.thread", "event_id": meeting, "is_falling_back": true, "m.in_reply_to": { "event_id": meeting } },
        }),
    )
    .await?;
    let attachment = file(&s.alice, &room, "資料.txt", "公開資料".as_bytes()).await?;
    s.wait_complete(&room).await?;

    let directory = s.bridge.dir().join("staff.csv");
    std::fs::write(&directory, "user_id,displayname,department\nalice,田中 アリス,総務課\nbob,佐藤 ボブ,財政課\n")?;
    let out = s.bridge.dir().join("disclosure");
    let unmasked = s.bridge.dir().join("office-copy");
    let masks_file = s.bridge.dir().join("masks.json");
    std::fs::write(
        &masks_file,
        serde_json::to_string(&json!([{ "event_id": draft, "text": "内部検討中", "reason": "第7条第5号" }]))?,
    )?;
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let args = vec![
        "export".to_owned(),
        "--room".into(),
        room.clone(),
        "--out".into(),
        path(&out),
        "--unmasked-out".into(),
        path(&unmasked),
        "--directory".into(),
        path(&directory),
        "--masks".into(),
        path(&masks_file),
        "--mask-event".into(),
        format!("{address}=第7条第2号"),
        "--mask-text".into(),
        format!("{phone}=第7条第2号=090-1234-5678"),
    ];
    let outcome = s.bridge.json(args).await?;

    // Nothing masked anywhere in the disclosure folder.
    let disclosed = all_text(&out)?;
    for secret in ["青森市新町1-2-3", "090-1234-5678", "内部検討中"] {
        ensure!(!disclosed.contains(secret), "{secret:?} leaked into the disclosure folder");
    }
    // The unmasked copy for the records office keeps everything.
    let office = all_text(&unmasked)?;
    for secret in ["青森市新町1-2-3", "090-1234-5678", "内部検討中"] {
        ensure!(office.contains(secret), "{secret:?} missing from the unmasked copy");
    }

    // The masked places, with their reasons.
    let places: Vec<Value> = serde_json::from_slice(&std::fs::read(out.join("masked-places.json"))?)?;
    let find = |record: &str| places.iter().find(|p| p["record_event_id"] == record);
    let p = find(&address).context("the address message is not listed")?;
    ensure!(p["what"] == "event" && p["reason"] == "第7条第2号", "{p}");
    let p = find(&phone).context("the phone number is not listed")?;
    ensure!(p["what"] == "text" && p["reason"] == "第7条第2号" && p["characters"] == 13, "{p}");
    let p = find(&draft).context("the draft is not listed")?;
    ensure!(p["reason"] == "第7条第5号", "{p}");
    ensure!(find(&draft_edit).is_some(), "the edit of a masked text is not listed: {places:?}");
    ensure!(outcome["masked_places"].as_array().map(Vec::len) == Some(places.len()), "{outcome}");
    let csv = std::fs::read_to_string(out.join("masked-places.csv"))?;
    ensure!(csv.lines().count() == places.len() + 1 && csv.contains("第7条第5号"), "{csv}");

    // The HTML: marks with reasons, names and departments, JST, edits, thread, attachment.
    let html = std::fs::read_to_string(out.join("index.html"))?;
    for needle in [
        "不開示（理由 / reason: 第7条第2号）",
        "不開示（理由 / reason: 第7条第5号）",
        "連絡先は",
        "会議は10時から第3会議室です",
        "田中 アリス",
        "総務課",
        "財政課",
        " JST",
        "編集済み / Edited",
        "スレッド / Thread",
        "了解しました",
        "不開示箇所一覧 / Masked places",
        "attachments/",
    ] {
        ensure!(html.contains(needle), "index.html lacks {needle:?}");
    }
    ensure!(
        html.contains(&thread_reply) && html.contains(&attachment),
        "thread reply or attachment missing in the HTML"
    );
    let unmasked_html = std::fs::read_to_string(unmasked.join("index.html"))?;
    ensure!(unmasked_html.contains("青森市新町1-2-3") && unmasked_html.contains("records office"), "unmasked HTML");

    // The proofs, checked by code that shares nothing with the bridge.
    let public = std::fs::read_to_string(s.bridge.public_key_path())?;
    let checked = check_package(&out, &public)?;
    let line = |id: &str, kind: &str| checked.lines.iter().find(|l| l["event_id"] == id && l["kind"] == kind).cloned();
    let masked = line(&address, "event").context("the masked record is not in records.jsonl")?;
    ensure!(masked["payload"].is_null() && masked["withheld"] == "masked", "{masked}");
    ensure!(masked["disclosed"]["masked"] == "不開示" && masked["disclosed"]["reason"] == "第7条第2号", "{masked}");
    let partly = line(&phone, "event").context("phone record")?;
    ensure!(
        partly["disclosed"]["content"]["body"].as_str().is_some_and(|b| b.contains("【不開示: 第7条第2号】")),
        "{partly}"
    );
    let plain = line(&meeting, "event").context("meeting record")?;
    ensure!(plain["payload"].as_str().is_some_and(|p| p.contains("会議は10時から")), "{plain}");
    ensure!(checked.tree_size as usize >= checked.lines.len(), "tree size");
    let unmasked_check = check_package(&unmasked, &public)?;
    ensure!(unmasked_check.lines.iter().all(|l| l["payload"].is_string()), "the unmasked copy withholds payloads");
    // And the bridge's own package check agrees.
    let v = s.bridge.json(vec!["verify-package".to_owned(), path(&out)]).await?;
    ensure!(v["ok"] == true, "{v}");
    // A time range: from the meeting message on, nothing before it.
    let records = s.bridge.records(&room).await?;
    let since = super::payload(super::record(&records, "event", &meeting)?)?["origin_server_ts"]
        .as_i64()
        .context("origin_server_ts")?;
    let ranged = s.bridge.dir().join("ranged");
    let args = vec![
        "export".to_owned(),
        "--room".into(),
        room.clone(),
        "--from".into(),
        since.to_string(),
        "--out".into(),
        path(&ranged),
    ];
    s.bridge.json(args).await?;
    let lines = check_package(&ranged, &public)?.lines;
    ensure!(lines.iter().any(|l| l["event_id"] == meeting.as_str()), "the meeting is not in the ranged export");
    ensure!(
        !lines.iter().any(|l| l["event_id"] == address.as_str() || l["event_id"] == phone.as_str()),
        "earlier records in the range"
    );

    // A mask naming an event that is not in the export is refused, in one line.
    let bad_out = path(&s.bridge.dir().join("bad"));
    let bad = s
        .bridge
        .cli(["export", "--room", room.as_str(), "--out", bad_out.as_str(), "--mask-event", "$nope=第7条第2号"])
        .await?;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    ensure!(!bad.status.success() && stderr.trim().lines().count() == 1 && stderr.contains("$nope"), "{stderr}");
    Ok(())
}
