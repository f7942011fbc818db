//! The upload side of a node: a bounded queue of chunk requests, served so
//! that chunks this node has sent least go first.
//!
//! Seeds also run super-seeding: a chunk sent within the last `repeat_after`
//! is refused (the requester should get it from the peer it went to), so each
//! chunk leaves the origin about once while peers relay it. After the window a
//! new copy is allowed, which covers a receiver that left before relaying.

use crate::PeerIdx;
use std::collections::VecDeque;
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
    refused: Vec<(PeerIdx, u32)>,
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
        }
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
            return Err(Decline::Busy);
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
    }

    /// The request to serve next: oldest first, or with super-seeding the
    /// least-sent chunk first. Queued requests that super-seeding now refuses
    /// move to [`Upload::poll_refused`].
    pub fn next_request(&mut self, now: Duration) -> Option<(PeerIdx, u32)> {
        if self.repeat_after.is_some() {
            let queue = std::mem::take(&mut self.queue);
            let (stale, keep): (Vec<_>, Vec<_>) = queue
                .into_iter()
                .partition(|&(_, chunk)| self.recently_sent(now, chunk));
            self.refused.extend(stale);
            self.queue = keep.into();
        }
        // Super-seeding serves the least-sent chunk first; everyone else
        // serves in arrival order, so no request starves behind fresher ones.
        let pos = if self.repeat_after.is_some() {
            self.queue
                .iter()
                .enumerate()
                .min_by_key(|(pos, (_, chunk))| (self.sent[*chunk as usize], *pos))?
                .0
        } else {
            0
        };
        let (peer, chunk) = self.queue.remove(pos)?;
        self.sent[chunk as usize] += 1;
        self.last_sent[chunk as usize] = Some(now);
        Some((peer, chunk))
    }

    /// A queued request refused after all (its chunk was just sent
    /// elsewhere): tell the requester [`Decline::SentElsewhere`].
    pub fn poll_refused(&mut self) -> Option<(PeerIdx, u32)> {
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
        assert_eq!(u.poll_refused(), Some((PeerIdx(2), 0)));
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
