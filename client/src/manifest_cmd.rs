//! `shoal manifest show` and `shoal manifest diff`.

use crate::cli::ManifestCommand;
use crate::{Exit, human, with_exit};
use anyhow::Context as _;
use serde::Serialize;
use shoal_manifest::{ChunkParams, EntryKind, Manifest, SignedManifest, bundle};
use std::path::Path;

pub(crate) fn run(cmd: &ManifestCommand) -> anyhow::Result<()> {
    match cmd {
        ManifestCommand::Show {
            file,
            entries,
            json,
        } => show(file, *entries, *json),
        ManifestCommand::Diff { old, new, json } => diff(old, new, *json),
    }
}

/// Reads and verifies a signed manifest from a file or a bundle directory.
pub(crate) fn load(path: &Path) -> anyhow::Result<(SignedManifest, Manifest)> {
    let file = if path.is_dir() {
        path.join(bundle::MANIFEST_FILE)
    } else {
        path.to_owned()
    };
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let opened = SignedManifest::from_bytes(&bytes).and_then(|s| s.open().map(|m| (s, m)));
    opened
        .with_context(|| format!("{}", file.display()))
        .map_err(|e| with_exit(e, Exit::BadInput))
}

#[derive(Serialize)]
struct ShowEntry<'a> {
    path: &'a str,
    kind: &'static str,
    mode: String,
    size: u64,
    chunks: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
}

#[derive(Serialize)]
struct Show<'a> {
    product: &'a str,
    channel: &'a str,
    version: &'a str,
    manifest_hash: String,
    publisher: String,
    signature: &'static str,
    chunking: ChunkParams,
    entries: usize,
    files: usize,
    total_bytes: u64,
    unique_bytes: u64,
    chunks: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    list: Option<Vec<ShowEntry<'a>>>,
}

fn show(path: &Path, list_entries: bool, json: bool) -> anyhow::Result<()> {
    let (signed, m) = load(path)?;
    let list = (list_entries || json).then(|| {
        m.entries
            .iter()
            .map(|e| {
                let (kind, size, chunks, target) = match &e.kind {
                    EntryKind::Dir => ("dir", 0, 0, None),
                    EntryKind::File { size, chunks } => ("file", *size, chunks.len(), None),
                    EntryKind::Symlink { target } => ("link", 0, 0, Some(target.as_str())),
                };
                ShowEntry {
                    path: &e.path,
                    kind,
                    mode: format!("{:04o}", e.mode),
                    size,
                    chunks,
                    target,
                }
            })
            .collect::<Vec<_>>()
    });
    let show = Show {
        product: &m.product,
        channel: &m.channel,
        version: &m.version,
        manifest_hash: signed.hash().to_string(),
        publisher: signed.publisher().to_string(),
        signature: "valid",
        chunking: m.chunking,
        entries: m.entries.len(),
        files: m.files().count(),
        total_bytes: m.total_size(),
        unique_bytes: m.unique_size(),
        chunks: m.chunks.len(),
        list,
    };
    if json {
        println!("{}", serde_json::to_string(&show)?);
        return Ok(());
    }
    println!("{}/{} {}", show.product, show.channel, show.version);
    println!("  manifest      {}", show.manifest_hash);
    println!("  publisher     {} (signature valid)", show.publisher);
    println!(
        "  files         {} of {} entries, {}",
        human::count(show.files as u64),
        human::count(show.entries as u64),
        human::bytes(show.total_bytes)
    );
    println!(
        "  chunks        {} unique, {} (sizes {}/{}/{})",
        human::count(show.chunks as u64),
        human::bytes(show.unique_bytes),
        human::bytes(m.chunking.min.into()),
        human::bytes(m.chunking.avg.into()),
        human::bytes(m.chunking.max.into())
    );
    if let Some(list) = show.list {
        for e in list {
            let detail = match e.target {
                Some(t) => format!("-> {t}"),
                None if e.kind == "file" => {
                    format!("{} in {} chunks", human::bytes(e.size), e.chunks)
                }
                None => String::new(),
            };
            println!("  {} {:4} {}  {detail}", e.mode, e.kind, e.path);
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct DiffOut<'a> {
    old: String,
    new: String,
    fetch_bytes: u64,
    fetch_chunks: usize,
    reused_bytes: u64,
    reused_chunks: u64,
    new_unique_bytes: u64,
    added: &'a [String],
    removed: &'a [String],
    changed: &'a [String],
}

fn diff(old_path: &Path, new_path: &Path, json: bool) -> anyhow::Result<()> {
    let (_, old) = load(old_path)?;
    let (_, new) = load(new_path)?;
    let d = shoal_manifest::diff(&old, &new);
    let out = DiffOut {
        old: format!("{}/{} {}", old.product, old.channel, old.version),
        new: format!("{}/{} {}", new.product, new.channel, new.version),
        fetch_bytes: d.fetch_bytes,
        fetch_chunks: d.needed.len(),
        reused_bytes: d.reused_bytes,
        reused_chunks: d.reused_chunks,
        new_unique_bytes: new.unique_size(),
        added: &d.added_paths,
        removed: &d.removed_paths,
        changed: &d.changed_paths,
    };
    if json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!("{} -> {}", out.old, out.new);
    println!(
        "  fetch    {} in {} chunks ({:.1}% of the new release)",
        human::bytes(out.fetch_bytes),
        human::count(out.fetch_chunks as u64),
        100.0 * out.fetch_bytes as f64 / out.new_unique_bytes.max(1) as f64
    );
    println!(
        "  reuse    {} in {} chunks",
        human::bytes(out.reused_bytes),
        human::count(out.reused_chunks)
    );
    for (label, paths) in [
        ("added", out.added),
        ("removed", out.removed),
        ("changed", out.changed),
    ] {
        println!("  {label:8} {}", paths.len());
        for p in paths {
            println!("    {p}");
        }
    }
    Ok(())
}
