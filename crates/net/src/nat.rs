//! Reaching players behind NATs: the circuit relay v2 server that seeds run
//! (strict limits; only peers that presented a valid swarm token to this
//! node may reserve a slot), which connections are relayed, and the
//! counters of direct and relayed connections and hole punches.
//!
//! A relayed circuit carries the handshake and DCUtR's coordination; chunk
//! requests that arrive over one are answered `Busy` (unless the node's
//! `chunks_over_relay` is on), so a requester waits for the direct
//! connection the hole punch makes, and the circuit's byte limit bounds
//! whatever else crosses it.

use crate::path::PathBytes;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, relay};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The relay server's limits (seeds). Every one is a bound an operator can
/// set; the defaults let a seed coordinate hole punches for a few hundred
/// players without carrying their downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held at once (players reachable through this relay).
    pub max_reservations: usize,
    /// How long a reservation lasts before the player renews it.
    pub reservation_duration: Duration,
    /// Circuits open at once, and per source peer.
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    /// A circuit closes after this long or this many bytes, whichever first.
    pub circuit_duration: Duration,
    pub circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_reservations: 512,
            reservation_duration: Duration::from_secs(30 * 60),
            max_circuits: 64,
            max_circuits_per_peer: 8,
            circuit_duration: Duration::from_secs(2 * 60),
            circuit_bytes: 64 << 10,
        }
    }
}

/// Peers that presented a valid swarm token to this node while connected:
/// only they may reserve a relay slot here. Bounded by the connection
/// limit (a peer leaves the set when its last connection closes).
#[derive(Debug, Clone, Default)]
pub(crate) struct Admitted(Arc<Mutex<HashSet<PeerId>>>);

impl Admitted {
    pub(crate) fn admit(&self, peer: PeerId) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer);
    }

    pub(crate) fn forget(&self, peer: &PeerId) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
    }

    fn contains(&self, peer: &PeerId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(peer)
    }
}

/// The relay server's configuration for `limits`: reservations only for
/// admitted peers, plus libp2p's own per-peer and per-IP rate limits.
pub(crate) fn relay_config(limits: &RelayLimits, admitted: Admitted) -> relay::Config {
    let mut config = relay::Config {
        max_reservations: limits.max_reservations,
        max_reservations_per_peer: 2,
        reservation_duration: limits.reservation_duration,
        max_circuits: limits.max_circuits,
        max_circuits_per_peer: limits.max_circuits_per_peer,
        max_circuit_duration: limits.circuit_duration,
        max_circuit_bytes: limits.circuit_bytes,
        ..relay::Config::default()
    };
    config
        .reservation_rate_limiters
        .push(Box::new(move |peer: PeerId, _: &Multiaddr, _| {
            admitted.contains(&peer)
        }));
    config
}

/// Whether `addr` goes through a relay (`…/p2p-circuit/…`).
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// What the node has seen of NAT traversal since it started.
#[derive(Debug, Default)]
pub struct NatCounters {
    pub direct_connections: AtomicU64,
    pub relayed_connections: AtomicU64,
    /// DCUtR upgrades that finished (a direct connection, or a failure once
    /// its 3 tries ran out; tries still running are not counted), and the
    /// ones that made a direct connection.
    pub punch_attempts: AtomicU64,
    pub punch_successes: AtomicU64,
    /// Relay slots this node holds on relays, and circuits it relayed.
    pub reservations: AtomicU64,
    pub circuits_relayed: AtomicU64,
    /// Chunk requests refused because they came over a relayed circuit.
    pub chunks_refused_relayed: AtomicU64,
    /// Super-seeding: chunks sent again within the window because the
    /// requester could reach none of the peers holding them.
    pub chunks_last_resort: AtomicU64,
    /// Nodes mDNS found on our LAN.
    pub lan_peers: AtomicU64,
    /// Chunk bytes in the answers this node received (before verification)
    /// and sent, by the path of their connection.
    pub received: PathBytes,
    pub sent: PathBytes,
}

impl NatCounters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What the relay and hole-punching behaviours report, as the node's event
/// loop handles it: counters and clear logs (a failed punch says so).
impl crate::node::Loop {
    pub(crate) fn relay_client_event(&mut self, e: libp2p::relay::client::Event) {
        match e {
            libp2p::relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                if !renewal {
                    NatCounters::add(&self.nat.reservations);
                }
                tracing::info!(relay = %relay_peer_id, renewal, "reachable through a relay");
            }
            other => tracing::debug!(event = ?other, "relay client"),
        }
    }

    pub(crate) fn relay_event(&mut self, e: libp2p::relay::Event) {
        match e {
            libp2p::relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                NatCounters::add(&self.nat.circuits_relayed);
                tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, "relaying a circuit");
            }
            libp2p::relay::Event::ReservationReqDenied { src_peer_id, .. } => {
                tracing::debug!(peer = %src_peer_id, "relay slot refused (no valid token presented, or limits)");
            }
            other => tracing::trace!(event = ?other, "relay server"),
        }
    }

    pub(crate) fn dcutr_event(&mut self, e: libp2p::dcutr::Event) {
        NatCounters::add(&self.nat.punch_attempts);
        match e.result {
            Ok(_) => {
                NatCounters::add(&self.nat.punch_successes);
                tracing::info!(peer = %e.remote_peer_id, "hole punch made a direct connection");
            }
            Err(error) => tracing::info!(
                peer = %e.remote_peer_id,
                %error,
                "hole punch failed; the peer stays reachable only through the relay"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_addresses_are_told_apart() {
        let direct: Multiaddr = "/ip4/10.0.0.1/udp/4433/quic-v1".parse().unwrap();
        let relayed: Multiaddr = "/ip4/10.0.0.1/udp/4433/quic-v1/p2p/12D3KooWGBWx9gyUFTVQcKMTenQMSyE2ad9m7c9fpjS4NMjoDien/p2p-circuit"
            .parse()
            .unwrap();
        assert!(!is_relayed(&direct));
        assert!(is_relayed(&relayed));
    }

    #[test]
    fn only_admitted_peers_may_reserve() {
        let admitted = Admitted::default();
        let mut config = relay_config(&RelayLimits::default(), admitted.clone());
        let limiter = config.reservation_rate_limiters.last_mut().unwrap();
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/10.0.0.2/udp/1/quic-v1".parse().unwrap();
        let now = std::time::Instant::now();
        assert!(!limiter.try_next(peer, &addr, now));
        admitted.admit(peer);
        assert!(limiter.try_next(peer, &addr, now));
        admitted.forget(&peer);
        assert!(!limiter.try_next(peer, &addr, now));
        assert_eq!(config.max_circuit_bytes, 64 << 10);
    }
}
