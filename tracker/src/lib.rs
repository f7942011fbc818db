//! The Shoal tracker: accounts, products, entitlements, export screening,
//! releases, swarm tokens, announce and seed heartbeats, over HTTP/JSON.
//!
//! `serve` takes an already-bound listener and a shutdown future, so tests
//! run real servers on `127.0.0.1:0`. Policy (`policy`) and membership
//! (`swarm`) are pure; `api` is the thin HTTP layer; `store` hides sled.

pub mod api;
pub mod config;
pub mod content_keys;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod policy;
pub mod replicas;
pub mod store;
pub mod swarm;

use anyhow::Context as _;
use shoal_types::{Hash, SecretKey};
use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::Instrument as _;

pub use config::Config;

/// File names inside the tracker's data directory.
pub const KEY_FILE: &str = "tracker.key";
pub const OPERATOR_KEY_FILE: &str = "operator.key";
pub const DB_DIR: &str = "db";

/// Seconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

/// Verified tokens by fingerprint, so announces skip the signature check.
/// Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct TokenCache {
    map: HashMap<Hash, shoal_token::Claims>,
}

impl TokenCache {
    const MAX: usize = 200_000;

    /// The cache key of a token's text form.
    pub fn fingerprint(text: &str) -> Hash {
        Hash::of(text.trim().as_bytes())
    }

    pub fn get(&self, fingerprint: &Hash) -> Option<shoal_token::Claims> {
        self.map.get(fingerprint).cloned()
    }

    pub fn insert(&mut self, fingerprint: Hash, claims: shoal_token::Claims) {
        if self.map.len() >= Self::MAX {
            self.map.clear();
        }
        self.map.insert(fingerprint, claims);
    }
}

const SHARDS: usize = 16;

/// Values kept for [`Recent::TTL`], bounded: what the hot paths read from
/// a shared database (PostgreSQL), so that an announce costs no query and
/// a token decision fewer. A write made at this replica forgets the entry
/// at once; one made at another replica applies here within the TTL. With
/// sled nothing is kept (the reads are local).
#[derive(Debug)]
pub struct Recent<K, V> {
    map: Mutex<HashMap<K, (V, std::time::Instant)>>,
}

impl<K, V> Default for Recent<K, V> {
    fn default() -> Self {
        Recent {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Recent<K, V> {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(1);
    const MAX: usize = 200_000;

    pub fn get(&self, k: &K) -> Option<V> {
        lock(&self.map)
            .get(k)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(v, _)| v.clone())
    }

    pub fn put(&self, k: K, v: V) {
        let mut map = lock(&self.map);
        if map.len() >= Self::MAX {
            map.retain(|_, (_, at)| at.elapsed() < Self::TTL);
            if map.len() >= Self::MAX {
                map.clear();
            }
        }
        map.insert(k, (v, std::time::Instant::now()));
    }

    pub fn forget(&self, k: &K) {
        lock(&self.map).remove(k);
    }

    pub fn clear(&self) {
        lock(&self.map).clear();
    }
}

/// Everything a request handler needs.
pub struct State {
    pub db: store::Db,
    pub key: SecretKey,
    pub config: Config,
    pub screening: policy::Screening,
    pub clock: Clock,
    swarms: Vec<Mutex<HashMap<Hash, swarm::Swarm>>>,
    pub seeds: Mutex<swarm::Seeds>,
    pub tokens: Mutex<TokenCache>,
    /// Peer identities with live tokens, per account (`max_peers_per_account`).
    pub identities: Mutex<policy::Identities>,
    /// Token requests per API key (`token_requests_per_minute`).
    pub token_rate: Mutex<policy::RateLimit>,
    /// History, rates and recent refusals for the ops views and dashboard.
    pub ops: Mutex<ops::Ops>,
    /// Token decisions by (outcome, reason), and announces, since start.
    pub decisions: Mutex<HashMap<(model::Outcome, &'static str), u64>>,
    pub announces: AtomicU64,
    /// Chunk counts of releases (for ETAs), read from their manifests once.
    chunk_counts: Mutex<HashMap<Hash, u64>>,
    /// Content keys of encrypted releases, by manifest, once opened.
    content_keys: Mutex<HashMap<Hash, shoal_manifest::seal::ContentKey>>,
    rng_counter: AtomicU64,
    rng_seed: u64,
    /// With PostgreSQL: swarm membership shared with the other replicas.
    pub replicas: Option<Arc<replicas::Replicas>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl State {
    pub fn new(db: store::Db, key: SecretKey, config: Config, clock: Clock) -> State {
        let screening = policy::Screening::new(
            &config.screening.embargoed_countries,
            &config.screening.denied_parties,
        );
        let mut seed = [0u8; 8];
        let _ = getrandom::getrandom(&mut seed);
        let replicas = db
            .store()
            .as_postgres()
            .map(|pg| Arc::new(replicas::Replicas::new(pg.clone())));
        State {
            replicas,
            db,
            key,
            config,
            screening,
            clock,
            swarms: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            seeds: Mutex::new(swarm::Seeds::default()),
            tokens: Mutex::new(TokenCache::default()),
            identities: Mutex::new(policy::Identities::default()),
            token_rate: Mutex::new(policy::RateLimit::default()),
            ops: Mutex::new(ops::Ops::default()),
            decisions: Mutex::new(HashMap::new()),
            announces: AtomicU64::new(0),
            chunk_counts: Mutex::new(HashMap::new()),
            content_keys: Mutex::new(HashMap::new()),
            rng_counter: AtomicU64::new(0),
            rng_seed: u64::from_le_bytes(seed),
        }
    }

    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// A fresh RNG for one request.
    pub fn rng(&self) -> swarm::Rng {
        swarm::Rng::new(
            self.rng_seed
                ^ self
                    .rng_counter
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0x9E37_79B9),
        )
    }

    /// Runs `f` on the swarm `id` (created if absent), under its shard's lock.
    pub fn with_swarm<T>(&self, id: &Hash, f: impl FnOnce(&mut swarm::Swarm) -> T) -> T {
        let mut shard = lock(&self.swarms[usize::from(id.0[0]) % SHARDS]);
        f(shard.entry(*id).or_default())
    }

    /// Calls `f` for every swarm, shard by shard.
    pub fn each_swarm(&self, mut f: impl FnMut(&Hash, &mut swarm::Swarm)) {
        for shard in &self.swarms {
            let mut shard = lock(shard);
            for (id, s) in shard.iter_mut() {
                f(id, s);
            }
            shard.retain(|_, s| !s.is_empty());
        }
    }

    /// Records a token decision for metrics and the dashboard.
    pub fn count_decision(&self, outcome: model::Outcome, reason: &'static str) {
        *lock(&self.decisions).entry((outcome, reason)).or_default() += 1;
        if outcome == model::Outcome::Refused {
            lock(&self.ops).refused(self.now(), reason);
        }
    }

    /// Chunks in release `id` (0 if its manifest cannot be read).
    async fn chunk_count(&self, id: &Hash, manifest: &Hash) -> u64 {
        if let Some(&n) = lock(&self.chunk_counts).get(id) {
            return n;
        }
        let n = self
            .db
            .manifest(manifest)
            .await
            .ok()
            .flatten()
            .and_then(|b| shoal_manifest::SignedManifest::from_bytes(&b).ok())
            .and_then(|m| m.open().ok())
            .map_or(0, |m| m.chunks.len() as u64);
        lock(&self.chunk_counts).insert(*id, n);
        n
    }

    /// The swarm and seed views, sorted (busiest swarm first, seeds by id).
    pub async fn views(
        &self,
    ) -> Result<(Vec<ops::SwarmView>, Vec<ops::SeedView>), store::StoreError> {
        let now = self.now();
        let timeout = self.config.seed_timeout_secs;
        let mut found = Vec::new();
        self.each_swarm(|id, s| found.push((*id, s.stats())));
        let mut swarms = Vec::with_capacity(found.len());
        for (id, stats) in found {
            let release = self.db.release(&id).await?;
            let (seeds, with_capacity) = match &release {
                Some(r) => {
                    let registry = lock(&self.seeds);
                    let fresh = registry.for_content(&r.manifest_hash, now, timeout, usize::MAX);
                    (
                        fresh.len(),
                        fresh.iter().filter(|s| ops::has_capacity(s)).count(),
                    )
                }
                None => (0, 0),
            };
            let chunks = match &release {
                Some(r) => self.chunk_count(&id, &r.manifest_hash).await,
                None => 0,
            };
            let eta_secs = release.as_ref().and_then(|r| {
                let left = ops::remaining_bytes(&stats, chunks, r.total_size);
                if left == 0 {
                    return Some(0.0);
                }
                let rate = lock(&self.ops).rate(&id)?;
                (rate > 0.0).then(|| left as f64 / rate)
            });
            let origin_sent_bytes = lock(&self.seeds).sent_to(&id);
            let origin_budget = release.as_ref().map(|r| r.origin_budget);
            let origin_budget_used = release.as_ref().and_then(|r| {
                let b = r.budget_bytes()?;
                Some(origin_sent_bytes as f64 / b.max(1) as f64)
            });
            swarms.push(ops::SwarmView {
                swarm: id,
                origin_budget,
                origin_sent_bytes,
                origin_budget_used,
                product: release.as_ref().map(|r| r.product.clone()),
                channel: release.as_ref().map(|r| r.channel.clone()),
                version: release.as_ref().map(|r| r.version),
                seeds,
                seeds_with_capacity: with_capacity,
                bytes_from_peers: stats.downloaded.saturating_sub(stats.downloaded_from_seeds),
                bytes_from_seeds: stats.downloaded_from_seeds,
                offload: (stats.downloaded > 0)
                    .then(|| 1.0 - stats.downloaded_from_seeds as f64 / stats.downloaded as f64),
                eta_secs,
                stats,
            });
        }
        swarms.sort_by(|a, b| {
            b.stats
                .peers
                .cmp(&a.stats.peers)
                .then(a.swarm.cmp(&b.swarm))
        });
        let mut seeds: Vec<ops::SeedView> = lock(&self.seeds)
            .all()
            .map(|s| ops::seed_view(s, now, timeout))
            .collect();
        seeds.sort_by(|a, b| a.seed.report.seed_id.cmp(&b.seed.report.seed_id));
        Ok((swarms, seeds))
    }

    /// Drops peers that missed two announce intervals, identities whose
    /// tokens expired, idle rate-limit buckets and seeds silent for
    /// `seed_forget_secs`.
    pub fn expire_peers(&self) -> usize {
        let now = self.now();
        let deadline = now.saturating_sub(2 * self.config.announce_interval_secs);
        let mut dropped = 0;
        self.each_swarm(|_, s| dropped += s.expire(deadline));
        lock(&self.identities).expire(now);
        lock(&self.token_rate).expire(now.saturating_mul(1000));
        lock(&self.seeds).forget(now, self.config.seed_forget_secs);
        dropped
    }
}

/// Locks a std mutex, recovering from poisoning (no handler leaves shared
/// state half-updated across a panic point).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What `init` created.
#[derive(Debug)]
pub struct Initialised {
    pub public_key: shoal_types::PublicKey,
    pub operator_key: String,
    pub operator_key_file: PathBuf,
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Creates a tracker data directory: its signing key, the database, and a
/// first operator account with an API key.
pub async fn init(data: &Path) -> anyhow::Result<Initialised> {
    init_with(data, &Config::default()).await
}

/// Opens the configured storage: sled in `data`, or the PostgreSQL
/// database (its schema migrated to this tracker's version when
/// `migrate`; checked otherwise).
pub async fn open_store(
    data: &Path,
    storage: &config::StorageConfig,
    migrate: bool,
) -> anyhow::Result<store::Db> {
    match storage.backend {
        config::Backend::Sled => Ok(store::Db::new(Arc::new(store::SledStore::open(
            &data.join(DB_DIR),
        )?))),
        config::Backend::Postgres => {
            let pg = store::postgres::PgStore::connect(&store::postgres::PgOptions {
                url: storage.url(),
                pool_size: storage.pool_size,
                timeout: std::time::Duration::from_secs(storage.timeout_secs),
            })?;
            if migrate {
                let applied = pg
                    .migrate()
                    .await
                    .context("migrating the PostgreSQL schema")?;
                if !applied.is_empty() {
                    tracing::info!(?applied, "PostgreSQL schema migrated");
                }
            } else {
                pg.check_schema().await?;
            }
            Ok(store::Db::shared(Arc::new(pg)))
        }
    }
}

/// [`init`] with the storage `config` names: with PostgreSQL, the first
/// operator account goes to the shared database, and the other replicas'
/// data directories get a copy of this one's `tracker.key`.
pub async fn init_with(data: &Path, config: &Config) -> anyhow::Result<Initialised> {
    let key_path = data.join(KEY_FILE);
    anyhow::ensure!(
        !key_path.exists(),
        "{} is already initialised ({} exists)",
        data.display(),
        key_path.display()
    );
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let key = SecretKey::generate().context("reading the system's random source")?;
    let db = open_store(data, &config.storage, true).await?;
    let now = system_clock()();
    let account = model::Account {
        id: db.next_id("acc").await?,
        name: "operator".into(),
        kind: model::AccountKind::Individual,
        country: "ZZ".into(),
        seats: 0,
        members: vec![],
        org: None,
        created_at: now,
    };
    db.put_account(&account).await?;
    let (record, text) = keys::new_key(
        db.next_id("key").await?,
        &account.id,
        model::Role::Operator,
        now,
    )?;
    db.put_api_key(&record).await?;
    db.flush().await?;
    let operator_key_file = data.join(OPERATOR_KEY_FILE);
    write_private(&operator_key_file, &format!("{text}\n"))?;
    write_private(&key_path, &key.to_file_text())?;
    Ok(Initialised {
        public_key: key.public(),
        operator_key: text,
        operator_key_file,
    })
}

fn signing_key(data: &Path) -> anyhow::Result<SecretKey> {
    let key_path = data.join(KEY_FILE);
    let text = std::fs::read_to_string(&key_path).with_context(|| {
        format!(
            "reading {} (run `shoal-tracker init --data {}` first)",
            key_path.display(),
            data.display()
        )
    })?;
    SecretKey::from_file_text(&text).with_context(|| key_path.display().to_string())
}

/// The public half of an initialised data directory's signing key: what
/// players and seeds pin as `tracker_key`.
pub fn public_key(data: &Path) -> anyhow::Result<shoal_types::PublicKey> {
    Ok(signing_key(data)?.public())
}

/// Opens an initialised data directory.
pub async fn open(data: &Path, config: Config) -> anyhow::Result<State> {
    let key = signing_key(data)?;
    let db = open_store(data, &config.storage, true).await?;
    Ok(State::new(db, key, config, system_clock()))
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let expiry = {
        let state = Arc::clone(&state);
        let period = std::time::Duration::from_secs(state.config.announce_interval_secs.max(1));
        tokio::spawn(
            async move {
                let mut tick = tokio::time::interval(period);
                loop {
                    tick.tick().await;
                    let dropped = state.expire_peers();
                    if dropped > 0 {
                        tracing::debug!(
                            dropped,
                            "expired peers that missed two announce intervals"
                        );
                    }
                }
            }
            .instrument(tracing::info_span!("expire_members")),
        )
    };
    let sampler = {
        let state = Arc::clone(&state);
        tokio::spawn(
            async move {
                let mut tick =
                    tokio::time::interval(std::time::Duration::from_secs(ops::SAMPLE_SECS));
                loop {
                    tick.tick().await;
                    match state.views().await {
                        Ok((swarms, seeds)) => {
                            lock(&state.ops).sample(state.now(), &swarms, &seeds)
                        }
                        Err(e) => tracing::warn!(error = %e, "sampling the ops views failed"),
                    }
                }
            }
            .instrument(tracing::info_span!("ops_sampler")),
        )
    };
    let exchange = state.replicas.clone().map(|replicas| {
        let state = Arc::clone(&state);
        let span = tracing::info_span!("replicas", id = %replicas.id);
        tokio::spawn(
            async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(
                    replicas::EXCHANGE_MS,
                ));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut round = 0u64;
                let mut failing = false;
                loop {
                    tick.tick().await;
                    round += 1;
                    match replicas.exchange(&state, round.is_multiple_of(20)).await {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!("membership exchange with the other replicas resumed");
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "membership exchange with the other replicas failed; retrying");
                        }
                        Err(_) => {}
                    }
                }
            }
            .instrument(span),
        )
    });
    let app = api::router(state);
    // Announces note the address they come from (players behind one router).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    expiry.abort();
    sampler.abort();
    if let Some(exchange) = exchange {
        exchange.abort();
    }
    result.context("serving HTTP")
}
