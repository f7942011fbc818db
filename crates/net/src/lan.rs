//! Peers on our LAN, found by mDNS.
//!
//! The tracker pairs players that announce from one public address (a
//! household behind one router) and hands out their LAN addresses. mDNS
//! covers what it cannot see: an office with two uplinks, a LAN whose
//! players leave through different public addresses, a tracker behind a
//! proxy that hides them. It only adds addresses: a peer is dialled only
//! when the tracker listed it, and its identity is checked by the QUIC
//! handshake whatever address answered, so a forged mDNS answer costs a
//! failed dial, nothing more. Every table here is bounded.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::time::Duration;

/// Peers remembered from mDNS answers; more are ignored until some expire.
pub(crate) const MAX_PEERS: usize = 256;
/// Addresses remembered per peer.
pub(crate) const MAX_ADDRS: usize = 4;

/// Queries every 20 s (the default 5 min would find a player who started
/// after us only after their download); answers live 2 min.
pub(crate) fn mdns_config() -> libp2p::mdns::Config {
    libp2p::mdns::Config {
        ttl: Duration::from_secs(120),
        query_interval: Duration::from_secs(20),
        enable_ipv6: false,
    }
}

/// LAN addresses per peer, from mDNS.
#[derive(Debug, Default)]
pub(crate) struct Lan {
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
}

impl Lan {
    /// Remembers `addr` for `peer`; whether the peer is new. Relayed
    /// addresses are not LAN addresses and are skipped.
    pub(crate) fn found(&mut self, peer: PeerId, addr: Multiaddr) -> bool {
        if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            return false;
        }
        let addr = without_peer(addr);
        let new = !self.addrs.contains_key(&peer);
        if new && self.addrs.len() >= MAX_PEERS {
            return false;
        }
        let list = self.addrs.entry(peer).or_default();
        if !list.contains(&addr) && list.len() < MAX_ADDRS {
            list.push(addr);
        }
        new
    }

    /// Forgets `addr` for `peer` (its mDNS record expired).
    pub(crate) fn expired(&mut self, peer: &PeerId, addr: &Multiaddr) {
        let addr = without_peer(addr.clone());
        if let Some(list) = self.addrs.get_mut(peer) {
            list.retain(|a| *a != addr);
            if list.is_empty() {
                self.addrs.remove(peer);
            }
        }
    }

    /// Where to dial `peer`: its LAN addresses first, then `given`.
    pub(crate) fn dial_addrs(&self, peer: &PeerId, given: Multiaddr) -> Vec<Multiaddr> {
        let mut out = self.addrs.get(peer).cloned().unwrap_or_default();
        if !out.contains(&given) {
            out.push(given);
        }
        out
    }
}

impl crate::node::Loop {
    /// Dials `peer` at its LAN addresses when we want it and have no direct
    /// connection to it: connected over a relay only (the direct connection
    /// then replaces the relayed one), or still dialling the address the
    /// tracker gave (a public one that may never answer; the dial fails
    /// only after the handshake timeout, and the next try waits for the
    /// next listing). Peers neither connected nor being dialled are left
    /// alone (a peer is dialled only when the tracker listed it).
    pub(crate) fn dial_on_lan(&mut self, peer: PeerId) {
        let wanted = self.dials.contains_key(&peer) || self.swarm.is_connected(&peer);
        let in_flight = self.attempts.get(&peer).map_or(0, Vec::len);
        if !wanted || self.direct.contains_key(&peer) || in_flight >= 2 {
            return;
        }
        let Some(addrs) = self.lan.addrs.get(&peer).filter(|a| !a.is_empty()) else {
            return;
        };
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
            .addresses(addrs.clone())
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                tracing::debug!(%peer, "dialling on the LAN a peer mDNS found");
                self.attempts.entry(peer).or_default().push(id);
            }
            Err(e) => tracing::debug!(%peer, error = %e, "no LAN dial"),
        }
    }

    pub(crate) fn mdns_event(&mut self, e: libp2p::mdns::Event) {
        let me = *self.swarm.local_peer_id();
        match e {
            libp2p::mdns::Event::Discovered(found) => {
                for (peer, addr) in found {
                    if peer == me {
                        continue;
                    }
                    tracing::debug!(%peer, %addr, "found on the LAN");
                    if self.lan.found(peer, addr) {
                        crate::NatCounters::add(&self.nat.lan_peers);
                    }
                    // A peer we reach only over a relay (the tracker listed
                    // it before mDNS answered) is dialled on the LAN now,
                    // not at the next listing that finds it connected.
                    self.dial_on_lan(peer);
                }
            }
            libp2p::mdns::Event::Expired(gone) => {
                for (peer, addr) in gone {
                    self.lan.expired(&peer, &addr);
                }
            }
        }
    }
}

/// Whether `addr` is on a loopback interface.
pub(crate) fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

fn without_peer(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn lan_addresses_come_first_and_relayed_ones_are_not_lan_addresses() {
        let mut lan = Lan::default();
        let p = PeerId::random();
        let given = addr("/ip4/203.0.113.1/udp/4433/quic-v1");
        assert_eq!(lan.dial_addrs(&p, given.clone()), vec![given.clone()]);
        assert!(lan.found(
            p,
            addr(&format!("/ip4/192.168.1.3/udp/4433/quic-v1/p2p/{p}"))
        ));
        assert!(
            !lan.found(p, addr("/ip4/192.168.1.3/udp/4433/quic-v1")),
            "known peer"
        );
        let relay = PeerId::random();
        assert!(!lan.found(
            PeerId::random(),
            addr(&format!(
                "/ip4/203.0.113.10/udp/4433/quic-v1/p2p/{relay}/p2p-circuit"
            ))
        ));
        assert_eq!(
            lan.dial_addrs(&p, given.clone()),
            vec![addr("/ip4/192.168.1.3/udp/4433/quic-v1"), given.clone()]
        );
        lan.expired(
            &p,
            &addr(&format!("/ip4/192.168.1.3/udp/4433/quic-v1/p2p/{p}")),
        );
        assert_eq!(lan.dial_addrs(&p, given.clone()), vec![given]);
        assert!(lan.addrs.is_empty());
        assert!(is_loopback(&addr("/ip4/127.0.0.1/udp/0/quic-v1")));
        assert!(!is_loopback(&addr("/ip4/0.0.0.0/udp/0/quic-v1")));
    }

    #[test]
    fn the_tables_are_bounded() {
        let mut lan = Lan::default();
        let p = PeerId::random();
        for port in 0..10 {
            lan.found(p, addr(&format!("/ip4/192.168.1.3/udp/{port}/quic-v1")));
        }
        assert_eq!(lan.addrs[&p].len(), MAX_ADDRS);
        for _ in 0..MAX_PEERS + 10 {
            lan.found(PeerId::random(), addr("/ip4/192.168.1.4/udp/1/quic-v1"));
        }
        assert_eq!(lan.addrs.len(), MAX_PEERS);
    }
}
