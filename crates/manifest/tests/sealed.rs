//! Encrypted releases: a real tree built sealed, its manifest encoded,
//! decoded and validated, its two views, and format 1 left as it was.

#![allow(clippy::unwrap_used)]

mod common;

use common::{SMALL, noise};
use shoal_manifest::seal::{self, ContentKey, SEAL_OVERHEAD};
use shoal_manifest::{
    BuildOptions, BundleWriter, DiscardChunks, InvalidManifest, Manifest, ManifestError, Progress,
    SEALED_FORMAT_VERSION, SignedManifest, build, build_sealed, verify,
};
use shoal_types::{Hash, SecretKey};
use std::fs;
use std::path::Path;

fn options(version: &str) -> BuildOptions {
    BuildOptions {
        product: "game".into(),
        channel: "stable".into(),
        version: version.into(),
        chunking: SMALL,
        threads: 2,
    }
}

fn tree(root: &Path, seed: u64) {
    fs::create_dir_all(root.join("paks")).unwrap();
    fs::write(root.join("paks/a.pak"), noise(300_000, 1)).unwrap();
    fs::write(root.join("paks/b.pak"), noise(200_000, seed)).unwrap();
    // a copy: stored once, sealed once
    fs::write(root.join("paks/c.pak"), noise(300_000, 1)).unwrap();
    fs::write(root.join("readme.txt"), b"the secret ending").unwrap();
    std::os::unix::fs::symlink("paks/a.pak", root.join("link.pak")).unwrap();
}

#[test]
fn a_sealed_build_lists_ciphertext_and_plaintext_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("build");
    tree(&src, 2);
    let key = ContentKey::generate();
    let out = tmp.path().join("bundle");
    let writer = BundleWriter::create(&out).unwrap();
    let manifest =
        build_sealed(&src, &options("1.0"), &key, &writer, &Progress::default()).unwrap();
    let plain = build(&src, &options("1.0"), &DiscardChunks, &Progress::default()).unwrap();

    assert_eq!(manifest.format, SEALED_FORMAT_VERSION);
    assert!(manifest.is_sealed());
    // the opened view is exactly the plain build's manifest
    assert_eq!(manifest.opened_view(), plain);
    assert_eq!(manifest.sealing.as_ref().unwrap().key_check, key.check());
    assert_ne!(key.check(), ContentKey::generate().check());
    assert_eq!(manifest.total_size(), plain.total_size());
    // each listed chunk is the ciphertext of the plaintext chunk at its index
    let sealing = manifest.sealing.as_ref().unwrap();
    for (i, (c, p)) in manifest.chunks.iter().zip(&plain.chunks).enumerate() {
        assert_eq!(c.len as usize, p.len as usize + SEAL_OVERHEAD);
        assert_eq!(sealing.plain[i], p.hash);
        assert_ne!(c.hash, p.hash);
    }
    // the sealed view sizes files as their ciphertext
    let view = manifest.sealed_view();
    view.validate().unwrap();
    assert_eq!(view.unique_size(), manifest.unique_size());
    assert_eq!(
        view.total_size(),
        plain.total_size()
            + SEAL_OVERHEAD as u64 * plain.files().map(|f| f.2.len() as u64).sum::<u64>()
    );

    // signed, encoded and decoded whole; chunks in the bundle verify as
    // ciphertext and open to their plaintext
    let signer = SecretKey::from_seed([3; 32]);
    let signed = SignedManifest::sign(&manifest, &signer);
    writer.finish(&signed).unwrap();
    let back = SignedManifest::from_bytes(&signed.to_bytes())
        .unwrap()
        .open()
        .unwrap();
    assert_eq!(back, manifest);
    for (i, c) in manifest.chunks.iter().enumerate() {
        let bytes = fs::read(shoal_manifest::bundle::chunk_path(
            &out.join("chunks"),
            &c.hash,
        ))
        .unwrap();
        verify(&manifest, i as u32, &bytes).unwrap();
        let opened = seal::open(&key, &sealing.plain[i], &bytes).unwrap();
        verify(&plain, i as u32, &opened).unwrap();
        // In place, hashing once: the same plaintext, verified.
        let mut buf = bytes.clone();
        let chunk = seal::open_chunk(&key, &plain, i as u32, &mut buf).unwrap();
        assert_eq!(chunk.data(), &opened[..]);
        let mut bent = bytes.clone();
        bent[0] ^= 1;
        assert_eq!(
            seal::open_chunk(&key, &plain, i as u32, &mut bent).map(|_| ()),
            Err(seal::OpenError::Undecryptable)
        );
        let mut elsewhere = bytes.clone();
        assert!(matches!(
            seal::open_chunk(&key, &plain, u32::MAX, &mut elsewhere),
            Err(seal::OpenError::NotListed(_))
        ));
    }
    // nothing of the plaintext is in the bundle
    for entry in walk(&out) {
        let bytes = fs::read(entry).unwrap();
        assert!(!contains(&bytes, b"the secret ending"));
        assert!(!contains(&bytes, &noise(300_000, 1)[1000..1064]));
    }
}

#[test]
fn sealing_is_deterministic_and_unchanged_chunks_keep_their_plaintext_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let (v1, v2) = (tmp.path().join("v1"), tmp.path().join("v2"));
    tree(&v1, 2);
    tree(&v2, 9);
    let key = ContentKey::from_bytes([5; 32]);
    let a = build_sealed(
        &v1,
        &options("1.0"),
        &key,
        &DiscardChunks,
        &Progress::default(),
    )
    .unwrap();
    let again = build_sealed(
        &v1,
        &options("1.0"),
        &key,
        &DiscardChunks,
        &Progress::default(),
    )
    .unwrap();
    assert_eq!(a, again, "every player gets the same ciphertext");
    let b = build_sealed(
        &v2,
        &options("2.0"),
        &key,
        &DiscardChunks,
        &Progress::default(),
    )
    .unwrap();
    let plain_a: std::collections::HashSet<Hash> =
        a.sealing.as_ref().unwrap().plain.iter().copied().collect();
    let shared = b
        .sealing
        .as_ref()
        .unwrap()
        .plain
        .iter()
        .filter(|p| plain_a.contains(p))
        .count();
    // a.pak (and its copy) and readme are unchanged; b.pak is new
    assert!(
        shared > 0 && shared < b.chunks.len(),
        "{shared} of {}",
        b.chunks.len()
    );
}

#[test]
fn format_one_encodes_as_before_and_bad_sealings_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("build");
    tree(&src, 2);
    let plain = build(&src, &options("1.0"), &DiscardChunks, &Progress::default()).unwrap();
    // a plain manifest is format 1's fields, in order, and nothing more
    let expected = bincode::serde::encode_to_vec(
        (
            plain.format,
            &plain.product,
            &plain.channel,
            &plain.version,
            plain.chunking,
            &plain.entries,
            &plain.chunks,
        ),
        bincode::config::standard(),
    )
    .unwrap();
    assert_eq!(plain.encode(), expected);
    assert_eq!(Manifest::decode(&expected).unwrap(), plain);

    let key = ContentKey::from_bytes([6; 32]);
    let sealed = build_sealed(
        &src,
        &options("1.0"),
        &key,
        &DiscardChunks,
        &Progress::default(),
    )
    .unwrap();
    let refused = |m: &Manifest| m.validate().unwrap_err();
    // format 2 without sealing, format 1 with it
    let mut m = sealed.clone();
    m.sealing = None;
    assert!(matches!(refused(&m), InvalidManifest::SealingFormat { .. }));
    let mut m = sealed.clone();
    m.format = 1;
    assert!(matches!(refused(&m), InvalidManifest::SealingFormat { .. }));
    // a plaintext hash missing
    let mut m = sealed.clone();
    m.sealing.as_mut().unwrap().plain.pop();
    assert!(matches!(refused(&m), InvalidManifest::SealingLength { .. }));
    // a chunk no longer than its tag
    let mut m = sealed.clone();
    m.chunks[0].len = SEAL_OVERHEAD as u32;
    assert!(matches!(refused(&m), InvalidManifest::ChunkLength { .. }));
    // a file size that is the ciphertext's, not the plaintext's
    let view = sealed.sealed_view();
    let mut m = sealed.clone();
    m.entries = view.entries.clone();
    assert!(matches!(refused(&m), InvalidManifest::SizeMismatch { .. }));
    // two chunks claiming one plaintext
    let mut m = sealed.clone();
    let p = m.sealing.as_ref().unwrap().plain[0];
    m.sealing.as_mut().unwrap().plain[1] = p;
    assert!(matches!(
        refused(&m),
        InvalidManifest::DuplicateChunk { .. }
    ));
    // trailing bytes after a format 1 manifest, a cut sealing
    let mut bytes = plain.encode();
    bytes.push(0);
    assert!(matches!(
        Manifest::decode(&bytes),
        Err(ManifestError::Trailing(1))
    ));
    let bytes = sealed.encode();
    assert!(Manifest::decode(&bytes[..bytes.len() - 3]).is_err());
    assert_eq!(Manifest::decode(&bytes).unwrap(), sealed);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
