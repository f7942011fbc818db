//! Circuit relay v2 and hole punching over real QUIC on loopback: a seed
//! runs the relay, a player that presented a token reserves a slot and is
//! reachable through it, another player dials it through the circuit, DCUtR
//! punches a direct connection through our transport, and chunks move over
//! that connection while the relayed one carried only the coordination.
//! (The NAT topologies themselves are the netns tests' job.)

#![allow(clippy::unwrap_used)]

use libp2p::multiaddr::Protocol;
use shoal_net::{ChunkSource, Client, Config, RelayLimits, spawn};
use shoal_testkit::token;
use shoal_types::{Bitfield, Hash, Reachability, SecretKey};
use shoal_wire::ChunkResponse;
use std::sync::Arc;
use std::time::Duration;

use shoal_testkit::{NOW, node_config_on as config};

/// Holds one chunk of one swarm.
struct One(Hash);

impl ChunkSource for One {
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>> {
        (*swarm == self.0 && index == 0).then(|| vec![7u8; 256 << 10])
    }
    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield> {
        (*swarm == self.0).then(|| Bitfield::full(1))
    }
}

/// Waits (bounded) for `f` to hold.
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never happened");
}

/// The first listen address of `c` that is not relayed and not unspecified.
async fn direct_addr(c: &Client) -> libp2p::Multiaddr {
    let mut found = None;
    until("a listen address", async || {
        found =
            c.listen_addrs().await.unwrap().into_iter().find(|a| {
                !shoal_net::is_relayed(a) && a.to_string().starts_with("/ip4/127.0.0.1/")
            });
        found.is_some()
    })
    .await;
    found.unwrap()
}

/// A seed as seeds run: relay and AutoNAT server. With its address.
async fn relay_seed(tracker: &SecretKey) -> (Client, libp2p::Multiaddr) {
    let mut relay_config = config(tracker, "/ip4/127.0.0.1/udp/0/quic-v1");
    relay_config.relay = Some(RelayLimits::default());
    relay_config.autonat_server = true;
    let (relay, _) = spawn(relay_config, Arc::new(One(Hash::of(b"none")))).unwrap();
    let addr = direct_addr(&relay).await;
    (relay, addr)
}

/// Waits until `c` has learned its reachability from a server's dial-back.
async fn learns_reachability(c: &Client) -> Reachability {
    until("a reachability verdict", async || {
        c.reachability() != Reachability::Unknown
    })
    .await;
    c.reachability()
}

/// A relay seed, and player B reserved on it: (relay, B, B's circuit address).
async fn relay_and_reserved_player(
    tracker: &SecretKey,
    swarm: Hash,
    b_listen: Option<&str>,
) -> (Client, Client, libp2p::Multiaddr) {
    let (relay, relay_addr) = relay_seed(tracker).await;
    let b_config = match b_listen {
        Some(listen) => config(tracker, listen),
        None => Config {
            listen: vec![],
            ..config(tracker, "/ip4/127.0.0.1/udp/0/quic-v1")
        },
    };
    let (b, _) = spawn(b_config, Arc::new(One(swarm))).unwrap();
    b.dial(relay.peer_id(), relay_addr.clone()).await.unwrap();
    // Only a peer that presented a valid token may reserve a slot.
    let via = relay_addr
        .with(Protocol::P2p(relay.peer_id()))
        .with(Protocol::P2pCircuit);
    b.authenticate(
        relay.peer_id(),
        swarm,
        &token(tracker, swarm, &b, NOW + 600),
    )
    .await
    .unwrap();
    b.listen_on(via.clone()).await.unwrap();
    let mut circuit = None;
    until("a relay reservation", async || {
        circuit = b
            .listen_addrs()
            .await
            .unwrap()
            .into_iter()
            .find(shoal_net::is_relayed);
        circuit.is_some()
    })
    .await;
    // `<relay>/p2p/<relay id>/p2p-circuit/p2p/<B>`: what B will advertise.
    (relay, b, circuit.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_reached_through_a_relay_is_hole_punched_and_serves_directly() {
    let tracker = SecretKey::from_seed([1; 32]);
    let swarm = Hash::of(b"release");
    // Players listen on every interface, as launchers do, so dials and
    // punches leave from their listening sockets.
    let (relay, b, circuit) =
        relay_and_reserved_player(&tracker, swarm, Some("/ip4/0.0.0.0/udp/0/quic-v1")).await;
    let (a, _) = spawn(
        config(&tracker, "/ip4/0.0.0.0/udp/0/quic-v1"),
        Arc::new(One(Hash::of(b"none"))),
    )
    .unwrap();
    // Both know where they are seen (the hole punch's candidates) before
    // they meet, as players that have talked to a seed do; otherwise DCUtR
    // has no address to offer.
    a.dial(relay.peer_id(), direct_addr(&relay).await)
        .await
        .unwrap();
    learns_reachability(&a).await;
    learns_reachability(&b).await;
    // A knows of B only its relayed address.
    a.dial(b.peer_id(), circuit).await.unwrap();
    until("a hole-punched direct connection", async || {
        shoal_net::NatCounters::get(&b.nat().punch_successes) > 0
            || shoal_net::NatCounters::get(&a.nat().punch_successes) > 0
    })
    .await;
    assert!(shoal_net::NatCounters::get(&relay.nat().circuits_relayed) >= 1);
    assert!(shoal_net::NatCounters::get(&a.nat().relayed_connections) >= 1);
    // The chunk moves over the direct connection (the relay's circuit
    // limit is 64 KiB; this chunk is 256 KiB).
    a.authenticate(b.peer_id(), swarm, &token(&tracker, swarm, &a, NOW + 600))
        .await
        .unwrap();
    let mut got = None;
    until("a chunk over the direct connection", async || {
        got = Some(a.chunk(b.peer_id(), swarm, 0).await.unwrap());
        matches!(got, Some(ChunkResponse::Data(_)))
    })
    .await;
    let Some(ChunkResponse::Data(bytes)) = got else {
        unreachable!()
    };
    assert_eq!(bytes.len(), 256 << 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_are_not_served_over_a_relayed_circuit() {
    let tracker = SecretKey::from_seed([1; 32]);
    let swarm = Hash::of(b"release");
    // Neither player has a listening socket: neither can take a direct
    // connection or punch from one, so theirs stays relayed (as behind two
    // symmetric NATs).
    let (_relay, b, circuit) = relay_and_reserved_player(&tracker, swarm, None).await;
    let (a, _) = spawn(
        Config {
            listen: vec![],
            ..config(&tracker, "/ip4/127.0.0.1/udp/0/quic-v1")
        },
        Arc::new(One(Hash::of(b"none"))),
    )
    .unwrap();
    a.dial(b.peer_id(), circuit).await.unwrap();
    a.authenticate(b.peer_id(), swarm, &token(&tracker, swarm, &a, NOW + 600))
        .await
        .unwrap();
    let answer = a.chunk(b.peer_id(), swarm, 0).await;
    assert_eq!(
        answer.unwrap(),
        ChunkResponse::Busy,
        "a chunk must not cross the relay"
    );
    assert!(shoal_net::NatCounters::get(&b.nat().chunks_refused_relayed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_grants_slots_only_to_peers_that_presented_a_token() {
    let tracker = SecretKey::from_seed([1; 32]);
    let (relay, relay_addr) = relay_seed(&tracker).await;
    let (stranger, _) = spawn(
        config(&tracker, "/ip4/127.0.0.1/udp/0/quic-v1"),
        Arc::new(One(Hash::of(b"none"))),
    )
    .unwrap();
    stranger
        .dial(relay.peer_id(), relay_addr.clone())
        .await
        .unwrap();
    stranger
        .listen_on(
            relay_addr
                .with(Protocol::P2p(relay.peer_id()))
                .with(Protocol::P2pCircuit),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let addrs = stranger.listen_addrs().await.unwrap();
    assert!(
        !addrs.iter().any(shoal_net::is_relayed),
        "a peer without a token got a relay slot: {addrs:?}"
    );
    assert_eq!(shoal_net::NatCounters::get(&stranger.nat().reservations), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_tells_a_listening_player_it_is_reachable_and_a_closed_one_it_is_not() {
    let tracker = SecretKey::from_seed([1; 32]);
    let (seed, seed_addr) = relay_seed(&tracker).await;
    let (open, _) = spawn(
        config(&tracker, "/ip4/0.0.0.0/udp/0/quic-v1"),
        Arc::new(One(Hash::of(b"none"))),
    )
    .unwrap();
    // No listening socket: it dials from a client-only one, which takes no
    // connections, so the seed's dial-back fails, as behind a NAT.
    let (closed, _) = spawn(
        Config {
            listen: vec![],
            ..config(&tracker, "/ip4/127.0.0.1/udp/0/quic-v1")
        },
        Arc::new(One(Hash::of(b"none"))),
    )
    .unwrap();
    assert_eq!(open.reachability(), Reachability::Unknown);
    open.dial(seed.peer_id(), seed_addr.clone()).await.unwrap();
    closed.dial(seed.peer_id(), seed_addr).await.unwrap();
    assert_eq!(learns_reachability(&open).await, Reachability::Public);
    assert_eq!(learns_reachability(&closed).await, Reachability::Private);
    // What the open one advertises starts with the confirmed address.
    let advertised = open.advertised_addrs().await.unwrap();
    assert!(
        advertised[0].to_string().starts_with("/ip4/127.0.0.1/udp/"),
        "{advertised:?}"
    );
    assert!(!advertised.iter().any(|a| a.to_string().contains("0.0.0.0")));
}
