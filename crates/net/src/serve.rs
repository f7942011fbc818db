//! The serving side of the event loop: chunk requests refused, queued
//! behind the upload cap or answered (read and verified off the loop), with
//! super-seeding, fair shares and the size-weighted bound on answers in
//! progress.

use crate::NatCounters;
use crate::node::{Loop, MAX_SENT_REMEMBERED, Waiting, settle_outbound};
use libp2p::PeerId;
use libp2p::request_response as rr;
use shoal_wire::{ChunkRequest, ChunkResponse};
use std::time::Duration;
use tracing::Instrument as _;

/// [`Config::max_uploads`] counts chunks of the usual 1 MiB; a smaller one
/// weighs its share, in units of 1/64 (16 KiB), at least one unit.
const UPLOAD_UNIT: u64 = 16 << 10;
const UNITS_PER_UPLOAD: u64 = (1 << 20) / UPLOAD_UNIT;

fn upload_weight(len: Option<u32>) -> u64 {
    len.map_or(UNITS_PER_UPLOAD, |l| {
        u64::from(l).div_ceil(UPLOAD_UNIT).max(1)
    })
}

impl Loop {
    pub(crate) fn upload_done(&mut self, id: rr::InboundRequestId) {
        if let Some(w) = self.uploads.remove(&id) {
            self.upload_units -= w;
        }
    }

    /// Starts answering a chunk request: read and verify off the loop, then
    /// wait for the upload cap.
    fn answer(
        &mut self,
        now: Duration,
        peer: PeerId,
        request_id: rr::InboundRequestId,
        request: ChunkRequest,
        channel: rr::ResponseChannel<ChunkResponse>,
    ) {
        let key = (request.swarm, request.index);
        if self.config.super_seed.is_some() {
            if self.sent.len() >= MAX_SENT_REMEMBERED {
                self.sent.clear();
            }
            self.sent.insert(key, (now, peer));
            self.fair.served(now, &peer);
        }
        let weight = upload_weight(self.source.chunk_len(&request.swarm, request.index));
        self.uploads.insert(request_id, weight);
        self.upload_units += weight;
        // Reading and re-verifying the chunk happens off the event
        // loop, which keeps driving every connection meanwhile; the
        // upload cap then delays the answer by what its bytes cost.
        let (source, tx) = (self.source.clone(), self.delayed_tx.clone());
        let settling = source.clone();
        let (upload, started) = (self.upload.clone(), self.started);
        tokio::spawn(
            async move {
                let read = tokio::task::spawn_blocking(move || {
                    source.chunk(&request.swarm, request.index)
                });
                let response = match read.await {
                    Ok(Some(data)) => ChunkResponse::Data(data),
                    _ if settling.settling(&request.swarm) => ChunkResponse::Busy,
                    _ => ChunkResponse::NotFound,
                };
                let wait = match (&upload, &response) {
                    (Some(bucket), ChunkResponse::Data(d)) => bucket
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .reserve(started.elapsed(), d.len() as u64),
                    _ => Duration::ZERO,
                };
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let _ = tx.send((request_id, channel, response)).await;
            }
            .instrument(tracing::debug_span!("serve_chunk", %peer, index = request.index)),
        );
        self.answering += 1;
    }

    /// Whether chunk requests wait in `waiting` (a capped node that does not
    /// super-seed) rather than hear `Busy` when the upload is full.
    fn queues(&self) -> bool {
        self.upload.is_some() && self.config.super_seed.is_none() && self.config.upload_queue > 0
    }

    /// A queueing node may start another answer: a slot is free and the cap
    /// has no more than `max_upload_backlog` promised already (a slow
    /// uploader commits only to what it can deliver soon).
    fn slot_free(&self) -> bool {
        self.answering < self.config.upload_slots
            && (self.answering == 0 || self.backlog() <= self.config.max_upload_backlog)
    }

    /// Upload already promised to the cap, in time (zero without a cap).
    fn backlog(&self) -> Duration {
        self.upload.as_ref().map_or(Duration::ZERO, |b| {
            b.lock()
                .unwrap_or_else(|p| p.into_inner())
                .backlog(self.started.elapsed())
        })
    }

    /// Answers waiting requests while upload slots are free, neediest first.
    pub(crate) fn serve_waiting(&mut self) {
        while self.slot_free() {
            let Some(w) = self.waiting.pop() else {
                return;
            };
            if self.is_authorised(&w.peer, &w.request.swarm) {
                let now = self.started.elapsed();
                self.answer(now, w.peer, w.request_id, w.request, w.channel);
            } else {
                let chunk = &mut self.swarm.behaviour_mut().chunk;
                let _ = chunk.send_response(w.channel, ChunkResponse::Unauthorized);
            }
        }
    }

    pub(crate) fn chunk_event(&mut self, e: rr::Event<ChunkRequest, ChunkResponse>) {
        let Some(e) = settle_outbound(&mut self.chunk_pending, e, |_, response| Ok(response))
        else {
            return;
        };
        match e {
            rr::Event::Message {
                peer,
                connection_id,
                message:
                    rr::Message::Request {
                        request,
                        channel,
                        request_id,
                    },
            } => {
                let now = self.started.elapsed();
                let key = (request.swarm, request.index);
                // Over a relay: wait for the hole-punched connection.
                let over_relay =
                    !self.config.chunks_over_relay && self.relayed.contains_key(&connection_id);
                // A peer asking again for what it was sent lost it (a repair,
                // a restart): it gets the chunk; others are sent elsewhere,
                // unless they cannot reach the peer it went to.
                let recently_sent = self.config.super_seed.is_some_and(|w| {
                    self.sent
                        .get(&key)
                        .is_some_and(|&(t, to)| now < t + w && to != peer)
                });
                if recently_sent && request.last_resort {
                    NatCounters::add(&self.nat.chunks_last_resort);
                }
                let recently_sent = recently_sent && !request.last_resort;
                let backlog = self.backlog();
                // A capped player's node queues what it cannot answer yet.
                let queues = self.queues();
                let refusal = if !self.is_authorised(&peer, &request.swarm) {
                    Some(ChunkResponse::Unauthorized)
                } else if over_relay {
                    NatCounters::add(&self.nat.chunks_refused_relayed);
                    Some(ChunkResponse::Busy)
                } else if recently_sent {
                    Some(ChunkResponse::SentElsewhere)
                } else if queues {
                    None
                } else if backlog > self.config.max_upload_backlog
                    || self.upload_units
                        + upload_weight(self.source.chunk_len(&request.swarm, request.index))
                        > self.config.max_uploads as u64 * UNITS_PER_UPLOAD
                    || (self.config.super_seed.is_some()
                        && !self.fair.admit(
                            now,
                            &peer,
                            backlog > self.config.max_upload_backlog / 2,
                        ))
                {
                    Some(ChunkResponse::Busy)
                } else {
                    None
                };
                if let Some(response) = refusal {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .chunk
                        .send_response(channel, response);
                    return;
                }
                if queues && (!self.slot_free() || !self.waiting.is_empty()) {
                    let held = self.held.get(&(peer, request.swarm)).copied().unwrap_or(0);
                    let waiting = Waiting {
                        peer,
                        request_id,
                        request,
                        channel,
                    };
                    match self.waiting.push(held, waiting) {
                        shoal_scheduler::Queued::Waiting => {}
                        shoal_scheduler::Queued::Displaced(w)
                        | shoal_scheduler::Queued::Refused(w) => {
                            let chunk = &mut self.swarm.behaviour_mut().chunk;
                            let _ = chunk.send_response(w.channel, ChunkResponse::Busy);
                        }
                    }
                    self.serve_waiting();
                    return;
                }
                self.answer(now, peer, request_id, request, channel);
            }
            rr::Event::ResponseSent { request_id, .. }
            | rr::Event::InboundFailure { request_id, .. } => {
                self.upload_done(request_id);
            }
            // Answers to our own requests, settled above.
            rr::Event::Message {
                message: rr::Message::Response { .. },
                ..
            }
            | rr::Event::OutboundFailure { .. } => {}
        }
    }
}
