//! `/metrics` in Prometheus text format: token decisions by reason,
//! announces, and the per-swarm and per-seed views, read at scrape time.

use crate::State;
use crate::ops::{SeedView, SwarmView};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};

type FGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    outcome: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SwarmLabels {
    swarm: String,
    product: String,
    channel: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeedLabels {
    seed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    kind: String,
}

fn swarm_labels(w: &SwarmView) -> SwarmLabels {
    SwarmLabels {
        swarm: w.swarm.to_string(),
        product: w.product.clone().unwrap_or_default(),
        channel: w.channel.clone().unwrap_or_default(),
        version: w.version.map(|v| v.to_string()).unwrap_or_default(),
    }
}

/// A family of float gauges filled from `items`.
fn gauges<T, L>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    items: &[T],
    labels: impl Fn(&T) -> L,
    value: impl Fn(&T) -> Option<f64>,
) where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, FGauge>::default();
    for item in items {
        if let Some(v) = value(item) {
            family.get_or_create(&labels(item)).set(v);
        }
    }
    registry.register(name, help, family);
}

/// The tracker's metrics, rendered now. Without `detail`, the per-swarm and
/// per-seed families are present but empty (their labels name products,
/// channels, releases and seeds) and only totals have values.
pub async fn render(state: &State, detail: bool) -> Result<String, crate::store::StoreError> {
    let (all_swarms, all_seeds) = state.views().await?;
    let alerts = crate::ops::alerts(&all_swarms, &all_seeds);
    let mut r = Registry::with_prefix("shoal_tracker");
    let total = |name: &str, help: &str, v: usize, r: &mut Registry| {
        let g = Gauge::<i64>::default();
        g.set(v as i64);
        r.register(name, help, g);
    };
    total("swarms", "Swarms with members", all_swarms.len(), &mut r);
    total(
        "members",
        "Members over all swarms",
        all_swarms.iter().map(|w| w.stats.peers).sum(),
        &mut r,
    );
    total("seeds", "Seeds in the registry", all_seeds.len(), &mut r);
    let (swarms, seeds) = if detail {
        (all_swarms, all_seeds)
    } else {
        (Vec::new(), Vec::new())
    };

    let decisions = Family::<Decision, Counter>::default();
    for (&(outcome, reason), &n) in crate::lock(&state.decisions).iter() {
        let outcome = match outcome {
            crate::model::Outcome::Issued => "issued",
            crate::model::Outcome::Refused => "refused",
        };
        decisions
            .get_or_create(&Decision {
                outcome: outcome.into(),
                reason: reason.into(),
            })
            .inc_by(n);
    }
    r.register(
        "token_decisions",
        "Swarm token decisions by outcome and reason",
        decisions,
    );
    if let Some(pg) = state.db.store().as_postgres() {
        let pool = pg.pool_status();
        let in_use = pool.size.saturating_sub(pool.available);
        total(
            "db_pool_connections",
            "PostgreSQL connections open",
            pool.size,
            &mut r,
        );
        total(
            "db_pool_in_use",
            "PostgreSQL connections serving a request",
            in_use,
            &mut r,
        );
        total(
            "db_pool_max",
            "Most PostgreSQL connections this replica opens",
            pool.max,
            &mut r,
        );
        total(
            "db_pool_waiting",
            "Requests waiting for a PostgreSQL connection",
            pool.waiting,
            &mut r,
        );
        r.register(
            "db_operation_seconds",
            "Time each storage operation took, waiting for a connection included",
            pg.latency(),
        );
        r.register(
            "db_errors",
            "Storage operations that failed (no connection, or the database refused)",
            pg.errors.clone(),
        );
    }
    let announces = Counter::<u64>::default();
    announces.inc_by(state.announces.load(Ordering::Relaxed));
    r.register("announces", "Announces answered", announces);

    let s = &swarms;
    let f = |v: usize| Some(v as f64);
    gauges(
        &mut r,
        "swarm_peers",
        "Members of the swarm",
        s,
        swarm_labels,
        |w| f(w.stats.peers),
    );
    gauges(
        &mut r,
        "swarm_complete",
        "Members holding every chunk",
        s,
        swarm_labels,
        |w| f(w.stats.complete),
    );
    gauges(
        &mut r,
        "swarm_unreachable_peers",
        "Members nobody can dial (behind NATs, by their AutoNAT verdict)",
        s,
        swarm_labels,
        |w| f(w.stats.unreachable),
    );
    gauges(
        &mut r,
        "swarm_origin_sent_bytes",
        "Chunk bytes the seeds sent to the swarm, from their heartbeats",
        s,
        swarm_labels,
        |w| Some(w.origin_sent_bytes as f64),
    );
    gauges(
        &mut r,
        "swarm_origin_budget_used_ratio",
        "Origin bytes sent / the release's origin budget (absent when unlimited)",
        s,
        swarm_labels,
        |w| w.origin_budget_used,
    );
    gauges(
        &mut r,
        "swarm_seeds_serving",
        "Fresh seeds holding the release",
        s,
        swarm_labels,
        |w| f(w.seeds),
    );
    gauges(
        &mut r,
        "swarm_seeds_with_capacity",
        "Fresh seeds with capacity left",
        s,
        swarm_labels,
        |w| f(w.seeds_with_capacity),
    );
    gauges(
        &mut r,
        "swarm_bytes_from_peers",
        "Bytes members report from peers",
        s,
        swarm_labels,
        |w| Some(w.bytes_from_peers as f64),
    );
    gauges(
        &mut r,
        "swarm_bytes_from_seeds",
        "Bytes members report from seeds",
        s,
        swarm_labels,
        |w| Some(w.bytes_from_seeds as f64),
    );
    gauges(
        &mut r,
        "swarm_offload_ratio",
        "1 - bytes from seeds / bytes downloaded",
        s,
        swarm_labels,
        |w| w.offload,
    );
    gauges(
        &mut r,
        "swarm_eta_seconds",
        "Estimated seconds until every member is complete",
        s,
        swarm_labels,
        |w| w.eta_secs,
    );

    let d = &seeds;
    let seed_labels = |v: &SeedView| SeedLabels {
        seed: v.seed.report.seed_id.clone(),
    };
    gauges(
        &mut r,
        "seed_capacity_bps",
        "Seed upload capacity, bits per second",
        d,
        seed_labels,
        |v| Some(v.seed.report.capacity_bps as f64),
    );
    gauges(
        &mut r,
        "seed_egress_bps",
        "Seed upload rate, bits per second",
        d,
        seed_labels,
        |v| Some(v.seed.report.egress_bps as f64),
    );
    gauges(
        &mut r,
        "seed_utilisation",
        "Seed egress / capacity",
        d,
        seed_labels,
        |v| Some(v.utilisation),
    );
    gauges(
        &mut r,
        "seed_peers",
        "Peers connected to the seed",
        d,
        seed_labels,
        |v| Some(f64::from(v.seed.report.peers)),
    );
    gauges(
        &mut r,
        "seed_free_disk_bytes",
        "Free disk on the seed",
        d,
        seed_labels,
        |v| Some(v.seed.report.free_disk as f64),
    );
    gauges(
        &mut r,
        "seed_last_heartbeat_seconds",
        "Unix time of the seed's last heartbeat",
        d,
        seed_labels,
        |v| Some(v.seed.last_heartbeat as f64),
    );
    gauges(
        &mut r,
        "seed_stale",
        "1 if the seed missed its heartbeats",
        d,
        seed_labels,
        |v| Some(if v.stale { 1.0 } else { 0.0 }),
    );

    let by_kind = Family::<AlertLabels, Gauge>::default();
    for kind in ["seed_hot", "seed_stale", "swarm_without_seed_capacity"] {
        let _ = by_kind.get_or_create(&AlertLabels { kind: kind.into() });
    }
    for a in &alerts {
        by_kind
            .get_or_create(&AlertLabels {
                kind: a.kind().into(),
            })
            .inc();
    }
    r.register("alerts", "Active alerts by kind", by_kind);

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r)
        .expect("writing to a String cannot fail");
    Ok(out)
}
