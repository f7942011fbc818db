//! The launcher's local store (`shoal-store`): one install directory holding
//! the installed build, the build being downloaded (staging), and a sled
//! index of chunk locations, download progress and accepted versions.
//!
//! Layout of an install directory `DIR`:
//!
//! ```text
//! DIR/current                  symlink to .shoal/builds/NAME: the game lives here
//! DIR/.shoal/index/            sled: chunk hash → location, progress, accepted versions
//! DIR/.shoal/builds/NAME/      the installed tree (NAME = v<version>-<release id prefix>)
//! DIR/.shoal/builds/NAME.json  what it is (release record), written before the swap
//! DIR/.shoal/builds/NAME.manifest  the publisher-signed manifest
//! DIR/.shoal/staging/NAME/     the next build, written chunk by chunk
//! ```
//!
//! The swap is one `rename` of a symlink over `DIR/current`, after every
//! file of the new build is fsynced: a crash leaves the old build or the new
//! one, never a mix. Progress records are written only after the chunk bytes
//! they count are synced.

mod disk;
mod stage;
mod tree;

pub use disk::free_disk;
pub use stage::Staging;
pub use tree::{Damage, Problem};

use serde::{Deserialize, Serialize};
use shoal_manifest::seal::ContentKey;
use shoal_manifest::{Manifest, SignedManifest, VerifiedChunk};
use shoal_types::Hash;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tree::Tree;

/// Store failures, told apart so the launcher can name the cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed (disk full shows up here).
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The sled index failed.
    #[error("install index: {0}")]
    Index(#[from] sled::Error),
    /// Something in the install directory is not what the store wrote.
    #[error("{0}")]
    Corrupt(String),
    /// Another process (a launcher still seeding?) has the install open.
    #[error("{0} is in use by another shoal process (one still seeding?); wait for it or stop it")]
    Busy(PathBuf),
    /// An encrypted build could not be opened: the wrong key, or altered
    /// ciphertext. Nothing was swapped in.
    #[error("{0}")]
    Unlock(String),
    /// `DIR/current` exists but is not a link this store made.
    #[error("{0} exists and is not a Shoal install link; choose another --dir")]
    NotOurs(PathBuf),
}

impl StoreError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Whether the failure is a full disk (or quota).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if is_disk_full(source))
    }
}

/// Whether an IO error means no space is left.
pub fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || e.raw_os_error() == Some(libc::ENOSPC)
        || e.raw_os_error() == Some(libc::EDQUOT)
}

/// What an installed (or staged) build is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub release_id: Hash,
    pub product: String,
    pub channel: String,
    /// The tracker's release version.
    pub version: u64,
    /// The publisher's build label.
    pub label: String,
    /// The tracker-signed release metadata (hex), as accepted.
    pub release: String,
    /// Bytes of all files.
    pub size: u64,
    /// Seconds since the epoch.
    pub installed_at: u64,
}

impl Record {
    /// The build's directory name.
    pub fn name(&self) -> String {
        format!("v{}-{}", self.version, &self.release_id.to_string()[..12])
    }
}

/// An install directory.
#[derive(Debug, Clone)]
pub struct Install {
    root: PathBuf,
    state: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    progress: sled::Tree,
    chunks: sled::Tree,
    /// Bytes writes may still use before failing as "disk full" (fault
    /// injection for tests; `u64::MAX` when off).
    write_budget: Arc<AtomicU64>,
}

const STATE: &str = ".shoal";
const CURRENT: &str = "current";

impl Install {
    /// Opens (creating if needed) the install directory `root`.
    pub fn open(root: &Path) -> Result<Install, StoreError> {
        let state = root.join(STATE);
        for d in [state.join("builds"), state.join("staging")] {
            fs::create_dir_all(&d).map_err(StoreError::io(&d))?;
        }
        let current = root.join(CURRENT);
        if let Ok(m) = fs::symlink_metadata(&current)
            && !m.file_type().is_symlink()
        {
            return Err(StoreError::NotOurs(current));
        }
        // A process that just closed the install (or this one, a moment ago)
        // may still hold the index lock while its flusher stops: wait briefly.
        let mut attempts = 0;
        let db = loop {
            let opened = sled::Config::new()
                .path(state.join("index"))
                .cache_capacity(8 << 20)
                .open();
            match opened {
                Ok(db) => break db,
                // sled reports the held lock as an `Other` error naming it.
                Err(sled::Error::Io(io))
                    if io.kind() == io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    attempts += 1;
                    if attempts >= 30 {
                        return Err(StoreError::Busy(root.to_owned()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(StoreError::Index(e)),
            }
        };
        let install = Install {
            root: root.to_owned(),
            meta: db.open_tree("meta")?,
            progress: db.open_tree("progress")?,
            chunks: db.open_tree("chunks")?,
            db,
            state,
            write_budget: Arc::new(AtomicU64::new(u64::MAX)),
        };
        // A run killed after an unlock but before its cleanup.
        install.discard_spent()?;
        Ok(install)
    }

    /// Removes the staging of the build that is already installed: the
    /// ciphertext an unlock has opened and swapped in. [`Staging::unlock`]
    /// leaves it so the game is playable first; the launcher calls this
    /// right after, and [`Install::open`] does for a run killed before.
    pub fn discard_spent(&self) -> Result<(), StoreError> {
        let Ok(target) = fs::read_link(self.current_path()) else {
            return Ok(());
        };
        let Some(name) = target.file_name() else {
            return Ok(());
        };
        let spent = self.state.join("staging").join(name);
        if fs::symlink_metadata(&spent).is_ok() {
            stage::make_writable(&spent);
            disk::remove_all(&spent)?;
            tracing::debug!(path = %spent.display(), "removed the opened ciphertext");
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the installed game lives (a symlink to the current build).
    pub fn current_path(&self) -> PathBuf {
        self.root.join(CURRENT)
    }

    /// Fault injection for tests: writes fail with "no space left" once
    /// `bytes` more have been written.
    pub fn fail_writes_after(&self, bytes: u64) {
        self.write_budget.store(bytes, Ordering::SeqCst);
    }

    /// The installed build, if any.
    pub fn installed(&self) -> Result<Option<Build>, StoreError> {
        installed(&self.root)
    }

    /// The highest release version accepted for (product, channel).
    pub fn highest_accepted(
        &self,
        product: &str,
        channel: &str,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self
            .meta
            .get(accepted_key(product, channel))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// Records (durably) that `version` was accepted; never lowers it.
    pub fn accept(&self, product: &str, channel: &str, version: u64) -> Result<(), StoreError> {
        if self.highest_accepted(product, channel)? < Some(version) {
            self.meta
                .insert(accepted_key(product, channel), &version.to_be_bytes())?;
            self.db.flush()?;
        }
        Ok(())
    }

    /// Starts (or resumes) staging the build `record` describes. Staged
    /// chunks of an interrupted run are kept; staging of other releases is
    /// dropped.
    pub fn stage(
        &self,
        record: Record,
        signed_manifest: &SignedManifest,
        manifest: Manifest,
    ) -> Result<Staging, StoreError> {
        let name = record.name();
        let staging = self.state.join("staging");
        // Only one build is staged at a time.
        for entry in fs::read_dir(&staging).map_err(StoreError::io(&staging))? {
            let entry = entry.map_err(StoreError::io(&staging))?;
            let file_name = entry.file_name();
            let stem = file_name.to_string_lossy();
            let stem = stem.split('.').next().unwrap_or_default();
            if stem != name {
                disk::remove_all(&entry.path())?;
            }
        }
        let mut stale = Vec::new();
        for kv in self.progress.iter() {
            let (k, _) = kv?;
            if !k.starts_with(record.release_id.as_bytes()) {
                stale.push(k);
            }
        }
        for k in stale {
            self.progress.remove(k)?;
        }
        // A run killed between moving the finished tree to builds/ and the
        // swap left it there: move it back, so its chunks count as staged.
        let built = self.state.join("builds").join(&name);
        let current = fs::read_link(self.current_path()).ok();
        let is_current = current.as_deref().and_then(Path::file_name) == Some(name.as_ref());
        if built.is_dir() && !is_current && !staging.join(&name).exists() {
            fs::rename(&built, staging.join(&name)).map_err(StoreError::io(&built))?;
            disk::sync_dir(&staging)?;
            // Its final modes may be read-only; the commit applies them again.
            owner_writable(&staging.join(&name));
            tracing::info!(build = %name, "recovered a finished build that was not swapped in");
        }
        describe(&staging, &name, &record, signed_manifest)?;
        // An encrypted release is staged as its ciphertext: each file the
        // concatenation of its sealed chunks, unreadable until it unlocks.
        let view = Arc::new(manifest.sealed_view());
        let sealed = manifest.is_sealed().then(|| Arc::new(manifest));
        Staging::open(self.clone(), record, view, sealed, staging.join(&name))
    }

    /// Where an installed chunk with this hash lives: (build name, path, offset).
    fn locate(&self, hash: &Hash) -> Result<Option<(String, String, u64)>, StoreError> {
        let Some(v) = self.chunks.get(hash.as_bytes())? else {
            return Ok(None);
        };
        let (offset, rest) = v.split_at_checked(8).ok_or_else(|| bad_index(hash))?;
        let offset = u64::from_be_bytes(offset.try_into().map_err(|_| bad_index(hash))?);
        let rest = std::str::from_utf8(rest).map_err(|_| bad_index(hash))?;
        let (build, path) = rest.split_once('\0').ok_or_else(|| bad_index(hash))?;
        Ok(Some((build.to_owned(), path.to_owned(), offset)))
    }

    /// Indexes where each chunk of the build `name` lives, in batches of
    /// [`INDEX_BATCH`]: one sled batch of a whole build of 100,000 files
    /// took about 350 MiB. The index only says where an update may copy chunks
    /// from, so a crash halfway leaves fewer to copy, not wrong ones.
    fn index_build(&self, name: &str, tree: &Tree) -> Result<(), StoreError> {
        self.chunks.clear()?;
        let mut batch = sled::Batch::default();
        let mut queued = 0;
        for (i, info) in tree.manifest().chunks.iter().enumerate() {
            if let Some((path, offset)) = tree.first_position(i as u32) {
                let mut v = offset.to_be_bytes().to_vec();
                v.extend_from_slice(name.as_bytes());
                v.push(0);
                v.extend_from_slice(path.as_bytes());
                batch.insert(info.hash.as_bytes().as_slice(), v);
                queued += 1;
                if queued == INDEX_BATCH {
                    self.chunks.apply_batch(std::mem::take(&mut batch))?;
                    queued = 0;
                }
            }
        }
        self.chunks.apply_batch(batch)?;
        Ok(())
    }

    /// Spends `len` bytes of the injected write budget.
    fn charge(&self, len: u64) -> io::Result<()> {
        let left = self.write_budget.load(Ordering::SeqCst);
        if left == u64::MAX {
            return Ok(());
        }
        if left < len {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.write_budget.fetch_sub(len, Ordering::SeqCst);
        Ok(())
    }
}

/// Chunk positions written to the index per sled batch.
const INDEX_BATCH: usize = 1024;

/// The build installed in `root`, read without opening the index (so it
/// works while a launcher holds the install open).
pub fn installed(root: &Path) -> Result<Option<Build>, StoreError> {
    let current = root.join(CURRENT);
    let target = match fs::read_link(&current) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return Err(StoreError::NotOurs(current));
        }
        Err(e) => return Err(StoreError::io(&current)(e)),
    };
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StoreError::Corrupt(format!("{} points nowhere", current.display())))?
        .to_owned();
    let builds = root.join(STATE).join("builds");
    Build::load(&builds, &name).map(Some)
}

/// Writes an unlocked build's content key beside it (owner-only): from
/// then it serves ciphertext re-sealed from its plaintext, and repairs
/// from ciphertext. Before the unlock no key is on disk.
fn write_key(dir: &Path, name: &str, key: &ContentKey) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(format!("{name}.key"));
    let tmp = dir.join(format!("{name}.key.tmp"));
    let write = || -> io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        io::Write::write_all(&mut f, key.expose())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(StoreError::io(&path))?;
    disk::sync_dir(dir)
}

fn read_key(dir: &Path, name: &str) -> Result<ContentKey, StoreError> {
    let path = dir.join(format!("{name}.key"));
    let bytes = fs::read(&path).map_err(StoreError::io(&path))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
        StoreError::Corrupt(format!("{} is not a 32-byte content key", path.display()))
    })?;
    Ok(ContentKey::from_bytes(bytes))
}

/// Adds owner write (and search, for directories) permission below `path`.
fn owner_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.file_type().is_symlink() {
        return;
    }
    let extra = if meta.is_dir() { 0o700 } else { 0o200 };
    let _ = fs::set_permissions(
        path,
        fs::Permissions::from_mode(meta.permissions().mode() | extra),
    );
    if meta.is_dir()
        && let Ok(entries) = fs::read_dir(path)
    {
        for e in entries.flatten() {
            owner_writable(&e.path());
        }
    }
}

fn bad_index(hash: &Hash) -> StoreError {
    StoreError::Corrupt(format!("install index entry for chunk {hash} is malformed"))
}

fn accepted_key(product: &str, channel: &str) -> Vec<u8> {
    format!("accepted/{product}/{channel}").into_bytes()
}

/// Writes NAME.json and NAME.manifest next to a build, durably.
fn describe(
    dir: &Path,
    name: &str,
    record: &Record,
    signed: &SignedManifest,
) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(record).expect("records serialise");
    for (ext, bytes) in [("json", json), ("manifest", signed.to_bytes())] {
        let path = dir.join(format!("{name}.{ext}"));
        let tmp = dir.join(format!("{name}.{ext}.tmp"));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(StoreError::io(&path))?;
    }
    disk::sync_dir(dir)
}

fn load_described(dir: &Path, name: &str) -> Result<(Record, Manifest), StoreError> {
    let json_path = dir.join(format!("{name}.json"));
    let json = fs::read(&json_path).map_err(StoreError::io(&json_path))?;
    let record: Record = serde_json::from_slice(&json)
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", json_path.display())))?;
    let mpath = dir.join(format!("{name}.manifest"));
    let bytes = fs::read(&mpath).map_err(StoreError::io(&mpath))?;
    let manifest = SignedManifest::from_bytes(&bytes)
        .and_then(|s| s.open())
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", mpath.display())))?;
    Ok((record, manifest))
}

/// The installed build.
#[derive(Debug)]
pub struct Build {
    pub record: Record,
    /// The plaintext tree (an encrypted release's opened view).
    tree: Tree,
    /// An unlocked encrypted release: what the swarm trades.
    sealed: Option<SealedBuild>,
}

/// What an installed encrypted build needs to trade ciphertext.
#[derive(Debug)]
struct SealedBuild {
    /// The ciphertext view: the chunk table peers verify against.
    wire: Manifest,
    key: ContentKey,
}

impl Build {
    /// The build `name` described in `builds`.
    fn load(builds: &Path, name: &str) -> Result<Build, StoreError> {
        let (record, manifest) = load_described(builds, name)?;
        let sealed = match &manifest.sealing {
            Some(sealing) => {
                let key = read_key(builds, name)?;
                // A key that is not this release's would re-seal chunks no
                // peer accepts.
                if key.check() != sealing.key_check {
                    return Err(StoreError::Corrupt(format!(
                        "{}: not the content key of {name}",
                        builds.join(format!("{name}.key")).display()
                    )));
                }
                Some(SealedBuild {
                    wire: manifest.sealed_view(),
                    key,
                })
            }
            None => None,
        };
        Ok(Build {
            record,
            tree: Tree::new(builds.join(name), Arc::new(manifest.opened_view())),
            sealed,
        })
    }

    /// The build's manifest as its files hold it (plaintext).
    pub fn manifest(&self) -> &Manifest {
        self.tree.manifest()
    }

    /// The manifest the swarm trades chunks of: for an encrypted release
    /// its ciphertext view, else [`Build::manifest`].
    pub fn wire_manifest(&self) -> &Manifest {
        match &self.sealed {
            Some(s) => &s.wire,
            None => self.manifest(),
        }
    }

    /// Chunk `index` as the swarm trades it (re-sealed, for an encrypted
    /// release: sealing is deterministic, so it is the published
    /// ciphertext), verified; `None` if absent or damaged.
    pub fn wire_chunk(&self, index: u32) -> Option<Vec<u8>> {
        let plain = self.tree.read_chunk(index)?;
        match &self.sealed {
            None => Some(plain),
            // Verified as read: its hash is the manifest's, and the key was
            // checked against the manifest when the build was loaded.
            Some(s) => {
                let hash = self.manifest().chunks[index as usize].hash;
                Some(shoal_manifest::seal::reseal(&s.key, &hash, &plain))
            }
        }
    }

    /// [`Build::repair_chunk`] for a chunk verified against
    /// [`Build::wire_manifest`]: opened first, for an encrypted release.
    pub fn repair_wire_chunk(&self, chunk: VerifiedChunk<'_>) -> io::Result<()> {
        let Some(s) = &self.sealed else {
            return self.repair_chunk(chunk);
        };
        let i = chunk.index();
        let mut bytes = chunk.data().to_vec();
        let opened = shoal_manifest::seal::open_chunk(&s.key, self.manifest(), i, &mut bytes)
            .map_err(|e| io::Error::other(format!("chunk {i}: {e}")))?;
        self.repair_chunk(opened)
    }

    pub fn dir(&self) -> &Path {
        self.tree.dir()
    }

    /// Chunk `index`, verified; `None` if absent or damaged.
    pub fn read_chunk(&self, index: u32) -> Option<Vec<u8>> {
        self.tree.read_chunk(index)
    }

    /// Rehashes every file; `progress` is told the bytes read as they go.
    pub fn check(&self, progress: impl FnMut(u64)) -> Vec<Damage> {
        self.tree.check(progress)
    }

    /// Repairs in place: writes a verified chunk everywhere it belongs,
    /// recreating missing files and wrong sizes first ([`Build::prepare_repair`]).
    pub fn repair_chunk(&self, chunk: VerifiedChunk<'_>) -> io::Result<()> {
        let files = self.tree.write_chunk(chunk)?;
        self.tree
            .sync_files(files)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Makes the tree writable for a repair: missing directories, files and
    /// links recreated at the right sizes and modes (contents come later).
    pub fn prepare_repair(&self) -> Result<(), StoreError> {
        for e in &self.manifest().entries {
            let path = self.dir().join(&e.path);
            if let Ok(m) = fs::symlink_metadata(&path) {
                let right = match &e.kind {
                    shoal_manifest::EntryKind::Dir => m.is_dir(),
                    shoal_manifest::EntryKind::File { .. } => m.is_file(),
                    shoal_manifest::EntryKind::Symlink { .. } => m.file_type().is_symlink(),
                };
                if !right {
                    disk::remove_all(&path)?;
                } else if m.is_file() {
                    // Files may have been left read-only by their mode.
                    use std::os::unix::fs::PermissionsExt as _;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                        .map_err(StoreError::io(&path))?;
                }
            }
        }
        self.tree.create_skeleton()
    }

    /// Restores links and modes and syncs the tree after a repair.
    pub fn finish_repair(&self) -> Result<(), StoreError> {
        self.tree.finish()
    }
}
