//! Storage tests, written once and run on SQLite and on PostgreSQL (env
//! `KAIRAN_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`): appending
//! with deduplication, concurrent appenders, signed heads, verification, holds and disposal.

use std::path::Path;

use ed25519_dalek::SigningKey;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

use crate::{
    archive::Archive,
    office::{self, Decision},
    record::{NewRecord, kind},
    retention::Retention,
    verify::{self, Keys},
};
use kairan_types::room_policy::RoomPolicy;

const ROOM: &str = "!room:localhost";

macro_rules! both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    let dir = tempfile::tempdir()?;
                    let url = format!("sqlite://{}", dir.path().join("archive.db").display());
                    let archive = crate::archive::Archive::open(&url).await?;
                    super::$scenario(archive, dir.path()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    let dir = tempfile::tempdir()?;
                    let db = super::TestDb::create().await?;
                    let archive = crate::archive::Archive::open(&db.url).await?;
                    let result = super::$scenario(archive, dir.path()).await;
                    db.drop().await;
                    result
                }
            )*
        }
    };
}

both_backends!(
    append_dedup_and_verify,
    concurrent_appends_leave_no_gaps,
    disposal_and_holds,
    holds_cover_what_arrived_in_their_range
);

struct TestDb {
    admin: String,
    name: String,
    url: String,
}

impl TestDb {
    async fn create() -> anyhow::Result<Self> {
        let admin = std::env::var("KAIRAN_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("kairan_bridge_test_{:016x}", rand::random::<u64>());
        let mut conn = PgConnection::connect(&admin).await?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        conn.close().await.ok();
        let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
        Ok(Self { url: format!("{base}/{name}"), admin, name })
    }

    async fn drop(&self) {
        if let Ok(mut conn) = PgConnection::connect(&self.admin).await {
            sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
                .execute(&mut conn)
                .await
                .ok();
            conn.close().await.ok();
        }
    }
}

fn key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

fn event(id: &str, ts: i64, retention: &str, on_expiry: &str) -> NewRecord {
    let policy = RoomPolicy {
        official: true,
        retention: Some(retention.into()),
        on_expiry: Some(on_expiry.into()),
        ..Default::default()
    };
    let r = Retention::for_record(&policy, ts);
    NewRecord {
        kind: kind::EVENT.into(),
        dedup_key: Some(format!("event:{id}")),
        room_id: Some(ROOM.into()),
        event_id: Some(id.into()),
        event_type: Some("m.room.message".into()),
        sender: Some("@alice:localhost".into()),
        origin_ts: Some(ts),
        retention: r.class,
        expires: r.expires,
        on_expiry: r.on_expiry,
        payload: format!(r#"{{"event_id":"{id}","type":"m.room.message","content":{{"body":"hello {id}"}}}}"#)
            .into_bytes(),
        note: None,
    }
}

async fn check(archive: &Archive, dir: &Path, key: &SigningKey) -> anyhow::Result<verify::Report> {
    verify::verify(archive, dir, &Keys { bridge: key.verifying_key(), cosigners: vec![] }).await
}

async fn append_dedup_and_verify(archive: Archive, dir: &Path) -> anyhow::Result<()> {
    let key = key();
    let seqs =
        archive.append(&key, vec![event("$a", 1_000, "5y", "dispose"), event("$b", 2_000, "5y", "dispose")]).await?;
    assert_eq!(seqs, vec![Some(0), Some(1)]);
    // The same event again: nothing appended.
    let again =
        archive.append(&key, vec![event("$a", 1_000, "5y", "dispose"), event("$c", 3_000, "5y", "dispose")]).await?;
    assert_eq!(again, vec![None, Some(2)]);
    assert_eq!(archive.size().await?, 3);
    let head = archive.sign_head(&key, true).await?.expect("a head");
    assert_eq!(head.tree_size, 3);
    assert!(archive.sign_head(&key, true).await?.is_none(), "no new head without new records");
    let report = check(&archive, dir, &key).await?;
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!((report.records, report.heads), (3, 1));
    // A changed payload is named.
    sqlx::query("UPDATE records SET payload = $1 WHERE seq = 1")
        .bind(b"{\"tampered\":true}".to_vec())
        .execute(archive.pool())
        .await?;
    let report = check(&archive, dir, &key).await?;
    let first = report.first_problem.expect("a problem");
    assert_eq!((first.seq, first.event_id.as_deref()), (Some(1), Some("$b")), "{first}");
    // Another key's signatures are not the bridge's.
    let report =
        verify::verify(&archive, dir, &Keys { bridge: self::key().verifying_key(), cosigners: vec![] }).await?;
    assert_eq!(report.first_problem.expect("a problem").seq, Some(0));
    archive.close().await;
    Ok(())
}

async fn concurrent_appends_leave_no_gaps(archive: Archive, dir: &Path) -> anyhow::Result<()> {
    let key = key();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (archive, key) = (archive.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                // Half of the events are shared between two tasks: exactly one wins.
                let id = format!("$e{}", (t / 2) * 100 + i);
                archive.append(&key, vec![event(&id, i, "1y", "transfer")]).await?;
                if i % 10 == 0 {
                    archive.sign_head(&key, true).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    assert_eq!(archive.size().await?, 50);
    let report = check(&archive, dir, &key).await?;
    assert!(report.ok, "{:?}", report.problems);
    archive.close().await;
    Ok(())
}

async fn disposal_and_holds(archive: Archive, dir: &Path) -> anyhow::Result<()> {
    let key = key();
    // 2020-05-01 JST and 2020-06-01 JST; under 1 year, dispose; one for transfer.
    let may = 1_588_258_800_000;
    let june = 1_590_937_200_000;
    archive
        .append(
            &key,
            vec![
                event("$old", may, "under1y", "dispose"),
                event("$held", june, "under1y", "dispose"),
                event("$kept", may, "under1y", "transfer"),
                event("$young", may, "5y", "dispose"),
            ],
        )
        .await?;
    let decision = Decision { by: "文書課".into(), reference: "R2-廃棄-1".into() };
    // Bounded on both sides: every record here reached the archive today, which an open
    // hold would cover (a hold covers a record by its date or by when it was archived).
    let hold = office::set_hold(&archive, &key, ROOM, Some(june - 1), Some(june + 1), "訴訟", &decision).await?;
    let as_of = crate::retention::parse_date("2021-01-01")?;
    let outcome = office::dispose(&archive, &key, dir, ROOM, as_of, &decision, false).await?;
    assert_eq!(outcome.disposed_events, vec!["$old".to_owned()]);
    assert_eq!((outcome.held, outcome.kept_for_transfer, outcome.not_expired), (1, 1, 1));
    let report = check(&archive, dir, &key).await?;
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.disposed, 1);
    // A payload removed without a disposal is tampering.
    sqlx::query("UPDATE records SET payload = NULL WHERE event_id = '$kept'").execute(archive.pool()).await?;
    let report = check(&archive, dir, &key).await?;
    assert_eq!(report.first_problem.expect("a problem").event_id.as_deref(), Some("$kept"));
    sqlx::query("DELETE FROM records WHERE event_id = '$kept'").execute(archive.pool()).await?;
    let report = check(&archive, dir, &key).await?;
    let first = report.first_problem.expect("a problem");
    assert_eq!(first.seq, Some(2), "{first}");
    office::release_hold(&archive, &key, hold, "終結", &decision).await?;
    assert!(office::list_holds(&archive, Some(ROOM)).await?.is_empty());
    archive.close().await;
    Ok(())
}

/// A record that arrived during a hold is held whatever date its sender put on it: a
/// server dating its events years back cannot take them out of a hold.
async fn holds_cover_what_arrived_in_their_range(archive: Archive, dir: &Path) -> anyhow::Result<()> {
    let key = key();
    let may_2020 = 1_588_258_800_000;
    archive.append(&key, vec![event("$predated", may_2020, "under1y", "dispose")]).await?;
    let decision = Decision { by: "文書課".into(), reference: "R8-保留-1".into() };
    let started = crate::retention::now_ms() - 60_000;
    office::set_hold(&archive, &key, ROOM, Some(started), None, "訴訟", &decision).await?;
    let as_of = crate::retention::parse_date("2021-01-01")?;
    let outcome = office::dispose(&archive, &key, dir, ROOM, as_of, &decision, false).await?;
    assert!(outcome.disposed_events.is_empty(), "a record that arrived during the hold was disposed of");
    assert_eq!(outcome.held, 1);
    archive.close().await;
    Ok(())
}
