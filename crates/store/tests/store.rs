//! The store end to end on a real directory: stage, resume after a drop,
//! atomic swap, reuse on update, damage found by `check`, and a full disk
//! that leaves the old build intact.

use shoal_manifest::{BuildOptions, ChunkParams, ChunkSink, Manifest, SignedManifest, verify};
use shoal_store::{Install, Problem, Record, Staging};
use shoal_types::{Hash, Rng, SecretKey};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

#[derive(Default)]
struct Chunks(Mutex<HashMap<Hash, Vec<u8>>>);

impl ChunkSink for Chunks {
    fn put(&self, hash: &Hash, data: &[u8]) -> std::io::Result<()> {
        self.0
            .lock()
            .expect("not poisoned")
            .insert(*hash, data.to_vec());
        Ok(())
    }
}

struct Release {
    manifest: Manifest,
    signed: SignedManifest,
    chunks: HashMap<Hash, Vec<u8>>,
    record: Record,
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// A small game tree; `patch` changes one file and adds another.
fn write_tree(dir: &Path, patch: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("data/maps"))?;
    std::fs::write(dir.join("data/base.pak"), random(3 << 20, 1))?;
    let mut level = random(2 << 20, 2);
    if patch {
        level[1 << 20..(1 << 20) + 4096].copy_from_slice(&random(4096, 9));
    }
    std::fs::write(dir.join("data/maps/level.pak"), level)?;
    std::fs::write(dir.join("readme.txt"), b"hello")?;
    std::fs::write(dir.join("empty"), b"")?;
    std::os::unix::fs::symlink("data/base.pak", dir.join("base-link"))?;
    if patch {
        std::fs::write(dir.join("data/new.pak"), random(600 << 10, 3))?;
    }
    Ok(())
}

fn release(dir: &Path, version: u64, patch: bool) -> anyhow::Result<Release> {
    write_tree(dir, patch)?;
    let sink = Chunks::default();
    let options = BuildOptions {
        product: "game".into(),
        channel: "stable".into(),
        version: format!("1.{version}"),
        chunking: ChunkParams {
            min: 64 << 10,
            avg: 256 << 10,
            max: 1 << 20,
        },
        threads: 2,
    };
    let manifest = shoal_manifest::build(dir, &options, &sink, &Default::default())?;
    let signed = SignedManifest::sign(&manifest, &SecretKey::from_seed([7; 32]));
    let record = Record {
        release_id: Hash::of(format!("release {version}").as_bytes()),
        product: "game".into(),
        channel: "stable".into(),
        version,
        label: options.version.clone(),
        release: String::new(),
        size: manifest.total_size(),
        installed_at: 0,
    };
    Ok(Release {
        manifest,
        signed,
        chunks: sink.0.into_inner().expect("not poisoned"),
        record,
    })
}

fn put_all(staging: &Staging, r: &Release, limit: usize) -> anyhow::Result<usize> {
    let have = staging.have();
    let mut n = 0;
    for (i, c) in r.manifest.chunks.iter().enumerate() {
        if n == limit {
            break;
        }
        if have.get(i as u32) {
            continue;
        }
        staging.put(verify(&r.manifest, i as u32, &r.chunks[&c.hash])?)?;
        n += 1;
    }
    Ok(n)
}

fn same_tree(a: &Path, b: &Path) -> anyhow::Result<()> {
    for rel in [
        "data/base.pak",
        "data/maps/level.pak",
        "readme.txt",
        "empty",
    ] {
        let (x, y) = (std::fs::read(a.join(rel))?, std::fs::read(b.join(rel))?);
        let first_difference = x.iter().zip(&y).position(|(p, q)| p != q);
        assert!(
            x.len() == y.len() && first_difference.is_none(),
            "{rel}: {} against {} bytes, first difference at {first_difference:?}",
            x.len(),
            y.len()
        );
    }
    assert_eq!(
        std::fs::read_link(b.join("base-link"))?,
        Path::new("data/base.pak")
    );
    Ok(())
}

#[test]
fn install_resume_update_and_check() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let v1 = release(&tmp.path().join("build1"), 1, false)?;
    let root = tmp.path().join("install");
    let install = Install::open(&root)?;
    assert!(install.installed()?.is_none());

    // A first run stores a few chunks and is "killed" (dropped, unsynced).
    let staging = install.stage(v1.record.clone(), &v1.signed, v1.manifest.clone())?;
    assert_eq!(put_all(&staging, &v1, 3)?, 3);
    drop(staging);
    drop(install);

    // The second run finds them without fetching them again.
    let install = Install::open(&root)?;
    let staging = install.stage(v1.record.clone(), &v1.signed, v1.manifest.clone())?;
    assert_eq!(staging.have().count(), 3);
    assert!(staging.resumed_bytes() > 0);
    let rest = put_all(&staging, &v1, usize::MAX)?;
    assert_eq!(rest, v1.manifest.chunks.len() - 3);
    let build = staging.commit()?;
    assert_eq!(build.record, v1.record);
    same_tree(&tmp.path().join("build1"), &install.current_path())?;
    assert!(build.check(|_| {}).is_empty());

    // An update reuses every chunk the old build has.
    let v2 = release(&tmp.path().join("build2"), 2, true)?;
    let staging = install.stage(v2.record.clone(), &v2.signed, v2.manifest.clone())?;
    let installed = install.installed()?;
    let reused = staging.reuse(installed.as_ref())?;
    let fresh: u64 = v2
        .manifest
        .chunks
        .iter()
        .filter(|c| !v1.manifest.chunks.iter().any(|o| o.hash == c.hash))
        .map(|c| u64::from(c.len))
        .sum();
    assert_eq!(staging.missing_bytes(), fresh);
    assert_eq!(reused + fresh, v2.manifest.unique_size());
    put_all(&staging, &v2, usize::MAX)?;
    let build = staging.commit()?;
    same_tree(&tmp.path().join("build2"), &install.current_path())?;
    assert_eq!(build.record.version, 2);
    // The old build is gone.
    let builds: Vec<_> = std::fs::read_dir(root.join(".shoal/builds"))?.collect();
    assert_eq!(builds.len(), 3, "the build dir, its json and its manifest");

    // Damage: one flipped byte, one truncated file, one deleted file.
    let cur = install.current_path();
    let mut pak = std::fs::read(cur.join("data/base.pak"))?;
    pak[100] ^= 1;
    std::fs::write(cur.join("data/base.pak"), &pak)?;
    std::fs::write(cur.join("readme.txt"), b"hell")?;
    std::fs::remove_file(cur.join("data/new.pak"))?;
    let damage = build.check(|_| {});
    let by_path: HashMap<_, _> = damage.iter().map(|d| (d.path.as_str(), d)).collect();
    assert_eq!(by_path.len(), 3, "{damage:?}");
    assert_eq!(by_path["data/base.pak"].problem, Problem::BadChunks);
    assert_eq!(by_path["data/base.pak"].chunks.len(), 1);
    assert!(matches!(
        by_path["readme.txt"].problem,
        Problem::WrongSize { .. }
    ));
    assert_eq!(by_path["data/new.pak"].problem, Problem::Missing);

    // Repair writes only the damaged chunks back.
    build.prepare_repair()?;
    for d in &damage {
        for &c in &d.chunks {
            let hash = v2.manifest.chunks[c as usize].hash;
            build.repair_chunk(verify(&v2.manifest, c, &v2.chunks[&hash])?)?;
        }
    }
    build.finish_repair()?;
    assert!(build.check(|_| {}).is_empty());
    same_tree(&tmp.path().join("build2"), &cur)?;
    Ok(())
}

#[test]
fn full_disk_leaves_the_old_build_intact() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let v1 = release(&tmp.path().join("build1"), 1, false)?;
    let v2 = release(&tmp.path().join("build2"), 2, true)?;
    let install = Install::open(&tmp.path().join("install"))?;
    let staging = install.stage(v1.record.clone(), &v1.signed, v1.manifest.clone())?;
    put_all(&staging, &v1, usize::MAX)?;
    staging.commit()?;

    install.fail_writes_after(300 << 10);
    let staging = install.stage(v2.record.clone(), &v2.signed, v2.manifest.clone())?;
    let err = put_all(&staging, &v2, usize::MAX).expect_err("the disk fills up");
    let io = err.downcast_ref::<std::io::Error>().expect("an IO error");
    assert!(shoal_store::is_disk_full(io), "{io}");
    drop(staging);

    let build = install.installed()?.expect("still installed");
    assert_eq!(build.record.version, 1);
    assert!(build.check(|_| {}).is_empty());
    same_tree(&tmp.path().join("build1"), &install.current_path())?;
    Ok(())
}

#[test]
fn accepted_versions_only_rise() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let install = Install::open(tmp.path())?;
    assert_eq!(install.highest_accepted("game", "stable")?, None);
    install.accept("game", "stable", 5)?;
    install.accept("game", "stable", 3)?;
    assert_eq!(install.highest_accepted("game", "stable")?, Some(5));
    assert_eq!(install.highest_accepted("game", "beta")?, None);
    drop(install);
    let install = Install::open(tmp.path())?;
    assert_eq!(install.highest_accepted("game", "stable")?, Some(5));
    Ok(())
}

#[test]
fn a_foreign_current_is_refused() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    std::fs::create_dir(tmp.path().join("current"))?;
    let err = Install::open(tmp.path()).expect_err("not ours");
    assert!(
        err.to_string().contains("not a Shoal install link"),
        "{err}"
    );
    Ok(())
}

/// Killed after the finished tree moved to builds/ but before the swap: the
/// next run finds every chunk there and swaps without fetching anything.
#[test]
fn a_build_finished_but_not_swapped_is_recovered() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let v1 = release(&tmp.path().join("build1"), 1, false)?;
    let root = tmp.path().join("install");
    let install = Install::open(&root)?;
    let staging = install.stage(v1.record.clone(), &v1.signed, v1.manifest.clone())?;
    put_all(&staging, &v1, usize::MAX)?;
    staging.sync()?;
    drop(staging);
    drop(install);
    let name = v1.record.name();
    std::fs::rename(
        root.join(".shoal/staging").join(&name),
        root.join(".shoal/builds").join(&name),
    )?;

    let install = Install::open(&root)?;
    assert!(install.installed()?.is_none(), "not swapped in yet");
    let staging = install.stage(v1.record.clone(), &v1.signed, v1.manifest.clone())?;
    assert_eq!(staging.missing_bytes(), 0);
    staging.commit()?;
    same_tree(&tmp.path().join("build1"), &install.current_path())?;
    Ok(())
}
