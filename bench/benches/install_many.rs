//! Installing a build of many small files: what the launcher's store costs
//! (stage every verified chunk, record progress durably, commit and swap),
//! against a baseline of simply writing the same files and making them
//! durable once, in the same invocation.
//!
//! `cargo bench -p shoal-bench --bench install_many` (SHOAL_BENCH_FILES,
//! default 100000; SHOAL_BENCH_RUNS, default 2). Prints time, per-file cost
//! and peak RSS of the install (VmHWM, reset before each phase).

use anyhow::Context as _;
use shoal_bench::Noise;
use shoal_manifest::{
    BuildOptions, Bundle, BundleWriter, ChunkParams, Progress, SignedManifest, build, verify,
};
use shoal_types::{Hash, SecretKey};
use std::path::Path;
use std::time::Instant;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak RSS since the last reset, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn write_tree(root: &Path, files: usize) -> anyhow::Result<u64> {
    let mut noise = Noise::new(42);
    let mut total = 0;
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        let len = noise.range(256, 4096) as usize;
        std::fs::write(dir.join(format!("f{i:06}.dat")), noise.bytes(len))?;
        total += len as u64;
    }
    Ok(total)
}

fn syncfs(dir: &Path) -> anyhow::Result<()> {
    // `sync -f DIR` is syncfs(2) on the file system holding DIR.
    let status = std::process::Command::new("sync")
        .arg("-f")
        .arg(dir)
        .status()?;
    anyhow::ensure!(status.success(), "sync -f failed");
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let files = env_usize("SHOAL_BENCH_FILES", 100_000);
    let runs = env_usize("SHOAL_BENCH_RUNS", 2).max(1);
    let dir = shoal_bench::scratch()?;
    let source = dir.path().join("build");
    let bytes = write_tree(&source, files)?;
    let key = SecretKey::from_seed([3; 32]);
    let out = dir.path().join("bundle");
    let writer = BundleWriter::create(&out)?;
    let options = BuildOptions {
        product: "game".into(),
        channel: "stable".into(),
        version: "1".into(),
        chunking: ChunkParams::default(),
        threads: 0,
    };
    let manifest = build(&source, &options, &writer, &Progress::default())?;
    let signed = SignedManifest::sign(&manifest, &key);
    writer.finish(&signed)?;
    let bundle = Bundle::open(&out)?;
    println!(
        "{files} files, {} MiB, {} chunks",
        bytes >> 20,
        manifest.chunks.len()
    );

    let (mut plain, mut store, mut plain_rss, mut store_rss) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        // Baseline: write every file from the bundle's chunks, then one syncfs.
        let target = dir.path().join(format!("plain-{run}"));
        // Each phase starts with nothing dirty, so its own syncfs pays only
        // for its own writes.
        syncfs(dir.path())?;
        reset_peak_rss();
        let t = Instant::now();
        for (path, _, chunks) in manifest.files() {
            let p = target.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut data = Vec::new();
            for &c in chunks {
                data.extend(bundle.read_chunk(c)?);
            }
            std::fs::write(&p, data)?;
        }
        syncfs(&target)?;
        plain.push(t.elapsed().as_secs_f64());
        plain_rss.push(peak_rss() as f64);

        // The launcher's store: stage, put every verified chunk, commit.
        let install_dir = dir.path().join(format!("install-{run}"));
        syncfs(dir.path())?;
        reset_peak_rss();
        let t = Instant::now();
        let install = shoal_store::Install::open(&install_dir)?;
        let record = shoal_store::Record {
            release_id: Hash::of(format!("release {run}").as_bytes()),
            product: "game".into(),
            channel: "stable".into(),
            version: 1,
            label: "1".into(),
            release: String::new(),
            size: manifest.total_size(),
            installed_at: 0,
        };
        let staging = install.stage(record, &signed, manifest.clone())?;
        for i in 0..manifest.chunks.len() as u32 {
            let data = bundle.read_chunk(i)?;
            let chunk = verify(&manifest, i, &data).context("verify")?;
            staging.put(chunk)?;
        }
        staging.commit()?;
        store.push(t.elapsed().as_secs_f64());
        store_rss.push(peak_rss() as f64);
        std::fs::remove_dir_all(&target)?;
        std::fs::remove_dir_all(&install_dir)?;
    }
    let (p, s) = (median(&mut plain), median(&mut store));
    println!(
        "plain write + syncfs: {p:.2} s median ({:.1} us/file), peak RSS {:.0} MiB; runs {plain:.2?}",
        p * 1e6 / files as f64,
        median(&mut plain_rss) / 1048576.0
    );
    println!(
        "shoal-store install:  {s:.2} s median ({:.1} us/file), peak RSS {:.0} MiB; runs {store:.2?}",
        s * 1e6 / files as f64,
        median(&mut store_rss) / 1048576.0
    );
    println!("install / plain: {:.2}x", s / p);
    Ok(())
}
