//! The serving policy case by case, then many nodes on virtual time.

use super::*;
use crate::Rng;

const MIB: u32 = 1 << 20;

fn config() -> ServeConfig {
    ServeConfig {
        super_seed: None,
        chunks_over_relay: false,
        capped: false,
        queue: 0,
        slots: 4,
        max_uploads: 2,
        max_backlog: Duration::from_secs(2),
    }
}

fn ask(from: u32, chunk: u32) -> Ask<u32, u32> {
    Ask {
        from,
        chunk,
        len: Some(MIB),
        last_resort: false,
        over_relay: false,
        held: 0,
        budget: Budget::Window,
    }
}

fn at(s: u64) -> Duration {
    Duration::from_secs(s)
}

const ANYONE: fn(&u32, &u32) -> bool = |_, _| true;
const IDLE: Duration = Duration::ZERO;

type S = Serve<u32, u32, u32, &'static str>;

#[test]
fn the_token_gate_and_relays_come_first() {
    let mut s = S::new(config());
    let nobody = |_: &u32, _: &u32| false;
    assert_eq!(
        s.request(at(0), ask(1, 0), 1, "a", IDLE, nobody),
        [Out::Refuse("a", Refusal::Unauthorized)]
    );
    let relayed = Ask {
        over_relay: true,
        ..ask(1, 0)
    };
    assert_eq!(
        s.request(at(0), relayed.clone(), 2, "b", IDLE, ANYONE),
        [Out::Refuse("b", Refusal::OverRelay)]
    );
    let mut allowed = S::new(ServeConfig {
        chunks_over_relay: true,
        ..config()
    });
    assert_eq!(
        allowed.request(at(0), relayed, 3, "c", IDLE, ANYONE),
        [Out::Answer("c")]
    );
}

#[test]
fn answers_in_progress_are_bounded_by_weight_and_backlog() {
    let mut s = S::new(config());
    assert_eq!(
        s.request(at(0), ask(1, 0), 1, "a", IDLE, ANYONE),
        [Out::Answer("a")]
    );
    assert_eq!(
        s.request(at(0), ask(2, 1), 2, "b", IDLE, ANYONE),
        [Out::Answer("b")]
    );
    // two full chunks in progress: the third hears Busy
    assert_eq!(
        s.request(at(0), ask(3, 2), 3, "c", IDLE, ANYONE),
        [Out::Refuse("c", Refusal::Busy)]
    );
    // ... but a small chunk still fits? No: the budget is spent.
    let small = Ask {
        len: Some(16 << 10),
        ..ask(3, 3)
    };
    assert_eq!(
        s.request(at(0), small.clone(), 4, "d", IDLE, ANYONE),
        [Out::Refuse("d", Refusal::Busy)]
    );
    // one finishes: its weight is free
    s.finished(&1);
    assert_eq!(
        s.request(at(1), small.clone(), 5, "e", IDLE, ANYONE),
        [Out::Answer("e")]
    );
    // 63 more small ones fit in the full chunk's share, the 65th does not
    let mut answered = 1;
    for id in 6..80 {
        if s.request(at(1), small.clone(), id, "f", IDLE, ANYONE) == [Out::Answer("f")] {
            answered += 1;
        }
    }
    assert_eq!(answered, 64);
    // promised upload beyond max_backlog: Busy whatever the weight
    let mut fresh = S::new(config());
    assert_eq!(
        fresh.request(at(0), ask(1, 0), 1, "g", at(3), ANYONE),
        [Out::Refuse("g", Refusal::Busy)]
    );
}

#[test]
fn a_super_seed_sends_each_chunk_once_per_window_and_shares_fairly() {
    let mut s = S::new(ServeConfig {
        super_seed: Some(at(10)),
        max_uploads: 100,
        ..config()
    });
    assert_eq!(
        s.request(at(0), ask(1, 7), 1, "a", IDLE, ANYONE),
        [Out::Answer("a")]
    );
    // another requester within the window: sent elsewhere
    assert_eq!(
        s.request(at(5), ask(2, 7), 2, "b", IDLE, ANYONE),
        [Out::Refuse("b", Refusal::SentElsewhere)]
    );
    // the one it went to lost it: it gets it again
    assert_eq!(
        s.request(at(5), ask(1, 7), 3, "c", IDLE, ANYONE),
        [Out::Answer("c")]
    );
    // a requester that reached no peer holding it: a last resort
    let last = Ask {
        last_resort: true,
        ..ask(3, 7)
    };
    assert_eq!(
        s.request(at(6), last, 4, "d", IDLE, ANYONE),
        [Out::LastResort, Out::Answer("d")]
    );
    // after the window: anyone
    assert_eq!(
        s.request(at(20), ask(2, 7), 5, "e", IDLE, ANYONE),
        [Out::Answer("e")]
    );

    // Contended (backlog over half the bound): a requester served more
    // than the least-served recent one plus one waits its turn.
    let mut f = S::new(ServeConfig {
        super_seed: Some(at(10)),
        max_uploads: 100,
        ..config()
    });
    let contended = at(1) + Duration::from_millis(500);
    assert_eq!(
        f.request(at(0), ask(9, 100), 1, "x", IDLE, ANYONE),
        [Out::Answer("x")]
    );
    for (id, chunk) in (2..5).zip(0..) {
        let o = f.request(at(0), ask(1, chunk), id, "a", IDLE, ANYONE);
        assert_eq!(o, [Out::Answer("a")]);
    }
    // requester 1 has 3 answers, requester 9 has 1: 1 hears Busy
    assert_eq!(
        f.request(at(1), ask(1, 50), 10, "busy", contended, ANYONE),
        [Out::Refuse("busy", Refusal::Busy)]
    );
    assert_eq!(
        f.request(at(1), ask(9, 51), 11, "ok", contended, ANYONE),
        [Out::Answer("ok")]
    );
}

#[test]
fn the_origin_budget_decides_whether_a_chunk_goes_again() {
    let seed = || {
        S::new(ServeConfig {
            super_seed: Some(at(10)),
            max_uploads: 100,
            ..config()
        })
    };
    let with = |from, chunk, budget| Ask {
        budget,
        ..ask(from, chunk)
    };
    let busy = Duration::from_millis(1500); // over half the 2 s bound
    // Spare: inside the window, an idle upload sends it again...
    let mut s = seed();
    assert_eq!(
        s.request(at(0), with(1, 7, Budget::Spare), 1, "a", IDLE, ANYONE),
        [Out::Answer("a")]
    );
    assert_eq!(
        s.request(at(1), with(2, 7, Budget::Spare), 2, "b", IDLE, ANYONE),
        [Out::Answer("b")]
    );
    // ... a busy one says Busy: ask again (not "get it elsewhere", which
    // would tell the requester this seed's budget is spent)
    assert_eq!(
        s.request(at(2), with(3, 7, Budget::Spare), 3, "c", busy, ANYONE),
        [Out::Refuse("c", Refusal::Busy)]
    );
    // Spent: never again to another requester, even long after the window...
    let mut s = seed();
    assert_eq!(
        s.request(at(0), with(1, 7, Budget::Spent), 1, "a", IDLE, ANYONE),
        [Out::Answer("a")],
        "a first copy always goes"
    );
    assert_eq!(
        s.request(at(100), with(2, 7, Budget::Spent), 2, "b", IDLE, ANYONE),
        [Out::Refuse("b", Refusal::SentElsewhere)]
    );
    // ... but to the one that lost it, and as a last resort
    assert_eq!(
        s.request(at(100), with(1, 7, Budget::Spent), 3, "c", IDLE, ANYONE),
        [Out::Answer("c")]
    );
    let last = Ask {
        last_resort: true,
        ..with(2, 7, Budget::Spent)
    };
    assert_eq!(
        s.request(at(101), last, 4, "d", IDLE, ANYONE),
        [Out::LastResort, Out::Answer("d")]
    );
    // Window (no budget known): after the window, anyone
    assert_eq!(
        s.request(at(200), with(3, 7, Budget::Window), 5, "e", IDLE, ANYONE),
        [Out::Answer("e")]
    );
    // Not a super-seed: budgets do not apply
    let mut plain = S::new(config());
    for (id, from) in [(1, 1), (2, 2)] {
        assert_eq!(
            plain.request(at(0), with(from, 7, Budget::Spent), id, "x", IDLE, ANYONE),
            [Out::Answer("x")]
        );
        plain.finished(&id);
    }
}

fn queueing() -> ServeConfig {
    ServeConfig {
        capped: true,
        queue: 2,
        slots: 1,
        ..config()
    }
}

#[test]
fn a_capped_player_serves_the_neediest_waiting_request_first() {
    let mut s = S::new(queueing());
    let held = |from, chunk, held| Ask {
        held,
        ..ask(from, chunk)
    };
    assert_eq!(
        s.request(at(0), held(1, 0, 500), 1, "a", IDLE, ANYONE),
        [Out::Answer("a")]
    );
    // the slot is taken: these wait
    assert_eq!(s.request(at(0), held(2, 1, 400), 2, "b", IDLE, ANYONE), []);
    assert_eq!(s.request(at(0), held(3, 2, 10), 3, "c", IDLE, ANYONE), []);
    assert_eq!((s.answering(), s.waiting()), (1, 2));
    // full: one holding about as much as the best-off waiter is refused...
    assert_eq!(
        s.request(at(0), held(4, 3, 390), 4, "d", IDLE, ANYONE),
        [Out::Refuse("d", Refusal::Busy)]
    );
    // ... a far needier one displaces it
    assert_eq!(
        s.request(at(0), held(5, 4, 0), 5, "e", IDLE, ANYONE),
        [Out::Refuse("b", Refusal::Busy)]
    );
    // the slot frees: the neediest goes next, then the next neediest
    assert_eq!(s.sent(at(1), IDLE, ANYONE), [Out::Answer("e")]);
    // a waiter whose token lapsed while it waited hears Unauthorized
    let lapsed = |from: &u32, _: &u32| *from != 3;
    assert_eq!(
        s.sent(at(2), IDLE, lapsed),
        [Out::Refuse("c", Refusal::Unauthorized)]
    );
    assert_eq!(s.waiting(), 0);
    // a promised backlog keeps a second answer from starting
    let mut b = S::new(ServeConfig {
        slots: 2,
        ..queueing()
    });
    assert_eq!(
        b.request(at(0), ask(1, 0), 1, "a", IDLE, ANYONE),
        [Out::Answer("a")]
    );
    assert_eq!(b.request(at(0), ask(2, 1), 2, "b", at(3), ANYONE), []);
    assert_eq!(b.sent(at(1), IDLE, ANYONE), [Out::Answer("b")]);
}

/// Many nodes on virtual time: each serves requesters over links with
/// latency, a rate cap (the backlog) and loss (answers that fail). Every
/// request gets exactly one outcome, the bounds hold at every step, and a
/// super-seed's service stays fair between requesters.
#[test]
fn a_cluster_on_virtual_time_keeps_every_bound() {
    for seed in 0..20 {
        let mut rng = Rng::new(seed);
        let super_seed = seed % 2 == 0;
        let cfg = ServeConfig {
            super_seed: super_seed.then(|| at(10)),
            capped: true,
            queue: if super_seed { 0 } else { 8 },
            slots: 3,
            max_uploads: 4,
            ..config()
        };
        let nodes = 4;
        let requesters = 12u32;
        let mut serve: Vec<Serve<u32, u32, u64, u64>> =
            (0..nodes).map(|_| Serve::new(cfg.clone())).collect();
        // Per node: answers being sent (id, done at), and its uplink's
        // promised time (bytes queued / rate).
        let mut sending: Vec<Vec<(u64, Duration)>> = vec![Vec::new(); nodes];
        let mut busy_until = vec![Duration::ZERO; nodes];
        let mut outcomes: HashMap<u64, usize> = HashMap::new();
        let mut from_of: HashMap<u64, u32> = HashMap::new();
        let mut answers: HashMap<u32, u32> = HashMap::new();
        let per_chunk = Duration::from_millis(80); // 1 MiB at 100 Mbit/s
        let latency = Duration::from_millis(20);
        let mut next_id = 0u64;
        let mut now = Duration::ZERO;
        for _ in 0..3000 {
            now += Duration::from_millis(rng.below(30) as u64);
            let node = rng.below(nodes);
            let backlog = busy_until[node].saturating_sub(now);
            // answers whose bytes have left finish (or fail: loss)
            let done: Vec<u64> = sending[node]
                .iter()
                .filter(|(_, t)| *t <= now)
                .map(|(id, _)| *id)
                .collect();
            sending[node].retain(|(_, t)| *t > now);
            let mut outs = Vec::new();
            for id in done {
                serve[node].finished(&id);
                outs.extend(serve[node].sent(now, backlog, |_: &u32, _: &u32| true));
            }
            let from = rng.below(requesters as usize) as u32;
            next_id += 1;
            from_of.insert(next_id, from);
            let a = Ask {
                from,
                chunk: rng.below(200) as u32,
                len: Some(MIB),
                last_resort: rng.below(50) == 0,
                over_relay: rng.below(100) == 0,
                held: rng.below(400) as u32,
                budget: [Budget::Window, Budget::Spare, Budget::Spent][rng.below(3)],
            };
            outs.extend(serve[node].request(
                now,
                a,
                next_id,
                next_id,
                backlog,
                |p: &u32, _: &u32| *p != 11,
            ));
            for o in outs {
                match o {
                    Out::Answer(id) => {
                        *outcomes.entry(id).or_default() += 1;
                        let start = busy_until[node].max(now);
                        busy_until[node] = start + per_chunk;
                        // one in twenty answers is lost on the way: it
                        // fails at once instead of after its transfer
                        let end = if rng.below(20) == 0 {
                            now
                        } else {
                            busy_until[node] + latency
                        };
                        sending[node].push((id, end));
                        *answers.entry(from_of[&id]).or_default() += 1;
                    }
                    Out::Refuse(id, why) => {
                        *outcomes.entry(id).or_default() += 1;
                        if from_of[&id] == 11 {
                            // requester 11 has no token: never anything else
                            assert_eq!(why, Refusal::Unauthorized);
                        }
                    }
                    Out::LastResort => assert!(super_seed),
                }
            }
            let s = &serve[node];
            // a queueing node starts answers only into free slots; a
            // super-seed is bounded by the weight of answers in progress
            let bound = if super_seed {
                cfg.max_uploads
            } else {
                cfg.slots
            };
            assert!(s.answering() <= bound, "seed {seed}: {}", s.answering());
            assert!(
                s.units <= cfg.max_uploads as u64 * UNITS_PER_UPLOAD,
                "seed {seed}"
            );
            assert!(s.waiting() <= cfg.queue, "seed {seed}");
        }
        // Every request heard exactly one outcome, or still waits.
        let waiting: usize = serve.iter().map(|s| s.waiting()).sum();
        assert!(outcomes.values().all(|&n| n == 1), "seed {seed}");
        assert_eq!(outcomes.len() + waiting, next_id as usize, "seed {seed}");
        // Nobody without a token got a chunk; everyone with one got some.
        assert_eq!(answers.get(&11), None, "seed {seed}");
        for r in 0..11 {
            assert!(
                answers.get(&r).is_some_and(|&n| n > 0),
                "seed {seed}: {r} starved"
            );
        }
    }
}
