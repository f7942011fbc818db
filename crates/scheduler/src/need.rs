//! Neediest-first service for a peer whose upload is contended: queued
//! requests go to the requester holding fewest chunks first, and when the
//! queue is full a requester displaces one that holds far more than it does.
//!
//! Without this, peers that got ahead early keep pipelines at every uploader
//! and finish long before the rest, and the swarm's last minute is spent on a
//! few laggards whose download link, not the swarm's upload, is the limit:
//! at 100 peers the last peer finished 1.22–1.26× the fluid bound, with the
//! first done at 40% of it (`cargo run --release -p shoal-scheduler
//! --example sweep`, `TIMELINE=1`).

use std::collections::VecDeque;

/// A newcomer displaces a queued request only from a requester holding this
/// many more chunks. Smaller margins churn: at 8 the simulated swarm took
/// twice the bound, as displaced requesters backed off and re-asked.
pub const DISPLACE_MARGIN: u32 = 64;

/// Position of the entry to serve next: fewest held, then oldest.
pub(crate) fn neediest(held: impl Iterator<Item = u32>) -> Option<usize> {
    held.enumerate()
        .min_by_key(|&(pos, h)| (h, pos))
        .map(|(pos, _)| pos)
}

/// Position of the entry a requester ranked `mine` displaces from a full
/// queue: the highest-ranked (newest among equals), if its rank is above
/// `mine` plus `margin`. Ranks are chunks held ([`DISPLACE_MARGIN`]), or for
/// a super-seed chunks already served (margin 0).
pub(crate) fn displaced(ranks: impl Iterator<Item = u32>, mine: u32, margin: u32) -> Option<usize> {
    ranks
        .enumerate()
        .max_by_key(|&(pos, r)| (r, pos))
        .filter(|&(_, r)| r > mine.saturating_add(margin))
        .map(|(pos, _)| pos)
}

/// A bounded queue of waiting requests, served neediest-first.
#[derive(Debug)]
pub struct NeedQueue<T> {
    entries: VecDeque<(u32, T)>,
    max: usize,
}

/// What became of a pushed request.
#[derive(Debug, PartialEq, Eq)]
pub enum Queued<T> {
    /// It waits its turn.
    Waiting,
    /// It waits, and took the place of this one (tell it `Busy`).
    Displaced(T),
    /// The queue is full of requesters no better off: tell it `Busy`.
    Refused(T),
}

impl<T> NeedQueue<T> {
    /// A queue of at most `max` waiting requests.
    pub fn new(max: usize) -> NeedQueue<T> {
        NeedQueue {
            entries: VecDeque::new(),
            max,
        }
    }

    /// Queues `item` from a requester holding `held` chunks.
    pub fn push(&mut self, held: u32, item: T) -> Queued<T> {
        if self.entries.len() < self.max {
            self.entries.push_back((held, item));
            return Queued::Waiting;
        }
        match displaced(self.entries.iter().map(|e| e.0), held, DISPLACE_MARGIN) {
            Some(pos) => {
                let (_, out) = self.entries.remove(pos).expect("position from the queue");
                self.entries.push_back((held, item));
                Queued::Displaced(out)
            }
            None => Queued::Refused(item),
        }
    }

    /// The request to serve next.
    pub fn pop(&mut self) -> Option<T> {
        let pos = neediest(self.entries.iter().map(|e| e.0))?;
        self.entries.remove(pos).map(|(_, item)| item)
    }

    /// Keeps only the requests `keep` approves (a requester left).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.entries.retain(|(_, item)| keep(item));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_neediest_goes_first_and_ties_keep_arrival_order() {
        let mut q = NeedQueue::new(8);
        for (held, name) in [(100, "a"), (5, "b"), (200, "c"), (5, "d")] {
            assert_eq!(q.push(held, name), Queued::Waiting);
        }
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["b", "d", "a", "c"]);
    }

    #[test]
    fn a_full_queue_lets_the_far_needier_displace_the_best_off() {
        let mut q = NeedQueue::new(2);
        q.push(100, "a");
        q.push(150, "b");
        // within the margin of the best-off: refused
        assert_eq!(q.push(150 - DISPLACE_MARGIN, "c"), Queued::Refused("c"));
        // far needier: the best-off waiter makes room
        assert_eq!(q.push(10, "d"), Queued::Displaced("b"));
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some("d"));
        q.retain(|&n| n != "a");
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
    }
}
