//! Helpers for Shoal's workspace-wide tests: the dependency-layering check
//! and the location of the binaries for tests that run it as a process.

pub mod layering;
pub mod netns;
pub mod process;
pub mod spans;

use std::path::{Path, PathBuf};

/// A loopback port free right now (another process may take it before the
/// caller binds it: a small race these tests accept).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `shoal publish BUILD` as the end-to-end tests' publisher does:
/// product `lab`, channel `stable`, label `1`, signed with the key file
/// `key`, the bundle written to `out`.
pub fn publish_lab(shoal: &Path, build: &Path, key: &Path, out: &Path) -> anyhow::Result<()> {
    netns::run(
        std::process::Command::new(shoal)
            .arg("publish")
            .arg(build)
            .args(["--product", "lab", "--channel", "stable", "--version", "1"])
            .arg("--key")
            .arg(key)
            .arg("--out")
            .arg(out),
    )
    .map(|_| ())
}

/// The `shoal` binary beside the running test, brought up to date once per
/// test process (a no-op when `cargo nextest run --workspace` just built it;
/// it matters when only this package's tests were built).
pub fn shoal_bin() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    bin(&BUILT, "shoal-client", "shoal")
}

/// The `shoal-demo` binary, as [`shoal_bin`].
pub fn demo_bin() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    bin(&BUILT, "shoal-demo", "shoal-demo")
}

/// The `shoal-tracker` binary, as [`shoal_bin`].
pub fn tracker_bin() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    bin(&BUILT, "shoal-tracker", "shoal-tracker")
}

/// The `shoal-seed` binary, as [`shoal_bin`].
pub fn seed_bin() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    bin(&BUILT, "shoal-seed", "shoal-seed")
}

fn bin(
    built: &std::sync::OnceLock<Result<(), String>>,
    package: &str,
    name: &str,
) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test binary path {}", exe.display()))?;
    let built = built.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        match std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", package, "--bin", name])
            .status()
        {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("building the {name} binary failed: {s}")),
            Err(e) => Err(format!("running cargo: {e}")),
        }
    });
    built.clone().map_err(anyhow::Error::msg)?;
    Ok(dir.join(name))
}

/// Whether any file below `dir` contains `needle`.
pub fn holds_anywhere(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let p = e.path();
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => holds_anywhere(&p, needle),
                Ok(m) if m.is_file() => std::fs::read(&p)
                    .unwrap_or_default()
                    .windows(needle.len())
                    .any(|w| w == needle),
                _ => false,
            }
        })
}

/// Bytes of data the files under `dir` actually hold (sparse files count
/// only what was written).
pub fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => total += du(&p),
            Ok(m) if m.is_file() => total += m.blocks() * 512,
            _ => {}
        }
    }
    total
}
