//! Preload before launch, unlock at launch, end to end on loopback: a real
//! tracker, seed and launchers (HTTP, QUIC, sled, files), an encrypted
//! release preloaded through the swarm and opened at its unlock.

use shoal_client::config::Settings;
use shoal_client::launcher::{self, Outcome, Request};
use shoal_demo::lab::{Lab, Options, sample};
use shoal_manifest::seal::ContentKey;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// Text that is in the build and must be nowhere on disk before the unlock.
const MARKER: &[u8] = b"THE-ENDING: the lighthouse keeper was the captain all along";

async fn lab(root: &Path, seed_upload: Option<u64>) -> anyhow::Result<Lab> {
    Lab::start(
        root,
        Options {
            seed_upload,
            chunking: shoal_manifest::ChunkParams {
                min: 64 << 10,
                avg: 256 << 10,
                max: 1 << 20,
            },
            announce_interval_secs: 1,
            ..Options::default()
        },
    )
    .await
}

fn build(dir: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    sample::build(dir, size, seed)?;
    std::fs::write(dir.join("story.txt"), MARKER.repeat(64))?;
    Ok(())
}

fn request(lab: &Lab, dir: PathBuf, seed_for: Duration) -> Request {
    Request {
        product: lab.options.product.clone(),
        channel: None,
        dir,
        seed_for,
        update: false,
        preload: false,
        until_unlock: false,
        seeding: Default::default(),
    }
}

async fn install(settings: &Settings, req: &Request) -> anyhow::Result<Outcome> {
    launcher::install(settings, req, None, std::future::pending()).await
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A run that opened a complete preload: nothing fetched.
fn check_unlocked(o: &Outcome, payload: u64) -> anyhow::Result<()> {
    anyhow::ensure!(o.unlock_secs.is_some() && !o.preloaded, "{o:#?}");
    anyhow::ensure!(
        o.playable_secs
            .is_some_and(|p| p >= o.unlock_secs.unwrap_or_default()),
        "{o:#?}"
    );
    anyhow::ensure!(
        o.from_peers + o.from_seeds == 0,
        "zero chunk bytes after unlock: {o:#?}"
    );
    anyhow::ensure!(o.resumed_bytes == payload, "{o:#?}");
    Ok(())
}

fn assert_installed(dir: &Path, build: &Path) -> anyhow::Result<()> {
    sample::same(build, &dir.join("current"))?
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
}

/// Three players preload an encrypted release at once through the swarm
/// (peers verify and relay ciphertext); nothing on disk reads as the game;
/// at the unlock each opens its preload without fetching a byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn players_preload_through_the_swarm_and_open_at_unlock_without_fetching()
-> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // The seed is capped so that peers matter.
    let lab = lab(tmp.path(), Some(8 * MIB)).await?;
    let src = tmp.path().join("build");
    build(&src, 16 * MIB, 1)?;
    let key = ContentKey::generate();
    let release = lab.publish_sealed(&src, "1.0", &key).await?;
    let unlock_at = now() + 3600;
    lab.set_content_key(&release.release_id, &key, Some(unlock_at))
        .await?;

    let mut players = Vec::new();
    for i in 0..3 {
        players.push(lab.player(&format!("player{i}")).await?.0);
    }
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| tmp.path().join(format!("install{i}")))
        .collect();
    // `shoal install` of a locked release preloads; each seeds a while.
    let tasks: Vec<_> = players
        .iter()
        .zip(&dirs)
        .map(|(settings, dir)| {
            let (settings, req) = (
                settings.clone(),
                request(&lab, dir.clone(), Duration::from_secs(3)),
            );
            tokio::spawn(async move { install(&settings, &req).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await??);
    }
    let payload = release.manifest.unique_size();
    for o in &outcomes {
        assert!(o.encrypted && o.preloaded, "{o:#?}");
        assert_eq!(o.unlocks_at, Some(unlock_at));
        assert!(o.unlock_secs.is_none());
    }
    let from_peers: u64 = outcomes.iter().map(|o| o.from_peers).sum();
    let from_seeds: u64 = outcomes.iter().map(|o| o.from_seeds).sum();
    eprintln!(
        "preload: {from_peers} B from peers, {from_seeds} B from the seed, payload {payload}"
    );
    assert_eq!(from_peers + from_seeds, 3 * payload, "{outcomes:#?}");
    assert!(from_peers > 0, "peers relayed ciphertext: {outcomes:#?}");
    for dir in &dirs {
        assert!(
            launcher::status(dir)?.installed.is_none(),
            "nothing is installed before the unlock"
        );
        assert!(
            !shoal_tests::holds_anywhere(dir, &MARKER[..32]),
            "plaintext of the build is on disk before the unlock"
        );
    }

    // The launch minute: each opens its preload, fetching nothing. The
    // first keeps seeding, for a player who comes later.
    lab.unlock(&release.release_id, None).await?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let first = {
        let (settings, req) = (
            players[0].clone(),
            request(&lab, dirs[0].clone(), Duration::from_secs(3600)),
        );
        tokio::spawn(async move {
            launcher::install(&settings, &req, None, async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await
        })
    };
    for (settings, dir) in players.iter().zip(&dirs).skip(1) {
        let o = install(settings, &request(&lab, dir.clone(), Duration::ZERO)).await?;
        check_unlocked(&o, payload)?;
        assert_installed(dir, &src)?;
        assert!(launcher::verify(settings, dir).await?.damage.is_empty());
        assert!(
            std::fs::read_dir(dir.join(".shoal/staging"))?
                .next()
                .is_none(),
            "the spent ciphertext is removed once the game is playable"
        );
    }
    for _ in 0..600 {
        if launcher::status(&dirs[0])?.installed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_installed(&dirs[0], &src)?;

    // A late player, after the unlock, takes the release from the first
    // (who serves the published ciphertext, re-sealed from its files).
    let late = lab.player("late").await?.0;
    let dir = tmp.path().join("install-late");
    let o = install(&late, &request(&lab, dir.clone(), Duration::ZERO)).await?;
    eprintln!(
        "late player: {} B from peers, {} B from the seed",
        o.from_peers, o.from_seeds
    );
    assert!(o.unlock_secs.is_some(), "{o:#?}");
    assert_eq!(o.from_peers + o.from_seeds, payload, "{o:#?}");
    assert!(
        o.from_peers > 0,
        "re-sealed chunks came from the player: {o:#?}"
    );
    assert_eq!(o.banned_peers, 0, "every re-sealed chunk verified: {o:#?}");
    assert_installed(&dir, &src)?;
    stop_tx.send(true)?;
    let o = first.await??;
    check_unlocked(&o, payload)?;
    assert!(o.uploaded > 0, "{o:#?}");

    // An encrypted patch: the preload fetches only the chunks whose
    // plaintext the installed build lacks (dedup within the release line,
    // under a new key), and its unlock takes the rest from the installed
    // build.
    let v2_src = tmp.path().join("build-v2");
    sample::patch(&src, &v2_src, 2)?;
    std::fs::write(v2_src.join("story.txt"), MARKER.repeat(64))?;
    let key2 = ContentKey::generate();
    let v2 = lab.publish_sealed(&v2_src, "2.0", &key2).await?;
    lab.set_content_key(&v2.release_id, &key2, Some(now() + 3600))
        .await?;
    let old: std::collections::HashSet<_> = release
        .manifest
        .sealing
        .as_ref()
        .map(|s| s.plain.iter().copied().collect())
        .unwrap_or_default();
    let sealing = v2.manifest.sealing.as_ref().expect("sealed");
    let fresh: u64 = v2
        .manifest
        .chunks
        .iter()
        .zip(&sealing.plain)
        .filter(|(_, p)| !old.contains(p))
        .map(|(c, _)| u64::from(c.len))
        .sum();
    assert!(
        fresh < v2.manifest.unique_size() / 2,
        "a patch, not a new build"
    );
    // `shoal update`: v1 is up to date, so the open preload of v2 runs.
    let o = install(&players[1], &request(&lab, dirs[1].clone(), Duration::ZERO)).await?;
    assert!(o.preloaded, "{o:#?}");
    assert_eq!(o.version, 2, "{o:#?}");
    assert_eq!(o.from_peers + o.from_seeds, fresh, "only the patch: {o:#?}");
    assert_eq!(o.reused_bytes + fresh, v2.manifest.unique_size(), "{o:#?}");
    assert_installed(&dirs[1], &src)?;
    // A new player meanwhile installs v1, which plays, and hears of v2.
    let newcomer = lab.player("newcomer").await?.0;
    let dir = tmp.path().join("install-newcomer");
    let o = install(&newcomer, &request(&lab, dir.clone(), Duration::ZERO)).await?;
    assert!(!o.preloaded && o.version == 1, "{o:#?}");
    let upcoming = o.upcoming.as_ref().expect("v2 is coming");
    assert!(upcoming.version == 2 && upcoming.preload_open, "{o:#?}");
    assert_installed(&dir, &src)?;
    lab.unlock(&v2.release_id, None).await?;
    let o = install(&players[1], &request(&lab, dirs[1].clone(), Duration::ZERO)).await?;
    assert!(o.unlock_secs.is_some(), "{o:#?}");
    assert_eq!(o.from_peers + o.from_seeds, 0, "{o:#?}");
    assert_installed(&dirs[1], &v2_src)?;
    lab.stop().await
}

/// A launcher killed with SIGKILL while it opens its preload: the same
/// command again completes the unlock without downloading anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_launcher_killed_during_unlock_completes_it_without_downloading() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lab = lab(tmp.path(), None).await?;
    let src = tmp.path().join("build");
    build(&src, 96 * MIB, 2)?;
    let key = ContentKey::generate();
    let release = lab.publish_sealed(&src, "1.0", &key).await?;
    lab.set_content_key(&release.release_id, &key, None).await?;
    let (settings, _) = lab.player("killed").await?;
    let dir = tmp.path().join("install");
    let o = install(&settings, &request(&lab, dir.clone(), Duration::ZERO)).await?;
    assert!(o.preloaded, "{o:#?}");
    lab.unlock(&release.release_id, None).await?;

    let config_dir = tmp.path().join("players/killed/config");
    let mut child = std::process::Command::new(shoal_tests::shoal_bin()?)
        .args(["install", &lab.options.product, "--no-seed", "--dir"])
        .arg(&dir)
        .env("SHOAL_CONFIG_DIR", &config_dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    // Kill it once the opened tree holds some of the build.
    let opening = || -> u64 {
        std::fs::read_dir(dir.join(".shoal/staging"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".open"))
            .map(|e| shoal_tests::du(&e.path()))
            .sum()
    };
    let mut waited = 0;
    while opening() < 4 * MIB && waited < 60_000 {
        std::thread::sleep(Duration::from_millis(1));
        waited += 1;
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    assert!(waited < 60_000, "the unlock never started");
    assert!(
        launcher::status(&dir)?.installed.is_none(),
        "killed before the swap"
    );

    let o = install(&settings, &request(&lab, dir.clone(), Duration::ZERO)).await?;
    assert!(o.unlock_secs.is_some(), "{o:#?}");
    assert_eq!(o.from_peers + o.from_seeds, 0, "no download: {o:#?}");
    assert_installed(&dir, &src)?;
    lab.stop().await
}

/// `shoal install --until-unlock` on launch eve: the launcher preloads,
/// serves the ciphertext to other preloaders until the unlock (by the
/// tracker's clock, which it is told as seconds from its answer), then
/// opens its preload at once without fetching.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn install_until_unlock_preloads_serves_and_opens_at_the_unlock() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lab = lab(tmp.path(), None).await?;
    let src = tmp.path().join("build");
    build(&src, 8 * MIB, 3)?;
    let key = ContentKey::generate();
    let release = lab.publish_sealed(&src, "1.0", &key).await?;
    let payload = release.manifest.unique_size();
    let unlock_at = now() + 10;
    lab.set_content_key(&release.release_id, &key, Some(unlock_at))
        .await?;
    let (eve, _) = lab.player("eve").await?;
    let dir = tmp.path().join("install-eve");
    let mut req = request(&lab, dir.clone(), Duration::ZERO);
    req.until_unlock = true;
    let waiting = tokio::spawn(async move { install(&eve, &req).await });
    // While it waits, it serves the ciphertext to a later preloader.
    for _ in 0..200 {
        if launcher::status(&dir).is_ok_and(|s| s.seeding.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        launcher::status(&dir)?.seeding.is_some(),
        "preloaded and serving"
    );
    let (late, _) = lab.player("late").await?;
    let mut req = request(&lab, tmp.path().join("install-late"), Duration::ZERO);
    req.preload = true;
    let o = install(&late, &req).await?;
    assert!(o.preloaded, "{o:#?}");
    assert!(o.from_peers > 0, "the waiting player served it: {o:#?}");

    let o = waiting.await??;
    let done = now();
    check_unlocked(&o, payload)?;
    assert!(
        done >= unlock_at,
        "opened at {done}, before the unlock at {unlock_at}"
    );
    assert!(
        done <= unlock_at + 15,
        "opened at {done}, long after the unlock at {unlock_at}"
    );
    assert_installed(&tmp.path().join("install-eve"), &src)?;
    lab.stop().await
}
