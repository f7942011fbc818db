//! A fixed-length set of chunk indices: what a peer has.

use serde::{Deserialize, Serialize};

/// One bit per chunk of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bitfield {
    len: u32,
    words: Vec<u64>,
}

impl Bitfield {
    /// `len` bits, all clear.
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            len,
            words: vec![0; (len as usize).div_ceil(64)],
        }
    }

    /// `len` bits, all set.
    pub fn full(len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether bit `i` is set; out-of-range bits are clear.
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; returns false (and does nothing) when out of range.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        self.words[(i / 64) as usize] |= 1 << (i % 64);
        true
    }

    pub fn clear(&mut self, i: u32) {
        if i < self.len {
            self.words[(i / 64) as usize] &= !(1 << (i % 64));
        }
    }

    /// How many bits are set.
    /// Bits `64 × w` to `64 × w + 63` (zero past the end): lets callers
    /// skip 64 absent bits at a time.
    pub fn word(&self, w: usize) -> u64 {
        self.words.get(w).copied().unwrap_or(0)
    }

    pub fn count(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// Checks the invariants a decoded bitfield must hold (length matches the
    /// word count, no bits beyond `len`).
    pub fn is_well_formed(&self) -> bool {
        let words_ok = self.words.len() == (self.len as usize).div_ceil(64);
        let tail_ok = match self.len % 64 {
            0 => true,
            r => self.words.last().is_none_or(|w| w >> r == 0),
        };
        words_ok && tail_ok
    }

    /// Indices of set bits, ascending.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count() {
        let mut b = Bitfield::new(130);
        assert!(b.set(0) && b.set(64) && b.set(129));
        assert!(!b.set(130));
        assert!(b.get(64) && !b.get(65) && !b.get(1000));
        assert_eq!(b.count(), 3);
        assert_eq!(b.ones().collect::<Vec<_>>(), [0, 64, 129]);
        b.clear(64);
        assert_eq!(b.count(), 2);
        assert!(b.is_well_formed());
        assert!(Bitfield::full(130).is_full());
        let bad = Bitfield {
            len: 3,
            words: vec![0b1000],
        };
        assert!(!bad.is_well_formed());
        assert!(
            !Bitfield {
                len: 3,
                words: vec![]
            }
            .is_well_formed()
        );
    }
}
