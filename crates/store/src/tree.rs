//! One build tree on disk (staged or installed): where each chunk of its
//! manifest lives, verified reads, writes of verified chunks to every place
//! they occur, creation of the skeleton, and the check behind `shoal verify`.

use crate::StoreError;
use crate::disk::{read_at, sync_dir, write_at};
use shoal_manifest::{EntryKind, Manifest, VerifiedChunk, verify};
use shoal_types::Hash;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A build's files and the positions of each chunk within them.
/// Above this many files, a sync is one syncfs(2) rather than an fsync each.
const SYNC_FILES_ONE_BY_ONE: usize = 16;

#[derive(Debug)]
pub struct Tree {
    dir: PathBuf,
    manifest: Arc<Manifest>,
    /// Regular files: (path relative to the tree, size).
    files: Vec<(String, u64)>,
    /// For each chunk index: (file index, offset) of every occurrence.
    positions: Vec<Vec<(u32, u64)>>,
}

/// What is wrong with one file of an install.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    pub path: String,
    pub problem: Problem,
    /// Chunk indices whose bytes are wrong or missing in this file.
    pub chunks: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    Missing,
    WrongSize {
        expected: u64,
        actual: u64,
    },
    BadChunks,
    /// A directory or link that is missing or is something else.
    WrongKind,
}

impl Tree {
    pub fn new(dir: PathBuf, manifest: Arc<Manifest>) -> Tree {
        let mut files = Vec::new();
        let mut positions = vec![Vec::new(); manifest.chunks.len()];
        for (path, size, chunks) in manifest.files() {
            let file = files.len() as u32;
            files.push((path.to_owned(), size));
            let mut offset = 0u64;
            for &c in chunks {
                positions[c as usize].push((file, offset));
                offset += u64::from(manifest.chunks[c as usize].len);
            }
        }
        Tree {
            dir,
            manifest,
            files,
            positions,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Arc<Manifest> {
        &self.manifest
    }

    /// The first place chunk `index` lives: (path, offset).
    pub fn first_position(&self, index: u32) -> Option<(&str, u64)> {
        let &(file, offset) = self.positions.get(index as usize)?.first()?;
        Some((self.files[file as usize].0.as_str(), offset))
    }

    fn path_of(&self, file: u32) -> PathBuf {
        self.dir.join(&self.files[file as usize].0)
    }

    /// Reads chunk `index` from its first position, unverified: for a
    /// caller that verifies the bytes another way (an unlock checks the tag
    /// and the plaintext hash). `None` if it cannot be read.
    pub fn read_chunk_unverified(&self, index: u32) -> Option<Vec<u8>> {
        let info = self.manifest.chunks.get(index as usize)?;
        let &(file, offset) = self.positions.get(index as usize)?.first()?;
        read_at(&self.path_of(file), offset, info.len as usize).ok()
    }

    /// Reads chunk `index` from its first position and verifies it; `None`
    /// if it is absent or damaged (damaged bytes never leave this function).
    pub fn read_chunk(&self, index: u32) -> Option<Vec<u8>> {
        let data = self.read_chunk_unverified(index)?;
        match verify(&self.manifest, index, &data) {
            Ok(_) => Some(data),
            Err(e) => {
                tracing::debug!(index, error = %e, "stored chunk failed verification");
                None
            }
        }
    }

    /// Bytes a write of chunk `index` puts on disk (all its occurrences).
    pub fn write_len(&self, index: u32) -> u64 {
        let len = self
            .manifest
            .chunks
            .get(index as usize)
            .map_or(0, |c| u64::from(c.len));
        len * self
            .positions
            .get(index as usize)
            .map_or(0, |p| p.len() as u64)
    }

    /// Writes a verified chunk to every position it occupies; returns the
    /// file indices written, so the caller can sync them.
    pub fn write_chunk(&self, chunk: VerifiedChunk<'_>) -> io::Result<Vec<u32>> {
        let places = self
            .positions
            .get(chunk.index() as usize)
            .map_or(&[][..], Vec::as_slice);
        let mut touched = Vec::with_capacity(places.len());
        for &(file, offset) in places {
            write_at(&self.path_of(file), offset, chunk.data())?;
            touched.push(file);
        }
        Ok(touched)
    }

    pub fn sync_files(&self, files: impl IntoIterator<Item = u32>) -> Result<(), StoreError> {
        let files: Vec<u32> = files.into_iter().collect();
        if files.len() > SYNC_FILES_ONE_BY_ONE {
            return crate::disk::sync_fs(&self.dir);
        }
        for f in files {
            let path = self.path_of(f);
            fs::File::open(&path)
                .and_then(|h| h.sync_data())
                .map_err(StoreError::io(&path))?;
        }
        Ok(())
    }

    /// Creates directories and sparse files of the right sizes (existing
    /// files are kept, so staged bytes survive a restart).
    pub fn create_skeleton(&self) -> Result<(), StoreError> {
        fs::create_dir_all(&self.dir).map_err(StoreError::io(&self.dir))?;
        for e in &self.manifest.entries {
            let path = self.dir.join(&e.path);
            match &e.kind {
                EntryKind::Dir => fs::create_dir_all(&path).map_err(StoreError::io(&path))?,
                EntryKind::File { size, .. } => {
                    let f = fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)
                        .map_err(StoreError::io(&path))?;
                    if f.metadata().map_err(StoreError::io(&path))?.len() != *size {
                        f.set_len(*size).map_err(StoreError::io(&path))?;
                    }
                }
                EntryKind::Symlink { .. } => {}
            }
        }
        Ok(())
    }

    /// Makes the tree final: links, modes, every file and directory fsynced.
    pub fn finish(&self) -> Result<(), StoreError> {
        // Many files: one syncfs at the end makes all of it durable; an
        // fsync per file and directory costs a disk flush each.
        let one_by_one = self.files.len() <= SYNC_FILES_ONE_BY_ONE;
        for e in &self.manifest.entries {
            let path = self.dir.join(&e.path);
            match &e.kind {
                EntryKind::Symlink { target } => {
                    let _ = fs::remove_file(&path);
                    std::os::unix::fs::symlink(target, &path).map_err(StoreError::io(&path))?;
                }
                EntryKind::File { .. } if one_by_one => {
                    let f = fs::File::open(&path).map_err(StoreError::io(&path))?;
                    f.sync_all().map_err(StoreError::io(&path))?;
                }
                EntryKind::File { .. } | EntryKind::Dir => {}
            }
        }
        // Modes last (a read-only directory would refuse its own files),
        // deepest directories first so parents are synced after children.
        for e in self.manifest.entries.iter().rev() {
            let path = self.dir.join(&e.path);
            if !matches!(e.kind, EntryKind::Symlink { .. }) {
                fs::set_permissions(&path, fs::Permissions::from_mode(e.mode & 0o7777))
                    .map_err(StoreError::io(&path))?;
            }
            if one_by_one && matches!(e.kind, EntryKind::Dir) {
                sync_dir(&path)?;
            }
        }
        if one_by_one {
            sync_dir(&self.dir)
        } else {
            crate::disk::sync_fs(&self.dir)
        }
    }

    /// Rehashes every file against the manifest; `progress` gets bytes read.
    pub fn check(&self, mut progress: impl FnMut(u64)) -> Vec<Damage> {
        let mut damage = Vec::new();
        for e in &self.manifest.entries {
            let path = self.dir.join(&e.path);
            let meta = fs::symlink_metadata(&path);
            match &e.kind {
                EntryKind::Dir | EntryKind::Symlink { .. } => {
                    let ok = match (&e.kind, &meta) {
                        (EntryKind::Dir, Ok(m)) => m.is_dir(),
                        (EntryKind::Symlink { target }, Ok(m)) => {
                            m.file_type().is_symlink()
                                && fs::read_link(&path).is_ok_and(|t| t == Path::new(target))
                        }
                        _ => false,
                    };
                    if !ok {
                        damage.push(Damage {
                            path: e.path.clone(),
                            problem: Problem::WrongKind,
                            chunks: Vec::new(),
                        });
                    }
                }
                EntryKind::File { size, chunks } => {
                    let problem = match &meta {
                        Err(_) => Some(Problem::Missing),
                        Ok(m) if !m.is_file() => Some(Problem::Missing),
                        Ok(m) if m.len() != *size => Some(Problem::WrongSize {
                            expected: *size,
                            actual: m.len(),
                        }),
                        Ok(_) => None,
                    };
                    if let Some(problem) = problem {
                        progress(*size);
                        damage.push(Damage {
                            path: e.path.clone(),
                            problem,
                            chunks: dedup(chunks.clone()),
                        });
                        continue;
                    }
                    let bad = self.bad_chunks(&path, chunks, &mut progress);
                    if !bad.is_empty() {
                        damage.push(Damage {
                            path: e.path.clone(),
                            problem: Problem::BadChunks,
                            chunks: bad,
                        });
                    }
                }
            }
        }
        damage
    }

    fn bad_chunks(&self, path: &Path, chunks: &[u32], progress: &mut impl FnMut(u64)) -> Vec<u32> {
        let mut bad = Vec::new();
        let Ok(file) = fs::File::open(path) else {
            return dedup(chunks.to_vec());
        };
        let mut buf = Vec::new();
        let mut offset = 0u64;
        for &c in chunks {
            let info = self.manifest.chunks[c as usize];
            buf.resize(info.len as usize, 0);
            let ok = std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, offset).is_ok()
                && Hash::of(&buf) == info.hash;
            if !ok {
                bad.push(c);
            }
            offset += u64::from(info.len);
            progress(u64::from(info.len));
        }
        dedup(bad)
    }
}

fn dedup(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v.dedup();
    v
}
