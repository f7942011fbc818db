//! Shoal's QUIC transport (`shoal_net::quic`) still speaks libp2p QUIC: a
//! stock libp2p-quic node and a Shoal node connect in both directions, each
//! learns the other's PeerId from the handshake, and a stream carries bytes.

#![allow(clippy::unwrap_used)]

use futures::future::poll_fn;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::muxing::StreamMuxer;
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportEvent};
use libp2p::core::{Endpoint, Transport};
use libp2p::{PeerId, identity};
use shoal_net::quic::{QuicConfig, QuicTransport};
use std::fmt::Debug;
use std::pin::Pin;

async fn next<T: Transport + Unpin>(t: &mut T) -> TransportEvent<T::ListenerUpgrade, T::Error> {
    poll_fn(|cx| Pin::new(&mut *t).poll(cx)).await
}

/// `dialer` connects to `listener` on loopback; returns what each side saw.
async fn connect<A, B, MA, MB>(listener: &mut A, dialer: &mut B) -> ((PeerId, MA), (PeerId, MB))
where
    A: Transport<Output = (PeerId, MA)> + Unpin,
    B: Transport<Output = (PeerId, MB)> + Unpin,
    A::Error: Debug,
    B::Error: Debug,
{
    let any = "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap();
    listener.listen_on(ListenerId::next(), any).unwrap();
    let addr = loop {
        if let TransportEvent::NewAddress { listen_addr, .. } = next(listener).await {
            break listen_addr;
        }
    };
    let opts = DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::New,
    };
    // libp2p-quic starts a dial only when its future is first polled.
    let dial = dialer.dial(addr, opts).unwrap();
    let accept = async {
        loop {
            if let TransportEvent::Incoming { upgrade, .. } = next(listener).await {
                break upgrade.await;
            }
        }
    };
    let (at_listener, at_dialer) = futures::join!(accept, dial);
    (at_listener.unwrap(), at_dialer.unwrap())
}

/// The dialer opens a stream and writes; the listener reads it all.
async fn exchange<MA, MB>(mut at_listener: MA, mut at_dialer: MB)
where
    MA: StreamMuxer + Unpin,
    MB: StreamMuxer + Unpin,
    MA::Substream: Unpin,
    MB::Substream: Unpin,
    MA::Error: Debug,
    MB::Error: Debug,
{
    let mut out = poll_fn(|cx| Pin::new(&mut at_dialer).poll_outbound(cx))
        .await
        .unwrap();
    out.write_all(b"/shoal/have/1").await.unwrap();
    out.close().await.unwrap();
    let mut inbound = poll_fn(|cx| Pin::new(&mut at_listener).poll_inbound(cx))
        .await
        .unwrap();
    let mut got = Vec::new();
    inbound.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"/shoal/have/1");
}

fn stock(key: &identity::Keypair) -> libp2p::quic::tokio::Transport {
    libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
}

#[tokio::test]
async fn a_stock_libp2p_quic_node_dials_a_shoal_node() {
    let (ours, theirs) = (
        identity::Keypair::generate_ed25519(),
        identity::Keypair::generate_ed25519(),
    );
    let mut listener = QuicTransport::new(&ours, QuicConfig::default()).unwrap();
    let mut dialer = stock(&theirs);
    let ((seen_by_us, at_us), (seen_by_them, at_them)) = connect(&mut listener, &mut dialer).await;
    assert_eq!(seen_by_us, theirs.public().to_peer_id());
    assert_eq!(seen_by_them, ours.public().to_peer_id());
    exchange(at_us, at_them).await;
}

#[tokio::test]
async fn a_shoal_node_dials_a_stock_libp2p_quic_node() {
    let (ours, theirs) = (
        identity::Keypair::generate_ed25519(),
        identity::Keypair::generate_ed25519(),
    );
    let mut listener = stock(&theirs);
    let mut dialer = QuicTransport::new(&ours, QuicConfig::default()).unwrap();
    let ((seen_by_them, at_them), (seen_by_us, at_us)) = connect(&mut listener, &mut dialer).await;
    assert_eq!(seen_by_us, theirs.public().to_peer_id());
    assert_eq!(seen_by_them, ours.public().to_peer_id());
    exchange(at_them, at_us).await;
}
