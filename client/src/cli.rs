//! Command-line definitions for `shoal`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Shoal: peer-assisted patch distribution.
///
/// Publishers chunk and sign builds with `shoal publish`; players install and
/// update through a swarm of peers and seeds.
#[derive(Debug, Parser)]
#[command(name = "shoal", version)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides this.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log filter implied by `-v` flags.
    pub fn log_filter(&self) -> &'static str {
        match self.verbose {
            0 => "warn,shoal=info",
            1 => "info,shoal=debug",
            _ => "debug,shoal=trace",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an ed25519 key for signing releases (publisher) or other roles.
    Keygen(KeygenArgs),
    /// Chunk a build directory, sign its manifest and write a bundle a seed can serve.
    Publish(PublishArgs),
    /// Inspect and compare manifests.
    #[command(subcommand)]
    Manifest(ManifestCommand),
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (created with mode 0600; never overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The build directory to publish.
    pub build_dir: PathBuf,
    /// Product id, e.g. `starfall` (letters, digits, '.', '_', '-').
    #[arg(long)]
    pub product: String,
    /// Channel, e.g. `stable` or `beta`.
    #[arg(long)]
    pub channel: String,
    /// The build's version label, e.g. `1.4.2`. The tracker numbers releases itself.
    #[arg(long)]
    pub version: String,
    /// The publisher's secret key file (from `shoal keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// Output directory for the bundle; must not exist or be empty.
    #[arg(long)]
    pub out: PathBuf,
    /// Minimum chunk size (bytes; K, M suffixes allowed).
    #[arg(long, default_value = "256K", value_parser = parse_size)]
    pub min_chunk: u32,
    /// Average chunk size.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub avg_chunk: u32,
    /// Maximum chunk size.
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    pub max_chunk: u32,
    /// Hashing threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Show a signed manifest (a `manifest.shoal` file or a bundle directory).
    Show {
        file: PathBuf,
        /// List every entry, not only the summary.
        #[arg(long)]
        entries: bool,
        #[arg(long)]
        json: bool,
    },
    /// What updating from OLD to NEW would fetch and reuse.
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// Parses `1048576`, `256K`, `1M`, `4MiB` into bytes.
pub fn parse_size(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use K or M)")),
    };
    u32::try_from(n * mult).map_err(|_| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("9G").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
