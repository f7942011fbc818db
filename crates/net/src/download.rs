//! Drives one download: the sans-IO [`shoal_scheduler::Download`] fed by the
//! network. Chunks are verified against the manifest before they are stored
//! or counted; a peer that sends bad chunks is banned by the scheduler. New
//! chunks are announced to every peer, so downloaders serve each other.

use crate::{ChunkSource, Client, Event, NetError, Peer};
use shoal_manifest::{Manifest, VerifiedChunk, verify};
use shoal_scheduler::{Action, Download, PeerIdx, PeerKind};
use shoal_token::Token;
use shoal_types::{Bitfield, Hash};
use shoal_wire::{ChunkRequest, ChunkResponse, HaveMessage, HaveUpdate};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument as _;

/// Where a download puts verified chunks; it also serves them to others.
pub trait ChunkStore: ChunkSource {
    /// Stores a chunk; only verified bytes can be passed.
    fn put(&self, chunk: VerifiedChunk<'_>) -> std::io::Result<()>;
    /// Chunks of `swarm` the store needs no more of but cannot serve (an
    /// encrypted preload whose plaintext the installed build already
    /// holds): never fetched, never announced.
    fn covered(&self, _swarm: &Hash) -> Option<Bitfield> {
        None
    }
}

/// Verified chunks of one release, in memory, served to other peers.
#[derive(Debug)]
pub struct MemoryChunks {
    swarm: Hash,
    chunks: RwLock<Vec<Option<Vec<u8>>>>,
}

impl MemoryChunks {
    pub fn new(swarm: Hash, n_chunks: usize) -> MemoryChunks {
        MemoryChunks {
            swarm,
            chunks: RwLock::new(vec![None; n_chunks]),
        }
    }

    /// Stores a chunk; only verified bytes are accepted.
    pub fn put(&self, chunk: VerifiedChunk<'_>) {
        let mut chunks = self.chunks.write().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = chunks.get_mut(chunk.index() as usize) {
            *slot = Some(chunk.data().to_vec());
        }
    }

    pub fn get(&self, index: u32) -> Option<Vec<u8>> {
        self.chunks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(index as usize)
            .cloned()
            .flatten()
    }
}

impl ChunkStore for MemoryChunks {
    fn put(&self, chunk: VerifiedChunk<'_>) -> std::io::Result<()> {
        MemoryChunks::put(self, chunk);
        Ok(())
    }
}

impl ChunkSource for MemoryChunks {
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>> {
        (*swarm == self.swarm).then(|| self.get(index)).flatten()
    }

    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield> {
        if *swarm != self.swarm {
            return None;
        }
        let chunks = self.chunks.read().unwrap_or_else(|p| p.into_inner());
        let mut b = Bitfield::new(chunks.len() as u32);
        for (i, c) in chunks.iter().enumerate() {
            if c.is_some() {
                b.set(i as u32);
            }
        }
        Some(b)
    }
}

/// A peer or seed to fetch from.
#[derive(Debug, Clone)]
pub struct Source {
    pub peer: Peer,
    /// Where it may be reached, tried in order: direct addresses first,
    /// relayed ones (`…/p2p-circuit`) last.
    pub addrs: Vec<crate::Addr>,
    pub kind: PeerKind,
    /// A seed whose swarm has origin budget to spare: ask it for chunks
    /// peers hold too (see `Download::handle_seed_fills`).
    pub fills: bool,
}

/// How a download went.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub from_peers: u64,
    pub from_seeds: u64,
    pub wasted: u64,
    /// Why seeds were asked (see `shoal_scheduler::Stats`): chunks no
    /// connected peer held, of which a seed had sent elsewhere, and chunks
    /// peers failed to deliver.
    pub seed_asks: [u64; 3],
    pub banned: Vec<Peer>,
    pub elapsed: Duration,
}

/// Live counters of a download, for progress bars and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Verified bytes received from peers and from seeds.
    pub from_peers: AtomicU64,
    pub from_seeds: AtomicU64,
    /// Chunks that passed verification and were stored.
    pub verified: AtomicU64,
    /// Chunks that failed verification.
    pub failed: AtomicU64,
    /// Sources connected and authenticated.
    pub connected: AtomicU64,
    pub banned: AtomicU64,
}

impl Counters {
    pub fn received(&self) -> u64 {
        self.from_peers.load(Ordering::Relaxed) + self.from_seeds.load(Ordering::Relaxed)
    }
}

/// Why a download stopped.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("no peer or seed could be reached")]
    NoSources,
    #[error("stalled: no progress for {0:?}")]
    Stalled(Duration),
    #[error("storing a chunk: {0}")]
    Store(#[from] std::io::Error),
}

enum Done {
    Chunk {
        peer: PeerIdx,
        index: u32,
        result: Result<ChunkResponse, NetError>,
    },
}

/// What to download, from where, into what.
pub struct Job<'a> {
    pub manifest: &'a Manifest,
    pub swarm: Hash,
    pub token: &'a Token,
    pub sources: &'a [Source],
    pub store: &'a dyn ChunkStore,
    pub scheduler: shoal_scheduler::Config,
    /// Download cap in bytes per second (requests wait for their bytes' worth).
    pub download_rate: Option<u64>,
    /// Give up after this long without a verified chunk.
    pub stall: Duration,
    /// Sources found later (announces); they are dialled as they come.
    pub more_sources: Option<mpsc::Receiver<Source>>,
    /// Updated as chunks arrive.
    pub counters: Arc<Counters>,
    /// Renewed tokens (from announces): every connected source is
    /// re-authenticated with each, so a download outlives one token.
    pub renewed: Option<tokio::sync::watch::Receiver<Token>>,
}

impl<'a> Job<'a> {
    /// A job with the defaults for the rest: the default scheduler, no
    /// download cap, a 60 s stall limit, no later sources, fresh counters
    /// and no token renewal.
    pub fn new(
        manifest: &'a Manifest,
        swarm: Hash,
        token: &'a Token,
        sources: &'a [Source],
        store: &'a dyn ChunkStore,
    ) -> Job<'a> {
        Job {
            manifest,
            swarm,
            token,
            sources,
            store,
            scheduler: Default::default(),
            download_rate: None,
            stall: Duration::from_secs(60),
            more_sources: None,
            counters: Default::default(),
            renewed: None,
        }
    }
}

impl std::fmt::Debug for Job<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("swarm", &self.swarm)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

/// How joining a source went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joined {
    Failed,
    /// Authenticated over a direct connection: ready for requests.
    Direct,
    /// Authenticated, but only through a relay, which carries no chunks:
    /// it becomes a source if a hole punch succeeds ([`Event::Direct`]).
    Relayed,
}

/// A source dialled (when it has an address) and authenticated off the
/// loop; the outcome comes back on `joined`.
struct Joiner<'a> {
    client: &'a Client,
    swarm: Hash,
    token: Token,
    tx: mpsc::Sender<(Peer, PeerKind, Joined)>,
    /// Sources being dialled or joined, so none is dialled twice at once.
    busy: HashSet<Peer>,
}

impl Joiner<'_> {
    fn join(&mut self, peer: Peer, addrs: Vec<crate::Addr>, kind: PeerKind) {
        if !self.busy.insert(peer) {
            return;
        }
        let client = self.client.clone();
        let token = self.token.clone();
        let tx = self.tx.clone();
        let swarm = self.swarm;
        tokio::spawn(
            async move {
                let ready = async {
                    // The first address that answers; a peer joining us needs none.
                    let mut dialled = addrs.is_empty();
                    let mut last = None;
                    for addr in addrs {
                        match client.dial(peer, addr).await {
                            Ok(()) => {
                                dialled = true;
                                break;
                            }
                            Err(e) => last = Some(e),
                        }
                    }
                    if !dialled && let Some(e) = last {
                        return Err(e);
                    }
                    client.authenticate(peer, swarm, &token).await
                };
                let joined = match ready.await {
                    Ok(()) if kind == PeerKind::Seed => Joined::Direct,
                    Ok(()) => match client.is_direct(peer).await {
                        Ok(false) => Joined::Relayed,
                        _ => Joined::Direct,
                    },
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "source unavailable");
                        Joined::Failed
                    }
                };
                let _ = tx.send((peer, kind, joined)).await;
            }
            .instrument(tracing::debug_span!("join_source", %peer, ?kind)),
        );
    }
}

/// The download's view of its sources.
#[derive(Default)]
struct Sources {
    index_of: HashMap<Peer, PeerIdx>,
    peers: Vec<Peer>,
    kinds: Vec<PeerKind>,
    banned: HashSet<Peer>,
    /// What peers announced before they finished joining (replayed on join).
    early: HashMap<Peer, Bitfield>,
    /// Joined through a relay only: waiting for a direct connection.
    relayed: HashSet<Peer>,
    /// Seeds listed as having origin budget to spare.
    fills: HashSet<Peer>,
}

impl Sources {
    /// Hands a joined source to the scheduler and tells a peer what we hold.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        sched: &mut Download,
        client: &Client,
        swarm: Hash,
        covered: Option<&Bitfield>,
        now: Duration,
        peer: Peer,
        kind: PeerKind,
    ) {
        let idx = PeerIdx(self.peers.len() as u32);
        self.peers.push(peer);
        self.kinds.push(kind);
        self.index_of.insert(peer, idx);
        sched.handle_peer(now, idx, kind);
        if kind == PeerKind::Seed && self.fills.contains(&peer) {
            sched.handle_seed_fills(now, idx);
        }
        if let Some(b) = self.early.remove(&peer) {
            sched.handle_bitfield(now, idx, &b);
        }
        if kind == PeerKind::Peer {
            let mut held = sched.have().clone();
            for i in covered.iter().flat_map(|c| c.ones()) {
                held.clear(i);
            }
            let mine = HaveMessage {
                swarm,
                update: HaveUpdate::Bitfield(held),
            };
            let client = client.clone();
            tokio::spawn(
                async move {
                    let _ = client.have(peer, mine).await;
                }
                .instrument(tracing::debug_span!("send_bitfield", %peer)),
            );
        }
    }
}

/// Most peers whose early announcements are kept.
const MAX_EARLY: usize = 1024;

/// Downloads every chunk of the job's manifest into its store, answering the
/// node's events as they come.
pub async fn download(
    client: &Client,
    events: &mut mpsc::Receiver<Event>,
    job: Job<'_>,
) -> Result<Report, DownloadError> {
    let Job {
        manifest,
        swarm,
        token,
        sources,
        store,
        scheduler,
        download_rate,
        stall,
        mut more_sources,
        counters,
        mut renewed,
    } = job;
    let mut bucket = download_rate.map(shoal_scheduler::TokenBucket::capped);
    let start = Instant::now();
    let lens: Vec<u32> = manifest.chunks.iter().map(|c| c.len).collect();
    let mut have = store
        .bitfield(&swarm)
        .unwrap_or_else(|| Bitfield::new(lens.len() as u32));
    let covered = store.covered(&swarm).filter(|c| c.len() == have.len());
    for i in covered.iter().flat_map(Bitfield::ones) {
        have.set(i);
    }
    let mut sched = Download::new(
        scheduler,
        lens,
        have,
        u64::from(start.elapsed().subsec_nanos()),
    );
    let now = || start.elapsed();
    let mut known = Sources::default();
    let (joined_tx, mut joined_rx) = mpsc::channel(256);
    let mut joiner = Joiner {
        client,
        swarm,
        token: token.clone(),
        tx: joined_tx,
        busy: HashSet::new(),
    };
    for s in sources {
        if s.fills {
            known.fills.insert(s.peer);
        }
        joiner.join(s.peer, s.addrs.clone(), s.kind);
    }
    // Without later sources, the first ones must do.
    let mut waiting = sources.len();
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(1024);
    let mut report = Report::default();
    let mut last_progress = Instant::now();
    let mut fresh_haves: Vec<u32> = Vec::new();
    let mut last_have = Instant::now();
    loop {
        while let Some(action) = sched.poll() {
            match action {
                Action::Request {
                    peer,
                    chunk,
                    last_resort,
                } => {
                    let client = client.clone();
                    let tx = done_tx.clone();
                    let target = known.peers[peer.0 as usize];
                    let len = u64::from(manifest.chunks[chunk as usize].len);
                    let wait = bucket
                        .as_mut()
                        .map_or(Duration::ZERO, |b| b.reserve(start.elapsed(), len));
                    tokio::spawn(
                        async move {
                            tokio::time::sleep(wait).await;
                            let request = ChunkRequest {
                                swarm,
                                index: chunk,
                                last_resort,
                            };
                            let result = client.request_chunk(target, request).await;
                            let _ = tx
                                .send(Done::Chunk {
                                    peer,
                                    index: chunk,
                                    result,
                                })
                                .await;
                        }
                        .instrument(tracing::debug_span!("fetch_chunk", peer = %target, chunk)),
                    );
                }
                // A request-response cannot be withdrawn: a late copy is ignored.
                Action::Cancel { .. } => {}
                Action::Ban { peer } => {
                    let p = known.peers[peer.0 as usize];
                    tracing::warn!(peer = %p, "banned: sent chunks that failed verification");
                    report.banned.push(p);
                    known.banned.insert(p);
                    counters.banned.fetch_add(1, Ordering::Relaxed);
                }
                Action::Complete => {
                    // The last chunks are news too: a peer still missing
                    // them may have no other source than a super-seeding
                    // seed, which hands each chunk out once per window.
                    if !fresh_haves.is_empty() {
                        announce(client, &known, swarm, std::mem::take(&mut fresh_haves));
                    }
                    let stats = sched.stats();
                    report.from_peers = stats.from_peers;
                    report.from_seeds = stats.from_seeds;
                    report.wasted = stats.wasted;
                    report.seed_asks = [
                        stats.seed_asks_unheld,
                        stats.seed_asks_sent_elsewhere,
                        stats.seed_asks_peers_failed,
                    ];
                    report.elapsed = start.elapsed();
                    return Ok(report);
                }
            }
        }
        if known.peers.is_empty() && waiting == 0 && more_sources.is_none() {
            return Err(DownloadError::NoSources);
        }
        if last_progress.elapsed() > stall {
            return Err(if known.peers.is_empty() {
                DownloadError::NoSources
            } else {
                DownloadError::Stalled(stall)
            });
        }
        // New chunks are announced in batches: one message per peer every
        // few tens of milliseconds, not one per chunk and peer.
        if !fresh_haves.is_empty()
            && (fresh_haves.len() >= HAVE_BATCH || last_have.elapsed() >= HAVE_DELAY)
        {
            announce(client, &known, swarm, std::mem::take(&mut fresh_haves));
            last_have = Instant::now();
        }
        let mut timer = sched
            .poll_timeout()
            .map_or(Duration::from_secs(1), |t| t.saturating_sub(now()))
            .min(Duration::from_secs(1));
        if !fresh_haves.is_empty() {
            timer = timer.min(HAVE_DELAY.saturating_sub(last_have.elapsed()));
        }
        tokio::select! {
            Some(Done::Chunk { peer, index, result }) = done_rx.recv() => {
                let t = now();
                match result {
                    Ok(ChunkResponse::Data(bytes)) => match verify(manifest, index, &bytes) {
                        Ok(chunk) => {
                            let fresh = !sched.have().get(index);
                            store.put(chunk)?;
                            sched.handle_chunk(t, peer, index, true);
                            last_progress = Instant::now();
                            if fresh {
                                let by_seed = known.kinds[peer.0 as usize] == PeerKind::Seed;
                                let counter = if by_seed { &counters.from_seeds } else { &counters.from_peers };
                                counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                                counters.verified.fetch_add(1, Ordering::Relaxed);
                                fresh_haves.push(index);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(peer = %known.peers[peer.0 as usize], error = %e, "bad chunk");
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            sched.handle_chunk(t, peer, index, false);
                        }
                    },
                    Ok(ChunkResponse::Busy) => sched.handle_busy(t, peer, index),
                    Ok(ChunkResponse::SentElsewhere) => sched.handle_sent_elsewhere(t, peer, index),
                    Ok(ChunkResponse::NotFound | ChunkResponse::Unauthorized) | Err(_) => {
                        match &result {
                            Err(e) => tracing::debug!(peer = %known.peers[peer.0 as usize], error = %e, index, "chunk request failed"),
                            Ok(r) => tracing::debug!(peer = %known.peers[peer.0 as usize], answer = ?r, index, "chunk refused"),
                        }
                        sched.handle_failed(t, peer, index);
                    }
                }
            }
            Some((peer, kind, joined)) = joined_rx.recv() => {
                waiting = waiting.saturating_sub(1);
                joiner.busy.remove(&peer);
                if joined != Joined::Failed && !known.index_of.contains_key(&peer) && !known.banned.contains(&peer) {
                    if joined == Joined::Relayed {
                        // Asked now, it would answer Busy forever and, as a
                        // holder, keep the seeds from being asked.
                        tracing::debug!(%peer, "reached through a relay only: a source once a hole punch succeeds");
                        known.relayed.insert(peer);
                    } else {
                        known.admit(&mut sched, client, swarm, covered.as_ref(), now(), peer, kind);
                        counters.connected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            changed = async { renewed.as_mut()?.changed().await.ok() }, if renewed.is_some() => {
                match changed {
                    Some(()) => {
                        let fresh = renewed.as_mut().map(|r| r.borrow_and_update().clone());
                        if let Some(t) = fresh {
                            joiner.token = t.clone();
                            for &peer in known.index_of.keys() {
                                let (client, t) = (client.clone(), t.clone());
                                tokio::spawn(async move {
                                    if let Err(e) = client.authenticate(peer, swarm, &t).await {
                                        tracing::debug!(%peer, error = %e, "re-authentication failed");
                                    }
                                }.instrument(tracing::debug_span!("reauthenticate", %peer)));
                            }
                        }
                    }
                    None => renewed = None,
                }
            }
            source = async { more_sources.as_mut()?.recv().await }, if more_sources.is_some() => {
                match source {
                    Some(s) if !known.index_of.contains_key(&s.peer) && !known.banned.contains(&s.peer) => {
                        if s.fills && known.fills.len() < 64 {
                            known.fills.insert(s.peer);
                        }
                        joiner.join(s.peer, s.addrs, s.kind);
                    }
                    Some(_) => {}
                    None => more_sources = None,
                }
            }
            Some(event) = events.recv() => {
                let t = now();
                match event {
                    Event::Have { peer, message } if message.swarm == swarm => {
                        let n = manifest.chunks.len();
                        if let Some(&idx) = known.index_of.get(&peer) {
                            match message.update {
                                HaveUpdate::Bitfield(b) => sched.handle_bitfield(t, idx, &b),
                                HaveUpdate::Have(list) => {
                                    for c in list.into_iter().take(n) {
                                        sched.handle_have(t, idx, c);
                                    }
                                }
                            }
                        } else if known.early.len() < MAX_EARLY || known.early.contains_key(&peer) {
                            let held = known.early.entry(peer).or_insert_with(|| Bitfield::new(n as u32));
                            match message.update {
                                HaveUpdate::Bitfield(b) if b.len() == n as u32 => *held = b,
                                HaveUpdate::Bitfield(_) => {}
                                HaveUpdate::Have(list) => {
                                    for c in list.into_iter().take(n).filter(|&c| (c as usize) < n) {
                                        held.set(c);
                                    }
                                }
                            }
                        }
                    }
                    // A peer that found us: fetch from it too.
                    Event::Authenticated { peer, swarm: s }
                        if s == swarm
                            && !known.index_of.contains_key(&peer)
                            && !known.banned.contains(&peer) =>
                    {
                        joiner.join(peer, Vec::new(), PeerKind::Peer);
                    }
                    // Joined again, token and all: the relayed connection may
                    // have closed before the punch finished (a circuit's byte or
                    // time limit), and with it the peer's record of our token,
                    // which would answer every request `Unauthorized`.
                    Event::Direct { peer } if known.relayed.remove(&peer) => {
                        tracing::debug!(%peer, "hole punched: joining it as a source");
                        joiner.join(peer, Vec::new(), PeerKind::Peer);
                    }
                    Event::Disconnected { peer } => {
                        known.relayed.remove(&peer);
                        if let Some(idx) = known.index_of.remove(&peer) {
                            sched.handle_disconnect(t, idx);
                            counters.connected.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep(timer) => sched.handle_timeout(now()),
        }
    }
}

/// Most new chunks held back before they are announced, and how long.
const HAVE_BATCH: usize = 32;
const HAVE_DELAY: Duration = Duration::from_millis(50);

/// Tells every connected, non-banned peer about new chunks, without waiting.
fn announce(client: &Client, known: &Sources, swarm: Hash, indices: Vec<u32>) {
    for (&p, &idx) in &known.index_of {
        if known.kinds[idx.0 as usize] == PeerKind::Seed || known.banned.contains(&p) {
            continue;
        }
        let client = client.clone();
        let message = HaveMessage {
            swarm,
            update: HaveUpdate::Have(indices.clone()),
        };
        tokio::spawn(
            async move {
                let _ = client.have(p, message).await;
            }
            .instrument(tracing::debug_span!("send_have", peer = %p)),
        );
    }
}

/// After a download, while the node keeps serving `swarm`: a peer that
/// joins us hears what we hold. A download tells the peers it admits
/// (`Sources::admit`); without this, a player arriving after we finished
/// would never learn our chunks and would ask the seeds instead. Each
/// newcomer is authenticated to in turn (its node takes haves only from
/// peers that did) with the newest of `token`, then sent our bitfield.
/// Runs until the node stops or `events` closes; one task per newcomer,
/// and newcomers are bounded by the node's connections.
pub async fn give_back(
    client: &Client,
    events: &mut mpsc::Receiver<Event>,
    swarm: Hash,
    token: tokio::sync::watch::Receiver<Token>,
    store: Arc<dyn ChunkSource>,
) {
    while let Some(event) = events.recv().await {
        let Event::Authenticated { peer, swarm: s } = event else {
            continue;
        };
        if s != swarm {
            continue;
        }
        let (client, token, store) = (client.clone(), token.borrow().clone(), store.clone());
        tokio::spawn(
            async move {
                if let Err(e) = client.authenticate(peer, swarm, &token).await {
                    tracing::debug!(%peer, error = %e, "could not join a newcomer back");
                    return;
                }
                let Some(held) = store.bitfield(&swarm) else {
                    return;
                };
                let message = HaveMessage {
                    swarm,
                    update: HaveUpdate::Bitfield(held),
                };
                let _ = client.have(peer, message).await;
            }
            .instrument(tracing::debug_span!("greet_newcomer", %peer)),
        );
    }
}
