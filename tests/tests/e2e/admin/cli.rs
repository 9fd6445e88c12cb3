//! The `kairan-admin` binary against a real server: bulk import from CSV, refusals for
//! non-administrators (audited), official rooms, media policy changed live, exact figures,
//! deactivation ending sessions, and the CLI's errors and exit statuses.

use std::{path::PathBuf, process::Stdio};

use anyhow::{Context as _, ensure};
use kairan_tests::{PASSWORD, ServerOptions, TestServer, admin_binary, assert_matrix_error, assert_sdk_error, enc};
use matrix_sdk::{RoomState, ruma::OwnedRoomId};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;

use super::{check_figures_csv, check_figures_json, current_month, seed_activity};
use crate::support::{room_state, sync_until};

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

/// What a run of the CLI gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> anyhow::Result<Self> {
        ensure!(
            self.code == 0,
            "kairan-admin exited with {}:\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(self)
    }

    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("not JSON: {}", self.stdout))
    }

    /// A failure with this exit status and a one-line `kairan-admin: ...` message containing `text`.
    fn failed(&self, code: i32, text: &str) -> anyhow::Result<()> {
        let last = self.stderr.lines().last().unwrap_or("");
        ensure!(
            self.code == code && last.starts_with("kairan-admin: ") && last.contains(text),
            "expected exit {code} and an error with {text:?}, got {}:\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(())
    }
}

/// The CLI with its own config file (and HOME), so that it never touches the real one.
struct AdminCli {
    bin: PathBuf,
    dir: TempDir,
}

impl AdminCli {
    fn new() -> anyhow::Result<Self> {
        Ok(Self { bin: admin_binary()?, dir: tempfile::Builder::new().prefix("kairan-admin-").tempdir()? })
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("conf").join("config.toml")
    }

    fn file(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Run> {
        let mut child = tokio::process::Command::new(&self.bin)
            .args(args)
            .env("KAIRAN_ADMIN_CONFIG", self.config())
            .env("HOME", self.dir.path())
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().context("stdin")?;
            pipe.write_all(input.as_bytes()).await?;
        }
        let out = child.wait_with_output().await?;
        Ok(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<Run> {
        self.run_with_stdin(args, None).await
    }

    async fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.run(&all).await?.ok()?.json()
    }

    /// `login` with the password on stdin.
    async fn login(&self, server: &TestServer, user: &str, password: &str) -> anyhow::Result<Run> {
        self.run_with_stdin(&["login", "--server", &server.url(), "--user", user], Some(&format!("{password}\n"))).await
    }
}

/// A server with an administrator, and the CLI logged in as them.
async fn setup(options: ServerOptions) -> anyhow::Result<(TestServer, AdminCli)> {
    let server = TestServer::start(options).await?;
    server.create_user("admin", PASSWORD, true).await?;
    let cli = AdminCli::new()?;
    let password_file = cli.file("admin-password", &format!("{PASSWORD}\n"))?;
    let login = cli
        .run(&[
            "login",
            "--server",
            &server.url(),
            "--user",
            "admin",
            "--password-file",
            &password_file.to_string_lossy(),
        ])
        .await?
        .ok()?;
    ensure!(login.stdout.contains("@admin:localhost"), "{}", login.stdout);
    Ok((server, cli))
}

const DEPARTMENTS: [&str; 5] = ["総務課", "人事課", "財政課", "企画課", "土木課"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_import_from_csv() -> anyhow::Result<()> {
    let (server, cli) = setup(ServerOptions::default()).await?;
    // The stored login: server and token, readable by its owner only.
    let config = std::fs::read_to_string(cli.config())?;
    ensure!(config.contains(&server.url()) && config.contains("access_token"), "{config}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cli.config())?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "config mode {mode:o}");
    }

    // 500 staff, and three bad rows among them.
    let mut csv = String::from("user_id,displayname,department\n");
    let mut bad_lines = Vec::new();
    for n in 1..=500 {
        csv.push_str(&format!("staff{n:04},職員 {n}号,{}\n", DEPARTMENTS[n % 5]));
        match n {
            100 => {
                csv.push_str("staff9001,列が足りない\n");
                bad_lines.push((csv.lines().count(), "expected 3 columns"));
            }
            250 => {
                csv.push_str("Bad Name,名前,総務課\n");
                bad_lines.push((csv.lines().count(), "not a valid username"));
            }
            400 => {
                csv.push_str("staff0001,二重,総務課\n");
                bad_lines.push((csv.lines().count(), "M_USER_IN_USE"));
            }
            _ => {}
        }
    }
    let csv_path = cli.file("staff.csv", &csv)?;
    let passwords = cli.dir.path().join("passwords.csv");
    let started = std::time::Instant::now();
    let run = cli
        .run(&["users", "import", &csv_path.to_string_lossy(), "--passwords-out", &passwords.to_string_lossy()])
        .await?;
    eprintln!("imported 500 accounts in {:?}", started.elapsed());
    run.failed(1, "3 of 503 rows failed")?;
    for (line, why) in &bad_lines {
        let reported = run.stderr.lines().find(|l| l.contains(&format!("staff.csv line {line}:")));
        let reported = reported.with_context(|| format!("line {line} not reported:\n{}", run.stderr))?;
        ensure!(reported.starts_with("kairan-admin: ") && reported.contains(why), "line {line}: {reported}");
    }
    ensure!(run.stderr.contains("503/503 rows: 500 created, 3 failed"), "progress:\n{}", run.stderr);
    ensure!(run.stderr.lines().filter(|l| l.contains(" rows: ")).count() >= 5, "progress per batch:\n{}", run.stderr);
    ensure!(run.stdout.is_empty(), "passwords went to the file, not stdout: {}", run.stdout);

    // The generated passwords: one per account, in a private file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        ensure!(std::fs::metadata(&passwords)?.permissions().mode() & 0o777 == 0o600, "passwords file mode");
    }
    let text = std::fs::read_to_string(&passwords)?;
    let rows: Vec<(&str, &str)> = text.lines().skip(1).filter_map(|l| l.split_once(',')).collect();
    ensure!(rows.len() == 500, "{} passwords", rows.len());
    let (_, password) = rows.iter().find(|(u, _)| *u == "@staff0250:localhost").context("staff0250's password")?;

    // One of them logs in with matrix-sdk.
    let client = server.client("staff0250", password).await.context("matrix-sdk login of an imported account")?;
    let me = client.whoami().await?;
    ensure!(me.user_id.as_str() == "@staff0250:localhost", "{me:?}");
    let profile = client.account().get_display_name().await?;
    ensure!(profile.as_deref() == Some("職員 250号"), "display name {profile:?}");

    // Listing, by department and as CSV.
    let listed = cli.json(&["users", "list", "--department", "総務課"]).await?;
    ensure!(listed["total"] == 100, "{}", listed["total"]);
    let all = cli.run(&["users", "list", "--all", "--limit", "200", "--csv"]).await?.ok()?;
    ensure!(all.stdout.lines().count() == 1 + 501, "{} CSV lines", all.stdout.lines().count());
    ensure!(all.stdout.contains("@staff0250:localhost,職員 250号,総務課,no,active,"), "{}", all.stdout);
    let table = cli.run(&["users", "list", "--search", "staff0250"]).await?.ok()?;
    ensure!(table.stdout.lines().next().is_some_and(|h| h.starts_with("USER ID")), "{}", table.stdout);
    ensure!(table.stdout.contains("職員 250号"), "{}", table.stdout);

    // Without --passwords-out, generated passwords go to stdout as CSV.
    let small = cli.file("small.csv", "newbie,新人,総務課\n")?;
    let run = cli.run(&["users", "import", &small.to_string_lossy()]).await?.ok()?;
    let line = run.stdout.lines().nth(1).context("a password line")?;
    let (user, password) = line.split_once(',').context("user,password")?;
    ensure!(user == "@newbie:localhost", "{}", run.stdout);
    server.api("newbie", password).await.context("login with a password from stdout")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admins_are_refused_and_audited() -> anyhow::Result<()> {
    let (server, admin_cli) = setup(ServerOptions::default()).await?;
    server.create_users(&["alice", "bob"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "name": "r" })).await?;

    // bob cannot log in as an administrator, and nothing is stored.
    let bob_cli = AdminCli::new()?;
    bob_cli.login(&server, "bob", PASSWORD).await?.failed(4, "not a server administrator")?;
    ensure!(!bob_cli.config().exists(), "a refused login was stored");

    // With a session of bob's in the config anyway, every command is refused.
    let bob = server.api("bob", PASSWORD).await?;
    std::fs::create_dir_all(bob_cli.config().parent().unwrap())?;
    std::fs::write(
        bob_cli.config(),
        format!(
            "server = {:?}\nuser_id = \"@bob:localhost\"\ndevice_id = {:?}\naccess_token = {:?}\n",
            server.url(),
            bob.device_id.as_deref().unwrap_or(""),
            bob.token().unwrap_or("")
        ),
    )?;
    let csv = bob_cli.file("u.csv", "x1,X,Y\n")?;
    let csv = csv.to_string_lossy().into_owned();
    let commands: Vec<Vec<&str>> = vec![
        vec!["users", "create", "mallory"],
        vec!["users", "import", &csv],
        vec!["users", "list"],
        vec!["users", "show", "alice"],
        vec!["users", "deactivate", "alice"],
        vec!["users", "reactivate", "alice"],
        vec!["users", "reset-password", "alice"],
        vec!["users", "set-admin", "bob"],
        vec!["users", "set-department", "bob", "x"],
        vec!["users", "devices", "alice"],
        vec!["users", "delete-device", "alice", "DEV"],
        vec!["tokens", "create"],
        vec!["tokens", "list"],
        vec!["tokens", "revoke", "abc"],
        vec!["rooms", "list"],
        vec!["rooms", "show", &room],
        vec!["rooms", "shutdown", &room],
        vec!["rooms", "purge", &room, "--before", "2020-01-01"],
        vec!["policy", "room", "show", &room],
        vec!["policy", "room", "set", &room, "--department", "x"],
        vec!["policy", "server", "show"],
        vec!["policy", "server", "set-federation", "a.example"],
        vec!["policy", "server", "set-media", "--max-upload", "1M"],
        vec!["policy", "server", "set-registration", "token"],
        vec!["figures", "2026-01"],
        vec!["audit"],
    ];
    for c in &commands {
        let run = bob_cli.run(c).await?;
        run.failed(4, "not a server administrator").with_context(|| format!("kairan-admin {}", c.join(" ")))?;
        ensure!(run.stderr.lines().count() <= 2, "a short error for {c:?}: {}", run.stderr);
    }
    alice.get(WHOAMI).await?.ok().context("alice is untouched")?;

    // Every attempt is in the audit log, as bob's, refused.
    let audit = admin_cli.json(&["audit", "--caller", "bob", "--limit", "1000"]).await?;
    let entries = audit["entries"].as_array().context("entries")?;
    // The commands, and the whoami of bob's refused login.
    ensure!(entries.len() == commands.len() + 1, "{} entries for {} attempts", entries.len(), commands.len() + 1);
    ensure!(entries.iter().all(|e| e["result"] == "M_FORBIDDEN" && e["caller"] == "@bob:localhost"), "{audit}");
    ensure!(entries.iter().any(|e| e["action"] == "users.deactivate" && e["target"] == "@alice:localhost"), "{audit}");
    let table = admin_cli.run(&["audit", "--caller", "bob", "--limit", "3"]).await?.ok()?;
    ensure!(table.stdout.starts_with("TIME") && table.stdout.contains("M_FORBIDDEN"), "{}", table.stdout);
    ensure!(table.stderr.contains("more: add --from"), "{}", table.stderr);
    let csv = admin_cli.run(&["audit", "--target", "alice", "--csv"]).await?.ok()?;
    ensure!(csv.stdout.starts_with("TIME,CALLER,ACTION,TARGET,RESULT,DETAIL"), "{}", csv.stdout);
    ensure!(csv.stdout.lines().skip(1).all(|l| l.contains("@alice:localhost")), "{}", csv.stdout);
    let none = admin_cli.json(&["audit", "--caller", "bob", "--since", "2999-01-01"]).await?;
    ensure!(none["entries"] == json!([]), "{none}");
    admin_cli.run(&["audit", "--since", "last week"]).await?.failed(2, "is not a date")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_room_publishes_policy_and_invites_the_archive() -> anyhow::Result<()> {
    let (server, cli) = setup(ServerOptions::default().archive_user("@archive:localhost")).await?;
    server.create_users(&["alice", "archive"]).await?;
    let archive = server.client("archive", PASSWORD).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "name": "議会対応", "preset": "private_chat" })).await?;
    alice.send_text_ok(&room, "t1", "議事録の案").await?;

    let run = cli
        .run(&[
            "policy",
            "room",
            "set",
            &room,
            "--official",
            "--retention",
            "5y",
            "--on-expiry",
            "transfer",
            "--department",
            "総務課",
        ])
        .await?
        .ok()?;
    ensure!(
        run.stdout.contains("official record, retention 5y") && run.stdout.contains("archive account was invited"),
        "{}",
        run.stdout
    );

    // Members see the policy as room state.
    let path = format!("/_matrix/client/v3/rooms/{}/state/jp.kairan.room.policy/", enc(&room));
    let published = alice.get(&path).await?.ok()?;
    ensure!(
        published == json!({ "official": true, "retention": "5y", "on_expiry": "transfer", "department": "総務課" }),
        "{published}"
    );
    // The archive account is invited: its client sees the invitation.
    let room_id: OwnedRoomId = room.as_str().try_into()?;
    sync_until(&archive, "the archive's invitation", |c| room_state(c, &room_id) == Some(RoomState::Invited)).await?;

    let shown = cli.json(&["policy", "room", "show", &room]).await?;
    ensure!(shown["policy"]["official"] == true && shown["policy"]["department"] == "総務課", "{shown}");
    let text = cli.run(&["rooms", "show", &room]).await?.ok()?;
    ensure!(text.stdout.contains("official record, retention 5y, on expiry transfer, 総務課"), "{}", text.stdout);
    ensure!(
        text.stdout.lines().any(|l| l.starts_with("@archive:localhost ") && l.trim_end().ends_with(" invite")),
        "{}",
        text.stdout
    );
    cli.run(&["rooms", "purge", &room, "--before", "2026-01-01"]).await?.failed(1, "official record")?;
    cli.run(&["policy", "room", "set", &room, "--retention", "7y"]).await?.failed(1, "not a retention class")?;
    cli.run(&["policy", "room", "set", &room, "--on-expiry", "burn"]).await?.failed(2, "invalid value")?;
    cli.run(&["policy", "room", "set", "!nowhere:localhost", "--official"]).await?.failed(5, "no room")?;
    let list = cli.run(&["rooms", "list", "--search", "議会"]).await?.ok()?;
    ensure!(list.stdout.contains(&room) && list.stdout.contains("議会対応"), "{}", list.stdout);
    Ok(())
}

/// Minimal bytes the content sniffer takes for a PNG.
fn png_bytes() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend_from_slice(&[0u8; 8]);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_policy_changes_apply_without_restart() -> anyhow::Result<()> {
    let (server, cli) = setup(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    alice.upload(b"a note".to_vec(), "text/plain", None).await?.ok().context("text, by the file's policy")?;

    cli.run(&["policy", "server", "set-media", "--allow", "image/*"]).await?.ok()?;
    let refused = alice.upload(b"a note".to_vec(), "text/plain", None).await?;
    assert_matrix_error(&refused, 403, "M_FORBIDDEN").context("the next upload after the change")?;
    alice.upload(png_bytes(), "image/png", None).await?.ok().context("an image")?;
    cli.run(&["policy", "server", "set-media", "--max-upload", "10"]).await?.ok()?;
    assert_matrix_error(&alice.upload(png_bytes(), "image/png", None).await?, 413, "M_TOO_LARGE")?;
    cli.run(&["policy", "server", "set-media", "--max-upload", "1M", "--allow", "*/*"]).await?.ok()?;
    alice.upload(b"a note".to_vec(), "text/plain", None).await?.ok().context("text again")?;
    cli.run(&["policy", "server", "set-media", "--allow", "word"]).await?.failed(1, "not a MIME type pattern")?;
    cli.run(&["policy", "server", "set-media", "--max-upload", "lots"]).await?.failed(2, "is not a size")?;

    // The federation allowlist is stored and returned; no stale "not built yet" beside it.
    cli.run(&["policy", "server", "set-federation", "city.example", "*.pref.example"]).await?.ok()?;
    let shown = cli.json(&["policy", "server", "show"]).await?;
    ensure!(shown["federation_allowlist"] == json!(["city.example", "*.pref.example"]), "{shown}");
    ensure!(
        shown["media"]["max_upload_bytes"] == 1024 * 1024 && shown["media"]["allowed_types"] == json!(["*/*"]),
        "{shown}"
    );
    let text = cli.run(&["policy", "server", "show"]).await?.ok()?;
    ensure!(
        text.stdout.contains("city.example, *.pref.example") && !text.stdout.contains("not built yet"),
        "{}",
        text.stdout
    );
    cli.run(&["policy", "server", "set-federation"]).await?.failed(2, "--none")?;
    cli.run(&["policy", "server", "set-federation", "--none"]).await?.ok()?;
    ensure!(cli.json(&["policy", "server", "show"]).await?["federation_allowlist"] == json!([]), "emptied");

    // Registration mode, and a token to register with.
    let validity =
        |t: &str| format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={}", enc(t));
    assert_matrix_error(&server.anonymous().get(&validity("x")).await?, 403, "M_FORBIDDEN")?;
    cli.run(&["policy", "server", "set-registration", "token"]).await?.ok()?;
    let token = cli.run(&["tokens", "create", "--uses", "1", "--expires", "2999-01-01"]).await?.ok()?;
    let token = token.stdout.trim().to_owned();
    ensure!(server.anonymous().get(&validity(&token)).await?.ok()?["valid"] == true, "token valid");
    let list = cli.run(&["tokens", "list"]).await?.ok()?;
    ensure!(list.stdout.contains(&token), "{}", list.stdout);
    cli.run(&["tokens", "revoke", &token]).await?.ok()?;
    ensure!(server.anonymous().get(&validity(&token)).await?.ok()?["valid"] == false, "revoked");
    cli.run(&["tokens", "revoke", &token]).await?.failed(5, "no such registration token")?;
    cli.run(&["policy", "server", "set-registration", "open"]).await?.failed(2, "invalid value")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_are_exact() -> anyhow::Result<()> {
    let (server, cli) = setup(ServerOptions::default()).await?;
    let admin = server.api("admin", PASSWORD).await?;
    let seeded = seed_activity(&server, &admin).await?;
    let month = current_month();
    let f = cli.run(&["figures", &month, "--json"]).await?.ok()?.json()?;
    check_figures_json(&f, &month, &seeded)?;
    let csv = cli.run(&["figures", &month, "--csv"]).await?.ok()?;
    check_figures_csv(&csv.stdout, &month, &seeded)?;
    let table = cli.run(&["figures", &month]).await?.ok()?;
    for expected in ["accounts      5", "active users  3", "active share  60.0%", "messages      6", "総務課", "(none)"]
    {
        ensure!(table.stdout.contains(expected), "{expected:?} not in:\n{}", table.stdout);
    }
    cli.run(&["figures", "2026-13"]).await?.failed(2, "YYYY-MM")?;
    cli.run(&["figures", &month, "--csv", "--json"]).await?.failed(2, "cannot be used with")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_ends_sessions_at_once() -> anyhow::Result<()> {
    let (server, cli) = setup(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let sdk = server.client("alice", PASSWORD).await?;
    let raw = server.api("alice", PASSWORD).await?;
    let devices = cli.json(&["users", "devices", "alice"]).await?;
    ensure!(devices["devices"].as_array().map(Vec::len) == Some(2), "{devices}");

    let run = cli.run(&["users", "deactivate", "alice"]).await?.ok()?;
    ensure!(run.stdout.contains("deactivated @alice:localhost; their sessions have ended"), "{}", run.stdout);
    // Immediately: both sessions are gone.
    assert_matrix_error(&raw.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN").context("raw session")?;
    assert_sdk_error(sdk.whoami().await.map_err(matrix_sdk::Error::from), 401, "M_UNKNOWN_TOKEN")
        .context("matrix-sdk session")?;
    let login = server.anonymous().post("/_matrix/client/v3/login", &json!({
        "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": PASSWORD,
    })).await?;
    assert_matrix_error(&login, 403, "M_USER_DEACTIVATED")?;
    let shown = cli.json(&["users", "show", "alice"]).await?;
    ensure!(shown["deactivated"] == true && shown["sessions"] == 0, "{shown}");
    cli.run(&["users", "deactivate", "alice"]).await?.failed(1, "already deactivated")?;

    // Back, with a new password; then sessions managed one by one.
    let pw = cli.file("alice-pw", "a fresh start\n")?;
    cli.run(&["users", "reactivate", "alice", "--password-file", &pw.to_string_lossy()]).await?.ok()?;
    let one = server.api("alice", "a fresh start").await?;
    let two = server.api("alice", "a fresh start").await?;
    cli.run(&["users", "delete-device", "alice", two.device_id.as_deref().unwrap_or("")]).await?.ok()?;
    assert_matrix_error(&two.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN")?;
    one.get(WHOAMI).await?.ok()?;
    let reset = cli.json(&["users", "reset-password", "alice"]).await?;
    let generated = reset["password"].as_str().context("generated password")?;
    assert_matrix_error(&one.get(WHOAMI).await?, 401, "M_UNKNOWN_TOKEN").context("sessions end on reset")?;
    server.api("alice", generated).await?;
    cli.run(&["users", "set-admin", "alice"]).await?.ok()?;
    ensure!(cli.json(&["users", "show", "alice"]).await?["admin"] == true, "admin granted");
    cli.run(&["users", "set-admin", "admin", "--revoke"]).await?.failed(1, "your own")?;
    cli.run(&["users", "deactivate", "admin"]).await?.failed(1, "your own account")?;

    // Errors: unknown user, bad arguments, unreachable server, logged out.
    cli.run(&["users", "show", "nobody"]).await?.failed(5, "no user @nobody:localhost")?;
    cli.run(&["users", "frobnicate"]).await?.failed(2, "unrecognized subcommand")?;
    cli.run(&["users", "show"]).await?.failed(2, "required")?;
    let elsewhere = AdminCli::new()?;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let run = elsewhere
        .run_with_stdin(&["login", "--server", &format!("http://127.0.0.1:{closed}"), "--user", "admin"], Some("x\n"))
        .await?;
    run.failed(3, "cannot reach the server")?;
    elsewhere.run(&["users", "list"]).await?.failed(4, "not logged in")?;
    elsewhere.login(&server, "admin", "wrong password").await?.failed(4, "invalid username or password")?;
    cli.run(&["logout"]).await?.ok()?;
    ensure!(!cli.config().exists(), "logout forgets the session");
    cli.run(&["users", "list"]).await?.failed(4, "not logged in")?;
    Ok(())
}
