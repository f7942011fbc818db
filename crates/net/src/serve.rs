//! The serving side of the event loop: it drives `shoal_scheduler::Serve`,
//! the serving policy (the token gate, relays, super-seeding and fair
//! shares, bounded answers in progress, the neediest-first queue), with
//! what the node knows of each chunk request, and carries out its
//! decisions: refusals answered at once, answers read and re-verified off
//! the loop, then delayed by the upload cap.

use crate::NatCounters;
use crate::node::{Loop, Waiting, settle_outbound};
use crate::path::Path;
use libp2p::PeerId;
use libp2p::request_response as rr;
use shoal_scheduler::{Ask, Out, Refusal};
use shoal_types::Hash;
use shoal_wire::{ChunkRequest, ChunkResponse};
use std::collections::HashMap;
use std::time::Duration;
use tracing::Instrument as _;

/// Whether `peer` holds a live token for `swarm` at `now` (Unix seconds):
/// the policy's authorisation input.
pub(crate) fn authorised_in(
    authorised: &HashMap<PeerId, Vec<(Hash, u64)>>,
    now: u64,
    peer: &PeerId,
    swarm: &Hash,
) -> bool {
    authorised.get(peer).is_some_and(|list| {
        list.iter()
            .any(|(s, exp)| s == swarm && now <= exp + shoal_token::CLOCK_SKEW_SECS)
    })
}

impl Loop {
    /// Upload already promised to the cap, in time (zero without a cap).
    pub(crate) fn backlog(&self) -> Duration {
        self.upload.as_ref().map_or(Duration::ZERO, |b| {
            b.lock()
                .unwrap_or_else(|p| p.into_inner())
                .backlog(self.started.elapsed())
        })
    }

    /// An answer's bytes went to the connection (`delivered`: the
    /// transport took them): its slot frees, and waiting requests may
    /// take it.
    pub(crate) fn answer_sent(&mut self, id: rr::InboundRequestId, delivered: bool) {
        if !delivered {
            // The requester is gone: no ResponseSent will come.
            self.serve.finished(&id);
        }
        let (now, backlog) = (self.started.elapsed(), self.backlog());
        let (auth, clock) = (&self.authorised, (self.config.clock)());
        let outs = self.serve.sent(now, backlog, |p, c: &(Hash, u32)| {
            authorised_in(auth, clock, p, &c.0)
        });
        self.carry_out(outs);
    }

    /// Carries out the policy's decisions.
    fn carry_out(&mut self, outs: Vec<Out<Waiting>>) {
        for out in outs {
            match out {
                Out::Answer(w) => self.answer(w),
                Out::Refuse(w, why) => {
                    let response = match why {
                        Refusal::Unauthorized => ChunkResponse::Unauthorized,
                        Refusal::OverRelay => {
                            NatCounters::add(&self.nat.chunks_refused_relayed);
                            ChunkResponse::Busy
                        }
                        Refusal::SentElsewhere => ChunkResponse::SentElsewhere,
                        Refusal::Busy => ChunkResponse::Busy,
                    };
                    let chunk = &mut self.swarm.behaviour_mut().chunk;
                    let _ = chunk.send_response(w.channel, response);
                }
                Out::LastResort => NatCounters::add(&self.nat.chunks_last_resort),
            }
        }
    }

    /// Answers a chunk request the policy admitted: read and re-verify off
    /// the loop, which keeps driving every connection meanwhile; the upload
    /// cap then delays the answer by what its bytes cost.
    fn answer(&mut self, w: Waiting) {
        let Waiting {
            peer,
            path,
            request_id,
            request,
            channel,
        } = w;
        self.source.promised(&request.swarm, request.index);
        let (source, tx) = (self.source.clone(), self.delayed_tx.clone());
        let settling = source.clone();
        let (upload, started) = (self.upload.clone(), self.started);
        tokio::spawn(
            async move {
                let read = tokio::task::spawn_blocking({
                    let span = tracing::Span::current();
                    move || span.in_scope(|| source.chunk(&request.swarm, request.index))
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
                let _ = tx.send((request_id, path, channel, response)).await;
            }
            .instrument(tracing::debug_span!("serve_chunk", %peer, index = request.index)),
        );
    }

    pub(crate) fn chunk_event(&mut self, e: rr::Event<ChunkRequest, ChunkResponse>) {
        if let rr::Event::Message {
            connection_id,
            message:
                rr::Message::Response {
                    response: ChunkResponse::Data(d),
                    ..
                },
            ..
        } = &e
            && let Some(path) = self.path(*connection_id)
        {
            self.nat.received.add(path, d.len() as u64);
        }
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
                let ask = Ask {
                    from: peer,
                    chunk: (request.swarm, request.index),
                    len: self.source.chunk_len(&request.swarm, request.index),
                    last_resort: request.last_resort,
                    over_relay: self.path(connection_id) == Some(Path::Relayed),
                    held: self.held.get(&(peer, request.swarm)).copied().unwrap_or(0),
                    budget: self.source.budget(&request.swarm, request.index),
                };
                let ticket = Waiting {
                    peer,
                    path: self.path(connection_id),
                    request_id,
                    request,
                    channel,
                };
                let (now, backlog) = (self.started.elapsed(), self.backlog());
                let (auth, clock) = (&self.authorised, (self.config.clock)());
                let outs = self
                    .serve
                    .request(now, ask, request_id, ticket, backlog, |p, c| {
                        authorised_in(auth, clock, p, &c.0)
                    });
                self.carry_out(outs);
            }
            rr::Event::ResponseSent { request_id, .. }
            | rr::Event::InboundFailure { request_id, .. } => {
                self.serve.finished(&request_id);
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
