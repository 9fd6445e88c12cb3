//! The admin API (`/_kairan/admin/v1`) over raw HTTP: who may call it (only server
//! administrators; every attempt audited), accounts and sessions, registration tokens,
//! rooms (policy published as state, the archive account invited, encryption and server
//! ACL, purge, shutdown), server policy changed at run time (and kept over a restart),
//! and exact utilisation figures. `cli` drives the same through the `kairan-admin` binary.

mod cli;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, ensure};
use kairan_tests::{Api, Backend, PASSWORD, Response, ServerOptions, TestServer, assert_matrix_error, enc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::put_state;

pub const V1: &str = "/_kairan/admin/v1";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

/// A logged-in administrator (created with `kairan-homeserver create-user --admin`).
pub async fn admin_api(server: &TestServer) -> anyhow::Result<Api> {
    server.create_user("admin", PASSWORD, true).await?;
    server.api("admin", PASSWORD).await
}

pub fn user_path(user_id: &str) -> String {
    format!("{V1}/users/{}", enc(user_id))
}

pub fn room_path(room_id: &str) -> String {
    format!("{V1}/rooms/{}", enc(room_id))
}

/// The current month (`YYYY-MM`) in the server's default admin time zone (+09:00).
pub fn current_month() -> String {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64 + 9 * 3600 * 1000;
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}")
}

both_backends!(scenario);

async fn scenario(backend: Backend) -> anyhow::Result<()> {
    let server =
        TestServer::start(ServerOptions::default().backend(backend).archive_user("@archive:localhost")).await?;
    server.create_users(&["alice", "bob"]).await?;
    let admin = admin_api(&server).await?;
    access_control(&server, &admin).await.context("access control")?;
    accounts(&server, &admin).await.context("accounts")?;
    registration_tokens(&server, &admin).await.context("registration tokens")?;
    rooms_and_policy(&server, &admin).await.context("rooms and room policy")?;
    let mut server = server;
    server_policy(&mut server).await.context("server policy")?;
    Ok(())
}

/// Every endpoint, with a body that would be valid for an administrator.
fn endpoints(room_id: &str) -> Vec<(Method, String, Value)> {
    let u = user_path("@alice:localhost");
    let r = room_path(room_id);
    vec![
        (Method::GET, format!("{V1}/whoami"), Value::Null),
        (Method::GET, format!("{V1}/users"), Value::Null),
        (Method::POST, format!("{V1}/users"), json!({ "user_id": "mallory", "password": "p" })),
        (Method::POST, format!("{V1}/users/import"), json!({ "users": [{ "user_id": "mallory2" }] })),
        (Method::GET, u.clone(), Value::Null),
        (Method::POST, format!("{u}/deactivate"), json!({})),
        (Method::POST, format!("{u}/reactivate"), json!({})),
        (Method::POST, format!("{u}/password"), json!({ "password": "stolen-password" })),
        (Method::PUT, format!("{u}/admin"), json!({ "admin": true })),
        (Method::PUT, format!("{u}/department"), json!({ "department": "x" })),
        (Method::GET, format!("{u}/devices"), Value::Null),
        (Method::DELETE, format!("{u}/devices/ABC"), json!({})),
        (Method::GET, format!("{V1}/registration_tokens"), Value::Null),
        (Method::POST, format!("{V1}/registration_tokens"), json!({})),
        (Method::DELETE, format!("{V1}/registration_tokens/abc"), json!({})),
        (Method::GET, format!("{V1}/rooms"), Value::Null),
        (Method::GET, r.clone(), Value::Null),
        (Method::POST, format!("{r}/shutdown"), json!({})),
        (Method::POST, format!("{r}/purge"), json!({ "before": "2020-01-01" })),
        (Method::GET, format!("{r}/policy"), Value::Null),
        (Method::PUT, format!("{r}/policy"), json!({ "official": false })),
        (Method::GET, format!("{V1}/policy"), Value::Null),
        (Method::PUT, format!("{V1}/policy/federation"), json!({ "allowlist": ["*"] })),
        (Method::PUT, format!("{V1}/policy/media"), json!({ "max_upload_bytes": 1 })),
        (Method::PUT, format!("{V1}/policy/registration"), json!({ "mode": "token" })),
        (Method::GET, format!("{V1}/figures/2026-01"), Value::Null),
        (Method::GET, format!("{V1}/audit"), Value::Null),
    ]
}

async fn call(api: &Api, method: &Method, path: &str, body: &Value) -> anyhow::Result<Response> {
    let body = (!body.is_null()).then(|| (serde_json::to_vec(body).unwrap(), "application/json"));
    api.request(method.clone(), path, body).await
}

async fn audit(admin: &Api, query: &str) -> anyhow::Result<Vec<Value>> {
    let body = admin.get(&format!("{V1}/audit?{query}")).await?.ok().with_context(|| format!("audit?{query}"))?;
    Ok(body["entries"].as_array().context("audit without entries")?.clone())
}

async fn access_control(server: &TestServer, admin: &Api) -> anyhow::Result<()> {
    let bob = server.api("bob", PASSWORD).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "name": "room" })).await?;
    let me = admin.get(&format!("{V1}/whoami")).await?.ok()?;
    ensure!(me["user_id"] == "@admin:localhost" && me["admin"] == true, "whoami: {me}");

    let endpoints = endpoints(&room);
    for (method, path, body) in &endpoints {
        let r = call(&bob, method, path, body).await?;
        assert_matrix_error(&r, 403, "M_FORBIDDEN").with_context(|| format!("{method} {path} as a non-admin"))?;
        let r = call(&server.anonymous(), method, path, body).await?;
        assert_matrix_error(&r, 401, "M_MISSING_TOKEN").with_context(|| format!("{method} {path} without token"))?;
        let r = call(&bob.with_token(Some("kai_nonsense")), method, path, body).await?;
        assert_matrix_error(&r, 401, "M_UNKNOWN_TOKEN").with_context(|| format!("{method} {path} bad token"))?;
    }
    // Nothing happened: bob's attempts changed nothing.
    let alice_now = admin.get(&user_path("@alice:localhost")).await?.ok()?;
    ensure!(
        alice_now["admin"] == false && alice_now["deactivated"] == false,
        "alice after bob's attempts: {alice_now}"
    );
    alice.get(WHOAMI).await?.ok().context("alice's session survives bob's attempts")?;

    // Every attempt is in the audit log, with bob as the caller and the refusal as result.
    let entries = audit(admin, "caller=bob&limit=1000").await?;
    ensure!(entries.len() == endpoints.len(), "{} audit entries for bob, expected {}", entries.len(), endpoints.len());
    for e in &entries {
        ensure!(e["caller"] == "@bob:localhost" && e["result"] == "M_FORBIDDEN" && e["status"] == 403, "{e}");
    }
    let actions: std::collections::BTreeSet<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
    ensure!(actions.len() == endpoints.len(), "one action name per endpoint: {actions:?}");
    ensure!(actions.contains("users.deactivate") && actions.contains("policy.room.set"), "{actions:?}");
    let deactivate = entries.iter().find(|e| e["action"] == "users.deactivate").context("deactivate attempt")?;
    ensure!(deactivate["target"] == "@alice:localhost", "the target is recorded: {deactivate}");
    // No secret reaches the log: the password bob tried to set is not in it.
    let text = admin.get(&format!("{V1}/audit?limit=1000")).await?.text;
    ensure!(!text.contains("stolen-password"), "a password reached the audit log");
    ensure!(!text.contains("kai_nonsense"), "a token reached the audit log");
    // Anonymous attempts are there too, without a caller.
    let anonymous = audit(admin, "limit=1000").await?;
    ensure!(
        anonymous.iter().filter(|e| e["caller"].is_null() && e["result"] == "M_MISSING_TOKEN").count()
            == endpoints.len(),
        "anonymous attempts"
    );
    // The administrator's own calls are audited as successes.
    let own = audit(admin, "caller=admin&limit=5").await?;
    ensure!(own.iter().any(|e| e["action"] == "whoami" && e["result"] == "ok"), "{own:?}");
    // Time range filters.
    let future = audit(admin, "since=2999-01-01").await?;
    ensure!(future.is_empty(), "entries after 2999: {future:?}");
    let past = audit(admin, "until=2000-01-01").await?;
    ensure!(past.is_empty(), "entries before 2000: {past:?}");
    assert_matrix_error(&admin.get(&format!("{V1}/audit?since=yesterday")).await?, 400, "M_INVALID_PARAM")?;
    Ok(())
}

async fn accounts(server: &TestServer, admin: &Api) -> anyhow::Result<()> {
    // One account, with a generated password.
    let body = json!({ "user_id": "carol", "displayname": "Carol", "department": "総務課" });
    let created = admin.post(&format!("{V1}/users"), &body).await?.ok()?;
    ensure!(created["user_id"] == "@carol:localhost", "{created}");
    let password = created["password"].as_str().context("generated password")?.to_owned();
    let carol = server.api("carol", &password).await.context("login with the generated password")?;
    let again = admin.post(&format!("{V1}/users"), &body).await?;
    assert_matrix_error(&again, 400, "M_USER_IN_USE")?;
    let bad = admin.post(&format!("{V1}/users"), &json!({ "user_id": "Bad Name!" })).await?;
    assert_matrix_error(&bad, 400, "M_INVALID_USERNAME")?;
    let remote = admin.post(&format!("{V1}/users"), &json!({ "user_id": "@x:other.example" })).await?;
    assert_matrix_error(&remote, 400, "M_INVALID_PARAM")?;
    assert_matrix_error(&admin.post(&format!("{V1}/users"), &json!({ "nope": 1 })).await?, 400, "M_BAD_JSON")?;
    let not_json =
        admin.request(Method::POST, &format!("{V1}/users"), Some((b"{".to_vec(), "application/json"))).await?;
    assert_matrix_error(&not_json, 400, "M_NOT_JSON")?;

    // Many, from a CSV: the good rows are created, the bad ones reported by line.
    let csv = "user_id,displayname,department\nd1,D One,人事課\nd2,D Two\nBad User,X,Y\nd1,Dup,Z\n\
               d3,\"Three, Jr.\",財政課,pw-d3-123\n";
    let r =
        admin.request(Method::POST, &format!("{V1}/users/import"), Some((csv.as_bytes().to_vec(), "text/csv"))).await?;
    let r = r.ok()?;
    let created: Vec<(u64, &str)> = r["created"]
        .as_array()
        .context("created")?
        .iter()
        .map(|c| (c["line"].as_u64().unwrap_or(0), c["user_id"].as_str().unwrap_or("")))
        .collect();
    ensure!(created == [(2, "@d1:localhost"), (6, "@d3:localhost")], "created: {r}");
    ensure!(r["created"][1].get("password").is_none(), "a given password is not echoed: {r}");
    let failed: Vec<(u64, &str)> = r["failed"]
        .as_array()
        .context("failed")?
        .iter()
        .map(|f| (f["line"].as_u64().unwrap_or(0), f["errcode"].as_str().unwrap_or("")))
        .collect();
    ensure!(failed == [(3, "M_INVALID_PARAM"), (4, "M_INVALID_USERNAME"), (5, "M_USER_IN_USE")], "failed: {r}");
    server.api("d3", "pw-d3-123").await.context("login with the CSV's password")?;

    // Listing: filters and paging.
    let hr = admin.get(&format!("{V1}/users?department={}", enc("人事課"))).await?.ok()?;
    ensure!(hr["total"] == 1 && hr["users"][0]["user_id"] == "@d1:localhost", "{hr}");
    let admins = admin.get(&format!("{V1}/users?admin=true")).await?.ok()?;
    ensure!(admins["total"] == 1 && admins["users"][0]["user_id"] == "@admin:localhost", "{admins}");
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    let total = loop {
        let mut path = format!("{V1}/users?limit=2");
        if let Some(f) = &from {
            path.push_str(&format!("&from={}", enc(f)));
        }
        let page = admin.get(&path).await?.ok()?;
        for u in page["users"].as_array().context("users")? {
            seen.push(u["user_id"].as_str().unwrap_or("").to_owned());
        }
        match page["next"].as_str() {
            Some(n) => from = Some(n.to_owned()),
            None => break page["total"].as_u64().context("total")?,
        }
    };
    ensure!(seen.len() as u64 == total && total == 6, "paged through {seen:?}, total {total}");
    let mut sorted = seen.clone();
    sorted.sort();
    ensure!(sorted == seen, "pages are in user ID order: {seen:?}");
    assert_matrix_error(&admin.get(&format!("{V1}/users?limit=0")).await?, 400, "M_INVALID_PARAM")?;
    assert_matrix_error(&admin.get(&format!("{V1}/users?admin=maybe")).await?, 400, "M_INVALID_PARAM")?;

    let shown = admin.get(&user_path("carol")).await?.ok()?;
    ensure!(shown["department"] == "総務課" && shown["displayname"] == "Carol" && shown["sessions"] == 1, "{shown}");
    assert_matrix_error(&admin.get(&user_path("nobody")).await?, 404, "M_NOT_FOUND")?;
    let dept = admin.put(&format!("{}/department", user_path("carol")), &json!({ "department": "財政課" })).await?;
    ensure!(dept.ok()?["department"] == "財政課", "department change");

    // Sessions: list, end one.
    let carol2 = server.api("carol", &password).await?;
    let devices = admin.get(&format!("{}/devices", user_path("carol"))).await?.ok()?;
    ensure!(devices["devices"].as_array().map(Vec::len) == Some(2), "{devices}");
    let path = format!("{}/devices/{}", user_path("carol"), enc(carol2.device_id.as_deref().unwrap_or("")));
    admin.delete(&path, &json!({})).await?.ok().context("delete device")?;
    assert_matrix_error(&carol2.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN").context("the ended session")?;
    carol.get(WHOAMI).await?.ok().context("the other session")?;
    assert_matrix_error(&admin.delete(&path, &json!({})).await?, 404, "M_NOT_FOUND")?;

    // Password reset: every session ends; the new password works.
    let reset = admin.post(&format!("{}/password", user_path("carol")), &json!({})).await?.ok()?;
    let password = reset["password"].as_str().context("generated password")?.to_owned();
    assert_matrix_error(&carol.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN").context("sessions end on reset")?;
    let carol = server.api("carol", &password).await?;

    // Administration granted and revoked; nobody revokes their own.
    admin.put(&format!("{}/admin", user_path("carol")), &json!({ "admin": true })).await?.ok()?;
    carol.get(&format!("{V1}/whoami")).await?.ok().context("a new administrator")?;
    admin.put(&format!("{}/admin", user_path("carol")), &json!({ "admin": false })).await?.ok()?;
    assert_matrix_error(&carol.get(&format!("{V1}/whoami")).await?, 403, "M_FORBIDDEN")?;
    let own = admin.put(&format!("{}/admin", user_path("admin")), &json!({ "admin": false })).await?;
    assert_matrix_error(&own, 403, "M_FORBIDDEN").context("revoking one's own administration")?;

    // Deactivation ends every session at once and stops logins; reactivation restores.
    let carol2 = server.api("carol", &password).await?;
    admin.post(&format!("{}/deactivate", user_path("carol")), &json!({})).await?.ok()?;
    for s in [&carol, &carol2] {
        assert_matrix_error(&s.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN").context("a session after deactivation")?;
    }
    let login = server.anonymous().post("/_matrix/client/v3/login", &login_body("carol", &password)).await?;
    assert_matrix_error(&login, 403, "M_USER_DEACTIVATED")?;
    let shown = admin.get(&user_path("carol")).await?.ok()?;
    ensure!(shown["deactivated"] == true && shown["sessions"] == 0 && shown["deactivated_ts"].is_i64(), "{shown}");
    let again = admin.post(&format!("{}/deactivate", user_path("carol")), &json!({})).await?;
    assert_matrix_error(&again, 400, "M_BAD_STATE")?;
    let own = admin.post(&format!("{}/deactivate", user_path("admin")), &json!({})).await?;
    assert_matrix_error(&own, 403, "M_FORBIDDEN")?;
    let body = json!({ "password": "back-again-1" });
    admin.post(&format!("{}/reactivate", user_path("carol")), &body).await?.ok()?;
    server.api("carol", "back-again-1").await.context("login after reactivation")?;
    Ok(())
}

fn login_body(user: &str, password: &str) -> Value {
    json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password })
}

async fn registration_tokens(server: &TestServer, admin: &Api) -> anyhow::Result<()> {
    let validity =
        |t: &str| format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={}", enc(t));
    // Registration is closed (the file's setting): tokens are not even checked.
    assert_matrix_error(&server.anonymous().get(&validity("x")).await?, 403, "M_FORBIDDEN")?;
    admin.put(&format!("{V1}/policy/registration"), &json!({ "mode": "token" })).await?.ok()?;

    let t = admin.post(&format!("{V1}/registration_tokens"), &json!({ "uses_allowed": 2 })).await?.ok()?;
    let token = t["token"].as_str().context("token")?.to_owned();
    let named = admin
        .post(&format!("{V1}/registration_tokens"), &json!({ "token": "welcome-2026", "expiry": "2999-12-31" }))
        .await?
        .ok()?;
    ensure!(named["token"] == "welcome-2026" && named["expiry_ts"].is_i64(), "{named}");
    let dup = admin.post(&format!("{V1}/registration_tokens"), &json!({ "token": "welcome-2026" })).await?;
    assert_matrix_error(&dup, 400, "M_INVALID_PARAM")?;
    let bad = admin.post(&format!("{V1}/registration_tokens"), &json!({ "token": "no spaces" })).await?;
    assert_matrix_error(&bad, 400, "M_INVALID_PARAM")?;
    let past = admin.post(&format!("{V1}/registration_tokens"), &json!({ "expiry": "2001-01-01" })).await?;
    assert_matrix_error(&past, 400, "M_INVALID_PARAM")?;
    let list = admin.get(&format!("{V1}/registration_tokens")).await?.ok()?;
    let tokens = list["tokens"].as_array().context("tokens")?;
    ensure!(tokens.len() == 2 && tokens.iter().all(|t| t["valid"] == true), "{list}");
    ensure!(server.anonymous().get(&validity(&token)).await?.ok()?["valid"] == true, "token valid");

    let path = format!("{V1}/registration_tokens/{}", enc(&token));
    admin.delete(&path, &json!({})).await?.ok()?;
    ensure!(server.anonymous().get(&validity(&token)).await?.ok()?["valid"] == false, "revoked token");
    assert_matrix_error(&admin.delete(&path, &json!({})).await?, 404, "M_NOT_FOUND")?;
    // The audit log names tokens by fingerprint only.
    let entries = audit(admin, "limit=20").await?;
    let revoke = entries.iter().find(|e| e["action"] == "tokens.revoke").context("revoke audited")?;
    ensure!(revoke["target"].as_str().is_some_and(|t| t.starts_with("token:sha256:")), "{revoke}");
    let text = admin.get(&format!("{V1}/audit?limit=100")).await?.text;
    ensure!(!text.contains(&token) && !text.contains("welcome-2026"), "a registration token reached the audit log");
    // Nor the server's log, whose request lines carry the path that named the token.
    let logs = server.logs();
    ensure!(logs.contains("registration_tokens/<secret>"), "the revocation's request is not in the log");
    ensure!(!logs.contains(&token), "a registration token reached the server log");
    admin.put(&format!("{V1}/policy/registration"), &json!({ "mode": "closed" })).await?.ok()?;
    assert_matrix_error(&server.anonymous().get(&validity("welcome-2026")).await?, 403, "M_FORBIDDEN")?;
    let bad = admin.put(&format!("{V1}/policy/registration"), &json!({ "mode": "open" })).await?;
    assert_matrix_error(&bad, 400, "M_INVALID_PARAM")?;
    Ok(())
}

async fn state_of(api: &Api, room: &str, kind: &str, key: &str) -> anyhow::Result<Response> {
    api.get(&format!("/_matrix/client/v3/rooms/{}/state/{}/{}", enc(room), enc(kind), enc(key))).await
}

async fn rooms_and_policy(server: &TestServer, admin: &Api) -> anyhow::Result<()> {
    server.create_users(&["archive"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let bob = server.api("bob", PASSWORD).await?;
    let room = alice.create_room(&json!({ "name": "予算委員会", "preset": "private_chat" })).await?;
    alice.send_text_ok(&room, "m1", "first").await?;

    let list = admin.get(&format!("{V1}/rooms?search={}", enc("予算"))).await?.ok()?;
    ensure!(list["rooms"].as_array().map(Vec::len) == Some(1) && list["rooms"][0]["room_id"] == room, "{list}");
    ensure!(list["rooms"][0]["name"] == "予算委員会" && list["rooms"][0]["joined_members"] == 1, "{list}");
    let shown = admin.get(&room_path(&room)).await?.ok()?;
    ensure!(shown["servers"] == json!(["localhost"]) && shown["creator"] == "@alice:localhost", "{shown}");
    ensure!(shown["members"] == json!([{ "user_id": "@alice:localhost", "membership": "join" }]), "{shown}");
    ensure!(shown["state"].as_array().is_some_and(|s| s.iter().any(|e| e["type"] == "m.room.create")), "{shown}");
    assert_matrix_error(&admin.get(&room_path("!nope:localhost")).await?, 404, "M_NOT_FOUND")?;

    // Marking the room official: the policy event appears in the room, the archive
    // account is invited, and the server's policy account (not a member) was brought in to send it.
    let missing = admin.put(&format!("{}/policy", room_path(&room)), &json!({ "official": true })).await?;
    assert_matrix_error(&missing, 400, "M_MISSING_PARAM")?;
    let bad = json!({ "official": true, "retention": "7y", "on_expiry": "transfer", "department": "総務課" });
    assert_matrix_error(&admin.put(&format!("{}/policy", room_path(&room)), &bad).await?, 400, "M_INVALID_PARAM")?;
    let policy = json!({ "official": true, "retention": "5y", "on_expiry": "transfer", "department": "総務課" });
    let set = admin.put(&format!("{}/policy", room_path(&room)), &policy).await?.ok()?;
    ensure!(set["archive_invited"] == true && set["sender"] == "@_kairan_policy:localhost", "{set}");
    let published = state_of(&alice, &room, "jp.kairan.room.policy", "").await?.ok()?;
    ensure!(published == policy, "the published policy: {published}");
    let archive = state_of(&alice, &room, "m.room.member", "@archive:localhost").await?.ok()?;
    ensure!(archive["membership"] == "invite", "archive membership: {archive}");
    let shown = admin.get(&format!("{}/policy", room_path(&room))).await?.ok()?;
    ensure!(shown["policy"]["official"] == true && shown["policy"]["retention"] == "5y", "{shown}");
    ensure!(shown["published"] == policy, "{shown}");
    // Setting it again changes nothing in the room.
    let again = admin.put(&format!("{}/policy", room_path(&room)), &policy).await?.ok()?;
    ensure!(again["events"] == json!([]) && again["archive_invited"] == false, "{again}");
    // An official room's history cannot be purged.
    let purge = admin.post(&format!("{}/purge", room_path(&room)), &json!({ "before": "2999-01-01" })).await?;
    assert_matrix_error(&purge, 403, "M_FORBIDDEN")?;

    // Encryption required, with a server ACL; forbidding it afterwards is refused.
    let room2 = alice.create_room(&json!({ "preset": "public_chat", "name": "連絡" })).await?;
    let body = json!({ "encryption": "required", "allowed_servers": ["City.Example"] });
    admin.put(&format!("{}/policy", room_path(&room2)), &body).await?.ok()?;
    let enc_state = state_of(&alice, &room2, "m.room.encryption", "").await?.ok()?;
    ensure!(enc_state["algorithm"] == "m.megolm.v1.aes-sha2", "{enc_state}");
    let acl = state_of(&alice, &room2, "m.room.server_acl", "").await?.ok()?;
    ensure!(acl["allow"] == json!(["localhost", "city.example"]) && acl["allow_ip_literals"] == false, "{acl}");
    let forbid = admin.put(&format!("{}/policy", room_path(&room2)), &json!({ "encryption": "forbidden" })).await?;
    assert_matrix_error(&forbid, 400, "M_BAD_STATE")?;

    // Encryption forbidden: members cannot turn it on.
    let room3 = alice.create_room(&json!({ "preset": "public_chat" })).await?;
    admin.put(&format!("{}/policy", room_path(&room3)), &json!({ "encryption": "forbidden" })).await?.ok()?;
    let r = put_state(&alice, &room3, "m.room.encryption", "", &json!({ "algorithm": "m.megolm.v1.aes-sha2" })).await?;
    assert_matrix_error(&r, 403, "M_FORBIDDEN").context("encryption in a room whose policy forbids it")?;

    // Purge of a room that is not official.
    for i in 0..4 {
        alice.send_text_ok(&room3, &format!("p{i}"), &format!("old message {i}")).await?;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let purged = admin.post(&format!("{}/purge", room_path(&room3)), &json!({ "before_ts": now })).await?.ok()?;
    ensure!(purged["deleted_events"] == 3, "the three older messages go, the latest stays: {purged}");
    let messages =
        alice.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room3))).await?.ok()?;
    let texts: Vec<&str> =
        messages["chunk"].as_array().into_iter().flatten().filter_map(|e| e["content"]["body"].as_str()).collect();
    ensure!(texts == ["old message 3"], "messages after the purge: {texts:?}");
    let future = admin.post(&format!("{}/purge", room_path(&room3)), &json!({ "before": "2999-01-01" })).await?;
    assert_matrix_error(&future, 400, "M_INVALID_PARAM")?;
    let bad = admin.post(&format!("{}/purge", room_path(&room3)), &json!({ "before": "soon" })).await?;
    assert_matrix_error(&bad, 400, "M_INVALID_PARAM")?;

    // Shutdown: every local member leaves, and nobody may join any more.
    bob.join(&room3).await?.ok()?;
    let out = admin.post(&format!("{}/shutdown", room_path(&room3)), &json!({ "reason": "closing" })).await?.ok()?;
    let mut evacuated: Vec<&str> =
        out["evacuated"].as_array().context("evacuated")?.iter().filter_map(Value::as_str).collect();
    evacuated.sort();
    ensure!(
        evacuated == ["@_kairan_policy:localhost", "@alice:localhost", "@bob:localhost"] && out["blocked"] == true,
        "shutdown: {out}"
    );
    assert_matrix_error(&bob.join(&room3).await?, 403, "M_FORBIDDEN").context("joining a blocked room")?;
    let shown = admin.get(&room_path(&room3)).await?.ok()?;
    ensure!(shown["blocked"] == true && shown["joined_members"] == 0, "{shown}");
    Ok(())
}

/// Minimal bytes the content sniffer takes for a PNG.
fn png_bytes() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend_from_slice(&[0u8; 8]);
    v
}

async fn server_policy(server: &mut TestServer) -> anyhow::Result<()> {
    let admin = server.api("admin", PASSWORD).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let shown = admin.get(&format!("{V1}/policy")).await?.ok()?;
    ensure!(shown["federation_allowlist"] == json!([]) && shown["registration_mode"] == "closed", "{shown}");
    alice.upload(b"hello".to_vec(), "text/plain", None).await?.ok().context("text under the file's policy")?;

    // A new media policy applies to the next upload.
    let set = admin.put(&format!("{V1}/policy/media"), &json!({ "allowed_types": ["image/*"] })).await?.ok()?;
    ensure!(set["media"]["allowed_types"] == json!(["image/*"]), "{set}");
    let refused = alice.upload(b"hello".to_vec(), "text/plain", None).await?;
    assert_matrix_error(&refused, 403, "M_FORBIDDEN").context("text after allowing only images")?;
    alice.upload(png_bytes(), "image/png", None).await?.ok().context("an image is still allowed")?;
    admin.put(&format!("{V1}/policy/media"), &json!({ "max_upload_bytes": 12 })).await?.ok()?;
    let big = alice.upload(png_bytes(), "image/png", None).await?;
    assert_matrix_error(&big, 413, "M_TOO_LARGE").context("an upload over the new limit")?;
    let config = alice.get("/_matrix/client/v1/media/config").await?.ok()?;
    ensure!(config["m.upload.size"] == 12, "media config: {config}");
    let bad = admin.put(&format!("{V1}/policy/media"), &json!({ "refused_types": ["word"] })).await?;
    assert_matrix_error(&bad, 400, "M_INVALID_PARAM")?;

    // The federation allowlist is stored and shown.
    let body = json!({ "allowlist": ["City.Example", "*.pref.example", "city.example"] });
    let set = admin.put(&format!("{V1}/policy/federation"), &body).await?.ok()?;
    ensure!(set["federation_allowlist"] == json!(["city.example", "*.pref.example"]), "{set}");
    let bad = admin.put(&format!("{V1}/policy/federation"), &json!({ "allowlist": ["not a name"] })).await?;
    assert_matrix_error(&bad, 400, "M_INVALID_PARAM")?;

    // All of it is kept over a restart.
    server.restart().await?;
    let admin = server.api("admin", PASSWORD).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let shown = admin.get(&format!("{V1}/policy")).await?.ok()?;
    ensure!(shown["federation_allowlist"] == json!(["city.example", "*.pref.example"]), "{shown}");
    ensure!(
        shown["media"]["max_upload_bytes"] == 12 && shown["media"]["allowed_types"] == json!(["image/*"]),
        "{shown}"
    );
    let big = alice.upload(png_bytes(), "image/png", None).await?;
    assert_matrix_error(&big, 413, "M_TOO_LARGE").context("the limit after a restart")?;
    Ok(())
}

/// Known activity for the figures: accounts in departments, rooms, messages and syncs.
pub struct Seeded {
    pub r1: String,
    pub r2: String,
}

/// Seeds a month's activity through the client API. With the administrator that makes
/// five accounts: admin (no department), u1 and u2 (総務課), u3 (人事課), u4 (none).
/// u1 makes a room and sends three messages; u2 joins it, sends a message and an
/// encrypted event, and sends one message in a room of its own; u3 only syncs; u4 and
/// admin do nothing but log in. So: 3 active users of 5, 6 messages (5 and 1 by room).
pub async fn seed_activity(server: &TestServer, admin: &Api) -> anyhow::Result<Seeded> {
    for (u, d) in [("u1", Some("総務課")), ("u2", Some("総務課")), ("u3", Some("人事課")), ("u4", None)] {
        let mut body = json!({ "user_id": u, "password": PASSWORD });
        if let Some(d) = d {
            body["department"] = d.into();
        }
        admin.post(&format!("{V1}/users"), &body).await?.ok()?;
    }
    let u1 = server.api("u1", PASSWORD).await?;
    let u2 = server.api("u2", PASSWORD).await?;
    let u3 = server.api("u3", PASSWORD).await?;
    let _u4 = server.api("u4", PASSWORD).await?;
    let r1 = u1.create_room(&json!({ "name": "総務", "preset": "public_chat" })).await?;
    for i in 0..3 {
        u1.send_text_ok(&r1, &format!("a{i}"), "hello").await?;
    }
    u2.join(&r1).await?.ok()?;
    u2.send_text_ok(&r1, "b0", "hi").await?;
    let encrypted = json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x", "sender_key": "k",
                            "session_id": "s", "device_id": "D" });
    u2.put(&format!("/_matrix/client/v3/rooms/{}/send/m.room.encrypted/b1", enc(&r1)), &encrypted).await?.ok()?;
    let r2 = u2.create_room(&json!({ "name": "u2's" })).await?;
    u2.send_text_ok(&r2, "c0", "mine").await?;
    u3.sync(None, 0).await?;
    u3.sync(None, 0).await?;
    Ok(Seeded { r1, r2 })
}

/// The JSON figures of the seeded month are exactly what was seeded.
pub fn check_figures_json(f: &Value, month: &str, seeded: &Seeded) -> anyhow::Result<()> {
    ensure!(f["month"] == month, "{f}");
    ensure!(f["accounts"] == 5 && f["active_users"] == 3 && f["messages"] == 6, "totals: {f}");
    ensure!((f["active_share"].as_f64().unwrap_or(0.0) - 0.6).abs() < 1e-9, "share: {f}");
    let dept = |name: Value| -> anyhow::Result<Value> {
        f["by_department"]
            .as_array()
            .context("by_department")?
            .iter()
            .find(|d| d["department"] == name)
            .cloned()
            .with_context(|| format!("department {name} in {f}"))
    };
    let soumu = dept(json!("総務課"))?;
    ensure!(soumu["accounts"] == 2 && soumu["active_users"] == 2 && soumu["messages"] == 6, "{soumu}");
    let jinji = dept(json!("人事課"))?;
    ensure!(jinji["accounts"] == 1 && jinji["active_users"] == 1 && jinji["messages"] == 0, "{jinji}");
    let none = dept(Value::Null)?;
    ensure!(none["accounts"] == 2 && none["active_users"] == 0 && none["messages"] == 0, "{none}");
    ensure!(f["by_department"].as_array().map(Vec::len) == Some(3), "{f}");
    let rooms: Vec<(&str, i64)> = f["by_room"]
        .as_array()
        .context("by_room")?
        .iter()
        .map(|r| (r["room_id"].as_str().unwrap_or(""), r["messages"].as_i64().unwrap_or(-1)))
        .collect();
    ensure!(rooms == [(seeded.r1.as_str(), 5), (seeded.r2.as_str(), 1)], "by room: {rooms:?}");
    ensure!(f["by_room"][0]["name"] == "総務", "{f}");
    let before = &f["year_before"];
    ensure!(before["accounts"] == 0 && before["messages"] == 0 && before["active_users"] == 0, "{before}");
    ensure!(f["growth"]["accounts"].is_null(), "no growth on nothing: {f}");
    Ok(())
}

/// The CSV figures of the seeded month, line by line.
pub fn check_figures_csv(text: &str, month: &str, seeded: &Seeded) -> anyhow::Result<()> {
    let year: i64 = month[..4].parse()?;
    let before = format!("{}{}", year - 1, &month[4..]);
    let mut lines: Vec<&str> = text.lines().collect();
    ensure!(lines.first() == Some(&"scope,month,key,name,accounts,active_users,active_share,messages"), "{text}");
    lines.remove(0);
    let mut expected = vec![
        format!("server,{month},,,5,3,0.6,6"),
        format!("department,{month},,,2,0,0.0,0"),
        format!("department,{month},人事課,,1,1,1.0,0"),
        format!("department,{month},総務課,,2,2,1.0,6"),
        format!("room,{month},{},総務,,,,5", seeded.r1),
        format!("room,{month},{},u2's,,,,1", seeded.r2),
        format!("server,{before},,,0,0,0.0,0"),
        format!("growth,{month},{before},,,,,"),
    ];
    let mut got: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    got.sort();
    expected.sort();
    ensure!(got == expected, "CSV figures:\n{text}\nexpected (any order):\n{}", expected.join("\n"));
    Ok(())
}

/// The figures of a month with known activity are exact, in JSON and in CSV.
mod figures {
    use super::*;

    both_backends!(scenario);

    async fn scenario(backend: Backend) -> anyhow::Result<()> {
        let server = TestServer::start(ServerOptions::default().backend(backend)).await?;
        let admin = admin_api(&server).await?;
        let seeded = seed_activity(&server, &admin).await?;
        let month = current_month();
        let f = admin.get(&format!("{V1}/figures/{month}")).await?.ok()?;
        check_figures_json(&f, &month, &seeded)?;
        let csv = admin.get(&format!("{V1}/figures/{month}?format=csv")).await?;
        ensure!(csv.status == 200, "{}", csv.text);
        check_figures_csv(&csv.text, &month, &seeded)?;
        assert_matrix_error(&admin.get(&format!("{V1}/figures/2026-13")).await?, 400, "M_INVALID_PARAM")?;
        assert_matrix_error(&admin.get(&format!("{V1}/figures/{month}?format=xml")).await?, 400, "M_INVALID_PARAM")?;
        Ok(())
    }
}
