//! The records office: disposal honours retention and legal holds and leaves its disposal
//! record; records marked for transfer are never disposed of but go into a self-verifying
//! transfer package; checkpoints co-signed by a second key; wrong arguments give one line.

use anyhow::{Context as _, ensure};
use serde_json::Value;

use super::{Setup, file, payload, proofs::check_package, record, text};

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(Into::into).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_dispose_honours_retention_and_holds() -> anyhow::Result<()> {
    let mut s = Setup::start(false).await?;
    let a = s.room("廃棄テスト").await?;
    let b = s.room("移管テスト").await?;
    s.make_official(&a, "under1y", "dispose").await?;
    s.make_official(&b, "under1y", "transfer").await?;
    let m1 = text(&s.alice, &a, "一年未満の記録 1").await?;
    let m2 = file(&s.alice, &a, "メモ.txt", "一年未満の添付".as_bytes()).await?;
    let records = s.wait_complete(&a).await?;
    // Everything from here on is under a legal hold.
    // (A hold covers a record by its origin_server_ts or by when it was archived, so it
    // starts after everything so far, m2's attachment included, reached the archive.)
    let hold_from = records.iter().filter_map(|r| r["archived_ts"].as_i64()).max().context("archived_ts")? + 1;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let m3 = text(&s.bob, &a, "訴訟に関係する記録").await?;
    let b1 = text(&s.alice, &b, "移管される記録").await?;
    let records = s.wait_complete(&a).await?;
    s.wait_complete(&b).await?;
    let rec = record(&records, "event", &m1)?;
    ensure!(rec["retention"] == "under1y" && rec["on_expiry"] == "dispose" && rec["expires"].is_string(), "{rec}");
    let att = payload(record(&records, "attachment", &m2)?)?;
    let sha = att["sha256"].as_str().context("sha")?.to_owned();
    let att_file = s.bridge.data_dir().join("attachments").join(&sha[..2]).join(&sha);
    ensure!(att_file.exists(), "attachment file");

    // Today nothing has expired: the last day of an under-1-year record is its own day.
    let today = s
        .bridge
        .json(os(&["dispose", "--room", a.as_str(), "--expired", "--by", "文書課", "--decision", "R8-廃棄-1"]))
        .await?;
    ensure!(
        today["disposed"].as_array().is_some_and(Vec::is_empty) && today["not_expired"].as_i64() > Some(0),
        "{today}"
    );

    let hold = s
        .bridge
        .json(os(&[
            "hold",
            "set",
            "--room",
            a.as_str(),
            "--from",
            hold_from.to_string().as_str(),
            "--reason",
            "訴訟対応",
            "--by",
            "法務課",
        ]))
        .await?;
    let hold_id = hold["hold"].as_i64().context("hold id")?;
    let listed = s.bridge.json(os(&["hold", "list", "--room", a.as_str()])).await?;
    ensure!(listed.as_array().is_some_and(|l| l.iter().any(|h| h["id"] == hold_id)), "{listed}");

    // As of a later date: the expired, unheld records marked for disposal go; the held stay.
    let args = [
        "dispose",
        "--room",
        a.as_str(),
        "--expired",
        "--as-of",
        "2099-04-01",
        "--by",
        "文書課",
        "--decision",
        "R8-廃棄-2",
    ];
    let first = s.bridge.json(os(&args)).await?;
    let disposal_seq = first["record"].as_i64().context("a disposal record")?;
    let events: Vec<&str> =
        first["disposed_events"].as_array().context("events")?.iter().filter_map(Value::as_str).collect();
    ensure!(events.contains(&m1.as_str()) && events.contains(&m2.as_str()), "{first}");
    ensure!(!events.contains(&m3.as_str()), "a held record was disposed of: {first}");
    ensure!(first["held"].as_i64() >= Some(1), "{first}");
    ensure!(first["head_before"]["tree_size"].as_i64() <= Some(disposal_seq), "{first}");
    ensure!(first["head_after"]["tree_size"].as_i64() == Some(disposal_seq + 1), "{first}");
    let records = s.bridge.records(&a).await?;
    let gone = record(&records, "event", &m1)?;
    ensure!(gone["payload"].is_null() && gone["disposed_by"] == disposal_seq, "{gone}");
    ensure!(record(&records, "event", &m3)?["payload"].is_string(), "the held record lost its payload");
    ensure!(!att_file.exists(), "the disposed attachment file is still there");
    // The disposal record: who, when, what, under which decision, the head before.
    let d = records.iter().find(|r| r["seq"] == disposal_seq).context("the disposal record")?;
    let dp = payload(d)?;
    ensure!(d["kind"] == "disposal" && dp["by"] == "文書課" && dp["decision"] == "R8-廃棄-2", "{dp}");
    ensure!(
        dp["at"].is_string() && dp["head_before"]["root_hash"].is_string() && dp["disposed_seqs"].is_array(),
        "{dp}"
    );
    // The log still verifies, and says what was disposed of.
    let report = s.bridge.json(["verify"]).await?;
    ensure!(report["ok"] == true && report["disposed"].as_i64() >= Some(2), "{report}");

    // Records marked for transfer are never disposed of.
    let args = [
        "dispose",
        "--room",
        b.as_str(),
        "--expired",
        "--as-of",
        "2099-04-01",
        "--by",
        "文書課",
        "--decision",
        "R8-廃棄-3",
    ];
    let kept = s.bridge.json(os(&args)).await?;
    ensure!(
        kept["disposed"].as_array().is_some_and(Vec::is_empty) && kept["kept_for_transfer"].as_i64() > Some(0),
        "{kept}"
    );
    // They go to the archives in a package that checks itself.
    let package = s.bridge.dir().join("transfer");
    let args = [
        "transfer",
        "--room",
        b.as_str(),
        "--out",
        package.to_str().context("path")?,
        "--by",
        "文書課",
        "--decision",
        "R8-移管-1",
    ];
    let t = s.bridge.json(os(&args)).await?;
    ensure!(t["records"].as_i64() > Some(0) && t["record"].is_i64(), "{t}");
    let public = std::fs::read_to_string(s.bridge.public_key_path())?;
    let checked = check_package(&package, &public)?;
    ensure!(
        checked.lines.iter().any(|l| l["event_id"] == b1.as_str() && l["payload"].is_string()),
        "b1 not in the package"
    );
    let v = s.bridge.json(os(&["verify-package", package.to_str().context("path")?])).await?;
    ensure!(v["ok"] == true, "{v}");

    // Releasing the hold lets the rest go; the first disposal record stays.
    s.bridge
        .json(os(&["hold", "release", "--id", hold_id.to_string().as_str(), "--reason", "訴訟終結", "--by", "法務課"]))
        .await?;
    let args = [
        "dispose",
        "--room",
        a.as_str(),
        "--expired",
        "--as-of",
        "2099-04-01",
        "--by",
        "文書課",
        "--decision",
        "R8-廃棄-4",
    ];
    let second = s.bridge.json(os(&args)).await?;
    let events: Vec<&str> =
        second["disposed_events"].as_array().context("events")?.iter().filter_map(Value::as_str).collect();
    ensure!(events.contains(&m3.as_str()), "{second}");
    let records = s.bridge.records(&a).await?;
    ensure!(records.iter().filter(|r| r["kind"] == "disposal").count() == 2, "disposal records");
    ensure!(records.iter().any(|r| r["seq"] == disposal_seq && r["kind"] == "disposal" && r["payload"].is_string()));

    // Co-signing by a second office's key.
    s.bridge.terminate().await?;
    let cosigner = s.bridge.dir().join("archives.key");
    s.bridge.json(os(&["keygen", "--out", cosigner.to_str().context("path")?])).await?;
    s.bridge.json(["checkpoint"]).await?;
    let c = s.bridge.json(os(&["cosign", "--key", cosigner.to_str().context("path")?])).await?;
    ensure!(c["signature"].is_string(), "{c}");
    let cosigner_pub = format!("{}.pub", cosigner.display());
    let report = s.bridge.json(os(&["verify", "--cosigner-key", cosigner_pub.as_str()])).await?;
    ensure!(report["ok"] == true && report["cosigned_heads"].as_i64() >= Some(1), "{report}");
    // A package proven against a newer head carries the consistency proof from the co-signed one.
    let later = s.bridge.dir().join("transfer-2");
    let args = [
        "transfer",
        "--room",
        b.as_str(),
        "--out",
        later.to_str().context("path")?,
        "--by",
        "文書課",
        "--decision",
        "R8-移管-2",
    ];
    s.bridge.json(os(&args)).await?;
    let head_file: Value = serde_json::from_slice(&std::fs::read(later.join("tree-head.json"))?)?;
    ensure!(head_file["extends"]["cosignatures"].as_array().is_some_and(|c| !c.is_empty()), "{head_file}");
    let v = s.bridge.json(os(&["verify-package", later.to_str().context("path")?])).await?;
    ensure!(v["ok"] == true, "{v}");
    check_package(&later, &public)?;
    // A newer head the second office has not signed: verify with its key says so.
    s.bridge.json(["checkpoint"]).await?;
    let out = s.bridge.cli(os(&["verify", "--cosigner-key", cosigner_pub.as_str()])).await?;
    ensure!(!out.status.success() && String::from_utf8_lossy(&out.stdout).contains("not co-signed"), "{out:?}");

    // Wrong arguments: one line on stderr, non-zero exit.
    for args in [
        vec!["dispose", "--room", a.as_str(), "--by", "x", "--decision", "y"],
        vec!["frobnicate"],
        vec!["hold", "release", "--id", "x"],
    ] {
        let out = s.bridge.cli(os(&args)).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success() && stderr.trim().lines().count() == 1, "{args:?}: {stderr}");
    }
    Ok(())
}
