//! Joins across servers with kairan as the server in the room: restricted rooms (members of
//! an allowed room get in through a local user who vouches for them) and joins from
//! several servers at the same moment (every server learns every join without waiting
//! for a later event).

use std::{path::Path, time::Duration};

use anyhow::{Context as _, ensure};
use kairan_tests::{Api, PASSWORD, TestServer, assert_matrix_error, enc, synapse::SynapseServer, test_ca};
use serde_json::{Value, json};

use crate::federation::{FEDERATION_DEADLINE, federating_server, or_panic, wait_for, wait_membership};

/// `POST /join/{room}?via={server}` (and `server_name`, which Synapse also reads).
async fn join_via(api: &Api, room: &str, server: &TestServer) -> anyhow::Result<kairan_tests::Response> {
    let server = enc(server.server_name());
    api.post(&format!("/_matrix/client/v3/join/{}?via={server}&server_name={server}", enc(room)), &json!({})).await
}

/// A room whose join rule lets in the members of `allowed`.
async fn restricted_room(owner: &Api, version: &str, allowed: &str) -> anyhow::Result<String> {
    owner
        .create_room(&json!({
            "room_version": version,
            "preset": "private_chat",
            "name": format!("Restricted v{version}"),
            "initial_state": [{
                "type": "m.room.join_rules",
                "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": allowed }] },
            }],
        }))
        .await
}

/// The PDU of `event_id` as `server` stored it (its SQLite database, read beside the
/// running process): client-format events carry no signatures.
async fn stored_pdu(server: &TestServer, event_id: &str) -> anyhow::Result<Value> {
    use sqlx::{Connection as _, Row as _};
    let path = server.dir().join("data").join("kairan.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening {}", Path::new(&path).display()))?;
    let row = sqlx::query("SELECT pdu_json FROM events WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&mut conn)
        .await
        .with_context(|| format!("{event_id} on {}", server.server_name()))?;
    let json: String = row.try_get("pdu_json")?;
    conn.close().await.ok();
    Ok(serde_json::from_str(&json)?)
}

/// A restricted room on the prefecture's server (allowing the members of a space there):
/// a mayor of another server who is in the space joins (the prefecture vouches for the
/// join and countersigns it; the mayor's server keeps the countersigned copy); a clerk of
/// that server who is not in it is refused with `M_FORBIDDEN`; the same for the
/// prefecture's own users. Room versions 10, 11 and 12.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_room_admits_members_of_the_allowed_room() -> anyhow::Result<()> {
    let (pref, city) = tokio::try_join!(federating_server(), federating_server())?;
    pref.create_user("governor", PASSWORD, true).await?;
    pref.create_users(&["deputy", "intern"]).await?;
    city.create_users(&["mayor", "clerk"]).await?;
    let governor = pref.api("governor", PASSWORD).await?;
    let deputy = pref.api("deputy", PASSWORD).await?;
    let intern = pref.api("intern", PASSWORD).await?;
    let mayor = city.api("mayor", PASSWORD).await?;
    let clerk = city.api("clerk", PASSWORD).await?;
    or_panic(
        async {
            for version in ["10", "11", "12"] {
                let space = governor
                    .create_room(&json!({ "room_version": version, "preset": "public_chat", "name": "Prefecture" }))
                    .await?;
                let room = restricted_room(&governor, version, &space).await?;
                join_via(&mayor, &space, &pref).await?.ok().context("the mayor joins the space")?;
                deputy.join(&space).await?.ok().context("the deputy joins the space")?;

                let joined = join_via(&mayor, &room, &pref).await?;
                ensure!(joined.status == 200, "v{version}: the mayor's join: {} {}", joined.status, joined.text);
                wait_membership(&governor, &room, mayor.me(), "join").await?;
                let member = governor.state(&room, "m.room.member", mayor.me()).await?;
                ensure!(
                    member["join_authorised_via_users_server"] == governor.me(),
                    "v{version}: the join was not vouched for by the governor: {member}"
                );
                // The mayor's server holds the copy the prefecture countersigned: the one
                // a third server will ask it for.
                let event_id = mayor
                    .get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)))
                    .await?
                    .ok()?
                    .as_array()
                    .and_then(|s| s.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == mayor.me()))
                    .and_then(|e| e["event_id"].as_str().map(str::to_owned))
                    .context("the mayor's server has no join of the mayor")?;
                let pdu = stored_pdu(&city, &event_id).await?;
                ensure!(
                    pdu["signatures"][pref.server_name()].is_object(),
                    "v{version}: the mayor's server kept a join without the prefecture's signature: {pdu}"
                );
                // The room works both ways after such a join.
                let hello = governor.send_text_ok(&room, &format!("hello-{version}"), "welcome").await?;
                wait_for("the governor's message on the city's server", FEDERATION_DEADLINE, || async {
                    let r = mayor.event(&room, &hello).await?;
                    Ok(if r.status == 200 { Ok(()) } else { Err(r.text) })
                })
                .await?;

                let refused = join_via(&clerk, &room, &pref).await?;
                assert_matrix_error(&refused, 403, "M_FORBIDDEN")
                    .with_context(|| format!("v{version}: the clerk, who is not in the space"))?;

                let local = deputy.join(&room).await?;
                ensure!(local.status == 200, "v{version}: the deputy's join: {} {}", local.status, local.text);
                let member = governor.state(&room, "m.room.member", deputy.me()).await?;
                ensure!(member["membership"] == "join", "v{version}: the deputy's membership: {member}");
                let refused = intern.join(&room).await?;
                assert_matrix_error(&refused, 403, "M_FORBIDDEN")
                    .with_context(|| format!("v{version}: the intern, who is not in the space"))?;
            }
            anyhow::Ok(())
        }
        .await,
    );
    Ok(())
}

/// `GET make_join` for `user` as `from` (signed with its key) asks `to`.
async fn make_join(
    from: &TestServer,
    to: &TestServer,
    room: &str,
    user: &str,
) -> anyhow::Result<kairan_tests::Response> {
    let key = kairan_tests::server_signing_key(from, None)?;
    let client = reqwest::Client::builder()
        .tls_certs_only([test_ca().reqwest_certificate()?])
        .timeout(Duration::from_secs(30))
        .build()?;
    let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11&ver=12", enc(room), enc(user));
    let signer = Some((from.server_name(), to.server_name(), &key));
    kairan_tests::federation_request(&client, to, ruma::exports::http::Method::GET, &path, None, signer).await
}

/// A join the prefecture cannot vouch for is refused with the errcodes the spec gives
/// make_join, which tell the joining server to try elsewhere: `M_UNABLE_TO_AUTHORISE_JOIN`
/// when the allowed room is one it is not in (it cannot know who is), and
/// `M_UNABLE_TO_GRANT_JOIN` when none of its users may invite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_joins_the_server_cannot_vouch_for() -> anyhow::Result<()> {
    let (pref, city) = tokio::try_join!(federating_server(), federating_server())?;
    pref.create_user("governor", PASSWORD, true).await?;
    city.create_users(&["mayor"]).await?;
    let governor = pref.api("governor", PASSWORD).await?;
    let mayor = city.api("mayor", PASSWORD).await?;
    or_panic(
        async {
            let city_hall = mayor.create_room(&json!({ "preset": "public_chat", "name": "City hall" })).await?;
            let elsewhere = restricted_room(&governor, "11", &city_hall).await?;
            let answer = make_join(&city, &pref, &elsewhere, mayor.me()).await?;
            assert_matrix_error(&answer, 400, "M_UNABLE_TO_AUTHORISE_JOIN").context("allowed room unknown here")?;

            let space = governor.create_room(&json!({ "preset": "public_chat", "name": "Prefecture" })).await?;
            join_via(&mayor, &space, &pref).await?.ok().context("the mayor joins the space")?;
            let no_inviter = governor
                .create_room(&json!({
                    "room_version": "11",
                    "preset": "private_chat",
                    "power_level_content_override": { "invite": 101 },
                    "initial_state": [{
                        "type": "m.room.join_rules",
                        "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] },
                    }],
                }))
                .await?;
            let answer = make_join(&city, &pref, &no_inviter, mayor.me()).await?;
            assert_matrix_error(&answer, 400, "M_UNABLE_TO_GRANT_JOIN").context("no one here may invite")?;
            anyhow::Ok(())
        }
        .await,
    );
    Ok(())
}

/// The same with Synapse as the joining server: a Synapse user in the space joins the
/// restricted kairan room (Synapse signs kairan's template and takes back the countersigned
/// join), one who is not is refused with `M_FORBIDDEN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_user_joins_restricted_kairan_room() -> anyhow::Result<()> {
    let (pref, synapse) = tokio::try_join!(federating_server(), SynapseServer::start())?;
    pref.create_user("governor", PASSWORD, true).await?;
    let governor = pref.api("governor", PASSWORD).await?;
    let mayor = synapse.register("mayor", PASSWORD).await?;
    let clerk = synapse.register("clerk", PASSWORD).await?;
    or_panic(
        async {
            let space = governor
                .create_room(&json!({ "room_version": "10", "preset": "public_chat", "name": "Prefecture" }))
                .await?;
            let room = restricted_room(&governor, "10", &space).await?;
            join_via(&mayor, &space, &pref).await?.ok().context("the Synapse mayor joins the space")?;
            wait_membership(&governor, &space, mayor.me(), "join").await?;

            let joined = join_via(&mayor, &room, &pref).await?;
            ensure!(joined.status == 200, "the Synapse mayor's join: {} {}", joined.status, joined.text);
            wait_membership(&governor, &room, mayor.me(), "join").await?;
            let member = governor.state(&room, "m.room.member", mayor.me()).await?;
            ensure!(
                member["join_authorised_via_users_server"] == governor.me(),
                "the join was not vouched for by the governor: {member}"
            );
            let hello = governor.send_text_ok(&room, "hello-synapse", "welcome").await?;
            wait_for("the governor's message on Synapse", FEDERATION_DEADLINE, || async {
                let r = mayor.event(&room, &hello).await?;
                Ok(if r.status == 200 { Ok(()) } else { Err(r.text) })
            })
            .await?;

            let refused = join_via(&clerk, &room, &pref).await?;
            assert_matrix_error(&refused, 403, "M_FORBIDDEN").context("the Synapse clerk, who is not in the space")?;
            anyhow::Ok(())
        }
        .await,
    );
    Ok(())
}

/// Three municipal servers join a room on the prefecture's server at the same moment.
/// Without anyone sending anything after, each sees every mayor joined, in
/// `/joined_members` and in its initial `/sync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_reach_every_server() -> anyhow::Result<()> {
    concurrent_joins(false).await
}

/// The same for an invited room, as the prefecture's rooms are: each mayor's server holds
/// its invite from before it joined, without the room's state, and the joins of the
/// others build on those invites. Then every mayor also receives what the governor says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_of_invited_mayors_reach_every_server() -> anyhow::Result<()> {
    concurrent_joins(true).await
}

async fn concurrent_joins(invited: bool) -> anyhow::Result<()> {
    let (pref, a, b, c) =
        tokio::try_join!(federating_server(), federating_server(), federating_server(), federating_server())?;
    pref.create_user("governor", PASSWORD, true).await?;
    let cities = [&a, &b, &c];
    for city in cities {
        city.create_users(&["mayor"]).await?;
    }
    let governor = pref.api("governor", PASSWORD).await?;
    let mut mayors = Vec::new();
    for city in cities {
        mayors.push(city.api("mayor", PASSWORD).await?);
    }
    or_panic(
        async {
            let preset = if invited { "private_chat" } else { "public_chat" };
            let room = governor.create_room(&json!({ "preset": preset, "name": "Mayors" })).await?;
            if invited {
                for mayor in &mayors {
                    let invite = json!({ "user_id": mayor.me() });
                    governor.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), &invite).await?.ok()?;
                }
                for mayor in &mayors {
                    crate::federation::wait_invite(mayor, &room).await?;
                }
            }
            let (ja, jb, jc) = tokio::join!(
                join_via(&mayors[0], &room, &pref),
                join_via(&mayors[1], &room, &pref),
                join_via(&mayors[2], &room, &pref)
            );
            for joined in [ja?, jb?, jc?] {
                ensure!(joined.status == 200, "a mayor's join: {} {}", joined.status, joined.text);
            }
            let mut everyone: Vec<String> = mayors.iter().map(|m| m.me().to_owned()).collect();
            everyone.push(governor.me().to_owned());
            everyone.sort();
            for api in mayors.iter().chain([&governor]) {
                wait_for(&format!("every join in {}'s joined_members", api.me()), FEDERATION_DEADLINE, || async {
                    let mut members = api.joined_members(&room).await?;
                    members.sort();
                    Ok(if members == everyone { Ok(()) } else { Err(format!("{members:?}")) })
                })
                .await?;
                let sync = api.sync(None, 0).await?;
                let joined = &sync["rooms"]["join"][&room];
                let events = joined["state"]["events"]
                    .as_array()
                    .into_iter()
                    .chain(joined["timeline"]["events"].as_array())
                    .flatten();
                let mut seen: Vec<String> = events
                    .filter(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "join")
                    .filter_map(|e| e["state_key"].as_str().map(str::to_owned))
                    .collect();
                seen.sort();
                seen.dedup();
                ensure!(seen == everyone, "{}'s initial sync shows the joins of {seen:?}: {joined}", api.me());
            }
            let said = governor.send_text_ok(&room, "after-joins", "Welcome, all of you").await?;
            for mayor in &mayors {
                wait_for(
                    &format!("the governor's welcome on {}'s server", mayor.me()),
                    FEDERATION_DEADLINE,
                    || async {
                        let seen = mayor.event(&room, &said).await?;
                        Ok(if seen.status == 200 { Ok(()) } else { Err(format!("{} {}", seen.status, seen.text)) })
                    },
                )
                .await?;
            }
            anyhow::Ok(())
        }
        .await,
    );
    Ok(())
}
