//! `kairan-bridge export`: a room and a time range for a disclosure request (開示請求).
//!
//! Two folders come out, each self-verifying (manifest, signed tree head, inclusion proofs):
//!
//! - the **disclosure** folder: `records.jsonl` (every record; masked ones without their
//!   payload, with the disclosed content and the masks), `index.html` (Japanese and English
//!   labels, display names and departments, JST times, threads and edits as a reader expects,
//!   attachments linked), `masked-places.json` and `.csv` (every masked place with its reason,
//!   for the decision notice), `tree-head.json`, `attachments/`;
//! - the **unmasked** folder for the records office: the same without masks.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use kairan_types::room_policy::{self, RoomPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    archive::{Archive, TreeHead},
    attachments::attachment_path,
    package::{HeadFile, PACKAGE_README, PACKAGE_README_EXPORT, ProvenRecord, write_manifest},
    record::{Record, kind},
    retention::format_jst,
};

/// The visible mark that replaces what is not disclosed.
pub const MARK: &str = "不開示";

/// The staff directory: user ID → (name, department).
pub type Directory = HashMap<String, (Option<String>, Option<String>)>;

/// One masking decision: a whole event, or a text in it, with the ordinance article.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mask {
    pub event_id: String,
    /// The text to mask (every occurrence in the event and its edits); absent: the whole event.
    #[serde(default)]
    pub text: Option<String>,
    /// The reason code, e.g. `第7条第2号` (個人情報).
    pub reason: String,
}

impl Mask {
    /// Parses `EVENT_ID=REASON` (whole event).
    pub fn parse_event(s: &str) -> anyhow::Result<Self> {
        let (event_id, reason) = s.split_once('=').context("--mask-event takes EVENT_ID=REASON")?;
        anyhow::ensure!(
            event_id.starts_with('$') && !reason.is_empty(),
            "--mask-event takes EVENT_ID=REASON, got {s:?}"
        );
        Ok(Self { event_id: event_id.to_owned(), text: None, reason: reason.to_owned() })
    }

    /// Parses `EVENT_ID=REASON=TEXT` (a text span).
    pub fn parse_text(s: &str) -> anyhow::Result<Self> {
        let mut parts = s.splitn(3, '=');
        let (Some(event_id), Some(reason), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("--mask-text takes EVENT_ID=REASON=TEXT, got {s:?}");
        };
        anyhow::ensure!(
            event_id.starts_with('$') && !reason.is_empty() && !text.is_empty(),
            "--mask-text takes EVENT_ID=REASON=TEXT, got {s:?}"
        );
        Ok(Self { event_id: event_id.to_owned(), text: Some(text.to_owned()), reason: reason.to_owned() })
    }
}

/// What to export.
pub struct ExportRequest<'a> {
    pub room_id: &'a str,
    pub from_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub masks: Vec<Mask>,
    /// user ID → (display name, department), from the staff directory CSV.
    pub directory: Directory,
    pub out: &'a Path,
    pub unmasked_out: &'a Path,
}

/// A masked place, for the decision notice.
#[derive(Debug, Clone, Serialize)]
pub struct MaskedPlace {
    pub number: usize,
    pub event_id: String,
    /// The masked event itself, or an edit of it.
    pub record_event_id: String,
    pub time: String,
    pub sender: String,
    /// `event` or `text`.
    pub what: String,
    pub characters: Option<usize>,
    pub reason: String,
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportOutcome {
    pub records: usize,
    pub masked_places: Vec<MaskedPlace>,
    pub head: TreeHead,
}

/// Reads a staff directory: `user_id,displayname,department` (the CSV `kairan-admin users
/// import` takes and `users list --csv` writes). A header row starting with `user_id` is skipped.
pub fn read_directory(path: &Path, server_name: Option<&str>) -> anyhow::Result<Directory> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = HashMap::new();
    for line in text.trim_start_matches('\u{feff}').lines() {
        let fields = split_csv(line);
        let Some(user) = fields.first().map(|s| s.trim()) else { continue };
        if user.is_empty() || user.eq_ignore_ascii_case("user_id") || user.eq_ignore_ascii_case("user id") {
            continue;
        }
        let user = match (user.starts_with('@'), server_name) {
            (true, _) => user.to_owned(),
            (false, Some(s)) => format!("@{user}:{s}"),
            (false, None) => user.to_owned(),
        };
        let get = |i: usize| fields.get(i).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        out.insert(user, (get(1), get(2)));
    }
    Ok(out)
}

fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("one field").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// One message-like item as a reader sees it.
struct Item {
    record: Record,
    /// The event as a reader sees it (the cleartext of an encrypted event).
    event: Value,
    encrypted: bool,
    undecryptable: bool,
    /// Disposed of: only the leaf is left.
    disposed: bool,
    attachment: Option<Value>,
}

fn relates(event: &Value) -> (Option<&str>, Option<&str>) {
    let r = &event["content"]["m.relates_to"];
    (r["rel_type"].as_str(), r["event_id"].as_str())
}

/// Writes the disclosure folder and the unmasked folder.
pub async fn export(
    archive: &Archive,
    key: &SigningKey,
    attachments: &Path,
    req: &ExportRequest<'_>,
) -> anyhow::Result<ExportOutcome> {
    for dir in [req.out, req.unmasked_out] {
        if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
            bail!("{} exists and is not empty", dir.display());
        }
    }
    let head = archive.sign_head(key, false).await?.context("no head")?;
    let size = head.tree_size as usize;
    let tree = crate::merkle::Tree::new(archive.leaf_hashes(head.tree_size).await?);
    let head_file = serde_json::to_string_pretty(&HeadFile::build(archive, &head, &tree).await?)?;
    let all = archive.room_records(req.room_id).await?;
    if all.is_empty() {
        bail!("the archive holds nothing for room {}", req.room_id);
    }
    let in_range = |r: &Record| {
        let t = r.origin_ts.unwrap_or(r.archived_ts);
        req.from_ms.is_none_or(|f| t >= f) && req.until_ms.is_none_or(|u| t <= u)
    };
    let records: Vec<Record> = all
        .iter()
        .filter(|r| r.seq < head.tree_size)
        .filter(|r| matches!(r.kind.as_str(), kind::EVENT | kind::CLEARTEXT | kind::ATTACHMENT | kind::NOTE))
        .filter(|r| in_range(r))
        .cloned()
        .collect();

    // Who is who: the staff directory (official names, departments) where given, else the
    // display name from the room's membership events.
    let mut names: HashMap<String, String> = HashMap::new();
    let mut policy = RoomPolicy::default();
    let mut room_name = None;
    for r in &all {
        let Some(v) = r.payload.as_deref().and_then(|p| serde_json::from_slice::<Value>(p).ok()) else { continue };
        match v["type"].as_str() {
            Some("m.room.member") => {
                if let (Some(user), Some(name)) = (v["state_key"].as_str(), v["content"]["displayname"].as_str()) {
                    names.insert(user.to_owned(), name.to_owned());
                }
            }
            Some(room_policy::EVENT_TYPE) => policy = RoomPolicy::from_content(&v["content"]),
            Some("m.room.name") => room_name = v["content"]["name"].as_str().map(str::to_owned),
            _ => {}
        }
    }
    let who = |user: &str| -> (String, Option<String>) {
        let (dir_name, dept) = req.directory.get(user).cloned().unwrap_or_default();
        (dir_name.or_else(|| names.get(user).cloned()).unwrap_or_else(|| user.to_owned()), dept)
    };

    // Items by event ID: the event, its cleartext, its attachment.
    let mut items: Vec<Item> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in &records {
        let value = r.payload.as_deref().and_then(|p| serde_json::from_slice::<Value>(p).ok()).unwrap_or(Value::Null);
        match r.kind.as_str() {
            kind::EVENT => {
                let encrypted = r.event_type.as_deref() == Some("m.room.encrypted");
                index.insert(r.event_id.clone().unwrap_or_default(), items.len());
                items.push(Item {
                    record: r.clone(),
                    event: value,
                    encrypted,
                    undecryptable: encrypted,
                    disposed: r.payload.is_none(),
                    attachment: None,
                });
            }
            kind::CLEARTEXT => {
                if let Some(&i) = r.event_id.as_ref().and_then(|e| index.get(e)) {
                    let mut clear = value;
                    for k in ["event_id", "sender", "origin_server_ts"] {
                        clear[k] = items[i].event[k].clone();
                    }
                    items[i].event = clear;
                    items[i].undecryptable = false;
                }
            }
            kind::ATTACHMENT => {
                if let Some(&i) = r.event_id.as_ref().and_then(|e| index.get(e)) {
                    items[i].attachment = Some(value);
                }
            }
            _ => {}
        }
    }
    // Masks must name events in the export, and text masks must occur.
    for m in &req.masks {
        let Some(&i) = index.get(&m.event_id) else { bail!("mask for {}: no such event in the export", m.event_id) };
        if let Some(t) = &m.text
            && !items[i].event.to_string().contains(&serde_json::to_string(t)?.trim_matches('"').to_owned())
        {
            bail!("mask for {}: the text {t:?} does not occur in it", m.event_id);
        }
    }
    // An edit carries the masks of the event it edits.
    let masks_for = |item: &Item| -> Vec<&Mask> {
        let id = item.record.event_id.as_deref().unwrap_or_default();
        let target = match relates(&item.event) {
            (Some("m.replace"), Some(t)) => Some(t),
            _ => None,
        };
        req.masks.iter().filter(|m| m.event_id == id || Some(m.event_id.as_str()) == target).collect()
    };

    // What masked text could also appear elsewhere (an edit bundled into the original, a
    // thread's latest reply bundled into its root): any other record holding it is
    // withheld as well, with the same reason.
    let mut secrets: Vec<(String, &Mask)> = Vec::new();
    for m in &req.masks {
        match &m.text {
            Some(t) => secrets.push((t.clone(), m)),
            None => {
                for item in &items {
                    let id = item.record.event_id.as_deref().unwrap_or_default();
                    if id == m.event_id || relates(&item.event) == (Some("m.replace"), Some(m.event_id.as_str())) {
                        collect_texts(&item.event["content"], &mut |t| secrets.push((t, m)));
                    }
                }
            }
        }
    }

    let mut places = Vec::new();
    let mut masked_lines = String::new();
    let mut unmasked_lines = String::new();
    let mut disclosed: HashMap<String, Value> = HashMap::new();
    for r in &records {
        let item = r.event_id.as_ref().and_then(|e| index.get(e)).map(|&i| &items[i]);
        let masks = item.map(&masks_for).unwrap_or_default();
        let payload_text = r
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_slice::<Value>(p).ok())
            .map(|v| v.to_string())
            .unwrap_or_default();
        let related: Vec<&(String, &Mask)> = if masks.is_empty() {
            secrets
                .iter()
                .filter(|(t, _)| payload_text.contains(serde_json::to_string(t).unwrap_or_default().trim_matches('"')))
                .collect()
        } else {
            Vec::new()
        };
        let mut line = ProvenRecord::new(r, &tree, size, masks.is_empty() && related.is_empty());
        if !related.is_empty() {
            let mut shown: Value = serde_json::from_str(&payload_text).unwrap_or(Value::Null);
            for (t, m) in &related {
                mask_text(&mut shown, t, &m.reason);
            }
            line.masks = related
                .iter()
                .map(|(_, m)| json!({ "event_id": m.event_id, "related": true, "reason": m.reason }))
                .collect();
            line.disclosed = Some(json!({ "type": shown["type"], "content": shown["content"] }));
            if r.kind == kind::EVENT
                && let Some(e) = &r.event_id
            {
                disclosed.insert(e.clone(), line.disclosed.clone().unwrap_or_default());
                for (t, m) in &related {
                    places.push(MaskedPlace {
                        number: places.len() + 1,
                        event_id: m.event_id.clone(),
                        record_event_id: e.clone(),
                        time: r.origin_ts.map(format_jst).unwrap_or_default(),
                        sender: who(r.sender.as_deref().unwrap_or_default()).0,
                        what: "related".into(),
                        characters: Some(t.chars().count()),
                        reason: m.reason.clone(),
                    });
                }
            }
        }
        unmasked_lines.push_str(&serde_json::to_string(&ProvenRecord::new(r, &tree, size, true))?);
        unmasked_lines.push('\n');
        if let Some(item) = item
            && !masks.is_empty()
        {
            let (sender_name, _) = who(item.record.sender.as_deref().unwrap_or_default());
            let whole = masks.iter().find(|m| m.text.is_none());
            let shown = match whole {
                Some(m) => json!({ "masked": MARK, "reason": m.reason }),
                None => {
                    let mut content = item.event["content"].clone();
                    for m in &masks {
                        mask_text(&mut content, m.text.as_deref().unwrap_or_default(), &m.reason);
                    }
                    json!({ "type": item.event["type"], "content": content })
                }
            };
            line.masks = masks
                .iter()
                .map(|m| json!({ "event_id": m.event_id, "text_masked": m.text.is_some(), "reason": m.reason }))
                .collect();
            line.disclosed = Some(shown.clone());
            if r.kind == kind::EVENT {
                disclosed.insert(r.event_id.clone().unwrap_or_default(), shown);
                for m in &masks {
                    places.push(MaskedPlace {
                        number: places.len() + 1,
                        event_id: m.event_id.clone(),
                        record_event_id: r.event_id.clone().unwrap_or_default(),
                        time: item.record.origin_ts.map(format_jst).unwrap_or_default(),
                        sender: sender_name.clone(),
                        what: if m.text.is_some() { "text".into() } else { "event".into() },
                        characters: m.text.as_ref().map(|t| t.chars().count()),
                        reason: m.reason.clone(),
                    });
                }
            }
        }
        masked_lines.push_str(&serde_json::to_string(&line)?);
        masked_lines.push('\n');
    }

    let title = room_name.clone().unwrap_or_else(|| req.room_id.to_owned());
    for (dir, masked) in [(req.out, true), (req.unmasked_out, false)] {
        std::fs::create_dir_all(dir.join("attachments"))?;
        std::fs::write(dir.join("records.jsonl"), if masked { &masked_lines } else { &unmasked_lines })?;
        std::fs::write(dir.join("tree-head.json"), &head_file)?;
        std::fs::write(dir.join("masked-places.json"), serde_json::to_string_pretty(&places)?)?;
        let mut csv = String::from("number,event_id,record_event_id,time,sender,what,characters,reason\n");
        for p in &places {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                p.number,
                p.event_id,
                p.record_event_id,
                p.time,
                csv_field(&p.sender),
                p.what,
                p.characters.map(|c| c.to_string()).unwrap_or_default(),
                csv_field(&p.reason)
            ));
        }
        std::fs::write(dir.join("masked-places.csv"), csv)?;
        for item in &items {
            let whole_masked = masked && masks_for(item).iter().any(|m| m.text.is_none());
            if let Some(sha) = item.attachment.as_ref().and_then(|a| a["sha256"].as_str())
                && !whole_masked
            {
                let src = attachment_path(attachments, sha);
                if src.exists() {
                    std::fs::copy(&src, dir.join("attachments").join(sha))?;
                }
            }
        }
        let html =
            render_html(&title, req, &policy, &items, masked.then_some(&disclosed), &places, &head, masked, &who);
        std::fs::write(dir.join("index.html"), html)?;
        std::fs::write(dir.join("README.txt"), format!("{PACKAGE_README_EXPORT}{PACKAGE_README}"))?;
        write_manifest(dir)?;
    }
    Ok(ExportOutcome { records: records.len(), masked_places: places, head })
}

/// The human-readable texts of a content (bodies, file names), for the leak check.
fn collect_texts(content: &Value, out: &mut dyn FnMut(String)) {
    match content {
        Value::Object(o) => {
            for (k, v) in o {
                match v {
                    Value::String(t)
                        if matches!(k.as_str(), "body" | "formatted_body" | "filename") && t.chars().count() >= 2 =>
                    {
                        out(t.clone())
                    }
                    Value::Object(_) | Value::Array(_) => collect_texts(v, out),
                    _ => {}
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_texts(v, out)),
        _ => {}
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// Replaces every occurrence of `text` in the string fields of `content` with the mark.
fn mask_text(content: &mut Value, text: &str, reason: &str) {
    match content {
        Value::String(s) if s.contains(text) => *s = s.replace(text, &format!("【{MARK}: {reason}】")),
        Value::Array(a) => a.iter_mut().for_each(|v| mask_text(v, text, reason)),
        Value::Object(o) => o.values_mut().for_each(|v| mask_text(v, text, reason)),
        _ => {}
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The body of an event as text (with the mark where masked).
fn body_of(event: &Value) -> String {
    let c = &event["content"];
    let c = if c["m.new_content"].is_object() { &c["m.new_content"] } else { c };
    match &c["body"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn render_html(
    title: &str,
    req: &ExportRequest<'_>,
    policy: &RoomPolicy,
    items: &[Item],
    disclosed: Option<&HashMap<String, Value>>,
    places: &[MaskedPlace],
    head: &TreeHead,
    masked: bool,
    who: &dyn Fn(&str) -> (String, Option<String>),
) -> String {
    let id_of = |i: &Item| i.record.event_id.clone().unwrap_or_default();
    // Relations: edits, reactions, redactions, thread replies, by target.
    let mut edits: BTreeMap<String, Vec<&Item>> = BTreeMap::new();
    let mut reactions: BTreeMap<String, Vec<&Item>> = BTreeMap::new();
    let mut redactions: BTreeMap<String, &Item> = BTreeMap::new();
    let mut thread: BTreeMap<String, Vec<&Item>> = BTreeMap::new();
    let mut top: Vec<&Item> = Vec::new();
    for i in items {
        let ev = &i.event;
        match (ev["type"].as_str(), relates(ev)) {
            (Some("m.reaction"), (_, Some(t))) => reactions.entry(t.to_owned()).or_default().push(i),
            (Some("m.room.redaction"), _) => {
                let target = ev["redacts"].as_str().or(ev["content"]["redacts"].as_str()).unwrap_or_default();
                redactions.insert(target.to_owned(), i);
                top.push(i);
            }
            (_, (Some("m.replace"), Some(t))) => edits.entry(t.to_owned()).or_default().push(i),
            (_, (Some("m.thread"), Some(t))) => thread.entry(t.to_owned()).or_default().push(i),
            _ => top.push(i),
        }
    }
    let mask_of = |i: &Item| disclosed.and_then(|d| d.get(&id_of(i)));
    let shown_body = |i: &Item| -> String {
        match mask_of(i) {
            Some(v) if v["masked"].is_string() => format!(
                "<span class=\"mask\">{MARK}（理由 / reason: {}）</span>",
                esc(v["reason"].as_str().unwrap_or_default())
            ),
            Some(v) => mark_html(&esc(&body_of(v))),
            None if i.disposed => "<em>廃棄済み / disposed of</em>".into(),
            None if i.undecryptable => {
                "<em>暗号化されたメッセージ（復号できず） / encrypted message, not decrypted</em>".into()
            }
            None => esc(&body_of(&i.event)),
        }
    };
    let sender_html = |i: &Item| {
        let user = i.record.sender.as_deref().unwrap_or_default();
        let (name, dept) = who(user);
        let dept = dept.map(|d| format!(" <span class=\"dept\">{}</span>", esc(&d))).unwrap_or_default();
        format!("<span class=\"name\">{}</span>{dept} <span class=\"uid\">{}</span>", esc(&name), esc(user))
    };
    let time_of = |i: &Item| i.record.origin_ts.map(format_jst).unwrap_or_default();

    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"ja\"><head><meta charset=\"utf-8\">\n");
    h.push_str(&format!("<title>{} — 記録 / Record</title>\n", esc(title)));
    h.push_str(
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}.msg{border-bottom:1px solid #ddd;padding:.5em 0}\
         .meta{color:#555;font-size:.9em}.dept{background:#eef;padding:0 .3em}.uid{color:#999;font-size:.8em}\
         .mask{background:#000;color:#fff;padding:0 .3em}.thread{margin-left:2em;border-left:3px solid #ccd;padding-left:1em}\
         .versions{color:#666;font-size:.9em}.state{color:#666;font-style:italic}.redacted{color:#a00}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}</style></head><body>\n",
    );
    h.push_str(&format!("<h1>{}</h1>\n", esc(title)));
    if !masked {
        h.push_str("<p class=\"redacted\"><strong>原本（不開示部分を含む）— 記録管理担当者用 / Unmasked original — for the records office only</strong></p>\n");
    }
    h.push_str("<table>\n");
    let row = |k: &str, v: &str| format!("<tr><th>{k}</th><td>{}</td></tr>\n", esc(v));
    h.push_str(&row("ルーム / Room", req.room_id));
    h.push_str(&row("主管課 / Department", policy.department.as_deref().unwrap_or("-")));
    h.push_str(&row("保存期間 / Retention", policy.retention.as_deref().unwrap_or("-")));
    h.push_str(&row(
        "期間満了時の措置 / On expiry",
        match policy.on_expiry.as_deref() {
            Some("transfer") => "移管 / transfer",
            Some("dispose") => "廃棄 / dispose",
            _ => "-",
        },
    ));
    let range = format!(
        "{} 〜 {}",
        req.from_ms.map(format_jst).unwrap_or_else(|| "-".into()),
        req.until_ms.map(format_jst).unwrap_or_else(|| "-".into())
    );
    h.push_str(&row("対象期間 / Period", &range));
    h.push_str(&row(
        "署名付きツリーヘッド / Signed tree head",
        &format!("#{} size {} root {} ({})", head.id, head.tree_size, head.root_hash, format_jst(head.created_ts)),
    ));
    h.push_str("</table>\n<h2>記録 / Records</h2>\n");

    let render_item = |i: &Item, h: &mut String| {
        let id = id_of(i);
        let ev = &i.event;
        let ty = ev["type"].as_str().or(i.record.event_type.as_deref()).unwrap_or_default();
        h.push_str(&format!("<div class=\"msg\" id=\"{}\">\n", esc(&id)));
        let lock = if i.encrypted { " · 暗号化 / encrypted" } else { "" };
        h.push_str(&format!(
            "<div class=\"meta\">{} · {} · <code>{}</code>{lock}</div>\n",
            time_of(i),
            sender_html(i),
            esc(&id)
        ));
        if ty == "m.room.member" {
            let target = ev["state_key"].as_str().unwrap_or_default();
            let what = match ev["content"]["membership"].as_str() {
                Some("join") => "参加 / joined",
                Some("invite") => "招待 / invited",
                Some("leave") if Some(target) == i.record.sender.as_deref() => "退出 / left",
                Some("leave") => "退室させた / removed",
                Some("ban") => "追放 / banned",
                _ => "メンバー情報の変更 / membership changed",
            };
            h.push_str(&format!("<div class=\"state\">{what}: {} ({})</div>\n", esc(&who(target).0), esc(target)));
        } else if ev["state_key"].is_string() {
            h.push_str(&format!(
                "<div class=\"state\">状態の変更 / State change: {} {}</div>\n",
                esc(ty),
                esc(&ev["content"].to_string())
            ));
        } else if ty == "m.room.redaction" {
            let target = ev["redacts"].as_str().or(ev["content"]["redacts"].as_str()).unwrap_or_default();
            h.push_str(&format!(
                "<div class=\"state\">メッセージの削除 / Redaction of <a href=\"#{0}\">{0}</a></div>\n",
                esc(target)
            ));
        } else {
            if let Some(reply) = ev["content"]["m.relates_to"]["m.in_reply_to"]["event_id"].as_str() {
                h.push_str(&format!(
                    "<div class=\"meta\">返信 / Reply to <a href=\"#{0}\">{0}</a></div>\n",
                    esc(reply)
                ));
            }
            let versions = edits.get(&id);
            let current = versions.and_then(|v| v.last()).copied().unwrap_or(i);
            h.push_str(&format!("<div class=\"body\">{}</div>\n", shown_body(current)));
            if let Some(versions) = versions {
                h.push_str("<div class=\"versions\">編集済み / Edited. 以前の版 / Earlier versions:<ol>\n");
                h.push_str(&format!("<li>{} {}</li>\n", time_of(i), shown_body(i)));
                for v in &versions[..versions.len() - 1] {
                    h.push_str(&format!("<li>{} {}</li>\n", time_of(v), shown_body(v)));
                }
                h.push_str(&format!(
                    "<li>{} {} (現行 / current)</li></ol></div>\n",
                    time_of(current),
                    shown_body(current)
                ));
            }
            let whole_masked = mask_of(i).is_some_and(|v| v["masked"].is_string());
            if let Some(a) = &i.attachment
                && !whole_masked
            {
                let sha = a["sha256"].as_str().unwrap_or_default();
                let name = a["filename"].as_str().unwrap_or("file");
                h.push_str(&format!(
                    "<div>添付ファイル / Attachment: <a href=\"attachments/{}\">{}</a> ({} bytes, SHA-256 {})</div>\n",
                    esc(sha),
                    esc(name),
                    a["size"],
                    esc(sha)
                ));
            }
        }
        if let Some(r) = redactions.get(&id) {
            h.push_str(&format!(
                "<div class=\"redacted\">削除済み / Redacted: {} by {} (原文は記録として保存 / the original is kept as a record)</div>\n",
                time_of(r),
                sender_html(r)
            ));
        }
        if let Some(rs) = reactions.get(&id) {
            let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in rs {
                let k = r.event["content"]["m.relates_to"]["key"].as_str().unwrap_or("?").to_owned();
                by_key.entry(k).or_default().push(who(r.event["sender"].as_str().unwrap_or_default()).0);
            }
            let list: Vec<String> = by_key
                .iter()
                .map(|(k, names)| format!("{} ×{} ({})", esc(k), names.len(), esc(&names.join(", "))))
                .collect();
            h.push_str(&format!("<div class=\"meta\">リアクション / Reactions: {}</div>\n", list.join(" · ")));
        }
        h.push_str("</div>\n");
    };
    for i in top {
        render_item(i, &mut h);
        if let Some(replies) = thread.get(&id_of(i)) {
            h.push_str(&format!(
                "<div class=\"thread\"><div class=\"meta\">スレッド / Thread ({} 件 / replies)</div>\n",
                replies.len()
            ));
            for r in replies {
                render_item(r, &mut h);
            }
            h.push_str("</div>\n");
        }
    }
    h.push_str("<h2>不開示箇所一覧 / Masked places</h2>\n");
    if places.is_empty() {
        h.push_str("<p>なし / None</p>\n");
    } else {
        h.push_str("<table><tr><th>番号 / No.</th><th>日時 / Time</th><th>発言者 / Sender</th><th>イベント / Event</th><th>範囲 / Extent</th><th>理由 / Reason</th></tr>\n");
        for p in places {
            let extent = match p.characters {
                Some(n) => format!("本文の一部（{n}文字） / part of the text ({n} characters)"),
                None => "全体 / whole message".into(),
            };
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>\n",
                p.number,
                esc(&p.time),
                esc(&p.sender),
                esc(&p.record_event_id),
                extent,
                esc(&p.reason)
            ));
        }
        h.push_str("</table>\n");
    }
    h.push_str(
        "<p class=\"meta\">各記録は records.jsonl の包含証明と tree-head.json の署名で検証できます。 / \
         Every record can be checked with its inclusion proof in records.jsonl and the signed tree head in tree-head.json.</p>\n",
    );
    h.push_str("</body></html>\n");
    h
}

/// Turns the plain-text marks `【不開示: reason】` into visible HTML marks.
fn mark_html(escaped: &str) -> String {
    let open = format!("【{MARK}: ");
    let mut out = String::new();
    let mut rest = escaped;
    while let Some(start) = rest.find(&open) {
        out.push_str(&rest[..start]);
        let after = &rest[start + open.len()..];
        match after.find('】') {
            Some(end) => {
                out.push_str(&format!("<span class=\"mask\">{MARK}（理由 / reason: {}）</span>", &after[..end]));
                rest = &after[end + '】'.len_utf8()..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_parse_and_apply() {
        let m = Mask::parse_text("$abc=第7条第2号=090-1234-5678").unwrap();
        assert_eq!(m.text.as_deref(), Some("090-1234-5678"));
        assert!(Mask::parse_event("abc=x").is_err());
        assert!(Mask::parse_text("$abc=x").is_err());
        let mut content = json!({ "body": "call 090-1234-5678 now", "formatted_body": "<b>090-1234-5678</b>" });
        mask_text(&mut content, "090-1234-5678", "第7条第2号");
        assert_eq!(content["body"], "call 【不開示: 第7条第2号】 now");
        assert!(!content.to_string().contains("090"));
        assert_eq!(mark_html("a 【不開示: R】 b"), "a <span class=\"mask\">不開示（理由 / reason: R）</span> b");
    }

    #[test]
    fn directory_csv() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("staff.csv");
        std::fs::write(&p, "user_id,displayname,department\ntanaka,\"田中, 太郎\",総務課\n@x:other,X,\n").unwrap();
        let d = read_directory(&p, Some("pref.example")).unwrap();
        assert_eq!(d["@tanaka:pref.example"], (Some("田中, 太郎".into()), Some("総務課".into())));
        assert_eq!(d["@x:other"], (Some("X".into()), None));
    }
}
