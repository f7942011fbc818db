//! `shoal-demo`: a whole Shoal on loopback with one command. An embedded
//! tracker, one seed and N clients with temporary data directories; a sample
//! game build published as v1 and distributed, then a patch published as v2
//! and every client updated. A live view while it runs, a summary per phase
//! at the end, and a non-zero exit if any install differs from its build.

use crate::cli::DemoArgs;
use crate::lab::{Lab, Options, Published, sample};
use anyhow::Context as _;
use serde::Serialize;
use shoal_client::launcher::{self, Outcome, Request};
use shoal_client::{Exit, human, with_exit};
use shoal_net::download::Counters;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

/// One phase's figures (printed as a table, or as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub version: String,
    pub clients: usize,
    /// Bytes each client had to fetch (unique chunks it lacked).
    pub per_client_bytes: u64,
    pub wall_secs: f64,
    pub seed_bytes: u64,
    pub peer_bytes: u64,
    pub delivered_bytes: u64,
    /// 1 − seed bytes / bytes delivered.
    pub offload: f64,
    /// Seed egress as a multiple of one copy of what a client fetched.
    pub seed_copies: f64,
    /// The fluid-model bound, when caps are set.
    pub fluid_bound_secs: Option<f64>,
    pub ratio_to_bound: Option<f64>,
    pub all_identical: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub clients: usize,
    pub build_bytes: u64,
    pub seed_up: Option<u64>,
    pub peer_up: Option<u64>,
    pub peer_down: Option<u64>,
    pub phases: Vec<Phase>,
}

fn rate(text: &Option<String>, flag: &str) -> anyhow::Result<Option<u64>> {
    text.as_deref()
        .map(|t| {
            human::parse_rate(t)
                .map_err(|e| with_exit(anyhow::anyhow!("{flag}: {e}"), Exit::BadInput))
        })
        .transpose()
}

fn size(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| {
        with_exit(
            anyhow::anyhow!("--size {text:?}: try 256MiB or 1GiB"),
            Exit::BadInput,
        )
    })?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => {
            return Err(with_exit(
                anyhow::anyhow!("--size {text:?}: use B, KiB, MiB or GiB"),
                Exit::BadInput,
            ));
        }
    };
    let bytes = n * mult;
    if bytes < 1 << 20 {
        return Err(with_exit(
            anyhow::anyhow!("--size must be at least 1MiB"),
            Exit::BadInput,
        ));
    }
    Ok(bytes)
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.clients > 64 {
        return Err(with_exit(
            anyhow::anyhow!("--clients must be 1 to 64"),
            Exit::BadInput,
        ));
    }
    let build_bytes = size(&args.size)?;
    if let Some(dir) = &args.write_build {
        return sample::build(dir, build_bytes, args.seed)
            .with_context(|| format!("writing a sample build into {}", dir.display()));
    }
    let caps = (
        rate(&args.seed_up, "--seed-up")?,
        rate(&args.peer_up, "--peer-up")?,
        rate(&args.peer_down, "--peer-down")?,
    );
    let (root, _cleanup) = match &args.dir {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                return Err(with_exit(
                    anyhow::anyhow!("{} is not empty; pick a new --dir", d.display()),
                    Exit::OutputExists,
                ));
            }
            (d.clone(), None)
        }
        None => {
            let t = std::env::temp_dir().join(format!("shoal-demo-{}", std::process::id()));
            (t.clone(), Some(RemoveOnDrop(t, args.keep)))
        }
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(async {
        tokio::select! {
            r = demo(args, &root, build_bytes, caps) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    if summary.phases.iter().any(|p| !p.all_identical) {
        return Err(anyhow::anyhow!("an install differs from its build"));
    }
    Ok(())
}

struct RemoveOnDrop(PathBuf, bool);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn say(json: bool, line: String) {
    if !json {
        eprintln!("{line}");
    }
}

async fn demo(
    args: &DemoArgs,
    root: &Path,
    build_bytes: u64,
    (seed_up, peer_up, peer_down): (Option<u64>, Option<u64>, Option<u64>),
) -> anyhow::Result<Summary> {
    let json = args.json;
    let lab = Lab::start(
        root,
        Options {
            seed_upload: seed_up,
            ..Options::default()
        },
    )
    .await?;
    say(
        json,
        format!(
            "tracker at {}, one seed{}, {} clients; data in {}",
            lab.url,
            seed_up.map_or(String::new(), |r| format!(
                " (up {})",
                human::rate(r as f64)
            )),
            args.clients,
            root.display()
        ),
    );
    let v1_dir = root.join("build-v1");
    let v2_dir = root.join("build-v2");
    {
        let (a, b) = (v1_dir.clone(), v2_dir.clone());
        let seed = args.seed;
        tokio::task::spawn_blocking({
            let span = tracing::Span::current();
            move || {
                span.in_scope(|| -> std::io::Result<()> {
                    sample::build(&a, build_bytes, seed)?;
                    sample::patch(&a, &b, seed + 1)
                })
            }
        })
        .await??;
    }
    let mut players = Vec::new();
    for i in 0..args.clients {
        let (mut s, _) = lab.player(&format!("client{i}")).await?;
        s.max_upload = peer_up;
        s.max_download = peer_down;
        players.push(s);
    }
    let mut phases = Vec::new();
    let mut previous: Option<Published> = None;
    for (name, dir, label) in [
        ("install v1", &v1_dir, "1.0"),
        ("update to v2", &v2_dir, "2.0"),
    ] {
        let t = Instant::now();
        let published = lab.publish(dir, label).await?;
        say(
            json,
            format!(
                "published {label}: {} in {} files, {} unique chunks, in {}",
                human::bytes(published.manifest.total_size()),
                published.manifest.files().count(),
                published.manifest.chunks.len(),
                human::duration(t.elapsed())
            ),
        );
        let per_client = match &previous {
            None => published.manifest.unique_size(),
            Some(old) => {
                let had: std::collections::HashSet<_> =
                    old.manifest.chunks.iter().map(|c| c.hash).collect();
                published
                    .manifest
                    .chunks
                    .iter()
                    .filter(|c| !had.contains(&c.hash))
                    .map(|c| u64::from(c.len))
                    .sum()
            }
        };
        let phase = distribute(
            &lab,
            &players,
            root,
            name,
            label,
            per_client,
            previous.is_some(),
            json,
        )
        .await?;
        let n = players.len() as f64;
        let bound = match (seed_up, peer_up, peer_down) {
            (Some(us), Some(ui), Some(d)) => {
                let f = per_client as f64;
                Some(
                    (f / us as f64)
                        .max(f / d as f64)
                        .max(n * f / (us as f64 + n * ui as f64)),
                )
            }
            _ => None,
        };
        let mut identical = true;
        for i in 0..players.len() {
            if let Err(e) = sample::same(dir, &root.join(format!("client{i}/current")))? {
                say(
                    json,
                    format!("client{i}: install differs from the build: {e}"),
                );
                identical = false;
            }
        }
        phases.push(Phase {
            fluid_bound_secs: bound,
            ratio_to_bound: bound.map(|b| phase.wall_secs / b),
            all_identical: identical,
            ..phase
        });
        previous = Some(published);
    }
    let summary = Summary {
        clients: players.len(),
        build_bytes,
        seed_up,
        peer_up,
        peer_down,
        phases,
    };
    if args.keep {
        print_summary(&summary);
        eprintln!(
            "\nservices keep running (Ctrl-C stops them):\n  tracker  {}\n  operator key  {}\n  a client's config  SHOAL_CONFIG_DIR={}\n  try  SHOAL_TRACKER={} SHOAL_API_KEY=$(cat {}) shoal admin ops swarms",
            lab.url,
            lab.operator_key().unwrap_or_default(),
            root.join("players/client0/config").display(),
            lab.url,
            root.join("tracker/operator.key").display(),
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    lab.stop().await?;
    Ok(summary)
}

/// Runs every client's install (or update) at once; they keep seeding until
/// all are done, as players with the launcher open would.
#[allow(clippy::too_many_arguments)]
async fn distribute(
    lab: &Lab,
    players: &[shoal_client::config::Settings],
    root: &Path,
    name: &str,
    label: &str,
    per_client: u64,
    update: bool,
    json: bool,
) -> anyhow::Result<Phase> {
    let seed_before = lab.releases.served();
    let start = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let counters: Vec<Arc<Counters>> = players.iter().map(|_| Arc::default()).collect();
    let done: Vec<Arc<std::sync::atomic::AtomicBool>> =
        players.iter().map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (i, s) in players.iter().enumerate() {
        let req = Request {
            product: lab.options.product.clone(),
            channel: None,
            dir: root.join(format!("client{i}")),
            seed_for: Duration::from_secs(3600),
            update,
            preload: false,
            until_unlock: false,
            seeding: Default::default(),
        };
        let (s, c, d) = (s.clone(), counters[i].clone(), done[i].clone());
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(
            async move {
                let r = launcher::install(&s, &req, Some(c), async move {
                    let _ = stop.wait_for(|v| *v).await;
                })
                .await;
                d.store(true, Ordering::Relaxed);
                r
            }
            .instrument(tracing::info_span!("demo_player", player = i)),
        ));
    }
    let mut view = LiveView::new(name, label, players.len(), per_client, json);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        // A client is done when its new build is swapped in.
        let complete = (0..players.len())
            .filter(|&i| {
                done[i].load(Ordering::Relaxed)
                    || launcher::status(&root.join(format!("client{i}")))
                        .is_ok_and(|st| st.installed.is_some_and(|b| b.label == label))
            })
            .count();
        view.draw(
            &counters,
            lab.releases.served() - seed_before,
            start.elapsed(),
        );
        if complete == players.len() {
            break;
        }
        if tasks.iter().any(|t| t.is_finished()) {
            // A client ended early: an error to report.
            let mut failed = None;
            for t in tasks.iter_mut().filter(|t| t.is_finished()) {
                if let Err(e) = t.await? {
                    failed = Some(e);
                }
            }
            if let Some(e) = failed {
                view.finish();
                return Err(e.context(format!("{name}: a client failed")));
            }
        }
    }
    let wall = start.elapsed();
    let _ = stop_tx.send(true);
    let mut outcomes: Vec<Outcome> = Vec::new();
    for t in tasks {
        outcomes.push(t.await??);
    }
    view.finish();
    let seed_bytes = lab.releases.served() - seed_before;
    let peer_bytes: u64 = outcomes.iter().map(|o| o.from_peers).sum();
    let delivered: u64 = outcomes.iter().map(|o| o.from_peers + o.from_seeds).sum();
    Ok(Phase {
        name: name.to_owned(),
        version: label.to_owned(),
        clients: players.len(),
        per_client_bytes: per_client,
        wall_secs: wall.as_secs_f64(),
        seed_bytes,
        peer_bytes,
        delivered_bytes: delivered,
        offload: if delivered > 0 {
            1.0 - seed_bytes as f64 / delivered as f64
        } else {
            0.0
        },
        seed_copies: seed_bytes as f64 / per_client.max(1) as f64,
        fluid_bound_secs: None,
        ratio_to_bound: None,
        all_identical: true,
    })
}

/// Per-client progress, swarm rate and the peers/seed split, redrawn in
/// place on a terminal; a log line every few seconds otherwise.
struct LiveView {
    title: String,
    n: usize,
    total: u64,
    terminal: bool,
    quiet: bool,
    drawn: usize,
    last: (Duration, u64),
    last_log: Duration,
}

impl LiveView {
    fn new(name: &str, label: &str, n: usize, total: u64, quiet: bool) -> LiveView {
        LiveView {
            title: format!("{name} ({label})"),
            n,
            total,
            terminal: std::io::stderr().is_terminal(),
            quiet,
            drawn: 0,
            last: (Duration::ZERO, 0),
            last_log: Duration::ZERO,
        }
    }

    fn draw(&mut self, counters: &[Arc<Counters>], seed_bytes: u64, elapsed: Duration) {
        if self.quiet {
            return;
        }
        let received: u64 = counters.iter().map(|c| c.received()).sum();
        let peers: u64 = counters
            .iter()
            .map(|c| c.from_peers.load(Ordering::Relaxed))
            .sum();
        let dt = (elapsed - self.last.0).as_secs_f64().max(1e-3);
        let rate = (received - self.last.1.min(received)) as f64 / dt;
        self.last = (elapsed, received);
        if !self.terminal {
            if elapsed - self.last_log >= Duration::from_secs(3) {
                self.last_log = elapsed;
                tracing::info!(
                    phase = %self.title,
                    received_bytes = received,
                    from_peers_bytes = peers,
                    seed_bytes,
                    swarm_rate_bytes_per_sec = rate as u64,
                    "demo progress"
                );
            }
            return;
        }
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn));
        }
        out.push_str(&format!(
            "\x1b[2K{}  {}  swarm {}  from peers {}  from seed {}\n",
            self.title,
            human::duration(elapsed),
            human::rate(rate),
            human::bytes(peers),
            human::bytes(seed_bytes),
        ));
        for (i, c) in counters.iter().enumerate().take(self.n) {
            let got = c.received().min(self.total);
            let pct = got as f64 * 100.0 / self.total.max(1) as f64;
            let width = 30;
            let filled = (pct / 100.0 * width as f64) as usize;
            out.push_str(&format!(
                "\x1b[2K  client{i:<2} [{}{}] {pct:5.1}%  {} peers\n",
                "#".repeat(filled),
                " ".repeat(width - filled),
                c.connected.load(Ordering::Relaxed),
            ));
        }
        self.drawn = self.n + 1;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }

    fn finish(&mut self) {
        self.drawn = 0;
    }
}

fn print_summary(s: &Summary) {
    println!(
        "\n{} clients, build of {}{}",
        s.clients,
        human::bytes(s.build_bytes),
        match (s.seed_up, s.peer_up, s.peer_down) {
            (Some(a), Some(b), Some(c)) => format!(
                "; caps: seed up {}, peer up {}, peer down {}",
                human::rate(a as f64),
                human::rate(b as f64),
                human::rate(c as f64)
            ),
            _ => String::new(),
        }
    );
    println!(
        "{:<14} {:>10} {:>11} {:>11} {:>11} {:>8} {:>7} {:>9} {:>7} {:>9}",
        "phase",
        "per client",
        "wall",
        "seed sent",
        "peers sent",
        "offload",
        "seed ×",
        "bound",
        "ratio",
        "identical"
    );
    for p in &s.phases {
        println!(
            "{:<14} {:>10} {:>11} {:>11} {:>11} {:>7.1}% {:>7.2} {:>9} {:>7} {:>9}",
            p.name,
            human::bytes(p.per_client_bytes),
            human::duration(Duration::from_secs_f64(p.wall_secs)),
            human::bytes(p.seed_bytes),
            human::bytes(p.peer_bytes),
            p.offload * 100.0,
            p.seed_copies,
            p.fluid_bound_secs
                .map_or("—".into(), |b| human::duration(Duration::from_secs_f64(
                    b
                ))),
            p.ratio_to_bound.map_or("—".into(), |r| format!("{r:.2}×")),
            if p.all_identical { "yes" } else { "NO" },
        );
    }
}
