//! Drives one download: the sans-IO [`shoal_scheduler::Download`] fed by the
//! network. Chunks are verified against the manifest before they are stored
//! or counted; a peer that sends bad chunks is banned by the scheduler. New
//! chunks are announced to every peer, so downloaders serve each other.

use crate::{ChunkSource, Client, Event, NetError, Peer};
use shoal_manifest::{Manifest, VerifiedChunk, verify};
use shoal_scheduler::{Action, Download, PeerIdx, PeerKind};
use shoal_token::Token;
use shoal_types::{Bitfield, Hash};
use shoal_wire::{ChunkResponse, HaveMessage, HaveUpdate};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Where a download puts verified chunks; it also serves them to others.
pub trait ChunkStore: ChunkSource {
    /// Stores a chunk; only verified bytes can be passed.
    fn put(&self, chunk: VerifiedChunk<'_>) -> std::io::Result<()>;
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
    pub addr: crate::Addr,
    pub kind: PeerKind,
}

/// How a download went.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub from_peers: u64,
    pub from_seeds: u64,
    pub wasted: u64,
    pub banned: Vec<Peer>,
    pub elapsed: Duration,
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
}

impl std::fmt::Debug for Job<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("swarm", &self.swarm)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

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
    } = job;
    let mut bucket = download_rate.map(|r| shoal_scheduler::TokenBucket::new(r, r));
    let start = Instant::now();
    let lens: Vec<u32> = manifest.chunks.iter().map(|c| c.len).collect();
    let have = store
        .bitfield(&swarm)
        .unwrap_or_else(|| Bitfield::new(lens.len() as u32));
    let mut sched = Download::new(
        scheduler,
        lens,
        have,
        u64::from(start.elapsed().subsec_nanos()),
    );
    let mut index_of: HashMap<Peer, PeerIdx> = HashMap::new();
    let mut peers: Vec<Peer> = Vec::new();
    let now = || start.elapsed();

    // Connect and authenticate; a source that fails is skipped.
    for s in sources {
        let ready = async {
            client.dial(s.peer, s.addr.clone()).await?;
            client.authenticate(s.peer, swarm, token).await
        };
        match ready.await {
            Ok(()) => {
                let idx = PeerIdx(peers.len() as u32);
                peers.push(s.peer);
                index_of.insert(s.peer, idx);
                sched.handle_peer(now(), idx, s.kind);
                if s.kind == PeerKind::Peer {
                    let mine = HaveMessage {
                        swarm,
                        update: HaveUpdate::Bitfield(sched.have().clone()),
                    };
                    let _ = client.have(s.peer, mine).await;
                }
            }
            Err(e) => tracing::debug!(peer = %s.peer, error = %e, "source unavailable"),
        }
    }
    if peers.is_empty() {
        return Err(DownloadError::NoSources);
    }

    let (done_tx, mut done_rx) = mpsc::channel::<Done>(1024);
    let mut report = Report::default();
    let mut last_progress = Instant::now();
    loop {
        while let Some(action) = sched.poll() {
            match action {
                Action::Request { peer, chunk } => {
                    let client = client.clone();
                    let tx = done_tx.clone();
                    let target = peers[peer.0 as usize];
                    let len = u64::from(manifest.chunks[chunk as usize].len);
                    let wait = bucket
                        .as_mut()
                        .map_or(Duration::ZERO, |b| b.reserve(start.elapsed(), len));
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let result = client.chunk(target, swarm, chunk).await;
                        let _ = tx
                            .send(Done::Chunk {
                                peer,
                                index: chunk,
                                result,
                            })
                            .await;
                    });
                }
                // A request-response cannot be withdrawn: a late copy is ignored.
                Action::Cancel { .. } => {}
                Action::Ban { peer } => {
                    let p = peers[peer.0 as usize];
                    tracing::warn!(peer = %p, "banned: sent chunks that failed verification");
                    report.banned.push(p);
                }
                Action::Complete => {
                    let stats = sched.stats();
                    report.from_peers = stats.from_peers;
                    report.from_seeds = stats.from_seeds;
                    report.wasted = stats.wasted;
                    report.elapsed = start.elapsed();
                    return Ok(report);
                }
            }
        }
        if last_progress.elapsed() > stall {
            return Err(DownloadError::Stalled(stall));
        }
        let timer = sched
            .poll_timeout()
            .map_or(Duration::from_secs(1), |t| t.saturating_sub(now()));
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
                                announce(client, &peers, &report.banned, swarm, index);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(peer = %peers[peer.0 as usize], error = %e, "bad chunk");
                            sched.handle_chunk(t, peer, index, false);
                        }
                    },
                    Ok(ChunkResponse::Busy) => sched.handle_busy(t, peer, index),
                    Ok(ChunkResponse::SentElsewhere | ChunkResponse::NotFound | ChunkResponse::Unauthorized) | Err(_) => {
                        sched.handle_failed(t, peer, index);
                    }
                }
            }
            Some(event) = events.recv() => {
                let t = now();
                match event {
                    Event::Have { peer, message } if message.swarm == swarm => {
                        if let Some(&idx) = index_of.get(&peer) {
                            match message.update {
                                HaveUpdate::Bitfield(b) => sched.handle_bitfield(t, idx, &b),
                                HaveUpdate::Have(list) => {
                                    for c in list.into_iter().take(manifest.chunks.len()) {
                                        sched.handle_have(t, idx, c);
                                    }
                                }
                            }
                        }
                    }
                    Event::Disconnected { peer } => {
                        if let Some(&idx) = index_of.get(&peer) {
                            sched.handle_disconnect(t, idx);
                        }
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep(timer) => sched.handle_timeout(now()),
        }
    }
}

/// Tells every (non-banned) peer about a new chunk, without waiting.
fn announce(client: &Client, peers: &[Peer], banned: &[Peer], swarm: Hash, index: u32) {
    for &p in peers.iter().filter(|p| !banned.contains(p)) {
        let client = client.clone();
        tokio::spawn(async move {
            let _ = client
                .have(
                    p,
                    HaveMessage {
                        swarm,
                        update: HaveUpdate::Have(vec![index]),
                    },
                )
                .await;
        });
    }
}
