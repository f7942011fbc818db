//! Deterministic swarm simulations driving the real scheduler: every peer
//! completes, the seed sends little more than one copy, and the last peer
//! finishes close to the fluid-model bound.

use shoal_scheduler::Config;
use shoal_scheduler::sim::{Node, Setup, fluid_bound, mbit, run};
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
        peers: vec![
            Node {
                up: mbit(peer_up_mbit),
                down: mbit(100.0)
            };
            n_peers
        ],
        latency: Duration::from_millis(20),
        peer_upload_slots: 4,
        seed_upload_slots: 2,
        seed_repeat_after: Some(Duration::from_secs(10)),
        peer_queue: 8,
        seed_queue: 16,
        scheduler: Config::default(),
        max_time: Duration::from_secs(3600),
        rng_seed: 1,
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

/// The targets at 100 peers. Peers serve the neediest requester
/// first (`NeedQueue`'s policy): without it the first peers finished at 40%
/// of the bound and the last at 1.22–1.26× (rng seeds 1–4), their download
/// links the limit once the rest were done. Now 1.12–1.18× over rng seeds
/// 1–8. The 1 s busy back-off keeps this simulation short.
#[test]
fn one_seed_hundred_peers() {
    let mut s = setup(100, 100.0, 20.0, 256);
    s.scheduler.busy_backoff = Duration::from_secs(1);
    check(s, 1.3, 1.2);
}
