//! Delta efficiency: what an update from v1 to v2 fetches with content-defined
//! chunks (our `diff`) and with fixed 1 MiB chunks, against the bytes that
//! actually changed, per kind of edit.
//!
//! `cargo bench -p shoal-bench --bench delta` (env: `SHOAL_BENCH_SIZE` in
//! MiB, default 1024; `SHOAL_BENCH_DIR`). Deterministic: it measures bytes, not time.

use shoal_bench::{Noise, TreeSpec, large_path, scratch, small_path, write_tree};
use shoal_manifest::{BuildOptions, ChunkParams, DiscardChunks, Manifest, Progress, build, diff};
use shoal_types::Hash;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

const FIXED: usize = 1 << 20;

/// One kind of edit and the files it touched.
struct Category {
    name: &'static str,
    files: Vec<String>,
    changed_bytes: u64,
    regions: u64,
    insertion: bool,
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

fn rel(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Hashes of fixed-size blocks of every file under `root`, by relative path.
fn fixed_blocks(root: &Path, m: &Manifest) -> anyhow::Result<HashMap<String, Vec<(Hash, u64)>>> {
    let mut out = HashMap::new();
    for (path, _, _) in m.files() {
        let data = fs::read(root.join(path))?;
        let blocks = data
            .chunks(FIXED)
            .map(|b| (Hash::of(b), b.len() as u64))
            .collect();
        out.insert(path.to_owned(), blocks);
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let size_mib: u64 = std::env::var("SHOAL_BENCH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let spec = if size_mib == 1024 {
        TreeSpec::gib()
    } else {
        TreeSpec::scaled(size_mib << 20)
    };
    anyhow::ensure!(
        spec.large_files >= 8 && spec.small_files >= 20,
        "tree too small for the edits"
    );
    let dir = scratch()?;
    let root = dir.path().join("build");
    let total = write_tree(&root, &spec)?;
    let v1 = build(&root, &options(), &DiscardChunks, &Progress::default())?;
    let fixed_v1 = fixed_blocks(&root, &v1)?;

    // --- make v2 in place ---
    let mut noise = Noise::new(42);
    let mut cats = Vec::new();

    // In-place edits with insertions: 6 paks and 4 small files, each gets a
    // 16 KiB overwrite and, elsewhere, an 8 KiB insertion.
    let edit = |path: &Path, noise: &mut Noise| -> anyhow::Result<u64> {
        let mut data = fs::read(path)?;
        let len = data.len();
        let at = noise.range(0, (len - 16384) as u64) as usize;
        noise.fill(&mut data[at..at + 16384]);
        let ins = noise.range(0, len as u64) as usize;
        data.splice(ins..ins, noise.bytes(8192));
        fs::write(path, data)?;
        Ok(16384 + 8192)
    };
    for (name, paths) in [
        (
            "edited paks (6 files: 16 KiB overwrite + 8 KiB insert each)",
            (0..6).map(large_path).collect::<Vec<_>>(),
        ),
        (
            "edited small files (4 files: same edits)",
            (0..4).map(|i| small_path(i * 7 + 3)).collect(),
        ),
    ] {
        let mut changed = 0;
        for p in &paths {
            changed += edit(&root.join(p), &mut noise)?;
        }
        cats.push(Category {
            name,
            regions: 2 * paths.len() as u64,
            files: paths.iter().map(|p| rel(p)).collect(),
            changed_bytes: changed,
            insertion: true,
        });
    }

    // A 1 MiB block inserted in the middle of a large file.
    let block_path = large_path(6);
    let mut data = fs::read(root.join(&block_path))?;
    let mid = data.len() / 2 + 12345;
    data.splice(mid..mid, noise.bytes(1 << 20));
    fs::write(root.join(&block_path), data)?;
    cats.push(Category {
        name: "1 MiB block inserted mid-pak",
        files: vec![rel(&block_path)],
        changed_bytes: 1 << 20,
        regions: 1,
        insertion: true,
    });

    // The same with a block that is not a multiple of the fixed block size.
    let mb_path = large_path(7);
    let mut data = fs::read(root.join(&mb_path))?;
    let mid = data.len() / 2 + 54321;
    data.splice(mid..mid, noise.bytes(1_000_000));
    fs::write(root.join(&mb_path), data)?;
    cats.push(Category {
        name: "1,000,000-byte block inserted mid-pak",
        files: vec![rel(&mb_path)],
        changed_bytes: 1_000_000,
        regions: 1,
        insertion: true,
    });

    // 5 new files of assorted sizes.
    let mut new_files = Vec::new();
    let mut new_bytes = 0;
    for (i, size) in [
        (0, 3 << 20),
        (1, 700 << 10),
        (2, 40 << 10),
        (3, 12 << 20),
        (4, 150 << 10),
    ] {
        let p = Path::new("Content/New").join(format!("new{i}.dat"));
        fs::create_dir_all(root.join("Content/New"))?;
        fs::write(root.join(&p), noise.bytes(size))?;
        new_bytes += size as u64;
        new_files.push(rel(&p));
    }
    let n_new = new_files.len() as u64;
    cats.push(Category {
        name: "5 new files",
        files: new_files,
        changed_bytes: new_bytes,
        regions: n_new,
        insertion: false,
    });

    // 3 deleted files.
    let mut deleted = Vec::new();
    for i in [100, 200, 300] {
        fs::remove_file(root.join(small_path(i)))?;
        deleted.push(rel(&small_path(i)));
    }
    cats.push(Category {
        name: "3 deleted files",
        files: deleted,
        changed_bytes: 0,
        regions: 0,
        insertion: false,
    });

    let v2 = build(&root, &options(), &DiscardChunks, &Progress::default())?;
    let fixed_v2 = fixed_blocks(&root, &v2)?;
    let d = diff(&v1, &v2);

    // Attribute each fetched CDC chunk to the first file that uses it.
    let needed: HashSet<u32> = d.needed.iter().copied().collect();
    let mut counted = HashSet::new();
    let mut cdc_by_file: HashMap<&str, u64> = HashMap::new();
    for (path, _, chunks) in v2.files() {
        for &c in chunks {
            if needed.contains(&c) && counted.insert(c) {
                *cdc_by_file.entry(path).or_default() += u64::from(v2.chunks[c as usize].len);
            }
        }
    }
    let attributed: u64 = cdc_by_file.values().sum();
    anyhow::ensure!(attributed == d.fetch_bytes, "attribution lost bytes");
    // Fixed chunks: a v2 block is fetched unless v1 had a block with its hash.
    let have_fixed: HashSet<Hash> = fixed_v1.values().flatten().map(|b| b.0).collect();
    let mut fixed_seen = HashSet::new();
    let mut fixed_by_file: HashMap<&str, u64> = HashMap::new();
    for (path, blocks) in &fixed_v2 {
        for (hash, len) in blocks {
            if !have_fixed.contains(hash) && fixed_seen.insert(*hash) {
                *fixed_by_file.entry(path.as_str()).or_default() += len;
            }
        }
    }

    let avg = u64::from(ChunkParams::default().avg);
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "v1: {:.0} MiB, {} files, {} chunks; v2: {} chunks; CDC 256 KiB/1 MiB/4 MiB vs fixed 1 MiB",
        mib(total),
        v1.files().count(),
        v1.chunks.len(),
        v2.chunks.len()
    );
    println!();
    println!(
        "| edit | changed MiB | CDC fetch MiB | budget MiB (changed + 2 avg chunks/region) | fixed 1 MiB fetch MiB | fixed / CDC |"
    );
    println!("|---|---|---|---|---|---|");
    let mut all_ok = true;
    let (mut tot_changed, mut tot_cdc, mut tot_fixed) = (0, 0, 0);
    for c in &cats {
        let cdc: u64 = c
            .files
            .iter()
            .map(|f| cdc_by_file.get(f.as_str()).copied().unwrap_or(0))
            .sum();
        let fixed: u64 = c
            .files
            .iter()
            .map(|f| fixed_by_file.get(f.as_str()).copied().unwrap_or(0))
            .sum();
        let budget = c.changed_bytes + 2 * avg * c.regions;
        let ratio = if cdc == 0 {
            f64::NAN
        } else {
            fixed as f64 / cdc as f64
        };
        let ok = cdc <= budget && (!c.insertion || c.name.contains("small") || ratio >= 5.0);
        all_ok &= ok;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}x{} |",
            c.name,
            mib(c.changed_bytes),
            mib(cdc),
            mib(budget),
            mib(fixed),
            ratio,
            if ok { "" } else { " (MISS)" }
        );
        tot_changed += c.changed_bytes;
        tot_cdc += cdc;
        tot_fixed += fixed;
    }
    println!(
        "| **total** | {:.2} | {:.2} | | {:.2} | {:.1}x |",
        mib(tot_changed),
        mib(tot_cdc),
        mib(tot_fixed),
        tot_fixed as f64 / tot_cdc as f64
    );
    println!();
    println!(
        "diff: fetch {:.2} MiB in {} chunks, reuse {:.2} MiB; targets {}",
        mib(d.fetch_bytes),
        d.needed.len(),
        mib(d.reused_bytes),
        if all_ok { "met" } else { "MISSED" }
    );
    anyhow::ensure!(
        tot_cdc == d.fetch_bytes,
        "categories do not add up to the diff"
    );
    sweep();
    Ok(())
}

/// Bytes of `new`'s chunks (or fixed blocks) absent from `old`'s.
fn fetched(old: &[u8], new: &[u8]) -> (u64, u64) {
    let params = ChunkParams::default();
    let cdc = |d: &[u8]| shoal_manifest::chunker::chunk_and_hash(d, params);
    let have: HashSet<Hash> = cdc(old).into_iter().map(|c| c.0).collect();
    let cdc_fetch = cdc(new)
        .iter()
        .filter(|c| !have.contains(&c.0))
        .map(|c| c.2 as u64)
        .sum();
    let have: HashSet<Hash> = old.chunks(FIXED).map(Hash::of).collect();
    let fixed_fetch = new
        .chunks(FIXED)
        .filter(|b| !have.contains(&Hash::of(b)))
        .map(|b| b.len() as u64)
        .sum();
    (cdc_fetch, fixed_fetch)
}

/// One insertion is one sample of a wide distribution (the chunk holding a
/// random point is larger than average): insert the block at 20 positions of
/// a 100 MiB pak and report the spread.
fn sweep() {
    let old = Noise::new(77).bytes(100 << 20);
    let avg = f64::from(ChunkParams::default().avg);
    println!();
    println!(
        "Insertion sweep: one block at 20 positions of a 100 MiB pak; overhead = (CDC fetch - block) / average chunk"
    );
    println!();
    println!(
        "| block | CDC fetch MiB median | p90 | overhead in avg chunks median | p90 | max | fixed 1 MiB fetch MiB median | fixed / CDC median |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for block in [1usize << 20, 1_000_000] {
        let mut noise = Noise::new(block as u64);
        let mut cdc = Vec::new();
        let mut fixed = Vec::new();
        for _ in 0..20 {
            let at = noise.range(0, old.len() as u64) as usize;
            let mut new = old.clone();
            new.splice(at..at, noise.bytes(block));
            let (c, f) = fetched(&old, &new);
            cdc.push(c as f64);
            fixed.push(f as f64);
        }
        let q = |v: &mut Vec<f64>, p: f64| {
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * p).round() as usize]
        };
        let mib = 1048576.0;
        let over: Vec<f64> = cdc.iter().map(|c| (c - block as f64) / avg).collect();
        let ratio: Vec<f64> = fixed.iter().zip(&cdc).map(|(f, c)| f / c).collect();
        println!(
            "| {block} B | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}x |",
            q(&mut cdc.clone(), 0.5) / mib,
            q(&mut cdc.clone(), 0.9) / mib,
            q(&mut over.clone(), 0.5),
            q(&mut over.clone(), 0.9),
            q(&mut over.clone(), 1.0),
            q(&mut fixed.clone(), 0.5) / mib,
            q(&mut ratio.clone(), 0.5),
        );
    }
}
