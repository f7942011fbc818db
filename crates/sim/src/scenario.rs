//! Scenario files: a launch as a planner describes it (TOML), turned into
//! the population the engine runs. Every field but `players` has a default
//! (see `scenarios/launch.toml` for each one, explained).

use crate::world::{Churn, Node, Overlay, Player, Setup, mbit, player_serve, seed_serve};
use serde::Deserialize;
use shoal_scheduler::{Config, Rng};
use std::time::Duration;

/// The payload size and chunk size most scenarios use: 1 MiB chunks, the
/// manifest's average.
const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub name: String,
    pub players: usize,
    #[serde(default = "default_payload")]
    pub payload_mib: u64,
    #[serde(default = "default_chunk")]
    pub chunk_kib: u32,
    #[serde(default = "default_latency")]
    pub latency_ms: u64,
    #[serde(default = "default_rng")]
    pub rng: u64,
    /// Give up after this much virtual time.
    #[serde(default = "default_max_hours")]
    pub max_hours: f64,
    /// Width of the time series in the CSV.
    #[serde(default = "default_bin")]
    pub bin_secs: f64,
    #[serde(default)]
    pub arrival: Arrival,
    /// The mix of players' links; shares are normalised.
    #[serde(default = "default_links")]
    pub links: Vec<LinkMix>,
    #[serde(default)]
    pub nat: Nat,
    #[serde(default)]
    pub churn: ChurnSpec,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<SeedSpec>,
    #[serde(default)]
    pub swarm: SwarmSpec,
}

/// When players start: the cumulative share arrived by each time (hours),
/// linear in between. `[[0, 1]]`: everyone at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrival {
    pub curve: Vec<(f64, f64)>,
}

impl Default for Arrival {
    fn default() -> Self {
        Arrival {
            curve: vec![(0.0, 1.0)],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkMix {
    pub share: f64,
    pub up_mbit: f64,
    pub down_mbit: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nat {
    /// Share of players behind NATs nobody can dial.
    #[serde(default)]
    pub unreachable: f64,
    /// Chance a punch between two of them succeeds.
    #[serde(default = "one")]
    pub punch_success: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChurnSpec {
    /// Mean minutes a downloading player stays before quitting (absent:
    /// nobody quits mid-download).
    pub quit_after_mins: Option<f64>,
    /// Minutes until a player that quit returns (uniform in the range).
    #[serde(default = "default_back")]
    pub back_after_mins: (f64, f64),
    /// Mean minutes a player keeps seeding after it completes (absent: to
    /// the end).
    pub seed_for_mins: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSpec {
    #[serde(default = "one_usize")]
    pub count: usize,
    pub up_mbit: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmSpec {
    /// Copies of the payload seeds may send in total: a number, or
    /// "unlimited".
    #[serde(default = "default_budget")]
    pub origin_budget: toml::Value,
    /// The tracker's `max_peers` (seeds included).
    #[serde(default = "default_max_peers")]
    pub max_peers: usize,
    /// Most connections a player keeps.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_announce")]
    pub announce_secs: f64,
    /// Share of a link's rate that carries chunk bytes.
    #[serde(default = "one")]
    pub efficiency: f64,
    /// The seeds' super-seeding window (`shoal-seed`'s `super_seed_secs`).
    #[serde(default = "default_window")]
    pub super_seed_secs: f64,
    /// Chunk answers a seed has in progress (`max_uploads`).
    #[serde(default = "default_seed_uploads")]
    pub seed_uploads: usize,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: f64,
}

impl Default for SwarmSpec {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn default_payload() -> u64 {
    1024
}
fn default_chunk() -> u32 {
    1024
}
fn default_latency() -> u64 {
    30
}
fn default_rng() -> u64 {
    1
}
fn default_max_hours() -> f64 {
    72.0
}
fn default_bin() -> f64 {
    60.0
}
fn one() -> f64 {
    1.0
}
fn one_usize() -> usize {
    1
}
fn default_back() -> (f64, f64) {
    (5.0, 60.0)
}
fn default_links() -> Vec<LinkMix> {
    vec![LinkMix {
        share: 1.0,
        up_mbit: 20.0,
        down_mbit: 100.0,
    }]
}
fn default_seeds() -> Vec<SeedSpec> {
    vec![SeedSpec {
        count: 1,
        up_mbit: 100.0,
    }]
}
fn default_budget() -> toml::Value {
    toml::Value::Float(1.05)
}
fn default_max_peers() -> usize {
    50
}
fn default_max_connections() -> usize {
    32
}
fn default_announce() -> f64 {
    30.0
}
fn default_window() -> f64 {
    10.0
}
fn default_seed_uploads() -> usize {
    16
}
fn default_heartbeat() -> f64 {
    10.0
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl Scenario {
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.check()?;
        Ok(s)
    }

    /// Bounds on every field, with the reason in the error.
    fn check(&self) -> Result<(), String> {
        let bad = |what: &str| Err(what.to_string());
        if self.players == 0 || self.players > 10_000_000 {
            return bad("players must be 1..=10000000");
        }
        if self.chunk_kib == 0 || self.chunk_kib > 16 * 1024 {
            return bad("chunk_kib must be 1..=16384");
        }
        if self.payload_mib == 0 || self.payload_mib * MIB < u64::from(self.chunk_kib) * 1024 {
            return bad("payload_mib must hold at least one chunk");
        }
        if self.payload_mib * MIB / (u64::from(self.chunk_kib) * 1024) > 1 << 20 {
            return bad("at most 1048576 chunks");
        }
        if self.max_hours <= 0.0 || self.bin_secs <= 0.0 {
            return bad("max_hours and bin_secs must be positive");
        }
        let c = &self.arrival.curve;
        if c.is_empty()
            || c.windows(2).any(|w| w[1].0 < w[0].0 || w[1].1 < w[0].1)
            || c.iter().any(|p| p.0 < 0.0 || !(0.0..=1.0).contains(&p.1))
            || c.last().is_some_and(|p| (p.1 - 1.0).abs() > 1e-9)
        {
            return bad(
                "arrival.curve: [hours, share] points, both non-decreasing, shares in 0..=1, ending at 1",
            );
        }
        if self.links.is_empty()
            || self
                .links
                .iter()
                .any(|l| l.share < 0.0 || l.up_mbit <= 0.0 || l.down_mbit <= 0.0)
            || self.links.iter().map(|l| l.share).sum::<f64>() <= 0.0
        {
            return bad("links: positive rates and shares");
        }
        if !(0.0..=1.0).contains(&self.nat.unreachable)
            || !(0.0..=1.0).contains(&self.nat.punch_success)
        {
            return bad("nat.unreachable and nat.punch_success are shares in 0..=1");
        }
        if self.seeds.is_empty() || self.seeds.iter().any(|s| s.count == 0 || s.up_mbit <= 0.0) {
            return bad("at least one seed, each with a positive up_mbit");
        }
        let w = &self.swarm;
        if w.max_peers == 0 || w.max_connections == 0 || w.seed_uploads == 0 {
            return bad("swarm.max_peers, max_connections and seed_uploads must be positive");
        }
        if !(w.efficiency > 0.0 && w.efficiency <= 1.0) {
            return bad("swarm.efficiency must be in (0, 1]");
        }
        if w.announce_secs <= 0.0 || w.heartbeat_secs <= 0.0 {
            return bad("swarm.announce_secs and heartbeat_secs must be positive");
        }
        self.origin_budget()?;
        Ok(())
    }

    /// The origin budget in copies (`INFINITY`: unlimited), as the API
    /// bounds it (1 to 1000 copies).
    pub fn origin_budget(&self) -> Result<f64, String> {
        let text = match &self.swarm.origin_budget {
            toml::Value::String(s) => s.clone(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Integer(i) => i.to_string(),
            other => return Err(format!("swarm.origin_budget: {other:?} is not a budget")),
        };
        match shoal_api::OriginBudget::parse(&text)
            .map_err(|e| format!("swarm.origin_budget: {e}"))?
        {
            shoal_api::OriginBudget::Unlimited => Ok(f64::INFINITY),
            shoal_api::OriginBudget::Copies { thousandths } => Ok(f64::from(thousandths) / 1000.0),
        }
    }

    /// When a player whose place in the arrival order is `u` (0..1) starts.
    fn arrival(&self, u: f64) -> Duration {
        let c = &self.arrival.curve;
        let mut prev = (0.0, 0.0);
        for &(h, share) in c {
            if u <= share {
                let span = share - prev.1;
                let t = if span <= 0.0 {
                    h
                } else {
                    prev.0 + (h - prev.0) * (u - prev.1) / span
                };
                return secs(t * 3600.0);
            }
            prev = (h, share);
        }
        secs(prev.0 * 3600.0)
    }

    /// The population: players drawn from the link mix and the NAT share
    /// (reproducibly, from `rng`), arrivals spread along the curve.
    pub fn setup(&self) -> Setup {
        let mut rng = Rng::new(self.rng ^ 0x5ca1ab1e);
        let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let total: f64 = self.links.iter().map(|l| l.share).sum();
        let n = self.players;
        let players = (0..n)
            .map(|i| {
                let mut pick = uniform() * total;
                let mut link = &self.links[0];
                for l in &self.links {
                    link = l;
                    if pick < l.share {
                        break;
                    }
                    pick -= l.share;
                }
                Player {
                    link: Node {
                        up: mbit(link.up_mbit),
                        down: mbit(link.down_mbit),
                    },
                    arrive: self.arrival((i as f64 + 0.5) / n as f64),
                    reachable: uniform() >= self.nat.unreachable,
                }
            })
            .collect();
        let chunk = u64::from(self.chunk_kib) * 1024;
        let payload = self.payload_mib * MIB;
        let mut chunk_lens = vec![chunk as u32; (payload / chunk) as usize];
        if !payload.is_multiple_of(chunk) {
            chunk_lens.push((payload % chunk) as u32);
        }
        let seeds = self
            .seeds
            .iter()
            .flat_map(|s| {
                std::iter::repeat_n(
                    Node {
                        up: mbit(s.up_mbit),
                        down: 0.0,
                    },
                    s.count,
                )
            })
            .collect();
        let w = &self.swarm;
        let churn = &self.churn;
        Setup {
            chunk_lens,
            seeds,
            players,
            latency: Duration::from_millis(self.latency_ms),
            seed_serve: seed_serve(
                (w.super_seed_secs > 0.0).then(|| secs(w.super_seed_secs)),
                w.seed_uploads,
            ),
            peer_serve: player_serve(4, 8),
            scheduler: Config::default(),
            overlay: Overlay {
                max_peers: w.max_peers,
                max_connections: w.max_connections,
                announce_every: secs(w.announce_secs),
                punch_success: self.nat.punch_success,
            },
            churn: Churn {
                quit_after: churn.quit_after_mins.map(|m| secs(m * 60.0)),
                back_after: (
                    secs(churn.back_after_mins.0 * 60.0),
                    secs(churn.back_after_mins.1.max(churn.back_after_mins.0) * 60.0),
                ),
                seed_for: churn.seed_for_mins.map(|m| secs(m * 60.0)),
            },
            efficiency: w.efficiency,
            max_time: secs(self.max_hours * 3600.0),
            rng_seed: self.rng,
            origin_budget: Some(self.origin_budget().unwrap_or(1.05)),
            seeds_fill: true,
            heartbeat: secs(w.heartbeat_secs),
            bin: secs(self.bin_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_scenario_takes_the_defaults() {
        let s = Scenario::parse("players = 10").expect("valid");
        let setup = s.setup();
        assert_eq!(setup.players.len(), 10);
        assert_eq!(setup.chunk_lens.len(), 1024);
        assert_eq!(setup.origin_budget, Some(1.05));
        assert!(setup.players.iter().all(|p| p.arrive == Duration::ZERO));
    }

    #[test]
    fn arrivals_follow_the_curve() {
        let s = Scenario::parse("players = 1000\n[arrival]\ncurve = [[0, 0], [1, 0.8], [48, 1]]")
            .expect("valid");
        let setup = s.setup();
        let within_hour = setup
            .players
            .iter()
            .filter(|p| p.arrive <= Duration::from_secs(3600))
            .count();
        assert_eq!(within_hour, 800);
        assert!(
            setup
                .players
                .iter()
                .all(|p| p.arrive <= secs(48.0 * 3600.0))
        );
    }

    #[test]
    fn bad_scenarios_say_what_is_wrong() {
        for (text, says) in [
            ("players = 0", "players"),
            ("players = 5\nchunk_kib = 0", "chunk_kib"),
            (
                "players = 5\n[arrival]\ncurve = [[0, 0.5]]",
                "arrival.curve",
            ),
            ("players = 5\n[nat]\nunreachable = 2", "nat.unreachable"),
            ("players = 5\n[swarm]\norigin_budget = 0.5", "origin_budget"),
            (
                "players = 5\n[swarm]\norigin_budget = \"lots\"",
                "origin_budget",
            ),
            ("players = 5\nplayerz = 3", "unknown field"),
        ] {
            let e = Scenario::parse(text).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn unlimited_and_numbers_are_budgets() {
        let s = Scenario::parse("players = 5\n[swarm]\norigin_budget = \"unlimited\"").expect("ok");
        assert!(s.origin_budget().expect("ok").is_infinite());
        let s = Scenario::parse("players = 5\n[swarm]\norigin_budget = 2").expect("ok");
        assert_eq!(s.origin_budget(), Ok(2.0));
    }
}
