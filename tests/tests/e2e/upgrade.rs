//! Upgrades: the current binary starts on a database written by an earlier release,
//! migrates it once, and serves what the old release stored.
//!
//! The old database is a fixture (tests/fixtures/upgrade/), dumped from a real
//! kairan-homeserver built at commit c6d2796, the release before federation (schema
//! migrations 0001-0007), after it created an account, a room and five messages through
//! the API. A fixture made by the old binary, rather than rows inserted by the test, holds
//! exactly what that release wrote (password hashes, PDUs, state groups, counters) and the
//! checksums of its migrations, so an edit to a released migration fails here too.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, ensure};
use kairan_tests::{Backend, PASSWORD, ServerOptions, TestServer, enc};
use sqlx::Connection as _;

both_backends!(scenario);

/// The newest migration of the old release.
const OLD_SCHEMA: i64 = 7;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("upgrade").join(name)
}

/// The newest migration this source tree has (the binary under test runs them all).
fn newest_migration() -> anyhow::Result<i64> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../homeserver/migrations/sqlite");
    let mut newest = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(Ok(v)) = name.split('_').next().map(str::parse::<i64>) {
            newest = newest.max(v);
        }
    }
    Ok(newest)
}

async fn schema_version(url: &str) -> anyhow::Result<i64> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    let v: i64 = sqlx::query_scalar("SELECT CAST(MAX(version) AS BIGINT) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok(v)
}

async fn scenario(backend: Backend) -> anyhow::Result<()> {
    let mut server = TestServer::prepare(ServerOptions::default().backend(backend)).await?;
    // The old release's data directory and database.
    std::fs::create_dir_all(server.data_dir())?;
    std::fs::copy(fixture("signing.key"), server.signing_key_path())?;
    let (url, dump) = match backend {
        Backend::Sqlite => {
            (format!("sqlite://{}?mode=rwc", server.sqlite_path().display()), fixture("schema-0007.sqlite.sql"))
        }
        Backend::Postgres => {
            (server.postgres_url().context("no test database")?.to_owned(), fixture("schema-0007.postgres.sql"))
        }
    };
    let script = std::fs::read_to_string(&dump).with_context(|| format!("reading {}", dump.display()))?;
    // psql meta-commands (pg_dump's `\restrict`) are not SQL.
    let script: String = script.lines().filter(|l| !l.starts_with('\\')).map(|l| format!("{l}\n")).collect();
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(script)).execute(&mut conn).await.context("loading the fixture")?;
    conn.close().await.ok();
    ensure!(schema_version(&url).await? == OLD_SCHEMA, "the fixture is not of schema {OLD_SCHEMA}");

    // The current binary migrates at start, once.
    server.launch().await?;
    let newest = newest_migration()?;
    ensure!(newest > OLD_SCHEMA, "no migration since the old release: nothing to upgrade");
    ensure!(schema_version(&url).await? == newest, "the database was not migrated to {newest}");

    // What the old release stored is served: the account (its password hash), the room, its
    // state and its messages in order.
    let alice = server.api("alice", PASSWORD).await.context("the old account cannot log in")?;
    let rooms = alice.get("/_matrix/client/v3/joined_rooms").await?.ok()?;
    let rooms = rooms["joined_rooms"].as_array().context("joined_rooms")?.clone();
    ensure!(rooms.len() == 1, "joined rooms: {rooms:?}");
    let room = rooms[0].as_str().context("room ID")?.to_owned();
    let name = alice.state(&room, "m.room.name", "").await?;
    ensure!(name["name"] == "before the upgrade", "room name: {name}");
    let messages =
        alice.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=f&limit=50", enc(&room))).await?.ok()?;
    let bodies: Vec<&str> = messages["chunk"]
        .as_array()
        .context("chunk")?
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    ensure!(
        bodies == ["old message 1", "old message 2", "old message 3", "old message 4", "old message 5"],
        "messages after the upgrade: {bodies:?}"
    );

    // And the upgraded server goes on: a new message lands after the old ones, a sync sees all.
    alice.send_text_ok(&room, "after-upgrade", "new message").await?;
    let sync = alice.sync(None, 0).await?;
    let timeline = &sync["rooms"]["join"][room.as_str()]["timeline"]["events"];
    let last = timeline.as_array().and_then(|t| t.last()).context("empty timeline")?;
    ensure!(last["content"]["body"] == "new message", "last event: {last}");

    // A second start runs nothing again and still serves.
    server.restart().await?;
    ensure!(schema_version(&url).await? == newest, "schema changed on the second start");
    server.api("alice", PASSWORD).await?;
    Ok(())
}
