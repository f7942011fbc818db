//! Chunk scheduling without IO: one [`Download`] state machine per download,
//! an [`Upload`] queue per serving node, and [`sim`], a discrete-event swarm
//! simulator that drives the same code on virtual time.
//!
//! Drivers feed events with the current time (`handle_*(now, …)`), drain
//! [`Download::poll`] for actions, and re-arm one timer at
//! [`Download::poll_timeout`]. Nothing here reads a clock or touches a socket.

mod download;
pub mod sim;
mod upload;

pub use download::{Action, Config, Download, PeerKind, Stats};
pub use upload::{Decline, Upload};

/// A peer as the driver numbers it (the driver maps network identities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerIdx(pub u32);

/// A small deterministic PRNG (SplitMix64) for tie-breaks.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
