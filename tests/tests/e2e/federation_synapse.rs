//! Interoperability with Synapse: each test starts one kairan (federation on) and one
//! Synapse (kairan_tests::synapse, installed by scripts/synapse-venv.sh), both trusting the
//! same test CA, and has their users share rooms both ways. A municipality may run either.
//!
//! Synapse missing is a failure, never a skip: the harness says which script to run.

use anyhow::{Context as _, ensure};
use kairan_tests::{Api, PASSWORD, TestServer, enc, synapse::SynapseServer};
use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    deserialized_responses::TimelineEventKind,
    ruma::{
        EventId, OwnedEventId, RoomId,
        api::client::room::create_room::v3::{Request as CreateRoomRequest, RoomPreset},
        events::room::{member::MembershipState, message::RoomMessageEventContent},
    },
};
use serde_json::{Value, json};

use crate::{
    federation::{
        FEDERATION_DEADLINE, federating_server, or_panic, wait_for, wait_invite, wait_membership, wait_same_state,
        wait_timeline_has,
    },
    support::{event_json, put_state, raw, user_id},
};

/// One kairan and one Synapse, each with a user: alice on kairan, bob on Synapse.
struct Pair {
    kairan: TestServer,
    synapse: SynapseServer,
    alice: Api,
    bob: Api,
}

impl Pair {
    async fn start() -> anyhow::Result<Self> {
        let (kairan, synapse) = tokio::try_join!(federating_server(), SynapseServer::start())?;
        kairan.create_users(&["alice"]).await?;
        let alice = kairan.api("alice", PASSWORD).await?;
        let bob = synapse.register("bob", PASSWORD).await?;
        Ok(Self { kairan, synapse, alice, bob })
    }
}

fn event_id_of(body: &Value) -> anyhow::Result<String> {
    Ok(body["event_id"].as_str().with_context(|| format!("no event_id in {body}"))?.to_owned())
}

/// Waits until `event_id` shows as redacted (empty content) to the caller.
async fn wait_redacted(api: &Api, room_id: &str, event_id: &str) -> anyhow::Result<()> {
    wait_for(&format!("{event_id} redacted as {} sees it", api.me()), FEDERATION_DEADLINE, || async {
        let response = api.event(room_id, event_id).await?;
        if response.status != 200 {
            return Ok(Err(format!("{} {}", response.status, response.text)));
        }
        let empty = response.body["content"].as_object().is_some_and(|c| c.is_empty());
        Ok(if empty { Ok(()) } else { Err(response.text) })
    })
    .await
}

/// Waits until the caller sees `content` (a subset check on the given keys) in the state
/// event `event_type`/"".
async fn wait_state(api: &Api, room_id: &str, event_type: &str, key: &str, value: &str) -> anyhow::Result<()> {
    wait_for(&format!("{event_type}.{key} = {value:?} as {} sees it", api.me()), FEDERATION_DEADLINE, || async {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{}/", enc(room_id), enc(event_type));
        let response = api.get(&path).await?;
        Ok(if response.status == 200 && response.body[key] == value { Ok(()) } else { Err(response.text) })
    })
    .await
}

/// A kairan user creates a room and invites a Synapse user, who joins over federation
/// (Synapse makes make_join/send_join against kairan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_user_joins_kairan_room() -> anyhow::Result<()> {
    let Pair { kairan: _kairan, synapse: _synapse, alice, bob } = Pair::start().await?;
    or_panic(
        async {
            let room_id = alice
                .create_room(&json!({ "preset": "private_chat", "name": "Made on kairan", "invite": [bob.me()] }))
                .await?;
            let invite = wait_invite(&bob, &room_id).await?;
            let stripped = invite["invite_state"]["events"].as_array().context("no invite_state")?;
            ensure!(
                stripped.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Made on kairan"),
                "the invite's stripped state on Synapse: {invite}"
            );
            bob.join(&room_id).await?.ok().context("bob joins the kairan room through Synapse")?;
            wait_membership(&alice, &room_id, bob.me(), "join").await?;
            wait_membership(&bob, &room_id, alice.me(), "join").await?;
            let name = bob.state(&room_id, "m.room.name", "").await?;
            ensure!(name["name"] == "Made on kairan", "bob sees the name {name}");
            let hello = alice.send_text_ok(&room_id, "hello", "Welcome, Synapse").await?;
            wait_timeline_has(&bob, &room_id, std::slice::from_ref(&hello)).await?;
            wait_same_state(&[&alice, &bob], &room_id).await?;
            anyhow::Ok(())
        }
        .await,
    );
    Ok(())
}

/// A Synapse user creates a room and invites a kairan user, who joins over federation
/// (kairan makes make_join/send_join against Synapse).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kairan_user_joins_synapse_room() -> anyhow::Result<()> {
    let Pair { kairan: _kairan, synapse: _synapse, alice, bob } = Pair::start().await?;
    or_panic(
        async {
            let room_id = bob
                .create_room(&json!({
                    "preset": "private_chat", "name": "Made on Synapse", "topic": "interop", "invite": [alice.me()],
                    "initial_state": [{ "type": "m.room.encryption", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }],
                }))
                .await?;
            let before = crate::support::next_batch(&alice.sync(None, 0).await?)?;
            let invite = wait_invite(&alice, &room_id).await?;
            let stripped = invite["invite_state"]["events"].as_array().context("no invite_state")?;
            ensure!(
                stripped.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Made on Synapse"),
                "the invite's stripped state on kairan: {invite}"
            );
            alice.join(&room_id).await?.ok().context("alice joins the Synapse room through kairan")?;
            wait_membership(&bob, &room_id, alice.me(), "join").await?;
            wait_membership(&alice, &room_id, bob.me(), "join").await?;
            let name = alice.state(&room_id, "m.room.name", "").await?;
            ensure!(name["name"] == "Made on Synapse", "alice sees the name {name}");
            // Her client learns from /sync (classic and sliding) that the room is encrypted,
            // what it is called and who is in it.
            crate::federation_membership::joiner_sees_the_room(&alice, &room_id, &before, "Made on Synapse", bob.me())
                .await?;
            let hello = bob.send_text_ok(&room_id, "hello", "Welcome, kairan").await?;
            wait_timeline_has(&alice, &room_id, std::slice::from_ref(&hello)).await?;
            wait_same_state(&[&alice, &bob], &room_id).await?;
            anyhow::Ok(())
        }
        .await,
    );
    Ok(())
}

/// Messages, redactions and state changes flow both ways, in a room of each origin; the
/// Synapse user finds the kairan room by its alias (a directory query to kairan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_redactions_and_state_flow_both_ways() -> anyhow::Result<()> {
    let Pair { kairan, synapse: _synapse, alice, bob } = Pair::start().await?;
    or_panic(
        async {
            // A public room on kairan, joined by alias from Synapse.
            let kairan_room = alice
                .create_room(&json!({
                    "preset": "public_chat",
                    "room_alias_name": "plaza",
                    "name": "Plaza",
                    "power_level_content_override": { "users": { bob.me(): 50 } },
                }))
                .await?;
            let alias = format!("#plaza:{}", kairan.server_name());
            let joined = bob.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &json!({})).await?.ok()?;
            ensure!(joined["room_id"] == kairan_room.as_str(), "Synapse joined {alias} as {joined}");
            wait_membership(&alice, &kairan_room, bob.me(), "join").await?;

            // And a room on Synapse that alice joins after an invite.
            let synapse_room = bob
                .create_room(&json!({
                    "preset": "private_chat",
                    "name": "Back office",
                    "invite": [alice.me()],
                    "power_level_content_override": { "users": { alice.me(): 50 } },
                }))
                .await?;
            wait_invite(&alice, &synapse_room).await?;
            alice.join(&synapse_room).await?.ok()?;
            wait_membership(&bob, &synapse_room, alice.me(), "join").await?;

            // Transaction IDs are unique per access token across rooms, as the spec asks of clients.
            for (n, room) in [&kairan_room, &synapse_room].into_iter().enumerate() {
                // Messages both ways.
                let from_alice = alice.send_text_ok(room, &format!("m-alice-{n}"), "From kairan").await?;
                let from_bob = bob.send_text_ok(room, &format!("m-bob-{n}"), "From Synapse").await?;
                wait_timeline_has(&bob, room, std::slice::from_ref(&from_alice)).await?;
                wait_timeline_has(&alice, room, std::slice::from_ref(&from_bob)).await?;
                for (api, other, event) in [(&alice, &bob, &from_bob), (&bob, &alice, &from_alice)] {
                    let seen = api.event(room, event).await?.ok()?;
                    ensure!(seen["sender"] == other.me(), "{} sees {event} from {}", api.me(), seen["sender"]);
                }

                // Each redacts their own message; the other sees it redacted.
                let path =
                    |id: &str, txn: &str| format!("/_matrix/client/v3/rooms/{}/redact/{}/{txn}", enc(room), enc(id));
                alice
                    .put(&path(&from_alice, &format!("r-alice-{n}")), &json!({}))
                    .await?
                    .ok()
                    .context("alice redacts")?;
                bob.put(&path(&from_bob, &format!("r-bob-{n}")), &json!({ "reason": "typo" }))
                    .await?
                    .ok()
                    .context("bob redacts")?;
                wait_redacted(&bob, room, &from_alice).await?;
                wait_redacted(&alice, room, &from_bob).await?;

                // State from each side: alice renames, bob sets the topic.
                let name = format!("Renamed by alice in {room}");
                event_id_of(&put_state(&alice, room, "m.room.name", "", &json!({ "name": name })).await?.ok()?)?;
                let topic = format!("Topic by bob in {room}");
                event_id_of(&put_state(&bob, room, "m.room.topic", "", &json!({ "topic": topic })).await?.ok()?)?;
                wait_state(&bob, room, "m.room.name", "name", &name).await?;
                wait_state(&alice, room, "m.room.topic", "topic", &topic).await?;
                wait_same_state(&[&alice, &bob], room).await?;
            }
            anyhow::Ok(())
        }
        .await,
    );
    Ok(())
}

/// How long each sync in the E2EE waiting loops long-polls.
const SDK_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// A logged-in matrix-sdk client whose device keys are on its server.
async fn e2ee_client(client: Client, who: &str) -> anyhow::Result<Client> {
    client.encryption().wait_for_e2ee_initialization_tasks().await;
    client.sync_once(SyncSettings::new().timeout(SDK_POLL)).await.with_context(|| format!("{who}'s first sync"))?;
    Ok(client)
}

/// Syncs `client` until `user` is joined to `room_id` in its state store.
async fn sdk_until_joined(client: &Client, room_id: &RoomId, user: &str) -> anyhow::Result<()> {
    let user = user_id(user)?;
    wait_for(&format!("{user} joined as the SDK sees it"), FEDERATION_DEADLINE, || async {
        client.sync_once(SyncSettings::new().timeout(SDK_POLL)).await.context("sync")?;
        if let Some(room) = client.get_room(room_id)
            && let Some(member) = room.get_member_no_sync(&user).await?
            && *member.membership() == MembershipState::Join
        {
            return Ok(Ok(()));
        }
        Ok(Err("not joined yet".to_owned()))
    })
    .await
}

/// Syncs `client` until the invite to `room_id` arrives, then joins.
async fn sdk_accept_invite(client: &Client, room_id: &RoomId) -> anyhow::Result<Room> {
    wait_for("the invite in the SDK", FEDERATION_DEADLINE, || async {
        client.sync_once(SyncSettings::new().timeout(SDK_POLL)).await.context("sync")?;
        Ok(match client.get_room(room_id) {
            Some(room) if room.state() == matrix_sdk::RoomState::Invited => Ok(()),
            other => Err(format!("room state {:?}", other.map(|r| r.state()))),
        })
    })
    .await?;
    let room = client.get_room(room_id).context("invited room")?;
    room.join().await.context("joining over federation with matrix-sdk")?;
    Ok(room)
}

/// Syncs `client` until `event_id` decrypts; checks sender and returns the body.
async fn sdk_decrypt(client: &Client, room_id: &RoomId, event_id: &EventId, sender: &str) -> anyhow::Result<String> {
    wait_for(&format!("{event_id} decrypted"), FEDERATION_DEADLINE, || async {
        client.sync_once(SyncSettings::new().timeout(SDK_POLL)).await.context("sync")?;
        let Some(room) = client.get_room(room_id) else { return Ok(Err("room unknown".to_owned())) };
        let event = match room.event(event_id, None).await {
            Ok(event) => event,
            Err(e) => return Ok(Err(format!("fetching: {e}"))),
        };
        match &event.kind {
            TimelineEventKind::Decrypted(_) => {
                let json = event_json(&event)?;
                ensure!(json["sender"] == sender, "decrypted {event_id} from {}", json["sender"]);
                let body = json["content"]["body"].as_str().with_context(|| format!("no body: {json}"))?;
                Ok(Ok(body.to_owned()))
            }
            TimelineEventKind::UnableToDecrypt { .. } => Ok(Err(format!("unable to decrypt: {:?}", event.kind))),
            TimelineEventKind::PlainText { event } => {
                anyhow::bail!("expected an encrypted event, got plaintext {}", event.json())
            }
        }
    })
    .await
}

async fn sdk_send(room: &Room, body: &str) -> anyhow::Result<OwnedEventId> {
    Ok(room
        .send(RoomMessageEventContent::text_plain(body))
        .await
        .with_context(|| format!("sending {body:?}"))?
        .response
        .event_id)
}

/// An encrypted conversation between a kairan user and a Synapse user, with matrix-sdk on
/// both sides: device keys, one-time key claims and room keys (to-device) cross between the
/// servers, and each side decrypts the other. The servers hold only ciphertext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_conversation_with_synapse() -> anyhow::Result<()> {
    let Pair { kairan, synapse, alice: alice_api, bob: bob_api } = Pair::start().await?;
    or_panic(
        async {
            let alice = e2ee_client(kairan.client("alice", PASSWORD).await?, "alice").await?;
            let bob = e2ee_client(synapse.client("bob", PASSWORD).await?, "bob").await?;
            let (alice_id, bob_id) = (alice_api.me().to_owned(), bob_api.me().to_owned());

            let mut request = CreateRoomRequest::new();
            request.name = Some("Confidential".to_owned());
            request.preset = Some(RoomPreset::PrivateChat);
            request.invite = vec![user_id(&bob_id)?];
            request.initial_state = vec![raw(json!({
                "type": "m.room.encryption",
                "state_key": "",
                "content": { "algorithm": "m.megolm.v1.aes-sha2" },
            }))?];
            let alice_room = alice.create_room(request).await.context("alice creates an encrypted room")?;
            let room_id = alice_room.room_id().to_owned();
            let bob_room = sdk_accept_invite(&bob, &room_id).await?;
            sdk_until_joined(&alice, &room_id, &bob_id).await?;
            sdk_until_joined(&bob, &room_id, &alice_id).await?;
            ensure!(bob_room.latest_encryption_state().await?.is_encrypted(), "bob does not see the room as encrypted");

            let from_alice = sdk_send(&alice_room, "The evacuation plan is attached").await?;
            let got =
                sdk_decrypt(&bob, &room_id, &from_alice, &alice_id).await.context("bob (Synapse) decrypts alice")?;
            ensure!(got == "The evacuation plan is attached", "bob decrypted {got:?}");
            let from_bob = sdk_send(&bob_room, "Received, thank you").await?;
            let got = sdk_decrypt(&alice, &room_id, &from_bob, &bob_id).await.context("alice (kairan) decrypts bob")?;
            ensure!(got == "Received, thank you", "alice decrypted {got:?}");
            // A second round on the same megolm sessions.
            let again_alice = sdk_send(&alice_room, "Meeting at nine").await?;
            let again_bob = sdk_send(&bob_room, "See you there").await?;
            ensure!(sdk_decrypt(&bob, &room_id, &again_alice, &alice_id).await? == "Meeting at nine");
            ensure!(sdk_decrypt(&alice, &room_id, &again_bob, &bob_id).await? == "See you there");

            // Both servers hold the events as megolm ciphertext only.
            for api in [&alice_api, &bob_api] {
                for (id, plain) in [(&from_alice, "evacuation"), (&from_bob, "Received")] {
                    let event = api.event(room_id.as_str(), id.as_str()).await?.ok()?;
                    ensure!(event["type"] == "m.room.encrypted", "{} stores {id} as {event}", api.me());
                    ensure!(!event.to_string().contains(plain), "plaintext visible to {}: {event}", api.me());
                }
            }
            anyhow::Ok(())
        }
        .await,
    );
    Ok(())
}
