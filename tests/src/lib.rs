//! Helpers for Shoal's workspace-wide tests: the dependency-layering check
//! and the location of the `shoal` binary for tests that run it as a process.

pub mod layering;

use std::path::{Path, PathBuf};

/// The `shoal` binary beside the running test (cargo builds the workspace's
/// binaries with its tests; it is built here if this run did not).
pub fn shoal_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test binary path {}", exe.display()))?;
    let bin = dir.join("shoal");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "shoal-client", "--bin", "shoal"])
            .status()?;
        anyhow::ensure!(status.success(), "building the shoal binary failed");
    }
    Ok(bin)
}
