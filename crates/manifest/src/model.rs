//! The manifest: what a release contains (entries and their ordered chunks)
//! and the table of unique chunks, plus the checks every decoded manifest passes.

use crate::path::{self, PathRule};
use crate::seal::SEAL_OVERHEAD;
use serde::{Deserialize, Serialize};
use shoal_types::Hash;
use std::collections::{HashMap, HashSet};

/// The manifest format of a plain release.
pub const FORMAT_VERSION: u32 = 1;

/// The format of an encrypted release (issue 17): format 1's fields, then
/// the [`Sealing`]. This code reads and writes both.
pub const SEALED_FORMAT_VERSION: u32 = 2;

/// Content-defined chunking parameters (FastCDC 2020), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkParams {
    /// 256 KiB / 1 MiB / 4 MiB, as agreed in the design.
    fn default() -> Self {
        ChunkParams {
            min: 256 << 10,
            avg: 1 << 20,
            max: 4 << 20,
        }
    }
}

/// Why chunking parameters are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "chunk sizes {min}/{avg}/{max} are invalid: need even sizes with min in 64 B..=1 MiB, \
     avg in 256 B..=4 MiB, max in 1 KiB..=16 MiB and min < avg < max"
)]
pub struct BadChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkParams {
    /// Checks the limits of the FastCDC implementation.
    pub fn check(&self) -> Result<(), BadChunkParams> {
        use fastcdc::v2020 as cdc;
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (cdc::MINIMUM_MIN..=cdc::MINIMUM_MAX).contains(&min)
            && (cdc::AVERAGE_MIN..=cdc::AVERAGE_MAX).contains(&avg)
            && (cdc::MAXIMUM_MIN..=cdc::MAXIMUM_MAX).contains(&max)
            && min < avg
            && avg < max
            && [min, avg, max].iter().all(|v| v % 2 == 0);
        if ok {
            Ok(())
        } else {
            Err(BadChunkParams {
                min: self.min,
                avg: self.avg,
                max: self.max,
            })
        }
    }
}

/// One unique chunk: its BLAKE3 hash and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub hash: Hash,
    pub len: u32,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A directory (every directory of the tree is listed, so empty ones and
    /// their modes survive).
    Dir,
    /// A regular file: its size and its content as indices into the chunk table.
    File { size: u64, chunks: Vec<u32> },
    /// A symbolic link whose relative target stays inside the tree.
    Symlink { target: String },
}

/// One path of the build tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// UTF-8, `/`-separated, relative to the tree root; see [`path::check_path`].
    pub path: String,
    /// Unix permission bits (`0o7777` at most).
    pub mode: u32,
    pub kind: EntryKind,
}

/// What an encrypted release adds to its manifest: every chunk of the table
/// is sealed ([`crate::seal`]), so its `hash` and `len` are those of the
/// ciphertext (what peers verify, store and serve; `len` includes the
/// [`SEAL_OVERHEAD`]) and this lists, index for index, the BLAKE3 hash of
/// its plaintext (what the launcher checks after opening it). Files' sizes
/// stay plaintext sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealing {
    pub plain: Vec<Hash>,
    /// [`crate::seal::ContentKey::check`] of the release's content key: lets
    /// the tracker refuse a wrong key at upload and the launcher a wrong key
    /// before it opens anything, and says nothing about the key.
    pub key_check: Hash,
}

/// A release's content: entries sorted by path, and unique chunks in order of
/// first use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub product: String,
    pub channel: String,
    /// The publisher's build label, e.g. `1.4.2`. The tracker numbers releases.
    pub version: String,
    pub chunking: ChunkParams,
    pub entries: Vec<Entry>,
    pub chunks: Vec<ChunkInfo>,
    /// Set (with format [`SEALED_FORMAT_VERSION`]) for an encrypted release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealing: Option<Sealing>,
}

/// Why a manifest is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidManifest {
    #[error(
        "unsupported manifest format {0} (this build reads formats {FORMAT_VERSION} and {SEALED_FORMAT_VERSION})"
    )]
    Format(u32),
    #[error("format {format} {}", if *.format == SEALED_FORMAT_VERSION { "needs its sealing" } else { "has no sealing" })]
    SealingFormat { format: u32 },
    #[error("the sealing lists {plain} plaintext hashes for {chunks} chunks")]
    SealingLength { plain: usize, chunks: usize },
    #[error("{field} {value:?} is invalid: use {}", shoal_types::id::RULE)]
    Name { field: &'static str, value: String },
    #[error(transparent)]
    ChunkParams(#[from] BadChunkParams),
    #[error("{path:?}: {rule}")]
    Path { path: String, rule: PathRule },
    #[error("{path:?} is listed twice")]
    Duplicate { path: String },
    #[error("entries are not sorted by path at {path:?}")]
    Unsorted { path: String },
    #[error("{a:?} and {b:?} differ only by case")]
    CaseCollision { a: String, b: String },
    #[error("{path:?} is not inside a listed directory")]
    Orphan { path: String },
    #[error("{path:?}: mode {mode:o} has bits beyond 0o7777")]
    Mode { path: String, mode: u32 },
    #[error("symlink {path:?} points outside the tree ({target:?})")]
    LinkEscapes { path: String, target: String },
    #[error("{path:?}: chunk index {index} is out of range")]
    ChunkIndex { path: String, index: u32 },
    #[error("{path:?}: size {size} differs from its chunks' total {sum}")]
    SizeMismatch { path: String, size: u64, sum: u64 },
    #[error("chunk {index} has length {len}, outside 1..={max}")]
    ChunkLength { index: usize, len: u32, max: u32 },
    #[error("chunk {hash} appears twice in the chunk table")]
    DuplicateChunk { hash: Hash },
    #[error("chunk {index} is in the table but no file uses it")]
    UnusedChunk { index: usize },
}

/// The rule for product, channel and version names: [`shoal_types::id`]'s
/// grammar, the one every crate checks (safe in paths, URLs and file names).
pub fn is_valid_name(value: &str) -> bool {
    shoal_types::id::is_valid(value)
}

pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), InvalidManifest> {
    if is_valid_name(value) {
        Ok(())
    } else {
        Err(InvalidManifest::Name {
            field,
            value: value.to_owned(),
        })
    }
}

impl Manifest {
    /// Checks everything a decoder cannot: names, path rules, ordering,
    /// case collisions, parent directories, symlink targets, chunk references,
    /// sizes and the uniqueness of the chunk table.
    pub fn validate(&self) -> Result<(), InvalidManifest> {
        match (self.format, &self.sealing) {
            (FORMAT_VERSION, None) | (SEALED_FORMAT_VERSION, Some(_)) => {}
            (FORMAT_VERSION | SEALED_FORMAT_VERSION, _) => {
                return Err(InvalidManifest::SealingFormat {
                    format: self.format,
                });
            }
            (other, _) => return Err(InvalidManifest::Format(other)),
        }
        if let Some(sealing) = &self.sealing {
            if sealing.plain.len() != self.chunks.len() {
                return Err(InvalidManifest::SealingLength {
                    plain: sealing.plain.len(),
                    chunks: self.chunks.len(),
                });
            }
            // The plaintext view must be a valid plain manifest: paths,
            // chunk lengths (each sealed chunk is longer than its tag),
            // plaintext sizes of files, unique plaintext hashes.
            if let Some(index) = self
                .chunks
                .iter()
                .position(|c| c.len as usize <= SEAL_OVERHEAD)
            {
                return Err(InvalidManifest::ChunkLength {
                    index,
                    len: self.chunks[index].len,
                    max: self.chunking.max + SEAL_OVERHEAD as u32,
                });
            }
            self.opened_view().validate()?;
            // Deterministic sealing makes distinct plaintexts distinct
            // ciphertexts: the table lists each once.
            let mut seen = HashSet::with_capacity(self.chunks.len());
            if let Some(c) = self.chunks.iter().find(|c| !seen.insert(c.hash)) {
                return Err(InvalidManifest::DuplicateChunk { hash: c.hash });
            }
            return Ok(());
        }
        check_name("product", &self.product)?;
        check_name("channel", &self.channel)?;
        check_name("version", &self.version)?;
        self.chunking.check()?;

        let mut dirs: HashSet<&str> = HashSet::new();
        let mut folded: HashMap<String, &str> = HashMap::new();
        let mut used = vec![false; self.chunks.len()];
        let mut links: HashMap<&str, &str> = HashMap::new();
        let mut previous: Option<&str> = None;
        for entry in &self.entries {
            let p = entry.path.as_str();
            path::check_path(p).map_err(|rule| InvalidManifest::Path {
                path: p.to_owned(),
                rule,
            })?;
            match previous {
                Some(prev) if prev == p => {
                    return Err(InvalidManifest::Duplicate { path: p.to_owned() });
                }
                Some(prev) if prev > p => {
                    return Err(InvalidManifest::Unsorted { path: p.to_owned() });
                }
                _ => {}
            }
            previous = Some(p);
            if let Some(a) = folded.insert(path::case_fold(p), p) {
                return Err(InvalidManifest::CaseCollision {
                    a: a.to_owned(),
                    b: p.to_owned(),
                });
            }
            if entry.mode & !0o7777 != 0 {
                return Err(InvalidManifest::Mode {
                    path: p.to_owned(),
                    mode: entry.mode,
                });
            }
            // Sorted order lists a directory before anything inside it
            // ("a" < "a/…"), so a parent must already have been seen.
            if let Some(parent) = path::parent(p)
                && !dirs.contains(parent)
            {
                return Err(InvalidManifest::Orphan { path: p.to_owned() });
            }
            match &entry.kind {
                EntryKind::Dir => {
                    dirs.insert(p);
                }
                EntryKind::Symlink { target } => {
                    if path::resolve_link(p, target).is_none() || target.len() > path::MAX_PATH_LEN
                    {
                        return Err(InvalidManifest::LinkEscapes {
                            path: p.to_owned(),
                            target: target.clone(),
                        });
                    }
                    links.insert(p, target.as_str());
                }
                EntryKind::File { size, chunks } => {
                    let mut sum = 0u64;
                    for &index in chunks {
                        let chunk = self.chunks.get(index as usize).ok_or_else(|| {
                            InvalidManifest::ChunkIndex {
                                path: p.to_owned(),
                                index,
                            }
                        })?;
                        used[index as usize] = true;
                        sum += u64::from(chunk.len);
                    }
                    if sum != *size {
                        return Err(InvalidManifest::SizeMismatch {
                            path: p.to_owned(),
                            size: *size,
                            sum,
                        });
                    }
                }
            }
        }
        // Each link alone stays inside (checked above); followed through the
        // tree's other links, as the player's kernel will, it must too.
        for entry in &self.entries {
            if let EntryKind::Symlink { target } = &entry.kind
                && path::resolve_link_in(&entry.path, target, |q| links.get(q).copied()).is_none()
            {
                return Err(InvalidManifest::LinkEscapes {
                    path: entry.path.clone(),
                    target: target.clone(),
                });
            }
        }

        let mut seen = HashSet::with_capacity(self.chunks.len());
        for (index, chunk) in self.chunks.iter().enumerate() {
            if chunk.len == 0 || chunk.len > self.chunking.max {
                return Err(InvalidManifest::ChunkLength {
                    index,
                    len: chunk.len,
                    max: self.chunking.max,
                });
            }
            if !seen.insert(chunk.hash) {
                return Err(InvalidManifest::DuplicateChunk { hash: chunk.hash });
            }
            if !used[index] {
                return Err(InvalidManifest::UnusedChunk { index });
            }
        }
        Ok(())
    }

    /// Whether this is an encrypted release.
    pub fn is_sealed(&self) -> bool {
        self.sealing.is_some()
    }

    /// The release as the launcher holds it once it is opened: a plain
    /// manifest whose chunk table lists each chunk's plaintext hash and
    /// length. A plain manifest is its own opened view.
    pub fn opened_view(&self) -> Manifest {
        let Some(sealing) = &self.sealing else {
            return self.clone();
        };
        let chunks = self
            .chunks
            .iter()
            .zip(&sealing.plain)
            .map(|(c, plain)| ChunkInfo {
                hash: *plain,
                len: c.len.saturating_sub(SEAL_OVERHEAD as u32),
            })
            .collect();
        Manifest {
            format: FORMAT_VERSION,
            chunks,
            sealing: None,
            ..self.without_sealing()
        }
    }

    /// The release as peers and the preload staging hold it: a plain
    /// manifest over the ciphertext, each file the concatenation of its
    /// sealed chunks (so its size grows by [`SEAL_OVERHEAD`] a chunk). Its
    /// chunks may exceed the chunking maximum by the overhead: it is for the
    /// store and the swarm, never validated as a published manifest. A
    /// plain manifest is its own sealed view.
    pub fn sealed_view(&self) -> Manifest {
        if self.sealing.is_none() {
            return self.clone();
        }
        let mut view = Manifest {
            format: FORMAT_VERSION,
            sealing: None,
            ..self.without_sealing()
        };
        for entry in &mut view.entries {
            if let EntryKind::File { size, chunks } = &mut entry.kind {
                *size = chunks
                    .iter()
                    .map(|&i| self.chunks.get(i as usize).map_or(0, |c| u64::from(c.len)))
                    .sum();
            }
        }
        view
    }

    fn without_sealing(&self) -> Manifest {
        Manifest {
            format: self.format,
            product: self.product.clone(),
            channel: self.channel.clone(),
            version: self.version.clone(),
            chunking: self.chunking,
            entries: self.entries.clone(),
            chunks: self.chunks.clone(),
            sealing: None,
        }
    }

    /// Bytes of all files (counting repeated chunks each time they are used).
    pub fn total_size(&self) -> u64 {
        self.files().map(|(_, size, _)| size).sum()
    }

    /// Bytes of the unique chunks: what a full download transfers.
    pub fn unique_size(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len)).sum()
    }

    /// Regular files as `(path, size, chunk indices)`.
    pub fn files(&self) -> impl Iterator<Item = (&str, u64, &[u32])> {
        self.entries.iter().filter_map(|e| match &e.kind {
            EntryKind::File { size, chunks } => Some((e.path.as_str(), *size, chunks.as_slice())),
            _ => None,
        })
    }
}
