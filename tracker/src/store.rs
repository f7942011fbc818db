//! Tracker storage: a small byte-level key-value trait (so a distributed
//! backend can replace sled without touching policy code), its sled
//! implementation, and `Db`, the typed layer the API uses.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Table {
    pub const ALL: [Table; 9] = [
        Table::Accounts,
        Table::ApiKeys,
        Table::Products,
        Table::Entitlements,
        Table::Releases,
        Table::ReleaseIds,
        Table::Manifests,
        Table::Audit,
        Table::Meta,
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
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A byte-level, ordered key-value store with durable flush.
pub trait Store: Send + Sync + 'static {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;
    /// Entries whose key starts with `prefix`, in key order, from the end
    /// when `reverse`, at most `limit`.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Entries with key ≥ `start`, in order, at most `limit`.
    fn range_from(
        &self,
        table: Table,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Atomically adds 1 to the big-endian counter at `key` and returns the new value.
    fn increment(&self, table: Table, key: &[u8]) -> Result<u64>;
    /// Makes every write so far durable (fsync).
    fn flush(&self) -> Result<()>;
}

/// sled, on one node.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    trees: Vec<sled::Tree>,
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
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && waited < std::time::Duration::from_secs(3) =>
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
        Ok(SledStore { db, trees })
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

impl Store for SledStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree(table)
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree(table).insert(key, value).map_err(backend)?;
        Ok(())
    }

    fn scan(
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

    fn range_from(
        &self,
        table: Table,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        pairs(self.tree(table).range(start..), limit)
    }

    fn increment(&self, table: Table, key: &[u8]) -> Result<u64> {
        let next = self
            .tree(table)
            .update_and_fetch(key, |old| {
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

    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(backend)?;
        Ok(())
    }
}

/// Typed access over any [`Store`]: records are JSON.
#[derive(Clone)]
pub struct Db {
    store: Arc<dyn Store>,
}

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

impl Db {
    pub fn new(store: Arc<dyn Store>) -> Db {
        Db { store }
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    fn get_json<T: DeserializeOwned>(&self, table: Table, key: &[u8]) -> Result<Option<T>> {
        match self.store.get(table, key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        table,
                        key: String::from_utf8_lossy(key).into_owned(),
                        detail: e.to_string(),
                    })
            }
        }
    }

    fn put_json<T: Serialize>(&self, table: Table, key: &[u8], value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).expect("records always serialise");
        self.store.put(table, key, &bytes)
    }

    fn scan_json<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<T>> {
        decode_rows(table, self.store.scan(table, prefix, reverse, limit)?)
    }

    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }

    /// A fresh sequential id with `prefix`, e.g. `acc_12`.
    pub fn next_id(&self, prefix: &str) -> Result<String> {
        let n = self
            .store
            .increment(Table::Meta, format!("seq/{prefix}").as_bytes())?;
        Ok(format!("{prefix}_{n}"))
    }

    pub fn account(&self, id: &str) -> Result<Option<Account>> {
        self.get_json(Table::Accounts, id.as_bytes())
    }
    pub fn put_account(&self, a: &Account) -> Result<()> {
        self.put_json(Table::Accounts, a.id.as_bytes(), a)
    }
    pub fn accounts(&self, limit: usize) -> Result<Vec<Account>> {
        self.scan_json(Table::Accounts, b"", false, limit)
    }

    pub fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        self.get_json(Table::ApiKeys, id.as_bytes())
    }
    pub fn put_api_key(&self, k: &ApiKey) -> Result<()> {
        self.put_json(Table::ApiKeys, k.id.as_bytes(), k)
    }
    pub fn api_keys(&self, limit: usize) -> Result<Vec<ApiKey>> {
        self.scan_json(Table::ApiKeys, b"", false, limit)
    }

    pub fn product(&self, id: &str) -> Result<Option<Product>> {
        self.get_json(Table::Products, id.as_bytes())
    }
    pub fn put_product(&self, p: &Product) -> Result<()> {
        self.put_json(Table::Products, p.id.as_bytes(), p)
    }
    pub fn products(&self, limit: usize) -> Result<Vec<Product>> {
        self.scan_json(Table::Products, b"", false, limit)
    }

    fn entitlement_key(account: &str, id: &str) -> Vec<u8> {
        format!("{account}\0{id}").into_bytes()
    }
    pub fn put_entitlement(&self, e: &Entitlement) -> Result<()> {
        self.put_json(
            Table::Entitlements,
            &Self::entitlement_key(&e.account, &e.id),
            e,
        )?;
        // index by id for revocation
        self.store.put(
            Table::Meta,
            format!("ent/{}", e.id).as_bytes(),
            e.account.as_bytes(),
        )
    }
    pub fn entitlement(&self, id: &str) -> Result<Option<Entitlement>> {
        let Some(account) = self
            .store
            .get(Table::Meta, format!("ent/{id}").as_bytes())?
        else {
            return Ok(None);
        };
        let account = String::from_utf8_lossy(&account).into_owned();
        self.get_json(Table::Entitlements, &Self::entitlement_key(&account, id))
    }
    pub fn entitlements_of(&self, account: &str) -> Result<Vec<Entitlement>> {
        self.scan_json(
            Table::Entitlements,
            format!("{account}\0").as_bytes(),
            false,
            usize::MAX,
        )
    }

    pub fn put_release(&self, r: &ReleaseRecord) -> Result<()> {
        let key = release_key(&r.product, &r.channel, r.version);
        self.put_json(Table::Releases, &key, r)?;
        self.store.put(Table::ReleaseIds, r.id.as_bytes(), &key)
    }
    pub fn release(&self, id: &shoal_types::Hash) -> Result<Option<ReleaseRecord>> {
        match self.store.get(Table::ReleaseIds, id.as_bytes())? {
            Some(key) => self.get_json(Table::Releases, &key),
            None => Ok(None),
        }
    }
    /// A channel's releases, newest first.
    pub fn releases(
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
    }
    pub fn latest_release(&self, product: &str, channel: &str) -> Result<Option<ReleaseRecord>> {
        Ok(self.releases(product, channel, 1)?.into_iter().next())
    }

    pub fn put_manifest(&self, hash: &shoal_types::Hash, bytes: &[u8]) -> Result<()> {
        self.store.put(Table::Manifests, hash.as_bytes(), bytes)
    }
    pub fn manifest(&self, hash: &shoal_types::Hash) -> Result<Option<Vec<u8>>> {
        self.store.get(Table::Manifests, hash.as_bytes())
    }

    /// Appends an audit entry, assigning its sequence number.
    pub fn append_audit(&self, mut entry: AuditEntry) -> Result<AuditEntry> {
        entry.seq = self.store.increment(Table::Meta, b"seq/audit")?;
        self.put_json(Table::Audit, &entry.seq.to_be_bytes(), &entry)?;
        Ok(entry)
    }
    /// Audit entries with sequence number > `after`, oldest first.
    pub fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let start = after.saturating_add(1).to_be_bytes();
        decode_rows(
            Table::Audit,
            self.store.range_from(Table::Audit, &start, limit)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_store_basics() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SledStore::open(tmp.path()).unwrap();
        store.put(Table::Meta, b"a/1", b"x").unwrap();
        store.put(Table::Meta, b"a/2", b"y").unwrap();
        store.put(Table::Meta, b"b/1", b"z").unwrap();
        assert_eq!(
            store.get(Table::Meta, b"a/1").unwrap().as_deref(),
            Some(&b"x"[..])
        );
        let scanned = store.scan(Table::Meta, b"a/", true, 10).unwrap();
        assert_eq!(
            scanned
                .iter()
                .map(|(k, _)| k.as_slice())
                .collect::<Vec<_>>(),
            [b"a/2", b"a/1"]
        );
        assert_eq!(store.increment(Table::Meta, b"n").unwrap(), 1);
        assert_eq!(store.increment(Table::Meta, b"n").unwrap(), 2);
        // tables are separate
        assert!(store.get(Table::Accounts, b"a/2").unwrap().is_none());
        store.flush().unwrap();
    }
}
