//! Chunk scheduling without IO: one [`Download`] state machine per download
//! (real nodes and the simulator run it alike), [`Serve`], the serving
//! policy real nodes run for every chunk request (the token gate, relays,
//! super-seeding with [`FairShare`], bounded answers, the neediest-first
//! [`NeedQueue`]), [`Ledger`] for a seed's origin budget and [`TokenBucket`]
//! for upload caps. The swarm simulator (`shoal-sim`) drives [`Download`]
//! and [`Serve`] on virtual time, as real nodes do.
//!
//! Drivers feed events with the current time (`handle_*(now, …)`), drain
//! [`Download::poll`] for actions, and re-arm one timer at
//! [`Download::poll_timeout`]. Nothing here reads a clock or touches a socket.

mod bucket;
mod download;
mod fair;
mod ledger;
mod need;
mod serve;

pub use bucket::TokenBucket;
pub use download::{Action, Config, Download, PeerKind, Stats};
pub use fair::FairShare;
pub use ledger::Ledger;
pub use need::{DISPLACE_MARGIN, NeedQueue, Queued};
pub use serve::{Ask, Budget, MAX_SENT_REMEMBERED, Out, Refusal, Serve, ServeConfig};

/// A peer as the driver numbers it (the driver maps network identities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerIdx(pub u32);

pub use shoal_types::Rng;
