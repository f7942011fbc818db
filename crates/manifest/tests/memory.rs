//! Publishing holds a bounded window of each file, whatever its size: a
//! 2 GiB sparse file is chunked and hashed with a peak RSS far below it (it
//! was mapped whole before, and a 20 GiB one reached 18 GiB RSS). nextest
//! runs each test in its own process, so the peak is this test's alone.

#![allow(clippy::unwrap_used)]

use shoal_manifest::{BuildOptions, ChunkParams, DiscardChunks, Progress, build};

/// The process's peak resident set, from /proc.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn publishing_a_huge_sparse_file_stays_within_a_bounded_window() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 2u64 << 30;
    let f = std::fs::File::create(tmp.path().join("huge.pak")).unwrap();
    f.set_len(size).unwrap();
    // and a little real data, so not every chunk is the same
    std::fs::write(tmp.path().join("small.bin"), vec![7u8; 3 << 20]).unwrap();
    let options = BuildOptions {
        product: "game".into(),
        channel: "stable".into(),
        version: "1".into(),
        chunking: ChunkParams::default(),
        threads: 2,
    };
    let before = peak_rss_bytes();
    let m = build(tmp.path(), &options, &DiscardChunks, &Progress::default()).unwrap();
    assert_eq!(m.total_size(), size + (3 << 20));
    let peak = peak_rss_bytes();
    // two threads, each with one 32 MiB window, plus the test's own heap
    assert!(
        peak < before + (160 << 20),
        "peak RSS {} MiB (was {} MiB before publishing {} MiB)",
        peak >> 20,
        before >> 20,
        size >> 20
    );
}
