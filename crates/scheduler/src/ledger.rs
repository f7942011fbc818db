//! One super-seed's spending of one swarm's origin budget: what it sent,
//! which chunks it has sent at least once, and its share of the budget
//! (from the tracker). It turns them into the [`Budget`] the serving
//! policy asks about, keeping enough of the share for every chunk not yet
//! sent once, so the budget can never starve a first copy.

use crate::Budget;
use shoal_types::Bitfield;

#[derive(Debug, Clone)]
pub struct Ledger {
    /// This seed's share as a total of chunk bytes since it started:
    /// `None` until the tracker says, `Some(None)` for unlimited.
    allowance: Option<Option<u64>>,
    sent: u64,
    /// Chunks sent at least once, and the bytes of those not yet sent.
    first: Bitfield,
    lens: Vec<u32>,
    unsent: u64,
}

impl Ledger {
    /// A ledger for a release with chunks of `lens` bytes, nothing sent.
    pub fn new(lens: Vec<u32>) -> Ledger {
        Ledger {
            allowance: None,
            sent: 0,
            first: Bitfield::new(lens.len() as u32),
            unsent: lens.iter().map(|&l| u64::from(l)).sum(),
            lens,
        }
    }

    /// The tracker's answer: this seed's share (`None`: unlimited).
    pub fn allow(&mut self, bytes: Option<u64>) {
        self.allowance = Some(bytes);
    }

    /// Chunk `index` goes out: counted when the serving policy answers it,
    /// before it is read, so answers decided meanwhile see it spent.
    pub fn sent(&mut self, index: u32) {
        let Some(&len) = self.lens.get(index as usize) else {
            return;
        };
        self.sent += u64::from(len);
        if !self.first.get(index) {
            self.first.set(index);
            self.unsent -= u64::from(len);
        }
    }

    /// Chunk bytes sent since start.
    pub fn total(&self) -> u64 {
        self.sent
    }

    /// Whether chunk `index` may go again (see [`Budget`]).
    pub fn budget(&self, index: u32) -> Budget {
        let len = self.lens.get(index as usize).map_or(0, |&l| u64::from(l));
        match self.allowance {
            None => Budget::Window,
            Some(None) => Budget::Spare,
            Some(Some(share)) if self.sent + self.unsent + len <= share => Budget::Spare,
            Some(Some(_)) => Budget::Spent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_spend_only_what_first_copies_do_not_need() {
        // Four chunks of 100 bytes, a share of 500: one repeat fits.
        let mut l = Ledger::new(vec![100; 4]);
        assert_eq!(
            l.budget(0),
            Budget::Window,
            "no answer from the tracker yet"
        );
        l.allow(Some(500));
        assert_eq!(l.budget(0), Budget::Spare);
        l.sent(0);
        l.sent(0); // a repeat: 200 sent, 300 kept for the other three
        assert_eq!(l.budget(0), Budget::Spent);
        for i in 1..4 {
            l.sent(i);
        }
        assert_eq!(l.total(), 500);
        assert_eq!(l.budget(1), Budget::Spent);
        // A larger share after an operator raised the budget.
        l.allow(Some(700));
        assert_eq!(l.budget(1), Budget::Spare);
        l.allow(None);
        assert_eq!(l.budget(3), Budget::Spare, "unlimited");
        l.sent(99); // not a chunk of the release: ignored
        assert_eq!(l.total(), 500);
    }
}
