//! Accounts and sessions: whoami, devices (list, rename, delete behind user-interactive auth),
//! password changes, logout, logout of all sessions, and deactivation.

use anyhow::{Context as _, ensure};
use kairan_tests::{Api, Backend, PASSWORD, Response, ServerOptions, TestServer, assert_matrix_error, enc};
use serde_json::{Value, json};

use crate::support::{next_batch, sync_raw_until, sync_timeline};

const NEW_PASSWORD: &str = "a brand new password";
const NEWER_PASSWORD: &str = "and yet another password";
/// Bob's password after `password_change`.
const NEWEST_PASSWORD: &str = "the last password of this test";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

both_backends!(scenario);

async fn scenario(backend: Backend) -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().backend(backend)).await?;
    server.create_users(&["alice", "bob"]).await?;
    whoami_and_devices(&server).await.context("whoami and devices")?;
    password_change(&server).await.context("password change")?;
    logout(&server).await.context("logout")?;
    deactivation(&server).await.context("deactivation")?;
    Ok(())
}

async fn whoami_and_devices(server: &TestServer) -> anyhow::Result<()> {
    let alice_id = server.user_id("alice");
    let alice = server.api("alice", PASSWORD).await?;
    let laptop = server.api("alice", PASSWORD).await?;
    let phone = server.api("alice", PASSWORD).await?;
    let tablet = server.api("alice", PASSWORD).await?;
    let watch = server.api("alice", PASSWORD).await?;

    let whoami = alice.get(WHOAMI).await?.ok()?;
    ensure!(whoami["user_id"] == alice_id.as_str(), "whoami: {whoami}");
    ensure!(whoami["device_id"] == device(&alice), "whoami names another device than /login did: {whoami}");
    let whoami = laptop.get(WHOAMI).await?.ok()?;
    ensure!(whoami["device_id"] == device(&laptop), "whoami of the second device: {whoami}");

    // A device that made a request is listed with when and from where it was last seen
    // (written on a task of its own, so it may take a moment).
    let started = std::time::Instant::now();
    let seen = loop {
        let devices = device_list(&alice).await?;
        let mine = devices.iter().find(|d| d["device_id"] == device(&laptop)).cloned().context("laptop not listed")?;
        if mine["last_seen_ip"].is_string() || started.elapsed() > std::time::Duration::from_secs(10) {
            break mine;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    ensure!(seen["last_seen_ip"] == "127.0.0.1", "last_seen_ip of a device that made requests: {seen}");
    ensure!(seen["last_seen_ts"].as_i64().is_some_and(|t| t > 0), "last_seen_ts: {seen}");

    // Every login is a device, listed with the display name it logged in with.
    let devices = device_list(&alice).await?;
    let mut expected: Vec<String> = [&alice, &laptop, &phone, &tablet, &watch].iter().map(|a| device(a)).collect();
    expected.sort();
    ensure!(device_ids(&devices) == expected, "GET /devices: {devices:?}");
    for d in &devices {
        ensure!(d["display_name"] == "kairan-tests raw", "device display name: {d}");
    }

    // Renaming.
    let path = format!("/_matrix/client/v3/devices/{}", enc(&device(&laptop)));
    alice.put(&path, &json!({ "display_name": "Alice's laptop" })).await?.ok().context("rename")?;
    let renamed = alice.get(&path).await?.ok().context("GET /devices/{deviceId}")?;
    ensure!(renamed["device_id"] == device(&laptop) && renamed["display_name"] == "Alice's laptop", "{renamed}");
    let listed = device_list(&alice).await?;
    let listed = listed.iter().find(|d| d["device_id"] == device(&laptop)).context("laptop not listed")?;
    ensure!(listed["display_name"] == "Alice's laptop", "the list keeps the old name: {listed}");
    let unknown = alice.put("/_matrix/client/v3/devices/NOSUCHDEVICE", &json!({ "display_name": "x" })).await?;
    assert_matrix_error(&unknown, 404, "M_NOT_FOUND").context("renaming an unknown device")?;
    assert_matrix_error(&alice.get("/_matrix/client/v3/devices/NOSUCHDEVICE").await?, 404, "M_NOT_FOUND")
        .context("GET an unknown device")?;

    // DELETE /devices/{deviceId}: user-interactive auth with the password first.
    let path = format!("/_matrix/client/v3/devices/{}", enc(&device(&phone)));
    let session = password_challenge(&alice.delete(&path, &json!({})).await?).context("DELETE without auth")?;
    let wrong = alice.delete(&path, &json!({ "auth": password_auth(&alice_id, "wrong password", &session) })).await?;
    wrong_password(&wrong).context("DELETE with a wrong password")?;
    phone.get(WHOAMI).await?.ok().context("the device survives a failed deletion")?;
    alice
        .delete(&path, &json!({ "auth": password_auth(&alice_id, PASSWORD, &session) }))
        .await?
        .ok()
        .context("DELETE with the password")?;
    assert_matrix_error(&phone.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN").context("deleted device's token")?;
    assert_matrix_error(&alice.get(&path).await?, 404, "M_NOT_FOUND").context("GET the deleted device")?;

    // POST /delete_devices: the same, for several at once.
    let body = json!({ "devices": [device(&tablet), device(&watch)] });
    let session =
        password_challenge(&alice.post("/_matrix/client/v3/delete_devices", &body).await?).context("no auth")?;
    let mut with_auth = body.clone();
    with_auth["auth"] = password_auth(&alice_id, PASSWORD, &session);
    alice.post("/_matrix/client/v3/delete_devices", &with_auth).await?.ok().context("delete_devices")?;
    for gone in [&tablet, &watch] {
        assert_matrix_error(&gone.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN").context("deleted device's token")?;
    }
    let mut expected = vec![device(&alice), device(&laptop)];
    expected.sort();
    let devices = device_list(&alice).await?;
    ensure!(device_ids(&devices) == expected, "devices after the deletions: {devices:?}");
    alice.get(WHOAMI).await?.ok().context("the deleting device itself")?;
    laptop.get(WHOAMI).await?.ok().context("a device that was not deleted")?;
    Ok(())
}

async fn password_change(server: &TestServer) -> anyhow::Result<()> {
    let bob_id = server.user_id("bob");
    let bob = server.api("bob", PASSWORD).await?;
    let other = server.api("bob", PASSWORD).await?;
    const PATH: &str = "/_matrix/client/v3/account/password";

    // `logout_devices: false`: the password changes, every session stays.
    let body = json!({ "new_password": NEW_PASSWORD, "logout_devices": false });
    let session = password_challenge(&bob.post(PATH, &body).await?).context("password change without auth")?;
    let mut wrong = body.clone();
    wrong["auth"] = password_auth(&bob_id, "wrong password", &session);
    wrong_password(&bob.post(PATH, &wrong).await?).context("password change with a wrong password")?;
    let mut with_auth = body.clone();
    with_auth["auth"] = password_auth(&bob_id, PASSWORD, &session);
    bob.post(PATH, &with_auth).await?.ok().context("password change")?;
    let old = server.anonymous().post("/_matrix/client/v3/login", &login_body("bob", PASSWORD)).await?;
    assert_matrix_error(&old, 403, "M_FORBIDDEN").context("login with the old password")?;
    let third = server.api("bob", NEW_PASSWORD).await.context("login with the new password")?;
    bob.get(WHOAMI).await?.ok().context("the changing device")?;
    other.get(WHOAMI).await?.ok().context("another device, with logout_devices: false")?;

    // `logout_devices: true`: every other session ends; the caller's goes on.
    let body = json!({ "new_password": NEWER_PASSWORD, "logout_devices": true });
    let session = password_challenge(&bob.post(PATH, &body).await?).context("second change without auth")?;
    let mut with_auth = body.clone();
    with_auth["auth"] = password_auth(&bob_id, NEW_PASSWORD, &session);
    bob.post(PATH, &with_auth).await?.ok().context("password change with logout_devices")?;
    for gone in [&other, &third] {
        assert_matrix_error(&gone.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN").context("other device after change")?;
    }
    let whoami = bob.get(WHOAMI).await?.ok().context("the changing device after logout_devices")?;
    ensure!(whoami["device_id"] == device(&bob), "{whoami}");
    let devices = device_list(&bob).await?;
    ensure!(device_ids(&devices) == vec![device(&bob)], "devices after logout_devices: {devices:?}");
    for stale in [PASSWORD, NEW_PASSWORD] {
        let response = server.anonymous().post("/_matrix/client/v3/login", &login_body("bob", stale)).await?;
        assert_matrix_error(&response, 403, "M_FORBIDDEN").context("login with a replaced password")?;
    }
    let other = server.api("bob", NEWER_PASSWORD).await.context("login with the newer password")?;

    // `logout_devices` defaults to true.
    let body = json!({ "new_password": NEWEST_PASSWORD });
    let session = password_challenge(&bob.post(PATH, &body).await?).context("third change without auth")?;
    let mut with_auth = body.clone();
    with_auth["auth"] = password_auth(&bob_id, NEWER_PASSWORD, &session);
    bob.post(PATH, &with_auth).await?.ok().context("password change without logout_devices")?;
    assert_matrix_error(&other.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN")
        .context("other device after a change without logout_devices (default true)")?;
    bob.get(WHOAMI).await?.ok().context("the changing device after the third change")?;
    Ok(())
}

async fn logout(server: &TestServer) -> anyhow::Result<()> {
    // Bob's password is NEWEST_PASSWORD from here on.
    let first = server.api("bob", NEWEST_PASSWORD).await?;
    let second = server.api("bob", NEWEST_PASSWORD).await?;
    let third = server.api("bob", NEWEST_PASSWORD).await?;

    // POST /logout ends only the session that calls it, and deletes its device.
    first.post("/_matrix/client/v3/logout", &json!({})).await?.ok().context("logout")?;
    assert_matrix_error(&first.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN").context("token after logout")?;
    // Where no token is needed, one that is sent must still be valid: a client learns
    // there, too, that its session is over (matrix-rust-sdk's integration suite asks this).
    let displayname = format!("/_matrix/client/v3/profile/{}/displayname", enc(first.me()));
    assert_matrix_error(&first.get(&displayname).await?, 401, "M_UNKNOWN_TOKEN")
        .context("a profile read with a logged-out token")?;
    assert_matrix_error(&first.with_token(Some("not-a-token")).get(&displayname).await?, 401, "M_UNKNOWN_TOKEN")
        .context("a profile read with an invented token")?;
    first.with_token(None).get(&displayname).await?.ok().context("a profile read without a token")?;
    second.get(WHOAMI).await?.ok().context("another session after logout")?;
    third.get(WHOAMI).await?.ok().context("a third session after logout")?;
    let devices = device_list(&second).await?;
    ensure!(!device_ids(&devices).contains(&device(&first)), "the logged-out device is still listed: {devices:?}");

    // POST /logout/all ends every session, including the caller's, and deletes every device.
    second.post("/_matrix/client/v3/logout/all", &json!({})).await?.ok().context("logout/all")?;
    for (name, api) in [("caller", &second), ("other", &third)] {
        assert_matrix_error(&api.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN")
            .with_context(|| format!("{name} session after logout/all"))?;
    }
    let fresh = server.api("bob", NEWEST_PASSWORD).await.context("login after logout/all")?;
    let devices = device_list(&fresh).await?;
    ensure!(device_ids(&devices) == vec![device(&fresh)], "devices after logout/all and one login: {devices:?}");
    Ok(())
}

async fn deactivation(server: &TestServer) -> anyhow::Result<()> {
    let alice_id = server.user_id("alice");
    let alice = server.api("alice", PASSWORD).await?;
    let alice_other = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", NEWEST_PASSWORD).await?;

    // Alice is in two rooms: Bob's and her own, which Bob joined.
    let bobs_room = bob.create_room(&json!({ "preset": "public_chat", "name": "Bob's" })).await?;
    alice.join(&bobs_room).await?.ok().context("alice joins bob's room")?;
    let alices_room = alice.create_room(&json!({ "preset": "public_chat", "name": "Alice's" })).await?;
    bob.join(&alices_room).await?.ok().context("bob joins alice's room")?;
    let mut since = next_batch(&bob.sync(None, 0).await?)?;

    let path = "/_matrix/client/v3/account/deactivate";
    let session = password_challenge(&alice.post(path, &json!({})).await?).context("deactivate without auth")?;
    let wrong = alice.post(path, &json!({ "auth": password_auth(&alice_id, "wrong password", &session) })).await?;
    wrong_password(&wrong).context("deactivate with a wrong password")?;
    alice.get(WHOAMI).await?.ok().context("a failed deactivation deactivates nothing")?;
    let done = alice
        .post(path, &json!({ "auth": password_auth(&alice_id, PASSWORD, &session) }))
        .await?
        .ok()
        .context("deactivate")?;
    // Required in the response: "success" or "no-support".
    let unbind = &done["id_server_unbind_result"];
    ensure!(unbind == "success" || unbind == "no-support", "id_server_unbind_result: {done}");

    for (name, api) in [("deactivating", &alice), ("other", &alice_other)] {
        assert_matrix_error(&api.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN")
            .with_context(|| format!("{name} session after deactivation"))?;
    }
    // Alice left both rooms: Bob sees each leave in his sync, and she is no longer a member.
    let mut left = Vec::new();
    sync_raw_until(&bob, &mut since, "alice's leaves", |sync| {
        for room in [&bobs_room, &alices_room] {
            let leave = sync_timeline(sync, room).into_iter().find(|e| {
                e["type"] == "m.room.member" && e["state_key"] == alice_id.as_str() && e["sender"] == alice_id.as_str()
            });
            if let Some(leave) = leave {
                left.push((room.clone(), leave));
            }
        }
        (left.len() == 2).then_some(())
    })
    .await?;
    for (room, event) in &left {
        ensure!(event["content"]["membership"] == "leave", "alice's last membership event in {room}: {event}");
        let member = bob.state(room, "m.room.member", &alice_id).await?;
        ensure!(member["membership"] == "leave", "alice's membership in {room}: {member}");
        ensure!(bob.joined_members(room).await? == vec![bob.me().to_owned()], "members of {room}");
    }

    // Logging in again fails; the spec's code for this case is M_USER_DEACTIVATED.
    let login = server.anonymous().post("/_matrix/client/v3/login", &login_body("alice", PASSWORD)).await?;
    assert_matrix_error(&login, 403, "M_USER_DEACTIVATED").context("login after deactivation")?;
    Ok(())
}

/// Checks a response is the first step of user-interactive auth offering a flow of the
/// single stage `m.login.password`; returns the session.
fn password_challenge(response: &Response) -> anyhow::Result<String> {
    ensure!(response.status == 401, "expected 401 with UIA flows, got {} {}", response.status, response.text);
    let flows = response.body["flows"].as_array().with_context(|| format!("no flows: {}", response.text))?;
    ensure!(
        flows.iter().any(|f| f["stages"] == json!(["m.login.password"])),
        "no flow [m.login.password]: {}",
        response.text
    );
    Ok(response.body["session"].as_str().with_context(|| format!("no session: {}", response.text))?.to_owned())
}

/// A failed password stage: 401 with the flows again, and `M_FORBIDDEN`.
fn wrong_password(response: &Response) -> anyhow::Result<()> {
    assert_matrix_error(response, 401, "M_FORBIDDEN")?;
    ensure!(response.body["flows"].is_array(), "a failed stage must repeat the flows: {}", response.text);
    Ok(())
}

fn password_auth(user_id: &str, password: &str, session: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user_id },
        "password": password,
        "session": session,
    })
}

fn login_body(user: &str, password: &str) -> Value {
    json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password })
}

fn device(api: &Api) -> String {
    api.device_id.clone().expect("a logged-in Api has a device")
}

async fn device_list(api: &Api) -> anyhow::Result<Vec<Value>> {
    let body = api.get("/_matrix/client/v3/devices").await?.ok().context("GET /devices")?;
    Ok(body["devices"].as_array().with_context(|| format!("no devices array: {body}"))?.clone())
}

fn device_ids(devices: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = devices.iter().map(|d| d["device_id"].as_str().unwrap_or("?").to_owned()).collect();
    ids.sort();
    ids
}
