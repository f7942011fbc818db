//! The node's libp2p behaviours (Shoal's three protocols plus identify,
//! relay, DCUtR, AutoNAT and mDNS) and the swarm built from them over our QUIC
//! transport.

use crate::codec::{ChunkCodec, WireCodec};
use crate::{Config, nat, quic, reach};
use libp2p::StreamProtocol;
use libp2p::request_response::{self as rr, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use shoal_wire::{
    AUTH_PROTOCOL, AuthRequest, AuthResponse, CHUNK_PROTOCOL, HAVE_PROTOCOL, HaveAck, HaveMessage,
};
use std::time::Duration;

/// The identify protocol's version string.
const IDENTIFY_PROTOCOL: &str = "/shoal/id/1";

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) auth: rr::Behaviour<WireCodec<AuthRequest, AuthResponse>>,
    pub(crate) have: rr::Behaviour<WireCodec<HaveMessage, HaveAck>>,
    pub(crate) chunk: rr::Behaviour<ChunkCodec>,
    /// Observed addresses: the candidates a hole punch uses.
    identify: libp2p::identify::Behaviour,
    /// Reservations on relays and dials through them.
    relay_client: libp2p::relay::client::Behaviour,
    /// The relay server (seeds only).
    relay: libp2p::swarm::behaviour::toggle::Toggle<libp2p::relay::Behaviour>,
    /// Upgrades relayed connections to direct ones by hole punching.
    dcutr: libp2p::dcutr::Behaviour,
    /// Asks servers to dial our observed addresses back (reachability).
    autonat: libp2p_autonat::v2::client::Behaviour,
    /// Dials others back for theirs (seeds only).
    autonat_server: libp2p::swarm::behaviour::toggle::Toggle<libp2p_autonat::v2::server::Behaviour>,
    /// Finds nodes on our LAN (players, with `lan_discovery`): their LAN
    /// addresses are dialled beside the tracker's (see `crate::lan`).
    pub(crate) mdns: libp2p::swarm::behaviour::toggle::Toggle<libp2p::mdns::tokio::Behaviour>,
}

/// The swarm of a node with `config`; relay slots only for `admitted` peers.
pub(crate) fn swarm(
    config: &Config,
    admitted: nat::Admitted,
) -> Result<libp2p::Swarm<Behaviour>, Box<dyn std::error::Error + Send + Sync>> {
    let rr_config = rr::Config::default()
        .with_request_timeout(config.request_timeout)
        .with_max_concurrent_streams(config.max_concurrent_streams);
    let protocol = |p: &'static str| [(StreamProtocol::new(p), ProtocolSupport::Full)];
    let transport = quic::QuicTransport::new(&config.keypair, quic::QuicConfig::default())?;
    let relay_limits = config.relay.clone();
    let autonat_server = config.autonat_server;
    // A node listening only on loopback has no LAN to search (and must not
    // multicast on the host's network: the tests run so).
    let on_a_lan = config.listen.iter().any(|a| !crate::lan::is_loopback(a));
    let mdns = match config.lan_discovery && on_a_lan {
        true => Some(libp2p::mdns::tokio::Behaviour::new(
            crate::lan::mdns_config(),
            config.keypair.public().to_peer_id(),
        )?),
        false => None,
    };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_other_transport(|_| transport)?
        // A relayed connection is a stream over the relay's connection, so it
        // needs its own security and multiplexing.
        .with_relay_client(libp2p::noise::Config::new, libp2p::yamux::Config::default)?
        .with_behaviour(|key, relay_client| {
            let me = key.public().to_peer_id();
            Behaviour {
                auth: rr::Behaviour::new(protocol(AUTH_PROTOCOL), rr_config.clone()),
                have: rr::Behaviour::new(protocol(HAVE_PROTOCOL), rr_config.clone()),
                chunk: rr::Behaviour::new(protocol(CHUNK_PROTOCOL), rr_config.clone()),
                identify: libp2p::identify::Behaviour::new(libp2p::identify::Config::new(
                    IDENTIFY_PROTOCOL.into(),
                    key.public(),
                )),
                relay_client,
                relay: relay_limits
                    .map(|l| libp2p::relay::Behaviour::new(me, nat::relay_config(&l, admitted)))
                    .into(),
                dcutr: libp2p::dcutr::Behaviour::new(me),
                autonat: reach::client(),
                autonat_server: autonat_server
                    .then(libp2p_autonat::v2::server::Behaviour::default)
                    .into(),
                mdns: mdns.into(),
            }
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}
