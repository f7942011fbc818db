//! Whom a serving node answers, as a state machine: the policy a real node
//! runs for every chunk request (shoal-net drives it), without IO or a
//! clock. Inputs: a request with what the driver knows of it (is the
//! requester authorised for that swarm, does it come over a relay, how many
//! chunks the requester holds, how much upload the node has already
//! promised), `now`, and the driver's reports that an answer left or
//! finished. Outputs: answer now, refuse (`Unauthorized`, `Busy` over a
//! relay, `SentElsewhere`, `Busy`), or nothing yet (the request waits).
//!
//! The policy:
//! - **Token gate.** A requester not authorised for the swarm hears
//!   `Unauthorized`, also when a waiting request's turn comes.
//! - **Relays carry no chunks** unless the operator allows it: a request
//!   over a relayed connection hears `Busy` until the hole punch.
//! - **Super-seeding** (a seed): a chunk sent to one requester within the
//!   window is `SentElsewhere` to others (unless the requester could reach
//!   no peer holding it: a last resort), and while the upload has a backlog
//!   requesters are admitted by [`FairShare`].
//! - **The origin budget** ([`Budget`], a super-seed): with budget to
//!   spare, an idle upload sends chunks again inside the window (a busy one
//!   answers `Busy`, so the requester asks again rather than turn away);
//!   once it is spent, a chunk sent before goes again only as a last resort.
//! - **Bounded answers in progress**: past `max_uploads` (in 1 MiB chunks,
//!   a small chunk weighing its share) or `max_backlog` of promised
//!   upload, requests hear `Busy`.
//! - **Neediest first** (a capped player's node): requests wait in a
//!   [`NeedQueue`] for one of `slots` answers in progress, the requester
//!   holding fewest chunks first.

use crate::{FairShare, NeedQueue, Queued};
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Chunks remembered for super-seeding before the memory is reset.
pub const MAX_SENT_REMEMBERED: usize = 1 << 20;

/// `max_uploads` counts chunks of the usual 1 MiB; a smaller one weighs its
/// share, in units of 1/64 (16 KiB), at least one unit.
const UPLOAD_UNIT: u64 = 16 << 10;
const UNITS_PER_UPLOAD: u64 = (1 << 20) / UPLOAD_UNIT;

/// The weight of an answer of `len` bytes (unknown: a full 1 MiB chunk).
fn weight(len: Option<u32>) -> u64 {
    len.map_or(UNITS_PER_UPLOAD, |l| {
        u64::from(l).div_ceil(UPLOAD_UNIT).max(1)
    })
}

/// The serving policy's settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Super-seeding window: a chunk sent within it goes to nobody else.
    pub super_seed: Option<Duration>,
    /// Answer chunk requests that arrive over a relayed connection.
    pub chunks_over_relay: bool,
    /// The node's upload is capped (requests wait only behind a cap).
    pub capped: bool,
    /// Requests that may wait for an answer slot (0: none wait).
    pub queue: usize,
    /// Answers in progress at once while requests wait.
    pub slots: usize,
    /// Answers in progress at once, in 1 MiB chunks.
    pub max_uploads: usize,
    /// Upload already promised beyond which requests hear `Busy`.
    pub max_backlog: Duration,
}

/// A chunk request as the policy sees it.
#[derive(Debug, Clone)]
pub struct Ask<P, C> {
    /// Who asks.
    pub from: P,
    /// Which chunk (the driver's key: swarm and index).
    pub chunk: C,
    /// The chunk's length, if known without reading it.
    pub len: Option<u32>,
    /// The requester reached no peer holding it (super-seeding resends).
    pub last_resort: bool,
    /// It came over a relayed connection.
    pub over_relay: bool,
    /// Chunks the requester holds (from its haves).
    pub held: u32,
    /// Where the swarm's origin budget stands (super-seeds).
    pub budget: Budget,
}

/// Where a swarm's origin budget stands, for a super-seed deciding whether
/// to send a chunk again. A chunk's first copy always goes (the budget is
/// at least one copy, and the seed keeps enough of it for every chunk it
/// has not sent yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Budget {
    /// No budget known (no tracker answer yet): a chunk sent within the
    /// super-seeding window goes to nobody else; after it, to anyone.
    #[default]
    Window,
    /// Budget to spare beyond the first copies: a chunk is sent again,
    /// inside the window too, while the upload is idle (at most half the
    /// backlog bound promised), so an idle uplink adds copies instead of
    /// refusing; a busy one answers `Busy`.
    Spare,
    /// Spent (what is left is kept for first copies): a chunk sent to
    /// another requester is sent again only as a last resort (the requester
    /// reached no peer holding it), whenever it was sent.
    Spent,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No valid token for that swarm from that requester.
    Unauthorized,
    /// It came over a relay, which carries no chunks (`Busy` on the wire).
    OverRelay,
    /// Super-seeding: the chunk went to another requester just now.
    SentElsewhere,
    /// The upload is full.
    Busy,
}

/// What to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Out<T> {
    /// Read the chunk and send it; report [`Serve::sent`] when its bytes
    /// are handed to the connection and [`Serve::finished`] when it is
    /// done (sent or failed).
    Answer(T),
    /// Answer with the refusal.
    Refuse(T, Refusal),
    /// A super-seed resent a chunk inside its window because the requester
    /// had no other way to it (for the metrics).
    LastResort,
}

/// A request waiting for its turn.
#[derive(Debug)]
struct Waiter<P, C, U, T> {
    from: P,
    chunk: C,
    id: U,
    len: Option<u32>,
    ticket: T,
}

/// The serving side of one node. `P` names requesters, `C` chunks, `U`
/// answers in progress; `T` is the driver's handle on a request (what it
/// needs to answer it), returned in [`Out`].
#[derive(Debug)]
pub struct Serve<P, C, U, T> {
    config: ServeConfig,
    /// When each chunk was last sent, and to whom (super-seeding only).
    sent: HashMap<C, (Duration, P)>,
    fair: FairShare<P>,
    /// Answers in progress, with their weights.
    uploads: HashMap<U, u64>,
    units: u64,
    /// Answers being read or waiting for the upload cap.
    answering: usize,
    waiting: NeedQueue<Waiter<P, C, U, T>>,
}

impl<P, C, U, T> Serve<P, C, U, T>
where
    P: Hash + Eq + Clone,
    C: Hash + Eq + Clone,
    U: Hash + Eq,
{
    pub fn new(config: ServeConfig) -> Self {
        let waiting = NeedQueue::new(config.queue);
        Serve {
            config,
            sent: HashMap::new(),
            fair: FairShare::default(),
            uploads: HashMap::new(),
            units: 0,
            answering: 0,
            waiting,
        }
    }

    /// Whether requests wait for a slot (a capped node that does not
    /// super-seed) rather than hear `Busy` when the upload is full.
    fn queues(&self) -> bool {
        self.config.capped && self.config.super_seed.is_none() && self.config.queue > 0
    }

    /// Another answer may start: a slot is free and no more than
    /// `max_backlog` is promised already (a slow uploader commits only to
    /// what it can deliver soon).
    fn slot_free(&self, backlog: Duration) -> bool {
        self.answering < self.config.slots
            && (self.answering == 0 || backlog <= self.config.max_backlog)
    }

    /// A chunk request (`id` names its answer, `ticket` is returned in the
    /// decision). `backlog`: upload already promised to the cap;
    /// `authorised`: whether a requester may fetch a chunk now, asked of
    /// this request and of waiting ones whose turn comes.
    pub fn request(
        &mut self,
        now: Duration,
        ask: Ask<P, C>,
        id: U,
        ticket: T,
        backlog: Duration,
        authorised: impl Fn(&P, &C) -> bool,
    ) -> Vec<Out<T>> {
        let mut out = Vec::new();
        // A requester asking again for what it was sent lost it (a repair, a
        // restart): it gets the chunk; others are sent elsewhere, unless
        // they cannot reach the peer it went to.
        let idle = backlog <= self.config.max_backlog / 2;
        let repeat = self.config.super_seed.and_then(|w| {
            self.sent
                .get(&ask.chunk)
                .filter(|(_, to)| *to != ask.from)
                .map(|(t, _)| now < *t + w)
        });
        // Inside the window with budget to spare, a busy upload says
        // `Busy` (ask again later), not `SentElsewhere`: the requester
        // keeps asking this seed for what peers hold.
        let busy_repeat = ask.budget == Budget::Spare && repeat == Some(true) && !idle;
        let recently_sent = repeat.is_some_and(|in_window| match ask.budget {
            Budget::Window => in_window,
            Budget::Spare => false,
            Budget::Spent => true,
        });
        if recently_sent && ask.last_resort {
            out.push(Out::LastResort);
        }
        let recently_sent = recently_sent && !ask.last_resort;
        let queues = self.queues();
        let refusal = if !authorised(&ask.from, &ask.chunk) {
            Some(Refusal::Unauthorized)
        } else if ask.over_relay && !self.config.chunks_over_relay {
            Some(Refusal::OverRelay)
        } else if recently_sent {
            Some(Refusal::SentElsewhere)
        } else if busy_repeat && !ask.last_resort {
            Some(Refusal::Busy)
        } else if queues {
            None
        } else if backlog > self.config.max_backlog
            || self.units + weight(ask.len) > self.config.max_uploads as u64 * UNITS_PER_UPLOAD
            || (self.config.super_seed.is_some()
                && !self
                    .fair
                    .admit(now, &ask.from, backlog > self.config.max_backlog / 2))
        {
            Some(Refusal::Busy)
        } else {
            None
        };
        if let Some(r) = refusal {
            out.push(Out::Refuse(ticket, r));
            return out;
        }
        if queues && (!self.slot_free(backlog) || !self.waiting.is_empty()) {
            let waiter = Waiter {
                from: ask.from,
                chunk: ask.chunk,
                id,
                len: ask.len,
                ticket,
            };
            match self.waiting.push(ask.held, waiter) {
                Queued::Waiting => {}
                Queued::Displaced(w) | Queued::Refused(w) => {
                    out.push(Out::Refuse(w.ticket, Refusal::Busy));
                }
            }
            self.serve_waiting(now, backlog, &authorised, &mut out);
            return out;
        }
        self.start(now, ask.from, ask.chunk, id, ask.len);
        out.push(Out::Answer(ticket));
        out
    }

    /// An answer's bytes went to the connection (or it could not be sent):
    /// its slot is free, and waiting requests may take it.
    pub fn sent(
        &mut self,
        now: Duration,
        backlog: Duration,
        authorised: impl Fn(&P, &C) -> bool,
    ) -> Vec<Out<T>> {
        self.answering = self.answering.saturating_sub(1);
        let mut out = Vec::new();
        self.serve_waiting(now, backlog, &authorised, &mut out);
        out
    }

    /// Answer `id` is done (delivered, or failed): its weight is free.
    pub fn finished(&mut self, id: &U) {
        if let Some(w) = self.uploads.remove(id) {
            self.units -= w;
        }
    }

    /// `peer` left: its fair-share record and its waiting requests go
    /// (unanswered: the connection is gone).
    pub fn forget(&mut self, peer: &P) {
        self.fair.forget(peer);
        self.waiting.retain(|w| w.from != *peer);
    }

    /// Answers in progress (read, waiting for the cap, or being sent).
    pub fn answering(&self) -> usize {
        self.answering
    }

    /// Requests waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn start(&mut self, now: Duration, from: P, chunk: C, id: U, len: Option<u32>) {
        if self.config.super_seed.is_some() {
            if self.sent.len() >= MAX_SENT_REMEMBERED {
                self.sent.clear();
            }
            self.fair.served(now, &from);
            self.sent.insert(chunk, (now, from));
        }
        let w = weight(len);
        self.units += w;
        self.uploads.insert(id, w);
        self.answering += 1;
    }

    /// Answers waiting requests while slots are free, neediest first.
    fn serve_waiting(
        &mut self,
        now: Duration,
        backlog: Duration,
        authorised: &impl Fn(&P, &C) -> bool,
        out: &mut Vec<Out<T>>,
    ) {
        while self.slot_free(backlog) {
            let Some(w) = self.waiting.pop() else {
                return;
            };
            if authorised(&w.from, &w.chunk) {
                self.start(now, w.from, w.chunk, w.id, w.len);
                out.push(Out::Answer(w.ticket));
            } else {
                out.push(Out::Refuse(w.ticket, Refusal::Unauthorized));
            }
        }
    }
}

#[cfg(test)]
mod tests;
