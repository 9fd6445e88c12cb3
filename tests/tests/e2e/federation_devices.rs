//! Devices, keys and room history across two kairan servers (a prefecture and a
//! municipality): a client on one server queries and claims the keys of a user on the
//! other, sends them to-device messages, and hears of their device changes in `/sync`;
//! and the history endpoints (`/event`, `/state`, `/state_ids`, `/backfill`,
//! `/get_missing_events`, `/event_auth`) and the device endpoints answer a server whose
//! users share the room, and refuse one whose users do not.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use kairan_tests::{Api, Backend, PASSWORD, Response, ServerOptions, TestServer, enc, test_ca};
use matrix_sdk::{
    Client, RoomState,
    config::SyncSettings,
    deserialized_responses::TimelineEventKind,
    ruma::{
        EventId, RoomId, UserId,
        api::client::room::create_room::v3::{Request as CreateRoomRequest, RoomPreset},
        events::room::{member::MembershipState, message::RoomMessageEventContent},
    },
};
use ruma::{
    CanonicalJsonObject,
    exports::http,
    serde::Base64,
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

use crate::federation::{FEDERATION_DEADLINE, wait_for, wait_membership};
use crate::support::{event_json, raw, room_state, sync_until, user_id};

/// A federation request from `from` (signed with its key) to `to`'s federation port.
async fn federation_request(
    from: &TestServer,
    to: &TestServer,
    method: http::Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Response> {
    let key = kairan_tests::server_signing_key(from, None)?;
    let client = reqwest::Client::builder()
        .tls_certs_only([test_ca().reqwest_certificate()?])
        .timeout(Duration::from_secs(30))
        .build()?;
    kairan_tests::federation_request(
        &client,
        to,
        method,
        path,
        body,
        Some((from.server_name(), to.server_name(), &key)),
    )
    .await
}

/// The body of a 200 answer to `path`, or an error naming the path.
fn ok_at((path, response): (String, Response)) -> anyhow::Result<Value> {
    response.ok().with_context(|| format!("GET {path}"))
}

/// A cross-signing key pair whose key ID is its public key, as clients make them.
fn cross_signing_pair() -> anyhow::Result<(Ed25519KeyPair, String)> {
    let der = Ed25519KeyPair::generate();
    let public = Base64::<ruma::serde::base64::Standard, _>::new(
        Ed25519KeyPair::from_der(&der, "probe".to_owned())?.public_key().to_vec(),
    )
    .encode();
    Ok((Ed25519KeyPair::from_der(&der, public.clone())?, public))
}

/// `value` signed by `signer` with `key` (key ID `ed25519:{version}`).
fn signed(key: &Ed25519KeyPair, signer: &str, value: Value) -> anyhow::Result<Value> {
    let mut object: CanonicalJsonObject = serde_json::from_value(value)?;
    sign_json(signer, key, &mut object)?;
    Ok(serde_json::to_value(object)?)
}

/// Device keys as a client uploads them; the server stores them as given (the
/// signatures are the clients' to check), so placeholders serve.
fn device_keys(api: &Api, label: &str) -> Value {
    let (user, device) = (api.me(), api.device_id.as_deref().unwrap_or_default());
    json!({
        "user_id": user,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device}"): format!("curve-{label}"),
            format!("ed25519:{device}"): format!("ed-{label}"),
        },
        "signatures": { user: { format!("ed25519:{device}"): format!("sig-{label}") } },
    })
}

both_backends!(scenario);

async fn scenario(backend: Backend) -> anyhow::Result<()> {
    let start = || TestServer::start(ServerOptions::default().backend(backend).federation());
    let (pref, muni) = tokio::try_join!(start(), start())?;
    pref.create_users(&["governor"]).await?;
    muni.create_users(&["mayor"]).await?;
    let governor = pref.api("governor", PASSWORD).await?;
    let mayor = muni.api("mayor", PASSWORD).await?;
    let mayor_device = mayor.device_id.clone().context("mayor's device")?;

    // The mayor's device uploads identity keys, two one-time keys and a fallback key,
    // and a master cross-signing key.
    mayor
        .post(
            "/_matrix/client/v3/keys/upload",
            &json!({
                "device_keys": device_keys(&mayor, "1"),
                "one_time_keys": {
                    "signed_curve25519:AAAAAQ": { "key": "otk-1", "signatures": {} },
                    "signed_curve25519:AAAAAg": { "key": "otk-2", "signatures": {} },
                },
                "fallback_keys": { "signed_curve25519:AAAAAw": { "key": "fallback", "fallback": true, "signatures": {} } },
            }),
        )
        .await?
        .ok()?;
    let master = json!({ "user_id": mayor.me(), "usage": ["master"], "keys": { "ed25519:MASTERPK": "MASTERPK" } });
    mayor.post("/_matrix/client/v3/keys/device_signing/upload", &json!({ "master_key": master })).await?.ok()?;

    // The governor's server asks the mayor's (user/keys/query); a server that cannot be
    // reached is named in `failures` and does not spoil the rest.
    let query = governor
        .post("/_matrix/client/v3/keys/query", &json!({ "device_keys": { mayor.me(): [], "@nobody:127.0.0.1:1": [] } }))
        .await?
        .ok()?;
    let keys = &query["device_keys"][mayor.me()][&mayor_device];
    ensure!(keys["keys"][format!("curve25519:{mayor_device}")] == "curve-1", "the mayor's device keys: {query}");
    ensure!(query["master_keys"][mayor.me()]["keys"]["ed25519:MASTERPK"] == "MASTERPK", "master key: {query}");
    ensure!(query["failures"]["127.0.0.1:1"].is_object(), "failures: {query}");
    ensure!(query["failures"].get(muni.server_name()).is_none(), "the reachable server failed: {query}");

    // Claims go to the mayor's server (user/keys/claim): the one-time keys, then the fallback key.
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let claim = governor
            .post(
                "/_matrix/client/v3/keys/claim",
                &json!({ "one_time_keys": { mayor.me(): { &mayor_device: "signed_curve25519" } } }),
            )
            .await?
            .ok()?;
        let by_id = claim["one_time_keys"][mayor.me()][&mayor_device].as_object().context(claim.to_string())?.clone();
        let key = by_id.values().next().context("no key claimed")?["key"].as_str().unwrap_or_default().to_owned();
        claimed.push(key);
    }
    claimed[..2].sort();
    ensure!(claimed == ["otk-1", "otk-2", "fallback"], "claimed over federation: {claimed:?}");

    // The governor cross-signs the mayor: the signature by the governor's user-signing key
    // on the mayor's master key (fetched from the mayor's server to check it) is kept on
    // the prefecture and shown to the governor with the mayor's keys.
    let (gov_master, gov_master_pub) = cross_signing_pair()?;
    let (gov_usk, gov_usk_pub) = cross_signing_pair()?;
    let me = governor.me().to_owned();
    let master =
        json!({ "user_id": me, "usage": ["master"], "keys": { format!("ed25519:{gov_master_pub}"): gov_master_pub } });
    let usk = signed(
        &gov_master,
        &me,
        json!({ "user_id": me, "usage": ["user_signing"], "keys": { format!("ed25519:{gov_usk_pub}"): gov_usk_pub } }),
    )?;
    governor
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            &json!({ "master_key": master, "user_signing_key": usk }),
        )
        .await?
        .ok()?;
    let mayor_master = query["master_keys"][mayor.me()].clone();
    let forged = signed(&gov_master, &me, mayor_master.clone())?;
    let answer = governor
        .post("/_matrix/client/v3/keys/signatures/upload", &json!({ mayor.me(): { "MASTERPK": forged } }))
        .await?
        .ok()?;
    ensure!(
        answer["failures"][mayor.me()]["MASTERPK"].is_object(),
        "a master-key signature passed as user-signing: {answer}"
    );
    let good = signed(&gov_usk, &me, mayor_master)?;
    let answer = governor
        .post("/_matrix/client/v3/keys/signatures/upload", &json!({ mayor.me(): { "MASTERPK": good } }))
        .await?
        .ok()?;
    ensure!(answer["failures"].as_object().is_some_and(|f| f.is_empty()), "signing the mayor: {answer}");
    let query =
        governor.post("/_matrix/client/v3/keys/query", &json!({ "device_keys": { mayor.me(): [] } })).await?.ok()?;
    let signature = &query["master_keys"][mayor.me()]["signatures"][&me][format!("ed25519:{gov_usk_pub}")];
    ensure!(signature.is_string(), "the governor's signature on the mayor's master key: {query}");

    // They share a room: the mayor joins the governor's public room over federation.
    let room_id = governor.create_room(&json!({ "preset": "public_chat" })).await?;
    let before_join = governor.sync(None, 0).await?["next_batch"].as_str().context("next_batch")?.to_owned();
    let join = format!("/_matrix/client/v3/join/{}?via={}", enc(&room_id), enc(pref.server_name()));
    mayor.post(&join, &json!({})).await?.ok()?;
    wait_membership(&governor, &room_id, mayor.me(), "join").await?;
    // A remote user who joins a room with the governor is a device list change for the
    // governor's client: it has not fetched the mayor's keys for this room yet.
    let sync = governor.sync(Some(&before_join), 0).await?;
    let changed = sync["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
    ensure!(changed.iter().any(|u| u == mayor.me()), "device lists after the mayor's join: {}", sync["device_lists"]);

    // A new key of the mayor's device reaches the governor's sync as a device list change
    // (m.device_list_update), after the join: only the EDU can put the mayor there.
    let since = governor.sync(None, 0).await?["next_batch"].as_str().context("next_batch")?.to_owned();
    mayor.post("/_matrix/client/v3/keys/upload", &json!({ "device_keys": device_keys(&mayor, "2") })).await?.ok()?;
    wait_for("the mayor in the governor's device_lists.changed", FEDERATION_DEADLINE, || async {
        let sync = governor.sync(Some(&since), 1000).await?;
        let changed = &sync["device_lists"]["changed"];
        let found = changed.as_array().is_some_and(|c| c.iter().any(|u| u == mayor.me()));
        Ok(if found { Ok(()) } else { Err(sync["device_lists"].to_string()) })
    })
    .await?;
    // And the governor's server now answers with the new keys.
    let query =
        governor.post("/_matrix/client/v3/keys/query", &json!({ "device_keys": { mayor.me(): [] } })).await?.ok()?;
    let curve = &query["device_keys"][mayor.me()][&mayor_device]["keys"][format!("curve25519:{mayor_device}")];
    ensure!(*curve == "curve-2", "keys after the change: {query}");

    // Renaming the device is a change too; the new name comes with the keys.
    let since = governor.sync(None, 0).await?["next_batch"].as_str().context("next_batch")?.to_owned();
    mayor
        .put(&format!("/_matrix/client/v3/devices/{}", enc(&mayor_device)), &json!({ "display_name": "Mayor's phone" }))
        .await?
        .ok()?;
    wait_for("the renamed device in the governor's device_lists.changed", FEDERATION_DEADLINE, || async {
        let sync = governor.sync(Some(&since), 1000).await?;
        let found = sync["device_lists"]["changed"].as_array().is_some_and(|c| c.iter().any(|u| u == mayor.me()));
        Ok(if found { Ok(()) } else { Err(sync["device_lists"].to_string()) })
    })
    .await?;
    let query =
        governor.post("/_matrix/client/v3/keys/query", &json!({ "device_keys": { mayor.me(): [] } })).await?.ok()?;
    let name = &query["device_keys"][mayor.me()][&mayor_device]["unsigned"]["device_display_name"];
    ensure!(*name == "Mayor's phone", "the device's name over federation: {query}");

    // A to-device message to the mayor's device travels as m.direct_to_device.
    governor
        .put(
            "/_matrix/client/v3/sendToDevice/m.kairan.test/txn-1",
            &json!({ "messages": { mayor.me(): { &mayor_device: { "greeting": "good morning" } } } }),
        )
        .await?
        .ok()?;
    let message = wait_for("the governor's to-device message on the mayor's device", FEDERATION_DEADLINE, || async {
        let sync = mayor.sync(None, 0).await?;
        let events = sync["to_device"]["events"].as_array().cloned().unwrap_or_default();
        Ok(match events.into_iter().find(|e| e["type"] == "m.kairan.test") {
            Some(e) => Ok(e),
            None => Err(sync["to_device"].to_string()),
        })
    })
    .await?;
    ensure!(message["sender"] == governor.me(), "to-device sender: {message}");
    ensure!(message["content"]["greeting"] == "good morning", "to-device content: {message}");

    // History for a server in the room, asked in the municipality's name.
    let hello = governor.send_text_ok(&room_id, "hello", "Hello, mayor").await?;
    let get = |path: String| {
        let (muni, pref) = (&muni, &pref);
        async move {
            let response = federation_request(muni, pref, http::Method::GET, &path, None).await?;
            anyhow::Ok((path, response))
        }
    };
    let event = ok_at(get(format!("/_matrix/federation/v1/event/{}", enc(&hello))).await?)?;
    ensure!(event["pdus"][0]["content"]["body"] == "Hello, mayor", "/event: {event}");
    ensure!(event["pdus"][0]["hashes"].is_object() && event["pdus"][0]["signatures"].is_object(), "a PDU: {event}");
    ensure!(event["origin"] == pref.server_name(), "/event origin: {event}");

    let q = format!("{}?event_id={}", enc(&room_id), enc(&hello));
    let ids = ok_at(get(format!("/_matrix/federation/v1/state_ids/{q}")).await?)?;
    let pdu_ids = ids["pdu_ids"].as_array().context(ids.to_string())?;
    ensure!(pdu_ids.len() >= 5, "state before the message (create, members, power levels, ...): {ids}");
    ensure!(!pdu_ids.iter().any(|i| i == hello.as_str()), "a message is not state: {ids}");
    ensure!(!ids["auth_chain_ids"].as_array().context(ids.to_string())?.is_empty(), "auth chain: {ids}");
    let state = ok_at(get(format!("/_matrix/federation/v1/state/{q}")).await?)?;
    ensure!(state["pdus"].as_array().map(Vec::len) == Some(pdu_ids.len()), "/state and /state_ids: {state}");
    let member_of_mayor =
        state["pdus"].as_array().into_iter().flatten().any(|p| {
            p["type"] == "m.room.member" && p["state_key"] == mayor.me() && p["content"]["membership"] == "join"
        });
    ensure!(member_of_mayor, "the mayor's join in the state before the message: {state}");

    let auth = ok_at(get(format!("/_matrix/federation/v1/event_auth/{}/{}", enc(&room_id), enc(&hello))).await?)?;
    let auth_types: Vec<&str> =
        auth["auth_chain"].as_array().into_iter().flatten().filter_map(|p| p["type"].as_str()).collect();
    // (Room version 12 names no create event in `auth_events`: the room ID is its ID.)
    ensure!(auth_types.contains(&"m.room.power_levels"), "/event_auth: {auth}");

    let backfill =
        ok_at(get(format!("/_matrix/federation/v1/backfill/{}?v={}&limit=4", enc(&room_id), enc(&hello))).await?)?;
    let pdus = backfill["pdus"].as_array().context(backfill.to_string())?;
    ensure!(pdus.len() == 4, "backfill of 4: {backfill}");
    ensure!(pdus[0]["content"]["body"] == "Hello, mayor", "backfill starts at the event asked: {backfill}");

    let missing = federation_request(
        &muni,
        &pref,
        http::Method::POST,
        &format!("/_matrix/federation/v1/get_missing_events/{}", enc(&room_id)),
        Some(&json!({ "earliest_events": [], "latest_events": [hello], "limit": 3 })),
    )
    .await?
    .ok()?;
    let events = missing["events"].as_array().context(missing.to_string())?;
    ensure!(events.len() == 3, "three missing events: {missing}");
    let depths: Vec<i64> = events.iter().filter_map(|e| e["depth"].as_i64()).collect();
    ensure!(depths.windows(2).all(|w| w[0] <= w[1]), "oldest first: {depths:?}");

    // The devices of a local user, for a server that shares a room with them.
    let devices = get(format!("/_matrix/federation/v1/user/devices/{}", enc(mayor.me()))).await?.1;
    ensure!(devices.status == 404, "the prefecture does not speak for the mayor: {}", devices.text);
    let devices = federation_request(
        &pref,
        &muni,
        http::Method::GET,
        &format!("/_matrix/federation/v1/user/devices/{}", enc(mayor.me())),
        None,
    )
    .await?
    .ok()?;
    ensure!(devices["devices"][0]["device_id"] == mayor_device.as_str(), "user/devices: {devices}");
    ensure!(devices["stream_id"].as_i64().is_some_and(|s| s > 0), "user/devices stream_id: {devices}");
    ensure!(devices["master_key"]["usage"][0] == "master", "user/devices master key: {devices}");

    // A room the municipality has no user in is closed to it; an unknown event is not found.
    let private = governor.create_room(&json!({ "preset": "private_chat" })).await?;
    let secret = governor.send_text_ok(&private, "secret", "Prefecture only").await?;
    let refused = get(format!("/_matrix/federation/v1/event/{}", enc(&secret))).await?.1;
    kairan_tests::assert_matrix_error(&refused, 403, "M_FORBIDDEN")?;
    let refused = get(format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(&private), enc(&secret))).await?.1;
    kairan_tests::assert_matrix_error(&refused, 403, "M_FORBIDDEN")?;
    let unknown = get(format!("/_matrix/federation/v1/event/{}", enc("$nothing-of-the-kind"))).await?.1;
    kairan_tests::assert_matrix_error(&unknown, 404, "M_NOT_FOUND")?;
    Ok(())
}

/// How long each sync of the matrix-sdk clients long-polls.
const SDK_POLL: Duration = Duration::from_secs(1);

/// A matrix-sdk client whose device keys are uploaded (by its first sync).
async fn sdk_client(server: &TestServer, name: &str) -> anyhow::Result<Client> {
    let client = server.client(name, PASSWORD).await?;
    client.encryption().wait_for_e2ee_initialization_tasks().await;
    client.sync_once(SyncSettings::new().timeout(SDK_POLL)).await.with_context(|| format!("{name}'s first sync"))?;
    Ok(client)
}

/// Syncs `client` until `user` is joined to `room_id` in its store.
async fn sdk_until_joined(client: &Client, room_id: &RoomId, user: &UserId) -> anyhow::Result<()> {
    let until = Instant::now() + FEDERATION_DEADLINE;
    loop {
        client.sync_once(SyncSettings::new().timeout(SDK_POLL)).await.context("sync")?;
        if let Some(room) = client.get_room(room_id)
            && let Some(member) = room.get_member_no_sync(user).await?
            && *member.membership() == MembershipState::Join
        {
            return Ok(());
        }
        ensure!(Instant::now() < until, "{user} not seen joined to {room_id} within {FEDERATION_DEADLINE:?}");
    }
}

/// Syncs `client` until the event decrypts; returns its `content.body` after checking
/// the sender of the event and of its megolm session.
async fn sdk_decrypted(
    client: &Client,
    room_id: &RoomId,
    event_id: &EventId,
    sender: &UserId,
) -> anyhow::Result<String> {
    let until = Instant::now() + FEDERATION_DEADLINE;
    loop {
        client.sync_once(SyncSettings::new().timeout(SDK_POLL)).await.context("sync")?;
        if let Some(room) = client.get_room(room_id)
            && let Ok(event) = room.event(event_id, None).await
        {
            match &event.kind {
                TimelineEventKind::Decrypted(_) => {
                    let json = event_json(&event)?;
                    ensure!(json["sender"] == sender.as_str(), "sender of {event_id}: {json}");
                    let info = event.encryption_info().context("decrypted event without encryption info")?;
                    ensure!(info.sender == sender, "megolm session of {event_id} belongs to {}", info.sender);
                    return Ok(json["content"]["body"].as_str().unwrap_or_default().to_owned());
                }
                TimelineEventKind::PlainText { event } => {
                    anyhow::bail!("{event_id} arrived in plaintext: {}", event.json())
                }
                TimelineEventKind::UnableToDecrypt { .. } => {}
            }
        }
        ensure!(Instant::now() < until, "{event_id} still not decrypted within {FEDERATION_DEADLINE:?}");
    }
}

/// The governor and a mayor on different kairan servers talk in an encrypted room with
/// matrix-sdk clients. Each decrypts the other, which needs every step across the two
/// servers: the other user's devices through `user/keys/query`, a one-time key through
/// `user/keys/claim`, the megolm room key as an Olm-encrypted `m.direct_to_device`, and
/// the joined user's device list as a change in `/sync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_conversation_across_servers() -> anyhow::Result<()> {
    let start = || TestServer::start(ServerOptions::default().federation());
    let (pref, muni) = tokio::try_join!(start(), start())?;
    pref.create_users(&["governor"]).await?;
    muni.create_users(&["mayor"]).await?;
    let (governor_id, mayor_id) = (user_id(&pref.user_id("governor"))?, user_id(&muni.user_id("mayor"))?);
    let governor = sdk_client(&pref, "governor").await?;
    let mayor = sdk_client(&muni, "mayor").await?;

    let mut request = CreateRoomRequest::new();
    request.preset = Some(RoomPreset::PrivateChat);
    request.initial_state = vec![raw(
        json!({ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }),
    )?];
    let room = governor.create_room(request).await.context("creating the encrypted room")?;
    let room_id = room.room_id().to_owned();
    room.invite_user_by_id(&mayor_id).await.context("inviting the mayor")?;

    sync_until(&mayor, "the mayor's invite", |c| room_state(c, &room_id) == Some(RoomState::Invited)).await?;
    mayor.get_room(&room_id).context("invited room")?.join().await.context("the mayor joins")?;
    sync_until(&mayor, "the mayor's join", |c| room_state(c, &room_id) == Some(RoomState::Joined)).await?;
    let mayor_room = mayor.get_room(&room_id).context("joined room")?;
    sdk_until_joined(&governor, &room_id, &mayor_id).await?;

    let text = RoomMessageEventContent::text_plain("The snow plough leaves at six");
    let from_governor = room.send(text).await.context("the governor sends")?.response.event_id;
    let got = sdk_decrypted(&mayor, &room_id, &from_governor, &governor_id).await.context("the mayor decrypts")?;
    ensure!(got == "The snow plough leaves at six", "the mayor decrypted {got:?}");

    // The mayor's client learns the members from the server (`/members`) before it shares
    // its room key.
    let text = RoomMessageEventContent::text_plain("The road to the town hall is clear");
    let from_mayor = mayor_room.send(text).await.context("the mayor sends")?.response.event_id;
    let got = sdk_decrypted(&governor, &room_id, &from_mayor, &mayor_id).await.context("the governor decrypts")?;
    ensure!(got == "The road to the town hall is clear", "the governor decrypted {got:?}");
    Ok(())
}

/// A remote user's keys are asked of their server once and then answered from kairan's
/// copy, until their server announces a change (`m.device_list_update`): then the user
/// is in `device_lists.changed` and the next `/keys/query` asks again. The remote server
/// is scripted ([`HostileServer`]), so that every request kairan makes of it is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_keys_are_kept_until_their_server_announces_a_change() -> anyhow::Result<()> {
    use kairan_tests::hostile::{Answer, HostileServer};

    const KEYS_QUERY: &str = "/_matrix/federation/v1/user/keys/query";
    let kairan = TestServer::start(ServerOptions::default().federation()).await?;
    kairan.create_users(&["alice"]).await?;
    let alice = kairan.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await?;
    let remote = HostileServer::start().await?;
    let mallory = remote.user_id("mallory");
    remote.join(&kairan, &room, "mallory").await?;
    let answer = |devices: &[&str]| {
        let keys: serde_json::Map<String, Value> = devices
            .iter()
            .map(|d| {
                let key = json!({
                    "user_id": mallory, "device_id": d,
                    "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                    "keys": { format!("curve25519:{d}"): "curve", format!("ed25519:{d}"): "ed" },
                    "signatures": {},
                });
                ((*d).to_owned(), key)
            })
            .collect();
        Answer::json(json!({ "device_keys": { mallory.clone(): keys } }))
    };
    let query = || async {
        let body = json!({ "device_keys": { mallory.clone(): [] } });
        let keys = alice.post("/_matrix/client/v3/keys/query", &body).await?.ok()?;
        let mut devices: Vec<String> =
            keys["device_keys"][&mallory].as_object().map(|d| d.keys().cloned().collect()).unwrap_or_default();
        devices.sort();
        anyhow::Ok(devices)
    };

    remote.script(Some(http::Method::POST), KEYS_QUERY, answer(&["PHONE"]));
    let mut since = crate::support::next_batch(&alice.sync(None, 0).await?)?;
    for attempt in 0..3 {
        ensure!(query().await? == ["PHONE"], "query {attempt}");
    }
    ensure!(remote.count(KEYS_QUERY) == 1, "kairan asked {} times for keys it holds", remote.count(KEYS_QUERY));

    // A new device, not yet announced: kairan's copy stands.
    remote.script(Some(http::Method::POST), KEYS_QUERY, answer(&["LAPTOP", "PHONE"]));
    ensure!(query().await? == ["PHONE"], "kairan asked again without being told of a change");

    let edu = json!({ "edu_type": "m.device_list_update", "content": {
        "user_id": mallory, "device_id": "LAPTOP", "stream_id": 2, "prev_id": [1], "deleted": false,
        "keys": { "user_id": mallory, "device_id": "LAPTOP" } } });
    let txn = json!({ "origin": remote.server_name(), "origin_server_ts": 1, "pdus": [], "edus": [edu] });
    remote.send_transaction_body(&kairan, "devices-1", &txn).await?.ok().context("the device list update")?;
    crate::support::sync_raw_until(&alice, &mut since, "mallory in device_lists.changed", |sync| {
        sync["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.iter().any(|u| u == mallory.as_str()))
            .then_some(())
    })
    .await?;
    ensure!(query().await? == ["LAPTOP", "PHONE"], "the announced device is not there");
    ensure!(remote.count(KEYS_QUERY) == 2, "kairan asked {} times in all, not twice", remote.count(KEYS_QUERY));
    Ok(())
}
