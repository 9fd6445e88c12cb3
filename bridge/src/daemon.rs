//! `kairan-bridge run`: the archiving daemon.
//!
//! A matrix-sdk client (persistent SQLite store, end-to-end encryption) logged in as the
//! archive account. Sync is used for what only sync brings (invites, room keys as to-device
//! messages) and as a wake-up; the archive itself is read with `/messages` forwards from a
//! cursor kept in the archive database and moved in the same transaction as the records it
//! covers. So a crash, `kill -9` or network loss at any point loses nothing (the cursor has
//! not moved past what is not committed) and duplicates nothing (every event has a unique
//! `event:<id>` key). Attachments and decryption are queued in that same transaction and
//! worked off afterwards, with retries.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use kairan_types::room_policy::{self, RoomPolicy};
use matrix_sdk::{
    Client, RoomState,
    authentication::matrix::MatrixSession,
    config::{RequestConfig, SyncSettings},
    deserialized_responses::TimelineEventKind,
    media::{MediaFormat, MediaRequestParameters},
    ruma::{OwnedRoomId, RoomId, events::room::MediaSource, serde::Raw},
    store::RoomLoadSettings,
};
use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::{
    archive::Archive,
    config::Config,
    keys,
    metrics::{Failure, Metrics, Source},
    record::{NewRecord, kind, sha256_hex},
    retention::{Retention, now_ms},
};

/// The localpart of the account a kairan homeserver sends room policy events from
/// (`@_kairan_policy:server`); kairan refuses that event type from every other sender.
pub const POLICY_LOCALPART: &str = "_kairan_policy";
/// A body longer than this is archived whole, with a note.
const LARGE_BODY: usize = 16 * 1024;
/// Events per `/messages` page.
const PAGE: u32 = 200;
/// Give up on a pending item (and record that) after this many attempts.
const MAX_ATTEMPTS: i64 = 12;

/// The running daemon.
pub struct Daemon {
    config: Config,
    archive: Archive,
    key: Arc<SigningKey>,
    client: Client,
    http: reqwest::Client,
    homeserver: String,
    policy_servers: Vec<String>,
    metrics: Arc<Metrics>,
}

/// One `/messages` page, events kept as the exact bytes received.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    chunk: Vec<Box<RawValue>>,
    #[serde(default)]
    end: Option<String>,
}

impl Daemon {
    /// Opens the archive, loads (or creates) the signing key, and logs in or restores the session.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let (homeserver, user, password) = config.daemon()?;
        let archive = Archive::open(&config.database_url()).await?;
        let key = Arc::new(keys::load_or_create_signing_key(&config.signing_key_path())?);
        std::fs::create_dir_all(config.attachments())
            .with_context(|| format!("creating {}", config.attachments().display()))?;
        let client = login(&config, &homeserver, &user, &password).await?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(90)).build()?;
        let policy_servers = config.policy_servers();
        Ok(Self {
            config,
            archive,
            key,
            client,
            http,
            homeserver: homeserver.trim_end_matches('/').to_owned(),
            policy_servers,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// What the metrics listener reads: this daemon's counters, its archive and attachments.
    pub fn metrics_source(&self) -> Source {
        Source { metrics: self.metrics.clone(), archive: self.archive.clone(), attachments: self.config.attachments() }
    }

    /// Commits an appending transaction and counts what it made durable.
    async fn commit(&self, tx: crate::archive::AppendTx) -> anyhow::Result<()> {
        let kinds = tx.commit_appended().await?;
        self.metrics.archived(&kinds);
        Ok(())
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let checkpoint_every = Duration::from_secs(self.config.checkpoint_interval_secs.max(1));
        let sweep_every = Duration::from_secs(self.config.sweep_interval_secs.max(1));
        let mut last_checkpoint = Instant::now();
        let mut last_sweep: Option<Instant> = None;
        let mut failures = 0u32;
        tracing::info!(user = ?self.client.user_id(), "kairan-bridge running");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let settings =
                SyncSettings::default().timeout(Duration::from_secs(if last_sweep.is_none() { 0 } else { 5 }));
            let sync = tokio::select! {
                r = self.client.sync_once(settings) => r,
                _ = shutdown.changed() => break,
            };
            let active: Vec<OwnedRoomId> = match sync {
                Ok(response) => {
                    failures = 0;
                    response.rooms.joined.keys().cloned().collect()
                }
                Err(e) => {
                    failures += 1;
                    self.metrics.failed(Failure::sync);
                    let wait = Duration::from_millis(500 * u64::from(failures.min(20)));
                    tracing::warn!(error = %e, ?wait, "sync failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => break,
                    }
                    continue;
                }
            };
            if let Err(e) = self.pass(&active, &mut last_sweep, sweep_every).await {
                self.metrics.failed(Failure::pass);
                tracing::warn!(error = format!("{e:#}"), "archiving pass failed; will retry");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => break,
                }
            }
            if last_checkpoint.elapsed() >= checkpoint_every {
                match self.archive.sign_head(&self.key, true).await {
                    Ok(Some(h)) => tracing::info!(size = h.tree_size, root = %h.root_hash, "signed a tree head"),
                    Ok(None) => {}
                    Err(e) => {
                        self.metrics.failed(Failure::checkpoint);
                        tracing::warn!(error = format!("{e:#}"), "signing a tree head failed");
                    }
                }
                last_checkpoint = Instant::now();
            }
        }
        // A last head on the way out, so a clean stop leaves everything signed.
        if let Err(e) = self.archive.sign_head(&self.key, true).await {
            self.metrics.failed(Failure::checkpoint);
            tracing::warn!(error = format!("{e:#}"), "signing the final tree head failed");
        }
        self.archive.close().await;
        tracing::info!("kairan-bridge stopped");
        Ok(())
    }

    /// Invites, then the rooms that need reading, then pending work.
    async fn pass(
        &self,
        active: &[OwnedRoomId],
        last_sweep: &mut Option<Instant>,
        sweep_every: Duration,
    ) -> anyhow::Result<()> {
        for room in self.client.invited_rooms() {
            self.consider_invite(room.room_id().to_owned()).await;
        }
        let known = self.archive.rooms().await?;
        // Rooms the client is in but the archive does not know (a lost database, an old join).
        for room in self.client.joined_rooms() {
            if !known.iter().any(|r| r.room_id == room.room_id().as_str()) {
                self.check_joined_room(room.room_id().to_owned()).await?;
            }
        }
        let sweep = last_sweep.is_none_or(|t| t.elapsed() >= sweep_every);
        for row in self.archive.rooms().await? {
            if !row.official {
                continue;
            }
            // Kicked or banned from an official room: the record has a gap until the account
            // is back (the homeserver invites it back after a kick). An alert, every sweep.
            if sweep
                && let Some(room) = RoomId::parse(&row.room_id).ok().and_then(|id| self.client.get_room(&id))
                && matches!(room.state(), RoomState::Left | RoomState::Banned)
            {
                self.metrics.failed(Failure::removed);
                tracing::error!(room = %row.room_id, state = ?room.state(), "the archive account is not in an official room");
                continue;
            }
            if (sweep || active.iter().any(|r| r.as_str() == row.room_id))
                && let Err(e) = self.catch_up(&row.room_id).await
            {
                // One room that cannot be read (the account was removed, the room shut
                // down) must not stop the others.
                self.metrics.failed(Failure::read);
                tracing::warn!(room = %row.room_id, error = format!("{e:#}"), "could not read the room; will retry");
            }
        }
        if sweep {
            *last_sweep = Some(Instant::now());
        }
        self.work_pending().await
    }

    /// Joins, reads the policy, and stays only if the room is official.
    async fn consider_invite(&self, room_id: OwnedRoomId) {
        let Some(room) = self.client.get_room(&room_id) else { return };
        if let Err(e) = room.join().await {
            self.metrics.failed(Failure::invite);
            tracing::warn!(room = %room_id, error = %e, "could not join an invited room");
            return;
        }
        if let Err(e) = self.check_joined_room(room_id.clone()).await {
            self.metrics.failed(Failure::invite);
            tracing::warn!(room = %room_id, error = format!("{e:#}"), "could not check the room's policy");
        }
    }

    /// Reads the policy of a joined room; official: archive it, else leave.
    async fn check_joined_room(&self, room_id: OwnedRoomId) -> anyhow::Result<()> {
        let policy = self.current_policy(room_id.as_str()).await?;
        match policy {
            Some((policy, raw)) if policy.official => {
                tracing::info!(room = %room_id, retention = ?policy.retention, "archiving an official room");
                self.archive.upsert_room(room_id.as_str(), Some(&raw), true).await?;
            }
            other => {
                tracing::info!(room = %room_id, policy = ?other.map(|p| p.0), "not an official room; leaving");
                self.archive.upsert_room(room_id.as_str(), None, false).await?;
                if let Some(room) = self.client.get_room(&room_id) {
                    room.leave().await.ok();
                } else {
                    self.post_json(&format!("/_matrix/client/v3/rooms/{}/leave", enc(room_id.as_str())), &json!({}))
                        .await
                        .ok();
                }
            }
        }
        Ok(())
    }

    /// Whether a policy event from `sender` is the administrators' word: sent by the policy
    /// account of a trusted server, not by any user of it (who could otherwise make their
    /// own room "official").
    fn is_policy_sender(&self, sender: &str) -> bool {
        is_policy_sender(&self.policy_servers, sender)
    }

    /// The room's policy from its current state, if set by a trusted sender.
    async fn current_policy(&self, room_id: &str) -> anyhow::Result<Option<(RoomPolicy, String)>> {
        let state: Value = self.get_json(&format!("/_matrix/client/v3/rooms/{}/state", enc(room_id))).await?;
        let Some(events) = state.as_array() else { bail!("GET /state did not return a list") };
        let Some(event) = events.iter().find(|e| e["type"] == room_policy::EVENT_TYPE && e["state_key"] == "") else {
            return Ok(None);
        };
        let sender = event["sender"].as_str().unwrap_or_default();
        if !self.is_policy_sender(sender) {
            tracing::warn!(
                room = room_id,
                sender,
                "policy event not from the policy account of a server in policy_servers; ignored"
            );
            return Ok(None);
        }
        let content = event.get("content").cloned().unwrap_or(Value::Null);
        Ok(Some((RoomPolicy::from_content(&content), content.to_string())))
    }

    /// Reads the room forwards from its cursor to the end, archiving every event.
    async fn catch_up(&self, room_id: &str) -> anyhow::Result<()> {
        let row = self.archive.room(room_id).await?.context("unknown room")?;
        let mut policy = row
            .policy
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .map(|v: Value| RoomPolicy::from_content(&v))
            .unwrap_or_default();
        let mut cursor = row.cursor;
        loop {
            let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=f&limit={PAGE}", enc(room_id));
            if let Some(from) = &cursor {
                path.push_str(&format!("&from={}", enc(from)));
            }
            // A page that finds the end holds everything the server had when it was asked for.
            let asked = now_ms();
            let body = self.get_bytes(&path).await?;
            let page: Page = match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => {
                    // Keep what could not be read, then stop this room for now.
                    let mut tx = self.archive.begin_append().await?;
                    tx.append(
                        &self.key,
                        NewRecord {
                            kind: kind::NOTE.into(),
                            dedup_key: Some(format!("page:{}", sha256_hex(&body))),
                            room_id: Some(room_id.to_owned()),
                            payload: body.to_vec(),
                            note: Some(format!("a /messages page could not be parsed ({e}); kept as received")),
                            ..Default::default()
                        },
                    )
                    .await?;
                    self.commit(tx).await?;
                    bail!("unparseable /messages page: {e}");
                }
            };
            let mut tx = self.archive.begin_append().await?;
            let mut changed_policy = None;
            for raw in &page.chunk {
                if let Some(p) = self.archive_event(&mut tx, room_id, &policy, raw).await? {
                    policy = p.0.clone();
                    changed_policy = Some(p);
                }
            }
            let next = page.end.clone().or(cursor.clone());
            tx.set_cursor(room_id, next.as_deref()).await?;
            self.commit(tx).await?;
            if let Some((p, raw)) = changed_policy {
                self.archive.upsert_room(room_id, Some(&raw), p.official || row.official).await?;
            }
            if page.end.is_none() || page.end == cursor {
                self.metrics.read_through(room_id, asked);
                break;
            }
            cursor = page.end;
        }
        Ok(())
    }

    /// Archives one event as received; returns a new policy if the event is one.
    async fn archive_event(
        &self,
        tx: &mut crate::archive::AppendTx,
        room_id: &str,
        policy: &RoomPolicy,
        raw: &RawValue,
    ) -> anyhow::Result<Option<(RoomPolicy, String)>> {
        let bytes = raw.get().as_bytes().to_vec();
        let mut notes = Vec::new();
        let value: Value = match serde_json::from_str(raw.get()) {
            Ok(v) => v,
            Err(e) => {
                notes.push(format!("not decodable as JSON text ({e}); kept as received"));
                lenient(raw.get())
            }
        };
        let event_id = value.get("event_id").and_then(Value::as_str).map(str::to_owned);
        let event_type = value.get("type").and_then(Value::as_str).map(str::to_owned);
        let sender = value.get("sender").and_then(Value::as_str).map(str::to_owned);
        let origin_ts = value.get("origin_server_ts").and_then(Value::as_i64);
        if value.is_object() {
            if event_id.is_none() {
                notes.push("no event_id".into());
            }
            if event_type.is_none() {
                notes.push("no type, or not a string".into());
            }
            if sender.is_none() {
                notes.push("no sender, or not a string".into());
            }
            if origin_ts.is_none() {
                notes.push("origin_server_ts missing or not an integer".into());
            }
            notes.extend(content_notes(&value));
            if value["unsigned"]["redacted_because"].is_object() {
                notes.push("served already redacted: the original content never reached the bridge".into());
            }
        } else if !value.is_null() {
            notes.push("not a JSON object".into());
        }
        let dedup = match &event_id {
            Some(id) => format!("event:{id}"),
            None => format!("raw:{}:{}", room_id, sha256_hex(&bytes)),
        };
        // Retention counts from when the record reached the archive, not from the
        // `origin_server_ts` the sending server chose: a server that dates its events in the
        // past must not make them expire early. (A genuine event is always sent before it
        // is archived, so this only ever keeps a record longer.)
        let retention = Retention::for_record(policy, now_ms());
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        if let Some(n) = &note {
            tracing::warn!(room = room_id, event = ?event_id, note = %n, "archived an odd event with a note");
        }
        let seq = tx
            .append(
                &self.key,
                NewRecord {
                    kind: kind::EVENT.into(),
                    dedup_key: Some(dedup),
                    room_id: Some(room_id.to_owned()),
                    event_id: event_id.clone(),
                    event_type: event_type.clone(),
                    sender,
                    origin_ts,
                    retention: retention.class,
                    expires: retention.expires,
                    on_expiry: retention.on_expiry,
                    payload: bytes,
                    note,
                },
            )
            .await?;
        let (Some(seq), Some(event_id)) = (seq, event_id) else { return Ok(None) };
        if event_type.as_deref() == Some("m.room.encrypted") {
            tx.add_pending(&format!("cleartext:{event_id}"), "decrypt", room_id, &event_id, seq).await?;
        } else if attachment_source(&value["content"]).is_some() {
            tx.add_pending(&format!("attachment:{event_id}"), "attachment", room_id, &event_id, seq).await?;
        }
        if event_type.as_deref() == Some(room_policy::EVENT_TYPE) && value["state_key"] == "" {
            let content = value.get("content").cloned().unwrap_or(Value::Null);
            if self.is_policy_sender(value["sender"].as_str().unwrap_or_default()) {
                return Ok(Some((RoomPolicy::from_content(&content), content.to_string())));
            }
        }
        Ok(None)
    }

    /// Decryptions and attachment downloads that are due.
    async fn work_pending(&self) -> anyhow::Result<()> {
        for item in self.archive.due_pending(now_ms()).await? {
            let result = match item.kind.as_str() {
                "decrypt" => self.decrypt(&item).await,
                "attachment" => self.fetch_attachment(&item).await,
                other => Err(anyhow::anyhow!("unknown pending kind {other}")),
            };
            if let Err(e) = result {
                let error = format!("{e:#}");
                if item.attempts + 1 >= MAX_ATTEMPTS || e.downcast_ref::<Permanent>().is_some() {
                    // Record the failure for good, so the gap is visible in the archive.
                    let mut tx = self.archive.begin_append().await?;
                    tx.append(
                        &self.key,
                        NewRecord {
                            kind: kind::NOTE.into(),
                            dedup_key: Some(item.dedup_key.clone()),
                            room_id: Some(item.room_id.clone()),
                            event_id: Some(item.event_id.clone()),
                            payload: json!({ "failed": item.kind, "error": error }).to_string().into_bytes(),
                            note: Some(format!("{} failed after {} attempts: {error}", item.kind, item.attempts + 1)),
                            ..Default::default()
                        },
                    )
                    .await?;
                    tx.remove_pending(&item.dedup_key).await?;
                    self.commit(tx).await?;
                    self.metrics.failed(Failure::gave_up);
                } else {
                    self.metrics.failed(Failure::retry);
                    let backoff = 1000 * 2i64.pow(item.attempts.clamp(0, 8) as u32);
                    tracing::info!(what = %item.dedup_key, error, "pending work not done yet; retrying later");
                    self.archive.pending_failed(&item.dedup_key, &error, now_ms() + backoff).await?;
                }
            }
        }
        Ok(())
    }

    /// Decrypts an archived `m.room.encrypted` event and appends its cleartext.
    async fn decrypt(&self, item: &crate::archive::Pending) -> anyhow::Result<()> {
        let record = self
            .archive
            .record_by_key(&format!("event:{}", item.event_id))
            .await?
            .context("the event record is gone")?;
        let text = record.payload_text().context("the event has no payload (disposed?)")?.to_owned();
        let room_id: OwnedRoomId = item.room_id.as_str().try_into()?;
        let room = self.client.get_room(&room_id).context("the client does not know the room yet")?;
        let raw = Raw::from_json(RawValue::from_string(text)?);
        let event = room.decrypt_event(&raw, None).await?;
        let TimelineEventKind::Decrypted(decrypted) = &event.kind else {
            bail!("no room key for this event yet");
        };
        let clear = decrypted.event.json().get().to_owned();
        let value: Value = serde_json::from_str(&clear).unwrap_or(Value::Null);
        let mut notes = content_notes(&value);
        if let Some(info) = event.encryption_info() {
            notes.push(format!("decrypted; sender device {:?}", info.sender_device));
        }
        let mut tx = self.archive.begin_append().await?;
        let seq = tx
            .append(
                &self.key,
                NewRecord {
                    kind: kind::CLEARTEXT.into(),
                    dedup_key: Some(item.dedup_key.clone()),
                    room_id: record.room_id.clone(),
                    event_id: record.event_id.clone(),
                    event_type: value.get("type").and_then(Value::as_str).map(str::to_owned),
                    sender: record.sender.clone(),
                    origin_ts: record.origin_ts,
                    retention: record.retention.clone(),
                    expires: record.expires.clone(),
                    on_expiry: record.on_expiry.clone(),
                    payload: clear.into_bytes(),
                    note: Some(notes.join("; ")),
                },
            )
            .await?;
        tx.remove_pending(&item.dedup_key).await?;
        if let Some(seq) = seq
            && attachment_source(&value["content"]).is_some()
        {
            tx.add_pending(&format!("attachment:{}", item.event_id), "attachment", &item.room_id, &item.event_id, seq)
                .await?;
        }
        self.commit(tx).await
    }

    /// Downloads an event's attachment, stores it by its SHA-256, and appends its record.
    async fn fetch_attachment(&self, item: &crate::archive::Pending) -> anyhow::Result<()> {
        // The cleartext (for an encrypted event) or the event itself names the file.
        let source_record = match self.archive.record_by_key(&format!("cleartext:{}", item.event_id)).await? {
            Some(r) => r,
            None => self
                .archive
                .record_by_key(&format!("event:{}", item.event_id))
                .await?
                .context("the event record is gone")?,
        };
        let value: Value =
            serde_json::from_slice(source_record.payload.as_deref().unwrap_or(b"null")).unwrap_or(Value::Null);
        let content = &value["content"];
        let source = attachment_source(content).context("no attachment in the event any more")?;
        let bytes = match self
            .client
            .media()
            .get_media_content(&MediaRequestParameters { source: source.clone(), format: MediaFormat::File }, false)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                let status = e.as_client_api_error().map(|c| c.status_code.as_u16());
                let text = e.to_string();
                if matches!(status, Some(400 | 403 | 404)) || text.contains("M_NOT_FOUND") || text.contains("404") {
                    return Err(Permanent(format!("the server refuses the download ({e})")).into());
                }
                return Err(anyhow::Error::new(e).context("downloading"));
            }
        };
        let sha = hex::encode(Sha256::digest(&bytes));
        store_attachment(&self.config.attachments(), &sha, &bytes)?;
        self.metrics.attachment_stored();
        let (mxc, encrypted) = match &source {
            MediaSource::Plain(uri) => (uri.to_string(), false),
            MediaSource::Encrypted(file) => (file.url.to_string(), true),
        };
        let meta = json!({
            "sha256": sha,
            "size": bytes.len(),
            "mxc": mxc,
            "encrypted": encrypted,
            "mimetype": content["info"]["mimetype"],
            "filename": content.get("filename").or_else(|| content.get("body")).cloned().unwrap_or(Value::Null),
        });
        let mut tx = self.archive.begin_append().await?;
        tx.append(
            &self.key,
            NewRecord {
                kind: kind::ATTACHMENT.into(),
                dedup_key: Some(item.dedup_key.clone()),
                room_id: source_record.room_id.clone(),
                event_id: source_record.event_id.clone(),
                event_type: None,
                sender: source_record.sender.clone(),
                origin_ts: source_record.origin_ts,
                retention: source_record.retention.clone(),
                expires: source_record.expires.clone(),
                on_expiry: source_record.on_expiry.clone(),
                payload: meta.to_string().into_bytes(),
                note: None,
            },
        )
        .await?;
        tx.remove_pending(&item.dedup_key).await?;
        self.commit(tx).await
    }

    async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let token = self.client.access_token().context("not logged in")?;
        let response = self.http.get(format!("{}{path}", self.homeserver)).bearer_auth(token).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        }
        Ok(body.to_vec())
    }

    async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(&self.get_bytes(path).await?)?)
    }

    async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let token = self.client.access_token().context("not logged in")?;
        let response =
            self.http.post(format!("{}{path}", self.homeserver)).bearer_auth(token).json(body).send().await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path}: {status} {value}");
        }
        Ok(value)
    }
}

/// A failure that retrying cannot fix (the media is gone or refused).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Permanent(String);

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where an event's attachment is: `content.file` (encrypted) or `content.url`.
pub fn attachment_source(content: &Value) -> Option<MediaSource> {
    if let Some(file) = content.get("file")
        && let Ok(f) = serde_json::from_value(file.clone())
    {
        return Some(MediaSource::Encrypted(Box::new(f)));
    }
    let url = content.get("url")?.as_str()?;
    if !url.starts_with("mxc://") {
        return None;
    }
    Some(MediaSource::Plain(url.into()))
}

/// What can be read of an event that does not decode as a whole (say, a lone UTF-16
/// surrogate in a file name: valid JSON, but not Unicode): every top-level field that
/// decodes on its own, so the event ID, type and sender are still known.
fn lenient(text: &str) -> Value {
    let Ok(fields) = serde_json::from_str::<std::collections::BTreeMap<String, Box<RawValue>>>(text) else {
        return Value::Null;
    };
    let object: serde_json::Map<String, Value> =
        fields.into_iter().filter_map(|(k, v)| serde_json::from_str(v.get()).ok().map(|v| (k, v))).collect();
    Value::Object(object)
}

/// Notes about odd content: wrong types, huge bodies, strange file names.
fn content_notes(event: &Value) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(content) = event.get("content") else {
        if event.is_object() {
            notes.push("no content".into());
        }
        return notes;
    };
    if !content.is_object() {
        notes.push("content is not an object".into());
        return notes;
    }
    if event["type"] == "m.room.message" {
        match content.get("body") {
            Some(Value::String(b)) if b.len() > LARGE_BODY => notes.push(format!("large body ({} bytes)", b.len())),
            Some(Value::String(_)) => {}
            Some(other) => notes.push(format!("body is not a string ({})", type_name(other))),
            None if content.as_object().is_some_and(|o| o.is_empty()) => {}
            None => notes.push("no body".into()),
        }
        if let Some(m) = content.get("msgtype")
            && !m.is_string()
        {
            notes.push(format!("msgtype is not a string ({})", type_name(m)));
        }
    }
    if let Some(name) = content.get("filename").or_else(|| content.get("body")).and_then(Value::as_str)
        && name.chars().any(|c| c.is_control() || c == '\u{FFFD}')
    {
        notes.push("file name or body holds control or replacement characters".into());
    }
    notes
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Writes an attachment at `<dir>/<sha[0..2]>/<sha>` (atomically; idempotent).
pub fn store_attachment(dir: &Path, sha: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let path = attachment_path(dir, sha);
    if path.exists() {
        return Ok(path);
    }
    let parent = path.parent().expect("has a parent");
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".{sha}.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Where an attachment with this SHA-256 lives.
pub fn attachment_path(dir: &Path, sha: &str) -> PathBuf {
    dir.join(sha.get(..2).unwrap_or("xx")).join(sha)
}

/// Logs in, or restores the saved session with the same device and crypto store.
async fn login(config: &Config, homeserver: &str, user: &str, password: &str) -> anyhow::Result<Client> {
    let store = config.data_dir.join("matrix-store");
    let session_file = config.data_dir.join("session.json");
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let passphrase = match &config.store_passphrase_file {
        Some(f) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?.trim().to_owned())
        }
        None => None,
    };
    let saved: Option<MatrixSession> = match std::fs::read_to_string(&session_file) {
        Ok(text) => Some(
            serde_json::from_str(&text).context("session.json is damaged; remove it and the matrix-store folder")?,
        ),
        Err(_) => None,
    };
    if saved.is_none() && store.exists() {
        // A store without its session (a crash right after login): start the device afresh.
        std::fs::remove_dir_all(&store).ok();
    }
    let client = Client::builder()
        .homeserver_url(homeserver)
        .sqlite_store(&store, passphrase.as_deref())
        .request_config(RequestConfig::new().timeout(Duration::from_secs(60)).retry_limit(3))
        .build()
        .await
        .context("building the Matrix client")?;
    match saved {
        Some(session) => {
            client
                .matrix_auth()
                .restore_session(session, RoomLoadSettings::default())
                .await
                .context("restoring the saved session")?;
        }
        None => {
            let localpart = user.trim_start_matches('@').split(':').next().unwrap_or(user);
            client
                .matrix_auth()
                .login_username(localpart, password)
                .initial_device_display_name("kairan-bridge")
                .send()
                .await
                .with_context(|| format!("logging in as {user}"))?;
            let session = client.matrix_auth().session().context("no session after login")?;
            write_private(&session_file, serde_json::to_string(&session)?.as_bytes())?;
        }
    }
    client.encryption().wait_for_e2ee_initialization_tasks().await;
    Ok(client)
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write as _;
    let mut f = options.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_with_a_lone_surrogate_still_parses() {
        let body =
            br#"{"chunk":[{"event_id":"$a","type":"m.room.message","content":{"body":"\udc80.txt"}}],"end":"s1"}"#;
        let page: Page = serde_json::from_slice(body).expect("the page parses");
        assert_eq!(page.chunk.len(), 1);
        assert!(page.chunk[0].get().contains(r"\udc80"));
        // The event as a whole does not decode; its identity still does.
        let raw = page.chunk[0].get();
        assert!(serde_json::from_str::<Value>(raw).is_err());
        let v = lenient(raw);
        assert_eq!(v["event_id"], "$a");
        assert_eq!(v["type"], "m.room.message");
        assert!(v.get("content").is_none());
    }
}

/// Whether `sender` is the policy account of one of `policy_servers`.
fn is_policy_sender(policy_servers: &[String], sender: &str) -> bool {
    sender
        .strip_prefix('@')
        .and_then(|s| s.split_once(':'))
        .is_some_and(|(local, server)| local == POLICY_LOCALPART && policy_servers.iter().any(|s| s == server))
}

#[cfg(test)]
mod policy_sender_tests {
    #[test]
    fn only_the_policy_account_of_a_trusted_server_counts() {
        let trusted = vec!["pref.example".to_owned()];
        assert!(super::is_policy_sender(&trusted, "@_kairan_policy:pref.example"));
        // Any other user of the trusted server (who could make their own room "official").
        assert!(!super::is_policy_sender(&trusted, "@alice:pref.example"));
        assert!(!super::is_policy_sender(&trusted, "@_kairan_policy:city.example"));
        assert!(!super::is_policy_sender(&trusted, "_kairan_policy:pref.example"));
        assert!(!super::is_policy_sender(&trusted, "@_kairan_policy:pref.example.evil"));
    }
}
