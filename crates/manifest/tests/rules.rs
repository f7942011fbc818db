//! Every path rule, on a real tree (what `build` refuses) and on a crafted
//! manifest (what `validate`/`decode` refuses). Each test fails if its rule is
//! removed.

#![allow(clippy::unwrap_used)]

mod common;

use common::{SMALL, manifest_of};
use shoal_manifest::path::PathRule;
use shoal_manifest::{
    BuildError, BuildOptions, DiscardChunks, Entry, EntryKind, InvalidManifest, Manifest,
    ManifestError, Progress, build,
};
use std::fs;
use std::path::Path;

fn options() -> BuildOptions {
    BuildOptions {
        product: "game".into(),
        channel: "stable".into(),
        version: "1.0".into(),
        chunking: SMALL,
        threads: 2,
    }
}

fn build_tree(root: &Path) -> Result<Manifest, BuildError> {
    build(root, &options(), &DiscardChunks, &Progress::default())
}

fn with_entry(mut m: Manifest, entry: Entry) -> Manifest {
    m.entries.push(entry);
    m.entries.sort_by(|a, b| a.path.cmp(&b.path));
    m
}

fn dir(path: &str) -> Entry {
    Entry {
        path: path.into(),
        mode: 0o755,
        kind: EntryKind::Dir,
    }
}

fn link(path: &str, target: &str) -> Entry {
    Entry {
        path: path.into(),
        mode: 0o777,
        kind: EntryKind::Symlink {
            target: target.into(),
        },
    }
}

fn base() -> Manifest {
    manifest_of(&[("a.pak", b"hello"), ("b.pak", b"world")], SMALL)
}

/// Validation and decoding agree: an invalid manifest never decodes.
fn refused(m: &Manifest) -> InvalidManifest {
    let err = m.validate().expect_err("manifest should be refused");
    assert!(matches!(
        Manifest::decode(&m.encode()),
        Err(ManifestError::Invalid(_))
    ));
    err
}

#[test]
fn base_manifest_is_valid() {
    let m = base();
    m.validate().unwrap();
    assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
}

#[test]
fn absolute_path_refused() {
    let m = with_entry(base(), dir("/etc"));
    assert!(matches!(
        refused(&m),
        InvalidManifest::Path {
            rule: PathRule::Absolute,
            ..
        }
    ));
}

#[test]
fn parent_component_refused() {
    let m = with_entry(base(), dir("../outside"));
    assert!(matches!(
        refused(&m),
        InvalidManifest::Path {
            rule: PathRule::ParentComponent,
            ..
        }
    ));
}

#[test]
fn duplicate_path_refused() {
    let mut m = base();
    let first = m.entries[0].clone();
    m.entries.insert(0, first);
    assert!(matches!(refused(&m), InvalidManifest::Duplicate { .. }));
}

#[test]
fn unsorted_entries_refused() {
    let mut m = base();
    m.entries.reverse();
    assert!(matches!(refused(&m), InvalidManifest::Unsorted { .. }));
}

#[test]
fn case_collision_refused_in_manifest() {
    let m = with_entry(base(), dir("A.pak"));
    assert!(matches!(refused(&m), InvalidManifest::CaseCollision { .. }));
}

#[test]
fn case_collision_refused_in_tree() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("Data.pak"), b"1").unwrap();
    fs::write(tmp.path().join("data.pak"), b"2").unwrap();
    let err = build_tree(tmp.path()).unwrap_err();
    assert!(matches!(err, BuildError::CaseCollision { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("Data.pak") && text.contains("data.pak"),
        "{text}"
    );
}

#[test]
fn link_escaping_refused_in_manifest() {
    let m = with_entry(base(), link("evil", "../../etc/passwd"));
    assert!(matches!(refused(&m), InvalidManifest::LinkEscapes { .. }));
    let m = with_entry(base(), link("evil", "/etc/passwd"));
    assert!(matches!(refused(&m), InvalidManifest::LinkEscapes { .. }));
}

#[test]
fn link_escaping_refused_in_tree() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("bin")).unwrap();
    std::os::unix::fs::symlink("../../outside", tmp.path().join("bin/run")).unwrap();
    let err = build_tree(tmp.path()).unwrap_err();
    assert!(
        matches!(err, BuildError::LinkEscapes { ref path, .. } if path == "bin/run"),
        "{err}"
    );
}

#[test]
fn absolute_link_refused_in_tree() {
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(tmp.path().join("x"), tmp.path().join("abs")).unwrap();
    let err = build_tree(tmp.path()).unwrap_err();
    assert!(matches!(err, BuildError::LinkEscapes { .. }), "{err}");
}

#[test]
fn inside_links_are_recorded_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("lib")).unwrap();
    fs::write(tmp.path().join("lib/core.so"), b"elf").unwrap();
    fs::create_dir(tmp.path().join("bin")).unwrap();
    std::os::unix::fs::symlink("../lib/core.so", tmp.path().join("bin/core.so")).unwrap();
    std::os::unix::fs::symlink("lib", tmp.path().join("libdir")).unwrap();
    let m = build_tree(tmp.path()).unwrap();
    let kinds: Vec<_> = m
        .entries
        .iter()
        .map(|e| (e.path.as_str(), &e.kind))
        .collect();
    assert!(kinds.contains(&(
        "bin/core.so",
        &EntryKind::Symlink {
            target: "../lib/core.so".into()
        }
    )));
    assert!(kinds.contains(&(
        "libdir",
        &EntryKind::Symlink {
            target: "lib".into()
        }
    )));
    assert_eq!(m.files().count(), 1, "links are not followed into files");
}

#[test]
fn entry_under_a_link_refused() {
    // "data" is a link; a file "data/x" would be written through it.
    let m = with_entry(with_entry(base(), link("data", "a.pak")), dir("data/x"));
    assert!(matches!(refused(&m), InvalidManifest::Orphan { .. }));
}

#[test]
fn special_file_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(tmp.path().join("sock")).unwrap();
    let err = build_tree(tmp.path()).unwrap_err();
    assert!(
        matches!(err, BuildError::SpecialFile { ref path } if path == "sock"),
        "{err}"
    );
}

#[test]
fn non_utf8_name_refused() {
    use std::os::unix::ffi::OsStrExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"bad\xffname");
    fs::write(tmp.path().join(name), b"x").unwrap();
    let err = build_tree(tmp.path()).unwrap_err();
    assert!(matches!(err, BuildError::NotUtf8 { .. }), "{err}");
}

#[test]
fn backslash_name_refused_in_tree() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("win\\path"), b"x").unwrap();
    let err = build_tree(tmp.path()).unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::Path {
                rule: PathRule::Backslash,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn not_a_directory_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(
        build_tree(&file),
        Err(BuildError::NotADirectory(_))
    ));
    assert!(matches!(
        build_tree(&tmp.path().join("missing")),
        Err(BuildError::Io { .. })
    ));
}

#[test]
fn content_checks() {
    // size disagrees with chunks
    let mut m = base();
    if let EntryKind::File { size, .. } = &mut m.entries[0].kind {
        *size += 1;
    }
    assert!(matches!(refused(&m), InvalidManifest::SizeMismatch { .. }));
    // chunk index out of range
    let mut m = base();
    if let EntryKind::File { chunks, .. } = &mut m.entries[0].kind {
        chunks[0] = 99;
    }
    assert!(matches!(refused(&m), InvalidManifest::ChunkIndex { .. }));
    // a chunk listed twice
    let mut m = base();
    let extra = m.chunks[0];
    m.chunks.push(extra);
    assert!(matches!(
        refused(&m),
        InvalidManifest::DuplicateChunk { .. }
    ));
    // mode bits beyond permissions
    let mut m = base();
    m.entries[0].mode = 0o100644;
    assert!(matches!(refused(&m), InvalidManifest::Mode { .. }));
    // bad product name
    let mut m = base();
    m.product = "a b".into();
    assert!(matches!(refused(&m), InvalidManifest::Name { .. }));
}

#[test]
fn link_chain_escape_refused_in_manifest() {
    // The probe: `d/s -> ..` is harmless alone, and so is the text of
    // `deep`, but followed through `d/s` it climbs out to /etc/passwd.
    let m = with_entry(
        with_entry(with_entry(base(), dir("d")), link("d/s", "..")),
        link("deep", "d/s/d/s/d/s/d/s/../../../../../etc/passwd"),
    );
    assert!(matches!(
        refused(&m),
        InvalidManifest::LinkEscapes { ref path, .. } if path == "deep"
    ));
    // The same links with a chain that stays inside are fine.
    let m = with_entry(
        with_entry(with_entry(base(), dir("d")), link("d/s", "..")),
        link("deep", "d/s/d/s/a.pak"),
    );
    m.validate().unwrap();
    // Loops are refused rather than followed forever.
    let m = with_entry(with_entry(base(), link("x", "y")), link("y", "x"));
    assert!(matches!(refused(&m), InvalidManifest::LinkEscapes { .. }));
}

#[test]
fn link_chain_escape_refused_in_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("build");
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(root.join("game.bin"), b"x").unwrap();
    std::os::unix::fs::symlink("..", root.join("d/s")).unwrap();
    std::os::unix::fs::symlink("d/s/d/s/d/s/../../../etc/passwd", root.join("deep")).unwrap();
    let err = build_tree(&root).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
}

/// Components random link targets are made of: names in the tree and steps.
const PARTS: &[&str] = &["..", ".", "d", "e", "s", "t", "u", "v", "game.bin"];
/// Where the random links live (their parents are the tree's directories).
const LINKS: &[&str] = &["d/s", "d/e/t", "u", "d/v"];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 96, ..Default::default() })]

    /// The manifest's rule agrees with the kernel: whenever a link of a
    /// published tree resolves (std::fs::canonicalize, which follows every
    /// link) to somewhere outside the tree, publishing refuses the tree; and
    /// whatever publishing accepts resolves inside.
    #[test]
    fn accepted_links_resolve_inside_the_tree_on_a_real_file_system(
        targets in proptest::collection::vec(
            proptest::collection::vec(proptest::sample::select(PARTS), 1..7),
            LINKS.len(),
        )
    ) {
        let tmp = tempfile::tempdir().unwrap();
        // The tree sits two levels down, so a link that escapes lands on
        // directories that exist and canonicalize can see it.
        let root = tmp.path().join("x/y/build");
        fs::create_dir_all(root.join("d/e")).unwrap();
        fs::write(root.join("game.bin"), b"x").unwrap();
        for (link, parts) in LINKS.iter().zip(&targets) {
            std::os::unix::fs::symlink(parts.join("/"), root.join(link)).unwrap();
        }
        let root = root.canonicalize().unwrap();
        let outside: Vec<&str> = LINKS
            .iter()
            .copied()
            .filter(|l| {
                root.join(l)
                    .canonicalize()
                    .is_ok_and(|real| !real.starts_with(&root))
            })
            .collect();
        let built = build_tree(&root);
        if !outside.is_empty() {
            proptest::prop_assert!(built.is_err(), "links {outside:?} escape but the tree was accepted: {targets:?}");
        }
        if let Ok(m) = built {
            // and the accepted manifest passes validation on its own
            m.validate().unwrap();
        }
    }
}
