//! The download side: which chunk to ask which peer for, and when.
//!
//! Policy: rarest first among peers (random tie-break), pipelines sized from
//! each peer's measured rate, seeds only for chunks no connected peer holds
//! or that peers failed to deliver in time, endgame duplicates for the last
//! chunks, timeouts with retry elsewhere, and a ban after repeated bad chunks.

use crate::{PeerIdx, Rng};
use shoal_types::Bitfield;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// Tunables.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most requests in flight to one peer.
    pub max_in_flight: usize,
    /// Requests in flight to a peer before its rate is known.
    pub initial_in_flight: usize,
    /// Keep about this much work queued at each peer (pipeline = rate × this).
    pub target_queue: Duration,
    /// Requests in flight to one seed.
    pub seed_in_flight: usize,
    /// A request not answered in this long is retried elsewhere.
    pub request_timeout: Duration,
    /// Bad chunks from one peer before it is banned.
    pub ban_after: u32,
    /// Extra copies of each request in the endgame.
    pub endgame_duplicates: usize,
    /// Extra copies in flight at once in the endgame, over all chunks,
    /// the losers of decided races still on their way included: each
    /// loser is sent in full, and in a swarm whose uplinks are all full
    /// nearly every copy loses. Not counted: a chunk a peer failed, and
    /// one held by a peer whose latency is over twice the typical one.
    pub endgame_copies: usize,
    /// In the endgame, a chunk is asked of another peer only once its
    /// request is this old: duplicating at once wastes the uplinks of every
    /// peer near the end (about 8% of all peer uploads in the lab). Past
    /// it, only once the request is overdue (see `overdue_at`).
    pub endgame_after: Duration,
    /// After a seed refuses a chunk (it just sent it to someone else), wait
    /// this long before asking a seed for it again.
    pub seed_retry_after: Duration,
    /// After a peer says it is busy, leave it alone this long; each time it
    /// is found busy again doubles it, up to `busy_backoff_max`, and a
    /// chunk it delivers resets it. A swarm where every uplink is full is
    /// otherwise asked again and refused every `busy_backoff` by each
    /// neighbour: in a simulated 400-player swarm, 98% of requests.
    pub busy_backoff: Duration,
    pub busy_backoff_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_in_flight: 8,
            initial_in_flight: 2,
            target_queue: Duration::from_millis(1500),
            seed_in_flight: 2,
            request_timeout: Duration::from_secs(60),
            ban_after: 3,
            endgame_duplicates: 1,
            endgame_copies: 2,
            endgame_after: Duration::from_secs(2),
            seed_retry_after: Duration::from_secs(5),
            busy_backoff: Duration::from_millis(300),
            busy_backoff_max: Duration::from_millis(1200),
        }
    }
}

/// The chunk size [`Config`]'s pipeline depths are set for: the manifest's
/// average chunk (1 MiB).
const TUNED_CHUNK_LEN: f64 = (1 << 20) as f64;
/// Most a pipeline deepens for small chunks.
const MAX_DEPTH_SCALE: f64 = 64.0;

/// How much deeper pipelines go for chunks averaging `avg_len` bytes: one
/// request per chunk costs a round trip's share of time whatever its size,
/// so a build of 4 KiB chunks at the depths of 1 MiB chunks is bound by
/// round trips (100,000 small files took 135 s against HTTP's 21 s).
fn depth_scale(avg_len: f64) -> usize {
    (TUNED_CHUNK_LEN / avg_len.max(1.0)).clamp(1.0, MAX_DEPTH_SCALE) as usize
}

/// Refusals by seeds ("sent elsewhere") after which a chunk no connected
/// peer holds is asked as a last resort although peers are connected: by
/// then (3 × `seed_retry_after`) the peer it went to would have it and have
/// said so, were it in reach.
const LAST_RESORT_AFTER: u8 = 3;

/// What the other side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Another downloader: preferred.
    Peer,
    /// Origin capacity: used only when peers cannot help.
    Seed,
}

/// What the driver should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask `peer` for chunk `chunk`. `last_resort`: a seed sent this chunk
    /// to another peer a while ago, yet no peer we are connected to holds
    /// it, so that peer is out of our reach (both behind NATs no punch
    /// opens): the seed should send it to us too rather than refuse again.
    Request {
        peer: PeerIdx,
        chunk: u32,
        last_resort: bool,
    },
    /// Withdraw a request (another copy arrived first, or the peer is dropped).
    Cancel { peer: PeerIdx, chunk: u32 },
    /// Disconnect and refuse `peer`: it sent chunks that failed verification.
    Ban { peer: PeerIdx },
    /// Every chunk is here.
    Complete,
}

/// Counters for progress displays and announces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub have_chunks: u32,
    pub have_bytes: u64,
    pub total_bytes: u64,
    pub from_peers: u64,
    pub from_seeds: u64,
    /// Bytes received but wasted (duplicates, failed verification).
    pub wasted: u64,
    pub in_flight: usize,
    /// Why seeds were asked: chunks no connected peer held (of which, chunks
    /// a seed had already said it sent to another peer, whose holder is
    /// then out of our reach or slow to tell us), and chunks peers failed
    /// to deliver (timeout, refusal).
    pub seed_asks_unheld: u64,
    pub seed_asks_sent_elsewhere: u64,
    pub seed_asks_peers_failed: u64,
}

/// Peer numbers are small integers chosen by the driver: hash them with one
/// multiply instead of SipHash (the scheduler's hottest map).
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type PeerMap<V> = HashMap<PeerIdx, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug)]
struct InFlight {
    chunk: u32,
    sent_at: Duration,
    deadline: Duration,
}

#[derive(Debug)]
struct Peer {
    kind: PeerKind,
    has: Bitfield,
    in_flight: Vec<InFlight>,
    /// Bytes per second, EWMA over deliveries; `None` until the first one.
    rate: Option<f64>,
    /// From request to delivery, EWMA over deliveries (seconds): what the
    /// endgame waits for before a copy is asked elsewhere.
    latency: Option<f64>,
    last_delivery: Duration,
    strikes: u32,
    /// Declined our last request: not asked again before this.
    busy_until: Option<Duration>,
    /// Busy answers since its last delivery (the backoff doubles with each).
    busy_streak: u32,
    /// A seed with origin budget to spare: asked for chunks peers hold too.
    fills: bool,
}

#[derive(Debug, Default, Clone)]
struct Chunk {
    /// Peers (not seeds) that have it.
    avail: u32,
    /// Outstanding requests for it.
    requested: u8,
    /// Peers failed to deliver it in time: seeds may be asked.
    slow: bool,
    /// Times a seed refused it because it had just sent it to another peer.
    sent_elsewhere: u8,
}

/// One download.
#[derive(Debug)]
pub struct Download {
    config: Config,
    /// Shared: a simulator runs hundreds of thousands of downloads of one
    /// manifest.
    lens: Arc<[u32]>,
    have: Bitfield,
    /// Chunks with at least one request out (`Chunk::requested > 0`), so
    /// [`Download::choose`] skips them 64 at a time.
    asked: Bitfield,
    /// Chunks a peer can give (`avail > 0` and not `slow`): a frugal seed
    /// is never asked for them, so [`Download::choose`] skips them 64 at a
    /// time instead of looking at every missing chunk.
    offered: Bitfield,
    chunks: Vec<Chunk>,
    /// Peers that sent a bad copy of a chunk are not asked for it again.
    excluded: HashMap<u32, Vec<PeerIdx>>,
    peers: PeerMap<Peer>,
    /// Missing chunks with no request out: zero means endgame.
    open: u32,
    /// Requests beyond the first for their chunk (endgame copies).
    copies: usize,
    /// Cancelled requests whose answer is still on its way (a request
    /// cannot be withdrawn): the losers of endgame races, counted against
    /// `endgame_copies` until they arrive, their peer leaves, or the time
    /// given (twice the typical latency) passes.
    losing: Vec<(Duration, PeerIdx, u32)>,
    banned: Vec<PeerIdx>,
    /// Chunks hidden on a seed after it refused them: restored at the time given.
    hidden: Vec<(Duration, PeerIdx, u32)>,
    actions: VecDeque<Action>,
    stats: Stats,
    rng: Rng,
    avg_len: f64,
    complete_sent: bool,
    /// The latest time seen (for timers that must lie in the future).
    last_now: Duration,
}

impl Download {
    /// A download of chunks with lengths `lens`, of which `have` are already
    /// present (resume).
    pub fn new(config: Config, lens: impl Into<Arc<[u32]>>, have: Bitfield, seed: u64) -> Download {
        let lens = lens.into();
        assert_eq!(
            have.len() as usize,
            lens.len(),
            "bitfield must cover every chunk"
        );
        let total_bytes: u64 = lens.iter().map(|&l| u64::from(l)).sum();
        let have_bytes: u64 = have.ones().map(|i| u64::from(lens[i as usize])).sum();
        let avg_len = if lens.is_empty() {
            1.0
        } else {
            total_bytes as f64 / lens.len() as f64
        };
        let stats = Stats {
            have_chunks: have.count(),
            have_bytes,
            total_bytes,
            ..Stats::default()
        };
        let mut d = Download {
            config,
            chunks: vec![Chunk::default(); lens.len()],
            asked: Bitfield::new(lens.len() as u32),
            offered: Bitfield::new(lens.len() as u32),
            lens,
            have,
            excluded: HashMap::new(),
            peers: PeerMap::default(),
            open: 0,
            copies: 0,
            losing: Vec::new(),
            banned: Vec::new(),
            hidden: Vec::new(),
            actions: VecDeque::new(),
            stats,
            rng: Rng::new(seed),
            avg_len,
            complete_sent: false,
            last_now: Duration::ZERO,
        };
        d.open = d.lens.len() as u32 - d.stats.have_chunks;
        d.check_complete();
        d
    }

    pub fn is_complete(&self) -> bool {
        self.stats.have_chunks as usize == self.lens.len()
    }

    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    pub fn stats(&self) -> Stats {
        Stats {
            in_flight: self.peers.values().map(|p| p.in_flight.len()).sum(),
            ..self.stats.clone()
        }
    }

    /// The next action, if any.
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Download::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        // One pass over the peers (a simulator asks after every event):
        // request deadlines, busy backoffs and, in the endgame, when a
        // request becomes old enough to duplicate.
        let endgame = self.all_requested().then(|| self.typical_latency());
        let mut next: Option<Duration> = None;
        let mut at = |t: Duration| {
            if next.is_none_or(|n| t < n) {
                next = Some(t);
            }
        };
        for p in self.peers.values() {
            if let Some(t) = p.busy_until {
                at(t);
            }
            for r in &p.in_flight {
                at(r.deadline);
                if let Some(typical) = endgame {
                    let late = self.overdue_at(p, r, typical);
                    if late > self.last_now {
                        at(late);
                    }
                }
            }
        }
        for h in &self.hidden {
            at(h.0);
        }
        if endgame.is_some() {
            for l in &self.losing {
                at(l.0);
            }
        }
        next
    }

    /// A connection to `peer` is ready (its token checked).
    pub fn handle_peer(&mut self, now: Duration, peer: PeerIdx, kind: PeerKind) {
        if self.banned.contains(&peer) || self.peers.contains_key(&peer) {
            return;
        }
        let has = match kind {
            PeerKind::Seed => Bitfield::full(self.lens.len() as u32),
            PeerKind::Peer => Bitfield::new(self.lens.len() as u32),
        };
        self.peers.insert(
            peer,
            Peer {
                kind,
                has,
                in_flight: Vec::new(),
                rate: None,
                latency: None,
                last_delivery: now,
                strikes: 0,
                busy_until: None,
                busy_streak: 0,
                fills: false,
            },
        );
        self.schedule_peer(now, peer);
    }

    /// Seed `peer`'s swarm has origin budget to spare (the tracker says):
    /// it is asked for any chunk, those no peer holds first and then the
    /// rarest, not only for those no peer holds, until it refuses one
    /// (`SentElsewhere`: the budget is spent).
    pub fn handle_seed_fills(&mut self, now: Duration, peer: PeerIdx) {
        if let Some(p) = self.peers.get_mut(&peer)
            && p.kind == PeerKind::Seed
        {
            p.fills = true;
            self.schedule_peer(now, peer);
        }
    }

    /// `peer` sent its whole bitfield. Malformed or wrong-length fields are ignored.
    pub fn handle_bitfield(&mut self, now: Duration, peer: PeerIdx, has: &Bitfield) {
        if has.len() as usize != self.lens.len() || !has.is_well_formed() {
            return;
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.kind == PeerKind::Peer {
            let old = std::mem::replace(&mut p.has, has.clone());
            for i in old.ones() {
                self.chunks[i as usize].avail -= 1;
                self.note_offer(i);
            }
            for i in has.ones() {
                self.chunks[i as usize].avail += 1;
                self.note_offer(i);
            }
        } else {
            p.has = has.clone();
        }
        self.schedule_peer(now, peer);
    }

    /// `peer` now has `chunk`.
    pub fn handle_have(&mut self, now: Duration, peer: PeerIdx, chunk: u32) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if chunk as usize >= self.lens.len() || p.has.get(chunk) {
            return;
        }
        p.has.set(chunk);
        if p.kind == PeerKind::Peer {
            self.chunks[chunk as usize].avail += 1;
            self.note_offer(chunk);
        }
        // Only the announcing peer gained something to offer, and only if we
        // still lack the chunk: the hot path of a large swarm.
        if !self.have.get(chunk) {
            self.schedule_peer(now, peer);
        }
    }

    /// The connection to `peer` is gone; its requests go elsewhere.
    pub fn handle_disconnect(&mut self, now: Duration, peer: PeerIdx) {
        self.drop_peer(peer);
        self.schedule(now);
    }

    fn drop_peer(&mut self, peer: PeerIdx) {
        self.losing.retain(|l| l.1 != peer);
        if let Some(p) = self.peers.remove(&peer) {
            for r in &p.in_flight {
                self.unrequest(r.chunk);
            }
            if p.kind == PeerKind::Peer {
                for i in p.has.ones() {
                    self.chunks[i as usize].avail -= 1;
                    self.note_offer(i);
                }
            }
        }
    }

    /// Keeps `offered` true to chunk `i`'s `avail` and `slow`.
    fn note_offer(&mut self, i: u32) {
        let c = &self.chunks[i as usize];
        if c.avail > 0 && !c.slow {
            self.offered.set(i);
        } else {
            self.offered.clear(i);
        }
    }

    fn take_request(&mut self, peer: PeerIdx, chunk: u32) -> Option<InFlight> {
        let p = self.peers.get_mut(&peer)?;
        let pos = p.in_flight.iter().position(|r| r.chunk == chunk)?;
        let r = p.in_flight.swap_remove(pos);
        self.unrequest(chunk);
        Some(r)
    }

    /// `peer` answered `chunk`; `verified` says whether it matched the
    /// manifest (the driver runs `shoal_manifest::verify` and writes it first).
    pub fn handle_chunk(&mut self, now: Duration, peer: PeerIdx, chunk: u32, verified: bool) {
        let len = u64::from(self.lens[chunk as usize]);
        let Some(request) = self.take_request(peer, chunk) else {
            // Cancelled: a copy that lost the race still crossed the
            // network in full (a request cannot be withdrawn).
            if let Some(i) = self.losing.iter().position(|l| l.1 == peer && l.2 == chunk) {
                self.losing.swap_remove(i);
            }
            if verified && self.have.get(chunk) {
                self.stats.wasted += len;
            }
            self.schedule_peer(now, peer);
            return;
        };
        if !verified {
            self.stats.wasted += len;
            self.excluded.entry(chunk).or_default().push(peer);
            let p = self
                .peers
                .get_mut(&peer)
                .expect("request came from a known peer");
            p.strikes += 1;
            if p.strikes >= self.config.ban_after {
                self.ban(peer);
            }
            self.schedule(now);
            return;
        }
        let p = self
            .peers
            .get_mut(&peer)
            .expect("request came from a known peer");
        let since = now
            .saturating_sub(request.sent_at.max(p.last_delivery))
            .as_secs_f64()
            .max(1e-6);
        let sample = len as f64 / since;
        p.rate = Some(match p.rate {
            None => sample,
            Some(r) => 0.7 * r + 0.3 * sample,
        });
        let took = now.saturating_sub(request.sent_at).as_secs_f64();
        p.latency = Some(match p.latency {
            None => took,
            Some(l) => 0.7 * l + 0.3 * took,
        });
        p.last_delivery = now;
        p.busy_streak = 0;
        let kind = p.kind;
        if self.have.get(chunk) {
            self.stats.wasted += len;
        } else {
            self.have.set(chunk);
            if self.chunks[chunk as usize].requested == 0 {
                self.open -= 1;
            }
            self.stats.have_chunks += 1;
            self.stats.have_bytes += len;
            match kind {
                PeerKind::Peer => self.stats.from_peers += len,
                PeerKind::Seed => self.stats.from_seeds += len,
            }
            if self.cancel_others(now, chunk) {
                // Slots freed elsewhere: refill everyone.
                self.check_complete();
                self.schedule(now);
                return;
            }
        }
        self.check_complete();
        self.schedule_peer(now, peer);
    }

    /// `peer` refused or failed `chunk` (no such chunk, busy, stream error).
    pub fn handle_failed(&mut self, now: Duration, peer: PeerIdx, chunk: u32) {
        if self.take_request(peer, chunk).is_some()
            && let Some(p) = self.peers.get_mut(&peer)
        {
            p.has.clear(chunk);
            match p.kind {
                PeerKind::Peer => {
                    let c = &mut self.chunks[chunk as usize];
                    c.avail = c.avail.saturating_sub(1);
                    c.slow = true;
                    self.note_offer(chunk);
                }
                PeerKind::Seed => {
                    self.hidden
                        .push((now + self.config.seed_retry_after, peer, chunk))
                }
            }
        }
        self.schedule(now);
    }

    /// Seed `peer` refused `chunk` because it just sent it to another peer:
    /// it is asked again after `seed_retry_after`, as a last resort (see
    /// [`Action::Request`]) if no peer is connected, or after
    /// [`LAST_RESORT_AFTER`] refusals if none of those connected holds it.
    pub fn handle_sent_elsewhere(&mut self, now: Duration, peer: PeerIdx, chunk: u32) {
        if let Some(c) = self.chunks.get_mut(chunk as usize) {
            c.sent_elsewhere = c.sent_elsewhere.saturating_add(1);
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.fills = false;
        }
        self.handle_failed(now, peer, chunk);
    }

    /// `peer`'s queue is full: it is left alone for `busy_backoff`, doubled
    /// for each time it was found busy since its last delivery (answers to
    /// requests sent before that count once); it still has the chunk.
    pub fn handle_busy(&mut self, now: Duration, peer: PeerIdx, chunk: u32) {
        if self.take_request(peer, chunk).is_some()
            && let Some(p) = self.peers.get_mut(&peer)
            // Already backing off: an answer to a request sent before.
            && p.busy_until.is_none_or(|t| t <= now)
        {
            let doubled = self
                .config
                .busy_backoff
                .saturating_mul(1 << p.busy_streak.min(16));
            let cap = self.config.busy_backoff_max.max(self.config.busy_backoff);
            p.busy_until = Some(now + doubled.min(cap));
            p.busy_streak = p.busy_streak.saturating_add(1);
        }
        // Only holders of the released chunk gained work.
        let holders: Vec<PeerIdx> = self
            .peers
            .iter()
            .filter(|(id, p)| **id != peer && p.has.get(chunk))
            .map(|(id, _)| *id)
            .collect();
        for holder in holders {
            self.schedule_peer(now, holder);
        }
    }

    /// Expires overdue requests (the chunk may then go to a seed) and
    /// restores chunks hidden on seeds.
    pub fn handle_timeout(&mut self, now: Duration) {
        for p in self.peers.values_mut() {
            if p.busy_until.is_some_and(|t| t <= now) {
                p.busy_until = None;
            }
        }
        self.losing.retain(|l| l.0 > now);
        let (due, later): (Vec<_>, Vec<_>) = self.hidden.drain(..).partition(|h| h.0 <= now);
        self.hidden = later;
        for (_, peer, chunk) in due {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.has.set(chunk);
            }
        }
        let mut expired = Vec::new();
        for (&peer, p) in &mut self.peers {
            p.in_flight.retain(|r| {
                let keep = r.deadline > now;
                if !keep {
                    expired.push((peer, r.chunk));
                }
                keep
            });
        }
        for (peer, chunk) in expired {
            self.unrequest(chunk);
            self.chunks[chunk as usize].slow = true;
            self.note_offer(chunk);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.rate = p.rate.map(|r| r / 2.0);
            }
            self.actions.push_back(Action::Cancel { peer, chunk });
        }
        self.schedule(now);
    }

    fn ban(&mut self, peer: PeerIdx) {
        if let Some(p) = self.peers.get(&peer) {
            for r in &p.in_flight {
                self.actions.push_back(Action::Cancel {
                    peer,
                    chunk: r.chunk,
                });
            }
        }
        self.drop_peer(peer);
        self.banned.push(peer);
        self.actions.push_back(Action::Ban { peer });
    }

    /// Cancels other requests for `chunk`; true if there were any.
    fn cancel_others(&mut self, now: Duration, chunk: u32) -> bool {
        if self.chunks[chunk as usize].requested == 0 {
            return false;
        }
        let holders: Vec<PeerIdx> = self
            .peers
            .iter()
            .filter(|(_, p)| p.in_flight.iter().any(|r| r.chunk == chunk))
            .map(|(&id, _)| id)
            .collect();
        let until = self.patience(self.typical_latency());
        for &peer in &holders {
            if let Some(r) = self.take_request(peer, chunk) {
                self.losing.push((r.deadline.min(now + until), peer, chunk));
            }
            self.actions.push_back(Action::Cancel { peer, chunk });
        }
        !holders.is_empty()
    }

    fn check_complete(&mut self) {
        if self.stats.have_chunks as usize == self.lens.len() && !self.complete_sent {
            self.complete_sent = true;
            self.actions.push_back(Action::Complete);
        }
    }

    /// The mean request latency of the peers that have delivered, for those
    /// that have not yet: a peer asked once and never heard from again is
    /// neither duplicated at once nor waited for forever.
    fn typical_latency(&self) -> Option<f64> {
        let (sum, n) = self
            .peers
            .values()
            .filter_map(|p| p.latency)
            .fold((0.0, 0u32), |(s, n), l| (s + l, n + 1));
        (n > 0).then(|| sum / f64::from(n))
    }

    /// When request `r` to `p` is overdue in the endgame, so that a copy
    /// may be asked elsewhere: twice `p`'s request latency, or the typical
    /// one if that is shorter (a slow peer is not judged by its own pace),
    /// and never before `endgame_after`. Latency, not rate: a peer's uplink
    /// is shared with every other downloader, so its rate to us says little
    /// of when one request arrives.
    fn overdue_at(&self, p: &Peer, r: &InFlight, typical: Option<f64>) -> Duration {
        let latency = match (p.latency, typical) {
            (Some(own), Some(typical)) => Some(own.min(typical)),
            (own, typical) => own.or(typical),
        };
        r.sent_at + self.patience(latency)
    }

    /// How long an answer of `latency` seconds is waited for in the
    /// endgame: twice that, and never less than `endgame_after`.
    fn patience(&self, latency: Option<f64>) -> Duration {
        let twice = latency.map_or(Duration::ZERO, |l| {
            Duration::from_secs_f64((2.0 * l).min(3600.0))
        });
        self.config.endgame_after.max(twice)
    }

    /// How many requests `p` should have in flight. The depths in
    /// [`Config`] are for chunks of the usual size; a build of smaller
    /// chunks (many small files) gets more requests in flight, so about the
    /// same bytes are (see [`depth_scale`]).
    fn slots(&self, p: &Peer) -> usize {
        if p.busy_until.is_some() {
            return 0;
        }
        let scale = depth_scale(self.avg_len);
        match (p.kind, p.rate) {
            (PeerKind::Seed, _) => self.config.seed_in_flight * scale,
            (PeerKind::Peer, None) => self.config.initial_in_flight * scale,
            (PeerKind::Peer, Some(rate)) => {
                let want =
                    (rate * self.config.target_queue.as_secs_f64() / self.avg_len).ceil() as usize;
                want.clamp(1, self.config.max_in_flight * scale)
            }
        }
    }

    fn excluded(&self, chunk: u32, peer: PeerIdx) -> bool {
        self.excluded.get(&chunk).is_some_and(|v| v.contains(&peer))
    }

    /// The chunk to ask `peer` for next, if any.
    fn choose(&mut self, peer: PeerIdx) -> Option<u32> {
        let p = &self.peers[&peer];
        let n = self.lens.len();
        if n == 0 {
            return None;
        }
        let start = self.rng.below(n);
        let mut best: Option<(u32, u32)> = None; // (avail, chunk)
        let mut ties = 0u64;
        // Chunks in the order start..n, then 0..start; only those `peer`
        // has and we lack, with no request out, are looked at (the rest
        // were never candidates),
        // 64 at a time: a peer with nothing for us costs n/64 steps, not n.
        'scan: for (lo, hi) in [(start, n), (0, start)] {
            let mut w = lo / 64;
            while w * 64 < hi {
                let base = w * 64;
                let mut bits = p.has.word(w) & !self.have.word(w) & !self.asked.word(w);
                if p.kind == PeerKind::Seed && !p.fills {
                    bits &= !self.offered.word(w);
                }
                if base < lo {
                    bits &= !0u64 << (lo - base);
                }
                if hi - base < 64 {
                    bits &= (1u64 << (hi - base)) - 1;
                }
                w += 1;
                while bits != 0 {
                    let i = (base + bits.trailing_zeros() as usize) as u32;
                    bits &= bits - 1;
                    let c = &self.chunks[i as usize];
                    if c.requested > 0 || self.excluded(i, peer) {
                        continue;
                    }
                    let frugal_seed = p.kind == PeerKind::Seed && !p.fills;
                    if frugal_seed && c.avail > 0 && !c.slow {
                        continue; // a peer can give it
                    }
                    // Seeds: any eligible chunk (random start spreads
                    // downloaders over different chunks). Peers, and seeds
                    // that fill in: rarest first, random among equals.
                    let key = if frugal_seed { 0 } else { c.avail };
                    match best {
                        Some((b, _)) if key > b => {}
                        Some((b, _)) if key == b => {
                            ties += 1;
                            if self.rng.below(ties as usize + 1) == 0 {
                                best = Some((key, i));
                            }
                        }
                        _ => {
                            best = Some((key, i));
                            ties = 0;
                        }
                    }
                    if frugal_seed || key == 0 || (p.kind == PeerKind::Peer && key <= 1) {
                        break 'scan; // cannot do better
                    }
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Endgame: a chunk whose request elsewhere is overdue and that `peer`
    /// could also send.
    ///
    /// A copy costs the uplink that sends it, and a copy that loses the race
    /// is sent in full (a request cannot be withdrawn), so it is asked only
    /// once the request out is overdue ([`Download::overdue_at`]), and no
    /// more than `endgame_copies` are in the air at once, losers included.
    /// In the lab, where every uplink is full and a chunk takes its holder
    /// about 6 s, duplicating every request 2 s old sent half a copy of
    /// the payload for nothing.
    fn choose_duplicate(&self, peer: PeerIdx, now: Duration) -> Option<u32> {
        let p = &self.peers[&peer];
        let limit = 1 + self.config.endgame_duplicates as u8;
        let typical = self.typical_latency();
        let room = self.copies + self.losing.len() < self.config.endgame_copies;
        // A holder much slower than is typical (a 5 Mbit/s uplink among
        // 20s) is what copies are for: those go out whatever the cap.
        let slow_holder = |q: &Peer| match (q.latency, typical) {
            (Some(own), Some(typical)) => own > 2.0 * typical,
            _ => false,
        };
        let late = |i: u32| {
            self.peers.values().any(|q| {
                (room || slow_holder(q))
                    && q.in_flight
                        .iter()
                        .any(|r| r.chunk == i && now >= self.overdue_at(q, r, typical))
            })
        };
        // Only chunks `peer` has, we lack and somebody was asked for can
        // be duplicated: those, 64 at a time, in ascending order.
        let words = self.lens.len().div_ceil(64);
        let candidates = (0..words).flat_map(|w| {
            let mut bits = p.has.word(w) & !self.have.word(w) & self.asked.word(w);
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let i = (w * 64) as u32 + bits.trailing_zeros();
                    bits &= bits - 1;
                    i
                })
            })
        });
        candidates.into_iter().find(|&i| {
            let c = &self.chunks[i as usize];
            !self.have.get(i)
                && c.requested > 0
                && c.requested < limit
                && p.has.get(i)
                && !p.in_flight.iter().any(|r| r.chunk == i)
                && !self.excluded(i, peer)
                && (p.kind == PeerKind::Peer || c.avail == 0 || c.slow)
                // Once a peer failed the chunk, a second copy goes out at once.
                && (c.slow || late(i))
        })
    }

    fn request(&mut self, now: Duration, peer: PeerIdx, chunk: u32) {
        let deadline = now + self.config.request_timeout;
        let p = self
            .peers
            .get_mut(&peer)
            .expect("scheduling known peers only");
        p.in_flight.push(InFlight {
            chunk,
            sent_at: now,
            deadline,
        });
        if self.chunks[chunk as usize].requested == 0 {
            self.open -= 1;
        }
        let c = &mut self.chunks[chunk as usize];
        c.requested += 1;
        if c.requested > 1 {
            self.copies += 1;
        }
        self.asked.set(chunk);
        let is_seed = p.kind == PeerKind::Seed;
        if is_seed {
            if c.avail == 0 {
                self.stats.seed_asks_unheld += 1;
                self.stats.seed_asks_sent_elsewhere += u64::from(c.sent_elsewhere > 0);
            } else {
                self.stats.seed_asks_peers_failed += 1;
            }
        }
        let last_resort = is_seed && c.avail == 0 && c.sent_elsewhere > 0 && {
            // With no peer connected, nobody we reach can have it. With
            // peers, the one it went to may still be receiving it (behind a
            // seed's queue): only after repeated refusals is it out of reach.
            let peers = self.peers.values().any(|q| q.kind == PeerKind::Peer);
            !peers || c.sent_elsewhere >= LAST_RESORT_AFTER
        };
        self.actions.push_back(Action::Request {
            peer,
            chunk,
            last_resort,
        });
    }

    /// Fills every pipeline: peers first (in random order), then seeds.
    fn schedule(&mut self, now: Duration) {
        self.last_now = self.last_now.max(now);
        if self.stats.have_chunks as usize == self.lens.len() {
            return;
        }
        let mut order: Vec<PeerIdx> = self.peers.keys().copied().collect();
        order.sort_unstable();
        for i in (1..order.len()).rev() {
            order.swap(i, self.rng.below(i + 1));
        }
        // Seeds last, each side in its shuffled order (a stable partition:
        // what a stable sort by kind gives, without its buffer).
        let (mut order, seeds): (Vec<PeerIdx>, Vec<PeerIdx>) = order
            .into_iter()
            .partition(|id| self.peers[id].kind != PeerKind::Seed);
        order.extend(seeds);
        for peer in order {
            self.schedule_peer(now, peer);
        }
    }

    /// Fills `peer`'s pipeline.
    fn schedule_peer(&mut self, now: Duration, peer: PeerIdx) {
        self.last_now = self.last_now.max(now);
        if self.stats.have_chunks as usize == self.lens.len() {
            return;
        }
        loop {
            let Some(p) = self.peers.get(&peer) else {
                return;
            };
            if p.in_flight.len() >= self.slots(p) {
                return;
            }
            if let Some(chunk) = self.choose(peer) {
                self.request(now, peer, chunk);
                continue;
            }
            if !self.all_requested() {
                return;
            }
            match self.choose_duplicate(peer, now) {
                Some(chunk) => self.request(now, peer, chunk),
                None => return,
            }
        }
    }

    /// Whether every missing chunk has a request out (the endgame condition).
    fn all_requested(&self) -> bool {
        self.open == 0
    }

    /// One request for `chunk` is gone.
    fn unrequest(&mut self, chunk: u32) {
        let c = &mut self.chunks[chunk as usize];
        if c.requested > 1 {
            self.copies -= 1;
        }
        c.requested -= 1;
        if c.requested == 0 {
            self.asked.clear(chunk);
        }
        if c.requested == 0 && !self.have.get(chunk) {
            self.open += 1;
        }
    }
}

#[cfg(test)]
mod tests;
