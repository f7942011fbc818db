//! `shoal install` and `shoal update`: stage, reuse, check space, fetch
//! through the swarm, swap atomically, give back.

use super::errors::store_error;
use super::node::{Held, Serving};
use super::session::{Launcher, Session, Swarm};
use super::trust::{fetch_manifest, tracker_key};
use super::{now_secs, open_install};
use crate::config::Settings;
use crate::{Exit, human, with_exit};
use serde::Serialize;
use shoal_net::download::Counters;
use shoal_store::Record;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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
    /// Stop once the build is staged whole; never swap it in.
    pub preload: bool,
    /// A preload of a release scheduled to unlock: seed its ciphertext
    /// until the unlock (by the tracker's clock) instead of `seed_for`;
    /// then, unless `preload`, ask again and open it at once.
    pub until_unlock: bool,
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
    /// The release's version number (what rollback protection compares).
    pub version: u64,
    /// The publisher's version label from the manifest, e.g. `1.4.2`.
    pub label: String,
    /// The install directory (the game is in `DIR/current`).
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
    /// Verified chunk bytes received from other players.
    pub from_peers: u64,
    /// Verified chunk bytes received from seeds.
    pub from_seeds: u64,
    /// Sent to other peers, while downloading and seeding.
    pub uploaded: u64,
    /// Chunk bytes received but not used: a second copy (an endgame
    /// duplicate, or a late answer to a request retried elsewhere) or a
    /// chunk that failed its hash.
    pub wasted: u64,
    /// Peers dropped for sending a chunk that failed its hash.
    pub banned_peers: usize,
    /// Chunk requests sent to seeds, by why: no connected peer held the
    /// chunk (`unheld`; of which a seed had already sent it to another peer,
    /// `sent_elsewhere`), or peers failed to deliver it (`peers_failed`).
    pub seed_asks: SeedAsks,
    /// From joining the swarm to the last chunk synced.
    pub download_secs: f64,
    /// How long it served after the swap (`seed_for`, or until stopped).
    pub seeded_secs: f64,
    /// How the node reached and was reached by peers.
    pub nat: NatReport,
    /// An encrypted release (preloaded before it unlocks).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// The encrypted build is staged whole, waiting for its unlock: the
    /// installed build (if any) is untouched. Run the command again from
    /// `unlocks_at` on: it opens the staged build without downloading.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub preloaded: bool,
    /// When the encrypted release unlocks (the tracker's clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlocks_at: Option<u64>,
    /// Decrypting, checking and swapping in the preloaded build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlock_secs: Option<f64>,
    /// Seconds from the command's start until the new build was in place,
    /// playable (cleanup and seeding come after).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playable_secs: Option<f64>,
    /// A newer encrypted release, still locked, when this one is the
    /// version that plays now: `shoal preload` fetches it once its preload
    /// is open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upcoming: Option<shoal_api::Upcoming>,
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
    /// Chunk bytes received from peers and seeds, and sent to peers, by the
    /// path of their connection: `lan` stayed on a network this node is on,
    /// `direct` crossed routers (a public peer or a punched hole),
    /// `relayed` went through a relay.
    pub received_by_path: ByPath,
    pub sent_by_path: ByPath,
}

/// Bytes by connection path.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ByPath {
    pub direct: u64,
    pub lan: u64,
    pub relayed: u64,
}

impl ByPath {
    fn of(bytes: &shoal_net::PathBytes) -> ByPath {
        use shoal_net::Path;
        ByPath {
            direct: bytes.get(Path::Direct),
            lan: bytes.get(Path::Lan),
            relayed: bytes.get(Path::Relayed),
        }
    }
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
            received_by_path: ByPath::of(&n.received),
            sent_by_path: ByPath::of(&n.sent),
        }
    }
}

/// How long past a release's unlock (by the tracker's clock, as its
/// answer told) a launcher waiting for it asks again: clocks and answers
/// are whole seconds.
const UNLOCK_MARGIN: Duration = Duration::from_secs(2);

/// Step 4: the disk must hold what is left to write.
pub fn check_space(needed: u64, free: u64, dir: &Path, what: &str) -> anyhow::Result<()> {
    if needed > free {
        return Err(with_exit(
            anyhow::anyhow!(
                "not enough disk space in {}: {} needed{what}, {} free",
                dir.display(),
                human::bytes(needed),
                human::bytes(free)
            ),
            Exit::DiskFull,
        ));
    }
    Ok(())
}

/// Installs or updates `req.product` in `req.dir`. `counters`, if given,
/// is updated live (the demo draws it); `stop` ends seeding early.
pub async fn install(
    settings: &Settings,
    req: &Request,
    counters: Option<Arc<Counters>>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    install_with(&Launcher::new(), settings, req, counters, stop).await
}

/// [`install`] on `launcher`'s peer node, which the other products it
/// installs or seeds at the same time share. With `until_unlock`, a
/// preload seeds until its unlock, then (for an install) asks again and
/// opens it, as many times as the tracker's clock says it is not yet time.
pub async fn install_with(
    launcher: &Launcher,
    settings: &Settings,
    req: &Request,
    counters: Option<Arc<Counters>>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    use futures::FutureExt as _;
    let stop = Box::pin(stop).shared();
    loop {
        let o = install_once(launcher, settings, req, counters.clone(), stop.clone()).await?;
        let waiting = req.until_unlock && !req.preload && o.preloaded && o.unlocks_at.is_some();
        if !waiting || stop.peek().is_some() {
            return Ok(o);
        }
        tracing::info!(product = %req.product, version = o.version, "the unlock time has come: asking for the key");
    }
}

async fn install_once(
    launcher: &Launcher,
    settings: &Settings,
    req: &Request,
    counters: Option<Arc<Counters>>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    let begun = Instant::now();
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
    tracker_key(settings)?;
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
    let open = |preload| {
        Session::open(
            launcher,
            settings,
            &install,
            &req.product,
            &channel,
            preload,
        )
    };
    let mut session = open(req.preload).await?;
    // Up to date, and a newer encrypted release's preload is open: an
    // install or update of a locked release preloads it.
    if installed
        .as_ref()
        .is_some_and(|b| b.record.release_id == session.ticket.swarm)
        && session
            .ticket
            .upcoming
            .as_ref()
            .is_some_and(|u| u.preload_open)
    {
        session = open(true).await?;
    }
    let ticket = &session.ticket;
    let mut outcome = Outcome {
        product: req.product.clone(),
        channel: channel.clone(),
        version: ticket.release.version,
        dir: req.dir.clone(),
        previous_version: installed.as_ref().map(|b| b.record.version),
        upcoming: ticket.upcoming.clone(),
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
    let (signed_manifest, manifest) = fetch_manifest(&session.tracker, ticket).await?;
    outcome.encrypted = manifest.is_sealed();
    outcome.unlocks_at = ticket.unlocks_at.filter(|_| outcome.encrypted);
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
        tokio::task::spawn_blocking({
            let span = tracing::Span::current();
            move || span.in_scope(|| staging.reuse(installed.as_deref()))
        })
    };
    outcome.reused_bytes = reuse.await?.map_err(store_error)?;

    // Step 4: room for what is left. An encrypted build opens beside its
    // ciphertext at the unlock, so its preload makes room for both.
    let opening = if staging.is_sealed() { outcome.size } else { 0 };
    check_space(
        staging.bytes_to_write() + opening,
        shoal_store::free_disk(&req.dir),
        &req.dir,
        if opening > 0 {
            " (the encrypted build, and room to open it beside itself at the unlock)"
        } else {
            ""
        },
    )?;

    // An encrypted release before its unlock is preloaded: staged, served
    // to other preloaders, the installed build left as it is.
    let key = ticket.content_key.clone();
    let preloading = req.preload || (staging.is_sealed() && key.is_none());

    // Nothing left to fetch (a whole preload at its unlock, or a run killed
    // after its download): playable first, the swarm joined after.
    if !preloading && staging.missing_bytes() == 0 {
        req.seeding.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let (build, at) = swap(&install, staging.clone(), key)
            .await?
            .map_err(store_error)?;
        if staging.is_sealed() {
            outcome.unlock_secs = Some((at - started).as_secs_f64());
        }
        outcome.playable_secs = Some((at - begun).as_secs_f64());
        tracing::info!(product = %req.product, version = outcome.version, "installed");
        let serving = Arc::new(Serving::new(ticket.swarm, Held::Build(Arc::new(build))));
        let swarm = session
            .join(
                launcher,
                settings,
                serving.clone(),
                counters.unwrap_or_default(),
            )
            .await?;
        return give_back(swarm, &serving, req, req.seed_for, stop, outcome).await;
    }

    // Step 5: the swarm.
    let counters = counters.unwrap_or_default();
    let serving = Arc::new(Serving::new(ticket.swarm, Held::Staging(staging.clone())));
    let mut swarm = session
        .join(launcher, settings, serving.clone(), counters.clone())
        .await?;
    let started = Instant::now();
    let label = format!("{} v{}", req.product, ticket.release.version);
    let fetched = swarm
        .fetch(
            settings,
            staging.manifest(),
            ticket,
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
    outcome.wasted = report.wasted;
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

    if preloading {
        outcome.preloaded = true;
        tracing::info!(product = %req.product, version = outcome.version, unlocks_at = ?outcome.unlocks_at, "preloaded");
        let seed_for = match ticket.unlocks.filter(|_| req.until_unlock) {
            // A moment past it, so the tracker's clock has passed it too.
            Some(at) => at.saturating_duration_since(Instant::now()) + UNLOCK_MARGIN,
            None => req.seed_for,
        };
        if req.until_unlock {
            tracing::info!(
                secs = seed_for.as_secs(),
                "serving the preload until it unlocks"
            );
        }
        return give_back(swarm, &serving, req, seed_for, stop, outcome).await;
    }

    // Step 6: finish and swap (an encrypted release: open it first).
    // Peers told of our last chunks ask for them now: while the files move
    // they hear Busy, not NotFound.
    serving.settle();
    let unlocking = Instant::now();
    let committed = swarm.meanwhile(swap(&install, staging.clone(), key)).await;
    let (build, at) = match committed {
        Ok(Ok(done)) => done,
        failed => {
            // Nothing moved for good: keep serving what is staged.
            serving.set(Held::Staging(staging.clone()));
            failed?.map_err(store_error)?
        }
    };
    if staging.is_sealed() {
        outcome.unlock_secs = Some((at - unlocking).as_secs_f64());
    }
    outcome.playable_secs = Some((at - begun).as_secs_f64());
    serving.set(Held::Build(Arc::new(build)));
    tracing::info!(product = %req.product, version = outcome.version, "installed");

    // Step 7: give back.
    give_back(swarm, &serving, req, req.seed_for, stop, outcome).await
}

/// Finishes the staging and swaps it in, on a blocking thread: an
/// encrypted release is opened with `key` first. Returns the build and the
/// moment it was in place; the spent ciphertext is removed after that.
fn swap(
    install: &shoal_store::Install,
    staging: Arc<shoal_store::Staging>,
    key: Option<shoal_manifest::seal::ContentKey>,
) -> tokio::task::JoinHandle<Result<(shoal_store::Build, Instant), shoal_store::StoreError>> {
    let span = tracing::Span::current();
    let install = install.clone();
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            let build = match &key {
                Some(key) if staging.is_sealed() => staging.unlock(key, |_| {})?,
                _ => staging.commit()?,
            };
            let at = Instant::now();
            // Garbage, not damage, if it fails: the next open retries.
            if let Err(e) = install.discard_spent() {
                tracing::warn!(error = %e, "could not remove the opened ciphertext yet");
            }
            Ok((build, at))
        })
    })
}

/// Serves what `serving` holds for `seed_for` (or until `stop`), then
/// leaves the swarm; the outcome gains what was given back.
async fn give_back(
    swarm: Swarm,
    serving: &Serving,
    req: &Request,
    seed_for: Duration,
    stop: impl std::future::Future<Output = ()>,
    mut outcome: Outcome,
) -> anyhow::Result<Outcome> {
    let client = swarm.client().clone();
    outcome.seeded_secs = swarm.give_back(&req.dir, seed_for, stop).await?;
    outcome.uploaded = serving.uploaded.load(Ordering::Relaxed);
    outcome.nat = NatReport::of(&client);
    Ok(outcome)
}
