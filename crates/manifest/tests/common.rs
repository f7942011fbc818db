//! Helpers shared by the manifest tests: deterministic noise and a builder for
//! in-memory manifests.

#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use shoal_manifest::{ChunkInfo, ChunkParams, Entry, EntryKind, FORMAT_VERSION, Manifest};
use shoal_types::Hash;
use std::collections::HashMap;

/// Small chunks so tests exercise many boundaries on little data.
pub const SMALL: ChunkParams = ChunkParams {
    min: 2048,
    avg: 8192,
    max: 32768,
};

/// Deterministic pseudo-random bytes (xorshift64).
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

/// A manifest of top-level files, built the way `build` does, without disk.
pub fn manifest_of(files: &[(&str, &[u8])], params: ChunkParams) -> Manifest {
    let mut sorted: Vec<_> = files.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut chunks = Vec::new();
    let mut index_of = HashMap::new();
    let entries = sorted
        .iter()
        .map(|(path, data)| {
            let refs = shoal_manifest::chunker::chunk_and_hash(data, params)
                .into_iter()
                .map(|(hash, _, len)| {
                    *index_of.entry(hash).or_insert_with(|| {
                        chunks.push(ChunkInfo {
                            hash,
                            len: len as u32,
                        });
                        (chunks.len() - 1) as u32
                    })
                })
                .collect();
            let kind = EntryKind::File {
                size: data.len() as u64,
                chunks: refs,
            };
            Entry {
                path: path.to_string(),
                mode: 0o644,
                kind,
            }
        })
        .collect();
    Manifest {
        format: FORMAT_VERSION,
        product: "game".into(),
        channel: "stable".into(),
        version: "1.0".into(),
        chunking: params,
        entries,
        chunks,
        sealing: None,
    }
}

pub fn hashes(m: &Manifest) -> Vec<Hash> {
    m.chunks.iter().map(|c| c.hash).collect()
}
