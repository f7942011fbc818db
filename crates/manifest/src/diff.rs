//! What an update needs: the chunks of the new manifest that the old one lacks.

use crate::model::Manifest;
use serde::Serialize;
use shoal_types::Hash;
use std::collections::HashSet;

/// The difference between an installed manifest and a new one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Diff {
    /// Indices (in the new manifest's chunk table) of chunks to fetch.
    pub needed: Vec<u32>,
    /// Bytes to fetch: the total length of `needed`.
    pub fetch_bytes: u64,
    /// Unique chunks of the new manifest already present in the old one.
    pub reused_chunks: u64,
    /// Bytes of those chunks.
    pub reused_bytes: u64,
    /// Files (and links, directories) in the new manifest that are absent from the old one.
    pub added_paths: Vec<String>,
    /// Paths of the old manifest that the new one no longer has.
    pub removed_paths: Vec<String>,
    /// Paths in both whose content, target, kind or mode changed.
    pub changed_paths: Vec<String>,
}

impl Diff {
    /// True when the new manifest needs nothing and changes no path.
    pub fn is_empty(&self) -> bool {
        self.needed.is_empty()
            && self.added_paths.is_empty()
            && self.removed_paths.is_empty()
            && self.changed_paths.is_empty()
    }
}

/// Compares `old` (installed) with `new` (wanted).
pub fn diff(old: &Manifest, new: &Manifest) -> Diff {
    let have: HashSet<Hash> = old.chunks.iter().map(|c| c.hash).collect();
    let mut out = Diff::default();
    for (index, chunk) in new.chunks.iter().enumerate() {
        if have.contains(&chunk.hash) {
            out.reused_chunks += 1;
            out.reused_bytes += u64::from(chunk.len);
        } else {
            out.needed.push(index as u32);
            out.fetch_bytes += u64::from(chunk.len);
        }
    }

    // Both entry lists are sorted by path: merge them.
    let (mut i, mut j) = (0, 0);
    loop {
        let a = old.entries.get(i);
        let b = new.entries.get(j);
        match (a, b) {
            (Some(a), Some(b)) if a.path == b.path => {
                if a.mode != b.mode || !same_content(old, a, new, b) {
                    out.changed_paths.push(b.path.clone());
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.path < b.path => {
                out.removed_paths.push(a.path.clone());
                i += 1;
            }
            (Some(a), None) => {
                out.removed_paths.push(a.path.clone());
                i += 1;
            }
            (_, Some(b)) => {
                out.added_paths.push(b.path.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

fn same_content(
    old: &Manifest,
    a: &crate::model::Entry,
    new: &Manifest,
    b: &crate::model::Entry,
) -> bool {
    use crate::model::EntryKind::*;
    match (&a.kind, &b.kind) {
        (Dir, Dir) => true,
        (Symlink { target: x }, Symlink { target: y }) => x == y,
        (
            File {
                size: sa,
                chunks: ca,
            },
            File {
                size: sb,
                chunks: cb,
            },
        ) => {
            sa == sb
                && ca.len() == cb.len()
                && ca.iter().zip(cb).all(|(x, y)| {
                    let hx = old.chunks.get(*x as usize).map(|c| c.hash);
                    hx.is_some() && hx == new.chunks.get(*y as usize).map(|c| c.hash)
                })
        }
        _ => false,
    }
}
