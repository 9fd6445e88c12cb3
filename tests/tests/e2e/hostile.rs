//! A hostile homeserver against a real kairan ([`kairan_tests::hostile`]): a remote server
//! whose user (Mallory, power 0) joined a kairan room the governor (Alice) created and the
//! administrators marked official, and who then sends what no honest server would —
//! forged signatures, events in others' names, redactions and state changes without
//! power, references to auth chains that never end, huge, slow and malformed answers,
//! events of other rooms, replays.
//!
//! Each scenario checks what the issue asks of kairan: it refuses the event; the room's
//! state (what Alice reads from `/state`, contents included) is unchanged; no state event
//! and no message of Alice's is redacted; and Alice can still send to the room in under a
//! second — measured while the hostile server is being slow or endless, not after.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use kairan_tests::{
    Api, PASSWORD, Response, TestServer, enc,
    hostile::{
        Answer, EVENT_AUTH_PATH, EVENT_PATH, FETCH_PATHS, HostileServer, JoinedRoom, MISSING_EVENTS_PATH,
        STATE_IDS_PATH, STATE_PATH, SignedPdu, invented_ids,
    },
};
use ruma::signatures::Ed25519KeyPair;
use serde_json::{Value, json};

use crate::{
    federation::{FEDERATION_DEADLINE, federating_server, or_panic, wait_membership},
    support::{paginate, put_state},
};

/// How long a local user's send to the room may take while a remote server misbehaves.
const LOCAL_SEND_LIMIT: Duration = Duration::from_secs(1);

/// The fetch requests (events, auth chains, state, gaps) one received PDU may cost at
/// most. A PDU names at most 10 auth events and 20 prev events (the format rules), so an
/// honest sender's PDU needs far fewer; this bound only rules out following references
/// without end.
const FETCHES_PER_PDU: usize = 50;

/// The body bytes kairan may take of an answer that never ends, to a request for one
/// event: a PDU is at most 64 KiB; the rest is room for the socket buffers the hostile
/// server fills before kairan stops reading (some 4 MiB on loopback).
const MAX_EVENT_ANSWER_BYTES: u64 = 8 * 1024 * 1024;

/// The same for a request for a page of events or a room's state, which can legitimately
/// take several MiB (a room of thousands of members), but not without end.
const MAX_PAGE_ANSWER_BYTES: u64 = 32 * 1024 * 1024;

/// How long an attacked transaction may keep kairan busy before the test says it never ends.
const ATTACK_PATIENCE: Duration = Duration::from_secs(30);

/// The official policy the administrators give the room.
const POLICY: &str = "jp.kairan.room.policy";

/// A room's state as `/state` shows it: `(type, state_key)` → `(event_id, content)`.
type Snapshot = BTreeMap<(String, String), (String, Value)>;

async fn snapshot(api: &Api, room_id: &str) -> anyhow::Result<Snapshot> {
    let state = api.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room_id))).await?.ok()?;
    let events = state.as_array().with_context(|| format!("/state is not an array: {state}"))?;
    Ok(events
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            ((s("type"), s("state_key")), (s("event_id"), e["content"].clone()))
        })
        .collect())
}

/// What differs between two snapshots, for a failure message.
fn differences(before: &Snapshot, now: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (key, was) in before {
        match now.get(key) {
            None => out.push(format!("{key:?} is gone (was {was:?})")),
            Some(is) if is != was => out.push(format!("{key:?} became {is:?} (was {was:?})")),
            Some(_) => {}
        }
    }
    for (key, is) in now {
        if !before.contains_key(key) {
            out.push(format!("{key:?} appeared: {is:?}"));
        }
    }
    out
}

/// The bytes served to each fetch request, for a failure message.
fn fetch_bytes(hostile: &HostileServer) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let fetches = hostile.requests().into_iter().filter(|r| FETCH_PATHS.iter().any(|p| r.path.starts_with(p)));
    fetches.map(|r| format!("{} {:.1} MiB", r.path, mib(r.bytes_served()))).collect::<Vec<_>>().join(", ")
}

/// The fetch requests the hostile server received, by path prefix, for a failure message.
fn fetch_counts(hostile: &HostileServer) -> String {
    FETCH_PATHS.iter().map(|p| format!("{p}: {}", hostile.count(p))).collect::<Vec<_>>().join(", ")
}

/// A kairan server, the hostile server, and the room between them.
struct Scene {
    kairan: TestServer,
    hostile: HostileServer,
    /// The room's creator (power 100), on kairan.
    alice: Api,
    room_id: String,
    /// The room as the hostile server knows it from its join.
    room: JoinedRoom,
    /// The hostile server's user, joined with power 0.
    mallory: String,
    /// Alice's message, which the hostile server tries to have redacted.
    target: String,
    /// The room's state before the attack.
    before: Snapshot,
    txn: AtomicU64,
}

impl Scene {
    /// Kairan and the hostile server; Alice's public room in `version`, with a name, the
    /// administrators' official policy and one message; Mallory joined over federation.
    async fn start(version: &str) -> anyhow::Result<Self> {
        let (kairan, hostile) = tokio::try_join!(federating_server(), HostileServer::start())?;
        let (alice, room_id, room, target) = or_panic(Self::set_up(&kairan, &hostile, version).await);
        let before = or_panic(snapshot(&alice, &room_id).await);
        let mallory = room.user_id.clone();
        Ok(Self { kairan, hostile, alice, room_id, room, mallory, target, before, txn: AtomicU64::new(0) })
    }

    async fn set_up(
        kairan: &TestServer,
        hostile: &HostileServer,
        version: &str,
    ) -> anyhow::Result<(Api, String, JoinedRoom, String)> {
        kairan.create_users(&["alice"]).await?;
        kairan.create_user("admin", PASSWORD, true).await?;
        let alice = kairan.api("alice", PASSWORD).await?;
        let admin = kairan.api("admin", PASSWORD).await?;
        let room_id = alice
            .create_room(&json!({ "preset": "public_chat", "name": "Prefectural council", "room_version": version }))
            .await?;
        let policy = json!({ "official": true, "retention": "5y", "on_expiry": "transfer", "department": "総務課" });
        admin
            .put(&format!("/_kairan/admin/v1/rooms/{}/policy", enc(&room_id)), &policy)
            .await?
            .ok()
            .context("marking the room official")?;
        let target = alice.send_text_ok(&room_id, "target", "The budget for 2026 is approved").await?;
        let room = hostile.join(kairan, &room_id, "mallory").await?;
        ensure!(room.state_id(POLICY, "").is_some(), "the policy is not in the state Mallory joined with");
        wait_membership(&alice, &room_id, &room.user_id, "join").await?;
        Ok((alice, room_id, room, target))
    }

    /// Takes the room's current state as the one that must not change.
    async fn rebase(&mut self) -> anyhow::Result<()> {
        self.before = snapshot(&self.alice, &self.room_id).await?;
        Ok(())
    }

    fn sign(&self, template: Value) -> anyhow::Result<SignedPdu> {
        self.hostile.sign(&self.room.rules, template)
    }

    fn txn_id(&self, label: &str) -> String {
        format!("{label}-{}", self.txn.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends the PDUs in one transaction from the hostile server; requires a 200.
    async fn send(&self, pdus: &[&SignedPdu]) -> anyhow::Result<Response> {
        let pdus: Vec<Value> = pdus.iter().map(|p| p.pdu.clone()).collect();
        let r = self.hostile.send_transaction(&self.kairan, &self.txn_id("txn"), &pdus).await?;
        ensure!(r.status == 200, "the transaction itself is well formed and signed: {} {}", r.status, r.text);
        Ok(r)
    }

    /// A PDU that a user of the hostile server sends with invented auth and prev events,
    /// so that kairan must fetch from the hostile server to check it.
    fn dangling(&self, label: &str, auth: usize) -> anyhow::Result<SignedPdu> {
        let mut template = self.room.message(&self.mallory, label);
        let mut auth_events = self.room.auth_events(&self.mallory);
        auth_events.extend(invented_ids(auth));
        template["auth_events"] = json!(auth_events);
        template["prev_events"] = json!([self.room.join_event_id.clone(), invented_ids(1)[0].clone()]);
        template["depth"] = json!(self.room.join_depth + 10);
        self.sign(template)
    }

    async fn absent(&self, event_id: &str, what: &str) -> anyhow::Result<()> {
        let seen = self.alice.event(&self.room_id, event_id).await?;
        ensure!(seen.status == 404, "{what} ({event_id}) is in the room: {} {}", seen.status, seen.text);
        Ok(())
    }

    /// Checks an event of the room is not redacted and, if given, has this content.
    async fn unredacted(&self, event_id: &str, content: Option<&Value>, what: &str) -> anyhow::Result<()> {
        let seen = self.alice.event(&self.room_id, event_id).await?.ok().with_context(|| what.to_owned())?;
        ensure!(seen["unsigned"]["redacted_because"].is_null(), "{what} was redacted: {seen}");
        if let Some(content) = content {
            ensure!(&seen["content"] == content, "{what} has content {} instead of {content}", seen["content"]);
        }
        Ok(())
    }

    /// Alice sends a message to the room, which must be done within `limit`.
    async fn local_send_within(&self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let txn = self.txn_id("local");
        match tokio::time::timeout(limit, self.alice.send_text(&self.room_id, &txn, "Still here")).await {
            Ok(r) => {
                let r = r?;
                ensure!(r.status == 200, "Alice's send to the room: {} {}", r.status, r.text);
                Ok(())
            }
            Err(_) => bail!(
                "Alice's send to the room did not complete within {limit:?} (still waiting after {:?})",
                started.elapsed()
            ),
        }
    }

    /// What must hold after any attack: the state as before (contents included), no
    /// state event nor Alice's message redacted, and a local send in under a second.
    async fn assert_intact(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        let now = snapshot(&self.alice, &self.room_id).await?;
        let changed = differences(&self.before, &now);
        if !changed.is_empty() {
            problems.push(format!("the room's state changed: {}", changed.join("; ")));
        }
        let body = json!({ "msgtype": "m.text", "body": "The budget for 2026 is approved" });
        if let Err(e) = self.unredacted(&self.target, Some(&body), "Alice's message").await {
            problems.push(format!("{e:#}"));
        }
        for ((kind, key), (id, content)) in &self.before {
            if let Err(e) = self.unredacted(id, Some(content), &format!("the state event {kind}/{key}")).await {
                problems.push(format!("{e:#}"));
            }
        }
        if let Err(e) = self.local_send_within(LOCAL_SEND_LIMIT).await {
            problems.push(format!("{e:#}"));
        }
        ensure!(problems.is_empty(), "{}", problems.join("\n"));
        Ok(())
    }

    /// Runs `attack` (a request to kairan that makes it fetch from the hostile server).
    /// As soon as kairan fetches (or the attack is answered), Alice sends to the room,
    /// which must take under a second while the attack goes on. Meanwhile `over_limit`
    /// is watched: what it returns fails the test at once, so an unbounded attack does
    /// not keep it waiting. Returns kairan's answer, or `None` if it had not answered
    /// within `patience` of the first fetch.
    async fn under_attack<F>(
        &self,
        attack: F,
        patience: Duration,
        over_limit: impl Fn(&HostileServer) -> Option<String>,
    ) -> anyhow::Result<Option<Response>>
    where
        F: Future<Output = anyhow::Result<Response>>,
    {
        tokio::pin!(attack);
        let fetched = self.hostile.fetches();
        let mut answered = None;
        tokio::select! {
            r = &mut attack => answered = Some(r?),
            r = self.hostile.wait_for_fetches(fetched + 1, FEDERATION_DEADLINE) => r?,
        }
        let local = self.local_send_within(LOCAL_SEND_LIMIT);
        let rest = async move {
            if let Some(r) = answered {
                if let Some(why) = over_limit(&self.hostile) {
                    bail!("{why}");
                }
                return Ok(Some(r));
            }
            let deadline = Instant::now() + patience;
            loop {
                if let Some(why) = over_limit(&self.hostile) {
                    bail!("{why}");
                }
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                tokio::select! {
                    r = &mut attack => {
                        let r = r?;
                        if let Some(why) = over_limit(&self.hostile) {
                            bail!("{why}");
                        }
                        return Ok(Some(r));
                    }
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        };
        match tokio::join!(local, rest) {
            (Ok(()), rest) => rest,
            (Err(local), Ok(_)) => Err(local),
            (Err(local), Err(rest)) => Err(anyhow!("{local:#}\nand: {rest:#}")),
        }
    }
}

/// Events whose signatures do not verify are refused: signed with a key the server never
/// published (under its key's ID, and under another ID), or not signed at all; one whose
/// content was changed after signing is at most kept redacted. The same event genuinely
/// signed is accepted, so the refusals are the signatures' doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_signatures_are_refused() -> anyhow::Result<()> {
    let scene = Scene::start("12").await?;
    or_panic(
        async {
            let (room, m, name) = (&scene.room, scene.mallory.as_str(), scene.hostile.server_name());
            let forger = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), scene.hostile.key().version().into())?;
            let forged = HostileServer::sign_as(name, &forger, &room.rules, room.message(m, "signed by a forger"))?;
            let stranger = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "unpublished".to_owned())?;
            let unknown_key =
                HostileServer::sign_as(name, &stranger, &room.rules, room.message(m, "signed by an unknown key"))?;
            let mut unsigned = scene.sign(room.message(m, "not signed at all"))?;
            unsigned.pdu.as_object_mut().context("a PDU is an object")?.remove("signatures");
            let mut tampered = scene.sign(room.message(m, "as it was signed"))?;
            tampered.pdu["content"]["body"] = "changed after signing".into();

            scene.send(&[&forged, &unknown_key, &unsigned, &tampered]).await?;
            scene.absent(&forged.event_id, "the event signed by a forger").await?;
            scene.absent(&unknown_key.event_id, "the event signed by an unpublished key").await?;
            scene.absent(&unsigned.event_id, "the unsigned event").await?;
            let seen = scene.alice.event(&scene.room_id, &tampered.event_id).await?;
            ensure!(
                seen.status == 404 || seen.body["content"].get("body").is_none(),
                "the event changed after signing is shown with content that no one signed: {}",
                seen.text
            );

            let genuine = scene.sign(room.message(m, "genuinely signed"))?;
            scene.send(&[&genuine]).await?;
            let shown = scene.alice.event(&scene.room_id, &genuine.event_id).await?.ok()?;
            ensure!(shown["content"]["body"] == "genuinely signed", "the genuine event: {shown}");
            scene.assert_intact().await
        }
        .await,
    );
    Ok(())
}

/// Who vouches for a PDU is its sender's server, by its signature, not the server that
/// carries it: a message in the name of a local user, signed by the hostile server, is
/// refused, and so is a transaction whose body claims another origin than the one that
/// signed it. A message of another server's user, signed correctly by that server, may be
/// relayed (PDUs are self-authenticating, and kairan itself passes on the joins it
/// completes); so may that server send it itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdus_are_vouched_for_by_their_senders_server() -> anyhow::Result<()> {
    let mut scene = Scene::start("12").await?;
    let accomplice = HostileServer::start().await?;
    or_panic(
        async {
            let eve_room = accomplice.join(&scene.kairan, &scene.room_id, "eve").await?;
            let eve = eve_room.user_id.clone();
            wait_membership(&scene.alice, &scene.room_id, &eve, "join").await?;
            scene.rebase().await?;
            let room = &scene.room;

            let as_alice = scene.sign(room.message(scene.alice.me(), "I resign as chair"))?;
            let relayed = accomplice.sign(&eve_room.rules, eve_room.message(&eve, "relayed by a server not mine"))?;
            scene.send(&[&as_alice, &relayed]).await?;
            scene.absent(&as_alice.event_id, "a message in Alice's name signed by the hostile server").await?;
            let shown = scene.alice.event(&scene.room_id, &relayed.event_id).await?.ok()?;
            ensure!(shown["content"]["body"] == "relayed by a server not mine", "Eve's relayed message: {shown}");

            let claimed = scene.sign(room.message(&scene.mallory, "in a transaction claiming another origin"))?;
            let body = json!({
                "origin": accomplice.server_name(),
                "origin_server_ts": 1_800_000_000_000u64,
                "pdus": [claimed.pdu],
                "edus": [],
            });
            let r = scene.hostile.send_transaction_body(&scene.kairan, "claims-another-origin", &body).await?;
            ensure!((400..500).contains(&r.status), "a transaction claiming another origin: {} {}", r.status, r.text);
            scene.absent(&claimed.event_id, "the event of a transaction claiming another origin").await?;

            let direct = accomplice.sign(&eve_room.rules, eve_room.message(&eve, "sent by my own server"))?;
            accomplice.send_transaction(&scene.kairan, "direct", std::slice::from_ref(&direct.pdu)).await?.ok()?;
            let shown = scene.alice.event(&scene.room_id, &direct.event_id).await?.ok()?;
            ensure!(shown["content"]["body"] == "sent by my own server", "Eve's own message: {shown}");
            scene.assert_intact().await
        }
        .await,
    );
    Ok(())
}

/// Room versions 11 and 12 carry `redacts` in the content; v12 names the create event by
/// the room ID. Both must hold back a powerless redaction.
mod powerless_redactions_are_not_applied {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v11() -> anyhow::Result<()> {
        super::powerless_redactions_are_not_applied("11").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v12() -> anyhow::Result<()> {
        super::powerless_redactions_are_not_applied("12").await
    }
}

/// Mallory (power 0, below the room's `redact` level) redacts Alice's message, the power
/// levels, the official policy and the room's name: none of it is applied (since room v3
/// the auth rules leave this check to the receiving server). Mallory redacting a message
/// of Mallory's own is applied, so the redactions did reach the room.
async fn powerless_redactions_are_not_applied(version: &str) -> anyhow::Result<()> {
    let scene = Scene::start(version).await?;
    or_panic(
        async {
            let (room, m) = (&scene.room, scene.mallory.as_str());
            let own = scene.sign(room.message(m, "a message I will take back"))?;
            let mut take_back = room.redaction(m, &own.event_id);
            take_back["prev_events"] = json!([own.event_id]);
            take_back["depth"] = json!(room.join_depth + 2);
            let take_back = scene.sign(take_back)?;
            let state = |kind: &str| room.state_id(kind, "").map(str::to_owned).with_context(|| format!("no {kind}"));
            let targets = [scene.target.clone(), state("m.room.power_levels")?, state(POLICY)?, state("m.room.name")?];
            let redactions =
                targets.iter().map(|t| scene.sign(room.redaction(m, t))).collect::<anyhow::Result<Vec<_>>>()?;
            let mut pdus = vec![&own, &take_back];
            pdus.extend(redactions.iter());
            scene.send(&pdus).await?;

            let own_now = scene.alice.event(&scene.room_id, &own.event_id).await?.ok()?;
            ensure!(
                own_now["unsigned"]["redacted_because"].is_object() && own_now["content"].get("body").is_none(),
                "Mallory's redaction of Mallory's own message was not applied: {own_now}"
            );
            scene.assert_intact().await
        }
        .await,
    );
    Ok(())
}

/// Mallory (power 0) renames the room, raises Mallory's own power, sets a server ACL that
/// shuts kairan out, changes the join rules and history visibility, rewrites the official
/// policy and kicks Alice: all rejected. So is a rename whose auth events name a power
/// levels event Mallory made up (served by the hostile server when kairan asks for it).
/// Mallory changing Mallory's own display name is accepted, so state from that server
/// does get in when the rules allow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_from_a_powerless_sender_is_rejected() -> anyhow::Result<()> {
    let mut scene = Scene::start("12").await?;
    or_panic(
        async {
            let m = scene.mallory.clone();
            let mut profile = scene.room.event(
                &m,
                "m.room.member",
                Some(&m),
                json!({ "membership": "join", "displayname": "Mallory" }),
            );
            let mut auth = scene.room.auth_events(&m);
            auth.extend(scene.room.state_id("m.room.join_rules", "").map(str::to_owned));
            profile["auth_events"] = json!(auth);
            let profile = scene.sign(profile)?;
            scene.send(&[&profile]).await?;
            let member = scene.alice.state(&scene.room_id, "m.room.member", &m).await?;
            ensure!(member["displayname"] == "Mallory", "Mallory's own display name change: {member}");
            scene.rebase().await?;

            let room = &scene.room;
            let pl = room.state_id("m.room.power_levels", "").context("no power levels")?.to_owned();
            let mut raised = scene.before[&("m.room.power_levels".to_owned(), String::new())].1.clone();
            raised["users"][&m] = json!(100);
            let acl = json!({ "allow": [scene.hostile.server_name()], "deny": [], "allow_ip_literals": false });
            let attempts = [
                ("m.room.name", "", json!({ "name": "Taken over" })),
                ("m.room.power_levels", "", raised.clone()),
                ("m.room.server_acl", "", acl),
                ("m.room.join_rules", "", json!({ "join_rule": "invite" })),
                ("m.room.history_visibility", "", json!({ "history_visibility": "world_readable" })),
                (POLICY, "", json!({ "official": false })),
                ("m.room.member", scene.alice.me(), json!({ "membership": "leave", "reason": "kicked" })),
            ];
            let mut signed = Vec::new();
            for (kind, key, content) in attempts {
                signed.push((kind, scene.sign(room.event(&m, kind, Some(key), content))?));
            }
            scene.send(&signed.iter().map(|(_, p)| p).collect::<Vec<_>>()).await?;
            for (kind, pdu) in &signed {
                scene.absent(&pdu.event_id, &format!("Mallory's {kind}")).await?;
            }

            let fake_levels = scene.sign(room.event(&m, "m.room.power_levels", Some(""), raised))?;
            scene.hostile.serve(&fake_levels);
            let mut rename =
                room.event(&m, "m.room.name", Some(""), json!({ "name": "Taken over by a made-up authority" }));
            let auth: Vec<String> = room
                .auth_events(&m)
                .into_iter()
                .map(|id| if id == pl { fake_levels.event_id.clone() } else { id })
                .collect();
            rename["auth_events"] = json!(auth);
            let rename = scene.sign(rename)?;
            scene.send(&[&rename]).await?;
            scene.absent(&rename.event_id, "the rename on a made-up authority").await?;
            scene.absent(&fake_levels.event_id, "the made-up power levels").await?;
            scene.assert_intact().await
        }
        .await,
    );
    Ok(())
}

/// Every fetch kairan makes from the hostile server is answered with newly invented
/// events that name newly invented auth and prev events. Two such PDUs cost kairan at
/// most [`FETCHES_PER_PDU`] fetches each; sent again in a new transaction, they cost
/// nothing kairan already failed to get (no event is asked for twice); both are
/// refused; and Alice's send goes through in under a second while kairan is at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_auth_chains_are_bounded() -> anyhow::Result<()> {
    let scene = Scene::start("12").await?;
    or_panic(
        async {
            scene.hostile.script_fetches(scene.hostile.endless_chain(&scene.room, 4));
            let attacks = [scene.dangling("look at my ancestry", 3)?, scene.dangling("and at mine", 3)?];
            let pdus: Vec<Value> = attacks.iter().map(|a| a.pdu.clone()).collect();
            let limit = attacks.len() * FETCHES_PER_PDU;
            let over_limit = |h: &HostileServer| {
                (h.fetches() > limit).then(|| {
                    format!(
                        "kairan made {} fetch requests for {} PDUs (at most {limit}): {}",
                        h.fetches(),
                        attacks.len(),
                        fetch_counts(h)
                    )
                })
            };

            let first = scene.hostile.send_transaction(&scene.kairan, "endless-1", &pdus);
            let answered = scene.under_attack(first, ATTACK_PATIENCE, over_limit).await?;
            let answered = answered.with_context(|| {
                format!(
                    "kairan was still at the endless chain after {ATTACK_PATIENCE:?}: {}",
                    fetch_counts(&scene.hostile)
                )
            })?;
            ensure!(answered.status == 200, "the transaction: {} {}", answered.status, answered.text);

            let replay = scene.hostile.send_transaction(&scene.kairan, "endless-2", &pdus);
            let answered = scene.under_attack(replay, ATTACK_PATIENCE, over_limit).await?;
            ensure!(answered.is_some(), "kairan was still at the replayed endless chain after {ATTACK_PATIENCE:?}");
            let twice: Vec<(String, usize)> =
                scene.hostile.per_path().into_iter().filter(|(p, n)| p.starts_with(EVENT_PATH) && *n > 1).collect();
            ensure!(twice.is_empty(), "events fetched again after failing once: {twice:?}");

            // How close kairan comes to the bound, for whoever tunes its budget.
            eprintln!("fetches for the endless chains: {}", fetch_counts(&scene.hostile));
            for attack in &attacks {
                scene.absent(&attack.event_id, "a PDU whose auth chain never ends").await?;
            }
            scene.assert_intact().await
        }
        .await,
    );
    Ok(())
}

/// Every fetch is answered only after 20 s. Kairan waits for the network without holding
/// the room: Alice's sends complete in under a second while it waits, and the PDU that
/// made it fetch is not in the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_do_not_hold_up_the_room() -> anyhow::Result<()> {
    let scene = Scene::start("12").await?;
    or_panic(
        async {
            scene.hostile.script_fetches(Answer::slow(Duration::from_secs(20), Answer::not_found()));
            let attack = scene.dangling("wait for me", 2)?;
            let sending = scene.hostile.send_transaction(&scene.kairan, "slow-1", std::slice::from_ref(&attack.pdu));
            // The second send (in assert_intact) comes while kairan is still waiting too.
            let answered = scene.under_attack(sending, Duration::from_secs(1), |_| None).await?;
            if let Some(r) = answered {
                ensure!(r.status == 200, "the transaction: {} {}", r.status, r.text);
            }
            scene.absent(&attack.event_id, "a PDU whose auth events the server is slow to give").await?;
            scene.assert_intact().await
        }
        .await,
    );
    Ok(())
}

/// Every fetch is answered with a body of 256 MiB that never becomes a PDU. Kairan stops
/// reading each long before its end ([`MAX_EVENT_ANSWER_BYTES`] for an event,
/// [`MAX_PAGE_ANSWER_BYTES`] for a page), refuses the PDU, and serves Alice in under a
/// second meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_answers_are_cut_short() -> anyhow::Result<()> {
    let scene = Scene::start("12").await?;
    or_panic(
        async {
            scene.hostile.script_fetches(Answer::huge(256 * 1024 * 1024));
            let attack = scene.dangling("my auth events are large", 3)?;
            let over_limit = |h: &HostileServer| {
                let limit = |path: &str| {
                    if path.starts_with(EVENT_PATH) { MAX_EVENT_ANSWER_BYTES } else { MAX_PAGE_ANSWER_BYTES }
                };
                if h.requests().iter().any(|r| r.bytes_served() > limit(&r.path)) {
                    Some(format!(
                        "kairan read more of a huge answer than the answer to that request can be (one event: {} MiB, \
                         a page: {} MiB): {}",
                        MAX_EVENT_ANSWER_BYTES >> 20,
                        MAX_PAGE_ANSWER_BYTES >> 20,
                        fetch_bytes(h)
                    ))
                } else if h.fetches() > FETCHES_PER_PDU {
                    Some(format!("kairan made {} fetch requests for one PDU: {}", h.fetches(), fetch_counts(h)))
                } else {
                    None
                }
            };
            let sending = scene.hostile.send_transaction(&scene.kairan, "huge-1", std::slice::from_ref(&attack.pdu));
            let answered = scene.under_attack(sending, ATTACK_PATIENCE, over_limit).await?;
            let answered = answered.with_context(|| {
                format!(
                    "kairan was still reading huge answers after {ATTACK_PATIENCE:?} ({} MiB)",
                    scene.hostile.fetch_bytes_served() >> 20
                )
            })?;
            ensure!(answered.status == 200, "the transaction: {} {}", answered.status, answered.text);
            scene.absent(&attack.event_id, "a PDU whose auth events come in huge answers").await?;
            scene.assert_intact().await
        }
        .await,
    );
    Ok(())
}

/// Fetches are answered with truncated JSON, HTML, JSON of the wrong shape, nesting
/// beyond any recursion limit, invalid UTF-8, empty bodies and 500s; the transaction is
/// still answered 200 and the PDU refused. Then malformed PDUs (not objects, fields of the
/// wrong type or missing, over 64 KiB) in a transaction: a 200, and nothing of
/// them in the room; a transaction of the wrong shape: a 4xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_and_pdus_are_refused() -> anyhow::Result<()> {
    let scene = Scene::start("12").await?;
    or_panic(
        async {
            scene.hostile.script_fetches(Answer::cycle(Answer::malformed()));
            let attack = scene.dangling("my auth events are garbled", 3)?;
            let over_limit = |h: &HostileServer| {
                (h.fetches() > FETCHES_PER_PDU)
                    .then(|| format!("kairan made {} fetch requests for one PDU: {}", h.fetches(), fetch_counts(h)))
            };
            let sending = scene.hostile.send_transaction(&scene.kairan, "garbled-1", std::slice::from_ref(&attack.pdu));
            let answered = scene.under_attack(sending, ATTACK_PATIENCE, over_limit).await?;
            let answered = answered.with_context(|| format!("no answer within {ATTACK_PATIENCE:?}"))?;
            ensure!(answered.status == 200, "the transaction: {} {}", answered.status, answered.text);
            scene.absent(&attack.event_id, "a PDU whose auth events come garbled").await?;

            let (room, m) = (&scene.room, scene.mallory.as_str());
            let mut depth_as_text = room.message(m, "depth as text");
            depth_as_text["depth"] = "one".into();
            let mut no_sender = room.message(m, "no sender");
            no_sender.as_object_mut().context("template")?.remove("sender");
            let mut content_as_text = room.message(m, "content as text");
            content_as_text["content"] = "hello".into();
            let oversized = room.message(m, &"x".repeat(70 * 1024));
            let pdus = [
                json!("not an object"),
                json!(42),
                json!(null),
                json!({}),
                scene.sign(depth_as_text)?.pdu,
                scene.sign(no_sender)?.pdu,
                content_as_text,
                oversized,
            ];
            let r = scene.hostile.send_transaction(&scene.kairan, "garbled-2", &pdus).await?;
            ensure!(r.status == 200, "a transaction of malformed PDUs: {} {}", r.status, r.text);
            let shapeless = json!({ "origin": scene.hostile.server_name(), "origin_server_ts": 1, "pdus": "none" });
            let r = scene.hostile.send_transaction_body(&scene.kairan, "garbled-3", &shapeless).await?;
            ensure!((400..500).contains(&r.status), "a transaction of the wrong shape: {} {}", r.status, r.text);

            let events = paginate(&scene.alice, &scene.room_id, "b", 50).await?;
            let theirs: Vec<&Value> =
                events.iter().filter(|e| e["sender"] == m && e["type"] != "m.room.member").collect();
            ensure!(theirs.is_empty(), "malformed events of Mallory's in the timeline: {theirs:?}");
            scene.assert_intact().await
        }
        .await,
    );
    Ok(())
}

/// Mallory is also a moderator of a second room of Alice's. What the hostile server gives
/// for this room comes from that one: `get_missing_events`, `/state`, `/state_ids` and
/// `/event_auth` answer with the other room's events, and a rename here names the other
/// room's power levels (where Mallory may rename) as its auth event. None of it is taken:
/// the other room's event is in neither room, the rename is refused, and neither room's
/// state changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_other_rooms_are_refused() -> anyhow::Result<()> {
    let scene = Scene::start("12").await?;
    or_panic(
        async {
            let (alice, hostile, m) = (&scene.alice, &scene.hostile, scene.mallory.as_str());
            let other_id = alice.create_room(&json!({ "preset": "public_chat", "name": "Municipal liaison" })).await?;
            let other = hostile.join(&scene.kairan, &other_id, "mallory").await?;
            wait_membership(alice, &other_id, m, "join").await?;
            let mut levels = alice.state(&other_id, "m.room.power_levels", "").await?;
            levels["users"][m] = json!(100);
            let other_pl = put_state(alice, &other_id, "m.room.power_levels", "", &levels).await?.ok()?["event_id"]
                .as_str()
                .context("the power levels' event ID")?
                .to_owned();
            hostile.wait_for_pdu(&other_pl, FEDERATION_DEADLINE).await?;
            let other_before = snapshot(alice, &other_id).await?;

            let stray = hostile.sign(&other.rules, other.message(m, "a message of the other room"))?;
            hostile.serve(&stray);
            let other_state: Vec<Value> = other.state.values().filter_map(|id| other.pdus.get(id)).cloned().collect();
            let other_ids: Vec<&String> = other.state.values().collect();
            hostile.script(None, MISSING_EVENTS_PATH, Answer::json(json!({ "events": [stray.pdu] })));
            hostile.script(None, STATE_IDS_PATH, Answer::json(json!({ "pdu_ids": other_ids, "auth_chain_ids": [] })));
            hostile.script(None, STATE_PATH, Answer::json(json!({ "pdus": other_state, "auth_chain": [] })));
            hostile.script(None, EVENT_AUTH_PATH, Answer::json(json!({ "auth_chain": other_state })));

            let room = &scene.room;
            let mut after_gap = room.message(m, "after a gap");
            after_gap["prev_events"] = json!(invented_ids(1));
            after_gap["depth"] = json!(room.join_depth + 5);
            let after_gap = scene.sign(after_gap)?;
            let pl = room.state_id("m.room.power_levels", "").context("no power levels")?.to_owned();
            let mut rename =
                room.event(m, "m.room.name", Some(""), json!({ "name": "Renamed on another room's authority" }));
            let auth: Vec<String> =
                room.auth_events(m).into_iter().map(|id| if id == pl { other_pl.clone() } else { id }).collect();
            rename["auth_events"] = json!(auth);
            let rename = scene.sign(rename)?;
            scene.send(&[&after_gap, &rename]).await?;

            scene.absent(&stray.event_id, "the other room's event").await?;
            let in_other = alice.event(&other_id, &stray.event_id).await?;
            ensure!(
                in_other.status == 404,
                "the other room's event, given for this room, is in the other room: {}",
                in_other.text
            );
            scene.absent(&rename.event_id, "a rename authorised by another room's power levels").await?;
            let changed = differences(&other_before, &snapshot(alice, &other_id).await?);
            ensure!(changed.is_empty(), "the other room's state changed: {}", changed.join("; "));
            scene.assert_intact().await
        }
        .await,
    );
    Ok(())
}

/// A transaction ID used again, with another PDU inside, is acknowledged but not
/// processed; a message Alice redacted, sent again in a new transaction, stays redacted
/// and once in the timeline; the room's old name event (signed by kairan itself) and
/// Mallory's join sent again change nothing: the room keeps its new name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_transactions_and_pdus_change_nothing() -> anyhow::Result<()> {
    let mut scene = Scene::start("12").await?;
    or_panic(
        async {
            let m = scene.mallory.clone();
            let said = scene.sign(scene.room.message(&m, "I said this once"))?;
            let r =
                scene.hostile.send_transaction(&scene.kairan, "once", std::slice::from_ref(&said.pdu)).await?.ok()?;
            ensure!(r["pdus"][&said.event_id].get("error").is_none(), "Mallory's message was refused: {r}");
            let redact = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&scene.room_id), enc(&said.event_id));
            scene.alice.put(&redact, &json!({ "reason": "off topic" })).await?.ok()?;
            let renamed = json!({ "name": "Prefectural council (renamed)" });
            put_state(&scene.alice, &scene.room_id, "m.room.name", "", &renamed).await?.ok()?;
            scene.rebase().await?;

            let sneaked = scene.sign(scene.room.message(&m, "sneaked into a replayed transaction"))?;
            let r = scene.hostile.send_transaction(&scene.kairan, "once", std::slice::from_ref(&sneaked.pdu)).await?;
            ensure!(r.status == 200, "a transaction ID used again: {} {}", r.status, r.text);
            scene.absent(&sneaked.event_id, "a PDU in a replayed transaction").await?;

            scene.hostile.send_transaction(&scene.kairan, "again", std::slice::from_ref(&said.pdu)).await?.ok()?;
            let now = scene.alice.event(&scene.room_id, &said.event_id).await?.ok()?;
            ensure!(
                now["unsigned"]["redacted_because"].is_object() && now["content"].get("body").is_none(),
                "the redacted message, sent again, is no longer redacted: {now}"
            );
            let events = paginate(&scene.alice, &scene.room_id, "b", 50).await?;
            let copies = events.iter().filter(|e| e["event_id"] == said.event_id.as_str()).count();
            ensure!(copies == 1, "the message sent twice is {copies} times in the timeline");

            let room = &scene.room;
            let old_name = room.state_id("m.room.name", "").and_then(|id| room.pdus.get(id)).context("old name")?;
            let join = room.pdus.get(&room.join_event_id).context("the join")?;
            let replays = [old_name.clone(), join.clone()];
            scene.hostile.send_transaction(&scene.kairan, "old-state", &replays).await?.ok()?;
            scene.assert_intact().await
        }
        .await,
    );
    Ok(())
}

/// A sender that gives up waiting for its transaction (its timeout) does not undo it: the
/// transaction's work goes on and its event reaches the room without being sent again.
/// The event names a parent kairan must first fetch, which the remote gives slowly; the
/// sender hangs up after one second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_the_sender_stops_waiting_for_is_still_taken_in() -> anyhow::Result<()> {
    let scene = Scene::start("12").await?;
    or_panic(
        async {
            let parent = scene.sign(scene.room.message(&scene.mallory, "the parent, fetched slowly"))?;
            let mut child = scene.room.message(&scene.mallory, "the child, sent in the transaction");
            child["prev_events"] = json!([parent.event_id]);
            child["depth"] = json!(scene.room.join_depth + 2);
            let child = scene.sign(child)?;
            scene.hostile.serve(&parent);
            let answer = json!({ "events": [parent.pdu] });
            scene.hostile.script(None, MISSING_EVENTS_PATH, Answer::slow(Duration::from_secs(3), Answer::json(answer)));
            let sending = scene.hostile.send_transaction(&scene.kairan, "hung-up-1", std::slice::from_ref(&child.pdu));
            ensure!(
                tokio::time::timeout(Duration::from_secs(1), sending).await.is_err(),
                "kairan answered before fetching the parent; the test needs it to be slow"
            );
            crate::federation::wait_for("the child in the room", FEDERATION_DEADLINE, || async {
                let seen = scene.alice.event(&scene.room_id, &child.event_id).await?;
                Ok(if seen.status == 200 { Ok(()) } else { Err(format!("{} {}", seen.status, seen.text)) })
            })
            .await?;
            let parent_seen = scene.alice.event(&scene.room_id, &parent.event_id).await?;
            ensure!(parent_seen.status == 200, "the parent: {} {}", parent_seen.status, parent_seen.text);
            Ok(())
        }
        .await,
    );
    Ok(())
}

/// A fork, honestly made: Alice changes the topic and talks on while Mallory's server, not
/// having seen any of it, renames Mallory on top of Mallory's join. The last event kairan
/// takes in is then Mallory's, and the state after it still has the old topic; the room's
/// state is the resolution of both branches. A client syncing now, with a timeline too short
/// to hold either change, must be told both: by `/sync` and by sliding sync, as by `/state`.
#[tokio::test]
async fn a_forks_resolved_state_reaches_sync() -> anyhow::Result<()> {
    let scene = Scene::start("12").await?;
    or_panic(
        async {
            let topic = json!({ "topic": "The 2027 budget" });
            put_state(&scene.alice, &scene.room_id, "m.room.topic", "", &topic).await?.ok()?;
            for i in 0..3 {
                scene.alice.send_text_ok(&scene.room_id, &format!("talk-{i}"), "on the new topic").await?;
            }
            let content = json!({ "membership": "join", "displayname": "Mallory, renamed" });
            let mut rename = scene.room.event(&scene.mallory, "m.room.member", Some(&scene.mallory), content);
            let join_rules = scene.room.state_id("m.room.join_rules", "").context("join rules")?;
            rename["auth_events"].as_array_mut().context("auth events")?.push(join_rules.into());
            let renamed = scene.sign(rename)?;
            scene.send(&[&renamed]).await?;
            crate::federation::wait_for("the rename in the room", FEDERATION_DEADLINE, || async {
                let seen = scene.alice.event(&scene.room_id, &renamed.event_id).await?;
                Ok(if seen.status == 200 { Ok(()) } else { Err(format!("{} {}", seen.status, seen.text)) })
            })
            .await?;
            let current = scene.alice.state(&scene.room_id, "m.room.topic", "").await?;
            ensure!(current["topic"] == "The 2027 budget", "/state has the topic {current}");

            // The timeline holds only the rename: everything else comes from the state section.
            let filter = json!({ "room": { "timeline": { "limit": 1 } } }).to_string();
            let sync =
                scene.alice.get(&format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc(&filter))).await?.ok()?;
            let joined = &sync["rooms"]["join"][&scene.room_id];
            let timeline: Vec<&Value> = joined["timeline"]["events"].as_array().into_iter().flatten().collect();
            ensure!(
                timeline.len() == 1 && timeline[0]["event_id"] == renamed.event_id.as_str(),
                "the timeline is the rename alone: {timeline:?}"
            );
            let topics = topics_in(&joined["state"]["events"]);
            ensure!(topics == [&json!("The 2027 budget")], "/sync's state section has the topics {topics:?}: {joined}");

            let body = json!({ "lists": { "all": {
                "ranges": [[0, 10]], "timeline_limit": 1, "required_state": [["m.room.topic", ""]],
            } } });
            let path = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
            let sliding = scene.alice.post(path, &body).await?.ok()?;
            let room = &sliding["rooms"][&scene.room_id];
            let topics = topics_in(&room["required_state"]);
            ensure!(
                topics == [&json!("The 2027 budget")],
                "sliding sync's required_state has the topics {topics:?}: {room}"
            );
            Ok(())
        }
        .await,
    );
    Ok(())
}

/// The topics among a list of state events.
fn topics_in(events: &Value) -> Vec<&Value> {
    events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room.topic")
        .map(|e| &e["content"]["topic"])
        .collect()
}
