//! The launcher end to end: a real tracker, seed and launchers on loopback
//! (HTTP, QUIC, sled and files on disk), driven through the library the
//! `shoal` binary runs.

use shoal_client::config::Settings;
use shoal_client::launcher::{self, Outcome, Request};
use shoal_demo::lab::{Lab, Options, Published, sample};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn small_chunks() -> shoal_manifest::ChunkParams {
    shoal_manifest::ChunkParams {
        min: 64 << 10,
        avg: 256 << 10,
        max: 1 << 20,
    }
}

async fn lab(root: &Path, seed_upload: Option<u64>) -> anyhow::Result<Lab> {
    Lab::start(
        root,
        Options {
            seed_upload,
            chunking: small_chunks(),
            announce_interval_secs: 1,
            ..Options::default()
        },
    )
    .await
}

fn request(lab: &Lab, dir: PathBuf, update: bool, seed_for: Duration) -> Request {
    Request {
        product: lab.options.product.clone(),
        channel: None,
        dir,
        seed_for,
        update,
        preload: false,
        until_unlock: false,
        seeding: Default::default(),
    }
}

async fn install(
    settings: &Settings,
    req: &Request,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Outcome> {
    let mut stop = stop;
    launcher::install(settings, req, None, async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await
}

fn assert_installed(dir: &Path, build: &Path) -> anyhow::Result<()> {
    sample::same(build, &dir.join("current"))?
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
}

/// Six players install at once; then v2 comes out and they all update.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_players_install_then_update_through_the_swarm() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // The seed is capped so that peers matter.
    let lab = lab(tmp.path(), Some(8 * MIB)).await?;
    let v1_dir = tmp.path().join("build-v1");
    sample::build(&v1_dir, 24 * MIB, 1)?;
    let v1 = lab.publish(&v1_dir, "1.0").await?;

    let mut players = Vec::new();
    for i in 0..6 {
        let mut settings = lab.player(&format!("player{i}")).await?.0;
        // Half the players cap their upload: their nodes queue requests and
        // serve the neediest requester first.
        if i % 2 == 0 {
            settings.max_upload = Some(4 * MIB);
        }
        players.push(settings);
    }
    // Everyone seeds until everyone is done, like players who keep the launcher open.
    let run = |update: bool, stop: &tokio::sync::watch::Receiver<bool>| {
        start_all(&lab, &players, tmp.path(), update, stop)
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = run(false, &stop_rx);
    let done = wait_all_installed(&tmp, 6, &v1).await;
    stop_tx.send(true)?;
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await??);
    }
    done?;
    for i in 0..6 {
        assert_installed(&tmp.path().join(format!("install{i}")), &v1_dir)?;
    }
    let from_peers: u64 = outcomes.iter().map(|o| o.from_peers).sum();
    let from_seeds: u64 = outcomes.iter().map(|o| o.from_seeds).sum();
    let payload = v1.manifest.unique_size();
    eprintln!("v1: {from_peers} bytes from peers, {from_seeds} from the seed, payload {payload}");
    assert_eq!(from_peers + from_seeds, 6 * payload, "{outcomes:#?}");
    assert!(from_peers > 0, "bytes came from peers too: {outcomes:#?}");
    assert!(
        from_seeds < 3 * payload,
        "the seed sent less than half of all bytes: {from_seeds} of {}",
        6 * payload
    );

    // v2: only chunks v1 lacks are transferred.
    let v2_dir = tmp.path().join("build-v2");
    sample::patch(&v1_dir, &v2_dir, 2)?;
    let v2 = lab.publish(&v2_dir, "2.0").await?;
    let fresh = shoal_manifest::diff(&v1.manifest, &v2.manifest).fetch_bytes;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = run(true, &stop_rx);
    let done = wait_all_installed(&tmp, 6, &v2).await;
    stop_tx.send(true)?;
    for t in tasks {
        let o = t.await??;
        assert_eq!(o.previous_version, Some(v1.version));
        assert_eq!(o.version, v2.version);
        assert_eq!(
            o.from_peers + o.from_seeds,
            fresh,
            "an update fetches exactly the chunks v1 lacks: {o:#?}"
        );
        assert_eq!(o.reused_bytes + fresh, v2.manifest.unique_size());
    }
    done?;
    for i in 0..6 {
        assert_installed(&tmp.path().join(format!("install{i}")), &v2_dir)?;
    }
    lab.stop().await
}

/// Two, three and four players install v1, then update to v2, the seed
/// uncapped (as in `shoal demo`): the update takes from the seed about one
/// copy of the patch, not of the release, and never waits out the seed's
/// super-seeding window (`shoal demo --clients 3 --size 32MiB` once updated
/// in 11 s with the seed sending 2.00x the patch; the default budget
/// counted copies of the whole release, so an idle seed resent the patch).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_swarms_update_with_about_one_copy_of_the_patch_from_the_seed() -> anyhow::Result<()>
{
    for n in 2..=4usize {
        let tmp = tempfile::tempdir()?;
        let lab = lab(tmp.path(), None).await?;
        let v1_dir = tmp.path().join("build-v1");
        sample::build(&v1_dir, 16 * MIB, n as u64)?;
        let v1 = lab.publish(&v1_dir, "1.0").await?;
        let mut players = Vec::new();
        for i in 0..n {
            players.push(lab.player(&format!("player{i}")).await?.0);
        }
        let run = |update: bool, stop: &tokio::sync::watch::Receiver<bool>| {
            start_all(&lab, &players, tmp.path(), update, stop)
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = run(false, &stop_rx);
        let done = wait_all_installed(&tmp, n, &v1).await;
        stop_tx.send(true)?;
        for t in tasks {
            t.await??;
        }
        done?;

        let v2_dir = tmp.path().join("build-v2");
        sample::patch(&v1_dir, &v2_dir, 2)?;
        let v2 = lab.publish(&v2_dir, "2.0").await?;
        let patch = shoal_manifest::diff(&v1.manifest, &v2.manifest).fetch_bytes;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = run(true, &stop_rx);
        let done = wait_all_installed(&tmp, n, &v2).await;
        stop_tx.send(true)?;
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await??);
        }
        done?;
        for i in 0..n {
            assert_installed(&tmp.path().join(format!("install{i}")), &v2_dir)?;
        }
        let from_seeds: u64 = outcomes.iter().map(|o| o.from_seeds).sum();
        eprintln!(
            "{n} players: the seed sent {from_seeds} bytes of a {patch}-byte patch ({:.2}x)",
            from_seeds as f64 / patch as f64
        );
        assert!(
            from_seeds * 10 <= patch * 11,
            "{n} players: the seed sent {from_seeds} bytes for a {patch}-byte patch: {outcomes:#?}"
        );
        for o in &outcomes {
            assert!(
                o.download_secs < 8.0,
                "{n} players: an update waited out the seed's 10 s super-seeding window: {o:#?}"
            );
        }
        lab.stop().await?;
    }
    Ok(())
}

/// A player who arrives after the first one finished (and seeds on) gets
/// the release from that player, not from the seed: the seeding launcher
/// tells newcomers what it holds. Before, nothing did once its download
/// was over, so the newcomer never asked it and the seed sent a second
/// copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_player_arriving_after_the_first_finished_fetches_from_it() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lab = lab(tmp.path(), None).await?;
    let v1_dir = tmp.path().join("build-v1");
    sample::build(&v1_dir, 16 * MIB, 7)?;
    let v1 = lab.publish(&v1_dir, "1.0").await?;
    let first = lab.player("first").await?.0;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let seeding = start_all(
        &lab,
        std::slice::from_ref(&first),
        tmp.path(),
        false,
        &stop_rx,
    );
    wait_all_installed(&tmp, 1, &v1).await?;

    let later = lab.player("later").await?.0;
    let dir = tmp.path().join("install-later");
    let o = install(
        &later,
        &request(&lab, dir.clone(), false, Duration::ZERO),
        stop_rx,
    )
    .await?;
    stop_tx.send(true)?;
    for t in seeding {
        t.await??;
    }
    assert_installed(&dir, &v1_dir)?;
    let payload = v1.manifest.unique_size();
    eprintln!(
        "the later player: {} bytes from the first player, {} from the seed",
        o.from_peers, o.from_seeds
    );
    assert!(
        o.from_peers * 10 >= payload * 9,
        "the later player took most of the release from the first: {o:#?}"
    );
    lab.stop().await
}

/// One launcher, two products, one peer node: it installs both at once,
/// then seeds the first to another player while it updates the second.
/// (Before, each product needed its own launcher process, and two nodes of
/// one identity answered for each other's swarms.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_launcher_updates_two_products_at_once_and_seeds_one_while_fetching_the_other()
-> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // The seed is capped so that the second product's update is still
    // coming while the other player fetches the first from us.
    let lab = lab(tmp.path(), Some(4 * MIB)).await?;
    let other_product = "other-game";
    lab.add_product(other_product).await?;
    let (a_dir, b_dir) = (tmp.path().join("build-a"), tmp.path().join("build-b"));
    sample::build(&a_dir, 8 * MIB, 1)?;
    sample::build(&b_dir, 8 * MIB, 2)?;
    let a = lab.publish(&a_dir, "1.0").await?;
    lab.publish_to(other_product, &b_dir, "1.0").await?;
    let me = lab.player("me").await?.0;
    let launcher = launcher::Launcher::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = |product: &str, dir: &Path, update: bool, seed_for: Duration| {
        let mut req = request(&lab, dir.to_owned(), update, seed_for);
        req.product = product.to_owned();
        let mut stop = stop_rx.clone();
        let (launcher, me) = (&launcher, &me);
        async move {
            launcher::install_with(launcher, me, &req, None, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        }
    };
    let (mine_a, mine_b) = (tmp.path().join("mine-a"), tmp.path().join("mine-b"));
    let product = lab.options.product.clone();
    let later = lab.player("later").await?.0;
    let later_dir = tmp.path().join("later-a");
    // The first product installs and then seeds until the end; meanwhile
    // the second installs, gets a v2 and updates, and another player
    // installs the first.
    let seeding = run(&product, &mine_a, false, Duration::from_secs(120));
    let rest = async {
        let ob = run(other_product, &mine_b, false, Duration::ZERO).await?;
        assert_installed(&mine_b, &b_dir)?;
        let b2_dir = tmp.path().join("build-b2");
        sample::patch(&b_dir, &b2_dir, 3)?;
        let b2 = lab.publish_to(other_product, &b2_dir, "2.0").await?;
        wait_all_installed_in(&[&mine_a], &a).await?;
        let later_req = request(&lab, later_dir.clone(), false, Duration::ZERO);
        let (updated, fetched) = tokio::join!(
            run(other_product, &mine_b, true, Duration::ZERO),
            install(&later, &later_req, stop_rx.clone())
        );
        stop_tx.send(true)?;
        let (updated, fetched) = (updated?, fetched?);
        assert_eq!(updated.previous_version, Some(ob.version));
        assert_eq!(updated.version, b2.version);
        assert_installed(&mine_b, &b2_dir)?;
        anyhow::Ok((updated, fetched))
    };
    let (seeded, rest) = tokio::join!(seeding, rest);
    let (updated, fetched) = rest?;
    let seeded = seeded?;
    assert_installed(&mine_a, &a_dir)?;
    assert_installed(&later_dir, &a_dir)?;
    eprintln!(
        "the other player: {} bytes from peers, {} from the seed; our update took {:.1} s, we seeded {:.1} s and sent {} bytes",
        fetched.from_peers,
        fetched.from_seeds,
        updated.download_secs,
        seeded.seeded_secs,
        seeded.uploaded
    );
    assert!(
        fetched.from_peers * 10 >= a.manifest.unique_size() * 9,
        "the other player took most of the first product from us: {fetched:#?}"
    );
    lab.stop().await
}

/// Starts `shoal install` (or update) for every player into
/// `root/install{i}`, each seeding until `stop` (or two minutes).
fn start_all(
    lab: &Lab,
    players: &[Settings],
    root: &Path,
    update: bool,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<Outcome>>> {
    players
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.clone();
            let req = request(
                lab,
                root.join(format!("install{i}")),
                update,
                Duration::from_secs(120),
            );
            let stop = stop.clone();
            tokio::spawn(async move { install(&s, &req, stop).await })
        })
        .collect()
}

/// Polls `root/install{i}` for the first `n` players until all hold
/// `release` (or a minute passes).
async fn wait_all_installed(
    tmp: &tempfile::TempDir,
    n: usize,
    release: &Published,
) -> anyhow::Result<()> {
    let dirs: Vec<PathBuf> = (0..n)
        .map(|i| tmp.path().join(format!("install{i}")))
        .collect();
    wait_all_installed_in(
        &dirs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        release,
    )
    .await
}

/// Polls the installs in `dirs` until all hold `release` (or a minute passes).
async fn wait_all_installed_in(dirs: &[&Path], release: &Published) -> anyhow::Result<()> {
    for _ in 0..1200 {
        let mut done = 0;
        for dir in dirs {
            let s = launcher::status(dir)?;
            if s.installed.is_some_and(|b| b.version == release.version) {
                done += 1;
            }
        }
        if done == dirs.len() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("not every install finished within a minute")
}

fn exit_code(err: &anyhow::Error) -> u8 {
    shoal_client::exit_code(err)
}

/// A launcher process killed with SIGKILL mid-download: the same command
/// again resumes without fetching any verified chunk twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_launcher_resumes_without_refetching() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lab = lab(tmp.path(), None).await?;
    let build = tmp.path().join("build");
    sample::build(&build, 24 * MIB, 3)?;
    let v1 = lab.publish(&build, "1.0").await?;
    let (settings, _) = lab.player("killed").await?;
    let dir = tmp.path().join("install");
    let config_dir = tmp.path().join("players/killed/config");

    let mut child = std::process::Command::new(shoal_tests::shoal_bin()?)
        .args([
            "install",
            &lab.options.product,
            "--no-seed",
            "--max-download",
            "6MB/s",
            "--dir",
        ])
        .arg(&dir)
        .env("SHOAL_CONFIG_DIR", &config_dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    // Kill it once part of the release is staged.
    let staged = || -> u64 {
        let Ok(entries) = std::fs::read_dir(dir.join(".shoal/staging")) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| shoal_tests::du(&e.path()))
            .sum()
    };
    let mut waited = 0;
    while staged() < 4 * MIB && waited < 600 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill()?; // SIGKILL
    child.wait()?;
    assert!(
        launcher::status(&dir)?.installed.is_none(),
        "killed before the swap"
    );

    let (_, never) = tokio::sync::watch::channel(false);
    let req = request(&lab, dir.clone(), false, Duration::ZERO);
    let o = install(&settings, &req, never).await?;
    let payload = v1.manifest.unique_size();
    assert!(o.resumed_bytes > 0 && o.resumed_bytes < payload, "{o:#?}");
    assert_eq!(
        o.from_peers + o.from_seeds,
        payload - o.resumed_bytes,
        "nothing verified before the kill is fetched again: {o:#?}"
    );
    assert_installed(&dir, &build)?;
    lab.stop().await
}

/// The disk fills up during an update: a clear error with its own exit
/// code, and the old install stays intact and usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disk_during_update_keeps_the_old_install() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lab = lab(tmp.path(), None).await?;
    let v1_dir = tmp.path().join("build-v1");
    sample::build(&v1_dir, 8 * MIB, 4)?;
    lab.publish(&v1_dir, "1.0").await?;
    let (mut settings, _) = lab.player("full").await?;
    let dir = tmp.path().join("install");
    let (_, never) = tokio::sync::watch::channel(false);
    install(
        &settings,
        &request(&lab, dir.clone(), false, Duration::ZERO),
        never.clone(),
    )
    .await?;

    let v2_dir = tmp.path().join("build-v2");
    sample::patch(&v1_dir, &v2_dir, 5)?;
    lab.publish(&v2_dir, "2.0").await?;
    settings.fail_writes_after = Some(MIB);
    let err = install(
        &settings,
        &request(&lab, dir.clone(), true, Duration::ZERO),
        never.clone(),
    )
    .await
    .expect_err("the disk is full");
    assert_eq!(exit_code(&err), 11, "{err:#}");
    let line = shoal_client::one_line(&err);
    assert!(line.contains("disk is full"), "{line}");
    assert_eq!(
        launcher::status(&dir)?.installed.map(|b| b.label),
        Some("1.0".into())
    );
    assert_installed(&dir, &v1_dir)?;

    // With room again, the update completes.
    settings.fail_writes_after = None;
    install(
        &settings,
        &request(&lab, dir.clone(), true, Duration::ZERO),
        never,
    )
    .await?;
    assert_installed(&dir, &v2_dir)?;
    lab.stop().await
}

#[test]
fn the_space_check_names_both_figures() {
    let err = launcher::check_space(5 << 30, 1 << 30, Path::new("/games/x"), "").unwrap_err();
    assert_eq!(exit_code(&err), 11);
    assert_eq!(
        err.to_string(),
        "not enough disk space in /games/x: 5.00 GiB needed, 1.00 GiB free"
    );
    let why = " (the encrypted build, and room to open it)";
    let err = launcher::check_space(5 << 30, 1 << 30, Path::new("/games/x"), why).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not enough disk space in /games/x: 5.00 GiB needed (the encrypted build, and room to open it), 1.00 GiB free"
    );
    assert!(launcher::check_space(1, 1, Path::new("/"), "").is_ok());
}

/// An install that accepted a higher version refuses an older one; a
/// tracker replaying stale metadata is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_and_expired_metadata_are_refused() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lab = lab(tmp.path(), None).await?;
    let build = tmp.path().join("build");
    sample::build(&build, 2 * MIB, 6)?;
    lab.publish(&build, "1.0").await?;
    let (settings, _) = lab.player("careful").await?;
    let dir = tmp.path().join("install");
    // This install once accepted version 7 of the channel.
    shoal_store::Install::open(&dir)?.accept(&lab.options.product, "stable", 7)?;
    let (_, never) = tokio::sync::watch::channel(false);
    let err = install(
        &settings,
        &request(&lab, dir.clone(), false, Duration::ZERO),
        never.clone(),
    )
    .await
    .expect_err("rollback");
    assert_eq!(exit_code(&err), 12, "{err:#}");
    assert!(shoal_client::one_line(&err).contains("rollback refused"));
    assert!(launcher::status(&dir)?.installed.is_none());
    lab.stop().await?;

    // A tracker whose clock is eight days behind signs metadata that
    // expired a day ago (the TTL is seven days).
    let tmp = tempfile::tempdir()?;
    let stale = Lab::start(
        tmp.path(),
        Options {
            chunking: small_chunks(),
            tracker_clock_offset_secs: -8 * 24 * 3600,
            ..Options::default()
        },
    )
    .await?;
    stale.publish(&build, "1.0").await?;
    let (settings, _) = stale.player("frozen").await?;
    let err = install(
        &settings,
        &request(&stale, tmp.path().join("install"), false, Duration::ZERO),
        never,
    )
    .await
    .expect_err("expired");
    assert_eq!(exit_code(&err), 14, "{err:#}");
    assert!(shoal_client::one_line(&err).contains("expired"));
    stale.stop().await
}

/// An operator rolls the channel back: the rollback is a new release of the
/// old manifest, which the seed holds under the old id. Installed players
/// update back to the old build and new players install it, through the
/// seed, without a stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_brings_every_player_to_the_older_build() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lab = lab(tmp.path(), None).await?;
    let (v1_dir, v2_dir) = (tmp.path().join("v1"), tmp.path().join("v2"));
    sample::build(&v1_dir, 4 * MIB, 11)?;
    sample::patch(&v1_dir, &v2_dir, 12)?;
    lab.publish(&v1_dir, "1.0").await?;
    let v2 = lab.publish(&v2_dir, "2.0").await?;
    let (settings, _) = lab.player("returning").await?;
    let dir = tmp.path().join("install");
    let (_, never) = tokio::sync::watch::channel(false);
    let first = install(
        &settings,
        &request(&lab, dir.clone(), false, Duration::ZERO),
        never.clone(),
    )
    .await?;
    assert_eq!(first.version, v2.version);
    assert_installed(&dir, &v2_dir)?;

    let rolled: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/v1/products/{}/channels/stable/rollback",
            lab.url, lab.options.product
        ))
        .bearer_auth(lab.operator_key().unwrap_or_default())
        .json(&serde_json::json!({"version": 1}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(rolled["version"], 3, "{rolled}");

    // Bounded, so a stranded player fails the test instead of hanging it.
    let back = tokio::time::timeout(
        Duration::from_secs(120),
        install(
            &settings,
            &request(&lab, dir.clone(), true, Duration::ZERO),
            never.clone(),
        ),
    )
    .await??;
    assert_eq!(back.version, 3);
    assert_installed(&dir, &v1_dir)?;
    let (settings, _) = lab.player("newcomer").await?;
    let fresh_dir = tmp.path().join("fresh");
    let fresh = tokio::time::timeout(
        Duration::from_secs(120),
        install(
            &settings,
            &request(&lab, fresh_dir.clone(), false, Duration::ZERO),
            never,
        ),
    )
    .await??;
    assert_eq!(fresh.version, 3);
    assert_installed(&fresh_dir, &v1_dir)?;
    lab.stop().await
}

/// Damage an install; `verify` finds exactly what is broken and `repair`
/// fetches only those chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_finds_damage_and_repair_fetches_only_it() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lab = lab(tmp.path(), None).await?;
    let build = tmp.path().join("build");
    sample::build(&build, 8 * MIB, 7)?;
    let v1 = lab.publish(&build, "1.0").await?;
    let (settings, _) = lab.player("fixer").await?;
    let dir = tmp.path().join("install");
    let (_, never) = tokio::sync::watch::channel(false);
    install(
        &settings,
        &request(&lab, dir.clone(), false, Duration::ZERO),
        never,
    )
    .await?;
    assert!(launcher::verify(&settings, &dir).await?.damage.is_empty());

    let pak = dir.join("current/paks/data1.pak");
    let mut bytes = std::fs::read(&pak)?;
    bytes[1000] ^= 0x55;
    std::fs::write(&pak, &bytes)?;
    let victim = std::fs::read_dir(dir.join("current/config"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("no small files"))??
        .path();
    std::fs::remove_file(&victim)?;

    let found = launcher::verify(&settings, &dir).await?;
    let paths: Vec<_> = found.damage.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(found.damage.len(), 2, "{paths:?}");
    assert!(paths.contains(&"paks/data1.pak"));
    let damaged: u64 = found
        .damage
        .iter()
        .flat_map(|d| &d.chunks)
        .map(|&c| u64::from(v1.manifest.chunks[c as usize].len))
        .sum();

    let repaired = launcher::repair(&settings, &dir).await?;
    assert_eq!(repaired.damaged_files, 2);
    assert_eq!(repaired.bytes_fetched, damaged, "{repaired:?}");
    assert!(damaged < v1.manifest.unique_size() / 4);
    assert!(launcher::verify(&settings, &dir).await?.damage.is_empty());
    assert_installed(&dir, &build)?;
    lab.stop().await
}

/// Refusals name the tracker's reason and exit with their own codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_clear_errors_and_exit_codes() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let lab = Lab::start(
        tmp.path(),
        Options {
            chunking: small_chunks(),
            paid: true,
            ..Options::default()
        },
    )
    .await?;
    let build = tmp.path().join("build");
    sample::build(&build, MIB, 8)?;
    lab.publish(&build, "1.0").await?;
    let (settings, account) = lab.player("buyer").await?;
    let (_, never) = tokio::sync::watch::channel(false);
    let req = request(&lab, tmp.path().join("install"), false, Duration::ZERO);

    // A paid product before and after buying it.
    let err = install(&settings, &req, never.clone())
        .await
        .expect_err("not entitled");
    assert_eq!(exit_code(&err), 8, "{err:#}");
    assert!(
        shoal_client::one_line(&err).contains("not_entitled"),
        "{err:#}"
    );
    lab.operator
        .call(
            reqwest::Method::POST,
            "/v1/entitlements",
            Some(&serde_json::json!({"account": account, "product": lab.options.product})),
        )
        .await?;
    install(&settings, &req, never.clone()).await?;
    assert_installed(&req.dir, &build)?;

    // An account in an embargoed country.
    let (embargoed, id) = lab.player_in("far-away", "KP").await?;
    lab.operator
        .call(
            reqwest::Method::POST,
            "/v1/entitlements",
            Some(&serde_json::json!({"account": id, "product": lab.options.product})),
        )
        .await?;
    let elsewhere = request(&lab, tmp.path().join("install-kp"), false, Duration::ZERO);
    let err = install(&embargoed, &elsewhere, never.clone())
        .await
        .expect_err("screened");
    assert_eq!(exit_code(&err), 9, "{err:#}");
    assert!(
        shoal_client::one_line(&err).contains("export screening"),
        "{err:#}"
    );

    // Unreachable tracker.
    let mut offline = settings.clone();
    offline.tracker = "http://127.0.0.1:9".into();
    let err = install(&offline, &req, never.clone())
        .await
        .expect_err("unreachable");
    assert_eq!(exit_code(&err), 5, "{err:#}");

    // Wrong pinned tracker key: the signatures do not check out.
    let mut wrong = settings.clone();
    wrong.tracker_key = Some(shoal_types::SecretKey::from_seed([42; 32]).public());
    let err = install(&wrong, &req, never)
        .await
        .expect_err("bad signature");
    assert_eq!(exit_code(&err), 13, "{err:#}");
    lab.stop().await
}
