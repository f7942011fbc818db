//! What a simulation is given and what it answers: the nodes and their
//! links, the players' arrivals and churn, the overlay's bounds, the serving
//! settings real nodes use ([`seed_serve`], [`player_serve`]), the report,
//! and the fluid-model bounds it is measured against.

use shoal_scheduler::{Config, ServeConfig};
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

/// One node's link. Rates in bytes per second.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub up: f64,
    pub down: f64,
}

/// Megabits per second to bytes per second.
pub fn mbit(m: f64) -> f64 {
    m * 1e6 / 8.0
}

/// One player: its link, when it starts, and whether others can dial it.
#[derive(Debug, Clone, Copy)]
pub struct Player {
    pub link: Node,
    pub arrive: Duration,
    /// `false`: behind a NAT (players behind NATs reach each other only by
    /// hole punching).
    pub reachable: bool,
}

impl Player {
    /// A reachable player starting at time zero.
    pub fn at_start(link: Node) -> Player {
        Player {
            link,
            arrive: Duration::ZERO,
            reachable: true,
        }
    }
}

/// How players find each other.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// Members in one tracker answer, seeds included (the tracker's
    /// `max_peers`).
    pub max_peers: usize,
    /// Most connections a player keeps (seeds accept any number).
    pub max_connections: usize,
    /// How often a downloading player with room announces again.
    pub announce_every: Duration,
    /// Chance that a hole punch between two players behind NATs succeeds.
    pub punch_success: f64,
}

impl Overlay {
    /// Everyone connects to everyone (small swarms, like the lab's).
    pub fn full_mesh() -> Overlay {
        Overlay {
            max_peers: usize::MAX / 8,
            max_connections: usize::MAX,
            announce_every: Duration::from_secs(30),
            punch_success: 1.0,
        }
    }
}

/// Players leaving and coming back.
#[derive(Debug, Clone, Default)]
pub struct Churn {
    /// Mean time a downloading player stays before it quits mid-download
    /// (exponentially distributed; `None`: nobody quits).
    pub quit_after: Option<Duration>,
    /// A player that quit comes back after a time drawn uniformly from this
    /// range, and resumes with what it holds.
    pub back_after: (Duration, Duration),
    /// Mean time a player keeps seeding after it completes (exponential;
    /// `None`: it stays to the end).
    pub seed_for: Option<Duration>,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Setup {
    pub chunk_lens: Vec<u32>,
    pub seeds: Vec<Node>,
    pub players: Vec<Player>,
    /// One-way latency between any two nodes.
    pub latency: Duration,
    /// The serving policy's settings on seeds and on players' nodes.
    pub seed_serve: ServeConfig,
    pub peer_serve: ServeConfig,
    pub scheduler: Config,
    pub overlay: Overlay,
    pub churn: Churn,
    /// The share of a link's rate that carries chunk bytes.
    pub efficiency: f64,
    /// Give up after this much virtual time.
    pub max_time: Duration,
    pub rng_seed: u64,
    /// The swarm's origin budget in copies of the payload (`None`: no
    /// budget known, the super-seeding window alone; `f64::INFINITY`:
    /// unlimited). Seeds run the real [`Ledger`]; the tracker's
    /// [`budget_share`] splits it among them at every `heartbeat`.
    pub origin_budget: Option<f64>,
    /// Whether downloaders ask seeds for chunks peers hold too (what the
    /// tracker's `fills` says of a generous budget), until a seed refuses.
    pub seeds_fill: bool,
    pub heartbeat: Duration,
    /// Width of the report's time series.
    pub bin: Duration,
}

impl Setup {
    pub fn payload(&self) -> u64 {
        self.chunk_lens.iter().map(|&l| u64::from(l)).sum()
    }
}

/// Bytes delivered in one bin of virtual time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bin {
    pub from_seeds: f64,
    pub from_peers: f64,
    /// Players that completed in it.
    pub completed: u32,
    /// Players present (downloading or seeding) at its end.
    pub present: u32,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Report {
    pub payload: u64,
    /// When each player first arrived.
    pub arrived: Vec<Duration>,
    /// When each player completed (`None`: it did not).
    pub completion: Vec<Option<Duration>>,
    pub seed_uploaded: u64,
    pub peer_uploaded: u64,
    /// Bytes players could have uploaded while present (rate × time).
    pub peer_upload_capacity: f64,
    /// Bytes delivered that the receiver already had or no longer wanted.
    pub wasted: u64,
    /// Chunks seeds sent again inside their window as last resorts.
    pub last_resorts: u64,
    pub connections: u64,
    pub punches_tried: u64,
    pub punches_failed: u64,
    pub quits: u64,
    pub events: u64,
    /// The virtual time the simulation ended at.
    pub end: Duration,
    pub bin: Duration,
    pub bins: Vec<Bin>,
}

impl Report {
    pub fn all_complete(&self) -> bool {
        self.completion.iter().all(Option::is_some)
    }

    /// The last player's completion time.
    pub fn makespan(&self) -> Option<Duration> {
        self.completion
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    /// Each completed player's time from arrival to completion.
    pub fn download_times(&self) -> Vec<Duration> {
        self.arrived
            .iter()
            .zip(&self.completion)
            .filter_map(|(a, c)| c.map(|c| c.saturating_sub(*a)))
            .collect()
    }

    /// The seeds' upload in copies of the payload.
    pub fn origin_copies(&self) -> f64 {
        self.seed_uploaded as f64 / self.payload.max(1) as f64
    }
}

/// The fluid-model lower bound on the time for every player to finish when
/// all start together: `max(F/u_s, F/d_min, N·F/(u_s + Σu_i))`.
pub fn fluid_bound(setup: &Setup) -> Duration {
    bound_at_egress(setup, 0.0)
}

/// The best any system could do when seeds send `copies` of the payload,
/// all players starting together: the fluid bound and, with seeds sending
/// only `c` copies, `(N − c)·F/Σu_i` for the copies players must make.
pub fn bound_at_egress(setup: &Setup, copies: f64) -> Duration {
    let f = setup.payload() as f64;
    let n = setup.players.len() as f64;
    let u_s: f64 = setup.seeds.iter().map(|s| s.up).sum();
    let d_min = setup
        .players
        .iter()
        .map(|p| p.link.down)
        .fold(f64::INFINITY, f64::min);
    let u_sum: f64 = setup.players.iter().map(|p| p.link.up).sum();
    let mut t = (f / u_s).max(f / d_min).max(n * f / (u_s + u_sum));
    if copies > 0.0 {
        t = t.max((n - copies).max(0.0) * f / u_sum.max(1.0));
    }
    Duration::from_secs_f64(t)
}
