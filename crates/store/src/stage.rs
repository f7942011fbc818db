//! The build being downloaded: chunks land in a staging tree as they are
//! verified, progress is recorded durably in batches, chunks already
//! installed are copied instead of fetched, and `commit` swaps the finished
//! build in atomically.

use crate::disk::{self, sync_dir};
use crate::tree::Tree;
use crate::{Build, Install, Record, StoreError, describe};
use shoal_manifest::{Manifest, VerifiedChunk, verify};
use shoal_types::{Bitfield, Hash};
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Progress is committed after this many chunks or this long, whichever first.
const BATCH_CHUNKS: usize = 64;
const BATCH_TIME: Duration = Duration::from_millis(500);

/// A build being staged. Shared between the download (writes) and the
/// node (serves what is already here to other peers).
#[derive(Debug)]
pub struct Staging {
    install: Install,
    record: Record,
    /// The staged tree: for an encrypted release, its ciphertext view.
    tree: Tree,
    /// An encrypted release's manifest as published (sealing included).
    sealed: Option<Arc<Manifest>>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    have: Bitfield,
    /// An encrypted staging's chunks whose plaintext the installed build
    /// already holds (found by [`Staging::reuse`] on every run): never
    /// fetched, never served (there is no ciphertext of them here), taken
    /// from the installed build at the unlock.
    covered: Bitfield,
    /// Durable progress: chunks whose bytes and record are on disk.
    recorded: u64,
    /// Written but not yet recorded.
    pending: Vec<u32>,
    pending_files: BTreeSet<u32>,
    last_commit: Instant,
    /// Chunks resumed from an earlier run (bytes).
    resumed_bytes: u64,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Staging {
    pub(crate) fn open(
        install: Install,
        record: Record,
        manifest: Arc<Manifest>,
        sealed: Option<Arc<Manifest>>,
        dir: PathBuf,
    ) -> Result<Staging, StoreError> {
        let resuming = dir.exists();
        let tree = Tree::new(dir, manifest.clone());
        tree.create_skeleton()?;
        let n = manifest.chunks.len() as u32;
        let mut have = Bitfield::new(n);
        let prefix = record.release_id.as_bytes().to_vec();
        let mut recorded = 0u64;
        for kv in install.progress.scan_prefix(&prefix) {
            let (k, _) = kv?;
            if let Some(idx) = k
                .get(prefix.len()..)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                && idx < n
            {
                have.set(idx);
                recorded += 1;
            }
        }
        let staging = Staging {
            install,
            record,
            tree,
            sealed,
            state: Mutex::new(State {
                covered: Bitfield::new(n),
                have,
                recorded,
                pending: Vec::new(),
                pending_files: BTreeSet::new(),
                last_commit: Instant::now(),
                resumed_bytes: 0,
            }),
        };
        // Chunks written but not yet recorded when the last run was killed
        // are still in the files: verify and keep them.
        if resuming {
            let mut found = Vec::new();
            let have = lock(&staging.state).have.clone();
            for i in (0..n).filter(|&i| !have.get(i)) {
                if staging.tree.read_chunk(i).is_some() {
                    found.push(i);
                }
            }
            let mut s = lock(&staging.state);
            for &i in &found {
                s.have.set(i);
                s.pending.push(i);
            }
            s.resumed_bytes = s
                .have
                .ones()
                .map(|i| u64::from(manifest.chunks[i as usize].len))
                .sum();
            staging.commit_progress(&mut s)?;
        }
        Ok(staging)
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The manifest of what is staged: the swarm's chunk table (for an
    /// encrypted release, its ciphertext view).
    pub fn manifest(&self) -> &Manifest {
        self.tree.manifest()
    }

    /// Whether this is an encrypted release, which [`Staging::unlock`]
    /// swaps in rather than [`Staging::commit`].
    pub fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    /// Which chunks are staged.
    pub fn have(&self) -> Bitfield {
        lock(&self.state).have.clone()
    }

    /// Chunks an encrypted staging counts as had without holding their
    /// ciphertext (see [`Staging::reuse`]).
    pub fn covered(&self) -> Bitfield {
        lock(&self.state).covered.clone()
    }

    /// Whether every chunk is staged (or, encrypted, covered).
    pub fn is_complete(&self) -> bool {
        let s = lock(&self.state);
        (0..s.have.len()).all(|i| s.have.get(i) || s.covered.get(i))
    }

    /// Bytes of unique chunks staged by an earlier, interrupted run.
    pub fn resumed_bytes(&self) -> u64 {
        lock(&self.state).resumed_bytes
    }

    /// Bytes of unique chunks still missing.
    pub fn missing_bytes(&self) -> u64 {
        let s = lock(&self.state);
        self.manifest()
            .chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| !s.have.get(*i as u32) && !s.covered.get(*i as u32))
            .map(|(_, c)| u64::from(c.len))
            .sum()
    }

    /// Bytes the staging tree still has to write to disk (every occurrence
    /// of every missing chunk): what free space must cover.
    pub fn bytes_to_write(&self) -> u64 {
        let s = lock(&self.state);
        self.manifest()
            .files()
            .flat_map(|(_, _, chunks)| chunks)
            .filter(|&&c| !s.have.get(c) && !s.covered.get(c))
            .map(|&c| u64::from(self.manifest().chunks[c as usize].len))
            .sum()
    }

    /// Copies every missing chunk the installed build already holds (found
    /// through the chunk index, verified on read). Returns bytes reused.
    pub fn reuse(&self, installed: Option<&Build>) -> Result<u64, StoreError> {
        let Some(old) = installed else {
            return Ok(0);
        };
        if let Some(sealed) = &self.sealed {
            return self.cover(old, sealed);
        }
        let name = old.record.name();
        let have = self.have();
        let mut reused = 0;
        for (i, info) in self.manifest().chunks.iter().enumerate() {
            let i = i as u32;
            if have.get(i) {
                continue;
            }
            let Some((build, path, offset)) = self.install.locate(&info.hash)? else {
                continue;
            };
            if build != name {
                continue;
            }
            let Ok(data) = disk::read_at(&old.dir().join(&path), offset, info.len as usize) else {
                continue;
            };
            if let Ok(chunk) = verify(self.manifest(), i, &data) {
                self.put(chunk).map_err(StoreError::io(self.tree.dir()))?;
                reused += u64::from(info.len);
            }
        }
        self.sync()?;
        Ok(reused)
    }

    /// [`Staging::reuse`] for an encrypted release: its chunks are sealed
    /// under a key this launcher does not have yet, so the ones whose
    /// plaintext the installed build holds (by plaintext hash: an update's
    /// unchanged chunks) are marked covered instead of copied. Returns
    /// their bytes.
    fn cover(&self, old: &Build, sealed: &Manifest) -> Result<u64, StoreError> {
        let sealing = sealed
            .sealing
            .as_ref()
            .expect("a sealed manifest has its sealing");
        let have = self.have();
        let mut covered = Bitfield::new(have.len());
        let mut bytes = 0;
        for (i, plain) in sealing.plain.iter().enumerate() {
            let i = i as u32;
            if have.get(i) {
                continue;
            }
            if self.installed_holds(old, i, plain)? {
                covered.set(i);
                bytes += u64::from(self.manifest().chunks[i as usize].len);
            }
        }
        lock(&self.state).covered = covered;
        Ok(bytes)
    }

    /// Whether the installed build holds sealed chunk `index`'s plaintext
    /// (found by its hash `plain`), checked.
    fn installed_holds(&self, old: &Build, index: u32, plain: &Hash) -> Result<bool, StoreError> {
        let data = self.installed_bytes(old, index, plain)?;
        Ok(data.is_some_and(|d| Hash::of(&d) == *plain))
    }

    /// The installed build's bytes where sealed chunk `index`'s plaintext
    /// (found by its hash `plain`) should be, unchecked.
    fn installed_bytes(
        &self,
        old: &Build,
        index: u32,
        plain: &Hash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((build, path, offset)) = self.install.locate(plain)? else {
            return Ok(None);
        };
        if build != old.record.name() {
            return Ok(None);
        }
        let len = self.manifest().chunks[index as usize].len as usize;
        let len = len.saturating_sub(shoal_manifest::seal::SEAL_OVERHEAD);
        Ok(disk::read_at(&old.dir().join(&path), offset, len).ok())
    }

    /// Stores a verified chunk (at every place it occurs). Progress becomes
    /// durable in batches; [`Staging::sync`] forces it.
    pub fn put(&self, chunk: VerifiedChunk<'_>) -> io::Result<()> {
        if lock(&self.state).have.get(chunk.index()) {
            return Ok(());
        }
        let occurrences = self.tree.write_len(chunk.index());
        self.install.charge(occurrences)?;
        let files = self.tree.write_chunk(chunk)?;
        let mut s = lock(&self.state);
        if s.have.get(chunk.index()) {
            return Ok(());
        }
        s.have.set(chunk.index());
        s.pending.push(chunk.index());
        s.pending_files.extend(files);
        if s.pending.len() >= BATCH_CHUNKS || s.last_commit.elapsed() >= BATCH_TIME {
            self.commit_progress(&mut s)
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(())
    }

    /// Chunk `index` if staged, verified on read.
    pub fn read_chunk(&self, index: u32) -> Option<Vec<u8>> {
        if !lock(&self.state).have.get(index) {
            return None;
        }
        self.tree.read_chunk(index)
    }

    /// Makes all progress so far durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut s = lock(&self.state);
        self.commit_progress(&mut s)
    }

    /// Syncs the files written since the last commit, then records their
    /// chunks: a record never counts bytes that could still be lost.
    fn commit_progress(&self, s: &mut State) -> Result<(), StoreError> {
        if s.pending.is_empty() {
            s.last_commit = Instant::now();
            return Ok(());
        }
        self.tree.sync_files(std::mem::take(&mut s.pending_files))?;
        let mut batch = sled::Batch::default();
        for &i in &s.pending {
            batch.insert(self.progress_key(i), &[][..]);
        }
        self.install.progress.apply_batch(batch)?;
        self.install.db.flush()?;
        s.recorded += s.pending.len() as u64;
        s.pending.clear();
        s.last_commit = Instant::now();
        Ok(())
    }

    fn progress_key(&self, i: u32) -> Vec<u8> {
        let mut k = self.record.release_id.as_bytes().to_vec();
        k.extend_from_slice(&i.to_be_bytes());
        k
    }

    /// Un-records chunk `i`, found damaged on disk: the next run fetches it.
    fn forget(&self, i: u32) {
        let mut s = lock(&self.state);
        if s.have.get(i) {
            s.have.clear(i);
            s.recorded = s.recorded.saturating_sub(1);
        }
        drop(s);
        let removed = self.install.progress.remove(self.progress_key(i));
        if let Err(e) = removed.and_then(|_| self.install.db.flush()) {
            tracing::warn!(chunk = i, error = %e, "could not un-record a damaged staged chunk");
        }
    }

    /// Finishes the build (links, modes, fsync) and swaps it in atomically.
    /// Until the swap the old build is untouched; after it, the old build
    /// is removed. The staging is spent afterwards: use the returned build.
    pub fn commit(&self) -> Result<Build, StoreError> {
        if self.is_sealed() {
            return Err(StoreError::Corrupt(format!(
                "staged build {} is encrypted: it is swapped in when it unlocks",
                self.record.name()
            )));
        }
        self.check_complete()?;
        self.sync()?;
        self.tree.finish()?;
        self.swap_in(&self.tree, None)
    }

    fn check_complete(&self) -> Result<(), StoreError> {
        if !self.is_complete() {
            return Err(StoreError::Corrupt(format!(
                "staged build {} is incomplete",
                self.record.name()
            )));
        }
        Ok(())
    }

    /// Opens a complete encrypted staging with `key`: every sealed chunk
    /// is decrypted and checked against its plaintext hash into a new tree
    /// beside the staging (`NAME.open`), which is then finished and swapped
    /// in exactly as [`Staging::commit`] does. A wrong key or altered
    /// ciphertext fails before anything is swapped; a run killed halfway
    /// leaves the staging whole, and the next run opens it again without
    /// fetching anything. `progress` is told the plaintext bytes written.
    pub fn unlock(
        &self,
        key: &shoal_manifest::seal::ContentKey,
        progress: impl Fn(u64) + Sync,
    ) -> Result<Build, StoreError> {
        let Some(sealed) = &self.sealed else {
            return Err(StoreError::Corrupt(format!(
                "staged build {} is not encrypted",
                self.record.name()
            )));
        };
        let sealing = sealed
            .sealing
            .as_ref()
            .expect("a sealed manifest has its sealing");
        if key.check() != sealing.key_check {
            return Err(StoreError::Unlock(format!(
                "the key the tracker gave is not the one {} v{} was encrypted with; nothing was swapped in",
                self.record.product, self.record.version
            )));
        }
        self.check_complete()?;
        self.sync()?;
        let opened = Arc::new(sealed.opened_view());
        let mut dir = self.tree.dir().as_os_str().to_owned();
        dir.push(".open");
        let dir = PathBuf::from(dir);
        disk::remove_all(&dir)?;
        let tree = Tree::new(dir, opened.clone());
        tree.create_skeleton()?;
        let (have, covered) = {
            let s = lock(&self.state);
            (s.have.clone(), s.covered.clone())
        };
        let installed = if covered.count() > 0 {
            self.install.installed()?
        } else {
            None
        };
        // Chunks are independent: open them on every core.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, sealing.plain.len().max(1));
        let span = tracing::Span::current();
        let open_some = || -> Result<(), StoreError> {
            use std::sync::atomic::Ordering::Relaxed;
            while !failed.load(Relaxed) {
                let i = next.fetch_add(1, Relaxed);
                let Some(plain) = sealing.plain.get(i) else {
                    break;
                };
                let index = i as u32;
                let chunk = OpenChunk {
                    index,
                    plain,
                    key,
                    opened: &opened,
                    from_installed: installed
                        .as_ref()
                        .filter(|_| !have.get(index) && covered.get(index)),
                };
                match self.open_chunk(&chunk, &tree) {
                    Ok(n) => progress(n),
                    Err(e) => {
                        failed.store(true, Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok(())
        };
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| scope.spawn(|| span.in_scope(open_some)))
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })?;
        tree.finish()?;
        // The ciphertext is spent (the build serves re-sealed plaintext);
        // [`Install::discard_spent`] removes it once the game is playable.
        self.swap_in(&tree, Some(key))
    }

    /// Opens one chunk of an unlock into `tree`: its staged ciphertext, or
    /// (covered) its plaintext from the installed build. Returns the
    /// plaintext bytes written. Each byte is hashed once: the tag vouches
    /// for the staged ciphertext, then the plaintext is verified.
    fn open_chunk(&self, c: &OpenChunk<'_>, tree: &Tree) -> Result<u64, StoreError> {
        let i = c.index;
        let mut bytes;
        let chunk = if let Some(old) = c.from_installed {
            bytes = self.installed_bytes(old, i, c.plain)?.unwrap_or_default();
            verify(c.opened, i, &bytes).map_err(|_| {
                StoreError::Corrupt(format!(
                    "chunk {i} of {} is no longer in the installed build: run the install again to fetch it",
                    self.record.name()
                ))
            })?
        } else {
            bytes = self.tree.read_chunk_unverified(i).unwrap_or_default();
            match shoal_manifest::seal::open_chunk(c.key, c.opened, i, &mut bytes) {
                Ok(chunk) => chunk,
                Err(e) => return Err(self.unopened(i, e)),
            }
        };
        let written = chunk.data().len() as u64;
        self.install
            .charge(tree.write_len(i))
            .map_err(StoreError::io(tree.dir()))?;
        tree.write_chunk(chunk)
            .map_err(StoreError::io(tree.dir()))?;
        Ok(written)
    }

    /// Why staged chunk `i` did not open. The key was checked up front, so
    /// either the staged ciphertext changed on disk since it was verified
    /// (the next install fetches it again), or the publisher's ciphertext
    /// does not open under its own key.
    fn unopened(&self, i: u32, e: shoal_manifest::seal::OpenError) -> StoreError {
        if self.tree.read_chunk(i).is_none() {
            self.forget(i);
            return StoreError::Corrupt(format!(
                "staged chunk {i} of {} is damaged: run the install again to fetch it; nothing was swapped in",
                self.record.name()
            ));
        }
        StoreError::Unlock(format!(
            "chunk {i} of {} v{}: {e}; nothing was swapped in",
            self.record.product, self.record.version
        ))
    }

    /// Moves the finished `tree` into builds/ and swaps it in; `key` (an
    /// encrypted release's) is kept beside it.
    fn swap_in(
        &self,
        tree: &Tree,
        key: Option<&shoal_manifest::seal::ContentKey>,
    ) -> Result<Build, StoreError> {
        let name = self.record.name();
        let state = &self.install.state;
        let staging = state.join("staging");
        let builds = state.join("builds");
        let signed = {
            let path = staging.join(format!("{name}.manifest"));
            let bytes = fs::read(&path).map_err(StoreError::io(&path))?;
            shoal_manifest::SignedManifest::from_bytes(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?
        };
        // 1. The description (and key) first, then the tree, into builds/.
        if let Some(key) = key {
            crate::write_key(&builds, &name, key)?;
        }
        describe(&builds, &name, &self.record, &signed)?;
        let target = builds.join(&name);
        disk::remove_all(&target)?;
        fs::rename(tree.dir(), &target).map_err(StoreError::io(&target))?;
        sync_dir(&builds)?;
        sync_dir(&staging)?;
        // 2. The swap: a new link renamed over the old one.
        let root = self.install.root();
        let tmp_link = root.join(".current.tmp");
        let _ = fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(PathBuf::from(".shoal/builds").join(&name), &tmp_link)
            .map_err(StoreError::io(&tmp_link))?;
        let current = self.install.current_path();
        fs::rename(&tmp_link, &current).map_err(StoreError::io(&current))?;
        sync_dir(root)?;
        tracing::info!(build = %name, "swapped in the new build");
        // 3. Bookkeeping and cleanup; a crash here leaves garbage, not damage.
        let build = Build::load(&builds, &name)?;
        self.install.index_build(&name, &build.tree)?;
        let mut stale = Vec::new();
        for kv in self
            .install
            .progress
            .scan_prefix(self.record.release_id.as_bytes())
        {
            stale.push(kv?.0);
        }
        for k in stale {
            self.install.progress.remove(k)?;
        }
        self.install.db.flush()?;
        for ext in ["json", "manifest"] {
            disk::remove_all(&staging.join(format!("{name}.{ext}")))?;
        }
        for entry in fs::read_dir(&builds).map_err(StoreError::io(&builds))? {
            let entry = entry.map_err(StoreError::io(&builds))?;
            let file_name = entry.file_name();
            let stem = file_name.to_string_lossy();
            if stem.split('.').next() != Some(name.as_str()) {
                make_writable(&entry.path());
                disk::remove_all(&entry.path())?;
            }
        }
        Ok(build)
    }
}

/// One chunk of an unlock: where its plaintext comes from.
struct OpenChunk<'a> {
    index: u32,
    plain: &'a Hash,
    key: &'a shoal_manifest::seal::ContentKey,
    opened: &'a Manifest,
    /// Covered: the installed build holds its plaintext.
    from_installed: Option<&'a Build>,
}

/// Read-only directories of an old build would refuse their removal.
pub(crate) fn make_writable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(m) = fs::symlink_metadata(path)
        && m.is_dir()
    {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o755));
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                make_writable(&e.path());
            }
        }
    }
}
