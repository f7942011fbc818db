//! The CI launch scenario (`scenarios/ci.toml`): arrivals over time, a link
//! mix, players behind NATs with failing punches, churn, two seeds and the
//! frugal budget, on the sparse overlay. Everyone must complete, and the
//! origin egress and memory per player stay within what was measured.

use shoal_sim::{Scenario, output, run};

#[test]
fn the_ci_launch_completes_within_its_egress_and_memory() {
    let text = include_str!("../scenarios/ci.toml");
    let scenario = Scenario::parse(text).expect("the CI scenario parses");
    let setup = scenario.setup();
    let (_, before) = output::rss();
    let started = std::time::Instant::now();
    let report = run(setup.clone());
    let s = output::Summary::new(&setup, &report, started.elapsed(), before);
    print!("{}", s.text());
    assert!(
        report.all_complete(),
        "{} of {} completed",
        s.completed,
        s.players
    );
    assert!(s.quits > 0, "churn ran");
    assert!(s.punches_failed > 0 && s.punches_failed < s.punches_tried);
    // Seeds keep to the frugal budget except for last resorts: players
    // arriving late or behind NATs with no neighbour holding a chunk (4.6x
    // measured; a full mesh of players present at once stays at 1.0x).
    assert!(
        s.origin_copies < 6.0,
        "origin egress {:.2}x",
        s.origin_copies
    );
    assert!(s.from_peers_share > 0.9);
    // The bound is 16 KiB per player at 1 GiB; this payload is 64
    // chunks, so the bound holds with room.
    assert!(
        s.cost.bytes_per_player <= 16 << 10,
        "{} bytes per player",
        s.cost.bytes_per_player
    );
    // Every bin's bytes add up to what was uploaded.
    let binned: f64 = report
        .bins
        .iter()
        .map(|b| b.from_seeds + b.from_peers)
        .sum();
    let sent = (report.seed_uploaded + report.peer_uploaded) as f64;
    assert!(binned <= sent * 1.001, "{binned} binned, {sent} sent");
    let csv = output::csv(&report);
    assert!(csv.starts_with("start_secs,from_seeds_bytes,from_peers_bytes,completed,present\n"));
    assert!(output::svg(&report, "ci").contains("<polyline"));
}

#[test]
fn a_scenario_file_with_a_mistake_is_refused_with_its_reason() {
    let e = Scenario::parse("players = 10\n[swarm]\nmax_connections = 0").expect_err("bad");
    assert!(e.contains("max_connections"), "{e}");
}

/// The CI scenario at the 10,000 players: everyone completes and
/// the state per player stays bounded. (Its origin egress is far over the
/// budget, the last-resort leak bench/RESULTS.md describes: not asserted
/// here as a budget, only recorded.)
#[test]
fn ten_thousand_players_complete_in_bounded_memory() {
    let mut scenario =
        Scenario::parse(include_str!("../scenarios/ci.toml")).expect("the CI scenario parses");
    scenario.players = 10_000;
    let setup = scenario.setup();
    let (_, before) = output::rss();
    let started = std::time::Instant::now();
    let report = run(setup.clone());
    let s = output::Summary::new(&setup, &report, started.elapsed(), before);
    print!("{}", s.text());
    assert!(
        report.all_complete(),
        "{} of {} completed",
        s.completed,
        s.players
    );
    assert!(
        s.cost.bytes_per_player <= 16 << 10,
        "{} bytes per player",
        s.cost.bytes_per_player
    );
    assert!(s.from_peers_share > 0.9);
}
