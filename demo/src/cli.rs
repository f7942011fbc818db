//! Command-line definitions for `shoal-demo`.

use clap::{Args, Parser};
use std::path::PathBuf;

/// See Shoal work: a tracker, a seed and N clients on loopback distribute
/// a sample build, then a patch; live view and a summary per phase.
///
/// Everything runs in this process on 127.0.0.1 with temporary data
/// directories (removed afterwards unless --keep or --dir). Caps make the
/// swarm's behaviour visible without root, and with all three set the
/// summary compares wall time with the fluid-model bound. Exits non-zero
/// if any install differs from its build.
#[derive(Debug, Parser)]
#[command(name = "shoal-demo", version)]
pub struct Cli {
    /// More log output (-v: the services' info logs, -vv: debug). RUST_LOG overrides this.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(flatten)]
    pub demo: DemoArgs,
}

impl Cli {
    /// The log filter implied by `-v` flags. Without any, only the demo's
    /// own lines: logs from its services would tear the live view.
    pub fn log_filter(&self) -> &'static str {
        match self.verbose {
            0 => "warn,shoal_demo=info",
            1 => "info,shoal=debug",
            _ => "debug,shoal=trace",
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Size of the sample build (a few large paks and many small files).
    #[arg(long, default_value = "256MiB")]
    pub size: String,
    /// Seed upload cap, e.g. `100Mbit`.
    #[arg(long)]
    pub seed_up: Option<String>,
    /// Each client's upload cap, e.g. `20Mbit`.
    #[arg(long)]
    pub peer_up: Option<String>,
    /// Each client's download cap, e.g. `100Mbit`.
    #[arg(long)]
    pub peer_down: Option<String>,
    /// Leave the tracker and seed running at the end and print how to reach them.
    #[arg(long)]
    pub keep: bool,
    /// Keep all data in this (new or empty) directory instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seed of the sample build's bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the summary as JSON (and no live view).
    #[arg(long)]
    pub json: bool,
    /// Only write the sample build into this directory and exit (the swarm
    /// lab publishes it itself).
    #[arg(long, hide = true)]
    pub write_build: Option<PathBuf>,
}
