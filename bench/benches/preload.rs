//! Preload, then unlock at once (issue 17), on a real tracker, seed and
//! launchers on loopback: N players preload an encrypted build through the
//! swarm, the publisher unlocks it, and every player opens its preload at
//! the same moment. Reported: chunk bytes moved at the unlock (target 0),
//! time from unlock to playable per player against reading and writing
//! the build once on the same disk (target: no slower), and the tracker's
//! rate of key-bearing token answers at the launch minute against plain
//! token answers in the same run.
//!
//! `cargo bench -p shoal-bench --bench preload` (env: `SHOAL_BENCH_SIZE`
//! in MiB, default 256; `SHOAL_BENCH_PLAYERS`, default 8;
//! `SHOAL_BENCH_KEYS`, players asking at the launch minute, default 2000).

use anyhow::Context as _;
use futures::StreamExt as _;
use shoal_bench::median;
use shoal_client::launcher::{self, Outcome, Request};
use shoal_demo::lab::{Lab, Options, sample};
use shoal_manifest::seal::ContentKey;
use std::path::Path;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn request(lab: &Lab, dir: std::path::PathBuf) -> Request {
    Request {
        product: lab.options.product.clone(),
        channel: None,
        dir,
        seed_for: Duration::ZERO,
        update: false,
        preload: false,
        until_unlock: false,
        seeding: Default::default(),
    }
}

/// Reads every file of `src` and writes it under `dst`, synced: the
/// floor an unlock (read ciphertext, write plaintext) is held against.
fn copy_tree(src: &Path, dst: &Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let m = std::fs::symlink_metadata(&from)?;
        if m.is_dir() {
            bytes += copy_tree(&from, &to)?;
        } else if m.is_file() {
            let data = std::fs::read(&from)?;
            let mut f = std::fs::File::create(&to)?;
            std::io::Write::write_all(&mut f, &data)?;
            f.sync_all()?;
            bytes += data.len() as u64;
        }
    }
    Ok(bytes)
}

fn spread(v: &[f64]) -> String {
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), x| (l.min(*x), h.max(*x)));
    format!("{:.3} ({lo:.3}–{hi:.3})", median(v))
}

fn drop_caches() {
    // Best effort (root only): read from disk, not memory, where possible.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// `n` token requests, `conns` at a time, each from its own player key:
/// requests per second and the latency median and p99 (ms), and how many
/// answers carried a content key.
async fn storm(
    url: &str,
    keys: &[String],
    product: &str,
    conns: usize,
) -> anyhow::Result<(f64, f64, f64, usize)> {
    let http = reqwest::Client::new();
    let start = Instant::now();
    let results: Vec<anyhow::Result<(f64, bool)>> = futures::stream::iter(keys.iter().enumerate())
        .map(|(i, key)| {
            let http = http.clone();
            async move {
                let body = serde_json::json!({
                    "product": product,
                    "channel": "stable",
                    "peer_id": shoal_bench::peer_id(i),
                });
                let t = Instant::now();
                let resp = http
                    .post(format!("{url}/v1/tokens"))
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(resp.status().is_success(), "token: {}", resp.status());
                let v: serde_json::Value = resp.json().await?;
                Ok((
                    t.elapsed().as_secs_f64() * 1000.0,
                    v.get("content_key").is_some(),
                ))
            }
        })
        .buffer_unordered(conns)
        .collect()
        .await;
    let wall = start.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(results.len());
    let mut with_key = 0;
    for r in results {
        let (ms, key) = r?;
        lat.push(ms);
        with_key += usize::from(key);
    }
    lat.sort_by(f64::total_cmp);
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
    Ok((keys.len() as f64 / wall, median(&lat), p99, with_key))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let mib = env_u64("SHOAL_BENCH_SIZE", 256).max(8);
    let players = env_u64("SHOAL_BENCH_PLAYERS", 8).max(1) as usize;
    let askers = env_u64("SHOAL_BENCH_KEYS", 2000).max(10) as usize;
    let tmp = shoal_bench::scratch()?;
    let lab = Lab::start(tmp.path(), Options::default()).await?;
    let src = tmp.path().join("build");
    sample::build(&src, mib << 20, 17)?;

    // The floor: read and write the build once, synced (3 runs).
    let mut copy = Vec::new();
    for r in 0..3 {
        drop_caches();
        let t = Instant::now();
        copy_tree(&src, &tmp.path().join(format!("copy{r}")))?;
        copy.push(t.elapsed().as_secs_f64());
        std::fs::remove_dir_all(tmp.path().join(format!("copy{r}")))?;
    }

    let key = ContentKey::generate();
    let release = lab.publish_sealed(&src, "1.0", &key).await?;
    lab.set_content_key(&release.release_id, &key, None).await?;
    let payload = release.manifest.unique_size();
    let size = release.manifest.total_size();

    // Preload: every player at once, plus one who unlocks alone first.
    let mut settings = Vec::new();
    for i in 0..=players {
        settings.push(lab.player(&format!("p{i}")).await?.0);
    }
    let dirs: Vec<_> = (0..=players)
        .map(|i| tmp.path().join(format!("install{i}")))
        .collect();
    let t = Instant::now();
    let preloads = futures::future::join_all(settings.iter().zip(&dirs).map(|(s, d)| {
        let req = request(&lab, d.clone());
        async move { launcher::install(s, &req, None, std::future::pending()).await }
    }))
    .await;
    let preload_secs = t.elapsed().as_secs_f64();
    let preloads: Vec<Outcome> = preloads.into_iter().collect::<Result<_, _>>()?;
    anyhow::ensure!(
        preloads.iter().all(|o| o.preloaded),
        "every player preloaded"
    );
    let origin_preload: u64 = preloads.iter().map(|o| o.from_seeds).sum();

    // Unlock. One player alone, then all the others at once.
    lab.unlock(&release.release_id, None).await?;
    drop_caches();
    let t = Instant::now();
    let alone = launcher::install(
        &settings[0],
        &request(&lab, dirs[0].clone()),
        None,
        std::future::pending(),
    )
    .await?;
    let alone_wall = t.elapsed().as_secs_f64();
    let alone_secs = alone.playable_secs.unwrap_or(alone_wall);
    drop_caches();
    let t = Instant::now();
    let outcomes = futures::future::join_all(settings.iter().zip(&dirs).skip(1).map(|(s, d)| {
        let req = request(&lab, d.clone());
        async move {
            let start = Instant::now();
            let o = launcher::install(s, &req, None, std::future::pending()).await;
            o.map(|o| (o, start.elapsed().as_secs_f64()))
        }
    }))
    .await;
    let together_secs = t.elapsed().as_secs_f64();
    let outcomes: Vec<(Outcome, f64)> = outcomes.into_iter().collect::<Result<_, _>>()?;
    for (d, _) in dirs.iter().zip(0..) {
        sample::same(&src, &d.join("current"))?.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let moved: u64 = std::iter::once(&alone)
        .chain(outcomes.iter().map(|(o, _)| o))
        .map(|o| o.from_peers + o.from_seeds)
        .sum();
    // Playable: the new build in place (the command then removes the
    // spent ciphertext and returns).
    let walls: Vec<f64> = outcomes
        .iter()
        .map(|(o, w)| o.playable_secs.unwrap_or(*w))
        .collect();
    let last_playable = walls.iter().fold(0f64, |a, b| a.max(*b));
    let opens: Vec<f64> = outcomes.iter().filter_map(|(o, _)| o.unlock_secs).collect();

    // The launch minute: many players ask for their key at once, against
    // the same storm on a plain release.
    lab.add_product("plain").await?;
    let plain_src = tmp.path().join("plain-build");
    sample::build(&plain_src, 1 << 20, 5)?;
    lab.publish_to("plain", &plain_src, "1.0").await?;
    let mut keys = Vec::with_capacity(askers);
    for i in 0..askers {
        keys.push(lab.player_key(&format!("asker{i}")).await?);
    }
    let plain = storm(&lab.url, &keys, "plain", 64).await?;
    let sealed = storm(&lab.url, &keys, &lab.options.product, 64).await?;
    anyhow::ensure!(
        sealed.3 == askers,
        "every answer at the launch minute carried the key"
    );

    println!(
        "preload and unlock: {players} players at once (+1 alone), a {} MiB build ({} bytes of ciphertext), seed uncapped, 2 cores shared by everything",
        size >> 20,
        payload
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| preload wall, all {} players | {preload_secs:.2} s |",
        players + 1
    );
    println!(
        "| origin egress during preload | {:.2} copies ({} B) |",
        origin_preload as f64 / payload as f64,
        origin_preload
    );
    println!("| chunk bytes moved at unlock (all players) | {moved} B |");
    println!(
        "| read + write the build once, synced (3 runs) | {} s |",
        spread(&copy)
    );
    println!(
        "| one player alone: unlock to playable | {alone_secs:.3} s ({:.2}× the copy; opening {:.3} s; the command returned at {alone_wall:.3} s) |",
        alone_secs / median(&copy),
        alone.unlock_secs.unwrap_or_default()
    );
    println!(
        "| {players} at once: unlock to playable, per player | {} s |",
        spread(&walls)
    );
    println!(
        "| {players} at once: opening (decrypt, check, swap) | {} s |",
        spread(&opens)
    );
    println!(
        "| {players} at once: last playable | {last_playable:.3} s ({:.2}× {players} copies; the last command returned at {together_secs:.3} s) |",
        last_playable / (median(&copy) * players as f64)
    );
    println!(
        "| launch-minute tokens, plain release | {:.0}/s, median {:.1} ms, p99 {:.1} ms |",
        plain.0, plain.1, plain.2
    );
    println!(
        "| launch-minute tokens carrying the key | {:.0}/s, median {:.1} ms, p99 {:.1} ms ({:.2}× plain) |",
        sealed.0,
        sealed.1,
        sealed.2,
        sealed.0 / plain.0
    );
    lab.stop().await.context("stopping the lab")
}
