//! The player's launcher: `shoal install`, `update`, `verify`, `repair` and
//! `status`. Install and update get a token and signed release metadata
//! from the tracker, check them and the publisher-signed manifest, stage
//! what is missing (copying what the installed build already has), download
//! the rest through the swarm, swap the new build in atomically, then keep
//! seeding for a while.

mod node;
pub mod view;

pub use node::{Held, Serving};

use crate::config::Settings;
use crate::tracker::{Refusal, Tracker};
use crate::{Exit, human, with_exit};
use anyhow::Context as _;
use node::{Announcer, PeerInfo};
use serde::{Deserialize, Serialize};
use shoal_manifest::SignedManifest;
use shoal_net::download::{Counters, DownloadError, Job};
use shoal_store::{Build, Install, Record, StoreError};
use shoal_token::{ReleaseError, SignedRelease, Token};
use shoal_types::{Bitfield, Hash, PublicKey};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument as _;

/// What to install or update.
#[derive(Debug, Clone)]
pub struct Request {
    pub product: String,
    /// Default: the installed build's channel, else `stable`.
    pub channel: Option<String>,
    pub dir: PathBuf,
    /// Keep serving this long after the install (zero: not at all).
    pub seed_for: Duration,
    /// Only update an existing install (refuse an empty directory).
    pub update: bool,
    /// Set once every chunk is here, before the swap (so a Ctrl-C handler
    /// lets the swap finish and ends seeding gracefully instead of
    /// interrupting).
    pub seeding: Arc<std::sync::atomic::AtomicBool>,
}

/// How an install or update went (printed with `--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub product: String,
    pub channel: String,
    pub version: u64,
    pub label: String,
    pub dir: PathBuf,
    /// Nothing to do: this release was already installed.
    pub up_to_date: bool,
    /// The version replaced, if any.
    pub previous_version: Option<u64>,
    /// Bytes of the build (all files).
    pub size: u64,
    /// Unique bytes the release has.
    pub release_bytes: u64,
    /// Copied from the installed build instead of downloaded.
    pub reused_bytes: u64,
    /// Already staged by an interrupted run.
    pub resumed_bytes: u64,
    pub from_peers: u64,
    pub from_seeds: u64,
    /// Sent to other peers, while downloading and seeding.
    pub uploaded: u64,
    pub banned_peers: usize,
    /// Chunk requests sent to seeds, by why: no connected peer held the
    /// chunk (`unheld`; of which a seed had already sent it to another peer,
    /// `sent_elsewhere`), or peers failed to deliver it (`peers_failed`).
    pub seed_asks: SeedAsks,
    pub download_secs: f64,
    pub seeded_secs: f64,
    /// How the node reached and was reached by peers.
    pub nat: NatReport,
}

/// See [`Outcome::seed_asks`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct SeedAsks {
    pub unheld: u64,
    pub sent_elsewhere: u64,
    pub peers_failed: u64,
}

/// The node's reachability and NAT traversal, at the end of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NatReport {
    pub reachability: shoal_types::Reachability,
    pub direct_connections: u64,
    pub relayed_connections: u64,
    /// Hole-punch upgrades finished (a success, or a failure after DCUtR's
    /// 3 tries), and the successes.
    pub punch_attempts: u64,
    pub punch_successes: u64,
    /// Relay slots this node held (it was behind a NAT).
    pub reservations: u64,
    /// Chunk requests it answered Busy because they came over a relay.
    pub chunks_refused_relayed: u64,
    /// Nodes mDNS found on its LAN (`lan_discovery`).
    pub lan_peers: u64,
}

impl NatReport {
    fn of(client: &shoal_net::Client) -> NatReport {
        let n = client.nat();
        let get = shoal_net::NatCounters::get;
        NatReport {
            reachability: client.reachability(),
            direct_connections: get(&n.direct_connections),
            relayed_connections: get(&n.relayed_connections),
            punch_attempts: get(&n.punch_attempts),
            punch_successes: get(&n.punch_successes),
            reservations: get(&n.reservations),
            chunks_refused_relayed: get(&n.chunks_refused_relayed),
            lan_peers: get(&n.lan_peers),
        }
    }
}

/// The tracker's answer to a token request.
#[derive(Debug, Deserialize)]
struct TokenAnswer {
    token: String,
    swarm: Hash,
    release: String,
    manifest_url: String,
    #[serde(default)]
    bootstrap: Vec<PeerInfo>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Turns a tracker refusal into the launcher's exit codes.
fn classify(err: anyhow::Error) -> anyhow::Error {
    let code = err
        .chain()
        .find_map(|e| e.downcast_ref::<Refusal>())
        .map(|r| r.code.clone());
    match code.as_deref() {
        Some("embargoed_country" | "denied_party") => with_exit(err, Exit::ExportRefused),
        Some(
            "not_entitled"
            | "entitlement_expired"
            | "entitlement_revoked"
            | "not_on_allow_list"
            | "unknown_product"
            | "unknown_channel"
            | "no_release"
            | "wrong_role",
        ) => with_exit(err, Exit::NotEntitled),
        _ => err,
    }
}

fn store_error(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::NotOurs(_) | StoreError::Busy(_) => with_exit(e, Exit::BadInput),
        e if e.is_disk_full() => with_exit(
            anyhow::Error::new(e).context("the disk is full"),
            Exit::DiskFull,
        ),
        e => anyhow::Error::new(e),
    }
}

fn invalid(msg: impl std::fmt::Display) -> anyhow::Error {
    with_exit(anyhow::anyhow!("{msg}"), Exit::SignatureInvalid)
}

/// The pinned tracker key. There is no fallback to the key the tracker
/// reports about itself: whoever answers as the tracker could then sign
/// tokens and releases, so an unpinned launcher refuses to start.
fn tracker_key(settings: &Settings) -> anyhow::Result<PublicKey> {
    settings.tracker_key.ok_or_else(|| {
        with_exit(
            anyhow::anyhow!(
                "no tracker key pinned: set tracker_key in config.toml (or SHOAL_TRACKER_KEY, or --tracker-key). \
                 The tracker's operator has it: `shoal-tracker init` printed it, and \
                 `shoal-tracker public-key --data DIR` prints it again"
            ),
            Exit::BadInput,
        )
    })
}

/// A token and release metadata, checked: the right to join one swarm.
struct Ticket {
    token: Token,
    swarm: Hash,
    release: shoal_token::Release,
    release_text: String,
    manifest_url: String,
    bootstrap: Vec<PeerInfo>,
}

/// Steps 1–2a: a token and the release metadata, checked against the pinned
/// tracker key and the highest version this install accepted.
async fn ticket(
    tracker: &Tracker,
    key: &PublicKey,
    install: &Install,
    product: &str,
    channel: &str,
    me: &shoal_net::Peer,
) -> anyhow::Result<Ticket> {
    let body = serde_json::json!({
        "product": product,
        "channel": channel,
        "peer_id": me.to_base58(),
    });
    let answer = tracker
        .call(reqwest::Method::POST, "/v1/tokens", Some(&body))
        .await
        .map_err(classify)?;
    let answer: TokenAnswer =
        serde_json::from_value(answer).context("the tracker's token answer is malformed")?;
    let now = now_secs();
    let signed = SignedRelease::from_text(&answer.release).map_err(invalid)?;
    let highest = install
        .highest_accepted(product, channel)
        .map_err(store_error)?;
    let release = signed
        .verify(key, product, channel, now, highest)
        .map_err(|e| match e {
            ReleaseError::Rollback { .. } => with_exit(e, Exit::Rollback),
            ReleaseError::Expired { .. } => with_exit(e, Exit::MetadataExpired),
            e => invalid(e),
        })?;
    let swarm = release.id();
    if swarm != answer.swarm {
        return Err(invalid(
            "the token answer names another swarm than its release",
        ));
    }
    let token = Token::from_text(&answer.token).map_err(invalid)?;
    token
        .verify(key, now, &swarm, &me.to_base58())
        .map_err(|e| invalid(format!("swarm token: {e}")))?;
    install
        .accept(product, channel, release.version)
        .map_err(store_error)?;
    Ok(Ticket {
        token,
        swarm,
        release,
        release_text: answer.release,
        manifest_url: answer.manifest_url,
        bootstrap: answer.bootstrap,
    })
}

/// Step 2b: the manifest, signed by the publisher key the tracker vouches
/// for, and hashing to what the release metadata says.
async fn fetch_manifest(
    tracker: &Tracker,
    ticket: &Ticket,
) -> anyhow::Result<(SignedManifest, shoal_manifest::Manifest)> {
    let bytes = tracker.get_bytes(&ticket.manifest_url).await?;
    let signed = SignedManifest::from_bytes(&bytes).map_err(invalid)?;
    let release = &ticket.release;
    if signed.hash() != release.manifest_hash {
        return Err(invalid("the manifest does not match the release metadata"));
    }
    if signed.publisher() != release.publisher {
        return Err(invalid(format!(
            "the manifest is signed by {}, not by the product's publisher key {}",
            signed.publisher(),
            release.publisher
        )));
    }
    let manifest = signed
        .open()
        .map_err(|e| invalid(format!("manifest: {e}")))?;
    if manifest.product != release.product {
        return Err(invalid(format!(
            "the manifest is for product {:?}, not {:?}",
            manifest.product, release.product
        )));
    }
    Ok((signed, manifest))
}

/// A running peer node with its announce loop.
struct Swarm {
    client: shoal_net::Client,
    events: mpsc::Receiver<shoal_net::Event>,
    announcer: Arc<Announcer>,
    announcing: tokio::task::JoinHandle<()>,
    more: Option<mpsc::Receiver<shoal_net::download::Source>>,
    counters: Arc<Counters>,
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.announcing.abort();
    }
}

impl Swarm {
    async fn join(
        settings: &Settings,
        tracker: &Tracker,
        key: PublicKey,
        ticket: &Ticket,
        serving: Arc<Serving>,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Swarm> {
        let keypair = shoal_net::keypair_from_seed(settings.peer_key.seed());
        let listen = settings
            .listen
            .iter()
            .map(|a| {
                a.parse().map_err(|e| {
                    with_exit(anyhow::anyhow!("listen address {a:?}: {e}"), Exit::BadInput)
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut config = shoal_net::Config::new(keypair, listen, key, Arc::new(now_secs));
        config.upload_rate = settings.max_upload;
        config.lan_discovery = settings.lan_discovery;
        let (client, events) = shoal_net::spawn(config, serving.clone())
            .map_err(|e| anyhow::anyhow!("starting the peer node: {e}"))?;
        node::listen_addrs(&client).await?;
        if let Some(addr) = &settings.metrics {
            let render = node::metrics(client.clone(), serving.clone(), counters.clone());
            let bound = shoal_metrics::spawn(addr, render).await?;
            tracing::info!(%bound, "metrics at /metrics");
        }
        let announcer = Arc::new(Announcer {
            tracker: tracker.clone(),
            token: RwLock::new(ticket.token.to_text()),
            client: client.clone(),
            reserving: Default::default(),
            me: client.peer_id(),
            counters: counters.clone(),
            serving,
            complete: Default::default(),
            renewed: tokio::sync::watch::channel(ticket.token.clone()).0,
        });
        let (more_tx, more_rx) = mpsc::channel(256);
        let announcing = tokio::spawn(
            announcer
                .clone()
                .run(more_tx)
                .instrument(tracing::info_span!("announce", swarm = %ticket.swarm)),
        );
        Ok(Swarm {
            client,
            events,
            announcer,
            announcing,
            more: Some(more_rx),
            counters,
        })
    }

    /// Fetches what `serving`'s store lacks; progress drawn if asked.
    async fn fetch(
        &mut self,
        settings: &Settings,
        manifest: &shoal_manifest::Manifest,
        ticket: &Ticket,
        serving: &Serving,
        label: String,
        total: u64,
    ) -> anyhow::Result<shoal_net::download::Report> {
        let me = self.client.peer_id();
        let sources: Vec<_> = ticket
            .bootstrap
            .iter()
            .filter_map(|p| p.source(&me))
            .collect();
        let view = settings.progress.then(|| {
            tokio::spawn(
                view::show(label, self.counters.clone(), total, true)
                    .instrument(tracing::debug_span!("progress_view")),
            )
        });
        let job = Job {
            manifest,
            swarm: ticket.swarm,
            token: &ticket.token,
            sources: &sources,
            store: serving,
            scheduler: Default::default(),
            download_rate: settings.max_download,
            stall: settings.stall,
            more_sources: self.more.take(),
            counters: self.counters.clone(),
            renewed: Some(self.announcer.renewed.subscribe()),
        };
        let result = shoal_net::download::download(&self.client, &mut self.events, job).await;
        if let Some(v) = view {
            v.abort();
            view::clear();
        }
        result.map_err(download_error)
    }

    /// Serves until `until` or `stop`, then leaves the swarm.
    async fn give_back(
        mut self,
        dir: &Path,
        until: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<f64> {
        self.announcer.complete.store(true, Ordering::Relaxed);
        let mut seeded = 0.0;
        if !until.is_zero() {
            let start = Instant::now();
            let marker = SeedingMarker::write(dir, until)?;
            let events = &mut self.events;
            tokio::select! {
                _ = tokio::time::sleep(until) => {}
                _ = stop => {}
                _ = async { while events.recv().await.is_some() {} } => {}
            }
            drop(marker);
            seeded = start.elapsed().as_secs_f64();
        }
        self.announcing.abort();
        self.announcer.leave().await;
        Ok(seeded)
    }
}

fn download_error(e: DownloadError) -> anyhow::Error {
    match e {
        DownloadError::NoSources | DownloadError::Stalled(_) => with_exit(e, Exit::NoSources),
        DownloadError::Store(io) if shoal_store::is_disk_full(&io) => with_exit(
            anyhow::Error::new(io).context("the disk is full; the installed build is untouched"),
            Exit::DiskFull,
        ),
        e => anyhow::Error::new(e),
    }
}

/// Step 4: the disk must hold what is left to write.
pub fn check_space(needed: u64, free: u64, dir: &Path) -> anyhow::Result<()> {
    if needed > free {
        return Err(with_exit(
            anyhow::anyhow!(
                "not enough disk space in {}: {} needed, {} free",
                dir.display(),
                human::bytes(needed),
                human::bytes(free)
            ),
            Exit::DiskFull,
        ));
    }
    Ok(())
}

/// While a launcher seeds, `DIR/.shoal/seeding.json` says so (for `status`).
struct SeedingMarker(PathBuf);

impl SeedingMarker {
    fn write(dir: &Path, until: Duration) -> anyhow::Result<SeedingMarker> {
        let path = dir.join(".shoal/seeding.json");
        let body = serde_json::json!({
            "pid": std::process::id(),
            "until": now_secs() + until.as_secs(),
        });
        std::fs::write(&path, body.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(SeedingMarker(path))
    }
}

impl Drop for SeedingMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Opens the install and the settings every command shares.
fn open_install(settings: &Settings, dir: &Path) -> anyhow::Result<Install> {
    let install = Install::open(dir).map_err(store_error)?;
    if let Some(b) = settings.fail_writes_after {
        install.fail_writes_after(b);
    }
    Ok(install)
}

/// Installs or updates `req.product` in `req.dir`. `counters`, if given,
/// is updated live (the demo draws it); `stop` ends seeding early.
pub async fn install(
    settings: &Settings,
    req: &Request,
    counters: Option<Arc<Counters>>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    // Nothing touches the disk before the request is known to be sound: a
    // product id outside the id grammar (`..`) or a missing pinned key.
    if !shoal_types::id::is_valid(&req.product) {
        return Err(with_exit(
            anyhow::anyhow!(
                "{:?} is not a product id: {}",
                req.product,
                shoal_types::id::RULE
            ),
            Exit::BadInput,
        ));
    }
    let key = tracker_key(settings)?;
    let tracker = Tracker::new(&settings.tracker, settings.api_key.clone())?;
    let install = open_install(settings, &req.dir)?;
    let installed = install.installed().map_err(store_error)?;
    if let Some(b) = &installed
        && b.record.product != req.product
    {
        return Err(with_exit(
            anyhow::anyhow!(
                "{} holds {}, not {}",
                req.dir.display(),
                b.record.product,
                req.product
            ),
            Exit::BadInput,
        ));
    }
    if req.update && installed.is_none() {
        return Err(with_exit(
            anyhow::anyhow!(
                "nothing is installed in {}; use `shoal install {}`",
                req.dir.display(),
                req.product
            ),
            Exit::BadInput,
        ));
    }
    let channel = req
        .channel
        .clone()
        .or_else(|| installed.as_ref().map(|b| b.record.channel.clone()))
        .unwrap_or_else(|| "stable".into());
    let me = shoal_net::keypair_from_seed(settings.peer_key.seed())
        .public()
        .to_peer_id();
    let ticket = ticket(&tracker, &key, &install, &req.product, &channel, &me).await?;
    let mut outcome = Outcome {
        product: req.product.clone(),
        channel: channel.clone(),
        version: ticket.release.version,
        dir: req.dir.clone(),
        previous_version: installed.as_ref().map(|b| b.record.version),
        ..Outcome::default()
    };
    if let Some(b) = &installed
        && b.record.release_id == ticket.swarm
    {
        outcome.up_to_date = true;
        outcome.label = b.record.label.clone();
        outcome.size = b.record.size;
        outcome.release_bytes = b.manifest().unique_size();
        return Ok(outcome);
    }
    let (signed_manifest, manifest) = fetch_manifest(&tracker, &ticket).await?;
    outcome.label = manifest.version.clone();
    outcome.size = manifest.total_size();
    outcome.release_bytes = manifest.unique_size();
    let record = Record {
        release_id: ticket.swarm,
        product: req.product.clone(),
        channel: channel.clone(),
        version: ticket.release.version,
        label: manifest.version.clone(),
        release: ticket.release_text.clone(),
        size: manifest.total_size(),
        installed_at: now_secs(),
    };

    // Step 3: stage, reusing what an earlier run got and what is installed.
    let staging = install
        .stage(record, &signed_manifest, manifest.clone())
        .map_err(store_error)?;
    outcome.resumed_bytes = staging.resumed_bytes();
    let staging = Arc::new(staging);
    let reuse = {
        let staging = staging.clone();
        let installed = installed.map(Arc::new);
        tokio::task::spawn_blocking(move || staging.reuse(installed.as_deref()))
    };
    outcome.reused_bytes = reuse.await?.map_err(store_error)?;

    // Step 4: room for what is left.
    check_space(
        staging.bytes_to_write(),
        shoal_store::free_disk(&req.dir),
        &req.dir,
    )?;

    // Step 5: the swarm.
    let counters = counters.unwrap_or_default();
    let serving = Arc::new(Serving::new(ticket.swarm, Held::Staging(staging.clone())));
    let mut swarm = Swarm::join(
        settings,
        &tracker,
        key,
        &ticket,
        serving.clone(),
        counters.clone(),
    )
    .await?;
    let started = Instant::now();
    let label = format!("{} v{}", req.product, ticket.release.version);
    let fetched = swarm
        .fetch(
            settings,
            &manifest,
            &ticket,
            &serving,
            label,
            staging.missing_bytes(),
        )
        .await;
    // Whatever happened, what was fetched stays counted for the next run.
    let synced = staging.sync();
    let report = fetched?;
    synced.map_err(store_error)?;
    outcome.download_secs = started.elapsed().as_secs_f64();
    outcome.from_peers = counters.from_peers.load(Ordering::Relaxed);
    outcome.from_seeds = counters.from_seeds.load(Ordering::Relaxed);
    outcome.banned_peers = report.banned.len();
    let [unheld, sent_elsewhere, peers_failed] = report.seed_asks;
    outcome.seed_asks = SeedAsks {
        unheld,
        sent_elsewhere,
        peers_failed,
    };

    // Every chunk is here and synced: from now on a signal lets the swap
    // finish and ends gracefully with the summary (with many files the
    // swap takes a while, and `status` already says installed during it).
    req.seeding.store(true, Ordering::SeqCst);

    // Step 6: finish and swap. Peers told of our last chunks ask for them
    // now: while the files move they hear Busy, not NotFound.
    serving.settle();
    let committed = {
        let staging = staging.clone();
        tokio::task::spawn_blocking(move || staging.commit()).await
    };
    let build = match committed {
        Ok(Ok(build)) => build,
        failed => {
            // Nothing moved for good: keep serving what is staged.
            serving.set(Held::Staging(staging.clone()));
            failed?.map_err(store_error)?
        }
    };
    serving.set(Held::Build(Arc::new(build)));
    tracing::info!(product = %req.product, version = outcome.version, "installed");

    // Step 7: give back.
    let client = swarm.client.clone();
    outcome.seeded_secs = swarm.give_back(&req.dir, req.seed_for, stop).await?;
    outcome.uploaded = serving.uploaded.load(Ordering::Relaxed);
    outcome.nat = NatReport::of(&client);
    Ok(outcome)
}

/// What `shoal verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub product: String,
    pub version: u64,
    pub files: usize,
    pub bytes: u64,
    pub damage: Vec<shoal_store::Damage>,
}

/// The installed build, or a clear error.
fn installed_build(install: &Install) -> anyhow::Result<Build> {
    install.installed().map_err(store_error)?.ok_or_else(|| {
        with_exit(
            anyhow::anyhow!("nothing is installed in {}", install.root().display()),
            Exit::BadInput,
        )
    })
}

/// Rehashes the install against its manifest.
pub async fn verify(settings: &Settings, dir: &Path) -> anyhow::Result<Verified> {
    let install = open_install(settings, dir)?;
    let build = Arc::new(installed_build(&install)?);
    let counters: Arc<Counters> = Default::default();
    let total = build.record.size;
    let view = settings.progress.then(|| {
        tokio::spawn(
            view::show("verifying".into(), counters.clone(), total, false)
                .instrument(tracing::debug_span!("progress_view")),
        )
    });
    let damage = {
        let build = build.clone();
        let counters = counters.clone();
        tokio::task::spawn_blocking(move || {
            build.check(|n| {
                counters.from_seeds.fetch_add(n, Ordering::Relaxed);
            })
        })
        .await?
    };
    if let Some(v) = view {
        v.abort();
        view::clear();
    }
    Ok(Verified {
        product: build.record.product.clone(),
        version: build.record.version,
        files: build.manifest().files().count(),
        bytes: total,
        damage,
    })
}

/// What `shoal repair` did.
#[derive(Debug, Clone, Serialize)]
pub struct Repaired {
    pub product: String,
    pub version: u64,
    pub damaged_files: usize,
    pub chunks_fetched: u32,
    pub bytes_fetched: u64,
    pub from_peers: u64,
    pub from_seeds: u64,
}

/// Fetches exactly the damaged chunks of the installed build.
pub async fn repair(settings: &Settings, dir: &Path) -> anyhow::Result<Repaired> {
    let install = open_install(settings, dir)?;
    let build = Arc::new(installed_build(&install)?);
    let damage = {
        let build = build.clone();
        tokio::task::spawn_blocking(move || build.check(|_| {})).await?
    };
    let mut repaired = Repaired {
        product: build.record.product.clone(),
        version: build.record.version,
        damaged_files: damage.len(),
        chunks_fetched: 0,
        bytes_fetched: 0,
        from_peers: 0,
        from_seeds: 0,
    };
    if damage.is_empty() {
        return Ok(repaired);
    }
    let n = build.manifest().chunks.len() as u32;
    let mut good = Bitfield::full(n);
    for c in damage.iter().flat_map(|d| &d.chunks) {
        good.clear(*c);
    }
    repaired.chunks_fetched = n - good.count();
    let tracker = Tracker::new(&settings.tracker, settings.api_key.clone())?;
    let key = tracker_key(settings)?;
    let me = shoal_net::keypair_from_seed(settings.peer_key.seed())
        .public()
        .to_peer_id();
    let ticket = ticket(
        &tracker,
        &key,
        &install,
        &build.record.product,
        &build.record.channel,
        &me,
    )
    .await?;
    if ticket.swarm != build.record.release_id {
        return Err(with_exit(
            anyhow::anyhow!(
                "version {} is out; `shoal update` replaces damaged files as it updates",
                ticket.release.version
            ),
            Exit::BadInput,
        ));
    }
    build.prepare_repair().map_err(store_error)?;
    let counters: Arc<Counters> = Default::default();
    let serving = Arc::new(Serving::new(
        ticket.swarm,
        Held::Repair(build.clone(), Arc::new(RwLock::new(good))),
    ));
    let mut swarm = Swarm::join(
        settings,
        &tracker,
        key,
        &ticket,
        serving.clone(),
        counters.clone(),
    )
    .await?;
    let missing: u64 = damage
        .iter()
        .flat_map(|d| &d.chunks)
        .map(|&c| u64::from(build.manifest().chunks[c as usize].len))
        .sum();
    swarm
        .fetch(
            settings,
            build.manifest(),
            &ticket,
            &serving,
            "repairing".into(),
            missing,
        )
        .await?;
    build.finish_repair().map_err(store_error)?;
    swarm.give_back(dir, Duration::ZERO, async {}).await?;
    repaired.from_peers = counters.from_peers.load(Ordering::Relaxed);
    repaired.from_seeds = counters.from_seeds.load(Ordering::Relaxed);
    repaired.bytes_fetched = counters.received();
    let left = build.check(|_| {});
    if !left.is_empty() {
        return Err(anyhow::anyhow!(
            "{} files are still damaged after the repair",
            left.len()
        ));
    }
    Ok(repaired)
}

/// What `shoal status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub dir: PathBuf,
    pub installed: Option<StatusBuild>,
    /// A download in progress (or interrupted): (version, bytes staged).
    pub staging: Option<String>,
    /// A launcher serving this install: its pid and until when.
    pub seeding: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusBuild {
    pub product: String,
    pub channel: String,
    pub version: u64,
    pub label: String,
    pub size: u64,
    pub files: usize,
    pub installed_at: u64,
    pub path: PathBuf,
}

/// The install's state, read without touching the network.
pub fn status(dir: &Path) -> anyhow::Result<Status> {
    let installed = shoal_store::installed(dir)
        .map_err(store_error)?
        .map(|b| StatusBuild {
            product: b.record.product.clone(),
            channel: b.record.channel.clone(),
            version: b.record.version,
            label: b.record.label.clone(),
            size: b.record.size,
            files: b.manifest().files().count(),
            installed_at: b.record.installed_at,
            path: dir.join("current"),
        });
    let staging = std::fs::read_dir(dir.join(".shoal/staging"))
        .ok()
        .and_then(|mut entries| {
            entries.find_map(|e| {
                let e = e.ok()?;
                e.file_type()
                    .ok()?
                    .is_dir()
                    .then(|| e.file_name().to_string_lossy().into_owned())
            })
        });
    let seeding = std::fs::read(dir.join(".shoal/seeding.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|v| {
            v["pid"]
                .as_u64()
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
                && v["until"].as_u64().is_some_and(|t| t > now_secs())
        });
    Ok(Status {
        dir: dir.to_owned(),
        installed,
        staging,
        seeding,
    })
}
