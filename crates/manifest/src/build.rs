//! Building a manifest from a directory tree: walk it under the path rules,
//! then chunk and hash its files on all cores (sealing each chunk, for an
//! encrypted release), handing each new chunk to a sink.

use crate::chunker;
use crate::model::{
    ChunkInfo, ChunkParams, Entry, EntryKind, FORMAT_VERSION, Manifest, SEALED_FORMAT_VERSION,
    Sealing,
};
use crate::path::{self, PathRule};
use crate::seal::{self, ContentKey};
use shoal_types::Hash;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Why a build tree could not be turned into a manifest.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{}: file name is not valid UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{path:?}: {rule}")]
    Path { path: String, rule: PathRule },
    #[error("{a:?} and {b:?} differ only by case, which breaks on Windows and macOS")]
    CaseCollision { a: String, b: String },
    #[error(
        "{path:?} is a special file (device, socket or FIFO); only files, directories and links can be published"
    )]
    SpecialFile { path: String },
    #[error("symlink {path:?} points outside the build tree ({target:?})")]
    LinkEscapes { path: String, target: String },
    #[error("{path:?} changed size while it was being published")]
    Changed { path: String },
    #[error("writing chunk {hash}: {source}")]
    Sink { hash: Hash, source: io::Error },
    #[error(transparent)]
    Params(#[from] crate::model::BadChunkParams),
    #[error(transparent)]
    Invalid(#[from] crate::model::InvalidManifest),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Receives every chunk as it is cut. Called from several threads at once,
/// possibly more than once for the same hash.
pub trait ChunkSink: Sync {
    fn put(&self, hash: &Hash, data: &[u8]) -> io::Result<()>;
}

/// A sink that keeps nothing: for measuring and for `--dry-run`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardChunks;

impl ChunkSink for DiscardChunks {
    fn put(&self, _: &Hash, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// Counters a caller can poll from another thread while a build runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub total_bytes: AtomicU64,
    pub done_bytes: AtomicU64,
    pub total_files: AtomicU64,
    pub done_files: AtomicU64,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub product: String,
    pub channel: String,
    pub version: String,
    pub chunking: ChunkParams,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
}

/// One regular file found by the walk.
#[derive(Debug)]
struct FileJob {
    entry: usize,
    abs: PathBuf,
    size: u64,
}

/// Walks `root` and checks every path. Returns the entries (file chunk lists
/// still empty) sorted by path, and the files to hash.
fn scan(root: &Path) -> Result<(Vec<Entry>, Vec<FileJob>), BuildError> {
    let meta = fs::metadata(root).map_err(io_err(root))?;
    if !meta.is_dir() {
        return Err(BuildError::NotADirectory(root.to_owned()));
    }
    let mut found: Vec<(Entry, Option<(PathBuf, u64)>)> = Vec::new();
    let mut stack = vec![(root.to_owned(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for item in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let item = item.map_err(io_err(&dir))?;
            let abs = item.path();
            let name = item.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| BuildError::NotUtf8 { path: abs.clone() })?;
            let rel = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            path::check_path(&rel).map_err(|rule| BuildError::Path {
                path: rel.clone(),
                rule,
            })?;
            let meta = fs::symlink_metadata(&abs).map_err(io_err(&abs))?;
            let mode = meta.permissions().mode() & 0o7777;
            let ft = meta.file_type();
            if ft.is_dir() {
                stack.push((abs, rel.clone()));
                found.push((
                    Entry {
                        path: rel,
                        mode,
                        kind: EntryKind::Dir,
                    },
                    None,
                ));
            } else if ft.is_file() {
                let kind = EntryKind::File {
                    size: meta.len(),
                    chunks: Vec::new(),
                };
                found.push((
                    Entry {
                        path: rel,
                        mode,
                        kind,
                    },
                    Some((abs, meta.len())),
                ));
            } else if ft.is_symlink() {
                let target = fs::read_link(&abs).map_err(io_err(&abs))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| BuildError::NotUtf8 { path: abs.clone() })?
                    .to_owned();
                if path::resolve_link(&rel, &target).is_none() {
                    return Err(BuildError::LinkEscapes { path: rel, target });
                }
                found.push((
                    Entry {
                        path: rel,
                        mode,
                        kind: EntryKind::Symlink { target },
                    },
                    None,
                ));
            } else {
                debug_assert!(
                    ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device()
                );
                return Err(BuildError::SpecialFile { path: rel });
            }
        }
    }
    found.sort_by(|a, b| a.0.path.cmp(&b.0.path));

    let mut folded: HashMap<String, usize> = HashMap::with_capacity(found.len());
    let mut entries = Vec::with_capacity(found.len());
    let mut jobs = Vec::new();
    for (index, (entry, file)) in found.into_iter().enumerate() {
        if let Some(other) = folded.insert(path::case_fold(&entry.path), index) {
            let a: &Entry = &entries[other];
            return Err(BuildError::CaseCollision {
                a: a.path.clone(),
                b: entry.path,
            });
        }
        if let Some((abs, size)) = file {
            jobs.push(FileJob {
                entry: index,
                abs,
                size,
            });
        }
        entries.push(entry);
    }
    Ok((entries, jobs))
}

/// One chunk of a file as cut: the hash and length the table lists (of the
/// ciphertext, when sealing), and the plaintext hash when sealing.
type Cut = (Hash, u32, Option<Hash>);

/// A file's chunks in order.
type FileChunks = Vec<Cut>;

/// Chunks and hashes one file, read through a bounded window (never mapped
/// or read whole), so memory stays the same whatever the file's size.
fn process(
    job: &FileJob,
    rel: &str,
    params: ChunkParams,
    key: Option<&ContentKey>,
    sink: &dyn ChunkSink,
    progress: &Progress,
) -> Result<FileChunks, BuildError> {
    let file = fs::File::open(&job.abs).map_err(io_err(&job.abs))?;
    let mut chunks = Vec::with_capacity((job.size / u64::from(params.avg)) as usize + 1);
    let window = chunker::STREAM_WINDOW.min(job.size as usize + 1);
    let read = chunker::stream_chunks(file, params, window, |bytes: &[u8]| {
        let cut = match key {
            None => {
                let hash = Hash::of(bytes);
                sink.put(&hash, bytes)
                    .map_err(|source| Failure::Sink { hash, source })?;
                (hash, bytes.len() as u32, None)
            }
            Some(key) => {
                let sealed = seal::seal(key, bytes);
                sink.put(&sealed.hash, &sealed.bytes)
                    .map_err(|source| Failure::Sink {
                        hash: sealed.hash,
                        source,
                    })?;
                (sealed.hash, sealed.bytes.len() as u32, Some(sealed.plain))
            }
        };
        chunks.push(cut);
        progress
            .done_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok::<(), Failure>(())
    })
    .map_err(|e| match e {
        Failure::Io(e) => io_err(&job.abs)(e),
        Failure::Sink { hash, source } => BuildError::Sink { hash, source },
    })?;
    if read != job.size {
        return Err(BuildError::Changed {
            path: rel.to_owned(),
        });
    }
    progress.done_files.fetch_add(1, Ordering::Relaxed);
    Ok(chunks)
}

/// What can go wrong while a file streams through the chunker.
enum Failure {
    Io(io::Error),
    Sink { hash: Hash, source: io::Error },
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

/// Walks `root`, chunks and hashes every file on `options.threads` threads,
/// passes each chunk to `sink`, and returns the validated manifest.
pub fn build(
    root: &Path,
    options: &BuildOptions,
    sink: &dyn ChunkSink,
    progress: &Progress,
) -> Result<Manifest, BuildError> {
    build_with(root, options, None, sink, progress)
}

/// [`build`] for an encrypted release: every chunk is sealed under `key`
/// as it is cut, `sink` receives the ciphertext, and the manifest (format
/// [`SEALED_FORMAT_VERSION`]) lists ciphertext and plaintext hashes. Chunk
/// boundaries are those of the plaintext, so a new version's unchanged
/// chunks keep their plaintext hashes.
pub fn build_sealed(
    root: &Path,
    options: &BuildOptions,
    key: &ContentKey,
    sink: &dyn ChunkSink,
    progress: &Progress,
) -> Result<Manifest, BuildError> {
    build_with(root, options, Some(key), sink, progress)
}

fn build_with(
    root: &Path,
    options: &BuildOptions,
    key: Option<&ContentKey>,
    sink: &dyn ChunkSink,
    progress: &Progress,
) -> Result<Manifest, BuildError> {
    options.chunking.check()?;
    crate::model::check_name("product", &options.product)?;
    crate::model::check_name("channel", &options.channel)?;
    crate::model::check_name("version", &options.version)?;
    let (mut entries, mut jobs) = scan(root)?;
    progress
        .total_files
        .store(jobs.len() as u64, Ordering::Relaxed);
    progress
        .total_bytes
        .store(jobs.iter().map(|j| j.size).sum(), Ordering::Relaxed);

    // Largest files first so the threads finish together.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.size));
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, jobs.len().max(1));

    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let paths: Vec<&str> = jobs
        .iter()
        .map(|j| entries[j.entry].path.as_str())
        .collect();
    let results: Vec<Result<Vec<(usize, FileChunks)>, BuildError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        match process(job, paths[i], options.chunking, key, sink, progress) {
                            Ok(chunks) => done.push((job.entry, chunks)),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(done)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });

    let mut per_entry: Vec<Option<FileChunks>> = vec![None; entries.len()];
    for result in results {
        for (entry, chunks) in result? {
            per_entry[entry] = Some(chunks);
        }
    }

    // Chunk table in order of first use, in path order: canonical whatever
    // the thread count.
    let mut table: Vec<ChunkInfo> = Vec::new();
    let mut plain: Vec<Hash> = Vec::new();
    let mut index_of: HashMap<Hash, u32> = HashMap::new();
    for (entry, chunks) in entries.iter_mut().zip(per_entry) {
        let EntryKind::File { chunks: refs, .. } = &mut entry.kind else {
            continue;
        };
        let chunks = chunks.expect("every file job produced a result or an error");
        for (hash, len, plain_hash) in chunks {
            let index = *index_of.entry(hash).or_insert_with(|| {
                table.push(ChunkInfo { hash, len });
                plain.extend(plain_hash);
                (table.len() - 1) as u32
            });
            refs.push(index);
        }
    }

    let sealing = key.map(|key| Sealing {
        plain,
        key_check: key.check(),
    });
    let manifest = Manifest {
        format: if sealing.is_some() {
            SEALED_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        },
        product: options.product.clone(),
        channel: options.channel.clone(),
        version: options.version.clone(),
        chunking: options.chunking,
        entries,
        chunks: table,
        sealing,
    };
    manifest.validate()?;
    Ok(manifest)
}
