//! Publish throughput on a generated ~1 GiB build, against raw BLAKE3 hashing
//! of the same bytes on all cores, in the same run.
//!
//! `cargo bench -p shoal-bench --bench publish` (env: `SHOAL_BENCH_SIZE` in
//! MiB, default 1024; `SHOAL_BENCH_RUNS`, default 5; `SHOAL_BENCH_DIR`).

use anyhow::Context as _;
use shoal_bench::{TreeSpec, gib_per_sec, median, scratch, timed, write_tree};
use shoal_manifest::{BuildOptions, BundleWriter, ChunkParams, DiscardChunks, Progress, build};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn files_under(root: &Path) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for item in fs::read_dir(&dir)? {
            let item = item?;
            let meta = item.metadata()?;
            if meta.is_dir() {
                stack.push(item.path());
            } else {
                out.push((item.path(), meta.len()));
            }
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.1));
    Ok(out)
}

/// BLAKE3 of every file, one file per thread at a time, largest first: the
/// same work split as the publisher, with no chunking and no writing.
fn raw_blake3(files: &[(PathBuf, u64)], threads: usize) -> anyhow::Result<u64> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<u64> {
                    let mut acc = 0u64;
                    while let Some((path, _)) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let file = fs::File::open(path)?;
                        // SAFETY: the generated tree is not modified while the bench runs.
                        #[allow(unsafe_code)]
                        let data = unsafe { memmap2::Mmap::map(&file)? };
                        acc ^= u64::from(blake3::hash(&data).as_bytes()[0]);
                    }
                    Ok(acc)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("hash worker panicked"))
            .sum()
    })
}

/// Writes `total` bytes to `path`, fdatasyncs, deletes it; returns the time.
fn durable_write(path: &Path, total: u64) -> anyhow::Result<Duration> {
    use std::io::Write as _;
    let buf = shoal_bench::Noise::new(7).bytes(4 << 20);
    let (r, d) = timed(|| -> anyhow::Result<()> {
        let mut f = fs::File::create(path)?;
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.sync_data()?;
        Ok(())
    });
    r?;
    fs::remove_file(path)?;
    Ok(d)
}

fn options() -> BuildOptions {
    BuildOptions {
        product: "bench".into(),
        channel: "stable".into(),
        version: "1".into(),
        chunking: ChunkParams::default(),
        threads: 0,
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo bench -- --list` and nextest probing
    }
    let size_mib = env_u64("SHOAL_BENCH_SIZE", 1024);
    let runs = env_u64("SHOAL_BENCH_RUNS", 5) as usize;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = scratch()?;
    let tree = dir.path().join("build");
    let spec = if size_mib == 1024 {
        TreeSpec::gib()
    } else {
        TreeSpec::scaled(size_mib << 20)
    };
    let (total, gen_time) = timed(|| write_tree(&tree, &spec));
    let total = total?;
    let files = files_under(&tree)?;
    eprintln!(
        "generated {} files, {:.0} MiB in {:.1}s; {threads} threads, {runs} runs each",
        files.len(),
        total as f64 / 1048576.0,
        gen_time.as_secs_f64()
    );

    // Warm the page cache once so every measured pass reads from memory.
    raw_blake3(&files, threads)?;

    // Baseline for the bundle's disk writes: the same bytes written to one
    // file and made durable, in the same run.
    let mut disk = Vec::new();
    let mut raw = Vec::new();
    let mut hash_only = Vec::new();
    let mut publish = Vec::new();
    for run in 0..runs {
        // Interleave the measures so drift on a shared machine hits all alike.
        disk.push(durable_write(&dir.path().join("disk.bin"), total)?);
        let (r, d) = timed(|| raw_blake3(&files, threads));
        r?;
        raw.push(d);
        let (m, d) = timed(|| build(&tree, &options(), &DiscardChunks, &Progress::default()));
        let m = m?;
        hash_only.push(d);
        let out = dir.path().join(format!("out{run}"));
        let (r, d) = timed(|| -> anyhow::Result<()> {
            let writer = BundleWriter::create(&out)?;
            let m = build(&tree, &options(), &writer, &Progress::default())?;
            let key = shoal_types::SecretKey::from_seed([1; 32]);
            writer.finish(&shoal_manifest::SignedManifest::sign(&m, &key))?;
            Ok(())
        });
        r.context("publishing")?;
        publish.push(d);
        fs::remove_dir_all(&out)?;
        eprintln!(
            "run {run}: disk {:.2} GiB/s, raw {:.2} GiB/s, chunk+hash {:.2} GiB/s, publish {:.2} GiB/s ({} chunks)",
            gib_per_sec(total, disk[run]),
            gib_per_sec(total, raw[run]),
            gib_per_sec(total, hash_only[run]),
            gib_per_sec(total, publish[run]),
            m.chunks.len()
        );
    }

    let rate = |ds: &[Duration]| {
        median(
            &ds.iter()
                .map(|d| gib_per_sec(total, *d))
                .collect::<Vec<_>>(),
        )
    };
    let (raw_r, hash_r, pub_r) = (rate(&raw), rate(&hash_only), rate(&publish));
    println!(
        "| measure ({} MiB, {threads} threads, median of {runs}) | GiB/s | vs raw BLAKE3 |",
        total >> 20
    );
    println!("|---|---|---|");
    println!("| raw BLAKE3, all cores (read + hash) | {raw_r:.2} | 1.00 |");
    println!(
        "| chunk + hash (build, no output) | {hash_r:.2} | {:.2} |",
        hash_r / raw_r
    );
    println!(
        "| publish (chunk + hash + write bundle + sync) | {pub_r:.2} | {:.2} |",
        pub_r / raw_r
    );
    let disk_r = rate(&disk);
    println!(
        "| baseline: write the same bytes to one file + fdatasync | {disk_r:.2} | {:.2} |",
        disk_r / raw_r
    );
    println!();
    println!("publish / durable disk write: {:.2}", pub_r / disk_r);
    Ok(())
}
