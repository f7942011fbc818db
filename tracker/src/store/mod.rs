//! Tracker storage: a small async byte-level key-value trait with
//! conditional commits, its sled (embedded, one process) and PostgreSQL
//! (shared by replicas, [`postgres`]) implementations, and `Db`, the typed
//! layer the API uses.

mod appends;
pub mod postgres;

use crate::model::{Account, ApiKey, AuditEntry, Entitlement, Product, ReleaseRecord};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;

/// Storage failures. Always the server's problem, never the caller's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend: {0}")]
    Backend(String),
    #[error("stored record {table}/{key} is corrupt: {detail}")]
    Corrupt {
        table: Table,
        key: String,
        detail: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The tables (sled trees) the tracker keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Accounts,
    ApiKeys,
    Products,
    /// Key: `account \0 entitlement id`, so an account's grants scan by prefix.
    Entitlements,
    /// Key: `product \0 channel \0 version (8 bytes big-endian)`.
    Releases,
    /// Key: release id → the `Releases` key.
    ReleaseIds,
    /// Key: manifest hash → signed manifest bytes.
    Manifests,
    /// Key: sequence number (8 bytes big-endian).
    Audit,
    /// Counters and singletons.
    Meta,
    /// Key: manifest hash → an encrypted release's content key, wrapped
    /// under the tracker's at-rest key (see `crate::content_keys`).
    ContentKeys,
}

impl Table {
    pub const ALL: [Table; 10] = [
        Table::Accounts,
        Table::ApiKeys,
        Table::Products,
        Table::Entitlements,
        Table::Releases,
        Table::ReleaseIds,
        Table::Manifests,
        Table::Audit,
        Table::Meta,
        Table::ContentKeys,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Accounts => "accounts",
            Table::ApiKeys => "api_keys",
            Table::Products => "products",
            Table::Entitlements => "entitlements",
            Table::Releases => "releases",
            Table::ReleaseIds => "release_ids",
            Table::Manifests => "manifests",
            Table::Audit => "audit",
            Table::Meta => "meta",
            Table::ContentKeys => "content_keys",
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a conditional commit expects to find: `table`/`key` holding
/// exactly `value` (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// One write of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A byte-level, ordered key-value store. Every method may be called from
/// any number of processes sharing one database (PostgreSQL) or from one
/// process (sled, which locks its directory); `commit` is the one way to
/// make a read-modify-write atomic across all of them.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sled"` or `"postgres"`, for health and metrics.
    fn backend(&self) -> &'static str;
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    async fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;
    /// Entries whose key starts with `prefix`, in key order, from the end
    /// when `reverse`, at most `limit`.
    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Entries with key ≥ `start`, in order, at most `limit`.
    async fn range_from(
        &self,
        table: Table,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Atomically adds 1 to the counter `key` and returns the new value.
    async fn increment(&self, key: &str) -> Result<u64>;
    /// Stores `value` under the next number of `counter` (8 bytes
    /// big-endian, so entries scan in order) and returns the number.
    async fn append(&self, table: Table, counter: &str, value: &[u8]) -> Result<u64> {
        let n = self.increment(counter).await?;
        self.put(table, &n.to_be_bytes(), value).await?;
        Ok(n)
    }
    /// Applies `writes` atomically if, at that moment, every key in
    /// `expect` holds what it says; otherwise writes nothing and answers
    /// `false` (somebody else changed it: read again and retry). Durable
    /// when it answers `true` after [`Store::flush`].
    async fn commit(&self, expect: &[Expect], writes: &[Write]) -> Result<bool>;
    /// Makes every write so far durable (fsync; PostgreSQL's commits
    /// already are).
    async fn flush(&self) -> Result<()>;
    /// Fails when the database cannot be reached.
    async fn ping(&self) -> Result<()>;
    /// The PostgreSQL store behind this one, if it is one (replicas share
    /// swarm membership through it).
    fn as_postgres(&self) -> Option<&postgres::PgStore> {
        None
    }
}

/// sled, on one node.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    flushing: Arc<tokio::sync::Mutex<()>>,
}

/// Whether sled could not take its file lock: another handle holds it.
/// sled reports that as `ErrorKind::Other` with the lock's own error in the
/// message, not as `WouldBlock`.
fn lock_held(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        || e.to_string().starts_with("could not acquire lock")
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SledStore {
    pub fn open(path: &Path) -> Result<SledStore> {
        // A handle this process just dropped (`init` then `open`) keeps the
        // file lock until sled's flusher thread lets go of it, which takes
        // a moment on a busy machine: wait for that, briefly. Another
        // process holding the database still fails, after the wait.
        let mut waited = std::time::Duration::ZERO;
        let db = loop {
            match sled::open(path) {
                Err(sled::Error::Io(e))
                    if lock_held(&e) && waited < std::time::Duration::from_secs(3) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    waited += std::time::Duration::from_millis(20);
                }
                opened => break opened.map_err(backend)?,
            }
        };
        let trees = Table::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        Ok(SledStore {
            db,
            trees,
            flushing: Arc::default(),
        })
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        let index = Table::ALL
            .iter()
            .position(|t| *t == table)
            .expect("every table is in ALL");
        &self.trees[index]
    }
}

fn pairs(
    iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    iter.take(limit)
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
        .collect()
}

#[async_trait::async_trait]
impl Store for SledStore {
    fn backend(&self) -> &'static str {
        "sled"
    }

    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree(table)
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    async fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree(table).insert(key, value).map_err(backend)?;
        Ok(())
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let iter = self.tree(table).scan_prefix(prefix);
        if reverse {
            pairs(iter.rev(), limit)
        } else {
            pairs(iter, limit)
        }
    }

    async fn range_from(
        &self,
        table: Table,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        pairs(self.tree(table).range(start..), limit)
    }

    async fn increment(&self, key: &str) -> Result<u64> {
        let next = self
            .tree(Table::Meta)
            .update_and_fetch(key.as_bytes(), |old| {
                let n = old
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, u64::from_be_bytes);
                Some((n + 1).to_be_bytes().to_vec())
            })
            .map_err(backend)?
            .expect("update_and_fetch with Some returns the new value");
        let bytes = <[u8; 8]>::try_from(next.as_ref()).expect("counters are 8 bytes");
        Ok(u64::from_be_bytes(bytes))
    }

    async fn commit(&self, expect: &[Expect], writes: &[Write]) -> Result<bool> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        let index = |t: Table| Table::ALL.iter().position(|x| *x == t).expect("in ALL");
        // sled runs a transaction under its global write lock, so it is
        // serialisable against every other read and write of this database.
        let outcome = self.trees.as_slice().transaction(|trees| {
            for e in expect {
                let now = trees[index(e.table)].get(&e.key)?;
                if now.as_deref() != e.value.as_deref() {
                    return Err(ConflictableTransactionError::Abort(()));
                }
            }
            for w in writes {
                trees[index(w.table)].insert(w.key.as_slice(), w.value.as_slice())?;
            }
            Ok(())
        });
        match outcome {
            Ok(()) => Ok(true),
            Err(TransactionError::Abort(())) => Ok(false),
            Err(TransactionError::Storage(e)) => Err(backend(e)),
        }
    }

    /// One fsync at a time, off the async workers: sled's own
    /// `flush_async` deadlocks its IO threads when many requests flush at
    /// once (seen under the tracker bench), and a flush covers every write
    /// before it, so requests queued behind one flush cheaply.
    async fn flush(&self) -> Result<()> {
        let _one = self.flushing.lock().await;
        let db = self.db.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| db.flush()))
            .await
            .map_err(|e| StoreError::Backend(format!("flush task: {e}")))?
            .map_err(backend)?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

/// Typed access over any [`Store`]: records are JSON.
#[derive(Clone)]
pub struct Db {
    store: Arc<dyn Store>,
    /// Rows the hot paths read, kept for [`crate::Recent::TTL`] when the
    /// database is shared ([`Db::shared`]); `None` on sled, whose reads
    /// are local and cheap.
    recent: Option<Arc<RecentRows>>,
}

/// What [`Db`] keeps of a shared database: API keys, products and releases
/// by key, and each channel's newest release. A write through this `Db`
/// forgets what it changed (a read that was in flight may put the old row
/// back, for at most the TTL); a write at another replica shows here
/// within the TTL. Accounts and entitlements are always read afresh.
#[derive(Debug, Default)]
struct RecentRows {
    rows: crate::Recent<(Table, Vec<u8>), Option<Vec<u8>>>,
    latest: crate::Recent<Vec<u8>, Option<Vec<u8>>>,
}

/// The tables whose rows [`RecentRows`] keeps.
const KEPT: [Table; 4] = [
    Table::ApiKeys,
    Table::Products,
    Table::Releases,
    Table::ReleaseIds,
];

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

/// Key of a release: product, channel, big-endian version, so that a
/// channel's releases sort by version.
pub fn release_key(product: &str, channel: &str, version: u64) -> Vec<u8> {
    let mut key = channel_prefix(product, channel);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn channel_prefix(product: &str, channel: &str) -> Vec<u8> {
    format!("{product}\0{channel}\0").into_bytes()
}

/// Decodes JSON rows, naming the row of any that is corrupt.
fn decode_rows<T: DeserializeOwned>(table: Table, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<T>> {
    rows.into_iter()
        .map(|(k, v)| {
            serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                table,
                key: String::from_utf8_lossy(&k).into_owned(),
                detail: e.to_string(),
            })
        })
        .collect()
}

fn corrupt(table: Table, key: &[u8], e: &serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        table,
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    }
}

fn decode<T: DeserializeOwned>(table: Table, key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(table, key, &e))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialise")
}

fn entitlement_key(account: &str, id: &str) -> Vec<u8> {
    format!("{account}\0{id}").into_bytes()
}

impl Db {
    /// A database this process alone uses (sled): every read is fresh.
    pub fn new(store: Arc<dyn Store>) -> Db {
        Db {
            store,
            recent: None,
        }
    }

    /// A database replicas share (PostgreSQL): the hot paths' reads of API
    /// keys, products and releases are kept for [`crate::Recent::TTL`].
    pub fn shared(store: Arc<dyn Store>) -> Db {
        Db {
            store,
            recent: Some(Arc::default()),
        }
    }

    /// `table`/`key`, from what was read within the TTL when kept.
    async fn get_recent(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(recent) = self.recent.as_ref().filter(|_| KEPT.contains(&table)) else {
            return self.store.get(table, key).await;
        };
        let k = (table, key.to_vec());
        if let Some(v) = recent.rows.get(&k) {
            return Ok(v);
        }
        let v = self.store.get(table, key).await?;
        recent.rows.put(k, v.clone());
        Ok(v)
    }

    async fn get_json_recent<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>> {
        match self.get_recent(table, key).await? {
            None => Ok(None),
            Some(bytes) => decode(table, key, &bytes).map(Some),
        }
    }

    /// Forgets what this process kept of rows it has just written.
    fn forget<'k>(&self, written: impl IntoIterator<Item = (Table, &'k [u8])>) {
        let Some(recent) = &self.recent else {
            return;
        };
        for (table, key) in written {
            if table == Table::Releases {
                recent.latest.clear();
            }
            if KEPT.contains(&table) {
                recent.rows.forget(&(table, key.to_vec()));
            }
        }
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    async fn get_json<T: DeserializeOwned>(&self, table: Table, key: &[u8]) -> Result<Option<T>> {
        match self.store.get(table, key).await? {
            None => Ok(None),
            Some(bytes) => decode(table, key, &bytes).map(Some),
        }
    }

    async fn put_json<T: Serialize>(&self, table: Table, key: &[u8], value: &T) -> Result<()> {
        self.store.put(table, key, &encode(value)).await?;
        self.forget([(table, key)]);
        Ok(())
    }

    async fn scan_json<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<T>> {
        decode_rows(table, self.store.scan(table, prefix, reverse, limit).await?)
    }

    pub async fn flush(&self) -> Result<()> {
        self.store.flush().await
    }

    /// A read-modify-write that commits only if nothing it read changed.
    pub fn txn(&self) -> Txn<'_> {
        Txn {
            db: self,
            expect: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// A fresh sequential id with `prefix`, e.g. `acc_12`, unique across
    /// every replica of the database.
    pub async fn next_id(&self, prefix: &str) -> Result<String> {
        let n = self.store.increment(&format!("seq/{prefix}")).await?;
        Ok(format!("{prefix}_{n}"))
    }

    pub async fn account(&self, id: &str) -> Result<Option<Account>> {
        self.get_json(Table::Accounts, id.as_bytes()).await
    }
    /// Stores a new account (its id is fresh from [`Db::next_id`]); changes
    /// to an existing one go through a [`Txn`].
    pub async fn put_account(&self, a: &Account) -> Result<()> {
        self.put_json(Table::Accounts, a.id.as_bytes(), a).await
    }
    pub async fn accounts(&self, limit: usize) -> Result<Vec<Account>> {
        self.scan_json(Table::Accounts, b"", false, limit).await
    }

    /// API key `id`, as read within [`crate::Recent::TTL`] on a shared
    /// database (the announce's read).
    pub async fn api_key_recent(&self, id: &str) -> Result<Option<ApiKey>> {
        self.get_json_recent(Table::ApiKeys, id.as_bytes()).await
    }
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        self.get_json(Table::ApiKeys, id.as_bytes()).await
    }
    /// Stores a new key; revocation goes through a [`Txn`].
    pub async fn put_api_key(&self, k: &ApiKey) -> Result<()> {
        self.put_json(Table::ApiKeys, k.id.as_bytes(), k).await
    }
    pub async fn api_keys(&self, limit: usize) -> Result<Vec<ApiKey>> {
        self.scan_json(Table::ApiKeys, b"", false, limit).await
    }

    pub async fn product(&self, id: &str) -> Result<Option<Product>> {
        self.get_json(Table::Products, id.as_bytes()).await
    }
    /// Product `id`, as read within [`crate::Recent::TTL`] on a shared
    /// database (the token decision's read).
    pub async fn product_recent(&self, id: &str) -> Result<Option<Product>> {
        self.get_json_recent(Table::Products, id.as_bytes()).await
    }
    pub async fn products(&self, limit: usize) -> Result<Vec<Product>> {
        self.scan_json(Table::Products, b"", false, limit).await
    }

    /// Stores a new grant (fresh id) and its index by id, atomically.
    pub async fn put_entitlement(&self, e: &Entitlement) -> Result<()> {
        let mut txn = self.txn();
        txn.put_entitlement(e);
        txn.commit().await.map(|_| ())
    }
    async fn entitlement_account(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .store
            .get(Table::Meta, format!("ent/{id}").as_bytes())
            .await?
            .map(|a| String::from_utf8_lossy(&a).into_owned()))
    }
    pub async fn entitlement(&self, id: &str) -> Result<Option<Entitlement>> {
        let Some(account) = self.entitlement_account(id).await? else {
            return Ok(None);
        };
        self.get_json(Table::Entitlements, &entitlement_key(&account, id))
            .await
    }
    pub async fn entitlements_of(&self, account: &str) -> Result<Vec<Entitlement>> {
        self.scan_json(
            Table::Entitlements,
            format!("{account}\0").as_bytes(),
            false,
            usize::MAX,
        )
        .await
    }

    pub async fn release(&self, id: &shoal_types::Hash) -> Result<Option<ReleaseRecord>> {
        match self.store.get(Table::ReleaseIds, id.as_bytes()).await? {
            Some(key) => self.get_json(Table::Releases, &key).await,
            None => Ok(None),
        }
    }
    /// Release `id`, as read within [`crate::Recent::TTL`] on a shared
    /// database (the announce's read).
    pub async fn release_recent(&self, id: &shoal_types::Hash) -> Result<Option<ReleaseRecord>> {
        match self.get_recent(Table::ReleaseIds, id.as_bytes()).await? {
            Some(key) => self.get_json_recent(Table::Releases, &key).await,
            None => Ok(None),
        }
    }
    /// A channel's releases, newest first.
    pub async fn releases(
        &self,
        product: &str,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<ReleaseRecord>> {
        self.scan_json(
            Table::Releases,
            &channel_prefix(product, channel),
            true,
            limit,
        )
        .await
    }
    pub async fn latest_release(
        &self,
        product: &str,
        channel: &str,
    ) -> Result<Option<ReleaseRecord>> {
        Ok(self.releases(product, channel, 1).await?.into_iter().next())
    }
    /// A channel's newest release, as read within [`crate::Recent::TTL`] on
    /// a shared database (the token decision's read): a release published
    /// at another replica is handed out here within the TTL.
    pub async fn latest_release_recent(
        &self,
        product: &str,
        channel: &str,
    ) -> Result<Option<ReleaseRecord>> {
        let Some(recent) = &self.recent else {
            return self.latest_release(product, channel).await;
        };
        let prefix = channel_prefix(product, channel);
        let row = match recent.latest.get(&prefix) {
            Some(row) => row,
            None => {
                let rows = self.store.scan(Table::Releases, &prefix, true, 1).await?;
                let row = rows.into_iter().next().map(|(_, v)| v);
                recent.latest.put(prefix.clone(), row.clone());
                row
            }
        };
        row.map(|v| decode(Table::Releases, &prefix, &v))
            .transpose()
    }

    /// Manifests are content-addressed: writing one twice writes the same bytes.
    pub async fn put_manifest(&self, hash: &shoal_types::Hash, bytes: &[u8]) -> Result<()> {
        self.store
            .put(Table::Manifests, hash.as_bytes(), bytes)
            .await
    }
    pub async fn manifest(&self, hash: &shoal_types::Hash) -> Result<Option<Vec<u8>>> {
        self.store.get(Table::Manifests, hash.as_bytes()).await
    }

    /// An encrypted release's wrapped content key, by manifest hash.
    pub async fn put_content_key(
        &self,
        manifest: &shoal_types::Hash,
        wrapped: &[u8],
    ) -> Result<()> {
        self.store
            .put(Table::ContentKeys, manifest.as_bytes(), wrapped)
            .await
    }
    pub async fn content_key(&self, manifest: &shoal_types::Hash) -> Result<Option<Vec<u8>>> {
        self.store
            .get(Table::ContentKeys, manifest.as_bytes())
            .await
    }

    /// Appends an audit entry, assigning its sequence number (the entry's
    /// key; its stored `seq` is not relied on).
    pub async fn append_audit(&self, mut entry: AuditEntry) -> Result<AuditEntry> {
        entry.seq = 0;
        entry.seq = self
            .store
            .append(Table::Audit, "seq/audit", &encode(&entry))
            .await?;
        Ok(entry)
    }
    /// Audit entries with sequence number > `after`, oldest first.
    pub async fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let start = after.saturating_add(1).to_be_bytes();
        let rows = self.store.range_from(Table::Audit, &start, limit).await?;
        rows.into_iter()
            .map(|(k, v)| {
                let mut entry: AuditEntry = decode(Table::Audit, &k, &v)?;
                if let Ok(seq) = <[u8; 8]>::try_from(k.as_slice()) {
                    entry.seq = u64::from_be_bytes(seq);
                }
                Ok(entry)
            })
            .collect()
    }
}

/// A read-modify-write: every record it reads is expected unchanged at
/// [`Txn::commit`], which applies its writes atomically or, when another
/// request (in this process or another replica) changed one of them,
/// writes nothing and answers `false`. The caller then reads again.
pub struct Txn<'a> {
    db: &'a Db,
    expect: Vec<Expect>,
    writes: Vec<Write>,
}

impl std::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn")
            .field("expect", &self.expect.len())
            .field("writes", &self.writes.len())
            .finish()
    }
}

/// How many times a read-modify-write retries before it gives up (each
/// retry means another request changed the same record in between).
pub const TXN_ATTEMPTS: usize = 64;

impl Txn<'_> {
    async fn read(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let value = self.db.store.get(table, key).await?;
        self.expect.push(Expect {
            table,
            key: key.to_vec(),
            value: value.clone(),
        });
        Ok(value)
    }

    async fn read_json<T: DeserializeOwned>(
        &mut self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>> {
        match self.read(table, key).await? {
            None => Ok(None),
            Some(bytes) => decode(table, key, &bytes).map(Some),
        }
    }

    fn write(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push(Write { table, key, value });
    }

    pub async fn account(&mut self, id: &str) -> Result<Option<Account>> {
        self.read_json(Table::Accounts, id.as_bytes()).await
    }
    pub fn put_account(&mut self, a: &Account) {
        self.write(Table::Accounts, a.id.as_bytes().to_vec(), encode(a));
    }

    pub async fn api_key(&mut self, id: &str) -> Result<Option<ApiKey>> {
        self.read_json(Table::ApiKeys, id.as_bytes()).await
    }
    pub fn put_api_key(&mut self, k: &ApiKey) {
        self.write(Table::ApiKeys, k.id.as_bytes().to_vec(), encode(k));
    }

    pub async fn product(&mut self, id: &str) -> Result<Option<Product>> {
        self.read_json(Table::Products, id.as_bytes()).await
    }
    pub fn put_product(&mut self, p: &Product) {
        self.write(Table::Products, p.id.as_bytes().to_vec(), encode(p));
    }

    pub async fn entitlement(&mut self, id: &str) -> Result<Option<Entitlement>> {
        let Some(account) = self.db.entitlement_account(id).await? else {
            return Ok(None);
        };
        self.read_json(Table::Entitlements, &entitlement_key(&account, id))
            .await
    }
    pub fn put_entitlement(&mut self, e: &Entitlement) {
        self.write(
            Table::Entitlements,
            entitlement_key(&e.account, &e.id),
            encode(e),
        );
        // the index by id, for revocation
        self.write(
            Table::Meta,
            format!("ent/{}", e.id).into_bytes(),
            e.account.clone().into_bytes(),
        );
    }

    pub async fn release(&mut self, id: &shoal_types::Hash) -> Result<Option<ReleaseRecord>> {
        match self.db.store.get(Table::ReleaseIds, id.as_bytes()).await? {
            Some(key) => self.read_json(Table::Releases, &key).await,
            None => Ok(None),
        }
    }
    /// The version a new release of the channel gets: one above the newest,
    /// expected still free at commit (so two replicas never number alike).
    pub async fn next_version(&mut self, product: &str, channel: &str) -> Result<u64> {
        let version = self
            .db
            .latest_release(product, channel)
            .await?
            .map_or(1, |r| r.version + 1);
        self.expect.push(Expect {
            table: Table::Releases,
            key: release_key(product, channel, version),
            value: None,
        });
        Ok(version)
    }
    pub fn put_release(&mut self, r: &ReleaseRecord) {
        let key = release_key(&r.product, &r.channel, r.version);
        self.write(Table::ReleaseIds, r.id.as_bytes().to_vec(), key.clone());
        self.write(Table::Releases, key, encode(r));
    }

    /// Applies the writes if nothing read changed, then makes them durable.
    pub async fn commit(self) -> Result<bool> {
        if !self.db.store.commit(&self.expect, &self.writes).await? {
            return Ok(false);
        }
        self.db
            .forget(self.writes.iter().map(|w| (w.table, w.key.as_slice())));
        self.db.store.flush().await?;
        Ok(true)
    }
}

/// What every backend must do: the sled unit test and the PostgreSQL
/// tests run this on a fresh store. Errors say which property failed.
pub async fn conformance(store: &dyn Store) -> anyhow::Result<()> {
    use anyhow::ensure;
    let keys =
        |rows: &[(Vec<u8>, Vec<u8>)]| rows.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    store.put(Table::Meta, b"a/1", b"x").await?;
    store.put(Table::Meta, b"a/2", b"y").await?;
    store.put(Table::Meta, b"a/\xff\xff", b"edge").await?;
    store.put(Table::Meta, b"b/1", b"z").await?;
    store.put(Table::Meta, b"a/1", b"x2").await?;
    ensure!(
        store.get(Table::Meta, b"a/1").await?.as_deref() == Some(&b"x2"[..]),
        "put overwrites"
    );
    ensure!(
        store.get(Table::Meta, b"a/3").await?.is_none(),
        "absent is None"
    );
    let forward = store.scan(Table::Meta, b"a/", false, 10).await?;
    ensure!(
        keys(&forward) == [b"a/1".to_vec(), b"a/2".to_vec(), b"a/\xff\xff".to_vec()],
        "prefix scan in key order: {forward:?}"
    );
    let back = store.scan(Table::Meta, b"a/", true, 2).await?;
    ensure!(
        keys(&back) == [b"a/\xff\xff".to_vec(), b"a/2".to_vec()],
        "reverse scan with a limit: {back:?}"
    );
    ensure!(
        store.scan(Table::Meta, b"", false, 100).await?.len() == 4,
        "empty prefix scans all"
    );
    let from = store.range_from(Table::Meta, b"a/2", 2).await?;
    ensure!(
        keys(&from) == [b"a/2".to_vec(), b"a/\xff\xff".to_vec()],
        "range_from: {from:?}"
    );
    ensure!(store.increment("n").await? == 1, "counters start at 1");
    ensure!(store.increment("n").await? == 2, "counters count");
    ensure!(store.increment("m").await? == 1, "counters are separate");
    ensure!(
        store.append(Table::Audit, "log", b"first").await? == 1
            && store.append(Table::Audit, "log", b"second").await? == 2,
        "append numbers entries"
    );
    let log = store
        .range_from(Table::Audit, &1u64.to_be_bytes(), 10)
        .await?;
    ensure!(
        log == [
            (1u64.to_be_bytes().to_vec(), b"first".to_vec()),
            (2u64.to_be_bytes().to_vec(), b"second".to_vec())
        ],
        "appended entries scan in order under their numbers: {log:?}"
    );
    // Concurrent appends (PostgreSQL commits them in groups): each gets its
    // own number, the numbers run on without a gap, and each entry is
    // stored under the number it was told.
    let values: Vec<Vec<u8>> = (0..40u32).map(|i| format!("c{i}").into_bytes()).collect();
    let numbers =
        futures::future::try_join_all(values.iter().map(|v| store.append(Table::Audit, "log", v)))
            .await?;
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    ensure!(
        sorted == (3..43).collect::<Vec<u64>>(),
        "concurrent appends take distinct numbers without gaps: {numbers:?}"
    );
    for (n, v) in numbers.iter().zip(&values) {
        let stored = store.get(Table::Audit, &n.to_be_bytes()).await?;
        ensure!(
            stored.as_ref() == Some(v),
            "entry {n} holds what was appended under it: {stored:?}"
        );
    }
    ensure!(
        store.get(Table::Accounts, b"a/2").await?.is_none(),
        "tables are separate"
    );
    let w = |k: &[u8], v: &[u8]| Write {
        table: Table::Products,
        key: k.to_vec(),
        value: v.to_vec(),
    };
    let e = |k: &[u8], v: Option<&[u8]>| Expect {
        table: Table::Products,
        key: k.to_vec(),
        value: v.map(<[u8]>::to_vec),
    };
    ensure!(
        store
            .commit(&[e(b"p", None)], &[w(b"p", b"1"), w(b"q", b"1")])
            .await?,
        "commit expecting an absent key"
    );
    ensure!(
        !store.commit(&[e(b"p", None)], &[w(b"p", b"2")]).await?,
        "a present key is not absent"
    );
    ensure!(
        !store
            .commit(
                &[e(b"p", Some(b"1")), e(b"q", Some(b"0"))],
                &[w(b"p", b"3")]
            )
            .await?,
        "one stale expectation fails the commit"
    );
    ensure!(
        store.get(Table::Products, b"p").await?.as_deref() == Some(&b"1"[..]),
        "a failed commit writes nothing"
    );
    ensure!(
        store
            .commit(&[e(b"p", Some(b"1"))], &[w(b"p", b"4")])
            .await?,
        "a fresh expectation commits"
    );
    ensure!(
        store.get(Table::Products, b"p").await?.as_deref() == Some(&b"4"[..]),
        "the commit wrote"
    );
    store.flush().await?;
    store.ping().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sled_store_basics() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SledStore::open(tmp.path()).unwrap();
        conformance(&store).await.unwrap();
    }

    /// `init` then `open` in one process: the second open waits for the
    /// first handle's lock instead of failing at once.
    #[test]
    fn a_sled_store_opened_while_a_handle_lets_go_waits_for_it() {
        let tmp = tempfile::tempdir().unwrap();
        let first = SledStore::open(tmp.path()).unwrap();
        let span = tracing::Span::current();
        let release = std::thread::spawn(move || {
            span.in_scope(|| {
                std::thread::sleep(std::time::Duration::from_millis(300));
                drop(first);
            })
        });
        let second = SledStore::open(tmp.path());
        release.join().unwrap();
        assert!(second.is_ok(), "{:?}", second.err());
    }
}
