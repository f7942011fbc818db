//! The store end to end on a real directory: stage, resume after a drop,
//! atomic swap, reuse on update, damage found by `check`, and a full disk
//! that leaves the old build intact.

use shoal_manifest::seal::ContentKey;
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
    release_with(dir, version, patch, None)
}

/// [`release`], encrypted under `key` when given.
fn release_with(
    dir: &Path,
    version: u64,
    patch: bool,
    key: Option<&ContentKey>,
) -> anyhow::Result<Release> {
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
    let manifest = match key {
        Some(key) => shoal_manifest::build_sealed(dir, &options, key, &sink, &Default::default())?,
        None => shoal_manifest::build(dir, &options, &sink, &Default::default())?,
    };
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

/// Every file below `dir`, read whole.
fn all_bytes(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => out.extend(all_bytes(&p)),
            Ok(m) if m.is_file() => out.push(std::fs::read(&p).unwrap_or_default()),
            _ => {}
        }
    }
    out
}

fn holds(files: &[Vec<u8>], needle: &[u8]) -> bool {
    files
        .iter()
        .any(|f| f.windows(needle.len()).any(|w| w == needle))
}

#[test]
fn an_encrypted_build_stages_as_ciphertext_and_opens_only_with_its_key() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let key = ContentKey::generate();
    let v1 = release(&tmp.path().join("build1"), 1, false)?;
    let v2 = release_with(&tmp.path().join("build2"), 2, true, Some(&key))?;
    let root = tmp.path().join("install");
    let install = Install::open(&root)?;
    install
        .stage(v1.record.clone(), &v1.signed, v1.manifest.clone())
        .and_then(|s| {
            put_all(&s, &v1, usize::MAX)
                .map_err(|e| shoal_store::StoreError::Corrupt(e.to_string()))?;
            s.commit()
        })?;

    // Preload v2: its ciphertext, staged beside the playable v1.
    let staging = install.stage(v2.record.clone(), &v2.signed, v2.manifest.clone())?;
    assert!(staging.is_sealed());
    assert_eq!(staging.manifest(), &v2.manifest.sealed_view());
    // A tampered ciphertext chunk never verifies, so it is never stored.
    let c0 = &v2.manifest.chunks[0];
    let mut bent = v2.chunks[&c0.hash].clone();
    bent[10] ^= 1;
    assert!(verify(staging.manifest(), 0, &bent).is_err());
    put_all(&staging, &v2, usize::MAX)?;
    assert!(staging.is_complete());
    assert!(
        staging.commit().is_err(),
        "an encrypted staging waits for its unlock"
    );
    // Nothing staged reads as the game: no plaintext of the new file.
    let new_pak = std::fs::read(tmp.path().join("build2/data/new.pak"))?;
    let staged = all_bytes(&root.join(".shoal/staging"));
    assert!(!staged.is_empty());
    for probe in [&new_pak[..64], &new_pak[300_000..300_064]] {
        assert!(!holds(&staged, probe), "plaintext found in the staging");
    }
    assert!(
        std::fs::read_dir(root.join(".shoal/builds"))?
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".key"))
    );

    // The wrong key: refused before anything moves; v1 still plays.
    let wrong = staging.unlock(&ContentKey::generate(), |_| {}).unwrap_err();
    assert!(
        matches!(wrong, shoal_store::StoreError::Unlock(_)),
        "{wrong}"
    );
    assert!(
        wrong.to_string().contains("nothing was swapped in"),
        "{wrong}"
    );
    same_tree(&tmp.path().join("build1"), &install.current_path())?;

    // A disk that fills halfway through the unlock: v1 still plays, and
    // the next run opens the staging again without fetching anything.
    install.fail_writes_after(1 << 20);
    assert!(staging.unlock(&key, |_| {}).unwrap_err().is_disk_full());
    same_tree(&tmp.path().join("build1"), &install.current_path())?;
    install.fail_writes_after(u64::MAX);
    drop(staging);
    drop(install);
    let install = Install::open(&root)?;
    let staging = install.stage(v2.record.clone(), &v2.signed, v2.manifest.clone())?;
    assert!(
        staging.is_complete(),
        "the preload survives a failed unlock"
    );
    assert_eq!(staging.missing_bytes(), 0);
    let written = std::sync::atomic::AtomicU64::new(0);
    let build = staging.unlock(&key, |n| {
        written.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    })?;
    assert_eq!(
        written.into_inner(),
        v2.manifest.opened_view().unique_size()
    );
    same_tree(&tmp.path().join("build2"), &install.current_path())?;
    assert!(build.check(|_| {}).is_empty());
    assert_eq!(build.manifest(), &v2.manifest.opened_view());
    // The spent ciphertext stays until the launcher, the game playable,
    // discards it.
    let spent = root.join(".shoal/staging").join(v2.record.name());
    assert!(spent.exists());
    install.discard_spent()?;
    assert!(!spent.exists());

    // Unlocked, it trades the published ciphertext: re-sealed chunks hash
    // as the manifest lists them, and a damaged file repairs from them.
    assert_eq!(build.wire_manifest(), &v2.manifest.sealed_view());
    for (i, c) in v2.manifest.chunks.iter().enumerate() {
        assert_eq!(
            build.wire_chunk(i as u32).as_deref(),
            Some(&v2.chunks[&c.hash][..])
        );
    }
    let cur = install.current_path();
    std::fs::write(cur.join("data/new.pak"), b"broken")?;
    let damage = build.check(|_| {});
    assert_eq!(damage.len(), 1);
    build.prepare_repair()?;
    for &c in &damage[0].chunks {
        let hash = v2.manifest.chunks[c as usize].hash;
        build.repair_wire_chunk(verify(build.wire_manifest(), c, &v2.chunks[&hash])?)?;
    }
    build.finish_repair()?;
    assert!(build.check(|_| {}).is_empty());
    // And after a restart, the installed build is found with its key.
    drop(build);
    let again = install.installed()?.expect("installed");
    assert_eq!(
        again.wire_chunk(0).as_deref(),
        Some(&v2.chunks[&c0.hash][..])
    );
    // A key file that is not this release's is refused, not used to
    // re-seal chunks no peer would accept.
    drop(again);
    let key_file = root
        .join(".shoal/builds")
        .join(format!("{}.key", v2.record.name()));
    std::fs::write(&key_file, ContentKey::generate().expose())?;
    let err = install.installed().unwrap_err().to_string();
    assert!(err.contains("not the content key"), "{err}");
    Ok(())
}

#[test]
fn a_staged_chunk_damaged_on_disk_is_fetched_again_not_opened() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let key = ContentKey::generate();
    let v1 = release_with(&tmp.path().join("build1"), 1, false, Some(&key))?;
    let root = tmp.path().join("install");
    let install = Install::open(&root)?;
    let staging = install.stage(v1.record.clone(), &v1.signed, v1.manifest.clone())?;
    put_all(&staging, &v1, usize::MAX)?;
    staging.sync()?;
    // The disk flips a bit in the staged ciphertext after it was verified.
    let file = root
        .join(".shoal/staging")
        .join(v1.record.name())
        .join("data/base.pak");
    let mut bytes = std::fs::read(&file)?;
    bytes[100] ^= 0x40;
    std::fs::write(&file, &bytes)?;

    let err = staging.unlock(&key, |_| {}).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("damaged") && text.contains("nothing was swapped in"),
        "{text}"
    );
    assert!(install.installed()?.is_none(), "nothing was swapped in");
    // The damaged chunk is no longer counted: the next run fetches it (and
    // only it), then opens.
    drop(staging);
    let staging = install.stage(v1.record.clone(), &v1.signed, v1.manifest.clone())?;
    assert_eq!(put_all(&staging, &v1, usize::MAX)?, 1);
    staging.unlock(&key, |_| {})?;
    same_tree(&tmp.path().join("build1"), &install.current_path())?;
    // Killed before discarding the spent ciphertext: the next open does.
    drop(staging);
    drop(install);
    let spent = root.join(".shoal/staging").join(v1.record.name());
    assert!(spent.exists());
    let install = Install::open(&root)?;
    assert!(!spent.exists());
    same_tree(&tmp.path().join("build1"), &install.current_path())?;
    Ok(())
}
