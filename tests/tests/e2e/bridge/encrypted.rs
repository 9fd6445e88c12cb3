//! An encrypted official room: the bridge is a member with its own device, receives the
//! room keys like any member, and archives both the ciphertext as received and the
//! cleartext, and the decrypted attachment.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use kairan_tests::PASSWORD;
use matrix_sdk::{
    Client, RoomState,
    attachment::AttachmentConfig,
    config::SyncSettings,
    ruma::{
        api::client::room::create_room::v3::{Request as CreateRoomRequest, RoomPreset},
        events::room::{member::MembershipState, message::RoomMessageEventContent},
    },
};
use serde_json::json;

use super::{ARCHIVE, ARCHIVE_DEADLINE, Setup, payload, record, sha256_hex};
use crate::support::{raw, user_id};

const POLL: Duration = Duration::from_secs(1);

async fn e2ee_client(s: &Setup, name: &str) -> anyhow::Result<Client> {
    let client = s.server.client(name, PASSWORD).await?;
    client.encryption().wait_for_e2ee_initialization_tasks().await;
    client.sync_once(SyncSettings::new().timeout(POLL)).await?;
    Ok(client)
}

async fn sync_until_joined(client: &Client, room_id: &matrix_sdk::ruma::RoomId, user: &str) -> anyhow::Result<()> {
    let user = user_id(user)?;
    let deadline = Instant::now() + ARCHIVE_DEADLINE;
    loop {
        client.sync_once(SyncSettings::new().timeout(POLL)).await?;
        if let Some(room) = client.get_room(room_id)
            && let Some(member) = room.get_member_no_sync(&user).await?
            && *member.membership() == MembershipState::Join
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{user} not seen joined to {room_id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_archives_an_encrypted_official_room() -> anyhow::Result<()> {
    let mut s = Setup::start(false).await?;
    let alice = e2ee_client(&s, "alice").await?;
    let bob = e2ee_client(&s, "bob").await?;
    let mut request = CreateRoomRequest::new();
    request.name = Some("暗号化された公式ルーム".into());
    request.preset = Some(RoomPreset::PrivateChat);
    request.invite = vec![user_id(&s.server.user_id("bob"))?];
    request.initial_state = vec![raw(
        json!({ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }),
    )?];
    let room = alice.create_room(request).await?;
    let room_id = room.room_id().to_owned();
    // bob joins.
    let deadline = Instant::now() + ARCHIVE_DEADLINE;
    loop {
        bob.sync_once(SyncSettings::new().timeout(POLL)).await?;
        if bob.get_room(&room_id).is_some_and(|r| r.state() == RoomState::Invited) {
            break;
        }
        ensure!(Instant::now() < deadline, "bob's invite");
    }
    bob.get_room(&room_id).context("invited room")?.join().await?;

    s.make_official(room_id.as_str(), "30y", "transfer").await?;
    sync_until_joined(&alice, &room_id, ARCHIVE).await?;
    sync_until_joined(&alice, &room_id, &s.server.user_id("bob")).await?;

    let secret = "暗号化された公文書の本文";
    let sent = room.send(RoomMessageEventContent::text_plain(secret)).await?.response.event_id;
    let bytes = "暗号化された添付ファイル".repeat(10).into_bytes();
    let attachment =
        room.send_attachment("memo.txt", &mime::TEXT_PLAIN, bytes.clone(), AttachmentConfig::new()).await?.event_id;
    let records = s.wait_complete(room_id.as_str()).await?;
    // Cleartext and attachment may still be arriving: wait for them.
    let (sent_s, att_s) = (sent.to_string(), attachment.to_string());
    let records = if records.iter().any(|r| r["kind"] == "attachment" && r["event_id"] == att_s.as_str()) {
        records
    } else {
        s.bridge
            .wait_records(room_id.as_str(), "the cleartext and the attachment", ARCHIVE_DEADLINE, |r| {
                r.iter().any(|x| x["kind"] == "cleartext" && x["event_id"] == sent_s.as_str())
                    && r.iter().any(|x| x["kind"] == "attachment" && x["event_id"] == att_s.as_str())
            })
            .await?
    };
    // The ciphertext as received.
    let ev = record(&records, "event", &sent_s)?;
    ensure!(ev["event_type"] == "m.room.encrypted", "{ev}");
    ensure!(!ev["payload"].as_str().unwrap_or_default().contains(secret), "the ciphertext record holds the cleartext");
    // The cleartext beside it.
    let clear = payload(record(&records, "cleartext", &sent_s)?)?;
    ensure!(clear["content"]["body"] == secret, "{clear}");
    // The attachment, decrypted, by its hash.
    let att = payload(record(&records, "attachment", &att_s)?)?;
    ensure!(att["sha256"] == sha256_hex(&bytes).as_str() && att["encrypted"] == true, "{att}");
    let report = s.bridge.json(["verify"]).await?;
    ensure!(report["ok"] == true, "{report}");
    Ok(())
}
