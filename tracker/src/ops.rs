//! The operators' view: per-swarm and per-seed aggregates, alerts, recent
//! token refusals and an hour of history for the dashboard's charts. The
//! views and alerts are computed by pure functions of the soft state and
//! `now`; [`Ops`] keeps the bounded history the sampler fills.

use crate::swarm::{SeedState, SwarmStats};
pub use shoal_api::{Alert, Overview, Sample, SeedRecord, SeedView, SwarmView};
use shoal_types::Hash;
use std::collections::{HashMap, VecDeque};

/// A seed above this utilisation raises an alert.
pub const HOT_SEED: f64 = 0.85;
/// Samples kept: one hour at one every ten seconds.
pub const HISTORY: usize = 360;
pub const SAMPLE_SECS: u64 = 10;
/// Token refusals remembered for the dashboard.
const MAX_REFUSALS: usize = 10_000;

/// Whether a seed can take more load.
pub fn has_capacity(seed: &SeedState) -> bool {
    seed.utilisation() < 0.98
}

pub fn seed_view(seed: &SeedState, now: u64, timeout: u64) -> SeedView {
    SeedView {
        utilisation: seed.utilisation(),
        stale: seed.stale(now, timeout),
        heartbeat_age_secs: now.saturating_sub(seed.last_heartbeat),
        seed: SeedRecord {
            report: seed.report.clone(),
            account: seed.account.clone(),
            last_heartbeat: seed.last_heartbeat,
        },
    }
}

/// The alerts implied by the views.
pub fn alerts(swarms: &[SwarmView], seeds: &[SeedView]) -> Vec<Alert> {
    let mut out = Vec::new();
    for s in seeds {
        if s.stale {
            out.push(Alert::SeedStale {
                seed: s.seed.report.seed_id.clone(),
                age_secs: s.heartbeat_age_secs,
            });
        } else if s.utilisation > HOT_SEED {
            out.push(Alert::SeedHot {
                seed: s.seed.report.seed_id.clone(),
                utilisation: s.utilisation,
            });
        }
    }
    for w in swarms {
        let waiting = w.stats.peers > w.stats.complete;
        if waiting && w.seeds_with_capacity == 0 {
            out.push(Alert::SwarmWithoutSeedCapacity {
                swarm: w.swarm,
                product: w.product.clone(),
            });
        }
    }
    out
}

/// Bytes still to fetch in a swarm, from members' chunk counts.
pub fn remaining_bytes(stats: &SwarmStats, n_chunks: u64, total_size: u64) -> u64 {
    if n_chunks == 0 {
        return 0;
    }
    let incomplete = (stats.peers - stats.complete) as u64;
    let held_by_incomplete = stats
        .have_chunks
        .saturating_sub(stats.complete as u64 * n_chunks);
    let chunks = (incomplete * n_chunks).saturating_sub(held_by_incomplete);
    (chunks as f64 * total_size as f64 / n_chunks as f64) as u64
}

/// Bounded history and recent refusals.
#[derive(Debug, Default)]
pub struct Ops {
    pub samples: VecDeque<Sample>,
    /// Per swarm: (time, bytes downloaded) for the recent rate.
    rates: HashMap<Hash, VecDeque<(u64, u64)>>,
    refusals: VecDeque<(u64, &'static str)>,
}

impl Ops {
    /// Records one sample of every swarm and seed.
    pub fn sample(&mut self, now: u64, swarms: &[SwarmView], seeds: &[SeedView]) {
        let (down, from_seeds) = swarms.iter().fold((0u64, 0u64), |(d, s), w| {
            (d + w.stats.downloaded, s + w.stats.downloaded_from_seeds)
        });
        self.samples.push_back(Sample {
            at: now,
            offload: (down > 0).then(|| 1.0 - from_seeds as f64 / down as f64),
            seeds: seeds
                .iter()
                .filter(|s| !s.stale)
                .map(|s| (s.seed.report.seed_id.clone(), s.utilisation))
                .collect(),
        });
        while self.samples.len() > HISTORY {
            self.samples.pop_front();
        }
        self.rates
            .retain(|id, _| swarms.iter().any(|w| w.swarm == *id));
        for w in swarms {
            let r = self.rates.entry(w.swarm).or_default();
            r.push_back((now, w.stats.downloaded));
            while r.len() > 7 {
                r.pop_front();
            }
        }
    }

    /// Bytes per second a swarm downloaded over the last minute.
    pub fn rate(&self, swarm: &Hash) -> Option<f64> {
        let r = self.rates.get(swarm)?;
        let (&(t0, d0), &(t1, d1)) = (r.front()?, r.back()?);
        (t1 > t0).then(|| d1.saturating_sub(d0) as f64 / (t1 - t0) as f64)
    }

    pub fn refused(&mut self, now: u64, reason: &'static str) {
        if self.refusals.len() >= MAX_REFUSALS {
            self.refusals.pop_front();
        }
        self.refusals.push_back((now, reason));
    }

    /// Refusals in the last hour, by reason, most frequent first.
    pub fn recent_refusals(&self, now: u64) -> Vec<(String, u64)> {
        let mut by: HashMap<&str, u64> = HashMap::new();
        for &(at, reason) in &self.refusals {
            if now.saturating_sub(at) <= 3600 {
                *by.entry(reason).or_default() += 1;
            }
        }
        let mut v: Vec<_> = by.into_iter().map(|(r, n)| (r.to_owned(), n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::SeedReport;

    fn seed(id: &str, capacity: u64, egress: u64, last: u64) -> SeedState {
        SeedState {
            report: SeedReport {
                seed_id: id.into(),
                peer_id: String::new(),
                addrs: vec![],
                capacity_bps: capacity,
                egress_bps: egress,
                peers: 0,
                free_disk: 0,
                releases: vec![],
                relay: false,
                sent: vec![],
            },
            account: "acc".into(),
            last_heartbeat: last,
            content: Default::default(),
            sent_before: Default::default(),
        }
    }

    fn swarm(peers: usize, complete: usize, with_capacity: usize) -> SwarmView {
        SwarmView {
            swarm: Hash::of(b"s"),
            product: Some("game".into()),
            channel: None,
            version: None,
            stats: SwarmStats {
                peers,
                complete,
                ..SwarmStats::default()
            },
            seeds: with_capacity,
            seeds_with_capacity: with_capacity,
            bytes_from_peers: 0,
            bytes_from_seeds: 0,
            offload: None,
            eta_secs: None,
            origin_budget: None,
            origin_sent_bytes: 0,
            origin_budget_used: None,
        }
    }

    #[test]
    fn alerts_for_hot_stale_and_starved() {
        let now = 1000;
        let seeds = [
            seed_view(&seed("cool", 100, 50, now), now, 90),
            seed_view(&seed("hot", 100, 90, now), now, 90),
            seed_view(&seed("gone", 100, 99, now - 200), now, 90),
        ];
        let swarms = [swarm(3, 1, 0), swarm(3, 3, 0), swarm(3, 0, 1)];
        let kinds: Vec<_> = alerts(&swarms, &seeds).iter().map(Alert::kind).collect();
        // The stale seed is not also reported hot; a finished swarm needs no seed.
        assert_eq!(
            kinds,
            ["seed_hot", "seed_stale", "swarm_without_seed_capacity"]
        );
    }

    #[test]
    fn remaining_bytes_from_chunk_counts() {
        let stats = SwarmStats {
            peers: 3,
            complete: 1,
            have_chunks: 10 + 4 + 1,
            ..SwarmStats::default()
        };
        // 10 chunks of 100 bytes; incomplete members miss 6 and 9 chunks.
        assert_eq!(remaining_bytes(&stats, 10, 1000), 1500);
    }

    #[test]
    fn rates_and_refusals() {
        let mut ops = Ops::default();
        let mut w = swarm(2, 0, 1);
        for (t, d) in [(0, 0), (10, 1000), (20, 3000)] {
            w.stats.downloaded = d;
            ops.sample(t, std::slice::from_ref(&w), &[]);
        }
        assert_eq!(ops.rate(&w.swarm), Some(150.0));
        ops.refused(10, "not_entitled");
        ops.refused(3000, "embargoed_country");
        ops.refused(3001, "embargoed_country");
        assert_eq!(
            ops.recent_refusals(4000),
            [("embargoed_country".to_owned(), 2)]
        );
    }
}
