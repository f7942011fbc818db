//! The house rule that every task we spawn runs in a tracing span, so each
//! log line says which node, swarm, peer or service it came from: every
//! `tokio::spawn(…)` in the workspace's sources instruments its future
//! (`.instrument(span)`), and every `std::thread::spawn(…)` and
//! `tokio::task::spawn_blocking(…)` enters one (`span.in_scope(…)`: the
//! caller's, for blocking work it awaits).

use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// Source folders of the crates that ship (tests and benches aside).
pub const SOURCE_DIRS: &[&str] = &[
    "crates/types/src",
    "crates/manifest/src",
    "crates/token/src",
    "crates/scheduler/src",
    "crates/wire/src",
    "crates/net/src",
    "crates/store/src",
    "crates/metrics/src",
    "tracker/src",
    "seed/src",
    "client/src",
    "demo/src",
];

/// A spawn without a span: where, and the call's first line.
#[derive(Debug, PartialEq, Eq)]
pub struct Unspanned {
    pub place: String,
    pub call: String,
}

/// The spawns in `text` whose argument carries no span.
pub fn unspanned(name: &str, text: &str) -> Vec<Unspanned> {
    let rules = [
        ("tokio::spawn(", ".instrument("),
        ("std::thread::spawn(", "in_scope("),
        ("tokio::task::spawn_blocking(", "in_scope("),
    ];
    let mut found = Vec::new();
    for (call, needs) in rules {
        let mut from = 0;
        while let Some(at) = text[from..].find(call) {
            let start = from + at;
            let open = start + call.len();
            let mut depth = 1usize;
            let mut end = open;
            for (i, c) in text[open..].char_indices() {
                match c {
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = open + i;
                    break;
                }
            }
            if !text[open..end].contains(needs) {
                let line = text[..start].matches('\n').count() + 1;
                found.push(Unspanned {
                    place: format!("{name}:{line}"),
                    call: text[start..].lines().next().unwrap_or_default().to_owned(),
                });
            }
            from = open;
        }
    }
    found
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The unspanned spawns of the workspace, and how many files were read.
pub fn check_workspace() -> anyhow::Result<(usize, Vec<Unspanned>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        rust_files(&root.join(dir), &mut files)?;
    }
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        found.extend(unspanned(&name, &text));
    }
    Ok((files.len(), found))
}
