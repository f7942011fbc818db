//! `shoal status`: the install's state, read without the network.

use super::errors::store_error;
use super::now_secs;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What `shoal status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub dir: PathBuf,
    pub installed: Option<StatusBuild>,
    /// A download in progress (or interrupted): (version, bytes staged).
    pub staging: Option<String>,
    /// A launcher serving this install: its pid and until when.
    pub seeding: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusBuild {
    pub product: String,
    pub channel: String,
    pub version: u64,
    pub label: String,
    pub size: u64,
    pub files: usize,
    pub installed_at: u64,
    pub path: PathBuf,
}

/// The install's state, read without touching the network.
pub fn status(dir: &Path) -> anyhow::Result<Status> {
    let installed = shoal_store::installed(dir)
        .map_err(store_error)?
        .map(|b| StatusBuild {
            product: b.record.product.clone(),
            channel: b.record.channel.clone(),
            version: b.record.version,
            label: b.record.label.clone(),
            size: b.record.size,
            files: b.manifest().files().count(),
            installed_at: b.record.installed_at,
            path: dir.join("current"),
        });
    let staging = std::fs::read_dir(dir.join(".shoal/staging"))
        .ok()
        .and_then(|mut entries| {
            entries.find_map(|e| {
                let e = e.ok()?;
                e.file_type()
                    .ok()?
                    .is_dir()
                    .then(|| e.file_name().to_string_lossy().into_owned())
            })
        });
    let seeding = std::fs::read(dir.join(".shoal/seeding.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|v| {
            v["pid"]
                .as_u64()
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
                && v["until"].as_u64().is_some_and(|t| t > now_secs())
        });
    Ok(Status {
        dir: dir.to_owned(),
        installed,
        staging,
        seeding,
    })
}
