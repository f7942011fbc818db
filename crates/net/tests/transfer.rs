//! Real QUIC on 127.0.0.1: a node serving a published bundle hands chunks to
//! a token holder, and nothing to a peer without a token, with an expired
//! token, or with another peer's token.

#![allow(clippy::unwrap_used)]

use shoal_manifest::{Bundle, verify};
use shoal_net::{ChunkSource, Client, NetError, spawn};
use shoal_testkit::{
    BundleSource, Empty, NOW, Published, listen_addr, node_config, publish, token,
};
use shoal_types::{Bitfield, Hash, SecretKey};
use shoal_wire::{ChunkResponse, HaveAck, HaveMessage, HaveUpdate};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_holders_get_verified_chunks_and_nobody_else_does() {
    // a published multi-file release
    let tmp = tempfile::tempdir().unwrap();
    let Published {
        build,
        bundle: out,
        manifest,
    } = publish(
        tmp.path(),
        &[
            ("paks/a.pak", 600_000, 1),
            ("paks/b.pak", 300_000, 2),
            ("readme.txt", 5, 3),
        ],
    );
    let swarm = Hash::of(b"release-1");
    let bundle = Bundle::open(&out).unwrap();

    let tracker = SecretKey::from_seed([1; 32]);
    let (seed, _) = spawn(
        node_config(&tracker),
        Arc::new(BundleSource { swarm, bundle }),
    )
    .unwrap();
    let seed_addr = listen_addr(&seed).await;
    let (alice, _) = spawn(node_config(&tracker), Arc::new(Empty)).unwrap();
    let (mallory, _) = spawn(node_config(&tracker), Arc::new(Empty)).unwrap();
    let (eve, _) = spawn(node_config(&tracker), Arc::new(Empty)).unwrap();
    for c in [&alice, &mallory, &eve] {
        c.dial(seed.peer_id(), seed_addr.clone()).await.unwrap();
    }

    // without a token: nothing
    let r = mallory.chunk(seed.peer_id(), swarm, 0).await.unwrap();
    assert_eq!(r, ChunkResponse::Unauthorized);
    // with an expired token: refused, still nothing
    let expired = token(&tracker, swarm, &mallory, NOW - 3600);
    let e = mallory
        .authenticate(seed.peer_id(), swarm, &expired)
        .await
        .unwrap_err();
    assert!(
        matches!(e, NetError::AuthRefused { ref reason, .. } if reason.contains("expired")),
        "{e}"
    );
    assert_eq!(
        mallory.chunk(seed.peer_id(), swarm, 0).await.unwrap(),
        ChunkResponse::Unauthorized
    );
    // with a token signed by someone else: refused
    let forged = token(&SecretKey::from_seed([9; 32]), swarm, &mallory, NOW + 600);
    assert!(
        mallory
            .authenticate(seed.peer_id(), swarm, &forged)
            .await
            .is_err()
    );
    // with alice's token, presented by eve: bound to alice's PeerId, refused
    let alices = token(&tracker, swarm, &alice, NOW + 600);
    let e = eve
        .authenticate(seed.peer_id(), swarm, &alices)
        .await
        .unwrap_err();
    assert!(
        matches!(e, NetError::AuthRefused { ref reason, .. } if reason.contains("bound to peer")),
        "{e}"
    );
    assert_eq!(
        eve.chunk(seed.peer_id(), swarm, 0).await.unwrap(),
        ChunkResponse::Unauthorized
    );
    // a have from an unauthenticated peer is not accepted
    let have = HaveMessage {
        swarm,
        update: HaveUpdate::Have(vec![0]),
    };
    assert_eq!(
        eve.have(seed.peer_id(), have).await.unwrap(),
        HaveAck::Unauthorized
    );

    // alice with her own token gets every chunk, each matching the manifest
    alice
        .authenticate(seed.peer_id(), swarm, &alices)
        .await
        .unwrap();
    let mut fetched = Vec::new();
    for index in 0..manifest.chunks.len() as u32 {
        match alice.chunk(seed.peer_id(), swarm, index).await.unwrap() {
            ChunkResponse::Data(bytes) => {
                verify(&manifest, index, &bytes).unwrap();
                fetched.push(bytes);
            }
            other => panic!("chunk {index}: {other:?}"),
        }
    }
    // reassemble the files and compare with the build, byte for byte
    for (path, _, chunks) in manifest.files() {
        let bytes: Vec<u8> = chunks
            .iter()
            .flat_map(|&c| fetched[c as usize].clone())
            .collect();
        assert_eq!(bytes, std::fs::read(build.join(path)).unwrap(), "{path}");
    }
    // another swarm is not covered by this token, and unknown chunks are NotFound
    assert_eq!(
        alice
            .chunk(seed.peer_id(), Hash::of(b"other"), 0)
            .await
            .unwrap(),
        ChunkResponse::Unauthorized
    );
    let n = manifest.chunks.len() as u32;
    assert_eq!(
        alice.chunk(seed.peer_id(), swarm, n).await.unwrap(),
        ChunkResponse::NotFound
    );
}

/// A source that takes its time, like a disk behind a queue.
struct Slow;
impl ChunkSource for Slow {
    fn chunk(&self, _: &Hash, index: u32) -> Option<Vec<u8>> {
        std::thread::sleep(Duration::from_millis(300));
        Some(vec![index as u8; 1000])
    }
    fn bitfield(&self, _: &Hash) -> Option<Bitfield> {
        Some(Bitfield::full(64))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_limit_hear_busy_and_the_limit_frees_up() {
    let tracker = SecretKey::from_seed([1; 32]);
    let swarm = Hash::of(b"release-slow");
    let mut c = node_config(&tracker);
    c.max_uploads = 2;
    let (node, _) = spawn(c, Arc::new(Slow)).unwrap();
    let addr = listen_addr(&node).await;
    let (alice, _) = spawn(node_config(&tracker), Arc::new(Empty)).unwrap();
    alice.dial(node.peer_id(), addr).await.unwrap();
    let t = token(&tracker, swarm, &alice, NOW + 600);
    alice.authenticate(node.peer_id(), swarm, &t).await.unwrap();

    let ask = |index: u32| {
        let alice = alice.clone();
        let node = node.peer_id();
        tokio::spawn(async move { alice.chunk(node, swarm, index).await.unwrap() })
    };
    let answers: Vec<ChunkResponse> = futures::future::join_all((0..6).map(ask))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let served = answers
        .iter()
        .filter(|a| matches!(a, ChunkResponse::Data(_)))
        .count();
    let busy = answers
        .iter()
        .filter(|a| **a == ChunkResponse::Busy)
        .count();
    assert_eq!((served, busy), (2, 4), "{answers:?}");
    // once answered, the slots are free again, one request after another
    for index in 10..14 {
        assert!(matches!(
            alice.chunk(node.peer_id(), swarm, index).await.unwrap(),
            ChunkResponse::Data(_)
        ));
    }
}

/// A peer's node behind an upload cap answers one request at a time here;
/// waiting requests go to the requester holding fewest chunks first, and a
/// far needier requester displaces the best-off one from a full queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_node_serves_the_neediest_waiting_requester_first() {
    let tracker = SecretKey::from_seed([1; 32]);
    let swarm = Hash::of(b"release-slow");
    let mut c = node_config(&tracker);
    c.upload_rate = Some(1 << 20);
    c.upload_slots = 1;
    c.upload_queue = 2;
    let (node, _) = spawn(c, Arc::new(Slow)).unwrap();
    let addr = listen_addr(&node).await;
    let join = |held: u32| {
        let (tracker, addr) = (tracker.clone(), addr.clone());
        let node = node.peer_id();
        async move {
            let (peer, _) = spawn(node_config(&tracker), Arc::new(Empty)).unwrap();
            peer.dial(node, addr).await.unwrap();
            let t = token(&tracker, swarm, &peer, NOW + 600);
            peer.authenticate(node, swarm, &t).await.unwrap();
            let mut has = Bitfield::new(256);
            for i in 0..held {
                has.set(i);
            }
            let update = HaveUpdate::Bitfield(has);
            let ack = peer.have(node, HaveMessage { swarm, update }).await;
            assert_eq!(ack.unwrap(), HaveAck::Ok);
            peer
        }
    };
    let (ahead, behind, late) = (join(200).await, join(10).await, join(0).await);
    let start = std::time::Instant::now();
    // Each request is sent 60 ms after the one before; answers take 300 ms.
    let ask = |peer: &Client, index: u32, step: u64| {
        let (peer, node) = (peer.clone(), node.peer_id());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(60 * step)).await;
            let answer = peer.chunk(node, swarm, index).await.unwrap();
            (answer, start.elapsed())
        })
    };
    let asks = [
        ask(&ahead, 0, 0),  // answered at once
        ask(&ahead, 1, 1),  // waits
        ask(&behind, 2, 2), // waits
        ask(&ahead, 3, 3),  // the queue is full, nobody far better off: Busy
        ask(&late, 4, 4),   // far needier than ahead: takes its place, goes first
    ];
    let mut answers = Vec::new();
    for a in asks {
        answers.push(a.await.unwrap());
    }
    let data = |i: usize| matches!(answers[i].0, ChunkResponse::Data(_));
    assert!(data(0) && data(2) && data(4), "{answers:?}");
    assert_eq!(answers[1].0, ChunkResponse::Busy, "displaced");
    assert_eq!(answers[3].0, ChunkResponse::Busy, "refused");
    assert!(answers[4].1 < answers[2].1, "neediest first: {answers:?}");
}

/// Holds chunks it cannot read for a moment (its files are moving).
struct Moving;
impl ChunkSource for Moving {
    fn chunk(&self, _: &Hash, _: u32) -> Option<Vec<u8>> {
        None
    }
    fn bitfield(&self, _: &Hash) -> Option<Bitfield> {
        Some(Bitfield::full(4))
    }
    fn settling(&self, _: &Hash) -> bool {
        true
    }
}

/// A node whose holdings are moving answers `Busy` (try again), not
/// `NotFound` (which makes requesters forget it holds the chunk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settling_node_answers_busy_rather_than_not_found() {
    let tracker = SecretKey::from_seed([1; 32]);
    let swarm = Hash::of(b"release-moving");
    let (node, _) = spawn(node_config(&tracker), Arc::new(Moving)).unwrap();
    let addr = listen_addr(&node).await;
    let (alice, _) = spawn(node_config(&tracker), Arc::new(Empty)).unwrap();
    alice.dial(node.peer_id(), addr).await.unwrap();
    let t = token(&tracker, swarm, &alice, NOW + 600);
    alice.authenticate(node.peer_id(), swarm, &t).await.unwrap();
    let answer = alice.chunk(node.peer_id(), swarm, 0).await.unwrap();
    assert_eq!(answer, ChunkResponse::Busy);
}
