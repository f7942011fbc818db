use super::*;

const S: Duration = Duration::from_secs(1);

fn drain(d: &mut Download) -> Vec<Action> {
    std::iter::from_fn(|| d.poll()).collect()
}

fn requests(actions: &[Action]) -> Vec<(u32, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Request { peer, chunk, .. } => Some((peer.0, *chunk)),
            _ => None,
        })
        .collect()
}

fn new(n: u32) -> Download {
    Download::new(
        Config::default(),
        vec![100; n as usize],
        Bitfield::new(n),
        7,
    )
}

#[test]
fn prefers_peers_and_uses_seeds_only_for_what_peers_lack() {
    let mut d = new(4);
    d.handle_peer(S, PeerIdx(1), PeerKind::Peer);
    let mut has = Bitfield::new(4);
    has.set(0);
    has.set(1);
    d.handle_bitfield(S, PeerIdx(1), &has);
    d.handle_peer(S, PeerIdx(9), PeerKind::Seed);
    let reqs = requests(&drain(&mut d));
    let from_peer: Vec<u32> = reqs.iter().filter(|r| r.0 == 1).map(|r| r.1).collect();
    let from_seed: Vec<u32> = reqs.iter().filter(|r| r.0 == 9).map(|r| r.1).collect();
    assert_eq!(from_peer.len(), 2);
    assert!(
        from_seed.iter().all(|c| *c >= 2),
        "seed asked only for chunks no peer has: {reqs:?}"
    );
    assert!(!from_seed.is_empty());
}

#[test]
fn a_seed_with_budget_to_spare_is_asked_for_what_peers_hold_until_it_refuses() {
    // Chunks of 1 MiB, so a new peer's pipeline takes a few, not all.
    let mut d = Download::new(Config::default(), vec![1 << 20; 8], Bitfield::new(8), 7);
    d.handle_peer(S, PeerIdx(1), PeerKind::Peer);
    d.handle_bitfield(S, PeerIdx(1), &Bitfield::full(8));
    d.handle_peer(S, PeerIdx(9), PeerKind::Seed);
    assert!(
        requests(&drain(&mut d)).iter().all(|r| r.0 == 1),
        "a frugal seed is not asked for what a peer holds"
    );
    d.handle_seed_fills(S, PeerIdx(9));
    let to_seed: Vec<u32> = requests(&drain(&mut d))
        .iter()
        .filter(|r| r.0 == 9)
        .map(|r| r.1)
        .collect();
    assert_eq!(to_seed.len(), 2, "the seed's pipeline fills: {to_seed:?}");
    // It refuses one: its budget is spent; the other arrives.
    d.handle_sent_elsewhere(2 * S, PeerIdx(9), to_seed[0]);
    d.handle_chunk(2 * S, PeerIdx(9), to_seed[1], true);
    assert!(
        requests(&drain(&mut d)).iter().all(|r| r.0 == 1),
        "back to asking it only for what no peer holds"
    );
}

#[test]
fn rarest_first() {
    let mut d = new(3);
    for p in 1..=3 {
        d.handle_peer(S, PeerIdx(p), PeerKind::Peer);
    }
    // chunk 2 only at peer 1; chunks 0 and 1 everywhere
    let all = Bitfield::full(3);
    let mut common = Bitfield::new(3);
    common.set(0);
    common.set(1);
    d.handle_bitfield(S, PeerIdx(1), &all);
    drain(&mut d);
    // peer 1 got asked first, before others announced: now make a fresh download
    let mut d = new(3);
    for p in 1..=3 {
        d.handle_peer(S, PeerIdx(p), PeerKind::Peer);
    }
    d.handle_bitfield(S, PeerIdx(2), &common);
    d.handle_bitfield(S, PeerIdx(3), &common);
    drain(&mut d);
    d.handle_bitfield(S, PeerIdx(1), &all);
    let reqs = requests(&drain(&mut d));
    assert_eq!(
        reqs.first(),
        Some(&(1, 2)),
        "the rare chunk goes first: {reqs:?}"
    );
}

#[test]
fn bad_chunks_exclude_then_ban() {
    let mut d = new(3);
    d.handle_peer(S, PeerIdx(1), PeerKind::Peer);
    d.handle_peer(S, PeerIdx(2), PeerKind::Peer);
    d.handle_bitfield(S, PeerIdx(1), &Bitfield::full(3));
    let first = requests(&drain(&mut d));
    assert!(!first.is_empty());
    for (_, chunk) in &first {
        d.handle_chunk(S, PeerIdx(1), *chunk, false);
    }
    let mut strikes = first.len() as u32;
    // keep feeding bad chunks until the ban
    while strikes < 3 {
        let reqs = requests(&drain(&mut d));
        let (_, chunk) = reqs
            .iter()
            .find(|r| r.0 == 1)
            .copied()
            .expect("peer 1 is asked again for other chunks");
        d.handle_chunk(S, PeerIdx(1), chunk, false);
        strikes += 1;
    }
    let actions = drain(&mut d);
    assert!(
        actions.contains(&Action::Ban { peer: PeerIdx(1) }),
        "{actions:?}"
    );
    // peer 2 gets the work; peer 1 is never used again
    d.handle_bitfield(S, PeerIdx(2), &Bitfield::full(3));
    d.handle_peer(S, PeerIdx(1), PeerKind::Peer);
    let reqs = requests(&drain(&mut d));
    assert!(
        reqs.iter().all(|r| r.0 == 2) && !reqs.is_empty(),
        "{reqs:?}"
    );
    for (_, c) in reqs {
        d.handle_chunk(2 * S, PeerIdx(2), c, true);
    }
    while !d.is_complete() {
        let reqs = requests(&drain(&mut d));
        assert!(!reqs.is_empty());
        for (_, c) in reqs {
            d.handle_chunk(3 * S, PeerIdx(2), c, true);
        }
    }
    assert!(drain(&mut d).contains(&Action::Complete));
    assert_eq!(d.stats().from_peers, 300);
    assert!(d.stats().wasted >= 300);
}

#[test]
fn timeouts_retry_elsewhere_and_unlock_seeds() {
    let mut d = new(1);
    d.handle_peer(S, PeerIdx(1), PeerKind::Peer);
    d.handle_bitfield(S, PeerIdx(1), &Bitfield::full(1));
    d.handle_peer(S, PeerIdx(9), PeerKind::Seed);
    assert_eq!(requests(&drain(&mut d)), [(1, 0)]);
    // The endgame check comes first; no other peer has the chunk.
    let check = d.poll_timeout().unwrap();
    assert_eq!(check, S + Config::default().endgame_after);
    d.handle_timeout(check);
    assert_eq!(requests(&drain(&mut d)), []);
    let deadline = d.poll_timeout().unwrap();
    assert_eq!(deadline, S + Config::default().request_timeout);
    d.handle_timeout(deadline);
    let actions = drain(&mut d);
    assert!(actions.contains(&Action::Cancel {
        peer: PeerIdx(1),
        chunk: 0
    }));
    assert!(
        requests(&actions).contains(&(9, 0)),
        "slow chunk goes to the seed: {actions:?}"
    );
}

#[test]
fn endgame_duplicates_and_cancels() {
    let mut d = new(1);
    d.handle_peer(S, PeerIdx(1), PeerKind::Peer);
    d.handle_peer(S, PeerIdx(2), PeerKind::Peer);
    d.handle_bitfield(S, PeerIdx(1), &Bitfield::full(1));
    d.handle_bitfield(S, PeerIdx(2), &Bitfield::full(1));
    let first = requests(&drain(&mut d));
    assert_eq!(first.len(), 1, "no duplicate at once: {first:?}");
    assert_eq!(d.poll_timeout(), Some(S + Config::default().endgame_after));
    d.handle_timeout(S + Config::default().endgame_after);
    let second = requests(&drain(&mut d));
    assert_eq!(second.len(), 1, "a late request is duplicated: {second:?}");
    assert_ne!(first[0].0, second[0].0, "on the other peer");
    let reqs = [first[0], second[0]];
    d.handle_chunk(4 * S, PeerIdx(reqs[0].0), 0, true);
    let actions = drain(&mut d);
    assert!(actions.contains(&Action::Cancel {
        peer: PeerIdx(reqs[1].0),
        chunk: 0
    }));
    assert!(actions.contains(&Action::Complete));
    // the loser's late copy is ignored, and counted as wasted
    d.handle_chunk(5 * S, PeerIdx(reqs[1].0), 0, true);
    assert_eq!(d.stats().have_bytes, 100);
    assert_eq!(d.stats().wasted, 100);
}

#[test]
fn an_endgame_copy_is_asked_only_once_the_request_is_overdue() {
    // Three chunks: peer 1 holds 0 and 1, peer 2 holds 2; both asked at S.
    // Both deliver one chunk at S + 10 s (10 B/s), then peer 2 says it has
    // chunk 1 too, still in flight at peer 1.
    let mut d = new(3);
    d.handle_peer(S, PeerIdx(1), PeerKind::Peer);
    d.handle_peer(S, PeerIdx(2), PeerKind::Peer);
    let mut first = Bitfield::new(3);
    first.set(0);
    first.set(1);
    let mut last = Bitfield::new(3);
    last.set(2);
    d.handle_bitfield(S, PeerIdx(1), &first);
    d.handle_bitfield(S, PeerIdx(2), &last);
    let mut asked = requests(&drain(&mut d));
    asked.sort_unstable();
    assert_eq!(asked, [(1, 0), (1, 1), (2, 2)]);
    let now = S + 10 * S;
    d.handle_chunk(now, PeerIdx(1), 0, true);
    d.handle_chunk(now, PeerIdx(2), 2, true);
    d.handle_have(now, PeerIdx(2), 1);
    // Peer 1 delivers at 10 B/s: chunk 1 is due about now, and a copy
    // from peer 2 (as fast) would only be sent in full for nothing.
    assert_eq!(requests(&drain(&mut d)), []);
    // Twice its service time after it was sent, it is overdue.
    let overdue = S + 20 * S;
    assert_eq!(d.poll_timeout(), Some(overdue));
    d.handle_timeout(overdue);
    assert_eq!(requests(&drain(&mut d)), [(2, 1)]);
    // Whichever copy loses is counted as wasted.
    d.handle_chunk(overdue + S, PeerIdx(1), 1, true);
    d.handle_chunk(overdue + 2 * S, PeerIdx(2), 1, true);
    assert!(d.is_complete());
    assert_eq!(d.stats().wasted, 100);
}

#[test]
fn endgame_copies_in_flight_are_capped() {
    let config = Config {
        initial_in_flight: 4,
        ..Config::default()
    };
    let mut d = Download::new(config.clone(), vec![100; 4], Bitfield::new(4), 7);
    d.handle_peer(S, PeerIdx(1), PeerKind::Peer);
    d.handle_bitfield(S, PeerIdx(1), &Bitfield::full(4));
    assert_eq!(requests(&drain(&mut d)).len(), 4);
    d.handle_peer(S, PeerIdx(2), PeerKind::Peer);
    d.handle_bitfield(S, PeerIdx(2), &Bitfield::full(4));
    assert_eq!(requests(&drain(&mut d)), [], "nothing is overdue yet");
    let late = S + config.endgame_after;
    d.handle_timeout(late);
    let copies = requests(&drain(&mut d));
    assert_eq!(copies.len(), config.endgame_copies, "{copies:?}");
    assert!(copies.iter().all(|&(peer, _)| peer == 2));
    // One copy's chunk arrives from peer 1 after 3 s: the copy at peer 2
    // is cancelled, but it is still on its way, so it keeps its place.
    d.handle_chunk(late + S, PeerIdx(1), copies[0].1, true);
    assert_eq!(requests(&drain(&mut d)), []);
    // Another chunk is overdue by the latency just measured (sent at S,
    // 2 x 3 s), and the cap is still full.
    let overdue = d.poll_timeout().unwrap();
    assert_eq!(overdue, S + 6 * S);
    d.handle_timeout(overdue);
    assert_eq!(requests(&drain(&mut d)), []);
    // The loser arrives, wasted; its place goes to the overdue chunk.
    d.handle_chunk(overdue + S, PeerIdx(2), copies[0].1, true);
    assert_eq!(d.stats().wasted, 100);
    let next = requests(&drain(&mut d));
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(!copies.contains(&next[0]));
}

#[test]
fn a_chunk_held_by_a_much_slower_peer_is_copied_whatever_the_cap() {
    let config = Config {
        endgame_copies: 0,
        ..Config::default()
    };
    let mut d = Download::new(config, vec![100; 4], Bitfield::new(4), 7);
    let mut holds = [Bitfield::new(4), Bitfield::new(4), Bitfield::new(4)];
    holds[0].set(0);
    holds[0].set(1);
    holds[1].set(2);
    holds[2].set(3);
    for (i, has) in holds.iter().enumerate() {
        let peer = PeerIdx(i as u32 + 1);
        d.handle_peer(S, peer, PeerKind::Peer);
        d.handle_bitfield(S, peer, has);
    }
    assert_eq!(requests(&drain(&mut d)).len(), 4);
    // Peers 2 and 3 answer in 1 s, peer 1 in 10 s: a slow uplink.
    d.handle_chunk(2 * S, PeerIdx(2), 2, true);
    d.handle_chunk(2 * S, PeerIdx(3), 3, true);
    d.handle_chunk(11 * S, PeerIdx(1), 0, true);
    assert_eq!(requests(&drain(&mut d)), []);
    // Chunk 1, at peer 1 since S, is overdue by the typical latency.
    d.handle_have(11 * S, PeerIdx(2), 1);
    assert_eq!(requests(&drain(&mut d)), [(2, 1)]);
}

#[test]
fn resume_skips_present_chunks() {
    let mut have = Bitfield::new(3);
    have.set(0);
    have.set(2);
    let mut d = Download::new(Config::default(), vec![10; 3], have, 1);
    d.handle_peer(S, PeerIdx(1), PeerKind::Seed);
    assert_eq!(requests(&drain(&mut d)), [(1, 1)]);
    let mut done = Download::new(Config::default(), vec![10; 2], Bitfield::full(2), 1);
    assert_eq!(drain(&mut done), [Action::Complete]);
}

#[test]
fn seed_refusal_hides_the_chunk_then_restores_it() {
    let mut d = new(1);
    d.handle_peer(S, PeerIdx(9), PeerKind::Seed);
    assert_eq!(requests(&drain(&mut d)), [(9, 0)]);
    d.handle_failed(S, PeerIdx(9), 0);
    assert!(
        requests(&drain(&mut d)).is_empty(),
        "not asked again at once"
    );
    let retry = d.poll_timeout().unwrap();
    assert_eq!(retry, S + Config::default().seed_retry_after);
    d.handle_timeout(retry);
    assert_eq!(
        requests(&drain(&mut d)),
        [(9, 0)],
        "asked again after the retry period"
    );
}

fn last_resorts(actions: &[Action]) -> Vec<bool> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Request { last_resort, .. } => Some(*last_resort),
            _ => None,
        })
        .collect()
}

#[test]
fn a_chunk_sent_out_of_reach_is_asked_of_the_seed_as_a_last_resort() {
    // Alone with the seed: the chunk went to someone we cannot reach.
    let mut d = new(1);
    d.handle_peer(S, PeerIdx(9), PeerKind::Seed);
    assert_eq!(last_resorts(&drain(&mut d)), [false]);
    d.handle_sent_elsewhere(S, PeerIdx(9), 0);
    d.handle_timeout(d.poll_timeout().unwrap());
    assert_eq!(last_resorts(&drain(&mut d)), [true], "no peer connected");

    // With a peer connected, it may still be on its way there: asked
    // normally until the third refusal, and never while a peer holds it.
    let mut d = new(2);
    d.handle_peer(S, PeerIdx(9), PeerKind::Seed);
    d.handle_peer(S, PeerIdx(1), PeerKind::Peer);
    let mut asked = requests(&drain(&mut d));
    asked.sort();
    assert_eq!(asked, [(9, 0), (9, 1)]);
    let mut one = Bitfield::new(2);
    one.set(1);
    d.handle_sent_elsewhere(S, PeerIdx(9), 1);
    d.handle_bitfield(S, PeerIdx(1), &one);
    assert_eq!(requests(&drain(&mut d)), [(1, 1)], "the holder is asked");
    let mut seen = Vec::new();
    let mut now = S;
    for _ in 0..LAST_RESORT_AFTER {
        d.handle_sent_elsewhere(now, PeerIdx(9), 0);
        now = d.poll_timeout().unwrap();
        d.handle_timeout(now);
        let again = drain(&mut d);
        assert_eq!(requests(&again), [(9, 0)]);
        seen.extend(last_resorts(&again));
    }
    assert_eq!(seen, [false, false, true]);
    let stats = d.stats();
    assert_eq!(stats.seed_asks_unheld, 5, "2 at first, then 3 for chunk 0");
    assert_eq!(stats.seed_asks_sent_elsewhere, 3);
    assert_eq!(stats.seed_asks_peers_failed, 0);
}

#[test]
fn disconnect_releases_requests() {
    let mut d = new(2);
    d.handle_peer(S, PeerIdx(1), PeerKind::Peer);
    d.handle_bitfield(S, PeerIdx(1), &Bitfield::full(2));
    assert_eq!(requests(&drain(&mut d)).len(), 2);
    d.handle_disconnect(S, PeerIdx(1));
    d.handle_peer(S, PeerIdx(9), PeerKind::Seed);
    assert_eq!(
        requests(&drain(&mut d)).len(),
        2,
        "both chunks go to the seed now"
    );
    assert_eq!(d.stats().in_flight, 2);
}

#[test]
fn a_peer_busy_again_and_again_is_asked_ever_less_often_until_it_delivers() {
    let mut d = new(64);
    d.handle_peer(S, PeerIdx(1), PeerKind::Peer);
    d.handle_bitfield(S, PeerIdx(1), &Bitfield::full(64));
    let ms = Duration::from_millis;
    let base = Config::default().busy_backoff;
    let mut now = S;
    let mut waits = Vec::new();
    for _ in 0..6 {
        let asked = requests(&drain(&mut d));
        assert!(!asked.is_empty(), "asked again once the backoff ran out");
        for (_, chunk) in &asked {
            d.handle_busy(now, PeerIdx(1), *chunk);
        }
        let until = d.poll_timeout().expect("a backoff to wait out");
        waits.push(until - now);
        // Not asked before the backoff ends.
        d.handle_timeout(until - ms(1));
        assert!(requests(&drain(&mut d)).is_empty());
        now = until;
        d.handle_timeout(now);
    }
    // A pipeline refused at once counts once: 300 ms, doubling each time
    // it is found busy again, capped at busy_backoff_max.
    assert_eq!(waits[0], base, "{waits:?}");
    assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
    assert_eq!(
        *waits.last().unwrap(),
        Config::default().busy_backoff_max,
        "{waits:?}"
    );
    // A delivery resets it.
    let asked = requests(&drain(&mut d));
    d.handle_chunk(now, PeerIdx(1), asked[0].1, true);
    for (_, chunk) in asked.iter().skip(1) {
        d.handle_busy(now, PeerIdx(1), *chunk);
    }
    drain(&mut d);
    assert!(
        d.poll_timeout().is_some_and(|t| t - now <= base * 2),
        "reset by the delivery"
    );
}
