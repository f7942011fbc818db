//! Knowing whether others can dial this node: AutoNAT v2. Identify tells a
//! node the addresses its peers see it at; the AutoNAT client asks a
//! server (seeds run one) to dial each such address back from a fresh
//! port, so a NAT's mapping for the server's own connection cannot make an
//! unreachable node look reachable. A dial-back that succeeds confirms the
//! address as external; the node's [`Reachability`] follows from what was
//! found, and the launcher reports it in its announce.

use libp2p::Multiaddr;
use libp2p_autonat::v2 as autonat;
use shoal_types::Reachability;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};

/// Addresses remembered per outcome (AutoNAT tests at most 10 candidates at
/// a time; this bounds a peer feeding many observed addresses).
const MAX_REMEMBERED: usize = 64;

/// What the probes found, per address. Pure.
#[derive(Debug, Default)]
pub(crate) struct Probes {
    reachable: HashSet<Multiaddr>,
    unreachable: HashSet<Multiaddr>,
}

impl Probes {
    pub(crate) fn record(&mut self, addr: Multiaddr, reachable: bool) {
        let (into, from) = if reachable {
            (&mut self.reachable, &mut self.unreachable)
        } else {
            (&mut self.unreachable, &mut self.reachable)
        };
        from.remove(&addr);
        if into.len() < MAX_REMEMBERED {
            into.insert(addr);
        }
    }

    /// Public once any address was dialed back; private once some were
    /// probed and none was; unknown before any probe finished.
    pub(crate) fn reachability(&self) -> Reachability {
        if !self.reachable.is_empty() {
            Reachability::Public
        } else if !self.unreachable.is_empty() {
            Reachability::Private
        } else {
            Reachability::Unknown
        }
    }
}

/// The node's reachability, readable without a round trip to its loop.
#[derive(Debug, Default)]
pub(crate) struct Shared(AtomicU8);

impl Shared {
    pub(crate) fn set(&self, r: Reachability) {
        let v = match r {
            Reachability::Unknown => 0,
            Reachability::Public => 1,
            Reachability::Private => 2,
        };
        self.0.store(v, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Reachability {
        match self.0.load(Ordering::Relaxed) {
            1 => Reachability::Public,
            2 => Reachability::Private,
            _ => Reachability::Unknown,
        }
    }
}

/// How often the AutoNAT client sends newly observed addresses to a server.
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The AutoNAT client: probes each observed address once, within a second
/// of its being observed while a server is connected.
pub(crate) fn client() -> autonat::client::Behaviour {
    autonat::client::Behaviour::new(
        rand::make_rng::<rand::rngs::StdRng>(),
        autonat::client::Config::default().with_probe_interval(PROBE_INTERVAL),
    )
}

/// Whether `addr` is a wildcard (`0.0.0.0`, `::`), which no peer can dial.
pub(crate) fn unspecified(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

impl crate::node::Loop {
    pub(crate) fn autonat_event(&mut self, e: autonat::client::Event) {
        let reachable = e.result.is_ok();
        match &e.result {
            Ok(()) => {
                tracing::info!(addr = %e.tested_addr, server = %e.server, "reachable at this address")
            }
            Err(error) => tracing::info!(
                addr = %e.tested_addr,
                server = %e.server,
                %error,
                "not reachable at this address (behind a NAT or firewall)"
            ),
        }
        self.probes.record(e.tested_addr, reachable);
        self.reach.set(self.probes.reachability());
    }

    pub(crate) fn autonat_server_event(&mut self, e: autonat::server::Event) {
        tracing::debug!(
            client = %e.client,
            addr = %e.tested_addr,
            ok = e.result.is_ok(),
            "dialed a peer back for its reachability"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/203.0.113.7/udp/{port}/quic-v1")
            .parse()
            .unwrap()
    }

    #[test]
    fn reachability_follows_the_probes() {
        let mut p = Probes::default();
        assert_eq!(p.reachability(), Reachability::Unknown);
        p.record(addr(1), false);
        assert_eq!(p.reachability(), Reachability::Private);
        p.record(addr(2), true);
        assert_eq!(p.reachability(), Reachability::Public);
        // The same address failing later takes its confirmation back.
        p.record(addr(2), false);
        assert_eq!(p.reachability(), Reachability::Private);
    }

    #[test]
    fn memory_is_bounded() {
        let mut p = Probes::default();
        for port in 0..1000 {
            p.record(addr(port), false);
        }
        assert_eq!(p.unreachable.len(), MAX_REMEMBERED);
    }

    #[test]
    fn the_shared_reading_round_trips() {
        let s = Shared::default();
        for r in [
            Reachability::Public,
            Reachability::Private,
            Reachability::Unknown,
        ] {
            s.set(r);
            assert_eq!(s.get(), r);
        }
    }
}
