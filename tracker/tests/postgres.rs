//! The PostgreSQL backend on a real, throwaway cluster: the store's
//! conformance properties, a schema upgrade from the previous version, and
//! 503s with JSON bodies while the database is gone, recovering after.
//! These run whatever `SHOAL_TEST_STORAGE` says: PostgreSQL is required.

#![allow(clippy::unwrap_used)]

mod common;

use shoal_tracker::store::postgres::{MIGRATIONS, PgOptions, PgStore, SCHEMA_VERSION};
use shoal_tracker::store::{Store as _, Table};
use std::time::Duration;

fn connect(pg: &common::pg::Pg) -> PgStore {
    PgStore::connect(&PgOptions {
        url: pg.url(),
        pool_size: 4,
        timeout: Duration::from_secs(2),
    })
    .unwrap()
}

#[tokio::test]
async fn the_postgres_store_passes_conformance() {
    let pg = common::pg::Pg::start();
    let store = connect(&pg);
    assert_eq!(store.schema_version().await.unwrap(), 0);
    assert!(
        store.check_schema().await.is_err(),
        "an empty database is refused"
    );
    assert_eq!(
        store.migrate().await.unwrap(),
        MIGRATIONS.iter().map(|m| m.0).collect::<Vec<_>>()
    );
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "migrations apply once"
    );
    store.check_schema().await.unwrap();
    shoal_tracker::store::conformance(&store).await.unwrap();
}

#[tokio::test]
async fn a_database_of_the_previous_schema_upgrades_with_its_records() {
    let pg = common::pg::Pg::start();
    let store = connect(&pg);
    let previous = SCHEMA_VERSION - 1;
    assert_eq!(
        store.migrate_to(previous).await.unwrap().len(),
        previous as usize
    );
    assert_eq!(store.schema_version().await.unwrap(), previous);
    // records written by the previous version
    store.put(Table::Accounts, b"acc_1", b"{}").await.unwrap();
    assert_eq!(store.increment("seq/acc").await.unwrap(), 1);
    // the tracker refuses to serve it until migrated
    assert!(store.check_schema().await.is_err());
    // two replicas starting at once: each step applied exactly once
    let other = connect(&pg);
    let (a, b) = tokio::join!(store.migrate(), other.migrate());
    let mut applied = a.unwrap();
    applied.extend(b.unwrap());
    assert_eq!(applied, vec![SCHEMA_VERSION]);
    store.check_schema().await.unwrap();
    assert_eq!(
        store
            .get(Table::Accounts, b"acc_1")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"{}"[..])
    );
    assert_eq!(store.increment("seq/acc").await.unwrap(), 2);
}

#[tokio::test]
async fn concurrent_commits_on_one_record_serialise() {
    use shoal_tracker::store::{Expect, Write};
    let pg = common::pg::Pg::start();
    let store = connect(&pg);
    store.migrate().await.unwrap();
    store.put(Table::Meta, b"n", b"0").await.unwrap();
    // 8 writers add 1 each, 10 times, by read-modify-write: no lost update
    let add = |store: PgStore| async move {
        for _ in 0..10 {
            loop {
                let now = store.get(Table::Meta, b"n").await.unwrap().unwrap();
                let n: u64 = std::str::from_utf8(&now).unwrap().parse().unwrap();
                let ok = store
                    .commit(
                        &[Expect {
                            table: Table::Meta,
                            key: b"n".to_vec(),
                            value: Some(now),
                        }],
                        &[Write {
                            table: Table::Meta,
                            key: b"n".to_vec(),
                            value: (n + 1).to_string().into_bytes(),
                        }],
                    )
                    .await
                    .unwrap();
                if ok {
                    break;
                }
            }
        }
    };
    let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(add(store.clone()))).collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        store.get(Table::Meta, b"n").await.unwrap().as_deref(),
        Some(&b"80"[..])
    );
}

/// The database stopping under a replica: every request answers 503 with
/// a JSON body (health says why), nothing hangs, and the replica recovers
/// by itself when the database is back, with what it had committed.
#[tokio::test]
async fn a_database_restart_is_503_json_then_recovers() {
    use reqwest::StatusCode;
    use serde_json::json;
    let pg = common::pg::Pg::start();
    let mut config = shoal_tracker::Config::default();
    config.storage.backend = shoal_tracker::config::Backend::Postgres;
    config.storage.url = pg.url();
    config.storage.timeout_secs = 2;
    let mut t = common::launch(config, Some(pg), None).await;
    let before = t.account("Alice", "FR").await;

    t.pg.as_mut().unwrap().stop();
    let started = std::time::Instant::now();
    let (s, v) = t
        .post(
            "/v1/accounts",
            &t.operator.clone(),
            json!({"name": "Bob", "country": "FR"}),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"], "storage_unavailable", "{v}");
    let (s, v) = t.call(reqwest::Method::GET, "/v1/health", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["storage_reachable"], false, "{v}");
    assert!(v["storage_error"].is_string(), "{v}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    t.pg.as_mut().unwrap().resume();
    let started = std::time::Instant::now();
    loop {
        let (s, v) = t.call(reqwest::Method::GET, "/v1/health", None, None).await;
        if s == StatusCode::OK {
            assert_eq!(v["storage"], "postgres");
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no recovery: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (s, v) = t
        .get(&format!("/v1/accounts/{before}"), &t.operator.clone())
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.account("Bob", "FR").await;
    // the pool and the latency of its operations are metrics
    let text = t
        .http
        .get(format!("{}/metrics", t.url))
        .bearer_auth(&t.operator)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "shoal_tracker_db_pool_in_use",
        "shoal_tracker_db_pool_max 16",
        "shoal_tracker_db_operation_seconds_bucket",
    ] {
        assert!(text.contains(series), "{series} missing: {text}");
    }
    let errors = text
        .lines()
        .find_map(|l| l.strip_prefix("shoal_tracker_db_errors_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(errors > 0, "the outage counted no errors: {text}");
}
