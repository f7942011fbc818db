//! The download's progress: a redrawn line on a terminal (bytes, rate,
//! share from peers and seeds, peers connected, ETA), structured log lines
//! otherwise.

use crate::human;
use shoal_net::download::Counters;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Draws progress until aborted; `total` is what this run must fetch (or,
/// for `download: false`, read: only bytes, rate and ETA are shown).
pub async fn show(label: String, counters: Arc<Counters>, total: u64, download: bool) {
    let terminal = std::io::stderr().is_terminal();
    let tick = if terminal {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    let start = Instant::now();
    // The rate is measured over a sliding window of about five seconds.
    let mut window: std::collections::VecDeque<(Instant, u64)> = Default::default();
    loop {
        tokio::time::sleep(tick).await;
        let peers = counters.from_peers.load(Ordering::Relaxed);
        let seeds = counters.from_seeds.load(Ordering::Relaxed);
        let done = peers + seeds;
        window.push_back((Instant::now(), done));
        while window.len() > 2 && window[0].0.elapsed() > Duration::from_secs(5) {
            window.pop_front();
        }
        let (t0, d0) = window[0];
        let rate = (done - d0) as f64 / t0.elapsed().as_secs_f64().max(1e-3);
        let left = total.saturating_sub(done);
        let eta = if rate > 0.0 {
            human::duration(Duration::from_secs_f64(left as f64 / rate))
        } else {
            "?".into()
        };
        let from_peers = if done > 0 {
            peers as f64 * 100.0 / done as f64
        } else {
            0.0
        };
        let connected = counters.connected.load(Ordering::Relaxed);
        if terminal {
            let pct = if total > 0 {
                done as f64 * 100.0 / total as f64
            } else {
                100.0
            };
            let swarm = if download {
                format!("  {from_peers:.0}% from peers  {connected} connected")
            } else {
                String::new()
            };
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[2K{label} {pct:5.1}%  {} / {}  {}{swarm}  ETA {eta}",
                human::bytes(done),
                human::bytes(total),
                human::rate(rate),
            );
            let _ = err.flush();
        } else {
            tracing::info!(
                done_bytes = done,
                total_bytes = total,
                from_peers_bytes = peers,
                from_seeds_bytes = seeds,
                rate_bytes_per_sec = rate as u64,
                connected,
                elapsed_secs = start.elapsed().as_secs(),
                "{label}"
            );
        }
    }
}

/// Clears the progress line (on a terminal).
pub fn clear() {
    if std::io::stderr().is_terminal() {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}
