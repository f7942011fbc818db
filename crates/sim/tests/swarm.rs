//! Deterministic swarm simulations driving the real scheduler and the real
//! serving policy: every peer completes, the seed sends little more than
//! one copy, and the last peer finishes close to the fluid-model bound.

use shoal_scheduler::Config;
use shoal_sim::{
    Churn, Node, Overlay, Player, Setup, fluid_bound, mbit, player_serve, run, seed_serve,
};
use std::time::Duration;

/// 1 MiB chunks, 20 ms one-way latency, peers at `peer_up_mbit` up and
/// 100 Mbit/s down, one seed at `seed_up_mbit`.
fn setup(n_peers: usize, seed_up_mbit: f64, peer_up_mbit: f64, chunks: usize) -> Setup {
    Setup {
        chunk_lens: vec![1 << 20; chunks],
        seeds: vec![Node {
            up: mbit(seed_up_mbit),
            down: 0.0,
        }],
        players: vec![
            Player::at_start(Node {
                up: mbit(peer_up_mbit),
                down: mbit(100.0)
            });
            n_peers
        ],
        latency: Duration::from_millis(20),
        seed_serve: seed_serve(Some(Duration::from_secs(10)), 16),
        peer_serve: player_serve(4, 8),
        scheduler: Config::default(),
        max_time: Duration::from_secs(3600),
        rng_seed: 1,
        origin_budget: None,
        seeds_fill: false,
        overlay: Overlay::full_mesh(),
        churn: Churn::default(),
        efficiency: 1.0,
        heartbeat: Duration::from_secs(10),
        bin: Duration::from_secs(1),
    }
}

fn check(setup: Setup, max_seed_ratio: f64, max_time_ratio: f64) {
    let bound = fluid_bound(&setup);
    let report = run(setup);
    assert!(
        report.all_complete(),
        "not every peer finished: {:?}",
        report.completion
    );
    let makespan = report.makespan().expect("complete");
    let seed_ratio = report.seed_uploaded as f64 / report.payload as f64;
    let time_ratio = makespan.as_secs_f64() / bound.as_secs_f64();
    println!(
        "payload {} MiB, bound {:.1}s, makespan {:.1}s ({time_ratio:.3}x), seed sent {seed_ratio:.3}x payload, wasted {} KiB, {} events",
        report.payload >> 20,
        bound.as_secs_f64(),
        makespan.as_secs_f64(),
        report.wasted >> 10,
        report.events
    );
    assert!(
        seed_ratio <= max_seed_ratio,
        "seed uploaded {seed_ratio:.3}x the payload"
    );
    assert!(
        time_ratio <= max_time_ratio,
        "makespan {time_ratio:.3}x the fluid bound"
    );
}

/// The targets: seed ≤ 1.3× the payload, makespan ≤ 1.2× the bound.
/// (Seed 50 Mbit/s: with a seed at 100 Mbit/s and 20 peers at 20 Mbit/s,
/// capping the seed at 1.3× the payload alone forces ≥ 1.17× the bound.)
#[test]
fn one_seed_twenty_peers() {
    check(setup(20, 50.0, 20.0, 256), 1.3, 1.2);
}

/// 100 peers. Peers serve the neediest requester first (`NeedQueue`'s
/// policy). Issue 4's target here was 1.2× the bound, which the simulator
/// met (1.12–1.18× over rng seeds 1–8) with a model of the serving side
/// that real nodes never ran (`Upload`: a seed answering 2 requests at a
/// time from a least-served-first queue of 16, cancels cutting transfers).
/// Since it runs the real policy (`Serve`, with the seed's 16 answers in
/// progress, `FairShare` under backlog, and answers that are never taken
/// back), it measures 1.26–1.29× (rng seeds 1–4; 1.39× with 4 answers in
/// progress, 1.46× with 2): this bound guards that figure; the gap to 1.2×
/// is the real policy's, for the launch-scale work (issue 15) to close. The
/// 1 s busy back-off keeps this simulation short.
#[test]
fn one_seed_hundred_peers() {
    let mut s = setup(100, 100.0, 20.0, 256);
    s.scheduler.busy_backoff = Duration::from_secs(1);
    check(s, 1.3, 1.35);
}
