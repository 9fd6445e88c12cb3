//! End-to-end encryption with matrix-sdk clients (each with its own in-memory crypto
//! store): encrypted group rooms and direct chats, a second device that is verified
//! through cross-signing and restores history from the server-side key backup, and a
//! member who joins an encrypted room later.
//!
//! Room keys travel as Olm-encrypted to-device messages, so every decryption here proves
//! the whole chain on the server: `/keys/upload`, `/keys/query`, `/keys/claim`,
//! `/sendToDevice` and their delivery in `/sync`. The workspace builds matrix-sdk without
//! `automatic-room-key-forwarding`, so no client ever asks another for keys: a second
//! device can only read old messages through the key backup.

use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use kairan_tests::{Api, Backend, PASSWORD, ServerOptions, TestServer, enc};
use matrix_sdk::{
    Client, Room, RoomState,
    attachment::AttachmentConfig,
    config::SyncSettings,
    deserialized_responses::{TimelineEvent, TimelineEventKind},
    encryption::{backups::BackupState, recovery::RecoveryState},
    media::{MediaFormat, MediaRequestParameters},
    ruma::{
        DeviceId, EventId, OwnedEventId, RoomId, UserId,
        api::client::{
            room::create_room::v3::{Request as CreateRoomRequest, RoomPreset},
            uiaa::{AuthData, MatrixUserIdentifier, Password, UserIdentifier},
        },
        events::room::{
            MediaSource,
            member::MembershipState,
            message::{ImageMessageEventContent, RoomMessageEventContent},
        },
    },
};
use serde_json::{Value, json};

use crate::support::{SYNC_DEADLINE, event_json, paginate, raw, room_state, sync_until, user_id};

mod group_and_direct {
    use super::group_and_direct;
    both_backends!(group_and_direct);
}

mod second_device_backup {
    use super::second_device_backup;
    both_backends!(second_device_backup);
}

mod late_joiner {
    use super::late_joiner;
    both_backends!(late_joiner);
}

/// How long each sync in the waiting loops long-polls.
const POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// A logged-in client whose device keys are on the server: the SDK uploads them with the
/// outgoing requests of the first sync.
async fn e2ee_client(server: &TestServer, name: &str) -> anyhow::Result<Client> {
    let client = server.client(name, PASSWORD).await?;
    client.encryption().wait_for_e2ee_initialization_tasks().await;
    client.sync_once(SyncSettings::new().timeout(POLL)).await.with_context(|| format!("{name}'s first sync"))?;
    Ok(client)
}

fn device_id(client: &Client) -> anyhow::Result<&DeviceId> {
    client.device_id().context("client without a device ID")
}

/// `createRoom` with `m.room.encryption` in the initial state (megolm), inviting `invite`.
async fn create_encrypted_room(client: &Client, name: &str, invite: &[&str]) -> anyhow::Result<Room> {
    let mut request = CreateRoomRequest::new();
    request.name = Some(name.to_owned());
    request.preset = Some(RoomPreset::PrivateChat);
    request.invite = invite.iter().map(|u| user_id(u)).collect::<anyhow::Result<_>>()?;
    request.initial_state = vec![raw(json!({
        "type": "m.room.encryption",
        "state_key": "",
        "content": { "algorithm": "m.megolm.v1.aes-sha2" },
    }))?];
    client.create_room(request).await.with_context(|| format!("creating encrypted room {name}"))
}

/// Syncs until the invite to `room_id` shows up, joins, and syncs until the join is known.
async fn accept_invite(client: &Client, who: &str, room_id: &RoomId) -> anyhow::Result<Room> {
    sync_until(client, &format!("{who}'s invite"), |c| room_state(c, room_id) == Some(RoomState::Invited)).await?;
    client.get_room(room_id).context("invited room")?.join().await.with_context(|| format!("{who} joins"))?;
    sync_until(client, &format!("{who}'s join"), |c| room_state(c, room_id) == Some(RoomState::Joined)).await?;
    client.get_room(room_id).context("joined room")
}

/// Syncs `client` until its state store has `user` joined to `room_id` (so that the next
/// room key it shares includes that user's devices).
async fn sync_until_joined(client: &Client, room_id: &RoomId, user: &str) -> anyhow::Result<()> {
    let user = user_id(user)?;
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        client.sync_once(SyncSettings::new().timeout(POLL)).await.context("sync")?;
        if let Some(room) = client.get_room(room_id)
            && let Some(member) = room.get_member_no_sync(&user).await?
            && *member.membership() == MembershipState::Join
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{user} not seen joined to {room_id} within {SYNC_DEADLINE:?}");
        }
    }
}

/// Sends an `m.text` message; returns its event ID.
async fn send_text(room: &Room, body: &str) -> anyhow::Result<OwnedEventId> {
    let response =
        room.send(RoomMessageEventContent::text_plain(body)).await.with_context(|| format!("sending {body:?}"))?;
    Ok(response.response.event_id)
}

/// The plaintext JSON of a decrypted event, or `None` if it could not be decrypted.
fn decrypted_json(event: &TimelineEvent) -> anyhow::Result<Option<Value>> {
    match &event.kind {
        TimelineEventKind::Decrypted(_) => Ok(Some(event_json(event)?)),
        TimelineEventKind::UnableToDecrypt { .. } => Ok(None),
        TimelineEventKind::PlainText { event } => bail!("expected an encrypted event, got plaintext {}", event.json()),
    }
}

/// Syncs `client` (which receives the room keys as to-device messages) until the event
/// fetched from the server decrypts; checks its sender and returns its `content.body`.
async fn sync_until_decrypted(
    client: &Client,
    room_id: &RoomId,
    event_id: &EventId,
    sender: &str,
) -> anyhow::Result<String> {
    let json = sync_until_decrypted_json(client, room_id, event_id, sender).await?;
    Ok(json["content"]["body"].as_str().with_context(|| format!("no body: {json}"))?.to_owned())
}

/// Like [`sync_until_decrypted`], returning the whole decrypted event.
async fn sync_until_decrypted_json(
    client: &Client,
    room_id: &RoomId,
    event_id: &EventId,
    sender: &str,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        client.sync_once(SyncSettings::new().timeout(POLL)).await.context("sync")?;
        if let Some(room) = client.get_room(room_id) {
            let event = room.event(event_id, None).await.with_context(|| format!("GET event {event_id}"))?;
            if let Some(json) = decrypted_json(&event)? {
                ensure!(
                    json["sender"] == sender,
                    "decrypted {event_id}: sender {} (expected {sender})",
                    json["sender"]
                );
                ensure!(json["type"] == "m.room.message", "decrypted {event_id} is not an m.room.message: {json}");
                let info = event.encryption_info().context("decrypted event without encryption info")?;
                ensure!(info.sender.as_str() == sender, "megolm session of {event_id} belongs to {}", info.sender);
                return Ok(json);
            }
            if Instant::now() >= deadline {
                bail!("{event_id} still not decryptable after {SYNC_DEADLINE:?}: {:?}", event.kind);
            }
        } else if Instant::now() >= deadline {
            bail!("room {room_id} unknown to the client after {SYNC_DEADLINE:?}");
        }
    }
}

/// Checks through the raw `/messages` API that the server stores each event as
/// `m.room.encrypted` with a megolm ciphertext, and that no plaintext leaked into it.
async fn ensure_stored_encrypted(api: &Api, room_id: &RoomId, sent: &[(&EventId, &str)]) -> anyhow::Result<()> {
    let events = paginate(api, room_id.as_str(), "b", 50).await?;
    for (event_id, plaintext) in sent {
        let event = events
            .iter()
            .find(|e| e["event_id"] == event_id.as_str())
            .with_context(|| format!("{event_id} not in /messages of {room_id}"))?;
        ensure!(event["type"] == "m.room.encrypted", "server copy of {event_id} is not m.room.encrypted: {event}");
        let content = &event["content"];
        ensure!(content["algorithm"] == "m.megolm.v1.aes-sha2", "algorithm of {event_id}: {event}");
        ensure!(content["ciphertext"].as_str().is_some_and(|c| !c.is_empty()), "no ciphertext: {event}");
        ensure!(content["session_id"].is_string(), "no session_id: {event}");
        ensure!(!event.to_string().contains(plaintext), "plaintext {plaintext:?} visible on the server: {event}");
    }
    Ok(())
}

/// Bootstraps cross-signing. The first upload of a master key needs no user-interactive
/// auth (spec 1.11); a server that asks anyway gets the password.
async fn bootstrap_cross_signing(client: &Client, name: &str) -> anyhow::Result<()> {
    let encryption = client.encryption();
    if let Err(error) = encryption.bootstrap_cross_signing(None).await {
        let uiaa = error.as_uiaa_response().with_context(|| format!("bootstrapping cross-signing: {error:?}"))?;
        let mut password =
            Password::new(UserIdentifier::Matrix(MatrixUserIdentifier::new(name.to_owned())), PASSWORD.to_owned());
        password.session = uiaa.session.clone();
        encryption
            .bootstrap_cross_signing(Some(AuthData::Password(password)))
            .await
            .context("bootstrapping cross-signing with the password")?;
    }
    let status = encryption.cross_signing_status().await.context("no cross-signing status")?;
    ensure!(status.is_complete(), "cross-signing after bootstrap: {status:?}");
    Ok(())
}

/// Syncs `client` until `check` holds for its view of `user`'s device `device`.
async fn sync_until_device(
    client: &Client,
    user: &UserId,
    device: &DeviceId,
    what: &str,
    check: impl Fn(&matrix_sdk::encryption::identities::Device) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SYNC_DEADLINE;
    loop {
        client.sync_once(SyncSettings::new().timeout(POLL)).await.context("sync")?;
        let found = client.encryption().get_device(user, device).await?;
        if found.as_ref().is_some_and(&check) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what}: not the case within {SYNC_DEADLINE:?}; device as seen: {found:?}");
        }
    }
}

/// Two users exchange encrypted messages in a group room and in a direct chat; each
/// decrypts the other's, and the server holds only ciphertext.
async fn group_and_direct(backend: Backend) -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().backend(backend)).await?;
    server.create_users(&["alice", "bob"]).await?;
    let (alice_id, bob_id) = (server.user_id("alice"), server.user_id("bob"));
    let alice = e2ee_client(&server, "alice").await?;
    let bob = e2ee_client(&server, "bob").await?;
    let alice_api = server.api("alice", PASSWORD).await?;

    // A group room, encrypted from its creation.
    let room = create_encrypted_room(&alice, "Secret garden", &[&bob_id]).await?;
    let room_id = room.room_id().to_owned();
    let encryption = alice_api.state(room_id.as_str(), "m.room.encryption", "").await?;
    ensure!(encryption["algorithm"] == "m.megolm.v1.aes-sha2", "m.room.encryption: {encryption}");
    let bob_room = accept_invite(&bob, "bob", &room_id).await?;
    ensure!(bob_room.latest_encryption_state().await?.is_encrypted(), "bob does not see the room as encrypted");
    sync_until_joined(&alice, &room_id, &bob_id).await?;

    let from_alice = send_text(&room, "The tomatoes are ripe").await?;
    let got = sync_until_decrypted(&bob, &room_id, &from_alice, &alice_id).await.context("bob decrypts alice")?;
    ensure!(got == "The tomatoes are ripe", "bob decrypted {got:?}");
    let from_bob = send_text(&bob_room, "Bring a basket").await?;
    let got = sync_until_decrypted(&alice, &room_id, &from_bob, &bob_id).await.context("alice decrypts bob")?;
    ensure!(got == "Bring a basket", "alice decrypted {got:?}");
    // A second message from each on the same megolm sessions.
    let again_alice = send_text(&room, "And the beans").await?;
    let again_bob = send_text(&bob_room, "Beans too").await?;
    ensure!(sync_until_decrypted(&bob, &room_id, &again_alice, &alice_id).await? == "And the beans");
    ensure!(sync_until_decrypted(&alice, &room_id, &again_bob, &bob_id).await? == "Beans too");
    ensure_stored_encrypted(
        &alice_api,
        &room_id,
        &[
            (&from_alice, "The tomatoes are ripe"),
            (&from_bob, "Bring a basket"),
            (&again_alice, "And the beans"),
            (&again_bob, "Beans too"),
        ],
    )
    .await?;

    // A direct chat: matrix-sdk's create_dm invites with is_direct and encrypts the room.
    let dm = alice.create_dm(&user_id(&bob_id)?).await.context("alice creates a DM with bob")?;
    let dm_id = dm.room_id().to_owned();
    let invite = alice_api.state(dm_id.as_str(), "m.room.member", &bob_id).await?;
    ensure!(invite["membership"] == "invite" && invite["is_direct"] == true, "bob's DM invite: {invite}");
    let encryption = alice_api.state(dm_id.as_str(), "m.room.encryption", "").await?;
    ensure!(encryption["algorithm"] == "m.megolm.v1.aes-sha2", "DM m.room.encryption: {encryption}");
    let bob_dm = accept_invite(&bob, "bob", &dm_id).await?;
    // Both mark the room in their m.direct account data, which comes back through sync.
    let (alice_uid, bob_uid) = (user_id(&alice_id)?, user_id(&bob_id)?);
    sync_until(&bob, "the DM in bob's m.direct", |c| c.get_dm_rooms(&alice_uid).any(|r| r.room_id() == dm_id)).await?;
    sync_until(&alice, "the DM in alice's m.direct", |c| c.get_dm_rooms(&bob_uid).any(|r| r.room_id() == dm_id))
        .await?;
    ensure!(bob_dm.is_direct().await?, "bob does not see the DM as direct");
    ensure!(dm.is_direct().await?, "alice does not see the DM as direct");
    sync_until_joined(&alice, &dm_id, &bob_id).await?;

    let dm_alice = send_text(&dm, "Just between us").await?;
    ensure!(sync_until_decrypted(&bob, &dm_id, &dm_alice, &alice_id).await? == "Just between us");
    let dm_bob = send_text(&bob_dm, "My lips are sealed").await?;
    ensure!(sync_until_decrypted(&alice, &dm_id, &dm_bob, &bob_id).await? == "My lips are sealed");
    ensure_stored_encrypted(&alice_api, &dm_id, &[(&dm_alice, "Just between us"), (&dm_bob, "My lips are sealed")])
        .await?;
    Ok(())
}

/// Alice's second device is verified through cross-signing (secret storage gives it the
/// self-signing key, with which it signs itself) and reads history that was sent before
/// it existed, from the server-side key backup.
async fn second_device_backup(backend: Backend) -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().backend(backend)).await?;
    server.create_users(&["alice", "bob"]).await?;
    let (alice_id, bob_id) = (server.user_id("alice"), server.user_id("bob"));
    let alice_uid = user_id(&alice_id)?;
    let alice1 = e2ee_client(&server, "alice").await?;
    let bob = e2ee_client(&server, "bob").await?;
    let alice_api = server.api("alice", PASSWORD).await?;

    bootstrap_cross_signing(&alice1, "alice").await?;
    let device1 = device_id(&alice1)?.to_owned();
    // Bootstrapping signs the device (keys/signatures/upload); the signature comes back
    // through device_lists.changed and /keys/query.
    sync_until_device(&alice1, &alice_uid, &device1, "device 1 signed by alice's self-signing key", |d| {
        d.is_cross_signed_by_owner()
    })
    .await?;

    // History: one message from each, decrypted by the other.
    let room = create_encrypted_room(&alice1, "Archive", &[&bob_id]).await?;
    let room_id = room.room_id().to_owned();
    let bob_room = accept_invite(&bob, "bob", &room_id).await?;
    sync_until_joined(&alice1, &room_id, &bob_id).await?;
    let old_alice = send_text(&room, "Minutes of the first meeting").await?;
    let old_bob = send_text(&bob_room, "Budget: 300 coins").await?;
    ensure!(sync_until_decrypted(&bob, &room_id, &old_alice, &alice_id).await? == "Minutes of the first meeting");
    ensure!(sync_until_decrypted(&alice1, &room_id, &old_bob, &bob_id).await? == "Budget: 300 coins");

    // Device 1 turns on recovery: secret storage (holding the cross-signing keys and the
    // backup key) and a key backup, and waits until its room keys are uploaded.
    let recovery_key = alice1
        .encryption()
        .recovery()
        .enable()
        .wait_for_backups_to_upload()
        .await
        .context("enabling recovery on alice's first device")?;
    ensure!(alice1.encryption().backups().state() == BackupState::Enabled, "backups not enabled on device 1");
    ensure!(alice1.encryption().recovery().state() == RecoveryState::Enabled, "recovery not enabled on device 1");

    // The server holds the backup: a version, and both sessions of the room.
    let version = alice_api.get("/_matrix/client/v3/room_keys/version").await?.ok().context("GET backup version")?;
    ensure!(version["algorithm"] == "m.megolm_backup.v1.curve25519-aes-sha2", "backup version: {version}");
    let v = version["version"].as_str().with_context(|| format!("no version: {version}"))?;
    ensure!(version["count"] == 2, "backup version should count 2 keys: {version}");
    let keys = alice_api
        .get(&format!("/_matrix/client/v3/room_keys/keys/{}?version={}", enc(room_id.as_str()), enc(v)))
        .await?
        .ok()
        .context("GET room_keys/keys/{roomId}")?;
    let sessions = keys["sessions"].as_object().with_context(|| format!("no sessions: {keys}"))?;
    ensure!(sessions.len() == 2, "backed-up sessions for the room: {keys}");
    for (id, data) in sessions {
        ensure!(data["session_data"]["ciphertext"].is_string(), "session {id} without encrypted session_data: {data}");
    }

    // Alice logs in on a second device. It cannot read the history yet: no keys.
    let alice2 = e2ee_client(&server, "alice").await?;
    let device2 = device_id(&alice2)?.to_owned();
    ensure!(device1 != device2, "the second login reused device {device1}");
    sync_until(&alice2, "the room on alice's second device", |c| room_state(c, &room_id) == Some(RoomState::Joined))
        .await?;
    let room2 = alice2.get_room(&room_id).context("room on device 2")?;
    for id in [&old_alice, &old_bob] {
        let event = room2.event(id, None).await?;
        ensure!(decrypted_json(&event)?.is_none(), "device 2 decrypted {id} before restoring keys: {:?}", event.kind);
    }
    let status = alice2.encryption().cross_signing_status().await.context("device 2 cross-signing status")?;
    ensure!(!status.has_self_signing, "device 2 has the self-signing key before recovery: {status:?}");

    // Recovery with the key: the cross-signing keys come from secret storage and device 2
    // signs itself with the self-signing key (keys/signatures/upload).
    alice2.encryption().recovery().recover(&recovery_key).await.context("recovering on device 2")?;
    let status = alice2.encryption().cross_signing_status().await.context("device 2 cross-signing status")?;
    ensure!(status.is_complete(), "device 2 after recovery: {status:?}");
    ensure!(alice2.encryption().recovery().state() == RecoveryState::Enabled, "recovery state on device 2");
    ensure!(alice2.encryption().backups().are_enabled().await, "device 2 did not get the backup key");
    let own2 = alice2.encryption().get_own_device().await?.context("device 2's own device")?;
    ensure!(own2.is_cross_signed_by_owner(), "device 2 is not signed by the self-signing key after recovery");
    let seen_from_2 = alice2.encryption().get_device(&alice_uid, &device1).await?.context("device 1 from device 2")?;
    ensure!(seen_from_2.is_verified_with_cross_signing(), "device 2 does not trust device 1: {seen_from_2:?}");

    // The new signature reaches the others through device_lists.changed and /keys/query:
    // device 1 now trusts device 2, and Bob sees it signed by Alice's self-signing key.
    sync_until_device(&alice1, &alice_uid, &device2, "device 1 trusts device 2 through cross-signing", |d| {
        d.is_verified_with_cross_signing()
    })
    .await?;
    sync_until_device(&bob, &alice_uid, &device2, "bob sees device 2 cross-signed by alice", |d| {
        d.is_cross_signed_by_owner()
    })
    .await?;

    // The history, from the key backup.
    alice2.encryption().backups().download_room_keys_for_room(&room_id).await.context("downloading room keys")?;
    for (id, sender, body) in
        [(&old_alice, &alice_id, "Minutes of the first meeting"), (&old_bob, &bob_id, "Budget: 300 coins")]
    {
        let event = room2.event(id, None).await?;
        let json = decrypted_json(&event)?
            .with_context(|| format!("device 2 cannot decrypt {id} after the backup download: {:?}", event.kind))?;
        ensure!(json["sender"] == sender.as_str() && json["content"]["body"] == body, "device 2 decrypted {json}");
    }

    // And device 2 takes part from now on: Bob reads what it sends.
    let new_msg = send_text(&room2, "Sent from my second device").await?;
    ensure!(sync_until_decrypted(&bob, &room_id, &new_msg, &alice_id).await? == "Sent from my second device");
    Ok(())
}

/// Carol joins an encrypted room after Alice and Bob have talked in it, and decrypts
/// what both send after her join.
async fn late_joiner(backend: Backend) -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().backend(backend)).await?;
    server.create_users(&["alice", "bob", "carol"]).await?;
    let [alice_id, bob_id, carol_id] = ["alice", "bob", "carol"].map(|n| server.user_id(n));
    let alice = e2ee_client(&server, "alice").await?;
    let bob = e2ee_client(&server, "bob").await?;
    let carol = e2ee_client(&server, "carol").await?;
    let alice_api = server.api("alice", PASSWORD).await?;

    let room = create_encrypted_room(&alice, "Book club", &[&bob_id]).await?;
    let room_id = room.room_id().to_owned();
    let bob_room = accept_invite(&bob, "bob", &room_id).await?;
    sync_until_joined(&alice, &room_id, &bob_id).await?;
    let before_alice = send_text(&room, "Chapter one was slow").await?;
    let before_bob = send_text(&bob_room, "Chapter two is better").await?;
    ensure!(sync_until_decrypted(&bob, &room_id, &before_alice, &alice_id).await? == "Chapter one was slow");
    ensure!(sync_until_decrypted(&alice, &room_id, &before_bob, &bob_id).await? == "Chapter two is better");

    // Carol is invited and joins; Alice and Bob learn of it before they speak again.
    room.invite_user_by_id(&user_id(&carol_id)?).await.context("alice invites carol")?;
    let carol_room = accept_invite(&carol, "carol", &room_id).await?;
    ensure!(carol_room.latest_encryption_state().await?.is_encrypted(), "carol does not see the room as encrypted");
    sync_until_joined(&alice, &room_id, &carol_id).await?;
    sync_until_joined(&bob, &room_id, &carol_id).await?;

    let after_alice = send_text(&room, "Welcome Carol").await?;
    let after_bob = send_text(&bob_room, "We are on chapter three").await?;
    ensure!(sync_until_decrypted(&carol, &room_id, &after_alice, &alice_id).await? == "Welcome Carol");
    ensure!(sync_until_decrypted(&carol, &room_id, &after_bob, &bob_id).await? == "We are on chapter three");
    ensure!(sync_until_decrypted(&bob, &room_id, &after_alice, &alice_id).await? == "Welcome Carol");
    ensure!(sync_until_decrypted(&alice, &room_id, &after_bob, &bob_id).await? == "We are on chapter three");

    // Carol speaks too, and both decrypt her.
    let from_carol = send_text(&carol_room, "Thanks, I skimmed the first two").await?;
    ensure!(sync_until_decrypted(&alice, &room_id, &from_carol, &carol_id).await? == "Thanks, I skimmed the first two");
    ensure!(sync_until_decrypted(&bob, &room_id, &from_carol, &carol_id).await? == "Thanks, I skimmed the first two");
    ensure_stored_encrypted(
        &alice_api,
        &room_id,
        &[
            (&before_alice, "Chapter one was slow"),
            (&after_alice, "Welcome Carol"),
            (&after_bob, "We are on chapter three"),
            (&from_carol, "Thanks, I skimmed the first two"),
        ],
    )
    .await?;
    Ok(())
}

/// An image sent in an encrypted room: matrix-sdk encrypts the file (AES-CTR) and uploads
/// the ciphertext, an opaque blob, as `application/octet-stream`; the event carries the key.
/// Bob decrypts the event and then the downloaded file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_attachment() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let (alice_id, bob_id) = (server.user_id("alice"), server.user_id("bob"));
    let alice = e2ee_client(&server, "alice").await?;
    let bob = e2ee_client(&server, "bob").await?;

    let room = create_encrypted_room(&alice, "Photos", &[&bob_id]).await?;
    let room_id = room.room_id().to_owned();
    accept_invite(&bob, "bob", &room_id).await?;
    sync_until_joined(&alice, &room_id, &bob_id).await?;

    let image = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 128])
    }));
    let mut picture = std::io::Cursor::new(Vec::new());
    image.write_to(&mut picture, image::ImageFormat::Png)?;
    let picture = picture.into_inner();
    let sent = room
        .send_attachment("secret.png", &mime::IMAGE_PNG, picture.clone(), AttachmentConfig::new())
        .await
        .context("alice sends a PNG in an encrypted room (uploading it encrypted)")?;

    let event = sync_until_decrypted_json(&bob, &room_id, &sent.event_id, &alice_id).await?;
    let content = &event["content"];
    ensure!(content["msgtype"] == "m.image" && content["body"] == "secret.png", "image event: {event}");
    ensure!(content["url"].is_null() && content["file"]["url"].is_string(), "not an encrypted file: {event}");
    let content: ImageMessageEventContent = serde_json::from_value(content.clone())?;
    ensure!(matches!(content.source, MediaSource::Encrypted(_)), "source {:?}", content.source);
    let request = MediaRequestParameters { source: content.source, format: MediaFormat::File };
    let fetched = bob.media().get_media_content(&request, false).await.context("bob fetches and decrypts")?;
    ensure!(fetched == picture, "bob decrypted {} bytes that differ from the {} sent", fetched.len(), picture.len());
    Ok(())
}
