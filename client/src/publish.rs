//! `shoal publish`: chunk and hash a build tree on all cores, sign the
//! manifest and write a bundle that a seed can import and serve; with
//! `--tracker` and `--seed`, register it and push it to running seeds.

use crate::cli::{PublishArgs, PushArgs};
use crate::push::{Pushed, Registered};
use crate::{Exit, human, keygen, progress, with_exit};
use anyhow::Context as _;
use serde::Serialize;
use shoal_manifest::seal::ContentKey;
use shoal_manifest::{
    BuildError, BuildOptions, BundleError, BundleWriter, ChunkParams, EntryKind, Manifest,
    Progress, SignedManifest,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What `shoal publish` reports (and prints with `--json`).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub product: String,
    pub channel: String,
    pub version: String,
    pub out: PathBuf,
    pub manifest_hash: String,
    pub publisher: String,
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub total_bytes: u64,
    pub unique_bytes: u64,
    pub chunks: u64,
    pub chunk_refs: u64,
    pub dedup_ratio: f64,
    pub seconds: f64,
    pub bytes_per_sec: f64,
    /// Set when the release was registered with a tracker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered: Option<Registered>,
    /// The seeds it was pushed to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<Pushed>,
    /// An encrypted release: where its content key was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_key: Option<PathBuf>,
}

/// Where `publish --encrypt` writes the content key: beside the bundle
/// (`OUT.content-key`, whatever the trailing slashes), never inside it.
fn content_key_path(args: &PublishArgs) -> anyhow::Result<PathBuf> {
    let path = match &args.target.content_key {
        Some(p) => p.clone(),
        None => {
            let name = args.out.file_name().unwrap_or(args.out.as_os_str());
            let mut name = name.to_owned();
            name.push(".content-key");
            args.out.with_file_name(name)
        }
    };
    let inside = std::path::absolute(&path)?.starts_with(std::path::absolute(&args.out)?);
    if inside {
        return Err(with_exit(
            anyhow::anyhow!(
                "--content-key {} is inside the bundle {}: the key must never travel with it",
                path.display(),
                args.out.display()
            ),
            Exit::BadInput,
        ));
    }
    Ok(path)
}

/// Writes a new content key file (64 hex digits, owner-only), refusing to
/// replace one: a key is never overwritten.
fn write_content_key(path: &std::path::Path, key: &ContentKey) -> anyhow::Result<()> {
    let text = format!("{}\n", key.to_hex());
    keygen::write_secret_file(
        path,
        &text,
        "a content key (a key is never overwritten; choose another --content-key)",
    )
}

/// Reads a content key file that `publish --encrypt` wrote.
pub(crate) fn read_content_key(path: &std::path::Path) -> anyhow::Result<ContentKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| with_exit(e, Exit::BadInput))
        .with_context(|| format!("reading the content key {}", path.display()))?;
    ContentKey::from_hex(text.trim()).ok_or_else(|| {
        with_exit(
            anyhow::anyhow!(
                "{} is not a content key (64 hex digits, as `shoal publish --encrypt` writes)",
                path.display()
            ),
            Exit::BadInput,
        )
    })
}

pub(crate) fn run(args: &PublishArgs) -> anyhow::Result<()> {
    let key = keygen::read_key_file(&args.key)?;
    let chunking = ChunkParams {
        min: args.min_chunk,
        avg: args.avg_chunk,
        max: args.max_chunk,
    };
    chunking.check().map_err(|e| with_exit(e, Exit::BadInput))?;
    let options = BuildOptions {
        product: args.product.clone(),
        channel: args.channel.clone(),
        version: args.version.clone(),
        chunking,
        threads: args.threads,
    };

    let key_path = if args.encrypt {
        Some(content_key_path(args)?)
    } else {
        if args.target.unlock_at.is_some() {
            return Err(with_exit(
                anyhow::anyhow!("--unlock-at is for an encrypted release: add --encrypt"),
                Exit::BadInput,
            ));
        }
        None
    };

    let start = Instant::now();
    let writer = BundleWriter::create(&args.out).map_err(|e| match e {
        BundleError::NotEmpty(_) => with_exit(e, Exit::OutputExists),
        other => anyhow::Error::new(other).context("preparing the output directory"),
    })?;
    // Once the output is known to be usable, the key is written, before
    // anything is sealed with it and never over another: a lost key is a
    // release that can never be unlocked.
    let content_key = match key_path {
        Some(path) => {
            let key = ContentKey::generate();
            write_content_key(&path, &key)?;
            Some((path, key))
        }
        None => None,
    };
    let progress = Progress::default();
    let stop = AtomicBool::new(false);
    let built = std::thread::scope(|scope| {
        let reporter = scope.spawn(|| {
            if !args.json {
                progress::report(
                    "publishing",
                    &progress.done_bytes,
                    &progress.total_bytes,
                    &stop,
                );
            }
        });
        let result = match &content_key {
            Some((_, key)) => {
                shoal_manifest::build_sealed(&args.build_dir, &options, key, &writer, &progress)
            }
            None => shoal_manifest::build(&args.build_dir, &options, &writer, &progress),
        };
        stop.store(true, Ordering::Release);
        reporter.thread().unpark();
        result
    });
    let manifest = built.map_err(|e| {
        let code = match e {
            BuildError::Sink { .. } => None,
            _ => Some(Exit::BadInput),
        };
        let err = anyhow::Error::new(e).context(format!("publishing {}", args.build_dir.display()));
        match code {
            Some(code) => with_exit(err, code),
            None => err,
        }
    })?;
    let signed = SignedManifest::sign(&manifest, &key);
    let out = writer.finish(&signed).context("finishing the bundle")?;
    let elapsed = start.elapsed();

    let mut summary = summarise(&manifest, &signed, out, elapsed);
    summary.content_key = content_key.as_ref().map(|(path, _)| path.clone());
    if !args.json {
        print_summary(&summary);
    }
    let key = content_key.as_ref().map(|(_, key)| key);
    let (registered, seeds) =
        crate::push::register_and_push(&args.target, &summary.out, key, args.json)?;
    summary.registered = registered;
    summary.seeds = seeds;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// `shoal push`: register an existing bundle and push it to seeds.
pub(crate) fn push(args: &PushArgs) -> anyhow::Result<()> {
    if args.target.tracker.is_none() {
        return Err(with_exit(
            anyhow::anyhow!("--tracker is required: seeds take only registered releases"),
            Exit::BadInput,
        ));
    }
    let key = match &args.target.content_key {
        Some(path) => Some(read_content_key(path)?),
        None => None,
    };
    let (registered, seeds) =
        crate::push::register_and_push(&args.target, &args.bundle, key.as_ref(), args.json)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"registered": registered, "seeds": seeds})
        );
    }
    Ok(())
}

fn summarise(
    manifest: &Manifest,
    signed: &SignedManifest,
    out: PathBuf,
    elapsed: Duration,
) -> Summary {
    let count =
        |f: fn(&EntryKind) -> bool| manifest.entries.iter().filter(|e| f(&e.kind)).count() as u64;
    let total = manifest.total_size();
    let unique = manifest.unique_size();
    let seconds = elapsed.as_secs_f64();
    Summary {
        product: manifest.product.clone(),
        channel: manifest.channel.clone(),
        version: manifest.version.clone(),
        out,
        manifest_hash: signed.hash().to_string(),
        publisher: signed.publisher().to_string(),
        files: count(|k| matches!(k, EntryKind::File { .. })),
        dirs: count(|k| matches!(k, EntryKind::Dir)),
        links: count(|k| matches!(k, EntryKind::Symlink { .. })),
        total_bytes: total,
        unique_bytes: unique,
        chunks: manifest.chunks.len() as u64,
        chunk_refs: manifest.files().map(|(_, _, c)| c.len() as u64).sum(),
        dedup_ratio: if unique == 0 {
            1.0
        } else {
            total as f64 / unique as f64
        },
        seconds,
        bytes_per_sec: total as f64 / seconds.max(1e-9),
        registered: None,
        seeds: Vec::new(),
        content_key: None,
    }
}

fn print_summary(s: &Summary) {
    println!(
        "published {}/{} {} -> {}",
        s.product,
        s.channel,
        s.version,
        s.out.display()
    );
    println!(
        "  files         {} ({}, {})",
        human::count(s.files),
        human::plural(s.dirs, "directory", "directories"),
        human::plural(s.links, "link", "links")
    );
    println!("  size          {}", human::bytes(s.total_bytes));
    println!(
        "  chunks        {} unique, {} references",
        human::count(s.chunks),
        human::count(s.chunk_refs)
    );
    println!(
        "  unique bytes  {} (dedup {:.2}x)",
        human::bytes(s.unique_bytes),
        s.dedup_ratio
    );
    println!(
        "  time          {} ({})",
        human::duration(Duration::from_secs_f64(s.seconds)),
        human::rate(s.bytes_per_sec)
    );
    println!("  manifest      {}", s.manifest_hash);
    if let Some(key) = &s.content_key {
        println!(
            "  encrypted     content key in {} (keep it secret; it is needed to unlock)",
            key.display()
        );
    }
    println!("  publisher     {}", s.publisher);
}
