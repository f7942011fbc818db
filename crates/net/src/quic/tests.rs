//! The transport's unit tests: handshakes, refusals, listeners and hole punching.
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use libp2p::core::Transport;
use libp2p::core::muxing::StreamMuxer;
use libp2p::core::transport::{DialOpts, ListenerId, TransportEvent};
use libp2p::{Multiaddr, identity};

use super::tls::*;
use super::transport::*;
use super::*;

#[test]
fn only_quic_v1_udp_addresses_are_taken() {
    let ok = |s: &str| socket_addr(&s.parse().unwrap());
    assert_eq!(
        ok("/ip4/127.0.0.1/udp/4433/quic-v1"),
        Some("127.0.0.1:4433".parse().unwrap())
    );
    assert_eq!(
        ok("/ip6/::1/udp/9/quic-v1/p2p/12D3KooWGBWx9gyUFTVQcKMTenQMSyE2ad9m7c9fpjS4NMjoDien"),
        Some("[::1]:9".parse().unwrap())
    );
    assert_eq!(ok("/ip4/127.0.0.1/udp/4433/quic"), None);
    assert_eq!(ok("/ip4/127.0.0.1/tcp/4433"), None);
    assert_eq!(ok("/ip4/127.0.0.1/udp/4433/quic-v1/udp/1"), None);
    assert_eq!(ok("/dns4/example.org/udp/4433/quic-v1"), None);
}

async fn next_event(t: &mut QuicTransport) -> TransportEvent<Upgrade, QuicError> {
    futures::future::poll_fn(|cx| Pin::new(&mut *t).poll(cx)).await
}

/// A transport listening on loopback, and the address it reports.
async fn listening() -> (identity::Keypair, QuicTransport, Multiaddr) {
    let key = identity::Keypair::generate_ed25519();
    let mut t = QuicTransport::new(&key, QuicConfig::default()).unwrap();
    let id = ListenerId::next();
    t.listen_on(id, "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let TransportEvent::NewAddress { listen_addr, .. } = next_event(&mut t).await else {
        panic!("a listener reports its address first");
    };
    (key, t, listen_addr)
}

fn dial_opts() -> DialOpts {
    DialOpts {
        role: libp2p::core::Endpoint::Dialer,
        port_use: libp2p::core::transport::PortUse::New,
    }
}

#[tokio::test]
async fn both_ends_learn_each_others_peer_id_and_streams_carry_bytes() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let (server_key, mut server, addr) = listening().await;
    let client_key = identity::Keypair::generate_ed25519();
    let mut client = QuicTransport::new(&client_key, QuicConfig::default()).unwrap();
    let dial = client.dial(addr, dial_opts()).unwrap();
    let TransportEvent::Incoming { upgrade, .. } = next_event(&mut server).await else {
        panic!("expected an incoming connection");
    };
    let ((server_seen, mut at_server), (client_seen, mut at_client)) =
        futures::try_join!(upgrade, dial).unwrap();
    assert_eq!(server_seen, client_key.public().to_peer_id());
    assert_eq!(client_seen, server_key.public().to_peer_id());

    let mut out = futures::future::poll_fn(|cx| Pin::new(&mut at_client).poll_outbound(cx))
        .await
        .unwrap();
    out.write_all(b"have 1").await.unwrap();
    out.close().await.unwrap();
    out.close().await.unwrap(); // closing twice is harmless
    let mut inbound = futures::future::poll_fn(|cx| Pin::new(&mut at_server).poll_inbound(cx))
        .await
        .unwrap();
    let mut got = Vec::new();
    inbound.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"have 1");
}

#[tokio::test]
async fn a_client_without_a_libp2p_certificate_is_refused() {
    let (_, mut server, addr) = listening().await;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerCertVerifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let tls = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connecting = endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(tls)),
            socket_addr(&addr).unwrap(),
            SERVER_NAME,
        )
        .unwrap();
    let TransportEvent::Incoming { upgrade, .. } = next_event(&mut server).await else {
        panic!("expected an incoming connection");
    };
    let (server_side, client_side) = futures::join!(upgrade, connecting);
    assert!(server_side.is_err(), "the server must not accept it");
    // The client may count the handshake done before the server's refusal lands,
    // but the connection is closed either way.
    if let Ok(connection) = client_side {
        let _ = connection.closed().await;
    }
}

#[tokio::test]
async fn a_removed_listener_closes_and_takes_no_more_connections() {
    let key = identity::Keypair::generate_ed25519();
    let mut t = QuicTransport::new(&key, QuicConfig::default()).unwrap();
    let id = ListenerId::next();
    t.listen_on(id, "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let TransportEvent::NewAddress { listen_addr, .. } = next_event(&mut t).await else {
        panic!("a listener reports its address first");
    };
    assert!(t.remove_listener(id));
    assert!(!t.remove_listener(id), "only once");
    assert!(matches!(
        next_event(&mut t).await,
        TransportEvent::ListenerClosed { listener_id, reason: Ok(()) } if listener_id == id
    ));
    let quick = QuicConfig {
        handshake_timeout: Duration::from_millis(500),
        ..QuicConfig::default()
    };
    let mut client = QuicTransport::new(&identity::Keypair::generate_ed25519(), quick).unwrap();
    let dial = client.dial(listen_addr, dial_opts()).unwrap();
    assert!(dial.await.is_err(), "nobody accepts any more");
}

/// A node listening on one address (a player configured with its LAN
/// address) dials from that socket, so the remote, and a NAT on the way,
/// see the port it listens on; a dial that asks for a new port does not.
#[tokio::test]
async fn dials_leave_from_a_listener_bound_to_a_specific_address() {
    let (_, mut server, server_addr) = listening().await;
    let (_, mut client, client_addr) = listening().await;
    let client_port = socket_addr(&client_addr).unwrap().port();
    for (port_use, same) in [
        (libp2p::core::transport::PortUse::Reuse, true),
        (libp2p::core::transport::PortUse::New, false),
    ] {
        let opts = DialOpts {
            role: libp2p::core::Endpoint::Dialer,
            port_use,
        };
        let dial = client.dial(server_addr.clone(), opts).unwrap();
        let TransportEvent::Incoming {
            upgrade,
            send_back_addr,
            ..
        } = next_event(&mut server).await
        else {
            panic!("expected an incoming connection");
        };
        let seen = socket_addr(&send_back_addr).unwrap().port();
        assert_eq!(
            seen == client_port,
            same,
            "{port_use:?}: seen from port {seen}"
        );
        let (_, _) = drive(&mut client, futures::future::try_join(upgrade, dial))
            .await
            .unwrap();
    }
}

/// A transport listening on every interface (as players do), and its port.
fn listening_everywhere(config: QuicConfig) -> (identity::Keypair, QuicTransport, u16) {
    let key = identity::Keypair::generate_ed25519();
    let mut t = QuicTransport::new(&key, config).unwrap();
    t.listen_on(
        ListenerId::next(),
        "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap(),
    )
    .unwrap();
    let port = t.listeners[0].local.port();
    (key, t, port)
}

fn on_loopback(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        .parse()
        .unwrap()
}

fn role(role: libp2p::core::Endpoint) -> DialOpts {
    DialOpts {
        role,
        port_use: libp2p::core::transport::PortUse::Reuse,
    }
}

/// Polls `t` until `done` resolves; no connection may arrive as an
/// ordinary inbound one meanwhile.
async fn drive<T>(t: &mut QuicTransport, done: impl std::future::Future<Output = T>) -> T {
    let mut done = std::pin::pin!(done);
    loop {
        tokio::select! {
            out = &mut done => return out,
            event = next_event(t) => assert!(
                !matches!(event, TransportEvent::Incoming { .. }),
                "the punched connection must be the dial's, not a new inbound one"
            ),
        }
    }
}

#[tokio::test]
async fn a_dial_in_the_listener_role_punches_and_takes_the_remotes_connection() {
    let (a_key, mut a, a_port) = listening_everywhere(QuicConfig::default());
    let (b_key, mut b, b_port) = listening_everywhere(QuicConfig::default());
    // DCUtR: one side punches towards the other's observed address and
    // waits; the other dials from its listening socket.
    let punching = a
        .dial(on_loopback(b_port), role(libp2p::core::Endpoint::Listener))
        .unwrap();
    let dialing = b
        .dial(on_loopback(a_port), role(libp2p::core::Endpoint::Dialer))
        .unwrap();
    let both = async { futures::try_join!(punching, dialing) };
    let both = drive(&mut a, both);
    let ((a_sees, _), (b_sees, _)) = drive(&mut b, both).await.unwrap();
    assert_eq!(a_sees, b_key.public().to_peer_id());
    assert_eq!(b_sees, a_key.public().to_peer_id());
    assert!(
        a.listeners[0].waiting.claim_count() == 0,
        "nothing left waiting"
    );
}

#[tokio::test]
async fn a_hole_punch_nobody_answers_fails_in_time() {
    let quick = QuicConfig {
        hole_punch_timeout: Duration::from_millis(300),
        ..QuicConfig::default()
    };
    let (_, mut a, _) = listening_everywhere(quick);
    let (_, _b, b_port) = listening_everywhere(QuicConfig::default());
    let punching = a
        .dial(on_loopback(b_port), role(libp2p::core::Endpoint::Listener))
        .unwrap();
    let result = drive(&mut a, punching).await;
    assert!(
        matches!(result, Err(QuicError::HolePunch(_))),
        "{:?}",
        result.err()
    );
    // without a listener there is nothing to punch from
    let mut lone = QuicTransport::new(
        &identity::Keypair::generate_ed25519(),
        QuicConfig::default(),
    )
    .unwrap();
    assert!(
        lone.dial(on_loopback(b_port), role(libp2p::core::Endpoint::Listener))
            .is_err()
    );
}

#[test]
fn aes_gcm_is_offered_first() {
    let names: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
    assert_eq!(names[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    assert!(names.contains(&rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256));
}
