//! `GET /v1/ops/*`: what operators see of swarms and seeds, the alerts, and
//! the overview the dashboard and `shoal ops status` draw.

use crate::{OriginBudget, SeedReport, SwarmStats};
use serde::{Deserialize, Serialize};
use shoal_types::Hash;

/// One swarm as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SwarmView {
    pub swarm: Hash,
    pub product: Option<String>,
    pub channel: Option<String>,
    pub version: Option<u64>,
    #[serde(flatten)]
    pub stats: SwarmStats,
    /// Fresh seeds holding the release.
    pub seeds: usize,
    /// Of those, seeds with upload capacity left.
    pub seeds_with_capacity: usize,
    pub bytes_from_peers: u64,
    pub bytes_from_seeds: u64,
    /// 1 − bytes from seeds / bytes downloaded, over current members' reports.
    pub offload: Option<f64>,
    /// Seconds until every member is complete at the recent rate.
    pub eta_secs: Option<f64>,
    /// Copies of the payload the seeds may send to the swarm in total.
    pub origin_budget: Option<OriginBudget>,
    /// Chunk bytes the seeds say they sent to it.
    pub origin_sent_bytes: u64,
    /// `origin_sent_bytes` / the budget's bytes (absent when unlimited).
    pub origin_budget_used: Option<f64>,
}

/// A seed as the tracker knows it: its last heartbeat, from which account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeedRecord {
    #[serde(flatten)]
    pub report: SeedReport,
    pub account: String,
    pub last_heartbeat: u64,
}

/// One seed as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeedView {
    #[serde(flatten)]
    pub seed: SeedRecord,
    pub utilisation: f64,
    pub stale: bool,
    pub heartbeat_age_secs: u64,
}

/// Something an operator should look at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alert {
    /// A seed above the hot-seed utilisation.
    SeedHot { seed: String, utilisation: f64 },
    /// A seed that stopped heartbeating.
    SeedStale { seed: String, age_secs: u64 },
    /// A swarm with members whose seeds have no capacity left (or none at all).
    SwarmWithoutSeedCapacity {
        swarm: Hash,
        product: Option<String>,
    },
}

impl Alert {
    pub fn kind(&self) -> &'static str {
        match self {
            Alert::SeedHot { .. } => "seed_hot",
            Alert::SeedStale { .. } => "seed_stale",
            Alert::SwarmWithoutSeedCapacity { .. } => "swarm_without_seed_capacity",
        }
    }
}

/// One history sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sample {
    pub at: u64,
    /// Origin offload over all swarms (None before any byte moved).
    pub offload: Option<f64>,
    /// Utilisation per fresh seed: `[seed id, utilisation]`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Vec<Value>>))]
    pub seeds: Vec<(String, f64)>,
}

/// `GET /v1/ops/overview`: everything the dashboard and `shoal ops status`
/// show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overview {
    pub now: u64,
    pub swarms: Vec<SwarmView>,
    pub seeds: Vec<SeedView>,
    pub alerts: Vec<Alert>,
    /// Token refusals in the last hour: `[reason, count]`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Vec<Value>>))]
    pub refusals: Vec<(String, u64)>,
    /// The last hour of offload and seed utilisation.
    pub history: Vec<Sample>,
}
