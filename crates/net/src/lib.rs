//! Peer networking: libp2p over QUIC, with Shoal's three protocols
//! (`/shoal/auth/1`, `/shoal/have/1`, `/shoal/chunk/2`). The only crate that
//! imports libp2p.
//!
//! [`spawn`] starts an event loop that owns the libp2p `Swarm`; the returned
//! [`Client`] sends it commands over a bounded channel and gets replies on
//! oneshots. Chunks are served only to connections whose authenticated
//! PeerId presented a valid swarm token for that swarm.

mod behaviour;
mod codec;
pub mod download;
mod lan;
mod nat;
mod punch;
pub mod quic;
mod reach;
mod serve;

pub use nat::{NatCounters, RelayLimits, is_relayed};

use behaviour::{Behaviour, BehaviourEvent};
use futures::StreamExt as _;
use libp2p::request_response::{self as rr, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, identity};
use shoal_token::Token;
use shoal_types::{Bitfield, Hash, PublicKey};
use shoal_wire::{AuthRequest, AuthResponse, ChunkRequest, ChunkResponse, HaveAck, HaveMessage};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

pub use libp2p::identity::Keypair;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr as Addr, PeerId as Peer};

/// Where chunks come from on the serving side. Implementations return only
/// bytes that passed `shoal_manifest::verify` (a corrupt disk never goes out).
pub trait ChunkSource: Send + Sync + 'static {
    /// The chunk, or `None` if not held (or failing verification).
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>>;
    /// What is held of `swarm`, if anything.
    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield>;
    /// The holdings of `swarm` are moving (a finished download becoming the
    /// installed build): a chunk that cannot be read now is answered `Busy`,
    /// so requesters try again rather than forget that this node has it.
    fn settling(&self, _swarm: &Hash) -> bool {
        false
    }
    /// The length of chunk `index` of `swarm`, if known without reading it:
    /// small chunks then count for their share of [`Config::max_uploads`].
    fn chunk_len(&self, _swarm: &Hash, _index: u32) -> Option<u32> {
        None
    }
}

/// Node settings.
#[derive(Clone)]
pub struct Config {
    pub keypair: Keypair,
    pub listen: Vec<Multiaddr>,
    /// The tracker key that signs swarm tokens (pinned).
    pub tracker_key: PublicKey,
    /// Per-request timeout on the wire.
    pub request_timeout: Duration,
    /// Seconds since the Unix epoch, for token expiry.
    pub clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Upload cap in bytes per second (token bucket, one second of burst).
    pub upload_rate: Option<u64>,
    /// Most peers connected at once; further connections are closed.
    pub max_connections: usize,
    /// Most concurrent streams per protocol and connection.
    pub max_concurrent_streams: usize,
    /// Super-seeding (seeds): refuse a chunk sent within this window with
    /// `SentElsewhere`, so peers relay it and it leaves the origin about once.
    pub super_seed: Option<Duration>,
    /// With an upload cap: answer `Busy` rather than queue a chunk behind
    /// more than this much already-promised upload, so a slow uploader is
    /// asked only for what it can deliver soon and requesters go elsewhere.
    pub max_upload_backlog: Duration,
    /// Chunk answers being read or sent at once, in chunks of 1 MiB (a
    /// 16 KiB chunk counts 1/64, so many small files keep as many bytes
    /// moving); further requests hear `Busy`. This bounds the queue behind an uplink the node cannot see
    /// (no cap configured, or a slower link than the cap), which would
    /// otherwise grow until requests time out and go to a seed.
    pub max_uploads: usize,
    /// With an upload cap and no super-seeding (a player's node): chunk
    /// answers committed to the cap at once. Further requests wait in a
    /// queue of `upload_queue`, served to the requester holding fewest
    /// chunks first; a far needier requester displaces the best-off one
    /// from a full queue (`shoal_scheduler::NeedQueue`). This keeps a swarm
    /// progressing together instead of finishing a few peers early and
    /// waiting on laggards' download links at the end.
    pub upload_slots: usize,
    /// Requests waiting for an upload slot; 0 answers `Busy` instead.
    pub upload_queue: usize,
    /// Run a circuit relay v2 server within these limits (seeds: they are
    /// public, and unreachable players reserve a slot on them).
    pub relay: Option<RelayLimits>,
    /// Serve chunk requests that arrive over a relayed circuit. Off: they
    /// hear `Busy` until the hole-punched direct connection carries them.
    pub chunks_over_relay: bool,
    /// Run an AutoNAT v2 server: dial peers back at the addresses they ask
    /// about, from a fresh port, so they learn whether they are reachable
    /// (seeds: public by definition).
    pub autonat_server: bool,
    /// Find nodes on the LAN with mDNS and dial peers there as well as at
    /// the addresses the tracker gave (players: a household or an office
    /// behind one router, or behind several). Off when every listen address
    /// is loopback.
    pub lan_discovery: bool,
}

impl Config {
    /// Defaults for everything but identity, addresses and trust.
    pub fn new(
        keypair: Keypair,
        listen: Vec<Multiaddr>,
        tracker_key: PublicKey,
        clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Config {
        Config {
            keypair,
            listen,
            tracker_key,
            request_timeout: Duration::from_secs(60),
            clock,
            upload_rate: None,
            max_connections: 200,
            max_concurrent_streams: 64,
            super_seed: None,
            max_upload_backlog: Duration::from_secs(2),
            max_uploads: 16,
            upload_slots: 4,
            upload_queue: 8,
            relay: None,
            chunks_over_relay: false,
            autonat_server: false,
            lan_discovery: false,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// Network failures, told apart so callers can retry, re-route or ban.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("the node has stopped")]
    Stopped,
    #[error("dialing {0} failed: {1}")]
    Dial(String, String),
    #[error("request to {peer} failed: {detail}")]
    Request { peer: String, detail: String },
    #[error("{peer} refused our token: {reason}")]
    AuthRefused { peer: String, reason: String },
}

/// Something the application should know.
#[derive(Debug, Clone)]
pub enum Event {
    /// A peer announced chunks (only accepted from authenticated peers).
    Have { peer: PeerId, message: HaveMessage },
    /// A peer authenticated for a swarm.
    Authenticated { peer: PeerId, swarm: Hash },
    /// A connection closed.
    Disconnected { peer: PeerId },
    /// A direct (not relayed) connection to `peer` is up: dialled, accepted
    /// or hole punched.
    Direct { peer: PeerId },
}

enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Advertised(oneshot::Sender<Vec<Multiaddr>>),
    Listen(Multiaddr, oneshot::Sender<Result<(), NetError>>),
    Dial(PeerId, Multiaddr, oneshot::Sender<Result<(), NetError>>),
    IsDirect(PeerId, oneshot::Sender<bool>),
    Authenticate(PeerId, AuthRequest, oneshot::Sender<Result<(), NetError>>),
    Chunk(
        PeerId,
        ChunkRequest,
        oneshot::Sender<Result<ChunkResponse, NetError>>,
    ),
    Have(
        PeerId,
        HaveMessage,
        oneshot::Sender<Result<HaveAck, NetError>>,
    ),
}

/// A handle to a running node.
#[derive(Debug, Clone)]
pub struct Client {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    connected: Arc<std::sync::atomic::AtomicUsize>,
    nat: Arc<NatCounters>,
    reach: Arc<reach::Shared>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

async fn ask<T>(
    tx: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, NetError> {
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply)).await.map_err(|_| NetError::Stopped)?;
    rx.await.map_err(|_| NetError::Stopped)
}

impl Client {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Peers connected right now.
    pub fn connected_peers(&self) -> usize {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The addresses the node listens on (after binding), relayed ones
    /// (`…/p2p-circuit`) included once their reservation stands.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        ask(&self.commands, Command::ListenAddrs).await
    }

    /// Listens on `addr` too, e.g. `<relay addr>/p2p/<relay>/p2p-circuit`
    /// to be reachable through a relay while unreachable directly.
    pub async fn listen_on(&self, addr: Multiaddr) -> Result<(), NetError> {
        ask(&self.commands, |r| Command::Listen(addr, r)).await?
    }

    /// Direct and relayed connections and hole punches so far.
    pub fn nat(&self) -> &NatCounters {
        &self.nat
    }

    /// Whether other peers can dial this node, as AutoNAT found so far.
    pub fn reachability(&self) -> shoal_types::Reachability {
        self.reach.get()
    }

    /// The addresses worth telling others, best first: external addresses
    /// AutoNAT confirmed, then listen addresses (bound interfaces and, once
    /// a relay reservation stands, `…/p2p-circuit` ones). Never unspecified.
    pub async fn advertised_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        ask(&self.commands, Command::Advertised).await
    }

    /// Connects to `peer` at `addr`.
    pub async fn dial(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NetError> {
        ask(&self.commands, |r| Command::Dial(peer, addr, r)).await?
    }

    /// Whether a direct (not relayed) connection to `peer` is up. Chunks
    /// move only over direct ones; a peer reached only through a relay is
    /// useful once a hole punch succeeds ([`Event::Direct`]).
    pub async fn is_direct(&self, peer: PeerId) -> Result<bool, NetError> {
        ask(&self.commands, |r| Command::IsDirect(peer, r)).await
    }

    /// Presents a swarm token to `peer`.
    pub async fn authenticate(
        &self,
        peer: PeerId,
        swarm: Hash,
        token: &Token,
    ) -> Result<(), NetError> {
        let req = AuthRequest {
            swarm,
            token: token.to_bytes(),
        };
        ask(&self.commands, |r| Command::Authenticate(peer, req, r)).await?
    }

    /// Asks `peer` for chunk `index` of `swarm`.
    pub async fn chunk(
        &self,
        peer: PeerId,
        swarm: Hash,
        index: u32,
    ) -> Result<ChunkResponse, NetError> {
        self.request_chunk(
            peer,
            ChunkRequest {
                swarm,
                index,
                last_resort: false,
            },
        )
        .await
    }

    /// Sends `peer` a chunk request as given (see [`ChunkRequest::last_resort`]).
    pub async fn request_chunk(
        &self,
        peer: PeerId,
        request: ChunkRequest,
    ) -> Result<ChunkResponse, NetError> {
        ask(&self.commands, |r| Command::Chunk(peer, request, r)).await?
    }

    /// Tells `peer` what we hold.
    pub async fn have(&self, peer: PeerId, message: HaveMessage) -> Result<HaveAck, NetError> {
        ask(&self.commands, |r| Command::Have(peer, message, r)).await?
    }
}

/// Bounds: commands queued to the loop, and events queued to the application.
const COMMAND_QUEUE: usize = 256;
const EVENT_QUEUE: usize = 1024;
/// Most authenticated swarms remembered per peer.
const MAX_SWARMS_PER_PEER: usize = 16;

/// A chunk response held back by the upload cap.
type Delayed = (
    rr::InboundRequestId,
    rr::ResponseChannel<ChunkResponse>,
    ChunkResponse,
);

/// A chunk request waiting for an upload slot.
struct Waiting {
    peer: PeerId,
    request_id: rr::InboundRequestId,
    request: ChunkRequest,
    channel: rr::ResponseChannel<ChunkResponse>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("peer", &self.peer)
            .field("index", &self.request.index)
            .finish_non_exhaustive()
    }
}

/// Chunks remembered for super-seeding before the map is reset.
const MAX_SENT_REMEMBERED: usize = 1 << 20;

struct Loop {
    swarm: libp2p::Swarm<Behaviour>,
    connected: Arc<std::sync::atomic::AtomicUsize>,
    /// Connections that go through a relay, and to whom.
    relayed: HashMap<libp2p::swarm::ConnectionId, PeerId>,
    /// Direct connections per peer.
    direct: HashMap<PeerId, u32>,
    /// Peers that presented a valid token (they may reserve a relay slot).
    admitted: nat::Admitted,
    nat: Arc<NatCounters>,
    /// LAN addresses of nodes mDNS found.
    lan: lan::Lan,
    /// What AutoNAT found, and the reading clients see.
    probes: reach::Probes,
    reach: Arc<reach::Shared>,
    /// When each chunk was last sent, and to whom (super-seeding only).
    sent: HashMap<(Hash, u32), (Duration, PeerId)>,
    /// Super-seeding: while the upload is backlogged, the least-served
    /// requesters go first.
    fair: shoal_scheduler::FairShare<PeerId>,
    /// Chunk requests admitted and not yet fully answered.
    /// Answers being read or sent, with their weights ([`upload_weight`]).
    uploads: HashMap<rr::InboundRequestId, u64>,
    upload_units: u64,
    /// Answers being read or waiting for the upload cap.
    answering: usize,
    /// Requests waiting for an upload slot, neediest first.
    waiting: shoal_scheduler::NeedQueue<Waiting>,
    /// Chunks each peer holds per swarm, from its haves.
    held: HashMap<(PeerId, Hash), u32>,
    upload: Option<Arc<std::sync::Mutex<shoal_scheduler::TokenBucket>>>,
    delayed_tx: mpsc::Sender<Delayed>,
    started: std::time::Instant,
    config: Config,
    source: Arc<dyn ChunkSource>,
    events: mpsc::Sender<Event>,
    /// Swarms each peer may fetch from us, with token expiry.
    authorised: HashMap<PeerId, Vec<(Hash, u64)>>,
    dials: HashMap<PeerId, Vec<oneshot::Sender<Result<(), NetError>>>>,
    auth_pending: HashMap<OutboundRequestId, oneshot::Sender<Result<(), NetError>>>,
    chunk_pending: HashMap<OutboundRequestId, oneshot::Sender<Result<ChunkResponse, NetError>>>,
    have_pending: HashMap<OutboundRequestId, oneshot::Sender<Result<HaveAck, NetError>>>,
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

/// Starts a node. Returns the client handle and the stream of events.
pub fn spawn(
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
        relayed: HashMap::new(),
        direct: HashMap::new(),
        admitted,
        nat: nat.clone(),
        lan: lan::Lan::default(),
        sent: HashMap::new(),
        fair: shoal_scheduler::FairShare::default(),
        uploads: HashMap::new(),
        upload_units: 0,
        answering: 0,
        waiting: shoal_scheduler::NeedQueue::new(config.upload_queue),
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

/// A fresh ed25519 identity.
pub fn generate_keypair() -> Keypair {
    identity::Keypair::generate_ed25519()
}

/// The identity with this 32-byte ed25519 seed (kept on disk by clients).
pub fn keypair_from_seed(seed: [u8; 32]) -> Keypair {
    let mut seed = seed;
    identity::Keypair::ed25519_from_bytes(&mut seed).expect("32 bytes is a valid ed25519 seed")
}

impl Loop {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut delayed: mpsc::Receiver<Delayed>,
    ) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(c) => self.command(c),
                    None => break,
                },
                Some((id, channel, response)) = delayed.recv() => {
                    self.answering = self.answering.saturating_sub(1);
                    if self.swarm.behaviour_mut().chunk.send_response(channel, response).is_err() {
                        // The requester is gone: no ResponseSent will come.
                        self.upload_done(id);
                    }
                    self.serve_waiting();
                }
                event = self.swarm.select_next_some() => self.swarm_event(event),
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
                    let _ = reply.send(Ok(()));
                    return;
                }
                // A node on our LAN is dialled there too, at once: the
                // first handshake to finish wins.
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(self.lan.dial_addrs(&peer, addr))
                    .build();
                match self.swarm.dial(opts) {
                    Ok(()) => self.dials.entry(peer).or_default().push(reply),
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

    fn is_authorised(&self, peer: &PeerId, swarm: &Hash) -> bool {
        let now = (self.config.clock)();
        self.authorised.get(peer).is_some_and(|list| {
            list.iter()
                .any(|(s, exp)| s == swarm && now <= exp + shoal_token::CLOCK_SKEW_SECS)
        })
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
                if endpoint.is_relayed() {
                    NatCounters::add(&self.nat.relayed_connections);
                    self.relayed.insert(connection_id, peer_id);
                } else {
                    NatCounters::add(&self.nat.direct_connections);
                    *self.direct.entry(peer_id).or_default() += 1;
                    let _ = self.events.try_send(Event::Direct { peer: peer_id });
                    // A direct connection replaces a relayed one (it was hole
                    // punched, or dialed): requests must not take the relay.
                    let superseded: Vec<_> = self
                        .relayed
                        .iter()
                        .filter(|(_, p)| **p == peer_id)
                        .map(|(c, _)| *c)
                        .collect();
                    for c in superseded {
                        tracing::debug!(%peer_id, "closing the relayed connection a direct one replaced");
                        self.swarm.close_connection(c);
                    }
                }
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
                error,
                ..
            } => {
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
                self.fair.forget(&peer_id);
                self.waiting.retain(|w| w.peer != peer_id);
                self.held.retain(|(p, _), _| *p != peer_id);
                let _ = self.events.try_send(Event::Disconnected { peer: peer_id });
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
        match e {
            rr::Event::Message {
                peer,
                message:
                    rr::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
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
                        let _ = self.events.try_send(Event::Authenticated {
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
            rr::Event::Message {
                peer,
                message:
                    rr::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.auth_pending.remove(&request_id) {
                    let _ = reply.send(match response {
                        AuthResponse::Accepted => Ok(()),
                        AuthResponse::Refused { reason } => Err(NetError::AuthRefused {
                            peer: peer.to_string(),
                            reason,
                        }),
                    });
                }
            }
            rr::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                settle(
                    &mut self.auth_pending,
                    request_id,
                    Err(request_failed(peer, &error)),
                );
            }
            _ => {}
        }
    }

    fn have_event(&mut self, e: rr::Event<HaveMessage, HaveAck>) {
        match e {
            rr::Event::Message {
                peer,
                message:
                    rr::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let ack = if self.is_authorised(&peer, &request.swarm) {
                    let held = self.held.entry((peer, request.swarm)).or_default();
                    match &request.update {
                        shoal_wire::HaveUpdate::Bitfield(b) => *held = b.count(),
                        shoal_wire::HaveUpdate::Have(chunks) => {
                            *held = held.saturating_add(chunks.len() as u32);
                        }
                    }
                    let _ = self.events.try_send(Event::Have {
                        peer,
                        message: request,
                    });
                    HaveAck::Ok
                } else {
                    HaveAck::Unauthorized
                };
                let _ = self.swarm.behaviour_mut().have.send_response(channel, ack);
            }
            rr::Event::Message {
                message:
                    rr::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                settle(&mut self.have_pending, request_id, Ok(response));
            }
            rr::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                settle(
                    &mut self.have_pending,
                    request_id,
                    Err(request_failed(peer, &error)),
                );
            }
            _ => {}
        }
    }

    fn connection_closed(&mut self, peer: PeerId, id: libp2p::swarm::ConnectionId) {
        if self.relayed.remove(&id).is_none()
            && let Some(n) = self.direct.get_mut(&peer)
        {
            *n -= 1;
            if *n == 0 {
                self.direct.remove(&peer);
            }
        }
    }
}
