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
mod node;
mod path;
mod punch;
pub mod quic;
mod reach;
mod serve;
mod several;

pub use nat::{NatCounters, RelayLimits, is_relayed};
pub use path::{Path, PathBytes};
pub use several::{Router, Swarms};
pub use shoal_scheduler::Budget;

use libp2p::{Multiaddr, PeerId, identity};
use shoal_token::Token;
use shoal_types::{Bitfield, Hash, PublicKey};
use shoal_wire::{AuthRequest, ChunkRequest, ChunkResponse, HaveAck, HaveMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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
    /// Where `swarm`'s origin budget stands for chunk `index` (a
    /// super-seed's serving policy asks; see [`Budget`]).
    fn budget(&self, _swarm: &Hash, _index: u32) -> Budget {
        Budget::Window
    }
    /// The serving policy decided to send chunk `index` of `swarm`, before
    /// it is read: a super-seed counts it against the budget here, so that
    /// requests decided meanwhile see it spent.
    fn promised(&self, _swarm: &Hash, _index: u32) {}
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

/// Starts a node. Returns the client handle and the stream of events: one
/// reader, or a [`Router`] that splits it between downloads of several
/// swarms.
pub fn spawn(
    config: Config,
    source: Arc<dyn ChunkSource>,
) -> Result<(Client, mpsc::Receiver<Event>), Box<dyn std::error::Error + Send + Sync>> {
    node::start(config, source)
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
