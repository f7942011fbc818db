//! The launcher's side of the swarm: what its node serves (the staged build
//! while downloading, the installed build afterwards), and the announce loop
//! that reports progress to the tracker and feeds new peers to the download.

use crate::tracker::Tracker;
use shoal_api::{AnnounceAnswer, AnnounceRequest};
use shoal_manifest::VerifiedChunk;
use shoal_net::download::{ChunkStore, Counters, Source};
use shoal_net::{ChunkSource, Client, Peer};
use shoal_scheduler::PeerKind;
use shoal_store::{Build, Staging};
use shoal_types::{Bitfield, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the node holds of one swarm.
#[derive(Debug, Clone)]
pub enum Held {
    /// Downloading: serve what is staged.
    Staging(Arc<Staging>),
    /// Installed: serve everything.
    Build(Arc<Build>),
    /// Repairing: serve the chunks not known to be damaged.
    Repair(Arc<Build>, Arc<RwLock<Bitfield>>),
}

/// The node's chunk source and the download's store.
#[derive(Debug)]
pub struct Serving {
    pub(super) swarm: Hash,
    held: RwLock<Held>,
    /// The staged build is being committed: its files are moving.
    settling: AtomicBool,
    /// Verified bytes sent to other peers.
    pub uploaded: AtomicU64,
}

impl Serving {
    pub fn new(swarm: Hash, held: Held) -> Serving {
        Serving {
            swarm,
            held: RwLock::new(held),
            settling: AtomicBool::new(false),
            uploaded: AtomicU64::new(0),
        }
    }

    pub fn set(&self, held: Held) {
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = held;
        self.settling.store(false, Ordering::SeqCst);
    }

    /// The staged build is about to be committed: until [`Serving::set`]
    /// names the installed build, reads that fail are temporary.
    pub fn settle(&self) {
        self.settling.store(true, Ordering::SeqCst);
    }

    fn held(&self) -> Held {
        self.held.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ChunkSource for Serving {
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>> {
        if *swarm != self.swarm {
            return None;
        }
        let data = match self.held() {
            Held::Staging(s) => s.read_chunk(index),
            Held::Build(b) => b.wire_chunk(index),
            Held::Repair(b, good) => good
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(index)
                .then(|| b.wire_chunk(index))
                .flatten(),
        }?;
        self.uploaded
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Some(data)
    }

    fn settling(&self, swarm: &Hash) -> bool {
        *swarm == self.swarm && self.settling.load(Ordering::SeqCst)
    }

    fn chunk_len(&self, swarm: &Hash, index: u32) -> Option<u32> {
        if *swarm != self.swarm {
            return None;
        }
        let len = |m: &shoal_manifest::Manifest| m.chunks.get(index as usize).map(|c| c.len);
        match self.held() {
            Held::Staging(s) => len(s.manifest()),
            Held::Build(b) | Held::Repair(b, _) => len(b.wire_manifest()),
        }
    }

    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield> {
        if *swarm != self.swarm {
            return None;
        }
        Some(match self.held() {
            Held::Staging(s) => s.have(),
            Held::Build(b) => Bitfield::full(b.wire_manifest().chunks.len() as u32),
            Held::Repair(_, good) => good.read().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }
}

impl ChunkStore for Serving {
    fn put(&self, chunk: VerifiedChunk<'_>) -> std::io::Result<()> {
        // Writes and the periodic fsync of a progress batch block: let the
        // runtime move its other tasks (the node's event loop) elsewhere.
        // The launcher always runs on a multi-thread runtime.
        tokio::task::block_in_place(|| self.put_blocking(chunk))
    }

    fn covered(&self, swarm: &Hash) -> Option<Bitfield> {
        match self.held() {
            Held::Staging(s) if *swarm == self.swarm && s.is_sealed() => Some(s.covered()),
            _ => None,
        }
    }
}

impl Serving {
    fn put_blocking(&self, chunk: VerifiedChunk<'_>) -> std::io::Result<()> {
        match self.held() {
            Held::Staging(s) => s.put(chunk),
            Held::Repair(b, good) => {
                b.repair_wire_chunk(chunk)?;
                good.write()
                    .unwrap_or_else(|p| p.into_inner())
                    .set(chunk.index());
                Ok(())
            }
            Held::Build(_) => Ok(()),
        }
    }
}

pub use shoal_api::PeerInfo;

/// A dialable source from a listed peer, unless it is us or unusable.
pub fn source(info: &PeerInfo, me: &Peer) -> Option<Source> {
    let peer: Peer = info.peer_id.parse().ok()?;
    if peer == *me {
        return None;
    }
    // Every usable address, direct ones first; for a player behind a
    // NAT its relayed address first (its direct ones are private), the
    // way in until the hole punch.
    let mut addrs: Vec<shoal_net::Addr> =
        info.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    if addrs.is_empty() {
        return None;
    }
    let behind_nat = info.reachability == shoal_types::Reachability::Private;
    if info.same_site && addrs.iter().any(|a| !shoal_net::is_relayed(a)) {
        addrs.retain(|a| !shoal_net::is_relayed(a));
    }
    addrs.sort_by_key(|a| shoal_net::is_relayed(a) != behind_nat);
    Some(Source {
        peer,
        addrs,
        kind: if info.seed {
            PeerKind::Seed
        } else {
            PeerKind::Peer
        },
        fills: info.seed && info.fills,
    })
}

/// What the announce loop reports and where it sends peers.
#[derive(Debug)]
pub struct Announcer {
    pub tracker: Tracker,
    pub token: RwLock<String>,
    /// The node: what it advertises and whether it is reachable are read
    /// afresh for every announce (AutoNAT's verdict and a relay slot come
    /// after the node starts).
    pub client: Client,
    /// The relay a slot was last asked of, and when.
    pub reserving: std::sync::Mutex<Option<(Peer, std::time::Instant)>>,
    pub me: Peer,
    pub counters: Arc<Counters>,
    pub serving: Arc<Serving>,
    pub complete: AtomicBool,
    /// Tokens the tracker renewed, for the download to re-authenticate with.
    pub renewed: tokio::sync::watch::Sender<shoal_token::Token>,
}

/// How often the announce loop looks for a change in how we are reached.
const REACH_CHECK: Duration = Duration::from_secs(1);

/// How long a relay slot asked for may take before another relay is tried.
const RESERVE_PATIENCE: Duration = Duration::from_secs(30);

/// What the node tells the tracker about how to reach it.
#[derive(Debug, Clone)]
struct Reach {
    addrs: Vec<String>,
    reachability: shoal_types::Reachability,
}

impl Reach {
    /// The same addresses (in any order) and verdict.
    fn same(&self, other: &Reach) -> bool {
        let sorted = |r: &Reach| {
            let mut a = r.addrs.clone();
            a.sort();
            a
        };
        self.reachability == other.reachability && sorted(self) == sorted(other)
    }
}

impl Announcer {
    async fn reach(&self) -> Reach {
        let addrs = match self.client.advertised_addrs().await {
            Ok(a) => a.iter().map(ToString::to_string).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "the node did not say its addresses");
                Vec::new()
            }
        };
        Reach {
            addrs,
            reachability: self.client.reachability(),
        }
    }

    async fn announce_once(&self, stopped: bool) -> anyhow::Result<(AnnounceAnswer, Reach)> {
        let have = self
            .serving
            .bitfield(&self.serving.swarm)
            .map_or(0, |b| u64::from(b.count()));
        let reach = self.reach().await;
        let request = AnnounceRequest {
            token: self.token.read().unwrap_or_else(|p| p.into_inner()).clone(),
            listen_addrs: reach.addrs.clone(),
            reachability: reach.reachability,
            have,
            complete: self.complete.load(Ordering::Relaxed),
            uploaded: self.serving.uploaded.load(Ordering::Relaxed),
            downloaded: self.counters.received(),
            downloaded_from_seeds: self.counters.from_seeds.load(Ordering::Relaxed),
            region: None,
            starving: false,
            stopped,
        };
        let answer: AnnounceAnswer = self.tracker.post("/v1/announce", &request).await?;
        if let Some(t) = &answer.token {
            *self.token.write().unwrap_or_else(|p| p.into_inner()) = t.clone();
            match shoal_token::Token::from_text(t) {
                Ok(token) => {
                    let _ = self.renewed.send(token);
                }
                Err(e) => tracing::warn!(error = %e, "the tracker renewed our token with garbage"),
            }
        }
        Ok((answer, reach))
    }

    /// Behind a NAT with no relay slot: asks one of `relays` for a slot
    /// (presenting our token, which the relay requires), so peers can reach
    /// us through it and hole punch. One relay at a time; another after
    /// [`RESERVE_PATIENCE`].
    async fn reserve(&self, relays: &[PeerInfo]) {
        let now = std::time::Instant::now();
        let previous = *self.reserving.lock().unwrap_or_else(|p| p.into_inner());
        if previous.is_some_and(|(_, at)| now.duration_since(at) < RESERVE_PATIENCE) {
            return;
        }
        let candidates: Vec<Source> = relays.iter().filter_map(|r| source(r, &self.me)).collect();
        let Some(relay) = candidates
            .iter()
            .find(|r| previous.is_none_or(|(p, _)| p != r.peer))
            .or(candidates.first())
        else {
            return;
        };
        *self.reserving.lock().unwrap_or_else(|p| p.into_inner()) = Some((relay.peer, now));
        let token = self.token.read().unwrap_or_else(|p| p.into_inner()).clone();
        let result = async {
            let token = shoal_token::Token::from_text(&token)?;
            let addr = relay
                .addrs
                .first()
                .ok_or_else(|| anyhow::anyhow!("the relay has no address"))?
                .clone();
            self.client.dial(relay.peer, addr.clone()).await?;
            self.client
                .authenticate(relay.peer, self.serving.swarm, &token)
                .await?;
            let circuit = addr
                .with(shoal_net::Protocol::P2p(relay.peer))
                .with(shoal_net::Protocol::P2pCircuit);
            self.client.listen_on(circuit).await?;
            anyhow::Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(relay = %relay.peer, "behind a NAT: asked a seed's relay for a slot")
            }
            Err(e) => {
                tracing::warn!(relay = %relay.peer, error = %crate::one_line(&e), "behind a NAT: no relay slot")
            }
        }
    }

    /// Announces now and then every interval, sending new peers to `more`
    /// (while anyone listens); announces early when what peers need to
    /// reach us changes (a reachability verdict, a relay slot). Runs until
    /// aborted.
    pub async fn run(self: Arc<Self>, more: mpsc::Sender<Source>) {
        let mut interval = Duration::from_secs(5);
        loop {
            let mut told = None;
            match self.announce_once(false).await {
                Ok((answer, reach)) => {
                    interval = Duration::from_secs(answer.interval.clamp(1, 600));
                    for p in &answer.peers {
                        if let Some(s) = source(p, &self.me) {
                            let _ = more.try_send(s);
                        }
                    }
                    if !answer.relays.is_empty() {
                        self.reserve(&answer.relays).await;
                    }
                    told = Some(reach);
                }
                Err(e) => tracing::warn!(error = %crate::one_line(&e), "announce failed; retrying"),
            }
            let deadline = tokio::time::Instant::now() + interval;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(REACH_CHECK.min(interval)).await;
                if let Some(told) = &told
                    && !told.same(&self.reach().await)
                {
                    break;
                }
            }
        }
    }

    /// Tells the tracker we are leaving the swarm.
    pub async fn leave(&self) {
        if let Err(e) = self.announce_once(true).await.map(|_| ()) {
            tracing::debug!(error = %crate::one_line(&e), "leaving announce failed");
        }
    }
}

/// The node's addresses worth telling others (no unspecified addresses).
pub async fn listen_addrs(client: &Client) -> anyhow::Result<Vec<String>> {
    for _ in 0..300 {
        let addrs: Vec<String> = client
            .listen_addrs()
            .await?
            .iter()
            .map(ToString::to_string)
            .filter(|a| !a.contains("/0.0.0.0/") && !a.contains("/::/"))
            .collect();
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the peer node did not start listening")
}

/// The player's peer node, shared by every product one launcher installs,
/// updates or seeds at once: one identity, one port, one set of
/// connections. (Two nodes of one identity would each answer for the
/// other's swarms: a peer connected to one cannot reach the other.)
pub struct Node {
    pub(super) client: Client,
    router: shoal_net::Router,
    swarms: Arc<shoal_net::Swarms>,
    /// What each product serves and fetched, for the metrics.
    watched: Watched,
}

type Watched = Arc<std::sync::Mutex<Vec<(Arc<Serving>, Arc<Counters>)>>>;

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer", &self.client.peer_id())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts the node: listening, and serving metrics if asked.
    pub(super) async fn start(
        settings: &crate::config::Settings,
        keypair: shoal_net::Keypair,
        key: shoal_types::PublicKey,
    ) -> anyhow::Result<Node> {
        let listen = settings
            .listen
            .iter()
            .map(|a| {
                a.parse().map_err(|e| {
                    crate::with_exit(
                        anyhow::anyhow!("listen address {a:?}: {e}"),
                        crate::Exit::BadInput,
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut config = shoal_net::Config::new(keypair, listen, key, Arc::new(super::now_secs));
        config.upload_rate = settings.max_upload;
        config.lan_discovery = settings.lan_discovery;
        let swarms = Arc::new(shoal_net::Swarms::new());
        let (client, events) = shoal_net::spawn(config, swarms.clone())
            .map_err(|e| anyhow::anyhow!("starting the peer node: {e}"))?;
        listen_addrs(&client).await?;
        let watched = Watched::default();
        if let Some(addr) = &settings.metrics {
            let render = metrics(client.clone(), watched.clone());
            let bound = shoal_metrics::spawn(addr, render).await?;
            tracing::info!(%bound, "metrics at /metrics");
        }
        Ok(Node {
            client,
            router: shoal_net::Router::new(events),
            swarms,
            watched,
        })
    }

    /// Serves `serving`'s swarm from it and returns that swarm's events.
    pub(super) fn attach(
        &self,
        serving: &Arc<Serving>,
        counters: &Arc<Counters>,
    ) -> mpsc::Receiver<shoal_net::Event> {
        let events = self.router.subscribe(serving.swarm);
        self.swarms.add(serving.swarm, serving.clone());
        lock(&self.watched).push((serving.clone(), counters.clone()));
        events
    }

    /// Stops serving `swarm` (its session is over).
    pub(super) fn detach(&self, swarm: &Hash) {
        self.swarms.remove(swarm);
        lock(&self.watched).retain(|(s, _)| s.swarm != *swarm);
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The launcher's metrics, read at scrape time: with several products,
/// the sums over them.
fn metrics(client: Client, watched: Watched) -> shoal_metrics::Render {
    Arc::new(move || {
        let watched = lock(&watched).clone();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sum = |of: fn(&Counters) -> &AtomicU64| -> u64 {
            watched.iter().map(|(_, c)| load(of(c))).sum()
        };
        let (mut held, mut total) = (0, 0);
        for (serving, _) in &watched {
            if let Some(b) = serving.bitfield(&serving.swarm) {
                (held, total) = (held + b.count(), total + b.len());
            }
        }
        let uploaded: u64 = watched.iter().map(|(s, _)| load(&s.uploaded)).sum();
        let nat = shoal_net::NatCounters::get;
        shoal_metrics::Scrape::new("shoal_client")
            .counter(
                "downloaded_from_peers_bytes",
                "Verified bytes received from peers",
                sum(|c| &c.from_peers),
            )
            .counter(
                "downloaded_from_seeds_bytes",
                "Verified bytes received from seeds",
                sum(|c| &c.from_seeds),
            )
            .counter(
                "uploaded_bytes",
                "Verified bytes sent to other peers",
                uploaded,
            )
            .counter(
                "chunks_verified",
                "Chunks received that passed verification",
                sum(|c| &c.verified),
            )
            .counter(
                "chunks_failed_verification",
                "Chunks received that failed verification",
                sum(|c| &c.failed),
            )
            .counter(
                "peers_banned",
                "Peers banned for sending bad chunks",
                sum(|c| &c.banned),
            )
            .gauge(
                "peers_connected",
                "Peers connected",
                client.connected_peers() as f64,
            )
            .counter(
                "connections_direct",
                "Connections made directly (dialed or hole punched)",
                nat(&client.nat().direct_connections),
            )
            .counter(
                "connections_relayed",
                "Connections through a relay",
                nat(&client.nat().relayed_connections),
            )
            .counter(
                "hole_punch_attempts",
                "Hole-punch upgrades finished (a success, or a failure after 3 tries)",
                nat(&client.nat().punch_attempts),
            )
            .counter(
                "hole_punch_successes",
                "Hole punches that made a direct connection",
                nat(&client.nat().punch_successes),
            )
            .counter(
                "lan_peers_found",
                "Nodes mDNS found on the LAN",
                nat(&client.nat().lan_peers),
            )
            .counters(
                "received_by_path_bytes",
                "Chunk bytes received, by connection path (lan: on a network this node is on; \
                 direct: across routers; relayed: through a relay)",
                "path",
                &client.nat().received.labelled(),
            )
            .counters(
                "sent_by_path_bytes",
                "Chunk bytes sent to peers, by connection path",
                "path",
                &client.nat().sent.labelled(),
            )
            .gauge(
                "reachable",
                "1 if AutoNAT found others can dial this node, 0 if not, -1 before a verdict",
                match client.reachability() {
                    shoal_types::Reachability::Public => 1.0,
                    shoal_types::Reachability::Private => 0.0,
                    shoal_types::Reachability::Unknown => -1.0,
                },
            )
            .gauge(
                "chunks_held",
                "Chunks held of the releases served",
                f64::from(held),
            )
            .gauge(
                "chunks_total",
                "Chunks in the releases served",
                f64::from(total),
            )
            .gauge(
                "download_progress_ratio",
                "Chunks held / chunks in the releases served",
                if total > 0 {
                    f64::from(held) / f64::from(total)
                } else {
                    0.0
                },
            )
            .render()
    })
}
