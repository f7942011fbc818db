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

mod muxer;
mod tls;
mod transport;

pub use muxer::{Connection, Stream};
pub use transport::QuicTransport;

use std::io;
use std::time::Duration;

/// The ALPN protocol every libp2p TLS handshake names.
pub(super) const ALPN: &[u8] = b"libp2p";
/// The server name a dialer presents; libp2p checks the certificate's key, not names.
pub(super) const SERVER_NAME: &str = "l";

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

#[cfg(test)]
mod tests;
