//! Parameter sweep of the swarm simulator: `cargo run --release -p
//! shoal-sim --example sweep -- N SEED_MBIT BACKOFF_MS QUEUE WINDOW_S TARGET_QUEUE_S`
//! (env: `TIMEOUT` request timeout in s (default: the scheduler's), `DUPS` endgame duplicates, `SEEDQ` the seed's answers in progress (`max_uploads`, 16), `SLOTS` a player's upload slots).
use shoal_scheduler::Config;
use shoal_sim::{
    Churn, Node, Overlay, Player, Setup, fluid_bound, mbit, player_serve, run, seed_serve,
};
use std::time::Duration;

/// The variable `name` parsed, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or(0.0))
        .collect();
    let [n, seed_up, backoff_ms, queue, window, target_q] = args[..] else {
        eprintln!("usage: sweep N SEED_MBIT BACKOFF_MS QUEUE WINDOW_S TARGET_QUEUE_S");
        return;
    };
    let setup = Setup {
        chunk_lens: vec![1 << 20; 256],
        seeds: vec![Node {
            up: mbit(seed_up),
            down: 0.0,
        }],
        players: vec![
            Player::at_start(Node {
                up: mbit(20.0),
                down: mbit(100.0)
            });
            n as usize
        ],
        latency: Duration::from_millis(20),
        seed_serve: seed_serve(Some(Duration::from_secs_f64(window)), env_or("SEEDQ", 16)),
        peer_serve: player_serve(env_or("SLOTS", 4), queue as usize),
        scheduler: Config {
            busy_backoff: Duration::from_millis(backoff_ms as u64),
            request_timeout: Duration::from_secs(env_or(
                "TIMEOUT",
                Config::default().request_timeout.as_secs(),
            )),
            endgame_duplicates: env_or("DUPS", 1),
            target_queue: Duration::from_secs_f64(target_q),
            ..Config::default()
        },
        max_time: Duration::from_secs(3600),
        rng_seed: env_or("RNG", 1),
        // BUDGET: copies of the payload (`inf`: unlimited), FILL=1: seeds fill in.
        origin_budget: std::env::var("BUDGET").ok().and_then(|b| b.parse().ok()),
        seeds_fill: env_or("FILL", 0) == 1,
        overlay: Overlay::full_mesh(),
        churn: Churn::default(),
        efficiency: 1.0,
        heartbeat: Duration::from_secs(10),
        bin: Duration::from_secs(1),
    };
    let bound = fluid_bound(&setup);
    let sum_up: f64 = setup.players.iter().map(|p| p.link.up).sum();
    let r = run(setup);
    if std::env::var("TIMELINE").is_ok() {
        let done: Vec<f64> = r
            .completion
            .iter()
            .flatten()
            .map(|d| d.as_secs_f64())
            .collect();
        for (s, b) in r.bins.iter().map(|b| b.from_peers).enumerate() {
            let finished = done.iter().filter(|&&t| t < (s + 1) as f64).count();
            println!(
                "t={s:4} peer upload {:.2} of capacity, {finished} done",
                b / sum_up
            );
        }
    }
    let m = r.makespan().map_or(f64::NAN, |d| d.as_secs_f64());
    println!(
        "n={n} seed={seed_up} backoff={backoff_ms}ms queue={queue} window={window}s tq={target_q}: makespan {:.3}x, seed {:.3}x, peer upload utilisation {:.2}, wasted {} MiB",
        m / bound.as_secs_f64(),
        r.seed_uploaded as f64 / r.payload as f64,
        r.peer_uploaded as f64 / (sum_up * m),
        r.wasted >> 20
    );
}
