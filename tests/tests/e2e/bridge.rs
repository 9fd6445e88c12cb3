//! The records bridge (`kairan-bridge`) as a real process beside a real homeserver:
//! archiving official rooms completely (and refusing other rooms), encrypted rooms, a
//! `kill -9` during a burst, tamper detection by `verify`, disclosure export with masking
//! (proofs checked by separate code here), and retention with legal holds, disposal,
//! transfer and co-signing.

mod archiving;
mod crash;
mod encrypted;
mod export;
mod metrics;
mod policy_trust;
mod proofs;
mod retention;
mod tamper;

use std::time::Duration;

use anyhow::Context as _;
use kairan_tests::{Api, PASSWORD, ServerOptions, TestBridge, TestServer, enc};
use serde_json::{Value, json};

use crate::admin::{admin_api, room_path};

/// The archive account.
pub const ARCHIVE: &str = "@archive:localhost";
const ARCHIVE_PASSWORD: &str = "archive account passphrase";
/// How long the archive may take to catch up with what a test did.
pub const ARCHIVE_DEADLINE: Duration = Duration::from_secs(40);

/// A homeserver with alice and bob, an administrator, the archive account, and the bridge.
pub struct Setup {
    pub server: TestServer,
    pub admin: Api,
    pub alice: Api,
    pub bob: Api,
    pub bridge: TestBridge,
}

impl Setup {
    /// Starts everything; the archive on SQLite, or on PostgreSQL with `postgres`.
    pub async fn start(postgres: bool) -> anyhow::Result<Self> {
        let server = TestServer::start(ServerOptions::default().archive_user(ARCHIVE)).await?;
        server.create_users(&["alice", "bob"]).await?;
        server.create_user("archive", ARCHIVE_PASSWORD, false).await?;
        let admin = admin_api(&server).await?;
        let alice = server.api("alice", PASSWORD).await?;
        let bob = server.api("bob", PASSWORD).await?;
        let bridge = TestBridge::start(&server, ARCHIVE, ARCHIVE_PASSWORD, postgres).await?;
        Ok(Self { server, admin, alice, bob, bridge })
    }

    /// A room of alice's with bob in it (not yet official).
    pub async fn room(&self, name: &str) -> anyhow::Result<String> {
        let room = self.alice.create_room(&json!({ "name": name, "invite": [self.server.user_id("bob")] })).await?;
        self.bob.join(&room).await?.ok().context("bob joins")?;
        Ok(room)
    }

    /// Marks a room official (the server invites the archive account) and waits until the
    /// bridge archives it.
    pub async fn make_official(&mut self, room: &str, retention: &str, on_expiry: &str) -> anyhow::Result<()> {
        let policy =
            json!({ "official": true, "retention": retention, "on_expiry": on_expiry, "department": "総務課" });
        self.admin
            .put(&format!("{}/policy", room_path(room)), &policy)
            .await?
            .ok()
            .context("setting the room policy")?;
        let room_id = room.to_owned();
        self.bridge
            .wait_status("the bridge archiving the official room", ARCHIVE_DEADLINE, |s| {
                s["rooms"]
                    .as_array()
                    .is_some_and(|rooms| rooms.iter().any(|r| r["room_id"] == room_id && r["official"] == true))
            })
            .await?;
        Ok(())
    }

    /// Waits until the archive holds every event the server serves alice for the room, in
    /// the same order; returns the room's records.
    pub async fn wait_complete(&mut self, room: &str) -> anyhow::Result<Vec<Value>> {
        let deadline = std::time::Instant::now() + ARCHIVE_DEADLINE;
        loop {
            let served = crate::support::ids(&crate::support::paginate(&self.alice, room, "f", 500).await?);
            let records = self.bridge.records(room).await?;
            let archived = event_ids(&records);
            // Every event is in; once no work is pending for them (downloads, decryption),
            // a fresh read holds its results too.
            if archived == served && self.pending().await? == 0 {
                let records = self.bridge.records(room).await?;
                if event_ids(&records) == served {
                    return Ok(records);
                }
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the archive of {room} does not equal the history the server serves:\nserved   {served:?}\narchived {archived:?}\n{}",
                self.bridge.logs()
            );
            self.bridge.ensure_running()?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Pending decryptions and downloads.
    pub async fn pending(&self) -> anyhow::Result<i64> {
        Ok(self.bridge.json(["status"]).await?["pending"].as_i64().unwrap_or(0))
    }
}

/// The event IDs of the `event` records, in archive order.
pub fn event_ids(records: &[Value]) -> Vec<String> {
    records.iter().filter(|r| r["kind"] == "event").filter_map(|r| r["event_id"].as_str().map(str::to_owned)).collect()
}

/// The record of a kind for an event.
pub fn record<'a>(records: &'a [Value], kind: &str, event_id: &str) -> anyhow::Result<&'a Value> {
    records
        .iter()
        .find(|r| r["kind"] == kind && r["event_id"] == event_id)
        .with_context(|| format!("no {kind} record for {event_id}"))
}

/// The payload of a record parsed as JSON.
pub fn payload(record: &Value) -> anyhow::Result<Value> {
    serde_json::from_str(record["payload"].as_str().context("record without payload")?).context("payload is not JSON")
}

/// `PUT /rooms/{roomId}/send/{type}/{txnId}`; returns the event ID.
pub async fn send(api: &Api, room: &str, event_type: &str, content: &Value) -> anyhow::Result<String> {
    let txn = format!("t{}", rand::random::<u64>());
    let path = format!("/_matrix/client/v3/rooms/{}/send/{}/{}", enc(room), enc(event_type), txn);
    let body = api.put(&path, content).await?.ok().with_context(|| format!("sending {event_type} {content}"))?;
    Ok(body["event_id"].as_str().context("no event_id")?.to_owned())
}

/// Sends an `m.text` message.
pub async fn text(api: &Api, room: &str, body: &str) -> anyhow::Result<String> {
    send(api, room, "m.room.message", &json!({ "msgtype": "m.text", "body": body })).await
}

/// Sends an edit (`m.replace`) of `original`.
pub async fn edit(api: &Api, room: &str, original: &str, body: &str) -> anyhow::Result<String> {
    let content = json!({
        "msgtype": "m.text",
        "body": format!("* {body}"),
        "m.new_content": { "msgtype": "m.text", "body": body },
        "m.relates_to": { "rel_type": "m.replace", "event_id": original },
    });
    send(api, room, "m.room.message", &content).await
}

/// Redacts an event.
pub async fn redact(api: &Api, room: &str, event_id: &str, reason: &str) -> anyhow::Result<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r{}", enc(room), enc(event_id), rand::random::<u64>());
    let body = api.put(&path, &json!({ "reason": reason })).await?.ok().context("redacting")?;
    Ok(body["event_id"].as_str().context("no event_id")?.to_owned())
}

/// Uploads a text file and sends it as `m.file`; returns (event ID, bytes).
pub async fn file(api: &Api, room: &str, name: &str, bytes: &[u8]) -> anyhow::Result<String> {
    let uploaded = api.upload(bytes.to_vec(), "text/plain", Some(name)).await?.ok().context("upload")?;
    let uri = uploaded["content_uri"].as_str().context("no content_uri")?;
    let content = json!({
        "msgtype": "m.file", "body": name, "filename": name, "url": uri,
        "info": { "mimetype": "text/plain", "size": bytes.len() },
    });
    send(api, room, "m.room.message", &content).await
}

/// SHA-256 in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
