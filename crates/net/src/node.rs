//! The node's event loop: it owns the libp2p `Swarm`, answers the
//! [`Client`]'s commands, admits swarm tokens (`/shoal/auth/1`), keeps
//! what each peer holds from its haves (`/shoal/have/1`), and settles the
//! outbound requests callers wait on. Serving chunks is in `serve`,
//! reachability in `reach`, relays in `nat`, mDNS in `lan`.

use crate::behaviour::{self, Behaviour, BehaviourEvent};
use crate::path::Path;
use crate::{ChunkSource, Client, Command, Config, Event, NatCounters, NetError, lan, nat, reach};
use futures::StreamExt as _;
use libp2p::request_response::{self as rr, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use shoal_token::Token;
use shoal_types::Hash;
use shoal_wire::{AuthRequest, AuthResponse, ChunkRequest, ChunkResponse, HaveAck, HaveMessage};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

const COMMAND_QUEUE: usize = 256;
const EVENT_QUEUE: usize = 1024;
/// Events held back while the application's queue is full; past this the
/// loop stops taking network events until the application catches up, so
/// no event is lost and none waits unbounded.
const MAX_BACKLOG: usize = 4096;
/// Most authenticated swarms remembered per peer.
const MAX_SWARMS_PER_PEER: usize = 16;

/// A chunk response held back by the upload cap, and the path of the
/// connection that asked.
pub(crate) type Delayed = (
    rr::InboundRequestId,
    Option<Path>,
    rr::ResponseChannel<ChunkResponse>,
    ChunkResponse,
);

/// A chunk request as the serving policy holds it: what the loop needs to
/// answer it, now or when its turn comes.
pub(crate) struct Waiting {
    pub(crate) peer: PeerId,
    /// The path of the connection it came on.
    pub(crate) path: Option<Path>,
    pub(crate) request_id: rr::InboundRequestId,
    pub(crate) request: ChunkRequest,
    pub(crate) channel: rr::ResponseChannel<ChunkResponse>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("peer", &self.peer)
            .field("index", &self.request.index)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Loop {
    pub(crate) swarm: libp2p::Swarm<Behaviour>,
    pub(crate) connected: Arc<std::sync::atomic::AtomicUsize>,
    /// Every connection: to whom, and its path (relayed ones are the
    /// hole punch's stepping stone).
    pub(crate) connections: HashMap<libp2p::swarm::ConnectionId, (PeerId, Path)>,
    /// The networks our interfaces are on, for telling LAN paths apart
    /// (`None` if the OS would not say).
    pub(crate) interfaces: Option<if_watch::tokio::IfWatcher>,
    /// Direct connections per peer.
    pub(crate) direct: HashMap<PeerId, u32>,
    /// Peers that presented a valid token (they may reserve a relay slot).
    pub(crate) admitted: nat::Admitted,
    pub(crate) nat: Arc<NatCounters>,
    /// LAN addresses of nodes mDNS found.
    pub(crate) lan: lan::Lan,
    /// What AutoNAT found, and the reading clients see.
    pub(crate) probes: reach::Probes,
    pub(crate) reach: Arc<reach::Shared>,
    /// Whom to answer: the serving policy.
    pub(crate) serve: shoal_scheduler::Serve<PeerId, (Hash, u32), rr::InboundRequestId, Waiting>,
    /// Chunks each peer holds per swarm, from its haves.
    pub(crate) held: HashMap<(PeerId, Hash), u32>,
    pub(crate) upload: Option<Arc<std::sync::Mutex<shoal_scheduler::TokenBucket>>>,
    pub(crate) delayed_tx: mpsc::Sender<Delayed>,
    pub(crate) started: std::time::Instant,
    pub(crate) config: Config,
    pub(crate) source: Arc<dyn ChunkSource>,
    pub(crate) events: mpsc::Sender<Event>,
    /// Events that found the application's queue full, oldest first.
    pub(crate) backlog: std::collections::VecDeque<Event>,
    /// Swarms each peer may fetch from us, with token expiry.
    pub(crate) authorised: HashMap<PeerId, Vec<(Hash, u64)>>,
    pub(crate) dials: HashMap<PeerId, Vec<oneshot::Sender<Result<(), NetError>>>>,
    /// Dial attempts in flight per peer (the tracker's address, and a LAN
    /// one mDNS found meanwhile): a dial fails only when all have.
    pub(crate) attempts: HashMap<PeerId, Vec<libp2p::swarm::ConnectionId>>,
    pub(crate) auth_pending: HashMap<OutboundRequestId, oneshot::Sender<Result<(), NetError>>>,
    pub(crate) chunk_pending:
        HashMap<OutboundRequestId, oneshot::Sender<Result<ChunkResponse, NetError>>>,
    pub(crate) have_pending: HashMap<OutboundRequestId, oneshot::Sender<Result<HaveAck, NetError>>>,
}

/// Answers the caller waiting on outbound request `id`, if it still waits.
fn settle<T>(
    pending: &mut HashMap<OutboundRequestId, oneshot::Sender<Result<T, NetError>>>,
    id: OutboundRequestId,
    result: Result<T, NetError>,
) {
    if let Some(reply) = pending.remove(&id) {
        let _ = reply.send(result);
    }
}

fn request_failed(peer: PeerId, error: &rr::OutboundFailure) -> NetError {
    NetError::Request {
        peer: peer.to_string(),
        detail: error.to_string(),
    }
}

/// The outbound half of a request-response event, the same for every
/// protocol: an answer or a failure goes to the caller waiting on that
/// request (`answer` turns a response into the caller's result). What is
/// left (requests to us, answers sent, inbound failures) is returned for
/// the protocol's own handling.
pub(crate) fn settle_outbound<Req, Resp, T>(
    pending: &mut HashMap<OutboundRequestId, oneshot::Sender<Result<T, NetError>>>,
    event: rr::Event<Req, Resp>,
    answer: impl FnOnce(PeerId, Resp) -> Result<T, NetError>,
) -> Option<rr::Event<Req, Resp>> {
    match event {
        rr::Event::Message {
            peer,
            message:
                rr::Message::Response {
                    request_id,
                    response,
                },
            ..
        } => {
            settle(pending, request_id, answer(peer, response));
            None
        }
        rr::Event::OutboundFailure {
            peer,
            request_id,
            error,
            ..
        } => {
            settle(pending, request_id, Err(request_failed(peer, &error)));
            None
        }
        other => Some(other),
    }
}

/// The next change to the interface list (the watcher keeps the list
/// itself); never, without a watcher.
async fn interface_event(
    watcher: &mut Option<if_watch::tokio::IfWatcher>,
) -> Option<std::io::Result<if_watch::IfEvent>> {
    match watcher {
        Some(w) => Some(std::future::poll_fn(|cx| w.poll_if_event(cx)).await),
        None => std::future::pending().await,
    }
}

/// Starts the event loop: the node behind [`crate::spawn`].
pub(crate) fn start(
    config: Config,
    source: Arc<dyn ChunkSource>,
) -> Result<(Client, mpsc::Receiver<Event>), Box<dyn std::error::Error + Send + Sync>> {
    let admitted = nat::Admitted::default();
    let mut swarm = behaviour::swarm(&config, admitted.clone())?;
    for addr in &config.listen {
        swarm.listen_on(addr.clone())?;
    }
    let peer_id = *swarm.local_peer_id();
    let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (delayed_tx, delayed) = mpsc::channel(COMMAND_QUEUE);
    let upload = config.upload_rate.map(|r| {
        Arc::new(std::sync::Mutex::new(shoal_scheduler::TokenBucket::capped(
            r,
        )))
    });
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let nat = Arc::new(NatCounters::default());
    let reach = Arc::new(reach::Shared::default());
    let node = Loop {
        probes: reach::Probes::default(),
        reach: reach.clone(),
        connected: connected.clone(),
        connections: HashMap::new(),
        interfaces: if_watch::tokio::IfWatcher::new()
            .inspect_err(
                |e| tracing::debug!(error = %e, "no interface list; every path counts as direct"),
            )
            .ok(),
        direct: HashMap::new(),
        admitted,
        nat: nat.clone(),
        lan: lan::Lan::default(),
        serve: shoal_scheduler::Serve::new(shoal_scheduler::ServeConfig {
            super_seed: config.super_seed,
            chunks_over_relay: config.chunks_over_relay,
            capped: upload.is_some(),
            queue: config.upload_queue,
            slots: config.upload_slots,
            max_uploads: config.max_uploads,
            max_backlog: config.max_upload_backlog,
        }),
        held: HashMap::new(),
        upload,
        delayed_tx,
        started: std::time::Instant::now(),
        swarm,
        config,
        source,
        events,
        authorised: HashMap::new(),
        dials: HashMap::new(),
        attempts: HashMap::new(),
        backlog: std::collections::VecDeque::new(),
        auth_pending: HashMap::new(),
        chunk_pending: HashMap::new(),
        have_pending: HashMap::new(),
    };
    tokio::spawn(
        node.run(rx, delayed)
            .instrument(tracing::info_span!("node", %peer_id)),
    );
    Ok((
        Client {
            peer_id,
            commands,
            connected,
            nat,
            reach,
        },
        events_rx,
    ))
}

impl Loop {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut delayed: mpsc::Receiver<Delayed>,
    ) {
        // For waiting on room for the backlog: a permit borrows this
        // sender, not `self`, so the handler may use `self`.
        let room = self.events.clone();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(c) => self.command(c),
                    None => break,
                },
                Some((id, path, channel, response)) = delayed.recv() => {
                    if let (Some(path), ChunkResponse::Data(d)) = (path, &response) {
                        self.nat.sent.add(path, d.len() as u64);
                    }
                    let delivered =
                        self.swarm.behaviour_mut().chunk.send_response(channel, response).is_ok();
                    self.answer_sent(id, delivered);
                }
                permit = room.reserve(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(e) = self.backlog.pop_front() {
                            permit.send(e);
                        }
                        self.drain_backlog();
                    }
                    // Nobody listens any more: nothing to deliver.
                    Err(_) => self.backlog.clear(),
                },
                event = self.swarm.select_next_some(), if self.backlog.len() < MAX_BACKLOG => {
                    self.swarm_event(event)
                }
                Some(event) = interface_event(&mut self.interfaces) => {
                    if let Err(e) = event {
                        tracing::debug!(error = %e, "interface list; every path counts as direct from now");
                        self.interfaces = None;
                    }
                }
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Advertised(reply) => {
                let mut addrs: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
                for a in self.swarm.listeners() {
                    if !addrs.contains(a) && !reach::unspecified(a) {
                        addrs.push(a.clone());
                    }
                }
                let _ = reply.send(addrs);
            }
            Command::IsDirect(peer, reply) => {
                let _ = reply.send(self.direct.contains_key(&peer));
            }
            Command::Listen(addr, reply) => {
                let result = self
                    .swarm
                    .listen_on(addr.clone())
                    .map(|_| ())
                    .map_err(|e| NetError::Dial(addr.to_string(), e.to_string()));
                let _ = reply.send(result);
            }
            Command::Dial(peer, addr, reply) => {
                if self.swarm.is_connected(&peer) {
                    // Connected over a relay only, to a node mDNS found on
                    // our LAN: dial it there too (chunks do not take the
                    // relay, and the LAN does not cross the router).
                    self.dial_on_lan(peer);
                    let _ = reply.send(Ok(()));
                    return;
                }
                if self.attempts.contains_key(&peer) {
                    // Already being dialled (another download of ours joins
                    // the same seed): this caller hears how that dial ends.
                    self.dials.entry(peer).or_default().push(reply);
                    return;
                }
                // A node on our LAN is dialled there too, at once: the
                // first handshake to finish wins.
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(self.lan.dial_addrs(&peer, addr))
                    .build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.entry(peer).or_default().push(reply);
                        self.attempts.entry(peer).or_default().push(id);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Dial(peer.to_string(), e.to_string())));
                    }
                }
            }
            Command::Authenticate(peer, req, reply) => {
                let id = self.swarm.behaviour_mut().auth.send_request(&peer, req);
                self.auth_pending.insert(id, reply);
            }
            Command::Chunk(peer, req, reply) => {
                let id = self.swarm.behaviour_mut().chunk.send_request(&peer, req);
                self.chunk_pending.insert(id, reply);
            }
            Command::Have(peer, msg, reply) => {
                let id = self.swarm.behaviour_mut().have.send_request(&peer, msg);
                self.have_pending.insert(id, reply);
            }
        }
    }

    /// The path of connection `id`, if it is still open.
    pub(crate) fn path(&self, id: libp2p::swarm::ConnectionId) -> Option<Path> {
        self.connections.get(&id).map(|(_, path)| *path)
    }

    pub(crate) fn is_authorised(&self, peer: &PeerId, swarm: &Hash) -> bool {
        crate::serve::authorised_in(&self.authorised, (self.config.clock)(), peer, swarm)
    }

    fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if matches!(
            event,
            SwarmEvent::ConnectionEstablished { .. } | SwarmEvent::ConnectionClosed { .. }
        ) {
            self.connected.store(
                self.swarm.connected_peers().count(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                if self.swarm.connected_peers().count() > self.config.max_connections {
                    tracing::debug!(%peer_id, "connection limit reached; closing");
                    self.swarm.close_connection(connection_id);
                }
                // Inbound circuits name the circuit in their local address,
                // outbound ones in the remote: `is_relayed` looks at both.
                let local = self.interfaces.iter().flat_map(|w| w.iter());
                let path = Path::of(endpoint.get_remote_address(), endpoint.is_relayed(), local);
                self.connections.insert(connection_id, (peer_id, path));
                if path == Path::Relayed {
                    NatCounters::add(&self.nat.relayed_connections);
                } else {
                    NatCounters::add(&self.nat.direct_connections);
                    *self.direct.entry(peer_id).or_default() += 1;
                    self.emit(Event::Direct { peer: peer_id });
                    // A direct connection replaces a relayed one (it was hole
                    // punched, or dialed): requests must not take the relay.
                    let superseded: Vec<_> = self
                        .connections
                        .iter()
                        .filter(|(_, (p, path))| *p == peer_id && *path == Path::Relayed)
                        .map(|(c, _)| *c)
                        .collect();
                    for c in superseded {
                        tracing::debug!(%peer_id, "closing the relayed connection a direct one replaced");
                        self.swarm.close_connection(c);
                    }
                }
                self.attempt_over(peer_id, connection_id);
                for reply in self.dials.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(()));
                }
            }
            // A relay (a seed) is public by definition: its listen addresses
            // are its external ones, which the relay protocol requires before
            // it offers slots.
            SwarmEvent::NewListenAddr { address, .. } if self.config.relay.is_some() => {
                self.swarm.add_external_address(address);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                connection_id,
                error,
            } => {
                if self.attempt_over(peer, connection_id) {
                    return;
                }
                for reply in self.dials.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Err(NetError::Dial(peer.to_string(), error.to_string())));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } if num_established > 0 => {
                self.connection_closed(peer_id, connection_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                self.connection_closed(peer_id, connection_id);
                self.admitted.forget(&peer_id);
                self.authorised.remove(&peer_id);
                self.serve.forget(&peer_id);
                self.held.retain(|(p, _), _| *p != peer_id);
                self.emit(Event::Disconnected { peer: peer_id });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Auth(e)) => self.auth_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Have(e)) => self.have_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Chunk(e)) => self.chunk_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => self.relay_client_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => self.relay_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => self.dcutr_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(e)) => self.autonat_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::AutonatServer(e)) => self.autonat_server_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(e)) => self.mdns_event(e),
            _ => {}
        }
    }

    fn auth_event(&mut self, e: rr::Event<AuthRequest, AuthResponse>) {
        let answer = |peer: PeerId, response| match response {
            AuthResponse::Accepted => Ok(()),
            AuthResponse::Refused { reason } => Err(NetError::AuthRefused {
                peer: peer.to_string(),
                reason,
            }),
        };
        let Some(e) = settle_outbound(&mut self.auth_pending, e, answer) else {
            return;
        };
        if let rr::Event::Message {
            peer,
            message: rr::Message::Request {
                request, channel, ..
            },
            ..
        } = e
        {
            let now = (self.config.clock)();
            let verdict = Token::from_bytes(&request.token).and_then(|t| {
                t.verify(
                    &self.config.tracker_key,
                    now,
                    &request.swarm,
                    &peer.to_base58(),
                )
            });
            let response = match verdict {
                Ok(claims) => {
                    self.admitted.admit(peer);
                    let list = self.authorised.entry(peer).or_default();
                    list.retain(|(s, _)| *s != request.swarm);
                    if list.len() >= MAX_SWARMS_PER_PEER {
                        list.remove(0);
                    }
                    list.push((request.swarm, claims.expires_at));
                    self.emit(Event::Authenticated {
                        peer,
                        swarm: request.swarm,
                    });
                    AuthResponse::Accepted
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "refused a swarm token");
                    AuthResponse::Refused {
                        reason: e.to_string(),
                    }
                }
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .auth
                .send_response(channel, response);
        }
    }

    fn have_event(&mut self, e: rr::Event<HaveMessage, HaveAck>) {
        let Some(e) = settle_outbound(&mut self.have_pending, e, |_, ack| Ok(ack)) else {
            return;
        };
        if let rr::Event::Message {
            peer,
            message: rr::Message::Request {
                request, channel, ..
            },
            ..
        } = e
        {
            let ack = if self.is_authorised(&peer, &request.swarm) {
                let held = self.held.entry((peer, request.swarm)).or_default();
                match &request.update {
                    shoal_wire::HaveUpdate::Bitfield(b) => *held = b.count(),
                    shoal_wire::HaveUpdate::Have(chunks) => {
                        *held = held.saturating_add(chunks.len() as u32);
                    }
                }
                self.emit(Event::Have {
                    peer,
                    message: request,
                });
                HaveAck::Ok
            } else {
                HaveAck::Unauthorized
            };
            let _ = self.swarm.behaviour_mut().have.send_response(channel, ack);
        }
    }

    /// Hands `e` to the application, in order: straight into its queue, or
    /// behind the events already waiting for room (none is dropped; see
    /// [`MAX_BACKLOG`]). With nobody listening it goes nowhere.
    fn emit(&mut self, e: Event) {
        if self.backlog.is_empty() {
            if let Err(mpsc::error::TrySendError::Full(e)) = self.events.try_send(e) {
                self.backlog.push_back(e);
            }
        } else if !self.events.is_closed() {
            self.backlog.push_back(e);
        }
    }

    /// Moves waiting events into the application's queue while it has room.
    fn drain_backlog(&mut self) {
        while let Some(e) = self.backlog.pop_front() {
            match self.events.try_send(e) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(e)) => {
                    self.backlog.push_front(e);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    /// Dial attempt `id` to `peer` is over; whether others are in flight.
    fn attempt_over(&mut self, peer: PeerId, id: libp2p::swarm::ConnectionId) -> bool {
        let Some(list) = self.attempts.get_mut(&peer) else {
            return false;
        };
        list.retain(|a| *a != id);
        if list.is_empty() {
            self.attempts.remove(&peer);
            return false;
        }
        true
    }

    fn connection_closed(&mut self, peer: PeerId, id: libp2p::swarm::ConnectionId) {
        if self
            .connections
            .remove(&id)
            .is_some_and(|(_, path)| path != Path::Relayed)
            && let Some(n) = self.direct.get_mut(&peer)
        {
            *n -= 1;
            if *n == 0 {
                self.direct.remove(&peer);
            }
        }
    }
}
