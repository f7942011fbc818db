//! Which path a connection takes, and the chunk bytes counted by path:
//! through a relay, within our LAN (the remote address is on a network one
//! of our interfaces is on), or directly across routers (the internet, or
//! a hole punched through a NAT). The counters say whether a site's uplink
//! carried the patch once and whether relays carried chunks.

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The path of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Across at least one router: a public peer, or one hole punched.
    Direct,
    /// To an address on a network one of our interfaces is on.
    Lan,
    /// Through a circuit relay.
    Relayed,
}

impl Path {
    pub const ALL: [Path; 3] = [Path::Direct, Path::Lan, Path::Relayed];

    /// The label metrics and reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Lan => "lan",
            Path::Relayed => "relayed",
        }
    }

    /// The path to `remote`, given the networks our interfaces are on.
    pub(crate) fn of<'a>(
        remote: &Multiaddr,
        relayed: bool,
        mut local: impl Iterator<Item = &'a if_watch::IpNet>,
    ) -> Path {
        if relayed {
            return Path::Relayed;
        }
        let ip = remote.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        });
        match ip {
            Some(ip) if local.any(|net| net.contains(&ip)) => Path::Lan,
            _ => Path::Direct,
        }
    }
}

/// Chunk bytes by path (verified answers received, or answers sent).
#[derive(Debug, Default)]
pub struct PathBytes {
    direct: AtomicU64,
    lan: AtomicU64,
    relayed: AtomicU64,
}

impl PathBytes {
    fn counter(&self, path: Path) -> &AtomicU64 {
        match path {
            Path::Direct => &self.direct,
            Path::Lan => &self.lan,
            Path::Relayed => &self.relayed,
        }
    }

    pub(crate) fn add(&self, path: Path, bytes: u64) {
        self.counter(path).fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn get(&self, path: Path) -> u64 {
        self.counter(path).load(Ordering::Relaxed)
    }

    /// Every path's bytes, labelled (for metrics).
    pub fn labelled(&self) -> [(&'static str, u64); 3] {
        Path::ALL.map(|p| (p.as_str(), self.get(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_s_path_follows_its_remote_address() {
        let local: Vec<if_watch::IpNet> = vec![
            "192.168.1.7/24".parse().unwrap(),
            "127.0.0.1/8".parse().unwrap(),
        ];
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        let lan = a("/ip4/192.168.1.20/udp/4433/quic-v1");
        let wan = a("/ip4/203.0.113.9/udp/4433/quic-v1");
        assert_eq!(Path::of(&lan, false, local.iter()), Path::Lan);
        assert_eq!(Path::of(&wan, false, local.iter()), Path::Direct);
        assert_eq!(Path::of(&lan, true, local.iter()), Path::Relayed);
        assert_eq!(
            Path::of(&a("/ip4/127.0.0.1/udp/1/quic-v1"), false, local.iter()),
            Path::Lan
        );
        assert_eq!(
            Path::of(&lan, false, std::iter::empty()),
            Path::Direct,
            "no interfaces known"
        );
        let bytes = PathBytes::default();
        bytes.add(Path::Lan, 5);
        bytes.add(Path::Lan, 7);
        assert_eq!(bytes.get(Path::Lan), 12);
        assert_eq!(bytes.get(Path::Direct), 0);
    }
}
