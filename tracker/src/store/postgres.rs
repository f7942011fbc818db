//! The PostgreSQL backend: the same ordered byte keys as sled in one
//! `(k bytea PRIMARY KEY, v bytea)` table per [`Table`], a pool of
//! connections, schema migrations kept in `migrations/`, and conditional
//! commits as row-locking transactions, so any number of tracker replicas
//! can share one database.

use super::{Expect, Result, Store, StoreError, Table, Write};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;

/// Every schema version, in order: (version, SQL). A database records the
/// versions applied in `shoal_schema`.
pub const MIGRATIONS: [(i32, &str); 3] = [
    (1, include_str!("migrations/0001_tables.sql")),
    (2, include_str!("migrations/0002_members.sql")),
    (3, include_str!("migrations/0003_content_keys.sql")),
];

/// The schema version this tracker needs.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Serialises migrations of one database between replicas starting at once.
const MIGRATION_LOCK: i64 = 0x5348_4f41_4c00_0001;

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A libpq URL or key=value string, e.g. `postgres://shoal@db/shoal`.
    pub url: String,
    /// Most connections this replica holds.
    pub pool_size: usize,
    /// How long a request waits for a connection (or for one to be made)
    /// before it answers 503.
    pub timeout: Duration,
}

/// A pool of connections to one PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Seconds each store operation took (connection wait included).
    latency: prometheus_client::metrics::histogram::Histogram,
    /// Operations that failed (the database unreachable, or refusing).
    pub errors: prometheus_client::metrics::counter::Counter,
    /// Appends waiting for the next group commit.
    appends: std::sync::Arc<super::appends::Appends>,
}

/// Observes an operation's latency when dropped.
struct Timer<'a>(&'a PgStore, std::time::Instant);

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.0.latency.observe(self.1.elapsed().as_secs_f64());
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the URL may hold a password: never printed
        f.debug_struct("PgStore")
            .field("status", &self.pool.status())
            .finish()
    }
}

/// The pool's state, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
    pub max: usize,
}

impl PgStore {
    /// Builds the pool (no connection is made until the first query).
    pub fn connect(options: &PgOptions) -> Result<PgStore> {
        let config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| StoreError::Backend(format!("the PostgreSQL URL does not parse: {e}")))?;
        let mut config = config;
        config.connect_timeout(options.timeout);
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .build()
            .map_err(backend)?;
        Ok(PgStore {
            pool,
            latency: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_25, 2.0, 14),
            ),
            errors: Default::default(),
            appends: Default::default(),
        })
    }

    /// The latency histogram (shared: a clone observes into the same one).
    pub fn latency(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.latency.clone()
    }

    fn timer(&self) -> Timer<'_> {
        Timer(self, std::time::Instant::now())
    }

    /// Counts a failed operation and says what failed.
    fn failed(&self, e: impl std::fmt::Display) -> StoreError {
        self.errors.inc();
        backend(e)
    }

    pub fn pool_status(&self) -> PoolStatus {
        let s = self.pool.status();
        PoolStatus {
            size: s.size,
            available: s.available,
            waiting: s.waiting,
            max: s.max_size,
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| self.failed(format!("no connection to PostgreSQL: {e}")))
    }

    /// The highest schema version applied (0: an empty database).
    pub async fn schema_version(&self) -> Result<i32> {
        let client = self.client().await?;
        let exists: bool = client
            .query_one("SELECT to_regclass('shoal_schema') IS NOT NULL", &[])
            .await
            .map_err(|e| self.failed(e))?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let row = client
            .query_one("SELECT coalesce(max(version), 0) FROM shoal_schema", &[])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(row.get(0))
    }

    /// Applies the migrations above `to`'s current version, up to `to`
    /// (each in its own transaction, under an advisory lock so replicas
    /// starting together apply each once). Returns the versions applied.
    /// Refuses a database newer than this tracker.
    pub async fn migrate_to(&self, to: i32) -> Result<Vec<i32>> {
        let mut client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| self.failed(e))?;
        let result = async {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS shoal_schema (
                         version integer PRIMARY KEY,
                         applied_at timestamptz NOT NULL DEFAULT now())",
                )
                .await
                .map_err(|e| self.failed(e))?;
            let current: i32 = client
                .query_one("SELECT coalesce(max(version), 0) FROM shoal_schema", &[])
                .await
                .map_err(|e| self.failed(e))?
                .get(0);
            if current > SCHEMA_VERSION {
                return Err(StoreError::Backend(format!(
                    "the database has schema version {current}, newer than this tracker's {SCHEMA_VERSION}: upgrade the tracker"
                )));
            }
            let mut applied = Vec::new();
            for (version, sql) in MIGRATIONS {
                if version <= current || version > to {
                    continue;
                }
                let tx = client.transaction().await.map_err(|e| self.failed(e))?;
                tx.batch_execute(sql).await.map_err(|e| {
                    StoreError::Backend(format!("schema migration {version}: {e}"))
                })?;
                tx.execute(
                    "INSERT INTO shoal_schema (version) VALUES ($1)",
                    &[&version],
                )
                .await
                .map_err(|e| self.failed(e))?;
                tx.commit().await.map_err(|e| self.failed(e))?;
                applied.push(version);
            }
            Ok(applied)
        }
        .await;
        let unlock = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        let applied = result?;
        unlock.map_err(|e| self.failed(e))?;
        Ok(applied)
    }

    /// Brings the schema to [`SCHEMA_VERSION`].
    pub async fn migrate(&self) -> Result<Vec<i32>> {
        self.migrate_to(SCHEMA_VERSION).await
    }

    /// Runs one statement, answering the rows it changed.
    pub async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let _timer = self.timer();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.failed(e))?;
        client
            .execute(&stmt, params)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Runs one query.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let _timer = self.timer();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.failed(e))?;
        client
            .query(&stmt, params)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Fails unless the schema is exactly the one this tracker needs.
    pub async fn check_schema(&self) -> Result<()> {
        let version = self.schema_version().await?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::Backend(format!(
                "the database has schema version {version}, this tracker needs {SCHEMA_VERSION}: run `shoal-tracker migrate`"
            )));
        }
        Ok(())
    }
}

/// The smallest key greater than every key starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl PgStore {
    /// Appends `values` to `table` in one statement, numbered in order by
    /// one bump of `counter`; the first one's number.
    pub(super) async fn append_many(
        &self,
        table: Table,
        counter: &str,
        values: &[&[u8]],
    ) -> Result<u64> {
        let _timer = self.timer();
        let client = self.client().await?;
        let sql = format!(
            "WITH n AS (
                 INSERT INTO counters (k, n) VALUES ($1, $2)
                 ON CONFLICT (k) DO UPDATE SET n = counters.n + $2 RETURNING n)
             INSERT INTO {} (k, v)
             SELECT int8send(n.n - $2 + t.o), t.v
             FROM n, unnest($3::bytea[]) WITH ORDINALITY AS t(v, o)
             RETURNING (SELECT n.n - $2 + 1 FROM n)",
            table.name()
        );
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| self.failed(e))?;
        let count = i64::try_from(values.len()).map_err(|e| self.failed(e))?;
        let rows = client
            .query(&stmt, &[&counter, &count, &values])
            .await
            .map_err(|e| self.failed(e))?;
        let first: i64 = rows
            .first()
            .ok_or_else(|| self.failed("an append inserted no row"))?
            .get(0);
        u64::try_from(first).map_err(|e| self.failed(e))
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let _timer = self.timer();
        let client = self.client().await?;
        let sql = format!("SELECT v FROM {} WHERE k = $1", table.name());
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| self.failed(e))?;
        let row = client
            .query_opt(&stmt, &[&key])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        let _timer = self.timer();
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO {} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
            table.name()
        );
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| self.failed(e))?;
        client
            .execute(&stmt, &[&key, &value])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let _timer = self.timer();
        let client = self.client().await?;
        let order = if reverse { "DESC" } else { "ASC" };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match prefix_end(prefix) {
            Some(end) => {
                let sql = format!(
                    "SELECT k, v FROM {} WHERE k >= $1 AND k < $2 ORDER BY k {order} LIMIT $3",
                    table.name()
                );
                let stmt = client
                    .prepare_cached(&sql)
                    .await
                    .map_err(|e| self.failed(e))?;
                client
                    .query(&stmt, &[&prefix, &end, &limit])
                    .await
                    .map_err(|e| self.failed(e))?
            }
            None => {
                let sql = format!(
                    "SELECT k, v FROM {} WHERE k >= $1 ORDER BY k {order} LIMIT $2",
                    table.name()
                );
                let stmt = client
                    .prepare_cached(&sql)
                    .await
                    .map_err(|e| self.failed(e))?;
                client
                    .query(&stmt, &[&prefix, &limit])
                    .await
                    .map_err(|e| self.failed(e))?
            }
        };
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn range_from(
        &self,
        table: Table,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let _timer = self.timer();
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT k, v FROM {} WHERE k >= $1 ORDER BY k LIMIT $2",
            table.name()
        );
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| self.failed(e))?;
        let rows = client
            .query(&stmt, &[&start, &limit])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn increment(&self, key: &str) -> Result<u64> {
        let _timer = self.timer();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO counters (k, n) VALUES ($1, 1)
                 ON CONFLICT (k) DO UPDATE SET n = counters.n + 1 RETURNING n",
            )
            .await
            .map_err(|e| self.failed(e))?;
        let n: i64 = client
            .query_one(&stmt, &[&key])
            .await
            .map_err(|e| self.failed(e))?
            .get(0);
        u64::try_from(n).map_err(|e| self.failed(e))
    }

    /// One statement: the counter's upsert and the insert under its new
    /// number (`int8send`: 8 bytes big-endian, as the key order needs).
    /// Goes out with the appends queued beside it, in one commit
    /// (`store/appends.rs`).
    async fn append(&self, table: Table, counter: &str, value: &[u8]) -> Result<u64> {
        let appends = std::sync::Arc::clone(&self.appends);
        appends.append(self, table, counter, value).await
    }

    /// One transaction: each expected row is read `FOR UPDATE` (a second
    /// commit on it waits, then reads the first one's value and fails);
    /// a key expected absent is inserted with `ON CONFLICT DO NOTHING`, so
    /// of two commits creating it one inserts and the other fails.
    async fn commit(&self, expect: &[Expect], writes: &[Write]) -> Result<bool> {
        let _timer = self.timer();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.failed(e))?;
        for e in expect {
            let sql = format!("SELECT v FROM {} WHERE k = $1 FOR UPDATE", e.table.name());
            let stmt = tx.prepare_cached(&sql).await.map_err(|e| self.failed(e))?;
            let now: Option<Vec<u8>> = tx
                .query_opt(&stmt, &[&e.key])
                .await
                .map_err(|e| self.failed(e))?
                .map(|r| r.get(0));
            if now != e.value {
                return Ok(false); // dropping `tx` rolls back
            }
        }
        for e in expect.iter().filter(|e| e.value.is_none()) {
            if !writes.iter().any(|w| w.table == e.table && w.key == e.key) {
                return Err(StoreError::Backend(format!(
                    "a commit expects {}/{} absent without writing it",
                    e.table,
                    String::from_utf8_lossy(&e.key)
                )));
            }
        }
        for w in writes {
            let create = expect
                .iter()
                .any(|e| e.value.is_none() && e.table == w.table && e.key == w.key);
            let sql = if create {
                format!(
                    "INSERT INTO {} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING",
                    w.table.name()
                )
            } else {
                format!(
                    "INSERT INTO {} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                    w.table.name()
                )
            };
            let stmt = tx.prepare_cached(&sql).await.map_err(|e| self.failed(e))?;
            let n = tx
                .execute(&stmt, &[&w.key, &w.value])
                .await
                .map_err(|e| self.failed(e))?;
            if create && n == 0 {
                return Ok(false);
            }
        }
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(true)
    }

    async fn flush(&self) -> Result<()> {
        // A committed transaction is already durable (synchronous_commit).
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        let _timer = self.timer();
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    fn as_postgres(&self) -> Option<&PgStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
