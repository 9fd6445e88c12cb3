//! Bad input gets the right Matrix error (`errcode` and status), never a 500.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use kairan_tests::{Api, PASSWORD, ServerOptions, TestServer, assert_matrix_error, enc};
use reqwest::Method;
use serde_json::{Value, json};

const REGISTRATION_TOKEN: &str = "secret-token";

/// A server with Alice, her raw client, and a room of hers.
async fn setup(options: ServerOptions) -> anyhow::Result<(TestServer, Api, String)> {
    let server = TestServer::start(options).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "private_chat", "name": "Inputs" })).await?;
    Ok((server, alice, room))
}

fn send_path(room: &str, txn: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room), enc(txn))
}

async fn raw_body(api: &Api, method: Method, path: &str, body: &[u8]) -> anyhow::Result<kairan_tests::Response> {
    api.request(method, path, Some((body.to_vec(), "application/json"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_not_json() -> anyhow::Result<()> {
    let (_server, alice, room) = setup(ServerOptions::default()).await?;
    let truncated =
        raw_body(&alice, Method::PUT, &send_path(&room, "t1"), br#"{"msgtype": "m.text", "body": "#).await?;
    assert_matrix_error(&truncated, 400, "M_NOT_JSON").context("truncated JSON to /send")?;
    let prose = raw_body(&alice, Method::POST, "/_matrix/client/v3/createRoom", b"this is not json").await?;
    assert_matrix_error(&prose, 400, "M_NOT_JSON").context("prose to /createRoom")?;
    let login = raw_body(&alice.with_token(None), Method::POST, "/_matrix/client/v3/login", b"{\"type\":").await?;
    assert_matrix_error(&login, 400, "M_NOT_JSON").context("truncated JSON to /login")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_typed_json_is_bad_json() -> anyhow::Result<()> {
    let (_server, alice, _room) = setup(ServerOptions::default()).await?;
    let me = alice.me().to_owned();
    let cases = [
        ("POST", "/_matrix/client/v3/createRoom".to_owned(), json!({ "invite": "@bob:localhost" })),
        ("POST", "/_matrix/client/v3/createRoom".to_owned(), json!({ "name": 42 })),
        ("POST", "/_matrix/client/v3/createRoom".to_owned(), json!([1, 2, 3])),
        ("PUT", format!("/_matrix/client/v3/profile/{}/displayname", enc(&me)), json!({ "displayname": 42 })),
    ];
    for (method, path, body) in cases {
        let method = Method::from_bytes(method.as_bytes())?;
        let response = raw_body(&alice, method.clone(), &path, &serde_json::to_vec(&body)?).await?;
        assert_matrix_error(&response, 400, "M_BAD_JSON").with_context(|| format!("{method} {path} {body}"))?;
    }
    let login = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": 12345,
    });
    let response = alice.with_token(None).post("/_matrix/client/v3/login", &login).await?;
    assert_matrix_error(&response, 400, "M_BAD_JSON").context("login with a numeric password")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token() -> anyhow::Result<()> {
    let (server, _alice, room) = setup(ServerOptions::default()).await?;
    let anonymous = server.anonymous();
    let whoami = anonymous.get("/_matrix/client/v3/account/whoami").await?;
    assert_matrix_error(&whoami, 401, "M_MISSING_TOKEN").context("whoami")?;
    let send = anonymous.send_text(&room, "t1", "hi").await?;
    assert_matrix_error(&send, 401, "M_MISSING_TOKEN").context("send")?;
    let sync = anonymous.get("/_matrix/client/v3/sync?timeout=0").await?;
    assert_matrix_error(&sync, 401, "M_MISSING_TOKEN").context("sync")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token() -> anyhow::Result<()> {
    let (server, alice, _room) = setup(ServerOptions::default()).await?;
    let bogus = server.anonymous().with_token(Some("syt_not_a_real_token"));
    let whoami = bogus.get("/_matrix/client/v3/account/whoami").await?;
    assert_matrix_error(&whoami, 401, "M_UNKNOWN_TOKEN").context("made-up token")?;

    // A token stops working when its session logs out.
    alice.get("/_matrix/client/v3/account/whoami").await?.ok().context("whoami before logout")?;
    alice.post("/_matrix/client/v3/logout", &json!({})).await?.ok().context("logout")?;
    let after = alice.get("/_matrix/client/v3/account/whoami").await?;
    assert_matrix_error(&after, 401, "M_UNKNOWN_TOKEN").context("token after logout")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_room_and_event() -> anyhow::Result<()> {
    let (server, alice, room) = setup(ServerOptions::default()).await?;
    let nowhere = format!("!doesnotexist:{}", server.server_name());

    // The spec's answer for /messages in a room one is not in: 403.
    let messages = alice.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b", enc(&nowhere))).await?;
    assert_matrix_error(&messages, 403, "M_FORBIDDEN").context("/messages in an unknown room")?;
    // Sending into a room one is not in is forbidden.
    assert_matrix_error(&alice.send_text(&nowhere, "t1", "hello?").await?, 403, "M_FORBIDDEN")
        .context("/send in an unknown room")?;
    // /event: 404 for an event that does not exist (or that one may not see).
    let event = alice.event(&room, &format!("$doesnotexist:{}", server.server_name())).await?;
    assert_matrix_error(&event, 404, "M_NOT_FOUND").context("/event of an unknown event")?;
    let event = alice.event(&nowhere, "$doesnotexist").await?;
    assert_matrix_error(&event, 404, "M_NOT_FOUND").context("/event in an unknown room")?;
    // Joining a local room that does not exist: the spec lists 403 for /join; 404 M_NOT_FOUND
    // is the established answer for a room the server knows nothing about. Either will do.
    let join = alice.join(&nowhere).await?;
    let forbidden = join.status == 403 && join.errcode() == Some("M_FORBIDDEN");
    let not_found = join.status == 404 && join.errcode() == Some("M_NOT_FOUND");
    if !(forbidden || not_found) {
        bail!(
            "joining an unknown room: expected 403 M_FORBIDDEN or 404 M_NOT_FOUND, got {} {}",
            join.status,
            join.text
        );
    }
    Ok(())
}

/// One `/register` request in token mode (user-interactive auth with
/// `m.login.registration_token`).
async fn register(api: &Api, username: &str, auth: Option<Value>) -> anyhow::Result<kairan_tests::Response> {
    let mut body = json!({ "username": username, "password": PASSWORD, "inhibit_login": false });
    if let Some(auth) = auth {
        body["auth"] = auth;
    }
    api.post("/_matrix/client/v3/register", &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_with_token() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().registration_tokens([REGISTRATION_TOKEN])).await?;
    let anonymous = server.anonymous();

    let validity = |token: &'static str| {
        let anonymous = anonymous.clone();
        async move {
            let path = format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={}", enc(token));
            anyhow::Ok(anonymous.get(&path).await?.ok()?["valid"].clone())
        }
    };
    ensure!(validity(REGISTRATION_TOKEN).await? == json!(true), "the configured token is not valid");
    ensure!(validity("not-the-token").await? == json!(false), "a made-up token is valid");

    // The first request starts user-interactive auth and offers a flow with the
    // registration-token stage (possibly followed by others, e.g. m.login.dummy).
    let start = register(&anonymous, "newcomer", None).await?;
    ensure!(start.status == 401, "expected 401 with UIA flows, got {} {}", start.status, start.text);
    let flow: Vec<String> = start.body["flows"]
        .as_array()
        .and_then(|flows| {
            flows.iter().find_map(|f| {
                let stages: Vec<String> =
                    f["stages"].as_array()?.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect();
                stages.iter().any(|s| s == "m.login.registration_token").then_some(stages)
            })
        })
        .with_context(|| format!("no flow with m.login.registration_token offered: {}", start.text))?;
    let mut session = start.body["session"].as_str().context("UIA response without session")?.to_owned();

    // A wrong token fails the stage.
    let wrong = register(
        &anonymous,
        "newcomer",
        Some(json!({ "type": "m.login.registration_token", "token": "not-the-token", "session": session })),
    )
    .await?;
    ensure!(
        wrong.status == 401 && wrong.body.get("access_token").is_none(),
        "wrong token: {} {}",
        wrong.status,
        wrong.text
    );
    if let Some(s) = wrong.body["session"].as_str() {
        session = s.to_owned();
    }

    // The right one (and whatever stages follow it) registers the account and logs it in.
    let mut last = None;
    for stage in &flow {
        let auth = match stage.as_str() {
            "m.login.registration_token" => json!({ "type": stage, "token": REGISTRATION_TOKEN, "session": session }),
            "m.login.dummy" => json!({ "type": stage, "session": session }),
            other => bail!("cannot complete UIA stage {other} in a test"),
        };
        let response = register(&anonymous, "newcomer", Some(auth)).await?;
        if let Some(s) = response.body["session"].as_str() {
            session = s.to_owned();
        }
        last = Some(response);
    }
    let done = last.context("empty UIA flow")?.ok().context("registration with the right token")?;
    ensure!(done["user_id"] == server.user_id("newcomer"), "{done}");
    let token = done["access_token"].as_str().context("registration did not log in")?;
    let whoami = server.anonymous().with_token(Some(token)).get("/_matrix/client/v3/account/whoami").await?.ok()?;
    ensure!(whoami["user_id"] == server.user_id("newcomer"), "{whoami}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_existing_user_is_user_in_use() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().registration_tokens([REGISTRATION_TOKEN])).await?;
    server.create_users(&["alice"]).await?;
    let anonymous = server.anonymous();
    // The spec: servers MUST check the username, and answer M_USER_IN_USE, before UIA.
    assert_matrix_error(&register(&anonymous, "alice", None).await?, 400, "M_USER_IN_USE")
        .context("register alice before UIA")?;
    let available = anonymous.get("/_matrix/client/v3/register/available?username=alice").await?;
    assert_matrix_error(&available, 400, "M_USER_IN_USE").context("/register/available")?;
    let free = anonymous.get("/_matrix/client/v3/register/available?username=nobody").await?.ok()?;
    ensure!(free["available"] == json!(true), "{free}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_invalid_username() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().registration_tokens([REGISTRATION_TOKEN])).await?;
    let anonymous = server.anonymous();
    for username in ["Not Valid!", "ümlaut", "@alice:localhost"] {
        assert_matrix_error(&register(&anonymous, username, None).await?, 400, "M_INVALID_USERNAME")
            .with_context(|| format!("register {username:?}"))?;
    }
    let available =
        anonymous.get(&format!("/_matrix/client/v3/register/available?username={}", enc("Not Valid!"))).await?;
    assert_matrix_error(&available, 400, "M_INVALID_USERNAME").context("/register/available")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_closed_by_default() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    let response = register(&server.anonymous(), "walkin", None).await?;
    assert_matrix_error(&response, 403, "M_FORBIDDEN").context("register on a closed server")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_room_version() -> anyhow::Result<()> {
    let (_server, alice, _room) = setup(ServerOptions::default()).await?;
    let response = alice.post("/_matrix/client/v3/createRoom", &json!({ "room_version": "999" })).await?;
    assert_matrix_error(&response, 400, "M_UNSUPPORTED_ROOM_VERSION")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_body() -> anyhow::Result<()> {
    let (_server, alice, room) = setup(ServerOptions::default()).await?;
    // 2 MiB: well over any sensible limit for a non-media request.
    let body = json!({ "msgtype": "m.text", "body": "x".repeat(2 * 1024 * 1024) });
    let response = alice
        .put(&send_path(&room, "huge"), &body)
        .await
        .context("the server closed the connection instead of answering 413 (read or drain the body before closing)")?;
    assert_matrix_error(&response, 413, "M_TOO_LARGE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_event() -> anyhow::Result<()> {
    // Under the request limit but over the 65,536-byte limit the spec sets for an event:
    // the event could never be sent over federation, so it must be refused.
    let (_server, alice, room) = setup(ServerOptions::default()).await?;
    let body = json!({ "msgtype": "m.text", "body": "x".repeat(70 * 1024) });
    assert_matrix_error(&alice.put(&send_path(&room, "big"), &body).await?, 413, "M_TOO_LARGE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_burst_is_rate_limited() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default().rate_limits(true)).await?;
    server.create_users(&["alice"]).await?;
    let anonymous = server.anonymous();
    let login = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": PASSWORD,
    });
    // Bursts of concurrent logins, as a password-guessing script would send them, until one
    // is refused. The limit itself is the server's choice; 300 logins in a few seconds from
    // one address must exceed any sensible one.
    const BATCH: usize = 25;
    const BATCHES: usize = 12;
    let mut accepted = 0;
    for _ in 0..BATCHES {
        let responses =
            futures::future::join_all((0..BATCH).map(|_| anonymous.post("/_matrix/client/v3/login", &login))).await;
        let mut limited = None;
        for response in responses {
            let response = response?;
            match response.status {
                200 => accepted += 1,
                429 => limited = Some(response),
                _ => bail!("login after {accepted} accepted: {} {}", response.status, response.text),
            }
        }
        if let Some(response) = limited {
            assert_matrix_error(&response, 429, "M_LIMIT_EXCEEDED")?;
            if let Some(retry) = response.body.get("retry_after_ms") {
                ensure!(retry.is_u64(), "retry_after_ms is not an integer: {}", response.text);
            }
            ensure!(accepted > 0, "even the first logins were rate limited");
            return Ok(());
        }
    }
    bail!("{} logins in bursts of {BATCH} were all accepted with rate limits enabled", BATCH * BATCHES)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_endpoint() -> anyhow::Result<()> {
    let (server, alice, _room) = setup(ServerOptions::default()).await?;
    for api in [&alice, &server.anonymous()] {
        let response = api.get("/_matrix/client/v3/kairan_no_such_endpoint").await?;
        assert_matrix_error(&response, 404, "M_UNRECOGNIZED").context("unknown path")?;
    }
    // A known endpoint with a method it does not support: 405 M_UNRECOGNIZED.
    let response = alice.request(Method::DELETE, "/_matrix/client/versions", None).await?;
    assert_matrix_error(&response, 405, "M_UNRECOGNIZED").context("DELETE /versions")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_forbidden() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let anonymous = server.anonymous();
    let login = |user: &str, password: &str| {
        json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        })
    };
    let wrong = anonymous.post("/_matrix/client/v3/login", &login("alice", "not the password")).await?;
    assert_matrix_error(&wrong, 403, "M_FORBIDDEN").context("wrong password")?;
    // An unknown user gets the same answer, so that logins do not reveal who exists.
    let nobody = anonymous.post("/_matrix/client/v3/login", &login("nobody", "whatever")).await?;
    assert_matrix_error(&nobody, 403, "M_FORBIDDEN").context("unknown user")?;
    Ok(())
}

/// Malformed bodies and parameters across many endpoints: whatever the answer, never a 5xx,
/// and every error is a Matrix error with an `errcode`; the server survives all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_500() -> anyhow::Result<()> {
    let (mut server, alice, room) = setup(ServerOptions::default()).await?;
    let me = alice.me().to_owned();
    let event_id = alice.send_text_ok(&room, "seed", "seed").await?;
    let (r, u, e) = (enc(&room), enc(&me), enc(&event_id));

    let with_bodies: Vec<(Method, String)> = vec![
        (Method::POST, "/_matrix/client/v3/createRoom".into()),
        (Method::PUT, format!("/_matrix/client/v3/rooms/{r}/send/m.room.message/TXN")),
        (Method::PUT, format!("/_matrix/client/v3/rooms/{r}/state/m.room.name/")),
        (Method::PUT, format!("/_matrix/client/v3/rooms/{r}/state/m.room.power_levels/")),
        (Method::PUT, format!("/_matrix/client/v3/rooms/{r}/redact/{e}/TXN")),
        (Method::POST, format!("/_matrix/client/v3/rooms/{r}/invite")),
        (Method::POST, format!("/_matrix/client/v3/rooms/{r}/kick")),
        (Method::POST, format!("/_matrix/client/v3/rooms/{r}/ban")),
        (Method::POST, format!("/_matrix/client/v3/rooms/{r}/receipt/m.read/{e}")),
        (Method::POST, format!("/_matrix/client/v3/rooms/{r}/read_markers")),
        (Method::PUT, format!("/_matrix/client/v3/rooms/{r}/typing/{u}")),
        (Method::POST, "/_matrix/client/v3/login".into()),
        (Method::POST, "/_matrix/client/v3/register".into()),
        (Method::POST, format!("/_matrix/client/v3/user/{u}/filter")),
        (Method::PUT, format!("/_matrix/client/v3/user/{u}/account_data/org.example.test")),
        (Method::PUT, format!("/_matrix/client/v3/profile/{u}/displayname")),
        (Method::POST, "/_matrix/client/v3/keys/upload".into()),
        (Method::POST, "/_matrix/client/v3/keys/query".into()),
        (Method::PUT, "/_matrix/client/v3/sendToDevice/org.example.test/TXN".into()),
    ];
    let bodies: [&[u8]; 7] = [b"", b"{", b"[]", b"null", b"\"text\"", b"{\"a\": {\"b\": [1, 2, {}]}}", b"\xff\xfe"];
    let mut failures = Vec::new();
    let mut txn = 0;
    for (method, path) in &with_bodies {
        for body in bodies {
            txn += 1;
            let path = path.replace("TXN", &format!("garbage-{txn}"));
            let response = raw_body(&alice, method.clone(), &path, body).await?;
            if let Some(problem) = problem(&response) {
                failures.push(format!("{method} {path} body {:?}: {problem}", String::from_utf8_lossy(body)));
            }
        }
    }
    let queries = [
        "/_matrix/client/v3/sync?since=garbage&timeout=0".to_owned(),
        "/_matrix/client/v3/sync?timeout=abc".to_owned(),
        "/_matrix/client/v3/sync?timeout=0&filter=%7Bnot-json".to_owned(),
        "/_matrix/client/v3/sync?timeout=0&filter=no_such_filter_id".to_owned(),
        "/_matrix/client/v3/sync?timeout=-5".to_owned(),
        format!("/_matrix/client/v3/rooms/{r}/messages?dir=x"),
        format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=abc"),
        format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=-1"),
        format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&from=garbage"),
        format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&filter=%7Bnot-json"),
        format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=99999999999999999999"),
        format!("/_matrix/client/v3/rooms/{r}/event/not-an-event-id"),
        format!("/_matrix/client/v3/rooms/{r}/context/{e}?limit=abc"),
        format!("/_matrix/client/v1/rooms/{r}/relations/{e}?limit=abc"),
        format!("/_matrix/client/v1/rooms/{r}/relations/not-an-event-id"),
        "/_matrix/client/v3/rooms/not-a-room-id/messages?dir=b".to_owned(),
        "/_matrix/client/v3/rooms/not-a-room-id/state".to_owned(),
        "/_matrix/client/v3/profile/not-a-user-id".to_owned(),
        format!("/_matrix/client/v3/user/{u}/filter/garbage"),
    ];
    for path in &queries {
        let response = alice.get(path).await?;
        if let Some(problem) = problem(&response) {
            failures.push(format!("GET {path}: {problem}"));
        }
    }
    ensure!(failures.is_empty(), "{} bad answers:\n{}", failures.len(), failures.join("\n"));

    ensure!(server.is_running(), "the server died:\n{}", server.logs());
    let versions =
        tokio::time::timeout(Duration::from_secs(5), server.anonymous().get("/_matrix/client/versions")).await??;
    ensure!(versions.status == 200, "/versions after the garbage: {}", versions.status);
    Ok(())
}

/// What is wrong with a response to bad input, if anything.
fn problem(response: &kairan_tests::Response) -> Option<String> {
    if response.status >= 500 {
        return Some(format!("{} {}", response.status, response.text));
    }
    if response.status >= 400 && !response.errcode().is_some_and(|c| c.starts_with("M_")) {
        return Some(format!("{} without a Matrix errcode: {:?}", response.status, response.text));
    }
    None
}

/// A login body without `type` made ruma's `LoginInfo` deserializer panic (it indexes the
/// JSON object by `"type"`; an empty body counts as `{}`); the panic was caught and answered 400, but a panic on client
/// input is a defect all the same. The extractor refuses such a body before ruma parses it:
/// the same 400, and nothing panics. Found by scripts/schemathesis.sh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_without_type_does_not_panic() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let anonymous = server.anonymous();
    let bodies = [
        json!({}),
        json!({ "identifier": { "type": "m.id.user", "user": "alice" }, "password": PASSWORD }),
        json!({ "token": "abc" }),
    ];
    for body in &bodies {
        let response = anonymous.post("/_matrix/client/v3/login", body).await?;
        assert_matrix_error(&response, 400, "M_BAD_JSON").with_context(|| format!("login with {body}"))?;
    }
    // No body at all: ruma reads it as `{}`.
    let empty = anonymous.request(Method::POST, "/_matrix/client/v3/login", None).await?;
    assert_matrix_error(&empty, 400, "M_BAD_JSON").context("login without a body")?;
    // A `type` that is not a string is ruma's own clean refusal; a real login still works.
    let numeric = anonymous.post("/_matrix/client/v3/login", &json!({ "type": 1 })).await?;
    assert_matrix_error(&numeric, 400, "M_BAD_JSON").context("login with a numeric type")?;
    server.api("alice", PASSWORD).await.context("a well-formed login after the bad ones")?;
    let logs = server.logs();
    ensure!(!logs.contains("panicked"), "the server panicked on a login body:\n{logs}");
    Ok(())
}
