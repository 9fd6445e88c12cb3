//! Who may say a room is official. The policy is the administrators' word: only the
//! server's policy account sends `jp.kairan.room.policy` (the homeserver refuses it from
//! every client, room creators included), the bridge believes only that account, and an
//! archive account kicked from an official room is invited back, with an error logged.

use anyhow::{Context as _, ensure};
use kairan_tests::{assert_matrix_error, enc};
use serde_json::json;

use super::{ARCHIVE, ARCHIVE_DEADLINE, Setup, text};
use crate::federation::wait_for;

const POLICY: &str = "jp.kairan.room.policy";

fn policy_path(room: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/state/{POLICY}/", enc(room))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_administrators_make_a_room_official() -> anyhow::Result<()> {
    let mut s = Setup::start(false).await?;
    let official = json!({ "official": true, "retention": "30y", "on_expiry": "transfer" });
    // The creator of a room (power 100) cannot publish a policy in it, by a state event or
    // in createRoom's initial state, and no room is left behind by the refused request.
    let room = s.room("自作の公式ルーム").await?;
    assert_matrix_error(&s.alice.put(&policy_path(&room), &official).await?, 403, "M_FORBIDDEN")?;
    let before = s.alice.get("/_matrix/client/v3/joined_rooms").await?.ok()?["joined_rooms"].clone();
    let created = s
        .alice
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({ "invite": [ARCHIVE], "initial_state": [{ "type": POLICY, "state_key": "", "content": official }] }),
        )
        .await?;
    assert_matrix_error(&created, 403, "M_FORBIDDEN")?;
    let after = s.alice.get("/_matrix/client/v3/joined_rooms").await?.ok()?["joined_rooms"].clone();
    ensure!(before == after, "a refused createRoom left a room: {before} → {after}");

    // Through the admin API the policy account publishes it, and the bridge archives.
    s.make_official(&room, "30y", "transfer").await?;
    let state = s.alice.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room))).await?.ok()?;
    let event = state.as_array().and_then(|e| e.iter().find(|e| e["type"] == POLICY)).context("policy in state")?;
    ensure!(event["sender"] == "@_kairan_policy:localhost", "policy sent by {}", event["sender"]);
    // And the creator cannot take it back either.
    let undo = s.alice.put(&policy_path(&room), &json!({ "official": false })).await?;
    assert_matrix_error(&undo, 403, "M_FORBIDDEN")?;
    // Nobody can register or log in as the policy account.
    let login = s
        .server
        .anonymous()
        .post(
            "/_matrix/client/v3/login",
            &json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "_kairan_policy" }, "password": "" }),
        )
        .await?;
    ensure!(login.status == 403 || login.status == 400, "login as the policy account: {} {}", login.status, login.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_archive_account_is_invited_back() -> anyhow::Result<()> {
    let mut s = Setup::start(false).await?;
    let room = s.room("議会運営委員会").await?;
    s.make_official(&room, "10y", "transfer").await?;
    let kick = format!("/_matrix/client/v3/rooms/{}/kick", enc(&room));
    s.alice.post(&kick, &json!({ "user_id": ARCHIVE, "reason": "誤操作" })).await?.ok()?;
    // The server invites it back and the bridge rejoins; what is said meanwhile and after
    // is archived.
    let said = text(&s.alice, &room, "キックの後の発言").await?;
    let member = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(ARCHIVE));
    wait_for("the archive account back in the room", ARCHIVE_DEADLINE, || async {
        let m = s.alice.get(&member).await?.ok()?;
        Ok(if m["membership"] == "join" { Ok(()) } else { Err(m.to_string()) })
    })
    .await?;
    let records = s.wait_complete(&room).await?;
    ensure!(super::event_ids(&records).contains(&said), "the message after the kick is not archived");
    let logs = s.server.logs();
    ensure!(logs.contains("the archive account was removed from an official room"), "no error logged for the kick");

    // A ban is a decision a person undoes: logged, not reversed.
    let ban = format!("/_matrix/client/v3/rooms/{}/ban", enc(&room));
    s.alice.post(&ban, &json!({ "user_id": ARCHIVE })).await?.ok()?;
    wait_for("the ban logged", ARCHIVE_DEADLINE, || async {
        let n = s.server.logs().matches("the archive account was removed from an official room").count();
        Ok(if n >= 2 { Ok(()) } else { Err(format!("{n} removals logged")) })
    })
    .await?;
    ensure!(s.alice.get(&member).await?.ok()?["membership"] == "ban", "a banned archive account was brought back");
    Ok(())
}
