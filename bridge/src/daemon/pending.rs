//! Pending work the archiving transaction queued: decrypting `m.room.encrypted` events and
//! downloading attachments, retried with backoff until done or given up on record.

use anyhow::{Context as _, bail};
use matrix_sdk::{
    deserialized_responses::TimelineEventKind,
    media::{MediaFormat, MediaRequestParameters},
    ruma::{OwnedRoomId, events::room::MediaSource, serde::Raw},
};
use serde_json::{Value, json, value::RawValue};

use super::{
    Daemon,
    inspect::{attachment_source, content_notes},
};
use crate::{
    archive::Pending,
    attachments::store_attachment,
    metrics::Failure,
    record::{NewRecord, kind, sha256_hex},
    retention::now_ms,
};

/// Give up on a pending item (and record that) after this many attempts.
const MAX_ATTEMPTS: i64 = 12;

impl Daemon {
    /// Decryptions and attachment downloads that are due.
    pub(super) async fn work_pending(&self) -> anyhow::Result<()> {
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
    async fn decrypt(&self, item: &Pending) -> anyhow::Result<()> {
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
    async fn fetch_attachment(&self, item: &Pending) -> anyhow::Result<()> {
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
        let sha = sha256_hex(&bytes);
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
}

/// A failure that retrying cannot fix (the media is gone or refused).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Permanent(String);
