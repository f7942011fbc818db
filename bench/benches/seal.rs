//! Opening sealed chunks (issue 17's unlock: decrypt the preloaded staging
//! and check each plaintext hash) on one core, against plain BLAKE3 hashing
//! and sealing of the same 1 MiB chunks, in the same run. The issue's
//! target: open at ≥ 1 GiB/s on one core.
//!
//! `cargo bench -p shoal-bench --bench seal` (env: `SHOAL_BENCH_SIZE` in
//! MiB, default 256; `SHOAL_BENCH_RUNS`, default 5).

use shoal_bench::{Noise, gib_per_sec, median, timed};
use shoal_manifest::seal::{ContentKey, open, seal};
use shoal_types::Hash;
use std::hint::black_box;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let mib = env_u64("SHOAL_BENCH_SIZE", 256).max(1);
    let runs = env_u64("SHOAL_BENCH_RUNS", 5).max(1);
    let key = ContentKey::from_bytes([7; 32]);
    let chunks: Vec<Vec<u8>> = (0..mib).map(|i| Noise::new(i).bytes(1 << 20)).collect();
    let sealed: Vec<_> = chunks.iter().map(|c| seal(&key, c)).collect();
    let bytes = mib << 20;
    println!("{mib} chunks of 1 MiB, one core, {runs} runs (GiB/s of plaintext)");
    println!();
    println!("| step | median GiB/s | min | max |");
    println!("|---|---|---|---|");
    let row = |name: &str, f: &dyn Fn()| {
        let rates: Vec<f64> = (0..runs).map(|_| gib_per_sec(bytes, timed(f).1)).collect();
        let (lo, hi) = rates
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), r| (l.min(*r), h.max(*r)));
        println!("| {name} | {:.2} | {lo:.2} | {hi:.2} |", median(&rates));
    };
    row("baseline: BLAKE3 of each chunk", &|| {
        for c in &chunks {
            black_box(Hash::of(c));
        }
    });
    row(
        "seal (BLAKE3, key, encrypt, BLAKE3 of the ciphertext)",
        &|| {
            for c in &chunks {
                black_box(seal(&key, c));
            }
        },
    );
    row("open (decrypt, check the plaintext hash)", &|| {
        for s in &sealed {
            black_box(open(&key, &s.plain, &s.bytes).expect("opens"));
        }
    });
    Ok(())
}
