//! The publish output: a directory holding `manifest.shoal` (the signed
//! manifest) and `chunks/xx/<hash>` (one file per unique chunk), from which a
//! seed imports or serves a release.
//!
//! A bundle is written under a temporary sibling name and renamed into place
//! only when complete and synced, so a half-written bundle never looks whole.

use crate::build::ChunkSink;
use crate::codec::{ManifestError, SignedManifest};
use crate::model::Manifest;
use crate::verify::{VerifyError, verify};
use shoal_types::Hash;
use std::collections::HashSet;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// File name of the signed manifest inside a bundle.
pub const MANIFEST_FILE: &str = "manifest.shoal";
/// Directory of chunk files inside a bundle.
pub const CHUNKS_DIR: &str = "chunks";

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} exists and is not an empty directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("{}: {source}", path.display())]
    Manifest {
        path: PathBuf,
        source: ManifestError,
    },
    #[error("chunk {index} in {}: {source}", path.display())]
    Chunk {
        path: PathBuf,
        index: u32,
        source: VerifyError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where the chunk with `hash` lives under a bundle (or any chunk directory).
pub fn chunk_path(chunks_dir: &Path, hash: &Hash) -> PathBuf {
    let hex = hash.to_string();
    chunks_dir.join(&hex[..2]).join(hex)
}

/// Asks the kernel to start writing `file` to disk now, without waiting, so
/// the disk works while the publisher goes on hashing.
#[cfg(target_os = "linux")]
fn start_writeback(file: &fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(file: &fs::File) -> io::Result<()> {
    file.sync_data()
}

/// Flushes everything written to the file system holding `file` (chunks
/// included) and waits for it.
#[cfg(target_os = "linux")]
fn sync_file_system(file: &fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: syncfs only reads the descriptor, which `file` keeps open.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_file_system(file: &fs::File) -> io::Result<()> {
    file.sync_all()
}

fn sync_dir(path: &Path) -> Result<(), BundleError> {
    fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path))
}

/// Writes a bundle. Dropping it before [`BundleWriter::finish`] removes the
/// partial output.
#[derive(Debug)]
pub struct BundleWriter {
    out: PathBuf,
    partial: PathBuf,
    written: Mutex<HashSet<Hash>>,
    bytes: AtomicU64,
    finished: bool,
}

impl BundleWriter {
    /// Prepares to write a bundle at `out`, which must not exist or be an
    /// empty directory.
    pub fn create(out: &Path) -> Result<BundleWriter, BundleError> {
        match fs::read_dir(out) {
            Ok(mut items) => {
                if items.next().is_some() {
                    return Err(BundleError::NotEmpty(out.to_owned()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Err(BundleError::NotEmpty(out.to_owned()));
            }
            Err(e) => return Err(io_err(out)(e)),
        }
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let partial = parent.join(format!(".{name}.partial-{}", std::process::id()));
        // A leftover from a crashed run with the same pid is ours to replace.
        if partial.exists() {
            fs::remove_dir_all(&partial).map_err(io_err(&partial))?;
        }
        let chunks = partial.join(CHUNKS_DIR);
        fs::create_dir_all(&chunks).map_err(io_err(&chunks))?;
        for byte in 0..=255u8 {
            let sub = chunks.join(format!("{byte:02x}"));
            fs::create_dir(&sub).map_err(io_err(&sub))?;
        }
        Ok(BundleWriter {
            out: out.to_owned(),
            partial,
            written: Mutex::new(HashSet::new()),
            bytes: AtomicU64::new(0),
            finished: false,
        })
    }

    /// Bytes of unique chunks written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Writes the signed manifest, syncs everything, and moves the bundle into
    /// place. Returns the bundle directory.
    pub fn finish(mut self, signed: &SignedManifest) -> Result<PathBuf, BundleError> {
        let path = self.partial.join(MANIFEST_FILE);
        let mut file = fs::File::create(&path).map_err(io_err(&path))?;
        file.write_all(&signed.to_bytes()).map_err(io_err(&path))?;
        // One file-system-wide sync waits for every chunk's writeback (started
        // as each was written) instead of one fsync per chunk.
        sync_file_system(&file).map_err(io_err(&self.partial))?;
        let chunks = self.partial.join(CHUNKS_DIR);
        for byte in 0..=255u8 {
            sync_dir(&chunks.join(format!("{byte:02x}")))?;
        }
        sync_dir(&chunks)?;
        sync_dir(&self.partial)?;
        // rename(2) replaces an empty directory atomically.
        fs::rename(&self.partial, &self.out).map_err(io_err(&self.out))?;
        if let Some(parent) = self.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        self.finished = true;
        Ok(self.out.clone())
    }
}

impl ChunkSink for BundleWriter {
    fn put(&self, hash: &Hash, data: &[u8]) -> io::Result<()> {
        let fresh = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*hash);
        if !fresh {
            return Ok(());
        }
        let path = chunk_path(&self.partial.join(CHUNKS_DIR), hash);
        let result = fs::File::create_new(&path).and_then(|mut f| {
            f.write_all(data)?;
            start_writeback(&f)
        });
        if result.is_err() {
            // Let another copy of the chunk try again.
            self.written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(hash);
            let _ = fs::remove_file(&path);
        }
        result?;
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for BundleWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_dir_all(&self.partial);
        }
    }
}

/// A bundle on disk, its signature checked and manifest validated.
#[derive(Debug)]
pub struct Bundle {
    dir: PathBuf,
    signed: SignedManifest,
    manifest: Manifest,
}

impl Bundle {
    /// Opens the bundle in `dir`.
    pub fn open(dir: &Path) -> Result<Bundle, BundleError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let manifest_err = |source| BundleError::Manifest {
            path: path.clone(),
            source,
        };
        let signed = SignedManifest::from_bytes(&bytes).map_err(manifest_err)?;
        let manifest = signed.open().map_err(manifest_err)?;
        Ok(Bundle {
            dir: dir.to_owned(),
            signed,
            manifest,
        })
    }

    pub fn signed(&self) -> &SignedManifest {
        &self.signed
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads chunk `index` and verifies it; a damaged chunk file is an error.
    pub fn read_chunk(&self, index: u32) -> Result<Vec<u8>, BundleError> {
        let info = self
            .manifest
            .chunks
            .get(index as usize)
            .ok_or_else(|| BundleError::Chunk {
                path: self.dir.clone(),
                index,
                source: VerifyError::IndexOutOfRange {
                    index,
                    n_chunks: self.manifest.chunks.len(),
                },
            })?;
        let path = chunk_path(&self.dir.join(CHUNKS_DIR), &info.hash);
        let data = fs::read(&path).map_err(io_err(&path))?;
        verify(&self.manifest, index, &data).map_err(|source| BundleError::Chunk {
            path: path.clone(),
            index,
            source,
        })?;
        Ok(data)
    }
}
