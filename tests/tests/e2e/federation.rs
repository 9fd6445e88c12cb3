//! Federation between kairan servers: a prefecture and two municipalities, each a real
//! `kairan-homeserver` process with its own server name (`localhost:{port}`), signing key,
//! database and TLS federation listener (the test CA, allowlist `*`).
//!
//! Everything is driven through the Client-Server API of each server, as the governor's
//! and the mayors' clients would; what the servers say to each other is only seen through
//! its effects. One check reads below that: the order of the room DAG. Client-format
//! events carry no `prev_events`, so [`ensure_dag_order`] reads each event's PDU, as the
//! server stored it, from the server's SQLite database (read-only, beside the running
//! process).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    future::Future,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use kairan_tests::{Api, PASSWORD, ServerOptions, TestServer, enc};
use serde_json::{Value, json};

use crate::support::{ensure_unique, ids, next_batch, paginate, put_state};

/// How long anything may take to cross from one server to another. Generous: on 2 cores
/// with other tests running, a transaction usually arrives in well under a second, and a
/// server coming back from a kill gets its backlog on the first retry (at most 2 s in the
/// test configuration).
pub(crate) const FEDERATION_DEADLINE: Duration = Duration::from_secs(45);
/// How often the waiting loops poll.
const POLL: Duration = Duration::from_millis(200);

/// Polls `check` until it returns `Ok(Ok(value))`; `Ok(Err(why))` means "not yet" and
/// `why` describes what was seen, for the failure message at the deadline. `Err` ends the
/// wait at once.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, String>>>,
{
    let until = Instant::now() + deadline;
    loop {
        match check().await? {
            Ok(value) => return Ok(value),
            Err(why) if Instant::now() >= until => bail!("{what}: not the case within {deadline:?}; last seen: {why}"),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Turns a failure into a panic while the servers are still alive: their `Drop` prints
/// their logs only when the test is panicking, and an `Err` returned from the test would
/// drop them silently first.
pub(crate) fn or_panic<T>(result: anyhow::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{e:?}"),
    }
}

/// A kairan server with federation on (TLS listener, test CA, allowlist `*`).
pub(crate) async fn federating_server() -> anyhow::Result<TestServer> {
    TestServer::start(ServerOptions::default().federation()).await
}

/// The event IDs of a room's timeline on the caller's server, oldest first, as
/// `/messages` pages them backwards from the end (the server's own stream order).
pub(crate) async fn timeline(api: &Api, room_id: &str) -> anyhow::Result<Vec<String>> {
    let events = paginate(api, room_id, "b", 100).await?;
    ensure_unique(&events)?;
    let mut ids = ids(&events);
    ids.reverse();
    Ok(ids)
}

/// Waits until `user`'s membership in `room_id`, as the caller's server sees it, is
/// `membership`.
pub(crate) async fn wait_membership(api: &Api, room_id: &str, user: &str, membership: &str) -> anyhow::Result<()> {
    let server = api_base_name(api);
    wait_for(&format!("{user} {membership} in {room_id} as seen by {server}"), FEDERATION_DEADLINE, || async {
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room_id), enc(user));
        let response = api.get(&path).await?;
        Ok(match response.body["membership"].as_str() {
            Some(m) if response.status == 200 && m == membership => Ok(()),
            _ => Err(format!("{} {}", response.status, response.text)),
        })
    })
    .await
}

/// Waits until the caller's `/sync` lists an invite to `room_id`; returns that room's
/// entry of `rooms.invite`. Syncs incrementally: Synapse answers a repeated initial sync
/// from a cache for a while, so polling without `since` would never see anything new.
pub(crate) async fn wait_invite(api: &Api, room_id: &str) -> anyhow::Result<Value> {
    let until = Instant::now() + FEDERATION_DEADLINE;
    let mut since: Option<String> = None;
    loop {
        let sync = api.sync(since.as_deref(), if since.is_some() { 1000 } else { 0 }).await?;
        let invite = &sync["rooms"]["invite"][room_id];
        if invite.is_object() {
            return Ok(invite.clone());
        }
        since = Some(next_batch(&sync)?);
        if Instant::now() >= until {
            bail!("{}'s invite to {room_id}: not in sync within {FEDERATION_DEADLINE:?}", api.me());
        }
    }
}

/// Waits until every event in `wanted` is in the caller's timeline of `room_id`; returns
/// the timeline.
pub(crate) async fn wait_timeline_has(api: &Api, room_id: &str, wanted: &[String]) -> anyhow::Result<Vec<String>> {
    wait_for(&format!("{} events in {}'s timeline", wanted.len(), api.me()), FEDERATION_DEADLINE, || async {
        let ids = timeline(api, room_id).await?;
        let have: HashSet<&String> = ids.iter().collect();
        let missing: Vec<&String> = wanted.iter().filter(|id| !have.contains(id)).collect();
        Ok(if missing.is_empty() { Ok(ids) } else { Err(format!("missing {missing:?}")) })
    })
    .await
}

/// Waits until every server's current state of `room_id` is the same set; returns it.
pub(crate) async fn wait_same_state(
    apis: &[&Api],
    room_id: &str,
) -> anyhow::Result<BTreeSet<(String, String, String)>> {
    wait_for("the same room state on every server", FEDERATION_DEADLINE, || async {
        let mut states = Vec::new();
        for api in apis {
            states.push((api.me().to_owned(), api.state_set(room_id).await?));
        }
        let (first_user, first) = &states[0];
        for (user, state) in &states[1..] {
            if state != first {
                let only_first: Vec<_> = first.difference(state).collect();
                let only_other: Vec<_> = state.difference(first).collect();
                return Ok(Err(format!(
                    "only as {first_user} sees it: {only_first:?}; only as {user} sees it: {only_other:?}"
                )));
            }
        }
        Ok(Ok(first.clone()))
    })
    .await
}

/// The host part of an `Api`'s user, for messages.
fn api_base_name(api: &Api) -> String {
    api.user_id.as_deref().and_then(|u| u.split_once(':')).map(|(_, s)| s.to_owned()).unwrap_or_default()
}

/// The PDUs of a room's timeline events as this server stored them, by event ID, read
/// from its SQLite database (read-only; WAL lets it read beside the running server).
async fn stored_pdus(server: &TestServer, room_id: &str) -> anyhow::Result<HashMap<String, Value>> {
    use sqlx::{Connection as _, Row as _};
    let path = server.dir().join("data").join("kairan.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening {}", Path::new(&path).display()))?;
    let rows = sqlx::query("SELECT event_id, pdu_json FROM events WHERE room_id = $1")
        .bind(room_id)
        .fetch_all(&mut conn)
        .await
        .context("reading the events table")?;
    let mut pdus = HashMap::new();
    for row in rows {
        let id: String = row.try_get("event_id")?;
        let json: String = row.try_get("pdu_json")?;
        pdus.insert(id, serde_json::from_str(&json)?);
    }
    conn.close().await.ok();
    Ok(pdus)
}

/// Checks that one server's timeline order respects the room DAG: every `prev_event` of an
/// event in the timeline comes before it, or (for a server that joined later) is one of
/// the events the room had before `joined_after` began.
async fn ensure_dag_order(
    server: &TestServer,
    order: &[String],
    room_id: &str,
    before: &HashSet<String>,
) -> anyhow::Result<()> {
    let pdus = stored_pdus(server, room_id).await?;
    let position: HashMap<&str, usize> = order.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    for (i, id) in order.iter().enumerate() {
        let pdu =
            pdus.get(id).with_context(|| format!("{}: {id} in /messages but not stored", server.server_name()))?;
        let prevs = pdu["prev_events"].as_array().with_context(|| format!("no prev_events in {pdu}"))?;
        for prev in prevs {
            let prev = prev.as_str().with_context(|| format!("prev_event not a string in {pdu}"))?;
            match position.get(prev) {
                Some(&p) => ensure!(
                    p < i,
                    "{}: {id} (position {i}) comes before its prev_event {prev} (position {p})",
                    server.server_name()
                ),
                None => ensure!(
                    before.contains(prev),
                    "{}: prev_event {prev} of {id} is neither in the timeline nor older than the test phase",
                    server.server_name()
                ),
            }
        }
    }
    Ok(())
}

/// The prefecture and two municipalities, the governor and a mayor on each, and a room
/// the governor created and both mayors joined over federation (invited remotely).
struct ThreeServers {
    pref: TestServer,
    muni_a: TestServer,
    muni_b: TestServer,
    governor: Api,
    mayor_a: Api,
    mayor_b: Api,
    room_id: String,
}

impl ThreeServers {
    async fn start(room: Value) -> anyhow::Result<Self> {
        let (pref, muni_a, muni_b) = tokio::try_join!(federating_server(), federating_server(), federating_server())?;
        let names = [pref.server_name(), muni_a.server_name(), muni_b.server_name()];
        ensure!(
            names.iter().collect::<HashSet<_>>().len() == 3,
            "the three servers must have distinct names: {names:?}"
        );
        pref.create_users(&["governor"]).await?;
        muni_a.create_users(&["mayor"]).await?;
        muni_b.create_users(&["mayor"]).await?;
        let governor = pref.api("governor", PASSWORD).await?;
        let mayor_a = muni_a.api("mayor", PASSWORD).await?;
        let mayor_b = muni_b.api("mayor", PASSWORD).await?;
        let room_id = or_panic(Self::shared_room(room, &governor, &mayor_a, &mayor_b).await);
        Ok(Self { pref, muni_a, muni_b, governor, mayor_a, mayor_b, room_id })
    }

    /// The governor creates the room inviting both mayors; they join over federation.
    async fn shared_room(room: Value, governor: &Api, mayor_a: &Api, mayor_b: &Api) -> anyhow::Result<String> {
        let mut body = room;
        body["invite"] = json!([mayor_a.me(), mayor_b.me()]);
        let room_id = governor.create_room(&body).await?;
        for mayor in [mayor_a, mayor_b] {
            wait_invite(mayor, &room_id).await?;
            mayor.join(&room_id).await?.ok().with_context(|| format!("{} joins over federation", mayor.me()))?;
        }
        let (ga, gb) = (mayor_a.me().to_owned(), mayor_b.me().to_owned());
        for api in [governor, mayor_a, mayor_b] {
            for user in [governor.me(), &ga, &gb] {
                wait_membership(api, &room_id, user, "join").await?;
            }
        }
        Ok(room_id)
    }

    fn apis(&self) -> [&Api; 3] {
        [&self.governor, &self.mayor_a, &self.mayor_b]
    }
}

/// Sends `count` messages as `api`, one after the other; returns their event IDs.
async fn send_burst(api: &Api, room_id: &str, label: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        sent.push(api.send_text_ok(room_id, &format!("{label}-{i}"), &format!("{label} {i}")).await?);
    }
    Ok(sent)
}

/// Room versions 12 (kairan's default: creators hold power, the room ID is the create
/// event's hash) and 11 differ in how the create event is found and in state resolution.
mod three_servers_share_a_room {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v11() -> anyhow::Result<()> {
        super::three_servers_share_a_room("11").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v12() -> anyhow::Result<()> {
        super::three_servers_share_a_room("12").await
    }
}

/// The governor creates a room and invites both mayors, who join over federation; all
/// three talk; every server ends with the same events, in an order that respects the room
/// DAG, and the same state; a redaction and a name change reach every server.
async fn three_servers_share_a_room(version: &str) -> anyhow::Result<()> {
    let room = json!({ "preset": "private_chat", "name": "Governor and mayors", "room_version": version });
    let fed = ThreeServers::start(room).await?;
    or_panic(
        async {
            let room = fed.room_id.as_str();
            let [governor, mayor_a, mayor_b] = fed.apis();

            // Everything the prefecture's server had before anyone talks: the events of the room's
            // creation and the joins. A municipality's timeline starts at its mayor's join.
            let before: HashSet<String> = timeline(governor, room).await?.into_iter().collect();

            // A causal chain across servers (each speaks after seeing the previous one), then a
            // concurrent burst from all three.
            let g0 = governor.send_text_ok(room, "g-first", "Good morning, mayors").await?;
            wait_timeline_has(mayor_a, room, std::slice::from_ref(&g0)).await?;
            let a0 = mayor_a.send_text_ok(room, "a-first", "Good morning, governor").await?;
            wait_timeline_has(mayor_b, room, &[g0.clone(), a0.clone()]).await?;
            let b0 = mayor_b.send_text_ok(room, "b-first", "Good morning, all").await?;
            let (g, a, b) = tokio::try_join!(
                send_burst(governor, room, "governor", 5),
                send_burst(mayor_a, room, "mayor-a", 5),
                send_burst(mayor_b, room, "mayor-b", 5),
            )?;

            // A municipal mayor redacts one of their own messages; the governor renames the room.
            let redacted = a[2].clone();
            let redaction = mayor_a
                .put(
                    &format!("/_matrix/client/v3/rooms/{}/redact/{}/redact-1", enc(room), enc(&redacted)),
                    &json!({ "reason": "sent to the wrong room" }),
                )
                .await?
                .ok()?["event_id"]
                .as_str()
                .context("redaction without event_id")?
                .to_owned();
            let rename = put_state(governor, room, "m.room.name", "", &json!({ "name": "Disaster preparedness" }))
                .await?
                .ok()?["event_id"]
                .as_str()
                .context("name change without event_id")?
                .to_owned();

            let mut sent = vec![g0.clone(), a0.clone(), b0.clone(), redaction.clone(), rename.clone()];
            sent.extend(g.iter().chain(&a).chain(&b).cloned());
            let servers = [&fed.pref, &fed.muni_a, &fed.muni_b];
            let mut orders = Vec::new();
            for api in [governor, mayor_a, mayor_b] {
                orders.push(wait_timeline_has(api, room, &sent).await?);
            }
            // Nothing new is on its way now; take the final timelines.
            let mut after_sets = Vec::new();
            for (i, api) in [governor, mayor_a, mayor_b].into_iter().enumerate() {
                orders[i] = timeline(api, room).await?;
            }
            for order in &orders {
                let after: BTreeSet<&String> = order.iter().filter(|id| !before.contains(*id)).collect();
                after_sets.push(after);
            }
            for (i, set) in after_sets.iter().enumerate().skip(1) {
                ensure!(
                    *set == after_sets[0],
                    "events since the joins differ between {} and {}: {:?} vs {:?}",
                    servers[0].server_name(),
                    servers[i].server_name(),
                    after_sets[0],
                    set
                );
            }
            for (server, order) in servers.iter().zip(&orders) {
                ensure_dag_order(server, order, room, &before).await?;
                // The causal chain is in the same order everywhere.
                let pos = |id: &String| order.iter().position(|x| x == id);
                ensure!(
                    pos(&g0) < pos(&a0) && pos(&a0) < pos(&b0),
                    "{}: the chain governor → mayor A → mayor B is out of order",
                    server.server_name()
                );
                for burst in [&g, &a, &b] {
                    let positions: Vec<_> = burst.iter().map(pos).collect();
                    ensure!(
                        positions.is_sorted(),
                        "{}: one sender's burst out of order: {positions:?}",
                        server.server_name()
                    );
                }
            }

            // The redaction and the name change, as every server shows them.
            for api in [governor, mayor_a, mayor_b] {
                let who = api.me().to_owned();
                wait_for(&format!("{redacted} redacted as {who} sees it"), FEDERATION_DEADLINE, || async {
                    let event = api.event(room, &redacted).await?.ok()?;
                    let done = event["content"].as_object().is_some_and(|c| c.is_empty())
                        && event["unsigned"]["redacted_because"]["event_id"] == redaction.as_str();
                    Ok(if done { Ok(()) } else { Err(event.to_string()) })
                })
                .await?;
                let name = api.state(room, "m.room.name", "").await?;
                ensure!(name["name"] == "Disaster preparedness", "{who} sees the name {name}");
            }
            let state = wait_same_state(&fed.apis(), room).await?;
            ensure!(
                state.contains(&("m.room.name".to_owned(), String::new(), rename.clone())),
                "the agreed state does not hold the rename {rename}: {state:?}"
            );
            for user in [governor.me(), mayor_a.me(), mayor_b.me()] {
                ensure!(
                    state.iter().any(|(t, k, _)| t == "m.room.member" && k == user),
                    "no member event of {user} in {state:?}"
                );
            }
            anyhow::Ok(())
        }
        .await,
    );
    Ok(())
}

/// A municipal server is killed in the middle of a burst and started again. What its mayor
/// sent just before the kill reaches the others (the outbound queue is durable), the others
/// go on talking while it is down, and after the restart it receives everything. Then the
/// other way round: what a server had queued for a peer that was down survives its own
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_during_burst_catches_up() -> anyhow::Result<()> {
    let mut fed = ThreeServers::start(json!({ "preset": "private_chat", "name": "Typhoon watch" })).await?;
    or_panic(
        async {
            let room = fed.room_id.clone();
            let (governor, mayor_a, mayor_b) = (fed.governor.clone(), fed.mayor_a.clone(), fed.mayor_b.clone());

            // The governor and mayor B send a burst in the background; it keeps going through the kill.
            let killed = Arc::new(AtomicBool::new(false));
            let burst = |api: Api, label: &'static str| {
                let (room, killed) = (room.clone(), killed.clone());
                tokio::spawn(async move {
                    let mut before_kill = Vec::new();
                    let mut after_kill = Vec::new();
                    for i in 0..30 {
                        let id = api.send_text_ok(&room, &format!("{label}-{i}"), &format!("{label} {i}")).await?;
                        if killed.load(Ordering::SeqCst) {
                            after_kill.push(id)
                        } else {
                            before_kill.push(id)
                        }
                        // Keep sending until the kill happened, then 10 more.
                        if i >= 10 && after_kill.len() >= 10 {
                            break;
                        }
                        if i == 29 && after_kill.len() < 10 {
                            bail!("{label}: the kill did not happen during the burst");
                        }
                    }
                    anyhow::Ok((before_kill, after_kill))
                })
            };
            let gov_task = burst(governor.clone(), "governor");
            let mayor_b_task = burst(mayor_b.clone(), "mayor-b");

            // Mayor A sends, and the server dies right after the last answer, with its outbound
            // transactions possibly still queued.
            let from_a = send_burst(&mayor_a, &room, "mayor-a", 5).await?;
            fed.muni_a.kill();
            killed.store(true, Ordering::SeqCst);

            let (gov_before, gov_after) = gov_task.await??;
            let (b_before, b_after) = mayor_b_task.await??;
            // While A is down, the prefecture and B still talk.
            let mut while_down = gov_after.clone();
            while_down.extend(b_after.iter().cloned());
            wait_timeline_has(&mayor_b, &room, &gov_after).await.context("B hears the governor while A is down")?;
            wait_timeline_has(&governor, &room, &b_after).await.context("the governor hears B while A is down")?;
            let down_msg = governor.send_text_ok(&room, "while-down", "Mayor A, please report when back").await?;
            while_down.push(down_msg);

            fed.muni_a.restart().await.context("restarting municipality A")?;
            // A fresh login is not needed: access tokens are in the database.
            let mut everything = from_a.clone();
            everything.extend(gov_before.iter().chain(&b_before).chain(&while_down).cloned());
            for api in [&governor, &mayor_b] {
                wait_timeline_has(api, &room, &from_a)
                    .await
                    .with_context(|| format!("{} gets A's pre-kill messages", api.me()))?;
            }
            wait_timeline_has(&mayor_a, &room, &everything).await.context("A catches up after its restart")?;
            let back = mayor_a.send_text_ok(&room, "back", "Back online").await?;
            for api in [&governor, &mayor_b] {
                wait_timeline_has(api, &room, std::slice::from_ref(&back)).await?;
            }
            for api in [&governor, &mayor_a, &mayor_b] {
                let ids = timeline(api, &room).await?;
                ensure!(
                    ids.iter().filter(|id| everything.contains(id)).count() == everything.len(),
                    "{}: some message is missing or doubled",
                    api.me()
                );
            }
            wait_same_state(&[&governor, &mayor_a, &mayor_b], &room).await?;

            // The sender's restart: with B down, A sends; A's transactions to B can only
            // wait in A's queue. A is killed too, B comes back, then A: what A had queued
            // for B must survive A's restart and reach B. The prefecture sends nothing
            // meanwhile, so that B cannot learn of A's messages through it.
            fed.muni_b.kill();
            let queued = send_burst(&mayor_a, &room, "queued-for-b", 3).await?;
            wait_timeline_has(&governor, &room, &queued).await.context("the prefecture hears A while B is down")?;
            fed.muni_a.kill();
            fed.muni_b.restart().await.context("restarting municipality B")?;
            fed.muni_a.restart().await.context("restarting municipality A again")?;
            wait_timeline_has(&mayor_b, &room, &queued)
                .await
                .context("B gets what A queued for it before A's restart")?;
            wait_same_state(&[&governor, &mayor_a, &mayor_b], &room).await?;
            anyhow::Ok(())
        }
        .await,
    );
    Ok(())
}

/// Two servers change the room's state at the same moment: first both rename the room, then
/// the governor demotes mayor A while mayor A kicks mayor B. After the forks merge, every
/// server has resolved the same state (state resolution v2), whichever way it went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_state_changes_resolve_identically() -> anyhow::Result<()> {
    // Version 12 explicitly: the expected outcome below depends on its creator's power.
    let room = json!({ "preset": "private_chat", "name": "Budget committee", "room_version": "12" });
    let fed = ThreeServers::start(room).await?;
    or_panic(
        async {
            let room = fed.room_id.as_str();
            let [governor, mayor_a, mayor_b] = fed.apis();
            // A clerk of B observes from B's server, so it stays in the room even if B is kicked.
            fed.muni_b.create_users(&["clerk"]).await?;
            let clerk_b = fed.muni_b.api("clerk", PASSWORD).await?;
            governor
                .post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(room)), &json!({ "user_id": clerk_b.me() }))
                .await?
                .ok()?;
            wait_invite(&clerk_b, room).await?;
            clerk_b.join(room).await?.ok()?;
            // Mayor A becomes a room administrator, so that both sides may change anything.
            let mut levels = governor.state(room, "m.room.power_levels", "").await?;
            levels["users"][mayor_a.me()] = json!(100);
            put_state(governor, room, "m.room.power_levels", "", &levels).await?.ok()?;
            for api in [governor, mayor_a, mayor_b, &clerk_b] {
                wait_membership(api, room, clerk_b.me(), "join").await?;
            }
            wait_for("mayor A an administrator on A's server", FEDERATION_DEADLINE, || async {
                let seen = mayor_a.state(room, "m.room.power_levels", "").await?;
                Ok(if seen["users"][mayor_a.me()] == 100 { Ok(()) } else { Err(seen.to_string()) })
            })
            .await?;
            let apis = [governor, mayor_a, mayor_b, &clerk_b];

            // Round 1: both rename the room at once. Sent together, each server almost always
            // builds its event before the other's arrives; the PDUs say whether the DAG really
            // forked, and the round is repeated (at most 3 times) until it has.
            let mut forked = false;
            for attempt in 0..3 {
                let name_g = json!({ "name": format!("Budget (prefecture) {attempt}") });
                let name_a = json!({ "name": format!("Budget (municipality A) {attempt}") });
                let (by_governor, by_mayor) = tokio::join!(
                    put_state(governor, room, "m.room.name", "", &name_g),
                    put_state(mayor_a, room, "m.room.name", "", &name_a),
                );
                let names = [by_governor?.ok()?["event_id"].clone(), by_mayor?.ok()?["event_id"].clone()];
                let names: Vec<String> = names.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect();
                merge_forks(&apis, room, &format!("after-names-{attempt}")).await?;
                let state = wait_same_state(&apis, room).await?;
                let winner =
                    state.iter().find(|(t, k, _)| t == "m.room.name" && k.is_empty()).context("no m.room.name")?;
                ensure!(
                    names.contains(&winner.2),
                    "the resolved name {winner:?} is neither of the concurrent ones {names:?}"
                );
                if concurrent(&fed.pref, room, &names[0], &names[1]).await? {
                    forked = true;
                    break;
                }
            }
            ensure!(forked, "three rounds of simultaneous renames never forked the room DAG");

            // Round 2: the governor demotes mayor A while mayor A kicks mayor B.
            let mut demoted = governor.state(room, "m.room.power_levels", "").await?;
            demoted["users"][mayor_a.me()] = json!(0);
            let kick_path = format!("/_matrix/client/v3/rooms/{}/kick", enc(room));
            let kick_body = json!({ "user_id": mayor_b.me(), "reason": "out of order" });
            let (demotion, kick) = tokio::join!(
                put_state(governor, room, "m.room.power_levels", "", &demoted),
                mayor_a.post(&kick_path, &kick_body),
            );
            let demotion_event = demotion?.ok().context("the governor's demotion")?["event_id"].clone();
            // Sent at the same moment, the demotion may still reach A's server first; then A
            // refuses the kick (403), which is the other correct outcome: B stays, and the
            // servers must agree on it.
            let kick = kick?;
            let kicked = match kick.status {
                200 => true,
                403 => false,
                _ => kick.ok().map(|_| true).context("mayor A's kick")?,
            };
            // Mayor B may or may not be kicked, depending on how the fork resolves; the observers
            // are those certainly still in the room.
            let observers = [governor, mayor_a, &clerk_b];
            merge_forks(&observers, room, "after-kick").await?;
            let state = wait_same_state(&observers, room).await?;
            let levels = governor.state(room, "m.room.power_levels", "").await?;
            ensure!(levels["users"][mayor_a.me()] == 0, "the demotion must survive resolution: {levels}");
            for api in observers {
                let seen = api.state(room, "m.room.power_levels", "").await?;
                ensure!(seen == levels, "{} resolved power levels {seen}, the governor {levels}", api.me());
            }
            if !kicked {
                let b_membership = governor.state(room, "m.room.member", mayor_b.me()).await?;
                ensure!(b_membership["membership"] == "join", "A's kick was refused, yet B is {b_membership}");
                eprintln!("state resolution outcome: the demotion reached A before the kick, which A refused");
                return anyhow::Ok(());
            }
            // /kick answers `{}`: the kick is found among what A stored, A having authored it
            // (the prefecture may have soft-failed it).
            let demotion_id = demotion_event.as_str().unwrap_or_default();
            let kick_id = stored_pdus(&fed.muni_a, room)
                .await?
                .into_iter()
                .find(|(_, pdu)| {
                    pdu["type"] == "m.room.member"
                        && pdu["state_key"] == mayor_b.me()
                        && pdu["sender"] == mayor_a.me()
                        && pdu["content"]["membership"] == "leave"
                })
                .map(|(id, _)| id)
                .context("mayor A's kick is not stored on A")?;
            let forked = concurrent(&fed.muni_a, room, &kick_id, demotion_id).await?;
            let b_membership = governor.state(room, "m.room.member", mayor_b.me()).await?;
            eprintln!(
                "state resolution outcome: mayor B is {} ({} state events; the kick and the demotion {})",
                b_membership["membership"],
                state.len(),
                if forked { "forked the DAG" } else { "did not fork the DAG" }
            );
            // Which way it must go: in a fork, both are power events, ordered first by their
            // senders' power. The governor created the room (v12: unlimited power), so the
            // demotion is applied first and the kick, checked against the result, fails: B
            // stays. Without a fork, the demotion was built on top of the kick (the other
            // way, A would have refused the kick), and the kick stands.
            let expected = if forked { "join" } else { "leave" };
            ensure!(
                b_membership["membership"] == expected,
                "mayor B should be {expected} after state resolution (fork: {forked}): {b_membership}"
            );
            anyhow::Ok(())
        }
        .await,
    );
    Ok(())
}

/// Whether two events, as `server` stored them, were built without knowing each other:
/// neither lists the other among its `prev_events` (they were sent at the same moment, so
/// a later descendant is not possible).
async fn concurrent(server: &TestServer, room_id: &str, a: &str, b: &str) -> anyhow::Result<bool> {
    let pdus = stored_pdus(server, room_id).await?;
    let prevs = |id: &str| -> anyhow::Result<Vec<String>> {
        let pdu = pdus.get(id).with_context(|| format!("{id} not stored on {}", server.server_name()))?;
        Ok(serde_json::from_value(pdu["prev_events"].clone())?)
    };
    Ok(!prevs(a)?.iter().any(|p| p == b) && !prevs(b)?.iter().any(|p| p == a))
}

/// Every observer sends one message after seeing the previous observer's, so that each
/// server's forward extremities merge whatever forks it held; waits until all have all.
async fn merge_forks(apis: &[&Api], room_id: &str, label: &str) -> anyhow::Result<()> {
    let mut sent: Vec<String> = Vec::new();
    for api in apis {
        wait_timeline_has(api, room_id, &sent).await?;
        sent.push(api.send_text_ok(room_id, &format!("{label}-merge"), "noted").await?);
    }
    for api in apis {
        wait_timeline_has(api, room_id, &sent).await?;
    }
    Ok(())
}

/// A mayor finds the governor's public room by its alias on the prefecture's server and
/// joins over federation; the governor sees the mayor's display name and profile; the
/// mayor leaves. Another mayor rejects a remote invite (make_leave/send_leave).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_by_alias_leave_and_profile_over_federation() -> anyhow::Result<()> {
    let (pref, muni_a, muni_b) = tokio::try_join!(federating_server(), federating_server(), federating_server())?;
    or_panic(
        async {
            pref.create_users(&["governor"]).await?;
            muni_a.create_users(&["mayor"]).await?;
            muni_b.create_users(&["mayor"]).await?;
            let governor = pref.api("governor", PASSWORD).await?;
            let mayor_a = muni_a.api("mayor", PASSWORD).await?;
            let mayor_b = muni_b.api("mayor", PASSWORD).await?;

            mayor_a
                .put(
                    &format!("/_matrix/client/v3/profile/{}/displayname", enc(mayor_a.me())),
                    &json!({ "displayname": "Mayor of Hirosaki" }),
                )
                .await?
                .ok()?;
            let room_id = governor
                .create_room(&json!({ "preset": "public_chat", "room_alias_name": "townhall", "name": "Town hall" }))
                .await?;
            let alias = format!("#townhall:{}", pref.server_name());

            // The alias resolves through the prefecture's server (query/directory).
            let resolved = mayor_a.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias))).await?.ok()?;
            ensure!(resolved["room_id"] == room_id.as_str(), "{alias} resolved on A to {resolved}");
            let servers = resolved["servers"].as_array().context("no servers in the alias answer")?;
            ensure!(servers.iter().any(|s| s == pref.server_name()), "servers of {alias}: {resolved}");
            // An alias that does not exist is M_NOT_FOUND, from the remote server's answer.
            let missing = mayor_a
                .get(&format!("/_matrix/client/v3/directory/room/{}", enc(&format!("#nowhere:{}", pref.server_name()))))
                .await?;
            kairan_tests::assert_matrix_error(&missing, 404, "M_NOT_FOUND")?;

            let joined = mayor_a.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &json!({})).await?.ok()?;
            ensure!(joined["room_id"] == room_id.as_str(), "join by alias answered {joined}");
            wait_membership(&governor, &room_id, mayor_a.me(), "join").await?;
            wait_membership(&mayor_a, &room_id, governor.me(), "join").await?;
            let member = governor.state(&room_id, "m.room.member", mayor_a.me()).await?;
            ensure!(
                member["displayname"] == "Mayor of Hirosaki",
                "the mayor's member event on the prefecture: {member}"
            );
            let profile = governor.get(&format!("/_matrix/client/v3/profile/{}", enc(mayor_a.me()))).await?.ok()?;
            ensure!(profile["displayname"] == "Mayor of Hirosaki", "remote profile as the governor sees it: {profile}");
            let name =
                governor.get(&format!("/_matrix/client/v3/profile/{}/displayname", enc(mayor_a.me()))).await?.ok()?;
            ensure!(name["displayname"] == "Mayor of Hirosaki", "remote displayname: {name}");
            // A user the remote server does not have is M_NOT_FOUND.
            let nobody = format!("@nobody:{}", muni_a.server_name());
            let absent = governor.get(&format!("/_matrix/client/v3/profile/{}", enc(&nobody))).await?;
            kairan_tests::assert_matrix_error(&absent, 404, "M_NOT_FOUND")?;

            // A message from the mayor reaches the governor; then the mayor leaves.
            let hello = mayor_a.send_text_ok(&room_id, "hello", "Hello from Hirosaki").await?;
            wait_timeline_has(&governor, &room_id, std::slice::from_ref(&hello)).await?;
            mayor_a.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)), &json!({})).await?.ok()?;
            wait_membership(&governor, &room_id, mayor_a.me(), "leave").await?;
            let members = governor.joined_members(&room_id).await?;
            ensure!(members == vec![governor.me().to_owned()], "joined members after the leave: {members:?}");

            // Mayor B declines an invite to a room B's server is not in: a remote leave.
            governor
                .post(
                    &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)),
                    &json!({ "user_id": mayor_b.me() }),
                )
                .await?
                .ok()?;
            wait_invite(&mayor_b, &room_id).await?;
            mayor_b.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)), &json!({})).await?.ok()?;
            wait_membership(&governor, &room_id, mayor_b.me(), "leave").await?;
            wait_for("the rejected invite gone from B's sync", FEDERATION_DEADLINE, || async {
                let sync = mayor_b.sync(None, 0).await?;
                let invite = &sync["rooms"]["invite"][room_id.as_str()];
                Ok(if invite.is_null() { Ok(()) } else { Err(invite.to_string()) })
            })
            .await?;
            anyhow::Ok(())
        }
        .await,
    );
    Ok(())
}
