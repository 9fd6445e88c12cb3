//! Rules across servers: knocking, the room's server ACL, history from before a join
//! (backfill), forged events, and the federation allowlist changed at run time.

use anyhow::{Context as _, ensure};
use kairan_tests::{PASSWORD, TestServer, enc};
use serde_json::{Value, json};

use crate::{
    federation::{FEDERATION_DEADLINE, federating_server, or_panic, wait_for, wait_invite, wait_membership},
    support::next_batch,
};

const V1: &str = "/_kairan/admin/v1";

/// `POST /join/{room}?via={server}`: a join through `server`.
async fn join_via(api: &kairan_tests::Api, room: &str, server: &TestServer) -> anyhow::Result<kairan_tests::Response> {
    api.post(&format!("/_matrix/client/v3/join/{}?via={}", enc(room), enc(server.server_name())), &json!({})).await
}

/// Two federating servers with a user each: `governor` on the first, `mayor` on the second.
async fn pair() -> anyhow::Result<(TestServer, TestServer)> {
    let (pref, city) = tokio::try_join!(federating_server(), federating_server())?;
    pref.create_user("governor", PASSWORD, true).await?;
    city.create_users(&["mayor"]).await?;
    Ok((pref, city))
}

/// A knocking user of another server: the knock reaches the room, the knocker's sync lists
/// the room under `knock` with its name, and an invite then lets them in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knock_across_servers() -> anyhow::Result<()> {
    let (pref, city) = pair().await?;
    let governor = pref.api("governor", PASSWORD).await?;
    let mayor = city.api("mayor", PASSWORD).await?;
    or_panic(
        async {
            let room = governor
                .create_room(&json!({
                    "name": "Budget committee",
                    "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }],
                }))
                .await?;
            // Joining without an invite is refused; knocking is what the room allows.
            let refused = join_via(&mayor, &room, &pref).await?;
            ensure!(refused.status == 403, "a join without invite got {}: {}", refused.status, refused.text);
            let knocked = mayor
                .post(
                    &format!("/_matrix/client/v3/knock/{}?via={}", enc(&room), enc(pref.server_name())),
                    &json!({ "reason": "I chair the city's budget" }),
                )
                .await?
                .ok()?;
            ensure!(knocked["room_id"] == room.as_str(), "{knocked}");
            wait_membership(&governor, &room, mayor.me(), "knock").await?;
            let knock_section = wait_for("the knock in the mayor's sync", FEDERATION_DEADLINE, || async {
                let sync = mayor.sync(None, 0).await?;
                let k = &sync["rooms"]["knock"][&room];
                Ok(if k.is_object() { Ok(k.clone()) } else { Err(sync["rooms"].to_string()) })
            })
            .await?;
            let shown = knock_section["knock_state"]["events"].as_array().cloned().unwrap_or_default();
            ensure!(
                shown.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Budget committee"),
                "the knock state does not show the room's name: {knock_section}"
            );
            governor
                .post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), &json!({ "user_id": mayor.me() }))
                .await?
                .ok()?;
            wait_invite(&mayor, &room).await?;
            mayor.join(&room).await?.ok()?;
            wait_membership(&governor, &room, mayor.me(), "join").await?;
            Ok(())
        }
        .await,
    );
    Ok(())
}

/// `m.room.server_acl` keeps a denied server out: its join is refused, and events it
/// sends into the room are rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_acl_is_enforced() -> anyhow::Result<()> {
    let (pref, city) = pair().await?;
    let governor = pref.api("governor", PASSWORD).await?;
    let mayor = city.api("mayor", PASSWORD).await?;
    or_panic(
        async {
            let room = governor.create_room(&json!({ "preset": "public_chat" })).await?;
            join_via(&mayor, &room, &pref).await?.ok()?;
            wait_membership(&governor, &room, mayor.me(), "join").await?;
            let acl = json!({ "allow": [pref.server_name()], "deny": [], "allow_ip_literals": false });
            governor
                .put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.server_acl/", enc(&room)), &acl)
                .await?
                .ok()?;
            // The ACL reaches the city's server; what the mayor sends afterwards is refused there.
            wait_for("the ACL on the city's server", FEDERATION_DEADLINE, || async {
                let r = mayor.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.server_acl/", enc(&room))).await?;
                Ok(if r.status == 200 { Ok(()) } else { Err(r.text) })
            })
            .await?;
            let after = mayor.send_text_ok(&room, "after-acl", "can you still hear me?").await?;
            // The prefecture's server records why it refused the event: wait for that
            // record (read from its database), not for time to pass.
            let reason = wait_for("the refusal of the mayor's message", FEDERATION_DEADLINE, || async {
                Ok(match rejection_reason(&pref, &after).await? {
                    Some(r) => Ok(r),
                    None => Err("not refused yet".to_owned()),
                })
            })
            .await?;
            ensure!(reason.contains("server ACL"), "refused for another reason: {reason}");
            let seen = governor.event(&room, &after).await?;
            ensure!(seen.status == 404, "an event from an ACL-denied server was accepted: {}", seen.text);
            Ok(())
        }
        .await,
    );
    Ok(())
}

/// An administrator narrows the allowlist at run time: the next request from a server no
/// longer on it is refused with `M_FORBIDDEN`, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_change_takes_effect_on_the_next_request() -> anyhow::Result<()> {
    let (pref, city) = pair().await?;
    let governor = pref.api("governor", PASSWORD).await?;
    let mayor = city.api("mayor", PASSWORD).await?;
    or_panic(
        async {
            let open = governor.create_room(&json!({ "preset": "public_chat" })).await?;
            join_via(&mayor, &open, &pref).await?.ok()?;

            let second = governor.create_room(&json!({ "preset": "public_chat" })).await?;
            let set = governor
                .put(&format!("{V1}/policy/federation"), &json!({ "allowlist": ["some-other-town.example"] }))
                .await?
                .ok()?;
            ensure!(set["federation_allowlist"] == json!(["some-other-town.example"]), "{set}");
            let refused = join_via(&mayor, &second, &pref).await?;
            ensure!(
                refused.status == 403,
                "a join from a server no longer allowed got {}: {}",
                refused.status,
                refused.text
            );
            let body: Value = refused.body.clone();
            ensure!(body["errcode"] == "M_FORBIDDEN", "{body}");
            Ok(())
        }
        .await,
    );
    Ok(())
}

/// An event whose signature does not verify is rejected, even inside a correctly signed
/// transaction from the right server; the same event properly signed is accepted (so the
/// rejection is the signature's doing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_event_signature_is_rejected() -> anyhow::Result<()> {
    use ruma::{CanonicalJsonObject, signatures::Ed25519KeyPair};

    use crate::federation_transport::{send_signed, server_key};

    let (pref, city) = pair().await?;
    let governor = pref.api("governor", PASSWORD).await?;
    let mayor = city.api("mayor", PASSWORD).await?;
    or_panic(
        async {
            let room = governor.create_room(&json!({ "preset": "public_chat" })).await?;
            join_via(&mayor, &room, &pref).await?.ok()?;
            wait_membership(&governor, &room, mayor.me(), "join").await?;
            let last = governor.send_text_ok(&room, "last", "the latest event").await?;
            let state = governor.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room))).await?.ok()?;
            let state_id = |t: &str, k: &str| {
                state
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["type"] == t && e["state_key"] == k)
                    .map(|e| e["event_id"].clone())
            };
            let pl = state_id("m.room.power_levels", "").context("power levels")?;
            let member = state_id("m.room.member", mayor.me()).context("mayor's membership")?;
            let rules = ruma::RoomVersionId::V12.rules().expect("v12 rules");
            let city_name = city.server_name().to_owned();
            let real_key = server_key(&city)?;
            // A key the city never published, under the name of its real key.
            let version = real_key.version().to_owned();
            let forger = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), version)?;

            let mut txn = 0;
            let mut send_as_city = |body: &str, key: &Ed25519KeyPair| -> anyhow::Result<(String, Value)> {
                txn += 1;
                let mut event: CanonicalJsonObject = serde_json::from_value(json!({
                    "room_id": room,
                    "sender": mayor.me(),
                    "origin_server_ts": 1_800_000_000_000u64 + txn,
                    "type": "m.room.message",
                    "content": { "msgtype": "m.text", "body": body },
                    "prev_events": [last],
                    "auth_events": [pl, member],
                    "depth": 1000 + txn,
                }))?;
                ruma::signatures::hash_and_sign_event(&city_name, key, &mut event, &rules.redaction)?;
                let hash = ruma::signatures::reference_hash(&event, &rules)?;
                let pdu = serde_json::to_value(&event)?;
                let body = json!({ "origin": city_name, "origin_server_ts": 1_800_000_000_000u64, "pdus": [pdu] });
                Ok((format!("${hash}"), body))
            };
            let (forged_id, forged_txn) = send_as_city("forged", &forger)?;
            let (genuine_id, genuine_txn) = send_as_city("genuine", &real_key)?;
            let signer = (city_name.as_str(), pref.server_name(), &real_key);
            for (id, body, txn_id) in [(&forged_id, &forged_txn, "forged-1"), (&genuine_id, &genuine_txn, "genuine-1")]
            {
                let r = send_signed(
                    &pref,
                    ruma::exports::http::Method::PUT,
                    &format!("/_matrix/federation/v1/send/{txn_id}"),
                    Some(body),
                    Some(signer),
                )
                .await?;
                ensure!(r.status == 200, "the transaction itself is well signed: {} {}", r.status, r.text);
                let result = &r.body["pdus"][id.as_str()];
                if id == &forged_id {
                    ensure!(result["error"].is_string(), "the forged event was not refused: {}", r.text);
                } else {
                    ensure!(result.get("error").is_none(), "the genuine event was refused: {}", r.text);
                }
            }
            let forged = governor.event(&room, &forged_id).await?;
            ensure!(forged.status == 404, "the forged event is in the room: {}", forged.text);
            let genuine = governor.event(&room, &genuine_id).await?;
            ensure!(genuine.status == 200, "the genuine event is missing: {}", genuine.text);
            Ok(())
        }
        .await,
    );
    Ok(())
}

/// Why a server refused an event, from its `rejected_events` table (read-only; WAL lets
/// it read beside the running server).
async fn rejection_reason(server: &TestServer, event_id: &str) -> anyhow::Result<Option<String>> {
    use sqlx::Connection as _;
    let path = server.dir().join("data").join("kairan.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    let reason = sqlx::query_scalar("SELECT reason FROM rejected_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(&mut conn)
        .await?;
    conn.close().await?;
    Ok(reason)
}

/// A user who joins a room over federation pages back into the history from before their
/// server joined (history visibility `shared`): their server backfills it from the room's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_before_the_join_is_backfilled() -> anyhow::Result<()> {
    let (pref, city) = pair().await?;
    let governor = pref.api("governor", PASSWORD).await?;
    let mayor = city.api("mayor", PASSWORD).await?;
    or_panic(
        async {
            let room = governor.create_room(&json!({ "preset": "public_chat", "name": "Archive" })).await?;
            let mut earlier = Vec::new();
            for i in 0..5 {
                earlier.push(governor.send_text_ok(&room, &format!("old-{i}"), &format!("before you came {i}")).await?);
            }
            join_via(&mayor, &room, &pref).await?.ok()?;
            // Page back from the present until the room's creation.
            let mut seen = Vec::new();
            let mut from: Option<String> = None;
            for _ in 0..20 {
                let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=4", enc(&room));
                if let Some(f) = &from {
                    path.push_str(&format!("&from={}", enc(f)));
                }
                let page = mayor.get(&path).await?.ok()?;
                let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
                seen.extend(chunk.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)));
                match page["end"].as_str() {
                    Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                    _ => break,
                }
            }
            for id in &earlier {
                ensure!(seen.contains(id), "{id} from before the join is not in the mayor's history: {seen:?}");
            }
            // Newest first, as /messages backwards returns them.
            let positions: Vec<usize> = earlier.iter().filter_map(|id| seen.iter().position(|s| s == id)).collect();
            ensure!(positions.windows(2).all(|w| w[0] > w[1]), "history out of order: {positions:?}");
            Ok(())
        }
        .await,
    );
    Ok(())
}

/// The administrators' room policy binds the members of other servers as it binds local
/// ones: a mayor with the power for it cannot turn on encryption the prefecture's policy
/// forbids (the event is refused on receipt), and a room the prefecture shut down takes
/// no one in through federation either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_policy_and_shutdown_bind_other_servers() -> anyhow::Result<()> {
    let (pref, city) = pair().await?;
    let governor = pref.api("governor", PASSWORD).await?;
    let mayor = city.api("mayor", PASSWORD).await?;
    or_panic(
        async {
            let room = governor.create_room(&json!({ "preset": "public_chat", "name": "Plain text only" })).await?;
            governor
                .put(&format!("{V1}/rooms/{}/policy", enc(&room)), &json!({ "encryption": "forbidden" }))
                .await?
                .ok()?;
            join_via(&mayor, &room, &pref).await?.ok()?;
            wait_membership(&governor, &room, mayor.me(), "join").await?;
            // The mayor gets every power, so only the policy stands in the way.
            let mut levels = governor.state(&room, "m.room.power_levels", "").await?;
            levels["users"][mayor.me()] = 100.into();
            let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room));
            governor.put(&path, &levels).await?.ok()?;
            wait_for("the mayor's power on the city's server", FEDERATION_DEADLINE, || async {
                let l = mayor.state(&room, "m.room.power_levels", "").await;
                Ok(match l {
                    Ok(l) if l["users"][mayor.me()] == 100 => Ok(()),
                    other => Err(format!("{other:?}")),
                })
            })
            .await?;
            // The city has no policy of its own and lets it through; the prefecture refuses it.
            let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.encryption/", enc(&room));
            mayor.put(&path, &json!({ "algorithm": "m.megolm.v1.aes-sha2" })).await?.ok()?;
            let after = mayor.send_text_ok(&room, "after", "sent after the encryption event").await?;
            wait_for("the mayor's next message at the prefecture", FEDERATION_DEADLINE, || async {
                let r = governor.event(&room, &after).await?;
                Ok(if r.status == 200 { Ok(()) } else { Err(r.text) })
            })
            .await?;
            let encryption = governor.get(&path).await?;
            ensure!(encryption.status == 404, "the prefecture took the forbidden encryption: {}", encryption.text);

            // Shut down (blocked, members kept): no server may bring anyone in.
            let other = governor.create_room(&json!({ "preset": "public_chat" })).await?;
            governor
                .post(&format!("{V1}/rooms/{}/shutdown", enc(&other)), &json!({ "evacuate": false, "block": true }))
                .await?
                .ok()?;
            let refused = join_via(&mayor, &other, &pref).await?;
            ensure!(refused.status == 403, "a join into a shut-down room got {}: {}", refused.status, refused.text);
            Ok(())
        }
        .await,
    );
    Ok(())
}

/// The state sections of a sync's joined room, as `(type, state_key)`.
pub(crate) fn synced_state(sync: &Value, room: &str) -> Vec<(String, String)> {
    let room = &sync["rooms"]["join"][room];
    room["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(room["timeline"]["events"].as_array().into_iter().flatten())
        .filter(|e| e.get("state_key").is_some())
        .map(|e| (e["type"].as_str().unwrap_or("").to_owned(), e["state_key"].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// A mayor invited from another server, who then joins through it, gets the room's state
/// in `/sync`: initial, incremental across the join, and lazy-loading. It used to be only
/// the mayor's own invite and join (the invite came before this server knew the room's
/// state), so an encrypted room looked unencrypted and nameless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_join_brings_the_room_state_to_sync() -> anyhow::Result<()> {
    let (pref, city) = pair().await?;
    let governor = pref.api("governor", PASSWORD).await?;
    let mayor = city.api("mayor", PASSWORD).await?;
    or_panic(
        async {
            let room = governor
                .create_room(&json!({
                    "name": "Governor and mayors", "topic": "budget 2027", "preset": "private_chat",
                    "invite": [mayor.me()],
                    "initial_state": [{ "type": "m.room.encryption", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }],
                }))
                .await?;
            let before = next_batch(&mayor.sync(None, 0).await?)?;
            wait_invite(&mayor, &room).await?;
            join_via(&mayor, &room, &pref).await?.ok()?;
            joiner_sees_the_room(&mayor, &room, &before, "Governor and mayors", governor.me()).await?;
            // The context of an event sent after the join, on the joining server.
            let said = governor.send_text_ok(&room, "ctx-1", "welcome").await?;
            let context_path = format!("/_matrix/client/v3/rooms/{}/context/{}", enc(&room), enc(&said));
            let context = wait_for("the governor's message on the mayor's server", FEDERATION_DEADLINE, || async {
                let res = mayor.get(&context_path).await?;
                Ok(if res.status == 200 { Ok(res.ok()?) } else { Err(format!("{} {}", res.status, res.body)) })
            })
            .await?;
            let context_state: Vec<String> =
                context["state"].as_array().map(|a| a.iter().map(|e| str_of(&e["type"])).collect()).unwrap_or_default();
            ensure!(context_state.iter().any(|t| t == "m.room.encryption"), "/context state: {context}");
            // Server-side search on the joining server finds the message received after the join.
            let search = json!({ "search_categories": { "room_events": { "search_term": "welcome" } } });
            let found = mayor.post("/_matrix/client/v3/search", &search).await?.ok()?;
            let hits = found["search_categories"]["room_events"]["results"].as_array().cloned().unwrap_or_default();
            ensure!(hits.iter().any(|h| h["result"]["event_id"] == said.as_str()), "/search on the mayor's server: {found}");
            // The state the join brought is held as outliers on the joining server: asking
            // for one by /event, /context or /relations is answered, never a 500.
            let state = mayor.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room))).await?.ok()?;
            for event in state.as_array().into_iter().flatten() {
                let id = enc(event["event_id"].as_str().unwrap_or_default());
                for path in [
                    format!("/_matrix/client/v3/rooms/{}/event/{id}", enc(&room)),
                    format!("/_matrix/client/v3/rooms/{}/context/{id}", enc(&room)),
                    format!("/_matrix/client/v1/rooms/{}/relations/{id}", enc(&room)),
                ] {
                    let res = mayor.get(&path).await?;
                    ensure!([200, 403, 404].contains(&res.status), "GET {path}: {} {}", res.status, res.text);
                }
            }
            Ok(())
        }
        .await,
    );
    Ok(())
}

/// What a user who joined `room` through another server must see of it on their own
/// server, right after the join: in classic `/sync` (initial, incremental from `before`,
/// lazy-loading) the create, encryption, name, topic, power levels, join rules and both
/// members; in sliding sync the name, joined count and required state; in `/members` both.
/// The room has a name, a topic and encryption, and two members: `resident` and the joiner.
pub(crate) async fn joiner_sees_the_room(
    joiner: &kairan_tests::Api,
    room: &str,
    before: &str,
    name: &str,
    resident: &str,
) -> anyhow::Result<()> {
    let wanted = [
        ("m.room.create", ""),
        ("m.room.encryption", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.member", resident),
        ("m.room.member", joiner.me()),
    ];
    let lazy = enc(&json!({ "room": { "state": { "lazy_load_members": true } } }).to_string());
    for (what, path) in [
        ("initial sync", "/_matrix/client/v3/sync".to_owned()),
        ("incremental sync across the join", format!("/_matrix/client/v3/sync?since={}", enc(before))),
        ("lazy-loading initial sync", format!("/_matrix/client/v3/sync?filter={lazy}")),
        ("lazy-loading incremental sync", format!("/_matrix/client/v3/sync?filter={lazy}&since={}", enc(before))),
    ] {
        let sync = joiner.get(&path).await?.ok()?;
        let state = synced_state(&sync, room);
        for (t, k) in wanted {
            // A lazy-loading client gets the members of the timeline's senders (here the joiner).
            if what.starts_with("lazy") && t == "m.room.member" && k != joiner.me() {
                continue;
            }
            ensure!(
                state.iter().any(|(st, sk)| st == t && sk == k),
                "{what}: no {t}/{k} for the joined room; state and timeline hold {state:?}"
            );
        }
    }
    // Sliding sync, as a room list asks: name, encryption, members.
    let body = json!({ "lists": { "all": { "ranges": [[0, 10]], "timeline_limit": 1,
        "required_state": [["m.room.name", ""], ["m.room.topic", ""], ["m.room.encryption", ""],
            ["m.room.member", "*"]] } } });
    let sliding = joiner.post("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", &body).await?.ok()?;
    let entry = &sliding["rooms"][room];
    ensure!(entry["name"] == name, "sliding sync room name: {entry}");
    ensure!(entry["joined_count"] == 2, "sliding sync joined_count: {entry}");
    let required: Vec<(String, String)> = entry["required_state"]
        .as_array()
        .map(|a| a.iter().map(|e| (str_of(&e["type"]), str_of(&e["state_key"]))).collect())
        .unwrap_or_default();
    for (t, k) in [("m.room.encryption", ""), ("m.room.topic", ""), ("m.room.member", resident)] {
        ensure!(required.iter().any(|(rt, rk)| rt == t && rk == k), "sliding sync lacks {t}/{k}: {entry}");
    }
    let members = joiner.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(room))).await?.ok()?;
    ensure!(members["chunk"].as_array().is_some_and(|c| c.len() == 2), "/members: {members}");
    Ok(())
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// A mayor who left a room and re-joins it later (through the prefecture, with no member
/// left on their own server in between) sees the room as it is now, not as it was when
/// they left: the topic changed while they were away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_brings_the_state_of_now() -> anyhow::Result<()> {
    let (pref, city) = pair().await?;
    let governor = pref.api("governor", PASSWORD).await?;
    let mayor = city.api("mayor", PASSWORD).await?;
    or_panic(
        async {
            let room = governor
                .create_room(&json!({
                    "name": "Governor and mayors", "topic": "budget 2027", "preset": "public_chat",
                    "initial_state": [{ "type": "m.room.encryption", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }],
                }))
                .await?;
            join_via(&mayor, &room, &pref).await?.ok()?;
            mayor.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), &json!({})).await?.ok()?;
            wait_membership(&governor, &room, mayor.me(), "leave").await?;
            crate::support::put_state(&governor, &room, "m.room.topic", "", &json!({ "topic": "budget 2028" }))
                .await?
                .ok()?;
            let before = next_batch(&mayor.sync(None, 0).await?)?;
            join_via(&mayor, &room, &pref).await?.ok().context("the re-join")?;
            joiner_sees_the_room(&mayor, &room, &before, "Governor and mayors", governor.me()).await?;
            let topic = mayor.state(&room, "m.room.topic", "").await?;
            ensure!(topic["topic"] == "budget 2028", "the mayor's server shows the old topic: {topic}");
            let sync = mayor.sync(None, 0).await?;
            let topics: Vec<&Value> = sync["rooms"]["join"][&room]["state"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(sync["rooms"]["join"][&room]["timeline"]["events"].as_array().into_iter().flatten())
                .filter(|e| e["type"] == "m.room.topic")
                .collect();
            ensure!(
                topics.last().is_some_and(|t| t["content"]["topic"] == "budget 2028"),
                "the re-joined room's sync shows the topic {topics:?}"
            );
            // A client asking for the state at the end of the timeline (MSC4222, spec v1.16)
            // gets it under `state_after`, the new topic in it, and no `state`.
            let sync = mayor.get("/_matrix/client/v3/sync?use_state_after=true").await?.ok()?;
            let joined = &sync["rooms"]["join"][&room];
            ensure!(joined.get("state").is_none(), "use_state_after: a `state` section too: {joined}");
            let after = joined["state_after"]["events"].as_array().cloned().unwrap_or_default();
            ensure!(
                after.iter().any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "budget 2028"),
                "state_after of the re-joined room: {joined}"
            );
            Ok(())
        }
        .await,
    );
    Ok(())
}

/// kairan countersigns an invite to one of its users (invite v2) over the event as the
/// room version redacts it, as every signature on an event is checked: an invite carrying
/// a display name in its content had a signature over the full event, which no server
/// could verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_are_countersigned_over_the_redacted_event() -> anyhow::Result<()> {
    use kairan_tests::hostile::{HostileServer, invented_ids};
    use ruma::{
        CanonicalJsonObject, RoomVersionId,
        signatures::{PublicKeyMap, verify_json},
    };

    let kairan = federating_server().await?;
    kairan.create_users(&["alice"]).await?;
    let remote = HostileServer::start().await?;
    let rules = RoomVersionId::V11.rules().context("v11 rules")?;
    let room_id = format!("!invited-room:{}", remote.server_name());
    let invite = remote.sign(
        &rules,
        json!({
            "type": "m.room.member", "state_key": kairan.user_id("alice"), "sender": remote.user_id("mallory"),
            "room_id": room_id, "origin_server_ts": 1_700_000_000_000u64, "depth": 4,
            "content": { "membership": "invite", "displayname": "Alice of the prefecture" },
            "prev_events": invented_ids(1), "auth_events": invented_ids(3),
        }),
    )?;
    let path = format!("/_matrix/federation/v2/invite/{}/{}", enc(&room_id), enc(&invite.event_id));
    let body = json!({ "room_version": "11", "event": invite.pdu, "invite_room_state": [] });
    let answer = remote.request(&kairan, ruma::exports::http::Method::PUT, &path, Some(&body)).await?.ok()?;
    let signed: CanonicalJsonObject = serde_json::from_value(answer["event"].clone())?;
    // verify_json checks every server's signature: the inviting server's and kairan's.
    let kairan_key = kairan_tests::server_signing_key(&kairan, None)?;
    let entry = |key: &ruma::signatures::Ed25519KeyPair| {
        let public = ruma::serde::Base64::<ruma::serde::base64::Standard>::new(key.public_key().to_vec());
        [(format!("ed25519:{}", key.version()), public)].into()
    };
    let keys = PublicKeyMap::from([
        (kairan.server_name().to_owned(), entry(&kairan_key)),
        (remote.server_name().to_owned(), entry(remote.key())),
    ]);
    let redacted = ruma::canonical_json::redact(signed, &rules.redaction, None)?;
    verify_json(&keys, &redacted).context("kairan's signature on the invite, over the redacted event")?;
    Ok(())
}
