//! A discrete-event swarm simulator on virtual time: seeds and peers with
//! upload and download caps and one-way latency, each peer running the real
//! [`Download`] and every node the real serving policy, [`Serve`], with the
//! settings real nodes use ([`seed_serve`], [`player_serve`]). A node's
//! backlog (what `Serve` weighs against `max_backlog`) is the bytes left in
//! its transfers at its upload rate, as a real node's upload cap sees it.
//!
//! Bandwidth model: each active transfer gets the smaller of its sender's
//! upload share and its receiver's download share (capacity split equally
//! among that node's active transfers). Unused share is not redistributed,
//! so the model is conservative: a real link does at least as well.

use crate::{
    Action, Ask, Budget, Config, Download, Ledger, Out, PeerIdx, PeerKind, Refusal, Serve,
    ServeConfig,
};
use shoal_types::Bitfield;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

/// A seed's serving settings as `shoal-seed` runs them: super-seeding
/// within `window`, answers at once or `Busy` (no queue), at most
/// `max_uploads` chunk answers in progress (the seed's default is 16),
/// behind an upload cap (the seed caps at its capacity).
pub fn seed_serve(window: Option<Duration>, max_uploads: usize) -> ServeConfig {
    ServeConfig {
        super_seed: window,
        chunks_over_relay: true,
        capped: true,
        queue: 0,
        slots: max_uploads,
        max_uploads,
        max_backlog: Duration::from_secs(2),
    }
}

/// A capped player's serving settings as the launcher runs them: `slots`
/// answers in progress (4), `queue` more waiting neediest first (8).
pub fn player_serve(slots: usize, queue: usize) -> ServeConfig {
    ServeConfig {
        super_seed: None,
        chunks_over_relay: true,
        capped: true,
        queue,
        slots,
        max_uploads: 16,
        max_backlog: Duration::from_secs(2),
    }
}

/// Why a request was refused, as the requester hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decline {
    Busy,
    SentElsewhere,
}

/// A request as the serving node holds it: who asked, for what, and the
/// transfer's id.
type Ticket = (usize, u32, u64);

/// One simulated node. Rates in bytes per second.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub up: f64,
    pub down: f64,
}

/// Megabits per second to bytes per second.
pub fn mbit(m: f64) -> f64 {
    m * 1e6 / 8.0
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Setup {
    pub chunk_lens: Vec<u32>,
    pub seeds: Vec<Node>,
    pub peers: Vec<Node>,
    /// One-way latency between any two nodes.
    pub latency: Duration,
    /// The serving policy's settings on seeds and on players' nodes.
    pub seed_serve: ServeConfig,
    pub peer_serve: ServeConfig,
    pub scheduler: Config,
    /// Give up after this much virtual time.
    pub max_time: Duration,
    pub rng_seed: u64,
    /// The swarm's origin budget in copies of the payload, shared evenly
    /// between the seeds (`None`: no budget known, the super-seeding window
    /// alone; `f64::INFINITY`: unlimited). Seeds run the real [`Ledger`].
    pub origin_budget: Option<f64>,
    /// Whether downloaders ask seeds for chunks peers hold too (what the
    /// tracker's `fills` says of a generous budget), until a seed refuses.
    pub seeds_fill: bool,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Report {
    pub payload: u64,
    /// Completion time of each peer (`None`: did not finish).
    pub completion: Vec<Option<Duration>>,
    pub seed_uploaded: u64,
    pub peer_uploaded: u64,
    /// Bytes delivered that a peer already had (endgame duplicates).
    pub wasted: u64,
    /// Chunks seeds sent again inside their window as last resorts.
    pub last_resorts: u64,
    pub events: u64,
    /// Bytes peers uploaded in each second of virtual time.
    pub peer_upload_by_second: Vec<f64>,
}

impl Report {
    pub fn all_complete(&self) -> bool {
        self.completion.iter().all(Option::is_some)
    }

    /// The last peer's completion time.
    pub fn makespan(&self) -> Option<Duration> {
        self.completion
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }
}

/// The fluid-model lower bound on the time for every peer to finish:
/// `max(F/u_s, F/d_min, N·F/(u_s + Σu_i))`.
pub fn fluid_bound(setup: &Setup) -> Duration {
    let f: f64 = setup.chunk_lens.iter().map(|&l| f64::from(l)).sum();
    let n = setup.peers.len() as f64;
    let u_s: f64 = setup.seeds.iter().map(|s| s.up).sum();
    let d_min = setup
        .peers
        .iter()
        .map(|p| p.down)
        .fold(f64::INFINITY, f64::min);
    let u_sum: f64 = setup.peers.iter().map(|p| p.up).sum();
    Duration::from_secs_f64((f / u_s).max(f / d_min).max(n * f / (u_s + u_sum)))
}

type Nanos = u64;

fn nanos(d: Duration) -> Nanos {
    d.as_nanos() as u64
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Request {
        from: usize,
        to: usize,
        chunk: u32,
        last_resort: bool,
    },
    Refused {
        to: usize,
        from: usize,
        chunk: u32,
        why: Decline,
    },
    Delivered {
        to: usize,
        from: usize,
        chunk: u32,
    },
    Have {
        to: usize,
        from: usize,
        chunk: u32,
    },
    Timer {
        node: usize,
        at: Nanos,
    },
}

/// A scheduled event, ordered by time then by insertion.
#[derive(Debug)]
struct Queued {
    at: Nanos,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug)]
struct Flow {
    id: u64,
    from: usize,
    to: usize,
    chunk: u32,
    remaining: f64,
    rate: f64,
}

struct World {
    setup: Setup,
    n_seeds: usize,
    nodes: Vec<Node>,
    downloads: Vec<Option<Download>>,
    serves: Vec<Serve<usize, u32, u64, Ticket>>,
    /// Seeds' origin-budget ledgers (`None` for peers, or without a budget).
    ledgers: Vec<Option<Ledger>>,
    next_id: u64,
    /// Chunks seeds sent again inside their window as last resorts.
    last_resorts: u64,
    flows: Vec<Flow>,
    out_count: Vec<usize>,
    uploaded: Vec<f64>,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    /// When `flows` last had their progress brought up to date.
    flows_at: Nanos,
    flows_changed: bool,
    done: usize,
    timers: HashMap<usize, Nanos>,
    now: Nanos,
    completion: Vec<Option<Duration>>,
    wasted: f64,
    processed: u64,
    peer_upload_by_second: Vec<f64>,
}

impl World {
    fn push(&mut self, at: Nanos, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            event,
        }));
    }

    /// Brings every transfer's progress up to `now` at its current rate.
    fn advance_flows(&mut self) {
        let dt = (self.now - self.flows_at) as f64 / 1e9;
        if dt > 0.0 {
            let second = (self.now / 1_000_000_000) as usize;
            if self.peer_upload_by_second.len() <= second {
                self.peer_upload_by_second.resize(second + 1, 0.0);
            }
            for f in &mut self.flows {
                let sent = (f.rate * dt).min(f.remaining);
                f.remaining -= sent;
                self.uploaded[f.from] += sent;
                if f.from >= self.n_seeds {
                    self.peer_upload_by_second[second] += sent;
                }
            }
        }
        self.flows_at = self.now;
    }

    fn latency(&self) -> Nanos {
        nanos(self.setup.latency)
    }

    /// Carries out a peer's scheduler actions and re-arms its timer.
    fn drain(&mut self, node: usize) {
        let now = self.now;
        let lat = self.latency();
        while let Some(action) = self.downloads[node].as_mut().and_then(Download::poll) {
            match action {
                Action::Request {
                    peer,
                    chunk,
                    last_resort,
                } => {
                    self.push(
                        now + lat,
                        Event::Request {
                            from: node,
                            to: peer.0 as usize,
                            chunk,
                            last_resort,
                        },
                    );
                }
                // A request cannot be taken back on the wire: real nodes
                // let the answer arrive and drop it, and so does this.
                Action::Cancel { .. } => {}
                Action::Ban { .. } => {}
                Action::Complete => {
                    let i = node - self.n_seeds;
                    if self.completion[i].is_none() {
                        self.completion[i] = Some(Duration::from_nanos(now));
                        self.done += 1;
                    }
                }
            }
        }
        if let Some(deadline) = self.downloads[node]
            .as_ref()
            .and_then(Download::poll_timeout)
        {
            let at = nanos(deadline);
            if self.timers.get(&node).is_none_or(|&t| at < t) {
                self.timers.insert(node, at);
                self.push(at, Event::Timer { node, at });
            }
        }
    }

    /// What `node` has promised its uplink: the bytes left in its
    /// transfers at its upload rate.
    fn backlog(&self, node: usize) -> Duration {
        let left: f64 = self
            .flows
            .iter()
            .filter(|f| f.from == node)
            .map(|f| f.remaining)
            .sum();
        Duration::from_secs_f64(left / self.nodes[node].up.max(1.0))
    }

    /// Carries out `node`'s serving decisions: answers become transfers,
    /// refusals travel back to the requester.
    fn carry_out(&mut self, node: usize, outs: Vec<Out<Ticket>>) {
        let lat = self.latency();
        for out in outs {
            match out {
                Out::Answer((to, chunk, id)) => {
                    if let Some(l) = self.ledgers.get_mut(node).and_then(Option::as_mut) {
                        l.sent(chunk);
                    }
                    let len = f64::from(self.setup.chunk_lens[chunk as usize]);
                    self.advance_flows();
                    self.flows.push(Flow {
                        id,
                        from: node,
                        to,
                        chunk,
                        remaining: len,
                        rate: 0.0,
                    });
                    self.out_count[node] += 1;
                    self.flows_changed = true;
                }
                Out::Refuse((to, chunk, _), why) => {
                    let why = match why {
                        Refusal::SentElsewhere => Decline::SentElsewhere,
                        Refusal::Busy | Refusal::OverRelay | Refusal::Unauthorized => Decline::Busy,
                    };
                    self.push(
                        self.now + lat,
                        Event::Refused {
                            to,
                            from: node,
                            chunk,
                            why,
                        },
                    );
                }
                Out::LastResort => self.last_resorts += 1,
            }
        }
    }

    /// `node`'s transfer `id` is done (delivered or cut off): its slot and
    /// weight are free, and requests waiting for them may start.
    fn transfer_done(&mut self, node: usize, id: u64) {
        let now = Duration::from_nanos(self.now);
        self.serves[node].finished(&id);
        let backlog = self.backlog(node);
        let outs = self.serves[node].sent(now, backlog, |_: &usize, _: &u32| true);
        self.carry_out(node, outs);
    }

    fn assign_rates(&mut self) {
        let mut n_in = vec![0usize; self.nodes.len()];
        for f in &self.flows {
            n_in[f.to] += 1;
        }
        for f in &mut self.flows {
            let up = self.nodes[f.from].up / self.out_count[f.from].max(1) as f64;
            let down = self.nodes[f.to].down / n_in[f.to].max(1) as f64;
            f.rate = up.min(down);
        }
    }

    fn handle(&mut self, e: Event) {
        let now_d = Duration::from_nanos(self.now);
        let lat = self.latency();
        match e {
            Event::Request {
                from,
                to,
                chunk,
                last_resort,
            } => {
                // The server knows what the requester holds from its haves.
                let held = self.downloads[from]
                    .as_ref()
                    .map_or(0, |d| d.stats().have_chunks);
                let ask = Ask {
                    from,
                    chunk,
                    len: Some(self.setup.chunk_lens[chunk as usize]),
                    last_resort,
                    over_relay: false,
                    held,
                    budget: self
                        .ledgers
                        .get(to)
                        .and_then(Option::as_ref)
                        .map_or(Budget::Window, |l| l.budget(chunk)),
                };
                self.next_id += 1;
                let id = self.next_id;
                let backlog = self.backlog(to);
                let outs = self.serves[to].request(
                    now_d,
                    ask,
                    id,
                    (from, chunk, id),
                    backlog,
                    |_: &usize, _: &u32| true,
                );
                self.carry_out(to, outs);
            }
            Event::Refused {
                to,
                from,
                chunk,
                why,
            } => {
                if let Some(d) = self.downloads[to].as_mut() {
                    match why {
                        Decline::Busy => d.handle_busy(now_d, PeerIdx(from as u32), chunk),
                        Decline::SentElsewhere => {
                            d.handle_sent_elsewhere(now_d, PeerIdx(from as u32), chunk)
                        }
                    }
                }
                self.drain(to);
            }
            Event::Delivered { to, from, chunk } => {
                let Some(d) = self.downloads[to].as_mut() else {
                    return;
                };
                let had = d.have().get(chunk);
                d.handle_chunk(now_d, PeerIdx(from as u32), chunk, true);
                let has = d.have().get(chunk);
                if had {
                    self.wasted += f64::from(self.setup.chunk_lens[chunk as usize]);
                }
                if !had && has {
                    for other in self.n_seeds..self.nodes.len() {
                        if other != to {
                            self.push(
                                self.now + lat,
                                Event::Have {
                                    to: other,
                                    from: to,
                                    chunk,
                                },
                            );
                        }
                    }
                }
                self.drain(to);
            }
            Event::Have { to, from, chunk } => {
                if let Some(d) = self.downloads[to].as_mut()
                    && !d.is_complete()
                {
                    d.handle_have(now_d, PeerIdx(from as u32), chunk);
                    self.drain(to);
                }
            }
            Event::Timer { node, at } => {
                if self.timers.get(&node) == Some(&at) {
                    self.timers.remove(&node);
                    if let Some(d) = self.downloads[node].as_mut() {
                        d.handle_timeout(now_d);
                    }
                    self.drain(node);
                }
            }
        }
    }
}

/// Runs the simulation to completion (or `max_time`).
pub fn run(setup: Setup) -> Report {
    let n_seeds = setup.seeds.len();
    let n_chunks = setup.chunk_lens.len() as u32;
    let nodes: Vec<Node> = setup.seeds.iter().chain(&setup.peers).copied().collect();
    let total = nodes.len();
    let payload: u64 = setup.chunk_lens.iter().map(|&l| u64::from(l)).sum();
    let downloads = (0..total)
        .map(|i| {
            (i >= n_seeds).then(|| {
                Download::new(
                    setup.scheduler.clone(),
                    setup.chunk_lens.clone(),
                    Bitfield::new(n_chunks),
                    setup.rng_seed ^ (i as u64 * 7919),
                )
            })
        })
        .collect();
    let mut w = World {
        n_seeds,
        serves: (0..total)
            .map(|i| {
                Serve::new(if i < n_seeds {
                    setup.seed_serve.clone()
                } else {
                    setup.peer_serve.clone()
                })
            })
            .collect(),
        ledgers: (0..total)
            .map(|i| {
                let copies = setup.origin_budget.filter(|_| i < n_seeds)?;
                let mut l = Ledger::new(setup.chunk_lens.clone());
                let share = copies * payload as f64 / n_seeds as f64;
                l.allow(share.is_finite().then_some(share as u64));
                Some(l)
            })
            .collect(),
        next_id: 0,
        last_resorts: 0,
        out_count: vec![0; total],
        uploaded: vec![0.0; total],
        completion: vec![None; setup.peers.len()],
        nodes,
        downloads,
        flows: Vec::new(),
        queue: BinaryHeap::new(),
        seq: 0,
        flows_at: 0,
        flows_changed: true,
        done: 0,
        timers: HashMap::new(),
        now: 0,
        wasted: 0.0,
        processed: 0,
        peer_upload_by_second: Vec::new(),
        setup,
    };
    // Everyone connects to everyone at time zero.
    for node in n_seeds..total {
        for other in 0..total {
            if other != node {
                let kind = if other < n_seeds {
                    PeerKind::Seed
                } else {
                    PeerKind::Peer
                };
                if let Some(d) = w.downloads[node].as_mut() {
                    d.handle_peer(Duration::ZERO, PeerIdx(other as u32), kind);
                    if kind == PeerKind::Seed && w.setup.seeds_fill {
                        d.handle_seed_fills(Duration::ZERO, PeerIdx(other as u32));
                    }
                }
            }
        }
        w.drain(node);
    }
    let max = nanos(w.setup.max_time);
    let mut next_flow: Option<Nanos> = None;
    loop {
        if w.flows_changed {
            // Rates change only when transfers start or stop.
            w.advance_flows();
            w.assign_rates();
            next_flow = w
                .flows
                .iter()
                .map(|f| w.now + ((f.remaining / f.rate.max(1e-9)) * 1e9).ceil() as Nanos)
                .min();
            w.flows_changed = false;
        }
        let next_event = w.queue.peek().map(|Reverse(q)| q.at);
        let Some(t) = [next_flow, next_event].into_iter().flatten().min() else {
            break;
        };
        if t > max {
            break;
        }
        w.now = t;
        if next_flow.is_some_and(|f| f <= t) {
            w.advance_flows();
            let mut i = 0;
            while i < w.flows.len() {
                if w.flows[i].remaining <= 0.5 {
                    let f = w.flows.swap_remove(i);
                    w.uploaded[f.from] += f.remaining.max(0.0);
                    w.out_count[f.from] -= 1;
                    w.transfer_done(f.from, f.id);
                    let at = w.now + w.latency();
                    w.push(
                        at,
                        Event::Delivered {
                            to: f.to,
                            from: f.from,
                            chunk: f.chunk,
                        },
                    );
                    w.flows_changed = true;
                } else {
                    i += 1;
                }
            }
            // Floating-point stragglers: recompute so the next finish is found.
            w.flows_changed = true;
        }
        while let Some(Reverse(q)) = w.queue.peek() {
            if q.at > w.now {
                break;
            }
            let Some(Reverse(q)) = w.queue.pop() else {
                break;
            };
            w.processed += 1;
            w.handle(q.event);
        }
        if w.done == w.completion.len() {
            break;
        }
    }
    Report {
        payload,
        completion: w.completion,
        seed_uploaded: w.uploaded[..n_seeds].iter().sum::<f64>() as u64,
        peer_uploaded: w.uploaded[n_seeds..].iter().sum::<f64>() as u64,
        wasted: w.wasted as u64,
        last_resorts: w.last_resorts,
        events: w.processed,
        peer_upload_by_second: w.peer_upload_by_second,
    }
}
