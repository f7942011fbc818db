//! Swarms over real QUIC on 127.0.0.1: several downloaders fetch a release
//! from one seed and from each other; a peer serving corrupt bytes is banned
//! while the download completes (ciphertext of an encrypted release too); a
//! seed with a corrupted store refuses the damaged chunk.

#![allow(clippy::unwrap_used)]

use shoal_manifest::{Bundle, Manifest, bundle};
use shoal_net::download::{Job, MemoryChunks, Source, download};
use shoal_net::{ChunkSource, Client, spawn};
use shoal_scheduler::PeerKind;
use shoal_testkit::{BundleSource, NOW, listen_addr, node_config, token};
use shoal_token::{Claims, Role, Token};
use shoal_types::{Bitfield, Hash, SecretKey};
use shoal_wire::{ChunkResponse, HaveMessage, HaveUpdate};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Claims to have everything and serves every chunk with one bit flipped.
struct Corrupt(Arc<BundleSource>);

impl ChunkSource for Corrupt {
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>> {
        let mut bytes = self.0.chunk(swarm, index)?;
        bytes[0] ^= 1;
        Some(bytes)
    }
    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield> {
        self.0.bitfield(swarm)
    }
}

/// Publishes a multi-file build into a bundle; returns (build dir, bundle dir, manifest).
fn publish(root: &Path) -> (std::path::PathBuf, std::path::PathBuf, Manifest) {
    let p = shoal_testkit::publish(
        root,
        &[
            ("paks/a.pak", 2_500_000, 1),
            ("paks/b.pak", 1_200_000, 2),
            ("game.exe", 300_000, 3),
        ],
    );
    (p.build, p.bundle, p.manifest)
}

fn assert_same_as_build(build: &Path, manifest: &Manifest, store: &MemoryChunks) {
    for (path, _, chunks) in manifest.files() {
        let bytes: Vec<u8> = chunks.iter().flat_map(|&c| store.get(c).unwrap()).collect();
        assert_eq!(bytes, std::fs::read(build.join(path)).unwrap(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloaders_share_chunks_with_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let (build, out, manifest) = publish(tmp.path());
    let swarm = Hash::of(b"release");
    let tracker = SecretKey::from_seed([1; 32]);
    let mut seed_config = node_config(&tracker);
    seed_config.super_seed = Some(Duration::from_secs(10));
    let (seed, _) = spawn(
        seed_config,
        Arc::new(BundleSource {
            swarm,
            bundle: Bundle::open(&out).unwrap(),
        }),
    )
    .unwrap();
    let seed_source = Source {
        peer: seed.peer_id(),
        addrs: vec![listen_addr(&seed).await],
        kind: PeerKind::Seed,
        fills: false,
    };

    let n = 4;
    let mut nodes = Vec::new();
    for _ in 0..n {
        let store = Arc::new(MemoryChunks::new(swarm, manifest.chunks.len()));
        let (client, events) = spawn(node_config(&tracker), store.clone()).unwrap();
        let a = listen_addr(&client).await;
        nodes.push((client, events, store, a));
    }
    let peer_sources: Vec<Source> = nodes
        .iter()
        .map(|(c, _, _, a)| Source {
            peer: c.peer_id(),
            addrs: vec![a.clone()],
            kind: PeerKind::Peer,
            fills: false,
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, (client, mut events, store, _)) in nodes.into_iter().enumerate() {
        let mut sources: Vec<Source> = peer_sources
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.clone())
            .collect();
        sources.push(seed_source.clone());
        let manifest = manifest.clone();
        let tok = token(&tracker, swarm, &client, NOW + 600);
        tasks.push(tokio::spawn(async move {
            let job = Job::new(&manifest, swarm, &tok, &sources, &*store);
            let report = download(&client, &mut events, job).await;
            // keep serving a little so slower peers can finish from us
            tokio::time::sleep(Duration::from_secs(2)).await;
            (report.unwrap(), store)
        }));
    }
    let mut from_peers = 0;
    let mut from_seeds = 0;
    for t in tasks {
        let (report, store) = t.await.unwrap();
        assert_same_as_build(&build, &manifest, &store);
        from_peers += report.from_peers;
        from_seeds += report.from_seeds;
    }
    let payload = manifest.unique_size();
    println!("payload {payload} B x {n}: from peers {from_peers} B, from the seed {from_seeds} B");
    assert!(from_peers > 0, "chunks flowed between downloaders");
    assert_eq!(from_peers + from_seeds, n as u64 * payload);
    assert!(
        from_seeds < n as u64 * payload,
        "the seed did not send every copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_peer_is_banned_and_download_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let (build, out, manifest) = publish(tmp.path());
    let store = download_beside_a_liar(&out, &manifest, Hash::of(b"release")).await;
    assert_same_as_build(&build, &manifest, &store);
}

/// Downloads `wire` from a seed serving `bundle` and from a peer holding
/// a valid token of its own that advertises everything and serves every
/// chunk with a bit flipped: the liar is banned and nothing it sent is kept.
async fn download_beside_a_liar(bundle: &Path, wire: &Manifest, swarm: Hash) -> Arc<MemoryChunks> {
    let honest = Arc::new(BundleSource {
        swarm,
        bundle: Bundle::open(bundle).unwrap(),
    });
    let (report, store, evil) = download_beside(
        Arc::new(Corrupt(honest.clone())),
        honest,
        wire,
        swarm,
        Default::default(),
    )
    .await;
    assert_eq!(report.banned, vec![evil.peer_id()], "{report:?}");
    assert!(
        report.wasted > 0,
        "bad chunks were received and thrown away"
    );
    assert_eq!(report.from_peers, 0, "nothing from the liar was kept");
    store
}

/// A preload trades ciphertext. A peer relaying altered ciphertext is
/// caught by the ciphertext hash before anything is stored (no key needed),
/// banned, and the preload completes from the seed with bytes that open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_relaying_altered_ciphertext_is_banned_before_anything_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let key = shoal_manifest::seal::ContentKey::generate();
    let p = shoal_testkit::publish_sealed(
        tmp.path(),
        &[("paks/a.pak", 1_500_000, 1), ("game.exe", 300_000, 3)],
        &key,
    );
    let wire = p.manifest.sealed_view();
    let store = download_beside_a_liar(&p.bundle, &wire, Hash::of(b"sealed release")).await;
    // Every stored chunk is the published ciphertext, and it opens to the
    // build under the key.
    let opened = p.manifest.opened_view();
    let sealing = p.manifest.sealing.as_ref().unwrap();
    for (path, _, chunks) in opened.files() {
        let mut bytes = Vec::new();
        for &c in chunks {
            let stored = store.get(c).unwrap();
            shoal_manifest::verify(&wire, c, &stored).unwrap();
            bytes.extend(
                shoal_manifest::seal::open(&key, &sealing.plain[c as usize], &stored).unwrap(),
            );
        }
        assert_eq!(bytes, std::fs::read(p.build.join(path)).unwrap(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_with_corrupted_store_refuses_the_bad_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, out, manifest) = publish(tmp.path());
    let victim = bundle::chunk_path(&out.join(bundle::CHUNKS_DIR), &manifest.chunks[1].hash);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();

    let swarm = Hash::of(b"release");
    let tracker = SecretKey::from_seed([1; 32]);
    let (seed, _) = spawn(
        node_config(&tracker),
        Arc::new(BundleSource {
            swarm,
            bundle: Bundle::open(&out).unwrap(),
        }),
    )
    .unwrap();
    let (me, _) = spawn(node_config(&tracker), Arc::new(MemoryChunks::new(swarm, 0))).unwrap();
    me.dial(seed.peer_id(), listen_addr(&seed).await)
        .await
        .unwrap();
    me.authenticate(
        seed.peer_id(),
        swarm,
        &token(&tracker, swarm, &me, NOW + 600),
    )
    .await
    .unwrap();
    assert_eq!(
        me.chunk(seed.peer_id(), swarm, 1).await.unwrap(),
        ChunkResponse::NotFound,
        "the damaged chunk never goes out"
    );
    assert!(matches!(
        me.chunk(seed.peer_id(), swarm, 0).await.unwrap(),
        ChunkResponse::Data(_)
    ));
}

/// Rate caps bind: a capped seed, or a capped downloader, cannot move the
/// release faster than the cap allows (after one second of burst). These are
/// lower bounds on time, so a slow machine cannot make them fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_download_caps_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let (build, out, manifest) = publish(tmp.path());
    let swarm = Hash::of(b"release");
    let tracker = SecretKey::from_seed([1; 32]);
    let payload = manifest.unique_size() as f64;
    for (upload, download_rate) in [(Some(1_000_000u64), None), (None, Some(1_500_000u64))] {
        let mut seed_config = node_config(&tracker);
        seed_config.upload_rate = upload;
        let (seed, _) = spawn(
            seed_config,
            Arc::new(BundleSource {
                swarm,
                bundle: Bundle::open(&out).unwrap(),
            }),
        )
        .unwrap();
        let store = Arc::new(MemoryChunks::new(swarm, manifest.chunks.len()));
        let (me, mut events) = spawn(node_config(&tracker), store.clone()).unwrap();
        let sources = [Source {
            peer: seed.peer_id(),
            addrs: vec![listen_addr(&seed).await],
            kind: PeerKind::Seed,
            fills: false,
        }];
        let tok = token(&tracker, swarm, &me, NOW + 600);
        let start = std::time::Instant::now();
        let job = Job {
            manifest: &manifest,
            swarm,
            token: &tok,
            sources: &sources,
            store: &*store,
            scheduler: Default::default(),
            download_rate,
            stall: Duration::from_secs(60),
            more_sources: None,
            counters: Default::default(),
            renewed: None,
        };
        download(&me, &mut events, job).await.unwrap();
        let rate = upload.or(download_rate).unwrap() as f64;
        let floor = (payload - rate) / rate * 0.9;
        let took = start.elapsed().as_secs_f64();
        assert!(
            took >= floor,
            "{took:.2}s is faster than the cap allows ({floor:.2}s)"
        );
        assert_same_as_build(&build, &manifest, &store);
    }
}

/// A super-seeding seed sends a chunk once within its window; a second asker
/// is told to get it elsewhere, and other chunks are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn super_seeding_refuses_repeats() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, out, _) = publish(tmp.path());
    let swarm = Hash::of(b"release");
    let tracker = SecretKey::from_seed([1; 32]);
    let mut seed_config = node_config(&tracker);
    seed_config.super_seed = Some(Duration::from_secs(30));
    let (seed, _) = spawn(
        seed_config,
        Arc::new(BundleSource {
            swarm,
            bundle: Bundle::open(&out).unwrap(),
        }),
    )
    .unwrap();
    let seed_addr = listen_addr(&seed).await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (c, _) = spawn(node_config(&tracker), Arc::new(MemoryChunks::new(swarm, 0))).unwrap();
        c.dial(seed.peer_id(), seed_addr.clone()).await.unwrap();
        c.authenticate(
            seed.peer_id(),
            swarm,
            &token(&tracker, swarm, &c, NOW + 600),
        )
        .await
        .unwrap();
        clients.push(c);
    }
    assert!(matches!(
        clients[0].chunk(seed.peer_id(), swarm, 0).await.unwrap(),
        ChunkResponse::Data(_)
    ));
    assert_eq!(
        clients[1].chunk(seed.peer_id(), swarm, 0).await.unwrap(),
        ChunkResponse::SentElsewhere
    );
    assert!(matches!(
        clients[1].chunk(seed.peer_id(), swarm, 1).await.unwrap(),
        ChunkResponse::Data(_)
    ));
    // The second asker cannot reach the first: as a last resort it is sent
    // the chunk too, and the seed counts it.
    let last_resort = shoal_wire::ChunkRequest {
        swarm,
        index: 0,
        last_resort: true,
    };
    assert!(matches!(
        clients[1]
            .request_chunk(seed.peer_id(), last_resort)
            .await
            .unwrap(),
        ChunkResponse::Data(_)
    ));
    assert_eq!(
        shoal_net::NatCounters::get(&seed.nat().chunks_last_resort),
        1
    );
}

/// A download outlives its token: when the seed's clock passes the first
/// token's expiry, requests are refused until the renewed token arrives;
/// then every source is re-authenticated and the download completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_tokens_keep_a_long_download_going() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let (build, out, manifest) = publish(tmp.path());
    let swarm = Hash::of(b"release");
    let tracker = SecretKey::from_seed([1; 32]);
    let seed_clock = Arc::new(AtomicU64::new(NOW));
    let mut seed_config = node_config(&tracker);
    let c = seed_clock.clone();
    seed_config.clock = Arc::new(move || c.load(Ordering::Relaxed));
    let (seed, _) = spawn(
        seed_config,
        Arc::new(BundleSource {
            swarm,
            bundle: Bundle::open(&out).unwrap(),
        }),
    )
    .unwrap();
    let store = Arc::new(MemoryChunks::new(swarm, manifest.chunks.len()));
    let (me, mut events) = spawn(node_config(&tracker), store.clone()).unwrap();
    let first = token(&tracker, swarm, &me, NOW + 600);
    let (renew_tx, renew_rx) = tokio::sync::watch::channel(first.clone());
    let sources = vec![Source {
        peer: seed.peer_id(),
        addrs: vec![listen_addr(&seed).await],
        kind: PeerKind::Seed,
        fills: false,
    }];
    // About 4 MB at 1 MB/s: the first token "expires" after one second.
    let expire = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        seed_clock.store(
            NOW + 600 + shoal_token::CLOCK_SKEW_SECS + 1,
            Ordering::Relaxed,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let later = Claims {
            version: shoal_token::token_version(),
            swarm,
            product: "game".into(),
            account: "acc".into(),
            key: "key_1".into(),
            peer_id: me_peer(&renew_tx),
            role: Role::Client,
            issued_at: NOW + 600,
            expires_at: NOW + 1200,
        };
        renew_tx.send(Token::issue(&later, &tracker)).unwrap();
    });
    let job = Job {
        manifest: &manifest,
        swarm,
        token: &first,
        sources: &sources,
        store: &*store,
        scheduler: Default::default(),
        download_rate: Some(1_000_000),
        stall: Duration::from_secs(30),
        more_sources: None,
        counters: Default::default(),
        renewed: Some(renew_rx),
    };
    download(&me, &mut events, job).await.unwrap();
    expire.await.unwrap();
    assert_same_as_build(&build, &manifest, &store);
}

/// The peer id a watched token is bound to.
fn me_peer(tx: &tokio::sync::watch::Sender<Token>) -> String {
    tx.borrow()
        .verify_signature(&SecretKey::from_seed([1; 32]).public())
        .unwrap()
        .peer_id
}

/// A peer that serves every chunk with bytes appended past its length.
struct Longer(Arc<BundleSource>);

impl ChunkSource for Longer {
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>> {
        let mut bytes = self.0.chunk(swarm, index)?;
        bytes.extend(std::iter::repeat_n(0xAA, 64 << 10));
        Some(bytes)
    }
    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield> {
        self.0.bitfield(swarm)
    }
}

/// A peer that trickles: every chunk takes far longer than a request may.
struct Trickle(Arc<BundleSource>);

impl ChunkSource for Trickle {
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>> {
        std::thread::sleep(Duration::from_secs(4));
        self.0.chunk(swarm, index)
    }
    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield> {
        self.0.bitfield(swarm)
    }
}

/// Downloads `manifest` from `hostile` (which advertises everything) and an
/// honest seed; returns the report.
async fn download_beside(
    hostile: Arc<dyn ChunkSource>,
    honest: Arc<BundleSource>,
    manifest: &Manifest,
    swarm: Hash,
    scheduler: shoal_scheduler::Config,
) -> (shoal_net::download::Report, Arc<MemoryChunks>, Client) {
    let tracker = SecretKey::from_seed([1; 32]);
    let (seed, _) = spawn(node_config(&tracker), honest).unwrap();
    let (evil, _) = spawn(node_config(&tracker), hostile).unwrap();
    let store = Arc::new(MemoryChunks::new(swarm, manifest.chunks.len()));
    let (me, mut events) = spawn(node_config(&tracker), store.clone()).unwrap();
    evil.dial(me.peer_id(), listen_addr(&me).await)
        .await
        .unwrap();
    evil.authenticate(
        me.peer_id(),
        swarm,
        &token(&tracker, swarm, &evil, NOW + 600),
    )
    .await
    .unwrap();
    let full = HaveMessage {
        swarm,
        update: HaveUpdate::Bitfield(Bitfield::full(manifest.chunks.len() as u32)),
    };
    evil.have(me.peer_id(), full).await.unwrap();
    let sources = vec![
        Source {
            peer: evil.peer_id(),
            addrs: vec![listen_addr(&evil).await],
            kind: PeerKind::Peer,
            fills: false,
        },
        Source {
            peer: seed.peer_id(),
            addrs: vec![listen_addr(&seed).await],
            kind: PeerKind::Seed,
            fills: false,
        },
    ];
    let tok = token(&tracker, swarm, &me, NOW + 600);
    let job = Job {
        manifest,
        swarm,
        token: &tok,
        sources: &sources,
        store: &*store,
        scheduler,
        download_rate: None,
        stall: Duration::from_secs(60),
        more_sources: None,
        counters: Default::default(),
        renewed: None,
    };
    let report = download(&me, &mut events, job).await.unwrap();
    (report, store, evil)
}

/// Bytes past the chunk's length are never kept, and the sender is banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_more_than_the_chunk_is_banned() {
    let tmp = tempfile::tempdir().unwrap();
    let (build, out, manifest) = publish(tmp.path());
    let swarm = Hash::of(b"release");
    let honest = Arc::new(BundleSource {
        swarm,
        bundle: Bundle::open(&out).unwrap(),
    });
    let (report, store, evil) = download_beside(
        Arc::new(Longer(honest.clone())),
        honest,
        &manifest,
        swarm,
        Default::default(),
    )
    .await;
    assert_eq!(report.banned, vec![evil.peer_id()], "{report:?}");
    assert_eq!(report.from_peers, 0, "nothing from the liar was kept");
    assert_same_as_build(&build, &manifest, &store);
}

/// A peer that trickles its answers is treated as slow: its requests time
/// out, go to others, and the download completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_peer_does_not_stall_the_download() {
    let tmp = tempfile::tempdir().unwrap();
    let (build, out, manifest) = publish(tmp.path());
    let swarm = Hash::of(b"release");
    let honest = Arc::new(BundleSource {
        swarm,
        bundle: Bundle::open(&out).unwrap(),
    });
    let scheduler = shoal_scheduler::Config {
        request_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let (report, store, _) = download_beside(
        Arc::new(Trickle(honest.clone())),
        honest,
        &manifest,
        swarm,
        scheduler,
    )
    .await;
    assert!(report.from_seeds > 0, "{report:?}");
    assert_same_as_build(&build, &manifest, &store);
}

/// Tokens that are not the presenter's own get nothing: another peer's,
/// an expired one, one for another swarm, one the tracker did not sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_are_not_the_presenters_own_get_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, out, _) = publish(tmp.path());
    let swarm = Hash::of(b"release");
    let tracker = SecretKey::from_seed([1; 32]);
    let (seed, _) = spawn(
        node_config(&tracker),
        Arc::new(BundleSource {
            swarm,
            bundle: Bundle::open(&out).unwrap(),
        }),
    )
    .unwrap();
    let seed_addr = listen_addr(&seed).await;
    let (me, _) = spawn(node_config(&tracker), Arc::new(MemoryChunks::new(swarm, 0))).unwrap();
    let (other, _) = spawn(node_config(&tracker), Arc::new(MemoryChunks::new(swarm, 0))).unwrap();
    me.dial(seed.peer_id(), seed_addr).await.unwrap();
    let claims = |swarm: Hash, peer: &Client, expires_at: u64| Claims {
        version: shoal_token::token_version(),
        swarm,
        product: "game".into(),
        account: "acc".into(),
        key: "key_1".into(),
        peer_id: peer.peer_id().to_base58(),
        role: Role::Client,
        issued_at: NOW - 1000,
        expires_at,
    };
    let bad = [
        (
            "another peer's",
            Token::issue(&claims(swarm, &other, NOW + 600), &tracker),
        ),
        (
            "an expired",
            Token::issue(&claims(swarm, &me, NOW - 120), &tracker),
        ),
        (
            "another swarm's",
            Token::issue(&claims(Hash::of(b"other"), &me, NOW + 600), &tracker),
        ),
        (
            "a forged",
            Token::issue(
                &claims(swarm, &me, NOW + 600),
                &SecretKey::from_seed([9; 32]),
            ),
        ),
    ];
    for (what, t) in &bad {
        assert!(
            me.authenticate(seed.peer_id(), swarm, t).await.is_err(),
            "{what} token was accepted"
        );
        assert_eq!(
            me.chunk(seed.peer_id(), swarm, 0).await.unwrap(),
            ChunkResponse::Unauthorized,
            "{what} token gave access"
        );
    }
    // a token for another swarm admits there, not here
    me.authenticate(seed.peer_id(), Hash::of(b"other"), &bad[2].1)
        .await
        .unwrap();
    assert_eq!(
        me.chunk(seed.peer_id(), swarm, 0).await.unwrap(),
        ChunkResponse::Unauthorized
    );
    // and the presenter's own token works
    me.authenticate(
        seed.peer_id(),
        swarm,
        &token(&tracker, swarm, &me, NOW + 600),
    )
    .await
    .unwrap();
    assert!(matches!(
        me.chunk(seed.peer_id(), swarm, 0).await.unwrap(),
        ChunkResponse::Data(_)
    ));
}

/// A peer flooding haves and chunk requests, and one connecting again and
/// again, meets bounds: the node answers Busy past its limits, keeps its
/// connection count, and still serves an honest peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_haves_requests_and_connections_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, out, manifest) = publish(tmp.path());
    let swarm = Hash::of(b"release");
    let tracker = SecretKey::from_seed([1; 32]);
    let mut seed_config = node_config(&tracker);
    seed_config.max_uploads = 4;
    seed_config.max_connections = 8;
    let (seed, _) = spawn(
        seed_config,
        Arc::new(BundleSource {
            swarm,
            bundle: Bundle::open(&out).unwrap(),
        }),
    )
    .unwrap();
    let seed_addr = listen_addr(&seed).await;
    let (evil, _) = spawn(node_config(&tracker), Arc::new(MemoryChunks::new(swarm, 0))).unwrap();
    evil.dial(seed.peer_id(), seed_addr.clone()).await.unwrap();
    evil.authenticate(
        seed.peer_id(),
        swarm,
        &token(&tracker, swarm, &evil, NOW + 600),
    )
    .await
    .unwrap();
    // 2,000 have messages, then 64 chunk requests at once
    let n = manifest.chunks.len() as u32;
    for i in 0..2000u32 {
        let m = HaveMessage {
            swarm,
            update: HaveUpdate::Have(vec![i % n]),
        };
        let _ = evil.have(seed.peer_id(), m).await;
    }
    let requests = (0..64).map(|i| evil.chunk(seed.peer_id(), swarm, i % n));
    let answers = futures::future::join_all(requests).await;
    let busy = answers
        .iter()
        .filter(|a| matches!(a, Ok(ChunkResponse::Busy)))
        .count();
    assert!(busy > 0, "64 requests at once met no bound: {answers:?}");
    // many identities connecting at once: the seed keeps at most its limit
    let mut crowd = Vec::new();
    for _ in 0..16 {
        let (c, _) = spawn(node_config(&tracker), Arc::new(MemoryChunks::new(swarm, 0))).unwrap();
        let _ = c.dial(seed.peer_id(), seed_addr.clone()).await;
        crowd.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        seed.connected_peers() <= 8,
        "{} connections",
        seed.connected_peers()
    );
    // an honest peer is still served once the crowd leaves
    drop(crowd);
    let (me, _) = spawn(node_config(&tracker), Arc::new(MemoryChunks::new(swarm, 0))).unwrap();
    let mut served = false;
    for _ in 0..50 {
        if me.dial(seed.peer_id(), seed_addr.clone()).await.is_ok()
            && me
                .authenticate(
                    seed.peer_id(),
                    swarm,
                    &token(&tracker, swarm, &me, NOW + 600),
                )
                .await
                .is_ok()
            && matches!(
                me.chunk(seed.peer_id(), swarm, 0).await,
                Ok(ChunkResponse::Data(_))
            )
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "the honest peer was never served");
}

/// A source whose swarm's origin budget stands at `.1`.
struct Budgeted(BundleSource, shoal_net::Budget);

impl ChunkSource for Budgeted {
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>> {
        self.0.chunk(swarm, index)
    }
    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield> {
        self.0.bitfield(swarm)
    }
    fn budget(&self, _: &Hash, _: u32) -> shoal_net::Budget {
        self.1
    }
}

/// The seed's node asks its source where the origin budget stands: with
/// budget to spare, an idle seed sends a chunk again inside its window;
/// once it is spent, not even after the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_super_seed_follows_its_origin_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, out, _) = publish(tmp.path());
    let swarm = Hash::of(b"release");
    let tracker = SecretKey::from_seed([1; 32]);
    for (budget, window, wait, second) in [
        (shoal_net::Budget::Spare, 30, 0, "data"),
        (shoal_net::Budget::Window, 1, 1500, "data"),
        (shoal_net::Budget::Spent, 1, 1500, "sent elsewhere"),
    ] {
        let mut seed_config = node_config(&tracker);
        seed_config.super_seed = Some(Duration::from_secs(window));
        let source = Budgeted(BundleSource::open(swarm, &out), budget);
        let (seed, _) = spawn(seed_config, Arc::new(source)).unwrap();
        let seed_addr = listen_addr(&seed).await;
        let mut clients = Vec::new();
        for _ in 0..2 {
            let (c, _) =
                spawn(node_config(&tracker), Arc::new(MemoryChunks::new(swarm, 0))).unwrap();
            c.dial(seed.peer_id(), seed_addr.clone()).await.unwrap();
            let t = token(&tracker, swarm, &c, NOW + 600);
            c.authenticate(seed.peer_id(), swarm, &t).await.unwrap();
            clients.push(c);
        }
        assert!(matches!(
            clients[0].chunk(seed.peer_id(), swarm, 0).await.unwrap(),
            ChunkResponse::Data(_)
        ));
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let got = match clients[1].chunk(seed.peer_id(), swarm, 0).await.unwrap() {
            ChunkResponse::Data(_) => "data",
            ChunkResponse::SentElsewhere => "sent elsewhere",
            other => panic!("{budget:?}: {other:?}"),
        };
        assert_eq!(got, second, "{budget:?}");
    }
}

/// An application that does not read its events for a while (busy staging
/// a build, say) loses none: 6,000 haves, more than the event queue and the
/// node's backlog together, all arrive in order once it reads (past the
/// backlog the node stops taking network events, so the sender waits for
/// its acknowledgements), and so does the disconnection after them. (Events
/// used to be dropped when the queue was full; a lost `Disconnected` left
/// requests waiting for their timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_held_back_not_dropped_while_the_application_is_busy() {
    let swarm = Hash::of(b"release");
    let tracker = SecretKey::from_seed([1; 32]);
    let (node, mut events) =
        spawn(node_config(&tracker), Arc::new(MemoryChunks::new(swarm, 0))).unwrap();
    let addr = listen_addr(&node).await;
    let (peer, _) = spawn(node_config(&tracker), Arc::new(MemoryChunks::new(swarm, 0))).unwrap();
    peer.dial(node.peer_id(), addr).await.unwrap();
    peer.authenticate(
        node.peer_id(),
        swarm,
        &token(&tracker, swarm, &peer, NOW + 600),
    )
    .await
    .unwrap();
    const HAVES: u32 = 6000;
    let peer_id = peer.peer_id();
    let to = node.peer_id();
    let sender = tokio::spawn(async move {
        for i in 0..HAVES {
            let m = HaveMessage {
                swarm,
                update: HaveUpdate::Have(vec![i]),
            };
            peer.have(to, m).await?;
        }
        Ok::<_, shoal_net::NetError>(())
    });
    // Not reading yet: the sender gets stuck behind the node's bound.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!sender.is_finished(), "the node took 6,000 haves unread");
    let mut haves = Vec::new();
    let disconnected = tokio::time::timeout(Duration::from_secs(60), async {
        let mut sender = Some(sender);
        while let Some(e) = events.recv().await {
            if sender.as_ref().is_some_and(|s| s.is_finished()) {
                // every have was acknowledged: now the peer leaves
                let s = sender.take().expect("checked");
                s.await.expect("sender").expect("haves acknowledged");
            }
            match e {
                shoal_net::Event::Have { peer, message } if peer == peer_id => {
                    if let HaveUpdate::Have(chunks) = message.update {
                        haves.extend(chunks);
                    }
                }
                shoal_net::Event::Disconnected { peer } if peer == peer_id => return true,
                _ => {}
            }
        }
        false
    })
    .await;
    assert_eq!(
        haves,
        (0..HAVES).collect::<Vec<_>>(),
        "every have arrived, in order"
    );
    assert_eq!(
        disconnected,
        Ok(true),
        "the disconnection arrived after them"
    );
}

/// One node of a launcher with several products: it fetches two releases at
/// once, then seeds one of them to another player while it fetches a third.
/// One seed node serves all three releases. The other player arrives after
/// our download of the first is over, so only `give_back` tells it what we
/// hold (without it, this test stalls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_fetches_two_swarms_at_once_and_serves_one_while_fetching_another() {
    let tmp = tempfile::tempdir().unwrap();
    let releases: Vec<(Hash, shoal_testkit::Published)> = (0..3u64)
        .map(|i| {
            let p = shoal_testkit::publish(
                &tmp.path().join(format!("r{i}")),
                &[
                    ("paks/a.pak", 1_500_000, 10 + i),
                    ("game.exe", 200_000, 20 + i),
                ],
            );
            (Hash::of(format!("release {i}").as_bytes()), p)
        })
        .collect();
    let tracker = SecretKey::from_seed([1; 32]);
    let seed_chunks = Arc::new(shoal_net::Swarms::new());
    for (swarm, p) in &releases {
        seed_chunks.add(*swarm, Arc::new(BundleSource::open(*swarm, &p.bundle)));
    }
    let mut seed_config = node_config(&tracker);
    // Slow enough that the third release is still coming while the other
    // player fetches the first from us.
    seed_config.upload_rate = Some(1_000_000);
    let (seed, _) = spawn(seed_config, seed_chunks).unwrap();
    let seed_source = Source {
        peer: seed.peer_id(),
        addrs: vec![listen_addr(&seed).await],
        kind: PeerKind::Seed,
        fills: false,
    };

    let mine = Arc::new(shoal_net::Swarms::new());
    let (me, events) = spawn(node_config(&tracker), mine.clone()).unwrap();
    let router = shoal_net::Router::new(events);
    let stores: Vec<Arc<MemoryChunks>> = releases
        .iter()
        .map(|(swarm, p)| {
            let store = Arc::new(MemoryChunks::new(*swarm, p.manifest.chunks.len()));
            mine.add(*swarm, store.clone());
            store
        })
        .collect();
    let fetch = |client: Client,
                 mut events: tokio::sync::mpsc::Receiver<shoal_net::Event>,
                 i: usize,
                 store: Arc<MemoryChunks>,
                 sources: Vec<Source>| {
        let (swarm, p) = &releases[i];
        let (swarm, manifest) = (*swarm, p.manifest.clone());
        let tok = token(&tracker, swarm, &client, NOW + 600);
        async move {
            let job = Job::new(&manifest, swarm, &tok, &sources, &*store);
            download(&client, &mut events, job).await.unwrap()
        }
    };
    let both = tokio::join!(
        fetch(
            me.clone(),
            router.subscribe(releases[0].0),
            0,
            stores[0].clone(),
            vec![seed_source.clone()]
        ),
        fetch(
            me.clone(),
            router.subscribe(releases[1].0),
            1,
            stores[1].clone(),
            vec![seed_source.clone()]
        ),
    );
    for (i, report) in [both.0, both.1].iter().enumerate() {
        let p = &releases[i].1;
        assert_eq!(report.from_seeds, p.manifest.unique_size());
        assert_same_as_build(&p.build, &p.manifest, &stores[i]);
    }

    // Another player, whose only source is us, fetches the first release
    // while we fetch the third from the seed.
    let other_store = Arc::new(MemoryChunks::new(
        releases[0].0,
        releases[0].1.manifest.chunks.len(),
    ));
    let (other, other_events) = spawn(node_config(&tracker), other_store.clone()).unwrap();
    let me_source = Source {
        peer: me.peer_id(),
        addrs: vec![listen_addr(&me).await],
        kind: PeerKind::Peer,
        fills: false,
    };
    let third = fetch(
        me.clone(),
        router.subscribe(releases[2].0),
        2,
        stores[2].clone(),
        vec![seed_source],
    );
    let first = releases[0].0;
    let mut giving = router.subscribe(first);
    let my_token = tokio::sync::watch::channel(token(&tracker, first, &me, NOW + 600)).1;
    let (me2, served) = (me.clone(), stores[0].clone());
    tokio::spawn(async move {
        shoal_net::download::give_back(&me2, &mut giving, first, my_token, served).await;
    });
    let from_us = fetch(other, other_events, 0, other_store.clone(), vec![me_source]);
    let (third, from_us) = tokio::join!(third, from_us);
    let p = &releases[2].1;
    assert_same_as_build(&p.build, &p.manifest, &stores[2]);
    assert_eq!(third.from_seeds, p.manifest.unique_size());
    let p = &releases[0].1;
    assert_same_as_build(&p.build, &p.manifest, &other_store);
    assert_eq!(from_us.from_peers, p.manifest.unique_size());
    assert!(
        from_us.elapsed < third.elapsed,
        "served the first release while the third was still coming ({:?} against {:?})",
        from_us.elapsed,
        third.elapsed
    );
}
