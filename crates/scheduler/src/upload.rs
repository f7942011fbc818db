//! The upload side of a node: a bounded queue of chunk requests.
//!
//! A peer serves the requester holding fewest chunks first, and when its
//! queue is full a far needier requester displaces the best-off one (the
//! policy of [`crate::NeedQueue`]; the driver reports holdings with
//! [`Upload::note_held`]). Requesters it knows nothing about count as holding
//! nothing, which leaves plain arrival order.
//!
//! Seeds also run super-seeding: a chunk sent within the last `repeat_after`
//! is refused (the requester should get it from the peer it went to), so each
//! chunk leaves the origin about once while peers relay it. After the window a
//! new copy is allowed, which covers a receiver that left before relaying.
//!
//! A super-seed also shares itself fairly among requesters: the peer it has
//! sent fewest chunks goes first, and when the queue is full a newcomer
//! displaces the most-served requester (which hears `Busy`). Otherwise the
//! few peers that asked first would re-queue after every delivery and keep
//! the origin to themselves, while the rest of the swarm, holding nothing,
//! has nothing to upload.

use crate::PeerIdx;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    /// The queue is full: try later or elsewhere.
    Busy,
    /// Super-seeding: the chunk was just sent to another peer; get it there.
    SentElsewhere,
    /// Not a chunk of this release.
    NoSuchChunk,
}

/// Requests waiting for upload capacity.
#[derive(Debug)]
pub struct Upload {
    queue: VecDeque<(PeerIdx, u32)>,
    sent: Vec<u32>,
    last_sent: Vec<Option<Duration>>,
    max_queue: usize,
    repeat_after: Option<Duration>,
    refused: Vec<(PeerIdx, u32, Decline)>,
    /// Super-seeding: chunks sent to each peer.
    served: HashMap<PeerIdx, u32>,
    /// Peers: chunks each requester holds, as its haves say (see
    /// [`crate::NeedQueue`], whose policy this queue follows).
    held: HashMap<PeerIdx, u32>,
}

impl Upload {
    /// A queue for a release of `n_chunks`, holding at most `max_queue`
    /// requests. `repeat_after: Some(w)` turns on super-seeding.
    pub fn new(n_chunks: u32, max_queue: usize, repeat_after: Option<Duration>) -> Upload {
        Upload {
            queue: VecDeque::new(),
            sent: vec![0; n_chunks as usize],
            last_sent: vec![None; n_chunks as usize],
            max_queue,
            repeat_after,
            refused: Vec::new(),
            served: HashMap::new(),
            held: HashMap::new(),
        }
    }

    /// `peer` holds `chunks` chunks (its bitfield and haves say so).
    pub fn note_held(&mut self, peer: PeerIdx, chunks: u32) {
        self.held.insert(peer, chunks);
    }

    /// What orders requesters: chunks sent to them (super-seed), or chunks
    /// they hold (peer).
    fn rank(&self, peer: &PeerIdx) -> u32 {
        let counts = if self.repeat_after.is_some() {
            &self.served
        } else {
            &self.held
        };
        counts.get(peer).copied().unwrap_or(0)
    }

    fn recently_sent(&self, now: Duration, chunk: u32) -> bool {
        match (self.repeat_after, self.last_sent[chunk as usize]) {
            (Some(window), Some(at)) => now < at + window,
            _ => false,
        }
    }

    /// Queues a request, or says why not.
    pub fn handle_request(
        &mut self,
        now: Duration,
        peer: PeerIdx,
        chunk: u32,
    ) -> Result<(), Decline> {
        if chunk as usize >= self.sent.len() {
            return Err(Decline::NoSuchChunk);
        }
        if self.recently_sent(now, chunk) {
            return Err(Decline::SentElsewhere);
        }
        if self.queue.contains(&(peer, chunk)) {
            return Ok(());
        }
        if self.queue.len() >= self.max_queue {
            // A super-seed lets a less-served requester displace the
            // most-served one; a peer lets a far needier requester displace
            // the best-off one.
            let margin = if self.repeat_after.is_some() {
                0
            } else {
                crate::DISPLACE_MARGIN
            };
            let ranks = self.queue.iter().map(|(p, _)| self.rank(p));
            let Some(pos) = crate::need::displaced(ranks, self.rank(&peer), margin) else {
                return Err(Decline::Busy);
            };
            if let Some((p, c)) = self.queue.remove(pos) {
                self.refused.push((p, c, Decline::Busy));
            }
        }
        self.queue.push_back((peer, chunk));
        Ok(())
    }

    /// Withdraws a queued request; `true` if it was still waiting.
    pub fn handle_cancel(&mut self, peer: PeerIdx, chunk: u32) -> bool {
        let before = self.queue.len();
        self.queue.retain(|r| *r != (peer, chunk));
        self.queue.len() != before
    }

    /// Forgets every request of a departed peer.
    pub fn drop_peer(&mut self, peer: PeerIdx) {
        self.queue.retain(|r| r.0 != peer);
        self.served.remove(&peer);
        self.held.remove(&peer);
    }

    /// The request to serve next: the neediest requester's oldest request, or
    /// with super-seeding the least-served requester's least-sent chunk. Queued requests that super-seeding now refuses
    /// move to [`Upload::poll_refused`].
    pub fn next_request(&mut self, now: Duration) -> Option<(PeerIdx, u32)> {
        if self.repeat_after.is_some() {
            let queue = std::mem::take(&mut self.queue);
            let (stale, keep): (Vec<_>, Vec<_>) = queue
                .into_iter()
                .partition(|&(_, chunk)| self.recently_sent(now, chunk));
            self.refused.extend(
                stale
                    .into_iter()
                    .map(|(p, c)| (p, c, Decline::SentElsewhere)),
            );
            self.queue = keep.into();
        }
        // Super-seeding serves the least-served peer first, then the
        // least-sent chunk; a peer serves the neediest requester first, in
        // arrival order among equals.
        let pos = if self.repeat_after.is_some() {
            self.queue
                .iter()
                .enumerate()
                .min_by_key(|(pos, (peer, chunk))| {
                    (self.rank(peer), self.sent[*chunk as usize], *pos)
                })?
                .0
        } else {
            crate::need::neediest(self.queue.iter().map(|(p, _)| self.rank(p)))?
        };
        let (peer, chunk) = self.queue.remove(pos)?;
        self.sent[chunk as usize] += 1;
        self.last_sent[chunk as usize] = Some(now);
        if self.repeat_after.is_some() {
            *self.served.entry(peer).or_default() += 1;
        }
        Some((peer, chunk))
    }

    /// A queued request refused after all: its chunk was just sent
    /// elsewhere ([`Decline::SentElsewhere`]), or a less-served peer took its
    /// place ([`Decline::Busy`]). Tell the requester.
    pub fn poll_refused(&mut self) -> Option<(PeerIdx, u32, Decline)> {
        self.refused.pop()
    }

    /// Times `chunk` has been handed out for sending.
    pub fn sent(&self, chunk: u32) -> u32 {
        self.sent.get(chunk as usize).copied().unwrap_or(0)
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(100);

    #[test]
    fn plain_queues_are_fifo() {
        let mut u = Upload::new(3, 10, None);
        for (p, c) in [(1, 0), (2, 0), (3, 1)] {
            assert!(u.handle_request(T, PeerIdx(p), c).is_ok());
        }
        assert_eq!(u.next_request(T), Some((PeerIdx(1), 0)));
        assert_eq!(
            u.next_request(T),
            Some((PeerIdx(2), 0)),
            "no reordering by sent count"
        );
        assert_eq!(u.next_request(T), Some((PeerIdx(3), 1)));
    }

    #[test]
    fn peers_serve_the_neediest_and_let_them_displace_the_best_off() {
        let mut u = Upload::new(300, 2, None);
        u.note_held(PeerIdx(1), 200);
        u.note_held(PeerIdx(2), 20);
        u.note_held(PeerIdx(3), 150);
        u.note_held(PeerIdx(4), 100);
        assert!(u.handle_request(T, PeerIdx(1), 0).is_ok());
        assert!(u.handle_request(T, PeerIdx(2), 1).is_ok());
        // full: 150 is within the margin of the best-off (200)
        assert_eq!(u.handle_request(T, PeerIdx(3), 2), Err(Decline::Busy));
        // 100 is far needier than 200: it takes its place, 200 hears Busy
        assert!(u.handle_request(T, PeerIdx(4), 3).is_ok());
        assert_eq!(u.poll_refused(), Some((PeerIdx(1), 0, Decline::Busy)));
        assert_eq!(u.next_request(T), Some((PeerIdx(2), 1)));
        assert_eq!(u.next_request(T), Some((PeerIdx(4), 3)));
    }

    #[test]
    fn super_seeding_sends_least_sent_first() {
        let mut u = Upload::new(3, 10, Some(Duration::ZERO));
        assert!(u.handle_request(T, PeerIdx(1), 0).is_ok());
        assert_eq!(u.next_request(T), Some((PeerIdx(1), 0)));
        assert!(u.handle_request(T, PeerIdx(2), 0).is_ok());
        assert!(u.handle_request(T, PeerIdx(3), 1).is_ok());
        assert!(u.handle_request(T, PeerIdx(4), 2).is_ok());
        // chunk 0 was already sent once: 1 and 2 go first, in arrival order
        assert_eq!(u.next_request(T), Some((PeerIdx(3), 1)));
        assert_eq!(u.next_request(T), Some((PeerIdx(4), 2)));
        assert_eq!(u.next_request(T), Some((PeerIdx(2), 0)));
        assert_eq!(u.sent(0), 2);
        assert_eq!(u.next_request(T), None);
    }

    #[test]
    fn super_seeding_shares_the_origin_fairly() {
        let mut u = Upload::new(8, 2, Some(Duration::from_secs(60)));
        // peer 1 was served twice, peer 2 once
        for c in [0, 1] {
            assert!(u.handle_request(T, PeerIdx(1), c).is_ok());
            assert_eq!(u.next_request(T), Some((PeerIdx(1), c)));
        }
        assert!(u.handle_request(T, PeerIdx(2), 2).is_ok());
        assert_eq!(u.next_request(T), Some((PeerIdx(2), 2)));
        // the least-served requester goes first, whatever the order of arrival
        assert!(u.handle_request(T, PeerIdx(1), 3).is_ok());
        assert!(u.handle_request(T, PeerIdx(2), 4).is_ok());
        // full: a newcomer displaces the most-served requester, which hears Busy
        assert!(u.handle_request(T, PeerIdx(3), 5).is_ok());
        assert_eq!(u.poll_refused(), Some((PeerIdx(1), 3, Decline::Busy)));
        // ... but nobody displaces a requester served no more than itself
        assert_eq!(u.handle_request(T, PeerIdx(1), 6), Err(Decline::Busy));
        assert_eq!(u.next_request(T), Some((PeerIdx(3), 5)));
        assert_eq!(u.next_request(T), Some((PeerIdx(2), 4)));
        assert_eq!(u.poll_refused(), None);
    }

    #[test]
    fn bounded_cancel_and_drop() {
        let mut u = Upload::new(2, 2, None);
        assert!(u.handle_request(T, PeerIdx(1), 0).is_ok());
        assert!(u.handle_request(T, PeerIdx(1), 1).is_ok());
        assert_eq!(u.handle_request(T, PeerIdx(2), 0), Err(Decline::Busy));
        assert_eq!(
            Upload::new(2, 9, None).handle_request(T, PeerIdx(1), 5),
            Err(Decline::NoSuchChunk)
        );
        assert!(u.handle_cancel(PeerIdx(1), 0));
        assert!(!u.handle_cancel(PeerIdx(1), 0));
        u.drop_peer(PeerIdx(1));
        assert_eq!(u.queued(), 0);
    }

    #[test]
    fn super_seeding_refuses_repeats_within_the_window() {
        let w = Duration::from_secs(10);
        let mut u = Upload::new(2, 10, Some(w));
        assert!(u.handle_request(T, PeerIdx(1), 0).is_ok());
        assert!(u.handle_request(T, PeerIdx(2), 0).is_ok());
        assert_eq!(u.next_request(T), Some((PeerIdx(1), 0)));
        // the queued duplicate is refused, and so is a new one
        assert_eq!(u.next_request(T), None);
        assert_eq!(
            u.poll_refused(),
            Some((PeerIdx(2), 0, Decline::SentElsewhere))
        );
        assert_eq!(
            u.handle_request(T + Duration::from_secs(1), PeerIdx(3), 0),
            Err(Decline::SentElsewhere)
        );
        // after the window, another copy is allowed
        assert!(u.handle_request(T + w, PeerIdx(3), 0).is_ok());
        assert_eq!(u.next_request(T + w), Some((PeerIdx(3), 0)));
        assert_eq!(u.sent(0), 2);
    }
}
