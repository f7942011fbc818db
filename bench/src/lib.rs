//! Shared pieces of the benchmarks: deterministic synthetic game builds,
//! timing and statistics helpers.

use anyhow::Context as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fast deterministic byte generator (xorshift64*), ~GB/s; its output does
/// not compress or deduplicate, like packed game assets.
#[derive(Debug, Clone)]
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        tail.copy_from_slice(&last[..tail.len()]);
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// The shape of a synthetic game build: a few large pak files plus many small files.
#[derive(Debug, Clone)]
pub struct TreeSpec {
    pub large_files: usize,
    pub large_size: u64,
    pub small_files: usize,
    /// Small files are uniform in `small_min..small_max` bytes.
    pub small_min: u64,
    pub small_max: u64,
    pub seed: u64,
}

impl TreeSpec {
    /// About 1 GiB: 8 × 100 MiB paks and 1,000 files of 4–440 KiB.
    pub fn gib() -> Self {
        TreeSpec {
            large_files: 8,
            large_size: 100 << 20,
            small_files: 1000,
            small_min: 4 << 10,
            small_max: 440 << 10,
            seed: 1,
        }
    }

    /// Scaled to about `total` bytes with the same proportions.
    pub fn scaled(total: u64) -> Self {
        let base = Self::gib();
        let f = total as f64 / (1u64 << 30) as f64;
        TreeSpec {
            large_size: ((base.large_size as f64 * f) as u64).max(1 << 20),
            small_files: ((base.small_files as f64 * f) as usize).max(10),
            ..base
        }
    }
}

/// Relative paths of a generated tree's large files.
pub fn large_path(i: usize) -> PathBuf {
    PathBuf::from(format!("Content/Paks/pak{i:02}.pak"))
}

/// Relative paths of a generated tree's small files.
pub fn small_path(i: usize) -> PathBuf {
    PathBuf::from(format!("Content/Config/dir{:02}/file{i:04}.cfg", i % 40))
}

/// Writes the tree described by `spec` under `root`; returns its total bytes.
pub fn write_tree(root: &Path, spec: &TreeSpec) -> anyhow::Result<u64> {
    let mut noise = Noise::new(spec.seed);
    let mut total = 0;
    let mut buf = vec![0u8; 8 << 20];
    for i in 0..spec.large_files {
        let path = root.join(large_path(i));
        fs::create_dir_all(path.parent().context("large path has a parent")?)?;
        let mut file =
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut left = spec.large_size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            noise.fill(&mut buf[..n]);
            file.write_all(&buf[..n])?;
            left -= n as u64;
        }
        total += spec.large_size;
    }
    for i in 0..spec.small_files {
        let path = root.join(small_path(i));
        fs::create_dir_all(path.parent().context("small path has a parent")?)?;
        let size = noise.range(spec.small_min, spec.small_max) as usize;
        noise.fill(&mut buf[..size]);
        fs::write(&path, &buf[..size])?;
        total += size as u64;
    }
    Ok(total)
}

/// A syntactically valid libp2p PeerId text, distinct per `n`, for load
/// generators that stand in for many launchers.
pub fn peer_id(n: usize) -> String {
    const B58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut s = String::from("12D3KooW");
    let mut x = n as u64 * 2654435761 + 12345;
    for _ in 0..44 {
        s.push(B58[(x % 58) as usize] as char);
        x = (x / 58) ^ (x << 7) ^ n as u64;
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    s
}

/// Runs `f` and returns its result and the wall time it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// The median of `samples` (the mean of the middle two for an even count).
pub fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Bytes per second as GiB/s.
pub fn gib_per_sec(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1u64 << 30) as f64 / d.as_secs_f64()
}

/// A directory for benchmark data: `SHOAL_BENCH_DIR` if set, else a temp dir.
pub fn scratch() -> anyhow::Result<tempfile::TempDir> {
    match std::env::var_os("SHOAL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .context("creating a scratch directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn noise_is_deterministic() {
        assert_eq!(Noise::new(5).bytes(100), Noise::new(5).bytes(100));
        assert_ne!(Noise::new(5).bytes(100), Noise::new(6).bytes(100));
    }

    #[test]
    fn small_tree_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = TreeSpec::scaled(4 << 20);
        let total = write_tree(tmp.path(), &spec).unwrap();
        assert!(total > 0);
        assert!(tmp.path().join(large_path(0)).is_file());
    }
}
