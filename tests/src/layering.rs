//! The layering rules, checked on `cargo metadata`'s dependency graph
//! through normal (non-dev) edges:
//!
//! - pure crates (types, manifest, token, wire, scheduler) never depend, even
//!   transitively, on IO runtimes or network stacks;
//! - only `shoal-net` touches libp2p and quinn: no other workspace crate
//!   reaches them except through `shoal-net` (the benchmarks' plain-quinn
//!   baseline aside);
//! - the player's launcher (`shoal-client`) reaches no server crate;
//! - the test fixtures (`shoal-testkit`) are a dev-dependency only.

use anyhow::Context as _;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};

/// Crates that must stay free of IO dependencies.
pub const PURE_CRATES: &[&str] = &[
    "shoal-types",
    "shoal-api",
    "shoal-manifest",
    "shoal-token",
    "shoal-wire",
    "shoal-scheduler",
    "shoal-sim",
];

/// Dependencies a pure crate may not pull in.
pub const FORBIDDEN: &[&str] = &["tokio", "libp2p", "quinn", "axum", "sled"];

/// The network stacks only `shoal-net` may depend on.
pub const NETWORK_STACKS: &[&str] = &["libp2p", "quinn"];

/// Workspace crates allowed to depend on the network stacks themselves:
/// `shoal-net`, and the benchmarks, whose transfer bench measures plain
/// quinn as the baseline.
pub const NETWORK_OWNERS: &[&str] = &["shoal-net", "shoal-bench"];

/// The player's launcher, and the server crates it must not link.
pub const LAUNCHER: &str = "shoal-client";
pub const SERVERS: &[&str] = &["shoal-tracker", "shoal-seed"];

/// The dev-only crate of test fixtures.
pub const TESTKIT: &str = "shoal-testkit";

/// A forbidden dependency reached from a crate, with the path to it.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub from: String,
    pub chain: Vec<String>,
}

/// `name` is one of `family` or a crate of one of their families
/// (`libp2p-quic` belongs to `libp2p`).
fn in_family(family: &[&str], name: &str) -> bool {
    family
        .iter()
        .any(|f| name == *f || name.starts_with(&format!("{f}-")))
}

/// Runs `cargo metadata` for this workspace.
pub fn workspace_metadata() -> anyhow::Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--manifest-path",
            manifest,
        ])
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("parsing cargo metadata")
}

/// The normal-dependency graph of a `cargo metadata` answer.
struct Graph<'a> {
    name_of: HashMap<&'a str, &'a str>,
    edges: HashMap<&'a str, Vec<&'a str>>,
    members: Vec<&'a str>,
}

impl<'a> Graph<'a> {
    fn new(metadata: &'a Value) -> anyhow::Result<Graph<'a>> {
        let packages = metadata["packages"]
            .as_array()
            .context("metadata has no packages")?;
        let name_of = packages
            .iter()
            .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
            .collect();
        let nodes = metadata["resolve"]["nodes"]
            .as_array()
            .context("metadata has no resolve graph")?;
        let mut edges = HashMap::new();
        for node in nodes {
            let id = node["id"].as_str().context("node without id")?;
            let deps = node["deps"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let normal = deps.iter().filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
            });
            edges.insert(id, normal.filter_map(|d| d["pkg"].as_str()).collect());
        }
        let members = metadata["workspace_members"]
            .as_array()
            .map(|m| m.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        Ok(Graph {
            name_of,
            edges,
            members,
        })
    }

    fn name(&self, id: &'a str) -> &'a str {
        self.name_of.get(id).copied().unwrap_or(id)
    }

    fn id(&self, name: &str) -> Option<&'a str> {
        self.name_of
            .iter()
            .find(|(_, n)| **n == name)
            .map(|(id, _)| *id)
    }

    /// Every crate matching `forbidden` reachable from `from`, with the
    /// path to it, without walking past a crate matching `gate`.
    fn reach(
        &self,
        from: &'a str,
        forbidden: impl Fn(&str) -> bool,
        gate: impl Fn(&str) -> bool,
    ) -> Vec<Violation> {
        let mut violations = Vec::new();
        // Breadth-first, remembering how each crate was reached.
        let mut came_from: HashMap<&str, &str> = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::from([from]);
        let mut queue = VecDeque::from([from]);
        while let Some(current) = queue.pop_front() {
            for &dep in self
                .edges
                .get(current)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if !seen.insert(dep) {
                    continue;
                }
                came_from.insert(dep, current);
                let dep_name = self.name(dep);
                if forbidden(dep_name) {
                    let mut chain = vec![dep_name.to_owned()];
                    let mut at = dep;
                    while let Some(&prev) = came_from.get(at) {
                        chain.push(self.name(prev).to_owned());
                        at = prev;
                    }
                    chain.reverse();
                    violations.push(Violation {
                        from: self.name(from).to_owned(),
                        chain,
                    });
                } else if !gate(dep_name) {
                    queue.push_back(dep);
                }
            }
        }
        violations
    }
}

/// Every forbidden dependency reachable through normal (non-dev) dependency
/// edges from a pure crate present in `metadata`, and the pure crates found.
pub fn check(metadata: &Value) -> anyhow::Result<(Vec<String>, Vec<Violation>)> {
    let graph = Graph::new(metadata)?;
    let mut found = Vec::new();
    let mut violations = Vec::new();
    for (&id, &name) in &graph.name_of {
        if PURE_CRATES.contains(&name) {
            found.push(name.to_owned());
            violations.extend(graph.reach(id, |n| in_family(FORBIDDEN, n), |_| false));
        }
    }
    found.sort();
    Ok((found, violations))
}

/// Workspace crates other than [`NETWORK_OWNERS`] that reach libp2p or
/// quinn other than through `shoal-net`, and how many members were checked.
pub fn check_network_owner(metadata: &Value) -> anyhow::Result<(usize, Vec<Violation>)> {
    let graph = Graph::new(metadata)?;
    anyhow::ensure!(
        !graph.members.is_empty(),
        "metadata has no workspace members"
    );
    let mut violations = Vec::new();
    for &id in &graph.members {
        if NETWORK_OWNERS.contains(&graph.name(id)) {
            continue;
        }
        violations.extend(graph.reach(id, |n| in_family(NETWORK_STACKS, n), |n| n == "shoal-net"));
    }
    Ok((graph.members.len(), violations))
}

/// The server crates the launcher reaches.
pub fn check_launcher(metadata: &Value) -> anyhow::Result<Vec<Violation>> {
    let graph = Graph::new(metadata)?;
    let launcher = graph
        .id(LAUNCHER)
        .with_context(|| format!("{LAUNCHER} missing from the workspace"))?;
    Ok(graph.reach(launcher, |n| SERVERS.contains(&n), |_| false))
}

/// Workspace crates that reach [`TESTKIT`] through normal dependencies
/// (anywhere but `[dev-dependencies]`).
pub fn check_testkit_dev_only(metadata: &Value) -> anyhow::Result<Vec<Violation>> {
    let graph = Graph::new(metadata)?;
    anyhow::ensure!(
        graph.id(TESTKIT).is_some(),
        "{TESTKIT} missing from the workspace"
    );
    Ok(graph
        .members
        .iter()
        .flat_map(|&id| graph.reach(id, |n| n == TESTKIT, |_| false))
        .collect())
}
