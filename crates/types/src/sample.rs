//! The tracker's peer sample: which members of a swarm a peer list is drawn
//! from. Pure (the caller passes randomness), so the tracker and the swarm
//! simulator (`shoal-sim`) pick neighbours alike.

use crate::Rng;

/// Candidates for a peer list of `max` entries among members `0..n`:
/// every member `eligible` says yes to, shuffled, when the swarm is small
/// (`n ≤ 3 × max`); otherwise up to `3 × max` distinct random eligible
/// members from at most `12 × max` draws, so a list costs O(max) whatever
/// the swarm's size. The caller ranks the candidates and keeps the best.
pub fn candidates(
    n: usize,
    max: usize,
    rng: &mut Rng,
    eligible: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let want = 3 * max;
    if n <= want {
        let mut all: Vec<usize> = (0..n).filter(|&i| eligible(i)).collect();
        for i in (1..all.len()).rev() {
            all.swap(i, rng.below(i + 1));
        }
        return all;
    }
    let mut picked: Vec<usize> = Vec::with_capacity(want);
    for _ in 0..4 * want {
        if picked.len() == want {
            break;
        }
        let i = rng.below(n);
        if !picked.contains(&i) && eligible(i) {
            picked.push(i);
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_swarms_give_every_eligible_member_once() {
        let mut rng = Rng::new(3);
        let mut got = candidates(10, 5, &mut rng, |i| i != 4);
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn large_swarms_give_distinct_eligible_members_bounded_by_max() {
        let mut rng = Rng::new(3);
        let got = candidates(1_000_000, 10, &mut rng, |i| i % 2 == 0);
        assert_eq!(got.len(), 30);
        assert!(got.iter().all(|i| i % 2 == 0));
        let mut d = got.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), got.len());
        // Nobody eligible: the draws are bounded, the answer empty.
        assert!(candidates(1_000_000, 10, &mut rng, |_| false).is_empty());
    }
}
