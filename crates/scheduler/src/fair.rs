//! Fair shares of a contended origin for a node that answers requests as
//! they arrive (a seed behind a rate cap): while its upload has a backlog,
//! it takes a request only from a requester it has served no more than
//! the least-served recent requester (plus one), and tells the rest `Busy`.
//!
//! Without this, the peers that asked first re-ask after every delivery and
//! keep the origin to themselves, and the rest of the swarm holds nothing to
//! upload.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// A requester counts as waiting this long after its last request.
pub const RECENT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
struct Requester {
    served: u32,
    last_request: Duration,
}

/// Per-requester service counts.
#[derive(Debug, Clone)]
pub struct FairShare<K> {
    requesters: HashMap<K, Requester>,
}

impl<K: Hash + Eq + Clone> Default for FairShare<K> {
    fn default() -> Self {
        FairShare {
            requesters: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> FairShare<K> {
    /// Whether to take a request from `peer` now. `contended`: the upload
    /// already has a backlog (otherwise everyone is served).
    pub fn admit(&mut self, now: Duration, peer: &K, contended: bool) -> bool {
        let r = self.requester(now, peer);
        r.last_request = now;
        let mine = r.served;
        if !contended {
            return true;
        }
        let least = self
            .requesters
            .values()
            .filter(|r| now.saturating_sub(r.last_request) <= RECENT)
            .map(|r| r.served)
            .min()
            .unwrap_or(0);
        mine <= least + 1
    }

    /// A chunk went to `peer`.
    pub fn served(&mut self, now: Duration, peer: &K) {
        self.requester(now, peer).served += 1;
    }

    /// Forgets `peer` (it left).
    pub fn forget(&mut self, peer: &K) {
        self.requesters.remove(peer);
    }

    fn requester(&mut self, now: Duration, peer: &K) -> &mut Requester {
        self.requesters.entry(peer.clone()).or_insert(Requester {
            served: 0,
            last_request: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn everyone_is_served_without_contention() {
        let mut f = FairShare::default();
        for _ in 0..5 {
            assert!(f.admit(S, &1, false));
            f.served(S, &1);
        }
        assert!(f.admit(S, &2, false));
    }

    #[test]
    fn under_contention_the_least_served_go_first() {
        let mut f = FairShare::default();
        for _ in 0..3 {
            assert!(f.admit(S, &1, true));
            f.served(S, &1);
        }
        // peer 2 asks: peer 1 (served 3) must now wait for it
        assert!(f.admit(S, &2, true));
        assert!(!f.admit(S, &1, true));
        f.served(S, &2);
        f.served(S, &2);
        assert!(f.admit(S, &1, true), "within one of the least served");
        // a requester that stopped asking no longer holds others back
        let later = S + S;
        f.served(later, &1);
        f.served(later, &1);
        assert!(!f.admit(later, &1, true), "peer 2 asked recently");
        // a requester that left no longer holds others back either
        f.forget(&2);
        assert!(f.admit(later, &1, true), "peer 2 is gone");
        f.served(later, &2);
        assert!(!f.admit(later, &1, true), "peer 2 is back, served once");
        let much_later = later + RECENT + S;
        assert!(f.admit(much_later, &1, true), "peer 2 has gone quiet");
    }
}
