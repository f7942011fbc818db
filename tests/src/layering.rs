//! The layering rule: pure crates (types, manifest, token, wire, scheduler)
//! never depend, even transitively, on IO runtimes or network stacks.

use anyhow::Context as _;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};

/// Crates that must stay free of IO dependencies.
pub const PURE_CRATES: &[&str] = &[
    "shoal-types",
    "shoal-manifest",
    "shoal-token",
    "shoal-wire",
    "shoal-scheduler",
];

/// Dependencies a pure crate may not pull in.
pub const FORBIDDEN: &[&str] = &["tokio", "libp2p", "quinn", "axum", "sled"];

/// A forbidden dependency reached from a pure crate, with the path to it.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub pure_crate: String,
    pub chain: Vec<String>,
}

fn is_forbidden(name: &str) -> bool {
    FORBIDDEN
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

/// Every forbidden dependency reachable through normal (non-dev) dependency
/// edges from a pure crate present in `metadata`, and the pure crates found.
pub fn check(metadata: &Value) -> anyhow::Result<(Vec<String>, Vec<Violation>)> {
    let packages = metadata["packages"]
        .as_array()
        .context("metadata has no packages")?;
    let name_of: HashMap<&str, &str> = packages
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let nodes = metadata["resolve"]["nodes"]
        .as_array()
        .context("metadata has no resolve graph")?;
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
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

    let mut found = Vec::new();
    let mut violations = Vec::new();
    for (&id, &name) in &name_of {
        if !PURE_CRATES.contains(&name) {
            continue;
        }
        found.push(name.to_owned());
        // Breadth-first, remembering how each crate was reached.
        let mut came_from: HashMap<&str, &str> = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::from([id]);
        let mut queue = VecDeque::from([id]);
        while let Some(current) = queue.pop_front() {
            for &dep in edges.get(current).map(Vec::as_slice).unwrap_or_default() {
                if !seen.insert(dep) {
                    continue;
                }
                came_from.insert(dep, current);
                let dep_name = name_of.get(dep).copied().unwrap_or(dep);
                if is_forbidden(dep_name) {
                    let mut chain = vec![dep_name.to_owned()];
                    let mut at = dep;
                    while let Some(&prev) = came_from.get(at) {
                        chain.push(name_of.get(prev).copied().unwrap_or(prev).to_owned());
                        at = prev;
                    }
                    chain.reverse();
                    violations.push(Violation {
                        pure_crate: name.to_owned(),
                        chain,
                    });
                } else {
                    queue.push_back(dep);
                }
            }
        }
    }
    found.sort();
    Ok((found, violations))
}
