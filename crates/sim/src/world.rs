//! The discrete-event engine: seeds and players with upload and download
//! caps and one-way latency on virtual time, every player running the real
//! [`Download`] and every node the real serving policy, [`Serve`], with the
//! settings real nodes use ([`seed_serve`], [`player_serve`]); seeds keep
//! the real [`Ledger`] and get their share of the origin budget from the
//! tracker's own rule ([`budget_share`]) at every heartbeat.
//!
//! The overlay is the real one's shape: a player arriving (or returning)
//! announces, and the tracker's sampler ([`sample::candidates`], reachable
//! members first) gives it up to `max_peers` members besides the seeds; it
//! connects to those it has room for (`max_connections`, checked on both
//! sides), and announces again while it has room. Two players behind NATs
//! connect only if their hole punch succeeds (`punch_success`). Haves go to
//! a node's neighbours only, so the cost of a chunk is its neighbours, not
//! the swarm.
//!
//! Bandwidth: each transfer gets the smaller of its sender's upload share
//! and its receiver's download share (capacity split equally among that
//! node's transfers), times `efficiency` (the share of a link's rate that
//! carries chunk bytes rather than QUIC and framing). A start or finish
//! changes only the rates at its two ends, so it reschedules only their
//! transfers. Unused share is not redistributed: the model is
//! conservative.

use shoal_api::budget_share;
use shoal_scheduler::{
    Action, Ask, Budget, Download, Ledger, Out, PeerIdx, PeerKind, Refusal, Rng, Serve,
};
use shoal_types::{Bitfield, sample};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

pub use crate::setup::{
    Bin, Churn, Node, Overlay, Player, Report, Setup, bound_at_egress, fluid_bound, mbit,
    player_serve, seed_serve,
};

use crate::event::{Decline, Event, NEVER, Nanos, Queued, Ticket, nanos};

#[derive(Debug)]
struct Flow {
    from: u32,
    to: u32,
    chunk: u32,
    /// Bumped on reuse and at the end: finish events of an earlier use miss.
    version: u32,
    live: bool,
    id: u64,
    remaining: f64,
    rate: f64,
    at: Nanos,
    /// When it finishes at its current rate.
    finish: Nanos,
    /// Its earliest pending finish event. A reschedule that makes it later
    /// pushes nothing: that event, when it comes, pushes the new finish.
    /// So a seed's hundreds of transfers cost no event each time one of
    /// them starts.
    due: Nanos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Downloading,
    Seeding,
    Away,
    Gone,
}

type NodeServe = Serve<u32, u32, u64, Ticket>;

#[derive(Debug)]
struct NodeState {
    link: Node,
    state: State,
    reachable: bool,
    /// Players connected to it (seeds keep no list: they never leave).
    neighbours: Vec<u32>,
    out_flows: Vec<u32>,
    in_flows: Vec<u32>,
    download: Option<Box<Download>>,
    /// What a player that quit holds, for its return.
    kept: Option<Bitfield>,
    serve: Option<NodeServe>,
    ledger: Option<Ledger>,
    timer: Nanos,
    /// Bumped whenever it leaves: events of an earlier stay are dropped.
    epoch: u32,
    /// Present since (for the upload capacity).
    since: Nanos,
    /// Its place in `members` (`u32::MAX`: not a member).
    member_at: u32,
}

struct World {
    setup: Setup,
    lens: Arc<[u32]>,
    full: Bitfield,
    payload: u64,
    n_seeds: usize,
    nodes: Vec<NodeState>,
    /// Players present, as the tracker's member list.
    members: Vec<u32>,
    flows: Vec<Flow>,
    free_flows: Vec<u32>,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    now: Nanos,
    rng: Rng,
    next_id: u64,
    done: usize,
    report: Report,
    seed_sent: f64,
    peer_sent: f64,
    wasted: f64,
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

    fn now_d(&self) -> Duration {
        Duration::from_nanos(self.now)
    }

    fn lat(&self) -> Nanos {
        nanos(self.setup.latency)
    }

    fn is_seed(&self, node: u32) -> bool {
        (node as usize) < self.n_seeds
    }

    fn bin_of(&mut self, at: Nanos) -> &mut Bin {
        let i = (at / nanos(self.setup.bin).max(1)) as usize;
        if self.report.bins.len() <= i {
            self.report.bins.resize(i + 1, Bin::default());
        }
        &mut self.report.bins[i]
    }

    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An exponentially distributed time with mean `mean`.
    fn exp(&mut self, mean: Duration) -> Nanos {
        let u = self.uniform().max(1e-12);
        (-u.ln() * mean.as_nanos() as f64) as Nanos
    }

    // --- transfers -------------------------------------------------------

    /// Brings `flow`'s progress up to now.
    fn progress(&mut self, flow: u32) {
        let now = self.now;
        let f = &mut self.flows[flow as usize];
        let dt = now.saturating_sub(f.at) as f64 / 1e9;
        let sent = (f.rate * dt).min(f.remaining);
        f.remaining -= sent;
        f.at = now;
        let from_seed = (f.from as usize) < self.n_seeds;
        if from_seed {
            self.seed_sent += sent;
        } else {
            self.peer_sent += sent;
        }
    }

    fn rate(&self, f: &Flow) -> f64 {
        let a = &self.nodes[f.from as usize];
        let b = &self.nodes[f.to as usize];
        let up = a.link.up / a.out_flows.len().max(1) as f64;
        let down = b.link.down / b.in_flows.len().max(1) as f64;
        up.min(down) * self.setup.efficiency
    }

    /// New rates for the transfers out of `from` and into `to` (the only
    /// ones whose shares a start or finish between them changes).
    fn reschedule(&mut self, from: u32, to: u32) {
        let mut touched: Vec<u32> = self.nodes[from as usize].out_flows.clone();
        touched.extend(
            self.nodes[to as usize]
                .in_flows
                .iter()
                .filter(|&&f| self.flows[f as usize].from != from),
        );
        for &f in &touched {
            self.progress(f);
        }
        for f in touched {
            let rate = self.rate(&self.flows[f as usize]);
            let flow = &mut self.flows[f as usize];
            flow.rate = rate;
            flow.finish = self.now + ((flow.remaining / rate.max(1e-9)) * 1e9).ceil() as Nanos;
            if flow.finish < flow.due {
                flow.due = flow.finish;
                let (at, version) = (flow.finish, flow.version);
                self.push(at, Event::FlowDone { flow: f, version });
            }
        }
    }

    fn start_flow(&mut self, from: u32, to: u32, chunk: u32, id: u64) {
        let remaining = f64::from(self.lens[chunk as usize]);
        let flow = Flow {
            from,
            to,
            chunk,
            version: 0,
            live: true,
            id,
            remaining,
            rate: 0.0,
            at: self.now,
            finish: NEVER,
            due: NEVER,
        };
        let idx = match self.free_flows.pop() {
            Some(i) => {
                let version = self.flows[i as usize].version.wrapping_add(1);
                self.flows[i as usize] = Flow { version, ..flow };
                i
            }
            None => {
                self.flows.push(flow);
                (self.flows.len() - 1) as u32
            }
        };
        // Bring the others up to date before the new one changes rates.
        let others: Vec<u32> = self.nodes[from as usize]
            .out_flows
            .iter()
            .chain(&self.nodes[to as usize].in_flows)
            .copied()
            .collect();
        for f in others {
            self.progress(f);
        }
        self.nodes[from as usize].out_flows.push(idx);
        self.nodes[to as usize].in_flows.push(idx);
        self.reschedule(from, to);
    }

    /// Removes transfer `flow` (finished or cut off); returns its ends.
    fn end_flow(&mut self, flow: u32) -> (u32, u32, u32, u64) {
        self.progress(flow);
        let f = &mut self.flows[flow as usize];
        f.live = false;
        f.version = f.version.wrapping_add(1);
        let (from, to, chunk, id) = (f.from, f.to, f.chunk, f.id);
        let rest = f.remaining.max(0.0);
        if self.is_seed(from) {
            self.seed_sent += rest;
        } else {
            self.peer_sent += rest;
        }
        self.free_flows.push(flow);
        let outs = &mut self.nodes[from as usize].out_flows;
        if let Some(p) = outs.iter().position(|&x| x == flow) {
            outs.swap_remove(p);
        }
        let ins = &mut self.nodes[to as usize].in_flows;
        if let Some(p) = ins.iter().position(|&x| x == flow) {
            ins.swap_remove(p);
        }
        self.reschedule(from, to);
        (from, to, chunk, id)
    }

    /// What `node` has promised its uplink: the bytes left in its
    /// transfers at its upload rate.
    fn backlog(&self, node: u32) -> Duration {
        let n = &self.nodes[node as usize];
        let left: f64 = n
            .out_flows
            .iter()
            .map(|&f| {
                let f = &self.flows[f as usize];
                let dt = self.now.saturating_sub(f.at) as f64 / 1e9;
                (f.remaining - f.rate * dt).max(0.0)
            })
            .sum();
        Duration::from_secs_f64(left / n.link.up.max(1.0))
    }

    /// `node`'s transfer `id` is done (delivered or cut off): its slot and
    /// weight are free, and requests waiting for them may start.
    fn transfer_done(&mut self, node: u32, id: u64) {
        let now = self.now_d();
        let backlog = self.backlog(node);
        let Some(serve) = self.nodes[node as usize].serve.as_mut() else {
            return;
        };
        serve.finished(&id);
        let outs = serve.sent(now, backlog, |_: &u32, _: &u32| true);
        self.carry_out(node, outs);
    }

    /// Carries out `node`'s serving decisions: answers become transfers,
    /// refusals travel back to the requester.
    fn carry_out(&mut self, node: u32, outs: Vec<Out<Ticket>>) {
        let lat = self.lat();
        for out in outs {
            match out {
                Out::Answer((to, chunk, id)) => {
                    if let Some(l) = self.nodes[node as usize].ledger.as_mut() {
                        l.sent(chunk);
                    }
                    let live = matches!(
                        self.nodes[to as usize].state,
                        State::Downloading | State::Seeding
                    );
                    if live {
                        self.start_flow(node, to, chunk, id);
                    } else {
                        // The requester left while its request waited.
                        self.transfer_done(node, id);
                    }
                }
                Out::Refuse((to, chunk, _), why) => {
                    let why = match why {
                        Refusal::SentElsewhere => Decline::SentElsewhere,
                        Refusal::Busy | Refusal::OverRelay | Refusal::Unauthorized => Decline::Busy,
                    };
                    let epoch = self.nodes[to as usize].epoch;
                    self.push(
                        self.now + lat,
                        Event::Refused {
                            to,
                            from: node,
                            chunk,
                            why,
                            epoch,
                        },
                    );
                }
                Out::LastResort => self.report.last_resorts += 1,
            }
        }
    }

    // --- players ---------------------------------------------------------

    /// Carries out a player's scheduler actions and re-arms its timer.
    fn drain(&mut self, node: u32) {
        self.drain_then(node, true);
    }

    /// [`World::drain`]; `retime: false` skips asking for the next timeout
    /// when no action came out. For a have, that is when its deadlines did
    /// not change: `Download::handle_have` only adds requests, which are
    /// actions.
    fn drain_then(&mut self, node: u32, retime: bool) {
        let now = self.now;
        let lat = self.lat();
        let mut completed = false;
        let mut acted = false;
        let epoch = self.nodes[node as usize].epoch;
        while let Some(action) = self.nodes[node as usize]
            .download
            .as_mut()
            .and_then(|d| d.poll())
        {
            acted = true;
            match action {
                Action::Request {
                    peer,
                    chunk,
                    last_resort,
                } => self.push(
                    now + lat,
                    Event::Request {
                        from: node,
                        to: peer.0,
                        chunk,
                        last_resort,
                        epoch,
                    },
                ),
                // A request cannot be taken back on the wire: real nodes
                // let the answer arrive and drop it, and so does this.
                Action::Cancel { .. } | Action::Ban { .. } => {}
                Action::Complete => completed = true,
            }
        }
        if completed {
            self.complete(node);
            return;
        }
        if !retime && !acted {
            return;
        }
        let n = &mut self.nodes[node as usize];
        if let Some(deadline) = n.download.as_ref().and_then(|d| d.poll_timeout()) {
            let at = nanos(deadline).max(now);
            if at < n.timer {
                n.timer = at;
                self.push(at, Event::Timer { node, at });
            }
        }
    }

    fn complete(&mut self, node: u32) {
        let i = node as usize - self.n_seeds;
        if self.report.completion[i].is_none() {
            self.report.completion[i] = Some(self.now_d());
            self.done += 1;
            self.bin_of(self.now).completed += 1;
        }
        let n = &mut self.nodes[node as usize];
        n.download = None;
        n.state = State::Seeding;
        n.timer = NEVER;
        let epoch = n.epoch;
        if let Some(mean) = self.setup.churn.seed_for {
            let at = self.now + self.exp(mean);
            self.push(at, Event::Depart { node, epoch });
        }
    }

    fn have_of(&self, node: u32) -> Option<&Bitfield> {
        let n = &self.nodes[node as usize];
        match n.state {
            State::Downloading => n.download.as_ref().map(|d| d.have()),
            State::Seeding => Some(&self.full),
            _ => None,
        }
    }

    /// Whether the tracker would tell a player that seeds fill in now.
    fn seeds_fill(&self) -> bool {
        if !self.setup.seeds_fill {
            return false;
        }
        let budget = self
            .setup
            .origin_budget
            .filter(|c| c.is_finite())
            .map(|c| (c * self.payload as f64) as u64);
        shoal_api::seeds_fill(budget, self.seed_sent as u64, self.payload)
    }

    fn connected(&self, a: u32, b: u32) -> bool {
        self.nodes[a as usize].neighbours.contains(&b)
    }

    /// `a` (downloading) connects to `b`, if both have room and, both
    /// behind NATs, their punch succeeds.
    fn connect(&mut self, a: u32, b: u32) {
        if a == b || self.connected(a, b) {
            return;
        }
        let cap = self.setup.overlay.max_connections;
        let b_seed = self.is_seed(b);
        if !b_seed && self.nodes[b as usize].neighbours.len() >= cap {
            return;
        }
        if !b_seed && !self.nodes[a as usize].reachable && !self.nodes[b as usize].reachable {
            self.report.punches_tried += 1;
            if self.uniform() >= self.setup.overlay.punch_success {
                self.report.punches_failed += 1;
                return;
            }
        }
        self.report.connections += 1;
        let now = self.now_d();
        self.nodes[a as usize].neighbours.push(b);
        let kind = if b_seed {
            PeerKind::Seed
        } else {
            self.nodes[b as usize].neighbours.push(a);
            PeerKind::Peer
        };
        let b_has = (!b_seed).then(|| self.have_of(b).cloned()).flatten();
        let fills = b_seed && self.seeds_fill();
        if let Some(d) = self.nodes[a as usize].download.as_mut() {
            d.handle_peer(now, PeerIdx(b), kind);
            if let Some(has) = &b_has {
                d.handle_bitfield(now, PeerIdx(b), has);
            }
            if fills {
                d.handle_seed_fills(now, PeerIdx(b));
            }
        }
        if !b_seed {
            let a_has = self.have_of(a).cloned();
            if let Some(d) = self.nodes[b as usize].download.as_mut() {
                d.handle_peer(now, PeerIdx(a), PeerKind::Peer);
                if let Some(has) = &a_has {
                    d.handle_bitfield(now, PeerIdx(a), has);
                }
            }
            self.drain(b);
        }
        self.drain(a);
    }

    /// The tracker's answer to `node`'s announce: the seeds, then up to
    /// `max_peers` minus the seeds of the members its sampler picks,
    /// reachable ones first.
    fn announce(&mut self, node: u32) {
        let max_peers = self.setup.overlay.max_peers;
        let max = max_peers.saturating_sub(self.n_seeds).max(1);
        let cap = self.setup.overlay.max_connections;
        for s in 0..self.n_seeds as u32 {
            self.connect(node, s);
        }
        let members = &self.members;
        let mut picked = sample::candidates(members.len(), max_peers, &mut self.rng, |i| {
            members[i] != node
        });
        picked.sort_by_key(|&i| !self.nodes[self.members[i] as usize].reachable);
        picked.truncate(max);
        for i in picked {
            if self.nodes[node as usize].neighbours.len() >= cap
                || self.nodes[node as usize].state != State::Downloading
            {
                break;
            }
            let other = self.members[i];
            self.connect(node, other);
        }
    }

    fn join_members(&mut self, node: u32) {
        self.nodes[node as usize].member_at = self.members.len() as u32;
        self.members.push(node);
    }

    fn leave_members(&mut self, node: u32) {
        let at = self.nodes[node as usize].member_at;
        if at == u32::MAX {
            return;
        }
        self.members.swap_remove(at as usize);
        if let Some(&moved) = self.members.get(at as usize) {
            self.nodes[moved as usize].member_at = at;
        }
        self.nodes[node as usize].member_at = u32::MAX;
    }

    /// A player starts (or resumes with `have`).
    fn start(&mut self, node: u32, have: Bitfield) {
        let seed = self.setup.rng_seed ^ (u64::from(node) * 7919) ^ self.seq;
        let download = Download::new(
            self.setup.scheduler.clone(),
            Arc::clone(&self.lens),
            have,
            seed,
        );
        let n = &mut self.nodes[node as usize];
        n.download = Some(Box::new(download));
        n.serve = Some(Serve::new(self.setup.peer_serve.clone()));
        n.state = State::Downloading;
        n.since = self.now;
        n.timer = NEVER;
        let epoch = n.epoch;
        self.join_members(node);
        self.announce(node);
        if let Some(mean) = self.setup.churn.quit_after {
            let at = self.now + self.exp(mean);
            self.push(at, Event::Quit { node, epoch });
        }
        let every = nanos(self.setup.overlay.announce_every);
        self.push(
            self.now.saturating_add(every),
            Event::Announce { node, epoch },
        );
        self.drain(node);
    }

    /// A player leaves: its connections close (neighbours' requests to it
    /// go elsewhere), its transfers are cut.
    fn leave(&mut self, node: u32, next: State) {
        let now_d = self.now_d();
        let i = node as usize;
        self.report.peer_upload_capacity +=
            self.nodes[i].link.up * self.now.saturating_sub(self.nodes[i].since) as f64 / 1e9;
        self.nodes[i].kept = match next {
            State::Away => self.have_of(node).cloned(),
            _ => None,
        };
        self.leave_members(node);
        let n = &mut self.nodes[i];
        n.state = next;
        n.epoch = n.epoch.wrapping_add(1);
        n.download = None;
        n.serve = None;
        n.timer = NEVER;
        for f in self.nodes[i].in_flows.clone() {
            let (from, _, _, id) = self.end_flow(f);
            self.transfer_done(from, id);
        }
        for f in self.nodes[i].out_flows.clone() {
            self.end_flow(f);
        }
        for other in std::mem::take(&mut self.nodes[i].neighbours) {
            if let Some(s) = self.nodes[other as usize].serve.as_mut() {
                s.forget(&node);
            }
            if self.is_seed(other) {
                continue;
            }
            let o = &mut self.nodes[other as usize];
            if let Some(p) = o.neighbours.iter().position(|&x| x == node) {
                o.neighbours.swap_remove(p);
            }
            if let Some(d) = o.download.as_mut() {
                d.handle_disconnect(now_d, PeerIdx(node));
                self.drain(other);
            }
        }
    }

    fn epoch_is(&self, node: u32, epoch: u32) -> bool {
        self.nodes[node as usize].epoch == epoch
    }

    fn seeds_heartbeat(&mut self) {
        let Some(copies) = self.setup.origin_budget else {
            return;
        };
        let budget = copies
            .is_finite()
            .then_some((copies * self.payload as f64) as u64);
        let sent_by_all: u64 = (0..self.n_seeds)
            .filter_map(|s| self.nodes[s].ledger.as_ref())
            .map(Ledger::total)
            .sum();
        let seeds = self.n_seeds;
        for s in 0..seeds {
            if let Some(l) = self.nodes[s].ledger.as_mut() {
                let own = l.total();
                l.allow(budget_share(budget, sent_by_all, own, seeds));
            }
        }
    }

    fn handle(&mut self, e: Event) {
        let now_d = self.now_d();
        let lat = self.lat();
        match e {
            Event::Arrive { node } => {
                let have = Bitfield::new(self.lens.len() as u32);
                self.start(node, have);
            }
            Event::Back { node } => {
                if let Some(have) = self.nodes[node as usize].kept.take() {
                    self.start(node, have);
                }
            }
            Event::Announce { node, epoch } => {
                if self.epoch_is(node, epoch)
                    && self.nodes[node as usize].state == State::Downloading
                {
                    if self.nodes[node as usize].neighbours.len()
                        < self.setup.overlay.max_connections
                    {
                        self.announce(node);
                    }
                    let at = self
                        .now
                        .saturating_add(nanos(self.setup.overlay.announce_every));
                    self.push(at, Event::Announce { node, epoch });
                }
            }
            Event::Quit { node, epoch } => {
                if self.epoch_is(node, epoch)
                    && self.nodes[node as usize].state == State::Downloading
                {
                    self.report.quits += 1;
                    self.leave(node, State::Away);
                    let (lo, hi) = self.setup.churn.back_after;
                    let span = hi.saturating_sub(lo).as_nanos() as f64;
                    let at = self.now + nanos(lo) + (self.uniform() * span) as Nanos;
                    self.push(at, Event::Back { node });
                }
            }
            Event::Depart { node, epoch } => {
                if self.epoch_is(node, epoch) && self.nodes[node as usize].state == State::Seeding {
                    self.leave(node, State::Gone);
                }
            }
            Event::Heartbeat => {
                self.seeds_heartbeat();
                let at = self.now + nanos(self.setup.heartbeat).max(1);
                self.push(at, Event::Heartbeat);
            }
            Event::Request {
                from,
                to,
                chunk,
                last_resort,
                epoch,
            } => {
                if !self.epoch_is(from, epoch) {
                    return;
                }
                // The server knows what the requester holds from its haves.
                let held = self.nodes[from as usize]
                    .download
                    .as_ref()
                    .map_or(0, |d| d.have().count());
                let budget = self.nodes[to as usize]
                    .ledger
                    .as_ref()
                    .map_or(Budget::Window, |l| l.budget(chunk));
                let ask = Ask {
                    from,
                    chunk,
                    len: Some(self.lens[chunk as usize]),
                    last_resort,
                    over_relay: false,
                    held,
                    budget,
                };
                self.next_id += 1;
                let id = self.next_id;
                let backlog = self.backlog(to);
                let Some(serve) = self.nodes[to as usize].serve.as_mut() else {
                    return; // it left: the requester heard the disconnect
                };
                let outs = serve.request(
                    now_d,
                    ask,
                    id,
                    (from, chunk, id),
                    backlog,
                    |_: &u32, _: &u32| true,
                );
                self.carry_out(to, outs);
            }
            Event::Refused {
                to,
                from,
                chunk,
                why,
                epoch,
            } => {
                if !self.epoch_is(to, epoch) {
                    return;
                }
                if let Some(d) = self.nodes[to as usize].download.as_mut() {
                    match why {
                        Decline::Busy => d.handle_busy(now_d, PeerIdx(from), chunk),
                        Decline::SentElsewhere => {
                            d.handle_sent_elsewhere(now_d, PeerIdx(from), chunk)
                        }
                    }
                    self.drain(to);
                }
            }
            Event::FlowDone { flow, version } => {
                let f = &mut self.flows[flow as usize];
                if !f.live || f.version != version || f.due != self.now {
                    return;
                }
                if f.finish > self.now {
                    // Slowed since this was pushed: finish later.
                    f.due = f.finish;
                    let at = f.finish;
                    self.push(at, Event::FlowDone { flow, version });
                    return;
                }
                let (from, to, chunk, id) = self.end_flow(flow);
                self.transfer_done(from, id);
                let len = f64::from(self.lens[chunk as usize]);
                let seed = self.is_seed(from);
                let bin = self.bin_of(self.now);
                if seed {
                    bin.from_seeds += len;
                } else {
                    bin.from_peers += len;
                }
                let epoch = self.nodes[to as usize].epoch;
                self.push(
                    self.now + lat,
                    Event::Delivered {
                        to,
                        from,
                        chunk,
                        epoch,
                    },
                );
            }
            Event::Delivered {
                to,
                from,
                chunk,
                epoch,
            } => {
                let len = f64::from(self.lens[chunk as usize]);
                let current = self.epoch_is(to, epoch);
                let Some(d) = self.nodes[to as usize]
                    .download
                    .as_mut()
                    .filter(|_| current)
                else {
                    self.wasted += len;
                    return;
                };
                let had = d.have().get(chunk);
                d.handle_chunk(now_d, PeerIdx(from), chunk, true);
                let has = d.have().get(chunk);
                if had || !has {
                    self.wasted += len;
                }
                if !had && has {
                    self.push(
                        self.now + lat,
                        Event::Haves {
                            from: to,
                            chunk,
                            epoch,
                        },
                    );
                }
                self.drain(to);
            }
            Event::Haves { from, chunk, epoch } => {
                if !self.epoch_is(from, epoch) {
                    return;
                }
                let neighbours = std::mem::take(&mut self.nodes[from as usize].neighbours);
                for &to in &neighbours {
                    if let Some(d) = self.nodes[to as usize].download.as_mut()
                        && !d.is_complete()
                    {
                        d.handle_have(now_d, PeerIdx(from), chunk);
                        self.drain_then(to, false);
                    }
                }
                // Draining cannot change `from`'s neighbours (only arrivals
                // and departures do), so the list goes back as it was.
                self.nodes[from as usize].neighbours = neighbours;
            }
            Event::Timer { node, at } => {
                let n = &mut self.nodes[node as usize];
                if n.timer == at {
                    n.timer = NEVER;
                    if let Some(d) = n.download.as_mut() {
                        d.handle_timeout(now_d);
                    }
                    self.drain(node);
                }
            }
        }
    }
}

/// Runs the simulation to completion (or `max_time`). `progress` is called
/// about once per virtual minute with the time and players completed.
pub fn run_with(setup: Setup, mut progress: impl FnMut(Duration, usize, usize)) -> Report {
    let n_seeds = setup.seeds.len();
    let n_players = setup.players.len();
    let lens: Arc<[u32]> = setup.chunk_lens.clone().into();
    let payload = setup.payload();
    let node = |link: Node, reachable: bool| NodeState {
        link,
        state: State::Waiting,
        reachable,
        neighbours: Vec::new(),
        out_flows: Vec::new(),
        in_flows: Vec::new(),
        download: None,
        kept: None,
        serve: None,
        ledger: None,
        timer: NEVER,
        epoch: 0,
        since: 0,
        member_at: u32::MAX,
    };
    let mut nodes: Vec<NodeState> = Vec::with_capacity(n_seeds + n_players);
    for s in &setup.seeds {
        let mut n = node(*s, true);
        n.state = State::Seeding;
        n.serve = Some(Serve::new(setup.seed_serve.clone()));
        n.ledger = setup
            .origin_budget
            .map(|_| Ledger::new(setup.chunk_lens.clone()));
        nodes.push(n);
    }
    for p in &setup.players {
        nodes.push(node(p.link, p.reachable));
    }
    let mut w = World {
        full: Bitfield::full(lens.len() as u32),
        lens,
        payload,
        n_seeds,
        nodes,
        members: Vec::new(),
        flows: Vec::new(),
        free_flows: Vec::new(),
        queue: BinaryHeap::new(),
        seq: 0,
        now: 0,
        rng: Rng::new(setup.rng_seed),
        next_id: 0,
        done: 0,
        report: Report {
            payload,
            arrived: setup.players.iter().map(|p| p.arrive).collect(),
            completion: vec![None; n_players],
            seed_uploaded: 0,
            peer_uploaded: 0,
            peer_upload_capacity: 0.0,
            wasted: 0,
            last_resorts: 0,
            connections: 0,
            punches_tried: 0,
            punches_failed: 0,
            quits: 0,
            events: 0,
            end: Duration::ZERO,
            bin: setup.bin,
            bins: Vec::new(),
        },
        seed_sent: 0.0,
        peer_sent: 0.0,
        wasted: 0.0,
        setup,
    };
    if w.setup.origin_budget.is_some() {
        w.seeds_heartbeat();
        w.push(nanos(w.setup.heartbeat), Event::Heartbeat);
    }
    for (i, p) in w.setup.players.clone().iter().enumerate() {
        w.push(
            nanos(p.arrive),
            Event::Arrive {
                node: (n_seeds + i) as u32,
            },
        );
    }
    let max = nanos(w.setup.max_time);
    let minute = 60_000_000_000;
    let mut next_progress = minute;
    let mut present_bin = 0usize;
    while let Some(Reverse(q)) = w.queue.pop() {
        if q.at > max {
            break;
        }
        w.now = q.at;
        w.report.events += 1;
        w.handle(q.event);
        if w.now >= next_progress {
            progress(w.now_d(), w.done, w.members.len());
            next_progress = w.now / minute * minute + minute;
        }
        let bin = (w.now / nanos(w.setup.bin).max(1)) as usize;
        while present_bin < bin {
            let present = w.members.len() as u32;
            w.bin_of(nanos(w.setup.bin) * present_bin as u64).present = present;
            present_bin += 1;
        }
        if w.done == n_players {
            break;
        }
    }
    let present = w.members.len() as u32;
    w.bin_of(w.now).present = present;
    for n in &w.nodes[n_seeds..] {
        if matches!(n.state, State::Downloading | State::Seeding) {
            w.report.peer_upload_capacity += n.link.up * w.now.saturating_sub(n.since) as f64 / 1e9;
        }
    }
    // Transfers still running at the end: count what they sent so far.
    for f in 0..w.flows.len() as u32 {
        if w.flows[f as usize].live {
            w.progress(f);
        }
    }
    w.report.seed_uploaded = w.seed_sent as u64;
    w.report.peer_uploaded = w.peer_sent as u64;
    w.report.wasted = w.wasted as u64;
    w.report.end = w.now_d();
    w.report
}

/// Runs the simulation to completion (or `max_time`).
pub fn run(setup: Setup) -> Report {
    run_with(setup, |_, _, _| {})
}
