//! The seed server: holds the canonical content of releases, serves chunks
//! over QUIC to peers with a valid swarm token, and reports capacity, egress,
//! free disk and the releases it holds to the tracker.
//!
//! Layout of the data directory: `seed.key` (the libp2p identity, in the
//! Shoal secret-key format) and `releases/<release id>/` (a bundle as written
//! by `shoal publish`). Every chunk is verified against the manifest when
//! imported and again on every read, so a damaged disk never serves bad bytes.

use anyhow::{Context as _, bail};
use serde::Deserialize;
use shoal_manifest::{Bundle, SignedManifest, bundle};
use shoal_net::{ChunkSource, Keypair};
use shoal_types::{Bitfield, Hash, PublicKey, SecretKey};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

pub mod push;

pub const KEY_FILE: &str = "seed.key";
pub const RELEASES_DIR: &str = "releases";

/// Everything the seed needs; from a TOML file (see `seed.example.toml`),
/// overridden by flags.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data: PathBuf,
    /// QUIC multiaddrs to listen on, e.g. `/ip4/0.0.0.0/udp/4433/quic-v1`.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Tracker base URL, or every replica's separated by commas: the seed
    /// heartbeats to each (replicas keep seeds in memory), and asks the
    /// first for manifests.
    pub tracker: String,
    /// The seed's API key (role `seed`).
    pub api_key: String,
    /// The tracker's public key (hex). Required: the seed verifies every
    /// swarm token against it and never asks the tracker for it.
    #[serde(default)]
    pub tracker_key: Option<PublicKey>,
    /// Name in the tracker's ops views.
    #[serde(default = "default_seed_id")]
    pub seed_id: String,
    /// Upload capacity reported to the tracker, megabits per second.
    #[serde(default = "default_capacity")]
    pub capacity_mbit: u64,
    /// Upload cap, megabits per second (default: the capacity).
    #[serde(default)]
    pub upload_cap_mbit: Option<u64>,
    /// Most peers connected at once.
    #[serde(default = "default_max_peers")]
    pub max_peers: usize,
    /// Super-seeding window, seconds: a chunk sent within it is refused so
    /// peers relay it (0 turns super-seeding off).
    #[serde(default = "default_super_seed")]
    pub super_seed_secs: u64,
    /// Address for `GET /metrics` (Prometheus), e.g. `127.0.0.1:9101`.
    #[serde(default)]
    pub metrics: Option<String>,
    /// Address for the push API (`shoal publish --seed`), e.g. `127.0.0.1:9102`.
    #[serde(default)]
    pub push_listen: Option<String>,
    /// The bearer key publishers present to the push API. Required with
    /// `push_listen`; prefer the `SHOAL_SEED_PUSH_KEY` variable to the file.
    #[serde(default)]
    pub push_key: Option<String>,
    /// The circuit relay this seed runs for players behind NATs.
    #[serde(default)]
    pub relay: RelayConfig,
}

/// The seed's circuit relay v2 server: players that cannot be dialed
/// reserve a slot here and are reached through it until a hole punch makes
/// the connection direct. Circuits carry the handshake and the punch's
/// coordination; chunk requests over them are refused, and every circuit
/// closes after `circuit_secs` or `circuit_bytes`. Only peers that presented
/// a valid swarm token to this seed may reserve.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    pub enabled: bool,
    /// Players reachable through this seed at once.
    pub max_reservations: usize,
    /// A reservation lasts this long before the player renews it.
    pub reservation_secs: u64,
    /// Circuits open at once, and per source peer.
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    /// A circuit closes after this long, or this many bytes.
    pub circuit_secs: u64,
    pub circuit_bytes: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        let limits = shoal_net::RelayLimits::default();
        RelayConfig {
            enabled: true,
            max_reservations: limits.max_reservations,
            reservation_secs: limits.reservation_duration.as_secs(),
            max_circuits: limits.max_circuits,
            max_circuits_per_peer: limits.max_circuits_per_peer,
            circuit_secs: limits.circuit_duration.as_secs(),
            circuit_bytes: limits.circuit_bytes,
        }
    }
}

impl RelayConfig {
    /// The node's relay limits, or `None` when the relay is off.
    pub fn limits(&self) -> Option<shoal_net::RelayLimits> {
        self.enabled.then(|| shoal_net::RelayLimits {
            max_reservations: self.max_reservations,
            reservation_duration: Duration::from_secs(self.reservation_secs),
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            circuit_duration: Duration::from_secs(self.circuit_secs),
            circuit_bytes: self.circuit_bytes,
        })
    }
}

fn default_max_peers() -> usize {
    500
}

fn default_super_seed() -> u64 {
    10
}

fn default_listen() -> Vec<String> {
    vec!["/ip4/0.0.0.0/udp/4433/quic-v1".into()]
}

fn default_seed_id() -> String {
    "seed-1".into()
}

fn default_capacity() -> u64 {
    1000
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// The seed's libp2p identity, created on first use and kept (mode 0600).
pub fn identity(data: &Path) -> anyhow::Result<Keypair> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = data.join(KEY_FILE);
    let key = match std::fs::read_to_string(&path) {
        Ok(text) => SecretKey::from_file_text(&text).with_context(|| path.display().to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data)
                .with_context(|| format!("creating {}", data.display()))?;
            let key = SecretKey::generate()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(key.to_file_text().as_bytes())?;
            f.sync_all()?;
            key
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(shoal_net::keypair_from_seed(key.seed()))
}

/// Copies a published bundle into the seed's store as release `release`,
/// verifying every chunk first. Nothing is left half-imported.
pub fn import(data: &Path, bundle_dir: &Path, release: Hash) -> anyhow::Result<PathBuf> {
    let source = Bundle::open(bundle_dir)
        .with_context(|| format!("opening bundle {}", bundle_dir.display()))?;
    let n = source.manifest().chunks.len() as u32;
    let releases = data.join(RELEASES_DIR);
    let target = releases.join(release.to_string());
    if target.exists() {
        bail!(
            "release {release} is already imported ({})",
            target.display()
        );
    }
    let partial = releases.join(format!(".{release}.partial-{}", std::process::id()));
    let chunks = partial.join(bundle::CHUNKS_DIR);
    std::fs::create_dir_all(&chunks).with_context(|| format!("creating {}", chunks.display()))?;
    let result = (|| -> anyhow::Result<()> {
        for index in 0..n {
            let bytes = source
                .read_chunk(index)
                .with_context(|| format!("chunk {index} of {}", bundle_dir.display()))?;
            let info = source.manifest().chunks[index as usize];
            let path = bundle::chunk_path(&chunks, &info.hash);
            std::fs::create_dir_all(path.parent().context("chunk path has a parent")?)?;
            write_synced(&path, &bytes)?;
        }
        write_synced(
            &partial.join(bundle::MANIFEST_FILE),
            &source.signed().to_bytes(),
        )?;
        for dir in [&chunks, &partial] {
            std::fs::File::open(dir).and_then(|d| d.sync_all())?;
        }
        // durable before the rename makes it visible
        std::fs::rename(&partial, &target)
            .with_context(|| format!("moving into {}", target.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result.map(|()| target)
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_data()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// The releases a seed serves, with an egress counter.
#[derive(Debug, Default)]
pub struct Releases {
    bundles: std::sync::RwLock<HashMap<Hash, Arc<Bundle>>>,
    served: AtomicU64,
    chunks_served: AtomicU64,
    /// Chunks that failed verification on read (a damaged disk).
    failed_reads: AtomicU64,
    /// Woken when a release is added, so the tracker hears of it at once.
    changed: tokio::sync::Notify,
    /// Swarms a peer holds a valid token for that this seed does not know
    /// by id, being looked up (is it a build held under another id?), and
    /// when each lookup started. Chunk requests for them hear `Busy`.
    resolving: std::sync::Mutex<HashMap<Hash, Lookup>>,
    /// What this seed sent of each swarm against its share of the swarm's
    /// origin budget (one per swarm it served or heard a share for).
    ledgers: std::sync::Mutex<HashMap<Hash, shoal_scheduler::Ledger>>,
}

/// Where the lookup of an unknown swarm stands, and since when.
#[derive(Debug, Clone, Copy)]
enum Lookup {
    Pending(Instant),
    NotHeld(Instant),
}

impl Lookup {
    fn fresh(self) -> bool {
        match self {
            Lookup::Pending(t) | Lookup::NotHeld(t) => t.elapsed() < RESOLVE_AGAIN,
        }
    }
}

/// Most unknown swarms looked up at once (and remembered as not held).
const MAX_RESOLVING: usize = 256;
/// How long an unknown swarm is remembered as not held before asking again.
const RESOLVE_AGAIN: Duration = Duration::from_secs(60);

impl Releases {
    /// Opens every release under `data/releases`.
    pub fn open(data: &Path) -> anyhow::Result<Releases> {
        let dir = data.join(RELEASES_DIR);
        let mut bundles = HashMap::new();
        if dir.exists() {
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(id) = name.parse::<Hash>() else {
                    continue;
                }; // skips partial imports
                let b = Bundle::open(&entry.path())
                    .with_context(|| format!("opening {}", entry.path().display()))?;
                bundles.insert(id, Arc::new(b));
            }
        }
        Ok(Releases {
            bundles: std::sync::RwLock::new(bundles),
            served: AtomicU64::new(0),
            chunks_served: AtomicU64::new(0),
            failed_reads: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            resolving: std::sync::Mutex::new(HashMap::new()),
            ledgers: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Imports a bundle (see [`import`]) and serves it at once.
    pub fn import(&self, data: &Path, bundle_dir: &Path, release: Hash) -> anyhow::Result<()> {
        let dir = import(data, bundle_dir, release)?;
        self.adopt(release, &dir)
    }

    /// Serves the complete release already in `dir` (an import or a finished push).
    pub fn adopt(&self, release: Hash, dir: &Path) -> anyhow::Result<()> {
        let bundle = Bundle::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        self.bundles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(release, Arc::new(bundle));
        self.changed.notify_one();
        Ok(())
    }

    /// Serves release `release` from the bundle of `held` (the tracker says
    /// both are the same build, e.g. after a rollback). Aliases live in
    /// memory and come back with the first heartbeat after a restart.
    /// Returns whether a new alias was added.
    pub fn alias(&self, release: Hash, held: Hash) -> bool {
        let mut bundles = self.bundles.write().unwrap_or_else(|p| p.into_inner());
        if bundles.contains_key(&release) {
            return false;
        }
        let Some(bundle) = bundles.get(&held).cloned() else {
            return false;
        };
        bundles.insert(release, bundle);
        true
    }

    /// Starts resolving `swarm` unless it is held, already being resolved or
    /// recently found not to be held. Returns whether the caller should.
    fn begin_resolving(&self, swarm: &Hash) -> bool {
        if self.bundle(swarm).is_some() {
            return false;
        }
        let mut resolving = self.resolving.lock().unwrap_or_else(|p| p.into_inner());
        if resolving.get(swarm).is_some_and(|l| l.fresh()) {
            return false;
        }
        resolving.retain(|_, l| l.fresh());
        if resolving.len() >= MAX_RESOLVING {
            return false;
        }
        resolving.insert(*swarm, Lookup::Pending(Instant::now()));
        true
    }

    /// Serves `swarm` if `manifest` (its publisher-signed bytes, as the
    /// tracker has them) is the manifest of a held bundle; the lookup ends
    /// either way (a swarm not held is remembered for [`RESOLVE_AGAIN`]).
    fn finish_resolving(&self, swarm: Hash, manifest: Option<&[u8]>) -> bool {
        let held = manifest
            .and_then(|bytes| SignedManifest::from_bytes(bytes).ok())
            .and_then(|m| {
                let bundles = self.bundles.read().unwrap_or_else(|p| p.into_inner());
                bundles
                    .iter()
                    .find(|(_, b)| b.signed().hash() == m.hash())
                    .map(|(id, _)| *id)
            });
        let aliased = held.is_some_and(|held| self.alias(swarm, held));
        let mut resolving = self.resolving.lock().unwrap_or_else(|p| p.into_inner());
        if aliased {
            resolving.remove(&swarm);
        } else {
            resolving.insert(swarm, Lookup::NotHeld(Instant::now()));
        }
        aliased
    }

    pub(crate) fn bundle(&self, id: &Hash) -> Option<Arc<Bundle>> {
        self.bundles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub fn ids(&self) -> Vec<Hash> {
        let bundles = self.bundles.read().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<Hash> = bundles.keys().copied().collect();
        ids.sort();
        ids
    }

    /// Bytes served since start.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Runs `f` on `swarm`'s ledger, made on first use; `None` for a swarm
    /// not served here.
    fn ledger<T>(
        &self,
        swarm: &Hash,
        f: impl FnOnce(&mut shoal_scheduler::Ledger) -> T,
    ) -> Option<T> {
        let mut ledgers = self.ledgers.lock().unwrap_or_else(|p| p.into_inner());
        if !ledgers.contains_key(swarm) {
            let bundle = self.bundle(swarm)?;
            let lens = bundle.manifest().chunks.iter().map(|c| c.len).collect();
            ledgers.insert(*swarm, shoal_scheduler::Ledger::new(lens));
        }
        ledgers.get_mut(swarm).map(f)
    }

    /// The tracker's answer: this seed's share of `swarm`'s origin budget,
    /// as chunk bytes since start (`None`: unlimited).
    pub fn allow(&self, swarm: &Hash, bytes: Option<u64>) {
        self.ledger(swarm, |l| l.allow(bytes));
    }

    /// Chunk bytes sent to each swarm since start (for the heartbeat).
    pub fn sent_by_swarm(&self) -> Vec<shoal_api::SwarmSent> {
        let ledgers = self.ledgers.lock().unwrap_or_else(|p| p.into_inner());
        let mut sent: Vec<_> = ledgers
            .iter()
            .filter(|(_, l)| l.total() > 0)
            .map(|(id, l)| shoal_api::SwarmSent {
                release: *id,
                bytes: l.total(),
            })
            .collect();
        sent.sort_by_key(|s| s.release);
        sent
    }
}

impl ChunkSource for Releases {
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>> {
        let bundle = self.bundle(swarm)?;
        match bundle.read_chunk(index) {
            Ok(bytes) => {
                self.served.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                self.chunks_served.fetch_add(1, Ordering::Relaxed);
                Some(bytes)
            }
            Err(e) => {
                self.failed_reads.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%swarm, index, error = %e, "refusing to serve a chunk that fails verification");
                None
            }
        }
    }

    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield> {
        self.bundle(swarm)
            .map(|b| Bitfield::full(b.manifest().chunks.len() as u32))
    }

    fn chunk_len(&self, swarm: &Hash, index: u32) -> Option<u32> {
        let bundle = self.bundle(swarm)?;
        bundle.manifest().chunks.get(index as usize).map(|c| c.len)
    }

    fn budget(&self, swarm: &Hash, index: u32) -> shoal_net::Budget {
        self.ledger(swarm, |l| l.budget(index)).unwrap_or_default()
    }

    /// Counted when decided, not when read: answers decided meanwhile see
    /// the budget this one spends (a read that then fails stays counted,
    /// which errs on the frugal side).
    fn promised(&self, swarm: &Hash, index: u32) {
        self.ledger(swarm, |l| l.sent(index));
    }

    /// While an unknown swarm is being looked up, its chunks are `Busy`:
    /// the requester retries instead of forgetting this seed.
    fn settling(&self, swarm: &Hash) -> bool {
        matches!(
            self.resolving
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(swarm),
            Some(Lookup::Pending(t)) if t.elapsed() < RESOLVE_AGAIN
        )
    }
}

/// Serves until `shutdown` resolves, heartbeating to the tracker.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let releases = Arc::new(Releases::open(&config.data)?);
    run_with(config, releases, shutdown).await
}

/// [`run`] with the releases already open, so the caller can add more
/// while it serves ([`Releases::import`]).
pub async fn run_with(
    config: Config,
    releases: Arc<Releases>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let keypair = identity(&config.data)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let bases: Vec<String> = config
        .tracker
        .split(',')
        .map(|b| b.trim().trim_end_matches('/').to_owned())
        .filter(|b| !b.is_empty())
        .collect();
    anyhow::ensure!(
        (1..=16).contains(&bases.len()),
        "tracker: name 1 to 16 tracker URLs (separated by commas)"
    );
    let base = bases[0].clone();
    // Pinned, never asked of the tracker: whoever answered as the tracker
    // could otherwise sign tokens that this seed would serve.
    let tracker_key = config.tracker_key.context(
        "tracker_key is not set: pin the tracker's public key (`shoal-tracker public-key --data DIR` prints it)",
    )?;
    let listen = config
        .listen
        .iter()
        .map(|a| a.parse().with_context(|| format!("listen address {a}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let clock = Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let mut net_config = shoal_net::Config::new(keypair, listen, tracker_key, clock);
    // Never upload faster than the cap, nor than the capacity the tracker is told about.
    let cap_mbit = config
        .upload_cap_mbit
        .unwrap_or(config.capacity_mbit)
        .min(config.capacity_mbit);
    net_config.upload_rate = Some(cap_mbit * 1_000_000 / 8);
    net_config.max_connections = config.max_peers;
    net_config.relay = config.relay.limits();
    // Seeds are public: they tell players whether players are reachable.
    net_config.autonat_server = true;
    // A seed answers or refuses at once (super-seeding and FairShare decide
    // who); the neediest-first queue is for players' nodes.
    net_config.upload_queue = 0;
    net_config.super_seed =
        (config.super_seed_secs > 0).then(|| Duration::from_secs(config.super_seed_secs));
    let (client, mut events) = shoal_net::spawn(net_config, releases.clone())
        .map_err(|e| anyhow::anyhow!("starting the node: {e}"))?;
    let mut addrs = Vec::new();
    for _ in 0..200 {
        addrs = client.listen_addrs().await?;
        if !addrs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!(peer_id = %client.peer_id(), ?addrs, releases = releases.ids().len(), "seed serving");
    if let Some(addr) = &config.metrics {
        let (releases, client, data) = (releases.clone(), client.clone(), config.data.clone());
        let capacity = config.capacity_mbit * 1_000_000;
        let cap = cap_mbit * 1_000_000;
        let render: shoal_metrics::Render = Arc::new(move || {
            let get = shoal_net::NatCounters::get;
            shoal_metrics::Scrape::new("shoal_seed")
                .counter(
                    "egress_bytes",
                    "Chunk bytes sent to peers",
                    releases.served(),
                )
                .counter(
                    "chunks_served",
                    "Chunks sent to peers",
                    releases.chunks_served.load(Ordering::Relaxed),
                )
                .counter(
                    "chunks_failed_verification",
                    "Stored chunks that failed verification on read and were not sent",
                    releases.failed_reads.load(Ordering::Relaxed),
                )
                .gauge(
                    "capacity_bps",
                    "Upload capacity, bits per second",
                    capacity as f64,
                )
                .gauge("upload_cap_bps", "Upload cap, bits per second", cap as f64)
                .gauge(
                    "peers_connected",
                    "Peers connected",
                    client.connected_peers() as f64,
                )
                .gauge(
                    "free_disk_bytes",
                    "Free disk under the data directory",
                    shoal_store::free_disk(&data) as f64,
                )
                .gauge("releases", "Releases held", releases.ids().len() as f64)
                .counter(
                    "relay_circuits",
                    "Circuits relayed for players behind NATs (handshakes and hole punches)",
                    get(&client.nat().circuits_relayed),
                )
                .counter(
                    "chunks_refused_relayed",
                    "Chunk requests refused because they came over a relayed circuit",
                    get(&client.nat().chunks_refused_relayed),
                )
                .counter(
                    "chunks_last_resort",
                    "Chunks sent again inside the super-seeding window because the requester \
                     could reach no peer holding them",
                    get(&client.nat().chunks_last_resort),
                )
                .counters(
                    "sent_by_path_bytes",
                    "Chunk bytes sent, by connection path (lan: on a network this seed is on; \
                     direct: across routers; relayed: through a relay)",
                    "path",
                    &client.nat().sent.labelled(),
                )
                .render()
        });
        let bound = shoal_metrics::spawn(addr, render).await?;
        tracing::info!(%bound, "metrics at /metrics");
    }
    if let Some(addr) = &config.push_listen {
        let key = config
            .push_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .context("push_listen needs a push_key (or SHOAL_SEED_PUSH_KEY)")?;
        let link = push::TrackerLink {
            http: http.clone(),
            base: base.clone(),
            api_key: config.api_key.clone(),
        };
        let state = Arc::new(push::Push::new(
            config.data.clone(),
            releases.clone(),
            link,
            key,
        ));
        let bound = push::spawn(addr, state).await?;
        tracing::info!(%bound, "push API at /v1/push");
    }
    // A peer with a valid token for a swarm this seed does not know by id
    // may want a build it holds under another id (a rollback is a new
    // release of an old manifest): ask the tracker for that release's
    // manifest and serve it if it is one held. Other events are not needed.
    {
        let (releases, http, base, api_key) = (
            releases.clone(),
            http.clone(),
            base.clone(),
            config.api_key.clone(),
        );
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let shoal_net::Event::Authenticated { swarm, .. } = event else {
                    continue;
                };
                if !releases.begin_resolving(&swarm) {
                    continue;
                }
                let (releases, http, base, api_key) = (
                    releases.clone(),
                    http.clone(),
                    base.clone(),
                    api_key.clone(),
                );
                tokio::spawn(
                    async move {
                        let manifest = async {
                            let r = http
                                .get(format!("{base}/v1/releases/{swarm}/manifest"))
                                .bearer_auth(&api_key)
                                .send()
                                .await
                                .ok()?;
                            if !r.status().is_success() {
                                return None;
                            }
                            r.bytes().await.ok()
                        }
                        .await;
                        if releases.finish_resolving(swarm, manifest.as_deref()) {
                            tracing::info!(%swarm, "serving a release from the same build held under another id");
                            releases.changed.notify_one();
                        }
                    }
                    .instrument(tracing::info_span!("resolve_swarm", %swarm)),
                );
            }
        }.instrument(tracing::info_span!("resolve_swarms")));
    }

    tokio::pin!(shutdown);
    let mut interval = Duration::from_secs(1);
    let mut last = (Instant::now(), releases.served());
    loop {
        let (t0, served0) = last;
        let served = releases.served();
        let dt = t0.elapsed().as_secs_f64().max(1e-3);
        last = (Instant::now(), served);
        let report = shoal_api::SeedReport {
            seed_id: config.seed_id.clone(),
            peer_id: client.peer_id().to_base58(),
            addrs: addrs.iter().map(ToString::to_string).collect(),
            capacity_bps: config.capacity_mbit * 1_000_000,
            egress_bps: ((served - served0) as f64 * 8.0 / dt) as u64,
            peers: u32::try_from(client.connected_peers()).unwrap_or(u32::MAX),
            free_disk: shoal_store::free_disk(&config.data),
            releases: releases.ids(),
            relay: config.relay.enabled,
            sent: releases.sent_by_swarm(),
        };
        // Every replica hears the heartbeat; they answer alike, and the
        // first answer is applied. A stop does not wait for a tracker that
        // is slow to answer.
        let posts = bases.iter().map(|b| {
            http.post(format!("{b}/v1/seeds/heartbeat"))
                .bearer_auth(&config.api_key)
                .json(&report)
                .send()
        });
        let results = tokio::select! {
            _ = &mut shutdown => break,
            results = futures::future::join_all(posts) => results,
        };
        let mut sent = None;
        for (b, r) in bases.iter().zip(results) {
            match r {
                Ok(r) if r.status().is_success() && sent.is_none() => sent = Some(Ok(r)),
                Ok(r) if r.status().is_success() => {}
                Ok(r) if bases.len() > 1 => {
                    tracing::warn!(tracker = %b, status = %r.status(), "tracker refused the heartbeat")
                }
                Err(e) if bases.len() > 1 => {
                    tracing::warn!(tracker = %b, error = %e, "heartbeat failed; retrying")
                }
                other => sent = sent.or(Some(other)),
            }
        }
        let Some(sent) = sent else {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(interval) => {}
            }
            continue;
        };
        match sent {
            Ok(r) if r.status().is_success() => {
                let answer = match r.json::<shoal_api::HeartbeatAnswer>().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "the tracker's heartbeat answer is malformed");
                        shoal_api::HeartbeatAnswer {
                            interval: 30,
                            aliases: vec![],
                            allowances: vec![],
                        }
                    }
                };
                interval = Duration::from_secs(answer.interval.max(1));
                for a in &answer.allowances {
                    releases.allow(&a.release, a.bytes);
                }
                let mut added = 0;
                for shoal_api::Alias { release, held } in answer.aliases {
                    if releases.alias(release, held) {
                        tracing::info!(%release, %held, "serving a release from the same build held under another id");
                        added += 1;
                    }
                }
                if added > 0 {
                    // Tell the tracker at once that the new ids are served.
                    continue;
                }
            }
            Ok(r) => tracing::warn!(status = %r.status(), "tracker refused the heartbeat"),
            Err(e) => tracing::warn!(error = %e, "heartbeat failed; retrying"),
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(interval) => {}
            _ = releases.changed.notified() => {}
        }
    }
    tracing::info!(peer_id = %client.peer_id(), "seed stopping");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_config_parses() {
        let config: Config = toml::from_str(include_str!("../../deploy/seed.toml")).unwrap();
        assert_eq!(config.metrics.as_deref(), Some("0.0.0.0:9101"));
        assert_eq!(config.data, PathBuf::from("/var/lib/shoal-seed"));
    }

    #[test]
    fn example_config_parses() {
        let config: Config = toml::from_str(include_str!("../seed.example.toml")).unwrap();
        assert_eq!(config.seed_id, "seed-1");
        assert_eq!(config.max_peers, 500);
        assert_eq!(config.super_seed_secs, 10);
        assert_eq!(config.metrics.as_deref(), Some("127.0.0.1:9101"));
        assert_eq!(config.relay, RelayConfig::default());
        let limits = config.relay.limits().unwrap();
        assert_eq!(limits.circuit_bytes, 65536);
        let off: Config = toml::from_str(
            "data = \"x\"\ntracker = \"y\"\napi_key = \"z\"\n[relay]\nenabled = false",
        )
        .unwrap();
        assert!(off.relay.limits().is_none());
        assert!(
            toml::from_str::<Config>(
                "data = \"x\"\ntracker = \"y\"\napi_key = \"z\"\n[relay]\ntypo = 1"
            )
            .is_err()
        );
        assert!(
            toml::from_str::<Config>("data = \"x\"\ntracker = \"y\"\napi_key = \"z\"\ntypo = 1")
                .is_err()
        );
    }
}
