//! The engine's events on virtual time (nanoseconds), and their order in
//! the queue: by time, then by insertion.

use std::time::Duration;

pub(crate) type Nanos = u64;

pub(crate) const NEVER: Nanos = u64::MAX;

pub(crate) fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER)
}

/// Why a request was refused, as the requester hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decline {
    Busy,
    SentElsewhere,
}

/// A request as the serving node holds it: who asked, for what, the
/// transfer's id.
pub(crate) type Ticket = (u32, u32, u64);

#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Arrive {
        node: u32,
    },
    Announce {
        node: u32,
        epoch: u32,
    },
    Request {
        from: u32,
        to: u32,
        chunk: u32,
        last_resort: bool,
        epoch: u32,
    },
    Refused {
        to: u32,
        from: u32,
        chunk: u32,
        why: Decline,
        epoch: u32,
    },
    Delivered {
        to: u32,
        from: u32,
        chunk: u32,
        epoch: u32,
    },
    Haves {
        from: u32,
        chunk: u32,
        epoch: u32,
    },
    FlowDone {
        flow: u32,
        version: u32,
    },
    Timer {
        node: u32,
        at: Nanos,
    },
    Quit {
        node: u32,
        epoch: u32,
    },
    Back {
        node: u32,
    },
    Depart {
        node: u32,
        epoch: u32,
    },
    Heartbeat,
}

/// A scheduled event, ordered by time then by insertion.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) at: Nanos,
    pub(crate) seq: u64,
    pub(crate) event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}
