//! libp2p's QUIC transport, built on quinn here so that the cipher is ours to choose.
//!
//! libp2p-quic 0.14 builds its TLS configuration inside and libp2p-tls 0.7 lists
//! ChaCha20-Poly1305 first; on a CPU with AES instructions that costs a plain quinn
//! transfer 12% of its throughput (`bench/RESULTS.md`). This transport keeps the libp2p
//! TLS handshake (TLS 1.3 only, ALPN `libp2p`, exactly one self-signed certificate that
//! carries the libp2p public key, checked with `libp2p-tls`'s own parser) and offers
//! AES-GCM first, so it still talks to any libp2p QUIC peer.
//!
//! It supports `/ip4|ip6/…/udp/…/quic-v1[/p2p/…]`. A listener bound to an unspecified
//! address reports one address per local interface and follows interfaces coming and
//! going. Dials leave from the socket of a listener of the same family (on the
//! unspecified address if there is one, else on an address that can reach the remote),
//! so peers see the port they were told about; otherwise, or when the dial asks for a
//! new port (AutoNAT's dial-back), from a client-only socket.
//!
//! Hole punching (DCUtR): a dial in the listener role sends punch packets from the
//! listening socket to the remote and takes the remote's incoming connection from that
//! address as its result (`crate::punch`); a dial in the dialer role leaves from the
//! listening socket as every dial does, so it uses the NAT mapping peers observed.

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
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, identity};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The ALPN protocol every libp2p TLS handshake names.
const ALPN: &[u8] = b"libp2p";
/// The server name a dialer presents; libp2p checks the certificate's key, not names.
const SERVER_NAME: &str = "l";

/// Why a QUIC connection could not be set up or broke.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("dial: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("the remote presented no libp2p certificate")]
    NoIdentity,
    #[error("tls setup: {0}")]
    Tls(String),
    #[error("transport settings: {0}")]
    Config(&'static str),
    #[error("hole punch: {0}")]
    HolePunch(&'static str),
}

/// Transport settings; `Default` is what Shoal nodes use.
#[derive(Debug, Clone)]
pub struct QuicConfig {
    pub handshake_timeout: Duration,
    pub max_idle_timeout: Duration,
    pub keep_alive_interval: Duration,
    pub max_concurrent_streams: u32,
    /// Bytes a peer may send on one stream before we read them.
    pub stream_receive_window: u32,
    /// Bytes a peer may send on the whole connection before we read them.
    pub receive_window: u32,
    /// Bytes we buffer for sending on the whole connection.
    pub send_window: u64,
    /// How long a dial in the listener role punches before it gives up.
    pub hole_punch_timeout: Duration,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            handshake_timeout: Duration::from_secs(5),
            max_idle_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(5),
            max_concurrent_streams: 256,
            // A chunk is at most 4 MiB; a few answers may be in flight at once.
            stream_receive_window: 10_000_000,
            receive_window: 15_000_000,
            send_window: 15_000_000,
            hole_punch_timeout: Duration::from_secs(10),
        }
    }
}

/// UDP socket buffers asked for (the kernel caps them at
/// `net.core.rmem_max` / `wmem_max`). Linux's default 208 KiB receive
/// buffer overflows when several senders' bursts of GSO datagrams arrive
/// at once: three players on one LAN dropped about one datagram in ten in
/// the NAT test, and QUIC resent each (11% more bytes over the router).
const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `addr`, with [`SOCKET_BUFFER`]-sized buffers
/// where the kernel allows.
fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
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

/// TLS 1.3 suites, AES-GCM first: the server takes the client's order, so this is
/// the cipher two Shoal nodes agree on. ChaCha20 stays for peers that ask for it.
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::aws_lc_rs::cipher_suite as suite;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    provider
}

fn tls_error(e: impl std::fmt::Display) -> QuicError {
    QuicError::Tls(e.to_string())
}

/// The quinn client and server configurations for `keypair`.
fn quinn_configs(
    keypair: &identity::Keypair,
    config: &QuicConfig,
) -> Result<(quinn::ClientConfig, quinn::ServerConfig), QuicError> {
    let (cert, key) = libp2p::tls::certificate::generate(keypair).map_err(tls_error)?;
    let provider = Arc::new(provider());
    let versions = &[&rustls::version::TLS13];
    // rustls's own key loaders would parse the certificate with webpki, which refuses
    // the critical libp2p extension; a resolver hands it out as it is.
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(tls_error)?;
    let own = Arc::new(OwnCertificate(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert],
        signing_key,
    ))));

    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerCertVerifier))
        .with_client_cert_resolver(own.clone());
    client.alpn_protocols = vec![ALPN.to_vec()];
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(tls_error)?
        .with_client_cert_verifier(Arc::new(PeerCertVerifier))
        .with_cert_resolver(own);
    server.alpn_protocols = vec![ALPN.to_vec()];

    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_uni_streams(0u32.into())
        .max_concurrent_bidi_streams(config.max_concurrent_streams.into())
        .datagram_receive_buffer_size(None)
        .keep_alive_interval(Some(config.keep_alive_interval))
        .max_idle_timeout(Some(
            config
                .max_idle_timeout
                .try_into()
                .map_err(|_| QuicError::Config("idle timeout out of range"))?,
        ))
        .allow_spin(false)
        .stream_receive_window(config.stream_receive_window.into())
        .receive_window(config.receive_window.into())
        .send_window(config.send_window);
    let transport = Arc::new(transport);

    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(tls_error)?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport.clone());
    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(tls_error)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport);
    // Peers are found by the address they announce; a migrating peer reconnects.
    server.migration(false);
    Ok((client, server))
}

/// Our one certificate, presented on both sides of every handshake.
#[derive(Debug)]
struct OwnCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for OwnCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for OwnCertificate {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Checks the libp2p certificate rules on both sides of the handshake: exactly one
/// certificate, self-signed, carrying a libp2p key that signed the certificate's key.
/// Which `PeerId` it belongs to is the swarm's business (it refuses a dial that reaches
/// another peer than the one in the address).
#[derive(Debug)]
struct PeerCertVerifier;

fn check_certificate(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::General(
            "a libp2p peer presents exactly one certificate".into(),
        ));
    }
    libp2p::tls::certificate::parse(end_entity)
        .map(|_| ())
        .map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })
}

fn check_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let cert = libp2p::tls::certificate::parse(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    cert.verify_signature(dss.scheme, message, dss.signature())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

/// The schemes a libp2p certificate's key may sign the handshake with.
fn schemes() -> Vec<SignatureScheme> {
    use SignatureScheme::*;
    vec![
        ECDSA_NISTP256_SHA256,
        ECDSA_NISTP384_SHA384,
        ED25519,
        RSA_PSS_SHA256,
        RSA_PSS_SHA384,
        RSA_PSS_SHA512,
        RSA_PKCS1_SHA256,
        RSA_PKCS1_SHA384,
        RSA_PKCS1_SHA512,
    ]
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
}

/// The signature half of both verifier traits: the same on either side.
macro_rules! handshake_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(tls12_refused())
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            check_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            schemes()
        }
    };
}

impl ServerCertVerifier for PeerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_certificate(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signature_checks!();
}

impl ClientCertVerifier for PeerCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_certificate(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signature_checks!();
}

/// The remote's `PeerId`, from the certificate the handshake already verified.
fn remote_peer(connection: &quinn::Connection) -> Result<PeerId, QuicError> {
    let certs = connection
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(QuicError::NoIdentity)?;
    let cert = certs.first().ok_or(QuicError::NoIdentity)?;
    let cert = libp2p::tls::certificate::parse(cert).map_err(|_| QuicError::NoIdentity)?;
    Ok(cert.peer_id())
}

/// Finishes a handshake within `limit` and names the remote.
async fn establish(
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
fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
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

fn multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::empty()
        .with(addr.ip().into())
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1)
}

type Upgrade = BoxFuture<'static, Result<(PeerId, Connection), QuicError>>;

struct Listener {
    id: ListenerId,
    endpoint: quinn::Endpoint,
    /// The endpoint's own UDP socket, shared, for sending punch packets.
    socket: Arc<std::net::UdpSocket>,
    /// Hole-punching dials waiting for a connection from an address.
    waiting: crate::punch::Waiting,
    /// The bound socket address (port resolved).
    local: SocketAddr,
    accept: BoxFuture<'static, Option<quinn::Incoming>>,
    /// Follows local interfaces when bound to an unspecified address.
    interfaces: Option<if_watch::tokio::IfWatcher>,
    events: VecDeque<TransportEvent<Upgrade, QuicError>>,
    closed: bool,
}

fn accept_next(endpoint: &quinn::Endpoint) -> BoxFuture<'static, Option<quinn::Incoming>> {
    let endpoint = endpoint.clone();
    async move { endpoint.accept().await }.boxed()
}

/// A listener bound to `local`'s address on interface network `net`, if the families match.
fn address_on(local: SocketAddr, net: &if_watch::IpNet) -> Option<Multiaddr> {
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
    config: QuicConfig,
    client: quinn::ClientConfig,
    server: quinn::ServerConfig,
    listeners: Vec<Listener>,
    /// Client-only endpoints for dials when no listener of the family exists: v4, v6.
    dialers: [Option<quinn::Endpoint>; 2],
    /// The swarm's task, woken when a listener is added or removed.
    waker: Option<std::task::Waker>,
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

/// One QUIC connection as a libp2p stream muxer: every libp2p stream is a QUIC
/// bidirectional stream.
pub struct Connection {
    connection: quinn::Connection,
    inbound: Option<StreamFuture>,
    outbound: Option<StreamFuture>,
    closing: Option<BoxFuture<'static, quinn::ConnectionError>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.connection.remote_address())
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn new(connection: quinn::Connection) -> Self {
        Connection {
            connection,
            inbound: None,
            outbound: None,
            closing: None,
        }
    }
}

/// A stream being opened or accepted.
type StreamFuture = BoxFuture<'static, Result<Stream, quinn::ConnectionError>>;

fn poll_stream(
    slot: &mut Option<StreamFuture>,
    cx: &mut Context<'_>,
    start: impl FnOnce() -> StreamFuture,
) -> Poll<Result<Stream, QuicError>> {
    let future = slot.get_or_insert_with(start);
    let result = futures::ready!(future.poll_unpin(cx));
    *slot = None;
    Poll::Ready(result.map_err(QuicError::from))
}

impl StreamMuxer for Connection {
    type Substream = Stream;
    type Error = QuicError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let connection = &this.connection;
        poll_stream(&mut this.inbound, cx, || {
            let connection = connection.clone();
            async move { connection.accept_bi().await.map(Stream::new) }.boxed()
        })
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let connection = &this.connection;
        poll_stream(&mut this.outbound, cx, || {
            let connection = connection.clone();
            async move { connection.open_bi().await.map(Stream::new) }.boxed()
        })
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        let connection = &this.connection;
        let closing = this.closing.get_or_insert_with(|| {
            connection.close(0u32.into(), b"");
            let connection = connection.clone();
            async move { connection.closed().await }.boxed()
        });
        match futures::ready!(closing.poll_unpin(cx)) {
            quinn::ConnectionError::LocallyClosed => Poll::Ready(Ok(())),
            error => Poll::Ready(Err(error.into())),
        }
    }

    fn poll(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        // Migration is off, so the remote address never changes.
        Poll::Pending
    }
}

/// One QUIC bidirectional stream.
#[derive(Debug)]
pub struct Stream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    finished: bool,
}

impl Stream {
    fn new((send, recv): (quinn::SendStream, quinn::RecvStream)) -> Stream {
        Stream {
            send,
            recv,
            finished: false,
        }
    }
}

impl futures::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        futures::AsyncRead::poll_read(Pin::new(&mut self.get_mut().recv), cx, buf)
    }
}

impl futures::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures::AsyncWrite::poll_write(Pin::new(&mut self.get_mut().send), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().send), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing is finishing the send side, which quinn allows once; both the codecs
        // and request-response close, so the second close is a no-op.
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Ok(()));
        }
        futures::ready!(futures::AsyncWrite::poll_close(
            Pin::new(&mut this.send),
            cx
        ))?;
        this.finished = true;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;
