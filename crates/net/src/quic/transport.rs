//! The libp2p `Transport`: listeners (one address per interface, following
//! interfaces), dials from the listening socket, and the listener-role dial
//! a hole punch needs.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::core::Transport;
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, identity};

use super::muxer::*;
use super::tls::*;
use super::*;

/// UDP socket buffers asked for (the kernel caps them at
/// `net.core.rmem_max` / `wmem_max`). Linux's default 208 KiB receive
/// buffer overflows when several senders' bursts of GSO datagrams arrive
/// at once: three players on one LAN dropped about one datagram in ten in
/// the NAT test, and QUIC resent each (11% more bytes over the router).
pub(super) const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `addr`, with [`SOCKET_BUFFER`]-sized buffers
/// where the kernel allows.
pub(super) fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "could not enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "could not enlarge the UDP send buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Finishes a handshake within `limit` and names the remote.
pub(super) async fn establish(
    connecting: quinn::Connecting,
    limit: Duration,
) -> Result<(PeerId, Connection), QuicError> {
    let connection = tokio::time::timeout(limit, connecting)
        .await
        .map_err(|_| QuicError::HandshakeTimeout(limit))??;
    let peer = remote_peer(&connection)?;
    Ok((peer, Connection::new(connection)))
}

/// The UDP socket address a QUIC multiaddr names, or `None` if it is not one.
pub(super) fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip: IpAddr = match parts.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let Protocol::Udp(port) = parts.next()? else {
        return None;
    };
    let Protocol::QuicV1 = parts.next()? else {
        return None;
    };
    match parts.next() {
        None | Some(Protocol::P2p(_)) if parts.next().is_none() => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

pub(super) fn multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::empty()
        .with(addr.ip().into())
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1)
}

pub(super) type Upgrade = BoxFuture<'static, Result<(PeerId, Connection), QuicError>>;

pub(super) struct Listener {
    pub(super) id: ListenerId,
    pub(super) endpoint: quinn::Endpoint,
    /// The endpoint's own UDP socket, shared, for sending punch packets.
    pub(super) socket: Arc<std::net::UdpSocket>,
    /// Hole-punching dials waiting for a connection from an address.
    pub(super) waiting: crate::punch::Waiting,
    /// The bound socket address (port resolved).
    pub(super) local: SocketAddr,
    pub(super) accept: BoxFuture<'static, Option<quinn::Incoming>>,
    /// Follows local interfaces when bound to an unspecified address.
    pub(super) interfaces: Option<if_watch::tokio::IfWatcher>,
    pub(super) events: VecDeque<TransportEvent<Upgrade, QuicError>>,
    pub(super) closed: bool,
}

pub(super) fn accept_next(
    endpoint: &quinn::Endpoint,
) -> BoxFuture<'static, Option<quinn::Incoming>> {
    let endpoint = endpoint.clone();
    async move { endpoint.accept().await }.boxed()
}

/// A listener bound to `local`'s address on interface network `net`, if the families match.
pub(super) fn address_on(local: SocketAddr, net: &if_watch::IpNet) -> Option<Multiaddr> {
    let ip = net.addr();
    (ip.is_ipv4() == local.is_ipv4()).then(|| multiaddr(SocketAddr::new(ip, local.port())))
}

impl Listener {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        handshake: Duration,
    ) -> Poll<TransportEvent<Upgrade, QuicError>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        if self.closed {
            return Poll::Pending;
        }
        if let Some(watcher) = &mut self.interfaces {
            while let Poll::Ready(event) = watcher.poll_if_event(cx) {
                let event = match event {
                    Ok(if_watch::IfEvent::Up(net)) => {
                        address_on(self.local, &net).map(|listen_addr| TransportEvent::NewAddress {
                            listener_id: self.id,
                            listen_addr,
                        })
                    }
                    Ok(if_watch::IfEvent::Down(net)) => {
                        address_on(self.local, &net).map(|listen_addr| {
                            TransportEvent::AddressExpired {
                                listener_id: self.id,
                                listen_addr,
                            }
                        })
                    }
                    Err(error) => Some(TransportEvent::ListenerError {
                        listener_id: self.id,
                        error: error.into(),
                    }),
                };
                if let Some(event) = event {
                    return Poll::Ready(event);
                }
            }
        }
        loop {
            let incoming = match self.accept.poll_unpin(cx) {
                Poll::Ready(Some(incoming)) => incoming,
                Poll::Ready(None) => {
                    self.closed = true;
                    return Poll::Ready(TransportEvent::ListenerClosed {
                        listener_id: self.id,
                        reason: Ok(()),
                    });
                }
                Poll::Pending => return Poll::Pending,
            };
            self.accept = accept_next(&self.endpoint);
            // The connection a hole-punching dial waits for is that dial's.
            let Some(incoming) = self.waiting.claim(incoming) else {
                continue;
            };
            let send_back_addr = multiaddr(incoming.remote_address());
            let local_ip = incoming.local_ip().unwrap_or(self.local.ip());
            let local_addr = multiaddr(SocketAddr::new(local_ip, self.local.port()));
            let upgrade = async move {
                let connecting = incoming.accept()?;
                establish(connecting, handshake).await
            }
            .boxed();
            return Poll::Ready(TransportEvent::Incoming {
                listener_id: self.id,
                upgrade,
                local_addr,
                send_back_addr,
            });
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("id", &self.id)
            .field("local", &self.local)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// The transport: give it to `SwarmBuilder::with_other_transport`.
#[derive(Debug)]
pub struct QuicTransport {
    pub(super) config: QuicConfig,
    pub(super) client: quinn::ClientConfig,
    pub(super) server: quinn::ServerConfig,
    pub(super) listeners: Vec<Listener>,
    /// Client-only endpoints for dials when no listener of the family exists: v4, v6.
    pub(super) dialers: [Option<quinn::Endpoint>; 2],
    /// The swarm's task, woken when a listener is added or removed.
    pub(super) waker: Option<std::task::Waker>,
}

impl QuicTransport {
    pub fn new(keypair: &identity::Keypair, config: QuicConfig) -> Result<Self, QuicError> {
        let (client, server) = quinn_configs(keypair, &config)?;
        Ok(QuicTransport {
            config,
            client,
            server,
            listeners: Vec::new(),
            dialers: [None, None],
            waker: None,
        })
    }

    /// The endpoint a dial to `to` leaves from: a listening socket unless
    /// the dial asks for a new port (AutoNAT's dial-back, which must not
    /// slip through the NAT mapping of the peer's own connection to us).
    fn endpoint_for(
        &mut self,
        to: SocketAddr,
        port: PortUse,
    ) -> Result<quinn::Endpoint, QuicError> {
        // A listener on the unspecified address first; else one bound to
        // an address that can send to `to` (a loopback address reaches only
        // loopback). A node told to listen on its LAN address, behind a
        // NAT, must dial from that socket too: a separate one gets another
        // NAT mapping than the one peers observed and punch towards.
        let can_send = |l: &&Listener| {
            port == PortUse::Reuse && !l.closed && l.local.is_ipv4() == to.is_ipv4()
        };
        let shared = self
            .listeners
            .iter()
            .filter(can_send)
            .find(|l| l.local.ip().is_unspecified())
            .or_else(|| {
                self.listeners
                    .iter()
                    .filter(can_send)
                    .find(|l| l.local.ip().is_loopback() == to.ip().is_loopback())
            });
        if let Some(listener) = shared {
            return Ok(listener.endpoint.clone());
        }
        let slot = &mut self.dialers[usize::from(to.is_ipv6())];
        if let Some(endpoint) = slot {
            return Ok(endpoint.clone());
        }
        let any: IpAddr = if to.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let runtime = quinn::default_runtime().ok_or(QuicError::Config("no async runtime"))?;
        let socket = udp_socket(SocketAddr::new(any, 0))?;
        let endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }
}

impl QuicTransport {
    /// A dial in the listener role: punch from a listening socket of `to`'s
    /// family and take the remote's connection from `to`.
    fn punch(&mut self, to: SocketAddr) -> Result<Upgrade, QuicError> {
        let listener = self
            .listeners
            .iter_mut()
            .find(|l| !l.closed && l.local.is_ipv4() == to.is_ipv4())
            .ok_or(QuicError::HolePunch("no listening socket to punch from"))?;
        let arrived = listener
            .waiting
            .wait_for(to)
            .ok_or(QuicError::HolePunch("too many hole punches at once"))?;
        let socket = listener.socket.clone();
        let (limit, handshake) = (
            self.config.hole_punch_timeout,
            self.config.handshake_timeout,
        );
        let seed = u64::from(to.port())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos().into());
        Ok(async move {
            let incoming = crate::punch::punch(socket, to, arrived, limit, seed).await?;
            establish(incoming.accept()?, handshake).await
        }
        .boxed())
    }
}

impl Transport for QuicTransport {
    type Output = (PeerId, Connection);
    type Error = QuicError;
    type ListenerUpgrade = Upgrade;
    type Dial = Upgrade;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let Some(bind) = socket_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        // The socket is ours, so a clone of it can send punch packets.
        let other = |e: io::Error| TransportError::Other(e.into());
        let socket = udp_socket(bind).map_err(other)?;
        let punch_socket = Arc::new(socket.try_clone().map_err(other)?);
        let runtime = quinn::default_runtime()
            .ok_or(TransportError::Other(QuicError::Config("no async runtime")))?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(self.server.clone()),
            socket,
            runtime,
        )
        .map_err(other)?;
        let local = endpoint
            .local_addr()
            .map_err(|e| TransportError::Other(e.into()))?;
        let mut listener = Listener {
            id,
            accept: accept_next(&endpoint),
            endpoint,
            socket: punch_socket,
            waiting: Default::default(),
            local,
            interfaces: None,
            events: VecDeque::new(),
            closed: false,
        };
        if local.ip().is_unspecified() {
            listener.interfaces = Some(
                if_watch::tokio::IfWatcher::new().map_err(|e| TransportError::Other(e.into()))?,
            );
        } else {
            listener.events.push_back(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr: multiaddr(local),
            });
        }
        self.listeners.push(listener);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(listener) = self.listeners.iter_mut().find(|l| l.id == id && !l.closed) else {
            return false;
        };
        // Refuse new connections; those already made (and dials from this socket) stay.
        listener.endpoint.set_server_config(None);
        listener.closed = true;
        listener.events.clear();
        listener.events.push_back(TransportEvent::ListenerClosed {
            listener_id: id,
            reason: Ok(()),
        });
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(to) = socket_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        if to.port() == 0 || to.ip().is_unspecified() {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        if opts.role == libp2p::core::Endpoint::Listener {
            return self.punch(to).map_err(TransportError::Other);
        }
        let endpoint = self
            .endpoint_for(to, opts.port_use)
            .map_err(TransportError::Other)?;
        let connecting = endpoint
            .connect_with(self.client.clone(), to, SERVER_NAME)
            .map_err(|e| TransportError::Other(e.into()))?;
        Ok(establish(connecting, self.config.handshake_timeout).boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        let handshake = this.config.handshake_timeout;
        for listener in &mut this.listeners {
            if let Poll::Ready(event) = listener.poll(cx, handshake) {
                return Poll::Ready(event);
            }
        }
        // Forget listeners that are closed and have told the swarm so.
        this.listeners
            .retain(|l| !(l.closed && l.events.is_empty()));
        this.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
