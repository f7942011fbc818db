//! What a run says: the summary (text and JSON), the time series as CSV,
//! and an SVG plot of bytes by source over time.

use crate::world::{Report, Setup, bound_at_egress, fluid_bound};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// The simulator's own cost.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cost {
    pub wall_secs: f64,
    pub events: u64,
    pub events_per_sec: f64,
    pub peak_rss_bytes: u64,
    /// Peak RSS above what the process held before the run, per player.
    pub bytes_per_player: u64,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub players: usize,
    pub completed: usize,
    pub payload_bytes: u64,
    pub origin_copies: f64,
    pub from_peers_share: f64,
    pub wasted_copies: f64,
    /// Download time (arrival to completion) percentiles, seconds.
    pub download_p50: f64,
    pub download_p90: f64,
    pub download_p99: f64,
    pub download_max: f64,
    /// The last completion, seconds after release.
    pub makespan: Option<f64>,
    /// The fluid bound with every player starting at once, and the bound
    /// at the egress used.
    pub fluid_bound: f64,
    pub bound_at_egress: f64,
    /// The fastest a player could download alone (payload / its download rate), p50.
    pub alone_p50: f64,
    pub peer_upload_utilisation: f64,
    pub connections: u64,
    pub punches_tried: u64,
    pub punches_failed: u64,
    pub quits: u64,
    pub virtual_secs: f64,
    pub cost: Cost,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Peak and current resident set of this process, bytes (`/proc/self/status`).
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

impl Summary {
    pub fn new(setup: &Setup, r: &Report, wall: Duration, rss_before: u64) -> Summary {
        let mut times: Vec<f64> = r
            .download_times()
            .iter()
            .map(Duration::as_secs_f64)
            .collect();
        times.sort_by(f64::total_cmp);
        let mut alone: Vec<f64> = setup
            .players
            .iter()
            .map(|p| r.payload as f64 / p.link.down)
            .collect();
        alone.sort_by(f64::total_cmp);
        let delivered = (r.seed_uploaded + r.peer_uploaded).max(1) as f64;
        let (peak, _) = rss();
        let n = setup.players.len();
        Summary {
            players: n,
            completed: times.len(),
            payload_bytes: r.payload,
            origin_copies: r.origin_copies(),
            from_peers_share: r.peer_uploaded as f64 / delivered,
            wasted_copies: r.wasted as f64 / r.payload.max(1) as f64,
            download_p50: percentile(&times, 0.5),
            download_p90: percentile(&times, 0.9),
            download_p99: percentile(&times, 0.99),
            download_max: times.last().copied().unwrap_or(f64::NAN),
            makespan: r.makespan().map(|d| d.as_secs_f64()),
            fluid_bound: fluid_bound(setup).as_secs_f64(),
            bound_at_egress: bound_at_egress(setup, r.origin_copies()).as_secs_f64(),
            alone_p50: percentile(&alone, 0.5),
            peer_upload_utilisation: r.peer_uploaded as f64 / r.peer_upload_capacity.max(1.0),
            connections: r.connections,
            punches_tried: r.punches_tried,
            punches_failed: r.punches_failed,
            quits: r.quits,
            virtual_secs: r.end.as_secs_f64(),
            cost: Cost {
                wall_secs: wall.as_secs_f64(),
                events: r.events,
                events_per_sec: r.events as f64 / wall.as_secs_f64().max(1e-9),
                peak_rss_bytes: peak,
                bytes_per_player: peak.saturating_sub(rss_before) / n.max(1) as u64,
            },
        }
    }

    /// The summary as a planner reads it.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} players, {} MiB: {} completed",
            self.players,
            self.payload_bytes >> 20,
            self.completed
        );
        let _ = writeln!(
            s,
            "origin egress {:.3}x the payload; {:.1}% of bytes from peers; wasted {:.3}x",
            self.origin_copies,
            self.from_peers_share * 100.0,
            self.wasted_copies
        );
        let _ = writeln!(
            s,
            "download time p50 {:.1} s, p90 {:.1} s, p99 {:.1} s, max {:.1} s (alone on its link, p50: {:.1} s)",
            self.download_p50,
            self.download_p90,
            self.download_p99,
            self.download_max,
            self.alone_p50
        );
        if let Some(m) = self.makespan {
            let _ = writeln!(
                s,
                "last completion {m:.1} s after release; everyone at once: fluid bound {:.1} s, bound at this egress {:.1} s",
                self.fluid_bound, self.bound_at_egress
            );
        }
        let _ = writeln!(
            s,
            "peer upload utilisation {:.2}; {} connections, {} punches ({} failed), {} quits",
            self.peer_upload_utilisation,
            self.connections,
            self.punches_tried,
            self.punches_failed,
            self.quits
        );
        let c = &self.cost;
        let _ = writeln!(
            s,
            "cost: {:.1} s wall, {} events ({:.2} M/s), peak RSS {} MiB, {} bytes per player",
            c.wall_secs,
            c.events,
            c.events_per_sec / 1e6,
            c.peak_rss_bytes >> 20,
            c.bytes_per_player
        );
        s
    }
}

/// The time series: one row per bin.
pub fn csv(r: &Report) -> String {
    let mut s = String::from("start_secs,from_seeds_bytes,from_peers_bytes,completed,present\n");
    let w = r.bin.as_secs_f64();
    for (i, b) in r.bins.iter().enumerate() {
        let _ = writeln!(
            s,
            "{},{:.0},{:.0},{},{}",
            i as f64 * w,
            b.from_seeds,
            b.from_peers,
            b.completed,
            b.present
        );
    }
    s
}

/// Bytes by source over time (Gbit/s from seeds and from peers) and the
/// share of players completed, as an SVG line plot.
pub fn svg(r: &Report, title: &str) -> String {
    let (w, h, pad) = (900.0, 420.0, 60.0);
    let bin = r.bin.as_secs_f64().max(1e-9);
    let gbit = |b: f64| b * 8.0 / bin / 1e9;
    let max_rate = r
        .bins
        .iter()
        .map(|b| gbit(b.from_seeds).max(gbit(b.from_peers)))
        .fold(1e-9, f64::max);
    let n = r.bins.len().max(2) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
    let y = |v: f64, max: f64| h - pad - (h - 2.0 * pad) * v / max;
    let line = |f: &dyn Fn(usize) -> f64, max: f64| {
        (0..r.bins.len())
            .map(|i| format!("{:.1},{:.1}", x(i), y(f(i), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut done = 0u64;
    let total = r.completion.len().max(1) as f64;
    let done_share: Vec<f64> = r
        .bins
        .iter()
        .map(|b| {
            done += u64::from(b.completed);
            done as f64 / total
        })
        .collect();
    let hours = r.bins.len() as f64 * bin / 3600.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20" font-size="14">{title}</text>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/>
<text x="{pad}" y="{lb}">0</text><text x="{r}" y="{lb}" text-anchor="end">{hours:.2} h</text>
<text x="5" y="{pad}">{max_rate:.2} Gbit/s</text>
<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{seeds}"/>
<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{peers}"/>
<polyline fill="none" stroke="#2ca02c" stroke-dasharray="4 3" points="{done}"/>
<text x="{lx}" y="40" fill="#d62728">from seeds</text>
<text x="{lx}" y="56" fill="#1f77b4">from peers</text>
<text x="{lx}" y="72" fill="#2ca02c">share completed (0-1)</text>
</svg>
"##,
        b = h - pad,
        r = w - pad,
        lb = h - pad + 16.0,
        lx = w - pad - 150.0,
        seeds = line(&|i| gbit(r.bins[i].from_seeds), max_rate),
        peers = line(&|i| gbit(r.bins[i].from_peers), max_rate),
        done = line(&|i| done_share[i], 1.0),
    );
    s
}
