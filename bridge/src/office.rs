//! The records office's decisions: legal holds, disposal (廃棄) and transfer (移管).
//! Each is itself a record of the log, so it stays there forever.

use std::path::Path;

use anyhow::{Context as _, bail};
use chrono::NaiveDate;
use ed25519_dalek::SigningKey;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    archive::{Archive, TreeHead},
    attachments::attachment_path,
    package::{HeadFile, PACKAGE_README, ProvenRecord, write_manifest},
    record::{NewRecord, Record, kind},
    retention::{day_start_ms, now_ms, rfc3339_jst},
};

/// Who decided and under which decision (決裁).
#[derive(Debug, Clone)]
pub struct Decision {
    pub by: String,
    pub reference: String,
}

/// A legal hold in force.
#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    /// The sequence number of the hold record: the hold's ID.
    pub id: i64,
    pub room_id: String,
    /// Start and end of the held period (ms, inclusive); `None`: open.
    pub from_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub reason: String,
    pub by: String,
}

impl Hold {
    fn covers(&self, r: &Record) -> bool {
        if r.room_id.as_deref() != Some(self.room_id.as_str()) {
            return false;
        }
        // Held if either time falls in the range: the sender's `origin_server_ts` (which it
        // chooses) or when the archive received the record. A server dating its events
        // outside a hold cannot take them out of it.
        let within = |t: i64| self.from_ms.is_none_or(|f| t >= f) && self.until_ms.is_none_or(|u| t <= u);
        r.origin_ts.is_some_and(within) || within(r.archived_ts)
    }
}

/// Parses a time bound: RFC 3339 (`2026-11-25T10:00:00+09:00`) or a JST date (start or end of day).
pub fn parse_bound(s: &str, end_of_day: bool) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let date = crate::retention::parse_date(s)
        .map_err(|_| anyhow::anyhow!("{s:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 time"))?;
    Ok(if end_of_day { day_start_ms(date.succ_opt().context("date out of range")?) - 1 } else { day_start_ms(date) })
}

/// Holds in force: hold records not followed by a release.
pub fn active_holds(records: &[Record]) -> Vec<Hold> {
    let released: Vec<i64> = records
        .iter()
        .filter(|r| r.kind == kind::HOLD_RELEASE)
        .filter_map(|r| payload_json(r)["hold"].as_i64())
        .collect();
    records
        .iter()
        .filter(|r| r.kind == kind::HOLD && !released.contains(&r.seq))
        .filter_map(|r| {
            let p = payload_json(r);
            Some(Hold {
                id: r.seq,
                room_id: p["room_id"].as_str()?.to_owned(),
                from_ms: p["from_ms"].as_i64(),
                until_ms: p["until_ms"].as_i64(),
                reason: p["reason"].as_str().unwrap_or_default().to_owned(),
                by: p["by"].as_str().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

fn payload_json(r: &Record) -> Value {
    r.payload.as_deref().and_then(|p| serde_json::from_slice(p).ok()).unwrap_or(Value::Null)
}

async fn hold_records(archive: &Archive) -> anyhow::Result<Vec<Record>> {
    let mut all = archive.records_of_kind(kind::HOLD).await?;
    all.extend(archive.records_of_kind(kind::HOLD_RELEASE).await?);
    all.sort_by_key(|r| r.seq);
    Ok(all)
}

/// Sets a legal hold on a room, or on a time range of it. Returns the hold's ID.
pub async fn set_hold(
    archive: &Archive,
    key: &SigningKey,
    room_id: &str,
    from_ms: Option<i64>,
    until_ms: Option<i64>,
    reason: &str,
    decision: &Decision,
) -> anyhow::Result<i64> {
    let payload = json!({
        "room_id": room_id, "from_ms": from_ms, "until_ms": until_ms,
        "from": from_ms.map(rfc3339_jst), "until": until_ms.map(rfc3339_jst),
        "reason": reason, "by": decision.by, "decision": decision.reference, "at": rfc3339_jst(now_ms()),
    });
    let seq = archive
        .append(
            key,
            vec![NewRecord {
                kind: kind::HOLD.into(),
                room_id: Some(room_id.to_owned()),
                retention: Some("permanent".into()),
                payload: payload.to_string().into_bytes(),
                note: Some(format!("legal hold: {reason}")),
                ..Default::default()
            }],
        )
        .await?;
    seq.into_iter().flatten().next().context("the hold was not appended")
}

/// Releases a hold.
pub async fn release_hold(
    archive: &Archive,
    key: &SigningKey,
    hold_id: i64,
    reason: &str,
    decision: &Decision,
) -> anyhow::Result<i64> {
    let holds = active_holds(&hold_records(archive).await?);
    let Some(hold) = holds.iter().find(|h| h.id == hold_id) else { bail!("no hold {hold_id} in force") };
    let payload = json!({
        "hold": hold_id, "room_id": hold.room_id, "reason": reason, "by": decision.by,
        "decision": decision.reference, "at": rfc3339_jst(now_ms()),
    });
    let seq = archive
        .append(
            key,
            vec![NewRecord {
                kind: kind::HOLD_RELEASE.into(),
                room_id: Some(hold.room_id.clone()),
                retention: Some("permanent".into()),
                payload: payload.to_string().into_bytes(),
                note: Some(format!("legal hold {hold_id} released: {reason}")),
                ..Default::default()
            }],
        )
        .await?;
    seq.into_iter().flatten().next().context("the release was not appended")
}

/// Holds in force (all rooms, or one).
pub async fn list_holds(archive: &Archive, room_id: Option<&str>) -> anyhow::Result<Vec<Hold>> {
    let mut holds = active_holds(&hold_records(archive).await?);
    if let Some(room) = room_id {
        holds.retain(|h| h.room_id == room);
    }
    Ok(holds)
}

/// What a disposal did.
#[derive(Debug, Clone, Serialize)]
pub struct DisposalOutcome {
    pub room_id: String,
    pub as_of: String,
    /// The disposal record's sequence number (none on a dry run or when nothing was due).
    pub record: Option<i64>,
    pub disposed: Vec<i64>,
    pub disposed_events: Vec<String>,
    pub held: usize,
    pub not_expired: usize,
    pub kept_for_transfer: usize,
    pub head_before: Option<TreeHead>,
    pub head_after: Option<TreeHead>,
}

/// A record whose payload a disposal may remove.
fn disposable_kind(r: &Record) -> bool {
    matches!(r.kind.as_str(), kind::EVENT | kind::CLEARTEXT | kind::ATTACHMENT | kind::NOTE) && r.event_id.is_some()
}

/// `dispose --room R --expired`: removes the payloads of the room's records that are past
/// their retention, marked for disposal and under no hold, and appends the disposal record.
pub async fn dispose(
    archive: &Archive,
    key: &SigningKey,
    attachments: &Path,
    room_id: &str,
    as_of: NaiveDate,
    decision: &Decision,
    dry_run: bool,
) -> anyhow::Result<DisposalOutcome> {
    let holds = list_holds(archive, Some(room_id)).await?;
    let as_of_s = as_of.format("%Y-%m-%d").to_string();
    let mut tx = archive.begin_append().await?;
    let records = tx.records_where_room(room_id).await?;
    let mut outcome = DisposalOutcome {
        room_id: room_id.to_owned(),
        as_of: as_of_s.clone(),
        record: None,
        disposed: Vec::new(),
        disposed_events: Vec::new(),
        held: 0,
        not_expired: 0,
        kept_for_transfer: 0,
        head_before: None,
        head_after: None,
    };
    let mut files = Vec::new();
    for r in records.iter().filter(|r| disposable_kind(r) && r.payload.is_some()) {
        // Expired: the last day of retention is before the decision date.
        let expired = r.expires.as_deref().is_some_and(|e| e < as_of_s.as_str());
        if !expired {
            outcome.not_expired += 1;
        } else if r.on_expiry.as_deref() != Some("dispose") {
            outcome.kept_for_transfer += 1;
        } else if holds.iter().any(|h| h.covers(r)) {
            outcome.held += 1;
        } else {
            outcome.disposed.push(r.seq);
            if let Some(e) = &r.event_id
                && !outcome.disposed_events.contains(e)
            {
                outcome.disposed_events.push(e.clone());
            }
            if r.kind == kind::ATTACHMENT
                && let Some(sha) = payload_json(r)["sha256"].as_str()
            {
                files.push(sha.to_owned());
            }
        }
    }
    if dry_run || outcome.disposed.is_empty() {
        tx.rollback().await?;
        return Ok(outcome);
    }
    let before = tx.sign_head(key).await?;
    let payload = json!({
        "decision": decision.reference,
        "by": decision.by,
        "at": rfc3339_jst(now_ms()),
        "as_of": as_of_s,
        "room_id": room_id,
        "disposed_seqs": outcome.disposed,
        "disposed_events": outcome.disposed_events,
        "held_kept": outcome.held,
        "holds": holds.iter().map(|h| h.id).collect::<Vec<_>>(),
        "head_before": { "id": before.id, "tree_size": before.tree_size, "root_hash": before.root_hash },
    });
    let seq = tx
        .append(
            key,
            NewRecord {
                kind: kind::DISPOSAL.into(),
                room_id: Some(room_id.to_owned()),
                retention: Some("permanent".into()),
                payload: payload.to_string().into_bytes(),
                note: Some(format!(
                    "廃棄 (disposal) of {} records under {}",
                    outcome.disposed.len(),
                    decision.reference
                )),
                ..Default::default()
            },
        )
        .await?
        .context("the disposal record was not appended")?;
    for s in &outcome.disposed {
        tx.dispose_payload(*s, seq).await?;
    }
    let after = tx.sign_head(key).await?;
    tx.commit().await?;
    // Files no longer referenced by a kept record go too.
    let remaining: Vec<String> = archive
        .records_of_kind(kind::ATTACHMENT)
        .await?
        .iter()
        .filter_map(|r| payload_json(r)["sha256"].as_str().map(str::to_owned))
        .collect();
    for sha in files {
        if !remaining.contains(&sha) {
            std::fs::remove_file(attachment_path(attachments, &sha)).ok();
        }
    }
    outcome.record = Some(seq);
    outcome.head_before = Some(before);
    outcome.head_after = Some(after);
    Ok(outcome)
}

/// What a transfer did.
#[derive(Debug, Clone, Serialize)]
pub struct TransferOutcome {
    pub room_id: String,
    pub records: usize,
    pub attachments: usize,
    pub record: i64,
    pub head: TreeHead,
    pub head_after: TreeHead,
}

/// `transfer`: writes a self-verifying package of a room's records marked for transfer
/// (with `expired_only`, only those past retention at `as_of`) and records the transfer.
#[allow(clippy::too_many_arguments)]
pub async fn transfer(
    archive: &Archive,
    key: &SigningKey,
    attachments: &Path,
    room_id: &str,
    out: &Path,
    as_of: NaiveDate,
    expired_only: bool,
    decision: &Decision,
) -> anyhow::Result<TransferOutcome> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("{} exists and is not empty", out.display());
    }
    std::fs::create_dir_all(out.join("attachments"))?;
    let as_of_s = as_of.format("%Y-%m-%d").to_string();
    let head = archive.sign_head(key, false).await?.context("no head")?;
    let size = head.tree_size as usize;
    let tree = crate::merkle::Tree::new(archive.leaf_hashes(head.tree_size).await?);
    let records: Vec<Record> = archive
        .room_records(room_id)
        .await?
        .into_iter()
        .filter(|r| r.seq < head.tree_size)
        .filter(|r| {
            !disposable_kind(r)
                || (r.on_expiry.as_deref() == Some("transfer")
                    && (!expired_only || r.expires.as_deref().is_some_and(|e| e < as_of_s.as_str())))
        })
        .collect();
    let mut lines = String::new();
    let mut files = 0;
    for r in &records {
        lines.push_str(&serde_json::to_string(&ProvenRecord::new(r, &tree, size, true))?);
        lines.push('\n');
        if r.kind == kind::ATTACHMENT
            && let Some(sha) = payload_json(r)["sha256"].as_str()
        {
            let src = attachment_path(attachments, sha);
            std::fs::copy(&src, out.join("attachments").join(sha))
                .with_context(|| format!("copying {}", src.display()))?;
            files += 1;
        }
    }
    std::fs::write(out.join("records.jsonl"), lines)?;
    let head_file = HeadFile::build(archive, &head, &tree).await?;
    std::fs::write(out.join("tree-head.json"), serde_json::to_string_pretty(&head_file)?)?;
    std::fs::write(out.join("README.txt"), PACKAGE_README)?;
    let manifest = write_manifest(out)?;
    let payload = json!({
        "decision": decision.reference, "by": decision.by, "at": rfc3339_jst(now_ms()), "as_of": as_of_s,
        "room_id": room_id, "transferred_seqs": records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        "manifest_sha256": manifest,
        "head_before": { "id": head.id, "tree_size": head.tree_size, "root_hash": head.root_hash },
    });
    let mut tx = archive.begin_append().await?;
    let seq = tx
        .append(
            key,
            NewRecord {
                kind: kind::TRANSFER.into(),
                room_id: Some(room_id.to_owned()),
                retention: Some("permanent".into()),
                payload: payload.to_string().into_bytes(),
                note: Some(format!("移管 (transfer) of {} records under {}", records.len(), decision.reference)),
                ..Default::default()
            },
        )
        .await?
        .context("the transfer record was not appended")?;
    let head_after = tx.sign_head(key).await?;
    tx.commit().await?;
    Ok(TransferOutcome {
        room_id: room_id.to_owned(),
        records: records.len(),
        attachments: files,
        record: seq,
        head,
        head_after,
    })
}
