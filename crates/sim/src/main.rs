//! `shoal-sim`: runs a launch scenario (TOML) on the real scheduler and
//! writes its figures, time series (CSV) and plot (SVG).

use anyhow::Context as _;
use clap::Parser;
use shoal_sim::{Scenario, output, run_with};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Rehearse a launch: every simulated player runs the launcher's own
/// download and serving state machines, on virtual time.
///
/// Prints the figures (origin egress, download-time percentiles against the
/// fluid bound, peer upload utilisation, the simulator's own cost) and, with
/// --out, writes summary.json, series.csv (bytes by source per bin) and
/// plot.svg there. See crates/sim/scenarios/launch.toml for every field.
#[derive(Debug, Parser)]
#[command(name = "shoal-sim", version)]
struct Args {
    /// The scenario file.
    scenario: PathBuf,
    /// Directory for summary.json, series.csv and plot.svg.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the scenario's player count.
    #[arg(long)]
    players: Option<usize>,
    /// Override the origin budget (copies, or "unlimited").
    #[arg(long)]
    origin_budget: Option<String>,
    /// Override the random seed.
    #[arg(long)]
    rng: Option<u64>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("reading {}", args.scenario.display()))?;
    let mut scenario =
        Scenario::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.scenario.display()))?;
    if let Some(n) = args.players {
        scenario.players = n;
    }
    if let Some(b) = &args.origin_budget {
        scenario.swarm.origin_budget = toml::Value::String(b.clone());
        scenario.origin_budget().map_err(|e| anyhow::anyhow!(e))?;
    }
    if let Some(r) = args.rng {
        scenario.rng = r;
    }
    let (_, rss_before) = output::rss();
    let setup = scenario.setup();
    let started = Instant::now();
    let mut last = Instant::now();
    let report = run_with(setup.clone(), |t, done, present| {
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            eprintln!(
                "virtual {:.2} h: {done} completed, {present} present ({:.0} s wall)",
                t.as_secs_f64() / 3600.0,
                started.elapsed().as_secs_f64()
            );
        }
    });
    let summary = output::Summary::new(&setup, &report, started.elapsed(), rss_before);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.text());
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?,
        )?;
        std::fs::write(dir.join("series.csv"), output::csv(&report))?;
        let title = if scenario.name.is_empty() {
            args.scenario.display().to_string()
        } else {
            scenario.name.clone()
        };
        std::fs::write(dir.join("plot.svg"), output::svg(&report, &title))?;
        eprintln!(
            "wrote summary.json, series.csv and plot.svg in {}",
            dir.display()
        );
    }
    Ok(())
}
