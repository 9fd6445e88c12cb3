//! The storage contract, written once and run against every backend.
//!
//! `storage_tests!` instantiates each test for SQLite (a temporary file) and for
//! PostgreSQL (a fresh database on `KAIRAN_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, dropped afterwards).

use super::*;

/// A store on a throwaway database, removed on drop.
struct TestDb {
    store: Store,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

fn pg_admin_url() -> String {
    std::env::var("KAIRAN_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        Self { store: Store::open(&url, 4).await.unwrap(), _dir: Some(dir), pg: None }
    }

    async fn postgres() -> Self {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let admin = pg_admin_url();
        let name = format!("kairan_unit_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::AnyConnection::connect(&admin).await.expect("PostgreSQL on 127.0.0.1:5432 is required");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.unwrap();
        conn.close().await.unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
        let store = Store::open(&format!("{base}/{name}"), 4).await.unwrap();
        Self { store, _dir: None, pg: Some((admin, name)) }
    }

    async fn cleanup(self) {
        use sqlx::Connection;
        self.store.close().await;
        if let Some((admin, name)) = self.pg {
            let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
            conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await.unwrap();
        }
    }
}

macro_rules! storage_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(&db.store).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::TestDb::postgres().await;
                    super::$name(&db.store).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

storage_tests!(
    accounts_and_sessions,
    events_stream_in_order_and_paginate,
    state_groups_resolve_through_deltas_and_snapshots,
    transactions_and_redactions,
    account_data_receipts_to_device_filters,
    concurrent_writers_get_distinct_ordered_positions,
);

fn event(n: i64, room: &str, prev: Option<&str>, group: i64, state: Option<(&str, &str)>) -> NewEvent {
    NewEvent {
        event_id: format!("$e{n}"),
        room_id: room.to_owned(),
        sender: "@a:x".to_owned(),
        event_type: state.map_or("m.room.message", |s| s.0).to_owned(),
        state_key: state.map(|s| s.1.to_owned()),
        depth: n,
        origin_server_ts: 1000 + n,
        pdu_json: format!("{{\"n\":{n}}}"),
        prev_events: prev.map(|p| vec![p.to_owned()]).unwrap_or_default(),
        state_group_before: group,
        state_delta: match state {
            Some((t, k)) => {
                StateDelta::Set { event_type: t.to_owned(), state_key: k.to_owned(), event_id: format!("$e{n}") }
            }
            None => StateDelta::Unchanged,
        },
        replaces_state: None,
        membership: state.filter(|s| s.0 == "m.room.member").map(|_| "join".to_owned()),
        rel_type: None,
        relates_to: None,
        redacts: None,
        txn: None,
    }
}

async fn accounts_and_sessions(store: &Store) {
    assert!(store.create_user("@a:x", Some("hash"), false, "a", 1).await.unwrap());
    assert!(!store.create_user("@a:x", None, true, "a", 2).await.unwrap(), "a taken ID must be refused");
    let u = store.user("@a:x").await.unwrap().unwrap();
    assert_eq!(u.password_hash.as_deref(), Some("hash"));
    assert!(!u.is_admin && !u.deactivated);
    store.create_session("@a:x", "DEV1", Some("phone"), "t1", 5).await.unwrap();
    store.create_session("@a:x", "DEV2", None, "t2", 6).await.unwrap();
    assert_eq!(store.session_by_token("t1").await.unwrap(), Some(("@a:x".into(), "DEV1".into())));
    // Logging in again on a device replaces its token.
    store.create_session("@a:x", "DEV1", None, "t3", 7).await.unwrap();
    assert_eq!(store.session_by_token("t1").await.unwrap(), None);
    assert_eq!(store.devices("@a:x").await.unwrap().len(), 2);
    assert!(store.rename_device("@a:x", "DEV2", Some("laptop")).await.unwrap());
    assert!(!store.rename_device("@a:x", "NOPE", Some("x")).await.unwrap());
    store.delete_devices("@a:x", Some(&["DEV2".to_owned()])).await.unwrap();
    assert_eq!(store.session_by_token("t2").await.unwrap(), None);
    store.set_deactivated("@a:x", true).await.unwrap();
    assert_eq!(store.session_by_token("t3").await.unwrap(), None, "a deactivated user's tokens stop working");
}

async fn events_stream_in_order_and_paginate(store: &Store) {
    let g = store.create_state_group("!r:x", &StateMap::new()).await.unwrap();
    let (p1, g1) = store.persist_event(&event(1, "!r:x", None, g, Some(("m.room.create", "")))).await.unwrap();
    let mut last = p1;
    let mut prev = "$e1".to_owned();
    for n in 2..=30 {
        let (p, _) = store.persist_event(&event(n, "!r:x", Some(&prev), g1, None)).await.unwrap();
        assert!(p > last, "stream positions increase");
        last = p;
        prev = format!("$e{n}");
    }
    assert_eq!(store.current_stream_pos().await.unwrap(), last);
    assert_eq!(store.forward_extremities("!r:x").await.unwrap(), vec!["$e30".to_owned()]);
    let back = store.room_events("!r:x", 0, last, true, 10).await.unwrap();
    assert_eq!(back.first().unwrap().event_id, "$e30");
    assert_eq!(back.len(), 10);
    let next = store.room_events("!r:x", 0, back.last().unwrap().stream_ordering - 1, true, 100).await.unwrap();
    assert_eq!(next.len(), 20);
    assert_eq!(next.last().unwrap().event_id, "$e1");
    let fwd = store.room_events("!r:x", 0, last, false, 5).await.unwrap();
    let ids: Vec<_> = fwd.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids, ["$e1", "$e2", "$e3", "$e4", "$e5"]);
    assert_eq!(store.last_event_at("!r:x", p1).await.unwrap().unwrap().event_id, "$e1");
    assert!(store.event("$nope").await.unwrap().is_none());
}

async fn state_groups_resolve_through_deltas_and_snapshots(store: &Store) {
    let mut group = store.create_state_group("!r:x", &StateMap::new()).await.unwrap();
    let mut prev: Option<String> = None;
    // More members than the longest delta chain, so snapshots are taken on the way.
    for n in 1..=150 {
        let key = format!("@u{n}:x");
        let (_, g) = store
            .persist_event(&event(n, "!r:x", prev.as_deref(), group, Some(("m.room.member", &key))))
            .await
            .unwrap();
        group = g;
        prev = Some(format!("$e{n}"));
    }
    let state = store.state_group(group).await.unwrap();
    assert_eq!(state.len(), 150);
    assert_eq!(state.get(&("m.room.member".into(), "@u77:x".into())).unwrap(), "$e77");
    assert_eq!(store.current_state("!r:x").await.unwrap(), state);
    assert_eq!(store.membership("!r:x", "@u3:x").await.unwrap().as_deref(), Some("join"));
    assert_eq!(store.rooms_with_membership("@u3:x", "join").await.unwrap(), vec!["!r:x".to_owned()]);
    // An earlier group still answers with the state of its time.
    let row = store.event("$e10").await.unwrap().unwrap();
    assert_eq!(store.state_group(row.state_group).await.unwrap().len(), 10);
    assert_eq!(store.state_group(row.state_group_before).await.unwrap().len(), 9);
}

async fn transactions_and_redactions(store: &Store) {
    let g = store.create_state_group("!r:x", &StateMap::new()).await.unwrap();
    let mut e = event(1, "!r:x", None, g, None);
    e.txn = Some(("@a:x".into(), "DEV".into(), "txn1".into()));
    store.persist_event(&e).await.unwrap();
    assert_eq!(store.transaction_event("@a:x", "DEV", "txn1").await.unwrap().as_deref(), Some("$e1"));
    assert_eq!(store.transaction_event("@a:x", "OTHER", "txn1").await.unwrap(), None);
    // The same transaction cannot be stored twice.
    let mut dup = event(2, "!r:x", Some("$e1"), g, None);
    dup.txn = e.txn.clone();
    assert!(store.persist_event(&dup).await.is_err());
    assert!(store.event("$e2").await.unwrap().is_none(), "a failed persist leaves nothing behind");
    let mut red = event(3, "!r:x", Some("$e1"), g, None);
    red.redacts = Some("$e1".into());
    store.persist_event(&red).await.unwrap();
    assert_eq!(store.event("$e1").await.unwrap().unwrap().redacted_by.as_deref(), Some("$e3"));
    let mut rel = event(4, "!r:x", Some("$e3"), g, None);
    rel.rel_type = Some("m.annotation".into());
    rel.relates_to = Some("$e1".into());
    store.persist_event(&rel).await.unwrap();
    let rels = store.relations("$e1", Some("m.annotation"), 0, i64::MAX, false, 10).await.unwrap();
    assert_eq!(rels.len(), 1);
    assert!(store.relations("$e1", Some("m.thread"), 0, i64::MAX, false, 10).await.unwrap().is_empty());
}

async fn account_data_receipts_to_device_filters(store: &Store) {
    let p1 = store.put_account_data("@a:x", "", "m.direct", "{}").await.unwrap();
    let p2 = store.put_account_data("@a:x", "!r:x", "m.tag", "{\"tags\":{}}").await.unwrap();
    assert!(p2 > p1);
    let p3 = store.put_account_data("@a:x", "", "m.direct", "{\"a\":1}").await.unwrap();
    let since = store.account_data_since("@a:x", p2, p3).await.unwrap();
    assert_eq!(since, vec![("".to_owned(), "m.direct".to_owned(), "{\"a\":1}".to_owned())]);
    assert_eq!(store.account_data("@a:x", "", "m.direct").await.unwrap().as_deref(), Some("{\"a\":1}"));

    let r = store.put_receipt("!r:x", "m.read", "@a:x", "", "$e", 5).await.unwrap();
    assert_eq!(store.receipts_since("!r:x", r - 1, r).await.unwrap().len(), 1);
    assert!(store.receipts_since("!r:x", r, r).await.unwrap().is_empty());

    let msgs = vec![("@b:x".to_owned(), "D".to_owned(), "{}".to_owned())];
    let t = store.put_to_device("@a:x", "A", "txn", "m.test", &msgs).await.unwrap().unwrap();
    assert_eq!(
        store.put_to_device("@a:x", "A", "txn", "m.test", &msgs).await.unwrap(),
        None,
        "a retried transaction is not delivered twice"
    );
    assert_eq!(store.take_to_device("@b:x", "D", 0, t).await.unwrap().len(), 1);
    assert_eq!(store.take_to_device("@b:x", "D", t, t).await.unwrap().len(), 0, "acknowledged messages are gone");

    assert_eq!(store.put_filter("@a:x", "{\"x\":1}").await.unwrap(), 0);
    assert_eq!(store.put_filter("@a:x", "{\"x\":2}").await.unwrap(), 1);
    assert_eq!(store.filter("@a:x", 1).await.unwrap().as_deref(), Some("{\"x\":2}"));
    assert_eq!(store.filter("@b:x", 1).await.unwrap(), None);

    store.set_presence("@a:x", "online", Some("at desk"), 9).await.unwrap();
    assert_eq!(store.presence("@a:x").await.unwrap().unwrap().1.as_deref(), Some("at desk"));
}

async fn concurrent_writers_get_distinct_ordered_positions(store: &Store) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for j in 0..10 {
                got.push(store.put_account_data("@a:x", "", &format!("t{i}.{j}"), "{}").await.unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 80, "no two writes share a position");
    assert_eq!(store.current_stream_pos().await.unwrap(), *all.last().unwrap());
}
