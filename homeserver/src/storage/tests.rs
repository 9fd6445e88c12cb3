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
    media_metadata_and_quarantine,
    events_stream_in_order_and_paginate,
    state_groups_resolve_through_deltas_and_snapshots,
    transactions_and_redactions,
    account_data_receipts_to_device_filters,
    concurrent_writers_get_distinct_ordered_positions,
    e2ee_device_and_one_time_keys,
    e2ee_one_time_key_claims_are_exclusive,
    e2ee_cross_signing_and_device_list_stream,
    e2ee_room_key_backups,
    admin_accounts_and_registration_tokens,
    admin_room_and_server_policy,
    admin_activity_and_figures,
    admin_purge_keeps_state_and_the_latest_event,
    admin_audit_is_append_only,
    a_newer_schema_is_refused,
    server_signing_keys_and_documents,
    federation_queue_outliers_and_state_replacement,
    events_committed_together_fail_alone,
    push_actions_for_hundreds_of_members,
    an_event_arriving_after_its_child_is_no_extremity,
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
        withheld_redaction: None,
        redacted_by: None,
        received: false,
        txn: None,
        txn_key: None,
        push_actions: vec![],
        search_text: None,
        destinations: vec![],
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
    e.txn_key = Some("txn1".into());
    store.persist_event(&e).await.unwrap();
    assert_eq!(store.transaction_event("@a:x", "DEV", "txn1").await.unwrap().as_deref(), Some("$e1"));
    assert_eq!(store.transaction_event("@a:x", "OTHER", "txn1").await.unwrap(), None);
    // The same transaction cannot be stored twice.
    let mut dup = event(2, "!r:x", Some("$e1"), g, None);
    dup.txn = e.txn.clone();
    dup.txn_key = e.txn_key.clone();
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
    let rels = store.relations("!r:x", "$e1", Some("m.annotation"), 0, i64::MAX, false, 10).await.unwrap();
    assert_eq!(rels.len(), 1);
    assert!(store.relations("!r:x", "$e1", Some("m.thread"), 0, i64::MAX, false, 10).await.unwrap().is_empty());
    assert!(store.relations("!other:x", "$e1", None, 0, i64::MAX, false, 10).await.unwrap().is_empty());

    // A redaction of an event not held yet is kept, and the target is stored redacted when
    // the service says so, which forgets what was withheld for it.
    let mut early = event(5, "!r:x", Some("$e4"), g, None);
    early.withheld_redaction =
        Some(PendingRedaction { target: "$e9".into(), redaction: "$e5".into(), only_server: Some("x".into()) });
    store.persist_event(&early).await.unwrap();
    assert!(store.event("$e1").await.unwrap().unwrap().redacted_by.as_deref() == Some("$e3"), "first wins");
    let withheld = store.withheld_redactions_of("$e9", "!r:x").await.unwrap();
    assert_eq!(withheld, vec![early.withheld_redaction.clone().unwrap()]);
    assert!(store.withheld_redactions_of("$e9", "!other:x").await.unwrap().is_empty());
    let mut target = event(9, "!r:x", Some("$e5"), g, None);
    target.redacted_by = Some("$e5".into());
    store.persist_event(&target).await.unwrap();
    assert_eq!(store.event("$e9").await.unwrap().unwrap().redacted_by.as_deref(), Some("$e5"));
    assert!(store.withheld_redactions_of("$e9", "!r:x").await.unwrap().is_empty());
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
    assert_eq!(store.take_to_device("@b:x", "D", 0, t, 100).await.unwrap().len(), 1);
    assert_eq!(store.take_to_device("@b:x", "D", t, t, 100).await.unwrap().len(), 0, "acknowledged messages are gone");

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

async fn e2ee_device_and_one_time_keys(store: &Store) {
    store.create_session("@a:x", "DEV1", Some("phone"), "t1", 1).await.unwrap();
    store.create_session("@a:x", "DEV2", None, "t2", 1).await.unwrap();
    let p1 = store.set_device_keys("@a:x", "DEV1", "{\"k\":1}").await.unwrap().expect("new keys move the stream");
    assert_eq!(store.current_stream_pos().await.unwrap(), p1);
    assert_eq!(store.set_device_keys("@a:x", "DEV1", "{\"k\":1}").await.unwrap(), None, "the same keys change nothing");
    let p2 = store.set_device_keys("@a:x", "DEV1", "{\"k\":2}").await.unwrap().unwrap();
    assert!(p2 > p1);
    // Keys of a device that no longer exists are not served.
    store.set_device_keys("@a:x", "GONE", "{\"k\":3}").await.unwrap();
    let keys = store.device_keys("@a:x").await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].device_id.as_str(), keys[0].key_json.as_str()), ("DEV1", "{\"k\":2}"));
    assert_eq!(keys[0].display_name.as_deref(), Some("phone"));
    assert_eq!(store.device_list_changes("@b:x", p1, p2).await.unwrap(), vec![("@a:x".to_owned(), false)]);
    assert!(store.device_list_changes("@b:x", p2, p2).await.unwrap().is_empty());

    let otk = |id: &str, json: &str| ("signed_curve25519".to_owned(), id.to_owned(), json.to_owned());
    store.add_one_time_keys("@a:x", "DEV1", &[otk("B", "{\"b\":1}")], 10).await.unwrap();
    store.add_one_time_keys("@a:x", "DEV1", &[otk("A", "{\"a\":1}"), otk("C", "{\"c\":1}")], 20).await.unwrap();
    store.add_one_time_keys("@a:x", "DEV1", &[otk("B", "{\"other\":1}")], 30).await.unwrap();
    assert_eq!(
        store.one_time_key("@a:x", "DEV1", "signed_curve25519", "B").await.unwrap().as_deref(),
        Some("{\"b\":1}")
    );
    assert_eq!(store.count_one_time_keys("@a:x", "DEV1").await.unwrap(), vec![("signed_curve25519".to_owned(), 3)]);
    let first = store.claim_one_time_key("@a:x", "DEV1", "signed_curve25519").await.unwrap().unwrap();
    assert_eq!(first.0, "B", "the oldest key goes first");
    assert_eq!(store.claim_one_time_key("@a:x", "DEV1", "signed_curve25519").await.unwrap().unwrap().0, "A");
    assert_eq!(store.count_one_time_keys("@a:x", "DEV1").await.unwrap(), vec![("signed_curve25519".to_owned(), 1)]);
    assert_eq!(store.claim_one_time_key("@a:x", "DEV2", "signed_curve25519").await.unwrap(), None);

    store.set_fallback_key("@a:x", "DEV1", "signed_curve25519", "F1", "{\"f\":1}").await.unwrap();
    assert_eq!(store.unused_fallback_key_types("@a:x", "DEV1").await.unwrap(), vec!["signed_curve25519".to_owned()]);
    let fb = store.claim_fallback_key("@a:x", "DEV1", "signed_curve25519").await.unwrap().unwrap();
    assert_eq!(fb, ("F1".to_owned(), "{\"f\":1}".to_owned()));
    assert!(store.unused_fallback_key_types("@a:x", "DEV1").await.unwrap().is_empty());
    assert!(
        store.claim_fallback_key("@a:x", "DEV1", "signed_curve25519").await.unwrap().is_some(),
        "fallback keys stay"
    );
    store.set_fallback_key("@a:x", "DEV1", "signed_curve25519", "F1", "{\"f\":1}").await.unwrap();
    assert!(store.unused_fallback_key_types("@a:x", "DEV1").await.unwrap().is_empty(), "a repeat keeps it used");
    store.set_fallback_key("@a:x", "DEV1", "signed_curve25519", "F2", "{\"f\":2}").await.unwrap();
    assert_eq!(store.unused_fallback_key_types("@a:x", "DEV1").await.unwrap().len(), 1, "a new key is unused");

    store
        .add_signatures(
            &[("@a:x".into(), "DEV1".into(), "@a:x".into(), "ed25519:ssk".into(), "sig".into())],
            &[("@a:x".into(), None)],
        )
        .await
        .unwrap();
    let p3 = store.delete_device_keys("@a:x", Some(&["DEV1".to_owned()])).await.unwrap().expect("a change");
    assert!(store.device_keys("@a:x").await.unwrap().is_empty());
    assert!(store.count_one_time_keys("@a:x", "DEV1").await.unwrap().is_empty());
    assert!(store.unused_fallback_key_types("@a:x", "DEV1").await.unwrap().is_empty());
    assert!(store.signatures_on("@a:x").await.unwrap().is_empty());
    assert_eq!(store.device_list_changes("@b:x", p3 - 1, p3).await.unwrap().len(), 1);
    assert_eq!(store.delete_device_keys("@a:x", Some(&["DEV1".to_owned()])).await.unwrap(), None);
    assert!(store.delete_device_keys("@a:x", None).await.unwrap().is_some(), "GONE still had keys");
}

async fn e2ee_one_time_key_claims_are_exclusive(store: &Store) {
    let keys: Vec<_> =
        (0..20).map(|i| ("signed_curve25519".to_owned(), format!("K{i:02}"), format!("{{\"i\":{i}}}"))).collect();
    store.add_one_time_keys("@a:x", "D", &keys, 1).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..4 {
                if let Some((id, _)) = store.claim_one_time_key("@a:x", "D", "signed_curve25519").await.unwrap() {
                    got.push(id);
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "no key is handed out twice");
    assert_eq!(n, 20, "every key is handed out once");
}

async fn e2ee_cross_signing_and_device_list_stream(store: &Store) {
    let keys = vec![
        ("master".to_owned(), "MPK".to_owned(), "{\"m\":1}".to_owned()),
        ("self_signing".to_owned(), "SPK".to_owned(), "{\"s\":1}".to_owned()),
    ];
    let p1 = store.set_cross_signing_keys("@a:x", &keys).await.unwrap();
    let got = store.cross_signing_keys("@a:x").await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].key_type.as_str(), got[0].public_key.as_str()), ("master", "MPK"));
    let p2 = store
        .set_cross_signing_keys("@a:x", &[("master".to_owned(), "MPK2".to_owned(), "{\"m\":2}".to_owned())])
        .await
        .unwrap();
    assert!(p2 > p1);
    assert_eq!(store.cross_signing_keys("@a:x").await.unwrap()[0].public_key, "MPK2");

    // @b signs @a's master key with its user-signing key: only @b hears of it.
    let p3 = store
        .add_signatures(
            &[("@a:x".into(), "MPK2".into(), "@b:x".into(), "ed25519:USK".into(), "sig1".into())],
            &[("@a:x".into(), Some("@b:x".into()))],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.device_list_changes("@b:x", p2, p3).await.unwrap(), vec![("@a:x".to_owned(), true)]);
    assert!(store.device_list_changes("@c:x", p2, p3).await.unwrap().is_empty());
    // Signing again replaces the signature.
    store
        .add_signatures(
            &[("@a:x".into(), "MPK2".into(), "@b:x".into(), "ed25519:USK".into(), "sig2".into())],
            &[("@a:x".into(), Some("@b:x".into()))],
        )
        .await
        .unwrap();
    let sigs = store.signatures_on("@a:x").await.unwrap();
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].signature, "sig2");
    assert_eq!(store.add_signatures(&[], &[("@a:x".into(), None)]).await.unwrap(), None);

    // Member events of rooms a user is joined to.
    let g = store.create_state_group("!r:x", &StateMap::new()).await.unwrap();
    let (_, g1) = store.persist_event(&event(1, "!r:x", None, g, Some(("m.room.member", "@a:x")))).await.unwrap();
    let (p, _) =
        store.persist_event(&event(2, "!r:x", Some("$e1"), g1, Some(("m.room.member", "@b:x")))).await.unwrap();
    let changes = store.member_events_in_joined_rooms("@a:x", p - 1, p).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].0.as_str(), changes[0].1.as_str()), ("!r:x", "@b:x"));
    assert!(store.member_events_in_joined_rooms("@c:x", 0, p).await.unwrap().is_empty());
}

async fn e2ee_room_key_backups(store: &Store) {
    assert!(store.backup_version("@a:x", None).await.unwrap().is_none());
    assert_eq!(store.create_backup_version("@a:x", "alg", "{\"pk\":1}").await.unwrap(), 1);
    assert_eq!(store.create_backup_version("@a:x", "alg", "{\"pk\":2}").await.unwrap(), 2);
    assert_eq!(store.create_backup_version("@b:x", "alg", "{}").await.unwrap(), 1, "versions are per user");
    assert_eq!(store.backup_version("@a:x", None).await.unwrap().unwrap().version, 2);
    assert!(store.delete_backup_version("@a:x", 2).await.unwrap());
    assert!(!store.delete_backup_version("@a:x", 2).await.unwrap());
    assert_eq!(store.backup_version("@a:x", None).await.unwrap().unwrap().version, 1);
    assert!(store.backup_version("@a:x", Some(2)).await.unwrap().is_none());
    assert_eq!(store.create_backup_version("@a:x", "alg", "{}").await.unwrap(), 3, "numbers are not reused");
    assert!(store.update_backup_auth_data("@a:x", 3, "{\"pk\":3}").await.unwrap());
    assert!(!store.update_backup_auth_data("@a:x", 2, "{}").await.unwrap());
    let v3 = store.backup_version("@a:x", Some(3)).await.unwrap().unwrap();
    assert_eq!((v3.algorithm.as_str(), v3.auth_data.as_str(), v3.etag), ("alg", "{\"pk\":3}", 0));

    let better = |old: (bool, i64, i64), new: (bool, i64, i64)| (new.0, -new.1, -new.2) > (old.0, -old.1, -old.2);
    let key = |room: &str, s: &str, rank: (bool, i64, i64), json: &str| {
        (room.to_owned(), s.to_owned(), rank, json.to_owned())
    };
    let (count, etag) = store
        .put_backup_keys(
            "@a:x",
            3,
            &[key("!r", "s1", (false, 5, 0), "v1"), key("!r", "s2", (false, 0, 0), "v2")],
            better,
        )
        .await
        .unwrap();
    assert_eq!((count, etag), (2, 1));
    // A worse key changes nothing, not even the etag.
    let (count, etag) =
        store.put_backup_keys("@a:x", 3, &[key("!r", "s1", (false, 9, 0), "worse")], better).await.unwrap();
    assert_eq!((count, etag), (2, 1));
    let (count, etag) = store.put_backup_keys("@a:x", 3, &[key("!q", "s3", (true, 9, 9), "v3")], better).await.unwrap();
    assert_eq!((count, etag), (3, 2));
    store.put_backup_keys("@a:x", 3, &[key("!r", "s1", (true, 7, 0), "verified")], better).await.unwrap();
    let s1 = store.backup_keys("@a:x", 3, Some("!r"), Some("s1")).await.unwrap();
    assert_eq!(s1, vec![("!r".to_owned(), "s1".to_owned(), "verified".to_owned())]);
    assert_eq!(store.backup_keys("@a:x", 3, Some("!r"), None).await.unwrap().len(), 2);
    assert_eq!(store.backup_keys("@a:x", 3, None, None).await.unwrap().len(), 3);
    assert!(store.backup_keys("@a:x", 1, None, None).await.unwrap().is_empty());
    let (count, etag) = store.delete_backup_keys("@a:x", 3, Some("!r"), Some("s2")).await.unwrap();
    assert_eq!((count, etag), (2, 4));
    let (count, _) = store.delete_backup_keys("@a:x", 3, None, None).await.unwrap();
    assert_eq!(count, 0);
    store.put_backup_keys("@a:x", 3, &[key("!r", "s1", (false, 0, 0), "v")], better).await.unwrap();
    assert!(store.delete_backup_version("@a:x", 3).await.unwrap());
    assert_eq!(store.backup_count_etag("@a:x", 3).await.unwrap().0, 0, "a deleted version loses its keys");
}

async fn media_metadata_and_quarantine(store: &Store) {
    let row = media::MediaRow {
        media_id: "m1".into(),
        uploader: "@a:x".into(),
        sha256: "0f".repeat(32),
        size: 5,
        content_type: "text/plain".into(),
        declared_type: Some("image/png".into()),
        upload_name: Some("県庁の資料.txt".into()),
        created_ts: 42,
        quarantined: false,
    };
    store.insert_media(&row).await.unwrap();
    assert_eq!(store.media("m1").await.unwrap().as_ref(), Some(&row));
    assert!(store.insert_media(&row).await.is_err(), "a media ID is taken once");
    // The same content under another ID, without the optional fields.
    let other = media::MediaRow { media_id: "m2".into(), declared_type: None, upload_name: None, ..row.clone() };
    store.insert_media(&other).await.unwrap();
    assert_eq!(store.media("m2").await.unwrap().as_ref(), Some(&other));
    assert_eq!(store.media_count_by_hash(&row.sha256).await.unwrap(), 2);
    assert!(store.set_media_quarantined("m1", true).await.unwrap());
    assert!(store.media("m1").await.unwrap().unwrap().quarantined);
    assert!(!store.media("m2").await.unwrap().unwrap().quarantined, "quarantine is per media ID");
    assert!(store.set_media_quarantined("m1", false).await.unwrap());
    assert!(!store.media("m1").await.unwrap().unwrap().quarantined);
    assert!(!store.set_media_quarantined("nope", true).await.unwrap());
    assert!(store.media("nope").await.unwrap().is_none());
}

fn admin_user<'a>(user_id: &'a str, department: Option<&'a str>, created_ts: i64) -> NewAdminUser<'a> {
    NewAdminUser { user_id, password_hash: Some("hash"), is_admin: false, displayname: user_id, department, created_ts }
}

async fn admin_accounts_and_registration_tokens(store: &Store) {
    assert!(store.admin_create_user(&admin_user("@alice:x", Some("総務課"), 10)).await.unwrap());
    assert!(!store.admin_create_user(&admin_user("@alice:x", None, 11)).await.unwrap(), "a taken ID is refused");
    for (u, d) in [("@bob:x", Some("人事課")), ("@carol:x", Some("総務課")), ("@dave_x:x", None)] {
        store.admin_create_user(&admin_user(u, d, 20)).await.unwrap();
    }
    store.set_profile_field("@bob:x", Some(Some("Bob Tanaka")), None).await.unwrap();
    let a = store.admin_user("@alice:x").await.unwrap().unwrap();
    assert_eq!(
        a,
        AdminUserRow {
            user_id: "@alice:x".into(),
            displayname: Some("@alice:x".into()),
            department: Some("総務課".into()),
            is_admin: false,
            deactivated: false,
            has_password: true,
            created_ts: 10,
            deactivated_ts: None,
        }
    );
    assert!(store.admin_user("@nobody:x").await.unwrap().is_none());

    // Paging in user ID order, with the total.
    let all = UserFilter::default();
    let (page, total) = store.admin_users(&all, None, 2).await.unwrap();
    assert_eq!(total, 4);
    assert_eq!(page.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(), ["@alice:x", "@bob:x"]);
    let (page, _) = store.admin_users(&all, Some("@bob:x"), 10).await.unwrap();
    assert_eq!(page.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(), ["@carol:x", "@dave_x:x"]);
    // Filters: search (ID or display name, case-insensitive, LIKE characters literal), department, flags.
    let search = |s: &str| UserFilter { search: Some(s.into()), ..Default::default() };
    assert_eq!(store.admin_users(&search("TANAKA"), None, 10).await.unwrap().1, 1);
    assert_eq!(store.admin_users(&search("_x"), None, 10).await.unwrap().0[0].user_id, "@dave_x:x");
    assert_eq!(store.admin_users(&search("%"), None, 10).await.unwrap().1, 0);
    let dept = UserFilter { department: Some("総務課".into()), ..Default::default() };
    assert_eq!(store.admin_users(&dept, None, 10).await.unwrap().1, 2);
    assert!(store.set_user_admin("@carol:x", true).await.unwrap());
    assert!(!store.set_user_admin("@nobody:x", true).await.unwrap());
    let admins = UserFilter { admin: Some(true), ..Default::default() };
    assert_eq!(store.admin_users(&admins, None, 10).await.unwrap().0[0].user_id, "@carol:x");
    store.set_user_department("@dave_x:x", Some("財政課")).await.unwrap();
    assert_eq!(store.admin_user("@dave_x:x").await.unwrap().unwrap().department.as_deref(), Some("財政課"));

    // Deactivation time, and reactivation with a new password.
    store.set_deactivated("@bob:x", true).await.unwrap();
    store.set_password_hash("@bob:x", None).await.unwrap();
    store.set_deactivated_ts("@bob:x", 500).await.unwrap();
    let b = store.admin_user("@bob:x").await.unwrap().unwrap();
    assert!(b.deactivated && !b.has_password && b.deactivated_ts == Some(500));
    let gone = UserFilter { deactivated: Some(true), ..Default::default() };
    assert_eq!(store.admin_users(&gone, None, 10).await.unwrap().1, 1);
    assert!(store.reactivate_user("@bob:x", "new hash").await.unwrap());
    let b = store.admin_user("@bob:x").await.unwrap().unwrap();
    assert!(!b.deactivated && b.has_password && b.deactivated_ts.is_none());
    store.create_session("@bob:x", "D1", None, "th1", 1).await.unwrap();
    store.create_session("@bob:x", "D2", None, "th2", 1).await.unwrap();
    assert_eq!(store.session_count("@bob:x").await.unwrap(), 2);

    // Registration tokens.
    assert!(store.create_registration_token("tok-a", Some(1), None).await.unwrap());
    assert!(!store.create_registration_token("tok-a", None, None).await.unwrap());
    assert!(store.create_registration_token("tok-b", None, Some(1_000)).await.unwrap());
    let tokens = store.registration_tokens().await.unwrap();
    assert_eq!(
        tokens[0],
        RegistrationTokenRow { token: "tok-a".into(), uses_allowed: Some(1), completed: 0, expiry_ts: None }
    );
    assert!(store.use_registration_token("tok-a", 10).await.unwrap());
    assert_eq!(store.registration_tokens().await.unwrap()[0].completed, 1);
    assert!(store.delete_registration_token("tok-b").await.unwrap());
    assert!(!store.delete_registration_token("tok-b").await.unwrap());
    assert!(!store.registration_token_valid("tok-b", 10).await.unwrap());
}

async fn admin_room_and_server_policy(store: &Store) {
    store.create_room_row("!a:x", "12", "@alice:x", false, 1).await.unwrap();
    store.create_room_row("!b:x", "10", "@bob:x", true, 2).await.unwrap();
    assert!(store.room_policy("!a:x").await.unwrap().is_none());
    let mut p = RoomPolicyRow {
        room_id: "!a:x".into(),
        official: true,
        retention: Some("5y".into()),
        on_expiry: Some("transfer".into()),
        department: Some("総務課".into()),
        encryption: Some("required".into()),
        allowed_servers: Some("[\"x\"]".into()),
        updated_ts: 5,
        updated_by: "@admin:x".into(),
    };
    store.put_room_policy(&p).await.unwrap();
    assert_eq!(store.room_policy("!a:x").await.unwrap().as_ref(), Some(&p));
    p.official = false;
    p.retention = None;
    p.updated_ts = 6;
    store.put_room_policy(&p).await.unwrap();
    assert_eq!(store.room_policy("!a:x").await.unwrap().as_ref(), Some(&p), "a second write replaces the first");
    p.official = true;
    store.put_room_policy(&p).await.unwrap();

    assert!(!store.is_room_blocked("!b:x").await.unwrap());
    assert!(store.block_room("!b:x", "@admin:x", Some("spam"), 7).await.unwrap());
    assert!(!store.block_room("!b:x", "@admin:x", None, 8).await.unwrap(), "blocking twice is a no-op");
    assert!(store.is_room_blocked("!b:x").await.unwrap());

    let (rooms, total) = store.admin_rooms(None, 10).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!((rooms[0].room_id.as_str(), rooms[0].official, rooms[0].blocked), ("!a:x", true, false));
    assert_eq!((rooms[1].room_id.as_str(), rooms[1].official, rooms[1].blocked), ("!b:x", false, true));
    assert!(rooms[1].is_public && rooms[0].room_version == "12");
    let (rooms, _) = store.admin_rooms(Some("!a:x"), 10).await.unwrap();
    assert_eq!(rooms.len(), 1);

    assert!(store.server_policies().await.unwrap().is_empty());
    store.put_server_policy("media", "{\"max_upload_bytes\":1}", "@admin:x", 1).await.unwrap();
    store.put_server_policy("federation_allowlist", "[]", "@admin:x", 1).await.unwrap();
    store.put_server_policy("media", "{\"max_upload_bytes\":2}", "@admin:x", 2).await.unwrap();
    assert_eq!(
        store.server_policies().await.unwrap(),
        [
            ("federation_allowlist".to_owned(), "[]".to_owned()),
            ("media".to_owned(), "{\"max_upload_bytes\":2}".to_owned())
        ]
    );
}

async fn admin_activity_and_figures(store: &Store) {
    // Accounts: created at 100; bob deactivated at 250; carol created at 300.
    store.admin_create_user(&admin_user("@alice:x", Some("総務課"), 100)).await.unwrap();
    store.admin_create_user(&admin_user("@bob:x", Some("人事課"), 100)).await.unwrap();
    store.admin_create_user(&admin_user("@carol:x", None, 300)).await.unwrap();
    store.set_deactivated("@bob:x", true).await.unwrap();
    store.set_deactivated_ts("@bob:x", 250).await.unwrap();
    let ids = |v: Vec<(String, Option<String>)>| v.into_iter().map(|(u, _)| u).collect::<Vec<_>>();
    let mut during = ids(store.accounts_during(200, 300).await.unwrap());
    during.sort();
    assert_eq!(during, ["@alice:x", "@bob:x"], "bob existed until 250, carol only from 300");
    assert_eq!(ids(store.accounts_during(260, 400).await.unwrap()).len(), 2, "alice and carol");

    // Sync activity: at most one row per user and day.
    store.record_daily_activity("@alice:x", "2026-11-02").await.unwrap();
    store.record_daily_activity("@alice:x", "2026-11-02").await.unwrap();
    store.record_daily_activity("@alice:x", "2026-12-01").await.unwrap();
    assert_eq!(store.last_active_day("@alice:x").await.unwrap().as_deref(), Some("2026-12-01"));
    assert_eq!(store.last_active_day("@carol:x").await.unwrap(), None);

    // Events: carol sends two messages and a state event at 1000+n; a remote user one.
    let g = store.create_state_group("!r:x", &StateMap::new()).await.unwrap();
    let mut prev: Option<String> = None;
    for (n, sender, kind) in [
        (1, "@carol:x", "m.room.message"),
        (2, "@carol:x", "m.room.encrypted"),
        (3, "@carol:x", "m.room.topic"),
        (4, "@remote:y", "m.room.message"),
    ] {
        let mut e = event(n, "!r:x", prev.as_deref(), g, None);
        e.sender = sender.into();
        e.event_type = kind.into();
        store.persist_event(&e).await.unwrap();
        prev = Some(e.event_id);
    }
    let active = store.active_users("2026-11-01", "2026-12-01", 1000, 2000).await.unwrap();
    assert_eq!(ids(active), ["@alice:x", "@carol:x"], "alice synced, carol sent; remote users are not accounts");
    assert_eq!(ids(store.active_users("2026-11-01", "2026-12-01", 0, 1000).await.unwrap()), ["@alice:x"]);
    assert!(store.active_users("2027-01-01", "2027-02-01", 0, 1000).await.unwrap().is_empty());
    assert_eq!(store.message_counts(1000, 2000).await.unwrap(), [("!r:x".to_owned(), None, 2)]);
    assert_eq!(store.message_counts(1000, 1002).await.unwrap(), [("!r:x".to_owned(), None, 1)]);
}

async fn admin_purge_keeps_state_and_the_latest_event(store: &Store) {
    let g = store.create_state_group("!r:x", &StateMap::new()).await.unwrap();
    let (_, g1) = store.persist_event(&event(1, "!r:x", None, g, Some(("m.room.create", "")))).await.unwrap();
    let mut prev = "$e1".to_owned();
    for n in 2..=6 {
        let mut e = event(n, "!r:x", Some(&prev), g1, None);
        e.txn = Some(("@a:x".into(), "D".into(), format!("t{n}")));
        e.txn_key = Some(format!("t{n}"));
        store.persist_event(&e).await.unwrap();
        prev = e.event_id;
    }
    let other = store.create_state_group("!o:x", &StateMap::new()).await.unwrap();
    let mut e = event(7, "!o:x", None, other, None);
    e.origin_server_ts = 1;
    store.persist_event(&e).await.unwrap();
    // Before 1005: $e2..$e4 go; the create event (state) stays, as does everything after.
    assert_eq!(store.purge_history("!r:x", 1005).await.unwrap(), 3);
    for gone in ["$e2", "$e3", "$e4"] {
        assert!(store.event(gone).await.unwrap().is_none(), "{gone}");
    }
    assert_eq!(store.transaction_event("@a:x", "D", "t3").await.unwrap(), None);
    for kept in ["$e1", "$e5", "$e6", "$e7"] {
        assert!(store.event(kept).await.unwrap().is_some(), "{kept}");
    }
    // The forward extremity survives even when it is older than the date.
    assert_eq!(store.purge_history("!r:x", 10_000).await.unwrap(), 1);
    assert!(store.event("$e6").await.unwrap().is_some(), "the latest event is where new events attach");
    assert_eq!(store.forward_extremities("!r:x").await.unwrap(), ["$e6"]);
}

async fn admin_audit_is_append_only(store: &Store) {
    let entry = |ts: i64, caller: Option<&str>, action: &str, target: Option<&str>, result: &str| AuditRow {
        id: 0,
        ts,
        caller: caller.map(str::to_owned),
        action: action.into(),
        target: target.map(str::to_owned),
        params: "{}".into(),
        status: if result == "ok" { 200 } else { 403 },
        result: result.into(),
        detail: None,
        client_ip: Some("127.0.0.1".into()),
    };
    let a = store.append_audit(&entry(100, Some("@admin:x"), "users.create", Some("@a:x"), "ok")).await.unwrap();
    let b = store.append_audit(&entry(200, Some("@eve:x"), "users.list", None, "M_FORBIDDEN")).await.unwrap();
    let c = store.append_audit(&entry(300, None, "whoami", None, "M_MISSING_TOKEN")).await.unwrap();
    assert!(a < b && b < c, "IDs grow");
    let all = store.audit_entries(&AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [c, b, a], "newest first");
    assert_eq!(all[2], AuditRow { id: a, ..entry(100, Some("@admin:x"), "users.create", Some("@a:x"), "ok") });
    let f = |since_ts, until_ts, caller: Option<&str>, target: Option<&str>, before_id| AuditFilter {
        since_ts,
        until_ts,
        caller: caller.map(str::to_owned),
        target: target.map(str::to_owned),
        before_id,
        limit: 10,
    };
    let ids = |v: Vec<AuditRow>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(store.audit_entries(&f(Some(150), Some(300), None, None, None)).await.unwrap()), [b]);
    assert_eq!(ids(store.audit_entries(&f(None, None, Some("@eve:x"), None, None)).await.unwrap()), [b]);
    assert_eq!(ids(store.audit_entries(&f(None, None, None, Some("@a:x"), None)).await.unwrap()), [a]);
    assert_eq!(ids(store.audit_entries(&f(None, None, None, None, Some(c))).await.unwrap()), [b, a]);
    let one = AuditFilter { limit: 1, ..Default::default() };
    assert_eq!(ids(store.audit_entries(&one).await.unwrap()), [c]);

    // The database itself refuses to change or remove entries.
    assert!(sqlx::query("UPDATE admin_audit SET result = 'ok'").execute(&store.pool).await.is_err());
    assert!(sqlx::query("DELETE FROM admin_audit").execute(&store.pool).await.is_err());
    assert_eq!(store.audit_entries(&AuditFilter { limit: 10, ..Default::default() }).await.unwrap().len(), 3);
}

async fn a_newer_schema_is_refused(store: &Store) {
    // As if a newer release had applied a migration this binary does not have.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', TRUE, $1, 0)",
    )
    .bind(vec![0u8; 48])
    .execute(&store.pool)
    .await
    .unwrap();
    let err = store.migrate().await.unwrap_err().to_string();
    assert!(err.contains("schema version 999") && err.contains("newer"), "{err}");
}

async fn server_signing_keys_and_documents(store: &Store) {
    let key = |id: &str, until: i64, expired: Option<i64>| ServerKeyRow {
        key_id: id.to_owned(),
        public_key: format!("pk-{id}"),
        valid_until_ts: until,
        expired_ts: expired,
    };
    assert!(store.server_signing_keys("remote.example").await.unwrap().is_empty());
    assert_eq!(store.server_key_document("remote.example").await.unwrap(), None);
    store.put_server_keys("remote.example", "{\"v\":1}", 100, 10, &[key("ed25519:a", 100, None)]).await.unwrap();
    // A rotation: the new key is current, the old one is kept as expired.
    let keys = [key("ed25519:b", 200, None), key("ed25519:a", 150, Some(150))];
    store.put_server_keys("remote.example", "{\"v\":2}", 200, 20, &keys).await.unwrap();
    let rows = store.server_signing_keys("remote.example").await.unwrap();
    assert_eq!(rows, vec![key("ed25519:a", 150, Some(150)), key("ed25519:b", 200, None)]);
    assert_eq!(store.server_key_document("remote.example").await.unwrap(), Some(("{\"v\":2}".to_owned(), 200)));
    assert!(store.server_signing_keys("other.example").await.unwrap().is_empty());
}

async fn federation_queue_outliers_and_state_replacement(store: &Store) {
    // An event's queue rows are written with it, in order, per destination.
    let g = store.create_state_group("!r:x", &StateMap::new()).await.unwrap();
    let mut e = event(1, "!r:x", None, g, Some(("m.room.create", "")));
    e.destinations = vec!["b.example".into(), "c.example".into()];
    store.persist_event(&e).await.unwrap();
    store.queue(&["b.example".into()], QUEUE_EDU, r#"{"edu_type":"m.typing"}"#).await.unwrap();
    let pdus = store.queued("b.example", QUEUE_PDU, 50).await.unwrap();
    assert_eq!(pdus.len(), 1);
    assert_eq!(pdus[0].payload, e.pdu_json);
    assert_eq!(store.queued("b.example", QUEUE_EDU, 100).await.unwrap().len(), 1);
    let depths = store.queue_depths().await.unwrap();
    assert_eq!(depths.get("b.example"), Some(&2));
    assert_eq!(depths.get("c.example"), Some(&1));
    store.dequeue(&[pdus[0].id]).await.unwrap();
    assert!(store.queued("b.example", QUEUE_PDU, 50).await.unwrap().is_empty());
    // Row IDs are never reused: transaction IDs derived from them stay unique.
    store.queue(&["b.example".into()], QUEUE_PDU, "{}").await.unwrap();
    assert!(store.queued("b.example", QUEUE_PDU, 50).await.unwrap()[0].id > pdus[0].id);

    // Outliers are found by ID but are in no timeline; refused events are neither.
    store.insert_outlier("$out", "!r:x", "{}").await.unwrap();
    let row = store.event("$out").await.unwrap().unwrap();
    assert_eq!((row.stream_ordering, row.room_id.as_str()), (0, "!r:x"));
    assert!(!store.in_timeline("$out").await.unwrap());
    store.insert_rejected("$bad", "!r:x", "{}", "forged", 1).await.unwrap();
    assert!(store.is_rejected("$bad").await.unwrap() && store.event("$bad").await.unwrap().is_none());

    // A transaction is recorded once.
    assert!(!store.received_txn("b.example", "t1").await.unwrap());
    assert!(store.record_received_txn("b.example", "t1", 1).await.unwrap());
    assert!(!store.record_received_txn("b.example", "t1", 2).await.unwrap());
    assert!(store.received_txn("b.example", "t1").await.unwrap());

    // Replacing the current state writes the difference, with memberships, and the extremities.
    let mut state = StateMap::new();
    state.insert(("m.room.create".into(), String::new()), "$e1".into());
    state.insert(("m.room.member".into(), "@b:b.example".into()), "$out".into());
    let memberships = [("$out".to_owned(), "join".to_owned())].into();
    store.replace_current_state("!r:x", &state, &memberships, Some(&["$out".to_owned()])).await.unwrap();
    assert_eq!(store.current_state("!r:x").await.unwrap(), state);
    assert_eq!(store.joined_members("!r:x").await.unwrap(), vec!["@b:b.example".to_owned()]);
    assert_eq!(store.forward_extremities("!r:x").await.unwrap(), vec!["$out".to_owned()]);
    state.remove(&("m.room.member".into(), "@b:b.example".into()));
    store.replace_current_state("!r:x", &state, &std::collections::BTreeMap::new(), None).await.unwrap();
    assert_eq!(store.current_state("!r:x").await.unwrap(), state);
    assert!(store.joined_members("!r:x").await.unwrap().is_empty());

    // Stripped invite state is kept per room and user.
    store.set_invite_stripped_state("!r:x", "@a:x", "[1]").await.unwrap();
    store.set_invite_stripped_state("!r:x", "@a:x", "[2]").await.unwrap();
    assert_eq!(store.invite_stripped_state("!r:x", "@a:x").await.unwrap().as_deref(), Some("[2]"));
}

/// Events persisted at once share commits (group commit); one that cannot be written
/// (here: an event ID already taken) fails alone, the others are all stored with
/// distinct positions.
async fn events_committed_together_fail_alone(store: &Store) {
    let group = store.create_state_group("!g:x", &StateMap::new()).await.unwrap();
    store.persist_event(&event(0, "!g:x", None, group, None)).await.unwrap();
    let mut tasks = Vec::new();
    for n in 1..=40 {
        let store = store.clone();
        // Each event in a room of its own, as the room lock allows; event 20 reuses $e0.
        let mut ev = event(n, &format!("!g{n}:x"), None, group, None);
        if n == 20 {
            ev.event_id = "$e0".to_owned();
        }
        tasks.push(tokio::spawn(async move { (n, store.persist_event(&ev).await) }));
    }
    let mut positions = Vec::new();
    for t in tasks {
        let (n, result) = t.await.unwrap();
        match result {
            Ok((pos, _)) => {
                assert_ne!(n, 20, "the duplicate event was stored");
                positions.push(pos);
            }
            Err(e) => assert_eq!(n, 20, "event {n} failed: {e}"),
        }
    }
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), 39, "every other event stored with a position of its own");
    for n in (1..=40).filter(|n| *n != 20) {
        assert!(store.event(&format!("$e{n}")).await.unwrap().is_some(), "event {n} missing");
    }
}

/// A message in a room of hundreds of members stores a push action for each of them
/// (in several multi-row statements) and each member's unread count sees it.
async fn push_actions_for_hundreds_of_members(store: &Store) {
    let group = store.create_state_group("!p:x", &StateMap::new()).await.unwrap();
    let mut ev = event(1, "!p:x", None, group, None);
    ev.push_actions = (0..250)
        .map(|i| PushAction {
            user_id: format!("@u{i}:x"),
            thread_id: "main".to_owned(),
            highlight: i % 100 == 7,
            actions: "[\"notify\"]".to_owned(),
        })
        .collect();
    let (pos, _) = store.persist_event(&ev).await.unwrap();
    for (user, highlight) in [("@u0:x", 0), ("@u107:x", 1), ("@u249:x", 0)] {
        let counts = store.unread_by_thread(user, "!p:x", |_| 0, pos).await.unwrap();
        assert_eq!(counts, vec![("main".to_owned(), 1, highlight)], "{user}");
    }
    assert!(store.unread_by_thread("@u250:x", "!p:x", |_| 0, pos).await.unwrap().is_empty());
}

/// The child of an event came first (through a gap); when the event itself arrives it
/// replaces its own parent as an extremity only if nothing builds on it: here its child
/// does, so the child stays the one extremity (extremities used to leak this way).
async fn an_event_arriving_after_its_child_is_no_extremity(store: &Store) {
    let g = store.create_state_group("!late:x", &StateMap::new()).await.unwrap();
    let mut root = event(1, "!late:x", None, g, None);
    root.received = true;
    store.persist_event(&root).await.unwrap();
    let mut child = event(3, "!late:x", Some("$e2"), g, None);
    child.received = true;
    store.persist_event(&child).await.unwrap();
    assert_eq!(store.forward_extremities("!late:x").await.unwrap(), vec!["$e1".to_owned(), "$e3".to_owned()]);
    let mut late = event(2, "!late:x", Some("$e1"), g, None);
    late.received = true;
    store.persist_event(&late).await.unwrap();
    assert_eq!(store.forward_extremities("!late:x").await.unwrap(), vec!["$e3".to_owned()]);
    // And one that arrives late with no extremity as parent is not added either.
    let mut orphan_child = event(5, "!late:x", Some("$e4"), g, None);
    orphan_child.received = true;
    store.persist_event(&orphan_child).await.unwrap();
    let mut orphan = event(4, "!late:x", Some("$e9"), g, None);
    orphan.received = true;
    store.persist_event(&orphan).await.unwrap();
    assert_eq!(store.forward_extremities("!late:x").await.unwrap(), vec!["$e3".to_owned(), "$e5".to_owned()]);
}
