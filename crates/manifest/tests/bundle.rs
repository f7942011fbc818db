//! Build a real tree into a bundle, read it back, and check every byte; the
//! manifest is the same whatever the thread count.

#![allow(clippy::unwrap_used)]

mod common;

use common::{SMALL, noise};
use shoal_manifest::{
    BuildOptions, Bundle, BundleError, BundleWriter, DiscardChunks, EntryKind, Progress,
    SignedManifest, build, bundle,
};
use shoal_types::SecretKey;
use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;

fn options(threads: usize) -> BuildOptions {
    BuildOptions {
        product: "game".into(),
        channel: "stable".into(),
        version: "1.0".into(),
        chunking: SMALL,
        threads,
    }
}

fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("paks/sub")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("paks/big0.pak"), noise(3 << 20, 1)).unwrap();
    fs::write(root.join("paks/big1.pak"), noise(1 << 20, 2)).unwrap();
    // a copy: its chunks are stored once
    fs::write(root.join("paks/sub/copy.pak"), noise(1 << 20, 2)).unwrap();
    fs::write(root.join("readme.txt"), b"hello").unwrap();
    fs::write(root.join("zero.bin"), b"").unwrap();
    for i in 0..50 {
        fs::write(
            root.join(format!("paks/sub/s{i:02}.cfg")),
            noise(100 + i * 37, 100 + i as u64),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("paks/big0.pak", root.join("link.pak")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(root.join("readme.txt"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn bundle_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("build");
    sample_tree(&src);
    let key = SecretKey::from_seed([1; 32]);
    let out = tmp.path().join("out");
    let writer = BundleWriter::create(&out).unwrap();
    let progress = Progress::default();
    let manifest = build(&src, &options(0), &writer, &progress).unwrap();
    assert_eq!(writer.bytes_written(), manifest.unique_size());
    assert_eq!(
        progress.done_bytes.load(Ordering::Relaxed),
        manifest.total_size()
    );
    let signed = SignedManifest::sign(&manifest, &key);
    writer.finish(&signed).unwrap();
    // nothing partial is left beside the output
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");

    let opened = Bundle::open(&out).unwrap();
    assert_eq!(opened.manifest(), &manifest);
    assert_eq!(opened.signed().publisher(), key.public());
    // the copy is deduplicated
    assert!(manifest.unique_size() < manifest.total_size() - (1 << 20) + SMALL.max as u64);

    for entry in &manifest.entries {
        let src_path = src.join(&entry.path);
        let meta = fs::symlink_metadata(&src_path).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            entry.mode,
            meta.permissions().mode() & 0o7777,
            "{}",
            entry.path
        );
        match &entry.kind {
            EntryKind::File { size, chunks } => {
                let mut rebuilt = Vec::with_capacity(*size as usize);
                for &index in chunks {
                    rebuilt.extend(opened.read_chunk(index).unwrap());
                }
                assert_eq!(rebuilt, fs::read(&src_path).unwrap(), "{}", entry.path);
            }
            EntryKind::Dir => assert!(meta.is_dir()),
            EntryKind::Symlink { target } => {
                assert_eq!(fs::read_link(&src_path).unwrap().to_str().unwrap(), target)
            }
        }
    }
    assert!(
        manifest
            .entries
            .iter()
            .any(|e| e.path == "empty" && e.kind == EntryKind::Dir)
    );
}

#[test]
fn manifest_is_canonical_across_thread_counts() {
    let tmp = tempfile::tempdir().unwrap();
    sample_tree(tmp.path());
    let hashes: Vec<_> = [1, 2, 7]
        .into_iter()
        .map(|t| {
            build(
                tmp.path(),
                &options(t),
                &DiscardChunks,
                &Progress::default(),
            )
            .unwrap()
        })
        .map(|m| m.hash())
        .collect();
    assert_eq!(hashes[0], hashes[1]);
    assert_eq!(hashes[0], hashes[2]);
}

#[test]
fn non_empty_output_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("precious"), b"keep me").unwrap();
    assert!(matches!(
        BundleWriter::create(&out),
        Err(BundleError::NotEmpty(_))
    ));
    assert_eq!(fs::read(out.join("precious")).unwrap(), b"keep me");
    // an empty directory is fine
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    BundleWriter::create(&empty).unwrap();
}

#[test]
fn failed_build_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("build");
    sample_tree(&src);
    fs::write(src.join("Readme.txt"), b"case twin").unwrap();
    let out = tmp.path().join("out");
    let writer = BundleWriter::create(&out).unwrap();
    assert!(build(&src, &options(2), &writer, &Progress::default()).is_err());
    drop(writer);
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("build")]);
}

#[test]
fn corrupt_chunk_on_disk_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("build");
    sample_tree(&src);
    let out = tmp.path().join("out");
    let writer = BundleWriter::create(&out).unwrap();
    let manifest = build(&src, &options(2), &writer, &Progress::default()).unwrap();
    writer
        .finish(&SignedManifest::sign(
            &manifest,
            &SecretKey::from_seed([2; 32]),
        ))
        .unwrap();
    let victim = bundle::chunk_path(&out.join(bundle::CHUNKS_DIR), &manifest.chunks[0].hash);
    let mut bytes = fs::read(&victim).unwrap();
    bytes[0] ^= 1;
    fs::write(&victim, bytes).unwrap();
    let opened = Bundle::open(&out).unwrap();
    assert!(matches!(
        opened.read_chunk(0),
        Err(BundleError::Chunk { index: 0, .. })
    ));
    opened.read_chunk(1).unwrap();
}
