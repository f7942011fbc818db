//! Fixtures Shoal's tests share, so each is written once: deterministic
//! noise, a published multi-file bundle, a [`ChunkSource`] serving one, a
//! node [`Config`] on loopback, swarm tokens, waiting for a node to listen.
//!
//! Dev-only: crates take it under `[dev-dependencies]` and nowhere else
//! (`tests/tests/layering.rs` checks). Helpers panic on failure, as test
//! code does.

#![allow(clippy::unwrap_used)]

use shoal_manifest::seal::ContentKey;
use shoal_manifest::{
    BuildOptions, Bundle, BundleWriter, ChunkParams, Manifest, Progress, SignedManifest,
};
use shoal_net::{ChunkSource, Client, Config};
use shoal_token::{Claims, Role, Token};
use shoal_types::{Bitfield, Hash, SecretKey};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The Unix time the fixtures' clocks read.
pub const NOW: u64 = 1_800_000_000;

/// Deterministic pseudo-random bytes (xorshift64, eight bytes a step):
/// incompressible, and the same for the same seed on every run.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Chunks of 16 / 64 / 256 KiB: many boundaries in a few MiB.
pub const SMALL_CHUNKS: ChunkParams = ChunkParams {
    min: 16 << 10,
    avg: 64 << 10,
    max: 256 << 10,
};

/// The key the fixtures' publisher signs with.
pub fn publisher_key() -> SecretKey {
    SecretKey::from_seed([3; 32])
}

/// A build written and published by [`publish`].
#[derive(Debug)]
pub struct Published {
    /// The build tree.
    pub build: PathBuf,
    /// The bundle (`manifest.shoal` and `chunks/`).
    pub bundle: PathBuf,
    pub manifest: Manifest,
}

/// Writes `files` (path, size, noise seed) under `root/build`, publishes
/// them as product `game`, channel `stable`, version `1` in [`SMALL_CHUNKS`]
/// into `root/bundle`, signed by [`publisher_key`].
pub fn publish(root: &Path, files: &[(&str, usize, u64)]) -> Published {
    publish_with(root, files, None)
}

/// [`publish`], encrypted under `key`: the bundle holds ciphertext and the
/// manifest is format 2 (peers trade its [`Manifest::sealed_view`]).
pub fn publish_sealed(root: &Path, files: &[(&str, usize, u64)], key: &ContentKey) -> Published {
    publish_with(root, files, Some(key))
}

fn publish_with(root: &Path, files: &[(&str, usize, u64)], key: Option<&ContentKey>) -> Published {
    let build = root.join("build");
    for &(path, len, seed) in files {
        let path = build.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, noise(len, seed)).unwrap();
    }
    let bundle = root.join("bundle");
    let writer = BundleWriter::create(&bundle).unwrap();
    let options = BuildOptions {
        product: "game".into(),
        channel: "stable".into(),
        version: "1".into(),
        chunking: SMALL_CHUNKS,
        threads: 2,
    };
    let progress = Progress::default();
    let manifest = match key {
        None => shoal_manifest::build(&build, &options, &writer, &progress),
        Some(key) => shoal_manifest::build_sealed(&build, &options, key, &writer, &progress),
    }
    .unwrap();
    writer
        .finish(&SignedManifest::sign(&manifest, &publisher_key()))
        .unwrap();
    Published {
        build,
        bundle,
        manifest,
    }
}

/// Serves one bundle as swarm `swarm`, reading (and so verifying) every
/// chunk from disk.
#[derive(Debug)]
pub struct BundleSource {
    pub swarm: Hash,
    pub bundle: Bundle,
}

impl BundleSource {
    pub fn open(swarm: Hash, bundle: &Path) -> BundleSource {
        BundleSource {
            swarm,
            bundle: Bundle::open(bundle).unwrap(),
        }
    }
}

impl ChunkSource for BundleSource {
    fn chunk(&self, swarm: &Hash, index: u32) -> Option<Vec<u8>> {
        (*swarm == self.swarm)
            .then(|| self.bundle.read_chunk(index).ok())
            .flatten()
    }
    fn bitfield(&self, swarm: &Hash) -> Option<Bitfield> {
        (*swarm == self.swarm).then(|| Bitfield::full(self.bundle.manifest().chunks.len() as u32))
    }
}

/// Holds nothing.
#[derive(Debug)]
pub struct Empty;

impl ChunkSource for Empty {
    fn chunk(&self, _: &Hash, _: u32) -> Option<Vec<u8>> {
        None
    }
    fn bitfield(&self, _: &Hash) -> Option<Bitfield> {
        None
    }
}

/// A node on 127.0.0.1 (a fresh identity, any UDP port) trusting `tracker`,
/// its clock at [`NOW`].
pub fn node_config(tracker: &SecretKey) -> Config {
    node_config_on(tracker, "/ip4/127.0.0.1/udp/0/quic-v1")
}

/// [`node_config`] listening on `listen` (a multiaddr).
pub fn node_config_on(tracker: &SecretKey, listen: &str) -> Config {
    Config::new(
        shoal_net::generate_keypair(),
        vec![listen.parse().unwrap()],
        tracker.public(),
        Arc::new(|| NOW),
    )
}

/// A swarm token for `peer` in `swarm`, signed by `tracker`, issued just
/// before [`NOW`] and valid until `expires_at`.
pub fn token(tracker: &SecretKey, swarm: Hash, peer: &Client, expires_at: u64) -> Token {
    let claims = Claims {
        version: shoal_token::token_version(),
        swarm,
        product: "game".into(),
        account: "acc_1".into(),
        key: "key_1".into(),
        peer_id: peer.peer_id().to_base58(),
        role: Role::Client,
        issued_at: NOW - 10,
        expires_at,
    };
    Token::issue(&claims, tracker)
}

/// The node's first listen address, once it listens (panics after 2 s).
pub async fn listen_addr(client: &Client) -> shoal_net::Addr {
    for _ in 0..100 {
        if let Some(a) = client.listen_addrs().await.unwrap().into_iter().next() {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("node never listened");
}
