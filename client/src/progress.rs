//! Progress reporting for long work: a redrawn bar on a terminal, periodic
//! structured log lines otherwise.

use crate::human;
use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Reports `done` of `total` bytes until `stop` is set. Run it on its own
/// thread; it returns once `stop` is set and the line is cleared.
pub fn report(label: &str, done: &AtomicU64, total: &AtomicU64, stop: &AtomicBool) {
    let terminal = std::io::stderr().is_terminal();
    let start = Instant::now();
    let tick = if terminal {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(2)
    };
    let mut last_log = Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::park_timeout(tick);
        if stop.load(Ordering::Acquire) {
            break;
        }
        let done = done.load(Ordering::Relaxed);
        let total = total.load(Ordering::Relaxed).max(1);
        let elapsed = start.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / elapsed;
        let eta = if rate > 0.0 {
            (total.saturating_sub(done)) as f64 / rate
        } else {
            0.0
        };
        if terminal {
            let width = 30;
            let filled = ((done as f64 / total as f64) * width as f64) as usize;
            let bar = format!(
                "{}{}",
                "=".repeat(filled.min(width)),
                " ".repeat(width - filled.min(width))
            );
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[2K{label} [{bar}] {} / {}  {}  ETA {}",
                human::bytes(done),
                human::bytes(total),
                human::rate(rate),
                human::duration(Duration::from_secs_f64(eta)),
            );
            let _ = err.flush();
        } else if last_log.elapsed() >= tick {
            last_log = Instant::now();
            tracing::info!(
                done_bytes = done,
                total_bytes = total,
                rate_bytes_per_sec = rate as u64,
                "{label}"
            );
        }
    }
    if terminal {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}
